"""MEGA pre-training: VQMAE on mesh tokens (the original ``pretrain_mega.py``, ``config_vqmae``).

    python train.py --config configs/train_mega_pretrain.py --workdir runs/mega_pretrain \\
        --config.tokenizer.path=converted/mesh_vqvae_54 \\
        --config.data.train=datasets/bedlam_animations --config.data.val=datasets/3dpw_val

The released VQMAE sizes (``configs/mega_pretrained.py``: emb 1024, 12 encoder / 4 decoder
layers, 4 heads). AdamW (0.9, 0.95), weight decay 0.05, lr 1e-3 x batch / 256, warm-up 20
epochs then cosine over 500 epochs (per-epoch steps, as the original's LambdaLR); scheduled
masking; the frozen tokenizer gives the tokens. ``total_steps`` defaults to 500 epochs of
``steps_per_epoch`` examples: set ``--config.total_steps`` for your data size.
"""
from configs import common
from hmr_jax.training.config import base_config


def get_config():
    """The VQMAE pre-training stage."""
    c = base_config()
    c.stage = "mega_pretrain"
    c.mega = common.training_mega(common.released("mega_pretrained").mega)
    c.tokenizer = common.tokenizer()
    c.batch_size = 16
    c.total_steps = 500_000
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.checkpoint.every_steps = 2000
    c.optim.update(common.MEGA_OPTIM, total_epochs=500.0)
    c.data.train = ""
    c.data.val = ""
    return c
