"""Transformer layers shared by MEGA and VQ-HPS.

* :class:`Block` is the pre-norm block of timm's ``vision_transformer.Block`` (MEGA's encoder and
  decoder, no qkv bias) and of T2M-GPT's causal block (VQ-HPS's token head, qkv bias, causal mask):
  ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``, MLP = Dense -> exact GELU -> Dense.
* :class:`MultiheadAttention` is ``torch.nn.MultiheadAttention`` (separate query / key / value
  inputs, biased projections), used by VQ-HPS's encoder / decoder layers.

Sequences are batch-first: ``(batch, tokens, features)``. Masks are boolean, True = may attend,
broadcastable to ``(batch, heads, queries, keys)``. Parameters are float32; ``dtype`` is the
computation dtype (float32, or bfloat16 for speed); softmax and layer norms stay in float32.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


def attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, mask: jnp.ndarray | None = None,
              dropout: nn.Module | None = None, deterministic: bool = True) -> jnp.ndarray:
    """Scaled dot-product attention over heads.

    Args:
      q: (B, Tq, H, D) queries; k, v: (B, Tk, H, D) keys and values.
      mask: optional boolean, broadcastable to (B, H, Tq, Tk); True = attend.
      dropout: optional ``nn.Dropout`` applied to the attention weights.
    Returns:
      (B, Tq, H, D).
    """
    scale = 1.0 / np.sqrt(q.shape[-1])
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * jnp.asarray(scale, q.dtype), k)
    logits = logits.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    if dropout is not None:
        weights = dropout(weights, deterministic=deterministic)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def take_queries(x: jnp.ndarray, queries) -> jnp.ndarray:
    """The rows of ``x`` (B, T, ...) at ``queries``: a ``slice`` of positions (the same for every
    row) or a (B, Q) int array of positions per row. Returns (B, Q, ...)."""
    if isinstance(queries, slice):
        return x[:, queries]
    idx = jnp.asarray(queries).reshape(queries.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one packed ``qkv`` projection (timm layout).

    The packed kernel maps ``dim -> 3 * dim`` in the order q, k, v, each split into heads of
    ``dim / num_heads`` consecutive features.
    """

    num_heads: int
    qkv_bias: bool = False
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray | None, mask: jnp.ndarray | None = None,
                 deterministic: bool = True, queries=None, qkv: jnp.ndarray | None = None,
                 project_only: bool = False) -> jnp.ndarray:
        """x: (B, T, C) -> (B, T, C); mask as in :func:`attention`.

        ``queries`` (see :func:`take_queries`): only those positions attend (to every key) and
        are returned, (B, Q, C) -- the same values as the full output at those positions.
        ``project_only``: return the packed projection ``qkv`` (B, T, 3C) of ``x`` and stop.
        ``qkv``: that projection, computed beforehand (``x`` is then unused, pass None): a caller
        whose rows are shared by several sequences, or constant, projects them once.
        """
        if qkv is None:
            c = x.shape[-1]
            if c % self.num_heads:
                raise ValueError(f"feature size {c} is not divisible by num_heads={self.num_heads}")
            qkv = nn.Dense(3 * c, use_bias=self.qkv_bias, dtype=self.dtype, name="qkv")(x)
            if project_only:
                return qkv
        b, t, c3 = qkv.shape
        c = c3 // 3
        qkv = qkv.reshape(b, t, 3, self.num_heads, c // self.num_heads)
        drop = nn.Dropout(self.dropout_rate) if self.dropout_rate > 0 else None
        q = qkv[:, :, 0] if queries is None else take_queries(qkv[:, :, 0], queries)
        y = attention(q, qkv[:, :, 1], qkv[:, :, 2], mask, drop, deterministic)
        y = nn.Dense(c, dtype=self.dtype, name="proj")(y.reshape(b, q.shape[1], c))
        if drop is not None:
            y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        return y


class Mlp(nn.Module):
    """Dense(hidden) -> exact (erf) GELU -> Dense(dim) [-> dropout]."""

    hidden_dim: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
        """x: (..., C) -> (..., C)."""
        h = nn.Dense(self.hidden_dim, dtype=self.dtype, name="fc1")(x)
        h = nn.gelu(h, approximate=False)
        h = nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)
        if self.dropout_rate > 0:
            h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return h


class Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN1(x))``, then ``x + MLP(LN2(x))``.

    Attributes:
      num_heads: attention heads.
      mlp_dim: hidden width of the MLP (timm: 4 * dim).
      qkv_bias: bias on the packed q/k/v projection (timm default False; VQ-HPS True).
      causal: attend only to the current and earlier tokens (VQ-HPS token head).
      dropout_rate: on attention weights, after the output projection and after the MLP.
      layer_norm_eps: 1e-5 (torch default) everywhere in MEGA and VQ-HPS.
    """

    num_heads: int
    mlp_dim: int
    qkv_bias: bool = False
    causal: bool = False
    dropout_rate: float = 0.0
    layer_norm_eps: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None,
                 deterministic: bool = True, queries=None, qkv: jnp.ndarray | None = None,
                 project_only: bool = False) -> jnp.ndarray:
        """x: (B, T, C) -> (B, T, C); ``mask`` (True = attend) is combined with the causal mask.

        ``queries`` (see :func:`take_queries`; not with ``causal``): compute only the outputs at
        those positions, (B, Q, C), equal to the full output there -- a last block whose other
        outputs are discarded skips their attention, projection and MLP.

        The attention inputs of a row depend on that row alone (``LN1`` then the packed q/k/v
        projection), so rows repeated across sequences, or constant, need them only once:
        ``project_only=True`` returns them, (B, T, 3C), for any rows ``x``; ``qkv`` passes them
        back for the whole of ``x`` (B, T, 3C), and the block skips its own ``LN1`` and projection
        (same output).
        """
        if self.causal:
            if queries is not None:
                raise ValueError("queries= is not supported by a causal block")
            t = x.shape[1]
            causal = jnp.tril(jnp.ones((t, t), bool))[None, None]
            mask = causal if mask is None else jnp.logical_and(mask, causal)
        attn = SelfAttention(self.num_heads, self.qkv_bias, self.dropout_rate, self.dtype, name="attn")
        h = None
        if qkv is None:
            h = nn.LayerNorm(self.layer_norm_eps, dtype=jnp.float32, name="norm1")(x).astype(self.dtype)
            if project_only:
                return attn(h, project_only=True)
        elif qkv.shape[:2] != x.shape[:2]:
            raise ValueError(f"qkv covers {qkv.shape[:2]} rows, the block input has {x.shape[:2]}")
        y = attn(h, mask, deterministic, queries, qkv=qkv)
        x = (x if queries is None else take_queries(x, queries)) + y
        h = nn.LayerNorm(self.layer_norm_eps, dtype=jnp.float32, name="norm2")(x)
        x = x + Mlp(self.mlp_dim, self.dropout_rate, self.dtype, name="mlp")(
            h.astype(self.dtype), deterministic)
        return x


class MultiheadAttention(nn.Module):
    """``torch.nn.MultiheadAttention`` (batch-first here): separate q / k / v inputs.

    Parameters: ``q_proj``, ``k_proj``, ``v_proj`` (the three thirds of torch's packed
    ``in_proj_weight`` / ``in_proj_bias``) and ``out_proj``, all with bias.
    """

    num_heads: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray,
                 mask: jnp.ndarray | None = None, deterministic: bool = True) -> jnp.ndarray:
        """query: (B, Tq, C); key, value: (B, Tk, C) -> (B, Tq, C)."""
        c = query.shape[-1]
        if c % self.num_heads:
            raise ValueError(f"feature size {c} is not divisible by num_heads={self.num_heads}")
        d = c // self.num_heads

        def proj(x, name):
            y = nn.Dense(c, dtype=self.dtype, name=name)(x)
            return y.reshape(y.shape[:2] + (self.num_heads, d))

        q, k, v = proj(query, "q_proj"), proj(key, "k_proj"), proj(value, "v_proj")
        drop = nn.Dropout(self.dropout_rate) if self.dropout_rate > 0 else None
        y = attention(q, k, v, mask, drop, deterministic)
        return nn.Dense(c, dtype=self.dtype, name="out_proj")(y.reshape(y.shape[:2] + (c,)))
