"""Grain input pipelines: image datasets for HMR training / evaluation, meshes for the tokenizer,
and in-memory examples (the toy stage).

Each source is a dataset folder (see :mod:`hmr_jax.data.shards`). The pipeline is::

    ArrayRecordDataSource -> MapDataset                                  (per source)
      -> shuffle(seed) -> repeat(num_epochs)   (a new order each epoch)
    mix(sources, proportions)                                            (several sources)
      -> random_map(decode + augment)          (per-record random draw, seeded by position)
      -> this process's share                  (the multi-host rule below)
      -> to_iter_dataset -> batch(batch_size, drop_remainder) -> mp_prefetch(workers)

**The multi-host rule** (:func:`host_share`, the one place it is applied; ``batch_size`` is
per process, ``n`` processes): *training* streams are one global stream whatever ``n`` is;
global batch ``b`` is stream elements ``[b nB, (b+1) nB)`` and process ``i`` reads only its
contiguous slice ``[b nB + iB, b nB + (i+1)B)``, which
``jax.make_array_from_process_local_data`` places at the same offsets of the global array. So
one host and a pod train on the same batches, in the same order, and each host decodes only the
examples it needs. *Evaluation* passes (``train=False``) give process ``i`` the records
``i, i+n, i+2n, ...`` of each source (every record once over all processes).

Every random choice is a function of ``(seed, position)``, so the iterator's state
(``it.get_state()`` / ``it.set_state(state)``, also what ``grain.checkpoint`` saves) resumes
the exact same batches, augmentations included, with or without worker processes.

Worker processes are spawned: scripts that use ``num_workers > 0`` must build and iterate
the pipeline under ``if __name__ == "__main__":``. Grain's workers read absl flags, so this
module marks them parsed when no absl app did (:func:`ensure_absl_flags_parsed`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import grain
import jax
import numpy as np
from absl import flags

from hmr_jax.data import augment as aug
from hmr_jax.data.shards import DatasetError, open_dataset


@dataclasses.dataclass(frozen=True)
class Source:
    """One dataset folder of a mixture, drawn with relative ``weight``."""

    path: str
    weight: float = 1.0


def ensure_absl_flags_parsed() -> None:
    """Marks absl flags as parsed (Grain 0.2 worker processes fail otherwise)."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _process_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} must be in [0, {shard_count})")
    return int(shard_index), int(shard_count)


def _as_sources(sources) -> list[Source]:
    if isinstance(sources, (str, os.PathLike, Source)):
        sources = [sources]
    out = [s if isinstance(s, Source) else Source(str(s)) for s in sources]
    if not out:
        raise ValueError("no data source given")
    if any(s.weight <= 0 for s in out):
        raise ValueError(f"source weights must be positive: {[s.weight for s in out]}")
    return out


class _Tag:
    """Pairs each checked record with the index of its source (picklable)."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, item):
        record, skipped, where = item
        return self.index, record, skipped, where


class _Transform:
    """Base of the per-record transforms: errors name the record (picklable)."""

    skip_bad = False

    def _run(self, item, fn):
        index, record, skipped, where = item
        try:
            out = fn(record)
        except DatasetError:
            raise
        except Exception as e:  # noqa: BLE001 - a record that cannot be processed is a data error
            raise DatasetError(f"{where}: the record cannot be processed ({type(e).__name__}: {e}); convert "
                               "the dataset again") from None
        out["dataset_index"] = np.int32(index)
        if self.skip_bad:
            out["skipped_records"] = np.int32(skipped)
        return out


def _source_datasets(sources: list[Source], kind: str | None, train: bool, seed: int,
                     num_epochs: int | None, shard_index: int, shard_count: int, skip_bad: bool = False):
    opened = [open_dataset(s.path, kind=kind) for s in sources]
    parts = []
    for i, d in enumerate(opened):
        d.data_source()  # checks every shard's record count against the manifest now
        ds = grain.MapDataset.source(d.checked_source(skip_bad=skip_bad))
        if shard_count > 1 and not train:  # evaluation: records i, i+n, ... (training: host_share)
            ds = ds[shard_index::shard_count]
        if len(ds) == 0:
            raise DatasetError(f"{d.path} has no record for process {shard_index} of {shard_count}")
        if train:
            ds = ds.shuffle(seed=(seed + 7919 * i) % 2**32)
        ds = ds.repeat(num_epochs)
        parts.append(ds.map(_Tag(i)))
    return opened, parts


def _mix(parts, sources: list[Source], concatenate: bool = False):
    if len(parts) == 1:
        return parts[0]
    if concatenate:  # evaluation: every record of every source, one source after the other
        return grain.MapDataset.concatenate(parts)
    weights = np.array([s.weight for s in sources], dtype=np.float64)
    return grain.MapDataset.mix(parts, list(weights / weights.sum()))


class _GlobalPosition:
    """Element ``j`` of process ``offset / batch_size``'s share -> that element of the global
    stream (picklable for worker processes)."""

    def __init__(self, stream, batch_size: int, global_batch: int, offset: int):
        self.stream, self.batch_size, self.global_batch, self.offset = stream, batch_size, global_batch, offset

    def __call__(self, j: int):
        return self.stream[(j // self.batch_size) * self.global_batch + self.offset + j % self.batch_size]


def host_share(stream, batch_size: int, shard_index: int, shard_count: int):
    """This process's share of a training stream: the multi-host rule of the module docstring.

    Args:
      stream: a ``grain.MapDataset`` of examples, the same on every process (shuffled, repeated,
        augmented by position).
      batch_size: examples per batch per process (B); the global batch is ``B * shard_count``.
      shard_index, shard_count: this process and the number of processes.
    Returns:
      a ``grain.MapDataset`` whose elements ``[kB, (k+1)B)`` are process ``shard_index``'s slice
      of global batch ``k`` (the stream itself for one process).
    """
    if shard_count == 1:
        return stream
    global_batch = batch_size * shard_count
    return grain.MapDataset.range(0, len(stream) // global_batch * batch_size).map(
        _GlobalPosition(stream, batch_size, global_batch, shard_index * batch_size))


def _finish(ds, batch_size: int, drop_remainder: bool, num_workers: int, prefetch_buffer: int, read_threads: int):
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                              prefetch_buffer_size=2 * batch_size if read_threads else 0))
    it = it.batch(batch_size, drop_remainder=drop_remainder)
    if num_workers > 0:
        ensure_absl_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                         per_worker_buffer_size=prefetch_buffer))
    return it


class _ImageTransform(_Transform):
    """augment one checked ``(source index, record, skipped, where)`` item (picklable for worker processes)."""

    def __init__(self, backbone: aug.BackboneInput, augment: bool, flip: bool, rotation_factor: float = 30.0,
                 skip_bad: bool = False):
        self.backbone, self.augment, self.flip = backbone, augment, flip
        self.rotation_factor = rotation_factor
        self.skip_bad = skip_bad

    def __call__(self, item, rng: np.random.Generator) -> dict[str, Any]:
        params = (aug.sample_augmentation(rng, flip=self.flip, rot_factor=self.rotation_factor)
                  if self.augment else aug.NO_AUGMENTATION)
        return self._run(item, lambda record: aug.process_image_record(record, params, self.backbone))


def image_pipeline(sources: Sequence[Source | str] | Source | str, *, batch_size: int, backbone: str = "hrnet",
                   train: bool = True, augment: bool | None = None, flip: bool = True, seed: int = 0,
                   num_epochs: int | None = None, crop_size: int | None = None, drop_remainder: bool | None = None,
                   num_workers: int = 0, prefetch_buffer: int = 2, read_threads: int = 2,
                   shard_index: int | None = None, shard_count: int | None = None,
                   rotation_factor: float = 30.0, skip_bad_records: bool = False):
    """Batches of augmented person crops with their meshes and keypoints.

    Args:
      sources: dataset folders (``str``) or :class:`Source` with mixing weights (proportions
        are normalised; each source is repeated, so proportions hold for any length).
      batch_size: examples per batch *per process*.
      backbone: ``hrnet``, ``resnet`` or ``vit`` (crop size, 256x192 for ViT, normalisation).
      train: shuffle, repeat forever (``num_epochs=None``), mix the sources by weight and
        augment by default; False: one pass in stored order over every source, one after
        the other, no augmentation, last batch kept (evaluation).
      augment: random scale / rotation / flip / colour noise (default: ``train``). The
        released MEGA models were trained with augmentation off.
      flip: allow flips when augmenting.
      rotation_factor: in-plane rotation ``clip(N(0, 1) * f, -2f, 2f)`` degrees (applied to 40%
        of the examples) when augmenting; 30 as the originals, 0: none.
      seed: shuffling and augmentation seed.
      num_epochs: passes over each source (None: forever; default 1 when not ``train``).
      crop_size: override the backbone's square crop side (pixels).
      drop_remainder: drop the last incomplete batch (default: ``train``).
      num_workers: Grain worker processes (0: decode in this process).
      prefetch_buffer: batches buffered per worker.
      read_threads: threads decoding records ahead (in each worker); 0: none.
      shard_index, shard_count: this process's share of every source (default
        ``jax.process_index()`` / ``jax.process_count()``).
      skip_bad_records: a record that is corrupt or disagrees with its manifest is replaced
        by the next good one (each batch then has ``skipped_records`` (B,) int32: 1 where the
        example's record was bad and replaced); False (the default): it stops the pipeline with
        :class:`DatasetError` naming the shard file and the record index.

    Returns:
      a ``grain.IterDataset``; ``iter(...)`` gives batches (dicts of NumPy arrays with a
      leading batch axis, fields of :func:`hmr_jax.data.augment.process_image_record` plus
      ``dataset_index`` int32, the source of each example) and has ``get_state`` /
      ``set_state``.
    """
    if backbone not in aug.BACKBONE_INPUTS:
        raise ValueError(f"backbone must be one of {sorted(aug.BACKBONE_INPUTS)}, got {backbone!r}")
    geometry = aug.BACKBONE_INPUTS[backbone]
    if crop_size is not None:
        geometry = dataclasses.replace(geometry, crop=int(crop_size),
                                       width=int(crop_size) - (geometry.crop - geometry.width))
    augment = train if augment is None else augment
    drop_remainder = train if drop_remainder is None else drop_remainder
    if num_epochs is None and not train:
        num_epochs = 1
    shard_index, shard_count = _process_shard(shard_index, shard_count)
    srcs = _as_sources(sources)
    opened, parts = _source_datasets(srcs, "image", train, seed, num_epochs, shard_index, shard_count,
                                     skip_bad_records)
    sizes = [{k: v for k, v in d.sizes.items()} for d in opened]
    keys = ("num_vertices", "num_keypoints", "num_joints_3d")
    if any(tuple(s.get(k) for k in keys) != tuple(sizes[0].get(k) for k in keys) for s in sizes):
        raise DatasetError("sources of one pipeline must share vertex, keypoint and joint counts; got "
                           + ", ".join(f"{d.path}: {d.sizes}" for d in opened))
    ds = _mix(parts, srcs, concatenate=not train).random_map(
        _ImageTransform(geometry, augment, flip, rotation_factor, skip_bad_records), seed=seed)
    if train:
        ds = host_share(ds, batch_size, shard_index, shard_count)
    return _finish(ds, batch_size, drop_remainder, num_workers, prefetch_buffer, read_threads)


class _MeshTransform(_Transform):
    def __init__(self, posed: bool, skip_bad: bool = False):
        self.posed = posed
        self.skip_bad = skip_bad

    def _mesh(self, record) -> dict[str, Any]:
        vertices = np.asarray(record["vertices"], np.float32)
        if self.posed:
            vertices = vertices @ aug.axis_angle_to_matrix(record["global_orient"]).astype(np.float32).T
        return {"vertices": vertices, "global_orient": np.asarray(record["global_orient"], np.float32)}

    def __call__(self, item) -> dict[str, Any]:
        return self._run(item, self._mesh)


def mesh_pipeline(sources: Sequence[Source | str] | Source | str, *, batch_size: int, train: bool = True,
                  seed: int = 0, num_epochs: int | None = None, posed: bool = False,
                  drop_remainder: bool | None = None, num_workers: int = 0, prefetch_buffer: int = 2,
                  read_threads: int = 0, shard_index: int | None = None, shard_count: int | None = None,
                  skip_bad_records: bool = False):
    """Batches of meshes for the tokenizer (Mesh-VQ-VAE) and MEGA pre-training stages.

    Reads ``mesh`` and ``image`` datasets alike (only their meshes). Arguments as
    :func:`image_pipeline`; ``posed=True`` applies each record's global rotation (the
    originals train on canonical meshes: ``posed=False``).

    Returns:
      a ``grain.IterDataset`` of dicts: ``vertices`` (B, V, 3) float32 meters, centred;
      ``global_orient`` (B, 3); ``dataset_index`` (B,) int32.
    """
    drop_remainder = train if drop_remainder is None else drop_remainder
    num_epochs = 1 if num_epochs is None and not train else num_epochs
    shard_index, shard_count = _process_shard(shard_index, shard_count)
    srcs = _as_sources(sources)
    opened, parts = _source_datasets(srcs, None, train, seed, num_epochs, shard_index, shard_count,
                                     skip_bad_records)
    nv = {d.sizes.get("num_vertices") for d in opened}
    if len(nv) != 1:
        raise DatasetError(f"sources of one pipeline must share the vertex count, got {sorted(nv)}")
    ds = _mix(parts, srcs, concatenate=not train).map(_MeshTransform(posed, skip_bad_records))
    if train:
        ds = host_share(ds, batch_size, shard_index, shard_count)
    return _finish(ds, batch_size, drop_remainder, num_workers, prefetch_buffer, read_threads)


def example_pipeline(examples, *, batch_size: int, train: bool = True, transform=None, seed: int = 0,
                     num_epochs: int | None = None, drop_remainder: bool | None = None, num_workers: int = 0,
                     prefetch_buffer: int = 2, read_threads: int = 0, shard_index: int | None = None,
                     shard_count: int | None = None):
    """Batches of examples that are not record datasets (the toy stage's), by the same rules.

    Args:
      examples: a ``grain.MapDataset`` or a sequence of examples (dicts of NumPy arrays).
      transform: ``(example, rng: np.random.Generator) -> example`` random per-example transform
        (seeded by position), or None.
      others: as :func:`image_pipeline` (``train``: shuffled, repeated forever, this process's
        share of the global stream; otherwise one pass over records ``i, i+n, ...``).
    Returns:
      a ``grain.IterDataset`` of batches (each field with a leading batch axis).
    """
    drop_remainder = train if drop_remainder is None else drop_remainder
    num_epochs = 1 if num_epochs is None and not train else num_epochs
    shard_index, shard_count = _process_shard(shard_index, shard_count)
    ds = examples if isinstance(examples, grain.MapDataset) else grain.MapDataset.source(examples)
    if train:
        ds = ds.shuffle(seed=seed % 2**32)
    elif shard_count > 1:
        ds = ds[shard_index::shard_count]
    ds = ds.repeat(num_epochs)
    if transform is not None:
        ds = ds.random_map(transform, seed=seed)
    if train:
        ds = host_share(ds, batch_size, shard_index, shard_count)
    return _finish(ds, batch_size, drop_remainder, num_workers, prefetch_buffer, read_threads)
