"""Building blocks shared by the convolutional backbones (HRNet, ResNet-50), NHWC.

* :class:`BatchNorm` has PyTorch's semantics: ``eps = 1e-5``; in training mode it normalises with
  the biased batch variance and updates the running statistics with PyTorch's momentum 0.1
  (Flax's convention: ``running = 0.9 * running + 0.1 * batch``) and the *unbiased* batch
  variance, exactly like ``torch.nn.BatchNorm2d``. Its variables use Flax's names
  (``params``: ``scale``, ``bias``; ``batch_stats``: ``mean``, ``var``).
* :func:`conv` is a bias-free ``nn.Conv`` with PyTorch's symmetric padding.
* :class:`Bottleneck` is the residual block of torchvision's ResNet v1.5 (stride on the 3x3
  convolution), which HRNet's first stage uses too.

Every module computes in ``dtype`` (float32 by default, bfloat16 for speed) and keeps float32
parameters; batch statistics are always reduced in float32.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# torch.nn.BatchNorm2d(momentum=0.1) == Flax momentum 0.9 (weight of the old running value).
BN_MOMENTUM = 0.9
BN_EPS = 1e-5


class BatchNorm(nn.Module):
    """BatchNorm over the last (channel) axis with ``torch.nn.BatchNorm2d`` semantics.

    Attributes:
      momentum: weight of the old running statistic (Flax convention; PyTorch's 0.1 -> 0.9).
      epsilon: added to the variance (1e-5 as PyTorch).
      dtype: dtype of the output (computation of the affine map); statistics stay float32.
    """

    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPS
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Normalise ``x`` (..., C).

        Args:
          x: (..., C) features.
          train: False uses the running statistics (``batch_stats`` collection, PyTorch
            ``eval()``); True uses the batch statistics and, when ``batch_stats`` is mutable,
            updates the running ones (PyTorch ``train()``).
        Returns:
          (..., C) normalised features in ``dtype``.
        """
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)
            n = 1
            for a in axes:
                n *= x.shape[a]
            if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1.0 - m) * jax.lax.stop_gradient(mean)
                ra_var.value = m * ra_var.value + (1.0 - m) * jax.lax.stop_gradient(unbiased)
        else:
            mean, var = ra_mean.value, ra_var.value
        mul = scale * jax.lax.rsqrt(var + self.epsilon)
        # The affine map runs in float32 (bfloat16 rounding of the statistics would shift every
        # channel); (x - mean) * mul + bias is more accurate than x * mul + (bias - mean * mul).
        y = (x.astype(jnp.float32) - mean) * mul + bias
        return y.astype(self.dtype)


def conv(
    features: int,
    kernel: int,
    stride: int = 1,
    padding: int | None = None,
    use_bias: bool = False,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """A square ``nn.Conv`` (HWIO kernel) with PyTorch's symmetric zero padding.

    Args:
      features: output channels.
      kernel: kernel size (pixels).
      stride: stride (pixels).
      padding: zero padding on every side (pixels); default ``kernel // 2``.
      use_bias: whether the convolution has a bias (PyTorch ``bias=``).
      dtype: computation dtype (parameters stay float32).
      name: submodule name.
    """
    p = kernel // 2 if padding is None else padding
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class ConvBN(nn.Module):
    """Convolution (no bias) -> BatchNorm -> optional ReLU, a ``nn.Sequential(Conv2d, BN[, ReLU])``.

    Attributes:
      features: output channels.
      kernel: kernel size; padding is ``kernel // 2``.
      stride: stride.
      relu: apply ReLU after the BatchNorm.
      dtype: computation dtype.
    """

    features: int
    kernel: int = 3
    stride: int = 1
    relu: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """(B, H, W, Cin) -> (B, H/stride, W/stride, features)."""
        x = conv(self.features, self.kernel, self.stride, dtype=self.dtype, name="conv")(x)
        x = BatchNorm(dtype=self.dtype, name="bn")(x, train)
        return nn.relu(x) if self.relu else x


class Bottleneck(nn.Module):
    """ResNet bottleneck (torchvision v1.5: the stride sits on the 3x3 convolution), expansion 4.

    ``conv1`` 1x1 -> ``bn1`` -> ReLU -> ``conv2`` 3x3/stride -> ``bn2`` -> ReLU -> ``conv3`` 1x1
    -> ``bn3``, plus the shortcut (``downsample_conv`` 1x1/stride + ``downsample_bn`` when
    ``downsample``), then ReLU.

    Attributes:
      planes: width of the block; the output has ``4 * planes`` channels.
      stride: stride of the 3x3 convolution and of the shortcut.
      downsample: whether the shortcut is a projection (first block of a stage).
      dtype: computation dtype.
    """

    planes: int
    stride: int = 1
    downsample: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """(B, H, W, Cin) -> (B, H/stride, W/stride, 4 * planes)."""
        d = self.dtype
        out = conv(self.planes, 1, dtype=d, name="conv1")(x)
        out = nn.relu(BatchNorm(dtype=d, name="bn1")(out, train))
        out = conv(self.planes, 3, self.stride, dtype=d, name="conv2")(out)
        out = nn.relu(BatchNorm(dtype=d, name="bn2")(out, train))
        out = conv(self.planes * 4, 1, dtype=d, name="conv3")(out)
        out = BatchNorm(dtype=d, name="bn3")(out, train)
        shortcut = x
        if self.downsample:
            shortcut = conv(self.planes * 4, 1, self.stride, dtype=d, name="downsample_conv")(x)
            shortcut = BatchNorm(dtype=d, name="downsample_bn")(shortcut, train)
        return nn.relu(out + shortcut.astype(out.dtype))
