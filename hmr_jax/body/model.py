"""SMPL / SMPL+H in JAX: shape and pose blend shapes, joint regression, linear blend skinning.

The maths is the published SMPL model (Loper et al. 2015), computed in the same order as the
``smplx`` package so that results agree to float32 rounding:

1. ``v_shaped = v_template + shapedirs . betas``; rest joints ``J = J_regressor @ v_shaped``;
2. ``v_posed = v_shaped + posedirs . vec(R[1:] - I)`` (pose blend shapes);
3. world transforms ``G_j`` down the kinematic tree, posed joints ``G_j[:3, 3]``;
4. ``v = sum_j w_vj (G_j - [0 | G_j J_j]) [v_posed; 1]``; optional translation added to both.

A :class:`BodyModel` is a pytree (arrays are leaves), so it can be passed into ``jax.jit`` /
``vmap`` / ``grad`` functions; calling it runs a jit-compiled forward pass.
Units: meters and radians. Coordinates as in the model files (SMPL: y up, z forward).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.body import model_io
from hmr_jax.geometry.rotations import axis_angle_to_matrix

NUM_BODY_JOINTS = {"smpl": 23, "smplh": 21}  # joints after the root that `body_pose` drives
NUM_HAND_JOINTS = 15  # per hand, SMPL+H only


class BodyOutput(NamedTuple):
    """Output of a body model.

    Attributes:
      vertices: (B, V, 3) posed vertices, meters.
      joints: (B, J, 3) posed kinematic-tree joints (J = 24 SMPL, 52 SMPL+H), meters.
    """

    vertices: jax.Array
    joints: jax.Array


def _kinematic_chain(rotations: jax.Array, joints_rest: jax.Array, parents: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """World rotations and positions of the joints: ``G_j = G_parent(j) [R_j | J_j - J_parent(j)]``.

    Computed by pointer jumping: each round composes every joint's transform with that of
    its current ancestor and moves the ancestor up, so ceil(log2(depth + 1)) batched rounds
    cover the tree (no sequential loop over joints, which compiles slowly in XLA).

    Args:
      rotations: (B, J, 3, 3) local rotations.
      joints_rest: (B, J, 3) rest-pose joint positions.
      parents: J parent indices, root -1.
    Returns:
      (B, J, 3, 3) world rotations and (B, J, 3) posed joint positions.
    """
    par = np.asarray(parents)
    n_j = len(par)
    rel = joints_rest.at[:, 1:].add(-joints_rest[:, par[1:]])
    b = rotations.shape[0]
    dtype = rotations.dtype
    # Homogeneous 4x4 transforms, plus an identity "joint" n_j that is every root's ancestor.
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], dtype), (b, n_j, 1, 4))
    local = jnp.concatenate([jnp.concatenate([rotations, rel[..., None]], axis=-1), bottom], axis=-2)
    world = jnp.concatenate([local, jnp.broadcast_to(jnp.eye(4, dtype=dtype), (b, 1, 4, 4))], axis=1)
    ancestor = np.where(par < 0, n_j, par)
    ancestor = np.append(ancestor, n_j)
    depth = np.zeros(n_j, int)
    for j in range(1, n_j):
        depth[j] = depth[par[j]] + 1
    for _ in range(int(np.ceil(np.log2(depth.max() + 2)))):
        world = world[:, ancestor] @ world
        ancestor = ancestor[ancestor]
    return world[:, :n_j, :3, :3], world[:, :n_j, :3, 3]


def pose_to_matrices(pose: jax.Array | None, num_joints: int, batch: int, name: str) -> jax.Array:
    """Accept axis-angle or rotation-matrix pose input; return (B, num_joints, 3, 3).

    Args:
      pose: None (identity), (B, 3*n) or (B, n, 3) axis-angle in radians, or (B, n, 3, 3)
        rotation matrices; for n == 1 also (B, 3, 3).
      num_joints: n.
      batch: B, used when ``pose`` is None.
      name: argument name for error messages.
    """
    if pose is None:
        return jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (batch, num_joints, 3, 3))
    pose = jnp.asarray(pose)
    shape = pose.shape
    if pose.ndim == 4 and shape[1:] == (num_joints, 3, 3):
        return pose
    if num_joints == 1 and pose.ndim == 3 and shape[1:] == (3, 3):
        return pose[:, None]
    if pose.ndim == 3 and shape[1:] == (num_joints, 3):
        return axis_angle_to_matrix(pose)
    if pose.ndim == 2 and shape[1] == 3 * num_joints:
        return axis_angle_to_matrix(pose.reshape(shape[0], num_joints, 3))
    raise ValueError(
        f"{name} has shape {shape}; expected (B, {3 * num_joints}) or (B, {num_joints}, 3) axis-angle "
        f"(radians) or (B, {num_joints}, 3, 3) rotation matrices"
    )


@flax.struct.dataclass
class BodyModel:
    """A loaded SMPL (24 joints) or SMPL+H (52 joints) model; call it to pose and shape it.

    Attributes (arrays are float32 JAX arrays):
      v_template: (V, 3) template vertices, meters.
      shapedirs: (V, 3, S) shape blend shapes.
      posedirs: (9 * (J - 1), V * 3) pose blend shapes, flattened as in smplx.
      J_regressor: (J, V) joint regressor.
      weights: (V, J) skinning weights.
      faces: (F, 3) int32 triangles.
      J_template: (J, 3) ``J_regressor @ v_template`` (rest joints of the mean shape), meters.
      J_shapedirs: (J, 3, S) ``J_regressor`` applied to ``shapedirs``.
      parents: static tuple of J parent indices (root -1).
      kind: static "smpl" or "smplh".
      gender: static "neutral" / "male" / "female" / "unknown".
    """

    v_template: jax.Array
    shapedirs: jax.Array
    posedirs: jax.Array
    J_regressor: jax.Array
    weights: jax.Array
    faces: jax.Array
    J_template: jax.Array
    J_shapedirs: jax.Array
    parents: tuple[int, ...] = flax.struct.field(pytree_node=False)
    kind: str = flax.struct.field(pytree_node=False)
    gender: str = flax.struct.field(pytree_node=False, default="unknown")

    @classmethod
    def from_arrays(cls, arrays: model_io.BodyModelArrays) -> "BodyModel":
        """Build from validated NumPy arrays (see :mod:`hmr_jax.body.model_io`)."""
        n_v = arrays.v_template.shape[0]
        posedirs = arrays.posedirs.reshape(n_v * 3, -1).T  # (9(J-1), 3V), smplx's layout
        f32 = lambda a: jnp.asarray(np.asarray(a, np.float32))  # noqa: E731
        return cls(
            v_template=f32(arrays.v_template),
            shapedirs=f32(arrays.shapedirs),
            posedirs=f32(posedirs),
            J_regressor=f32(arrays.J_regressor),
            weights=f32(arrays.weights),
            faces=jnp.asarray(arrays.faces, jnp.int32),
            J_template=f32(arrays.J_regressor @ arrays.v_template),
            J_shapedirs=f32(np.einsum("jv,vks->jks", arrays.J_regressor, arrays.shapedirs)),
            parents=tuple(int(p) for p in arrays.parents),
            kind=arrays.kind,
            gender=arrays.gender,
        )

    @property
    def num_joints(self) -> int:
        """J: 24 for SMPL, 52 for SMPL+H."""
        return len(self.parents)

    @property
    def num_body_joints(self) -> int:
        """Joints driven by ``body_pose``: 23 for SMPL, 21 for SMPL+H."""
        return NUM_BODY_JOINTS[self.kind]

    @property
    def num_betas(self) -> int:
        """S: number of shape coefficients the file provides (10 SMPL, 16 extended SMPL+H)."""
        return self.shapedirs.shape[-1]

    @property
    def num_vertices(self) -> int:
        """V (6890 for SMPL / SMPL+H)."""
        return self.v_template.shape[0]

    def __call__(
        self,
        betas: jax.Array | None = None,
        body_pose: jax.Array | None = None,
        global_orient: jax.Array | None = None,
        transl: jax.Array | None = None,
        left_hand_pose: jax.Array | None = None,
        right_hand_pose: jax.Array | None = None,
    ) -> BodyOutput:
        """Pose and shape the model (jit-compiled; batched over the leading axis).

        Args:
          betas: (B, S') shape coefficients, S' <= S (the first S' blend shapes are used);
            None -> zeros.
          body_pose: (B, 3*NB), (B, NB, 3) axis-angle in radians or (B, NB, 3, 3) rotation
            matrices, NB = 23 (SMPL) or 21 (SMPL+H); None -> rest pose.
          global_orient: (B, 3) axis-angle or (B, 3, 3) matrix of the root; None -> identity.
          transl: (B, 3) translation in meters added to vertices and joints; None -> 0.
          left_hand_pose, right_hand_pose: SMPL+H only, (B, 45) / (B, 15, 3) axis-angle or
            (B, 15, 3, 3); None -> flat hands (the original projects' ``flat_hand_mean=True``).
        Returns:
          :class:`BodyOutput` with vertices (B, V, 3) and joints (B, J, 3), meters.
        """
        given = [x for x in (betas, body_pose, global_orient, transl, left_hand_pose, right_hand_pose) if x is not None]
        batch = int(np.shape(given[0])[0]) if given else 1
        if self.kind == "smpl" and (left_hand_pose is not None or right_hand_pose is not None):
            raise ValueError("hand poses are only accepted by SMPL+H models; this is an SMPL model")
        if betas is None:
            betas = jnp.zeros((batch, self.num_betas), jnp.float32)
        betas = jnp.asarray(betas)
        if betas.ndim != 2 or betas.shape[1] > self.num_betas:
            raise ValueError(f"betas has shape {betas.shape}; expected (B, S) with S <= {self.num_betas}")
        rot = [pose_to_matrices(global_orient, 1, batch, "global_orient"),
               pose_to_matrices(body_pose, self.num_body_joints, batch, "body_pose")]
        if self.kind == "smplh":
            rot.append(pose_to_matrices(left_hand_pose, NUM_HAND_JOINTS, batch, "left_hand_pose"))
            rot.append(pose_to_matrices(right_hand_pose, NUM_HAND_JOINTS, batch, "right_hand_pose"))
        rotations = jnp.concatenate([jnp.broadcast_to(r, (batch,) + r.shape[1:]) for r in rot], axis=1)
        return _forward(self, betas, rotations, transl)


def lbs(model: BodyModel, betas: jax.Array, rotations: jax.Array, transl: jax.Array | None = None) -> BodyOutput:
    """Linear blend skinning with all joint rotations given (traceable, not jitted by itself).

    Args:
      model: the body model.
      betas: (B, S') shape coefficients, S' <= S.
      rotations: (B, J, 3, 3) local joint rotations (root first, kinematic-tree order).
      transl: optional (B, 3) translation, meters.
    Returns:
      :class:`BodyOutput`.
    """
    b = rotations.shape[0]
    n_b = betas.shape[-1]
    dtype = model.v_template.dtype
    betas = betas.astype(dtype)
    rotations = rotations.astype(dtype)
    shapedirs = model.shapedirs[..., :n_b]
    v_shaped = model.v_template + jnp.einsum("bs,vks->bvk", betas, shapedirs)
    # J_regressor @ v_shaped, with the regressor applied to template and blend shapes beforehand.
    joints_rest = model.J_template + jnp.einsum("bs,jks->bjk", betas, model.J_shapedirs[..., :n_b])

    eye = jnp.eye(3, dtype=dtype)
    pose_feature = (rotations[:, 1:] - eye).reshape(b, -1)
    v_posed = v_shaped + (pose_feature @ model.posedirs).reshape(b, -1, 3)

    world_r, world_t = _kinematic_chain(rotations, joints_rest, model.parents)
    posed_joints = world_t
    # Remove the rest-pose joint location: A_j = [R_j | t_j - R_j J_j].
    rel_t = world_t - jnp.einsum("bjmn,bjn->bjm", world_r, joints_rest)
    rel = jnp.concatenate([world_r, rel_t[..., None]], axis=-1).reshape(b, -1, 12)
    per_vertex = jnp.einsum("vj,bjk->bvk", model.weights, rel).reshape(b, -1, 3, 4)
    vertices = jnp.einsum("bvmn,bvn->bvm", per_vertex[..., :3], v_posed) + per_vertex[..., 3]
    if transl is not None:
        transl = jnp.asarray(transl, dtype)[:, None, :]
        vertices = vertices + transl
        posed_joints = posed_joints + transl
    return BodyOutput(vertices=vertices, joints=posed_joints)


_forward = jax.jit(lbs)


def vertex_subset(model: BodyModel, indices: np.ndarray) -> BodyModel:
    """The same model restricted to some vertices (joints unchanged), e.g. for a cheaper fit.

    Args:
      model: the body model.
      indices: (K,) vertex indices.
    Returns:
      a model with K vertices whose joints and the kept vertices equal the full model's.
      Its ``J_regressor`` and ``faces`` are those of the full mesh (not usable on the subset).
    """
    idx = np.asarray(indices)
    n_v = model.num_vertices
    posedirs = model.posedirs.reshape(-1, n_v, 3)[:, idx].reshape(model.posedirs.shape[0], -1)
    return model.replace(
        v_template=model.v_template[idx],
        shapedirs=model.shapedirs[idx],
        posedirs=posedirs,
        weights=model.weights[idx],
    )


def load_body_model(path: str | os.PathLike, gender: str = "neutral") -> BodyModel:
    """Load an SMPL+H ``model.npz`` or SMPL ``.pkl`` (chumpy or not) as a callable :class:`BodyModel`.

    Args:
      path: a model file, a gender folder, the ``smplh`` folder or the ``body_models`` folder
        (layout: ``body_models/smplh/{neutral,m,f}/model.npz``).
      gender: 'neutral', 'male' / 'm' or 'female' / 'f' (used to pick the file in a folder).
    Returns:
      the model; ``model(betas=..., body_pose=..., global_orient=..., transl=...)`` returns
      vertices (B, V, 3) and joints (B, J, 3) in meters.
    Raises:
      FileNotFoundError, model_io.BodyModelFileError: missing or malformed file, with the
      expected folder layout in the message.
    """
    gender = model_io.normalize_gender(gender)
    file = model_io.resolve_model_path(path, gender)
    return BodyModel.from_arrays(model_io.read_body_model_file(file, gender))
