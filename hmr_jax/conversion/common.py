"""Pieces every converter shares: torch containers, key bookkeeping, layouts, the small key
mappers (:func:`dense`, :func:`layer_norm`, :func:`count_blocks`), the user-config normaliser
(:func:`user_config`) and the converted checkpoints on disk.

Conventions: PyTorch conv kernels are (O, I, kH, kW) and become Flax HWIO (kH, kW, I, O);
``nn.Linear`` weights (out, in) become Dense kernels (in, out). Every float tensor is cast to
float32 (fixtures stored as float16 / bfloat16 then match the reference bit for bit).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Iterable, Mapping

import numpy as np
import orbax.checkpoint as ocp

from hmr_jax.errors import UserError
from hmr_jax.files import atomic_folder, atomic_write
from hmr_jax.safe_read import check_file_size

# Keys of the containers the original training scripts write around the state dict.
_STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict")
#: the largest checkpoint read (the released ViT-H MEGA is ~2.5 GB)
MAX_CHECKPOINT_BYTES = 32 << 30


class ConversionError(UserError, RuntimeError):
    """A checkpoint cannot be converted: wrong kind, missing / unexpected keys, bad shapes."""


def load_torch_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a ``torch.save`` file into NumPy arrays.

    Accepts a bare state dict or a container ``{"model": sd, ...}`` / ``{"state_dict": sd}``;
    strips a ``module.`` prefix (DataParallel) from every key that has it.

    Args:
      path: the ``.pt`` / ``.pth`` / ``.tar`` file.
    Returns:
      ``(state, info)``: state maps key -> array (floats as float32, integers kept);
      info records ``container_keys``, ``state_dict_key`` and ``stripped_prefix``.
    Raises:
      ConversionError: missing file, unreadable file, or no tensors inside.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist (pass the path of the .pt/.pth file)")
    check_file_size(path, MAX_CHECKPOINT_BYTES, ConversionError, "checkpoint")
    try:
        import torch  # optional (the `torch` extra): only reading .pt files needs it
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConversionError(
            "reading PyTorch checkpoints needs torch: pip install -e '.[torch]' "
            "(after `pip install torch==2.13.0`, the CPU wheel)"
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds here
        raise ConversionError(f"cannot read {path} as a PyTorch checkpoint: {e}") from e
    info: dict[str, Any] = {"source": str(path), "container_keys": None, "state_dict_key": None}
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        info["container_keys"] = [str(k) for k in obj.keys()]
        for key in _STATE_DICT_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                info["state_dict_key"] = key
                obj = obj[key]
                break
        else:
            raise ConversionError(
                f"{path} holds a dict with keys {info['container_keys']} but no state dict under "
                f"any of {list(_STATE_DICT_KEYS)}"
            )
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise ConversionError(f"{path} does not contain a state dict of tensors")
    state: dict[str, np.ndarray] = {}
    stripped = False
    for key, tensor in obj.items():
        if not isinstance(key, str):
            raise ConversionError(f"{path}: the state dict has a key of type {type(key).__name__} ({key!r}); "
                                  "a state dict maps parameter names to tensors")
        if key.startswith("module."):
            key, stripped = key[len("module."):], True
        try:
            t = tensor.detach().cpu()
            if t.is_complex():
                raise TypeError(f"complex dtype {t.dtype}")
            if t.is_floating_point():
                t = t.float()
            value = t.numpy().copy()
        except (TypeError, RuntimeError, ValueError, AttributeError) as e:
            raise ConversionError(f"{path}: tensor {key!r} cannot be read as a plain array ({e}); only dense "
                                  "real tensors are converted") from None
        if key in state:
            raise ConversionError(f"{path}: key {key!r} appears twice (with and without 'module.')")
        state[key] = value
    info["stripped_prefix"] = "module." if stripped else ""
    return state, info


def _is_state_dict(obj: Mapping) -> bool:
    import torch  # optional (the `torch` extra); load_torch_state_dict checked that it imports

    values = list(obj.values())
    return bool(values) and all(isinstance(v, torch.Tensor) for v in values)


class StateDict:
    """A state dict whose keys must each be used or explicitly ignored.

    ``take`` returns a tensor and marks it used; ``ignore`` marks keys the Flax model does not
    need (with the reason); ``finish`` raises a ``ConversionError`` listing every key that was
    asked for but missing and every key left over, so nothing is silently dropped.
    """

    def __init__(self, state: Mapping[str, np.ndarray], what: str = "checkpoint"):
        self.state = dict(state)
        self.what = what
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.ignored: dict[str, str] = {}
        self.last_key: str | None = None  # the key taken last (named when a converter fails)

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def keys(self) -> list[str]:
        """All keys, in checkpoint order."""
        return list(self.state)

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Return ``state[key]`` (marking it used); record it as missing if absent."""
        if key not in self.state:
            self.missing.append(key)
            return np.zeros(shape or (), np.float32)
        value = self.state[key]
        self.last_key = key
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ConversionError(
                f"{self.what}: {key} has shape {tuple(value.shape)}, expected {tuple(shape)}"
            )
        self.used.add(key)
        return value

    def ignore(self, keys: Iterable[str], reason: str) -> None:
        """Mark ``keys`` (present ones) as deliberately unused, with the reason."""
        for key in keys:
            if key in self.state:
                self.used.add(key)
                self.ignored[key] = reason

    def with_prefix(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix``."""
        return [k for k in self.state if k.startswith(prefix)]

    def unused(self) -> list[str]:
        """Keys neither taken nor ignored yet."""
        return [k for k in self.state if k not in self.used]

    def finish(self) -> None:
        """Raise ConversionError if any key was missing or left over."""
        left = self.unused()
        if self.missing or left:
            msg = [f"{self.what}: the checkpoint does not match the model."]
            if self.missing:
                msg.append(f"missing keys ({len(self.missing)}): {_short(self.missing)}")
            if left:
                msg.append(f"unexpected keys ({len(left)}): {_short(left)}")
            msg.append("Check that --model / --config describe this checkpoint.")
            raise ConversionError("\n".join(msg))


def _short(keys: list[str], n: int = 40) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch conv weight (O, I, kH, kW) -> Flax kernel (kH, kW, I, O), as a view (no copy)."""
    return np.transpose(w, (2, 3, 1, 0))


def dense_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch ``nn.Linear`` weight (out, in) -> Flax Dense kernel (in, out), as a view (no copy:
    full-size manifests convert without allocating). Raises ConversionError unless ``w`` is 2-D."""
    if w.ndim != 2:
        raise ConversionError(f"expected a 2-D linear weight, got shape {w.shape}")
    return w.T


def dense(state: StateDict, key: str, bias: bool = True) -> dict:
    """``key.weight`` (out, in) [+ ``key.bias`` (out,)] -> Flax Dense params ``{"kernel", "bias"}``."""
    out = {"kernel": dense_kernel(state.take(key + ".weight"))}
    if bias:
        out["bias"] = state.take(key + ".bias")
    return out


def layer_norm(state: StateDict, key: str) -> dict:
    """LayerNorm ``key.weight`` / ``key.bias`` (C,) -> Flax LayerNorm params ``{"scale", "bias"}``."""
    return {"scale": state.take(key + ".weight"), "bias": state.take(key + ".bias")}


def count_blocks(state: StateDict, prefix: str) -> int:
    """How many numbered blocks ``prefix{i}.*`` the state dict has (``i`` must run 0..n-1)."""
    n = set()
    for k in state.with_prefix(prefix):
        m = re.match(re.escape(prefix) + r"(\d+)\.", k)
        if m:
            n.add(int(m.group(1)))
    if n != set(range(len(n))):
        raise ConversionError(f"{prefix}* blocks are not numbered 0..{len(n) - 1}: {sorted(n)}")
    return len(n)


def user_config(config: Mapping[str, Any] | None) -> dict:
    """The model part of a user config (``--config``) as a dict; ``{}`` for None.

    A parity fixture JSON holds the config its model was built with under ``"config"`` (beside
    its description): that part is returned; any other mapping is returned as it is. The family
    converters pick their sections (``mega``, ``backbone``, ``transformer`` ...) from the result.
    """
    if not config:
        return {}
    if not isinstance(config, Mapping):
        raise ConversionError(f"the model config must be a JSON object, got {type(config).__name__}")
    if isinstance(config.get("config"), Mapping):
        return dict(config["config"])
    return dict(config)


def max_relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| divided by max |want| (1 when ``want`` is all zero); inf on shape mismatch."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return float("inf")
    diff = np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))) if want.size else 0.0
    scale = np.max(np.abs(want.astype(np.float64))) if want.size else 0.0
    return float(diff / (scale if scale > 0 else 1.0))


# ----------------------------------------------------------------------------------------
# Converted checkpoints on disk: DIR/config.json, DIR/conversion.json, DIR/variables/ (Orbax)


def write_converted(
    out_dir: str | os.PathLike,
    variables: Any,
    config: Mapping[str, Any],
    meta: Mapping[str, Any],
    overwrite: bool = False,
) -> pathlib.Path:
    """Write a converted model atomically: built in a temporary sibling folder, then renamed.

    Args:
      out_dir: destination folder (must not exist unless ``overwrite``).
      variables: Flax variables pytree (``{"params": ..., "batch_stats": ..., ...}``).
      config: JSON-serialisable model config (``config["model"]`` names the model kind).
      meta: what it was converted from (source path, container keys, ignored keys, ...).
    Returns:
      The final folder.
    """
    out_dir = pathlib.Path(out_dir).resolve()
    if out_dir.exists() and not overwrite:
        raise ConversionError(f"{out_dir} already exists (use --overwrite to replace it)")
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(tmp / "variables", variables)
        ckpt.wait_until_finished()
        ckpt.close()
        atomic_write(tmp / "config.json", json.dumps(config, indent=2, default=_json_default))
        atomic_write(tmp / "conversion.json", json.dumps(meta, indent=2, default=_json_default))
    return out_dir


def read_converted(ckpt_dir: str | os.PathLike, expected_model: str | None = None):
    """Read a folder written by :func:`write_converted`.

    Args:
      ckpt_dir: the folder.
      expected_model: if given, ``config["model"]`` must equal it.
    Returns:
      ``(variables, config)`` with variables as NumPy-backed jax arrays.
    Raises:
      ConversionError: missing folder / files, or a checkpoint of another model kind.
    """
    ckpt_dir = pathlib.Path(ckpt_dir).resolve()
    cfg_path = ckpt_dir / "config.json"
    if not cfg_path.is_file() or not (ckpt_dir / "variables").is_dir():
        raise ConversionError(
            f"{ckpt_dir} is not a converted hmr_jax checkpoint (needs config.json and variables/); "
            "create one with convert_torch_weights.py"
        )
    config = json.loads(cfg_path.read_text())
    if expected_model is not None and config.get("model") != expected_model:
        raise ConversionError(
            f"{ckpt_dir} holds a '{config.get('model')}' model, but a '{expected_model}' model is needed"
        )
    ckpt = ocp.StandardCheckpointer()
    variables = ckpt.restore(ckpt_dir / "variables")
    ckpt.close()
    return variables, config


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, pathlib.Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
