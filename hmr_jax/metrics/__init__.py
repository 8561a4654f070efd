"""Evaluation metrics for human mesh recovery, batched and jit-compiled (meters in, meters out).

``mpjpe`` / ``pa_mpjpe`` / ``pve`` take ``(pred, gt)`` of shape (B, J, 3) or (B, V, 3) and
return (B,) per-example errors; ``mesh_errors`` / ``hypothesis_errors`` apply a benchmark
protocol ("original" or "standard") to meshes.
"""
from hmr_jax.metrics.errors import (
    mean_pairwise_distance,
    mean_point_error,
    min_over_hypotheses,
    mpjpe,
    pa_mpjpe,
    pve,
    similarity_align,
)
from hmr_jax.metrics.protocols import (
    METRICS,
    PROTOCOLS,
    STANDARD_DATASETS,
    hypothesis_errors,
    mesh_errors,
    protocol_alignment,
)

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "STANDARD_DATASETS",
    "hypothesis_errors",
    "mean_pairwise_distance",
    "mean_point_error",
    "mesh_errors",
    "min_over_hypotheses",
    "mpjpe",
    "pa_mpjpe",
    "protocol_alignment",
    "pve",
    "similarity_align",
]
