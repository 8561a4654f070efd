"""The inference API on tiny random models (seconds to compile): the crop path against the original
demo's arithmetic, fixed-size batches (compilations counted), detector wiring with a fake
detector, full-image cameras, workdir vs converted loading, SMPL fits, and the errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from helpers import REPO_ROOT
from helpers import inference as H
from hmr_jax.data.augment import BACKBONE_INPUTS, IMAGENET_MEAN, IMAGENET_STD
from hmr_jax.detection import Detections
from hmr_jax.inference import (InferenceError, Predictor, crop_person, fit_body_params, load_generator,
                               load_image_model, square_box)
from hmr_jax.inference.model import batch_mesh


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_inference")
    tok, faces = H.write_tokenizer(root)
    out = {"root": root, "tok": tok, "faces": faces, "faces_path": str(root / "faces.npy")}
    for kind in ("mega_resnet", "mega_vit"):
        out[kind] = H.write_image_model(root, kind)
    return out


# ------------------------------------------------------------------------------------------
# crops


def _demo_crop(image: np.ndarray, box, size: int) -> np.ndarray:
    """The original demo's crop (DemoDataset + generate_image_patch_cv2) restated in NumPy, 0..255.

    Square side = the box's longer side (expand_to_aspect_ratio to 1:1); Gaussian blur of sigma
    (f - 1) / 2 when f = side / size / 2 > 1.1 (skimage.filters.gaussian: scipy's filter, edges
    'nearest', truncate 4); then cv2.warpAffine (INTER_LINEAR, BORDER_CONSTANT 0) by the affine
    mapping the box centre to (size / 2, size / 2) and a half side to size / 2 pixels.
    """
    box = np.asarray(box, np.float32)
    centre = (box[2:4] + box[0:2]) / 2.0
    side = float(np.max(box[2:4] - box[0:2]))
    img = image.astype(np.float64)
    f = side / size / 2.0
    if f > 1.1:
        img = gaussian_filter(img, sigma=((f - 1) / 2, (f - 1) / 2, 0), mode="nearest", truncate=4.0)
    u = np.arange(size, dtype=np.float64)
    xs = centre[0] + (u - size / 2.0) * side / size          # the inverse map, dst pixel -> src point
    ys = centre[1] + (u - size / 2.0) * side / size
    padded = np.pad(img, ((1, 1), (1, 1), (0, 0)))             # neighbours outside the image are 0
    x = np.clip(xs + 1, 0, padded.shape[1] - 1.000001)
    y = np.clip(ys + 1, 0, padded.shape[0] - 1.000001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    ax, ay = (x - x0)[None, :, None], (y - y0)[:, None, None]
    g = lambda yy, xx: padded[yy][:, xx]  # noqa: E731
    out = ((1 - ay) * ((1 - ax) * g(y0, x0) + ax * g(y0, x0 + 1))
           + ay * ((1 - ax) * g(y0 + 1, x0) + ax * g(y0 + 1, x0 + 1)))
    inside_x = (xs >= -1) & (xs <= image.shape[1])
    inside_y = (ys >= -1) & (ys <= image.shape[0])
    return np.where((inside_y[:, None] & inside_x[None, :])[..., None], out, 0.0)


def _pixels(crop) -> np.ndarray:
    return crop.image.astype(np.float64) * np.asarray(IMAGENET_STD) * 255 + np.asarray(IMAGENET_MEAN) * 255


@pytest.mark.parametrize("hw, box", [
    ((300, 400), (100.0, 50.0, 180.0, 210.0)),      # inside, upsampled
    ((300, 400), (-50.0, 100.0, 150.0, 400.0)),     # reaching past the left and bottom edges
    ((640, 800), (50.0, 20.0, 700.0, 620.0)),       # shrunk 2.9 times: blurred first
])
def test_crop_is_the_original_demo_arithmetic(hw, box):
    image = H.smooth_image(*hw, seed=3)
    crop = crop_person(image, box, BACKBONE_INPUTS["hrnet"])
    centre, side = square_box(box)
    assert side == max(box[2] - box[0], box[3] - box[1])
    np.testing.assert_allclose(crop.centre, [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    assert crop.image.shape == (224, 224, 3) and crop.image.dtype == np.float32
    ref = _demo_crop(image, box, 224)
    got = _pixels(crop)
    np.testing.assert_allclose(got, ref, atol=0.02)   # 0..255: float32 rounding only
    if box[0] < 0:                                    # the part beyond the image is black
        assert (ref.max(-1) == 0).sum() > 1000


def test_vit_crop_is_the_middle_of_the_square():
    image = H.smooth_image(300, 400, seed=4)
    box = (120.0, 30.0, 220.0, 280.0)
    vit = crop_person(image, box, BACKBONE_INPUTS["vit"])
    assert vit.image.shape == (256, 192, 3)
    np.testing.assert_allclose(_pixels(vit), _demo_crop(image, box, 256)[:, 32:224], atol=0.02)


def test_bad_boxes_are_errors_naming_the_fix():
    image = np.zeros((100, 200, 3), np.uint8)
    for box, words in (([300, 0, 400, 50], "outside the 200x100 image"), ([10, 10, 10, 50], "empty"),
                       ([0, 0, np.nan, 4], "finite")):
        with pytest.raises(InferenceError, match=words):
            crop_person(image, box, BACKBONE_INPUTS["hrnet"])


# ------------------------------------------------------------------------------------------
# fixed-size batches


@pytest.fixture
def compiles():
    """A one-element list counting XLA compilations (jax.monitoring events) while the test runs."""
    counter = [0]

    def listener(name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            counter[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield counter
    jax.monitoring.unregister_event_duration_listener(listener)


def _boxes(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, 100, n)
    y1 = rng.uniform(0, 60, n)
    return np.stack([x1, y1, x1 + rng.uniform(20, 60, n), y1 + rng.uniform(30, 80, n)], 1)


def test_persons_go_through_fixed_batches_and_compile_once_per_size(tiny, compiles):
    predictor = Predictor.load(tiny["mega_resnet"][0], tiny["tok"], faces=tiny["faces"], batch_size=8)
    assert predictor.model.batch_size == 8
    counter = compiles
    images = [H.smooth_image(120, 160, seed=s) for s in range(6)]
    first = {}
    for n, seed in ((1, 0), (3, 1), (7, 2)):          # batch sizes 1, 4 and 8
        before = counter[0]
        first[n] = predictor.predict([images[seed]], boxes=[_boxes(n, seed)])[0]
        assert counter[0] > before, n                  # a new size compiles...
        assert len(first[n].persons) == n and not first[n].errors
    for n, seed in ((1, 3), (3, 4), (7, 5), (2, 0)):   # ...the same sizes again do not (2 -> 2 is new)
        before = counter[0]
        predictor.predict([images[seed]], boxes=[_boxes(n, seed)])
        assert (counter[0] > before) == (n == 2), n
    # images with 1, 3 and 7 people together: 11 persons = a batch of 8 and one of 3 -> 4
    before = counter[0]
    together = predictor.predict([images[0], images[1], images[2]],
                                 boxes=[_boxes(1, 0), _boxes(3, 1), _boxes(7, 2)])
    assert counter[0] == before
    # ...and each person's prediction does not depend on the batch it was packed in
    for record, n in zip(together, (1, 3, 7)):
        for a, b in zip(record.persons, first[n].persons):
            np.testing.assert_array_equal(a.tokens, b.tokens)
            np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-5)
            np.testing.assert_allclose(a.camera_translation, b.camera_translation, rtol=1e-5)


def test_stochastic_hypotheses_and_their_spread(tiny):
    predictor = Predictor.load(tiny["mega_resnet"][0], tiny["tok"], faces=tiny["faces"], batch_size=4)
    image = H.smooth_image(120, 160, seed=7)
    a = predictor.predict([image], boxes=[_boxes(2, 7)], num_samples=3, seed=1)[0]
    b = predictor.predict([image], boxes=[_boxes(2, 7)], num_samples=3, seed=1)[0]
    person = a.persons[0]
    assert person.vertices.shape == (3, H.NV, 3) and person.tokens.shape == (3, H.NUM_TOKENS)
    np.testing.assert_array_equal(person.tokens, b.persons[0].tokens)   # same seed, same hypotheses
    spread = person.spread()
    d = np.linalg.norm(person.vertices - person.vertices.mean(0), axis=-1)
    assert spread["max_vertex_distance_to_mean_m"] == pytest.approx(float(d.max()))
    assert predictor.predict([image], boxes=[_boxes(1, 7)])[0].persons[0].spread() is None


# ------------------------------------------------------------------------------------------
# detectors, crops and cameras


class FakeDetector:
    """Implements the Detector protocol: fixed boxes per image size, records its calls."""

    name = "fake"

    def __init__(self, boxes):
        self.boxes = np.asarray(boxes, np.float32)
        self.calls = []

    def detect(self, image, path=None):
        self.calls.append((image.shape, path))
        return Detections(self.boxes, np.linspace(0.9, 0.6, len(self.boxes)))


def test_fake_detector_boxes_give_the_crops_and_full_image_cameras(tiny, tmp_path):
    """ViT geometry (256 x 192 crops, camera in [-0.5, 0.5]): the full-image pinhole camera puts
    a point of depth 0 exactly where the crop's weak-perspective camera puts it in the image."""
    from PIL import Image

    boxes = [[30.0, 20.0, 110.0, 190.0], [150.0, 60.0, 250.0, 160.0], [500.0, 0.0, 600.0, 50.0]]
    detector = FakeDetector(boxes)
    predictor = Predictor.load(tiny["mega_vit"][0], tiny["tok"], faces=tiny["faces_path"], detector=detector)
    image = H.smooth_image(200, 300, seed=8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    (record,) = predictor.predict([str(tmp_path / "photo.png")])
    assert detector.calls == [((200, 300, 3), str(tmp_path / "photo.png"))]
    assert [p.index for p in record.persons] == [0, 1]          # the third box lies outside the image
    assert len(record.errors) == 1 and "person 2" in record.errors[0] and "outside" in record.errors[0]
    crops = [crop_person(image, b, predictor.model.geometry) for b in boxes[:2]]
    direct = predictor.model.predict_crops(np.stack([c.image for c in crops]))
    focal = 1000.0 / 224 * 300
    for person, crop, score in zip(record.persons, crops, (0.9, 0.75)):
        k = person.index
        assert person.score == pytest.approx(score)
        np.testing.assert_allclose(person.box_centre, crop.centre)
        assert person.box_side == crop.side
        np.testing.assert_allclose(person.vertices, direct["vertices"][k], atol=1e-6)
        assert person.focal_length == pytest.approx(focal)
        np.testing.assert_allclose(person.principal_point, [150.0, 100.0])
        s, tx, ty = person.camera_weak_perspective
        points = person.vertices[0].astype(np.float64).copy()
        points[:, 2] = 0.0
        # weak perspective: normalised crop coordinates s (X + t) in [-0.5, 0.5] over the square
        expected = crop.centre + s * (points[:, :2] + [tx, ty]) * crop.side / (2 * 0.5)
        cam = points + person.camera_translation
        got = focal * cam[:, :2] / cam[:, 2:] + person.principal_point
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
        assert person.camera_valid == (s > 0)


def test_combined_overlay_is_depth_ordered(tiny):
    """Two copies of one mesh, the nearer one drawn over the farther one where they overlap."""
    from hmr_jax.inference import ImagePrediction, Person

    faces = H.grid_faces(4, 6)
    grid = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 6), np.linspace(-0.5, 0.5, 4)), -1).reshape(-1, 2)
    verts = np.concatenate([grid, np.zeros((24, 1))], 1)[None].astype(np.float32)

    def person(i, t):
        return Person(i, np.zeros(4), 1.0, np.zeros(2), 1.0, verts, np.zeros((1, 8), np.int32), np.zeros(6),
                      np.eye(3), np.array([1.0, 0, 0]), np.asarray(t, np.float64), 100.0, np.array([50.0, 50.0]), True)

    image = np.zeros((100, 100, 3), np.uint8)
    near, far = person(0, [0.2, 0.0, 3.0]), person(1, [-0.2, 0.0, 4.0])
    record = ImagePrediction(0, None, 100, 100, persons=[far, near], image=image)
    red = np.tile([1.0, 0.0, 0.0], (48, 1))
    red[24:] = [0.0, 0.0, 1.0]                       # far = red (first), near = blue (second)
    pic = record.overlay(faces, color=red).astype(int)
    centre = pic[50, 50]                             # both meshes: the near (blue) one shows
    assert centre[2] > centre[0] + 50
    far_only = pic[50, 36]                           # x pixels 32.5..57.5 far, 40..73 near
    assert far_only[0] > far_only[2] + 50


# ------------------------------------------------------------------------------------------
# loading


def test_workdir_and_converted_folder_give_the_same_predictions(tiny):
    path, cfg, variables = tiny["mega_resnet"]
    workdir = H.write_workdir(tiny["root"], cfg, variables, tiny["tok"], tiny["faces_path"])
    from_workdir = Predictor.load(workdir)            # tokenizer and faces from its config.json
    converted = load_image_model(path, tiny["tok"])
    assert from_workdir.model.kind == converted.kind == "mega_resnet"
    assert from_workdir.model.geometry == converted.geometry
    np.testing.assert_array_equal(from_workdir.faces, tiny["faces"])
    crops = np.random.default_rng(0).normal(size=(3, H.CROP, H.CROP, 3)).astype(np.float32)
    a, b = from_workdir.model.predict_crops(crops), converted.predict_crops(crops)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert from_workdir.model.decoding["num_samples"] == 25   # configs/mega_resnet.py's decoding


def test_loading_errors_name_the_fix(tiny, tmp_path):
    path = tiny["mega_resnet"][0]
    with pytest.raises(InferenceError, match="mesh_vqvae.*one of mega_hrnet"):
        load_image_model(tiny["tok"], tiny["tok"])                  # a tokenizer is not an image model
    with pytest.raises(InferenceError, match="give its tokenizer"):
        load_image_model(path)
    with pytest.raises(InferenceError, match="not a folder"):
        load_image_model(tmp_path / "nowhere", tiny["tok"])
    with pytest.raises(InferenceError, match="mega_pretrained"):
        load_generator(path, tiny["tok"])
    with pytest.raises(InferenceError, match="24-vertex meshes but the faces index 7"):
        Predictor.load(path, tiny["tok"], faces=np.array([[0, 1, 6]]))
    model = load_image_model(path, tiny["tok"])
    with pytest.raises(InferenceError, match="crops must be"):
        model.predict_crops(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(InferenceError, match="deterministic decoding gives one mesh"):
        model.mode(2, "deterministic")
    other = tmp_path / "other_tok"
    cfg = H.tokenizer_config(tiny["root"] / "conn")
    cfg["quantizer"]["num_embeddings"] = 32
    from hmr_jax.conversion.common import write_converted
    from hmr_jax.conversion.mesh_vqvae import build_model
    abstract = jax.eval_shape(lambda: build_model(cfg).init(jax.random.PRNGKey(0), np.zeros((1, H.NV, 3))))
    write_converted(other, H.random_like(abstract), {**cfg, "model": "mesh_vqvae"}, {})
    with pytest.raises(InferenceError, match="32 codes but .* predicts 16"):
        load_image_model(path, str(other))


def test_vqhps_needs_its_start_pose_and_gives_one_mesh(tiny):
    root = tiny["root"]
    path, cfg, variables = H.write_image_model(root, "vqhps_resnet")
    with pytest.raises(InferenceError, match="joint_regressor"):
        load_image_model(path, tiny["tok"])
    rng = np.random.default_rng(2)
    reg = rng.random((17, H.NV)).astype(np.float32)
    reg /= reg.sum(1, keepdims=True)
    tpose = rng.normal(size=(H.NV, 3)).astype(np.float32)
    model = load_image_model(path, tiny["tok"], joint_regressor=reg, tpose=tpose)
    assert model.mode(1) == "single_pass"
    with pytest.raises(InferenceError, match="VQ-HPS predicts one mesh"):
        model.predict_crops(np.zeros((1, H.CROP, H.CROP, 3), np.float32), 2)
    # a workdir finds the regressor and the T-pose through its config (body_models, tpose)
    (root / "body_models").mkdir()
    np.save(root / "body_models" / "J_regressor_h36m.npy", reg)
    np.save(root / "tpose.npy", tpose)
    workdir = H.write_workdir(root, cfg, variables, tiny["tok"], tiny["faces_path"], name="run_vqhps",
                              body_models=str(root / "body_models"), tpose=str(root / "tpose.npy"))
    from_workdir = load_image_model(workdir)
    np.testing.assert_allclose(from_workdir.pose_init, model.pose_init, rtol=1e-6)
    crops = rng.normal(size=(2, H.CROP, H.CROP, 3)).astype(np.float32)
    a, b = from_workdir.predict_crops(crops), model.predict_crops(crops)
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    np.testing.assert_allclose(a["vertices"], b["vertices"], atol=1e-6)


def test_bad_images_are_reported_and_the_others_predicted(tiny, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    predictor = Predictor.load(tiny["mega_resnet"][0], tiny["tok"], faces=tiny["faces"])
    good = H.smooth_image(80, 80, seed=9)
    out = predictor.predict([str(tmp_path / "broken.jpg"), good, str(tmp_path / "missing.png"),
                             np.zeros((10, 10, 2), np.uint8)])
    assert [len(r.persons) for r in out] == [0, 1, 0, 0]
    assert "cannot read the image" in out[0].errors[0] and "no such file" in out[2].errors[0]
    assert "(H, W, 3)" in out[3].errors[0]
    assert out[1].persons[0].box.tolist() == [0, 0, 80, 80]      # the default detector: the whole image


# ------------------------------------------------------------------------------------------
# SMPL parameters


def test_smpl_fit_round_trip_within_5mm(tmp_path):
    from hmr_jax.body import load_body_model
    from hmr_jax.testing.smpl_files import write_standin_model

    path = tmp_path / "smplh" / "neutral" / "model.npz"
    write_standin_model(path, "smplh", seed=3)
    model = load_body_model(path)
    rng = np.random.default_rng(0)
    truth = dict(betas=rng.normal(0, 1.0, (3, 10)).astype(np.float32),
                 global_orient=np.array([[np.pi, 0, 0]] * 3, np.float32) + rng.normal(0, 0.3, (3, 3)).astype(np.float32),
                 body_pose=rng.normal(0, 0.3, (3, 21, 3)).astype(np.float32),
                 transl=rng.normal(0, 0.5, (3, 3)).astype(np.float32))
    meshes = np.asarray(model(**truth).vertices)
    fits = fit_body_params(meshes, model, batch_size=2)            # a batch of 2, then 1 padded to 1
    assert len(fits) == 3
    for fit, mesh in zip(fits, meshes):
        assert fit["betas"].shape == (1, 10) and fit["body_pose"].shape == (1, 63)
        assert fit["global_orient"].shape == fit["transl"].shape == (1, 3)
        assert fit["left_hand_pose"].shape == fit["right_hand_pose"].shape == (1, 45)
        again = np.asarray(model(betas=fit["betas"], global_orient=fit["global_orient"],
                                 body_pose=fit["body_pose"].reshape(1, 21, 3), transl=fit["transl"]).vertices[0])
        err = np.linalg.norm(again - mesh, axis=-1)
        assert err.max() < 5e-3
        assert fit["vertex_error_m"] == pytest.approx(float(err.mean()), rel=1e-3, abs=1e-6)


def test_results_are_json_serialisable(tiny):
    predictor = Predictor.load(tiny["mega_resnet"][0], tiny["tok"], faces=tiny["faces"])
    person = predictor.predict([H.smooth_image(64, 64)])[0].persons[0]
    json.dumps({"t": person.camera_translation.tolist(), "f": person.focal_length, "s": person.score})


def test_demo_pictures_and_evaluation_load_through_the_api(tiny, tmp_path):
    """hmr_jax.demo's rendered hypotheses and evaluate.py's predictor read a workdir through the
    inference API (the toy image records hold 24-point meshes, the tiny tokenizer's size)."""
    from hmr_jax import demo
    from hmr_jax.testing.toy_data import write_toy_image_dataset
    from hmr_jax import evaluation

    path, cfg, variables = tiny["mega_resnet"]
    workdir = H.write_workdir(tiny["root"], cfg, variables, tiny["tok"], tiny["faces_path"], name="run_demo")
    write_toy_image_dataset(tmp_path / "split", 4, seed=3)
    pictures = demo.sample_pictures(workdir, str(tmp_path / "split"), tiny["faces"], str(tmp_path / "pics"),
                                    num_images=2, num_samples=2)
    assert len(pictures) == 2
    from PIL import Image

    sheet = np.asarray(Image.open(pictures[0]))
    assert sheet.shape[1] > 7 * 2 * H.CROP          # crop, ground truth, prediction, 2 hypotheses, 2 side views
    predictor = evaluation.load_predictor(workdir, "stochastic", num_samples=3)
    assert predictor.hypotheses == 3 and predictor.backbone == "resnet" and predictor.crop_size == H.CROP
    images = np.random.default_rng(0).normal(size=(2, H.CROP, H.CROP, 3)).astype(np.float32)
    assert predictor.predict(images, jax.random.PRNGKey(0)).shape == (3, 2, H.NV, 3)
    det = evaluation.load_predictor(workdir, "deterministic")
    np.testing.assert_allclose(det.predict(images, None),
                               load_image_model(path, tiny["tok"]).predict_crops(images)["vertices"][:, 0], atol=1e-6)


# ------------------------------------------------------------------------------------------
# devices

_SPLIT = r"""
import json, sys
import hmr_jax  # noqa: F401  (XLA defaults; the test's XLA_FLAGS ask for 2 host devices)
import jax, numpy as np
from hmr_jax.inference import load_image_model

path, tok = sys.argv[1], sys.argv[2]
one, two = load_image_model(path, tok, devices=1), load_image_model(path, tok)
g = one.geometry
crops = np.random.default_rng(0).standard_normal((5, g.crop, g.width, 3)).astype(np.float32)
out = {"devices": jax.device_count(), "mesh": None if two.mesh is None else int(two.mesh.size),
       "split_rows": len(two._place(crops[:4]).sharding.device_set),
       "odd_rows": len(two._place(crops[:1]).sharding.device_set)}
for n, mode in ((1, "deterministic"), (3, "stochastic")):
    a, b = one.predict_crops(crops, n, seed=1), two.predict_crops(crops, n, seed=1)
    out[mode] = {"tokens_equal": bool((a["tokens"] == b["tokens"]).all()),
                 "vertices_err": float(np.abs(a["vertices"] - b["vertices"]).max()),
                 "cam_err": float(np.abs(a["cam"] - b["cam"]).max())}
print(json.dumps(out))
"""


def test_batches_split_over_devices_give_the_same_meshes(tiny, tmp_path):
    """With 2 host devices, load_image_model splits each padded batch by rows over both (weights
    replicated), batch 1 stays on one device, and the meshes equal the one-device run's."""
    path, _, _ = tiny["mega_resnet"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=str(REPO_ROOT),
               JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", _SPLIT, path, tiny["tok"]], env=env, capture_output=True,
                         text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["mesh"] == 2
    assert out["split_rows"] == 2 and out["odd_rows"] == 1
    for mode in ("deterministic", "stochastic"):
        assert out[mode]["tokens_equal"], out
        assert out[mode]["vertices_err"] < 1e-5 and out[mode]["cam_err"] < 1e-5, out


def test_device_choice(tiny):
    """One CPU device by default (no mesh); asking for more devices than exist is one clear error."""
    assert batch_mesh() is None and batch_mesh(1) is None
    with pytest.raises(InferenceError, match="local device"):
        batch_mesh(len(jax.local_devices()) + 1)
    with pytest.raises(InferenceError, match="local device"):
        load_image_model(tiny["mega_resnet"][0], tiny["tok"], devices=0)
