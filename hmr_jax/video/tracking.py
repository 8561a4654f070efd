"""Person boxes of successive frames linked into tracks with stable ids.

Each :meth:`Tracker.update` takes one processed frame's boxes (pixels, ``x1, y1, x2, y2``) and
returns one track id per box:

1. every live track predicts its box: the last matched box moved by its velocity (pixels per
   update, an exponential average of its recent motion) times the updates since it was seen;
2. each (track, box) pair gets a cost: ``1 - IoU`` when the IoU reaches ``iou_threshold``;
   otherwise, when the centres are within ``max_center_distance`` (in units of the two boxes'
   mean diagonal), ``1 + distance`` (always worse than an overlap match); otherwise the pair
   cannot match;
3. the assignment of least total cost is found by the Hungarian method
   (``scipy.optimize.linear_sum_assignment``);
4. unmatched boxes start new tracks (new ids, never reused); a track unmatched for more than
   ``max_age`` consecutive updates ends, so a person hidden for up to ``max_age`` processed
   frames keeps their id.

Ids are 0, 1, 2, ... in order of first appearance (within a frame, by decreasing score).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from hmr_jax.detection.boxes import box_centers, box_iou, box_sizes

__all__ = ["Track", "Tracker", "link_tracks"]

_FORBIDDEN = 1e9


@dataclasses.dataclass
class Track:
    """One person over time.

    Attributes:
      id: the track id (stable, unique within a :class:`Tracker`).
      frames: frame indices where the track was matched.
      boxes: (4,) float64 box (pixels) per matched frame.
      scores: detection score per matched frame.
      misses: consecutive updates without a match since the last one.
      velocity: (4,) float64 box change per update (pixels).
    """

    id: int
    frames: list[int] = dataclasses.field(default_factory=list)
    boxes: list[np.ndarray] = dataclasses.field(default_factory=list)
    scores: list[float] = dataclasses.field(default_factory=list)
    misses: int = 0
    velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))

    def predicted_box(self) -> np.ndarray:
        """(4,) box expected at the next update (pixels): last box + velocity x updates elapsed."""
        return self.boxes[-1] + self.velocity * (self.misses + 1)

    def arrays(self) -> dict[str, np.ndarray]:
        """``frames`` (T,) int64, ``boxes`` (T, 4) float32 pixels, ``scores`` (T,) float32."""
        return {"frames": np.asarray(self.frames, np.int64),
                "boxes": np.asarray(self.boxes, np.float32).reshape(-1, 4),
                "scores": np.asarray(self.scores, np.float32)}

    def __len__(self) -> int:
        return len(self.frames)


class Tracker:
    """Links per-frame person boxes into tracks (see the module docstring for the method)."""

    def __init__(self, iou_threshold: float = 0.3, max_center_distance: float = 1.0, max_age: int = 15,
                 velocity_smoothing: float = 0.5):
        """Args:
          iou_threshold: least IoU between a track's predicted box and a box for an overlap match.
          max_center_distance: largest centre distance for a fallback match, in units of the mean
            diagonal of the two boxes (0 disables the fallback).
          max_age: updates a track survives without a match (with ``every = K`` frame reading,
            that is ``max_age * K`` video frames).
          velocity_smoothing: weight in [0, 1) of the previous velocity in its exponential
            average (0: the last displacement only).
        """
        if not 0 <= velocity_smoothing < 1:
            raise ValueError(f"velocity_smoothing must lie in [0, 1), got {velocity_smoothing}")
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        self.iou_threshold = float(iou_threshold)
        self.max_center_distance = float(max_center_distance)
        self.max_age = int(max_age)
        self.velocity_smoothing = float(velocity_smoothing)
        self.live: list[Track] = []
        self.tracks: dict[int, Track] = {}
        self._next_id = 0
        self._updates = 0

    def _costs(self, predicted: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        iou = box_iou(predicted, boxes)
        d = np.linalg.norm(box_centers(predicted)[:, None] - box_centers(boxes)[None], axis=-1)
        scale = (box_sizes(predicted)[:, None] + box_sizes(boxes)[None]) / 2
        dist = np.divide(d, scale, out=np.full_like(d, np.inf), where=scale > 0)
        cost = np.full(iou.shape, _FORBIDDEN)
        near = dist <= self.max_center_distance
        cost[near] = 1.0 + dist[near]
        overlap = iou >= max(self.iou_threshold, 1e-12)
        cost[overlap] = 1.0 - iou[overlap]
        return cost

    def update(self, boxes: np.ndarray, scores: np.ndarray | None = None, frame: int | None = None) -> np.ndarray:
        """Match one frame's boxes to the tracks.

        Args:
          boxes: (N, 4) ``x1, y1, x2, y2`` pixels (N may be 0).
          scores: (N,) detection scores (default 1); new tracks are created by decreasing score.
          frame: the frame index recorded in the tracks (default: the update count).
        Returns:
          (N,) int64 track id of each box.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        frame = self._updates if frame is None else int(frame)
        self._updates += 1
        ids = np.full(len(boxes), -1, np.int64)
        matched_tracks = set()
        if self.live and len(boxes):
            cost = self._costs(np.stack([t.predicted_box() for t in self.live]), boxes)
            for ti, di in zip(*linear_sum_assignment(cost)):
                if cost[ti, di] < _FORBIDDEN:
                    self._extend(self.live[ti], boxes[di], scores[di], frame)
                    ids[di] = self.live[ti].id
                    matched_tracks.add(ti)
        for ti, track in enumerate(self.live):
            if ti not in matched_tracks:
                track.misses += 1
        self.live = [t for t in self.live if t.misses <= self.max_age]
        for di in np.argsort(-scores, kind="stable"):
            if ids[di] < 0:
                track = Track(self._next_id)
                self._next_id += 1
                self._extend(track, boxes[di], scores[di], frame)
                self.live.append(track)
                self.tracks[track.id] = track
                ids[di] = track.id
        return ids

    def _extend(self, track: Track, box: np.ndarray, score: float, frame: int) -> None:
        if track.boxes:
            step = (box - track.boxes[-1]) / (track.misses + 1)
            s = self.velocity_smoothing if len(track.boxes) > 1 else 0.0
            track.velocity = s * track.velocity + (1 - s) * step
        track.frames.append(frame)
        track.boxes.append(np.array(box, np.float64))
        track.scores.append(float(score))
        track.misses = 0


def link_tracks(boxes_per_frame: Sequence[np.ndarray], frames: Sequence[int] | None = None,
                scores_per_frame: Sequence[np.ndarray] | None = None, **params
                ) -> tuple[list[np.ndarray], dict[int, Track]]:
    """Track a whole sequence.

    Args:
      boxes_per_frame: per processed frame, (N_t, 4) boxes (pixels).
      frames: the frame index of each entry (default 0, 1, 2, ...).
      scores_per_frame: per frame, (N_t,) scores (default 1).
      params: :class:`Tracker` options.
    Returns:
      ``(ids, tracks)``: per frame the (N_t,) int64 ids, and ``{id: Track}`` of every track.
    """
    tracker = Tracker(**params)
    ids = []
    for t, boxes in enumerate(boxes_per_frame):
        ids.append(tracker.update(boxes, None if scores_per_frame is None else scores_per_frame[t],
                                  None if frames is None else frames[t]))
    return ids, tracker.tracks
