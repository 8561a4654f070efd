"""Stage ``mesh_vqvae``: train the tokenizer on meshes, as the original Mesh-VQ-VAE trainer.

Loss = ``v2v(mesh, recon)`` (mean vertex distance after centring the reconstruction, meters)
+ the quantizer's commitment loss (0.25 x MSE); the codebook moves by EMA (decay 0.99) in the
``vq_stats`` collection. Optimizer: Adam, lr 5e-5, batch 16 (``configs/train_mesh_vqvae.py``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from hmr_jax.models.mesh_vqvae import MeshVQVAE, config_to_dict, load_connections
from hmr_jax.training import losses
from hmr_jax.training.stages import common
from hmr_jax.training.stages.base import LossOutput, Stage, Variables


class MeshVQVAEStage(Stage):
    """Config: ``model`` (a Mesh-VQ-VAE config, e.g. ``configs/mesh_vqvae_54.py``),
    ``data.train`` / ``data.val`` (mesh or image dataset folders)."""

    name = "mesh_vqvae"

    def __init__(self, config):
        super().__init__(config)
        cfg = config_to_dict(config.model)
        self.model = MeshVQVAE(cfg, connections=tuple(load_connections(cfg)))

    def train_pipeline(self, local_batch, seed):
        return common.mesh_train_pipeline(self.config, local_batch, seed)

    def val_batches(self, local_batch):
        return common.val_batches(self.config, local_batch, "mesh")

    def init(self, rng, batch):
        v = self.model.init(rng, batch["vertices"], train=False)
        stats = v["vq_stats"]
        if self.config.get("codebook_init", "random") == "data":
            stats = self._codebook_from_data(v, batch["vertices"], rng)
        elif self.config.get("codebook_init", "random") != "random":
            raise ValueError("config.codebook_init must be 'random' (the original) or 'data'")
        return Variables(params=v["params"], model_state={"vq_stats": stats})

    def _codebook_from_data(self, variables, vertices, rng):
        """Codebook rows = latents of the first batch (drawn at random), EMA counts 1.

        Not in the original (whose codebook starts N(0, 1), so codes no latent reaches at the
        first step drift away and are never used): an option for small or short runs, where the
        random start collapses onto one code.
        """
        z = self.model.apply(variables, vertices, method="encode_latent")
        flat = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
        stats = variables["vq_stats"]["quantizer"]
        if "embedding" not in stats:
            raise ValueError("codebook_init='data' supports one codebook (num_quantizers=1)")
        k = stats["embedding"].shape[0]
        rows = jax.random.choice(jax.random.fold_in(rng, 1), flat.shape[0], (k,),
                                 replace=flat.shape[0] < k)
        codes = flat[rows]
        return {"quantizer": {**stats, "embedding": codes, "ema_w": codes,
                              "ema_cluster_size": jnp.ones((k,), jnp.float32)}}

    def loss(self, params, model_state, frozen, batch, rng, step, draws):
        out, updates = self.model.apply({"params": params, **model_state}, batch["vertices"],
                                        train=True, mutable=["vq_stats"])
        v2v = losses.vertex_error(batch["vertices"], out.recon)
        loss = v2v + out.loss
        terms = {"v2v_mm": 1000.0 * v2v, "vq_loss": out.loss, "perplexity": out.perplexity}
        return loss, LossOutput(terms=terms, model_state=dict(updates))

    def validate(self, params, model_state, frozen, batch):
        out = self.model.apply({"params": params, **model_state}, batch["vertices"], train=False)
        pred = out.recon - jnp.mean(out.recon, axis=1, keepdims=True)
        return {"v2v_mm": 1000.0 * jnp.mean(jnp.linalg.norm(batch["vertices"] - pred, axis=-1), -1)}
