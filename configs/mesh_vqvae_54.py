"""The released Mesh-VQ-VAE tokenizer ("medium": 54 tokens x 9 channels, 512 codes, 1 codebook).

The model VQ-HPS and MEGA decode with. Convert the original checkpoint once (it needs the dfaust2
connection matrices, ``body_models/ConnectionMatrices/_pool*.npy`` / ``_unpool*.npy``):

    python convert_torch_weights.py checkpoint/mesh-vqvae_54/mesh_vqvae_54 --model mesh_vqvae \\
        --out converted/mesh_vqvae_54 \\
        --set autoencoder.connection_folder=body_models/ConnectionMatrices

then ``hmr_jax.conversion.mesh_vqvae.load_converted("converted/mesh_vqvae_54")`` returns
``(model, variables)``; ``model.apply(variables, meshes, method="encode")`` gives (B, 54) ids.
Benchmark: ``python benchmarks/bench_mesh_vqvae.py --connections body_models/ConnectionMatrices``.

Overrides follow ml_collections: ``--config.autoencoder.connection_folder=/data/conn``,
``--config.conv=spiral`` (the spiral-convolution variant, keys under ``spiral``).
"""
import copy

import ml_collections

from hmr_jax.models.mesh_vqvae import RELEASED_54


def get_config():
    """ConfigDict of the released tokenizer (see ``hmr_jax.models.mesh_vqvae`` for the fields)."""
    c = ml_collections.ConfigDict(copy.deepcopy(RELEASED_54))
    c.model = "mesh_vqvae"
    return c
