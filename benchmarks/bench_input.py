"""Input pipeline speed: records per second through the full augmentation pipeline.

``python benchmarks/bench_input.py [--data DIR] [--backbone hrnet] [--batch-size 32] [--seconds 8]``

Reads an image dataset folder (default: a temporary set of toy records with 384x384 JPEGs,
about the size of the stored person regions), runs ``hmr_jax.data.image_pipeline`` with
augmentation on (decode, crop with scale / rotation / flip, colour noise, normalisation,
batching) with 0, 1 and 2 worker processes, and prints one JSON line::

    {"records_per_s_workers0": ..., "records_per_s_workers1": ..., "records_per_s_workers2": ...,
     "backbone": "hrnet", "batch_size": 32, ...}

Each figure is measured after the first batch (worker start-up excluded).
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
            from hmr_jax.data.toy import write_toy_image_dataset

            data = os.path.join(tmp, "toy")
            write_toy_image_dataset(data, 256, seed=0, height=384, width=384, records_per_shard=64)
        result = {f"records_per_s_workers{w}": round(_measure(data, a.backbone, a.batch_size, w, a.seconds), 1)
                  for w in a.workers}
    result.update({"backbone": a.backbone, "batch_size": a.batch_size, "augment": True,
                   "data": a.data or "toy 384x384 JPEG records", "cpu_count": os.cpu_count()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
