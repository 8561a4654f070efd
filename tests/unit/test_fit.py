"""Fitting SMPL+H parameters to vertices: parameters -> mesh -> fit -> mesh round trip on a stand-in."""
from __future__ import annotations

import numpy as np
import pytest

from hmr_jax.body import fit_to_vertices, load_body_model
from hmr_jax.testing.smpl_files import write_standin_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("body_models") / "smplh" / "neutral" / "model.npz"
    write_standin_model(path, "smplh", seed=3)
    return load_body_model(path)


@pytest.fixture(scope="module")
def truth(model):
    rng = np.random.default_rng(0)
    b = 4
    params = dict(
        betas=rng.normal(0, 1.0, (b, 10)).astype(np.float32),
        global_orient=rng.normal(0, 1.0, (b, 3)).astype(np.float32),
        body_pose=rng.normal(0, 0.3, (b, 21, 3)).astype(np.float32),
        transl=rng.normal(0, 0.5, (b, 3)).astype(np.float32),
    )
    vertices = np.asarray(model(**params).vertices)
    return params, vertices - vertices.mean(1, keepdims=True)  # centred, as MEGA / VQ-HPS output meshes


def test_round_trip_within_5mm(model, truth):
    params, target = truth
    fit = fit_to_vertices(model, target, num_betas=10)
    dist = np.linalg.norm(np.asarray(fit.vertices) - target, axis=-1)
    assert dist.max() < 5e-3, dist.max(axis=1)
    np.testing.assert_allclose(np.asarray(fit.vertex_error), dist.mean(1), rtol=1e-4, atol=1e-7)
    # The returned parameters are what produces that mesh.
    again = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose, transl=fit.transl)
    np.testing.assert_allclose(np.asarray(again.vertices), np.asarray(fit.vertices), atol=1e-4)
    assert fit.body_pose.shape == (4, 21, 3) and fit.betas.shape == (4, 10)


def test_start_alone_is_rough_and_iterations_help(model, truth):
    _, target = truth
    start = fit_to_vertices(model, target, iterations=0)
    assert np.all(np.asarray(start.vertex_error) > 2e-3)  # the closed-form start is not the answer
    assert np.all(np.asarray(start.vertex_error) < 0.1)  # ... but a good start


def test_bad_input(model):
    with pytest.raises(ValueError, match="vertices in meters"):
        fit_to_vertices(model, np.zeros((2, 100, 3), np.float32))
    with pytest.raises(ValueError, match="num_betas"):
        fit_to_vertices(model, np.zeros((1, 6890, 3), np.float32), num_betas=17)
