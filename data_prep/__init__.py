"""Converters from the original datasets to hmr_jax ArrayRecord datasets, and the synthetic default."""
