"""Rotation conversions with the conventions of pytorch3d (which the original code uses).

All rotations are in radians. Rotation matrices act on column vectors (``x' = R @ x``).
The 6D representation follows pytorch3d: the first two *rows* of the matrix, flattened.
Every function works on arbitrary leading batch dimensions and is jit/grad friendly.
"""
from __future__ import annotations

import jax.numpy as jnp

# pytorch3d normalises with torch.nn.functional.normalize, which divides by max(norm, 1e-12).
_NORMALIZE_EPS = 1e-12


def _normalize(v: jnp.ndarray) -> jnp.ndarray:
    """``v / max(|v|, 1e-12)`` along the last axis, as ``torch.nn.functional.normalize``."""
    norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
    return v / jnp.maximum(norm, _NORMALIZE_EPS)


def rotation_6d_to_matrix(d6: jnp.ndarray) -> jnp.ndarray:
    """6D rotation representation to rotation matrices (Zhou et al. 2019, pytorch3d layout).

    Args:
      d6: (..., 6) two 3-vectors a1 = d6[..., :3], a2 = d6[..., 3:] (unitless).
    Returns:
      (..., 3, 3) rotation matrices whose rows are (b1, b2, b3): b1 = a1/|a1|,
      b2 = Gram-Schmidt of a2 against b1, b3 = b1 x b2.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], axis=-2)


def rotation_from_covariance(k: jnp.ndarray) -> jnp.ndarray:
    """The rotation ``R`` maximising ``trace(R K)`` (Kabsch / Umeyama), reflections excluded.

    Args:
      k: (..., 3, 3) covariance ``sum_n (p_n - mean p)(q_n - mean q)^T`` of corresponding points.
    Returns:
      (..., 3, 3) ``R = V Z U^T`` from ``U S V^T = svd(K)``, ``Z = diag(1, 1, sign(det(U V^T)))``:
      the best rotation with ``q ~ R p``.
    """
    u, _, vh = jnp.linalg.svd(k)
    sign = jnp.sign(jnp.linalg.det(u @ vh))
    z = jnp.ones(k.shape[:-1], k.dtype).at[..., -1].set(sign)
    return jnp.swapaxes(vh, -1, -2) @ (z[..., :, None] * jnp.swapaxes(u, -1, -2))


def matrix_to_rotation_6d(matrix: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrices to the 6D representation (first two rows, flattened).

    Args:
      matrix: (..., 3, 3) rotation matrices.
    Returns:
      (..., 6) such that ``rotation_6d_to_matrix`` gives the matrix back.
    """
    return matrix[..., :2, :].reshape(matrix.shape[:-2] + (6,))


def _skew(v: jnp.ndarray) -> jnp.ndarray:
    """(..., 3) vectors to (..., 3, 3) cross-product matrices [v]_x."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = jnp.zeros_like(x)
    return jnp.stack(
        [jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1), jnp.stack([-y, x, o], -1)], -2
    )


def axis_angle_to_matrix(axis_angle: jnp.ndarray) -> jnp.ndarray:
    """Axis-angle (rotation vector) to rotation matrices (Rodrigues' formula).

    Args:
      axis_angle: (..., 3) rotation vectors; direction = axis, norm = angle in radians.
    Returns:
      (..., 3, 3) rotation matrices, right-handed (a positive angle turns counter-clockwise
      when looking down the axis towards the origin), as pytorch3d.
    """
    theta2 = jnp.sum(axis_angle**2, axis=-1)[..., None, None]
    small = theta2 < 1e-12
    safe2 = jnp.where(small, 1.0, theta2)
    theta = jnp.sqrt(safe2)
    # sin(t)/t and (1-cos(t))/t^2 with Taylor series near zero (keeps gradients finite).
    a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(theta)) / safe2)
    k = _skew(axis_angle)
    eye = jnp.eye(3, dtype=axis_angle.dtype)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(matrix: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrices to axis-angle vectors with angle in [0, pi] radians.

    Goes through a unit quaternion (the numerically stable branch per element), as pytorch3d.

    Args:
      matrix: (..., 3, 3) rotation matrices.
    Returns:
      (..., 3) rotation vectors.
    """
    q = matrix_to_quaternion(matrix)
    return quaternion_to_axis_angle(q)


def matrix_to_quaternion(matrix: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrices to unit quaternions (w, x, y, z) with w >= 0.

    Args:
      matrix: (..., 3, 3) rotation matrices.
    Returns:
      (..., 4) quaternions, real part first (pytorch3d order).
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate quaternions, each well conditioned when its largest component is large.
    q_abs = jnp.sqrt(
        jnp.maximum(
            jnp.stack(
                [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22],
                -1,
            ),
            0.0,
        )
    )
    m21_m12 = m[..., 2, 1] - m[..., 1, 2]
    m02_m20 = m[..., 0, 2] - m[..., 2, 0]
    m10_m01 = m[..., 1, 0] - m[..., 0, 1]
    m10_p01 = m[..., 1, 0] + m[..., 0, 1]
    m02_p20 = m[..., 0, 2] + m[..., 2, 0]
    m12_p21 = m[..., 1, 2] + m[..., 2, 1]
    cands = jnp.stack(
        [
            jnp.stack([q_abs[..., 0] ** 2, m21_m12, m02_m20, m10_m01], -1),
            jnp.stack([m21_m12, q_abs[..., 1] ** 2, m10_p01, m02_p20], -1),
            jnp.stack([m02_m20, m10_p01, q_abs[..., 2] ** 2, m12_p21], -1),
            jnp.stack([m10_m01, m02_p20, m12_p21, q_abs[..., 3] ** 2], -1),
        ],
        -2,
    )
    cands = cands / (2.0 * jnp.maximum(q_abs, 0.1))[..., None]
    best = jnp.argmax(q_abs, axis=-1)
    q = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    return jnp.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(quaternion: jnp.ndarray) -> jnp.ndarray:
    """Unit quaternions (w, x, y, z) to axis-angle vectors (angle in radians).

    Args:
      quaternion: (..., 4) unit quaternions, real part first.
    Returns:
      (..., 3) rotation vectors with angle in [0, pi] when w >= 0.
    """
    xyz = quaternion[..., 1:]
    norm = jnp.linalg.norm(xyz, axis=-1, keepdims=True)
    half = jnp.arctan2(norm, quaternion[..., :1])
    angle = 2.0 * half
    small = jnp.abs(angle) < 1e-6
    safe_angle = jnp.where(small, 1.0, angle)
    # sin(half)/angle, with its Taylor expansion near zero.
    scale = jnp.where(small, 0.5 - angle * angle / 48.0, jnp.sin(half) / safe_angle)
    return xyz / scale
