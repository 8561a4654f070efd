"""XLA settings that make the CPU fast by default, applied before JAX starts its backend.

``import hmr_jax`` (any of its modules) calls :func:`apply_xla_defaults` once. On jaxlib 0.10.x
it appends ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` to ``XLA_FLAGS``.
The reason: jaxlib 0.10 hands float32 convolutions to YNNPACK, whose convolution schedule splits
the work over output width x output channels only, so HRNet's feature maps run on one thread;
the modifier sends convolutions back to XLA's multi-threaded Eigen convolution (dots stay on
YNNPACK, which is faster for the transformer's matmuls). Measured on 2 cores (AMD EPYC Zen 5,
f32, the released MEGA-HRNet): deterministic batch 16 2.53 s -> 1.90 s, batch 1 0.24 s ->
0.20 s, stochastic unchanged; also dropping YNNPACK's dots (``-individual_dot``) made the
stochastic mode 15 % slower. jax >= 0.11 carries the upstream fix, so nothing is added there
(an unknown flag would abort XLA).

Per program, :func:`small_matmul_compiler_options` gives the options for code made of many small
matrix products (the Mesh-VQ-VAE tokenizer, :func:`hmr_jax.models.decoding.meshes_from_tokens`):
no YNNPACK fusions at all, under the same rules.

Rules:

* a flag the user already set (the same ``--name``) is never overridden;
* ``HMR_JAX_XLA_DEFAULTS=0`` turns the defaults off;
* the flags only concern XLA's CPU compiler, so accelerator runs are unaffected;
* if JAX's backend is already running when hmr_jax is first imported, the flags cannot take
  effect: a warning says to import hmr_jax (or set ``XLA_FLAGS``) before using JAX.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: Environment variable that turns the defaults off when set to 0 / false / no / off.
OPT_OUT_ENV = "HMR_JAX_XLA_DEFAULTS"

#: (first jaxlib version, first version no longer needing it, flag) -- see the module docstring.
CPU_FLAGS = (
    ((0, 10), (0, 11), "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"),
)

#: Per-program compile options (``jax.jit(..., compiler_options=...)``) for programs made of many
#: small matrix products -- the Mesh-VQ-VAE tokenizer's mesh convolutions, (6890 B, C) x (C, C')
#: with C <= 128: no YNNPACK fusions at all, so those products go to XLA's Eigen path (whose GEMM
#: is oneDNN's JIT sgemm). Measured on 2 cores (AMD EPYC Zen 4, f32, alternating in one process):
#: encode + decode batch 1 12.7 -> 11.2 ms and 13.7 -> 11.7 ms, batch 16 7-10% faster. Not for
#: the transformers: their large products are faster on YNNPACK (README, "Speed (CPU)").
SMALL_MATMUL_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}

_applied: list[str] | None = None


def _jaxlib_version() -> tuple[int, ...]:
    try:
        from jaxlib import version as jaxlib_version

        return tuple(int(p) for p in jaxlib_version.__version__.split(".")[:2])
    except Exception:  # jaxlib missing or an unusual version string: add nothing
        return ()


def default_cpu_flags(version: tuple[int, ...] | None = None) -> list[str]:
    """The XLA CPU flags hmr_jax adds for a jaxlib ``version`` (major, minor); default: installed."""
    version = _jaxlib_version() if version is None else tuple(version)
    if not version:
        return []
    return [flag for first, stop, flag in CPU_FLAGS if first <= version < stop]


def merge_flags(user_flags: str, defaults: list[str]) -> tuple[str, list[str]]:
    """Append each default whose ``--name`` is not already in ``user_flags``.

    Returns:
      ``(new XLA_FLAGS string, the defaults that were added)``.
    """
    present = {tok.split("=", 1)[0] for tok in user_flags.split()}
    added = [f for f in defaults if f.split("=", 1)[0] not in present]
    return " ".join([user_flags.strip()] + added).strip(), added


def opted_out() -> bool:
    """True when ``HMR_JAX_XLA_DEFAULTS`` is 0 / false / no / off."""
    return os.environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off")


def apply_xla_defaults() -> list[str]:
    """Add hmr_jax's CPU flags to ``os.environ["XLA_FLAGS"]`` (once per process).

    Returns:
      the flags added (empty when opted out, already set by the user, or not needed).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = []
    if opted_out():
        return _applied
    defaults = default_cpu_flags()
    if not defaults:
        return _applied
    merged, added = merge_flags(os.environ.get("XLA_FLAGS", ""), defaults)
    if not added:
        return _applied
    try:
        from jax._src import xla_bridge

        started = xla_bridge.backends_are_initialized()
    except Exception:  # private API moved: assume not started (the flags are harmless then)
        started = False
    if started:
        log.warning("JAX's backend started before hmr_jax was imported, so %s cannot take effect "
                    "(CPU convolutions stay single-threaded): import hmr_jax first or set XLA_FLAGS",
                    " ".join(added))
        return _applied
    os.environ["XLA_FLAGS"] = merged
    _applied = added
    return _applied


def small_matmul_compiler_options() -> dict:
    """``compiler_options`` for ``jax.jit`` of a program of small matrix products (the tokenizer).

    :data:`SMALL_MATMUL_OPTIONS` under the same rules as the flags: only on the jaxlib versions
    of :data:`CPU_FLAGS`, nothing when ``HMR_JAX_XLA_DEFAULTS=0``, and nothing when the user's
    ``XLA_FLAGS`` set ``--xla_cpu_experimental_ynn_fusion_type`` themselves (a per-program option
    would override their value). The option only concerns XLA's CPU compiler.

    Returns:
      a new dict (empty when nothing applies).
    """
    if opted_out() or not default_cpu_flags():
        return {}
    ours = set(apply_xla_defaults())
    names = {"--" + name for name in SMALL_MATMUL_OPTIONS}
    user = [tok for tok in os.environ.get("XLA_FLAGS", "").split()
            if tok.split("=", 1)[0] in names and tok not in ours]
    return {} if user else dict(SMALL_MATMUL_OPTIONS)
