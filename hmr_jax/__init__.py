"""hmr_jax: JAX/Flax human mesh recovery (Mesh-VQ-VAE, VQ-HPS, MEGA).

Importing the package sets XLA's CPU defaults before JAX starts (see :mod:`hmr_jax.runtime`).
"""
from hmr_jax import runtime as _runtime

_runtime.apply_xla_defaults()
