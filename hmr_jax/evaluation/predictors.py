"""What an evaluation runs: a predictor of meshes from crops.

Predictors (:func:`load_predictor`): a ``train.py`` workdir of the ``mega`` / ``vqhps`` stages,
a converted released checkpoint (``convert_torch_weights.py --out``), or the trivial
mean-mesh baseline (:func:`mean_mesh_predictor`, e.g. of :func:`mean_training_mesh`: a fixed
mesh for every image).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.body.regressors import regressor_path
from hmr_jax.checkpoints import is_train_workdir
from hmr_jax.data import decode_record, open_dataset
from hmr_jax.data.augment import BACKBONE_INPUTS
from hmr_jax.geometry.rotations import axis_angle_to_matrix
from hmr_jax.inference import load_image_model

MODES = ("deterministic", "stochastic", "mean_mesh")


@dataclasses.dataclass
class EvalPredictor:
    """``predict(images (B, H, W, 3), key) -> vertices`` (B, V, 3), or (N, B, V, 3) with
    ``hypotheses`` = N > 1; ``backbone``: the crop the images need (hrnet / resnet / vit)."""

    predict: Callable[[jax.Array, jax.Array], jax.Array]
    backbone: str
    hypotheses: int = 1
    description: str = ""
    crop_size: int | None = None   # None: the backbone's crop


def mean_mesh_predictor(mean_mesh: np.ndarray, backbone: str = "hrnet") -> EvalPredictor:
    """The trivial baseline: the same (V, 3) mesh (meters) for every image."""
    mesh = jnp.asarray(mean_mesh, jnp.float32)
    if mesh.ndim != 2 or mesh.shape[1] != 3:
        raise ValueError(f"the mean mesh must be (V, 3), got {mesh.shape}")
    return EvalPredictor(lambda images, key: jnp.broadcast_to(mesh, (images.shape[0],) + mesh.shape),
                         backbone, 1, "mean mesh")


def mean_training_mesh(train_dir: str) -> np.ndarray:
    """Mean posed, centred mesh (V, 3) of a training split (the trivial baseline's mesh), m.

    Each record's canonical mesh is rotated by its ``global_orient`` before averaging.
    """
    src = open_dataset(train_dir).data_source()
    acc = None
    for i in range(len(src)):
        r = decode_record(src[i])
        rot = np.asarray(axis_angle_to_matrix(np.asarray(r["global_orient"], np.float32)), np.float64)
        v = np.asarray(r["vertices"], np.float64) @ rot.T
        acc = v if acc is None else acc + v
    return (acc / len(src)).astype(np.float32)


def load_predictor(checkpoint: str, mode: str = "deterministic", config=None, num_samples: int = 25,
                   steps: int = 5, temperature: float = 1.0) -> EvalPredictor:
    """A predictor from a ``train.py`` workdir (its ``config.json``; ``config`` may override the
    tokenizer, ``body_models`` and ``tpose`` paths) or a converted checkpoint folder (``config``,
    a ``configs/train_*.py``, names the tokenizer, ``body_models`` and, for VQ-HPS, ``tpose``).
    The model is loaded and run by :mod:`hmr_jax.inference` (fixed-size batches)."""
    if mode not in MODES:
        raise ValueError(f"--mode {mode!r} unknown; choose one of {MODES}")
    if not os.path.isdir(checkpoint):
        raise FileNotFoundError(f"--checkpoint {checkpoint!r} is not a folder")
    if config is None and not is_train_workdir(checkpoint):
        raise ValueError("a converted checkpoint needs --config configs/train_mega.py:BACKBONE or "
                         "configs/train_vqhps.py:BACKBONE (tokenizer, body models, backbone kind)")
    model = load_image_model(checkpoint, **_paths(config))
    n = 1 if mode == "deterministic" else num_samples
    model.mode(n, mode)  # VQ-HPS has no stochastic mode: a clear error now, not at the first batch

    def predict(images, key):
        vertices = jnp.asarray(model.predict_crops(images, n, mode=mode, key=key, steps=steps,
                                                   temperature=temperature)["vertices"])
        return vertices[:, 0] if n == 1 else jnp.swapaxes(vertices, 0, 1)  # (B, V, 3) or (N, B, V, 3)

    family = "VQ-HPS" if model.family == "vqhps" else "MEGA"
    description = (family if model.family == "vqhps" else
                   "MEGA deterministic" if mode == "deterministic" else f"MEGA stochastic, {n} hypotheses")
    crop = model.geometry.crop
    return EvalPredictor(predict, model.backbone, n, description,
                         None if crop == BACKBONE_INPUTS[model.backbone].crop else crop)


def _paths(config) -> dict:
    """Only what a user may change when evaluating a model (paths), not the model itself."""
    if config is None:
        return {}
    tok = config.get("tokenizer") or {}
    out = {"tokenizer": tok.get("path") or None, "connections": tok.get("connection_folder") or None}
    if config.get("body_models"):
        out["joint_regressor"] = str(regressor_path(config.body_models, "h36m17"))  # VQ-HPS's start pose
    if config.get("tpose"):
        out["tpose"] = config.tpose
    return out
