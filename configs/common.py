"""What the training recipes share (not a config itself): the released models' entries, the
tokenizer entry, MEGA's optimizer and the check of a config argument.

The released-model configs (``configs/mega_*.py``, ``configs/vqhps_*.py``) are the one source of
the model sizes: a recipe copies its ``mega`` / ``vqhps`` / ``backbone`` entries from them, so a
model trained here has the shapes of the released checkpoint of the same name.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import ml_collections

from configs import mega_hrnet, mega_pretrained, mega_resnet, mega_vit, vqhps_hrnet, vqhps_resnet

#: The released-model config modules by name (``configs/NAME.py``).
RELEASED = {m.__name__.rsplit(".", 1)[-1]: m
            for m in (mega_pretrained, mega_hrnet, mega_resnet, mega_vit, vqhps_hrnet, vqhps_resnet)}
#: The original MEGA trainings' batch per backbone (config_cvqmae/config_*.yaml).
BATCH_SIZE = {"hrnet": 16, "resnet": 4, "vit": 16}
#: Condition tokens a backbone really yields where the released config says otherwise: the ViT
#: config (from config_vit.yaml) says 196 but a 256 x 192 crop gives 16 x 12 = 192 tokens (see
#: configs/mega_vit.py); training uses the real count. HRNet / ResNet: the released 7 x 7.
COND_LENGTH = {"vit": 192}
#: MEGA's optimizer, the same in pre-training and training (config_vqmae, config_cvqmae): AdamW
#: (0.9, 0.95), weight decay 0.05, lr 1e-3 x batch / 256, 20 warm-up epochs then cosine, the
#: schedule stepped once per epoch as the original's LambdaLR. The recipes add ``total_epochs``.
MEGA_OPTIM = dict(name="adamw", base_lr=1e-3, scale_by_batch=True, b1=0.9, b2=0.95, weight_decay=0.05,
                  schedule="warmup_cosine", warmup_epochs=20.0, per_epoch=True)


def released(name: str) -> ml_collections.ConfigDict:
    """``get_config()`` of the released-model config ``configs/NAME.py`` (e.g. ``mega_hrnet``)."""
    if name not in RELEASED:
        raise ValueError(f"no released-model config {name!r}; choose one of {sorted(RELEASED)}")
    return RELEASED[name].get_config()


def argument(arg: str | None, choices: Sequence[str], path: str) -> str:
    """The config argument ``arg`` (``--config PATH:ARG``) if it is one of ``choices``.

    ``""`` in ``choices`` accepts no argument. Raises ValueError naming ``path`` and the
    accepted ``PATH[:ARG]`` forms.
    """
    arg = arg or ""
    if arg not in choices:
        forms = ", ".join(f"{path}:{c}" if c else path for c in choices)
        got = f"argument {arg!r}" if arg else "no argument"
        raise ValueError(f"{path} got {got}; use {forms}")
    return arg


def tokenizer() -> ml_collections.ConfigDict:
    """The frozen tokenizer entry: ``path`` of a converted or trained Mesh-VQ-VAE, and its
    ``connection_folder`` ("" = the one recorded with it)."""
    return ml_collections.ConfigDict(dict(path="checkpoint/mesh_vqvae_54_converted", connection_folder=""))


def training_mega(sizes: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A released config's ``mega`` entry plus the training-only masking settings
    (``masking="scheduled"``: MEGA's cosine-scheduled ratio; ``mask_ratio`` for ``"random"``;
    ``visible_buckets``: the encoder runs on the visible tokens padded to one of that many
    lengths, one compiled step each -- 0 = every position, one step; see
    ``hmr_jax.models.mega.visible_buckets``)."""
    m = ml_collections.ConfigDict(dict(sizes))
    m.masking = "scheduled"
    m.mask_ratio = 1.0
    m.visible_buckets = 4
    return m


def backbone(kind: str, model_from: str = "") -> ml_collections.ConfigDict:
    """ConfigDict ``{kind, model, cond_length, cond_dim, batch_size}`` for hrnet / resnet / vit.

    ``kind`` picks the crop (hrnet / resnet: 224 x 224, vit: 256 x 192); ``model`` (the
    ``hmr_jax.models.backbones.build_backbone`` config) comes from the released config
    ``model_from`` (default ``mega_{kind}``; VQ-HPS passes ``vqhps_{kind}``); ``cond_length`` x
    ``cond_dim``, the condition tokens it yields, from ``mega_{kind}``; ``batch_size`` is the
    original MEGA run's batch.
    """
    if kind not in BATCH_SIZE:
        raise ValueError(f"backbone {kind!r} unknown; choose one of {sorted(BATCH_SIZE)}")
    mega = released(f"mega_{kind}")
    model = released(model_from).backbone if model_from else mega.backbone
    return ml_collections.ConfigDict(dict(
        kind=kind, model=model.to_dict(),
        cond_length=COND_LENGTH.get(kind, mega.mega.cond_length), cond_dim=mega.mega.cond_dim,
        batch_size=BATCH_SIZE[kind]))
