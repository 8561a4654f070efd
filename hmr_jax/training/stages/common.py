"""Pieces the model stages share: data pipelines from ``config.data``, the frozen tokenizer,
joint regressors and the 2D reprojection term (the mapping picked from the records'
``keypoints_kind``), and loading converted / previously trained weights into new variables
(read through :mod:`hmr_jax.checkpoints`)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax import checkpoints
from hmr_jax.body.regressors import (JointLayout, JointLayoutError, JointRegressors, joints17_layout,
                                     load_layout_regressor, regressor_path)
from hmr_jax.data import Source, image_pipeline, mesh_pipeline, open_dataset
from hmr_jax.geometry.rotations import rotation_6d_to_matrix
from hmr_jax.training import losses

log = logging.getLogger(__name__)


def _sources(spec) -> list:
    """``config.data.train``: a folder, a list of folders, or a list of ``"folder:weight"``."""
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
    return sum(len(open_dataset(s.path)) for s in _sources(spec))


def mesh_train_pipeline(config, local_batch: int, seed: int):
    """``(IterDataset, steps_per_epoch)`` of training meshes (``config.data.train``)."""
    ds = mesh_pipeline(_sources(config.data.train), batch_size=local_batch, train=True, seed=seed,
                       num_workers=config.data.get("workers", 0),
                       skip_bad_records=config.data.get("skip_bad_records", False))
    return ds, max(dataset_length(config.data.train) // config.batch_size, 1)


def image_train_pipeline(config, local_batch: int, seed: int, backbone: str):
    """``(IterDataset, steps_per_epoch)`` of augmented person crops (``config.data.train``)."""
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
    if kind == "mesh":
        return mesh_pipeline(_sources(spec), batch_size=local_batch, train=False, drop_remainder=True)
    return image_pipeline(_sources(spec), batch_size=local_batch, backbone=backbone, train=False,
                          drop_remainder=True, crop_size=config.data.get("crop_size", 0) or None)


def keypoints_kinds(config) -> set[str]:
    """The ``keypoints_kind`` s of the image datasets of ``config.data.train`` and ``.val`` (from
    their manifests); empty when none is named (benchmarks on synthetic batches)."""
    kinds = set()
    for key in ("train", "val"):
        spec = config.data.get(key, "")
        if spec:
            kinds |= {open_dataset(s.path, kind="image").sizes.get("keypoints_kind") for s in _sources(spec)}
    return kinds - {None}


# ----------------------------------------------------------------------------- joints
@dataclasses.dataclass(frozen=True)
class Regressors:
    """The joint regressors of an image stage, picked from its records' ``keypoints_kind``.

    Attributes:
      layout17: the layout of the 17-joint keypoints (``h36m17``: the H36M regressor, rows
        ``H36M_TO_J17``; ``coco17``: the COCO-17 regressor as it is) and of the validation joints.
      joints17: (17, V) that layout's regressor, its file's rows.
      smpl24: (24, V) SMPL regressor for ``smpl24`` records (3DPW, EMDB), or None.
    """

    layout17: JointLayout
    joints17: np.ndarray
    smpl24: np.ndarray | None

    def frozen(self) -> dict:
        """The arrays, for ``Stage.frozen()`` (``{"joints17", "smpl24"?}``)."""
        return {"joints17": self.joints17, **({} if self.smpl24 is None else {"smpl24": self.smpl24})}

    def metric_regressors(self, frozen: Mapping) -> JointRegressors:
        """:class:`JointRegressors` of the validation metrics (traceable: from the frozen arrays)."""
        field = "h36m" if self.layout17.kind == "h36m17" else "coco17"
        return JointRegressors(**{field: frozen["joints17"]})


def load_regressors(config) -> Regressors:
    """The stage's regressors from ``config.body_models`` for the kinds of its datasets
    (:func:`keypoints_kinds`; none named: the real-data layouts, Human3.6M-17 and SMPL-24).

    V = ``config.num_vertices`` (6890). The SMPL-24 regressor (``J_regressor_24.npy``) is loaded
    when ``config.require_smpl24`` (default True) or when the file exists.
    Raises:
      JointLayoutError: the records' layout has no regressor file there (naming the layout found
        instead), COCO-17 and Human3.6M-17 records mixed, or ``smpl24`` records without the SMPL-24
        regressor.
    """
    nv = int(config.get("num_vertices", 6890))
    folder = config.body_models
    kinds = keypoints_kinds(config)
    layout17 = joints17_layout(kinds)
    joints17 = load_layout_regressor(folder, layout17.kind, nv)
    smpl24 = None
    if config.get("require_smpl24", True) or regressor_path(folder, "smpl24").exists():
        smpl24 = load_layout_regressor(folder, "smpl24", nv)
    elif "smpl24" in kinds:
        raise JointLayoutError(f"the datasets hold smpl24 (SMPL-24) keypoints but {regressor_path(folder, 'smpl24')} "
                               "does not exist: put SMPL's 24-joint regressor there")
    return Regressors(layout17, joints17, smpl24)


def posed_meshes(rot6d: jax.Array, canonical: jax.Array) -> jax.Array:
    """Canonical meshes (B, V, 3) rotated by the predicted global rotations (B, 6) (6D), meters."""
    return jnp.einsum("bij,bvj->bvi", rotation_6d_to_matrix(rot6d), canonical)


def reprojection_loss(regressors: Regressors, frozen: Mapping, batch: Mapping, vertices: jax.Array,
                      camera: jax.Array) -> jax.Array:
    """The originals' 2D term, each record's keypoints compared with the joints of its layout.

    With the SMPL-24 regressor: L1 on the 24 SMPL joints for ``is_3dpw`` samples plus the
    confidence-weighted L1 on the 17 joints of :attr:`Regressors.layout17` for the others
    (:func:`~hmr_jax.training.losses.mixed_reprojection_loss`); without it, the latter on every
    sample.

    Args:
      regressors: the stage's :class:`Regressors` (the layout); frozen: ``frozen["regressors"]``.
      batch: ``keypoints_2d`` (B, K, 3) and ``is_3dpw`` (B,).
      vertices: (B, V, 3) posed meshes, meters; camera: (B, 3) weak-perspective ``(s, tx, ty)``.
    Returns:
      () the loss.
    """
    order = regressors.layout17.keypoint_order
    if "smpl24" in frozen:
        return losses.mixed_reprojection_loss(batch["keypoints_2d"], batch["is_3dpw"], vertices, camera,
                                              frozen["smpl24"], frozen["joints17"], joint_order=order)
    return losses.reprojection_loss_conf(batch["keypoints_2d"][:, :17], vertices, camera, frozen["joints17"],
                                         joint_order=order)


# ----------------------------------------------------------------------------- loading
#: the frozen tokenizer, through the one loading path (a name here so that benchmarks can memoise it)
load_tokenizer = checkpoints.load_tokenizer


def compute_dtype(config):
    """``config.dtype`` ("float32" / "bfloat16") as a jnp dtype."""
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
