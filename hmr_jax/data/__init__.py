"""Datasets: the record format, ArrayRecord shards with manifests, Grain pipelines.

* :mod:`hmr_jax.data.records` -- the one record format (image and mesh records);
* :mod:`hmr_jax.data.shards` -- writing shards + manifest atomically, opening checked datasets;
* :mod:`hmr_jax.data.augment` -- the originals' per-record augmentation and cropping;
* :mod:`hmr_jax.data.pipeline` -- Grain pipelines (mixing, sharding, workers, resumable state).
"""
from hmr_jax.data.pipeline import Source, image_pipeline, mesh_pipeline
from hmr_jax.data.records import RecordError, decode_record, encode_record, validate_record
from hmr_jax.data.shards import Dataset, DatasetError, ShardWriter, open_dataset, write_dataset

__all__ = [
    "Dataset",
    "DatasetError",
    "RecordError",
    "ShardWriter",
    "Source",
    "decode_record",
    "encode_record",
    "image_pipeline",
    "mesh_pipeline",
    "open_dataset",
    "validate_record",
    "write_dataset",
]
