"""Train the spiral-convolution variant of the Mesh-VQ-VAE tokenizer (no released weights).

Same hierarchy, sizes, quantiser and training recipe as ``configs/train_mesh_vqvae.py``; the
encoder / decoder use SpiralNet++-style convolutions (``hmr_jax.models.spiral``) whose spirals
are computed from the template mesh's faces:

    python train.py --config configs/train_mesh_vqvae_spiral.py --workdir runs/mesh_vqvae_spiral \\
        --config.data.train=datasets/bedlam_animations \\
        --config.model.spiral.template=body_models/template.ply

For another topology, build its hierarchy first (``python -m hmr_jax.mesh.build TEMPLATE OUT``)
and point ``--config.model.autoencoder.connection_folder`` at OUT.
"""
import ml_collections

from configs import train_mesh_vqvae


def get_config():
    """The tokenizer stage with ``model.conv = "spiral"`` and the spiral options."""
    c = train_mesh_vqvae.get_config()
    c.model.conv = "spiral"
    c.model.autoencoder.connection_sha256 = None  # any hierarchy, not only the dfaust2 files
    c.model.spiral = ml_collections.ConfigDict(
        {"template": "body_models/template.ply", "length": 9, "dilation": 1, "averaging": "distance"}
    )
    return c
