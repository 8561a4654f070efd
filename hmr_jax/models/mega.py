"""MEGA: masked generative autoencoder over Mesh-VQ-VAE tokens (Fiche et al., CVPR 2025).

Two forms, as in the original code:

* :class:`VQMAE` -- unconditional, pre-trained on meshes alone (``mega_pretrained``);
* :class:`CVQMAE` -- conditioned on an image: an image backbone gives ``L`` condition tokens
  (``cond_dim`` features each) that the decoder attends to, plus a rotation / camera head on
  their average.

Both share the masked-token encoder (visible tokens + a cls token, learned positional
embeddings, pre-norm transformer blocks, final LayerNorm) and the masked-token decoder (mask
token at the masked positions, learned positions, blocks, linear head to token logits).

Masking. A *visible* mask ``(B, 54)`` (True / 1 = token known) says which tokens the encoder
sees. The original gathers the visible tokens in a random order (NumPy's global RNG) and runs
the encoder on them; here every position stays in place and the encoder's attention simply
ignores masked keys, which is the same computation (attention does not depend on token order)
with static shapes. With ``num_visible`` (a static length) the encoder gathers the visible
tokens first and runs on that many rows only, as the original: inference knows the exact count,
training rounds the host-drawn count up to one of a few lengths (:func:`visible_buckets`, one
compiled step each). Training masks come from :func:`random_visible_mask` (fixed ratio) and
:func:`scheduled_visible_mask` (cosine-scheduled ratio); inference passes the mask explicitly.

Behaviour of the original that changes results, reproduced only with ``faithful=True``
(the corrected behaviour is the default; see also :mod:`hmr_jax.models.decoding`):

1. Decoder mask off by one: the original's decoder reports the first masked token *in its
   random shuffle order* as visible. :func:`decoder_mask_out` reproduces it from the shuffle
   (:func:`original_inference_shuffle`, :func:`original_scheduled_shuffle`); corrected, the
   returned mask is exactly the masked positions.
2. Inference masking shuffles with NumPy's global RNG and takes the number of visible tokens
   from batch row 0: :func:`original_inference_shuffle` draws the same permutations from a
   ``np.random.RandomState`` (the global one by default) and returns the visible mask the
   original's encoder effectively used (rows with another count than row 0 get the first
   ``count(row 0)`` tokens of their shuffle). Corrected: no shuffle, every row uses its own mask.
3. The conditional decoder slices its output with the configured ``cond_length`` instead of
   the real number of condition tokens: faithful mode raises when the two differ (the original
   then drops mesh tokens and crashes, e.g. ViT with ``cond_length`` 196 for 192 tokens);
   corrected, the slice uses the real number.

Image features are NHWC; token sequences ``(B, T)`` int32; features ``(B, T, C)``.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.models.backbones import build_backbone
from hmr_jax.models.transformer import Block, Dtype

_POS_INIT = nn.initializers.truncated_normal(stddev=0.02)
#: the collection of values derived from the parameters once, for inference (:func:`with_masked_encoding`)
CONSTANTS = "constants"


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """Standard sin/cos positional encoding (Vaswani et al.), as MEGA's ``PositionalEncoding``.

    Returns:
      (length, dim) float32: ``[p, 2i] = sin(p / 10000^(2i/dim))``, ``[p, 2i+1] = cos(...)``.
    """
    position = np.arange(length, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, dim, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / dim))
    pe = np.zeros((length, dim), np.float32)
    pe[:, 0::2] = np.sin(position * div)
    pe[:, 1::2] = np.cos(position * div)[:, : dim // 2]
    return pe


# ------------------------------------------------------------------------------------------
# Masking


def random_visible_mask(key: jax.Array, batch: int, seq_length: int, mask_ratio: float) -> jnp.ndarray:
    """Training masking with a fixed ratio (original ``PatchShuffle``).

    Each row keeps ``int(seq_length * (1 - mask_ratio))`` tokens chosen uniformly at random.
    Returns (batch, seq_length) bool, True = visible.
    """
    keep = int(seq_length * (1 - mask_ratio))
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(key, (batch, seq_length)), axis=-1), axis=-1)
    return rank < keep


def scheduled_visible_mask(key: jax.Array, batch: int, seq_length: int,
                           fixed_ratio: float | None = None, num_visible=None) -> jnp.ndarray:
    """Training masking with a cosine-scheduled ratio (original ``PatchShuffleScheduled``).

    One ``u ~ U(0, 1)`` per batch gives the masked ratio ``cos(pi u / 2)`` (or ``fixed_ratio``);
    every row keeps ``int(seq_length * (1 - ratio))`` random tokens -- or ``num_visible`` (an int
    or traced int32 scalar, drawn on the host by :func:`scheduled_visible_count` in training).
    ``fixed_ratio=1`` masks everything (MEGA's deterministic mode). Returns (batch, seq_length)
    bool, True = visible.
    """
    k_ratio, k_perm = jax.random.split(key)
    if num_visible is not None:
        keep = jnp.asarray(num_visible, jnp.int32)
    elif fixed_ratio is None:
        keep = jnp.floor(seq_length * (1 - jnp.cos(jax.random.uniform(k_ratio, ()) * jnp.pi * 0.5))).astype(jnp.int32)
    else:
        keep = jnp.floor(seq_length * (1 - jnp.asarray(fixed_ratio, jnp.float32))).astype(jnp.int32)
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_perm, (batch, seq_length)), axis=-1), axis=-1)
    return rank < keep


def scheduled_mask_ratio(u: float) -> float:
    """The cosine schedule's masked ratio ``cos(pi u / 2)`` for a uniform draw ``u`` in [0, 1)
    (the original's ``cosine_schedule``; float64)."""
    return math.cos(float(u) * math.pi * 0.5)


def scheduled_visible_count(u: float, seq_length: int) -> int:
    """Visible tokens of the cosine schedule for a uniform draw ``u`` in [0, 1):
    ``int(T (1 - ratio))`` with :func:`scheduled_mask_ratio` (the original's
    ``PatchShuffleScheduled``)."""
    return int(seq_length * (1.0 - scheduled_mask_ratio(u)))


@functools.lru_cache(maxsize=None)
def visible_buckets(seq_length: int, count: int) -> tuple[int, ...]:
    """``count`` encoder lengths (ascending, the last = ``seq_length``) that minimise the expected
    number of encoder rows when each training batch runs at the smallest length holding its
    visible tokens, under the cosine schedule of :func:`scheduled_visible_count`.

    The trainer compiles one train step per length (:meth:`hmr_jax.training.stages.Stage.step_draws`),
    so ``count`` trades compilations for speed: T = 54, 4 lengths (6, 20, 36, 54) give 26.8
    rows on average (cls included) against 55 without buckets and 20.1 gathering each batch
    exactly.
    ``count <= 0``: no buckets, ``()``.
    """
    if count <= 0:
        return ()
    # P(visible = k) under u ~ U(0, 1): the u-interval where floor(T (1 - cos(pi u / 2))) = k
    edges = np.arange(seq_length + 2, dtype=np.float64)
    u_at = np.arccos(np.clip(1.0 - edges / seq_length, -1.0, 1.0)) * 2.0 / math.pi
    prob = np.diff(np.minimum(u_at, 1.0))[: seq_length + 1]
    cdf = np.concatenate([[0.0], np.cumsum(prob)])  # cdf[k + 1] = P(visible <= k)
    n = seq_length + 1
    count = min(count, n)
    # best[j][c]: least expected rows covering counts 0..c with j lengths, the largest = c
    best = np.full((count + 1, n), np.inf)
    prev = np.zeros((count + 1, n), np.int64)
    best[1] = cdf[1:] * (np.arange(n) + 1)
    for j in range(2, count + 1):
        for c in range(j - 1, n):
            cands = best[j - 1, :c] + (cdf[c + 1] - cdf[1:c + 1]) * (c + 1)
            prev[j, c] = int(np.argmin(cands))
            best[j, c] = cands[prev[j, c]]
    lengths, c = [seq_length], seq_length
    for j in range(count, 1, -1):
        c = int(prev[j, c])
        lengths.append(c)
    return tuple(sorted(set(lengths)))


def _global_rng(rng):
    return np.random.mtrand._rand if rng is None else rng


def original_inference_shuffle(visible: np.ndarray, rng: np.random.RandomState | None = None):
    """The original ``PatchShuffleInference`` shuffle, drawn from NumPy's legacy RNG (faithful mode).

    Per row: shuffle the visible positions, then the masked ones, concatenate (= forward
    order); backward = argsort(forward). The number of tokens the encoder keeps is the visible
    count of row 0.

    Args:
      visible: (B, T) 0/1 mask, 1 = visible.
      rng: a ``np.random.RandomState``; default NumPy's global one, exactly as the original.
    Returns:
      ``(backward_indexes (B, T) int64, effective_visible (B, T) bool)``: the position of each
      token in the shuffled order, and the tokens the original's encoder really saw.
    """
    rng = _global_rng(rng)
    visible = np.asarray(visible).astype(bool)
    backward = []
    for row in visible:
        ids = np.arange(len(row))
        kept, masked = ids[row], ids[~row]
        rng.shuffle(kept)
        rng.shuffle(masked)
        backward.append(np.argsort(np.concatenate([kept, masked])))
    backward = np.stack(backward)
    count0 = int(visible[0].sum())
    return backward, backward < count0


def original_scheduled_shuffle(batch: int, seq_length: int, fixed_ratio: float,
                               rng: np.random.RandomState | None = None):
    """The original ``PatchShuffleScheduled`` with ``fixed_ratio`` (faithful mode).

    Returns ``(backward_indexes (B, T) int64, visible (B, T) bool)`` drawn from NumPy's legacy
    RNG (global by default), ``int(T * (1 - fixed_ratio))`` visible tokens per row.
    """
    rng = _global_rng(rng)
    keep = int(seq_length * (1 - fixed_ratio))
    backward = []
    for _ in range(batch):
        forward = np.arange(seq_length)
        rng.shuffle(forward)
        backward.append(np.argsort(forward))
    backward = np.stack(backward)
    return backward, backward < keep


def decoder_mask_out(visible, backward_indexes=None, faithful: bool = False):
    """The mask MEGA's decoder returns (1 = position counted as masked).

    Corrected: ``1 - visible``. Faithful (needs the original's ``backward_indexes``): the first
    masked token in the shuffle order is reported as 0, i.e. mask = ``backward > count``, with
    ``count`` the number of tokens the encoder kept (row 0's visible count).

    Args:
      visible: (B, T) 0/1 or bool; backward_indexes: (B, T) from the original-shuffle helpers.
    Returns:
      (B, T) float32.
    """
    if not faithful:
        return 1.0 - jnp.asarray(visible, jnp.float32)
    if backward_indexes is None:
        raise ValueError("faithful decoder_mask_out needs the original's backward_indexes")
    count = int(np.asarray(visible)[0].astype(bool).sum())
    return (jnp.asarray(backward_indexes) > count).astype(jnp.float32)


# ------------------------------------------------------------------------------------------
# Encoder / decoder


def visible_first(visible: jnp.ndarray, count: int) -> jnp.ndarray:
    """The first ``count`` positions of each row with the visible ones first, in sequence order.

    The rows the encoder runs on with ``num_visible`` (and the decoder's per-sequence rows of its
    first block): a stable sort puts the visible tokens first, masked ones after (padding when a
    row has fewer than ``count``). visible: (B, T) bool. Returns (B, count) int32.
    """
    return jnp.argsort(~jnp.asarray(visible).astype(bool), axis=-1, stable=True)[:, :count].astype(jnp.int32)


class MaskedTokenEncoder(nn.Module):
    """MEGA's encoder: visible tokens + cls token -> features.

    Attributes:
      seq_length: tokens per mesh (54); emb_dim: feature size; num_layers / num_heads: blocks.
      num_embeddings: token vocabulary (the Mesh-VQ-VAE codebook size, 512).
    """

    seq_length: int = 54
    emb_dim: int = 1024
    num_layers: int = 12
    num_heads: int = 4
    num_embeddings: int = 512
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jnp.ndarray, visible: jnp.ndarray, num_visible: int | None = None) -> jnp.ndarray:
        """tokens: (B, T) int; visible: (B, T) bool/0-1.

        ``num_visible`` (a Python int, no row may have more visible tokens): run the blocks on
        the cls token + ``num_visible`` rows, the visible tokens first, as the original gathers
        them (same values, less work when few tokens are known). A row with fewer visible tokens
        fills the rest with masked ones that attention ignores as keys (the training buckets of
        :func:`visible_buckets`); their outputs are never read. Otherwise all positions go
        through the blocks and attention ignores the masked keys.

        Returns:
          (B, 1 + T, emb_dim): index 0 = cls feature, index 1 + t = token t's feature (only
          meaningful where visible; masked tokens never influence visible ones).
        """
        b, t = tokens.shape
        if t != self.seq_length:
            raise ValueError(f"expected {self.seq_length} tokens per row, got {t}")
        if num_visible == 0 and self.has_variable(CONSTANTS, "masked_output"):
            # nothing visible: the blocks see the cls token alone, so the output depends on the
            # parameters only; :func:`with_masked_encoding` computed it once
            first = self.get_variable(CONSTANTS, "masked_output").astype(jnp.float32)
            first = jnp.broadcast_to(first, (b, 1, self.emb_dim))
            return jnp.concatenate([first, jnp.zeros((b, t, self.emb_dim), first.dtype)], axis=1)
        cls = self.param("cls_token", _POS_INIT, (self.emb_dim,))
        pos = self.param("pos_embedding", _POS_INIT, (self.seq_length, self.emb_dim))
        x = nn.Embed(self.num_embeddings, self.emb_dim, name="token_embedding")(tokens) + pos
        visible = jnp.asarray(visible).astype(bool)
        cls = jnp.broadcast_to(cls, (b, 1, self.emb_dim))
        if num_visible is None:
            x = jnp.concatenate([cls, x], axis=1)
            keys = jnp.concatenate([jnp.ones((b, 1), bool), visible], axis=1)
            mask = keys[:, None, None, :]
        else:
            # positions of the visible tokens, in sequence order (a stable sort puts them first)
            idx = visible_first(visible, num_visible)
            x = jnp.concatenate([cls, jnp.take_along_axis(x, idx[..., None], axis=1)], axis=1)
            keys = jnp.concatenate([jnp.ones((b, 1), bool), jnp.take_along_axis(visible, idx, axis=1)], axis=1)
            mask = keys[:, None, None, :]
        x = x.astype(self.dtype)
        for i in range(self.num_layers):
            x = Block(self.num_heads, 4 * self.emb_dim, dtype=self.dtype, name=f"blocks_{i}")(x, mask)
        x = nn.LayerNorm(1e-5, dtype=jnp.float32, name="layer_norm")(x)
        if num_visible is None:
            return x
        full = jnp.zeros((b, t, self.emb_dim), x.dtype)
        full = full.at[jnp.arange(b)[:, None], idx].set(x[:, 1:])
        return jnp.concatenate([x[:, :1], full], axis=1)


def with_masked_encoding(model: "VQMAE", variables: Mapping) -> dict:
    """``variables`` plus the encoder's output when no token is visible (an inference constant).

    With nothing visible MEGA's encoder runs its 12 blocks on the cls token alone: the result
    depends on the parameters only, yet costs a pass over the encoder's 600 MB of weights (14 ms
    of a deterministic batch-1 call on 2 CPU cores). It is computed here once and stored as
    ``variables["constants"]["encoder"]["masked_output"]`` (emb_dim,), which the encoder returns
    (broadcast) whenever ``num_visible=0`` -- the deterministic mode and the first decoding step.
    Only for inference: parameters changed later (training) would not update it.

    Args:
      model: a :class:`VQMAE` / :class:`CVQMAE`; variables: its variables (any layout the model
        reads).
    Returns:
      A new variables dict (the other collections shared, not copied).
    """
    base = {k: v for k, v in variables.items() if k != CONSTANTS}
    tokens = jnp.zeros((1, model.seq_length), jnp.int32)
    visible = jnp.zeros((1, model.seq_length), bool)
    feats = jax.jit(lambda v: model.apply(v, tokens, visible, method=lambda m, t, s: m.encoder(t, s, 0)))(base)
    return {**base, CONSTANTS: {"encoder": {"masked_output": feats[0, 0]}}}


class MaskedTokenDecoder(nn.Module):
    """MEGA's decoder: encoder features + mask tokens (+ condition tokens) -> token logits.

    With ``cond_dim`` set (CVQMAE) it also holds the condition embedding and the rotation /
    camera head (two Dense layers without activation, as the original, then 6D rotation and
    weak-perspective camera (s, tx, ty) predictors).
    """

    seq_length: int = 54
    emb_dim: int = 1024
    num_layers: int = 4
    num_heads: int = 4
    dim_tokens: int = 512
    cond_dim: int | None = None
    cond_length: int = 49
    cond_dropout: float = 0.0
    dtype: Dtype = jnp.float32

    def setup(self):
        self.mask_token = self.param("mask_token", _POS_INIT, (self.emb_dim,))
        self.pos_embedding = self.param("pos_embedding", _POS_INIT, (self.seq_length + 1, self.emb_dim))
        self.blocks = [Block(self.num_heads, 4 * self.emb_dim, dtype=self.dtype, name=f"blocks_{i}")
                       for i in range(self.num_layers)]
        self.head = nn.Dense(self.dim_tokens, dtype=self.dtype, name="head")
        if self.cond_dim is not None:
            self.cond_emb = nn.Dense(self.emb_dim, dtype=self.dtype, name="cond_emb")
            self.rotcam_0 = nn.Dense(self.emb_dim, name="rotcam_0")
            self.rotcam_1 = nn.Dense(self.emb_dim, name="rotcam_1")
            self.rotcam_dropout = nn.Dropout(0.5)
            self.rot_predictor = nn.Dense(6, name="rot_predictor")
            self.cam_predictor = nn.Dense(3, name="cam_predictor")

    def embed_condition(self, cond: jnp.ndarray, dropout_key: jax.Array | None = None) -> jnp.ndarray:
        """Condition tokens (B, L, cond_dim) -> (B, L, emb_dim): Dense + sinusoidal positions.

        ``dropout_key`` (training only) drops the whole condition of a row with probability
        ``cond_dropout`` (classifier-free style, as the original's ``cond_dropout=True``).
        """
        if cond.shape[-1] != self.cond_dim:
            raise ValueError(f"condition tokens have {cond.shape[-1]} features, the model expects {self.cond_dim}")
        emb = self.cond_emb(cond.astype(self.dtype))
        emb = emb + jnp.asarray(sinusoidal_positions(cond.shape[1], self.emb_dim), emb.dtype)
        if dropout_key is not None and self.cond_dropout > 0:
            drop = jax.random.bernoulli(dropout_key, self.cond_dropout, (cond.shape[0], 1, 1))
            emb = emb * (1.0 - drop.astype(emb.dtype))
        return emb

    def rotation_camera(self, cond: jnp.ndarray, deterministic: bool = True):
        """Condition tokens (B, L, cond_dim) -> (rot6d (B, 6), weak-perspective cam (B, 3)).

        Uses only the average condition feature (the original's global average pool).
        """
        pooled = jnp.mean(cond.astype(jnp.float32), axis=1)
        h = self.rotcam_dropout(self.rotcam_0(pooled), deterministic=deterministic)
        h = self.rotcam_dropout(self.rotcam_1(h), deterministic=deterministic)
        return self.rot_predictor(h), self.cam_predictor(h)

    def __call__(self, features: jnp.ndarray, visible: jnp.ndarray,
                 cond_embedded: jnp.ndarray | None = None, faithful: bool = False,
                 positions: jnp.ndarray | None = None, num_visible: int | None = None) -> jnp.ndarray:
        """Token logits.

        Work that changes no logit is skipped (:meth:`_first_block_qkv`): the last block only
        computes the outputs the head reads (the mesh tokens, or just ``positions``; attention
        keys and values still come from every token), and the first block projects the rows
        shared by several sequences, or constant, once.

        Args:
          features: (B, 1 + T, emb_dim) encoder output.
          visible: (B, T) which tokens the encoder saw (others get the mask token).
          cond_embedded: (B / N, L, emb_dim) from :meth:`embed_condition` (CVQMAE only), one per N
            consecutive rows of ``features`` (N hypotheses of an image; N = 1 usually).
          faithful: slice the output with ``cond_length`` as the original (error if it differs
            from L); default slices with the real L.
          positions: optional (B, P) int token positions (0..T-1) whose logits are wanted.
          num_visible: optional Python int, no row has more visible tokens (as the encoder's).
        Returns:
          (B, T, dim_tokens) logits, or (B, P, dim_tokens) at ``positions``.
        """
        b = features.shape[0]
        vis = jnp.asarray(visible).astype(bool)[..., None]
        tokens = jnp.where(vis, features[:, 1:], self.mask_token.astype(features.dtype))
        x = (jnp.concatenate([features[:, :1], tokens], axis=1) + self.pos_embedding).astype(self.dtype)
        skip, cond = 0, None
        if self.cond_dim is not None:
            if cond_embedded is None:
                raise ValueError("this decoder is conditional: pass the embedded condition tokens")
            n_cond = cond_embedded.shape[1]
            if faithful and n_cond != self.cond_length:
                raise ValueError(
                    f"faithful mode: the original decoder slices its output with cond_length="
                    f"{self.cond_length} but there are {n_cond} condition tokens; it would drop "
                    f"mesh tokens and crash. Use faithful=False (slices with the real count) or "
                    f"set cond_length={n_cond}.")
            if cond_embedded.shape[0] == 0 or b % cond_embedded.shape[0]:
                raise ValueError(f"{cond_embedded.shape[0]} conditions for {b} sequences: each condition "
                                 f"must serve the same number of consecutive sequences")
            cond = cond_embedded.astype(self.dtype)
            skip = n_cond
        elif cond_embedded is not None:
            raise ValueError("this decoder is unconditional (VQMAE): it takes no condition tokens")
        qkv = self._first_block_qkv(x, visible, cond, num_visible)
        if cond is not None:
            x = jnp.concatenate([jnp.repeat(cond, b // cond.shape[0], axis=0), x], axis=1)
        queries = slice(skip + 1, None) if positions is None else jnp.asarray(positions, jnp.int32) + skip + 1
        for i, blk in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            x = blk(x, qkv=qkv if i == 0 else None, queries=queries if last else None)
        return self.head(x).astype(jnp.float32)

    def _first_block_qkv(self, x, visible, cond, num_visible):
        """The first block's attention inputs (B, L + 1 + T, 3 emb_dim) of ``[cond, x]``, each row
        projected where it is not repeated.

        A row's inputs depend on that row alone. The condition rows are the same for the N
        sequences sharing a condition (projected once per condition), and a masked token's row
        is the mask token plus its position's embedding, the same in every sequence (54 rows
        projected once). With ``num_visible`` the other rows -- the cls row and the visible
        tokens, gathered as the encoder gathers them -- are the only ones projected per sequence.

        Args:
          x: (B, 1 + T, emb_dim) decoder input of the mesh part (cls, then tokens, positions
            added); visible: (B, T); cond: (B / N, L, emb_dim) or None.
        """
        first = self.blocks[0]
        b, n_tok = x.shape[0], x.shape[1] - 1
        parts = []
        if cond is not None:
            parts.append(jnp.repeat(first(cond, project_only=True), b // cond.shape[0], axis=0))
        if num_visible is None:
            parts.append(first(x, project_only=True))
        else:
            masked_rows = (self.mask_token + self.pos_embedding[1:]).astype(self.dtype)
            table = first(masked_rows[None], project_only=True)[0]  # (T, 3C)
            vis = jnp.asarray(visible).astype(bool)
            idx = visible_first(vis, num_visible)  # the rows the encoder ran on
            rows = jnp.concatenate([x[:, :1], jnp.take_along_axis(x[:, 1:], idx[..., None], axis=1)], axis=1)
            own = first(rows, project_only=True)  # (B, 1 + num_visible, 3C)
            mesh = jnp.broadcast_to(table, (b, n_tok, table.shape[-1]))
            if num_visible:
                # back in place: a visible token's row is its rank among the visible ones (a
                # gather and a select; XLA:CPU's scatter is 2-3x slower here)
                slot = jnp.clip(jnp.cumsum(vis, axis=-1) - 1, 0, num_visible - 1)
                mesh = jnp.where(vis[..., None], jnp.take_along_axis(own[:, 1:], slot[..., None], axis=1), mesh)
            parts += [own[:, :1], mesh]
        return jnp.concatenate(parts, axis=1)


# ------------------------------------------------------------------------------------------
# Models


class VQMAE(nn.Module):
    """Unconditional MEGA (pre-training on meshes): tokens + visible mask -> token logits.

    Attributes mirror the original constructor: ``seq_length`` (54), ``emb_dim``,
    ``encoder_layer`` / ``encoder_head``, ``decoder_layer`` / ``decoder_head``,
    ``num_embeddings`` (input vocabulary), ``dim_tokens`` (output vocabulary).
    """

    seq_length: int = 54
    emb_dim: int = 1024
    encoder_layer: int = 12
    encoder_head: int = 4
    decoder_layer: int = 4
    decoder_head: int = 4
    num_embeddings: int = 512
    dim_tokens: int = 512
    dtype: Dtype = jnp.float32

    def _condition_fields(self) -> dict:
        """Decoder attributes of the image condition (none for the unconditional model)."""
        return {}

    def setup(self):
        self.encoder = MaskedTokenEncoder(self.seq_length, self.emb_dim, self.encoder_layer,
                                          self.encoder_head, self.num_embeddings, self.dtype)
        self.decoder = MaskedTokenDecoder(self.seq_length, self.emb_dim, self.decoder_layer,
                                          self.decoder_head, self.dim_tokens, dtype=self.dtype,
                                          **self._condition_fields())

    def encode(self, tokens, visible):
        """(B, T) tokens, (B, T) visible -> (B, 1 + T, emb_dim) encoder features."""
        return self.encoder(tokens, visible)

    def predict_tokens(self, tokens, visible, cond_embedded=None, faithful: bool = False,
                       num_visible: int | None = None, positions=None):
        """(B, T) tokens, (B, T) visible [, (B, L, emb_dim) embedded condition] -> (B, T, dim_tokens) logits.

        ``cond_embedded`` is required by the conditional model and must be None otherwise;
        ``num_visible``: see :meth:`MaskedTokenEncoder.__call__`; ``positions`` (B, P) int:
        only the logits at those token positions, (B, P, dim_tokens) (the same values).
        """
        return self.decoder(self.encoder(tokens, visible, num_visible), visible, cond_embedded, faithful,
                            positions, num_visible)

    def __call__(self, tokens: jnp.ndarray, visible: jnp.ndarray, num_visible: int | None = None) -> jnp.ndarray:
        """tokens (B, T) int, visible (B, T) -> logits (B, T, dim_tokens); ``num_visible``: see
        :meth:`MaskedTokenEncoder.__call__`."""
        return self.predict_tokens(tokens, visible, num_visible=num_visible)


class CVQMAE(VQMAE):
    """Image-conditioned MEGA: backbone -> condition tokens; tokens + mask -> logits, rotation, camera.

    Attributes:
      backbone: a Flax module mapping NHWC images (B, H, W, 3) to a feature map
        (B, h, w, cond_dim) (HRNet-w48: 7x7x720, ResNet-50: 7x7x2048, ViT-H: 16x12x1280);
        ``None`` to feed condition features directly.
      cond_length: the configured number of condition tokens (used by ``faithful`` slicing).
      cond_dim: condition feature size.
      cond_dropout: probability of dropping a row's condition during training.
      other attributes as :class:`VQMAE` (the encoder, decoder blocks and heads are the same).
    """

    backbone: nn.Module | None = None
    cond_length: int = 49
    cond_dim: int = 720
    cond_dropout: float = 0.0

    def _condition_fields(self) -> dict:
        return dict(cond_dim=self.cond_dim, cond_length=self.cond_length, cond_dropout=self.cond_dropout)

    def condition(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """NHWC images (B, H, W, 3) (ImageNet-normalised) -> condition tokens (B, h*w, cond_dim).

        Tokens go row-major over the feature map (as the original's ``(h w)`` flattening).
        """
        if self.backbone is None:
            raise ValueError("this CVQMAE has no backbone: pass condition features instead of images")
        fmap = self.backbone(images, train=train)
        b, h, w, c = fmap.shape
        return fmap.reshape(b, h * w, c).astype(jnp.float32)

    def embed_condition(self, cond: jnp.ndarray, dropout_key=None) -> jnp.ndarray:
        """(B, L, cond_dim) -> (B, L, emb_dim); see :meth:`MaskedTokenDecoder.embed_condition`."""
        return self.decoder.embed_condition(cond, dropout_key)

    def rotation_camera(self, cond: jnp.ndarray, deterministic: bool = True):
        """(B, L, cond_dim) -> (rot6d (B, 6), cam (B, 3))."""
        return self.decoder.rotation_camera(cond, deterministic)

    def __call__(self, tokens: jnp.ndarray, visible: jnp.ndarray, images: jnp.ndarray | None = None,
                 cond: jnp.ndarray | None = None, faithful: bool = False, train: bool = False,
                 cond_dropout_key: jax.Array | None = None, num_visible: int | None = None):
        """Full forward pass.

        Args:
          tokens: (B, T) int mesh tokens (ignored where not visible).
          visible: (B, T) True = token known.
          images: (B, H, W, 3) NHWC normalised images, or ``cond`` (B, L, cond_dim) directly.
          train: backbone in training mode (BatchNorm statistics), rot/cam dropout on.
          cond_dropout_key: drops whole conditions with probability ``cond_dropout``.
          num_visible: encoder length (a Python int, at least every row's visible count; see
            :meth:`MaskedTokenEncoder.__call__`), or None for every position.
        Returns:
          ``(logits (B, T, dim_tokens), rot6d (B, 6), cam (B, 3))``.
        """
        if cond is None:
            if images is None:
                raise ValueError("pass images or condition features")
            cond = self.condition(images, train=train)
        rot6d, cam = self.rotation_camera(cond, deterministic=not train)
        logits = self.predict_tokens(tokens, visible, self.embed_condition(cond, cond_dropout_key), faithful,
                                     num_visible)
        return logits, rot6d, cam


def token_embedding_from_codebook(variables: Any, codebook: np.ndarray) -> Any:
    """Initialise the encoder's token embedding from a Mesh-VQ-VAE codebook.

    The original's ``vqvae_embedding`` option (``Embedding.from_pretrained(codebook)``, frozen:
    freeze it in the optimizer). Needs ``emb_dim`` == codebook dimension.

    Args:
      variables: MEGA variables ``{"params": {"encoder": {"token_embedding": ...}}}``.
      codebook: (num_embeddings, dim) array.
    Returns:
      New variables with the embedding table replaced.
    """
    table = variables["params"]["encoder"]["token_embedding"]["embedding"]
    codebook = jnp.asarray(codebook, table.dtype)
    if codebook.shape != table.shape:
        raise ValueError(f"codebook shape {codebook.shape} does not match the token embedding {table.shape}")
    return jax.tree_util.tree_map(lambda x: x, {
        **variables,
        "params": {**variables["params"], "encoder": {
            **variables["params"]["encoder"], "token_embedding": {"embedding": codebook}}},
    })


def build_mega(config: Any, dtype: Dtype = jnp.float32) -> nn.Module:
    """Build the MEGA model a converted checkpoint's config describes.

    Args:
      config: ``{"mega": {VQMAE / CVQMAE attributes}, "backbone": {...}}``; with a ``backbone``
        entry (see :func:`hmr_jax.models.backbones.build_backbone`) the model is a CVQMAE, else
        a VQMAE.
      dtype: computation dtype (float32, or bfloat16 for speed).
    Returns:
      The unbound module.
    """
    if "mega" not in config:
        raise ValueError("not a MEGA config (no 'mega' entry); was the checkpoint converted as mega_*?")
    kwargs = dict(config["mega"])
    if config.get("backbone"):
        fields = {"seq_length", "emb_dim", "encoder_layer", "encoder_head", "decoder_layer", "decoder_head",
                  "num_embeddings", "dim_tokens", "cond_length", "cond_dim", "cond_dropout"}
        return CVQMAE(backbone=build_backbone(config["backbone"], dtype=dtype), dtype=dtype,
                      **{k: v for k, v in kwargs.items() if k in fields})
    fields = {"seq_length", "emb_dim", "encoder_layer", "encoder_head", "decoder_layer", "decoder_head",
              "num_embeddings", "dim_tokens"}
    return VQMAE(dtype=dtype, **{k: v for k, v in kwargs.items() if k in fields})
