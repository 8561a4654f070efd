"""Images per second of the full-size backbones (inference, BatchNorm on running statistics).

Usage:
  python benchmarks/bench_backbones.py [--backbones hrnet_w48,resnet50,vit_h] [--batches 1,16]
                                       [--dtypes f32,bf16] [--min-iters 1] [--max-iters 20]
                                       [--budget-s 20]

Models: HRNet-w48 (224 x 224 -> 7 x 7 x 720), ResNet-50 (224 x 224 -> 7 x 7 x 2048), ViT-H
(256 x 192 -> 16 x 12 x 1280), with random He-scaled float32 parameters (speed does not depend
on the values). Each (backbone, batch, dtype) is jitted and run once to compile; then it is timed
over at least ``--min-iters`` and at most ``--max-iters`` calls, stopping once ``--budget-s``
seconds are spent. Prints ONE JSON line: ``{name}_{dtype}_b{batch}_images_per_s``,
``..._s_per_batch`` (median wall time), ``..._cpu_s_per_batch`` (median CPU time of this process, all
threads: on a machine shared with other jobs it shows the work done, independent of contention)
and ``..._compile_s`` per configuration, plus the device and the XLA flags.

For comparison, the original PyTorch code (MEGA's HRNet-w48 backbone alone, 2 CPU threads,
float32): 0.16 s at batch 1 and 2.05 s at batch 16.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hmr_jax.models.backbones import hrnet_w48, resnet50, vit_huge  # noqa: E402

BACKBONES = {
    "hrnet_w48": (lambda dtype: hrnet_w48(dtype=dtype), (224, 224)),
    "resnet50": (lambda dtype: resnet50(dtype=dtype), (224, 224)),
    "vit_h": (lambda dtype: vit_huge(dtype=dtype), (256, 192)),
}
DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}


def _random_variables(abstract, seed: int = 0):
    """He-scaled random kernels, unit BatchNorm / LayerNorm, zero biases and means (float32 NumPy)."""
    rng = np.random.default_rng(seed)

    def make(path, leaf):
        name = str(path[-1].key) if hasattr(path[-1], "key") else str(path[-1])
        shape = leaf.shape
        if name in ("scale", "var"):
            return np.ones(shape, np.float32)
        if name in ("bias", "mean"):
            return np.zeros(shape, np.float32)
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        return (rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2.0 / max(fan_in, 1)))).astype(np.float32)

    return jax.tree_util.tree_map_with_path(make, abstract)


def bench_one(name: str, batch: int, dtype_name: str, min_iters: int, max_iters: int, budget_s: float) -> dict:
    """Compile and time one configuration; returns its JSON entries."""
    build, (h, w) = BACKBONES[name]
    model = build(DTYPES[dtype_name])
    images = jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32)
    abstract = jax.eval_shape(model.init, jax.random.key(0), images)
    variables = jax.device_put(_random_variables(abstract))
    x = jax.device_put(np.random.default_rng(1).standard_normal((batch, h, w, 3), np.float32))
    t0 = time.perf_counter()
    fn = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
    compile_s = time.perf_counter() - t0
    fn(variables, x).block_until_ready()  # warm-up
    times, cpu = [], []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < budget_s):
        t, c = time.perf_counter(), time.process_time()
        fn(variables, x).block_until_ready()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    per_batch = float(np.median(times))
    key = f"{name}_{dtype_name}_b{batch}"
    del variables
    return {
        f"{key}_images_per_s": round(batch / per_batch, 3),
        f"{key}_s_per_batch": round(per_batch, 4),
        f"{key}_cpu_s_per_batch": round(float(np.median(cpu)), 4),
        f"{key}_compile_s": round(compile_s, 1),
        f"{key}_iters": len(times),
    }


def main(argv=None) -> int:
    """Run the benchmark and print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--batches", default="1,16")
    p.add_argument("--dtypes", default="f32,bf16")
    p.add_argument("--min-iters", type=int, default=1)
    p.add_argument("--max-iters", type=int, default=20)
    p.add_argument("--budget-s", type=float, default=20.0, help="stop timing a configuration after this")
    args = p.parse_args(argv)
    result: dict = {
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "reference_pytorch_mega_hrnet_w48_f32_2threads_s_per_batch": {"b1": 0.16, "b16": 2.05},
    }
    for name in args.backbones.split(","):
        if name not in BACKBONES:
            print(f"error: unknown backbone {name!r}; one of {', '.join(BACKBONES)}", file=sys.stderr)
            return 2
        for dtype_name in args.dtypes.split(","):
            if dtype_name not in DTYPES:
                print(f"error: unknown dtype {dtype_name!r}; one of {', '.join(DTYPES)}", file=sys.stderr)
                return 2
            for batch in (int(b) for b in args.batches.split(",")):
                entry = bench_one(name, batch, dtype_name, args.min_iters, args.max_iters, args.budget_s)
                result.update(entry)
                print(f"# {json.dumps(entry)}", file=sys.stderr, flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
