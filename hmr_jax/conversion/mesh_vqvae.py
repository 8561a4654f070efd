"""Converter for the original Mesh-VQ-VAE checkpoints (``MeshVQVAE`` + ``FullyConvAE``).

PyTorch keys (after the ``{"model": state_dict, ...}`` container and any ``module.`` prefix):

* ``encoder.model.{weights,bias,w_weights,p_neighbors,weight_res}{l}``: layer ``l`` of the
  fully convolutional autoencoder. ``decoder.model.*`` holds the same tensors again (the encoder
  and the decoder wrap one ``FullyConvAE``): they must be equal; one copy is used, the other is
  recorded as ignored.
* ``vq_vae._embedding.weight``, ``vq_vae._ema_w``, ``vq_vae._ema_cluster_size`` (one codebook)
  or ``vq_vae.layers.{q}.*`` (residual quantiser).

Flax layout: ``params/autoencoder/layer{l}/{weights (K, I, O), bias, w_weights, p_neighbors,
weight_res (I, O)}`` and ``vq_stats/quantizer[/stage{q}]/{embedding, ema_w, ema_cluster_size}``.

The config (see :mod:`hmr_jax.models.mesh_vqvae`) comes from ``--config`` (our layout, the
original YAML layout with ``modelconv`` / ``model``, or a parity fixture JSON whose ``config``
holds those) or else the released 54-token preset; channels, kernel basis sizes, codebook size
and dimension and the number of quantisers are read from the tensor shapes and must agree with it.
The ``--verify`` run on the ``mesh_vqvae`` / ``mesh_rqvae`` fixtures is in :mod:`hmr_jax.conversion.fixtures`.
"""
from __future__ import annotations

import copy
import pathlib
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.conversion import common
from hmr_jax.conversion.common import ConversionError, StateDict, user_config
from hmr_jax.mesh.connections import ConnectionFileError
from hmr_jax.models.mesh_vqvae import RELEASED_54, MeshVQVAE, config_to_dict, load_connections

NAME = "mesh_vqvae"
DESCRIPTION = "Mesh-VQ-VAE tokenizer (FullyConvAE + EMA VQ / residual VQ)"
_LAYER_KEY = re.compile(r"^(encoder|decoder)\.model\.(weights|bias|w_weights|p_neighbors|weight_res)(\d+)$")
_RQ_KEY = re.compile(r"^vq_vae\.layers\.(\d+)\.")
_DUPLICATE_REASON = "same FullyConvAE as encoder.model.* (the encoder and decoder share it); values checked equal"


# ------------------------------------------------------------------------------------------
# config


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _from_original(modelconv: Mapping, model: Mapping, sha256: Mapping | None) -> dict:
    """Our config from the original YAML sections ``modelconv`` / ``model``."""
    try:
        layers = [str(n) for n in modelconv["connection_layer_lst"]]
        initial = modelconv.get("initial_connection_fn")
        if initial:
            initial = pathlib.Path(str(initial)).stem.lstrip("_")
        names = set(layers) | ({initial} if initial else set())
        sums = {pathlib.Path(k).stem.lstrip("_"): v for k, v in (sha256 or {}).items()}
        return {
            "conv": "fcae",
            "autoencoder": {
                "connection_folder": str(modelconv.get("connection_folder", "body_models/ConnectionMatrices")),
                "initial_connection": initial,
                "layers": layers,
                "channels": [int(c) for c in modelconv["channel_lst"]],
                "weight_nums": [int(k) for k in modelconv["weight_num_lst"]],
                "residual_rates": [float(r) for r in modelconv["residual_rate_lst"]],
                "connection_sha256": {k: v for k, v in sums.items() if k in names} or None,
            },
            "quantizer": {
                "num_embeddings": int(model["num_embeddings"]),
                "embedding_dim": int(model["embedding_dim"]),
                "commitment_cost": float(model.get("commitment_cost", 0.25)),
                "decay": float(model.get("decay", 0.0)),
                "epsilon": float(model.get("epsilon", 1e-5)),
                "num_quantizers": int(model.get("num_quantizer", 1)),
                "shared_codebook": bool(model.get("shared_codebook", False)),
            },
        }
    except KeyError as e:
        raise ConversionError(f"the original-layout config lacks {e} (modelconv / model sections)") from e


def normalize_config(user: Mapping[str, Any] | None) -> dict:
    """Our Mesh-VQ-VAE config from what ``--config`` gave (or the released preset).

    Accepts our layout (``autoencoder`` / ``quantizer``, merged over the preset), the original
    YAML layout (``modelconv`` / ``model``), or a parity fixture JSON (``config`` holding the
    original layout, ``connection_files_sha256`` beside it).
    """
    if user is None:
        return copy.deepcopy(RELEASED_54)
    user = config_to_dict(user)
    original = user_config(user)
    if "modelconv" not in original:
        original = user  # the original layout at the top level (not a fixture JSON)
    if "modelconv" in original:
        return _from_original(original["modelconv"], original.get("model", {}), user.get("connection_files_sha256"))
    if "autoencoder" in user or "quantizer" in user or "conv" in user:
        cfg = {k: v for k, v in user.items() if k != "model"}
        return _deep_merge(RELEASED_54, cfg)
    raise ConversionError(
        "the --config JSON is neither a Mesh-VQ-VAE config (autoencoder / quantizer), the original "
        "layout (modelconv / model) nor a parity fixture JSON (config.modelconv)"
    )


def _connections_or_none(config: Mapping):
    """The connection layers if the config's folder exists (None otherwise)."""
    folder = pathlib.Path(config["autoencoder"]["connection_folder"])
    if not folder.is_dir():
        return None
    return load_connections(config)


# ------------------------------------------------------------------------------------------
# conversion


def detect(keys: list[str]) -> bool:
    """A Mesh-VQ-VAE state dict: FullyConvAE layer keys and ``vq_vae.`` codebook keys."""
    return any(_LAYER_KEY.match(k) for k in keys) and any(k.startswith("vq_vae.") for k in keys)


def _take_shared(state: StateDict, name: str, shape=None) -> np.ndarray:
    enc, dec = f"encoder.model.{name}", f"decoder.model.{name}"
    if enc in state and dec in state:
        a, b = state.state[enc], state.state[dec]
        if a.shape != b.shape or not np.array_equal(a, b):
            raise ConversionError(
                f"{state.what}: {enc} and {dec} differ; the original encoder and decoder share one "
                "FullyConvAE, so they must be equal (is this checkpoint edited?)"
            )
        state.ignore([dec], _DUPLICATE_REASON)
        return state.take(enc, shape)
    if dec in state:
        return state.take(dec, shape)
    return state.take(enc, shape)


def _has(state: StateDict, name: str) -> bool:
    return f"encoder.model.{name}" in state or f"decoder.model.{name}" in state


def _check(what: str, from_config, from_shapes, where: str):
    if from_config is not None and from_shapes != from_config:
        raise ConversionError(
            f"{what}: the checkpoint has {from_shapes} ({where}) but the config says {from_config}; "
            "pass the matching --config (a parity fixture JSON or the original YAML sections work)"
        )


def convert(state: StateDict, config: Mapping | None = None) -> tuple[dict, dict]:
    """Convert a Mesh-VQ-VAE state dict.

    Args:
      state: the checkpoint's tensors (every key used or ignored here).
      config: ``--config`` contents or None (released 54-token preset).
    Returns:
      ``(variables, config)``: Flax variables ``{"params", "vq_stats"}`` and the complete config.
    Raises:
      ConversionError: not a Mesh-VQ-VAE checkpoint, shapes contradicting the config, encoder /
        decoder copies that differ.
    """
    keys = state.keys()
    if not detect(keys):
        raise ConversionError(
            f"{state.what}: not a Mesh-VQ-VAE checkpoint (no encoder.model.* / vq_vae.* keys); its "
            f"keys start with: {', '.join(keys[:12])}"
        )
    config = normalize_config(config)
    params = _autoencoder(state, config)
    vq_stats = _codebooks(state, config["quantizer"])
    if state.missing:
        state.finish()  # lists the missing and the unexpected keys together
    variables = {
        "params": {"autoencoder": params},
        "vq_stats": {"quantizer": vq_stats},
    }
    variables = _as_float32(variables)
    return variables, config


def _autoencoder(state: StateDict, config: Mapping) -> dict[str, dict]:
    """``params/autoencoder``: the FullyConvAE layers the config lists, checked against its
    channels / kernel sizes and (when the folder exists) the connection files."""
    ae = config["autoencoder"]
    n = len(ae["layers"])
    idx = sorted({int(m.group(3)) for m in map(_LAYER_KEY.match, state.keys()) if m})
    if idx and idx[-1] >= n:
        raise ConversionError(
            f"{state.what}: the checkpoint has autoencoder layers up to {idx[-1]} but the config lists "
            f"{n} layers ({ae['layers']}); pass the matching --config"
        )
    conns = _connections_or_none(config)
    params: dict[str, dict] = {}
    in_ch = 3
    for l in range(n):
        out_ch = int(ae["channels"][l])
        rate = float(ae["residual_rates"][l])
        conn = conns[l] if conns is not None else None
        layer: dict[str, np.ndarray] = {}
        if rate < 1:
            layer.update(_conv_weights(state, l, in_ch, out_ch, int(ae["weight_nums"][l]), conn))
        if rate > 0:
            layer.update(_residual_weights(state, l, in_ch, out_ch, conn))
        if layer:
            params[f"layer{l}"] = layer
        in_ch = out_ch
    return params


def _conv_weights(state: StateDict, l: int, in_ch: int, out_ch: int, weight_num: int, conn) -> dict:
    """Layer ``l``'s convolution: ``weights`` (K, I, O), ``bias``, ``w_weights`` (P, M, K)."""
    w = _take_shared(state, f"weights{l}")
    b = _take_shared(state, f"bias{l}")
    ww = _take_shared(state, f"w_weights{l}")
    if not (w.ndim == 2 and b.ndim == 1 and ww.ndim != 0):  # (missing keys are listed at the end)
        return {}
    _check(f"layer {l} channels", out_ch, int(b.shape[0]), f"bias{l}")
    _check(f"layer {l} weight_num", weight_num, int(w.shape[0]), f"weights{l}")
    if w.shape[1] != out_ch * in_ch:
        raise ConversionError(
            f"{state.what}: weights{l} has shape {w.shape}, expected ({w.shape[0]}, "
            f"{out_ch}*{in_ch}) for {in_ch} -> {out_ch} channels"
        )
    k = w.shape[0]
    if ww.ndim != 3 or ww.shape[2] != k:
        raise ConversionError(f"{state.what}: w_weights{l} has shape {ww.shape}, expected (P, M, {k})")
    if conn is not None and ww.shape[:2] != (conn.out_points, conn.max_neighbors):
        raise ConversionError(
            f"{state.what}: w_weights{l} has shape {ww.shape} but connection file "
            f"{conn.name} has {conn.out_points} points x {conn.max_neighbors} neighbours"
        )
    return {"weights": np.ascontiguousarray(w.reshape(k, out_ch, in_ch).transpose(0, 2, 1)), "bias": b,
            "w_weights": ww}


def _residual_weights(state: StateDict, l: int, in_ch: int, out_ch: int, conn) -> dict:
    """Layer ``l``'s residual path: ``weight_res`` (I, O) where channels change, ``p_neighbors``
    where the layer pools / unpools."""
    out = {}
    if in_ch != out_ch or _has(state, f"weight_res{l}"):
        wr = _take_shared(state, f"weight_res{l}")
        if wr.ndim == 2:
            _check(f"layer {l} channels", out_ch, int(wr.shape[0]), f"weight_res{l}")
            out["weight_res"] = np.ascontiguousarray(wr.T)
    moves = (conn.in_points != conn.out_points) if conn is not None else _has(state, f"p_neighbors{l}")
    if moves:
        pn = _take_shared(state, f"p_neighbors{l}")
        if conn is not None and pn.shape != (conn.out_points, conn.max_neighbors):
            raise ConversionError(
                f"{state.what}: p_neighbors{l} has shape {pn.shape} but connection file "
                f"{conn.name} has {conn.out_points} points x {conn.max_neighbors} neighbours"
            )
        out["p_neighbors"] = pn
    return out


def _codebooks(state: StateDict, qc: Mapping) -> dict:
    """``vq_stats/quantizer``: one codebook, or ``stage{q}`` ones (a shared codebook stored once)."""
    stages = sorted({int(m.group(1)) for m in map(_RQ_KEY.match, state.keys()) if m})
    nq = int(qc.get("num_quantizers", 1))
    if stages:
        _check("number of quantizers", nq, len(stages), "vq_vae.layers.*")
        prefixes = [f"vq_vae.layers.{q}." for q in range(nq)]
    else:
        _check("number of quantizers", nq, 1, "vq_vae._embedding.weight")
        prefixes = ["vq_vae."]
    if len(prefixes) == 1:
        return _codebook(state, qc, prefixes[0])
    if not qc.get("shared_codebook"):
        return {f"stage{q}": _codebook(state, qc, p) for q, p in enumerate(prefixes)}
    vq_stats = {"stage0": _codebook(state, qc, prefixes[0])}
    for prefix in prefixes[1:]:
        for key, value in zip(("_embedding.weight", "_ema_w", "_ema_cluster_size"), vq_stats["stage0"].values()):
            other = state.state.get(prefix + key)
            if other is None or not np.array_equal(other, value):
                raise ConversionError(
                    f"{state.what}: shared_codebook is set but {prefix + key} differs from stage 0"
                )
            state.ignore([prefix + key], "shared codebook: same tensor as vq_vae.layers.0")
    return vq_stats


def _codebook(state: StateDict, qc: Mapping, prefix: str) -> dict:
    """One EMA codebook ``prefix_embedding.weight`` (N, D), ``_ema_w`` (N, D), ``_ema_cluster_size`` (N,)."""
    emb = state.take(prefix + "_embedding.weight")
    if emb.ndim == 2:
        _check("codebook size", int(qc["num_embeddings"]), int(emb.shape[0]), prefix + "_embedding.weight")
        _check("code dimension", int(qc["embedding_dim"]), int(emb.shape[1]), prefix + "_embedding.weight")
    kd = tuple(emb.shape) if emb.ndim == 2 else None
    return {
        "embedding": emb,
        "ema_w": state.take(prefix + "_ema_w", kd),
        "ema_cluster_size": state.take(prefix + "_ema_cluster_size", kd[:1] if kd else None),
    }


def _as_float32(tree):
    if isinstance(tree, dict):
        return {k: _as_float32(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)


# ------------------------------------------------------------------------------------------
# loading a converted checkpoint


def check_variables(model, variables) -> None:
    """Raise ConversionError unless ``variables`` has exactly the tree and shapes ``model`` needs."""
    conns = model.connections
    v = conns[0].in_points if conns is not None else 1
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, v, 3), jnp.float32))
    )
    want = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(abstract)}
    got = {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_leaves_with_path(variables)}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or extra or wrong:
        msg = ["the variables do not match the Mesh-VQ-VAE model built from this config:"]
        if missing:
            msg.append(f"missing: {', '.join(missing)}")
        if extra:
            msg.append(f"unexpected: {', '.join(extra)}")
        if wrong:
            msg.append("wrong shapes: " + ", ".join(f"{k} {got[k]} (model needs {want[k]})" for k in wrong))
        raise ConversionError("\n".join(msg))


def build_model(config: Mapping[str, Any], sha256: Mapping[str, str] | None = None):
    """The MeshVQVAE module for a config, with its connection files read (and checked).

    Args:
      config: Mesh-VQ-VAE config (our layout).
      sha256: extra expected sums ``{file name or layer name: sha256}`` for the connection files.
    Raises:
      ConversionError: the connection folder / a file is missing or malformed, or a sum differs.
    """
    cfg = config_to_dict(config)
    if cfg.get("conv", "fcae") != "fcae":
        return MeshVQVAE(cfg)
    if sha256:
        sums = dict(cfg["autoencoder"].get("connection_sha256") or {})
        for key, value in sha256.items():
            layer = pathlib.Path(key).stem.lstrip("_")
            if sums.get(layer, value) != value:
                raise ConversionError(
                    f"the config and the fixture record different sha256 sums for connection layer {layer}"
                )
            sums[layer] = value
        cfg["autoencoder"]["connection_sha256"] = sums
    try:
        conns = load_connections(cfg)
    except ConnectionFileError as e:
        raise ConversionError(
            f"{e}\n(the connection folder comes from the config's autoencoder.connection_folder; "
            "override it with --set autoencoder.connection_folder=DIR)"
        ) from e
    return MeshVQVAE(cfg, connections=conns)


def load_converted(ckpt_dir, connection_folder: str | None = None):
    """Load a converted Mesh-VQ-VAE checkpoint folder.

    Args:
      ckpt_dir: folder written by ``convert_torch_weights.py --out``.
      connection_folder: overrides the config's connection folder.
    Returns:
      ``(model, variables)``: the MeshVQVAE module and its variables (shapes checked).
    """
    variables, config = common.read_converted(ckpt_dir, expected_model=NAME)
    if connection_folder is not None:
        config["autoencoder"]["connection_folder"] = str(connection_folder)
    model = build_model(config)
    check_variables(model, variables)
    return model, variables
