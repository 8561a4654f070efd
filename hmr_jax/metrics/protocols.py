"""Benchmark protocols: which joints, which alignment, selectable by name.

``original``: what the released MEGA / VQ-HPS evaluation code computes
  (``utils/eval.py``): the 17 joints of the H36M regressor (for bodies that have none, the
  COCO-17 regressor's, ``JointRegressors.coco17``); for MPJPE and PVE both meshes are
  centred on their mean vertex (the original centres the prediction in the metric and the
  ground truth in the dataset, ``normalize=True``); PA-MPJPE on the 17 joints of the meshes as
  given (Procrustes with scale). Per example, averaged over joints / vertices.

``standard``: what recent papers report.
  ``dataset="3dpw"``: the 14 LSP joints of the H36M regressor (``H36M_TO_J14``), both
  skeletons and meshes translated so that the pelvis (H36M regressor row 0, SPIN's
  convention) is at the origin; PA-MPJPE on those 14 joints; PVE after the same pelvis
  alignment.
  ``dataset="emdb"``: SMPL's 24 joints (``J_regressor_24``), pelvis = joint 0, otherwise
  as for 3DPW.

Several hypotheses per image (MEGA's stochastic mode): :func:`hypothesis_errors` reports, for
each metric separately, the minimum over the N hypotheses, plus the mean pairwise distance
between the hypotheses' (protocol-aligned) vertices.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hmr_jax.body.regressors import H36M_PELVIS, H36M_TO_J14, H36M_TO_J17, SMPL_PELVIS, JointRegressors, regress_joints
from hmr_jax.metrics.errors import mean_pairwise_distance, mean_point_error, similarity_align

PROTOCOLS = ("original", "standard")
STANDARD_DATASETS = ("3dpw", "emdb")
METRICS = ("mpjpe", "pa_mpjpe", "pve")


def _check(protocol: str, dataset: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if protocol == "standard" and dataset not in STANDARD_DATASETS:
        raise ValueError(f"the standard protocol is defined for datasets {STANDARD_DATASETS}, got {dataset!r}")


def protocol_alignment(vertices: jax.Array, regressors: JointRegressors, protocol: str = "original",
                       dataset: str = "3dpw") -> tuple[jax.Array, jax.Array]:
    """Evaluation joints and aligned vertices of meshes under a protocol (traceable).

    Args:
      vertices: (..., V, 3) meshes, meters.
      regressors: :class:`JointRegressors` (``smpl24`` needed for standard / emdb).
      protocol: "original" or "standard".
      dataset: "3dpw" or "emdb" (standard protocol only).
    Returns:
      joints (..., J, 3) and vertices (..., V, 3), both aligned as the protocol prescribes
      (original: centred on the mean vertex; standard: pelvis at the origin).
    """
    _check(protocol, dataset)
    if protocol == "original":
        vertices = vertices - jnp.mean(vertices, axis=-2, keepdims=True)
        if regressors.h36m is not None:
            return regress_joints(regressors.h36m, vertices)[..., H36M_TO_J17, :], vertices
        if regressors.coco17 is None:
            raise ValueError("the original protocol needs a 17-joint regressor (J_regressor_h36m.npy, or "
                             "J_regressor_coco17.npy for COCO-keypoint bodies)")
        return regress_joints(regressors.coco17, vertices), vertices
    if dataset == "3dpw":
        if regressors.h36m is None:
            raise ValueError("the standard 3DPW protocol needs J_regressor_h36m.npy (regressors.h36m is None)")
        joints = regress_joints(regressors.h36m, vertices)
        pelvis = joints[..., H36M_PELVIS : H36M_PELVIS + 1, :]
        joints = joints[..., H36M_TO_J14, :]
    else:
        if regressors.smpl24 is None:
            raise ValueError("the standard EMDB protocol needs J_regressor_24.npy (regressors.smpl24 is None)")
        joints = regress_joints(regressors.smpl24, vertices)
        pelvis = joints[..., SMPL_PELVIS : SMPL_PELVIS + 1, :]
    return joints - pelvis, vertices - pelvis


@functools.partial(jax.jit, static_argnames=("protocol", "dataset"))
def mesh_errors(pred_vertices: jax.Array, gt_vertices: jax.Array, regressors: JointRegressors,
                protocol: str = "original", dataset: str = "3dpw") -> dict[str, jax.Array]:
    """MPJPE, PA-MPJPE and PVE of predicted meshes under a named protocol.

    Args:
      pred_vertices, gt_vertices: (B, V, 3) meshes, meters.
      regressors: :class:`JointRegressors`.
      protocol: "original" (the released code) or "standard" (recent papers).
      dataset: "3dpw" or "emdb", for the standard protocol.
    Returns:
      {"mpjpe", "pa_mpjpe", "pve"}: each (B,) in meters.
    """
    if pred_vertices.shape != gt_vertices.shape or pred_vertices.ndim != 3:
        raise ValueError(f"pred {pred_vertices.shape} and gt {gt_vertices.shape} must both be (B, V, 3)")
    pj, pv = protocol_alignment(pred_vertices, regressors, protocol, dataset)
    gj, gv = protocol_alignment(gt_vertices, regressors, protocol, dataset)
    return {
        "mpjpe": mean_point_error(pj, gj),
        "pa_mpjpe": mean_point_error(similarity_align(pj, gj), gj),
        "pve": mean_point_error(pv, gv),
    }


@functools.partial(jax.jit, static_argnames=("protocol", "dataset"))
def hypothesis_errors(pred_vertices: jax.Array, gt_vertices: jax.Array, regressors: JointRegressors,
                      protocol: str = "original", dataset: str = "3dpw") -> dict[str, jax.Array]:
    """Errors of N hypotheses per example: min over N per metric, and their diversity.

    Args:
      pred_vertices: (N, B, V, 3) hypotheses, meters.
      gt_vertices: (B, V, 3) ground truth, meters.
      regressors, protocol, dataset: as :func:`mesh_errors`.
    Returns:
      {"mpjpe", "pa_mpjpe", "pve"}: (B,) minimum over the N hypotheses (each metric on its
      own, as MEGA's stochastic evaluation), and "mean_pairwise_distance": (B,) mean vertex
      distance between pairs of hypotheses after the protocol's alignment; meters.
    """
    if pred_vertices.ndim != 4 or pred_vertices.shape[1:] != gt_vertices.shape:
        raise ValueError(f"pred {pred_vertices.shape} must be (N, B, V, 3) with gt {gt_vertices.shape} = (B, V, 3)")
    per = jax.vmap(lambda p: mesh_errors(p, gt_vertices, regressors, protocol, dataset))(pred_vertices)
    out = {k: jnp.min(v, axis=0) for k, v in per.items()}
    _, aligned = protocol_alignment(pred_vertices, regressors, protocol, dataset)
    if pred_vertices.shape[0] < 2:  # a single hypothesis has no spread
        out["mean_pairwise_distance"] = jnp.zeros(gt_vertices.shape[0], gt_vertices.dtype)
    else:
        out["mean_pairwise_distance"] = mean_pairwise_distance(aligned)
    return out
