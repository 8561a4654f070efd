"""ArrayRecord shards with a manifest: written atomically, refused when incomplete.

A dataset is a folder::

    DIR/data-00000.array_record      one msgpack record per entry (see records.py)
    DIR/data-00001.array_record
    DIR/manifest.json                written last

``manifest.json`` holds the format name and version, the record kind (``image`` / ``mesh``),
the sizes every record shares (vertex count, keypoint count and kind), the total count and,
per shard, its file name, record count, byte size and SHA-256. Each shard is written under a
temporary name and renamed when complete; the manifest is written (temp name, then rename)
only after every shard is closed. A folder without a manifest, or whose shards do not match
it, is refused by :func:`open_dataset` with the reason and the fix.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
from typing import Any, Iterable, Mapping

from hmr_jax.data import records
from hmr_jax.files import atomic_write

MANIFEST = "manifest.json"
FORMAT_NAME = "hmr_jax.records"


class DatasetError(RuntimeError):
    """A dataset folder that is missing, incomplete, corrupt or of the wrong kind."""


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_text_atomic(path: pathlib.Path, text: str) -> None:
    atomic_write(path, text)


class ShardWriter:
    """Writes records into ArrayRecord shards and the manifest (use as a context manager).

    Args:
      out_dir: destination folder (created). It must not already hold a dataset unless
        ``overwrite`` (then the old manifest is removed first, so the folder is never seen
        as complete while it is rewritten).
      kind: ``"image"`` or ``"mesh"`` (see :mod:`hmr_jax.data.records`).
      records_per_shard: records per ArrayRecord file.
      metadata: JSON-serialisable facts stored in the manifest (source, options, faces...).

    Every record is validated; the first record fixes the sizes (vertex count, keypoints)
    the others must share. Leaving the ``with`` block by an exception writes no manifest.
    """

    def __init__(self, out_dir: str | os.PathLike, kind: str, records_per_shard: int = 1000,
                 metadata: Mapping[str, Any] | None = None, overwrite: bool = False):
        if kind not in records.KINDS:
            raise ValueError(f"kind must be one of {records.KINDS}, got {kind!r}")
        if records_per_shard < 1:
            raise ValueError("records_per_shard must be >= 1")
        self.out_dir = pathlib.Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.out_dir / MANIFEST
        old = sorted(self.out_dir.glob("data-*.array_record*"))
        if manifest.exists() or old:
            if not overwrite:
                raise DatasetError(
                    f"{self.out_dir} already holds a dataset ({MANIFEST if manifest.exists() else old[0].name}); "
                    "choose another folder or pass overwrite=True (--overwrite)")
            manifest.unlink(missing_ok=True)
            for p in old:
                p.unlink()
        self.kind = kind
        self.records_per_shard = int(records_per_shard)
        self.metadata = dict(metadata or {})
        self._shards: list[dict[str, Any]] = []
        self._writer = None
        self._tmp: pathlib.Path | None = None
        self._in_shard = 0
        self._sizes: dict[str, Any] | None = None
        self._closed = False

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def num_records(self) -> int:
        """Records written so far."""
        return sum(s["num_records"] for s in self._shards) + self._in_shard

    def write(self, record: Mapping[str, Any]) -> None:
        """Validates, serialises and appends one record."""
        from array_record.python.array_record_module import ArrayRecordWriter

        if self._closed:
            raise DatasetError("write() after close()")
        data = records.encode_record(record, self.kind)
        sizes = records.record_sizes(record)
        if self._sizes is None:
            self._sizes = sizes
        elif sizes != self._sizes:
            raise records.RecordError(
                f"record {self.num_records} has sizes {sizes}, earlier records have {self._sizes}: "
                "one dataset holds one body topology and one keypoint layout")
        if self._writer is None:
            name = f"data-{len(self._shards):05d}.array_record"
            self._tmp = self.out_dir / (name + ".tmp")
            self._writer = ArrayRecordWriter(str(self._tmp), "group_size:1")
        self._writer.write(data)
        self._in_shard += 1
        if self._in_shard >= self.records_per_shard:
            self._finish_shard()

    def _finish_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        final = self._tmp.with_name(self._tmp.name[: -len(".tmp")])
        os.replace(self._tmp, final)
        self._shards.append({"file": final.name, "num_records": self._in_shard,
                             "bytes": final.stat().st_size, "sha256": _sha256(final)})
        self._writer, self._tmp, self._in_shard = None, None, 0

    def close(self) -> pathlib.Path:
        """Closes the last shard and writes ``manifest.json`` (last). Returns its path."""
        if self._closed:
            return self.out_dir / MANIFEST
        self._finish_shard()
        self._closed = True
        manifest = {
            "format": FORMAT_NAME,
            "schema_version": records.SCHEMA_VERSION,
            "kind": self.kind,
            "num_records": sum(s["num_records"] for s in self._shards),
            "sizes": self._sizes or {},
            "shards": self._shards,
            "metadata": self.metadata,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        path = self.out_dir / MANIFEST
        _write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")
        return path

    def abort(self) -> None:
        """Stops without a manifest: removes the unfinished shard; the folder stays incomplete."""
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._tmp.unlink(missing_ok=True)
        self._writer = None
        self._closed = True


def write_dataset(out_dir, kind: str, items: Iterable[Mapping[str, Any]], **kwargs) -> pathlib.Path:
    """Writes all ``items`` with a :class:`ShardWriter`; returns the manifest path."""
    with ShardWriter(out_dir, kind, **kwargs) as w:
        for item in items:
            w.write(item)
    return pathlib.Path(out_dir) / MANIFEST


class Dataset:
    """A checked dataset folder: its manifest and shard paths (see :func:`open_dataset`)."""

    def __init__(self, path: pathlib.Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def sizes(self) -> dict[str, Any]:
        return self.manifest["sizes"]

    @property
    def metadata(self) -> dict[str, Any]:
        return self.manifest["metadata"]

    @property
    def shard_paths(self) -> list[str]:
        return [str(self.path / s["file"]) for s in self.manifest["shards"]]

    def __len__(self) -> int:
        return int(self.manifest["num_records"])

    def data_source(self):
        """A ``grain.sources.ArrayRecordDataSource`` over the shards (random access by index)."""
        import grain

        source = grain.sources.ArrayRecordDataSource(self.shard_paths)
        if len(source) != len(self):
            raise DatasetError(f"{self.path}: shards hold {len(source)} records, the manifest says {len(self)}")
        return source

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, kind={self.kind!r}, records={len(self)}, sizes={self.sizes})"


def open_dataset(path: str | os.PathLike, kind: str | None = None, verify_checksums: bool = False) -> Dataset:
    """Opens a dataset folder after checking it is complete.

    Args:
      path: the folder written by :class:`ShardWriter` (or a converter in ``data_prep``).
      kind: expected record kind (``"image"`` / ``"mesh"``), or None for any.
      verify_checksums: also recompute every shard's SHA-256 (reads all the data).

    Raises:
      DatasetError: no folder, no manifest (an unfinished or interrupted conversion), a
        manifest of another format or version, missing or truncated shards, wrong checksums
        or the wrong kind. The message names the file and what to do.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise DatasetError(f"dataset folder {path} does not exist; create it with a data_prep converter "
                           "(e.g. python -m data_prep.synthetic --out DIR)")
    mpath = path / MANIFEST
    if not mpath.exists():
        raise DatasetError(f"{path} has no {MANIFEST}: the dataset is incomplete (its conversion did not "
                           "finish); run the converter again with --overwrite")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{mpath} is not valid JSON ({e}); rerun the converter with --overwrite") from e
    if manifest.get("format") != FORMAT_NAME:
        raise DatasetError(f"{mpath} is not an hmr_jax dataset manifest (format={manifest.get('format')!r})")
    if manifest.get("schema_version") != records.SCHEMA_VERSION:
        raise DatasetError(f"{mpath} has record schema version {manifest.get('schema_version')}, this code reads "
                           f"version {records.SCHEMA_VERSION}; convert the data again")
    if kind is not None and manifest.get("kind") != kind:
        raise DatasetError(f"{path} holds {manifest.get('kind')!r} records, {kind!r} records are needed here")
    total = 0
    for shard in manifest["shards"]:
        f = path / shard["file"]
        if not f.exists():
            raise DatasetError(f"shard {f} listed in {MANIFEST} is missing; copy it back or convert again")
        if f.stat().st_size != shard["bytes"]:
            raise DatasetError(f"shard {f} has {f.stat().st_size} bytes, the manifest says {shard['bytes']} "
                               "(truncated or replaced); convert again")
        if verify_checksums and _sha256(f) != shard["sha256"]:
            raise DatasetError(f"shard {f} does not match its SHA-256 in {MANIFEST} (corrupt); convert again")
        total += shard["num_records"]
    if total != manifest["num_records"]:
        raise DatasetError(f"{mpath}: shards count {total} records but num_records is {manifest['num_records']}")
    return Dataset(path, manifest)
