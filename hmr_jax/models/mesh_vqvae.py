"""Mesh-VQ-VAE (Fiche et al.): the mesh tokenizer. Meshes in, token ids out, and back.

``encode(meshes (B, V, 3)) -> ids`` ((B, L) int32 for one codebook, (B, L, Q) for a residual
quantiser with Q stages) and ``decode(ids) -> meshes (B, V, 3)``; meshes are vertex positions in
meters (V = 6890, L = 54 tokens for the released model). ``__call__`` runs encode, quantise and
decode in one pass and returns the reconstruction with the commitment loss and perplexity.

Variables: ``params`` (the autoencoder) and ``vq_stats`` (codebook + EMA statistics, see
:mod:`hmr_jax.models.quantizers`). Training-mode calls (``train=True``) update ``vq_stats`` and
must be applied with ``mutable=["vq_stats"]``.

Config (a plain mapping or an ``ml_collections.ConfigDict``; ``configs/mesh_vqvae_54.py`` holds
the released one)::

  conv: "fcae" | "spiral"       # which convolution the encoder / decoder use
  autoencoder:
    connection_folder: str      # folder with _pool*.npy / _unpool*.npy
    initial_connection: str     # "pool0": its row count is the mesh's vertex count (may be None)
    layers: [str]               # connection layer names, encoder then decoder
    channels: [int]             # output channels per layer (the last is 3)
    weight_nums: [int]          # kernel basis size per layer (0 for pure pooling)
    residual_rates: [float]     # per layer, in [0, 1]
    connection_sha256: {layer: sha256} | None  # optional check of the connection files
  quantizer:
    num_embeddings: int         # codes per codebook (512)
    embedding_dim: int          # channels of a token (9)
    commitment_cost: float      # 0.25
    decay: float                # EMA decay (0.99)
    epsilon: float              # Laplace smoothing (1e-5)
    num_quantizers: int         # 1 = VQ, > 1 = residual quantiser
    shared_codebook: bool       # residual stages share one codebook
  spiral: {...}                 # only for conv == "spiral" (see below)

With ``conv: "spiral"`` the encoder / decoder are ``SpiralEncoder(config)`` /
``SpiralDecoder(config)`` from :mod:`hmr_jax.models.spiral`. They receive
this whole config (as a plain nested dict) and must map ``(B, V, 3) -> (B, L, D)`` and back,
with ``L`` the point count after ``autoencoder.layers[:n//2]`` and ``D =
quantizer.embedding_dim``. They may use ``autoencoder.connection_folder`` /
``initial_connection`` / ``layers`` / ``channels`` for the pooling hierarchy and sizes, and keep
their own options (template mesh, spiral length, dilation, ...) under ``spiral``.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import flax.struct
import jax.numpy as jnp

from hmr_jax.mesh import connections as conn_lib
from hmr_jax.models import spiral
from hmr_jax.models.config_dict import config_to_dict
from hmr_jax.models.fcae import FullyConvAE
from hmr_jax.models.quantizers import QuantizerOutput, ResidualVectorQuantizer, VectorQuantizerEMA


# The released tokenizer (Mesh-VQ-VAE "medium": 54 tokens x 9 channels, one 512-code codebook),
# used by VQ-HPS and MEGA. The connection files are MeshConvolution's dfaust2 matrices; their
# sha256 sums identify the copy the released weights were trained with.
RELEASED_54: dict = {
    "conv": "fcae",
    "autoencoder": {
        "connection_folder": "body_models/ConnectionMatrices",
        "initial_connection": "pool0",
        "layers": [
            "pool0", "pool1", "pool2", "pool3", "pool4", "pool5", "pool6",
            "unpool6", "unpool5", "unpool4", "unpool3", "unpool2", "unpool1", "unpool0",
        ],
        "channels": [32, 32, 64, 64, 128, 128, 9, 128, 128, 64, 64, 32, 32, 3],
        "weight_nums": [9, 0, 9, 0, 9, 0, 9, 9, 0, 9, 0, 9, 0, 9],
        "residual_rates": [0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0],
        "connection_sha256": {
            "pool0": "bb8f3661708e461c69839d114f52e02f05afa750416d553f632ea642b3f97c96",
            "pool1": "7ec0773329c36cf44a02765ee89e2eb110240ab03ce91cdabc84299dacb16631",
            "pool2": "cc5acd27734625b55d08336fbbdff9411e42ea5e5072c9ced0435953e2f9ee61",
            "pool3": "09902bd044f0280b1e59571ecde335805a92ba3b248059fdc4d0349159d7b199",
            "pool4": "f49d4b4d210fd40fc9f9785e4ce10337551dc3f558974df31a89451ddd2e4941",
            "pool5": "9808015822a2cc2a3f305337d52cbb47604bcdf583f3c844fcf67ba3217d5a52",
            "pool6": "ea760d5e69979a75f970d58c802b7bf419258cb8c0217b2441b08873b99d66a2",
            "unpool6": "c258fb901f811f9991517ee8e37c05257eb117292f300a32185a57b30d8cbb8c",
            "unpool5": "eac67842f2b6d412936c9542720c740f21eee76f976eeeb44cfa25c83f9ad09b",
            "unpool4": "a9917981ccef0f4e39b596162258f7af420dde062b84790550b750452a5a6f7c",
            "unpool3": "0f6d9b6f4e4f69512388277ca7ccdbe9f8560751e82ddb33485a22047e7d0a73",
            "unpool2": "4512312bb7fbffa59c564eaf48514add38ba190b3fddb8877d6019fb849da034",
            "unpool1": "7ec71372ac0b50de52ac453b1d28705b1f021331c311e7210e5da4070e0228df",
            "unpool0": "6776613d4c7b15b7cd42004a833c6d40db8f4f1ef6a0f2e6f3c3424fdf62c7cb",
        },
    },
    "quantizer": {
        "num_embeddings": 512,
        "embedding_dim": 9,
        "commitment_cost": 0.25,
        "decay": 0.99,
        "epsilon": 1e-5,
        "num_quantizers": 1,
        "shared_codebook": False,
    },
}


def load_connections(config: Mapping[str, Any]) -> tuple[conn_lib.ConnectionLayer, ...]:
    """Read (and check) the connection files the config names.

    Args:
      config: a Mesh-VQ-VAE config (see the module docstring).
    Returns:
      One :class:`~hmr_jax.mesh.connections.ConnectionLayer` per ``autoencoder.layers`` entry.
    Raises:
      ConnectionFileError: a missing / malformed file or a checksum mismatch (names the file).
    """
    ae = config_to_dict(config)["autoencoder"]
    return conn_lib.load_hierarchy(
        ae["connection_folder"],
        list(ae["layers"]),
        initial=ae.get("initial_connection"),
        sha256=ae.get("connection_sha256"),
    )


@flax.struct.dataclass
class MeshVQVAEOutput:
    """Result of a full encode -> quantise -> decode pass.

    Attributes:
      recon: (B, V, 3) reconstructed meshes (meters), decoded from the straight-through latent.
      loss: () commitment loss (summed over residual stages).
      perplexity: () codebook perplexity of the batch (summed over stages).
      z: (B, L, D) encoder output.
      quantized: the :class:`~hmr_jax.models.quantizers.QuantizerOutput` (ids, distances, ...).
    """

    recon: jnp.ndarray
    loss: jnp.ndarray
    perplexity: jnp.ndarray
    z: jnp.ndarray
    quantized: QuantizerOutput


class MeshVQVAE(nn.Module):
    """The Mesh-VQ-VAE tokenizer (see the module docstring for the config).

    Attributes:
      config: the model config (mapping / ConfigDict).
      connections: the connection layers for ``conv == "fcae"``; ``None`` reads them from
        ``autoencoder.connection_folder`` (see :func:`load_connections`; pass them explicitly to
        avoid re-reading files every time the module is set up).
    """

    config: Any
    connections: Any = None

    def setup(self):
        cfg = config_to_dict(self.config)
        conv = cfg.get("conv", "fcae")
        ae = cfg.get("autoencoder", {})
        q = cfg["quantizer"]
        if conv == "fcae":
            conns = self.connections
            if conns is None:
                conns = conn_lib.load_hierarchy_cached(
                    str(ae["connection_folder"]),
                    tuple(ae["layers"]),
                    None,
                    ae.get("initial_connection"),
                    tuple(sorted((ae.get("connection_sha256") or {}).items())),
                )
            self.autoencoder = FullyConvAE(
                connections=tuple(conns),
                channels=tuple(int(c) for c in ae["channels"]),
                weight_nums=tuple(int(k) for k in ae["weight_nums"]),
                residual_rates=tuple(float(r) for r in ae["residual_rates"]),
            )
        elif conv == "spiral":
            self.encoder = spiral.SpiralEncoder(cfg)
            self.decoder = spiral.SpiralDecoder(cfg)
        else:
            raise ValueError(f"config conv={conv!r}; expected 'fcae' or 'spiral'")
        self.conv = conv
        nq = int(q.get("num_quantizers", 1))
        common = dict(
            num_embeddings=int(q["num_embeddings"]),
            embedding_dim=int(q["embedding_dim"]),
            commitment_cost=float(q.get("commitment_cost", 0.25)),
            decay=float(q.get("decay", 0.99)),
            epsilon=float(q.get("epsilon", 1e-5)),
        )
        if nq == 1:
            self.quantizer = VectorQuantizerEMA(**common)
        elif nq > 1:
            self.quantizer = ResidualVectorQuantizer(
                num_quantizers=nq, shared_codebook=bool(q.get("shared_codebook", False)), **common
            )
        else:
            raise ValueError(f"quantizer.num_quantizers must be >= 1, got {nq}")
        self.num_quantizers = nq

    # -- continuous latent ------------------------------------------------------------------

    def encode_latent(self, meshes: jnp.ndarray) -> jnp.ndarray:
        """(B, V, 3) meshes (meters) -> (B, L, D) continuous latent (before quantisation)."""
        meshes = jnp.asarray(meshes)
        if self.conv == "fcae":
            return self.autoencoder.encode(meshes)
        return self.encoder(meshes)

    def decode_latent(self, z: jnp.ndarray) -> jnp.ndarray:
        """(B, L, D) latent -> (B, V, 3) meshes (meters)."""
        if self.conv == "fcae":
            return self.autoencoder.decode(z)
        return self.decoder(z)

    # -- tokens -----------------------------------------------------------------------------

    def quantize(self, z: jnp.ndarray, train: bool = False) -> QuantizerOutput:
        """Quantise a (B, L, D) latent (``train`` updates the codebook EMA)."""
        return self.quantizer(z, train=train)

    def encode(self, meshes: jnp.ndarray) -> jnp.ndarray:
        """Tokenize meshes.

        Args:
          meshes: (B, V, 3) vertex positions in meters (V = 6890 for the released model).
        Returns:
          (B, L) int32 token ids, or (B, L, Q) for Q residual stages.
        """
        return self.quantizer(self.encode_latent(meshes)).indices

    def lookup(self, ids: jnp.ndarray) -> jnp.ndarray:
        """Token ids ((B, L) or (B, L, Q)) -> (B, L, D) quantised latent (codebook rows, summed
        over stages)."""
        ids = jnp.asarray(ids)
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
        want = 2 if self.num_quantizers == 1 else 3
        if ids.ndim != want:
            shape = "(B, L)" if want == 2 else f"(B, L, {self.num_quantizers})"
            raise ValueError(f"token ids have shape {tuple(ids.shape)}, expected {shape}")
        return self.quantizer.lookup(ids)

    def decode(self, ids: jnp.ndarray) -> jnp.ndarray:
        """Token ids ((B, L) int, or (B, L, Q)) -> (B, V, 3) meshes in meters."""
        return self.decode_latent(self.lookup(ids))

    def __call__(self, meshes: jnp.ndarray, train: bool = False) -> MeshVQVAEOutput:
        """Encode, quantise (straight-through) and decode.

        Args:
          meshes: (B, V, 3) meshes in meters.
          train: update the codebook EMA (apply with ``mutable=["vq_stats"]``).
        Returns:
          :class:`MeshVQVAEOutput`.
        """
        z = self.encode_latent(meshes)
        q = self.quantizer(z, train=train)
        recon = self.decode_latent(q.quantized)
        return MeshVQVAEOutput(recon=recon, loss=q.loss, perplexity=q.perplexity, z=z, quantized=q)
