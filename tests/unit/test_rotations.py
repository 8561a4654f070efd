"""Rotation conversions against independent derivations (SciPy, hand-made cases, identities)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import jax
import jax.numpy as jnp

from hmr_jax.geometry import rotations as rot


def _random_axis_angle(n, seed=0, max_angle=np.pi - 1e-3):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = rng.uniform(0.0, max_angle, size=(n, 1))
    return (axis * angle).astype(np.float64)


def test_axis_angle_to_matrix_matches_scipy():
    aa = _random_axis_angle(64)
    expected = Rotation.from_rotvec(aa).as_matrix()
    got = np.asarray(rot.axis_angle_to_matrix(jnp.asarray(aa, jnp.float32)))
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_quarter_turn_about_z_by_hand():
    # A +90 degree turn about z sends x to y and y to -x.
    r = np.asarray(rot.axis_angle_to_matrix(jnp.array([0.0, 0.0, np.pi / 2])))
    np.testing.assert_allclose(r @ np.array([1.0, 0, 0]), [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(r @ np.array([0, 1.0, 0]), [-1, 0, 0], atol=1e-6)


def test_zero_rotation_and_its_gradient_are_finite():
    r = rot.axis_angle_to_matrix(jnp.zeros((2, 3)))
    np.testing.assert_allclose(np.asarray(r), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-7)
    g = jax.grad(lambda v: rot.axis_angle_to_matrix(v).sum())(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(g)))
    # d/dv of sum(I + [v]x) at 0 is the column sums of the skew generator: zero overall.
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-6)


def test_matrix_to_axis_angle_round_trip_including_near_pi():
    aa = _random_axis_angle(128, seed=1)
    aa[0] = [np.pi - 1e-4, 0.0, 0.0]
    aa[1] = [0.0, 0.0, 1e-8]
    mats = Rotation.from_rotvec(aa).as_matrix().astype(np.float32)
    back = np.asarray(rot.matrix_to_axis_angle(jnp.asarray(mats)))
    # Compare as rotations: the axis-angle of a half-turn is defined up to sign.
    np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), mats, atol=3e-5)
    np.testing.assert_allclose(back[2:], aa[2:], atol=3e-5)


def test_rotation_6d_is_first_two_rows_and_round_trips():
    mats = Rotation.from_rotvec(_random_axis_angle(32, seed=2)).as_matrix().astype(np.float32)
    d6 = np.asarray(rot.matrix_to_rotation_6d(jnp.asarray(mats)))
    np.testing.assert_array_equal(d6[:, :3], mats[:, 0, :])
    np.testing.assert_array_equal(d6[:, 3:], mats[:, 1, :])
    np.testing.assert_allclose(np.asarray(rot.rotation_6d_to_matrix(jnp.asarray(d6))), mats, atol=1e-6)


def test_rotation_6d_gram_schmidt_by_hand():
    # a1 along x (scaled), a2 with an x component that Gram-Schmidt must remove.
    d6 = jnp.array([2.0, 0.0, 0.0, 5.0, 3.0, 0.0])
    m = np.asarray(rot.rotation_6d_to_matrix(d6))
    np.testing.assert_allclose(m, np.eye(3), atol=1e-7)
    # Rows, not columns: a1 along y gives first row (0, 1, 0).
    m2 = np.asarray(rot.rotation_6d_to_matrix(jnp.array([0.0, 1.0, 0.0, 0.0, 0.0, 2.0])))
    np.testing.assert_allclose(m2, [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-7)


@pytest.mark.parametrize("seed", [3, 4])
def test_rotation_6d_of_arbitrary_input_is_a_proper_rotation(seed):
    d6 = np.random.default_rng(seed).normal(size=(50, 6)).astype(np.float32)
    m = np.asarray(rot.rotation_6d_to_matrix(jnp.asarray(d6)))
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=2e-6)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=2e-6)
