"""Box arithmetic shared by the detectors and the video tracker (NumPy, pixels).

Boxes are ``x1, y1, x2, y2`` rows (x right, y down, pixels; a box with ``x2 <= x1`` or
``y2 <= y1`` has zero area).

* :func:`box_areas` -- areas;
* :func:`box_iou` -- intersection over union of every pair of two box sets;
* :func:`nms` -- greedy non-maximum suppression (highest score first), as torchvision's ``nms``;
* :func:`box_centers` / :func:`box_sizes` -- centres and diagonals.
"""
from __future__ import annotations

import numpy as np

__all__ = ["box_areas", "box_iou", "nms", "box_centers", "box_sizes"]


def _as_boxes(boxes, name: str) -> np.ndarray:
    arr = np.asarray(boxes, np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must be (N, 4) x1, y1, x2, y2 boxes, got shape {arr.shape}")
    return arr


def box_areas(boxes) -> np.ndarray:
    """(N, 4) boxes (pixels) -> (N,) float64 areas (square pixels; 0 for empty boxes)."""
    b = _as_boxes(boxes, "boxes")
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a, b) -> np.ndarray:
    """Intersection over union of every pair.

    Args:
      a: (N, 4) boxes, b: (M, 4) boxes (pixels, ``x1, y1, x2, y2``).
    Returns:
      (N, M) float64 in [0, 1]; 0 where the union is empty.
    """
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes, scores, iou_threshold: float, limit: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression.

    The highest-scoring box is kept, every remaining box whose IoU with it is strictly greater
    than ``iou_threshold`` is dropped, and so on (ties in score keep the earlier index first).

    Args:
      boxes: (N, 4) boxes (pixels); scores: (N,) confidences; iou_threshold: in [0, 1].
      limit: stop once this many boxes are kept (the same first boxes as without it).
    Returns:
      (K,) int64 indices of the kept boxes, by decreasing score.
    """
    boxes = _as_boxes(boxes, "boxes")
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and (limit is None or len(keep) < limit):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i:i + 1], boxes[rest])[0] <= iou_threshold]
    return np.asarray(keep, np.int64)


def box_centers(boxes) -> np.ndarray:
    """(N, 4) boxes -> (N, 2) float64 centres ``(x, y)`` (pixels)."""
    b = _as_boxes(boxes, "boxes")
    return (b[:, :2] + b[:, 2:]) / 2


def box_sizes(boxes) -> np.ndarray:
    """(N, 4) boxes -> (N,) float64 diagonals (pixels), the scale used to normalise distances."""
    b = _as_boxes(boxes, "boxes")
    return np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
