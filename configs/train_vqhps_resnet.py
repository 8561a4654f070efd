"""VQ-HPS training with the resnet backbone (the original ``train_mesh_regressor.py``, ``configs/config.yaml``).

    python train.py --config configs/train_vqhps_resnet.py --workdir runs/vqhps_resnet \\
        --config.tokenizer.path=converted/mesh_vqvae_54 --config.init.backbone=converted/BACKBONE \\
        --config.data.train=datasets/coco,datasets/3dpw_train --config.tpose=body_models/tpose.npy

AdamW (0.9, 0.999), lr 1e-4 (not scaled by batch), weight decay 1e-3, StepLR: x0.1 every
100 epochs, 200 epochs, batch 32; regressor: model_dim 512, 8 heads, ff 1024, 1 + 1 layers,
dropout 0.2, autoregressive head; augmentation and flips on.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402

from configs.train_mega_backbones import backbone_config  # noqa: E402
from hmr_jax.training.config import base_config  # noqa: E402


def get_config():
    c = base_config()
    c.stage = "vqhps"
    c.backbone = backbone_config("resnet")
    c.vqhps = ml_collections.ConfigDict(dict(
        model_dim=512, num_heads=8, feedforward_dim=1024, num_enc_layers=1, num_dec_layers=1,
        dict_size=512, num_tokens=54, dropout=0.2, autoreg=True, seq_len=49, pose_dim=51))
    c.tokenizer = ml_collections.ConfigDict(dict(path="checkpoint/mesh_vqvae_54_converted",
                                                 connection_folder=""))
    c.body_models = "body_models"
    c.require_smpl24 = True
    c.num_vertices = 6890
    c.tpose = "body_models/tpose.npy"
    c.init = dict(backbone="")
    c.batch_size = 32
    c.total_steps = 400_000
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.checkpoint.every_steps = 2000
    c.optim.update(name="adamw", base_lr=1e-4, scale_by_batch=False, b1=0.9, b2=0.999,
                   weight_decay=1e-3, schedule="step", step_epochs=100, gamma=0.1)
    c.data.train = ""
    c.data.val = ""
    c.data.augment = True
    c.data.flip = True
    return c
