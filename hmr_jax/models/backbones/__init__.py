"""Image backbones of the released models, NHWC Flax: HRNet-w48, ResNet-50, ViTPose ViT-H.

``build_backbone(config)`` builds one from the config a converter returns
(``hmr_jax.conversion.backbones.convert_backbone``): ``config["backbone"]`` is ``"hrnet"``,
``"resnet50"`` or ``"vit"``, the other keys are the module's attributes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from hmr_jax.models.backbones.hrnet import HRNet, hrnet_w32, hrnet_w48
from hmr_jax.models.backbones.resnet import ResNet, resnet50
from hmr_jax.models.backbones.vit import ViT, interpolate_pos_embed, vit_huge

BACKBONES = {"hrnet": HRNet, "resnet50": ResNet, "vit": ViT}

__all__ = [
    "BACKBONES",
    "HRNet",
    "ResNet",
    "ViT",
    "build_backbone",
    "hrnet_w32",
    "hrnet_w48",
    "interpolate_pos_embed",
    "resnet50",
    "vit_huge",
]


def build_backbone(config: Mapping[str, Any], dtype: Any = jnp.float32):
    """Build the Flax backbone a config describes.

    Args:
      config: ``{"backbone": "hrnet" | "resnet50" | "vit", <module attributes>...}``; keys that
        are not attributes of the module (bookkeeping such as ``initialised_layers``) are ignored.
      dtype: computation dtype (float32 default, bfloat16 for speed); parameters stay float32.
    Returns:
      The unbound ``flax.linen`` module.
    Raises:
      ValueError: no or an unknown ``backbone`` entry.
    """
    kind = config.get("backbone")
    if kind not in BACKBONES:
        raise ValueError(f"config['backbone'] must be one of {sorted(BACKBONES)}, got {kind!r}")
    cls = BACKBONES[kind]
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in fields}
    kwargs["dtype"] = dtype
    return cls(**kwargs)
