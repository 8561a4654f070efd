"""Vector quantisers with exponential-moving-average codebooks (van den Oord et al. 2017).

The codebook and its EMA statistics live in the ``vq_stats`` collection (not ``params``: they
receive no gradient and are updated by the moving averages only):

* ``embedding`` (K, D): the codebook, the vectors the latent is snapped to;
* ``ema_w`` (K, D): EMA of the sum of the latents assigned to each code;
* ``ema_cluster_size`` (K,): EMA of the number of latents assigned to each code, with Laplace
  smoothing.

In training mode (``train=True``, applied with ``mutable=["vq_stats"]``) one call updates them:
``size <- decay * size + (1 - decay) * counts``; ``n = sum(size)``;
``size <- (size + eps) / (n + K * eps) * n``; ``ema_w <- decay * ema_w + (1 - decay) * sums``;
``embedding <- ema_w / size``. The returned quantised latent always uses the codebook as it was
before the update. In evaluation mode nothing changes.

Distances are ``|z|^2 + |e|^2 - 2 z.e`` in float32 and the index is the first minimum, as in the
original code; the loss is the commitment loss ``commitment_cost * mean((sg(q) - z)^2)`` and the
quantised latent is the straight-through value ``z + sg(q - z)``.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

COLLECTION = "vq_stats"


@flax.struct.dataclass
class QuantizerOutput:
    """What a quantiser returns.

    Attributes:
      quantized: (B, L, D) straight-through quantised latent (sum over stages for the RQ).
      indices: (B, L) int32 code ids, or (B, L, Q) for Q residual stages.
      loss: () commitment loss (sum over stages).
      perplexity: () exp(entropy of the code usage in the batch) (sum over stages).
      distances: (B, L, K) squared distances to every code, or (B, L, Q, K).
      partial_quantized: (Q, B, L, D) running sum of the quantised latent after each stage
        (residual quantiser only; None for a single codebook).
    """

    quantized: jnp.ndarray
    indices: jnp.ndarray
    loss: jnp.ndarray
    perplexity: jnp.ndarray
    distances: jnp.ndarray
    partial_quantized: Any = None


class VectorQuantizerEMA(nn.Module):
    """One EMA codebook (see the module docstring).

    Attributes:
      num_embeddings: K, codebook size.
      embedding_dim: D, size of each code (the latent's channel count).
      commitment_cost: weight of the commitment loss.
      decay: EMA decay of the codebook statistics.
      epsilon: Laplace smoothing constant of the cluster sizes.
    """

    num_embeddings: int
    embedding_dim: int
    commitment_cost: float = 0.25
    decay: float = 0.99
    epsilon: float = 1e-5

    def setup(self):
        shape = (self.num_embeddings, self.embedding_dim)
        self.embedding = self.variable(
            COLLECTION, "embedding", lambda: jax.random.normal(self.make_rng("params"), shape)
        )
        self.ema_w = self.variable(
            COLLECTION, "ema_w", lambda: jax.random.normal(self.make_rng("params"), shape)
        )
        self.ema_cluster_size = self.variable(
            COLLECTION, "ema_cluster_size", lambda: jnp.zeros((self.num_embeddings,), jnp.float32)
        )

    def distances(self, z: jnp.ndarray) -> jnp.ndarray:
        """(..., D) latents -> (..., K) squared distances to every code (float32)."""
        e = self.embedding.value
        flat = z.reshape(-1, self.embedding_dim).astype(jnp.float32)
        d = (
            jnp.sum(flat**2, axis=1, keepdims=True)
            + jnp.sum(e**2, axis=1)
            - 2 * jnp.matmul(flat, e.T, precision=jax.lax.Precision.HIGHEST)
        )
        return d.reshape(z.shape[:-1] + (self.num_embeddings,))

    def lookup(self, indices: jnp.ndarray) -> jnp.ndarray:
        """(...,) int code ids -> (..., D) codebook rows."""
        return jnp.take(self.embedding.value, indices, axis=0)

    def __call__(self, z: jnp.ndarray, train: bool = False) -> QuantizerOutput:
        """Quantise a latent.

        Args:
          z: (B, L, D) latent.
          train: update the EMA statistics (needs ``mutable=["vq_stats"]``).
        Returns:
          :class:`QuantizerOutput` with ``indices`` (B, L) and ``distances`` (B, L, K).
        """
        if z.shape[-1] != self.embedding_dim:
            raise ValueError(f"latent has {z.shape[-1]} channels, the codebook has {self.embedding_dim}")
        dist = self.distances(z)
        indices = jnp.argmin(dist, axis=-1).astype(jnp.int32)
        codes = self.lookup(indices)
        flat_idx = indices.reshape(-1)
        counts = jnp.zeros((self.num_embeddings,), jnp.float32).at[flat_idx].add(1.0)
        if train and not self.is_initializing():
            if not self.is_mutable_collection(COLLECTION):
                raise ValueError(
                    "train=True updates the codebook: apply the model with mutable=['vq_stats']"
                )
            flat = z.reshape(-1, self.embedding_dim).astype(jnp.float32)
            flat = jax.lax.stop_gradient(flat)
            size = self.ema_cluster_size.value * self.decay + (1 - self.decay) * counts
            n = jnp.sum(size)
            size = (size + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n
            sums = jax.ops.segment_sum(flat, flat_idx, num_segments=self.num_embeddings)
            ema_w = self.ema_w.value * self.decay + (1 - self.decay) * sums
            self.ema_cluster_size.value = size
            self.ema_w.value = ema_w
            self.embedding.value = ema_w / size[:, None]
        codes = jax.lax.stop_gradient(codes)
        loss = self.commitment_cost * jnp.mean((codes - z) ** 2)
        quantized = z + jax.lax.stop_gradient(codes - z)
        avg_probs = counts / flat_idx.shape[0]
        perplexity = jnp.exp(-jnp.sum(avg_probs * jnp.log(avg_probs + 1e-10)))
        return QuantizerOutput(quantized, indices, loss, perplexity, dist)


class ResidualVectorQuantizer(nn.Module):
    """Residual quantisation: Q EMA codebooks applied in turn to what is left to explain.

    Stage ``q`` quantises ``z - sum_{p<q} quantized_p`` (straight-through values); the result is
    the sum of the stages. With ``shared_codebook`` one codebook serves every stage (in training
    mode each stage then sees the codebook as updated by the previous ones, as in the original).

    Attributes:
      num_quantizers: Q, number of stages.
      num_embeddings, embedding_dim, commitment_cost, decay, epsilon: as VectorQuantizerEMA.
      shared_codebook: one codebook for all stages.

    Variables: ``vq_stats/stage{q}/{embedding, ema_w, ema_cluster_size}`` (``stage0`` only when
    shared).
    """

    num_quantizers: int
    num_embeddings: int
    embedding_dim: int
    commitment_cost: float = 0.25
    decay: float = 0.99
    epsilon: float = 1e-5
    shared_codebook: bool = False

    def setup(self):
        def make(q):
            return VectorQuantizerEMA(
                self.num_embeddings,
                self.embedding_dim,
                self.commitment_cost,
                self.decay,
                self.epsilon,
                name=f"stage{q}",
            )

        if self.shared_codebook:
            shared = make(0)
            self.stages = [shared] * self.num_quantizers
        else:
            self.stages = [make(q) for q in range(self.num_quantizers)]

    def lookup(self, indices: jnp.ndarray) -> jnp.ndarray:
        """(..., Q) int code ids -> (..., D) sum of the stages' codebook rows."""
        if indices.shape[-1] != self.num_quantizers:
            raise ValueError(f"ids have {indices.shape[-1]} stages on the last axis, expected {self.num_quantizers}")
        codes = jnp.stack([s.lookup(indices[..., q]) for q, s in enumerate(self.stages)], axis=-2)
        return jnp.sum(codes, axis=-2)

    def __call__(self, z: jnp.ndarray, train: bool = False) -> QuantizerOutput:
        """Quantise a latent stage by stage.

        Args:
          z: (B, L, D) latent.
          train: update every stage's EMA statistics (needs ``mutable=["vq_stats"]``).
        Returns:
          :class:`QuantizerOutput` with ``indices`` (B, L, Q), ``distances`` (B, L, Q, K) and
          ``partial_quantized`` (Q, B, L, D); loss and perplexity summed over stages.
        """
        residual = z
        total = jnp.zeros_like(z)
        outs, partial = [], []
        for stage in self.stages:
            out = stage(residual, train=train)
            residual = residual - jax.lax.stop_gradient(out.quantized)
            total = total + out.quantized
            outs.append(out)
            partial.append(total)
        return QuantizerOutput(
            quantized=total,
            indices=jnp.stack([o.indices for o in outs], axis=-1),
            loss=sum(o.loss for o in outs),
            perplexity=sum(o.perplexity for o in outs),
            distances=jnp.stack([o.distances for o in outs], axis=-2),
            partial_quantized=jnp.stack(partial, axis=0),
        )
