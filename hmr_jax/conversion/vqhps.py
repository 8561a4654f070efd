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
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from configs import vqhps_hrnet, vqhps_resnet
from hmr_jax.conversion.common import ConversionError, StateDict, fixture_errors
from hmr_jax.conversion.mega import _count, _dense, _kernel, _ln
from hmr_jax.conversion.registry import register_variants

#: Release presets per kind, from ``configs/vqhps_*.py`` (the originals' configs/transformer.txt):
#: what the weights do not say.
PRESETS = {c.model: {"num_heads": c.vqhps.num_heads, "dropout": c.vqhps.dropout, "seq_len": c.vqhps.seq_len,
                     "image_size": list(c.image_size)}
           for c in (vqhps_hrnet.get_config(), vqhps_resnet.get_config())}
_BACKBONE_OF = {"hrnet": "vqhps_hrnet", "resnet50": "vqhps_resnet"}
ROTCAM_FEAT_REASON = "contains 'rotcam_feat': dropped by the original MeshRegressor.load (no module uses it)"


def backbone_kind(keys, prefix: str = "backbone_pose.") -> str | None:
    """``"hrnet"`` / ``"resnet50"`` for the backbone under ``prefix`` (None if absent)."""
    s = set(keys)
    if prefix + "conv1.weight" in s and any(k.startswith(prefix + "stage4.") for k in s):
        return "hrnet"
    if prefix + "0.weight" in s and prefix + "1.running_mean" in s:
        return "resnet50"
    return "unknown" if any(k.startswith(prefix) for k in s) else None


def _is_vqhps(keys) -> bool:
    s = set(keys)
    return "mesh_token_embed.weight" in s and "transformer.encoder.layers.0.self_attn.in_proj_weight" in s


def _detector(name: str):
    def detect(keys) -> bool:
        return _is_vqhps(keys) and _BACKBONE_OF.get(backbone_kind(keys)) == name
    return detect


def _mha(state: StateDict, prefix: str) -> dict:
    w = state.take(prefix + "in_proj_weight")
    bias = state.take(prefix + "in_proj_bias")
    d = w.shape[1]
    if w.shape != (3 * d, d) or bias.shape != (3 * d,):
        raise ConversionError(f"{prefix}in_proj_weight / bias have shapes {w.shape} / {bias.shape}")
    out = {}
    for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
        out[name] = {"kernel": _kernel(w[j * d:(j + 1) * d]), "bias": bias[j * d:(j + 1) * d]}
    out["out_proj"] = _dense(state, prefix + "out_proj")
    return out


def _user_config(config: Mapping[str, Any] | None) -> dict:
    if not config:
        return {}
    cfg = dict(config)
    if isinstance(cfg.get("config"), Mapping):
        cfg = dict(cfg["config"])
    out = {}
    if isinstance(cfg.get("transformer"), Mapping):  # fixture / configs/transformer.txt layout
        t = cfg["transformer"]
        out.update({k2: t[k1] for k1, k2 in (("nhead", "num_heads"), ("dropout", "dropout"),
                                             ("model_dim", "model_dim"), ("feedforward_dim", "feedforward_dim"),
                                             ("dict_size", "dict_size")) if k1 in t})
    if isinstance(cfg.get("regressor"), Mapping) and "autoreg" in cfg["regressor"]:
        out["autoreg"] = bool(cfg["regressor"]["autoreg"])
    if isinstance(cfg.get("vqhps"), Mapping):
        out.update(cfg["vqhps"])
    out.update({k: v for k, v in cfg.items() if k in ("num_heads", "dropout", "seq_len", "image_size")})
    return out


def convert(state: StateDict, config: Mapping[str, Any] | None, name: str) -> tuple[dict, dict]:
    """Convert a VQ-HPS state dict of kind ``name`` -> (variables, config)."""
    if not _is_vqhps(state.keys()):
        raise ConversionError(f"{state.what}: not a VQ-HPS checkpoint (no mesh_token_embed / transformer.encoder)")
    kind = backbone_kind(state.keys())
    if _BACKBONE_OF.get(kind) != name:
        raise ConversionError(f"{state.what}: backbone_pose is {kind}, which is not a {name} checkpoint")
    if backbone_kind(state.keys(), "backbone_rot.") != kind:
        raise ConversionError(f"{state.what}: backbone_rot is not a {kind} like backbone_pose")
    state.ignore([k for k in state.keys() if "rotcam_feat" in k], ROTCAM_FEAT_REASON)
    user = _user_config(config)

    p: dict[str, Any] = {}
    n_enc = _count(state, "transformer.encoder.layers.")
    n_dec = _count(state, "transformer.decoder.layers.")
    for i in range(n_enc):
        pre = f"transformer.encoder.layers.{i}."
        p[f"encoder_layers_{i}"] = {
            "self_attn": _mha(state, pre + "self_attn."), "linear1": _dense(state, pre + "linear1"),
            "linear2": _dense(state, pre + "linear2"), "norm1": _ln(state, pre + "norm1"),
            "norm2": _ln(state, pre + "norm2")}
    p["encoder_norm"] = _ln(state, "transformer.encoder.norm")
    for i in range(n_dec):
        pre = f"transformer.decoder.layers.{i}."
        p[f"decoder_layers_{i}"] = {
            "self_attn": _mha(state, pre + "self_attn."), "cross_attn": _mha(state, pre + "multihead_attn."),
            "linear1": _dense(state, pre + "linear1"), "linear2": _dense(state, pre + "linear2"),
            **{f"norm{j}": _ln(state, pre + f"norm{j}") for j in (1, 2, 3)}}
    p["decoder_norm"] = _ln(state, "transformer.decoder.norm")
    autoreg = "transformer.dec_head.head.weight" in state
    num_tokens, model_dim = state.take("mesh_token_embed.weight").shape
    p["mesh_token_embed"] = state.take("mesh_token_embed.weight")
    if autoreg:
        n_head = _count(state, "transformer.dec_head.blocks.")
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
                "norm1": _ln(state, pre + "ln1"), "norm2": _ln(state, pre + "ln2"),
                "attn": {"qkv": {"kernel": _kernel(np.concatenate([q, k, v], 0)),
                                 "bias": np.concatenate([qb, kb, vb])},
                         "proj": _dense(state, pre + "attn.proj")},
                "mlp": {"fc1": _dense(state, pre + "mlp.0"), "fc2": _dense(state, pre + "mlp.2")}}
        p["head_norm"] = _ln(state, "transformer.dec_head.ln_f")
        p["head"] = _dense(state, "transformer.dec_head.head", bias=False)
        dict_size = p["head"]["kernel"].shape[1]
    else:
        p["indices_regressor"] = _dense(state, "indices_regressor")
        dict_size = p["indices_regressor"]["kernel"].shape[1]
    p["conv_1x1"] = {"kernel": np.transpose(state.take("conv_1x1.weight"), (2, 3, 1, 0)), "bias": state.take("conv_1x1.bias")}
    for n in ("fc1", "fc2", "rot_predictor", "cam_predictor"):
        p[n] = _dense(state, n)
    ff = p["encoder_layers_0"]["linear1"]["kernel"].shape[1] if n_enc else p["decoder_layers_0"]["linear1"]["kernel"].shape[1]

    from hmr_jax.conversion.backbones import convert_backbone

    bb_user = None
    if config and isinstance(config.get("config"), Mapping) and "hrnet_width" in config["config"]:
        bb_user = {"width": config["config"]["hrnet_width"]}
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


# ------------------------------------------------------------------------------------------
# Verification against the vqhps_regressor_* fixtures


def fixture_outputs(variables, config, io, fixture, fixture_dir, connection_folder=None) -> dict[str, np.ndarray]:
    """Every ``out_*`` array of a ``vqhps_regressor_*`` fixture (sequence-first / NCHW like the original)."""
    import jax
    import jax.numpy as jnp

    from hmr_jax.conversion.mega import mesh_decoder_for_fixture
    from hmr_jax.geometry.rotations import rotation_6d_to_matrix
    from hmr_jax.models import vqhps as V

    model = V.build_vqhps(config)
    images = jnp.asarray(np.transpose(io["in_images"], (0, 2, 3, 1)))
    b = images.shape[0]
    joints_reg = jnp.asarray(io["in_joints_regressor"])
    pose_init = jnp.broadcast_to(V.pose_from_mesh(joints_reg, jnp.asarray(io["in_tpose"])), (b, 51))
    nchw = lambda x: np.transpose(np.asarray(x), (0, 3, 1, 2))  # noqa: E731
    with jax.default_matmul_precision("highest"):
        out, state = jax.jit(lambda v, x, p: model.apply(v, x, p, faithful=True, mutable=["intermediates"]))(
            variables, images, pose_init)
    inter = state["intermediates"]
    got = {"out_pose_init": pose_init, "out_prob_indices": out["logits"], "out_pred_rot": out["rot6d"],
           "out_pred_cam": out["cam"]}
    got["out_backbone_rot_features"] = nchw(inter["backbone_rot_features"][0])
    got["out_backbone_pose_features"] = nchw(inter["backbone_pose_features"][0])
    got["out_conv1x1_out"] = nchw(inter["conv1x1_out"][0])
    got["out_fc2_out"] = inter["fc2_out"][0]
    pos = np.asarray(inter["pos_enc"][0])
    h = int(round(np.sqrt(pos.shape[0])))
    got["out_pos_enc"] = np.broadcast_to(pos.reshape(h, -1, pos.shape[-1]).transpose(2, 0, 1)[None], (b,) + (pos.shape[-1], h, pos.shape[0] // h))
    got["out_transformer_encoder_out"] = np.transpose(np.asarray(inter["transformer_encoder_out"][0]), (1, 0, 2))
    got["out_transformer_decoder_out"] = np.transpose(np.asarray(inter["transformer_decoder_out"][0]), (1, 0, 2))
    ids = np.argmax(np.asarray(out["logits"]), axis=-1)
    got["out_pred_indices"] = ids
    rotmat = np.asarray(rotation_6d_to_matrix(out["rot6d"]))
    got["out_pred_rotmat"] = rotmat
    if any(k in io for k in ("out_pred_mesh_canonical", "out_pred_mesh", "out_next_pose_init")):
        decode = mesh_decoder_for_fixture(fixture, fixture_dir, connection_folder)
        canonical = np.asarray(decode(jnp.asarray(ids, jnp.int32)))
        mesh = np.einsum("bij,bvj->bvi", rotmat, canonical)
        got["out_pred_mesh_canonical"] = canonical
        got["out_pred_mesh"] = mesh
        got["out_next_pose_init"] = V.pose_from_mesh(joints_reg, jnp.asarray(mesh))
    return {k: np.asarray(v) for k, v in got.items()}


def verify(variables, config, io, fixture, fixture_dir) -> dict[str, float]:
    """Max relative error of every ``out_*`` array (integers: 0 if identical, inf otherwise)."""
    return fixture_errors(fixture_outputs(variables, config, io, fixture, fixture_dir), io)


register_variants((
    ("vqhps_hrnet", "VQ-HPS mesh regressor with two HRNet-w48 backbones (checkpoint/MESH_REGRESSOR/vqhps_hrnet)"),
    ("vqhps_resnet", "VQ-HPS mesh regressor with two ResNet-50 backbones (checkpoint/MESH_REGRESSOR/vqhps_resnet)"),
), _detector, convert, verify)
