"""Fitting SMPL / SMPL+H parameters to given vertices (e.g. a MEGA / VQ-HPS mesh).

MEGA and VQ-HPS output meshes, not parameters; many users need pose and shape. The fit:

1. a good start, in closed form: each joint's body part (the vertices it dominates in the
   skinning weights) is aligned rigidly to the target with Procrustes, giving every part's
   world rotation; local rotations follow down the kinematic tree; translation from the means;
2. a few Levenberg-Marquardt (damped Gauss-Newton) iterations on global orientation, body
   pose, betas and translation, minimising the squared vertex distances over a subset of
   the vertices (every 4th of each body part; exact Jacobians by forward-mode autodiff). Rotations are
   updated multiplicatively (``R <- R exp([d]_x)``), so there is no axis-angle singularity.

Everything is batched; the start and each iteration are jit-compiled; hands of SMPL+H stay flat (as in the original
projects' meshes). Units: meters, radians.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.body.model import BodyModel, lbs, vertex_subset
from hmr_jax.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle, rotation_from_covariance


class FitResult(NamedTuple):
    """Parameters found by :func:`fit_to_vertices` and how well they reproduce the target.

    Attributes:
      betas: (B, S) shape coefficients.
      global_orient: (B, 3) root rotation, axis-angle radians.
      body_pose: (B, NB, 3) body joint rotations, axis-angle radians (NB = 21 SMPL+H, 23 SMPL).
      transl: (B, 3) translation, meters.
      vertices: (B, V, 3) the fitted model's vertices, meters.
      vertex_error: (B,) mean distance between fitted and target vertices, meters.
    """

    betas: jax.Array
    global_orient: jax.Array
    body_pose: jax.Array
    transl: jax.Array
    vertices: jax.Array
    vertex_error: jax.Array


def _full_rotations(model: BodyModel, fitted: jax.Array) -> jax.Array:
    """(B, 1 + NB, 3, 3) fitted rotations -> (B, J, 3, 3) with identity (flat) hands."""
    b, n = fitted.shape[:2]
    rest = jnp.broadcast_to(jnp.eye(3, dtype=fitted.dtype), (b, model.num_joints - n, 3, 3))
    return jnp.concatenate([fitted, rest], axis=1)


def initial_pose(model: BodyModel, target: jax.Array, min_part_vertices: int = 10) -> tuple[jax.Array, jax.Array]:
    """Closed-form start: per-part Procrustes rotations, local rotations, translation.

    Args:
      model: the body model.
      target: (B, V, 3) vertices, meters.
      min_part_vertices: parts with fewer dominant vertices inherit their parent's rotation.
    Returns:
      rotations (B, 1 + NB, 3, 3) (root then body joints) and transl (B, 3) for zero betas.
    """
    n_fit = 1 + model.num_body_joints
    p = model.v_template
    assign = jax.nn.one_hot(jnp.argmax(model.weights, axis=1), model.num_joints, dtype=p.dtype)  # (V, J)
    count = jnp.sum(assign, axis=0)  # (J,)
    safe = jnp.maximum(count, 1.0)
    p_mean = (assign.T @ p) / safe[:, None]  # (J, 3)
    q_mean = jnp.einsum("vj,bvk->bjk", assign, target) / safe[None, :, None]
    k = jnp.einsum("vj,va,bvc->bjac", assign, p, target) - count[None, :, None, None] * jnp.einsum(
        "ja,bjc->bjac", p_mean, q_mean
    )
    world = rotation_from_covariance(k)  # (B, J, 3, 3): target part ~ world @ rest part
    ok = count >= min_part_vertices
    rows = [world[:, 0]]
    for j in range(1, n_fit):
        rows.append(jnp.where(ok[j], world[:, j], rows[model.parents[j]]))
    world = jnp.stack(rows, axis=1)
    parents = jnp.asarray(model.parents[1:n_fit])
    local = jnp.concatenate(
        [world[:, :1], jnp.swapaxes(world[:, parents], -1, -2) @ world[:, 1:]], axis=1
    )
    betas = jnp.zeros((target.shape[0], 1), target.dtype)
    posed = lbs(model, betas, _full_rotations(model, local)).vertices
    transl = jnp.mean(target - posed, axis=1)
    return local, transl


def fit_vertex_subset(model: BodyModel, every: int = 4) -> np.ndarray:
    """Vertices the iterations use: every ``every``-th vertex of each body part (all parts covered).

    Args:
      model: the body model.
      every: keep one vertex in ``every`` (1 keeps all).
    Returns:
      (K,) sorted vertex indices.
    """
    part = np.argmax(np.asarray(model.weights), axis=1)
    keep = [np.flatnonzero(part == j)[::every] for j in range(model.num_joints)]
    return np.sort(np.concatenate(keep))


def fit_to_vertices(model: BodyModel, target: jax.Array, num_betas: int = 10, iterations: int = 6,
                    vertex_every: int = 4, damping: float = 1e-3) -> FitResult:
    """Fit global orientation, body pose, betas and translation to target vertices.

    Args:
      model: the body model (SMPL+H or SMPL) whose topology the target has.
      target: (B, V, 3) vertices, meters.
      num_betas: shape coefficients to fit (<= model.num_betas; 10 as the original projects).
      iterations: Levenberg-Marquardt iterations after the closed-form start.
      vertex_every: the iterations use every n-th vertex of each body part (cost / n); the
        reported vertices and error are always on the whole mesh.
      damping: initial Marquardt damping (relative to the Gauss-Newton diagonal).
    Returns:
      :class:`FitResult` (parameters, fitted vertices and the remaining mean vertex error).
    """
    target = jnp.asarray(target)
    if target.ndim != 3 or target.shape[1:] != (model.num_vertices, 3):
        raise ValueError(f"target has shape {target.shape}; expected (B, {model.num_vertices}, 3) vertices in meters")
    if not 0 < num_betas <= model.num_betas:
        raise ValueError(f"num_betas must be in [1, {model.num_betas}], got {num_betas}")
    target = target.astype(model.v_template.dtype)
    subset, sub_model = _subset_model(model, vertex_every)
    rot0, transl0 = _initial_pose_jit(model, target)
    sub_target = target[:, subset]
    state = (rot0, jnp.zeros((target.shape[0], num_betas), target.dtype), transl0)
    lam = jnp.full((target.shape[0],), damping, target.dtype)
    cost = _subset_cost(model, sub_model, state, sub_target)
    # Compiled pieces driven from Python: with jax 0.10.2 on CPU the same iterations inside one
    # jitted lax.scan (fused with the start) gave wrong residuals; this form matches eager mode.
    for _ in range(iterations):
        state, lam, cost = _lm_step(model, sub_model, state, lam, cost, sub_target)
    return _finish(model, state, target)


_SUBSET_CACHE: dict = {}


def _subset_model(model: BodyModel, every: int) -> tuple[jax.Array, BodyModel]:
    """Vertex subset and restricted model, cached per model object (the last few)."""
    key = (id(model), every)
    hit = _SUBSET_CACHE.get(key)
    if hit is None or hit[0] is not model:
        subset = fit_vertex_subset(model, every)
        hit = (model, jnp.asarray(subset), vertex_subset(model, subset))
        if len(_SUBSET_CACHE) >= 4:
            _SUBSET_CACHE.pop(next(iter(_SUBSET_CACHE)))
        _SUBSET_CACHE[key] = hit
    return hit[1], hit[2]


_initial_pose_jit = jax.jit(initial_pose, static_argnames=("min_part_vertices",))


def _vertices_of(model: BodyModel, sub_model: BodyModel, rot, betas, transl):
    """Subset vertices (K, 3) of one example: rot (1 + NB, 3, 3), betas (S,), transl (3,)."""
    return lbs(sub_model, betas[None], _full_rotations(model, rot[None]), transl[None]).vertices[0]


def _apply(state, x):
    """Update one example's (rot, betas, transl) by x = [axis-angle increments, d betas, d transl]."""
    rot, betas, transl = state
    n_rot = 3 * rot.shape[0]
    delta = axis_angle_to_matrix(x[:n_rot].reshape(rot.shape[0], 3))
    return rot @ delta, betas + x[n_rot : n_rot + betas.shape[0]], transl + x[n_rot + betas.shape[0] :]


@jax.jit
def _subset_cost(model, sub_model, state, sub_target):
    verts = jax.vmap(lambda r, b, t: _vertices_of(model, sub_model, r, b, t))(*state)
    return jnp.sum((verts - sub_target) ** 2, axis=(1, 2))


@jax.jit
def _lm_step(model, sub_model, state, lam, cost, sub_target):
    """One Levenberg-Marquardt step per example (batched); rejected steps raise the damping."""

    def one(state, lam, cost, tgt):
        n_par = 3 * state[0].shape[0] + state[1].shape[0] + 3

        def residual(x):
            return (_vertices_of(model, sub_model, *_apply(state, x)) - tgt).reshape(-1)

        zero = jnp.zeros(n_par, tgt.dtype)
        r = residual(zero)
        jac = jax.jacfwd(residual)(zero)  # (3K, P)
        h = jac.T @ jac
        g = jac.T @ r
        a = h + lam * (jnp.diag(jnp.diagonal(h)) + 1e-6 * jnp.eye(n_par, dtype=h.dtype))
        new_state = _apply(state, jnp.linalg.solve(a, -g))
        new_cost = jnp.sum((_vertices_of(model, sub_model, *new_state) - tgt) ** 2)
        better = new_cost < cost
        state = jax.tree.map(lambda n, o: jnp.where(better, n, o), new_state, state)
        return state, jnp.where(better, lam / 3.0, lam * 4.0), jnp.where(better, new_cost, cost)

    return jax.vmap(one)(state, lam, cost, sub_target)


@jax.jit
def _finish(model, state, target):
    rot, betas, transl = state
    vertices = lbs(model, betas, _full_rotations(model, rot), transl).vertices
    return FitResult(
        betas=betas,
        global_orient=matrix_to_axis_angle(rot[:, 0]),
        body_pose=matrix_to_axis_angle(rot[:, 1:]),
        transl=transl,
        vertices=vertices,
        vertex_error=jnp.mean(jnp.linalg.norm(vertices - target, axis=-1), axis=-1),
    )
