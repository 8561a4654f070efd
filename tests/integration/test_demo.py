"""The embedded demo's pieces: rendered validation pictures, the joint regressor fit, and a tiny
end-to-end run (``slow``)."""
from __future__ import annotations

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hmr_jax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from hmr_jax.mesh.io import load_faces
from hmr_jax.training import pictures

CROP = 32


def _gray_crop(h=CROP, w=CROP, level=0.2):
    """A normalised crop whose uint8 picture is a uniform gray."""
    rgb = np.full((h, w, 3), level, np.float32)
    return (rgb - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)


def _square(half=0.5, z=0.0):
    """A square of two triangles in the z = 0 plane, |x|, |y| <= half (m)."""
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], np.float64)
    return v, np.array([[0, 1, 2], [0, 2, 3]], np.int32)


def test_mesh_overlay_draws_exactly_where_the_camera_projects():
    v, f = _square(0.5)
    base = pictures.to_uint8(_gray_crop())
    # s = 1, t = (0.25, 0): normalised x in [-0.25, 0.75], y in [-0.5, 0.5]
    pic = pictures.mesh_overlay(_gray_crop(), v, f, np.array([1.0, 0.25, 0.0]), zoom=2, alpha=1.0)
    assert pic.shape == (2 * CROP, 2 * CROP, 3) and pic.dtype == np.uint8
    changed = np.any(pic != np.kron(base, np.ones((2, 2, 1), np.uint8)), axis=-1)
    side = 2 * CROP
    to_px = lambda n: (n + 1) * side / 2 - 0.5  # noqa: E731
    ys, xs = np.nonzero(changed)
    assert xs.min() >= np.floor(to_px(-0.25)) and xs.max() <= np.ceil(to_px(0.75))
    assert ys.min() >= np.floor(to_px(-0.5)) and ys.max() <= np.ceil(to_px(0.5))
    inner = changed[int(to_px(-0.4)):int(to_px(0.4)), int(to_px(-0.15)):int(to_px(0.65))]
    assert inner.all()
    assert not changed[:, : int(to_px(-0.3))].any()  # left of the square: the crop as it was


def test_mesh_overlay_skips_degenerate_camera():
    v, f = _square(0.5)
    base = pictures.mesh_overlay(_gray_crop(), v, f, np.array([-1.0, 0.0, 0.0]))
    np.testing.assert_array_equal(base, np.kron(pictures.to_uint8(_gray_crop()), np.ones((2, 2, 1), np.uint8)))


def test_mesh_overlay_vit_crop_keeps_centre_columns():
    """A 0.5-range, 4:3 crop (ViT): a mesh at the crop centre covers the picture's centre."""
    v, f = _square(0.1)
    img = _gray_crop(CROP, 24)
    pic = pictures.mesh_overlay(img, v, f, np.array([1.0, 0.0, 0.0]), zoom=1, alpha=1.0, keypoint_range=0.5)
    changed = np.any(pic != pictures.to_uint8(img), axis=-1)
    ys, xs = np.nonzero(changed)
    assert abs(xs.mean() - (24 - 1) / 2) < 1.0 and abs(ys.mean() - (CROP - 1) / 2) < 1.0


def test_mesh_side_view_shows_depth_extent():
    v, f = _square(0.5)
    v2 = v[:, [2, 1, 0]]  # the square in the x = 0 plane: edge-on from the front, full from the side
    side = pictures.mesh_side_view(v2, f, 64)
    mesh = np.any(side != 255, axis=-1)
    assert side.shape == (64, 64, 3) and mesh.sum() > 50
    ys, xs = np.nonzero(mesh)
    assert abs(xs.mean() - 31.5) < 4 and abs(ys.mean() - 31.5) < 4


def test_mesh_prediction_grid_tiles_and_keypoints():
    v, f = _square(0.4)
    images = np.stack([_gray_crop(), _gray_crop(level=0.6)])
    verts = np.stack([v, v + [0.3, 0.0, 0.0]])
    cams = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    gt = np.array([[[0.9, 0.9, 1.0], [-0.9, -0.9, 0.0]]] * 2, np.float32)
    grid = pictures.mesh_prediction_grid(images, verts, cams, f, gt)
    assert grid.shape == (2 * CROP, 4 * CROP, 3)
    left, right = grid[:, :2 * CROP], grid[:, 2 * CROP:]
    assert not np.array_equal(left, right)
    # the visible keypoint at (0.9, 0.9) is green; the hidden one at (-0.9, -0.9) is not drawn
    px = int(round(((0.9 + 1) * CROP / 2 - 0.5) * 2))
    assert tuple(left[px, px]) == (40, 220, 40)
    qx = int(round(((-0.9 + 1) * CROP / 2 - 0.5) * 2))
    assert tuple(left[qx, qx]) != (40, 220, 40)


def test_load_faces_npy_and_errors(tmp_path):
    _, f = _square()
    np.save(tmp_path / "faces.npy", f)
    np.testing.assert_array_equal(load_faces(str(tmp_path / "faces.npy"))[0], f)
    with pytest.raises(FileNotFoundError, match="faces"):
        load_faces(str(tmp_path / "missing.npy"))
    np.save(tmp_path / "bad.npy", np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        load_faces(str(tmp_path / "bad.npy"))


class _FakeStage:
    """An image stage's picture hooks (the stage contract's ``backbone`` and ``predict``): posed
    square meshes and cameras."""

    backbone = "resnet"

    def __init__(self, faces_path=""):
        self.config = ml_collections.ConfigDict({"faces": faces_path})
        v, _ = _square(0.5)
        self._v = jnp.asarray(v, jnp.float32)

    def predict(self, params, model_state, frozen, images):
        b = images.shape[0]
        return jnp.broadcast_to(self._v, (b, 4, 3)) * params, jnp.tile(jnp.array([[1.0, 0.0, 0.0]]), (b, 1))


def test_validation_picture_renders_mesh_when_faces_known(tmp_path):
    _, f = _square()
    np.save(tmp_path / "faces.npy", f)
    batch = {"image": np.stack([_gray_crop()] * 2), "keypoints_2d": np.zeros((2, 3, 3), np.float32)}
    mesh_pic = pictures.validation_picture(_FakeStage(str(tmp_path / "faces.npy")), 1.0, {}, {}, batch, batch)
    point_pic = pictures.validation_picture(_FakeStage(""), 1.0, {}, {}, batch, batch)
    assert mesh_pic.shape == point_pic.shape == (2 * CROP, 4 * CROP, 3)
    base = np.kron(pictures.to_uint8(_gray_crop()), np.ones((2, 2, 1), np.uint8))
    mesh_changed = np.any(mesh_pic[:, :2 * CROP] != base, axis=-1).sum()
    point_changed = np.any(point_pic[:, :2 * CROP] != base, axis=-1).sum()
    # a filled square of half the crop's side vs four small discs at its corners
    assert mesh_changed > 0.2 * (2 * CROP) ** 2 > 5 * point_changed > 0


def test_baseline_comparison_states_each_metric_and_the_verdict():
    from hmr_jax.demo import baseline_comparison

    base = {"pve": 200.0, "mpjpe": 180.0, "pa_mpjpe": 100.0}
    good = {"MEGA deterministic": {"pve": 150.0, "mpjpe": 135.0, "pa_mpjpe": 90.0},
            "mean training mesh (baseline)": base}
    text = baseline_comparison(good)
    assert "PVE 150.0 vs 200.0 mm (25% lower)" in text and "PA-MPJPE 90.0 vs 100.0 mm (10% lower)" in text
    assert text.endswith("beats the baseline on every metric.")
    bad = {**good, "MEGA deterministic": {"pve": 150.0, "mpjpe": 135.0, "pa_mpjpe": 110.0}}
    assert "PA-MPJPE 110.0 vs 100.0 mm (10% HIGHER)" in baseline_comparison(bad)
    assert "does NOT beat" in baseline_comparison(bad)
    assert baseline_comparison({"mean training mesh (baseline)": base}) == ""


def test_demo_mega_config_trains_a_narrow_backbone_with_augmentation():
    """The demo's MEGA learns from scratch only with the narrow backbone and flips (see its config)."""
    from hmr_jax.models.backbones import build_backbone
    from hmr_jax.training.config import load_config

    c = load_config("train_demo_mega")
    assert c.data.augment and c.data.flip and c.data.rotation_factor == 0
    bb = build_backbone(c.backbone.model.to_dict())
    x = np.zeros((1, c.data.crop_size, c.data.crop_size, 3), np.float32)
    import jax

    out = jax.eval_shape(lambda: bb.init_with_output(jax.random.key(0), x)[0])
    assert out.shape == (1, 3, 3, c.mega.cond_dim) and c.mega.cond_length == 9


@pytest.mark.slow
def test_demo_end_to_end_quick(tmp_path):
    """The whole demo on a handful of Anny examples with a few steps; then a resumed run."""
    pytest.importorskip("anny")
    from hmr_jax import demo

    out = tmp_path / "demo"
    args = ["--out", str(out), "--quick", "--num-train", "32", "--num-test", "16", "--tokenizer-steps", "10",
            "--mega-steps", "4"]
    results = demo.main(args)
    assert set(results) == {"MEGA deterministic", "MEGA stochastic (min of 4)", "mean training mesh (baseline)"}
    for m in results.values():
        assert all(np.isfinite(m[k]) and m[k] > 0 for k in ("pve", "mpjpe", "pa_mpjpe"))
    report = (out / "report.md").read_text()
    pics = sorted((out / "pictures").glob("hypotheses_*.png"))
    assert len(pics) == 4 and all(f"pictures/{p.name}" in report for p in pics)
    assert any((out / "mega" / "pictures").glob("val_*.png"))
    reg = np.load(out / "data" / "body_models" / "J_regressor_coco17.npy")   # named by its layout
    assert reg.shape == (17, 615)
    np.testing.assert_allclose(reg.sum(1), 1.0, atol=1e-4)
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics_mm"] == results
    mtime = os.path.getmtime(out / "data" / "train" / "manifest.json")
    demo.main(args)  # resumes: data kept, trainings already finished
    assert os.path.getmtime(out / "data" / "train" / "manifest.json") == mtime
    assert json.loads((out / "results.json").read_text())["metrics_mm"] == results


@pytest.mark.slow
def test_demo_end_to_end_with_the_standin_body(tmp_path):
    """``--standin``: the box-person instead of Anny (no anny needed); its topology has other
    token and vertex counts than Anny's mesh, which the demo takes from the written hierarchy."""
    from hmr_jax import demo

    out = tmp_path / "demo"
    results = demo.main(["--out", str(out), "--quick", "--standin", "--num-train", "32", "--num-test", "16",
                         "--tokenizer-steps", "4", "--mega-steps", "2"])
    assert set(results) == {"MEGA deterministic", "MEGA stochastic (min of 4)", "mean training mesh (baseline)"}
    for m in results.values():
        assert all(np.isfinite(m[k]) and m[k] > 0 for k in ("pve", "mpjpe", "pa_mpjpe"))
    hierarchy = json.loads((out / "data" / "train" / "topology" / "hierarchy.json").read_text())
    saved = json.loads((out / "mega" / "config.json").read_text())
    assert saved["mega"]["seq_length"] == hierarchy["latent_points"] != 30
    assert saved["num_vertices"] == hierarchy["num_vertices"] != 615
    reg = np.load(out / "data" / "body_models" / "J_regressor_coco17.npy")
    assert reg.shape == (17, hierarchy["num_vertices"]) and not (out / "data" / "body_models" / "J_regressor_h36m.npy").exists()
    assert len(list((out / "pictures").glob("hypotheses_*.png"))) == 4
