"""What every benchmark script shares: the machine, interleaved timing, random weights, targets.

Not a benchmark itself (the leading underscore keeps ``make bench`` from running it). Import it
from a script in this folder (``import _common``) after ``import hmr_jax``, which sets the XLA
CPU flags before JAX starts.

* :func:`machine` -- CPU model and vector / matrix extensions (``lscpu`` or ``/proc/cpuinfo``),
  core count, load average, XLA flags, JAX platform and versions: the context every figure needs.
* :func:`interleave` -- time several candidates (ours, the original's...) round-robin in ONE
  process, so that whatever else runs on the machine slows all of them alike; medians of wall
  and CPU time.
* :func:`random_variables` -- random parameters of a fixed scheme for Flax trees;
  :func:`_original.randomize_torch` applies the same scheme to the original's PyTorch modules,
  so both sides compute on values of the same size (no denormals on either side).
* :func:`target` -- one target entry: the two times, their ratio and whether it is met.
* :func:`define_rounds`, :func:`define_original` -- the absl flags the scripts share (rounds and
  budget of :func:`interleave`; the original's checkout).
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from typing import Callable

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

#: CPU features worth knowing for matmul / convolution speed (names as ``lscpu`` prints them).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
                "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}


def _lscpu() -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def _cpuinfo() -> dict:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def cpu_description() -> dict:
    """``cpu_model`` (with family / model numbers: a bare "AMD EPYC" says little), ``cpu_features``."""
    ls, info = _lscpu(), _cpuinfo()
    model = ls.get("Model name") or info.get("model name") or platform.processor() or "unknown"
    family = ls.get("CPU family") or info.get("cpu family")
    number = ls.get("Model") or info.get("model")
    if family and number:
        model = f"{model} (family {family}, model {number})"
    flags = set((ls.get("Flags") or info.get("flags") or "").split())
    return {"cpu_model": model, "cpu_features": [f for f in CPU_FEATURES if f in flags]}


def machine() -> dict:
    """The context of a run: CPU, cores, load, XLA flags, JAX platform / device and versions."""
    import jaxlib

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    dev = jax.devices()[0]
    return {
        **cpu_description(),
        "cpu_count": os.cpu_count(),
        "load_average_start": load,
        "platform": dev.platform,
        "device": str(dev.device_kind),
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def load_average() -> list | None:
    """1, 5 and 15-minute load averages (other work on the machine skews wall times)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def default_dtypes() -> str:
    """``f32`` on a CPU (XLA's CPU bfloat16 is not faster), ``f32,bf16`` on an accelerator."""
    return "f32" if jax.default_backend() == "cpu" else "f32,bf16"


def parse_dtypes(text: str) -> list[str]:
    """Comma list of ``f32`` / ``bf16``; ``ValueError`` otherwise (one ``error:`` line, status 2, from a
    ``main`` wrapped in :func:`hmr_jax.errors.command_line`)."""
    names = [d for d in text.split(",") if d]
    for d in names:
        if d not in DTYPES:
            raise ValueError(f"unknown dtype {d!r}; use a comma list of {', '.join(DTYPES)}")
    return names


def parse_ints(text: str, what: str) -> list[int]:
    """Comma list of positive integers (batch sizes...); ``ValueError`` naming ``what`` otherwise."""
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be a comma list of positive integers, got {text!r}")
    return values


def define_rounds(fv: flags.FlagValues, min_rounds: int, max_rounds: int, budget_s: float,
                  what: str = "interleaved rounds") -> None:
    """Declare ``--min-rounds``, ``--max-rounds`` and ``--budget-s`` (seconds) on ``fv`` with these
    defaults: how many rounds :func:`interleave` (or a script's own alternation, ``what``) runs."""
    module = sys.argv[0]   # --help lists them with the script's own flags (absl's name for __main__'s)
    flags.DEFINE_integer("min-rounds", min_rounds, f"{what} at least", flag_values=fv, module_name=module)
    flags.DEFINE_integer("max-rounds", max_rounds, f"{what} at most", flag_values=fv, module_name=module)
    flags.DEFINE_float("budget-s", budget_s, "stop adding rounds after this many seconds (once --min-rounds are "
                       "done)", flag_values=fv, module_name=module)


def define_original(fv: flags.FlagValues, checkout: str,
                    deps: str = "folder with timm / yacs for the original (pip --target)") -> None:
    """Declare ``--original`` (``checkout``: what the root of the original's checkout is for) and
    ``--original-deps`` (``deps``) on ``fv``; both default to None (not timed)."""
    module = sys.argv[0]
    flags.DEFINE_string("original", None, checkout, flag_values=fv, module_name=module)
    flags.DEFINE_string("original-deps", None, deps, flag_values=fv, module_name=module)


def interleave(candidates: dict[str, Callable[[], object]], min_rounds: int = 3, max_rounds: int = 10,
               budget_s: float = 60.0, pause_s: float = 0.05) -> dict[str, dict]:
    """Time each candidate round-robin (a, b, a, b, ...) in this process; medians.

    Each candidate is a no-argument callable that returns only when its work is done (block on
    JAX results). One call each first (compilation / warm-up, reported as ``first_s``); then
    rounds until ``max_rounds``, or ``budget_s`` seconds once ``min_rounds`` are done.
    ``pause_s`` between calls lets the previous library's spinning worker threads go idle.

    Returns:
      ``{name: {"s": median wall seconds, "cpu_s": median CPU seconds of this process (all
      threads), "first_s": first call, "rounds": n}}``.
    """
    out = {}
    for name, fn in candidates.items():
        t = time.perf_counter()
        fn()
        out[name] = {"first_s": time.perf_counter() - t}
        time.sleep(pause_s)
    walls = {n: [] for n in candidates}
    cpus = {n: [] for n in candidates}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        for name, fn in candidates.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            walls[name].append(time.perf_counter() - t)
            cpus[name].append(time.process_time() - c)
            time.sleep(pause_s)
        rounds += 1
    for name in candidates:
        out[name].update(s=float(np.median(walls[name])), cpu_s=float(np.median(cpus[name])), rounds=rounds)
    return out


def random_variables(abstract, seed: int = 0, conv_gain: float = 2.0):
    """Random float32 NumPy variables for a Flax tree of shapes (speed does not depend on values).

    Kernels ~ N(0, gain / fan_in) with fan_in = product of all but the last axis (gain
    ``conv_gain`` for 4-D convolution kernels, He; 1 otherwise); BatchNorm / LayerNorm scales
    and running variances 1; biases and running means 0. The same scheme as
    :func:`_original.randomize_torch` for the original's modules.
    """
    rng = np.random.default_rng(seed)

    def make(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        shape = leaf.shape
        if name in ("scale", "var"):
            return np.ones(shape, np.float32)
        if name in ("bias", "mean"):
            return np.zeros(shape, np.float32)
        core = shape[-4:] if len(shape) >= 4 and name == "kernel" else shape
        fan_in = int(np.prod(core[:-1])) if len(core) > 1 else 1
        gain = conv_gain if name == "kernel" and len(core) == 4 else 1.0
        return (rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(gain / max(fan_in, 1))))

    return jax.tree_util.tree_map_with_path(make, abstract)


def target(ours_s: float, reference_s: float, what: str) -> dict:
    """A target "ours takes no longer than ``reference_s``": both times, ratio, met."""
    return {"what": what, "ours_s": round(ours_s, 4), "reference_s": round(reference_s, 4),
            "speedup": round(reference_s / ours_s, 3), "met": bool(ours_s <= reference_s)}


def rounded(entry: dict, digits: int = 4) -> dict:
    """Round the float values of a timing entry for the JSON line."""
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in entry.items()}


def flops_of_jaxpr(jaxpr, multiplier: float = 1.0) -> float:
    """Multiply-add FLOPs (2 per multiply-add) of the matmuls and convolutions of a jaxpr.

    Scan bodies count ``length`` times (XLA's own cost analysis counts a loop body once, which
    hides most of the scanned HRNet); element-wise work is not counted.
    """
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in lhs_contract])
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
            per_output = rhs[spec[1]] * np.prod([rhs[d] for d in spec[2:]])
            total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * per_output / eqn.params["feature_group_count"]
        inner = eqn.params.get("length", 1) if name == "scan" else 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    total += flops_of_jaxpr(sub, inner)
    return multiplier * total


def gflop(fn, *args) -> float:
    """GFLOP of one call of ``fn(*args)`` (matmuls and convolutions, see :func:`flops_of_jaxpr`)."""
    return flops_of_jaxpr(jax.make_jaxpr(fn)(*args).jaxpr) / 1e9


def matmul_gflop_per_s(n: int = 2048, rounds: int = 5) -> float:
    """This machine's float32 matmul speed through XLA (n x n x n), GFLOP/s (median)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    f = jax.jit(jnp.dot)
    f(a, a).block_until_ready()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times)) / 1e9


def cpu_model_short() -> str:
    """The CPU model in a few words (for progress lines)."""
    return re.sub(r"\s+", " ", cpu_description()["cpu_model"])
