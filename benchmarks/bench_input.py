"""Input pipeline speed: records per second through the full augmentation pipeline.

``python benchmarks/bench_input.py [--data DIR] [--backbone hrnet] [--batch-size 32] [--seconds 8]``

Reads an image dataset folder (default: a temporary set of toy records with 384x384 JPEGs,
about the size of the stored person regions), runs ``hmr_jax.data.image_pipeline`` with
augmentation on (decode, crop with scale / rotation / flip, colour noise, normalisation,
batching) with 0, 1 and 2 worker processes, and prints one JSON line::

    {"records_per_s_workers0": ..., "records_per_s_workers1": ..., "records_per_s_workers2": ...,
     "backbone": "hrnet", "batch_size": 32, ...}

Each figure is measured after the first batch (worker start-up excluded). The line also
gives the software rasteriser's time to draw a 14k-vertex mesh over a 256x256 image
(``render_ms_14k_vertices_256``), used by sample.py and the synthetic generator.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _measure(data: str, backbone: str, batch_size: int, workers: int, seconds: float) -> float:
    from hmr_jax.data.pipeline import image_pipeline

    it = iter(image_pipeline(data, batch_size=batch_size, backbone=backbone, seed=0, num_workers=workers,
                             shard_index=0, shard_count=1))
    next(it)  # start-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(next(it)["image"])
    rate = n / (time.perf_counter() - t0)
    del it
    return rate


def _render_ms(repeats: int = 5) -> float:
    import numpy as np

    from hmr_jax.render import PerspectiveCamera, render_mesh

    rows, cols = 118, 118  # a closed tube-like body: 13924 vertices, 27612 triangles
    th, ph = np.meshgrid(np.linspace(0, np.pi, rows), np.linspace(0, 2 * np.pi, cols, endpoint=False), indexing="ij")
    verts = np.stack([0.25 * np.sin(th) * np.cos(ph), 0.9 * np.cos(th), 0.2 * np.sin(th) * np.sin(ph)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols), indexing="ij")
    a, b = i * cols + j, i * cols + (j + 1) % cols
    faces = np.concatenate([np.stack([a, a + cols, b], -1).reshape(-1, 3), np.stack([b, a + cols, b + cols], -1).reshape(-1, 3)])
    cam = PerspectiveCamera((300.0, 300.0), (127.5, 127.5), (0.0, 0.0, 2.5))
    image = np.zeros((256, 256, 3), np.uint8)
    render_mesh(image, verts, faces, cam)
    t0 = time.perf_counter()
    for _ in range(repeats):
        render_mesh(image, verts, faces, cam)
    return (time.perf_counter() - t0) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="image dataset folder (default: generated toy records)")
    p.add_argument("--backbone", default="hrnet", choices=["hrnet", "resnet", "vit"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=8.0, help="measuring time per setting")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data
        if data is None:
            from hmr_jax.testing.toy_data import write_toy_image_dataset

            data = os.path.join(tmp, "toy")
            write_toy_image_dataset(data, 256, seed=0, height=384, width=384, records_per_shard=64)
        result = {f"records_per_s_workers{w}": round(_measure(data, a.backbone, a.batch_size, w, a.seconds), 1)
                  for w in a.workers}
    result["render_ms_14k_vertices_256"] = round(_render_ms(), 1)
    result.update({"backbone": a.backbone, "batch_size": a.batch_size, "augment": True,
                   "data": a.data or "toy 384x384 JPEG records", "cpu_count": os.cpu_count()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
