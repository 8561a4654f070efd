"""Train the Mesh-VQ-VAE tokenizer (the original ``train_mesh_vqvae.py`` with ``config_medium``).

    python train.py --config configs/train_mesh_vqvae.py --workdir runs/mesh_vqvae \\
        --config.data.train=datasets/bedlam_animations --config.data.val=datasets/3dpw_val

Adam, lr 5e-5 (not scaled), batch 16, loss = v2v + 0.25 x commitment, EMA codebook (0.99).
The original trains 500 "epochs" of 500-step rounds; set ``total_steps`` for your data.
The model is ``configs/mesh_vqvae_54.py`` (override under ``--config.model.*``).
"""
from configs import mesh_vqvae_54
from hmr_jax.training.config import base_config


def get_config():
    """The tokenizer stage with the released model (``configs/mesh_vqvae_54.py``)."""
    c = base_config()
    c.stage = "mesh_vqvae"
    c.model = mesh_vqvae_54.get_config()
    c.batch_size = 16
    c.total_steps = 250_000
    c.log_every_steps = 100
    c.eval_every_steps = 500
    c.eval_batches = 50
    c.checkpoint.every_steps = 500
    c.optim.name = "adam"
    c.optim.base_lr = 5e-5
    c.optim.schedule = "constant"
    c.codebook_init = "random"   # the original; "data" starts the codebook from encoder latents
    c.data.train = ""
    c.data.val = ""
    return c
