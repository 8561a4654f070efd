"""Building blocks shared by the convolutional backbones (HRNet, ResNet-50), NHWC.

* :class:`BatchNorm` has PyTorch's semantics: ``eps = 1e-5``; in training mode it normalises with
  the biased batch variance and updates the running statistics with PyTorch's momentum 0.1
  (Flax's convention: ``running = 0.9 * running + 0.1 * batch``) and the *unbiased* batch
  variance, exactly like ``torch.nn.BatchNorm2d``. Its variables use Flax's names
  (``params``: ``scale``, ``bias``; ``batch_stats``: ``mean``, ``var``).
* :func:`conv` is a square convolution (HWIO kernel, ``nn.Conv``'s parameters) with PyTorch's
  symmetric padding and a hand-written gradient (:func:`conv2d`), see there for why.
* :class:`Bottleneck` is the residual block of torchvision's ResNet v1.5 (stride on the 3x3
  convolution), which HRNet's first stage uses too.

Every module computes in ``dtype`` (float32 by default, bfloat16 for speed) and keeps float32
parameters; batch statistics are always reduced in float32.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

Dtype = Any

#: Name of every :class:`Conv` output for ``jax.checkpoint`` policies: the scanned HRNet blocks
#: save only these for the backward pass (:data:`SAVE_CONV_OUTPUTS`) and recompute the cheap
#: batch norms, ReLUs and sums between them.
CONV_OUTPUT = "conv_output"
SAVE_CONV_OUTPUTS = jax.checkpoint_policies.save_only_these_names(CONV_OUTPUT)

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


_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv_forward(x, kernel, stride: int, padding: int):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding), (padding, padding)),
                                        dimension_numbers=_DIMS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding: int) -> jnp.ndarray:
    """2-D convolution, NHWC input, HWIO square kernel, symmetric zero padding; exact gradients.

    The value is ``lax.conv_general_dilated``'s. The gradient is written by hand so that XLA's CPU
    backend runs it fast: JAX's own transpose rules produce convolutions in non-canonical
    layouts (kernel ``01oi``, or batch and features swapped) which XLA:CPU only canonicalises
    for its Eigen library call in the entry computation; inside a loop body (the scanned HRNet
    blocks) they fall back to a naive loop nest, 20-50x slower. Here the input gradient is a
    canonical NHWC / HWIO convolution of the (stride-dilated) output gradient with the flipped
    kernel; the kernel gradient is a canonical convolution of the transposed input with the
    transposed output gradient, or one matmul per kernel tap at small batches
    (:func:`_kernel_gradient`).
    Same values as autodiff of the forward, up to float rounding.

    Args:
      x: (B, H, W, Cin); kernel: (K, K, Cin, Cout); stride, padding: pixels.
    Returns:
      (B, Ho, Wo, Cout), Ho = (H + 2 padding - K) // stride + 1.
    """
    return _conv_forward(x, kernel, stride, padding)


def _conv2d_fwd(x, kernel, stride, padding):
    return _conv_forward(x, kernel, stride, padding), (x, kernel)


def _conv2d_bwd(stride, padding, residuals, dy):
    x, kernel = residuals
    k = kernel.shape[0]
    (h, w), (ho, wo) = x.shape[1:3], dy.shape[1:3]
    # rows / columns of the padded input that no output window reaches (H + 2p - K not divisible by stride)
    extra_h, extra_w = h + 2 * padding - k - (ho - 1) * stride, w + 2 * padding - k - (wo - 1) * stride
    flipped = jnp.transpose(jnp.flip(kernel, (0, 1)), (0, 1, 3, 2))  # (K, K, Cout, Cin): HWIO for dy -> dx
    edge = k - 1 - padding
    dx = jax.lax.conv_general_dilated(dy, flipped, (1, 1), ((edge, edge + extra_h), (edge, edge + extra_w)),
                                      lhs_dilation=(stride, stride), dimension_numbers=_DIMS)
    dkernel = _kernel_gradient(x, dy, k, stride, padding, extra_h, extra_w)
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


#: Largest batch for which the kernel gradient is taken as per-tap matmuls
#: (:func:`_kernel_gradient_taps`); larger batches use the convolution form. Measured with
#: ``benchmarks/bench_conv_grad.py`` on 2 cores (AMD EPYC Zen 5, f32; HRNet-w48 forward +
#: backward in training mode, both forms in one process), taps vs convolution: batch 1 0.57 vs
#: 0.71 s, batch 2 1.02 vs 1.06 s, batch 4 1.95 vs 2.09 s, batch 8 3.86 vs 3.63 s.
TAPS_MAX_BATCH = 4


def _kernel_gradient(x, dy, k, stride, padding, extra_h, extra_w):
    """dW[i, j, ci, co] = sum over (n, h, w) of x_padded[n, s h + i, s w + j, ci] dy[n, h, w, co].

    Both forms are ones XLA:CPU runs multi-threaded inside a loop body too:

    * batch <= :data:`TAPS_MAX_BATCH` (4): :func:`_kernel_gradient_taps`;
    * otherwise one canonical NHWC / HWIO convolution (XLA hands it to Eigen): batch = input
      channels, features = images, the window = the output gradient (dilated by the stride);
      the high side's padding drops the rows / columns no output window reaches (negative
      when they are not padding).
    """
    if x.shape[0] <= TAPS_MAX_BATCH:
        return _kernel_gradient_taps(x, dy, k, stride, padding)
    g = jax.lax.conv_general_dilated(
        jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)), (1, 1),
        ((padding, padding - extra_h), (padding, padding - extra_w)), rhs_dilation=(stride, stride),
        dimension_numbers=_DIMS, preferred_element_type=jnp.float32)  # (Cin, K, K, Cout)
    return jnp.transpose(g, (1, 2, 0, 3))


def _kernel_gradient_taps(x, dy, k, stride, padding):
    """The kernel gradient as one matmul per kernel tap, contracting batch x space:
    tap (i, j) = (the input window the tap reads, (B Ho Wo, Cin))^T @ (dy, (B Ho Wo, Cout))."""
    b, _, _, cin = x.shape
    ho, wo, cout = dy.shape[1:]
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy_rows = dy.reshape(b * ho * wo, cout)
    taps = []
    for i in range(k):
        for j in range(k):
            window = jax.lax.slice(padded, (0, i, j, 0), (b, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, cin),
                                   (1, stride, stride, 1))
            taps.append(jax.lax.dot_general(window.reshape(b * ho * wo, cin), dy_rows, (((0,), (0,)), ((), ())),
                                            preferred_element_type=jnp.float32))
    return jnp.stack(taps).reshape(k, k, cin, cout)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


class Conv(nn.Module):
    """Square convolution with PyTorch's symmetric padding (the parameters of an ``nn.Conv``:
    ``kernel`` (K, K, Cin, features), LeCun-normal init, optional ``bias``), via :func:`conv2d`.

    Attributes:
      features: output channels; kernel: size (pixels); stride; padding: on every side (pixels).
      use_bias: whether the convolution has a bias; dtype: computation dtype (parameters float32).
    """

    features: int
    kernel: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(B, H, W, Cin) -> (B, Ho, Wo, features)."""
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.kernel, self.kernel, x.shape[-1], self.features), jnp.float32)
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.stride, self.padding)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32).astype(self.dtype)
        return checkpoint_name(y, CONV_OUTPUT)


def conv(
    features: int,
    kernel: int,
    stride: int = 1,
    padding: int | None = None,
    use_bias: bool = False,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> Conv:
    """A square :class:`Conv` (HWIO kernel) with PyTorch's symmetric zero padding.

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
    return Conv(features, kernel, stride, p, use_bias, dtype, name=name)


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
