"""Input pipeline speed: records per second through the full augmentation pipeline.

``python benchmarks/bench_input.py [--data DIR] [--backbone hrnet] [--batch-size 32] [--seconds 8] [--workers 0,1,2]``

Flags are absl's (``--name value`` or ``--name=value``; ``--help`` lists them).

Reads an image dataset folder (default: a temporary set of toy records with 384x384 JPEGs,
about the size of the stored person regions), runs ``hmr_jax.data.image_pipeline`` with
augmentation on (decode, crop with scale / rotation / flip, colour noise, normalisation,
batching) with 0, 1 and 2 worker processes (``--workers``, a comma list), and prints one JSON line::

    {"records_per_s_workers0": ..., "records_per_s_workers1": ..., "records_per_s_workers2": ...,
     "backbone": "hrnet", "batch_size": 32, ...}

Each figure is measured after the first batch (worker start-up excluded). The line also
gives the software rasteriser's time to draw a 14k-vertex mesh over a 256x256 image
(``render_ms_14k_vertices_256``), used by sample.py and the synthetic generator.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hmr_jax.cli import parse_command  # noqa: E402
from hmr_jax.errors import command_line  # noqa: E402

PROGRAM = "python benchmarks/bench_input.py"


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


def _define(fv: flags.FlagValues) -> None:
    """This benchmark's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("data", None, "image dataset folder (default: generated toy records)", flag_values=fv)
    flags.DEFINE_enum("backbone", "hrnet", ["hrnet", "resnet", "vit"], "the backbone's input pipeline (crop size, "
                      "normalisation)", flag_values=fv)
    flags.DEFINE_integer("batch-size", 32, "records per batch", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("seconds", 8.0, "measuring time per setting (seconds)", flag_values=fv)
    flags.DEFINE_list("workers", ["0", "1", "2"], "worker process counts to measure, comma-separated",
                      flag_values=fv)


def _workers(values: list[str]) -> list[int]:
    """``--workers`` as integers >= 0; ValueError naming the flag otherwise."""
    try:
        counts = [int(v) for v in values]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise ValueError(f"--workers must be a comma list of worker counts >= 0 (e.g. --workers=0,1,2), got "
                         f"{','.join(values)!r} (see {PROGRAM} --help)")
    return counts


@command_line
def main(argv=None) -> int:
    """Measure every worker count and print one JSON line; 0, or 2 after one ``error:`` line on a bad flag."""
    a = parse_command(argv, _define, PROGRAM, __doc__)
    if a is None:   # --help
        return 0
    workers = _workers(a.workers)
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data
        if data is None:
            from hmr_jax.testing.toy_data import write_toy_image_dataset

            data = os.path.join(tmp, "toy")
            write_toy_image_dataset(data, 256, seed=0, height=384, width=384, records_per_shard=64)
        result = {f"records_per_s_workers{w}": round(_measure(data, a.backbone, a.batch_size, w, a.seconds), 1)
                  for w in workers}
    result["render_ms_14k_vertices_256"] = round(_render_ms(), 1)
    result.update({"backbone": a.backbone, "batch_size": a.batch_size, "augment": True,
                   "data": a.data or "toy 384x384 JPEG records", "cpu_count": os.cpu_count()})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
