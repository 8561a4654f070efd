"""Person detection: boxes in full-image pixels for the inference package.

* :mod:`hmr_jax.detection.base` -- the :class:`Detections` type, the :class:`Detector` protocol,
  the whole-image and boxes-file detectors.
* ``make_detector(kind, ...)`` -- ``"full"``, ``"boxes"`` or ``"yolo"`` (YOLOv8 person class as
  the original MEGA demo; ONNX Runtime, or ultralytics for ``.pt`` weights).
"""
from hmr_jax.detection.base import (BoxesDetector, DetectionError, Detections, Detector,
                                    FullImageDetector, load_boxes)

__all__ = ["BoxesDetector", "DetectionError", "Detections", "Detector", "FullImageDetector", "load_boxes"]
