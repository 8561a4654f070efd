"""Backbone settings of the released MEGA / VQ-HPS trainings (imported by the train_* configs).

``kind`` picks the crop (hrnet / resnet: 224 x 224, vit: 256 x 192); ``model`` is the
``hmr_jax.models.backbones.build_backbone`` config; ``cond_length`` x ``cond_dim`` the
condition tokens it yields; ``batch_size`` the original's per-run batch.
"""
import ml_collections

_BACKBONES = {
    "hrnet": dict(model=dict(backbone="hrnet", width=48, head="downsample_conv"),
                  cond_length=49, cond_dim=720, batch_size=16),
    "resnet": dict(model=dict(backbone="resnet50", layers=(3, 4, 6, 3)),
                   cond_length=49, cond_dim=2048, batch_size=4),
    "vit": dict(model=dict(backbone="vit", embed_dim=1280, depth=32, num_heads=16),
                cond_length=192, cond_dim=1280, batch_size=16),
}


def backbone_config(kind: str) -> ml_collections.ConfigDict:
    """ConfigDict ``{kind, model, cond_length, cond_dim, batch_size}`` for hrnet / resnet / vit."""
    if kind not in _BACKBONES:
        raise ValueError(f"backbone {kind!r} unknown; choose one of {sorted(_BACKBONES)}")
    return ml_collections.ConfigDict(dict(kind=kind, **_BACKBONES[kind]))
