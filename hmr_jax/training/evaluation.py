"""Evaluation of a trained or converted model on a prepared split (``evaluate.py`` is the CLI).

``evaluate(predictor, split_dir, ...)`` runs the predictor over every image of the split (stored
order, no augmentation), computes MPJPE, PA-MPJPE and PVE per image under the chosen protocol
(:mod:`hmr_jax.metrics.protocols`; for several hypotheses the minimum over them, per metric, as
MEGA's stochastic evaluation, and their mean pairwise distance) and writes

* ``summary.json``: means in millimetres, the number of images and the settings;
* ``per_image.csv``: one row per image (name, dataset, each metric in mm).

Predictors (:func:`load_predictor`): a ``train.py`` workdir of the ``mega`` / ``vqhps`` stages,
a converted released checkpoint (``convert_torch_weights.py --out``), or the trivial
``mean_mesh`` baseline (a fixed mesh for every image).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.checkpoints import is_train_workdir
from hmr_jax.data.augment import BACKBONE_INPUTS
from hmr_jax.files import atomic_open, atomic_write, folder_lock
from hmr_jax.inference import load_image_model

MODES = ("deterministic", "stochastic", "mean_mesh")
#: how long an evaluation waits for another one writing to the same output folder (seconds)
EVAL_LOCK_WAIT_S = 600.0


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
        out["joint_regressor"] = os.path.join(config.body_models, "J_regressor_h36m.npy")
    if config.get("tpose"):
        out["tpose"] = config.tpose
    return out


def image_names(split_dir: str) -> list[tuple[str, str]]:
    """(image_name, dataset) of every record of a split, in stored order."""
    from hmr_jax.data import decode_record, open_dataset

    src = open_dataset(split_dir, kind="image").data_source()
    out = []
    for i in range(len(src)):
        r = decode_record(src[i])
        out.append((str(r.get("image_name", i)), str(r.get("dataset", ""))))
    return out


def evaluate(predictor: EvalPredictor, split_dir: str, out_dir: str, body_models: str,
             protocol: str = "original", dataset: str = "3dpw", batch_size: int = 16,
             seed: int = 0, progress: bool = True) -> dict:
    """Evaluate ``predictor`` on every image of ``split_dir``; write and return the summary.

    Returns ``{"metrics_mm": {name: mean}, "num_images": n, ...}``; per-image rows go to
    ``out_dir/per_image.csv``, the summary to ``out_dir/summary.json``.
    """
    from hmr_jax.body.regressors import JointRegressors, load_joint_regressor
    from hmr_jax.data import image_pipeline
    from hmr_jax.metrics.protocols import hypothesis_errors, mesh_errors

    names = image_names(split_dir)
    data = image_pipeline(split_dir, batch_size=batch_size, backbone=predictor.backbone,
                          train=False, shard_index=0, shard_count=1, crop_size=predictor.crop_size)
    regs = None
    key = jax.random.key(seed)
    rows: list[dict] = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(names), unit="img", dynamic_ncols=True)
    for i, batch in enumerate(data):
        gt = jnp.asarray(batch["vertices"])
        if regs is None:
            nv = gt.shape[1]
            p24 = os.path.join(body_models, "J_regressor_24.npy")
            regs = JointRegressors(
                h36m=jnp.asarray(load_joint_regressor(os.path.join(body_models, "J_regressor_h36m.npy"), 17, nv)),
                smpl24=jnp.asarray(load_joint_regressor(p24, 24, nv)) if os.path.exists(p24) else None)
        pred = predictor.predict(jnp.asarray(batch["image"]), jax.random.fold_in(key, i))
        if predictor.hypotheses > 1:
            errs = hypothesis_errors(pred, gt, regs, protocol, dataset)
        else:
            errs = mesh_errors(pred, gt, regs, protocol, dataset)
        errs = {k: np.asarray(v) * 1000.0 for k, v in jax.device_get(errs).items()}
        for j in range(gt.shape[0]):
            name, ds = names[len(rows)]
            rows.append({"image_name": name, "dataset": ds, **{k: float(v[j]) for k, v in errs.items()}})
        if bar is not None:
            bar.update(gt.shape[0])
    if bar is not None:
        bar.close()
    if len(rows) != len(names):
        raise RuntimeError(f"evaluated {len(rows)} images but the split has {len(names)}")
    metric_names = [k for k in rows[0] if k not in ("image_name", "dataset")] if rows else []
    summary = {
        "split": split_dir, "predictor": predictor.description, "protocol": protocol,
        "dataset": dataset, "hypotheses": predictor.hypotheses, "num_images": len(rows),
        "metrics_mm": {k: float(np.mean([r[k] for r in rows])) for k in metric_names},
    }
    # Two evaluations writing to one folder take turns: each writes both files under the lock,
    # so summary.json and per_image.csv always come from the same run.
    with folder_lock(out_dir, "evaluate.py", wait_s=EVAL_LOCK_WAIT_S):
        atomic_write(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
        with atomic_open(os.path.join(out_dir, "per_image.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["image_name", "dataset"] + metric_names)
            writer.writeheader()
            writer.writerows(rows)
    return summary


def format_table(summary: dict) -> str:
    """A small text table of the summary (mm)."""
    m = summary["metrics_mm"]
    label = {"pve": "PVE", "mpjpe": "MPJPE", "pa_mpjpe": "PA-MPJPE",
             "mean_pairwise_distance": "hyp. spread"}
    prefix = f"min of {summary['hypotheses']} " if summary["hypotheses"] > 1 else ""
    lines = [f"{summary['predictor']} on {summary['split']} ({summary['num_images']} images, "
             f"protocol {summary['protocol']})"]
    for k, v in m.items():
        name = label.get(k, k)
        lines.append(f"  {(prefix if k != 'mean_pairwise_distance' else '') + name:<22} {v:9.2f} mm")
    return "\n".join(lines)

