"""MEGA training with the vit backbone (the original ``train_mega.py``, ``config_cvqmae/config_vit``).

    python train.py --config configs/train_mega_vit.py --workdir runs/mega_vit \\
        --config.tokenizer.path=converted/mesh_vqvae_54 --config.init.mega=runs/mega_pretrain \\
        --config.init.backbone=converted/BACKBONE --config.data.train=datasets/coco,datasets/3dpw_train

CVQMAE on the backbone's condition tokens, starting from the pre-trained VQMAE and the
converted pre-trained backbone. AdamW (0.9, 0.95), wd 0.05, lr 1e-3 x batch / 256, warm-up
20 epochs then cosine over 200; loss = masked cross-entropy + rotation + 2D reprojection.
No augmentation (as the released models). Joint regressors from ``body_models/``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import train_mega_pretrain  # noqa: E402
from configs.train_mega_backbones import backbone_config  # noqa: E402


def get_config():
    c = train_mega_pretrain.get_config()
    c.stage = "mega"
    c.backbone = backbone_config("vit")
    c.mega.update(cond_length=c.backbone.cond_length, cond_dim=c.backbone.cond_dim, cond_dropout=0.0)
    c.batch_size = c.backbone.batch_size
    c.optim.total_epochs = 200.0
    c.body_models = "body_models"
    c.require_smpl24 = True
    c.init = dict(mega="", backbone="")
    c.data.augment = False
    c.data.flip = False
    return c
