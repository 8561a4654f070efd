"""Images per second of the full-size backbones (inference, BatchNorm on running statistics).

Usage:
  python benchmarks/bench_backbones.py [--backbones hrnet_w48,resnet50,vit_h] [--batches 1,16]
      [--dtypes f32] [--original /path/to/MEGA [--original-deps DIR]] [--quick]
      [--min-rounds 3] [--max-rounds 10] [--budget-s 30]

Flags are absl's (``--name value`` or ``--name=value``; ``--flag`` / ``--noflag``; ``--help``
lists them).

Models: HRNet-w48 (224 x 224 -> 7 x 7 x 720), ResNet-50 (224 x 224 -> 7 x 7 x 2048), ViT-H
(256 x 192 -> 16 x 12 x 1280), random float32 parameters (He-scaled kernels, unit BatchNorm;
speed does not depend on the values). Default dtypes: f32 on a CPU, f32 and bf16 on an
accelerator.

``--original PATH`` also times the ORIGINAL PyTorch HRNet-w48 (MEGA's ``hrnet_w48(downsample=True,
use_conv=True)``, imported from the checkout at PATH, see ``_original.py``; same parameter
scheme, ``eval()``, float32, ``torch.set_num_threads(os.cpu_count())``) in the same process,
interleaved with ours call by call (ours, original, ours, original, ...), on the same images.
``--quick``: HRNet-w48 only, f32, 3 rounds.

Prints ONE JSON line: the machine (CPU model and features, cores, load, XLA flags), then per
configuration ``{name}_{dtype}_b{batch}`` = {s (median wall seconds per batch), cpu_s (median CPU
seconds of this process, all threads: the work done, whatever else runs), images_per_s,
compile_s, rounds}; with ``--original`` also ``original_hrnet_w48_f32_b{batch}`` and
``hrnet_w48_f32_b{batch}_speedup_vs_original`` (original time / ours, > 1 = ours faster).
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import hmr_jax  # noqa: E402,F401  (XLA CPU flags before JAX starts)
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from hmr_jax.cli import parse_command  # noqa: E402
from hmr_jax.errors import command_line  # noqa: E402
from hmr_jax.models.backbones import hrnet_w48, resnet50, vit_huge  # noqa: E402

PROGRAM = "python benchmarks/bench_backbones.py"

BACKBONES = {
    "hrnet_w48": (lambda dtype: hrnet_w48(dtype=dtype), (224, 224)),
    "resnet50": (lambda dtype: resnet50(dtype=dtype), (224, 224)),
    "vit_h": (lambda dtype: vit_huge(dtype=dtype), (256, 192)),
}


def ours_fn(name: str, batch: int, dtype_name: str, images: np.ndarray):
    """``(call, compile_s)``: a no-argument call of our compiled backbone on ``images``."""
    build, _ = BACKBONES[name]
    model = build(_common.DTYPES[dtype_name])
    x = jax.device_put(images)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(x.shape, jnp.float32))
    variables = jax.device_put(_common.random_variables(abstract))
    t0 = time.perf_counter()
    fn = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
    compile_s = time.perf_counter() - t0
    return (lambda: fn(variables, x).block_until_ready()), compile_s


def original_hrnet(original, images: np.ndarray):
    """A no-argument call of the original HRNet-w48 (eval, no_grad) on ``images`` (NHWC -> NCHW)."""
    import torch  # the original is PyTorch code (only with --original)

    import _original

    net = _original.hrnet(original).eval()
    x = _original.to_nchw(images)

    def call():
        with torch.no_grad():
            return net(x)

    return call


def _define(fv: flags.FlagValues) -> None:
    """This benchmark's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("backbones", ",".join(BACKBONES), f"comma list of {', '.join(BACKBONES)}", flag_values=fv)
    flags.DEFINE_string("batches", "1,16", "comma list of batch sizes", flag_values=fv)
    flags.DEFINE_string("dtypes", None, "comma list of f32, bf16 (default: f32 on a CPU, f32,bf16 on an "
                        "accelerator)", flag_values=fv)
    _common.define_original(fv, "root of the original MEGA checkout: also time its HRNet-w48")
    flags.DEFINE_boolean("quick", False, "HRNet-w48, f32, 3 rounds", flag_values=fv)
    _common.define_rounds(fv, 3, 10, 30.0)


@command_line
def main(argv=None) -> int:
    """Run the benchmark and print one JSON line; 0, or 2 after one ``error:`` line on a bad flag."""
    args = parse_command(argv, _define, PROGRAM, __doc__)
    if args is None:   # --help
        return 0
    if args.quick:
        args.backbones, args.dtypes, args.max_rounds = "hrnet_w48", "f32", 3
    names = args.backbones.split(",")
    for name in names:
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r} in --backbones; one of {', '.join(BACKBONES)}")
    dtypes = _common.parse_dtypes(args.dtypes or _common.default_dtypes())
    batches = _common.parse_ints(args.batches, "--batches")
    original = None
    if args.original:
        import _original

        original = _original.load_mega(args.original, args.original_deps)
    result: dict = _common.machine()
    result["original"] = args.original or "not timed (pass --original /path/to/MEGA)"
    for name in names:
        for dtype_name in dtypes:
            for batch in batches:
                h, w = BACKBONES[name][1]
                images = np.random.default_rng(1).standard_normal((batch, h, w, 3), np.float32)
                ours, compile_s = ours_fn(name, batch, dtype_name, images)
                candidates = {"ours": ours}
                with_original = original is not None and name == "hrnet_w48" and dtype_name == "f32"
                if with_original:
                    candidates["original"] = original_hrnet(original, images)
                times = _common.interleave(candidates, args.min_rounds, args.max_rounds, args.budget_s)
                key = f"{name}_{dtype_name}_b{batch}"
                result[key] = _common.rounded({**times["ours"], "images_per_s": batch / times["ours"]["s"],
                                               "compile_s": compile_s})
                if with_original:
                    result["original_" + key] = _common.rounded(
                        {**times["original"], "images_per_s": batch / times["original"]["s"]})
                    result[key + "_speedup_vs_original"] = round(times["original"]["s"] / times["ours"]["s"], 3)
                print(f"# {key}: {json.dumps({k: v for k, v in result.items() if k.endswith(key) or key in k})}",
                      file=sys.stderr, flush=True)
    result["load_average_end"] = _common.load_average()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
