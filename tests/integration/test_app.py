"""hmr_jax.app without a browser: the Reconstructor behind the page on a stand-in model (pictures,
files, threshold, hypotheses grid, SMPL files, the limits) and the command line's one-line errors.
The page itself, in headless Chromium, is tests/integration/test_app_browser.py."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from helpers import inference as H
from hmr_jax import app
from hmr_jax.detection import Detections
from hmr_jax.mesh.io import read_mesh
from hmr_jax.render import PerspectiveCamera, rasterize


class _Fixed:
    """A detector returning fixed boxes and scores (sorted by decreasing score)."""

    name = "fixed"

    def __init__(self, boxes, scores):
        self.boxes, self.scores = np.asarray(boxes, float), np.asarray(scores, float)

    def detect(self, image, path=None):
        return Detections(self.boxes, self.scores)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    frames, boxes = H.walking_person(24, 192, 288)
    path = tmp_path_factory.mktemp("photo") / "person.png"
    Image.fromarray(frames[6]).save(path)
    return path, frames[6], boxes[6]


def _reconstructor(tmp_path, predictor=None, **limits):
    predictor = predictor or H.standin_predictor(noise=0.01)
    x1, y1, x2, y2 = 60.0, 40.0, 120.0, 150.0
    predictor.detector = _Fixed([[x1, y1, x2, y2], [200, 10, 260, 100]], [0.9, 0.3])
    return app.Reconstructor(predictor, tmp_path / "results", **limits)


def test_pictures_files_and_threshold(tmp_path, photo):
    path, image, _ = photo
    r = _reconstructor(tmp_path)
    res = r(str(path), threshold=0.5, hypotheses=3, steps=2)
    assert len(res.record["persons"]) == 1 and res.record["mode"] == "stochastic" and res.record["steps"] == 2
    names = sorted(pathlib.Path(f).name for f in res.files)
    assert names == sorted([f"person0_h{j}.{e}" for j in range(3) for e in ("obj", "glb")] + ["results.json"])
    assert all(pathlib.Path(f).parent.parent == tmp_path / "results" for f in res.files)   # in the app's folder
    record = json.loads(pathlib.Path(res.files[-1]).read_text())
    person = record["persons"][0]
    assert person["spread"]["mean_vertex_distance_to_mean_m"] > 0 and len(person["hypotheses"]) == 3
    # the overlay changes exactly where hypothesis 0 projects
    vertices, faces = read_mesh(pathlib.Path(res.files[0]).parent / person["hypotheses"][0]["mesh"])
    camera = PerspectiveCamera((person["focal_length_px"],) * 2, tuple(person["principal_point_px"]),
                               tuple(person["camera_translation_m"]))
    covered = rasterize(vertices, faces, camera, *image.shape[:2]).mask
    changed = np.any(res.overlay != image, axis=-1)
    assert covered.sum() > 200 and not (changed & ~covered).any() and changed[covered].mean() > 0.9
    assert res.side_view.shape == image.shape and (res.side_view != 255).any()
    # the grid: three tiles of the photo (at most GRID_TILE pixels), 2-pixel gaps
    h, w = image.shape[:2]
    assert max(h, w) <= app.GRID_TILE and res.grid.shape == (h + 4, 3 * w + 8, 3)
    for j in range(3):   # each tile shows its own hypothesis (the noise differs)
        tile = res.grid[2:2 + h, 2 + j * (w + 2):2 + j * (w + 2) + w]
        assert np.any(tile != image, axis=-1).sum() > 200
    assert not np.array_equal(res.grid[2:2 + h, 2:2 + w], res.grid[2:2 + h, w + 4:2 * w + 4])
    assert "1 person found" in res.summary and "3 stochastic hypotheses, 2 steps" in res.summary
    # a lower threshold keeps the second box; above both: nobody, the photo back, only results.json
    assert len(r(str(path), threshold=0.2).record["persons"]) == 2
    none = r(str(path), threshold=0.95)
    assert none.record["persons"] == [] and "No person found" in none.summary and none.grid is None
    np.testing.assert_array_equal(none.overlay, image)
    assert [pathlib.Path(f).name for f in none.files] == ["results.json"]
    # one hypothesis: deterministic, a grid of one tile
    one = r(str(path), threshold=0.5, hypotheses=1)
    assert one.record["mode"] == "deterministic" and one.record["steps"] is None
    assert one.grid.shape == (h + 4, w + 4, 3)


def test_limits_and_bad_requests(tmp_path, photo):
    path, image, _ = photo
    r = _reconstructor(tmp_path, max_pixels=100_000, max_side=200, max_hypotheses=4, max_steps=6)
    # larger than max_side: scaled down before anything else
    res = r(str(path), threshold=0.5)
    assert res.overlay.shape == (133, 200, 3) and res.record["width"] == 200
    big = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(big)                         # 120,000 pixels > 100,000
    with pytest.raises(app.AppError, match="more than this app's limit of 100,000 pixels"):
        r(str(big))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for kwargs, words in [(dict(image_path=str(text)), "cannot read the upload"),
                          (dict(image_path=None), "upload a photo"),
                          (dict(image_path=str(path), hypotheses=5), "1..4"),
                          (dict(image_path=str(path), hypotheses=0), "1..4"),
                          (dict(image_path=str(path), hypotheses=2, steps=7), "steps must lie in 1..6"),
                          (dict(image_path=str(path), threshold=1.5), "threshold must lie in")]:
        with pytest.raises(app.AppError, match=words):
            r(**kwargs)
    vqhps = _reconstructor(tmp_path, H.standin_predictor(family="vqhps"))
    assert not vqhps.stochastic
    with pytest.raises(app.AppError, match="one mesh per person"):
        vqhps(str(path), hypotheses=2)
    # a phone photo stored sideways (EXIF orientation 6) comes upright
    exif = Image.Exif()
    exif[274] = 6
    phone = tmp_path / "phone.jpg"
    Image.fromarray(image).save(phone, exif=exif, quality=95)
    assert r.load_image(phone).shape == (200, 133, 3)


def test_smpl_parameter_files(tmp_path, photo):
    from hmr_jax.body import load_body_model
    from hmr_jax.testing.smpl_files import write_standin_model

    model_path = tmp_path / "smplh" / "model.npz"
    write_standin_model(model_path, "smplh", seed=2)
    body = load_body_model(model_path)
    rest = np.asarray(body(betas=np.zeros((1, 10), np.float32)).vertices[0])
    rest = (rest - rest.mean(0)) * np.array([1, -1, -1])          # camera-aligned axes: y down
    predictor = H.standin_predictor(noise=0.0, vertices=rest, faces=np.asarray(body.faces))
    r = _reconstructor(tmp_path, predictor)
    r.body_model = body
    res = r(str(photo[0]), threshold=0.5)
    (smpl,) = [f for f in res.files if f.endswith("_smpl.npz")]
    with np.load(smpl) as z:
        assert {"betas", "global_orient", "body_pose", "transl", "camera_translation"} <= set(z.files)
    hyp = res.record["persons"][0]["hypotheses"][0]
    assert hyp["smpl"]["file"] == pathlib.Path(smpl).name and hyp["smpl"]["vertex_error_m"] < 5e-3


def test_command_line_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", tempfile.gettempdir())
    for key in ("GRADIO_TEMP_DIR", "XDG_CACHE_HOME", "TMPDIR", "GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE",
                "HF_HUB_DISABLE_TELEMETRY", "GRADIO_SSR_MODE"):
        monkeypatch.setenv(key, "restored after the test")
    faces = tmp_path / "faces.npy"
    np.save(faces, np.array([[0, 1, 2]], np.int32))
    cases = [(["--checkpoint", str(tmp_path / "none"), "--faces", str(faces)], "none"),
             (["--checkpoint", str(tmp_path / "none"), "--faces", str(tmp_path / "no_faces.ply")], "no_faces.ply")]
    for argv, words in cases:
        rc = app.main(argv + ["--temp-dir", str(tmp_path / "temp")])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert sorted(p.name for p in (tmp_path / "temp").iterdir()) == ["cache", "gradio", "tmp"]   # nothing served


def test_flags(tmp_path, capsys):
    """--help lists the flags (status 0); the documented limits are the defaults; a bad enum value or an
    unknown flag is one ``error:`` line naming it (status 2) and nothing is created."""
    assert app.main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--detector: <auto|yolo|full>", "--max-upload-mb", "--queue-size", "--temp-dir", "--port"):
        assert flag in text, flag
    args = app._parse(["--checkpoint", "c"])
    assert (args.host, args.port, args.detector, args.temp_dir, args.batch_size) == ("127.0.0.1", 7860, "auto", None, 8)
    assert (args.max_upload_mb, args.max_pixels, args.max_side, args.max_hypotheses, args.max_steps,
            args.max_persons, args.queue_size) == (10, 40_000_000, 1280, 8, 20, 8, 16)
    assert app._parse(["--checkpoint=c", "--max-side=640", "--host", "0.0.0.0"]).max_side == 640
    for argv, words in [(["--detector", "boxes"], "flag --detector=boxes: value should be one of <auto|yolo|full>"),
                        (["--max-side", "big"], "flag --max-side=big"),
                        (["--prot", "80"], "Unknown command line flag 'prot'"),
                        (["extra"], "unexpected argument extra")]:
        rc = app.main(["--checkpoint", "c", "--temp-dir", str(tmp_path / "temp"), *argv])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
        assert "see python -m hmr_jax.app --help" in err
    assert not (tmp_path / "temp").exists()


def test_detector_choice(tmp_path):
    from hmr_jax.detection import DetectionError, FullImageDetector, YoloDetector
    from test_detection_yolo import constant_model, raw_output

    def args(*extra):
        return app._parse(["--checkpoint", "unused", *extra])
    missing = str(tmp_path / "none.onnx")
    detector, note = app._detector(args("--detector-weights", missing))
    assert isinstance(detector, FullImageDetector) and "whole photo" in note and "yolo export" in note
    with pytest.raises(DetectionError, match="--detector yolo"):
        app._detector(args("--detector", "yolo", "--detector-weights", missing))
    weights = constant_model(tmp_path / "yolo.onnx", raw_output([[320, 320, 100, 200]], {0: [0.6]}))
    detector, note = app._detector(args("--detector-weights", str(weights)))
    assert isinstance(detector, YoloDetector) and detector.threshold == app.DETECTION_FLOOR and note == ""
