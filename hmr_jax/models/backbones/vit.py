"""The ViTPose ViT backbone (ViT-H of HMR2.0 / MEGA), NHWC.

As the original ``vit()``: 256 x 192 input (MEGA crops its 256 x 256 images to
``[..., 32:-32]``), 16 x 16 patches embedded by a convolution with stride 16 and padding 2
(giving a 16 x 12 grid), a learnt positional embedding of ``16 * 12 + 1`` entries whose first
("class token") entry is *added to every patch token* (no class token is prepended), 32
pre-norm blocks (width 1280, 16 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6, exact GELU,
drop-path rising linearly from 0 to 0.55), a last LayerNorm, and the tokens reshaped back to
the patch grid.

The positional embedding is not interpolated by the original, so it only accepts inputs whose
patch grid is ``pos_grid``; ``interpolate_pos_embed=True`` resizes it (bicubic, as PyTorch's
``F.interpolate(mode="bicubic", align_corners=False)``) to the grid of the input instead.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

LN_EPS = 1e-6


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """PyTorch's bicubic convolution weights for the 4 taps at offsets -1, 0, 1, 2; t in [0, 1)."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D bicubic resizing, align_corners=False, border taps clamped."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in), np.float64)
    for o in range(n_out):
        src = (o + 0.5) * scale - 0.5
        i0 = int(np.floor(src))
        w = _cubic_weights(np.asarray(src - i0))
        for tap in range(4):
            m[o, min(max(i0 - 1 + tap, 0), n_in - 1)] += w[tap]
    return m


def interpolate_pos_embed(
    pos_embed: jnp.ndarray, old_grid: Sequence[int], new_grid: Sequence[int]
) -> jnp.ndarray:
    """Resize a ViTPose positional embedding to another patch grid (PyTorch bicubic).

    Args:
      pos_embed: (1, 1 + gh * gw, C): the "class" entry then the grid, row-major.
      old_grid: (gh, gw) of ``pos_embed``.
      new_grid: (GH, GW) wanted.
    Returns:
      (1, 1 + GH * GW, C): the class entry unchanged, the grid resized like
      ``F.interpolate(mode="bicubic", align_corners=False)`` (what ``get_abs_pos`` of the original does).
    """
    gh, gw = old_grid
    nh, nw = new_grid
    if pos_embed.shape[1] != 1 + gh * gw:
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} entries, expected 1 + {gh}*{gw}")
    if (gh, gw) == (nh, nw):
        return pos_embed
    grid = pos_embed[0, 1:].reshape(gh, gw, -1).astype(jnp.float32)
    mh = jnp.asarray(_bicubic_matrix(gh, nh), jnp.float32)
    mw = jnp.asarray(_bicubic_matrix(gw, nw), jnp.float32)
    grid = jnp.einsum("Hh,hwc->Hwc", mh, grid, precision="highest")
    grid = jnp.einsum("Ww,hwc->hWc", mw, grid, precision="highest")
    out = jnp.concatenate([pos_embed[0, :1].astype(jnp.float32), grid.reshape(nh * nw, -1)], axis=0)
    return out[None].astype(pos_embed.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with a packed ``qkv`` projection (q, k, v, each split into heads).

    Attributes:
      num_heads: heads; head width is ``dim / num_heads``.
      qkv_bias: whether ``qkv`` has a bias.
      dtype: computation dtype (softmax in float32).
    """

    num_heads: int
    qkv_bias: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(B, N, C) -> (B, N, C)."""
        b, n, c = x.shape
        h = self.num_heads
        hd = c // h
        qkv = nn.Dense(3 * c, use_bias=self.qkv_bias, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(b, n, 3, h, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, N, H, D)
        q = q * jnp.asarray(hd**-0.5, q.dtype)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, n, c)
        return nn.Dense(c, dtype=self.dtype, name="proj")(out)


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(attn(norm1(x))), x + DropPath(mlp(norm2(x))).

    Attributes:
      num_heads: attention heads.
      mlp_ratio: MLP hidden width / model width.
      qkv_bias: bias on the qkv projection.
      drop_path: stochastic-depth probability of this block (per sample, training only).
      dtype: computation dtype.
    """

    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """(B, N, C) -> (B, N, C); ``train`` enables drop-path (needs a ``dropout`` PRNG key)."""
        c = x.shape[-1]
        # Per-sample stochastic depth: one Bernoulli per batch element, scaled by 1/keep.
        drop = nn.Dropout(self.drop_path, broadcast_dims=(1, 2), deterministic=not train or self.drop_path == 0.0)
        y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm1")(x)
        x = x + drop(Attention(self.num_heads, self.qkv_bias, self.dtype, name="attn")(y))
        y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm2")(x)
        y = nn.Dense(int(c * self.mlp_ratio), dtype=self.dtype, name="fc1")(y)
        y = nn.gelu(y, approximate=False)
        y = nn.Dense(c, dtype=self.dtype, name="fc2")(y)
        return x + drop(y)


class ViT(nn.Module):
    """ViTPose backbone.

    Parameters: ``patch_embed`` (conv kernel 16 x 16 x 3 x C + bias), ``pos_embed``
    (1, 1 + gh * gw, C), ``blocks_{i}`` (``norm1``, ``attn/qkv``, ``attn/proj``, ``norm2``,
    ``fc1``, ``fc2``), ``last_norm``.

    Attributes:
      embed_dim: token width C (1280 for ViT-H).
      depth: number of blocks (32).
      num_heads: attention heads (16).
      mlp_ratio: MLP hidden width / C (4).
      qkv_bias: bias on the qkv projections (True).
      drop_path_rate: stochastic depth of the last block; block i uses ``rate * i / (depth - 1)``.
      patch_size: patch size in pixels (16).
      patch_padding: zero padding of the patch convolution in pixels (2 = ``4 + 2 * (1 // 2 - 1)``).
      pos_grid: (gh, gw) patch grid of ``pos_embed`` ((16, 12) for 256 x 192 inputs).
      interpolate_pos_embed: resize ``pos_embed`` to the input's grid instead of refusing other grids.
      dtype: computation dtype (float32 default, bfloat16); parameters stay float32.
    """

    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.55
    patch_size: int = 16
    patch_padding: int = 2
    pos_grid: tuple[int, int] = (16, 12)
    interpolate_pos_embed: bool = False
    dtype: Dtype = jnp.float32

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, cols) the patch convolution gives for an H x W image."""
        p, pad = self.patch_size, self.patch_padding
        return (height + 2 * pad - p) // p + 1, (width + 2 * pad - p) // p + 1

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Run the backbone.

        Args:
          images: (B, H, W, 3) ImageNet-normalised RGB, 256 x 192 for the released weights
            (the centre 192 columns of a 256 x 256 crop).
          train: enables drop-path (pass ``rngs={"dropout": key}``).
        Returns:
          (B, gh, gw, C) patch features (the original's (B, C, gh, gw), channels last); the
          ``intermediates`` collection gets ``patch_tokens``, ``tokens_plus_pos``, ``block{ii}_out``
          and ``last_norm_out`` (each (B, gh * gw, C)) when mutable.
        Raises:
          ValueError: the input's patch grid differs from ``pos_grid`` and interpolation is off.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"ViT expects NHWC images (B, H, W, 3), got shape {images.shape}")
        b = images.shape[0]
        d = self.dtype
        p, pad = self.patch_size, self.patch_padding
        x = nn.Conv(
            self.embed_dim,
            (p, p),
            strides=(p, p),
            padding=((pad, pad), (pad, pad)),
            dtype=d,
            param_dtype=jnp.float32,
            name="patch_embed",
        )(images.astype(d))
        gh, gw = x.shape[1], x.shape[2]
        x = x.reshape(b, gh * gw, self.embed_dim)
        self.sow("intermediates", "patch_tokens", x)
        n_pos = 1 + self.pos_grid[0] * self.pos_grid[1]
        pos = self.param(
            "pos_embed", nn.initializers.truncated_normal(0.02), (1, n_pos, self.embed_dim), jnp.float32
        )
        if (gh, gw) != tuple(self.pos_grid):
            if not self.interpolate_pos_embed:
                h, w = images.shape[1:3]
                raise ValueError(
                    f"a {h}x{w} image gives a {gh}x{gw} patch grid but pos_embed is for {tuple(self.pos_grid)} "
                    f"(the released ViT takes 256x192 crops); crop the input, or set "
                    f"interpolate_pos_embed=True to resize the positional embedding"
                )
            pos = interpolate_pos_embed(pos, self.pos_grid, (gh, gw))
        pos = pos.astype(d)
        x = x + pos[:, 1:] + pos[:, :1]
        self.sow("intermediates", "tokens_plus_pos", x)
        rates = np.linspace(0.0, self.drop_path_rate, self.depth, dtype=np.float32) if self.depth > 1 else [0.0]
        for i in range(self.depth):
            x = Block(
                self.num_heads, self.mlp_ratio, self.qkv_bias, float(rates[i]), d, name=f"blocks_{i}"
            )(x, train)
            self.sow("intermediates", f"block{i:02d}_out", x)
        x = nn.LayerNorm(epsilon=LN_EPS, dtype=d, name="last_norm")(x)
        self.sow("intermediates", "last_norm_out", x)
        return x.reshape(b, gh, gw, self.embed_dim)


def vit_huge(**kwargs) -> ViT:
    """ViT-H as the original ``vit()``: 1280 wide, 32 blocks, 16 heads, 256 x 192 inputs."""
    return ViT(embed_dim=1280, depth=32, num_heads=16, **kwargs)
