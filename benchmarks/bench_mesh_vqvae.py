"""Mesh-VQ-VAE tokenizer throughput: encode, decode and encode + decode, meshes per second.

    python benchmarks/bench_mesh_vqvae.py [--connections body_models/ConnectionMatrices]
        [--checkpoint converted/mesh_vqvae_54] [--batches 1,16] [--original /path/to/Mesh-VQ-VAE]
        [--quick] [--min-rounds 3] [--max-rounds 20] [--budget-s 20]

Flags are absl's (``--name value`` or ``--name=value``; ``--flag`` / ``--noflag``; ``--help``
lists them).

Released configuration (54 tokens, 512 codes, dfaust2 connections), float32, after compilation
(``compile_s`` reported apart). Weights: the converted checkpoint if given, else random (speed
does not depend on the values).

``--original PATH`` times the ORIGINAL PyTorch Mesh-VQ-VAE from the checkout at PATH (see
``_original.py``: ``FullyConvAE(config, test_mode=True)`` + ``MeshVQVAE`` with the released
54-token configuration and the same connection files, its own random initialisation,
``init_test_mode()``, ``eval()``, ``torch.no_grad()``, float32, ``torch.set_num_threads(os.cpu_count())``;
one instance per batch size because its test mode pre-allocates batch-sized buffers) in the same
process, interleaved call by call with ours on the same meshes: ``get_codebook_indices(meshes)``
(encode), ``decode(indices)`` and the two in a row. Target: encode + decode at least 5x the
original at every batch size. ``--quick``: batches 1 and 16, 3 rounds.

Prints ONE JSON line: the machine (CPU model and features, cores, load, XLA flags), per batch
``{encode,decode,encode_decode}_b{B}`` = {s, cpu_s, meshes_per_s, rounds}, with ``--original``
``original_..._b{B}``, ``encode_decode_b{B}_speedup_vs_original`` and ``targets``.
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hmr_jax  # noqa: E402,F401  (XLA CPU flags before JAX starts)
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from hmr_jax import runtime  # noqa: E402
from hmr_jax.cli import parse_command  # noqa: E402
from hmr_jax.errors import command_line  # noqa: E402

PROGRAM = "python benchmarks/bench_mesh_vqvae.py"

#: The issue's target: encode + decode at least this many times faster than the original.
TARGET_SPEEDUP = 5.0


def _default_connections() -> str:
    env = os.environ.get("HMR_JAX_REFERENCE_DIR")
    for cand in ([pathlib.Path(env) / "ConnectionMatrices"] if env else []) + [
        ROOT / "body_models" / "ConnectionMatrices",
        ROOT.parent / "shared" / "reference" / "ConnectionMatrices",
    ]:
        if cand.is_dir():
            return str(cand)
    return str(ROOT / "body_models" / "ConnectionMatrices")


def ours_fns(args):
    """``(model, variables, {name: jitted fn(variables, x)})`` for our tokenizer."""
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
    # the compile options the library's tokenizer programs get (hmr_jax.models.decoding)
    jit = functools.partial(jax.jit, compiler_options=runtime.small_matmul_compiler_options() or None)
    fns = {
        "encode": jit(lambda v, x: model.apply(v, x, method="encode")),
        "decode": jit(lambda v, i: model.apply(v, i, method="decode")),
        "encode_decode": jit(lambda v, x: model.apply(v, model.apply(v, x, method="encode"), method="decode")),
    }
    return variables, fns


def _define(fv: flags.FlagValues) -> None:
    """This benchmark's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("connections", _default_connections(), "folder with _pool*.npy / _unpool*.npy",
                        flag_values=fv)
    flags.DEFINE_string("checkpoint", None, "converted Mesh-VQ-VAE folder (default: random weights)",
                        flag_values=fv)
    flags.DEFINE_string("batches", "1,16", "comma-separated batch sizes", flag_values=fv)
    _common.define_original(fv, "root of the original Mesh-VQ-VAE checkout: time it in the same run",
                            "extra folder on sys.path for the original's packages")
    flags.DEFINE_boolean("quick", False, "batches 1 and 16, 3 rounds", flag_values=fv)
    _common.define_rounds(fv, 3, 20, 20.0)


@command_line
def main(argv=None) -> int:
    """Time the tokenizer's encode / decode (and the original's) and print one JSON line; 0, or 2 after
    one ``error:`` line on a bad flag or missing connection files."""
    args = parse_command(argv, _define, PROGRAM, __doc__)
    if args is None:   # --help
        return 0
    if args.quick:
        args.batches, args.max_rounds = "1,16", 3
    batches = _common.parse_ints(args.batches, "--batches")
    if not os.path.isfile(os.path.join(args.connections, "_pool0.npy")):
        raise FileNotFoundError(f"no dfaust2 connection files in {args.connections}; pass --connections DIR "
                         "(the folder with _pool0.npy ... _unpool6.npy)")
    original = None
    if args.original:
        import _original

        original = _original.load_mesh_vqvae(args.original, args.original_deps)

    result: dict = _common.machine()
    result["weights"] = "converted" if args.checkpoint else "random"
    result["compiler_options"] = runtime.small_matmul_compiler_options()
    result["original"] = args.original or "not timed (pass --original /path/to/Mesh-VQ-VAE)"
    variables, fns = ours_fns(args)
    rng = np.random.default_rng(0)
    compile_s = 0.0
    targets = {}
    for b in batches:
        meshes_np = rng.normal(scale=0.3, size=(b, 6890, 3)).astype(np.float32)
        ids_np = rng.integers(0, 512, size=(b, 54)).astype(np.int32)
        meshes, ids = jnp.asarray(meshes_np), jnp.asarray(ids_np)
        candidates = {}
        for name, fn in fns.items():
            x = ids if name == "decode" else meshes
            t = time.perf_counter()
            compiled = fn.lower(variables, x).compile()
            compile_s += time.perf_counter() - t
            candidates[name] = (lambda c=compiled, x=x: c(variables, x).block_until_ready())
        if original is not None:
            import torch  # the original is PyTorch code (only with --original)

            import _original

            model = _original.mesh_vqvae(original, args.connections, b)
            t_meshes, t_ids = torch.from_numpy(meshes_np), torch.from_numpy(ids_np.astype(np.int64))

            def encode(model=model, t_meshes=t_meshes):
                with torch.no_grad():
                    return model.get_codebook_indices(t_meshes)

            def decode(model=model, t_ids=t_ids):
                with torch.no_grad():
                    return model.decode(t_ids)

            def encode_decode(model=model, t_meshes=t_meshes):
                with torch.no_grad():
                    return model.decode(model.get_codebook_indices(t_meshes))

            candidates.update(original_encode=encode, original_decode=decode, original_encode_decode=encode_decode)
        times = _common.interleave(candidates, args.min_rounds, args.max_rounds, args.budget_s)
        for name, t in times.items():
            result[f"{name}_b{b}"] = _common.rounded({**t, "meshes_per_s": b / t["s"]})
        if original is not None:
            ours_s, orig_s = times["encode_decode"]["s"], times["original_encode_decode"]["s"]
            result[f"encode_decode_b{b}_speedup_vs_original"] = round(orig_s / ours_s, 2)
            targets[f"encode_decode_b{b}"] = {
                "what": f"encode + decode at batch {b} >= {TARGET_SPEEDUP:g}x the original",
                "ours_s": round(ours_s, 5), "original_s": round(orig_s, 5),
                "speedup": round(orig_s / ours_s, 2), "met": bool(orig_s / ours_s >= TARGET_SPEEDUP)}
        print(f"# batch {b}: {json.dumps({k: v for k, v in result.items() if k.endswith(f'_b{b}')})}",
              file=sys.stderr, flush=True)
    result["compile_s"] = round(compile_s, 2)
    if targets:
        result["targets"] = targets
    result["load_average_end"] = _common.load_average()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
