"""Tiny, fully known datasets in the record format, for tests and smoke runs (no body model).

A toy person is a random 3D skeleton: 24 joints ``P`` (meters, canonical frame, centred);
its "mesh" is the same points (V = 24), the mirrored person's mesh ``P * (-1, 1, 1)`` with the
SMPL left/right swap, its 3D joints the first 22. The stored image is a smooth random
background with a white disc at each joint's orthographic projection
``center + (200 * scale / 2.2) * (R @ P)[:, :2]`` (so keypoints and pixels agree exactly).
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from hmr_jax.data.augment import FLIP_PERMUTATIONS
from hmr_jax.data.shards import write_dataset
from hmr_jax.geometry.rotations_np import axis_angle_to_matrix

NUM_JOINTS = 24


def toy_image_record(rng: np.random.Generator, height: int = 160, width: int = 128, dataset: str = "toy",
                     name: str = "toy.jpg", dots: bool = True, quality: int = 95) -> dict:
    """One image record of a random toy person (see the module docstring)."""
    joints = rng.normal(scale=0.25, size=(NUM_JOINTS, 3))
    joints -= joints.mean(axis=0)
    orient = rng.normal(scale=0.6, size=3)
    rot = axis_angle_to_matrix(orient)
    scale = min(height, width) / 200.0 * rng.uniform(0.7, 0.9)
    center = np.array([width * rng.uniform(0.45, 0.55), height * rng.uniform(0.45, 0.55)])
    pix_per_m = 200.0 * scale / 2.2
    kp = center + pix_per_m * (joints @ rot.T)[:, :2]
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.uniform(40, 120, size=3)
    image = base + 30 * np.sin(xx[..., None] / rng.uniform(5, 15) + rng.uniform(0, 6, 3)) \
        + 30 * np.cos(yy[..., None] / rng.uniform(5, 15))
    if dots:
        for x, y in kp:
            image[(xx - x) ** 2 + (yy - y) ** 2 <= 2.5 ** 2] = 255.0
    buf = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    perm = list(FLIP_PERMUTATIONS["smpl24"])
    return {
        "image_jpeg": buf.getvalue(),
        "center": center.astype(np.float32),
        "scale": np.float32(scale),
        "keypoints_2d": np.concatenate([kp, np.ones((NUM_JOINTS, 1))], axis=1).astype(np.float32),
        "keypoints_kind": "smpl24",
        "vertices": joints.astype(np.float32),
        "vertices_flipped": (joints[perm] * [-1.0, 1.0, 1.0]).astype(np.float32),
        "global_orient": orient.astype(np.float32),
        "joints_3d": joints[:22].astype(np.float32),
        "dataset": dataset,
        "image_name": name,
        "image_size": np.array([height, width], np.int32),
        "stored_to_original": np.array([[1, 0, 0], [0, 1, 0]], np.float32),
    }


def write_toy_image_dataset(path: str | os.PathLike, num: int, seed: int = 0, dataset: str = "toy",
                            records_per_shard: int = 16, **kwargs):
    """Writes ``num`` toy image records (seeded) to a dataset folder; returns the manifest path."""
    rng = np.random.default_rng(seed)
    items = (toy_image_record(rng, dataset=dataset, name=f"{dataset}_{i:05d}.jpg", **kwargs) for i in range(num))
    return write_dataset(path, "image", items, records_per_shard=records_per_shard,
                         metadata={"source": "hmr_jax.testing.toy_data", "seed": seed})


def write_toy_mesh_dataset(path: str | os.PathLike, num: int, seed: int = 0, num_vertices: int = 50,
                           dataset: str = "toy_mesh", records_per_shard: int = 16):
    """Writes ``num`` mesh records of random centred point sets; returns the manifest path."""
    rng = np.random.default_rng(seed)

    def items():
        for i in range(num):
            v = rng.normal(scale=0.3, size=(num_vertices, 3))
            yield {"vertices": (v - v.mean(0)).astype(np.float32),
                   "global_orient": rng.normal(scale=0.5, size=3).astype(np.float32),
                   "dataset": dataset, "name": f"{dataset}_{i:05d}"}

    return write_dataset(path, "mesh", items(), records_per_shard=records_per_shard,
                         metadata={"source": "hmr_jax.testing.toy_data", "seed": seed})
