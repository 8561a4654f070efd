"""ResNet-50 truncated before pooling, as MEGA / VQ-HPS use torchvision's, NHWC.

The originals keep ``torch.nn.Sequential(*list(resnet50().children())[:-2])``: stem (7x7/2
convolution, BatchNorm, ReLU, 3x3/2 max-pool) and the four stages of bottlenecks (3, 4, 6, 3
blocks; 256, 512, 1024, 2048 channels; the first block of stages 2-4 has stride 2 on its 3x3
convolution, torchvision v1.5). A 224 x 224 crop gives (B, 7, 7, 2048). VQ-HPS's rotation
branch keeps ``children()[:-1]`` (adds the global average pool): ``global_pool=True``.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from hmr_jax.models.backbones.layers import BatchNorm, Bottleneck, conv

Dtype = Any


class ResNet(nn.Module):
    """ResNet with bottleneck blocks, without the classifier.

    Submodules: ``conv1``, ``bn1``, ``layer{s}_{k}`` (block k of stage s = 1..4).

    Attributes:
      layers: blocks per stage ((3, 4, 6, 3) for ResNet-50).
      global_pool: average over H, W at the end (VQ-HPS ``backbone_rot``).
      width: channels of the stem and of stage 1's bottleneck (64 for ResNet-50; stage s has
        ``width * 2**(s-1)`` planes and outputs 4 times that: 2048 channels at 64). Narrower
        ResNets train from scratch on a CPU (the demo).
      dtype: computation dtype (float32 default, bfloat16); parameters stay float32.
    """

    layers: Sequence[int] = (3, 4, 6, 3)
    global_pool: bool = False
    width: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Run the backbone.

        Args:
          images: (B, H, W, 3) ImageNet-normalised RGB images (224 x 224 in the originals).
          train: BatchNorm uses batch statistics (and updates ``batch_stats`` when mutable).
        Returns:
          (B, ceil(H/32), ceil(W/32), 32 * width) features (2048), or (B, 2048) with ``global_pool``, in ``dtype``.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"ResNet expects NHWC images (B, H, W, 3), got shape {images.shape}")
        d = self.dtype
        x = conv(self.width, 7, 2, padding=3, dtype=d, name="conv1")(images.astype(d))
        x = nn.relu(BatchNorm(dtype=d, name="bn1")(x, train))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for s, n in enumerate(self.layers):
            planes = self.width * 2**s
            for k in range(n):
                stride = 2 if (k == 0 and s > 0) else 1
                x = Bottleneck(planes, stride, downsample=k == 0, dtype=d, name=f"layer{s + 1}_{k}")(x, train)
        if self.global_pool:
            x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(d)
        return x


def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (3, 4, 6, 3 bottlenecks) without the classifier: (B, 7, 7, 2048) at 224 x 224."""
    return ResNet(layers=(3, 4, 6, 3), **kwargs)
