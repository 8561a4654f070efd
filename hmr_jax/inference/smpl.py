"""SMPL / SMPL+H parameters of predicted meshes, in smplx's names, fitted in fixed-size batches.

:func:`fit_body_params` runs :func:`hmr_jax.body.fit_to_vertices` on meshes in batches of the
:func:`~hmr_jax.inference.model.bucket_sizes` (compiled once per size) and returns per mesh

* ``betas`` (1, S), ``global_orient`` (1, 3), ``body_pose`` (1, 3 NB) (NB = 21 SMPL+H, 23 SMPL),
  ``transl`` (1, 3) -- axis-angle radians, meters, the shapes ``smplx``'s models take
  (``smplx.create(..., model_type="smplh", use_pca=False)(**params)``); SMPL+H also gets flat
  hands, ``left_hand_pose`` / ``right_hand_pose`` (1, 45) zeros;
* ``vertex_error_m``: the fit's mean vertex distance to the mesh (meters).

The parameters reproduce the mesh in its own frame (for a predicted person: camera-aligned
axes, before ``camera_translation``).
"""
from __future__ import annotations

import os

import numpy as np

from hmr_jax.body import BodyModelFileError, fit_to_vertices, load_body_model
from hmr_jax.inference.crops import InferenceError
from hmr_jax.inference.model import DEFAULT_BATCH_SIZE, chunks, pad_rows

#: hand joints of SMPL+H (15 per hand), kept flat by the fit
HAND_JOINTS = 15


def load_smpl_model(path: str | os.PathLike, num_vertices: int):
    """The body model at ``path`` (:func:`hmr_jax.body.load_body_model`), checked to have
    ``num_vertices`` vertices.

    Raises:
      InferenceError: missing / malformed file or another vertex count (the message names the fix).
    """
    try:
        model = load_body_model(path)
    except (FileNotFoundError, BodyModelFileError, OSError, ValueError) as e:
        raise InferenceError(f"--smpl-model {path}: {e}") from None
    if model.num_vertices != num_vertices:
        raise InferenceError(f"--smpl-model {path} has {model.num_vertices} vertices but the meshes have "
                             f"{num_vertices}: give the SMPL / SMPL+H model of the meshes' topology")
    return model


def fit_body_params(vertices, body_model, *, num_betas: int = 10, iterations: int = 6,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict[str, np.ndarray | float]]:
    """Fit SMPL(+H) parameters to each mesh (see the module docstring).

    Args:
      vertices: (M, V, 3) meshes, meters.
      body_model: a :class:`~hmr_jax.body.BodyModel` with V vertices.
      num_betas: shape coefficients fitted (10 as the original projects).
      iterations: Levenberg-Marquardt iterations after the closed-form start.
      batch_size: meshes per compiled call.
    Returns:
      one dict per mesh (smplx names, arrays with a leading axis of 1, ``vertex_error_m`` float).
    """
    vertices = np.asarray(vertices, np.float32)
    if vertices.ndim != 3 or vertices.shape[1:] != (body_model.num_vertices, 3):
        raise InferenceError(f"meshes {vertices.shape} do not match the body model's "
                             f"({body_model.num_vertices}, 3) vertices")
    out: list[dict] = []
    for start, stop, size in chunks(len(vertices), batch_size):
        fit = fit_to_vertices(body_model, pad_rows(vertices[start:stop], size), num_betas=num_betas,
                              iterations=iterations)
        n = stop - start
        betas = np.asarray(fit.betas)[:n]
        orient = np.asarray(fit.global_orient)[:n]
        pose = np.asarray(fit.body_pose)[:n]
        transl = np.asarray(fit.transl)[:n]
        error = np.asarray(fit.vertex_error)[:n]
        for i in range(n):
            params: dict = {"betas": betas[i:i + 1], "global_orient": orient[i:i + 1],
                            "body_pose": pose[i:i + 1].reshape(1, -1), "transl": transl[i:i + 1]}
            if body_model.kind == "smplh":
                params["left_hand_pose"] = np.zeros((1, 3 * HAND_JOINTS), np.float32)
                params["right_hand_pose"] = np.zeros((1, 3 * HAND_JOINTS), np.float32)
            params["vertex_error_m"] = float(error[i])
            out.append(params)
    return out
