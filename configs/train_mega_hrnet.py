"""MEGA training with the hrnet backbone (the original ``train_mega.py``, ``config_cvqmae/config_hrnet``).

    python train.py --config configs/train_mega_hrnet.py --workdir runs/mega_hrnet \\
        --config.tokenizer.path=converted/mesh_vqvae_54 --config.init.mega=runs/mega_pretrain \\
        --config.init.backbone=converted/BACKBONE --config.data.train=datasets/coco,datasets/3dpw_train

CVQMAE on the backbone's condition tokens, starting from the pre-trained VQMAE and the
converted pre-trained backbone. AdamW (0.9, 0.95), wd 0.05, lr 1e-3 x batch / 256, warm-up
20 epochs then cosine over 200; loss = masked cross-entropy + rotation + 2D reprojection.
No augmentation (as the released models). Joint regressors from ``body_models/``.
Model sizes: the ``mega`` / ``backbone`` entries of ``configs/mega_hrnet.py`` (the released model).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.train_mega_backbones import mega_image_config  # noqa: E402


def get_config():
    """The MEGA stage with the hrnet backbone (see ``configs/train_mega_backbones.py``)."""
    return mega_image_config("hrnet")
