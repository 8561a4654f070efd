"""Conversion of the original PyTorch checkpoints into Flax variables and Orbax checkpoints.

This is the only package that knows PyTorch key names. ``common`` holds what every model
shares (reading torch containers, key bookkeeping, layout transposes, checkpoint I/O, the
verification report); each model family registers a converter in ``registry``.
"""
