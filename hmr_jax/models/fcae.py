"""The fully convolutional mesh autoencoder (Zhou et al. 2020) used by Mesh-VQ-VAE.

Every layer maps features on the ``in_points`` vertices of one level of a pooling hierarchy to
the ``out_points`` vertices of the next, through the neighbourhoods of a
:class:`~hmr_jax.mesh.connections.ConnectionLayer`. A layer has up to two parts:

* the spatially varying convolution (``residual_rate < 1``): for output vertex ``p`` and
  neighbour slot ``m`` the kernel is ``sum_k w_weights[p, m, k] * mask[p, m] * weights[k]``
  (``weights``: a basis of ``weight_num`` kernels of shape (in, out)); the output is the sum
  over the neighbours of kernel x neighbour feature, plus ``bias``, then ELU (alpha 1) except on
  the very last layer of the decoder;
* the residual path (``residual_rate > 0``): an optional channel map ``weight_res`` (in, out),
  then the identity when the point count is kept, otherwise the average of the neighbours with
  weights ``|p_neighbors| * mask`` normalised by their sum + 1e-8;

mixed as ``sqrt(1 - residual_rate) * conv + sqrt(residual_rate) * residual``. The encoder is
the first half of the layers, the decoder the second half.

Speed: the per-vertex kernels are never built, and neighbour gathers are fused into the sums
that consume them wherever XLA allows it (see :func:`_vertex_conv` / :func:`_neighbor_sum`).
Features travel point-major, (points, batch, channels), so every gather reads contiguous
(batch, channels) rows. Nothing depends on a fixed batch size.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hmr_jax.mesh.connections import ConnectionLayer


def _neighbor_sum(h: jnp.ndarray, ids: jnp.ndarray, coeff: jnp.ndarray) -> jnp.ndarray:
    """``out[p] = sum_m coeff[p, m] * h[ids[p, m]]``: (Pin, B, C) -> (P, B, C).

    Written as one sum of per-slot gathers so that XLA fuses the gathers into the sum: the
    (P, M, B, C) neighbour tensor is never materialised (on CPU this is ~10x faster than a
    gather followed by an einsum).
    """
    out = coeff[:, 0, None, None] * h[ids[:, 0]]
    for m in range(1, ids.shape[1]):
        out = out + coeff[:, m, None, None] * h[ids[:, m]]
    return out


def _vertex_conv(
    x: jnp.ndarray, ids: jnp.ndarray, coeff: jnp.ndarray, weights: jnp.ndarray, gather_inputs: bool
) -> jnp.ndarray:
    """The spatially varying convolution without building per-vertex kernels.

    ``out[p] = sum_m sum_k coeff[p, m, k] * x[ids[p, m]] @ weights[k]``.

    Args:
      x: (Pin, B, I) input features.
      ids: (P, M) neighbour ids (padding replaced by any valid id).
      coeff: (P, M, K) ``w_weights * mask``.
      weights: (K, I, O) kernel basis.
      gather_inputs: gather the input features (only where ``x`` is a materialised array, e.g.
        the mesh itself: XLA would otherwise fuse the computation of ``x`` into the gather and
        repeat it for every neighbour).
    Returns:
      (P, B, O), before bias and activation.

    ``gather_inputs``: the neighbours are gathered once, (P, M, B*I), contracted with the
    coefficients per point (a fused product-sum over M), (P, B*I, K), and mixed by one matmul with the
    basis reshaped to (I*K, O). Otherwise the basis is applied first on the input points (K
    matmuls, whose outputs are materialised) and each ``coeff[..., k]``-weighted neighbour sum is
    a fused gather-sum over O channels; the K sums end in a matmul with ones so that the layer
    output is materialised too.
    """
    p_in, batch, i = x.shape
    p, m = ids.shape
    k, _, o = weights.shape
    if gather_inputs:
        neighbors = x.reshape(p_in, batch * i)[ids]  # (P, M, B*I)
        # A broadcast product reduced over M fuses into one loop; the equivalent batched matmul
        # (P tiny (B*I, M) x (M, K) products) is ~7x slower at batch 1 on CPU and no faster at 16.
        mixed = jnp.sum(neighbors[:, :, :, None] * coeff[:, :, None, :], axis=1)  # (P, B*I, K)
        basis = jnp.transpose(weights, (1, 0, 2)).reshape(i * k, o)
        return (mixed.reshape(p * batch, i * k) @ basis).reshape(p, batch, o)
    flat = x.reshape(p_in * batch, i)
    parts = jnp.stack(
        [_neighbor_sum((flat @ weights[kk]).reshape(p_in, batch, o), ids, coeff[:, :, kk]) for kk in range(k)]
    )  # (K, P, B, O)
    ones = jnp.ones((1, k), parts.dtype)
    return (ones @ parts.reshape(k, p * batch * o)).reshape(p, batch, o)


class GraphConv(nn.Module):
    """One layer of the fully convolutional mesh autoencoder (see the module docstring).

    Attributes:
      connection: the layer's neighbourhoods (``in_points`` -> ``out_points`` vertices).
      in_channels: input feature size ``I``.
      out_channels: output feature size ``O``.
      weight_num: size ``K`` of the kernel basis (ignored when ``residual_rate == 1``).
      residual_rate: in [0, 1]; 0 = convolution only, 1 = residual (pooling) only.
      activation: apply ELU to the convolution part (False only for the decoder's last layer).
      gather_inputs: how the convolution is evaluated (same result, see :func:`_vertex_conv`);
        True only where the input is a materialised array and the layer widens the channels.

    Parameters (those the layer has): ``weights`` (K, I, O), ``bias`` (O,), ``w_weights``
    (out_points, M, K); ``weight_res`` (I, O) when the residual path changes the channel count,
    ``p_neighbors`` (out_points, M) when it changes the point count.
    """

    connection: ConnectionLayer
    in_channels: int
    out_channels: int
    weight_num: int
    residual_rate: float
    activation: bool = True
    gather_inputs: bool = False

    @property
    def has_conv(self) -> bool:
        """Whether the layer has a convolution part (``residual_rate < 1``)."""
        return self.residual_rate < 1

    @property
    def has_residual(self) -> bool:
        """Whether the layer has a residual part (``residual_rate > 0``)."""
        return self.residual_rate > 0

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Apply the layer.

        Args:
          x: (in_points, B, I) features, point-major.
        Returns:
          (out_points, B, O) features.
        """
        c = self.connection
        if not 0 <= self.residual_rate <= 1:
            raise ValueError(f"layer {c.name}: residual_rate {self.residual_rate} is outside [0, 1]")
        if x.shape[0] != c.in_points or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"layer {c.name}: input has {x.shape[0]} points x {x.shape[-1]} channels, expected "
                f"{c.in_points} x {self.in_channels}"
            )
        p_out, m = c.out_points, c.max_neighbors
        ids = jnp.asarray(c.safe_ids)  # padding -> 0, always multiplied by a zero weight
        mask = jnp.asarray(c.mask)
        dtype = x.dtype
        avg_neighbors = max(1, int(round(float(np.mean(c.neighbor_counts)))))
        out = None
        if self.has_conv:
            k, i, o = self.weight_num, self.in_channels, self.out_channels
            if k < 1:
                raise ValueError(f"layer {c.name}: a convolution needs weight_num >= 1, got {k}")
            weights = self.param("weights", nn.initializers.normal(1.0), (k, i, o))
            bias = self.param("bias", nn.initializers.zeros, (o,))
            w_weights = self.param(
                "w_weights", nn.initializers.normal(1.0 / (avg_neighbors * k)), (p_out, m, k)
            )
            coeff = (w_weights * mask[:, :, None]).astype(dtype)  # (P, M, K)
            conv = _vertex_conv(x, ids, coeff, weights.astype(dtype), self.gather_inputs)
            conv = conv + bias.astype(dtype)
            if self.activation:
                conv = nn.elu(conv)
            out = conv if self.residual_rate == 0 else conv * math.sqrt(1 - self.residual_rate)
        if self.has_residual:
            h = x
            if self.in_channels != self.out_channels:
                weight_res = self.param(
                    "weight_res",
                    nn.initializers.normal(1.0 / self.out_channels),
                    (self.in_channels, self.out_channels),
                )
                h = h @ weight_res.astype(dtype)
            if c.in_points != p_out:
                p_neighbors = self.param(
                    "p_neighbors", nn.initializers.normal(1.0 / avg_neighbors), (p_out, m)
                )
                pw = jnp.abs(p_neighbors) * mask
                pw = (pw / (jnp.sum(pw, axis=1, keepdims=True) + 1e-8)).astype(dtype)
                h = _neighbor_sum(h, ids, pw)
            res = h if self.residual_rate == 1 else h * math.sqrt(self.residual_rate)
            out = res if out is None else out + res
        return out


class FullyConvAE(nn.Module):
    """The fully convolutional mesh autoencoder: a stack of :class:`GraphConv` layers.

    Attributes:
      connections: one ConnectionLayer per layer (``pool0 .. pool6, unpool6 .. unpool0`` for
        the released "medium" configuration).
      channels: output channels of every layer (the last is 3, the first input is 3).
      weight_nums: kernel basis size of every layer (0 for pure pooling layers).
      residual_rates: residual rate of every layer, in [0, 1].
      in_channels: channels of the input mesh (3: x, y, z in meters).

    Layers ``0 .. n//2 - 1`` are the encoder (every convolution followed by ELU), layers
    ``n//2 .. n-1`` the decoder (no ELU on the last one). Every layer's output is also sown
    into the ``intermediates`` collection as ``layer{l}_out`` ((B, points, channels)) when that
    collection is mutable.
    """

    connections: Sequence[ConnectionLayer]
    channels: Sequence[int]
    weight_nums: Sequence[int]
    residual_rates: Sequence[float]
    in_channels: int = 3

    def setup(self):
        n = len(self.connections)
        if not (len(self.channels) == len(self.weight_nums) == len(self.residual_rates) == n):
            raise ValueError(
                f"the autoencoder config lists {n} connection layers, {len(self.channels)} channels, "
                f"{len(self.weight_nums)} weight_nums and {len(self.residual_rates)} residual_rates; "
                "they must have the same length"
            )
        if n < 2:
            raise ValueError("the autoencoder needs at least 2 layers (an encoder and a decoder)")
        for a, b in zip(self.connections[:-1], self.connections[1:]):
            if b.in_points != a.out_points:
                raise ValueError(
                    f"connection layer {b.name} reads {b.in_points} points but {a.name} produces {a.out_points}"
                )
        layers = []
        in_ch = self.in_channels
        for l, (conn, ch, k, r) in enumerate(
            zip(self.connections, self.channels, self.weight_nums, self.residual_rates)
        ):
            layers.append(
                GraphConv(
                    connection=conn,
                    in_channels=in_ch,
                    out_channels=int(ch),
                    weight_num=int(k),
                    residual_rate=float(r),
                    activation=l != n - 1,
                    # the mesh and the latent are materialised inputs; pooled features are not
                    gather_inputs=(l in (0, n // 2)) and int(ch) >= in_ch,
                    name=f"layer{l}",
                )
            )
            in_ch = int(ch)
        self.layers = layers

    @property
    def num_vertices(self) -> int:
        """Vertex count of the meshes the autoencoder reads and writes."""
        return self.connections[0].in_points

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(tokens, channels) of the encoder output."""
        half = len(self.connections) // 2
        return self.connections[half - 1].out_points, int(self.channels[half - 1])

    def _run(self, x: jnp.ndarray, start: int, stop: int) -> jnp.ndarray:
        h = jnp.transpose(x, (1, 0, 2))  # (points, B, C)
        for l in range(start, stop):
            h = self.layers[l](h)
            self.sow("intermediates", f"layer{l}_out", h, reduce_fn=lambda _, v: jnp.transpose(v, (1, 0, 2)))
        return jnp.transpose(h, (1, 0, 2))

    def encode(self, meshes: jnp.ndarray) -> jnp.ndarray:
        """Encoder: (B, V, 3) meshes (meters) -> (B, L, D) latent (L tokens of D channels)."""
        if meshes.ndim != 3 or meshes.shape[1:] != (self.num_vertices, self.in_channels):
            raise ValueError(
                f"meshes have shape {tuple(meshes.shape)}; this autoencoder expects (B, "
                f"{self.num_vertices}, {self.in_channels}): meshes with the {self.num_vertices} vertices "
                "of the topology its connection files were built for"
            )
        return self._run(meshes, 0, len(self.connections) // 2)

    def decode(self, z: jnp.ndarray) -> jnp.ndarray:
        """Decoder: (B, L, D) latent -> (B, V, 3) meshes."""
        tokens, dim = self.latent_shape
        if z.ndim != 3 or z.shape[1:] != (tokens, dim):
            raise ValueError(f"latent has shape {tuple(z.shape)}, expected (B, {tokens}, {dim})")
        return self._run(z, len(self.connections) // 2, len(self.connections))

    def __call__(self, meshes: jnp.ndarray) -> jnp.ndarray:
        """Encode then decode (no quantisation): (B, V, 3) -> (B, V, 3)."""
        return self.decode(self.encode(meshes))
