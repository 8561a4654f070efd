"""Speed of the body model, the metrics and the fit; prints ONE JSON line.

    python benchmarks/bench_body.py [--body-model body_models/smplh/neutral/model.npz] [--batch 64]
        [--repeats 10] [--fit-batch 8]

Flags are absl's (``--name value`` or ``--name=value``; ``--help`` lists them).

Uses the real SMPL+H file when given / present, else a stand-in with the same shapes (speed
does not depend on the values). Figures: SMPL+H forward (meshes/s at the batch size), metric
throughput (MPJPE + PA-MPJPE + PVE of the original protocol, meshes/s), and the fit's time per
mesh (closed-form start + LM iterations, batch of 8), all after compilation.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import hmr_jax  # noqa: E402,F401  (XLA CPU flags before JAX starts)
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hmr_jax.body import JointRegressors, fit_to_vertices, load_body_model  # noqa: E402
from hmr_jax.cli import parse_command  # noqa: E402
from hmr_jax.errors import command_line  # noqa: E402
from hmr_jax.metrics import mesh_errors  # noqa: E402
from hmr_jax.testing.smpl_files import write_standin_model  # noqa: E402

PROGRAM = "python benchmarks/bench_body.py"


def _time(fn, repeats):
    jax.block_until_ready(fn())  # compile / warm up
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def _define(fv: flags.FlagValues) -> None:
    """This benchmark's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("body-model", "body_models/smplh/neutral/model.npz", "SMPL+H model.npz; "
                        "a stand-in of the same shapes when it is missing", flag_values=fv)
    flags.DEFINE_integer("batch", 64, "meshes per forward / metrics call", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("repeats", 10, "timed calls after the warm-up", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("fit-batch", 8, "meshes of the fit (at most --batch)", lower_bound=1, flag_values=fv)


@command_line
def main(argv=None) -> int:
    """Time the body model, the metrics and the fit; print one JSON line. 0, or 2 after one
    ``error:`` line on a bad flag or body model file."""
    args = parse_command(argv, _define, PROGRAM, __doc__)
    if args is None:   # --help
        return 0

    source = "real"
    path = pathlib.Path(args.body_model)
    if not path.exists():
        source = "stand-in"
        path = pathlib.Path(tempfile.mkdtemp()) / "model.npz"
        write_standin_model(path, "smplh")
    model = load_body_model(path)
    rng = np.random.default_rng(0)
    b = args.batch
    params = dict(
        betas=jnp.asarray(rng.normal(0, 1, (b, 10)), jnp.float32),
        global_orient=jnp.asarray(rng.normal(0, 1, (b, 3)), jnp.float32),
        body_pose=jnp.asarray(rng.normal(0, 0.3, (b, 63)), jnp.float32),
    )
    t_fwd = _time(lambda: model(**params).vertices, args.repeats)

    verts = model(**params).vertices
    pred = verts + jnp.asarray(rng.normal(0, 0.01, verts.shape), jnp.float32)
    h36m = rng.random((17, model.num_vertices)).astype(np.float32)
    regs = JointRegressors(h36m=jnp.asarray(h36m / h36m.sum(1, keepdims=True)))
    t_metric = _time(lambda: mesh_errors(pred, verts, regs, protocol="original"), args.repeats)

    target = verts[: args.fit_batch]
    t_fit = _time(lambda: fit_to_vertices(model, target).vertex_error, 2)
    err = fit_to_vertices(model, target).vertex_error

    print(json.dumps({
        "bench": "body",
        "model": f"smplh ({source})",
        "device": jax.devices()[0].device_kind,
        "batch": b,
        "forward_meshes_per_s": round(b / t_fwd, 1),
        "forward_ms_per_batch": round(1e3 * t_fwd, 2),
        "metrics_meshes_per_s": round(b / t_metric, 1),
        "metrics_ms_per_batch": round(1e3 * t_metric, 2),
        "fit_ms_per_mesh": round(1e3 * t_fit / args.fit_batch, 1),
        "fit_batch": args.fit_batch,
        "fit_mean_vertex_error_mm": round(1e3 * float(jnp.mean(err)), 4),
        "cpu_count": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
