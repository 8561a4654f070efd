"""Evaluation of a predictor on a prepared split (``evaluate.py`` is the command line).

``evaluate(predictor, split_dir, ...)`` runs the predictor (:mod:`hmr_jax.evaluation.predictors`)
over every image of the split (stored order, no augmentation), computes MPJPE, PA-MPJPE and PVE
per image under the chosen protocol (:mod:`hmr_jax.metrics.protocols`; for several hypotheses
the minimum over them, per metric, as MEGA's stochastic evaluation, and their mean pairwise
distance) and writes

* ``summary.json``: means in millimetres, the number of images and the settings;
* ``per_image.csv``: one row per image (name, dataset, each metric in mm).

The 17 evaluation joints are those of the split's ``keypoints_kind``
(:func:`hmr_jax.body.regressors.joints17_layout`: the Human3.6M regressor for the public sets,
``J_regressor_coco17.npy`` for COCO-keypoint sets such as the synthetic ones).
"""
from __future__ import annotations

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from hmr_jax.body.regressors import joints17_layout, load_joint_regressors
from hmr_jax.data import decode_record, image_pipeline, open_dataset
from hmr_jax.evaluation.predictors import EvalPredictor
from hmr_jax.files import atomic_open, atomic_write, folder_lock
from hmr_jax.metrics.protocols import hypothesis_errors, mesh_errors

#: how long an evaluation waits for another one writing to the same output folder (seconds)
EVAL_LOCK_WAIT_S = 600.0


def image_names(split_dir: str) -> list[tuple[str, str]]:
    """(image_name, dataset) of every record of a split, in stored order."""
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
    names = image_names(split_dir)
    layout = joints17_layout([open_dataset(split_dir, kind="image").sizes.get("keypoints_kind", "h36m17")])
    data = image_pipeline(split_dir, batch_size=batch_size, backbone=predictor.backbone,
                          train=False, shard_index=0, shard_count=1, crop_size=predictor.crop_size)
    regs = None
    key = jax.random.key(seed)
    rows: list[dict] = []
    bar = tqdm(total=len(names), unit="img", dynamic_ncols=True) if progress else None
    for i, batch in enumerate(data):
        gt = jnp.asarray(batch["vertices"])
        if regs is None:
            regs = load_joint_regressors(body_models, num_vertices=gt.shape[1], joints17=layout.kind)
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

