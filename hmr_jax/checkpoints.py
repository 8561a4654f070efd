"""Model checkpoints on disk, read one way: a converted folder or a ``train.py`` workdir.

* a converted folder (``convert_torch_weights.py --out``, :mod:`hmr_jax.conversion.common`):
  ``config.json`` (``"model"`` names the kind) and ``variables/``;
* a ``train.py`` workdir: ``config.json`` (the training config) and ``checkpoints/`` (Orbax),
  of which the latest complete step is read.

:func:`read_checkpoint` reads either into a :class:`Checkpoint` whose ``config`` has the layout
of a converted model (``{"model": kind, "mega" | "vqhps": sizes, "backbone": ..., "image_size"}``)
whatever the source, so :func:`build_model` builds the same Flax module from both.
:func:`load_tokenizer` gives the frozen Mesh-VQ-VAE the same way. The training stages (pre-trained
weights, the tokenizer), ``sample.py``, ``evaluate.py`` and :mod:`hmr_jax.inference` all load
models through these functions.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from hmr_jax.conversion.common import ConversionError, read_converted
from hmr_jax.conversion.mesh_vqvae import load_converted
from hmr_jax.data.augment import BACKBONE_INPUTS
from hmr_jax.errors import UserError
from hmr_jax.models.mega import build_mega
from hmr_jax.models.mesh_vqvae import RELEASED_54, MeshVQVAE, load_connections
from hmr_jax.models.vqhps import build_vqhps

log = logging.getLogger(__name__)

#: model kinds (``config["model"]`` of a converted folder) that predict meshes from images
MEGA_IMAGE_KINDS = ("mega_hrnet", "mega_resnet", "mega_vit")
VQHPS_KINDS = ("vqhps_hrnet", "vqhps_resnet")
IMAGE_KINDS = MEGA_IMAGE_KINDS + VQHPS_KINDS
#: the unconditional MEGA (VQMAE), which generates token sequences without an image
UNCONDITIONAL_KIND = "mega_pretrained"


class CheckpointError(UserError, ValueError):
    """A checkpoint folder is missing, unreadable or of another kind; the message names the fix."""


@dataclasses.dataclass
class Checkpoint:
    """Variables and model description of one checkpoint folder.

    Attributes:
      variables: Flax variables ``{"params": ..., "batch_stats": ..., ...}`` (host arrays).
      config: the model config in the converted layout (see the module docstring); a workdir's
        training entries are kept under ``"train_config"``.
      kind: the model kind (``mega_hrnet``, ``vqhps_resnet``, ``mega_pretrained``,
        ``mesh_vqvae``, a backbone name, ...).
      path: the folder.
      source: ``"converted"`` or ``"workdir"``.
      step: the restored training step (workdirs only).
    """

    variables: Any
    config: dict
    kind: str
    path: str
    source: str
    step: int | None = None

    @property
    def train_config(self) -> dict:
        """The ``train.py`` config of a workdir (``{}`` for a converted folder)."""
        return self.config.get("train_config", {})


def is_train_workdir(path: str | os.PathLike) -> bool:
    """True if ``path`` is a ``train.py`` workdir (has ``config.json`` and ``checkpoints/``)."""
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(
        os.path.join(path, "checkpoints"))


def restore_workdir(path: str | os.PathLike) -> tuple[dict, Mapping[str, Any]]:
    """``(state, config)`` of the latest checkpoint of a ``train.py`` workdir (host arrays).

    Raises:
      FileNotFoundError: the workdir holds no complete checkpoint.
    """
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # Orbax warns about every option a read-only manager ignores
    try:
        manager = ocp.CheckpointManager(os.path.abspath(os.path.join(path, "checkpoints")),
                                        item_handlers={"state": ocp.StandardCheckpointHandler()},
                                        options=ocp.CheckpointManagerOptions(read_only=True))
    finally:
        absl_logger.setLevel(level)
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{path}/checkpoints holds no complete checkpoint")
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    manager.close()
    return jax.device_get(state), config


def workdir_kind(train_config: Mapping[str, Any]) -> str:
    """The model kind a ``train.py`` config trains: ``mega_{backbone}``, ``vqhps_{backbone}``,
    ``mega_pretrained``, ``mesh_vqvae`` (or the stage name for the others)."""
    stage = str(train_config.get("stage", ""))
    if stage in ("mega", "vqhps"):
        return f"{stage}_{(train_config.get('backbone') or {}).get('kind', 'hrnet')}"
    return {"mega_pretrain": UNCONDITIONAL_KIND}.get(stage, stage)


def model_config_of_workdir(train_config: Mapping[str, Any]) -> dict:
    """A training config's model entries in the converted layout (see the module docstring).

    ``image_size`` is the crop the stage trained on: ``(crop, width)`` of the backbone's input
    (:data:`hmr_jax.data.augment.BACKBONE_INPUTS`), with ``data.crop_size`` when it is set.
    """
    kind = workdir_kind(train_config)
    out: dict = {"model": kind, "train_config": dict(train_config)}
    if "decoding" in train_config:
        out["decoding"] = dict(train_config["decoding"])
    stage = train_config.get("stage")
    if stage in ("mega", "mega_pretrain"):
        out["mega"] = dict(train_config["mega"])
    if stage == "vqhps":
        out["vqhps"] = dict(train_config["vqhps"])
    if stage in ("mega", "vqhps"):
        backbone = train_config["backbone"]
        out["backbone"] = dict(backbone["model"])
        geometry = BACKBONE_INPUTS[backbone.get("kind", "hrnet")]
        crop = int((train_config.get("data") or {}).get("crop_size") or 0)
        side = crop or geometry.crop
        out["image_size"] = [side, side - (geometry.crop - geometry.width)]
    if stage == "mesh_vqvae":
        out.update(dict(train_config["model"]))
        out["model"] = kind
    return out


def read_checkpoint(path: str | os.PathLike, kinds: tuple[str, ...] | None = None) -> Checkpoint:
    """Read a converted folder or a ``train.py`` workdir (its latest checkpoint).

    Args:
      path: the folder.
      kinds: if given, the model kinds accepted (anything else is a :class:`CheckpointError`
        saying what the folder holds).
    Returns:
      the :class:`Checkpoint`.
    Raises:
      CheckpointError: missing folder, no checkpoint inside, unreadable files, another kind.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path} is not a folder: give a converted checkpoint (convert_torch_weights.py "
                              "--out DIR) or a train.py workdir")
    if is_train_workdir(path):
        try:
            state, train_config = restore_workdir(path)
        except (FileNotFoundError, OSError, ValueError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: cannot read the train.py workdir ({e}); train it further or "
                                  "give another checkpoint") from None
        variables = {"params": state["params"], **state.get("model_state", {})}
        ckpt = Checkpoint(variables, model_config_of_workdir(train_config), workdir_kind(train_config),
                          path, "workdir", int(state["step"]) if "step" in state else None)
    else:
        try:
            variables, config = read_converted(path)
        except ConversionError as e:
            raise CheckpointError(str(e)) from None
        except Exception as e:  # Orbax / JSON raise many kinds for damaged files
            raise CheckpointError(f"{path}: cannot read the converted checkpoint ({type(e).__name__}: {e}); "
                                  "convert it again with convert_torch_weights.py") from None
        ckpt = Checkpoint(variables, dict(config), str(config.get("model", "")), path, "converted")
    if kinds is not None and ckpt.kind not in kinds:
        raise CheckpointError(f"{path} holds a {ckpt.kind!r} model, but one of {', '.join(kinds)} is needed")
    return ckpt


def build_model(checkpoint: Checkpoint, dtype=None):
    """The Flax module of a MEGA (CVQMAE / VQMAE) or VQ-HPS checkpoint.

    Args:
      checkpoint: from :func:`read_checkpoint`.
      dtype: computation dtype (default: the workdir's ``config.dtype``, else float32).
    Raises:
      CheckpointError: not a MEGA / VQ-HPS checkpoint.
    """
    if dtype is None:
        dtype = jnp.dtype(checkpoint.train_config.get("dtype", "float32"))
    if checkpoint.kind in MEGA_IMAGE_KINDS + (UNCONDITIONAL_KIND,):
        return build_mega(checkpoint.config, dtype=dtype)
    if checkpoint.kind in VQHPS_KINDS:
        return build_vqhps(checkpoint.config, dtype=dtype)
    raise CheckpointError(f"{checkpoint.path} holds a {checkpoint.kind!r} model, not a MEGA / VQ-HPS one")


def load_tokenizer(path: str, connection_folder: str = ""):
    """The frozen Mesh-VQ-VAE: ``(model, variables)`` from a converted checkpoint folder
    (``convert_torch_weights.py --out``) or from a ``train.py`` workdir of the mesh_vqvae stage.

    ``path="random"`` gives a randomly initialised released-size tokenizer (benchmarks and smoke
    runs only: its tokens mean nothing) over the dfaust2 files in ``connection_folder``.

    Raises:
      ValueError: empty path, or a workdir of another stage; FileNotFoundError: no such folder;
      :class:`~hmr_jax.conversion.common.ConversionError`: a converted folder of another kind or
      missing connection files.
    """
    if path == "random":
        log.warning("Using a RANDOM tokenizer (config.tokenizer.path='random'): for benchmarks only.")
        cfg = copy.deepcopy(RELEASED_54)
        if connection_folder:
            cfg["autoencoder"]["connection_folder"] = connection_folder
        conns = tuple(load_connections(cfg))
        model = MeshVQVAE(cfg, connections=conns)
        variables = model.init(jax.random.key(0), jnp.zeros((1, conns[0].in_points, 3)))
        return model, variables

    if not path:
        raise ValueError("config.tokenizer.path is empty: give a converted Mesh-VQ-VAE folder or a "
                         "mesh_vqvae train.py workdir")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer {path!r} does not exist (config.tokenizer.path)")
    if is_train_workdir(path):
        state, config = restore_workdir(path)
        if config.get("stage") != "mesh_vqvae":
            raise ValueError(f"{path} is a {config.get('stage')!r} run, not a mesh_vqvae one")
        model_cfg = dict(config["model"])
        if connection_folder:
            model_cfg["autoencoder"] = {**model_cfg["autoencoder"], "connection_folder": connection_folder}
        model = MeshVQVAE(model_cfg, connections=tuple(load_connections(model_cfg)))
        return model, {"params": state["params"], **state["model_state"]}
    return load_converted(path, connection_folder or None)
