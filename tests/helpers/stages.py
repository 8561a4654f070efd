"""Shared pieces of the training-stage tests: a grid mesh, short quiet runs."""
from __future__ import annotations

import copy

import numpy as np

from hmr_jax.models.mesh_vqvae import RELEASED_54


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
    no progress bar and no TensorBoard; MEGA stages with one encoder length (one compiled step,
    still the gathered-visible-token path; the bucketed lengths are tested on their own)."""
    if "mega" in c and "visible_buckets" in c.mega:
        c.mega.visible_buckets = 1
    c.total_steps = steps
    c.log_every_steps = 1
    c.progress_bar = False
    c.tensorboard = False
    c.checkpoint.every_steps = steps
    return c


def tiny_tokenizer_model(conn_folder) -> dict:
    """A tiny Mesh-VQ-VAE model config (3 pooling levels, 4-channel codes, 16 codes) over the
    connection files in ``conn_folder``: the released layout at test sizes."""
    m = copy.deepcopy(RELEASED_54)
    m["autoencoder"] = dict(connection_folder=str(conn_folder), initial_connection="pool0",
                            layers=["pool0", "pool1", "pool2", "unpool2", "unpool1", "unpool0"],
                            channels=[16, 16, 4, 16, 16, 3], weight_nums=[9, 0, 9, 9, 0, 9],
                            residual_rates=[0, 1, 0, 0, 1, 0], connection_sha256=None)
    m["quantizer"].update(embedding_dim=4, num_embeddings=16)
    return m
