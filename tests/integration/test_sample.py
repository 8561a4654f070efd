"""sample.py and the inference API on fixture-converted models (the ``mega_cvqmae_small``,
``vqhps_regressor_small`` and ``mega_vqmae_small`` parity fixtures with the ``mesh_vqvae`` one).

* the API equals the code path sample.py had before it (kept here: model built from the converted
  config, the decoding functions called directly) on the same crops, for MEGA deterministic and
  stochastic and for VQ-HPS;
* sample.py end to end: files, overlays drawn exactly where the meshes project, results.json,
  bad inputs reported while the others are processed;
* the detector modes, every setup error as one ``error:`` line, ``--smpl-fit`` (round trip on a
  stand-in body), ``--generate``.

The fixture's random MEGA predicts a negative camera scale (mesh behind the camera); the setup
shifts the camera head's scale bias so that the (random, metres-wide) meshes land in the crop.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

import convert_torch_weights
from helpers import inference as H
import sample
from hmr_jax.conversion import common
from hmr_jax.mesh.io import read_mesh
from hmr_jax.render import PerspectiveCamera, rasterize

HW = (120, 160)


@pytest.fixture(scope="module")
def setup(parity_dir, reference_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    mega = H.convert_fixture_mega(parity_dir, reference_dir, root)
    tok, ckpt, conns = mega["tok"], mega["ckpt"], mega["conns"]
    vqhps = root / "vqhps"
    assert convert_torch_weights.main([str(parity_dir / "vqhps_regressor_small.pt"), "--model", "vqhps_hrnet",
                                       "--config", str(parity_dir / "vqhps_regressor_small.json"),
                                       "--out", str(vqhps)]) == 0
    pretrained = root / "mega_pretrained"
    assert convert_torch_weights.main([str(parity_dir / "mega_vqmae_small.pt"), "--config",
                                       str(parity_dir / "mega_vqmae_small.json"), "--out", str(pretrained)]) == 0
    rng = np.random.default_rng(7)
    reg = rng.random((17, 6890)) ** 8
    np.save(root / "J_regressor_h36m.npy", (reg / reg.sum(1, keepdims=True)).astype(np.float32))
    images = root / "images"
    images.mkdir()
    Image.fromarray(H.smooth_image(*HW, seed=0)).save(images / "scene.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    boxes = H.json_boxes(root / "boxes.json", {"scene.png": [[30, 10, 100, 110], [400, 300, 500, 400],
                                                             [60, 20, 150, 118]]})
    return {"root": root, "tok": tok, "ckpt": ckpt, "vqhps": str(vqhps), "pretrained": str(pretrained),
            "images": images, "boxes": boxes, "faces": str(reference_dir / "template.ply"),
            "conns": conns, "reg": str(root / "J_regressor_h36m.npy")}


def _common_args(s, out):
    return ["--out", str(out), "--tokenizer", s["tok"], "--faces", s["faces"], "--connections", s["conns"]]


# ------------------------------------------------------------------------------------------
# the API against the old sample.py path


def _old_predict(checkpoint, decode, crops, num_samples=1, key=None, pose_init=None):
    """What sample.py's Sampler.predict did: converted config -> model; decoding called directly;
    ``decode`` = ``decoding.mesh_decoder_fn`` of the converted tokenizer."""
    from hmr_jax.models import decoding
    from hmr_jax.models.mega import build_mega
    from hmr_jax.models.vqhps import build_vqhps

    variables, config = common.read_converted(checkpoint)
    images = jax.numpy.asarray(crops)
    if config["model"].startswith("vqhps"):
        model = build_vqhps(config)
        pose = np.broadcast_to(pose_init, (len(crops), pose_init.shape[-1]))
        out = decoding.vqhps_predict(model, variables, images, pose)
        tokens = out["tokens"][:, None]
    elif num_samples == 1:
        model = build_mega(config)
        out = decoding.mega_deterministic(model, variables, images=images)
        tokens = out["tokens"][:, None]
    else:
        model = build_mega(config)
        out = decoding.mega_generate(model, variables, images=images, key=key, num_samples=num_samples,
                                     steps=5, gen_temp=1.0)
        tokens = out["tokens"]
    meshes = decoding.meshes_from_tokens(decode, tokens, out["rot6d"])
    return {"vertices": np.asarray(meshes["vertices"]), "rotmat": np.asarray(meshes["rotmat"]),
            "rot6d": np.asarray(out["rot6d"]), "cam": np.asarray(out["cam"]), "tokens": np.asarray(tokens)}


def _assert_same(new, old):
    np.testing.assert_array_equal(new["tokens"], old["tokens"])
    for k in ("vertices", "rotmat", "rot6d", "cam"):
        np.testing.assert_allclose(new[k], old[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_api_equals_the_old_sample_path(setup):
    from hmr_jax.conversion.mesh_vqvae import load_converted
    from hmr_jax.inference import Predictor, crop_person
    from hmr_jax.models.decoding import mesh_decoder_fn
    from hmr_jax.models.vqhps import pose_from_mesh

    s = setup
    decode = mesh_decoder_fn(*load_converted(s["tok"]))
    image = np.asarray(Image.open(s["images"] / "scene.png").convert("RGB"))
    boxes = [[30, 10, 100, 110], [60, 20, 150, 118]]
    mega = Predictor.load(s["ckpt"], s["tok"], faces=s["faces"])
    crops = np.stack([crop_person(image, b, mega.model.geometry).image for b in boxes])
    # MEGA deterministic: the crops directly, and images + boxes through the whole API
    old = _old_predict(s["ckpt"], decode, crops)
    _assert_same(mega.model.predict_crops(crops), old)
    (record,) = mega.predict([image], boxes=[boxes])
    for k, person in enumerate(record.persons):
        np.testing.assert_allclose(person.vertices, old["vertices"][k], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(person.tokens, old["tokens"][k])
    # MEGA stochastic: the API's first batch uses fold_in(key, 0)
    key = jax.random.fold_in(jax.random.PRNGKey(3), 0)
    _assert_same(mega.model.predict_crops(crops, 2, seed=3), _old_predict(s["ckpt"], decode, crops, 2, key))
    # VQ-HPS
    vqhps = Predictor.load(s["vqhps"], s["tok"], faces=s["faces"], joint_regressor=s["reg"])
    vertices, _ = read_mesh(s["faces"])
    pose = np.asarray(pose_from_mesh(np.load(s["reg"]), vertices - vertices.mean(0)))
    _assert_same(vqhps.model.predict_crops(crops), _old_predict(s["vqhps"], decode, crops, pose_init=pose))


# ------------------------------------------------------------------------------------------
# sample.py


def _coverage(vertices, faces, person, h, w):
    camera = PerspectiveCamera(tuple([person["focal_length_px"]] * 2), tuple(person["principal_point_px"]),
                               tuple(person["camera_translation_m"]))
    return rasterize(vertices, faces, camera, h, w).mask


@pytest.mark.slow
def test_sample_end_to_end(setup, capsys):
    """Every output file of two persons x two hypotheses, overlays checked pixel by pixel (~20 s:
    the random fixture's metres-wide meshes are slow to rasterise)."""
    import trimesh

    s = setup
    out = s["root"] / "out"
    rc = sample.main(["--checkpoint", s["ckpt"], "--images", str(s["images"]), "--bboxes", s["boxes"],
                      "--num-samples", "2"] + _common_args(s, out))
    err = capsys.readouterr().err
    assert rc == 1  # the broken image and the box outside the image were skipped...
    assert "error: " in err and "broken.jpg" in err and "person 1" in err and "outside" in err
    assert "Traceback" not in err
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "stochastic" and results["detector"] == "boxes" and len(results["errors"]) == 2
    (scene,) = [r for r in results["images"] if r["image"].endswith("scene.png")]
    assert [p["person"] for p in scene["persons"]] == [0, 2]   # ...and the valid persons processed
    original = np.asarray(Image.open(s["images"] / "scene.png").convert("RGB"))
    _, faces = read_mesh(s["faces"])
    union = np.zeros(HW, bool)
    for person in scene["persons"]:
        assert len(person["hypotheses"]) == 2 and person["spread"]["max_vertex_distance_to_mean_m"] > 0
        for j, hyp in enumerate(person["hypotheses"]):
            vertices, mesh_faces = read_mesh(out / hyp["mesh"])
            assert vertices.shape == (6890, 3) and mesh_faces.shape == (13776, 3)
            glb = trimesh.load(out / hyp["glb"], force="mesh")
            np.testing.assert_allclose(glb.vertices, vertices * [1, -1, -1], atol=1e-5)  # glTF axes: y up
            overlay = np.asarray(Image.open(out / hyp["overlay"]))
            assert overlay.shape == original.shape
            changed = np.any(overlay != original, axis=-1)
            covered = _coverage(vertices, faces, person, *HW)
            assert covered.sum() > 200
            assert not (changed & ~covered).any()  # nothing drawn outside the mesh
            assert changed[covered].mean() > 0.9  # and the mesh drawn where it projects
            if j == 0:
                union |= covered
            side = np.asarray(Image.open(out / hyp["side_view"]))
            assert side.shape == original.shape and (side != 255).any()
    both = np.asarray(Image.open(out / scene["overlay_all"]))
    changed = np.any(both != original, axis=-1)
    assert not (changed & ~union).any() and changed[union].mean() > 0.9


def test_detector_choice(setup, capsys, tmp_path):
    from hmr_jax.detection import BoxesDetector, FullImageDetector

    s = setup
    base = ["--checkpoint", s["ckpt"], "--images", "x.png", "--out", str(tmp_path)]
    auto = sample.make_detector(sample._parse(base + ["--detector-weights", str(tmp_path / "no_yolo.onnx")]))
    err = capsys.readouterr().err
    assert isinstance(auto, FullImageDetector)           # no weights: the whole image, with a warning
    assert err.startswith("warning: no person detector") and "--bboxes" in err
    boxes = sample.make_detector(sample._parse(base + ["--bboxes", s["boxes"]]))
    assert isinstance(boxes, BoxesDetector) and capsys.readouterr().err == ""
    assert isinstance(sample.make_detector(sample._parse(base + ["--detector", "full"])), FullImageDetector)
    # weights that YOLO cannot use (or no YOLO module): auto falls back with a warning, yolo is an error
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a network")
    auto = sample.make_detector(sample._parse(base + ["--detector-weights", str(bad)]))
    assert isinstance(auto, FullImageDetector) and "warning: no person detector" in capsys.readouterr().err
    with pytest.raises(sample.SampleError, match="--detector yolo"):
        sample.make_detector(sample._parse(base + ["--detector", "yolo", "--detector-weights", str(bad)]))


def test_yolo_boxes_reach_the_crops(setup, capsys):
    """--detector yolo on a small ONNX graph with the YOLOv8 output layout (tests/unit/test_detection_yolo.py):
    the persons sample.py predicts are the detector's boxes above --detection-threshold."""
    from hmr_jax.detection import YoloDetector
    from test_detection_yolo import constant_model, raw_output

    s = setup
    weights = constant_model(s["root"] / "yolo.onnx", raw_output(
        [[200, 300, 120, 200], [420, 320, 100, 180], [300, 300, 60, 60]], {0: [0.9, 0.7, 0.3]}))
    image = np.asarray(Image.open(s["images"] / "scene.png").convert("RGB"))
    expected = YoloDetector(str(weights), threshold=0.5).detect(image)
    assert len(expected) == 2
    out = s["root"] / "out_yolo"
    rc = sample.main(["--checkpoint", s["ckpt"], "--images", str(s["images"] / "scene.png"), "--detector", "yolo",
                      "--detector-weights", str(weights)] + _common_args(s, out))
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    persons = results["images"][0]["persons"]
    assert results["detector"] == "yolo" and len(persons) == 2
    np.testing.assert_allclose([p["box"] for p in persons], expected.boxes, rtol=1e-6)
    np.testing.assert_allclose([p["score"] for p in persons], expected.scores, rtol=1e-6)
    # auto takes YOLO when onnxruntime and the weights are there; the threshold is passed on
    base = ["--checkpoint", s["ckpt"], "--images", "x.png", "--out", str(out), "--detector-weights", str(weights)]
    auto = sample.make_detector(sample._parse(base + ["--detection-threshold", "0.8"]))
    assert isinstance(auto, YoloDetector) and len(auto.detect(image)) == 1


@pytest.mark.parametrize("extra, words", [
    (["--detector", "yolo", "--detector-weights", "nowhere/yolov8x.onnx"], "yolo export model=yolov8x.pt format=onnx"),
    (["--detector", "boxes"], "--detector boxes needs --bboxes"),
    (["--detector", "full", "--bboxes", "b.json"], "only read by --detector boxes"),
    (["--num-samples", "0"], "--num-samples must be >= 1"),
])
def test_detector_and_option_errors_are_one_line(setup, capsys, extra, words):
    s = setup
    rc = sample.main(["--checkpoint", s["ckpt"], "--images", str(s["images"])] + extra
                     + _common_args(s, s["root"] / "o_err"))
    err = capsys.readouterr().err
    assert rc == 2 and words in err and err.count("error: ") == 1 and "Traceback" not in err


def test_setup_errors_are_one_line(setup, capsys, tmp_path):
    s = setup
    cases = [
        (["--checkpoint", s["tok"], "--images", str(s["images"])], "holds a 'mesh_vqvae' model"),
        (["--checkpoint", s["pretrained"], "--images", str(s["images"])], "--generate"),
        (["--checkpoint", s["ckpt"], "--images", str(tmp_path)], "no images found"),
        (["--checkpoint", s["vqhps"], "--images", str(s["images"]), "--joint-regressor", s["reg"],
          "--num-samples", "2"], "VQ-HPS predicts one mesh"),
        (["--checkpoint", s["ckpt"], "--images", str(s["images"]), "--tokenizer", str(tmp_path / "none")],
         "--tokenizer"),
        (["--checkpoint", s["ckpt"], "--generate", "2"], "one of mega_pretrained"),
    ]
    np.save(tmp_path / "faces.npy", np.array([[0, 1, 100]], np.int32))
    cases.append((["--checkpoint", s["ckpt"], "--images", str(s["images"]), "--faces", str(tmp_path / "faces.npy")],
                  "6890-vertex meshes but the faces index 101"))
    for argv, words in cases:
        rc = sample.main(_common_args(s, tmp_path / "o") + argv)   # the later option wins
        err = capsys.readouterr().err
        assert rc == 2, argv
        assert words in err and err.startswith("error: ") and err.count("\n") == 1, err


class _StandInModel:
    """An image model whose 'predictions' are stand-in SMPL+H bodies of known parameters, in the
    predicted meshes' camera-aligned axes (for the --smpl-fit round trip)."""

    kind = "mega_hrnet"
    batch_size = 4

    def __init__(self, vertices):
        from hmr_jax.data.augment import BACKBONE_INPUTS

        self.vertices = vertices
        self.num_vertices = vertices.shape[1]
        self.geometry = BACKBONE_INPUTS["hrnet"]

    def mode(self, num_samples, mode=None):
        return "deterministic"

    def predict_crops(self, crops, num_samples=1, **kwargs):
        b = len(crops)
        return {"vertices": self.vertices[:b, None], "tokens": np.zeros((b, 1, 54), np.int32),
                "rot6d": np.tile([1.0, 0, 0, 0, 1, 0], (b, 1)), "rotmat": np.tile(np.eye(3), (b, 1, 1)),
                "cam": np.tile([0.9, 0.0, 0.1], (b, 1))}


def test_smpl_fit_round_trip(tmp_path, capsys):
    from hmr_jax.body import load_body_model
    from hmr_jax.testing.smpl_files import write_standin_model
    from hmr_jax.detection import BoxesDetector
    from hmr_jax.inference import Predictor

    model_path = tmp_path / "smplh" / "neutral" / "model.npz"
    write_standin_model(model_path, "smplh", seed=2)
    body = load_body_model(model_path)
    rng = np.random.default_rng(1)
    truth = dict(betas=rng.normal(0, 1, (2, 10)).astype(np.float32),
                 global_orient=np.array([[np.pi, 0, 0], [np.pi - 0.3, 0.2, 0]], np.float32),
                 body_pose=rng.normal(0, 0.3, (2, 21, 3)).astype(np.float32), transl=np.zeros((2, 3), np.float32))
    meshes = np.asarray(body(**truth).vertices)
    meshes = meshes - meshes.mean(1, keepdims=True)
    Image.fromarray(H.smooth_image(96, 96)).save(tmp_path / "two.png")
    boxes = H.json_boxes(tmp_path / "b.json", {"two.png": [[0, 0, 40, 90], [50, 0, 90, 90]]})
    predictor = Predictor(_StandInModel(meshes), np.asarray(body.faces), BoxesDetector(boxes))
    out = tmp_path / "out"
    rc = sample.main(["--checkpoint", "unused", "--images", str(tmp_path / "two.png"), "--out", str(out),
                      "--smpl-fit", "--smpl-model", str(model_path)], predictor=predictor)
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    persons = results["images"][0]["persons"]
    assert len(persons) == 2
    for person in persons:
        hyp = person["hypotheses"][0]
        mesh, _ = read_mesh(out / hyp["mesh"])
        with np.load(out / hyp["smpl"]["file"]) as z:
            params = {k: z[k] for k in z.files}
        assert {"betas", "global_orient", "body_pose", "transl", "left_hand_pose", "right_hand_pose"} <= set(params)
        again = np.asarray(body(betas=params["betas"], global_orient=params["global_orient"],
                                body_pose=params["body_pose"].reshape(1, 21, 3), transl=params["transl"]).vertices[0])
        err = np.linalg.norm(again - mesh, axis=-1)
        assert err.max() < 5e-3                                     # round trip within 5 mm
        assert hyp["smpl"]["vertex_error_m"] == pytest.approx(float(err.mean()), rel=1e-2, abs=1e-5)
        np.testing.assert_allclose(params["camera_translation"][0], person["camera_translation_m"], rtol=1e-6)


def test_generate_random_meshes(setup, capsys):
    import trimesh

    s = setup
    out = s["root"] / "generated"
    rc = sample.main(["--checkpoint", s["pretrained"], "--generate", "3", "--steps", "3", "--temperature", "2.0",
                      "--seed", "5"] + _common_args(s, out))
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["num_meshes"] == 3 and len(results["meshes"]) == 3
    tokens = [m["tokens"] for m in results["meshes"]]
    assert all(len(t) == 54 for t in tokens) and tokens[0] != tokens[1]
    for m in results["meshes"]:
        vertices, faces = read_mesh(out / m["mesh"])
        assert vertices.shape == (6890, 3) and np.isfinite(vertices).all()
        np.testing.assert_allclose(trimesh.load(out / m["glb"], force="mesh").vertices, vertices, atol=1e-5)
    grid = np.asarray(Image.open(out / "generated.png"))
    assert grid.shape[0] > sample.GRID_TILE and grid.shape[1] > 3 * sample.GRID_TILE
    assert (grid < 250).any()   # meshes drawn on the white tiles


def test_second_run_on_a_busy_output_folder_is_one_error_line(tmp_path, capsys):
    """Two sample.py runs never write into one folder at once: the second names the first."""
    from hmr_jax.files import folder_lock

    out = tmp_path / "out"
    with folder_lock(out, "sample.py"):
        rc = sample.main(["--checkpoint", str(tmp_path / "none"), "--images", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and f"pid {os.getpid()}" in err[0], err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]   # nothing written


@pytest.mark.parametrize("argv, words", [
    (["--detector", "yolov8"], "flag --detector=yolov8: value should be one of <auto|yolo|boxes|full>"),
    (["--num-sample", "2"], "Unknown command line flag 'num-sample'"),
    (["--num-samples", "two"], "flag --num-samples=two: invalid literal for int()"),
    (["--smooth-camera=1"], "flag --smooth-camera=1: expected MIN_CUTOFF,BETA (2 comma-separated numbers)"),
    ([], "flag --checkpoint=None: Flag --checkpoint must have a value other than None"),   # required
])
def test_bad_flags_are_one_line(tmp_path, capsys, argv, words):
    """A bad value, an unknown flag or a missing required one: one ``error:`` line naming the flag,
    exit status 2, nothing written."""
    out = tmp_path / "out"
    base = ["--images", "x.png", "--out", str(out)] + (["--checkpoint", str(tmp_path / "ckpt")] if argv else [])
    rc = sample.main(base + argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert "see sample.py --help" in err and not out.exists()


def test_flags_help_and_paths(capsys):
    """--help lists the flags and returns 0; the documented defaults; paths after --images and
    positional ones are all images; booleans take --flag / --noflag, values --name value or --name=value."""
    from hmr_jax.video.smoothing import CAMERA_SMOOTHING, VERTEX_SMOOTHING

    assert sample.main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--detector: <auto|yolo|boxes|full>", "--[no]smpl-fit", "--smooth-vertices: MIN_CUTOFF,BETA",
                 "--images", "--generate", "--video", "--max-frames", "--track-max-age"):
        assert flag in text, flag
    args = sample._parse(["--checkpoint", "c", "--out", "o", "--images", "a.png", "photos/", "b.png"])
    assert args.images == ["a.png", "photos/", "b.png"] and args.checkpoint == "c" and args.out == "o"
    assert (args.detector, args.num_samples, args.every, args.max_frames, args.generate) == ("auto", 1, 1, None, None)
    assert (args.smpl_fit, args.smooth, args.faithful, args.detection_threshold, args.focal) == (
        False, False, False, 0.5, 1000.0)
    assert args.smooth_vertices == (VERTEX_SMOOTHING.min_cutoff, VERTEX_SMOOTHING.beta)
    assert args.smooth_camera == (CAMERA_SMOOTHING.min_cutoff, CAMERA_SMOOTHING.beta)
    assert args.joint_regressor == "body_models/J_regressor_h36m.npy" and args.batch_size == 16
    args = sample._parse(["a.png", "--checkpoint=c", "--out=o", "--images=b.png", "--smpl-fit", "--smooth",
                          "--nosmooth", "--detector=boxes", "--smooth-camera", "2,0.5", "--generate", "4"])
    assert args.images == ["b.png", "a.png"] and args.smpl_fit and not args.smooth and args.detector == "boxes"
    assert args.smooth_camera == (2.0, 0.5) and args.generate == 4
    assert sample._parse(["--checkpoint", "c", "--out", "o", "--video", "v.mp4"]).images is None
