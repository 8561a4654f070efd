"""``convert_torch_weights.py --verify``: run a converted model on a parity fixture and compare.

A parity fixture is ``NAME_io.npz`` (``in_*`` inputs and ``out_*`` outputs of the original
PyTorch code) with ``NAME.json`` beside it (the settings it was made with). For every model
family this module computes the arrays the fixtures record, in the fixtures' layouts (NCHW
images, sequence-first tensors), from the converted Flax variables:

* backbones (``hrnet_small``, ``resnet_small``, ``vit_small``): :func:`hrnet_outputs`,
  :func:`resnet_outputs`, :func:`vit_outputs`; :func:`verify_backbone`;
* Mesh-VQ-VAE (``mesh_vqvae``, ``mesh_rqvae``): :func:`mesh_vqvae_outputs`; :func:`verify_mesh_vqvae`;
* MEGA (``mega_vqmae_*``, ``mega_cvqmae_*``, replayed with ``faithful=True``):
  :func:`mega_outputs`; :func:`verify_mega`;
* VQ-HPS (``vqhps_regressor_*``): :func:`vqhps_outputs`; :func:`verify_vqhps`.

Each ``verify_*`` returns the maximum relative error of every ``out_*`` array
(:func:`fixture_errors`) and is the ``verify`` of the registered converters
(:mod:`hmr_jax.conversion.registry`). The key mapping itself is in the family modules.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.conversion import common
from hmr_jax.conversion.common import ConversionError, max_relative_error, user_config
from hmr_jax.conversion.mesh_vqvae import build_model, check_variables
from hmr_jax.conversion.mesh_vqvae import convert as convert_mesh_vqvae
from hmr_jax.geometry.rotations import rotation_6d_to_matrix
from hmr_jax.models import decoding
from hmr_jax.models import mega as M
from hmr_jax.models import vqhps as V
from hmr_jax.models.backbones import build_backbone
from hmr_jax.safe_read import check_file_size, read_npz

#: the largest parity fixture read (``NAME_io.npz``)
MAX_FIXTURE_BYTES = 4 << 30


def load_fixture(io_path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a parity fixture for ``--verify``: ``NAME_io.npz`` and, beside it, ``NAME.json``.

    Returns:
      ``(io, fixture)``: the ``in_*`` / ``out_*`` arrays and the JSON settings (``{}`` without one).
    Raises:
      ConversionError: missing or malformed file, an array that is not numeric, naming the file.
    """
    io_path = pathlib.Path(io_path)
    if not io_path.is_file():
        raise ConversionError(f"fixture {io_path} does not exist (give the NAME_io.npz of a parity fixture)")
    io = read_npz(io_path, ConversionError, max_bytes=MAX_FIXTURE_BYTES)
    for name, arr in io.items():
        if not (name.startswith(("in_", "out_")) or name == "meta"):
            continue
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ConversionError(f"{io_path}: fixture array {name!r} has dtype {arr.dtype}, not numbers")
    if not any(k.startswith("out_") for k in io):
        raise ConversionError(f"{io_path}: no out_* array to compare with (has {sorted(io)[:10]})")
    json_path = io_path.with_name(io_path.name.replace("_io.npz", ".json"))
    fixture: dict[str, Any] = {}
    if json_path != io_path and json_path.is_file():
        check_file_size(json_path, 64 << 20, ConversionError, "fixture JSON")
        try:
            fixture = json.loads(json_path.read_bytes())
        except (ValueError, RecursionError) as e:
            raise ConversionError(f"{json_path}: not valid JSON ({e})") from None
        if not isinstance(fixture, dict):
            raise ConversionError(f"{json_path}: expected a JSON object, got {type(fixture).__name__}")
    return io, fixture


def fixture_errors(got: Mapping[str, np.ndarray], io: Mapping[str, np.ndarray],
                   int_mismatch: float = float("inf")) -> dict[str, float]:
    """Max relative error of every ``out_*`` array of a parity fixture ``io``.

    Float arrays: :func:`~hmr_jax.conversion.common.max_relative_error`; integer arrays (tokens):
    0 if identical, ``int_mismatch`` otherwise. Raises ``ConversionError`` if ``got`` lacks one of
    the fixture's outputs.
    """
    errors = {}
    for name in sorted(k for k in io if k.startswith("out_")):
        if name not in got:
            raise ConversionError(f"this converter cannot produce fixture array {name}")
        want, g = io[name], np.asarray(got[name])
        if np.issubdtype(want.dtype, np.integer):
            errors[name] = 0.0 if (g.shape == want.shape and np.array_equal(g, want)) else int_mismatch
        else:
            errors[name] = max_relative_error(g, want)
    return errors


# ------------------------------------------------------------------------------------------
# Backbones


def _to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.transpose(np.asarray(x, np.float32), (0, 2, 3, 1))


def _to_nchw(x) -> np.ndarray:
    return np.transpose(np.asarray(x, np.float32), (0, 3, 1, 2))


def _run_backbone(variables, config: Mapping[str, Any], images_nchw: np.ndarray):
    """Run the converted backbone on NCHW images; returns (output, intermediates).

    Runs op by op (not jitted): for the ill-conditioned random HRNet fixture, XLA's fusions move
    float32 results by ~5e-5 of the array maximum, as much as the reference's own rounding.
    """
    model = build_backbone(config)
    with jax.default_matmul_precision("highest"):
        out, state = model.apply(variables, _to_nhwc(images_nchw), train=False, mutable=["intermediates"])
    return out, state.get("intermediates", {})


def hrnet_outputs(variables, config, images_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """Every array the ``hrnet_small`` fixture records, NCHW, from NCHW ``images_nchw``."""
    out, inter = _run_backbone(variables, config, images_nchw)
    got = {}
    for s in (2, 3, 4):
        (branches,) = inter[f"stage{s}_out"]
        for j, b in enumerate(branches):
            got[f"out_stage{s}_branch{j}"] = _to_nchw(b)
    if config.get("head", "downsample_conv") == "downsample_conv":
        for b in (1, 2, 3):
            (z,) = inter[f"downsample_stage_{b}"]
            got[f"out_downsample_stage_{b}"] = _to_nchw(z)
        got["out_features"] = _to_nchw(out)
    return got


def resnet_outputs(variables, config, images_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """``out_features`` (B, 2048, h, w) and ``out_features_avgpool`` (B, 2048) from NCHW images."""
    feats, _ = _run_backbone(variables, dict(config, global_pool=False), images_nchw)
    feats = np.asarray(feats, np.float32)
    return {"out_features": _to_nchw(feats), "out_features_avgpool": feats.mean(axis=(1, 2))}


def vit_outputs(variables, config, images_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """Every array the ``vit_small`` fixture records (tokens (B, N, C), features (B, C, gh, gw))."""
    out, inter = _run_backbone(variables, config, images_nchw)
    got = {f"out_{k}": np.asarray(v[0], np.float32) for k, v in inter.items()}
    got["out_features"] = _to_nchw(out)
    return got


_BACKBONE_OUTPUTS = {"hrnet": hrnet_outputs, "resnet50": resnet_outputs, "vit": vit_outputs}


def verify_backbone(variables, config, io, fixture, fixture_dir) -> dict[str, float]:
    """Max relative error of every ``out_*`` array of a backbone fixture (``config["backbone"]``
    names the kind)."""
    kind = config.get("backbone")
    if kind not in _BACKBONE_OUTPUTS:
        raise ConversionError(f"config backbone={kind!r} is not one of {sorted(_BACKBONE_OUTPUTS)}")
    if kind == "vit":
        # num_heads is not visible in the weights: the fixture's JSON states the one it was run with.
        fixture_cfg = user_config(fixture)
        if "num_heads" in fixture_cfg:
            config = dict(config, num_heads=int(fixture_cfg["num_heads"]))
    return fixture_errors(_BACKBONE_OUTPUTS[kind](variables, config, io["in_images"]), io)


# ------------------------------------------------------------------------------------------
# Mesh-VQ-VAE

_LAYER_OUT = re.compile(r"^out_(enc|dec)_layer(\d+)_out_b(\d+)$")
_MESH_VQVAE_FUNCTIONS: dict = {}


def mesh_decoder_from_torch(path, connection_folder=None):
    """A jitted ``ids (M, 54) -> meshes (M, 6890, 3)`` (meters) from an original Mesh-VQ-VAE ``.pt`` file.

    The config is the JSON beside the file (``NAME.json``, a parity fixture) if present, else
    the released 54-token preset. The dfaust2 connection files come from ``connection_folder``,
    else the config's folder if it exists, else ``$HMR_JAX_REFERENCE_DIR/ConnectionMatrices``.
    """
    path = pathlib.Path(path)
    raw, _ = common.load_torch_state_dict(path)
    side = path.with_suffix(".json")
    user = json.loads(side.read_text()) if side.is_file() else None
    state = common.StateDict(raw, what=str(path))
    variables, config = convert_mesh_vqvae(state, user)
    state.finish()
    folder = connection_folder
    if folder is None and not pathlib.Path(config["autoencoder"]["connection_folder"]).is_dir():
        ref = os.environ.get("HMR_JAX_REFERENCE_DIR")
        if ref and (pathlib.Path(ref) / "ConnectionMatrices").is_dir():
            folder = pathlib.Path(ref) / "ConnectionMatrices"
    if folder is not None:
        config["autoencoder"]["connection_folder"] = str(folder)
    model = build_model(config, sha256=(user or {}).get("connection_files_sha256"))
    return decoding.mesh_decoder_fn(model, variables)


def _mesh_vqvae_functions(model):
    """Jitted (eval pass, train pass) for ``model``, memoised on its config (compiling the whole
    tokenizer takes ~10 s on a small CPU; repeated verifications of one config reuse it)."""
    key = json.dumps({k: v for k, v in model.config.items() if k != "model"}, sort_keys=True, default=str)
    if key not in _MESH_VQVAE_FUNCTIONS:

        def eval_pass(module, x):
            out = module(x)  # eval-mode forward: encode, quantise, decode the straight-through latent
            codes = module.lookup(out.quantized.indices)
            decoded = module.decode_latent(codes)  # decode(ids): the decoder layers sown last
            return out, codes, decoded

        @jax.jit
        def run_eval(v, x):
            (out, codes, decoded), state = model.apply(v, x, method=eval_pass, mutable=["intermediates"])
            return out, codes, decoded, state["intermediates"]

        @jax.jit
        def run_train(v, x):
            out, state = model.apply(v, x, train=True, mutable=["vq_stats"])
            return out.loss, out.perplexity, state

        if len(_MESH_VQVAE_FUNCTIONS) >= 2:  # keep two compiled models alive at most
            _MESH_VQVAE_FUNCTIONS.pop(next(iter(_MESH_VQVAE_FUNCTIONS)))
        _MESH_VQVAE_FUNCTIONS[key] = (run_eval, run_train)
    return _MESH_VQVAE_FUNCTIONS[key]


def mesh_vqvae_outputs(model, variables, meshes: np.ndarray) -> dict[str, np.ndarray]:
    """Every output a Mesh-VQ-VAE fixture records, computed by ``model`` on ``meshes``.

    Args:
      model: a MeshVQVAE (``conv == "fcae"``).
      variables: its variables.
      meshes: (B, V, 3) input meshes.
    Returns:
      ``{out_* name: array}`` for the names the fixtures use, plus ``"layers"``: ``{layer index:
      (B, points, channels) output}`` (encoder layers from the forward pass, decoder layers from
      decoding the token ids).
    """
    meshes = jnp.asarray(meshes, jnp.float32)
    variables = jax.tree.map(jnp.asarray, variables)
    run_eval, run_train = _mesh_vqvae_functions(model)
    out, codes, decoded, inter = run_eval(variables, meshes)
    z, q = out.z, out.quantized
    train_loss, train_perplexity, new_state = run_train(variables, meshes)
    layers = {int(k[len("layer"):-len("_out")]): np.asarray(v) for k, v in inter["autoencoder"].items()}
    res = {
        "out_z": z,
        "out_test_z": z,
        "out_indices": q.indices,
        "out_test_indices": q.indices,
        "out_vq_quantized_st": q.quantized,
        "out_vq_loss": jnp.reshape(q.loss, (1,)),
        "out_vq_perplexity": jnp.reshape(q.perplexity, (1,)),
        "out_recon": out.recon,
        "out_forward_loss": jnp.reshape(out.loss, (1,)),
        "out_forward_perplexity": jnp.reshape(out.perplexity, (1,)),
        "out_quantized_from_indices": codes,
        "out_decoded": decoded,
        "out_train_forward_loss": jnp.reshape(train_loss, (1,)),
        "out_train_forward_perplexity": jnp.reshape(train_perplexity, (1,)),
    }
    stats = new_state["vq_stats"]["quantizer"]
    if "embedding" in stats:
        res["out_vq_distances_b0"] = q.distances[0]
        per_stage = [stats]
    else:
        res["out_rq_distances"] = q.distances
        res["out_rq_partial_quantized_st"] = q.partial_quantized
        per_stage = [stats[f"stage{i}"] for i in range(len(stats))]
    res["out_train_ema_cluster_size"] = jnp.stack([s["ema_cluster_size"] for s in per_stage])
    res["out_train_ema_w"] = jnp.stack([s["ema_w"] for s in per_stage])
    res["out_train_embedding"] = jnp.stack([s["embedding"] for s in per_stage])
    res = {k: np.asarray(v) for k, v in res.items()}
    res["layers"] = layers
    return res


def verify_mesh_vqvae(variables, config, io: Mapping[str, np.ndarray], fixture: Mapping,
                      fixture_dir) -> dict[str, float]:
    """Run the converted model on a fixture's ``in_meshes`` and compare every ``out_*`` array.

    Connection files are checked against the fixture's ``connection_files_sha256``. Float
    arrays: max |diff| / max |ref|; integer arrays (ids): 0 if identical, else 1.

    Raises:
      ConversionError: the fixture has an ``out_*`` array this converter cannot produce, or the
        connection files are missing / differ.
    """
    if "in_meshes" not in io:
        raise ConversionError("the fixture has no in_meshes array: not a Mesh-VQ-VAE fixture")
    model = build_model(config, sha256=fixture.get("connection_files_sha256"))
    check_variables(model, variables)
    got = mesh_vqvae_outputs(model, variables, io["in_meshes"])
    for name in io:  # the per-layer outputs: out_{enc,dec}_layer{l}_out_b{b}
        m = _LAYER_OUT.match(name)
        if m and int(m.group(2)) in got["layers"]:
            got[name] = got["layers"][int(m.group(2))][int(m.group(3))]
    unknown = sorted(k for k in io if k.startswith("out_") and k not in got)
    if unknown:
        raise ConversionError(f"the fixture has outputs the mesh_vqvae verifier cannot produce: {', '.join(unknown)}")
    return fixture_errors(got, io, int_mismatch=1.0)


# ------------------------------------------------------------------------------------------
# MEGA


def _np_seeds(fixture: Mapping[str, Any]) -> dict:
    seeds = fixture.get("config", {}).get("np_seeds")
    if not seeds:
        raise ConversionError("the fixture JSON has no config.np_seeds (needed to replay the original's NumPy RNG)")
    return seeds


def mesh_decoder_for_fixture(fixture: Mapping[str, Any], fixture_dir: pathlib.Path | None,
                             connection_folder=None):
    """``ids (B, 54) -> meshes (B, 6890, 3)`` from the ``mesh_decoder`` checkpoint named in the fixture JSON."""
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


def mega_outputs(variables, config: Mapping[str, Any], io: Mapping[str, np.ndarray],
                 fixture: Mapping[str, Any], fixture_dir: pathlib.Path | None,
                 connection_folder=None) -> dict[str, np.ndarray]:
    """Every ``out_*`` array of a ``mega_vqmae_*`` / ``mega_cvqmae_*`` fixture, computed faithfully.

    ``connection_folder``: the dfaust2 connection files for the fixture's mesh decoder (default:
    see :func:`mesh_decoder_from_torch`).

    Rotation matrices (``out_rotmat``, ``out_det_rotmat``, hence ``out_det_pred_mesh``) are
    computed op by op, from the fixture's own 6D rotation (ours is checked as ``out_rot6d``):
    the small random models' 6D outputs are ill-conditioned (the two 3-vectors nearly
    antiparallel), so Gram-Schmidt multiplies any difference in them ~40x (a 5e-6 relative
    difference in the 6D became 2e-4 in the matrix when XLA's convolution order changed).
    """
    seeds = _np_seeds(fixture)
    model = M.build_mega(config)
    tokens = jnp.asarray(io["in_tokens"], jnp.int32)
    got: dict[str, np.ndarray] = {}
    with jax.default_matmul_precision("highest"):
        cond = None
        if isinstance(model, M.CVQMAE):
            images = jnp.asarray(np.transpose(io["in_images"], (0, 2, 3, 1)))
            cond = model.apply(variables, images, method=M.CVQMAE.condition)
            h = int(round(np.sqrt(cond.shape[1])))
            fmap = np.asarray(cond).reshape(tokens.shape[0], h, cond.shape[1] // h, -1)
            got["out_cond_features"] = np.transpose(fmap, (0, 3, 1, 2))
        got.update(_mega_explicit_mask(model, variables, io, tokens, cond, seeds["explicit_mask"]))
        got.update(_mega_deterministic(model, variables, io, tokens, cond, seeds["deterministic"]))
        if "out_det_rotmat" in got and any(k.startswith("out_det_mesh_canonical") or k == "out_det_pred_mesh"
                                           for k in io):
            decode = mesh_decoder_for_fixture(fixture, fixture_dir, connection_folder)
            canonical = np.asarray(decode(jnp.asarray(got["out_det_mesh_indices"], jnp.int32)))
            got["out_det_mesh_canonical"] = canonical
            got["out_det_pred_mesh"] = np.einsum("bij,bvj->bvi", got["out_det_rotmat"], canonical)
        got.update(_mega_generated(model, variables, io, fixture, cond))
    return {k: np.asarray(v) for k, v in got.items()}


def _mega_explicit_mask(model, variables, io, tokens, cond, seed: int) -> dict:
    """(a) The fixture's explicit mask, the original's NumPy shuffle replayed for the backward
    indexes and the decoder mask: encoder features, logits (and rotation / camera)."""
    conditional = cond is not None
    visible_in = io["in_mask_visible"]
    backward, eff_visible = M.original_inference_shuffle(visible_in, np.random.RandomState(seed))
    got = {"out_enc_backward_indexes": backward}
    feats = model.apply(variables, tokens, jnp.asarray(eff_visible),
                        method=M.CVQMAE.encode if conditional else M.VQMAE.encode)
    feats = np.asarray(feats)
    got["out_enc_cls_feature"] = feats[:, 0]
    got["out_enc_visible_features"] = np.where(eff_visible[..., None], feats[:, 1:], 0.0)
    out = decoding.mega_forward(model, variables, tokens, jnp.asarray(eff_visible), cond=cond, faithful=True)
    got["out_logits"] = out["logits"]
    got["out_decoder_mask_out"] = np.asarray(M.decoder_mask_out(visible_in, backward, faithful=True))
    if conditional:
        got["out_rot6d"], got["out_cam"] = out["rot6d"], out["cam"]
        got["out_rotmat"] = np.asarray(rotation_6d_to_matrix(jnp.asarray(io.get("out_rot6d", out["rot6d"]))))
    return got


def _mega_deterministic(model, variables, io, tokens, cond, seed: int) -> dict:
    """(b) The deterministic path (every token masked): logits, predicted ids, the mesh ids
    (and rotation / camera)."""
    rng = np.random.RandomState(seed)
    det_backward, det_visible = M.original_scheduled_shuffle(tokens.shape[0], tokens.shape[1], 1.0, rng)
    out = decoding.mega_forward(model, variables, tokens, jnp.asarray(det_visible), cond=cond, faithful=True)
    det_mask = np.asarray(M.decoder_mask_out(det_visible, det_backward, faithful=True))
    pred = np.argmax(out["logits"], axis=-1)
    got = {"out_det_logits": out["logits"], "out_det_mask_out": det_mask, "out_det_pred_indices": pred,
           "out_det_mesh_indices": np.where(det_mask > 0, pred, np.asarray(io["in_tokens"]))}
    if cond is not None:
        got["out_det_rot6d"], got["out_det_cam"] = out["rot6d"], out["cam"]
        got["out_det_rotmat"] = np.asarray(rotation_6d_to_matrix(jnp.asarray(io.get("out_det_rot6d", out["rot6d"]))))
    return got


def _mega_generated(model, variables, io, fixture, cond) -> dict:
    """(c) Generation with ``gen_temp = 0`` (5 and 1 steps), (d) with the recorded noise."""
    b = io["in_tokens"].shape[0]
    runs = [("gen5_t0", 5, b, None), ("gen1_t0", 1, b, None)]
    if "out_gen5_stoch_tokens" in io:
        runs.append(("gen5_stoch", 5, int(fixture["config"].get("stochastic_batch", 1)),
                     (io["out_gen5_stoch_noise_logits"], io["out_gen5_stoch_noise_confidence"])))
    got = {}
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
        if cond is not None:
            got[f"out_{tag}_rot6d"] = np.asarray(res["rot6d"])
            got[f"out_{tag}_cam"] = np.asarray(res["cam"])
        if noise is not None:
            got[f"out_{tag}_noise_logits"], got[f"out_{tag}_noise_confidence"] = noise
    return got


def verify_mega(variables, config, io, fixture, fixture_dir) -> dict[str, float]:
    """Max relative error of every ``out_*`` array (integers: 0 if identical, inf otherwise)."""
    return fixture_errors(mega_outputs(variables, config, io, fixture, fixture_dir), io)


# ------------------------------------------------------------------------------------------
# VQ-HPS


def vqhps_outputs(variables, config, io, fixture, fixture_dir, connection_folder=None) -> dict[str, np.ndarray]:
    """Every ``out_*`` array of a ``vqhps_regressor_*`` fixture (sequence-first / NCHW like the original)."""
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


def verify_vqhps(variables, config, io, fixture, fixture_dir) -> dict[str, float]:
    """Max relative error of every ``out_*`` array (integers: 0 if identical, inf otherwise)."""
    return fixture_errors(vqhps_outputs(variables, config, io, fixture, fixture_dir), io)
