"""VQ-HPS training with the hrnet backbone (the original ``train_mesh_regressor.py``, ``configs/config.yaml``).

    python train.py --config configs/train_vqhps_hrnet.py --workdir runs/vqhps_hrnet \\
        --config.tokenizer.path=converted/mesh_vqvae_54 --config.init.backbone=converted/BACKBONE \\
        --config.data.train=datasets/coco,datasets/3dpw_train --config.tpose=body_models/tpose.npy

AdamW (0.9, 0.999), lr 1e-4 (not scaled by batch), weight decay 1e-3, StepLR: x0.1 every
100 epochs, 200 epochs, batch 32; regressor: model_dim 512, 8 heads, ff 1024, 1 + 1 layers,
dropout 0.2, autoregressive head; augmentation and flips on.
Model sizes: the ``vqhps`` / ``backbone`` entries of ``configs/vqhps_hrnet.py`` (the released model).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.train_mega_backbones import vqhps_config  # noqa: E402


def get_config():
    """The VQ-HPS stage with the hrnet backbone (see ``configs/train_mega_backbones.py``)."""
    return vqhps_config("hrnet")
