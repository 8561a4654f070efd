"""Shared pieces of the training-stage tests: a grid mesh, short quiet runs."""
from __future__ import annotations

import numpy as np


def grid_faces(h: int, w: int) -> np.ndarray:
    """(2 (h-1)(w-1), 3) triangles of an h x w vertex grid (row-major vertex ids)."""
    faces = []
    for i in range(h - 1):
        for j in range(w - 1):
            a, b, c, d = i * w + j, i * w + j + 1, (i + 1) * w + j, (i + 1) * w + j + 1
            faces += [(a, b, c), (b, d, c)]
    return np.array(faces)


def quick(c, steps: int):
    """Set a config for a short run: ``steps`` steps, log every step, one checkpoint at the end,
    no progress bar and no TensorBoard."""
    c.total_steps = steps
    c.log_every_steps = 1
    c.progress_bar = False
    c.tensorboard = False
    c.checkpoint.every_steps = steps
    return c
