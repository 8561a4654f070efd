"""People in a video: frames -> person boxes -> tracks -> meshes (fixed batches across frames)
-> an overlay video, one ``.npz`` per track and ``results.json``.

    from hmr_jax.inference import Predictor
    from hmr_jax.video.pipeline import track_video
    predictor = Predictor.load("converted/mega_hrnet", tokenizer="converted/mesh_vqvae_54")
    results = track_video(predictor, "walk.mp4", "out/", every=2, smooth=True)

The video is streamed: frames are decoded one at a time (:class:`~hmr_jax.video.io.VideoReader`),
each frame's people are found by the predictor's detector (or a :class:`FrameBoxesDetector`),
linked to the previous frames' by a :class:`~hmr_jax.video.tracking.Tracker`, and cut into crops
that go through the model in fixed-size batches together with the crops of the neighbouring
frames (:meth:`~hmr_jax.inference.Predictor.predict_iter`, at most ``4 x batch size`` frames
held in memory). Each frame is drawn and written to the overlay video as soon as its people are
predicted; each track's meshes are spooled to disk and gathered into its ``.npz`` at the end.

With ``num_samples = N > 1`` (stochastic MEGA) a track's mesh in a frame is the per-vertex mean
of the N hypotheses and the frame's hypothesis spread is kept beside it. With ``smooth`` the
meshes and camera translations of every track are One-Euro filtered over time
(:mod:`hmr_jax.video.smoothing`; causal, so the overlay shows the smoothed meshes too).

This module sits above the inference package (it drives a :class:`Predictor`); the rest of
:mod:`hmr_jax.video` (reading, writing, tracking, smoothing) needs neither JAX nor a model.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from hmr_jax.detection.base import BoxesDetector, DetectionError, Detections
from hmr_jax.files import atomic_open, atomic_write
from hmr_jax.inference.predictor import ImagePrediction, Person, Predictor
from hmr_jax.video.io import VideoError, VideoReader, VideoWriter, selected_count
from hmr_jax.video.smoothing import CAMERA_SMOOTHING, VERTEX_SMOOTHING, OneEuroFilter, SmoothingParams
from hmr_jax.video.tracking import Tracker

__all__ = ["FrameBoxesDetector", "TRACK_COLORS", "TrackerParams", "track_color", "track_video"]

#: track colours (RGB 0..1), by track id modulo their number: well apart in hue and lightness
TRACK_COLORS = np.array([
    [0.35, 0.60, 0.95], [0.95, 0.55, 0.20], [0.35, 0.80, 0.35], [0.90, 0.30, 0.35], [0.70, 0.50, 0.90],
    [0.90, 0.80, 0.25], [0.30, 0.85, 0.85], [0.95, 0.55, 0.75], [0.65, 0.45, 0.30], [0.75, 0.75, 0.75]])
#: frames held waiting for their batch, in units of the model's batch size
PENDING_BATCHES = 4
OVERLAY_NAME = "overlay.mp4"


def track_color(track_id: int) -> np.ndarray:
    """(3,) RGB in 0..1 of a track id (:data:`TRACK_COLORS`, cycling)."""
    return TRACK_COLORS[int(track_id) % len(TRACK_COLORS)]


class FrameBoxesDetector:
    """Person boxes of a video given per frame: a JSON ``{"0": [[x1, y1, x2, y2], ...], "1": ...}``
    keyed by the 0-based frame index of the input video (with ``every = K`` only the keys of the
    frames read, 0, K, 2K, ..., are used), boxes in full-frame pixels, an optional fifth number
    the score. A frame without an entry (or with ``[]``) has no people (a detection gap)."""

    name = "boxes"

    def __init__(self, boxes: str | pathlib.Path | Mapping):
        """``boxes``: the JSON file or a ``{frame index: (N, 4 or 5)}`` mapping (read and checked as
        :class:`~hmr_jax.detection.BoxesDetector` does).

        Raises:
          DetectionError: unreadable file, a malformed entry, or a key that is not a frame index.
        """
        table = BoxesDetector(boxes)
        self.source = table.source
        self.boxes: dict[int, np.ndarray] = {}
        for key, arr in table.boxes.items():
            if not key.isdigit():
                raise DetectionError(f"{self.source}: key {key!r} is not a frame index; a video's boxes file is "
                                     '{"0": [[x1, y1, x2, y2], ...], "1": ...} keyed by 0-based frame number')
            self.boxes[int(key)] = arr

    def detect(self, image: np.ndarray, path=None) -> Detections:
        """The boxes of frame ``int(path)`` (the frame index), sorted by decreasing score."""
        try:
            index = int(path)
        except (TypeError, ValueError):
            raise DetectionError(f"the video boxes detector needs the frame index, got {path!r}") from None
        arr = self.boxes.get(index)
        if arr is None or not len(arr):
            return Detections(np.zeros((0, 4)), np.zeros(0))
        order = np.argsort(-arr[:, 4], kind="stable")
        return Detections(arr[order, :4], arr[order, 4])


@dataclasses.dataclass(frozen=True)
class TrackerParams:
    """:class:`~hmr_jax.video.tracking.Tracker` options (see there); ``max_age`` is in processed frames."""

    iou_threshold: float = 0.3
    max_center_distance: float = 1.0
    max_age: int = 15
    velocity_smoothing: float = 0.5


class _Track:
    """One track's per-frame results; meshes appended to a spool file, the rest kept in lists."""

    def __init__(self, track_id: int, spool_dir: pathlib.Path, smooth: bool, vertex_params, camera_params):
        self.id = track_id
        self.spool_path = spool_dir / f"track_{track_id}.f32"   # scratch, in the run's temporary folder
        self.shape = None
        self.rows: dict[str, list] = {k: [] for k in (
            "frames", "times", "boxes", "scores", "camera_translation", "camera_translation_raw",
            "camera_weak_perspective", "focal_length", "camera_valid", "rot6d", "rotation_matrix", "tokens",
            "spread_mean_m", "spread_max_m", "spread_std_m")}
        self.principal_point = None
        self.vertex_filter = OneEuroFilter(**dataclasses.asdict(vertex_params)) if smooth else None
        self.camera_filter = OneEuroFilter(**dataclasses.asdict(camera_params)) if smooth else None

    def add(self, frame: int, time: float, fps: float, person: Person) -> Person:
        """Record one frame (``time``: presentation seconds; the filters run on ``frame / fps``);
        returns the person as drawn (mean / smoothed mesh and camera)."""
        vertices = person.vertices.mean(axis=0) if person.num_hypotheses > 1 else person.vertices[0]
        translation = np.asarray(person.camera_translation, np.float64)
        raw_translation = translation
        if self.vertex_filter is not None:
            t = frame / fps
            vertices = self.vertex_filter(vertices, t).astype(np.float32)
            if person.camera_valid:  # a camera behind the image plane would drag the filter through it
                translation = self.camera_filter(translation, t)
        vertices = np.asarray(vertices, np.float32)
        if self.shape is None:
            self.shape = vertices.shape
        with open(self.spool_path, "ab") as f:   # opened per frame: any number of tracks, few open files
            f.write(np.ascontiguousarray(vertices).tobytes())
        r = self.rows
        r["frames"].append(frame)
        r["times"].append(time)
        r["boxes"].append(person.box)
        r["scores"].append(person.score)
        r["camera_translation"].append(translation)
        r["camera_translation_raw"].append(raw_translation)
        r["camera_weak_perspective"].append(person.camera_weak_perspective)
        r["focal_length"].append(person.focal_length)
        r["camera_valid"].append(person.camera_valid)
        r["rot6d"].append(person.rot6d)
        r["rotation_matrix"].append(person.rotation_matrix)
        r["tokens"].append(person.tokens)
        spread = person.spread()
        if spread is not None:
            r["spread_mean_m"].append(spread["mean_vertex_distance_to_mean_m"])
            r["spread_max_m"].append(spread["max_vertex_distance_to_mean_m"])
            r["spread_std_m"].append(spread["mean_vertex_std_m"])
        self.principal_point = person.principal_point
        return dataclasses.replace(person, vertices=vertices[None], camera_translation=translation)

    def write(self, path: pathlib.Path) -> dict:
        """The track's ``.npz`` (see :func:`track_video`); returns its ``results.json`` record."""
        r = self.rows
        n = len(r["frames"])
        vertices = np.memmap(self.spool_path, np.float32, "r", shape=(n,) + self.shape)
        arrays = {
            "frames": np.asarray(r["frames"], np.int64), "times": np.asarray(r["times"], np.float64),
            "vertices": vertices, "boxes": np.asarray(r["boxes"], np.float32).reshape(n, 4),
            "scores": np.asarray(r["scores"], np.float32),
            "camera_translation": np.asarray(r["camera_translation"], np.float32).reshape(n, 3),
            "camera_translation_raw": np.asarray(r["camera_translation_raw"], np.float32).reshape(n, 3),
            "camera_weak_perspective": np.asarray(r["camera_weak_perspective"], np.float32).reshape(n, 3),
            "focal_length": np.asarray(r["focal_length"], np.float32),
            "principal_point": np.asarray(self.principal_point, np.float32),
            "camera_valid": np.asarray(r["camera_valid"], bool),
            "rot6d": np.asarray(r["rot6d"], np.float32).reshape(n, 6),
            "rotation_matrix": np.asarray(r["rotation_matrix"], np.float32).reshape(n, 3, 3),
            "tokens": np.asarray(r["tokens"], np.int32)}
        record = {"id": self.id, "file": path.name, "num_frames": n, "first_frame": int(r["frames"][0]),
                  "last_frame": int(r["frames"][-1]), "color": [round(float(c) * 255) for c in track_color(self.id)],
                  "mean_score": float(np.mean(r["scores"])), "camera_valid_frames": int(np.sum(r["camera_valid"]))}
        if r["spread_mean_m"]:
            for k in ("spread_mean_m", "spread_max_m", "spread_std_m"):
                arrays[k] = np.asarray(r[k], np.float32)
            record["spread"] = {"mean_vertex_distance_to_mean_m": float(np.mean(r["spread_mean_m"])),
                                "max_vertex_distance_to_mean_m": float(np.max(r["spread_max_m"])),
                                "mean_vertex_std_m": float(np.mean(r["spread_std_m"]))}
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)
        del vertices
        return record


def _draw_boxes(image: np.ndarray, persons: list[tuple[int, Person]]) -> np.ndarray:
    """Each person's box outlined in its track colour, its id above it."""
    if not persons:
        return image
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    for track_id, person in persons:
        color = tuple(int(round(c * 255)) for c in track_color(track_id))
        x1, y1, x2, y2 = (float(c) for c in person.box)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        draw.text((x1 + 3, max(y1 - 12, 0)), f"id {track_id}", fill=color)
    return np.asarray(im)


def render_frame(image: np.ndarray, persons: list[tuple[int, Person]], faces: np.ndarray,
                 boxes: bool = True) -> np.ndarray:
    """One overlay frame: every person's mesh (depth-ordered, one z-buffer) in its track's colour,
    and, with ``boxes``, the boxes and ids.

    Args:
      image: (H, W, 3) uint8 RGB frame.
      persons: ``(track id, Person)`` pairs (the first hypothesis of each is drawn).
      faces: (F, 3) mesh faces.
    Returns:
      (H, W, 3) uint8.
    """
    drawn = [(t, p) for t, p in persons if p.camera_valid]
    out = image
    if drawn:
        nv = drawn[0][1].vertices.shape[1]
        color = np.concatenate([np.broadcast_to(track_color(t), (nv, 3)) for t, _ in drawn])
        h, w = image.shape[:2]
        out = ImagePrediction(0, None, w, h, [p for _, p in drawn]).overlay(faces, image, color=color)
    return _draw_boxes(out, persons) if boxes else np.array(out, copy=True)


def track_video(predictor: Predictor, video: str | pathlib.Path, out_dir: str | pathlib.Path, *,
                every: int = 1, max_frames: int | None = None, num_samples: int = 1, steps: int | None = None,
                temperature: float | None = None, seed: int = 0, faithful: bool | None = None,
                smooth: bool = False, vertex_params: SmoothingParams = VERTEX_SMOOTHING,
                camera_params: SmoothingParams = CAMERA_SMOOTHING, tracker: TrackerParams = TrackerParams(),
                draw_boxes: bool = True, progress: bool = True, extra: Mapping | None = None) -> dict:
    """Track and reconstruct the people of a video (see the module docstring).

    Args:
      predictor: the model, faces and person detector (its ``detector`` is called on every
        frame read with ``path = str(frame index)``, so a :class:`FrameBoxesDetector` finds its
        entry).
      video: the input video file.
      out_dir: output folder (created).
      every: read frames 0, K, 2K, ... (``every = K``); the overlay video runs at ``fps / K``.
      max_frames: read at most this many frames.
      num_samples, steps, temperature, seed, faithful: the model's decoding
        (:meth:`~hmr_jax.inference.Predictor.predict_iter`).
      smooth: One-Euro filter each track's meshes (``vertex_params``) and camera translations
        (``camera_params``) over time (seconds from the frame indices and the video's fps).
      tracker: the tracker's options.
      draw_boxes: outline each person's box and write its id in the overlay video.
      progress: a tqdm bar over the frames.
      extra: more entries for ``results.json`` (e.g. the checkpoint's name).
    Writes to ``out_dir``:
      * ``overlay.mp4``: the frames read, same size, each track's mesh in its own colour
        (:func:`track_color`);
      * ``track_{id:03d}.npz`` per track: ``frames`` (T,) video frame indices, ``times`` (T,)
        seconds, ``vertices`` (T, V, 3) float32 meters (camera-aligned axes as
        :class:`~hmr_jax.inference.Person`, mesh centred; ``+ camera_translation`` gives the
        camera frame; N > 1: the mean of the hypotheses; smoothed with ``smooth``),
        ``camera_translation`` (T, 3) m (smoothed with ``smooth``; ``camera_translation_raw``
        as predicted), ``camera_weak_perspective`` (T, 3) ``(s, tx, ty)`` of the crop,
        ``focal_length`` (T,) px, ``principal_point`` (2,) px, ``camera_valid`` (T,),
        ``boxes`` (T, 4) px, ``scores`` (T,), ``rot6d`` (T, 6), ``rotation_matrix`` (T, 3, 3),
        ``tokens`` (T, N, K) and, for N > 1, the per-frame hypothesis spread ``spread_mean_m``,
        ``spread_max_m``, ``spread_std_m`` (T,) (:meth:`~hmr_jax.inference.Person.spread`);
      * ``results.json``: the video, the settings, the tracks (id, file, frame range, colour,
        spread summary) and the errors.
    Returns:
      the ``results.json`` content.
    Raises:
      VideoError: the video cannot be opened or decoded from its first frame (missing file, not
        a video, undecodable codec, no frames); nothing is written then. A frame that fails to
        decode later ends the reading: the frames before it are written and the error listed.
      ValueError: ``every`` / ``max_frames`` out of range.
      InferenceError: a decoding setting that fits no image (e.g. ``num_samples`` for VQ-HPS).
    """
    out_dir = pathlib.Path(out_dir)
    predictor.model.mode(num_samples)
    reader = VideoReader(video)
    try:
        frames = reader.frames(every, max_frames)   # checks every / max_frames
        info = reader.info
        out_dir.mkdir(parents=True, exist_ok=True)
        results = {"video": str(video), "fps": info.fps, "output_fps": info.fps / every, "width": info.width,
                   "height": info.height, "codec": info.codec, "every": every, "max_frames": max_frames,
                   **dict(extra or {}), "model": predictor.model.kind,
                   "detector": getattr(predictor.detector, "name", type(predictor.detector).__name__),
                   "num_samples": num_samples, "mode": predictor.model.mode(num_samples),
                   "smooth": ({"method": "one_euro", "vertices": dataclasses.asdict(vertex_params),
                               "camera": dataclasses.asdict(camera_params)} if smooth else None),
                   "tracker": dataclasses.asdict(tracker), "overlay": OVERLAY_NAME, "frames_read": 0,
                   "frames_with_people": 0, "tracks": [], "errors": []}
        with tempfile.TemporaryDirectory(prefix=".spool-", dir=out_dir) as spool:
            _run(predictor, frames, info, pathlib.Path(spool), out_dir, results, every, max_frames,
                 dict(num_samples=num_samples, steps=steps, temperature=temperature, seed=seed, faithful=faithful),
                 smooth, vertex_params, camera_params, tracker, draw_boxes, progress)
    finally:
        reader.close()
    atomic_write(out_dir / "results.json", json.dumps(results, indent=2))
    return results


def _run(predictor, frames, info, spool_dir, out_dir, results, every, max_frames, settings, smooth,
         vertex_params, camera_params, tracker_params, draw_boxes, progress):
    tracker = Tracker(**dataclasses.asdict(tracker_params))
    detections: dict[int, Detections] = {}   # by processed-frame number, until predict_iter takes them
    ids: dict[int, np.ndarray] = {}          # track id of each box, by processed-frame number
    stamps: dict[int, tuple[int, float]] = {}
    errors = results["errors"]

    def images():
        n = 0
        try:
            for frame in frames:
                try:
                    found = predictor.detector.detect(frame.image, str(frame.index))
                except DetectionError as e:
                    errors.append(f"frame {frame.index}: {e}")
                    found = Detections(np.zeros((0, 4)), np.zeros(0))
                ids[n] = tracker.update(found.boxes, found.scores, frame.index)
                detections[n] = found
                stamps[n] = (frame.index, frame.time)
                n += 1
                yield frame.image
        except VideoError as e:   # a damaged frame: keep what was read
            errors.append(str(e))

    class _Boxes:   # predict_iter reads boxes[n] right after it took image n from images()
        def __getitem__(self, n):
            return detections.pop(n)

    tracks: dict[int, _Track] = {}
    total = selected_count(info.num_frames, every, max_frames)
    bar = tqdm(total=total, desc="frames", unit="frame", dynamic_ncols=True, disable=not progress)
    try:
        with VideoWriter(out_dir / OVERLAY_NAME, info.fps / every, size=(info.width, info.height)) as writer:
            for record in predictor.predict_iter(images(), _Boxes(), keep_images=True,
                                                 max_pending=PENDING_BATCHES * predictor.model.batch_size,
                                                 **settings):
                n = record.index
                frame_index, time = stamps.pop(n)
                frame_ids = ids.pop(n)
                errors.extend(f"frame {frame_index}: {e}" for e in record.errors)
                drawn = []
                for person in record.persons:
                    track_id = int(frame_ids[person.index])
                    if track_id not in tracks:
                        tracks[track_id] = _Track(track_id, spool_dir, smooth, vertex_params, camera_params)
                    drawn.append((track_id, tracks[track_id].add(frame_index, time, info.fps, person)))
                writer.write(render_frame(record.image, drawn, predictor.faces, draw_boxes))
                results["frames_read"] += 1
                results["frames_with_people"] += bool(drawn)
                bar.update(1)
        for track_id in sorted(tracks):
            results["tracks"].append(tracks[track_id].write(out_dir / f"track_{track_id:03d}.npz"))
    finally:
        bar.close()
