"""MEGA pre-training: VQMAE on mesh tokens (the original ``pretrain_mega.py``, ``config_vqmae``).

    python train.py --config configs/train_mega_pretrain.py --workdir runs/mega_pretrain \\
        --config.tokenizer.path=converted/mesh_vqvae_54 \\
        --config.data.train=datasets/bedlam_animations --config.data.val=datasets/3dpw_val

AdamW (0.9, 0.95), weight decay 0.05, lr 1e-3 x batch / 256, warm-up 20 epochs then cosine
over 500 epochs (per-epoch steps, as the original's LambdaLR); scheduled masking; the frozen
tokenizer gives the tokens. ``total_steps`` defaults to 500 epochs of ``steps_per_epoch``
examples: set ``--config.total_steps`` for your data size.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from typing import Any, Mapping  # noqa: E402

import ml_collections  # noqa: E402

from configs.train_mega_backbones import released_config  # noqa: E402
from hmr_jax.training.config import base_config  # noqa: E402


def training_mega(released: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A released config's ``mega`` entry plus the training-only masking settings
    (``masking="scheduled"``: MEGA's cosine-scheduled ratio; ``mask_ratio`` for ``"random"``)."""
    m = ml_collections.ConfigDict(dict(released))
    m.masking = "scheduled"
    m.mask_ratio = 1.0
    return m


def mega_model(**overrides) -> ml_collections.ConfigDict:
    """The released VQMAE sizes (``configs/mega_pretrained.py``: emb 1024, 12 encoder / 4
    decoder layers, 4 heads) with the masking settings, updated with ``overrides``."""
    m = training_mega(released_config("mega_pretrained").mega)
    m.update(overrides)
    return m


def get_config():
    c = base_config()
    c.stage = "mega_pretrain"
    c.mega = mega_model()
    c.tokenizer = ml_collections.ConfigDict(dict(path="checkpoint/mesh_vqvae_54_converted",
                                                 connection_folder=""))
    c.batch_size = 16
    c.total_steps = 500_000
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.checkpoint.every_steps = 2000
    c.optim.update(name="adamw", base_lr=1e-3, scale_by_batch=True, b1=0.9, b2=0.95,
                   weight_decay=0.05, schedule="warmup_cosine", warmup_epochs=20.0,
                   total_epochs=500.0, per_epoch=True)
    c.data.train = ""
    c.data.val = ""
    return c
