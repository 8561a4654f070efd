"""hmr_jax.detection.yolo: letterbox, YOLOv8 output decoding, NMS, ONNX Runtime models built here.

The ONNX models are small graphs made with ``onnx.helper`` that have the YOLOv8 export's input
(1, 3, h, w) and output (1, 4 + 80, A) layout: constant boxes, and a person score read from one
pixel of the model's input, so the whole pre-processing (placement, grey padding, RGB order,
[0, 1] scaling, NCHW) shows in which boxes come out.
"""
from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hmr_jax.detection import (DEFAULT_YOLO_WEIGHTS, DetectionError, Detector, FullImageDetector, BoxesDetector,
                               make_detector, yolo_unavailable_reason)
from hmr_jax.detection.boxes import box_iou, nms
from hmr_jax.detection.yolo import (EXPORT_COMMAND, YoloDetector, decode_yolov8, letterbox,
                                    resize_bilinear, to_input)

NUM_CLASSES = 80


def _save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def probe_model(path, boxes_cxcywh, probes_yx, other=None, size=(64, 64)):
    """A YOLOv8-layout model: constant boxes; person score of anchor i = input R at pixel probes_yx[i].

    ``other``: optional (80, A) extra class scores (class 0 ignored).
    """
    h, w = size
    a = len(boxes_cxcywh)
    boxes = np.asarray(boxes_cxcywh, np.float32).T[None]                   # (1, 4, A)
    others = np.zeros((1, NUM_CLASSES - 1, a), np.float32)
    if other is not None:
        others[0] = np.asarray(other, np.float32)[1:]
    idx = np.array([y * w + x for y, x in probes_yx], np.int64)            # channel 0 plane
    inits = [numpy_helper.from_array(boxes, "boxes"), numpy_helper.from_array(others, "others"),
             numpy_helper.from_array(idx, "idx"), numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("Reshape", ["images", "flat"], ["x"]),
             helper.make_node("Gather", ["x", "idx"], ["probe"], axis=1),
             helper.make_node("Unsqueeze", ["probe", "axis1"], ["person"]),
             helper.make_node("Concat", ["boxes", "person", "others"], ["output0"], axis=1)]
    graph = helper.make_graph(nodes, "yolo_probe",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + NUM_CLASSES, a])],
                              inits)
    return _save(graph, path)


def constant_model(path, output, input_shape=("batch", 3, "height", "width")):
    """A model returning ``output`` plus 0 * mean(input) (so the input is used), any input shape."""
    out = np.asarray(output, np.float32)
    inits = [numpy_helper.from_array(out, "const"), numpy_helper.from_array(np.array(0, np.float32), "zero")]
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["const", "z"], ["output0"])]
    graph = helper.make_graph(nodes, "yolo_const",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))], inits)
    return _save(graph, path)


def raw_output(boxes_cxcywh, scores_by_class, anchors=100):
    """(1, 84, A) from per-anchor boxes and a dict {class: (n,) scores}; anchors past n score 0."""
    n = len(boxes_cxcywh)
    out = np.zeros((1, 4 + NUM_CLASSES, max(n, anchors)), np.float32)
    out[0, :4, :n] = np.asarray(boxes_cxcywh, np.float32).T
    for c, s in scores_by_class.items():
        out[0, 4 + c, :n] = s
    return out


def xyxy_to_cxcywh(b):
    b = np.asarray(b, np.float64)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


# ------------------------------------------------------------------------------------------
# NumPy pieces against hand cases


def test_box_iou_hand_cases():
    a = [[0, 0, 10, 10], [0, 0, 0, 5]]
    b = [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]]
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou([[1, 2, 3]], b)


def test_nms_suppresses_overlaps_keeps_disjoint_and_is_strict():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [5, 0, 15, 10]]
    scores = [0.8, 0.9, 0.7, 0.6]
    # box 1 wins; box 0 overlaps it (IoU 81/119), box 3 overlaps box 1 (IoU 54/146) but not above 0.5
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1, 2, 3])
    np.testing.assert_array_equal(nms(boxes, scores, 0.3), [1, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.7), [1, 0, 2, 3])
    # IoU exactly at the threshold is kept (suppression needs IoU > threshold)
    np.testing.assert_array_equal(nms([[0, 0, 10, 10], [5, 0, 15, 10]], [1.0, 0.5], 1 / 3), [0, 1])
    np.testing.assert_array_equal(nms([[0, 0, 10, 10], [5, 0, 15, 10]], [1.0, 0.5], 1 / 3 - 1e-6), [0])
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, limit=2), [1, 2])


def test_resize_bilinear_samples_pixel_centres():
    up = resize_bilinear(np.array([[[0], [100]]], np.uint8), (1, 4))
    np.testing.assert_array_equal(up[0, :, 0], [0, 25, 75, 100])             # x_src = -0.25, 0.25, 0.75, 1.25
    down = resize_bilinear(np.array([[[0], [10], [20], [30]]], np.uint8), (1, 2))
    np.testing.assert_array_equal(down[0, :, 0], [5, 25])                    # x_src = 0.5, 2.5
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bilinear(img, (5, 7)), img)
    const = np.full((13, 9, 3), 77, np.uint8)
    np.testing.assert_array_equal(resize_bilinear(const, (4, 31)), np.full((4, 31, 3), 77, np.uint8))


def test_letterbox_places_the_image_centred_with_grey_padding():
    img = np.full((300, 500, 3), 10, np.uint8)
    padded, lb = letterbox(img, (640, 640))
    assert padded.shape == (640, 640, 3)
    assert (lb.scale, lb.left, lb.top) == (1.28, 0, 128)                     # 500 -> 640 wide, 384 high
    assert np.all(padded[:128] == 114) and np.all(padded[512:] == 114) and np.all(padded[128:512] == 10)
    # odd leftover: the extra pixel goes right (ultralytics' round(d / 2 - 0.1))
    padded, lb = letterbox(np.zeros((100, 99, 3), np.uint8), (64, 64))
    assert (lb.scale, lb.left, lb.top) == (0.64, 0, 0)                       # 99 * 0.64 = 63.36 -> 63 wide
    assert np.all(padded[:, 63] == 114) and np.all(padded[:, :63] == 0)
    padded, lb = letterbox(np.zeros((10, 40, 3), np.uint8), (64, 64))        # 64 x 16, leftover 48: 24 / 24
    assert (lb.left, lb.top) == (0, 24) and np.all(padded[24:40] == 0) and np.all(padded[40:] == 114)
    # a rectangular model input, scaled up
    padded, lb = letterbox(np.zeros((20, 20, 3), np.uint8), (64, 96))
    assert (lb.scale, lb.left, lb.top) == (3.2, 16, 0) and np.all(padded[:, 16:80] == 0)
    assert np.all(padded[:, :16] == 114) and np.all(padded[:, 80:] == 114)


def test_letterbox_round_trip_non_square():
    h, w = 480, 270                                                          # portrait
    img = np.zeros((h, w, 3), np.uint8)
    img[100:300, 50:150] = 255                                               # a person-sized white box
    padded, lb = letterbox(img, (320, 320))
    ys, xs = np.nonzero(padded[:, :, 0] > 127)
    found = lb.to_image([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])
    np.testing.assert_allclose(found, [[50, 100, 150, 300]], atol=1 / lb.scale + 1e-6)
    boxes = np.array([[0, 0, w, h], [10.5, 20.25, 200, 400]])
    np.testing.assert_allclose(lb.to_image(lb.to_input(boxes)), boxes, atol=1e-4)
    # boxes reaching into the padding are clipped to the image
    np.testing.assert_allclose(lb.to_image([[-50, -50, 400, 400]]), [[0, 0, w, h]])
    x = to_input(padded)
    assert x.shape == (1, 3, 320, 320) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], 114 / 255) and np.testing.assert_allclose(x.max(), 1.0)


# ------------------------------------------------------------------------------------------
# decoding of the raw output


def test_decode_threshold_class_filter_nms_and_order():
    boxes = xyxy_to_cxcywh([[0, 0, 10, 20], [1, 0, 11, 20], [50, 50, 60, 70], [100, 0, 120, 30],
                            [200, 0, 210, 10], [300, 0, 310, 10]])
    person = np.array([0.6, 0.9, 0.7, 0.5, 0.95, 0.2])
    bike = np.array([0.0, 0.0, 0.0, 0.0, 0.97, 0.9])
    out = raw_output(boxes, {0: person, 1: bike})
    got_boxes, got_scores = decode_yolov8(out, threshold=0.5, iou_threshold=0.7)
    # anchor 0 is suppressed by anchor 1 (IoU 0.82); 3 is at the threshold (needs > 0.5);
    # 4's best class is not person; 5 is below the threshold
    np.testing.assert_allclose(got_scores, [0.9, 0.7])
    np.testing.assert_allclose(got_boxes, [[1, 0, 11, 20], [50, 50, 60, 70]])
    _, s = decode_yolov8(out, threshold=0.1, iou_threshold=0.9)             # NMS loose: 0 survives too
    np.testing.assert_allclose(s, [0.9, 0.7, 0.6, 0.5])                       # 5's best class is not person
    _, s = decode_yolov8(out, threshold=0.1, iou_threshold=0.9, max_detections=2)
    np.testing.assert_allclose(s, [0.9, 0.7])
    b, s = decode_yolov8(out, threshold=0.8, iou_threshold=0.7, class_id=1)
    np.testing.assert_allclose(s, [0.97, 0.9]) and np.testing.assert_allclose(b[0], [200, 0, 210, 10])
    b, s = decode_yolov8(out[0], threshold=0.99, iou_threshold=0.7)          # unbatched, nothing left
    assert b.shape == (0, 4) and s.shape == (0,)


@pytest.mark.parametrize("shape", [(1, 84), (1, 8400, 84), (2, 84, 8400), (1, 4, 100)])
def test_decode_rejects_other_layouts(shape):
    with pytest.raises(DetectionError, match="YOLOv8 detection layout") as e:
        decode_yolov8(np.zeros(shape, np.float32), threshold=0.5, iou_threshold=0.7)
    assert EXPORT_COMMAND in str(e.value)


# ------------------------------------------------------------------------------------------
# through ONNX Runtime


def test_onnx_detector_end_to_end_non_square_image(tmp_path):
    # image 48 x 80 into a 64 x 64 input: scale 0.8, 64 x 38 (38.4 rounded), top padding 13
    img = np.zeros((48, 80, 3), np.uint8)
    img[10:30, 20:60] = (255, 0, 0)                 # red: person score 1.0 where probed
    img[32:46, 0:15] = (200, 0, 0)                  # dark red: 200 / 255
    img[0:8, 65:80] = (0, 0, 255)                   # blue: R = 0, a BGR mix-up would score it 1.0
    anchors = [  # (box x1, y1, x2, y2 in model pixels, probed model pixel (y, x))
        ([16, 21, 48, 37], (30, 32)),               # 0: on red -> kept, score 1
        ([0, 5, 10, 25], (5, 5)),                   # 1: on the top padding -> 114 / 255 = 0.447
        ([30, 40, 40, 50], (45, 40)),               # 2: on black -> 0
        ([18, 22, 48, 37], (44, 6)),                # 3: dark red, overlaps 0 -> suppressed by NMS
        ([0, 40, 12, 50], (44, 6)),                 # 4: dark red, disjoint -> kept, 0.784
        ([52, 13, 64, 19], (15, 58)),               # 5: on blue -> 0
        ([60, 50, 64, 60], (44, 6)),                # 6: dark red, but class 5 scores higher -> dropped
    ]
    anchors += [([0, 0, 1, 1], (45, 40))] * 93      # filler on black
    other = np.zeros((NUM_CLASSES, len(anchors)))
    other[5, 6] = 0.9
    path = probe_model(tmp_path / "probe.onnx", xyxy_to_cxcywh([a[0] for a in anchors]),
                       [a[1] for a in anchors], other)
    det = YoloDetector(str(path), threshold=0.5)
    assert isinstance(det, Detector) and det.input_size == (64, 64)
    d = det.detect(img)
    np.testing.assert_allclose(d.scores, [1.0, 200 / 255], rtol=1e-6)
    # hand-mapped: x / 0.8, (y - 13) / 0.8
    np.testing.assert_allclose(d.boxes, [[20, 10, 60, 30], [0, 33.75, 15, 46.25]], atol=1e-4)
    assert d.boxes.dtype == np.float32
    # a lower threshold lets the grey padding through: the pad value is 114
    d = YoloDetector(str(path), threshold=0.4, iou_threshold=0.7).detect(img)
    assert len(d) == 3 and abs(d.scores[2] - 114 / 255) < 1e-6
    np.testing.assert_allclose(d.boxes[2], [0, 0, 12.5, 15], atol=1e-4)     # clipped to the image top
    # a box wholly in the padding has no area in the image: dropped
    path = probe_model(tmp_path / "pad.onnx", xyxy_to_cxcywh([[0, 0, 10, 10]] * 100), [(5, 5)] * 100)
    assert len(YoloDetector(str(path), threshold=0.4).detect(img)) == 0
    assert np.all(np.diff(d.scores) <= 0)


def test_input_size_read_from_the_model(tmp_path):
    out = raw_output(xyxy_to_cxcywh([[10, 10, 50, 90]] * 100), {0: np.full(100, 0.8)})
    fixed = constant_model(tmp_path / "fixed.onnx", out, [1, 3, 64, 96])
    det = YoloDetector(str(fixed), input_size=320)                           # the model's size wins
    assert det.input_size == (64, 96)
    d = det.detect(np.zeros((64, 96, 3), np.uint8))
    np.testing.assert_allclose(d.boxes, [[10, 10, 50, 64]]) and np.testing.assert_allclose(d.scores, [0.8])
    dynamic = constant_model(tmp_path / "dynamic.onnx", out)
    assert YoloDetector(str(dynamic)).input_size == (640, 640)
    det = YoloDetector(str(dynamic), input_size=320)
    assert det.input_size == (320, 320)
    d = det.detect(np.zeros((160, 320, 3), np.uint8))                        # scale 1, top padding 80
    np.testing.assert_allclose(d.boxes, [[10, 0, 50, 10]])
    with pytest.raises(DetectionError, match="multiple of 32"):
        YoloDetector(str(dynamic), input_size=100)


def test_weights_errors_name_the_file_and_the_fix(tmp_path, monkeypatch):
    missing = tmp_path / "yolov8x.onnx"
    with pytest.raises(DetectionError) as e:
        YoloDetector(str(missing))
    assert str(missing) in str(e.value) and EXPORT_COMMAND in str(e.value)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DetectionError, match="not a readable ONNX model"):
        YoloDetector(str(bad))
    gray = constant_model(tmp_path / "gray.onnx", np.zeros((1, 84, 100)), [1, 1, 64, 64])
    with pytest.raises(DetectionError, match=r"\(1, 3, h, w\) image input"):
        YoloDetector(str(gray))
    other = tmp_path / "yolov8x.engine"
    other.write_bytes(b"x")
    with pytest.raises(DetectionError, match=r"\.onnx export or ultralytics \.pt"):
        YoloDetector(str(other))
    pt = tmp_path / "yolov8x.pt"
    pt.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "ultralytics", None)                    # import fails as it does here
    with pytest.raises(DetectionError, match="ultralytics") as e:
        YoloDetector(str(pt))
    assert EXPORT_COMMAND in str(e.value) and str(pt) in str(e.value)
    with pytest.raises(DetectionError, match=r"\[0, 1\]"):
        YoloDetector(str(gray), threshold=1.5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        YoloDetector(str(constant_model(tmp_path / "c.onnx", raw_output([[1, 1, 1, 1]] * 100, {}),
                                        [1, 3, 64, 64]))).detect(np.zeros((8, 8), np.uint8))


def test_onnxruntime_missing_is_a_detection_error(tmp_path, monkeypatch):
    path = constant_model(tmp_path / "m.onnx", raw_output([[1, 1, 1, 1]] * 100, {}), [1, 3, 64, 64])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(DetectionError, match=r"hmr_jax\[detect\]"):
        YoloDetector(str(path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert "hmr_jax[detect]" in yolo_unavailable_reason(path)


def test_make_detector_kinds(tmp_path):
    assert isinstance(make_detector("full"), FullImageDetector)
    det = make_detector("boxes", boxes={"a.jpg": [[1, 2, 3, 4]]})
    assert isinstance(det, BoxesDetector) and len(det.detect(None, "a.jpg")) == 1
    with pytest.raises(DetectionError, match="boxes JSON"):
        make_detector("boxes")
    with pytest.raises(DetectionError, match="unknown detector 'hog'"):
        make_detector("hog")
    path = constant_model(tmp_path / "m.onnx", raw_output(xyxy_to_cxcywh([[0, 0, 8, 8]] * 100),
                                                          {0: np.full(100, 0.6)}), [1, 3, 64, 64])
    det = make_detector("yolo", weights=path, threshold=0.7)
    assert isinstance(det, YoloDetector) and det.threshold == 0.7 and len(det.detect(np.zeros((64, 64, 3), np.uint8))) == 0
    assert len(make_detector("yolo", weights=path).detect(np.zeros((64, 64, 3), np.uint8))) == 1
    with pytest.raises(DetectionError, match="no such YOLO weights"):
        make_detector("yolo", weights=tmp_path / "none.onnx")
    assert yolo_unavailable_reason(path) is None
    reason = yolo_unavailable_reason(tmp_path / "none.onnx")
    assert "none.onnx" in reason and EXPORT_COMMAND in reason
    assert DEFAULT_YOLO_WEIGHTS == "body_models/yolov8x.onnx"
