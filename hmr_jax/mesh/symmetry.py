"""Left / right symmetry of a template mesh."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def mirror_permutation(template: np.ndarray, tolerance: float = 2e-3) -> np.ndarray:
    """Index of each vertex's mirror image across the x = 0 plane of a symmetric template.

    Args:
      template: (V, 3) rest vertices, meters, symmetric about x = 0.
      tolerance: largest distance, meters, from a mirrored vertex to its match.
    Returns:
      (V,) int64: ``template[perm] * (-1, 1, 1)`` is ``template`` up to ``tolerance``.
    Raises:
      ValueError: the template is not left/right symmetric within ``tolerance`` meters.
    """
    dist, perm = cKDTree(template).query(template * np.array([-1.0, 1.0, 1.0]))
    if dist.max() > tolerance:
        raise ValueError(f"template is not symmetric: a mirrored vertex is {dist.max():.4f} m from any vertex")
    return perm.astype(np.int64)
