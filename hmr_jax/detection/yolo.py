"""YOLOv8 person detector, as the original MEGA demo uses it (person class only, confidence 0.5).

The original demo calls ultralytics' ``YOLO("yolov8x.pt").predict(image, classes=0, conf=0.5)``.
Here the tested path runs a YOLOv8 ONNX export through ONNX Runtime, with the steps ultralytics
performs written out in NumPy:

1. :func:`letterbox` -- resize keeping the aspect ratio so the image fits the model input
   (bilinear, the arithmetic of OpenCV's ``INTER_LINEAR``), pad the rest with grey 114, the
   image centred; then RGB float in [0, 1], NCHW (:func:`to_input`).
2. :func:`decode_yolov8` -- the raw export output ``(1, 4 + C, A)`` (A anchors, 8400 at 640x640;
   per anchor ``cx, cy, w, h`` in letterboxed input pixels and C = 80 class scores, no
   objectness): a candidate's class is its best-scoring class, kept when that is the person
   class (0) and its score is above the threshold; greedy NMS (IoU 0.7, ultralytics' default),
   at most 300 boxes.
3. :meth:`Letterbox.to_image` -- boxes back to full-image pixels (undo the padding and the
   scale, clip to the image); boxes left with no area (wholly in the padding) are dropped.

Make the weights on any machine where ultralytics runs (it does not run beside the CPU torch
here; see the README)::

    yolo export model=yolov8x.pt format=onnx    # writes yolov8x.onnx next to yolov8x.pt

``.pt`` weights are accepted too, through ultralytics itself, where it imports. Nothing is
downloaded at run time.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from hmr_jax.detection.base import DetectionError, Detections
from hmr_jax.detection.boxes import nms

__all__ = ["EXPORT_COMMAND", "Letterbox", "YoloDetector", "decode_yolov8", "letterbox", "resize_bilinear",
           "to_input"]

#: how to make ONNX weights from ultralytics' ``.pt`` (on a machine where ultralytics runs)
EXPORT_COMMAND = "yolo export model=yolov8x.pt format=onnx"
#: the COCO class index of "person"
PERSON_CLASS = 0
#: the grey level ultralytics pads letterboxed images with
PAD_VALUE = 114
#: input side used when the ONNX model has a dynamic input size (ultralytics' default imgsz)
DEFAULT_INPUT_SIZE = 640
#: candidates kept before NMS and boxes kept after it (ultralytics' max_nms / max_det)
MAX_NMS_CANDIDATES = 30000
MAX_DETECTIONS = 300


# ------------------------------------------------------------------------------------------
# pre-processing


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with OpenCV ``INTER_LINEAR``'s sampling (no antialiasing).

    Output pixel ``x`` samples the input at ``(x + 0.5) * in_w / out_w - 0.5`` (pixel centres),
    clamped at the borders; likewise for y. Values are rounded to the nearest integer (OpenCV's
    fixed-point arithmetic can differ from this by one grey level).

    Args:
      image: (H, W, C) uint8.
      size: ``(out_h, out_w)`` pixels, both >= 1.
    Returns:
      (out_h, out_w, C) uint8.
    """
    image = np.asarray(image)
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"resize target must be at least 1x1 pixels, got {out_h}x{out_w}")
    in_h, in_w = image.shape[:2]
    if (in_h, in_w) == (out_h, out_w):
        return image.copy()

    def taps(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        i0 = np.floor(src).astype(np.int64)
        frac = src - i0
        frac[i0 < 0] = 0.0
        i0 = np.clip(i0, 0, n_in - 1)
        frac[i0 >= n_in - 1] = 0.0
        return i0, np.minimum(i0 + 1, n_in - 1), frac.astype(np.float32)

    y0, y1, fy = taps(out_h, in_h)
    x0, x1, fx = taps(out_w, in_w)
    img = image.astype(np.float32)
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]   # (out_h, in_w, C)
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """Where an image sits inside the letterboxed model input.

    Attributes:
      scale: model-input pixels per image pixel.
      left, top: padding before the image (model-input pixels).
      image_size: ``(H, W)`` of the original image (pixels).
      input_size: ``(h, w)`` of the model input (pixels).
    """

    scale: float
    left: int
    top: int
    image_size: tuple[int, int]
    input_size: tuple[int, int]

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) ``x1, y1, x2, y2`` in model-input pixels -> (N, 4) float32 image pixels, clipped."""
        b = np.array(boxes, np.float64).reshape(-1, 4)
        b[:, [0, 2]] -= self.left
        b[:, [1, 3]] -= self.top
        b /= self.scale
        h, w = self.image_size
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
        return b.astype(np.float32)

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) image pixels -> (N, 4) float64 model-input pixels (the inverse of :meth:`to_image`)."""
        b = np.array(boxes, np.float64).reshape(-1, 4) * self.scale
        b[:, [0, 2]] += self.left
        b[:, [1, 3]] += self.top
        return b


def letterbox(image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Fit an image into the model input as ultralytics' ``LetterBox`` does for fixed-size models.

    The scale is ``min(h / H, w / W)`` (up or down); the resized image is
    ``round(W * scale) x round(H * scale)``; the leftover is split in two, the image centred
    (``left = round(pad_w / 2 - 0.1)``, so an odd leftover puts the extra pixel right / below),
    and filled with grey 114.

    Args:
      image: (H, W, 3) uint8 RGB.
      input_size: ``(h, w)`` model input (pixels).
    Returns:
      ``(padded (h, w, 3) uint8, Letterbox)``.
    """
    in_h, in_w = image.shape[:2]
    h, w = int(input_size[0]), int(input_size[1])
    scale = min(h / in_h, w / in_w)
    new_w, new_h = int(round(in_w * scale)), int(round(in_h * scale))
    left = int(round((w - new_w) / 2 - 0.1))
    top = int(round((h - new_h) / 2 - 0.1))
    out = np.full((h, w, image.shape[2]), PAD_VALUE, np.uint8)
    out[top:top + new_h, left:left + new_w] = resize_bilinear(image, (new_h, new_w))
    return out, Letterbox(scale, left, top, (in_h, in_w), (h, w))


def to_input(padded: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(h, w, 3) uint8 RGB -> (1, 3, h, w) ``dtype`` in [0, 1] (the model's NCHW input)."""
    return (np.ascontiguousarray(padded.transpose(2, 0, 1))[None].astype(np.float32) / 255.0).astype(dtype)


# ------------------------------------------------------------------------------------------
# decoding


def decode_yolov8(output: np.ndarray, *, threshold: float, iou_threshold: float,
                  class_id: int = PERSON_CLASS, max_detections: int = MAX_DETECTIONS
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of one class from a raw YOLOv8 detection output.

    Args:
      output: ``(1, 4 + C, A)`` or ``(4 + C, A)``: per anchor ``cx, cy, w, h`` (model-input
        pixels) then C class scores in [0, 1].
      threshold: a candidate is kept when its best class is ``class_id`` and that score is
        strictly greater than ``threshold``.
      iou_threshold: NMS drops a box whose IoU with a higher-scoring kept box is above this.
      class_id: the class to keep (0 = person in COCO).
      max_detections: at most this many boxes are returned.
    Returns:
      ``boxes`` (K, 4) float64 ``x1, y1, x2, y2`` in model-input pixels and ``scores`` (K,)
      float64, by decreasing score.
    Raises:
      DetectionError: the output does not have the YOLOv8 layout.
    """
    out = np.asarray(output)
    if out.ndim == 3 and out.shape[0] == 1:
        out = out[0]
    # channels first; a (A, 4 + C) transpose would show more channels than anchors
    if out.ndim != 2 or out.shape[0] < 5 or out.shape[1] < out.shape[0] or class_id >= out.shape[0] - 4:
        raise DetectionError(f"the model output has shape {np.shape(output)}, not the YOLOv8 detection layout "
                             f"(1, 4 + classes, anchors) with class {class_id}; export a YOLOv8 detection model "
                             f"with `{EXPORT_COMMAND}`")
    pred = out.T.astype(np.float64)                      # (A, 4 + C)
    cls = pred[:, 4:]
    best = cls.argmax(axis=1)
    conf = cls[np.arange(len(cls)), best]
    sel = np.flatnonzero((conf > threshold) & (best == class_id))
    if sel.size > MAX_NMS_CANDIDATES:
        sel = sel[np.argsort(-conf[sel], kind="stable")[:MAX_NMS_CANDIDATES]]
    cx, cy, bw, bh = pred[sel, :4].T
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).reshape(-1, 4)
    scores = conf[sel]
    keep = nms(boxes, scores, iou_threshold, limit=max_detections)
    return boxes[keep], scores[keep]


# ------------------------------------------------------------------------------------------
# the detector


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"the detector needs an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    return image


class YoloDetector:
    """People found by a YOLOv8 model (``.onnx`` through ONNX Runtime, ``.pt`` through ultralytics).

    ``detect(image (H, W, 3) uint8 RGB, path=None) -> Detections``: person boxes in full-image
    pixels, by decreasing confidence.
    """

    name = "yolo"

    def __init__(self, weights: str, threshold: float = 0.5, iou_threshold: float = 0.7, *,
                 input_size: int | None = None, max_detections: int = MAX_DETECTIONS,
                 threads: int | None = None):
        """Load the weights (nothing is downloaded).

        Args:
          weights: a ``.onnx`` YOLOv8 export or ultralytics ``.pt`` weights.
          threshold: person confidence above which a box is kept (the original demo: 0.5).
          iou_threshold: NMS IoU (ultralytics' default 0.7).
          input_size: model input side (pixels, a multiple of 32) for ONNX models exported with
            a dynamic size (default 640); a fixed-size model's own size is always used.
          max_detections: most boxes per image.
          threads: ONNX Runtime intra-op threads (default: its own choice).
        Raises:
          DetectionError: the file is missing or unreadable, the format is unknown, the model's
            input is not (1, 3, h, w), or the runtime package is not installed.
        """
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= iou_threshold <= 1.0:
            raise DetectionError(f"detection threshold {threshold} and NMS IoU {iou_threshold} must lie in [0, 1]")
        self.weights = pathlib.Path(weights)
        self.threshold = float(threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        if not self.weights.is_file():
            raise DetectionError(f"{self.weights}: no such YOLO weights file; make it with `{EXPORT_COMMAND}` on a "
                                 "machine with ultralytics and put the .onnx there (nothing is downloaded at run time)")
        suffix = self.weights.suffix.lower()
        if suffix == ".onnx":
            self._session, self._input, self.input_size, self._dtype = _open_onnx(self.weights, input_size, threads)
            self._yolo = None
        elif suffix == ".pt":
            self._yolo = _open_ultralytics(self.weights)
            self.input_size = (input_size or DEFAULT_INPUT_SIZE,) * 2
        else:
            raise DetectionError(f"{self.weights}: YOLO weights must be a .onnx export or ultralytics .pt weights "
                                 f"(make the .onnx with `{EXPORT_COMMAND}`)")

    def detect(self, image: np.ndarray, path=None) -> Detections:
        """(H, W, 3) uint8 RGB -> person :class:`Detections` (full-image pixels, decreasing score)."""
        image = _check_image(image)
        if self._yolo is not None:
            return self._detect_ultralytics(image)
        padded, lb = letterbox(image, self.input_size)
        (output,) = self._session.run(None, {self._input: to_input(padded, self._dtype)})[:1]
        boxes, scores = decode_yolov8(output, threshold=self.threshold, iou_threshold=self.iou_threshold,
                                      max_detections=self.max_detections)
        boxes = lb.to_image(boxes)
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])   # boxes wholly in the padding vanish
        return Detections(boxes[inside], scores[inside])

    def _detect_ultralytics(self, image: np.ndarray) -> Detections:
        result = self._yolo.predict(np.ascontiguousarray(image[:, :, ::-1]),  # ultralytics takes BGR arrays
                                    classes=[PERSON_CLASS], conf=self.threshold, iou=self.iou_threshold,
                                    imgsz=self.input_size[0], max_det=self.max_detections,
                                    save=False, verbose=False)[0]
        boxes = result.boxes.xyxy.detach().cpu().numpy()
        scores = result.boxes.conf.detach().cpu().numpy()
        order = np.argsort(-scores, kind="stable")
        return Detections(boxes[order], scores[order])


def _open_onnx(weights: pathlib.Path, input_size, threads):
    try:
        import onnxruntime as ort  # optional: the `detect` extra
    except ImportError:
        raise DetectionError("the YOLO detector needs ONNX Runtime: pip install 'hmr_jax[detect]'") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        session = ort.InferenceSession(str(weights), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own pybind exception types
        raise DetectionError(f"{weights}: not a readable ONNX model ({str(e).splitlines()[0]}); export it again "
                             f"with `{EXPORT_COMMAND}`") from None
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    batch_ok = shape is not None and len(shape) == 4 and (shape[0] == 1 or not isinstance(shape[0], int))
    if not batch_ok or shape[1] != 3:
        raise DetectionError(f"{weights}: expected one (1, 3, h, w) image input, got "
                             f"{[(i.name, i.shape) for i in inputs]}; export a YOLOv8 detection model with "
                             f"`{EXPORT_COMMAND}`")
    h, w = shape[2], shape[3]
    if not (isinstance(h, int) and isinstance(w, int)):   # dynamic export: the caller's size
        side = int(input_size or DEFAULT_INPUT_SIZE)
        if side % 32:
            raise DetectionError(f"input size {side} must be a multiple of 32 (the YOLOv8 stride)")
        h = w = side
    dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
    return session, inputs[0].name, (int(h), int(w)), dtype


def _open_ultralytics(weights: pathlib.Path):
    try:
        from ultralytics import YOLO  # optional: needs torch and torchvision, which fail to import on some machines
    except Exception as e:  # ImportError, or torchvision's RuntimeError about its compiled operators
        raise DetectionError(f"{weights}: .pt weights need ultralytics, which does not import here "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); export them to "
                             f"ONNX with `{EXPORT_COMMAND}` on a machine with ultralytics and pass the .onnx") from None
    try:
        return YOLO(str(weights))
    except Exception as e:
        raise DetectionError(f"{weights}: ultralytics cannot load these weights ({e})") from None
