"""SMPL / SMPL+H loading and skinning, checked against the smplx PyTorch package on stand-in files."""
from __future__ import annotations

import pickle
import shutil
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.body import (
    BodyModelFileError,
    JointRegressorError,
    load_body_model,
    load_joint_regressor,
    load_joint_regressors,
    regress_joints,
)
from hmr_jax.body.model_io import read_model_pickle
from hmr_jax.body.regressors import write_smpl24_regressor
from hmr_jax.testing.smpl_files import SMPL_PARENTS, SMPLH_PARENTS, write_standin_model
from hmr_jax.geometry import axis_angle_to_matrix


@pytest.fixture(scope="module")
def body_models(tmp_path_factory):
    """body_models/ laid out as the original instructions: smplh/{neutral,m,f}/model.npz, smpl/*.pkl."""
    root = tmp_path_factory.mktemp("body_models")
    arrays = {}
    for seed, gender in enumerate(("neutral", "m", "f")):
        arrays[gender] = write_standin_model(root / "smplh" / gender / "model.npz", "smplh", seed=seed)
    arrays["smpl"] = write_standin_model(root / "smpl" / "SMPL_NEUTRAL.pkl", "smpl", seed=7)
    return root, arrays


@pytest.fixture(scope="module")
def smplh(body_models):
    return load_body_model(body_models[0], gender="neutral")


def _params(n_body, batch=3, n_betas=16, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s, scale=1.0: (rng.normal(0, scale, s)).astype(np.float32)  # noqa: E731
    return dict(betas=f(batch, n_betas), global_orient=f(batch, 3), body_pose=f(batch, 3 * n_body, scale=0.5),
                transl=f(batch, 3))


def _smplx_struct(arrays, kind):
    from smplx.utils import Struct

    data = dict(arrays)
    v, d, s = data["shapedirs"].shape
    data["shapedirs"] = np.concatenate([data["shapedirs"], np.zeros((v, d, 300 - s))], axis=-1)  # as MEGA's BodyModel
    if kind == "smplh":
        data.update(hands_componentsl=np.zeros((0,)), hands_componentsr=np.zeros((0,)),
                    hands_meanl=np.zeros(45), hands_meanr=np.zeros(45))
    return Struct(**data)


def test_kinematic_trees_are_the_real_ones():
    assert len(SMPL_PARENTS) == 24 and len(SMPLH_PARENTS) == 52
    assert SMPL_PARENTS[:22] == SMPLH_PARENTS[:22]
    assert SMPLH_PARENTS[22] == 20 and SMPLH_PARENTS[37] == 21  # hands hang from the wrists
    assert SMPL_PARENTS[15] == 12 and SMPL_PARENTS[18] == 16  # head <- neck, left elbow <- shoulder


def test_smplh_matches_smplx(body_models, smplh):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    p = _params(21)
    rng = np.random.default_rng(1)
    hands = {k: rng.normal(0, 0.3, (3, 45)).astype(np.float32) for k in ("left_hand_pose", "right_hand_pose")}
    ref = smplx.SMPLH("", data_struct=_smplx_struct(body_models[1]["neutral"], "smplh"), num_betas=16,
                      use_pca=False, flat_hand_mean=True, batch_size=3)
    out = ref(**{k: torch.tensor(v) for k, v in {**p, **hands}.items()})
    mine = smplh(**p, **hands)
    assert mine.vertices.shape == (3, 6890, 3) and mine.joints.shape == (3, 52, 3)
    np.testing.assert_allclose(np.asarray(mine.vertices), out.vertices.detach().numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(mine.joints), out.joints.detach().numpy()[:, :52], atol=1e-5, rtol=0)


def test_smpl_pkl_matches_smplx(body_models):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    model = load_body_model(body_models[0] / "smpl" / "SMPL_NEUTRAL.pkl")
    assert model.kind == "smpl" and model.num_joints == 24 and model.num_betas == 10
    p = _params(23, n_betas=10, seed=2)
    ref = smplx.SMPL("", data_struct=_smplx_struct(body_models[1]["smpl"], "smpl"), num_betas=10, batch_size=3)
    out = ref(**{k: torch.tensor(v) for k, v in p.items()})
    mine = model(**p)
    np.testing.assert_allclose(np.asarray(mine.vertices), out.vertices.detach().numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(mine.joints), out.joints.detach().numpy()[:, :24], atol=1e-5, rtol=0)


def test_pose_input_forms_agree(smplh):
    p = _params(21, n_betas=10, seed=3)
    aa = smplh(**p)
    mats = smplh(betas=p["betas"], transl=p["transl"],
                 global_orient=axis_angle_to_matrix(jnp.asarray(p["global_orient"])),
                 body_pose=axis_angle_to_matrix(jnp.asarray(p["body_pose"]).reshape(3, 21, 3)))
    np.testing.assert_allclose(np.asarray(aa.vertices), np.asarray(mats.vertices), atol=1e-6)
    shifted = smplh(**{**p, "transl": p["transl"] + 1.0})
    np.testing.assert_allclose(np.asarray(shifted.joints), np.asarray(aa.joints) + 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="body_pose"):
        smplh(body_pose=np.zeros((3, 20, 3), np.float32))
    with pytest.raises(ValueError, match="betas"):
        smplh(betas=np.zeros((3, 17), np.float32))


def test_gender_folders(body_models, smplh):
    root, arrays = body_models
    for gender, folder in (("male", "m"), ("f", "f"), ("neutral", "neutral")):
        model = load_body_model(root / "smplh", gender=gender)
        np.testing.assert_allclose(np.asarray(model.v_template), arrays[folder]["v_template"], atol=1e-6)
        assert model.gender == {"m": "male", "f": "female"}.get(gender, gender)
    with pytest.raises(ValueError, match="unknown gender"):
        load_body_model(root, gender="other")


def _chumpy_pickle(path, arrays):
    """Write an SMPL-style pickle whose arrays are chumpy.ch.Ch objects, without chumpy."""
    import scipy.sparse

    module = types.ModuleType("chumpy.ch")

    class Ch:  # what chumpy pickles: the value lives in the state's 'x'
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch = Ch
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = module
    try:
        data = dict(arrays)
        for key in ("v_template", "shapedirs", "weights"):
            data[key] = Ch(arrays[key])
        data["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    assert b"chumpy.ch" in path.read_bytes()


def test_chumpy_pickle_loads_without_chumpy(body_models, tmp_path):
    arrays = body_models[1]["smpl"]
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    _chumpy_pickle(path, arrays)
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules
    data = read_model_pickle(path)
    np.testing.assert_array_equal(data["shapedirs"], arrays["shapedirs"])
    model = load_body_model(tmp_path, gender="neutral")  # found by its release file name
    plain = load_body_model(body_models[0] / "smpl" / "SMPL_NEUTRAL.pkl")
    p = _params(23, n_betas=10, seed=4)
    np.testing.assert_allclose(np.asarray(model(**p).vertices), np.asarray(plain(**p).vertices), atol=1e-6)
    assert "chumpy" not in sys.modules


def test_pickle_with_other_globals_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"

    class Evil:
        def __reduce__(self):
            import os

            return (os.getcwd, ())

    path.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(BodyModelFileError, match="refusing to load global"):
        load_body_model(path)


def test_missing_and_malformed_files(body_models, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"smplh/neutral/model\.npz"):
        load_body_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"smplh/m/model\.npz"):
        load_body_model(tmp_path, gender="m")
    arrays = dict(body_models[1]["neutral"])
    bad = tmp_path / "nokey.npz"
    np.savez(bad, **{k: v for k, v in arrays.items() if k != "posedirs"})
    with pytest.raises(BodyModelFileError, match="missing \\['posedirs'\\]"):
        load_body_model(bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **{**arrays, "weights": arrays["weights"][:, :50]})
    with pytest.raises(BodyModelFileError, match="weights has shape"):
        load_body_model(wrong)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BodyModelFileError, match="smplh/"):
        load_body_model(junk)


def test_joint_regressors(body_models, tmp_path):
    rng = np.random.default_rng(0)
    h36m = rng.random((17, 6890)).astype(np.float32)
    np.save(tmp_path / "J_regressor_h36m.npy", h36m)
    np.save(tmp_path / "J_regressor_24.npy", body_models[1]["neutral"]["J_regressor"])  # the 52-row SMPL+H one
    with pytest.raises(JointRegressorError, match="SMPL\\+H 52-joint"):
        load_joint_regressors(tmp_path)
    write_smpl24_regressor(body_models[0] / "smpl" / "SMPL_NEUTRAL.pkl", tmp_path / "J_regressor_24.npy")
    regs = load_joint_regressors(tmp_path, require_smpl24=True)
    assert regs.h36m.shape == (17, 6890) and regs.smpl24.shape == (24, 6890)
    np.testing.assert_allclose(np.asarray(regs.smpl24), body_models[1]["smpl"]["J_regressor"], atol=1e-7)
    verts = rng.normal(size=(2, 6890, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(regress_joints(regs.h36m, verts)), np.einsum("jv,bvk->bjk", h36m, verts),
                               rtol=1e-4, atol=1e-4)
    np.save(tmp_path / "short.npy", h36m[:16])
    with pytest.raises(JointRegressorError, match=r"expected \(17, 6890\)"):
        load_joint_regressor(tmp_path / "short.npy", 17)
    with pytest.raises(FileNotFoundError, match="body_models"):
        load_joint_regressor(tmp_path / "absent.npy", 17)


def test_standin_files_copy_with_layout(body_models, tmp_path):
    # A user's folder: the release's 'male' / 'female' names (before renaming) are found too.
    src = body_models[0] / "smplh" / "m" / "model.npz"
    (tmp_path / "smplh" / "male").mkdir(parents=True)
    shutil.copy(src, tmp_path / "smplh" / "male" / "model.npz")
    model = load_body_model(tmp_path, gender="male")
    assert model.kind == "smplh" and model.faces.shape == (13776, 3)


def test_joint_regressors_follow_the_vertex_count_of_the_files(tmp_path):
    # A non-SMPL topology (431 vertices): the count comes from the arrays, both files must agree.
    rng = np.random.default_rng(3)
    nv = 431
    h36m = rng.random((17, nv)).astype(np.float32)
    smpl24 = rng.random((24, nv)).astype(np.float32)
    np.save(tmp_path / "J_regressor_h36m.npy", h36m)
    np.save(tmp_path / "J_regressor_24.npy", smpl24)
    regs = load_joint_regressors(tmp_path)
    assert regs.h36m.shape == (17, nv) and regs.smpl24.shape == (24, nv)
    verts = rng.normal(size=(3, nv, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(regress_joints(regs.smpl24, verts)),
                               np.einsum("jv,bvk->bjk", smpl24, verts), rtol=1e-4, atol=1e-4)
    assert load_joint_regressors(tmp_path, num_vertices=nv).h36m.shape == (17, nv)
    with pytest.raises(JointRegressorError, match=rf"expected \(17, 6890\).*{nv}-vertex mesh"):
        load_joint_regressors(tmp_path, num_vertices=6890)
    # The two files disagree: the error names both counts.
    np.save(tmp_path / "J_regressor_24.npy", rng.random((24, nv + 1)).astype(np.float32))
    with pytest.raises(JointRegressorError, match=rf"{nv} vertices but .*J_regressor_24.npy for {nv + 1}"):
        load_joint_regressors(tmp_path)
    # Without the 24-joint file (not required) the H36M one alone sets the count.
    (tmp_path / "J_regressor_24.npy").unlink()
    regs = load_joint_regressors(tmp_path)
    assert regs.smpl24 is None and regs.h36m.shape == (17, nv)
    with pytest.raises(FileNotFoundError):
        load_joint_regressors(tmp_path, require_smpl24=True)
    np.save(tmp_path / "flat.npy", h36m.reshape(-1))
    with pytest.raises(JointRegressorError, match=r"\(joints, vertices\) matrix"):
        load_joint_regressor(tmp_path / "flat.npy", 17)


def test_smpl24_regressor_command_line(body_models, tmp_path, capsys):
    """``python -m hmr_jax.body.regressors SMPL.pkl OUT.npy`` writes SMPL's 24-joint regressor; a
    wrong argument count or a missing model is one ``error:`` line (status 2), nothing written."""
    from hmr_jax.body import regressors

    out = tmp_path / "J_regressor_24.npy"
    assert regressors.main([str(body_models[0] / "smpl" / "SMPL_NEUTRAL.pkl"), str(out)]) == 0
    np.testing.assert_allclose(np.load(out), body_models[1]["smpl"]["J_regressor"], atol=1e-7)
    for argv in ([str(out)], [str(tmp_path / "absent.pkl"), str(tmp_path / "o.npy")]):
        assert regressors.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "o.npy").exists()
