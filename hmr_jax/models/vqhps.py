"""VQ-HPS mesh regressor (Fiche et al., ECCV 2024): image -> Mesh-VQ-VAE tokens, rotation, camera.

Two image backbones (HRNet-w48 or ResNet-50): ``backbone_rot`` gives a pooled feature that,
concatenated with a 17-joint pose initialisation (51 numbers, meters), goes through two Dense
layers (no activation between them, as the original) to a 6D global rotation and a
weak-perspective camera (s, tx, ty). ``backbone_pose`` gives an (h, w) feature map that a 1x1
convolution projects to ``model_dim`` tokens; a transformer encoder runs over them (DETR-style
sine positions added to queries and keys); a transformer decoder turns 54 learned mesh queries
into mesh features attending to the image tokens; with ``autoreg`` (the released models) a
causal pre-norm transformer head (T2M-GPT style) maps them to token logits over the
Mesh-VQ-VAE codebook. Encoder / decoder layers are pre-norm ``nn.MultiheadAttention`` layers
with ReLU MLPs and final LayerNorms.

Differences from the original, reproduced only with ``faithful=True`` (default: corrected):

1. The token head's causal self-attention (T2M-GPT's block, written for ``(batch, tokens,
   dim)``) receives the decoder output sequence-first, ``(tokens, batch, dim)``: it attends
   across the *images of the batch* (image b sees images 0..b at the same token position), so
   an image's prediction depends on the other images in its batch (and batches over 54
   images crash). Corrected: every image on its own, which is what the original computes for
   a batch of one image.
2. The positional encoding is computed for a ``sqrt(seq_len)`` square grid (7 x 7) whatever
   the feature map's size (other image sizes crash); corrected: the real feature map's grid.

Images are NHWC, ImageNet-normalised. Sequences are batch-first here; the original is
sequence-first, which does not change any value.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hmr_jax.models.backbones import build_backbone
from hmr_jax.models.transformer import Block, Dtype, MultiheadAttention


def sine_position_encoding(h: int, w: int, dim: int, temperature: float = 10000.0) -> np.ndarray:
    """DETR's normalised sine position encoding for an (h, w) grid (VQ-HPS's ``PositionEmbeddingSine``).

    Coordinates 1..h and 1..w are scaled to (0, 2 pi]; the first ``dim / 2`` channels encode y,
    the last ``dim / 2`` x, each as interleaved sin / cos of ``coord / temperature^(2 floor(i/2) / (dim/2))``.

    Returns:
      (h * w, dim) float32, positions row-major over (h, w).
    """
    n = dim // 2
    eps, scale = np.float32(1e-6), np.float32(2 * math.pi)
    y = np.arange(1, h + 1, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    x = np.ones((h, 1), np.float32) * np.arange(1, w + 1, dtype=np.float32)[None, :]
    y = y / (np.float32(h) + eps) * scale
    x = x / (np.float32(w) + eps) * scale
    dim_t = np.float32(temperature) ** (2 * (np.arange(n, dtype=np.float32) // 2) / np.float32(n))

    def enc(c):
        p = c[..., None] / dim_t
        return np.stack([np.sin(p[..., 0::2]), np.cos(p[..., 1::2])], axis=-1).reshape(h, w, n)

    return np.concatenate([enc(y), enc(x)], axis=-1).reshape(h * w, dim).astype(np.float32)


def _feedforward(x, norm: str, feedforward_dim: int, drop: nn.Dropout, dtype: Dtype, deterministic: bool):
    """The layers' MLP sub-block ``x + Dense(drop(ReLU(Dense(LN(x)))))`` with dropout, (B, N, D) -> (B, N, D).

    Creates ``norm``, ``linear1`` and ``linear2`` in the calling layer (call it from its compact ``__call__``).
    """
    h = nn.LayerNorm(1e-5, name=norm)(x)
    h = nn.relu(nn.Dense(feedforward_dim, dtype=dtype, name="linear1")(h))
    h = nn.Dense(x.shape[-1], dtype=dtype, name="linear2")(drop(h, deterministic=deterministic))
    return x + drop(h, deterministic=deterministic)


class EncoderLayer(nn.Module):
    """Pre-norm encoder layer: self-attention (positions on queries / keys), ReLU MLP."""

    num_heads: int
    feedforward_dim: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, src, pos, deterministic: bool = True):
        """src: (B, N, D) image tokens; pos: (N, D) -> (B, N, D)."""
        drop = nn.Dropout(self.dropout)
        h = nn.LayerNorm(1e-5, name="norm1")(src)
        qk = h + pos
        h = MultiheadAttention(self.num_heads, self.dropout, self.dtype, name="self_attn")(qk, qk, h, None, deterministic)
        src = src + drop(h, deterministic=deterministic)
        return _feedforward(src, "norm2", self.feedforward_dim, drop, self.dtype, deterministic)


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: self-attention, cross-attention to the image tokens, ReLU MLP.

    The original's query positions are zeros, so queries carry no positional term.
    """

    num_heads: int
    feedforward_dim: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tgt, memory, pos, deterministic: bool = True):
        """tgt: (B, T, D) mesh queries; memory: (B, N, D) image tokens; pos: (N, D) -> (B, T, D)."""
        drop = nn.Dropout(self.dropout)
        h = nn.LayerNorm(1e-5, name="norm1")(tgt)
        h = MultiheadAttention(self.num_heads, self.dropout, self.dtype, name="self_attn")(h, h, h, None, deterministic)
        tgt = tgt + drop(h, deterministic=deterministic)
        h = nn.LayerNorm(1e-5, name="norm2")(tgt)
        h = MultiheadAttention(self.num_heads, self.dropout, self.dtype, name="cross_attn")(
            h, memory + pos, memory, None, deterministic)
        tgt = tgt + drop(h, deterministic=deterministic)
        return _feedforward(tgt, "norm3", self.feedforward_dim, drop, self.dtype, deterministic)


class VQHPSRegressor(nn.Module):
    """VQ-HPS ``MeshRegressor``.

    Attributes:
      backbone_pose, backbone_rot: Flax modules, NHWC images -> (B, h, w, img_dim) features.
      model_dim, num_heads, feedforward_dim, num_enc_layers, num_dec_layers, dropout: the
        transformer (``configs/transformer.txt``: 512, 8, 1024, 1, 1, 0.2).
      dict_size: codebook size (512); num_tokens: mesh tokens (54).
      autoreg: token logits from the causal head (released models) or from a Dense layer over
        [mesh features, rotation, camera].
      seq_len: the original's image-token count (49), only used with ``faithful``.
      pose_dim: size of the pose initialisation (17 joints x 3).
    """

    backbone_pose: nn.Module
    backbone_rot: nn.Module
    model_dim: int = 512
    num_heads: int = 8
    feedforward_dim: int = 1024
    num_enc_layers: int = 1
    num_dec_layers: int = 1
    dict_size: int = 512
    num_tokens: int = 54
    dropout: float = 0.2
    autoreg: bool = True
    seq_len: int = 49
    pose_dim: int = 51
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray | None, pose_init: jnp.ndarray, train: bool = False,
                 faithful: bool = False, features: tuple[jnp.ndarray, jnp.ndarray] | None = None
                 ) -> dict[str, jnp.ndarray]:
        """Predict token logits, rotation and camera.

        Args:
          images: (B, H, W, 3) NHWC ImageNet-normalised images (224 x 224 for the releases).
          features: instead of images, the two backbones' outputs ``(rot_features,
            pose_features)``, each (B, h, w, img_dim) (skips the backbones).
          pose_init: (B, 51) 17 joints (meters, flattened x, y, z per joint) to start from
            (the original uses the H36M joints of the T-pose, then the previous prediction).
          train: dropout on, backbones' BatchNorm in training mode.
          faithful: positional grid from ``seq_len`` as the original (see module docstring).
        Returns:
          ``{"logits": (B, 54, dict_size), "rot6d": (B, 6), "cam": (B, 3)}``. Intermediate
          values are sown in the ``intermediates`` collection.
        """
        det = not train
        if features is None and images is None:
            raise ValueError("pass images or backbone features")
        b = pose_init.shape[0]
        if pose_init.shape != (b, self.pose_dim):
            raise ValueError(f"pose_init must be (B, {self.pose_dim}), got {pose_init.shape}")
        rot_features = self.backbone_rot(images, train=train) if features is None else features[0]
        rot6d, cam = self._rotation_camera(rot_features, pose_init, det)
        fmap = self.backbone_pose(images, train=train) if features is None else features[1]
        memory, pos = self._encode_image(fmap, faithful, det)
        queries = self.param("mesh_token_embed", nn.initializers.normal(1.0), (self.num_tokens, self.model_dim))
        x = jnp.broadcast_to(queries.astype(memory.dtype), (b, self.num_tokens, self.model_dim))
        for i in range(self.num_dec_layers):
            x = DecoderLayer(self.num_heads, self.feedforward_dim, self.dropout, self.dtype,
                             name=f"decoder_layers_{i}")(x, memory, pos, det)
        x = nn.LayerNorm(1e-5, name="decoder_norm")(x)
        self.sow("intermediates", "transformer_decoder_out", x)
        return {"logits": self._token_logits(x, rot6d, cam, faithful, det).astype(jnp.float32), "rot6d": rot6d,
                "cam": cam}

    def _rotation_camera(self, rot_features, pose_init, det: bool):
        """The rotation / camera branch: pooled (B, h, w, C) features + (B, 51) pose -> (B, 6), (B, 3)."""
        self.sow("intermediates", "backbone_rot_features", rot_features)
        pooled = jnp.mean(rot_features.astype(jnp.float32), axis=(1, 2))
        h = jnp.concatenate([pooled, pose_init.astype(jnp.float32)], axis=-1)
        drop = nn.Dropout(0.5)
        h = drop(nn.Dense(1024, name="fc1")(h), deterministic=det)
        h = drop(nn.Dense(1024, name="fc2")(h), deterministic=det)
        self.sow("intermediates", "fc2_out", h)
        return nn.Dense(6, name="rot_predictor")(h), nn.Dense(3, name="cam_predictor")(h)

    def _encode_image(self, fmap, faithful: bool, det: bool):
        """The token branch's encoder: (B, h, w, C) features -> memory (B, h*w, D), positions (h*w, D)."""
        self.sow("intermediates", "backbone_pose_features", fmap)
        fmap = nn.Conv(self.model_dim, (1, 1), dtype=self.dtype, name="conv_1x1")(fmap)
        self.sow("intermediates", "conv1x1_out", fmap)
        b, fh, fw, _ = fmap.shape
        if faithful:
            side = int(math.sqrt(self.seq_len))
            if (fh, fw) != (side, side):
                raise ValueError(f"faithful mode: the original's position grid is {side}x{side} "
                                 f"(seq_len={self.seq_len}) but the feature map is {fh}x{fw}")
        pos = jnp.asarray(sine_position_encoding(fh, fw, self.model_dim), self.dtype)
        self.sow("intermediates", "pos_enc", pos)
        memory = fmap.reshape(b, fh * fw, self.model_dim)
        for i in range(self.num_enc_layers):
            memory = EncoderLayer(self.num_heads, self.feedforward_dim, self.dropout, self.dtype,
                                  name=f"encoder_layers_{i}")(memory, pos, det)
        memory = nn.LayerNorm(1e-5, name="encoder_norm")(memory)
        self.sow("intermediates", "transformer_encoder_out", memory)
        return memory, pos

    def _token_logits(self, x, rot6d, cam, faithful: bool, det: bool):
        """(B, 54, D) decoder output -> (B, 54, dict_size) token logits (causal head or regressor)."""
        b = x.shape[0]
        if not self.autoreg:
            extra = jnp.concatenate([rot6d, cam], axis=-1)[:, None, :]
            extra = jnp.broadcast_to(extra, (b, self.num_tokens, 9)).astype(x.dtype)
            return nn.Dense(self.dict_size, dtype=self.dtype, name="indices_regressor")(
                jnp.concatenate([x, extra], axis=-1))
        # The original feeds the sequence-first (54, B, D) decoder output to a head written
        # for (B, T, D): its causal attention runs over the *batch* axis. Faithful: the same
        # (image b attends to images 0..b of the batch); corrected: every image alone (what
        # the original computes for a batch of one), so results do not depend on the batch.
        if faithful:
            if b > self.num_tokens:
                raise ValueError(f"faithful mode: the original's causal mask covers {self.num_tokens} "
                                 f"batch entries, the batch has {b}")
            x = jnp.swapaxes(x, 0, 1)
        else:
            x = x.reshape(b * self.num_tokens, 1, self.model_dim)
        for i in range(self.num_dec_layers):
            x = Block(self.num_heads, self.feedforward_dim, qkv_bias=True, causal=True,
                      dropout_rate=self.dropout, dtype=self.dtype, name=f"head_blocks_{i}")(x, None, det)
        x = jnp.swapaxes(x, 0, 1) if faithful else x.reshape(b, self.num_tokens, self.model_dim)
        x = nn.LayerNorm(1e-5, name="head_norm")(x)
        return nn.Dense(self.dict_size, use_bias=False, dtype=self.dtype, name="head")(x)


def pose_from_mesh(joint_regressor: jnp.ndarray, vertices: jnp.ndarray) -> jnp.ndarray:
    """The 51-number pose VQ-HPS starts from: 17 regressed joints, flattened.

    Args:
      joint_regressor: (17, 6890) (H36M regressor); vertices: (6890, 3) or (B, 6890, 3), meters.
    Returns:
      (51,) or (B, 51).
    """
    joints = jnp.einsum("jv,...vc->...jc", jnp.asarray(joint_regressor, jnp.float32), jnp.asarray(vertices, jnp.float32))
    return joints.reshape(joints.shape[:-2] + (-1,))


def build_vqhps(config: Any, dtype: Dtype = jnp.float32) -> VQHPSRegressor:
    """Build the regressor a converted checkpoint's config describes.

    Args:
      config: ``{"vqhps": {VQHPSRegressor attributes}, "backbone": {...}}`` (both backbones are
        built from the same backbone config, see :func:`hmr_jax.models.backbones.build_backbone`).
    """
    if "vqhps" not in config or not config.get("backbone"):
        raise ValueError("not a VQ-HPS config (needs 'vqhps' and 'backbone'); was it converted as vqhps_*?")
    fields = {"model_dim", "num_heads", "feedforward_dim", "num_enc_layers", "num_dec_layers", "dict_size",
              "num_tokens", "dropout", "autoreg", "seq_len", "pose_dim"}
    kwargs = {k: v for k, v in config["vqhps"].items() if k in fields}
    return VQHPSRegressor(backbone_pose=build_backbone(config["backbone"], dtype=dtype),
                          backbone_rot=build_backbone(config["backbone"], dtype=dtype), dtype=dtype, **kwargs)
