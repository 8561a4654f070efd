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
"""
from __future__ import annotations

import copy
import pathlib
import re
from typing import Any, Mapping

import numpy as np

from hmr_jax.conversion import common, registry
from hmr_jax.conversion.common import ConversionError, StateDict

NAME = "mesh_vqvae"
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
    from hmr_jax.models.mesh_vqvae import RELEASED_54, config_to_dict

    if user is None:
        return copy.deepcopy(RELEASED_54)
    user = config_to_dict(user)
    if "config" in user and isinstance(user["config"], Mapping) and "modelconv" in user["config"]:
        inner = user["config"]
        return _from_original(inner["modelconv"], inner.get("model", {}), user.get("connection_files_sha256"))
    if "modelconv" in user:
        return _from_original(user["modelconv"], user.get("model", {}), user.get("connection_files_sha256"))
    if "autoencoder" in user or "quantizer" in user or "conv" in user:
        cfg = {k: v for k, v in user.items() if k != "model"}
        return _deep_merge(RELEASED_54, cfg)
    raise ConversionError(
        "the --config JSON is neither a Mesh-VQ-VAE config (autoencoder / quantizer), the original "
        "layout (modelconv / model) nor a parity fixture JSON (config.modelconv)"
    )


def _connections_or_none(config: Mapping):
    """The connection layers if the config's folder exists (None otherwise)."""
    from hmr_jax.models.mesh_vqvae import load_connections

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


def convert(state: StateDict, user_config: Mapping | None = None) -> tuple[dict, dict]:
    """Convert a Mesh-VQ-VAE state dict.

    Args:
      state: the checkpoint's tensors (every key used or ignored here).
      user_config: ``--config`` contents or None (released 54-token preset).
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
    config = normalize_config(user_config)
    ae, qc = config["autoencoder"], config["quantizer"]
    n = len(ae["layers"])
    idx = sorted({int(m.group(3)) for m in map(_LAYER_KEY.match, keys) if m})
    if idx and idx[-1] >= n:
        raise ConversionError(
            f"{state.what}: the checkpoint has autoencoder layers up to {idx[-1]} but the config lists "
            f"{n} layers ({ae['layers']}); pass the matching --config"
        )
    conns = _connections_or_none(config)
    params: dict[str, dict] = {}
    in_ch = 3
    channels, weight_nums = list(ae["channels"]), list(ae["weight_nums"])
    for l in range(n):
        rate = float(ae["residual_rates"][l])
        layer: dict[str, np.ndarray] = {}
        out_ch = int(channels[l])
        if rate < 1:
            w = _take_shared(state, f"weights{l}")
            b = _take_shared(state, f"bias{l}")
            ww = _take_shared(state, f"w_weights{l}")
            if w.ndim == 2 and b.ndim == 1 and ww.ndim != 0:  # (missing keys are listed at the end)
                _check(f"layer {l} channels", out_ch, int(b.shape[0]), f"bias{l}")
                _check(f"layer {l} weight_num", int(weight_nums[l]), int(w.shape[0]), f"weights{l}")
                if w.shape[1] != out_ch * in_ch:
                    raise ConversionError(
                        f"{state.what}: weights{l} has shape {w.shape}, expected ({w.shape[0]}, "
                        f"{out_ch}*{in_ch}) for {in_ch} -> {out_ch} channels"
                    )
                k = w.shape[0]
                layer["weights"] = np.ascontiguousarray(w.reshape(k, out_ch, in_ch).transpose(0, 2, 1))
                layer["bias"] = b
                if ww.ndim != 3 or ww.shape[2] != k:
                    raise ConversionError(f"{state.what}: w_weights{l} has shape {ww.shape}, expected (P, M, {k})")
                if conns is not None:
                    c = conns[l]
                    if ww.shape[:2] != (c.out_points, c.max_neighbors):
                        raise ConversionError(
                            f"{state.what}: w_weights{l} has shape {ww.shape} but connection file "
                            f"{c.name} has {c.out_points} points x {c.max_neighbors} neighbours"
                        )
                layer["w_weights"] = ww
        if rate > 0:
            needs_res = in_ch != out_ch
            if needs_res or _has(state, f"weight_res{l}"):
                wr = _take_shared(state, f"weight_res{l}")
                if wr.ndim == 2:
                    _check(f"layer {l} channels", out_ch, int(wr.shape[0]), f"weight_res{l}")
                    layer["weight_res"] = np.ascontiguousarray(wr.T)
            moves = (conns[l].in_points != conns[l].out_points) if conns is not None else _has(state, f"p_neighbors{l}")
            if moves:
                pn = _take_shared(state, f"p_neighbors{l}")
                if conns is not None and pn.shape != (conns[l].out_points, conns[l].max_neighbors):
                    raise ConversionError(
                        f"{state.what}: p_neighbors{l} has shape {pn.shape} but connection file "
                        f"{conns[l].name} has {conns[l].out_points} points x {conns[l].max_neighbors} neighbours"
                    )
                layer["p_neighbors"] = pn
        if layer:
            params[f"layer{l}"] = layer
        in_ch = out_ch

    # codebooks
    stages = sorted({int(m.group(1)) for m in map(_RQ_KEY.match, keys) if m})
    nq = int(qc.get("num_quantizers", 1))
    if stages:
        _check("number of quantizers", nq, len(stages), "vq_vae.layers.*")
        prefixes = [f"vq_vae.layers.{q}." for q in range(nq)]
    else:
        _check("number of quantizers", nq, 1, "vq_vae._embedding.weight")
        prefixes = ["vq_vae."]

    def codebook(prefix):
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

    if len(prefixes) == 1:
        vq_stats = codebook(prefixes[0])
    elif qc.get("shared_codebook"):
        vq_stats = {"stage0": codebook(prefixes[0])}
        for q, prefix in enumerate(prefixes[1:], start=1):
            for key, value in zip(("_embedding.weight", "_ema_w", "_ema_cluster_size"), vq_stats["stage0"].values()):
                other = state.state.get(prefix + key)
                if other is None or not np.array_equal(other, value):
                    raise ConversionError(
                        f"{state.what}: shared_codebook is set but {prefix + key} differs from stage 0"
                    )
                state.ignore([prefix + key], "shared codebook: same tensor as vq_vae.layers.0")
    else:
        vq_stats = {f"stage{q}": codebook(p) for q, p in enumerate(prefixes)}
    if state.missing:
        state.finish()  # lists the missing and the unexpected keys together
    variables = {
        "params": {"autoencoder": params},
        "vq_stats": {"quantizer": vq_stats},
    }
    variables = _as_float32(variables)
    return variables, config


def _as_float32(tree):
    if isinstance(tree, dict):
        return {k: _as_float32(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)


# ------------------------------------------------------------------------------------------
# loading a converted checkpoint


def check_variables(model, variables) -> None:
    """Raise ConversionError unless ``variables`` has exactly the tree and shapes ``model`` needs."""
    import jax
    import jax.numpy as jnp

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
    from hmr_jax.mesh.connections import ConnectionFileError
    from hmr_jax.models.mesh_vqvae import MeshVQVAE, config_to_dict, load_connections

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


def mesh_decoder_from_torch(path, connection_folder=None):
    """A jitted ``ids (M, 54) -> meshes (M, 6890, 3)`` (meters) from an original Mesh-VQ-VAE ``.pt`` file.

    The config is the JSON beside the file (``NAME.json``, a parity fixture) if present, else
    the released 54-token preset. The dfaust2 connection files come from ``connection_folder``,
    else the config's folder if it exists, else ``$HMR_JAX_REFERENCE_DIR/ConnectionMatrices``.
    """
    import json
    import os

    from hmr_jax.models.decoding import mesh_decoder_fn

    path = pathlib.Path(path)
    raw, _ = common.load_torch_state_dict(path)
    side = path.with_suffix(".json")
    user = json.loads(side.read_text()) if side.is_file() else None
    state = common.StateDict(raw, what=str(path))
    variables, config = convert(state, user)
    state.finish()
    folder = connection_folder
    if folder is None and not pathlib.Path(config["autoencoder"]["connection_folder"]).is_dir():
        ref = os.environ.get("HMR_JAX_REFERENCE_DIR")
        if ref and (pathlib.Path(ref) / "ConnectionMatrices").is_dir():
            folder = pathlib.Path(ref) / "ConnectionMatrices"
    if folder is not None:
        config["autoencoder"]["connection_folder"] = str(folder)
    model = build_model(config, sha256=(user or {}).get("connection_files_sha256"))
    return mesh_decoder_fn(model, variables)


# ------------------------------------------------------------------------------------------
# verification against a parity fixture

_LAYER_OUT = re.compile(r"^out_(enc|dec)_layer(\d+)_out_b(\d+)$")


def _int_error(got, want) -> float:
    """0 for identical integer arrays, 1 otherwise (ids must be identical, not close)."""
    got, want = np.asarray(got), np.asarray(want)
    return 0.0 if got.shape == want.shape and np.array_equal(got, want) else 1.0


def _fixture_functions(model):
    """Jitted (eval pass, train pass) for ``model``, memoised on its config (compiling the whole
    tokenizer takes ~10 s on a small CPU; repeated verifications of one config reuse it)."""
    import json

    key = json.dumps({k: v for k, v in model.config.items() if k != "model"}, sort_keys=True, default=str)
    if key not in _FIXTURE_FUNCTIONS:
        import jax

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

        if len(_FIXTURE_FUNCTIONS) >= 2:  # keep two compiled models alive at most
            _FIXTURE_FUNCTIONS.pop(next(iter(_FIXTURE_FUNCTIONS)))
        _FIXTURE_FUNCTIONS[key] = (run_eval, run_train)
    return _FIXTURE_FUNCTIONS[key]


_FIXTURE_FUNCTIONS: dict = {}


def run_fixture(model, variables, meshes: np.ndarray) -> dict[str, np.ndarray]:
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
    import jax
    import jax.numpy as jnp

    meshes = jnp.asarray(meshes, jnp.float32)
    variables = jax.tree.map(jnp.asarray, variables)
    run_eval, run_train = _fixture_functions(model)
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


def verify(variables, config, io: Mapping[str, np.ndarray], fixture: Mapping, fixture_dir) -> dict[str, float]:
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
    got = run_fixture(model, variables, io["in_meshes"])
    errors: dict[str, float] = {}
    unknown = []
    for name in sorted(k for k in io if k.startswith("out_")):
        want = io[name]
        m = _LAYER_OUT.match(name)
        if m:
            layer, b = int(m.group(2)), int(m.group(3))
            if layer not in got["layers"]:
                unknown.append(name)
                continue
            value = got["layers"][layer][b]
        elif name in got:
            value = got[name]
        else:
            unknown.append(name)
            continue
        if np.issubdtype(want.dtype, np.integer):
            errors[name] = _int_error(value, want)
        else:
            errors[name] = common.max_relative_error(value, want)
    if unknown:
        raise ConversionError(f"the fixture has outputs the mesh_vqvae verifier cannot produce: {', '.join(unknown)}")
    return errors


registry.register(
    registry.Converter(
        name=NAME,
        detect=detect,
        convert=convert,
        verify=verify,
        description="Mesh-VQ-VAE tokenizer (FullyConvAE + EMA VQ / residual VQ)",
    )
)
