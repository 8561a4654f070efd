"""Model entries of the released MEGA / VQ-HPS configs, for the training configs (imported by
``configs/train_mega_*.py`` and ``configs/train_vqhps_*.py``; not a config itself).

The released-model configs (``configs/mega_*.py``, ``configs/vqhps_*.py``) are the one source of
the model sizes: a training config copies its ``mega`` / ``vqhps`` / ``backbone`` entries from
there, so a model trained here has the shapes of the released checkpoint of the same name.

``backbone_config(kind)``: ``kind`` picks the crop (hrnet / resnet: 224 x 224, vit: 256 x 192);
``model`` is the ``hmr_jax.models.backbones.build_backbone`` config; ``cond_length`` x
``cond_dim`` the condition tokens it yields; ``batch_size`` the original MEGA run's batch.
"""
import importlib.util
import os

import ml_collections

_HERE = os.path.dirname(os.path.abspath(__file__))

# The original MEGA trainings' batch per backbone (config_cvqmae/config_*.yaml).
_BATCH_SIZE = {"hrnet": 16, "resnet": 4, "vit": 16}
# Condition tokens the backbone really yields. The released ViT config (from config_vit.yaml)
# says 196 but a 256 x 192 crop gives 16 x 12 = 192 tokens (see configs/mega_vit.py); training
# uses the real count. HRNet / ResNet: the released value (7 x 7).
_COND_LENGTH = {"vit": 192}


def released_config(name: str) -> ml_collections.ConfigDict:
    """``configs/NAME.py``'s ``get_config()`` (a released-model config, e.g. ``mega_hrnet``)."""
    path = os.path.join(_HERE, name + ".py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no released-model config {path}")
    spec = importlib.util.spec_from_file_location(f"_released_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def backbone_config(kind: str, released: str = "") -> ml_collections.ConfigDict:
    """ConfigDict ``{kind, model, cond_length, cond_dim, batch_size}`` for hrnet / resnet / vit.

    ``model`` comes from the released config ``released`` (default ``mega_{kind}``; VQ-HPS
    passes ``vqhps_{kind}``), ``cond_dim`` / ``cond_length`` from ``mega_{kind}``.
    """
    if kind not in _BATCH_SIZE:
        raise ValueError(f"backbone {kind!r} unknown; choose one of {sorted(_BATCH_SIZE)}")
    mega = released_config(f"mega_{kind}")
    model = released_config(released).backbone if released else mega.backbone
    return ml_collections.ConfigDict(dict(
        kind=kind, model=model.to_dict(),
        cond_length=_COND_LENGTH.get(kind, mega.mega.cond_length), cond_dim=mega.mega.cond_dim,
        batch_size=_BATCH_SIZE[kind]))


def mega_image_config(kind: str) -> ml_collections.ConfigDict:
    """The MEGA training config (``train_mega_{kind}.py``) on top of the pre-training one: the
    released ``mega_{kind}`` model entries, the original's batch, 200 epochs, no augmentation."""
    from configs import train_mega_pretrain

    c = train_mega_pretrain.get_config()
    c.stage = "mega"
    c.backbone = backbone_config(kind)
    c.mega = train_mega_pretrain.training_mega(released_config(f"mega_{kind}").mega)
    c.mega.cond_length = c.backbone.cond_length
    c.batch_size = c.backbone.batch_size
    c.optim.total_epochs = 200.0
    # loss = w_ce * cross-entropy + w_rot * rotation + w_2d * reprojection (all 1 in the original)
    c.loss_weights = ml_collections.ConfigDict(dict(cross_entropy=1.0, rotation=1.0, reprojection=1.0))
    c.body_models = "body_models"
    c.require_smpl24 = True
    c.init = dict(mega="", backbone="")
    c.data.augment = False
    c.data.flip = False
    return c


def vqhps_config(kind: str) -> ml_collections.ConfigDict:
    """The VQ-HPS training config (``train_vqhps_{kind}.py``): the released ``vqhps_{kind}``
    model entries and the original ``train_mesh_regressor.py`` recipe."""
    from hmr_jax.training.config import base_config

    released = released_config(f"vqhps_{kind}")
    c = base_config()
    c.stage = "vqhps"
    c.backbone = backbone_config(kind, released=f"vqhps_{kind}")
    c.vqhps = released.vqhps.to_dict()
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
