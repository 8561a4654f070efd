"""hmr_jax."""
