"""Stage ``mesh_vqvae``: train the tokenizer on meshes, as the original Mesh-VQ-VAE trainer.

Loss = ``v2v(mesh, recon)`` (mean vertex distance after centring the reconstruction, meters)
+ the quantizer's commitment loss (0.25 x MSE); the codebook moves by EMA (decay 0.99) in the
``vq_stats`` collection. Optimizer: Adam, lr 5e-5, batch 16 (``configs/train_mesh_vqvae.py``).
"""
from __future__ import annotations

import jax.numpy as jnp

from hmr_jax.training import losses
from hmr_jax.training.stages import LossOutput, Stage, Variables
from hmr_jax.training.stages import common


class MeshVQVAEStage(Stage):
    """Config: ``model`` (a Mesh-VQ-VAE config, e.g. ``configs/mesh_vqvae_54.py``),
    ``data.train`` / ``data.val`` (mesh or image dataset folders)."""

    name = "mesh_vqvae"

    def __init__(self, config):
        super().__init__(config)
        from hmr_jax.models.mesh_vqvae import MeshVQVAE, config_to_dict, load_connections

        cfg = config_to_dict(config.model)
        self.model = MeshVQVAE(cfg, connections=tuple(load_connections(cfg)))

    def train_pipeline(self, local_batch, seed):
        return common.mesh_train_pipeline(self.config, local_batch, seed)

    def val_batches(self, local_batch):
        return common.val_batches(self.config, local_batch, "mesh")

    def init(self, rng, batch):
        v = self.model.init(rng, batch["vertices"], train=False)
        return Variables(params=v["params"], model_state={"vq_stats": v["vq_stats"]})

    def loss(self, params, model_state, frozen, batch, rng, step):
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
