"""VQ-HPS training (the original ``train_mesh_regressor.py``, ``configs/config.yaml``).

    python train.py --config configs/train_vqhps.py:hrnet --workdir runs/vqhps_hrnet \\
        --config.tokenizer.path=converted/mesh_vqvae_54 --config.init.backbone=converted/BACKBONE \\
        --config.data.train=datasets/coco,datasets/3dpw_train --config.tpose=body_models/tpose.npy

The argument picks the backbone: ``:hrnet`` or ``:resnet`` (its crop and the released
``configs/vqhps_{hrnet,resnet}.py`` model sizes). AdamW (0.9, 0.999), lr 1e-4 (not scaled by
batch), weight decay 1e-3, StepLR: x0.1 every 100 epochs, 200 epochs, batch 32; regressor:
model_dim 512, 8 heads, ff 1024, 1 + 1 layers, dropout 0.2, autoregressive head; augmentation
and flips on.
"""
from configs import common
from hmr_jax.training.config import base_config

BACKBONES = ("hrnet", "resnet")


def get_config(arg=None):
    """The VQ-HPS stage with the backbone ``arg`` (one of ``BACKBONES``)."""
    kind = common.argument(arg, BACKBONES, "configs/train_vqhps.py")
    c = base_config()
    c.stage = "vqhps"
    c.backbone = common.backbone(kind, model_from=f"vqhps_{kind}")
    c.vqhps = common.released(f"vqhps_{kind}").vqhps.to_dict()
    c.tokenizer = common.tokenizer()
    c.init = dict(backbone="")
    c.body_models = "body_models"
    c.require_smpl24 = True
    c.num_vertices = 6890
    c.tpose = "body_models/tpose.npy"
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
