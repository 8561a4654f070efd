"""MEGA training (the original ``train_mega.py``, ``config_cvqmae/config_{hrnet,resnet,vit}.yaml``).

    python train.py --config configs/train_mega.py:hrnet --workdir runs/mega_hrnet \\
        --config.tokenizer.path=converted/mesh_vqvae_54 --config.init.mega=runs/mega_pretrain \\
        --config.init.backbone=converted/BACKBONE --config.data.train=datasets/coco,datasets/3dpw_train

The argument picks the backbone: ``:hrnet``, ``:resnet`` or ``:vit`` (its crop, the released
``configs/mega_{hrnet,resnet,vit}.py`` model sizes and the original run's batch: 16, 4, 16).
CVQMAE on the backbone's condition tokens, starting from the pre-trained VQMAE
(``configs/train_mega_pretrain.py``) and the converted pre-trained backbone. AdamW (0.9, 0.95),
wd 0.05, lr 1e-3 x batch / 256, warm-up 20 epochs then cosine over 200 (per-epoch steps);
loss = masked cross-entropy + rotation + 2D reprojection. No augmentation (as the released
models). Joint regressors from ``body_models/``. ViT: ``cond_length`` 192, the real token count
(``configs/mega_vit.py``'s 196 comes from config_vit.yaml).
"""
import ml_collections

from configs import common
from hmr_jax.training.config import base_config

BACKBONES = ("hrnet", "resnet", "vit")


def get_config(arg=None):
    """The MEGA stage with the backbone ``arg`` (one of ``BACKBONES``)."""
    kind = common.argument(arg, BACKBONES, "configs/train_mega.py")
    c = base_config()
    c.stage = "mega"
    c.backbone = common.backbone(kind)
    c.mega = common.training_mega(common.released(f"mega_{kind}").mega)
    c.mega.cond_length = c.backbone.cond_length
    c.tokenizer = common.tokenizer()
    c.init = dict(mega="", backbone="")
    c.body_models = "body_models"
    c.require_smpl24 = True
    c.batch_size = c.backbone.batch_size
    c.total_steps = 500_000
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.checkpoint.every_steps = 2000
    c.optim.update(common.MEGA_OPTIM, total_epochs=200.0)
    # loss = w_ce * cross-entropy + w_rot * rotation + w_2d * reprojection (all 1 in the original)
    c.loss_weights = ml_collections.ConfigDict(dict(cross_entropy=1.0, rotation=1.0, reprojection=1.0))
    c.data.train = ""
    c.data.val = ""
    c.data.augment = False
    c.data.flip = False
    return c
