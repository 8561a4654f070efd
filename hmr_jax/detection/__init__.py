"""Person detection: boxes in full-image pixels for the inference package.

* :mod:`hmr_jax.detection.base` -- the :class:`Detections` type, the :class:`Detector` protocol,
  the whole-image and boxes-file detectors.
* :mod:`hmr_jax.detection.yolo` -- YOLOv8 person class as the original MEGA demo (ONNX Runtime,
  or ultralytics for ``.pt`` weights, both imported only when a model is loaded: optional).
* :mod:`hmr_jax.detection.boxes` -- IoU, NMS, centres (shared with the video tracker).
* :func:`make_detector` -- ``"full"``, ``"boxes"`` or ``"yolo"`` by name.
"""
from __future__ import annotations

import importlib.util
import pathlib
from typing import Mapping

import numpy as np

from hmr_jax.detection.base import (BoxesDetector, DetectionError, Detections, Detector,
                                    FullImageDetector, load_boxes)
from hmr_jax.detection.yolo import EXPORT_COMMAND, YoloDetector  # imports onnxruntime only when a model loads

__all__ = ["BoxesDetector", "DEFAULT_YOLO_WEIGHTS", "DETECTOR_KINDS", "DetectionError", "Detections", "Detector",
           "FullImageDetector", "YoloDetector", "load_boxes", "make_detector", "yolo_unavailable_reason"]

#: the kinds :func:`make_detector` builds
DETECTOR_KINDS = ("yolo", "boxes", "full")
#: where the YOLOv8x ONNX export is looked for by default (the original demo keeps its weights in body_models/)
DEFAULT_YOLO_WEIGHTS = "body_models/yolov8x.onnx"


def yolo_unavailable_reason(weights: str | pathlib.Path = DEFAULT_YOLO_WEIGHTS) -> str | None:
    """Why the YOLO detector cannot run with ``weights``, with the fix; ``None`` when it can.

    Checks only that the file exists and that its runtime (``onnxruntime`` for ``.onnx``) is
    installed, without loading the model (use it to pick a default detector).
    """
    weights = pathlib.Path(weights)
    if not weights.is_file():
        return (f"no YOLO weights at {weights}: make them with `{EXPORT_COMMAND}` on a machine with ultralytics "
                "and put the .onnx there")
    if weights.suffix.lower() == ".onnx" and importlib.util.find_spec("onnxruntime") is None:
        return "ONNX Runtime is not installed: pip install 'hmr_jax[detect]'"
    return None


def make_detector(kind: str, *, weights: str | pathlib.Path | None = None, threshold: float = 0.5,
                  boxes: str | pathlib.Path | Mapping[str, np.ndarray] | None = None,
                  iou_threshold: float = 0.7) -> Detector:
    """A detector by name.

    Args:
      kind: ``"yolo"`` (YOLOv8 person boxes), ``"boxes"`` (boxes from a JSON file or mapping,
        see :func:`load_boxes`) or ``"full"`` (the whole image is one person).
      weights: YOLO weights (``.onnx`` or ``.pt``; default :data:`DEFAULT_YOLO_WEIGHTS`).
      threshold: YOLO person confidence threshold (the original demo: 0.5).
      boxes: the boxes file or ``{image key: (N, 4 or 5)}`` mapping for ``"boxes"``.
      iou_threshold: YOLO NMS IoU.
    Raises:
      DetectionError: an unknown kind, ``"boxes"`` without boxes, or a YOLO detector that cannot
        load (missing weights or package; the message says how to fix it).
    """
    if kind == "full":
        return FullImageDetector()
    if kind == "boxes":
        if boxes is None:
            raise DetectionError("the boxes detector needs a boxes JSON file (--bboxes boxes.json)")
        return BoxesDetector(boxes)
    if kind == "yolo":
        return YoloDetector(str(weights or DEFAULT_YOLO_WEIGHTS), threshold=threshold, iou_threshold=iou_threshold)
    raise DetectionError(f"unknown detector {kind!r}: choose one of {', '.join(DETECTOR_KINDS)}")
