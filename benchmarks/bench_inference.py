"""Speed of the released MEGA-HRNet (271 M parameters), deterministic and stochastic, vs the original.

Usage:
  python benchmarks/bench_inference.py [--modes det,stoch25] [--batches 1,16] [--dtypes f32]
      [--steps 5] [--original /path/to/MEGA [--original-deps DIR]] [--quick]
      [--min-rounds 3] [--max-rounds 10] [--budget-s 60] [--flops-only]

Flags are absl's (``--name value`` or ``--name=value``; ``--flag`` / ``--noflag``; ``--help``
lists them).

The released configuration (``configs/mega_hrnet.py``: HRNet-w48, 224 x 224 crops, emb 1024,
12 + 4 blocks), random parameters (speed does not depend on the values), in the inference layout
``load_image_model`` gives (:func:`hmr_jax.models.layouts.for_inference`). Modes:

* ``det``: MEGA's deterministic mode (backbone, everything masked, one pass, argmax), at every
  ``--batches`` size;
* ``stochN`` (``stoch25``): the stochastic mode, ``--steps`` steps, N hypotheses of ONE image in
  one call (our backbone runs once per image, the first step is shared by the hypotheses).

Both stop at the tokens, rotation and camera (no mesh decode). Default dtypes: f32 on a CPU,
f32 and bf16 on an accelerator (the original is timed in f32 only).

``--original PATH`` times the ORIGINAL PyTorch code from the MEGA checkout at PATH (see
``_original.py``: CVQMAE + ``hrnet_w48(downsample=True, use_conv=True)`` with the released
sizes, random parameters of the same scheme, ``eval()``, ``torch.no_grad()``, float32,
``torch.set_num_threads(os.cpu_count())``) in the same process, interleaved call by call with
ours on the same images:

* ``original_det_b{B}``: ``model(tokens, images, fixed_ratio=1)`` then argmax (its
  ``eval_deterministic``);
* ``original_stochN``: ``model.generate(images.repeat(N, 1, 1, 1), nb_steps, gen_temp=1,
  device="cpu")`` (its ``eval_stochastic``: the backbone runs on N copies);
* ``original_hrnet_b{B}`` / ``original_hrnet_bN``: its HRNet-w48 alone, what the targets compare
  with.

Targets (``targets``), f32: deterministic at batch B takes no longer than the original's HRNet
alone at batch B; stochastic (N hypotheses of one image) no longer than the original's HRNet on N
images. ``--quick``: f32, det at batch 1 and 16 and stoch25, 3 rounds.

Prints ONE JSON line: the machine (CPU model and features, cores, load, XLA flags), this
machine's float32 matmul GFLOP/s through XLA, then per configuration
``{det|stochN}_{dtype}_b{B}`` = {s (median wall seconds per call), cpu_s (median CPU seconds of
this process, all threads), images_per_s, gflop (work per call: matmuls and convolutions),
gflop_per_s, compile_s, rounds}, the original's entries, ``..._speedup_vs_original`` (original
time / ours) and ``targets``.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import hmr_jax  # noqa: E402,F401  (XLA CPU flags before JAX starts)
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from hmr_jax.cli import parse_command  # noqa: E402
from hmr_jax.errors import command_line  # noqa: E402
from hmr_jax.models import decoding  # noqa: E402
from hmr_jax.models.layouts import for_inference  # noqa: E402
from hmr_jax.models.mega import build_mega  # noqa: E402


def _config():
    from hmr_jax.training.config import load_config

    return load_config("mega_hrnet").to_dict()


def work_gflop(mode: str, batch: int, steps: int, variables, fast) -> dict:
    """GFLOP per call of the backbone and of the whole mode (float32 graph, matmuls and convolutions).

    Counted on the jaxpr of the functions that run (so work skipped by the decoder, or by the
    inference layout's precomputed encoding, is not counted); the backbone on the checkpoint
    layout (the same convolutions as the inference layout, in scans the count follows);
    ``variables`` are the checkpoint layout's, ``fast`` the float32 ``(model, variables)`` of
    :func:`inference_pair`.
    """
    model = build_mega(_config())
    images = jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32)
    backbone = _common.gflop(functools.partial(decoding._condition, model), variables, images)
    cond = jax.eval_shape(decoding._condition, model, variables, images)
    model, variables = fast
    if mode == "det":
        tokens = jax.ShapeDtypeStruct((batch, 54), jnp.int32)
        visible = jax.ShapeDtypeStruct((batch, 54), jnp.bool_)
        rest = _common.gflop(functools.partial(decoding._mega_forward, model, faithful=False, num_visible=0),
                             variables, tokens, visible, cond)
    else:
        n = int(mode.removeprefix("stoch"))
        rest = _common.gflop(functools.partial(decoding._mega_generate, model, noise=None, steps=steps,
                                               num_samples=n, batch_size=batch, faithful=False,
                                               return_steps=False),
                             variables, cond, jax.random.PRNGKey(0), 1.0)
    return {"backbone": backbone, "total": backbone + rest}


def inference_pair(dtype_name: str, variables):
    """``(model, variables)`` in the layout users get from ``load_image_model`` (HRNet unstacked,
    the all-masked encoding precomputed), built once per dtype."""
    return for_inference(build_mega(_config(), dtype=_common.DTYPES[dtype_name]), variables)


def ours_fn(mode: str, batch: int, steps: int, fast, images: np.ndarray):
    """A no-argument call of our decoding (blocks until the tokens are ready); ``fast`` from
    :func:`inference_pair`."""
    model, variables = fast
    x = jax.device_put(images)
    key = jax.random.PRNGKey(0)
    if mode == "det":
        def call():
            return jax.block_until_ready(decoding.mega_deterministic(model, variables, images=x)["tokens"])
    else:
        n = int(mode.removeprefix("stoch"))

        def call():
            out = decoding.mega_generate(model, variables, images=x, key=key, num_samples=n, steps=steps,
                                         gen_temp=1.0)
            return jax.block_until_ready(out["tokens"])
    return call


def original_fns(model, mode: str, images: np.ndarray, steps: int) -> dict:
    """No-argument calls of the original: the mode itself and its HRNet alone (same work as the target)."""
    import torch  # the original is PyTorch code (only with --original)

    import _original

    x = _original.to_nchw(images)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 512, (x.shape[0], 54), generator=gen)

    def hrnet(batch_images):
        def call():
            with torch.no_grad():
                return model.backbone(batch_images)
        return call

    if mode == "det":
        def run():
            with torch.no_grad():
                logits, rot, cam, _ = model(tokens, x, fixed_ratio=1)
                return logits.argmax(-1), rot, cam
        return {"mode": run, "hrnet": hrnet(x)}
    n = int(mode.removeprefix("stoch"))
    copies = x.repeat(n, 1, 1, 1)

    def run():
        with torch.no_grad():
            return model.generate(copies, nb_steps=steps, gen_temp=1.0, device="cpu")
    return {"mode": run, "hrnet": hrnet(copies)}


PROGRAM = "python benchmarks/bench_inference.py"


def _define(fv: flags.FlagValues) -> None:
    """This benchmark's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("modes", "det,stoch25", "comma list of det, stochN (N hypotheses of one image)",
                        flag_values=fv)
    flags.DEFINE_string("batches", "1,16", "comma list of batch sizes of the deterministic mode", flag_values=fv)
    flags.DEFINE_string("dtypes", None, "comma list of f32, bf16 (default: f32 on a CPU, f32,bf16 on an "
                        "accelerator)", flag_values=fv)
    flags.DEFINE_integer("steps", 5, "decoding steps of the stochastic mode", flag_values=fv)
    _common.define_original(fv, "root of the original MEGA checkout: time it in the same run")
    flags.DEFINE_boolean("quick", False, "f32, det b1 / b16 and stoch25, 3 rounds", flag_values=fv)
    _common.define_rounds(fv, 3, 10, 60.0)
    flags.DEFINE_boolean("flops-only", False, "only count the work (no compile, no timing)", flag_values=fv)


@command_line
def main(argv=None) -> int:
    """Run the benchmark and print one JSON line; 0, or 2 after one ``error:`` line on a bad flag."""
    args = parse_command(argv, _define, PROGRAM, __doc__)
    if args is None:   # --help
        return 0
    if args.quick:
        args.modes, args.batches, args.dtypes, args.max_rounds = "det,stoch25", "1,16", "f32", 3
    modes = args.modes.split(",")
    for m in modes:
        if m != "det" and not (m.startswith("stoch") and m.removeprefix("stoch").isdigit()):
            raise ValueError(f"unknown mode {m!r} in --modes; use det or stochN, e.g. stoch25")
    dtypes = _common.parse_dtypes(args.dtypes or _common.default_dtypes())
    batches = _common.parse_ints(args.batches, "--batches")
    if args.steps < 1:
        raise ValueError("--steps must be >= 1")
    original = None
    if args.original and not args.flops_only:
        import _original

        original = _original.mega_hrnet(_original.load_mega(args.original, args.original_deps),
                                        _config()["mega"]).eval()

    model = build_mega(_config())
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 54), jnp.int32),
                              jax.ShapeDtypeStruct((1, 54), jnp.bool_),
                              jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    variables = jax.device_put(_common.random_variables(abstract))
    result: dict = _common.machine()
    result["parameters"] = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables["params"]))
    result["steps"] = args.steps
    result["original"] = args.original or "not timed (pass --original /path/to/MEGA)"
    if not args.flops_only:
        result["matmul_f32_gflop_per_s"] = round(_common.matmul_gflop_per_s(), 1)
    pairs: dict = {}

    def pair(dtype_name):
        if dtype_name not in pairs:
            pairs[dtype_name] = inference_pair(dtype_name, variables)
        return pairs[dtype_name]

    targets = {}
    for mode in modes:
        mode_batches = batches if mode == "det" else [1]
        for batch in mode_batches:
            g = work_gflop(mode, batch, args.steps, variables, pair("f32"))
            result[f"{mode}_b{batch}_gflop"] = round(g["total"], 2)
            result[f"{mode}_b{batch}_backbone_gflop"] = round(g["backbone"], 2)
            if args.flops_only:
                continue
            images = np.random.default_rng(1).standard_normal((batch, 224, 224, 3), np.float32)
            for dtype_name in dtypes:
                t0 = time.perf_counter()
                ours = ours_fn(mode, batch, args.steps, pair(dtype_name), images)
                ours()
                compile_s = time.perf_counter() - t0
                candidates = {"ours": ours}
                timed_original = original is not None and dtype_name == "f32"
                if timed_original:
                    orig = original_fns(original, mode, images, args.steps)
                    candidates.update(original=orig["mode"], original_hrnet=orig["hrnet"])
                times = _common.interleave(candidates, args.min_rounds, args.max_rounds, args.budget_s)
                key = f"{mode}_{dtype_name}_b{batch}"
                entry = {**times["ours"], "images_per_s": batch / times["ours"]["s"], "gflop": g["total"],
                         "gflop_per_s": g["total"] / times["ours"]["s"], "compile_s": compile_s - times["ours"]["s"]}
                result[key] = _common.rounded(entry, 3)
                if timed_original:
                    n = batch if mode == "det" else int(mode.removeprefix("stoch"))
                    result[f"original_{mode}_b{batch}"] = _common.rounded(times["original"])
                    result[f"original_hrnet_b{n}"] = _common.rounded(
                        {**times["original_hrnet"], "gflop_per_s": g["backbone"] * n / batch / times["original_hrnet"]["s"]})
                    result[f"{key}_speedup_vs_original"] = round(times["original"]["s"] / times["ours"]["s"], 3)
                    what = (f"deterministic batch {batch} <= original HRNet-w48 alone at batch {batch}" if mode == "det"
                            else f"{mode} (1 image) <= original HRNet-w48 on {n} images")
                    targets[key] = _common.target(times["ours"]["s"], times["original_hrnet"]["s"], what)
                print(f"# {key}: {json.dumps({k: v for k, v in result.items() if f'{mode}_' in k})}",
                      file=sys.stderr, flush=True)
    if targets:
        result["targets"] = targets
    result["load_average_end"] = _common.load_average()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
