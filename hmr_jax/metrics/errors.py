"""Per-example 3D errors: MPJPE, PA-MPJPE, PVE, and their hypothesis-set versions.

All functions are jit-compiled and batched: inputs (B, N, 3) in meters (N joints or
vertices), outputs (B,) in meters. They compare the points as given; the alignment that a
benchmark protocol prescribes (centring, pelvis) is done in :mod:`hmr_jax.metrics.protocols`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hmr_jax.geometry.rotations import rotation_from_covariance


def _per_example_error(pred: jax.Array, gt: jax.Array, name: str, align: bool = False) -> jax.Array:
    """Shapes checked (the error names ``name``), ``pred`` aligned onto ``gt`` if asked, then
    :func:`mean_point_error`: (B, N, 3) x (B, N, 3) meters -> (B,) meters."""
    if pred.ndim != 3 or pred.shape[-1] != 3 or pred.shape != gt.shape:
        raise ValueError(f"{name}: pred {pred.shape} and gt {gt.shape} must both be (B, N, 3) in meters")
    return mean_point_error(similarity_align(pred, gt) if align else pred, gt)


def mean_point_error(pred: jax.Array, gt: jax.Array) -> jax.Array:
    """Mean Euclidean distance between corresponding points, per example (traceable).

    Args:
      pred, gt: (..., N, 3), meters.
    Returns:
      (...,), meters.
    """
    return jnp.mean(jnp.linalg.norm(pred - gt, axis=-1), axis=-1)


@jax.jit
def mpjpe(pred: jax.Array, gt: jax.Array) -> jax.Array:
    """Mean per-joint position error, no alignment: (B, J, 3) joints, meters -> (B,) meters."""
    return _per_example_error(pred, gt, "mpjpe")


@jax.jit
def pve(pred: jax.Array, gt: jax.Array) -> jax.Array:
    """Per-vertex error (a.k.a. V2V / PVE), no alignment: (B, V, 3) vertices, meters -> (B,) meters."""
    return _per_example_error(pred, gt, "pve")


def similarity_align(pred: jax.Array, gt: jax.Array) -> jax.Array:
    """Align ``pred`` onto ``gt`` with the least-squares similarity transform (Umeyama / Procrustes).

    Same steps as the original ``batch_compute_similarity_transform_torch``: centre both,
    ``K = X1^T X2`` (3x3), ``U S V^T = svd(K)``, ``R = V Z U^T`` with
    ``Z = diag(1, 1, sign(det(U V^T)))`` so that R is a rotation (reflections fixed), scale
    ``trace(R K) / |X1|^2``, translation ``mu2 - s R mu1``. (The original decides whether to
    transpose from the batch size, which breaks for a batch of 2 or 3; points are always
    (B, N, 3) rows here.)

    Args:
      pred, gt: (..., N, 3) corresponding points.
    Returns:
      (..., N, 3) ``s R pred + t``.
    """
    mu1 = jnp.mean(pred, axis=-2, keepdims=True)
    mu2 = jnp.mean(gt, axis=-2, keepdims=True)
    x1, x2 = pred - mu1, gt - mu2
    var1 = jnp.sum(x1**2, axis=(-2, -1))
    k = jnp.einsum("...na,...nb->...ab", x1, x2)
    r = rotation_from_covariance(k)
    scale = jnp.trace(r @ k, axis1=-2, axis2=-1) / var1
    rotated = jnp.einsum("...ab,...nb->...na", r, pred)
    t = mu2 - scale[..., None, None] * jnp.einsum("...ab,...nb->...na", r, mu1)
    return scale[..., None, None] * rotated + t


@jax.jit
def pa_mpjpe(pred: jax.Array, gt: jax.Array) -> jax.Array:
    """Procrustes-aligned MPJPE, MPJPE after :func:`similarity_align` (scale, rotation,
    translation): (B, J, 3) joints, meters -> (B,) meters."""
    return _per_example_error(pred, gt, "pa_mpjpe", align=True)


@functools.partial(jax.jit, static_argnames=("center",))
def mean_pairwise_distance(hypotheses: jax.Array, center: bool = False) -> jax.Array:
    """Mean distance between hypotheses (diversity), as the original ``average_pairwise_distance``.

    For each example: the mean over the N(N-1)/2 pairs i < j of the mean point distance
    ``mean_v |x_i[v] - x_j[v]|``.

    Args:
      hypotheses: (N, B, P, 3) N hypotheses of B examples with P points each, meters; N >= 2.
      center: subtract each hypothesis' mean point first.
    Returns:
      (B,) meters.
    """
    if hypotheses.ndim != 4 or hypotheses.shape[-1] != 3 or hypotheses.shape[0] < 2:
        raise ValueError(f"hypotheses has shape {hypotheses.shape}; expected (N >= 2, B, P, 3)")
    if center:
        hypotheses = hypotheses - jnp.mean(hypotheses, axis=-2, keepdims=True)
    n = hypotheses.shape[0]
    idx = jnp.arange(n)

    def row(i):
        d = mean_point_error(hypotheses, hypotheses[i])  # (N, B)
        return jnp.sum(jnp.where((idx > i)[:, None], d, 0.0), axis=0)

    total = jnp.sum(jax.lax.map(row, idx), axis=0)
    return total / (n * (n - 1) / 2)


def min_over_hypotheses(errors: jax.Array | dict) -> jax.Array | dict:
    """Best-of-N: the minimum over the hypothesis axis, per metric independently (as MEGA reports).

    Args:
      errors: (N, B) per-hypothesis errors, or a dict of them.
    Returns:
      (B,) (or a dict of them).
    """
    if isinstance(errors, dict):
        return {k: jnp.min(v, axis=0) for k, v in errors.items()}
    return jnp.min(errors, axis=0)
