"""hmr_jax.detection.base: the Detections type, whole-image and boxes-file detectors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hmr_jax.detection import BoxesDetector, DetectionError, Detections, Detector, FullImageDetector, load_boxes


def test_full_image_box_is_the_image():
    d = FullImageDetector().detect(np.zeros((40, 60, 3), np.uint8))
    np.testing.assert_array_equal(d.boxes, [[0, 0, 60, 40]])
    assert isinstance(FullImageDetector(), Detector) and len(d) == 1


def test_boxes_file_lookup_and_order(tmp_path):
    p = tmp_path / "boxes.json"
    p.write_text(json.dumps({"a.jpg": [[1, 2, 30, 40, 0.5], [0, 0, 5, 5, 0.9]], "b": [[1, 1, 2, 2]], "c.png": []}))
    det = BoxesDetector(p)
    a = det.detect(None, tmp_path / "a.jpg")
    np.testing.assert_allclose(a.scores, [0.9, 0.5])
    np.testing.assert_allclose(a.boxes[0], [0, 0, 5, 5])
    np.testing.assert_allclose(det.detect(None, "x/b.jpg").scores, [1.0])  # by stem, score 1
    assert len(det.detect(None, "c.png")) == 0
    with pytest.raises(DetectionError, match="no entry"):
        det.detect(None, "d.jpg")


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "expected an object"),
    ('{"a": [[1, 2, 3]]}', "entry 'a'"),
    ('{"a": [["x", 2, 3, 4]]}', "entry 'a'"),
    ('{"a": [[1, 2, 3, true]]}', "entry 'a'"),
    ('{"a": [[1, 2, 3, 1e999]]}', "non-finite"),
    ('{"a": ', "cannot read"),
])
def test_bad_boxes_files_are_named(tmp_path, text, match):
    p = tmp_path / "boxes.json"
    p.write_text(text)
    with pytest.raises(DetectionError, match=match) as info:
        load_boxes(p)
    assert str(p) in str(info.value)


def test_missing_boxes_file(tmp_path):
    with pytest.raises(DetectionError, match="no such boxes file"):
        load_boxes(tmp_path / "none.json")


def test_detections_checks_lengths():
    with pytest.raises(ValueError):
        Detections(np.zeros((2, 4)), np.zeros(3))
