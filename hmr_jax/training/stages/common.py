"""Pieces the model stages share: data pipelines from ``config.data``, the frozen tokenizer,
joint regressors, and loading converted / previously trained weights into new variables
(read through :mod:`hmr_jax.checkpoints`)."""
from __future__ import annotations

import logging
from typing import Any, Mapping

import jax
import numpy as np

from hmr_jax import checkpoints

log = logging.getLogger(__name__)


def _sources(spec) -> list:
    """``config.data.train``: a folder, a list of folders, or a list of ``"folder:weight"``."""
    from hmr_jax.data import Source

    if isinstance(spec, str):
        spec = [s for s in spec.split(",") if s]
    out = []
    for s in spec:
        path, _, weight = str(s).partition("::")
        out.append(Source(path, float(weight) if weight else 1.0))
    if not out:
        raise ValueError("config.data.train is empty: give the dataset folder(s) to train on")
    return out


def dataset_length(spec) -> int:
    """Total number of records of the dataset folders named by ``spec``."""
    from hmr_jax.data import open_dataset

    return sum(len(open_dataset(s.path)) for s in _sources(spec))


def mesh_train_pipeline(config, local_batch: int, seed: int):
    """``(IterDataset, steps_per_epoch)`` of training meshes (``config.data.train``)."""
    from hmr_jax.data import mesh_pipeline

    ds = mesh_pipeline(_sources(config.data.train), batch_size=local_batch, train=True, seed=seed,
                       num_workers=config.data.get("workers", 0),
                       skip_bad_records=config.data.get("skip_bad_records", False))
    return ds, max(dataset_length(config.data.train) // config.batch_size, 1)


def image_train_pipeline(config, local_batch: int, seed: int, backbone: str):
    """``(IterDataset, steps_per_epoch)`` of augmented person crops (``config.data.train``)."""
    from hmr_jax.data import image_pipeline

    ds = image_pipeline(_sources(config.data.train), batch_size=local_batch, backbone=backbone,
                        train=True, augment=config.data.get("augment", False),
                        flip=config.data.get("flip", False), seed=seed,
                        rotation_factor=config.data.get("rotation_factor", 30.0),
                        crop_size=config.data.get("crop_size", 0) or None,
                        num_workers=config.data.get("workers", 0),
                        skip_bad_records=config.data.get("skip_bad_records", False))
    return ds, max(dataset_length(config.data.train) // config.batch_size, 1)


def val_batches(config, local_batch: int, kind: str, backbone: str = "hrnet"):
    """Validation batches (``config.data.val``; full batches only), or None."""
    spec = config.data.get("val", "")
    if not spec:
        return None
    from hmr_jax.data import image_pipeline, mesh_pipeline

    if kind == "mesh":
        return mesh_pipeline(_sources(spec), batch_size=local_batch, train=False, drop_remainder=True)
    return image_pipeline(_sources(spec), batch_size=local_batch, backbone=backbone, train=False,
                          drop_remainder=True, crop_size=config.data.get("crop_size", 0) or None)


# ----------------------------------------------------------------------------- loading
#: the frozen tokenizer, through the one loading path (a name here so that benchmarks can memoise it)
load_tokenizer = checkpoints.load_tokenizer


def compute_dtype(config):
    """``config.dtype`` ("float32" / "bfloat16") as a jnp dtype."""
    import jax.numpy as jnp

    name = config.get("dtype", "float32")
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"config.dtype={name!r}; use float32 or bfloat16")
    return jnp.dtype(name)


def load_variables(path: str) -> dict:
    """Variables of a ``train.py`` workdir (latest checkpoint) or a converted folder (``init.*``)."""
    return checkpoints.read_checkpoint(path).variables


def merge_pretrained(target: Any, source: Any, what: str) -> Any:
    """Copy every array of ``source`` into ``target`` where the path and shape agree.

    Both are nested dicts. Logs how many arrays were taken; arrays of ``source`` with no
    counterpart (or another shape) are listed in an error if *none* matched.
    """
    taken, skipped = [], []

    def walk(t, s, prefix):
        if isinstance(t, Mapping):
            out = dict(t)
            for k, v in (s or {}).items():
                if k in t:
                    out[k] = walk(t[k], v, f"{prefix}/{k}")
                else:
                    skipped.append(f"{prefix}/{k}")
            return out
        if np.shape(t) == np.shape(s):
            taken.append(prefix)
            return jax.numpy.asarray(s, dtype=t.dtype)
        skipped.append(f"{prefix} {np.shape(s)} vs {np.shape(t)}")
        return t

    out = walk(target, source, "")
    if not taken:
        raise ValueError(f"{what}: no array matched the model (unexpected: {skipped[:8]})")
    log.warning("%s: loaded %d arrays%s", what, len(taken),
                f"; {len(skipped)} not used (e.g. {skipped[:3]})" if skipped else "")
    return out
