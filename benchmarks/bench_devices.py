"""One CPU device (multi-threaded ops) vs one host device per core (batch split); ONE JSON line.

    python benchmarks/bench_devices.py [--workloads hrnet_b16,det_b16,stoch25_b2,vqhps_b16,hrnet_train_b8]
        [--devices N] [--min-rounds 3] [--max-rounds 6] [--budget-s 60] [--quick]

Flags are absl's (``--name value`` or ``--name=value``; ``--flag`` / ``--noflag``; ``--help``
lists them).

The question of issue 13 item 2: on a CPU, is a batch faster split over ``os.cpu_count()`` host
devices (``--xla_force_host_platform_device_count``, ``NamedSharding`` on the batch axis, weights
replicated) than on one device whose convolutions and matmuls use every core? XLA sizes each
host device's thread pool by cores / devices, so the two cannot share a process: the script
starts two persistent worker processes (one device; one device per core), compiles each
workload in both, then times them alternately, call by call (one, split, one, split, ...).

Workloads (released sizes, random weights, float32): ``hrnet_b16`` HRNet-w48 inference;
``det_b16`` MEGA-HRNet deterministic; ``stoch25_b2`` MEGA-HRNet stochastic, 25 hypotheses x 5
steps of each of 2 images (split by image); ``vqhps_b16`` VQ-HPS-HRNet single pass;
``hrnet_train_b8`` HRNet-w48 forward + backward (training mode). ``--quick``: hrnet_b16 and
det_b16, 3 rounds.

Output: the machine, then per workload {one_device_s, split_s (median wall seconds per call),
speedup_split (one / split, > 1 = the split is faster), one_device_cpu_s, split_cpu_s, rounds,
first_call_s}.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import flags

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import hmr_jax  # noqa: E402,F401  (XLA CPU flags before JAX starts, in this process and the workers)
import _common  # noqa: E402
from hmr_jax.cli import parse_command  # noqa: E402
from hmr_jax.errors import command_line  # noqa: E402

PROGRAM = "python benchmarks/bench_devices.py"
WORKLOADS = ("hrnet_b16", "det_b16", "stoch25_b2", "vqhps_b16", "hrnet_train_b8")
QUICK = ("hrnet_b16", "det_b16")
COUNT_FLAG = "--xla_force_host_platform_device_count"


def _workload(name: str):
    """``(function of (variables, inputs), variables, inputs)`` of a workload (float32, random weights)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from hmr_jax.training.config import load_config

    kind, batch = name.rsplit("_b", 1)
    batch = int(batch)
    rng = np.random.default_rng(1)
    images = rng.standard_normal((batch, 224, 224, 3), np.float32)
    if kind in ("hrnet", "hrnet_train"):
        from hmr_jax.models.backbones import hrnet_w48

        model = hrnet_w48()
        v = _common.random_variables(jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(images[:1])))
        if kind == "hrnet":
            return (lambda v, x: model.apply(v, x, train=False)), v, images

        def grads(v, x):
            def loss(p):
                y, upd = model.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True,
                                     mutable=["batch_stats"])
                return jnp.mean(y), upd
            return jax.grad(loss, has_aux=True)(v["params"])
        return grads, v, images
    if kind in ("det", "stoch25"):
        from hmr_jax.models import decoding
        from hmr_jax.models.mega import build_mega

        config = load_config(os.path.join(ROOT, "configs", "mega_hrnet.py")).to_dict()
        model = build_mega(config)
        v = _common.random_variables(jax.eval_shape(
            model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 54), jnp.int32),
            jax.ShapeDtypeStruct((1, 54), jnp.bool_), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)))
        if kind == "det":
            return (lambda v, x: decoding.mega_deterministic(model, v, images=x)["tokens"]), v, images
        key = jax.random.PRNGKey(0)
        return (lambda v, x: decoding.mega_generate(model, v, images=x, key=key, num_samples=25, steps=5,
                                                    gen_temp=1.0)["tokens"]), v, images
    if kind == "vqhps":
        from hmr_jax.models import decoding
        from hmr_jax.models.vqhps import build_vqhps

        config = load_config(os.path.join(ROOT, "configs", "vqhps_hrnet.py")).to_dict()
        model = build_vqhps(config)
        pose = rng.standard_normal((batch, 51)).astype(np.float32)
        v = _common.random_variables(jax.eval_shape(
            lambda: model.init(jax.random.PRNGKey(0), jnp.asarray(images[:1]), jnp.asarray(pose[:1]))))
        return (lambda v, x: decoding.vqhps_predict(model, v, x[0], x[1])["tokens"]), v, (images, pose)
    raise ValueError(f"unknown workload {name!r}; one of {', '.join(WORKLOADS)}")


def _serve() -> None:
    """Child loop: ``setup NAME`` compiles a workload (split over every device of this process when
    there are several), ``run NAME`` runs it once; each answer is one JSON line on stdout."""
    import time

    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    calls = {}
    for line in sys.stdin:
        verb, name = line.split()
        if verb == "setup":
            calls.clear()
            jax.clear_caches()
            fn, variables, inputs = _workload(name)
            v = jax.device_put(variables, NamedSharding(mesh, P()))
            x = jax.device_put(inputs, NamedSharding(mesh, P("data")))
            jitted = jax.jit(fn)
            calls[name] = lambda: jax.block_until_ready(jitted(v, x))
        t, c = time.perf_counter(), time.process_time()
        calls[name]()
        print(json.dumps({"s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
                          "devices": len(devices)}), flush=True)


class _Child:
    """A persistent child process with ``count`` host devices (see :func:`_serve`)."""

    def __init__(self, count: int):
        env = dict(os.environ)
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(COUNT_FLAG)]
        if count > 1:
            flags.append(f"{COUNT_FLAG}={count}")
        env["XLA_FLAGS"] = " ".join(flags)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, verb: str, name: str) -> dict:
        self.proc.stdin.write(f"{verb} {name}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"error: a measurement process died during {verb} {name} (see above)")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _define(fv: flags.FlagValues) -> None:
    """This benchmark's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("workloads", ",".join(WORKLOADS), f"comma list of {', '.join(WORKLOADS)}", flag_values=fv)
    flags.DEFINE_integer("devices", os.cpu_count(), "host devices of the split (default: cores)", flag_values=fv)
    _common.define_rounds(fv, 3, 6, 60.0, "alternating rounds (one device, split)")
    flags.DEFINE_boolean("quick", False, "hrnet_b16 and det_b16, 3 rounds", flag_values=fv)
    flags.DEFINE_boolean("child", False, "internal: run as one of the two worker processes the benchmark starts "
                         "(commands on stdin, one JSON line per answer on stdout)", flag_values=fv)


@command_line
def main(argv=None) -> int:
    """Time every workload on one device and split over one device per core; one JSON line. 0, or 2
    after one ``error:`` line on a bad flag."""
    import time

    import numpy as np

    args = parse_command(argv, _define, PROGRAM, __doc__)
    if args is None:   # --help
        return 0
    if args.child:
        _serve()
        return 0
    if args.quick:
        args.workloads, args.max_rounds = ",".join(QUICK), 3
    names = args.workloads.split(",")
    for name in names:
        if name not in WORKLOADS:
            raise ValueError(f"unknown workload {name!r} in --workloads; one of {', '.join(WORKLOADS)}")
    if args.devices < 2:
        raise ValueError("--devices must be >= 2 (the split needs two devices)")

    result = _common.machine()
    result["split_devices"] = args.devices
    children = {"one_device": _Child(1), "split": _Child(args.devices)}
    try:
        for name in names:
            times = {k: [] for k in children}
            first = {k: c.ask("setup", name)["s"] for k, c in children.items()}
            start, rounds = time.perf_counter(), 0
            while rounds < args.max_rounds and (rounds < args.min_rounds or time.perf_counter() - start < args.budget_s):
                for k, c in children.items():
                    times[k].append(c.ask("run", name))
                    time.sleep(0.05)
                rounds += 1
            med = {k: {m: float(np.median([t[m] for t in v])) for m in ("s", "cpu_s")} for k, v in times.items()}
            result[name] = {"one_device_s": round(med["one_device"]["s"], 4), "split_s": round(med["split"]["s"], 4),
                            "speedup_split": round(med["one_device"]["s"] / med["split"]["s"], 3),
                            "one_device_cpu_s": round(med["one_device"]["cpu_s"], 4),
                            "split_cpu_s": round(med["split"]["cpu_s"], 4), "rounds": rounds,
                            "first_call_s": {k: round(v, 2) for k, v in first.items()}}
            print(f"# {name}: {json.dumps(result[name])}", file=sys.stderr, flush=True)
    finally:
        for c in children.values():
            c.close()
    result["load_average_end"] = _common.load_average()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
