"""Joint regressors named by their layout, and the 2D term picking the joints of the records'
``keypoints_kind``: COCO-order records with the COCO-17 regressor and H36M-order records with the
Human3.6M regressor give the same, correct loss; a mismatch is an error naming both layouts."""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hmr_jax.body.regressors import (H36M_TO_J17, JOINT_LAYOUTS, JointLayoutError, JointRegressors,
                                     fit_joint_regressor, joints17_layout, keypoint_regressor, layout_of_file,
                                     load_joint_regressors)
from hmr_jax.data import write_dataset
from hmr_jax.testing.toy_data import toy_image_record
from hmr_jax.metrics.protocols import mesh_errors
from hmr_jax.training.stages import common

NV = 24


def test_fit_joint_regressor_recovers_linear_joints():
    rng = np.random.default_rng(0)
    n, nv, nj = 200, 40, 5
    true = rng.uniform(0, 1, (nj, nv)) * (rng.uniform(size=(nj, nv)) < 0.2)
    true[:, 0] += 0.1
    true /= true.sum(1, keepdims=True)
    verts = rng.normal(size=(n, nv, 3))
    joints = np.einsum("jv,nvc->njc", true, verts)
    reg = fit_joint_regressor(verts, joints, ridge=1e-6)
    np.testing.assert_allclose(reg.sum(1), 1.0, atol=1e-6)
    test_v = rng.normal(size=(10, nv, 3)) + 5.0  # shifted: translation must carry through
    err = np.abs(np.einsum("jv,nvc->njc", reg, test_v) - np.einsum("jv,nvc->njc", true, test_v)).max()
    assert err < 1e-3
    with pytest.raises(ValueError, match="vertices"):
        fit_joint_regressor(verts[0], joints)


def test_files_are_named_by_layout():
    assert {k: v.file for k, v in JOINT_LAYOUTS.items()} == {
        "h36m17": "J_regressor_h36m.npy", "coco17": "J_regressor_coco17.npy", "smpl24": "J_regressor_24.npy"}
    assert layout_of_file("body_models/J_regressor_coco17.npy") == "coco17" and layout_of_file("x.npy") is None
    assert joints17_layout(["smpl24", "h36m17"]).kind == "h36m17" and joints17_layout([]).kind == "h36m17"
    assert joints17_layout(["coco17"]).kind == "coco17"
    with pytest.raises(JointLayoutError, match="coco17.*h36m17"):
        joints17_layout(["coco17", "h36m17"])


def _dataset(path, kind, seed):
    """Two image records whose 17 keypoints are of ``kind`` (the meshes do not matter here)."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(2):
        r = toy_image_record(rng, height=40, width=32, name=f"{kind}{i}.jpg")
        r.update(keypoints_2d=r["keypoints_2d"][:17], keypoints_kind=kind)
        recs.append(r)
    write_dataset(path, "image", recs)
    return str(path)


def _config(data, body_models):
    return ml_collections.ConfigDict({"num_vertices": NV, "body_models": str(body_models), "require_smpl24": False,
                                      "data": {"train": data, "val": ""}})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    rng = np.random.default_rng(3)
    h36m = rng.random((17, NV)).astype(np.float32)   # rows in H36M order
    coco = rng.random((17, NV)).astype(np.float32)   # another joint set, COCO order
    for name, reg in (("h36m", h36m), ("coco", coco)):
        (root / f"bm_{name}").mkdir()
        np.save(root / f"bm_{name}" / JOINT_LAYOUTS[f"{name}17"].file, reg / reg.sum(1, keepdims=True))
    return {"root": root, "coco_data": _dataset(root / "coco", "coco17", 0),
            "h36m_data": _dataset(root / "h36m", "h36m17", 1)}


def test_coco_and_h36m_records_give_the_same_correct_loss(setup):
    """The same meshes and cameras; each set's keypoints are its own joints (COCO order for coco17,
    the J17 order of the H36M regressor's rows for h36m17) plus the same offsets: both losses
    equal the mean confidence-weighted L1 of those offsets."""
    root = setup["root"]
    rng = np.random.default_rng(7)
    b = 2
    verts = rng.normal(scale=0.3, size=(b, NV, 3)).astype(np.float32)
    cam = np.array([[0.9, 0.1, -0.2], [1.2, 0.0, 0.05]], np.float32)
    offset = rng.normal(scale=0.05, size=(b, 17, 2)).astype(np.float32)
    conf = rng.uniform(0.2, 1.0, size=(b, 17, 1)).astype(np.float32)
    expected = float(np.mean(np.mean(np.abs(offset), -1) * conf[..., 0]))
    losses = {}
    for name in ("coco", "h36m"):
        regs = common.load_regressors(_config(setup[f"{name}_data"], root / f"bm_{name}"))
        assert regs.layout17.kind == f"{name}17" and regs.smpl24 is None
        rows = regs.joints17 if name == "coco" else regs.joints17[list(H36M_TO_J17)]   # the records' joints
        joints = np.einsum("jv,bvc->bjc", rows, verts)[..., :2]
        kp = cam[:, None, :1] * (joints + cam[:, None, 1:]) + offset
        batch = {"keypoints_2d": jnp.asarray(np.concatenate([kp, conf], -1)), "is_3dpw": jnp.zeros(b, bool)}
        losses[name] = float(common.reprojection_loss(regs, regs.frozen(), batch, jnp.asarray(verts),
                                                      jnp.asarray(cam)))
    assert losses["coco"] == pytest.approx(expected, rel=1e-5)
    assert losses["h36m"] == pytest.approx(expected, rel=1e-5)
    assert losses["coco"] > 1e-3   # not a vacuous zero


def test_a_layout_mismatch_is_an_error_naming_both(setup):
    root = setup["root"]
    h36m = np.load(root / "bm_h36m" / "J_regressor_h36m.npy")
    with pytest.raises(JointLayoutError, match=r"keypoints are coco17 \(COCO-17\).*regressor is h36m17 "
                                               r"\(Human3.6M-17\)"):
        keypoint_regressor(h36m, "h36m17", "coco17")
    np.testing.assert_array_equal(keypoint_regressor(h36m, "h36m17", "h36m17"), h36m[list(H36M_TO_J17)])
    # COCO-order records, but body_models holds only the H36M regressor: the stage refuses
    with pytest.raises(JointLayoutError, match=r"coco17 \(COCO-17\).*J_regressor_h36m.npy.*h36m17 \(Human3.6M-17\)"):
        common.load_regressors(_config(setup["coco_data"], root / "bm_h36m"))
    with pytest.raises(JointLayoutError, match="mix coco17"):
        common.load_regressors(_config(f"{setup['coco_data']},{setup['h36m_data']}", root / "bm_coco"))


def test_metrics_on_coco_joints_equal_the_old_reordered_file():
    """The metrics with ``JointRegressors(coco17=C)`` equal those of the matrix the demo used to
    store as J_regressor_h36m.npy (rows placed so that H36M_TO_J17 gives C): renaming the file
    changes no number."""
    rng = np.random.default_rng(5)
    coco = rng.random((17, NV)).astype(np.float32)
    coco /= coco.sum(1, keepdims=True)
    placed = np.empty_like(coco)
    placed[list(H36M_TO_J17)] = coco
    pred, gt = (jnp.asarray(rng.normal(scale=0.3, size=(3, NV, 3)), jnp.float32) for _ in range(2))
    new = mesh_errors(pred, gt, JointRegressors(coco17=jnp.asarray(coco)))
    old = mesh_errors(pred, gt, JointRegressors(h36m=jnp.asarray(placed)))
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        np.testing.assert_allclose(np.asarray(new[k]), np.asarray(old[k]), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="17-joint regressor"):
        mesh_errors(pred, gt, JointRegressors())


def test_load_joint_regressors_takes_the_17_joint_layout(tmp_path):
    reg = np.full((17, NV), 1 / NV, np.float32)
    np.save(tmp_path / "J_regressor_coco17.npy", reg)
    regs = load_joint_regressors(tmp_path, joints17="coco17")
    assert regs.h36m is None and regs.coco17.shape == (17, NV) and regs.smpl24 is None
    with pytest.raises(JointLayoutError, match="J_regressor_h36m.npy not found.*coco17"):
        load_joint_regressors(tmp_path)
