"""What every person detector returns, and the two that need no model (whole image, given boxes).

A detector maps one image to person boxes in FULL-IMAGE pixels:
``detect(image (H, W, 3) uint8 RGB, path=None) -> Detections`` with ``boxes`` (N, 4) float32
``x1, y1, x2, y2`` (x right, y down, x2 > x1, y2 > y1) and ``scores`` (N,) float32 in [0, 1],
sorted by decreasing score. Every box source (YOLO, a JSON file, the whole image) goes through
this one type, and the crops are cut from it in one place (the inference package).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Mapping, Protocol, runtime_checkable

import numpy as np

from hmr_jax.errors import UserError

#: the ``--bboxes`` file is read whole; a boxes file larger than this is refused before reading
MAX_BOXES_FILE_BYTES = 64 * 1024 * 1024


class DetectionError(UserError, RuntimeError):
    """A detector cannot run (missing weights, missing package) or its input is unusable."""


@dataclasses.dataclass(frozen=True)
class Detections:
    """Person boxes of one image.

    Attributes:
      boxes: (N, 4) float32 ``x1, y1, x2, y2`` in full-image pixels.
      scores: (N,) float32 detection confidences in [0, 1] (1 for given boxes).
    """

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, np.float32).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return len(self.boxes)


@runtime_checkable
class Detector(Protocol):
    """Finds people in an image (see the module docstring for the contract)."""

    name: str

    def detect(self, image: np.ndarray, path: str | pathlib.Path | None = None) -> Detections:
        """(H, W, 3) uint8 RGB image (``path``: where it came from, for box files) -> boxes."""
        ...


class FullImageDetector:
    """One 'person' covering the whole image (the mode for crops that hold one person)."""

    name = "full"

    def detect(self, image: np.ndarray, path=None) -> Detections:
        """The box ``[0, 0, W, H]`` (pixels) with score 1."""
        h, w = np.shape(image)[:2]
        return Detections(np.array([[0.0, 0.0, w, h]]), np.ones(1))


def load_boxes(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Read a boxes JSON ``{"image name or path": [[x1, y1, x2, y2(, score)], ...], ...}`` (pixels).

    Returns:
      ``{key: (N, 5) float32}`` (score 1 where the file gives none).
    Raises:
      DetectionError: the file is missing, too large, not JSON, or an entry is not a list of
        4- or 5-number boxes (the message names the file and the entry).
    """
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BOXES_FILE_BYTES:
            raise DetectionError(f"{path}: {size} bytes is too large for a boxes file "
                                 f"(limit {MAX_BOXES_FILE_BYTES}); split it")
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise DetectionError(f"{path}: no such boxes file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DetectionError(f"{path}: cannot read the boxes JSON ({e})") from None
    if not isinstance(data, dict):
        raise DetectionError(f'{path}: expected an object {{"image.jpg": [[x1, y1, x2, y2], ...]}}, '
                             f"got {type(data).__name__}")
    return {str(k): _parse_entry(path, k, v) for k, v in data.items()}


def _parse_entry(path, key, value) -> np.ndarray:
    if not isinstance(value, list) or not all(
            isinstance(b, list) and len(b) in (4, 5) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in b) for b in value):
        raise DetectionError(f"{path}: entry {key!r} must be a list of [x1, y1, x2, y2] or "
                             "[x1, y1, x2, y2, score] number lists (pixels)")
    out = np.ones((len(value), 5), np.float32)
    try:
        with np.errstate(over="ignore"):
            for i, b in enumerate(value):
                out[i, :len(b)] = [float(x) for x in b]
    except OverflowError:  # an integer beyond any float
        raise DetectionError(f"{path}: entry {key!r} holds a number too large for pixels") from None
    if not np.all(np.isfinite(out)):
        raise DetectionError(f"{path}: entry {key!r} holds a non-finite number")
    return out


class BoxesDetector:
    """Boxes given in a JSON file (:func:`load_boxes`), looked up by image path, name or stem."""

    name = "boxes"

    def __init__(self, boxes: str | pathlib.Path | Mapping[str, np.ndarray]):
        """``boxes``: a boxes JSON path, or an already-read ``{key: (N, 4 or 5)}`` mapping."""
        if isinstance(boxes, (str, pathlib.Path)):
            self.source = str(boxes)
            self.boxes = load_boxes(boxes)
        else:
            self.source = "the given boxes"
            self.boxes = {str(k): _parse_entry(self.source, k, np.asarray(v, np.float64).tolist())
                          for k, v in boxes.items()}

    def detect(self, image: np.ndarray, path=None) -> Detections:
        """The boxes listed for ``path`` (tried as given, then file name, then stem)."""
        if path is None:
            raise DetectionError("the boxes detector needs the image's path to find its entry")
        p = pathlib.Path(path)
        for key in (str(path), p.name, p.stem):
            if key in self.boxes:
                arr = self.boxes[key]
                order = np.argsort(-arr[:, 4], kind="stable")
                return Detections(arr[order, :4], arr[order, 4])
        raise DetectionError(f"{path}: no entry in {self.source} (keys are image paths, file names or stems)")
