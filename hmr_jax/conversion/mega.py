"""Import MEGA checkpoints: ``mega_pretrained`` (VQMAE) and ``mega_hrnet`` / ``mega_resnet`` / ``mega_vit`` (CVQMAE).

Key layout of the original (after the ``module.`` prefix, if any, is stripped):

* ``encoder.cls_token`` (1, 1, C), ``encoder.pos_embedding`` (T, 1, C), ``encoder.proj.weight``
  (V, C) (token embedding), ``encoder.transformer.{i}.*`` (timm Blocks: ``norm1``,
  ``attn.qkv`` (3C, C) without bias, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``),
  ``encoder.layer_norm``;
* ``decoder.mask_token``, ``decoder.pos_embedding`` (T + 1, 1, C), ``decoder.transformer.{i}.*``,
  ``decoder.head``; CVQMAE adds ``decoder.cond_emb``, ``decoder.rotcam_head.{0,2}``,
  ``decoder.rot_predictor``, ``decoder.cam_predictor`` and the backbone under ``backbone.``
  (converted by :func:`hmr_jax.conversion.backbones.convert_backbone`).

Sizes (width, depths, vocabulary, ``cond_dim``) are read from the shapes; the number of heads
and ``cond_length`` are not visible in the weights: they come from the config (a parity fixture
JSON works as it is) or the release presets (:data:`PRESETS`, from the released-model configs
``configs/mega_*.py``: 4 heads; ``cond_length`` 49, 196 for the ViT as in ``config_vit.yaml``).
The ``--verify`` runs on the ``mega_vqmae_*`` / ``mega_cvqmae_*`` fixtures are in
:mod:`hmr_jax.conversion.fixtures`.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from configs import mega_hrnet, mega_pretrained, mega_resnet, mega_vit
from hmr_jax.conversion.backbones import backbone_kind, convert_backbone
from hmr_jax.conversion.common import (
    ConversionError,
    StateDict,
    count_blocks,
    dense,
    layer_norm,
    user_config,
)

#: The checkpoint kinds of this family, with what each is.
KINDS = {
    "mega_pretrained": "MEGA VQMAE pre-trained on meshes (unconditional; zenodo checkpoint/VQMAE/mega_pretrained)",
    "mega_hrnet": "MEGA CVQMAE with the HRNet-w48 backbone (checkpoint/CVQMAE/mega_hrnet)",
    "mega_resnet": "MEGA CVQMAE with the ResNet-50 backbone (checkpoint/CVQMAE/mega_resnet)",
    "mega_vit": "MEGA CVQMAE with the ViT-H (ViTPose) backbone (checkpoint/CVQMAE/mega_vit)",
}


def _preset(released) -> dict:
    """What the weights do not say, from a released-model config: the heads and, for CVQMAE,
    ``cond_length``, the backbone name and the crop size."""
    preset = {k: released.mega[k] for k in ("encoder_head", "decoder_head", "cond_length") if k in released.mega}
    if "backbone" in released:
        preset.update(backbone=released.backbone.backbone, image_size=list(released.image_size))
    return preset


#: Release presets per kind, from ``configs/mega_*.py`` (the originals' config_cvqmae/*.yaml, config_vqmae).
PRESETS = {c.model: _preset(c) for c in (m.get_config() for m in (mega_pretrained, mega_hrnet, mega_resnet, mega_vit))}

_BACKBONE_OF = {"hrnet": "mega_hrnet", "resnet50": "mega_resnet", "vit": "mega_vit"}


def _model_section(config: Mapping[str, Any] | None) -> dict:
    """MEGA's keys of a user config: its ``mega`` or ``model`` section, else its flat keys."""
    cfg = user_config(config)
    for key in ("mega", "model"):
        if isinstance(cfg.get(key), Mapping):
            return dict(cfg[key])
    return {k: v for k, v in cfg.items() if not isinstance(v, Mapping)}


def _backbone_section(config: Mapping[str, Any] | None) -> dict | None:
    """The backbone keys of a user config (its ``backbone`` section, without the originals'
    ``type`` / ``pretrained``), or None."""
    section = user_config(config).get("backbone", {})
    if not isinstance(section, Mapping):
        return None
    return {k: v for k, v in section.items() if k not in ("type", "pretrained")} or None


def _is_mega(keys) -> bool:
    s = set(keys)
    return {"encoder.cls_token", "encoder.proj.weight", "decoder.mask_token", "decoder.head.weight"} <= s


def detect(keys, name: str) -> bool:
    """Whether a state dict with these keys is a MEGA checkpoint of kind ``name`` (:data:`KINDS`)."""
    if not _is_mega(keys):
        return False
    kind = backbone_kind(keys, "backbone.")
    conditional = "decoder.cond_emb.weight" in set(keys)
    if name == "mega_pretrained":
        return kind is None and not conditional
    return conditional and _BACKBONE_OF.get(kind) == name


def timm_block(state: StateDict, prefix: str) -> dict:
    """A timm ``Block`` (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1/fc2``) -> Block params."""
    attn = {"qkv": dense(state, prefix + "attn.qkv", bias=prefix + "attn.qkv.bias" in state),
            "proj": dense(state, prefix + "attn.proj")}
    return {"norm1": layer_norm(state, prefix + "norm1"), "attn": attn, "norm2": layer_norm(state, prefix + "norm2"),
            "mlp": {"fc1": dense(state, prefix + "mlp.fc1"), "fc2": dense(state, prefix + "mlp.fc2")}}


def _vector(state: StateDict, key: str) -> np.ndarray:
    """(1, 1, C) / (T, 1, C) tokens -> (C,) / (T, C)."""
    v = state.take(key)
    return v.reshape(-1) if v.shape[0] == 1 else v.reshape(v.shape[0], v.shape[-1])


def convert_transformer(state: StateDict, conditional: bool) -> tuple[dict, dict]:
    """Encoder + decoder params (everything but the backbone) and the sizes read from them."""
    enc_layers = count_blocks(state, "encoder.transformer.")
    dec_layers = count_blocks(state, "decoder.transformer.")
    encoder = {
        "cls_token": _vector(state, "encoder.cls_token"),
        "pos_embedding": _vector(state, "encoder.pos_embedding"),
        "token_embedding": {"embedding": state.take("encoder.proj.weight")},
        "layer_norm": layer_norm(state, "encoder.layer_norm"),
    }
    for i in range(enc_layers):
        encoder[f"blocks_{i}"] = timm_block(state, f"encoder.transformer.{i}.")
    decoder = {
        "mask_token": _vector(state, "decoder.mask_token"),
        "pos_embedding": _vector(state, "decoder.pos_embedding"),
        "head": dense(state, "decoder.head"),
    }
    for i in range(dec_layers):
        decoder[f"blocks_{i}"] = timm_block(state, f"decoder.transformer.{i}.")
    sizes = {
        "seq_length": int(encoder["pos_embedding"].shape[0]),
        "emb_dim": int(encoder["cls_token"].shape[0]),
        "encoder_layer": enc_layers,
        "decoder_layer": dec_layers,
        "num_embeddings": int(encoder["token_embedding"]["embedding"].shape[0]),
        "dim_tokens": int(decoder["head"]["bias"].shape[0]),
    }
    if decoder["pos_embedding"].shape[0] != sizes["seq_length"] + 1:
        raise ConversionError("decoder.pos_embedding must have seq_length + 1 rows")
    if conditional:
        decoder["cond_emb"] = dense(state, "decoder.cond_emb")
        decoder["rotcam_0"] = dense(state, "decoder.rotcam_head.0")
        decoder["rotcam_1"] = dense(state, "decoder.rotcam_head.2")
        decoder["rot_predictor"] = dense(state, "decoder.rot_predictor")
        decoder["cam_predictor"] = dense(state, "decoder.cam_predictor")
        sizes["cond_dim"] = int(decoder["cond_emb"]["kernel"].shape[0])
    return {"encoder": encoder, "decoder": decoder}, sizes


def _check_kind(state: StateDict, name: str) -> str | None:
    """The backbone kind under ``backbone.``, checked against the kind ``name`` asked for."""
    if not _is_mega(state.keys()):
        raise ConversionError(f"{state.what}: not a MEGA checkpoint (no encoder.cls_token / decoder.head)")
    kind = backbone_kind(state.keys(), "backbone.")
    if name != "mega_pretrained" and _BACKBONE_OF.get(kind) != name:
        raise ConversionError(
            f"{state.what}: a {name} checkpoint needs a {PRESETS[name]['backbone']} backbone under "
            f"'backbone.', found {kind or 'none'}")
    if name == "mega_pretrained" and kind is not None:
        raise ConversionError(f"{state.what}: mega_pretrained (VQMAE) has no backbone, found {kind}")
    return kind


def _mega_config(state: StateDict, name: str, user: Mapping[str, Any], sizes: Mapping[str, int]) -> dict:
    """The ``mega`` config: the preset, what the user config sets, the sizes the weights show."""
    mega_cfg = {**PRESETS[name], **{k: user[k] for k in (
        "encoder_head", "decoder_head", "cond_length", "cond_dropout") if k in user}}
    for key, value in sizes.items():
        if key in user and int(user[key]) != value:
            raise ConversionError(f"{state.what}: config says {key}={user[key]} but the weights have {value}")
    mega_cfg.update(sizes)
    for h in ("encoder_head", "decoder_head"):
        if mega_cfg["emb_dim"] % int(mega_cfg[h]):
            raise ConversionError(f"{h}={mega_cfg[h]} does not divide emb_dim={mega_cfg['emb_dim']}")
    return {k: v for k, v in mega_cfg.items() if k not in ("backbone", "image_size")}


def convert(state: StateDict, config: Mapping[str, Any] | None, name: str) -> tuple[dict, dict]:
    """Convert a MEGA state dict of kind ``name`` -> (variables, config)."""
    kind = _check_kind(state, name)
    conditional = name != "mega_pretrained"
    user = _model_section(config)
    params, sizes = convert_transformer(state, conditional)
    variables: dict = {"params": params}
    out_cfg: dict = {"mega": _mega_config(state, name, user, sizes)}
    if conditional:
        bb_vars, bb_cfg = convert_backbone(state, kind, "backbone.", _backbone_section(config))
        variables["params"]["backbone"] = bb_vars["params"]
        if "batch_stats" in bb_vars:
            variables["batch_stats"] = {"backbone": bb_vars["batch_stats"]}
        out_cfg["backbone"] = bb_cfg
        out_cfg["image_size"] = list(user.get("image_size", PRESETS[name]["image_size"]))
    return variables, out_cfg
