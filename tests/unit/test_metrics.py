"""Metrics against independent float64 computations and hand-made cases with known answers."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from hmr_jax.body import H36M_TO_J14, H36M_TO_J17, JointRegressors
from hmr_jax.metrics import (
    hypothesis_errors,
    mean_pairwise_distance,
    mesh_errors,
    min_over_hypotheses,
    mpjpe,
    pa_mpjpe,
    pve,
)

V = 6890


def _scipy_pa_mpjpe(pred, gt):
    """Procrustes with scale in float64 via scipy (no reflection fix: use on non-reflected data)."""
    out = []
    for p, g in zip(np.float64(pred), np.float64(gt)):
        p0, g0 = p - p.mean(0), g - g.mean(0)
        r, s = orthogonal_procrustes(p0, g0)
        out.append(np.linalg.norm(s / np.sum(p0**2) * p0 @ r + g.mean(0) - g, axis=-1).mean())
    return np.array(out)


def _svd_pa_mpjpe(pred, gt):
    """Umeyama in float64 with det(R) = +1 enforced, written from the paper."""
    out = []
    for p, g in zip(np.float64(pred), np.float64(gt)):
        mp, mg = p.mean(0), g.mean(0)
        cov = (g - mg).T @ (p - mp)
        u, d, vt = np.linalg.svd(cov)
        s = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
        r = u @ s @ vt
        scale = np.trace(np.diag(d) @ s) / np.sum((p - mp) ** 2)
        out.append(np.linalg.norm(scale * (p - mp) @ r.T + mg - g, axis=-1).mean())
    return np.array(out)


@pytest.mark.parametrize("batch", [1, 2, 3, 8])  # 2 and 3 broke the original's transpose test
def test_pa_mpjpe_matches_scipy(batch):
    rng = np.random.default_rng(batch)
    gt = rng.normal(0, 0.3, (batch, 17, 3))
    rot = Rotation.random(batch, random_state=batch).as_matrix()
    pred = 1.2 * np.einsum("bij,bnj->bni", rot, gt) + 0.5 + rng.normal(0, 0.03, gt.shape)
    got = np.asarray(pa_mpjpe(jnp.float32(pred), jnp.float32(gt)))
    assert got.shape == (batch,)
    np.testing.assert_allclose(got, _scipy_pa_mpjpe(pred, gt), rtol=1e-4, atol=1e-6)


def test_pa_mpjpe_fixes_reflections_like_the_original():
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 0.3, (4, 17, 3))
    mirrored = gt * np.array([-1.0, 1.0, 1.0])  # the best orthogonal map would be a reflection
    got = np.asarray(pa_mpjpe(jnp.float32(mirrored), jnp.float32(gt)))
    expected = _svd_pa_mpjpe(mirrored, gt)
    assert np.all(expected > 0.01)  # a rotation cannot undo a mirror
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_known_answers():
    rng = np.random.default_rng(1)
    gt = rng.normal(0, 0.3, (2, 24, 3)).astype(np.float32)
    shifted = gt + np.float32([0.03, 0.04, 0.0])  # every joint 5 cm off
    np.testing.assert_allclose(np.asarray(mpjpe(shifted, gt)), [0.05, 0.05], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(pve(shifted, gt)), [0.05, 0.05], rtol=1e-5)
    rot = Rotation.from_rotvec([0.3, -1.0, 2.0]).as_matrix().astype(np.float32)
    similar = 0.7 * gt @ rot.T + 1.5
    np.testing.assert_allclose(np.asarray(pa_mpjpe(similar, gt)), [0, 0], atol=2e-6)
    assert np.all(np.asarray(mpjpe(similar, gt)) > 0.1)
    one_off = gt.copy()
    one_off[:, 3] += np.float32([0.0, 0.24, 0.0])  # one joint of 24 moved 24 cm
    np.testing.assert_allclose(np.asarray(mpjpe(one_off, gt)), [0.01, 0.01], rtol=1e-5)
    with pytest.raises(ValueError, match="B, N, 3"):
        mpjpe(gt[0], gt[0])


@pytest.fixture(scope="module")
def regressors():
    """One-hot regressors: H36M joint k is vertex 100 * k, SMPL joint k is vertex 5000 + k."""
    h36m = np.zeros((17, V), np.float32)
    h36m[np.arange(17), 100 * np.arange(17)] = 1.0
    smpl = np.zeros((24, V), np.float32)
    smpl[np.arange(24), 5000 + np.arange(24)] = 1.0
    return JointRegressors(h36m=jnp.asarray(h36m), smpl24=jnp.asarray(smpl))


@pytest.fixture(scope="module")
def meshes():
    rng = np.random.default_rng(2)
    return rng.normal(0, 0.3, (3, V, 3)).astype(np.float32)


def test_original_protocol_is_the_released_code(regressors, meshes):
    rng = np.random.default_rng(3)
    gt = meshes - meshes.mean(1, keepdims=True)  # the original dataset centres the ground truth
    pred = meshes + rng.normal(0, 0.02, meshes.shape).astype(np.float32) + 0.3
    got = mesh_errors(pred, gt, regressors, protocol="original")
    # The released eval.py, in words: centre the prediction on its mean vertex, regress 17 joints.
    reg = np.asarray(regressors.h36m, np.float64)
    pc = np.float64(pred) - np.float64(pred).mean(1, keepdims=True)
    gj, pj = np.einsum("jv,bvk->bjk", reg, gt), np.einsum("jv,bvk->bjk", reg, pc)
    np.testing.assert_allclose(np.asarray(got["mpjpe"]), np.linalg.norm(gj - pj, axis=-1).mean(1), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(got["pve"]), np.linalg.norm(gt - pc, axis=-1).mean(1), rtol=1e-4)
    pj_raw = np.einsum("jv,bvk->bjk", reg, np.float64(pred))
    np.testing.assert_allclose(np.asarray(got["pa_mpjpe"]), _svd_pa_mpjpe(pj_raw, gj), rtol=1e-4)
    translated = mesh_errors(meshes + 0.7, meshes, regressors, protocol="original")
    for name in ("mpjpe", "pa_mpjpe", "pve"):
        np.testing.assert_allclose(np.asarray(translated[name]), 0.0, atol=1e-5)


def test_standard_protocol_joints_and_pelvis(regressors, meshes):
    # Moving the vertex of an H36M joint outside the 14 (joint 9) changes nothing on 3DPW,
    # but moves the mean vertex slightly and changes the original protocol's MPJPE.
    assert set(H36M_TO_J17) == set(range(17)) and len(H36M_TO_J14) == 14 and 9 not in H36M_TO_J14
    outside = 9
    moved = meshes.copy()
    moved[:, 100 * outside] += 0.5
    std = mesh_errors(moved, meshes, regressors, protocol="standard", dataset="3dpw")
    np.testing.assert_allclose(np.asarray(std["mpjpe"]), 0.0, atol=1e-6)
    orig = mesh_errors(moved, meshes, regressors, protocol="original")
    assert np.all(np.asarray(orig["mpjpe"]) > 1e-3)
    # Pelvis alignment: a translated copy has zero MPJPE and PVE; a moved pelvis shifts everything.
    shifted = mesh_errors(meshes + 0.4, meshes, regressors, protocol="standard", dataset="3dpw")
    np.testing.assert_allclose(np.asarray(shifted["pve"]), 0.0, atol=1e-6)
    pelvis_moved = meshes.copy()
    pelvis_moved[:, 0] += np.float32([0.0, 0.0, 0.1])  # vertex 0 is H36M joint 0, the pelvis
    got = mesh_errors(pelvis_moved, meshes, regressors, protocol="standard", dataset="3dpw")
    np.testing.assert_allclose(np.asarray(got["mpjpe"]), 0.1, rtol=1e-4)
    # EMDB: SMPL's 24 joints, pelvis = SMPL joint 0 (vertex 5000 here).
    emdb_moved = meshes.copy()
    emdb_moved[:, 5001] += np.float32([0.0, 0.24, 0.0])
    emdb = mesh_errors(emdb_moved, meshes, regressors, protocol="standard", dataset="emdb")
    np.testing.assert_allclose(np.asarray(emdb["mpjpe"]), 0.01, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown protocol"):
        mesh_errors(meshes, meshes, regressors, protocol="mine")
    with pytest.raises(ValueError, match="J_regressor_24"):
        mesh_errors(meshes, meshes, JointRegressors(h36m=regressors.h36m), protocol="standard", dataset="emdb")


def test_hypotheses_min_over_n_and_diversity(regressors, meshes):
    rng = np.random.default_rng(4)
    hyps = np.stack([meshes + rng.normal(0, s, meshes.shape).astype(np.float32) for s in (0.05, 0.01, 0.03)])
    out = hypothesis_errors(hyps, meshes, regressors, protocol="original")
    each = [mesh_errors(h, meshes, regressors, protocol="original") for h in hyps]
    for name in ("mpjpe", "pa_mpjpe", "pve"):
        expected = np.min(np.stack([np.asarray(e[name]) for e in each]), axis=0)
        np.testing.assert_allclose(np.asarray(out[name]), expected, rtol=1e-5)
    assert out["mean_pairwise_distance"].shape == (3,)
    # Mean pairwise distance, hand-made: three translated copies at offsets 0, a, b.
    base = np.zeros((1, 5, 3), np.float32)
    a, b = np.float32([0.3, 0.0, 0.0]), np.float32([0.0, 0.4, 0.0])
    apd = mean_pairwise_distance(jnp.stack([base, base + a, base + b]))
    np.testing.assert_allclose(np.asarray(apd), [(0.3 + 0.4 + 0.5) / 3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mean_pairwise_distance(jnp.stack([base, base + a]), center=True)), 0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(min_over_hypotheses(jnp.float32([[3, 1], [2, 5]]))), [2, 1])
