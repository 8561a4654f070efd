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
``verify`` reproduces every ``out_*`` array of the ``mega_vqmae_*`` and ``mega_cvqmae_*``
fixtures with ``faithful=True``.
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Any, Mapping

import numpy as np

from configs import mega_hrnet, mega_pretrained, mega_resnet, mega_vit
from hmr_jax.conversion.common import ConversionError, StateDict, fixture_errors
from hmr_jax.conversion.registry import register_variants


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


def _user_model_config(config: Mapping[str, Any] | None) -> dict:
    """Model keys of a user config: flat, ``{"mega": {...}}``, or a fixture JSON ``{"config": {"model": ...}}``."""
    if not config:
        return {}
    cfg = dict(config)
    if isinstance(cfg.get("config"), Mapping):
        cfg = dict(cfg["config"])
    for key in ("mega", "model"):
        if isinstance(cfg.get(key), Mapping):
            return dict(cfg[key])
    return {k: v for k, v in cfg.items() if not isinstance(v, Mapping)}


def backbone_kind(keys) -> str | None:
    """Which backbone a MEGA state dict holds under ``backbone.`` (None for VQMAE)."""
    s = set(keys)
    if "backbone.patch_embed.proj.weight" in s:
        return "vit"
    if "backbone.conv1.weight" in s and any(k.startswith("backbone.stage4.") for k in s):
        return "hrnet"
    if "backbone.0.weight" in s and "backbone.1.running_mean" in s:
        return "resnet50"
    if any(k.startswith("backbone.") for k in s):
        return "unknown"
    return None


def _is_mega(keys) -> bool:
    s = set(keys)
    return {"encoder.cls_token", "encoder.proj.weight", "decoder.mask_token", "decoder.head.weight"} <= s


def _detector(name: str):
    def detect(keys) -> bool:
        if not _is_mega(keys):
            return False
        kind = backbone_kind(keys)
        conditional = "decoder.cond_emb.weight" in set(keys)
        if name == "mega_pretrained":
            return kind is None and not conditional
        return conditional and _BACKBONE_OF.get(kind) == name
    return detect


def _count(state: StateDict, prefix: str) -> int:
    n = set()
    for k in state.with_prefix(prefix):
        m = re.match(re.escape(prefix) + r"(\d+)\.", k)
        if m:
            n.add(int(m.group(1)))
    if n != set(range(len(n))):
        raise ConversionError(f"{prefix}* blocks are not numbered 0..{len(n) - 1}: {sorted(n)}")
    return len(n)


def _ln(state: StateDict, key: str) -> dict:
    return {"scale": state.take(key + ".weight"), "bias": state.take(key + ".bias")}


def _kernel(w: np.ndarray) -> np.ndarray:
    """(out, in) -> (in, out) as a view (no copy: full-size manifests convert without allocating)."""
    if w.ndim != 2:
        raise ConversionError(f"expected a 2-D linear weight, got shape {w.shape}")
    return w.T


def _dense(state: StateDict, key: str, bias: bool = True) -> dict:
    out = {"kernel": _kernel(state.take(key + ".weight"))}
    if bias:
        out["bias"] = state.take(key + ".bias")
    return out


def timm_block(state: StateDict, prefix: str) -> dict:
    """A timm ``Block`` (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1/fc2``) -> Block params."""
    attn = {"qkv": _dense(state, prefix + "attn.qkv", bias=prefix + "attn.qkv.bias" in state),
            "proj": _dense(state, prefix + "attn.proj")}
    return {"norm1": _ln(state, prefix + "norm1"), "attn": attn, "norm2": _ln(state, prefix + "norm2"),
            "mlp": {"fc1": _dense(state, prefix + "mlp.fc1"), "fc2": _dense(state, prefix + "mlp.fc2")}}


def _vector(state: StateDict, key: str) -> np.ndarray:
    """(1, 1, C) / (T, 1, C) tokens -> (C,) / (T, C)."""
    v = state.take(key)
    return v.reshape(-1) if v.shape[0] == 1 else v.reshape(v.shape[0], v.shape[-1])


def convert_transformer(state: StateDict, conditional: bool) -> tuple[dict, dict]:
    """Encoder + decoder params (everything but the backbone) and the sizes read from them."""
    enc_layers = _count(state, "encoder.transformer.")
    dec_layers = _count(state, "decoder.transformer.")
    encoder = {
        "cls_token": _vector(state, "encoder.cls_token"),
        "pos_embedding": _vector(state, "encoder.pos_embedding"),
        "token_embedding": {"embedding": state.take("encoder.proj.weight")},
        "layer_norm": _ln(state, "encoder.layer_norm"),
    }
    for i in range(enc_layers):
        encoder[f"blocks_{i}"] = timm_block(state, f"encoder.transformer.{i}.")
    decoder = {
        "mask_token": _vector(state, "decoder.mask_token"),
        "pos_embedding": _vector(state, "decoder.pos_embedding"),
        "head": _dense(state, "decoder.head"),
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
        decoder["cond_emb"] = _dense(state, "decoder.cond_emb")
        decoder["rotcam_0"] = _dense(state, "decoder.rotcam_head.0")
        decoder["rotcam_1"] = _dense(state, "decoder.rotcam_head.2")
        decoder["rot_predictor"] = _dense(state, "decoder.rot_predictor")
        decoder["cam_predictor"] = _dense(state, "decoder.cam_predictor")
        sizes["cond_dim"] = int(decoder["cond_emb"]["kernel"].shape[0])
    return {"encoder": encoder, "decoder": decoder}, sizes


def convert(state: StateDict, config: Mapping[str, Any] | None, name: str) -> tuple[dict, dict]:
    """Convert a MEGA state dict of kind ``name`` -> (variables, config)."""
    if not _is_mega(state.keys()):
        raise ConversionError(f"{state.what}: not a MEGA checkpoint (no encoder.cls_token / decoder.head)")
    kind = backbone_kind(state.keys())
    conditional = name != "mega_pretrained"
    if conditional and _BACKBONE_OF.get(kind) != name:
        raise ConversionError(
            f"{state.what}: a {name} checkpoint needs a {PRESETS[name]['backbone']} backbone under "
            f"'backbone.', found {kind or 'none'}")
    if not conditional and kind is not None:
        raise ConversionError(f"{state.what}: mega_pretrained (VQMAE) has no backbone, found {kind}")
    user = _user_model_config(config)
    params, sizes = convert_transformer(state, conditional)
    mega_cfg = {**PRESETS[name], **{k: user[k] for k in (
        "encoder_head", "decoder_head", "cond_length", "cond_dropout") if k in user}}
    for key, value in sizes.items():
        if key in user and int(user[key]) != value:
            raise ConversionError(f"{state.what}: config says {key}={user[key]} but the weights have {value}")
    mega_cfg.update(sizes)
    for h in ("encoder_head", "decoder_head"):
        if mega_cfg["emb_dim"] % int(mega_cfg[h]):
            raise ConversionError(f"{h}={mega_cfg[h]} does not divide emb_dim={mega_cfg['emb_dim']}")
    variables: dict = {"params": params}
    out_cfg: dict = {"mega": {k: v for k, v in mega_cfg.items() if k not in ("backbone", "image_size")}}
    if conditional:
        from hmr_jax.conversion.backbones import convert_backbone

        bb_user = dict(config.get("config", config).get("backbone", {})) if config else {}
        bb_user = {k: v for k, v in bb_user.items() if k not in ("type", "pretrained")} if isinstance(bb_user, Mapping) else {}
        bb_vars, bb_cfg = convert_backbone(state, kind, "backbone.", bb_user or None)
        variables["params"]["backbone"] = bb_vars["params"]
        if "batch_stats" in bb_vars:
            variables["batch_stats"] = {"backbone": bb_vars["batch_stats"]}
        out_cfg["backbone"] = bb_cfg
        out_cfg["image_size"] = list(user.get("image_size", PRESETS[name]["image_size"]))
    return variables, out_cfg


# ------------------------------------------------------------------------------------------
# Verification against the parity fixtures


def _fixture_np_seeds(fixture: Mapping[str, Any]) -> dict:
    seeds = fixture.get("config", {}).get("np_seeds")
    if not seeds:
        raise ConversionError("the fixture JSON has no config.np_seeds (needed to replay the original's NumPy RNG)")
    return seeds


def fixture_outputs(variables, config: Mapping[str, Any], io: Mapping[str, np.ndarray],
                    fixture: Mapping[str, Any], fixture_dir: pathlib.Path | None,
                    connection_folder=None) -> dict[str, np.ndarray]:
    """Every ``out_*`` array of a ``mega_vqmae_*`` / ``mega_cvqmae_*`` fixture, computed faithfully.

    ``connection_folder``: the dfaust2 connection files for the fixture's mesh decoder (default:
    see :func:`hmr_jax.conversion.mesh_vqvae.mesh_decoder_from_torch`).

    Rotation matrices (``out_rotmat``, ``out_det_rotmat``, hence ``out_det_pred_mesh``) are
    computed op by op, from the fixture's own 6D rotation (ours is checked as ``out_rot6d``):
    the small random models' 6D outputs are ill-conditioned (the two 3-vectors nearly
    antiparallel), so Gram-Schmidt multiplies any difference in them ~40x (a 5e-6 relative
    difference in the 6D became 2e-4 in the matrix when XLA's convolution order changed).
    """
    import jax
    import jax.numpy as jnp

    from hmr_jax.geometry.rotations import rotation_6d_to_matrix
    from hmr_jax.models import decoding
    from hmr_jax.models import mega as M

    seeds = _fixture_np_seeds(fixture)
    model = M.build_mega(config)
    conditional = isinstance(model, M.CVQMAE)
    tokens = jnp.asarray(io["in_tokens"], jnp.int32)
    visible_in = io["in_mask_visible"]
    b = tokens.shape[0]
    got: dict[str, np.ndarray] = {}
    with jax.default_matmul_precision("highest"):
        cond = None
        if conditional:
            images = jnp.asarray(np.transpose(io["in_images"], (0, 2, 3, 1)))
            cond = model.apply(variables, images, method=M.CVQMAE.condition)
            h = int(round(np.sqrt(cond.shape[1])))
            fmap = np.asarray(cond).reshape(b, h, cond.shape[1] // h, -1)
            got["out_cond_features"] = np.transpose(fmap, (0, 3, 1, 2))
        # (a) explicit mask: NumPy shuffle replayed for the backward indexes / decoder mask.
        rng = np.random.RandomState(seeds["explicit_mask"])
        backward, eff_visible = M.original_inference_shuffle(visible_in, rng)
        got["out_enc_backward_indexes"] = backward
        feats = model.apply(variables, tokens, jnp.asarray(eff_visible), method=M.VQMAE.encode
                            if not conditional else M.CVQMAE.encode)
        feats = np.asarray(feats)
        got["out_enc_cls_feature"] = feats[:, 0]
        got["out_enc_visible_features"] = np.where(eff_visible[..., None], feats[:, 1:], 0.0)
        out = decoding.mega_forward(model, variables, tokens, jnp.asarray(eff_visible), cond=cond, faithful=True)
        got["out_logits"] = out["logits"]
        got["out_decoder_mask_out"] = np.asarray(M.decoder_mask_out(visible_in, backward, faithful=True))
        if conditional:
            got["out_rot6d"], got["out_cam"] = out["rot6d"], out["cam"]
            got["out_rotmat"] = np.asarray(rotation_6d_to_matrix(jnp.asarray(io.get("out_rot6d", out["rot6d"]))))
        # (b) deterministic path: everything masked.
        rng = np.random.RandomState(seeds["deterministic"])
        det_backward, det_visible = M.original_scheduled_shuffle(b, tokens.shape[1], 1.0, rng)
        out = decoding.mega_forward(model, variables, tokens, jnp.asarray(det_visible), cond=cond, faithful=True)
        got["out_det_logits"] = out["logits"]
        det_mask = np.asarray(M.decoder_mask_out(det_visible, det_backward, faithful=True))
        got["out_det_mask_out"] = det_mask
        pred = np.argmax(out["logits"], axis=-1)
        got["out_det_pred_indices"] = pred
        mesh_indices = np.where(det_mask > 0, pred, np.asarray(io["in_tokens"]))
        got["out_det_mesh_indices"] = mesh_indices
        if conditional:
            got["out_det_rot6d"], got["out_det_cam"] = out["rot6d"], out["cam"]
            rotmat = np.asarray(rotation_6d_to_matrix(jnp.asarray(io.get("out_det_rot6d", out["rot6d"]))))
            got["out_det_rotmat"] = rotmat
            if any(k.startswith("out_det_mesh_canonical") or k == "out_det_pred_mesh" for k in io):
                decode = mesh_decoder_for_fixture(fixture, fixture_dir, connection_folder)
                canonical = np.asarray(decode(jnp.asarray(mesh_indices, jnp.int32)))
                got["out_det_mesh_canonical"] = canonical
                got["out_det_pred_mesh"] = np.einsum("bij,bvj->bvi", rotmat, canonical)
        # (c) generate with gen_temp = 0, (d) with the recorded noise.
        runs = [("gen5_t0", 5, b, None), ("gen1_t0", 1, b, None)]
        if "out_gen5_stoch_tokens" in io:
            runs.append(("gen5_stoch", 5, int(fixture["config"].get("stochastic_batch", 1)),
                         (io["out_gen5_stoch_noise_logits"], io["out_gen5_stoch_noise_confidence"])))
        for tag, steps, rows, noise in runs:
            if f"out_{tag}_tokens" not in io:
                continue
            gen_temp = float(fixture["config"].get("stochastic_gen_temp", 1.0)) if noise is not None else 0.0
            res = decoding.mega_generate(
                model, variables, cond=None if cond is None else cond[:rows], batch_size=rows,
                key=jax.random.PRNGKey(0), steps=steps, gen_temp=gen_temp, noise=noise,
                faithful=True, return_steps=True)
            got[f"out_{tag}_tokens"] = np.asarray(res["tokens"])[:, 0]
            got[f"out_{tag}_step_tokens"] = np.asarray(res["step_tokens"])[:, :, 0]
            if conditional:
                got[f"out_{tag}_rot6d"] = np.asarray(res["rot6d"])
                got[f"out_{tag}_cam"] = np.asarray(res["cam"])
            if noise is not None:
                got[f"out_{tag}_noise_logits"], got[f"out_{tag}_noise_confidence"] = noise
    return {k: np.asarray(v) for k, v in got.items()}


def mesh_decoder_for_fixture(fixture: Mapping[str, Any], fixture_dir: pathlib.Path | None,
                             connection_folder=None):
    """``ids (B, 54) -> meshes (B, 6890, 3)`` from the ``mesh_decoder`` checkpoint named in the fixture JSON."""
    from hmr_jax.conversion.mesh_vqvae import mesh_decoder_from_torch

    name = (fixture.get("mesh_decoder") or {}).get("fixture")
    if not name:
        raise ConversionError("the fixture has mesh outputs but its JSON names no mesh_decoder")
    path = pathlib.Path(fixture_dir or ".") / name
    if not path.is_file():
        raise ConversionError(f"mesh decoder checkpoint {path} (named by the fixture JSON) not found beside the fixture")
    if connection_folder is None:
        # the parity layout keeps the reference mesh data beside the fixtures (../reference)
        guess = path.parent.parent / "reference" / "ConnectionMatrices"
        env = os.environ.get("HMR_JAX_REFERENCE_DIR")
        if not env and guess.is_dir():
            connection_folder = guess
    return mesh_decoder_from_torch(path, connection_folder)


def verify(variables, config, io, fixture, fixture_dir) -> dict[str, float]:
    """Max relative error of every ``out_*`` array (integers: 0 if identical, inf otherwise)."""
    return fixture_errors(fixture_outputs(variables, config, io, fixture, fixture_dir), io)


register_variants((
    ("mega_pretrained", "MEGA VQMAE pre-trained on meshes (unconditional; zenodo checkpoint/VQMAE/mega_pretrained)"),
    ("mega_hrnet", "MEGA CVQMAE with the HRNet-w48 backbone (checkpoint/CVQMAE/mega_hrnet)"),
    ("mega_resnet", "MEGA CVQMAE with the ResNet-50 backbone (checkpoint/CVQMAE/mega_resnet)"),
    ("mega_vit", "MEGA CVQMAE with the ViT-H (ViTPose) backbone (checkpoint/CVQMAE/mega_vit)"),
), _detector, convert, verify)
