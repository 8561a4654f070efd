"""The two kernel-gradient forms of the backbones' convolution, in HRNet-w48 training; ONE JSON line.

    python benchmarks/bench_conv_grad.py [--batches 1,2,4,8] [--min-rounds 5] [--max-rounds 9]

Flags are absl's (``--name value`` or ``--name=value``; ``--flag`` / ``--noflag``; ``--help``
lists them).

:func:`hmr_jax.models.backbones.layers.conv2d` takes its kernel gradient as one matmul per
kernel tap up to ``layers.TAPS_MAX_BATCH`` images and as one canonical convolution above. This
script checks that threshold on the machine at hand: for each batch it compiles HRNet-w48's
forward + backward (training mode, released size, 224 px, random weights) once with each form
forced, checks the gradients agree, and times the two alternately, call by call, in this
process. Output: per batch {taps_s, conv_s (median wall seconds), fastest, picked (the form the
threshold picks)}, the machine.
"""
from __future__ import annotations

import json
import os
import sys

from absl import flags

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import hmr_jax  # noqa: E402,F401  (XLA CPU flags before JAX starts)
import _common  # noqa: E402
import bench_train  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hmr_jax.cli import parse_command  # noqa: E402
from hmr_jax.errors import command_line  # noqa: E402
from hmr_jax.models.backbones import layers  # noqa: E402

PROGRAM = "python benchmarks/bench_conv_grad.py"


def _define(fv: flags.FlagValues) -> None:
    """This benchmark's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("batches", "1,2,4,8", "comma list of batch sizes", flag_values=fv)
    _common.define_rounds(fv, 5, 9, 120.0)


def _step(batch: int, form: str):
    """HRNet-w48's compiled training gradient (bench_train's, the one its HRNet figures time) with the
    kernel gradient forced to ``form``: a no-argument call returning (gradients, batch statistics)."""
    images = np.random.default_rng(0).standard_normal((batch, 224, 224, 3)).astype(np.float32)
    saved = layers.TAPS_MAX_BATCH
    layers.TAPS_MAX_BATCH = batch if form == "taps" else 0  # read when the gradient is traced
    try:
        return bench_train.ours_hrnet_fwd_bwd(images)[0]
    finally:
        layers.TAPS_MAX_BATCH = saved


@command_line
def main(argv=None) -> int:
    """Time the two kernel-gradient forms and print one JSON line; 0, or 2 after one ``error:`` line."""
    args = parse_command(argv, _define, PROGRAM, __doc__)
    if args is None:   # --help
        return 0
    batches = _common.parse_ints(args.batches, "--batches")
    out = {"machine": _common.machine(), "taps_max_batch": layers.TAPS_MAX_BATCH, "batches": {}}
    for batch in batches:
        steps = {form: _step(batch, form) for form in ("taps", "conv")}
        grads = {form: jax.tree.leaves(call()[0]) for form, call in steps.items()}
        for p, q in zip(grads["taps"], grads["conv"]):
            np.testing.assert_allclose(np.asarray(q), np.asarray(p), rtol=1e-3, atol=1e-4 * float(jnp.abs(p).max()))
        times = _common.interleave(steps, args.min_rounds, args.max_rounds, args.budget_s)
        entry = {f"{form}_s": round(t["s"], 4) for form, t in times.items()}
        entry["fastest"] = min(("taps", "conv"), key=lambda f: times[f]["s"])
        entry["picked"] = "taps" if batch <= layers.TAPS_MAX_BATCH else "conv"
        out["batches"][str(batch)] = entry
        print(f"batch {batch}: {entry}", file=sys.stderr, flush=True)
    out["loadavg_end"] = _common.load_average()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
