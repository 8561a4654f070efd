"""Training losses of Mesh-VQ-VAE, VQ-HPS and MEGA, weighted as the original trainers do.

All are means, as PyTorch's ``reduction="mean"``. Batches mixing data sources (3DPW with
24 SMPL-joint 2D targets, other sets with 17 H36M joints and confidences) are handled without
boolean indexing: each sample carries a 0/1 weight and each subset's mean is taken over its
own samples, which equals the original ``loss(x[subset])`` on each subset.

Units: vertices and joints in meters, 2D keypoints in normalised crop coordinates (the
originals' [-1, 1] convention), rotations as 3x3 matrices / 6D / axis-angle (radians).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from hmr_jax.body.regressors import H36M_TO_J17, regress_joints
from hmr_jax.geometry.cameras import weak_perspective_projection
from hmr_jax.geometry.rotations import axis_angle_to_matrix, rotation_6d_to_matrix

__all__ = ["H36M_TO_J17", "commitment_loss", "cross_entropy", "masked_cross_entropy", "mixed_reprojection_loss",
           "reprojection_loss", "reprojection_loss_conf", "rotation_loss", "vertex_error"]


def _subset_mean(per_sample: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
    """Mean of ``per_sample`` (B,) over samples with ``weight`` 1; 0 when the subset is empty."""
    weight = weight.astype(per_sample.dtype)
    return jnp.sum(per_sample * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def masked_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                         mask: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Cross-entropy averaged over the masked tokens only (MEGA).

    Args:
      logits: (B, N, K) unnormalised scores over the K codebook entries.
      labels: (B, N) integer token indices in [0, K).
      mask: (B, N) bool/0-1, True where the token was masked (the ones to predict).
    Returns:
      ``(loss, valid)``: the mean over masked tokens, and whether any token was masked. The
      original gets NaN for an empty mask and then skips it; here the loss is 0 and
      ``valid`` is False so the caller can skip it the same way.
    """
    if logits.shape[:2] != labels.shape or labels.shape != mask.shape:
        raise ValueError(f"masked_cross_entropy: logits {logits.shape}, labels {labels.shape} and "
                         f"mask {mask.shape} must agree on (B, N)")
    per_token = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels.astype(jnp.int32))
    mask = mask.astype(jnp.float32)
    count = jnp.sum(mask)
    return jnp.sum(per_token * mask) / jnp.maximum(count, 1.0), count > 0


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Cross-entropy averaged over all tokens (VQ-HPS). logits (B, N, K), labels (B, N)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels.astype(jnp.int32)))


def rotation_loss(pred_rot6d: jnp.ndarray, gt_axis_angle: jnp.ndarray) -> jnp.ndarray:
    """Mean squared error between rotation matrices: pred (B, 6) 6D, target (B, 3) axis-angle."""
    return jnp.mean((rotation_6d_to_matrix(pred_rot6d) - axis_angle_to_matrix(gt_axis_angle)) ** 2)


def reprojection_loss(gt_2d: jnp.ndarray, vertices: jnp.ndarray, camera: jnp.ndarray,
                      joint_regressor: jnp.ndarray, weight: jnp.ndarray | None = None) -> jnp.ndarray:
    """L1 between projected regressed joints and 2D targets (3DPW, no confidences).

    gt_2d (B, J, 2 or 3; a 3rd channel is ignored), vertices (B, V, 3), camera (B, 3),
    joint_regressor (J, V); ``weight`` (B,) 0/1 selects the samples the mean runs over.
    """
    pred = weak_perspective_projection(regress_joints(joint_regressor, vertices), camera)
    per_sample = jnp.mean(jnp.abs(pred - gt_2d[..., :2]), axis=(1, 2))
    if weight is None:
        return jnp.mean(per_sample)
    return _subset_mean(per_sample, weight)


def reprojection_loss_conf(gt_2d: jnp.ndarray, vertices: jnp.ndarray, camera: jnp.ndarray,
                           joint_regressor: jnp.ndarray, weight: jnp.ndarray | None = None,
                           joint_order: Sequence[int] | None = H36M_TO_J17) -> jnp.ndarray:
    """Confidence-weighted L1 on 17 joints: the H36M joints of COCO / MPII / H36M / MPI-INF-3DHP
    (the originals'), or those of another layout (``joint_order``).

    gt_2d (B, 17, 3) = (x, y, confidence), regressor (17, V), its regressed joints reordered by
    ``joint_order`` (the regressor rows in the keypoints' order: ``H36M_TO_J17`` for the H36M
    regressor; None: as they are); per joint ``mean_xy |diff| * confidence``, averaged over joints
    and samples.
    """
    joints = regress_joints(joint_regressor, vertices)
    if joint_order is not None:
        joints = joints[:, jnp.array(joint_order)]
    pred = weak_perspective_projection(joints, camera)
    per_joint = jnp.mean(jnp.abs(pred - gt_2d[..., :2]), axis=-1) * gt_2d[..., 2]
    per_sample = jnp.mean(per_joint, axis=1)
    if weight is None:
        return jnp.mean(per_sample)
    return _subset_mean(per_sample, weight)


def mixed_reprojection_loss(joints_2d: jnp.ndarray, is_3dpw: jnp.ndarray, vertices: jnp.ndarray,
                            camera: jnp.ndarray, regressor_smpl24: jnp.ndarray,
                            regressor_h36m: jnp.ndarray,
                            joint_order: Sequence[int] | None = H36M_TO_J17) -> jnp.ndarray:
    """The originals' 2D term on a mixed batch: 3DPW samples use the 24 SMPL joints without
    confidences, the others the 17 H36M joints with confidences; the two subset means add.

    joints_2d (B, Jmax, 3): 3DPW samples fill the first 24 rows, others the first 17;
    is_3dpw (B,) bool. An empty subset contributes 0 (as the original's ``if subset.any()``).
    ``regressor_h36m`` / ``joint_order``: the 17-joint regressor and its rows' order, as
    :func:`reprojection_loss_conf` (another 17-joint layout, e.g. COCO-17 with None).
    """
    is_3dpw = is_3dpw.astype(jnp.float32)
    n24 = regressor_smpl24.shape[0]
    n17 = regressor_h36m.shape[0]
    loss = jnp.zeros((), jnp.float32)
    if joints_2d.shape[1] >= n24:
        loss += reprojection_loss(joints_2d[:, :n24], vertices, camera, regressor_smpl24, is_3dpw)
    loss += reprojection_loss_conf(joints_2d[:, :n17], vertices, camera, regressor_h36m,
                                   1.0 - is_3dpw, joint_order)
    return loss


def vertex_error(gt_vertices: jnp.ndarray, pred_vertices: jnp.ndarray) -> jnp.ndarray:
    """Mesh-VQ-VAE's training ``v2v``: mean Euclidean distance (meters) after centring the
    prediction (only the prediction, as the original). Both (B, V, 3); returns a scalar."""
    pred = pred_vertices - jnp.mean(pred_vertices, axis=1, keepdims=True)
    return jnp.mean(jnp.linalg.norm(gt_vertices - pred, axis=-1))


def commitment_loss(z: jnp.ndarray, quantized: jnp.ndarray, commitment_cost: float) -> jnp.ndarray:
    """VQ commitment term ``beta * mean((z - sg(q))^2)`` of the EMA quantizer (the codebook
    itself moves by exponential moving averages, not by gradients)."""
    return commitment_cost * jnp.mean((z - jax.lax.stop_gradient(quantized)) ** 2)
