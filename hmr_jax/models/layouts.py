"""Inference layout of a model's variables: the same network, laid out to run fast.

Checkpoints, the converter and training keep one layout (HRNet's modules and blocks scanned,
parameters stacked). :func:`for_inference` turns a ``(model, variables)`` pair of that layout
into the pair inference runs, once at load (:func:`hmr_jax.inference.load_image_model`,
``load_generator``, the inference benchmark):

* every HRNet backbone -> ``scan_layers=False`` (:func:`hmr_jax.models.backbones.hrnet.unstack_variables`:
  each block's weights their own arrays, read in place instead of copied out of the stacks);
* MEGA -> its encoder's all-masked output precomputed (:func:`hmr_jax.models.mega.with_masked_encoding`).

Outputs are those of the checkpoint layout (the same operations; float32 sums may differ in the
last bits where XLA groups them differently). The pair is for inference only: training, saving
and converting use the checkpoint layout.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import flax.linen as nn

from hmr_jax.models import mega as M
from hmr_jax.models.backbones.hrnet import HRNet, unstack_variables


def for_inference(model: nn.Module, variables: Mapping) -> tuple[nn.Module, dict]:
    """The inference form of a model and its variables (see the module docstring).

    Args:
      model: an unbound MEGA (``CVQMAE`` / ``VQMAE``) or VQ-HPS module, in the checkpoint layout.
      variables: its variables ``{"params": ..., "batch_stats": ..., ...}`` (host or device arrays).
    Returns:
      ``(model, variables)``: the module with its HRNets cloned with ``scan_layers=False`` and the
      variables re-laid to match (plus MEGA's ``constants`` collection). Models without an HRNet
      keep their module; a pair already in the inference layout is returned as it is.
    """
    hrnets = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if isinstance(getattr(model, f.name, None), HRNet) and getattr(model, f.name).scan_layers}
    if hrnets:
        model = model.clone(**{name: net.clone(scan_layers=False) for name, net in hrnets.items()})
        variables = unstack_variables(variables)
    else:
        variables = dict(variables)
    if isinstance(model, M.VQMAE) and M.CONSTANTS not in variables:
        variables = M.with_masked_encoding(model, variables)
    return model, variables


__all__ = ["for_inference"]
