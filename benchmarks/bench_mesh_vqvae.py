"""Mesh-VQ-VAE tokenizer throughput: encode, decode and encode+decode, meshes per second.

    python benchmarks/bench_mesh_vqvae.py [--connections body_models/ConnectionMatrices]
        [--checkpoint converted/mesh_vqvae_54] [--batches 1,16,64] [--min-time 2]

Released configuration (54 tokens, 512 codes, dfaust2 connections), float32, after compilation
(``compile_s`` = time to compile every function / batch size, reported apart). Weights are the
converted checkpoint if given, else random (speed does not depend on the values). Prints ONE
JSON line: ``{encode,decode,encode_decode}_b{B}_meshes_per_s``, ``..._ms`` (per batch), and the
speed-up over the original PyTorch code measured on this CPU (2 threads, fp32: batch 16 encode
0.50 s + decode 0.61 s; batch 1 29 ms + 39 ms).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The original figures (seconds per batch), from the issue: PyTorch 2.13 CPU, 2 threads.
ORIGINAL_S = {("encode", 16): 0.50, ("decode", 16): 0.61, ("encode", 1): 0.029, ("decode", 1): 0.039}


def _default_connections() -> str:
    env = os.environ.get("HMR_JAX_REFERENCE_DIR")
    for cand in ([pathlib.Path(env) / "ConnectionMatrices"] if env else []) + [
        ROOT / "body_models" / "ConnectionMatrices",
        ROOT.parent / "shared" / "reference" / "ConnectionMatrices",
    ]:
        if cand.is_dir():
            return str(cand)
    return str(ROOT / "body_models" / "ConnectionMatrices")


def _time(fn, args, min_time: float, min_reps: int = 3) -> float:
    """Median seconds per call (after one warm-up call)."""
    fn(*args).block_until_ready()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn(*args).block_until_ready()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", default=_default_connections(), help="folder with _pool*.npy / _unpool*.npy")
    p.add_argument("--checkpoint", help="converted Mesh-VQ-VAE folder (default: random weights)")
    p.add_argument("--batches", default="1,16,64", help="comma-separated batch sizes")
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per measurement")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from hmr_jax.conversion import mesh_vqvae as conv
    from hmr_jax.models.mesh_vqvae import RELEASED_54

    if args.checkpoint:
        model, variables = conv.load_converted(args.checkpoint, connection_folder=args.connections)
    else:
        config = json.loads(json.dumps(RELEASED_54))
        config["autoencoder"]["connection_folder"] = args.connections
        model = conv.build_model(config)
        variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 6890, 3), jnp.float32))
    variables = jax.device_put(variables)
    fns = {
        "encode": jax.jit(lambda v, x: model.apply(v, x, method="encode")),
        "decode": jax.jit(lambda v, i: model.apply(v, i, method="decode")),
        "encode_decode": jax.jit(
            lambda v, x: model.apply(v, model.apply(v, x, method="encode"), method="decode")
        ),
    }
    rng = np.random.default_rng(0)
    result: dict = {}
    compile_s = 0.0
    for b in [int(s) for s in args.batches.split(",")]:
        meshes = jnp.asarray(rng.normal(scale=0.3, size=(b, 6890, 3)).astype(np.float32))
        ids = jnp.asarray(rng.integers(0, 512, size=(b, 54)).astype(np.int32))
        for name, fn in fns.items():
            x = ids if name == "decode" else meshes
            t = time.perf_counter()
            compiled = fn.lower(variables, x).compile()
            compile_s += time.perf_counter() - t
            sec = _time(compiled, (variables, x), args.min_time)
            result[f"{name}_b{b}_ms"] = round(sec * 1e3, 3)
            result[f"{name}_b{b}_meshes_per_s"] = round(b / sec, 2)
        for bb in (1, 16):
            if b == bb:
                orig = ORIGINAL_S[("encode", b)] + ORIGINAL_S[("decode", b)]
                result[f"encode_decode_b{b}_speedup_vs_original"] = round(orig / (result[f"encode_decode_b{b}_ms"] / 1e3), 2)
    result["compile_s"] = round(compile_s, 2)
    result["device"] = jax.devices()[0].device_kind
    result["jax"] = jax.__version__
    result["weights"] = "converted" if args.checkpoint else "random"
    result["cpu_count"] = os.cpu_count()
    result["loadavg_1min"] = round(os.getloadavg()[0], 2)  # other work on the machine skews timings
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
