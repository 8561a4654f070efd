"""Import VQ-HPS checkpoints: ``vqhps_hrnet`` and ``vqhps_resnet`` (the ``MeshRegressor``).

Key layout (after any ``module.`` prefix is stripped):

* ``backbone_pose.*``, ``backbone_rot.*``: two backbones of the same kind, converted by
  :func:`hmr_jax.conversion.backbones.convert_backbone` (ResNet's ``backbone_rot`` is
  ``children()[:-1]``: the same keys, its extra average pool has no weights);
* ``conv_1x1``, ``fc1``, ``fc2``, ``rot_predictor``, ``cam_predictor``, ``mesh_token_embed``;
* ``transformer.encoder.layers.{i}`` / ``transformer.decoder.layers.{i}`` (torch
  ``nn.MultiheadAttention``: ``in_proj_weight`` = [q; k; v] stacked, ``out_proj``; ``linear1/2``;
  ``norm1..3``), ``transformer.{encoder,decoder}.norm``;
* ``transformer.dec_head.blocks.{i}`` (``ln1``, ``ln2``, ``attn.{query,key,value,proj}``,
  ``attn.mask`` = the causal mask, checked to be lower-triangular, ``mlp.0``, ``mlp.2``),
  ``transformer.dec_head.ln_f``, ``transformer.dec_head.head`` (no bias);
  ``indices_regressor`` instead of ``dec_head`` when ``autoreg`` is off.

The original loader (``MeshRegressor.load``) silently drops every key containing
``rotcam_feat`` (left-overs of an earlier model in some files). They are dropped here too --
no module uses them -- but recorded, with the reason, in ``conversion.json``'s ignored keys, so
nothing is dropped silently.

The number of heads and the dropout rate are not in the weights: from the config (a parity
fixture JSON works: ``config.transformer``) or the release presets (:data:`PRESETS`, from
``configs/vqhps_*.py``, the original ``configs/transformer.txt``: 8 heads, dropout 0.2).
The ``--verify`` run on the ``vqhps_regressor_*`` fixtures is in :mod:`hmr_jax.conversion.fixtures`.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from configs import vqhps_hrnet, vqhps_resnet
from hmr_jax.conversion.backbones import backbone_kind, convert_backbone
from hmr_jax.conversion.common import (
    ConversionError,
    StateDict,
    conv_kernel,
    count_blocks,
    dense,
    dense_kernel,
    layer_norm,
    user_config,
)

#: The checkpoint kinds of this family, with what each is.
KINDS = {
    "vqhps_hrnet": "VQ-HPS mesh regressor with two HRNet-w48 backbones (checkpoint/MESH_REGRESSOR/vqhps_hrnet)",
    "vqhps_resnet": "VQ-HPS mesh regressor with two ResNet-50 backbones (checkpoint/MESH_REGRESSOR/vqhps_resnet)",
}
#: Release presets per kind, from ``configs/vqhps_*.py`` (the originals' configs/transformer.txt):
#: what the weights do not say.
PRESETS = {c.model: {"num_heads": c.vqhps.num_heads, "dropout": c.vqhps.dropout, "seq_len": c.vqhps.seq_len,
                     "image_size": list(c.image_size)}
           for c in (vqhps_hrnet.get_config(), vqhps_resnet.get_config())}
_BACKBONE_OF = {"hrnet": "vqhps_hrnet", "resnet50": "vqhps_resnet"}
ROTCAM_FEAT_REASON = "contains 'rotcam_feat': dropped by the original MeshRegressor.load (no module uses it)"
# Names of the original configs/transformer.txt -> ours.
_TRANSFORMER_KEYS = (("nhead", "num_heads"), ("dropout", "dropout"), ("model_dim", "model_dim"),
                     ("feedforward_dim", "feedforward_dim"), ("dict_size", "dict_size"))


def _is_vqhps(keys) -> bool:
    s = set(keys)
    return "mesh_token_embed.weight" in s and "transformer.encoder.layers.0.self_attn.in_proj_weight" in s


def detect(keys, name: str) -> bool:
    """Whether a state dict with these keys is a VQ-HPS checkpoint of kind ``name`` (:data:`KINDS`)."""
    return _is_vqhps(keys) and _BACKBONE_OF.get(backbone_kind(keys, "backbone_pose.")) == name


def _mha(state: StateDict, prefix: str) -> dict:
    w = state.take(prefix + "in_proj_weight")
    bias = state.take(prefix + "in_proj_bias")
    d = w.shape[1]
    if w.shape != (3 * d, d) or bias.shape != (3 * d,):
        raise ConversionError(f"{prefix}in_proj_weight / bias have shapes {w.shape} / {bias.shape}")
    out = {}
    for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
        out[name] = {"kernel": dense_kernel(w[j * d:(j + 1) * d]), "bias": bias[j * d:(j + 1) * d]}
    out["out_proj"] = dense(state, prefix + "out_proj")
    return out


def _user_sizes(config: Mapping[str, Any] | None) -> dict:
    """VQ-HPS's keys of a user config: ours (``vqhps`` or flat) or the original layout
    (``transformer`` of configs/transformer.txt, ``regressor.autoreg``)."""
    cfg = user_config(config)
    out = {}
    if isinstance(cfg.get("transformer"), Mapping):  # fixture / configs/transformer.txt layout
        t = cfg["transformer"]
        out.update({ours: t[theirs] for theirs, ours in _TRANSFORMER_KEYS if theirs in t})
    if isinstance(cfg.get("regressor"), Mapping) and "autoreg" in cfg["regressor"]:
        out["autoreg"] = bool(cfg["regressor"]["autoreg"])
    if isinstance(cfg.get("vqhps"), Mapping):
        out.update(cfg["vqhps"])
    out.update({k: v for k, v in cfg.items() if k in ("num_heads", "dropout", "seq_len", "image_size")})
    return out


def _check_kind(state: StateDict, name: str) -> str:
    """The backbone kind of ``backbone_pose`` (and ``backbone_rot``), checked against ``name``."""
    if not _is_vqhps(state.keys()):
        raise ConversionError(f"{state.what}: not a VQ-HPS checkpoint (no mesh_token_embed / transformer.encoder)")
    kind = backbone_kind(state.keys(), "backbone_pose.")
    if _BACKBONE_OF.get(kind) != name:
        raise ConversionError(f"{state.what}: backbone_pose is {kind}, which is not a {name} checkpoint")
    if backbone_kind(state.keys(), "backbone_rot.") != kind:
        raise ConversionError(f"{state.what}: backbone_rot is not a {kind} like backbone_pose")
    return kind


def _transformer(state: StateDict, p: dict) -> tuple[int, int]:
    """torch ``nn.Transformer`` encoder / decoder layers into ``p``; returns their numbers."""
    n_enc = count_blocks(state, "transformer.encoder.layers.")
    n_dec = count_blocks(state, "transformer.decoder.layers.")
    for i in range(n_enc):
        pre = f"transformer.encoder.layers.{i}."
        p[f"encoder_layers_{i}"] = {
            "self_attn": _mha(state, pre + "self_attn."), "linear1": dense(state, pre + "linear1"),
            "linear2": dense(state, pre + "linear2"), "norm1": layer_norm(state, pre + "norm1"),
            "norm2": layer_norm(state, pre + "norm2")}
    p["encoder_norm"] = layer_norm(state, "transformer.encoder.norm")
    for i in range(n_dec):
        pre = f"transformer.decoder.layers.{i}."
        p[f"decoder_layers_{i}"] = {
            "self_attn": _mha(state, pre + "self_attn."), "cross_attn": _mha(state, pre + "multihead_attn."),
            "linear1": dense(state, pre + "linear1"), "linear2": dense(state, pre + "linear2"),
            **{f"norm{j}": layer_norm(state, pre + f"norm{j}") for j in (1, 2, 3)}}
    p["decoder_norm"] = layer_norm(state, "transformer.decoder.norm")
    return n_enc, n_dec


def _dec_head(state: StateDict, p: dict, n_dec: int, num_tokens: int) -> None:
    """The autoregressive ``transformer.dec_head`` (minGPT blocks with their causal masks) into ``p``."""
    n_head = count_blocks(state, "transformer.dec_head.blocks.")
    if n_head != n_dec:
        raise ConversionError(f"dec_head has {n_head} blocks but the decoder {n_dec} layers (the original ties them)")
    for i in range(n_head):
        pre = f"transformer.dec_head.blocks.{i}."
        mask = state.take(pre + "attn.mask")
        t = mask.shape[-1]
        if not np.array_equal(mask.reshape(t, t), np.tril(np.ones((t, t), mask.dtype))):
            raise ConversionError(f"{pre}attn.mask is not the causal (lower-triangular) mask")
        if t < num_tokens:
            raise ConversionError(f"{pre}attn.mask covers {t} tokens, fewer than the {num_tokens} mesh tokens")
        q, k, v = (state.take(pre + f"attn.{n}.weight") for n in ("query", "key", "value"))
        qb, kb, vb = (state.take(pre + f"attn.{n}.bias") for n in ("query", "key", "value"))
        p[f"head_blocks_{i}"] = {
            "norm1": layer_norm(state, pre + "ln1"), "norm2": layer_norm(state, pre + "ln2"),
            "attn": {"qkv": {"kernel": dense_kernel(np.concatenate([q, k, v], 0)),
                             "bias": np.concatenate([qb, kb, vb])},
                     "proj": dense(state, pre + "attn.proj")},
            "mlp": {"fc1": dense(state, pre + "mlp.0"), "fc2": dense(state, pre + "mlp.2")}}
    p["head_norm"] = layer_norm(state, "transformer.dec_head.ln_f")
    p["head"] = dense(state, "transformer.dec_head.head", bias=False)


def _backbones(state: StateDict, p: dict, kind: str, config: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """``backbone_pose`` / ``backbone_rot`` params into ``p``; returns their batch stats and (one) config."""
    original = config.get("config") if config else None  # a parity fixture's original layout
    bb_user = {"width": original["hrnet_width"]} if isinstance(original, Mapping) and "hrnet_width" in original else None
    stats = {}
    bb_cfg = None
    for branch in ("backbone_pose", "backbone_rot"):
        bv, bc = convert_backbone(state, kind, branch + ".", bb_user)
        p[branch] = bv["params"]
        if "batch_stats" in bv:
            stats[branch] = bv["batch_stats"]
        if bb_cfg is not None and bc != bb_cfg:
            raise ConversionError(f"backbone_pose and backbone_rot differ: {bb_cfg} vs {bc}")
        bb_cfg = bc
    return stats, bb_cfg


def convert(state: StateDict, config: Mapping[str, Any] | None, name: str) -> tuple[dict, dict]:
    """Convert a VQ-HPS state dict of kind ``name`` -> (variables, config)."""
    kind = _check_kind(state, name)
    state.ignore([k for k in state.keys() if "rotcam_feat" in k], ROTCAM_FEAT_REASON)
    user = _user_sizes(config)
    p: dict[str, Any] = {}
    n_enc, n_dec = _transformer(state, p)
    autoreg = "transformer.dec_head.head.weight" in state
    num_tokens, model_dim = state.take("mesh_token_embed.weight").shape
    p["mesh_token_embed"] = state.take("mesh_token_embed.weight")
    if autoreg:
        _dec_head(state, p, n_dec, num_tokens)
        dict_size = p["head"]["kernel"].shape[1]
    else:
        p["indices_regressor"] = dense(state, "indices_regressor")
        dict_size = p["indices_regressor"]["kernel"].shape[1]
    p["conv_1x1"] = {"kernel": conv_kernel(state.take("conv_1x1.weight")), "bias": state.take("conv_1x1.bias")}
    for n in ("fc1", "fc2", "rot_predictor", "cam_predictor"):
        p[n] = dense(state, n)
    ff = p["encoder_layers_0"]["linear1"]["kernel"].shape[1] if n_enc else p["decoder_layers_0"]["linear1"]["kernel"].shape[1]
    stats, bb_cfg = _backbones(state, p, kind, config)
    img_dim = p["conv_1x1"]["kernel"].shape[2]
    pose_dim = p["fc1"]["kernel"].shape[0] - img_dim
    sizes = {"model_dim": int(model_dim), "feedforward_dim": int(ff), "num_enc_layers": n_enc,
             "num_dec_layers": n_dec, "dict_size": int(dict_size), "num_tokens": int(num_tokens),
             "autoreg": autoreg, "pose_dim": int(pose_dim)}
    for key, value in sizes.items():
        if key in user and user[key] != value:
            raise ConversionError(f"{state.what}: config says {key}={user[key]} but the weights have {value}")
    cfg = {**{k: PRESETS[name][k] for k in ("num_heads", "dropout", "seq_len")},
           **{k: user[k] for k in ("num_heads", "dropout", "seq_len") if k in user}, **sizes}
    if model_dim % int(cfg["num_heads"]):
        raise ConversionError(f"num_heads={cfg['num_heads']} does not divide model_dim={model_dim}")
    variables = {"params": p}
    if stats:
        variables["batch_stats"] = stats
    return variables, {"vqhps": cfg, "backbone": bb_cfg,
                       "image_size": list(user.get("image_size", PRESETS[name]["image_size"]))}
