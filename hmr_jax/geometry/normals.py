"""Surface normals of triangle meshes (NumPy, float64): used by the spiral neighbourhoods and the renderer."""
from __future__ import annotations

import numpy as np


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals.

    Args:
      vertices: (V, 3) positions (meters).
      faces: (F, 3) vertex ids, counter-clockwise seen from outside.
    Returns:
      (V, 3) float64 unit normals (+z for vertices in no face or with a zero-area fan).
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(norm > 1e-12, n / np.maximum(norm, 1e-12), np.array([0.0, 0.0, 1.0]))
