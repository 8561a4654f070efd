"""ArrayRecord shards with a manifest: written atomically, refused when incomplete.

A dataset is a folder::

    DIR/data-00000.array_record      one msgpack record per entry (see records.py)
    DIR/data-00001.array_record
    DIR/manifest.json                written last

``manifest.json`` holds the format name and version, the record kind (``image`` / ``mesh``),
the sizes every record shares (vertex count, keypoint count and kind), the total count and,
per shard, its file name, record count, byte size and SHA-256. Each shard is written under a
temporary name and renamed when complete; the manifest is written (temp name, then rename)
only after every shard is closed (:func:`hmr_jax.files.partial_folder` / :func:`~hmr_jax.files.rename_into`). A folder without a manifest, or whose shards do not match
it, is refused by :func:`open_dataset` with the reason and the fix.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
from typing import Any, Iterable, Mapping

import grain
import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from PIL import Image, UnidentifiedImageError

from hmr_jax.data import records
from hmr_jax.errors import UserError
from hmr_jax.files import DiskFullError, atomic_write, is_disk_full, partial_folder, rename_into
from hmr_jax.safe_read import check_file_size

MANIFEST = "manifest.json"
FORMAT_NAME = "hmr_jax.records"
#: the largest manifest read (one line per shard: a million shards fit)
MAX_MANIFEST_BYTES = 256 << 20
#: how many following records a skipping reader tries in place of a bad one
MAX_CONSECUTIVE_BAD = 64
_SHARD_NAME = re.compile(r"data-\d{5,}\.array_record")


class DatasetError(UserError, RuntimeError):
    """A dataset folder that is missing, incomplete, corrupt or of the wrong kind."""


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    """Writes records into ArrayRecord shards and the manifest (use as a context manager).

    Args:
      out_dir: destination folder (created). It must not already hold a dataset unless
        ``overwrite``.
      kind: ``"image"`` or ``"mesh"`` (see :mod:`hmr_jax.data.records`).
      records_per_shard: records per ArrayRecord file.
      metadata: JSON-serialisable facts stored in the manifest (source, options, faces...).

    Every record is validated; the first record fixes the sizes (vertex count, keypoints)
    the others must share. Shards and the manifest are built in a hidden temporary folder
    inside ``out_dir`` and moved into place only by :meth:`close` (renames, no new data), so an
    existing dataset stays complete and readable until then. Leaving the ``with`` block by an
    exception (a full disk included: :class:`~hmr_jax.files.DiskFullError`) removes the
    temporary folder and leaves ``out_dir`` as it was.
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
        if (manifest.exists() or old) and not overwrite:
            raise DatasetError(
                f"{self.out_dir} already holds a dataset ({MANIFEST if manifest.exists() else old[0].name}); "
                "choose another folder or pass overwrite=True (--overwrite)")
        self.kind = kind
        self.records_per_shard = int(records_per_shard)
        self.metadata = dict(metadata or {})
        self._shards: list[dict[str, Any]] = []
        self._writer = None
        self._tmp: pathlib.Path | None = None
        self._in_shard = 0
        self._sizes: dict[str, Any] | None = None
        self._closed = False
        self._build = partial_folder(self.out_dir)

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

    def _disk_full(self, err: BaseException) -> DiskFullError:
        self.abort()
        return DiskFullError(self.out_dir, "dataset")

    def write(self, record: Mapping[str, Any]) -> None:
        """Validates, serialises and appends one record."""
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
        try:
            if self._writer is None:
                name = f"data-{len(self._shards):05d}.array_record"
                self._tmp = self._build / name
                self._writer = ArrayRecordWriter(str(self._tmp), "group_size:1")
            self._writer.write(data)
            self._in_shard += 1
            if self._in_shard >= self.records_per_shard:
                self._finish_shard()
        except Exception as e:  # noqa: BLE001 - ArrayRecord reports a full disk as RuntimeError text
            if is_disk_full(e):
                raise self._disk_full(e) from e
            raise

    def _finish_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        final = self._tmp
        self._shards.append({"file": final.name, "num_records": self._in_shard,
                             "bytes": final.stat().st_size, "sha256": _sha256(final)})
        self._writer, self._tmp, self._in_shard = None, None, 0

    def close(self) -> pathlib.Path:
        """Closes the last shard, writes ``manifest.json`` and moves the dataset into place."""
        if self._closed:
            return self.out_dir / MANIFEST
        try:
            self._finish_shard()
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
            atomic_write(self._build / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        except Exception as e:  # noqa: BLE001
            if is_disk_full(e):
                raise self._disk_full(e) from e
            self.abort()
            raise
        # Swap in: the old manifest goes first (the folder reads as incomplete, never as a mix),
        # then the old shards, then the new shards, the new manifest last. Renames only.
        (self.out_dir / MANIFEST).unlink(missing_ok=True)
        for p in self.out_dir.glob("data-*.array_record*"):
            p.unlink()
        rename_into(self._build, self.out_dir, [shard["file"] for shard in self._shards] + [MANIFEST])
        shutil.rmtree(self._build, ignore_errors=True)
        self._closed = True
        return self.out_dir / MANIFEST

    def abort(self) -> None:
        """Stops without touching ``out_dir``'s dataset: the temporary folder is removed."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - a full disk may fail the close too; the folder goes anyway
                pass
        self._writer = None
        self._closed = True
        shutil.rmtree(self._build, ignore_errors=True)


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

    def locate(self, index: int) -> tuple[str, int]:
        """``(shard file name, index inside that shard)`` of the dataset's record ``index``."""
        if getattr(self, "_starts", None) is None:
            self._starts = np.cumsum([0] + [s["num_records"] for s in self.manifest["shards"]])
        if not 0 <= index < self._starts[-1]:
            raise IndexError(f"record {index} is past the end of {self.path}")
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.manifest["shards"][k]["file"], int(index - self._starts[k])

    def data_source(self):
        """A ``grain.sources.ArrayRecordDataSource`` over the shards (random access by index).

        Raises:
          DatasetError: a shard holds another number of records than the manifest says.
        """
        for shard, path in zip(self.manifest["shards"], self.shard_paths):
            try:
                reader = ArrayRecordReader(path)
                count = reader.num_records()
                reader.close()
            except Exception as e:  # noqa: BLE001 - the C++ reader raises RuntimeError / ValueError
                raise DatasetError(f"shard {path} cannot be opened as ArrayRecord ({e}); convert again") from None
            if count != shard["num_records"]:
                raise DatasetError(f"shard {path} holds {count} records, {MANIFEST} says {shard['num_records']}: "
                                   "the manifest does not belong to these shards; convert again")
        source = grain.sources.ArrayRecordDataSource(self.shard_paths)
        if len(source) != len(self):
            raise DatasetError(f"{self.path}: shards hold {len(source)} records, the manifest says {len(self)}")
        return source

    def checked_source(self, skip_bad: bool = False) -> "CheckedSource":
        """Random access to decoded, validated records (see :class:`CheckedSource`)."""
        return CheckedSource(self, skip_bad=skip_bad)

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, kind={self.kind!r}, records={len(self)}, sizes={self.sizes})"


class CheckedSource:
    """Records of a dataset, decoded and checked on read: ``source[i] -> (record, skipped, where)``.

    Every record is decoded and validated (:func:`hmr_jax.data.records.read_record`: the format
    of the dataset's kind, the manifest's vertex / keypoint counts, an image record's JPEG
    header). A bad record raises :class:`DatasetError` naming the shard file and the record's
    index in it (and in the dataset). With ``skip_bad`` the next good record (at most
    :data:`MAX_CONSECUTIVE_BAD` further) is returned instead and ``skipped`` is 1 (0 for a good
    record), so summing it over a pass counts each bad record once. ``where`` is :meth:`describe` of the record returned
    (for later errors). Picklable (Grain worker processes).
    """

    def __init__(self, dataset: Dataset, skip_bad: bool = False):
        self.dataset = dataset
        self.skip_bad = bool(skip_bad)
        self._source = None

    def __getstate__(self):
        return {"dataset": self.dataset, "skip_bad": self.skip_bad, "_source": None}

    def __len__(self) -> int:
        return len(self.dataset)

    def _read(self, index: int) -> dict:
        if self._source is None:
            self._source = self.dataset.data_source()
        try:
            data = self._source[index]
        except Exception as e:  # noqa: BLE001 - a corrupt chunk fails inside the C++ reader
            raise records.RecordError(f"cannot read the record's bytes ({type(e).__name__}: {e})") from None
        record = records.read_record(data, self.dataset.kind, self.dataset.sizes)
        if "image_jpeg" in record:
            _check_jpeg_header(record["image_jpeg"])
        return record

    def describe(self, index: int) -> str:
        """``"DIR/data-00001.array_record record 17 (record 1017 of DIR)"``."""
        shard, i = self.dataset.locate(index)
        return f"{self.dataset.path / shard} record {i} (record {index} of {self.dataset.path})"

    def __getitem__(self, index: int):
        index = int(index)
        n = len(self)
        for skipped in range(MAX_CONSECUTIVE_BAD + 1):
            i = (index + skipped) % n
            try:
                return self._read(i), int(skipped > 0), self.describe(i)
            except records.RecordError as e:
                if not self.skip_bad:
                    raise DatasetError(f"{self.describe(i)}: {e}; convert the dataset again, or set "
                                       "config.data.skip_bad_records=True to skip bad records") from None
        raise DatasetError(f"{self.describe(index)} and the {MAX_CONSECUTIVE_BAD} records after it are all bad: "
                           "the dataset is corrupt; convert it again")


def _check_jpeg_header(data: bytes) -> None:
    """RecordError unless ``data`` starts a JPEG whose header gives a non-empty size."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if im.format != "JPEG":
                raise records.RecordError(f"image_jpeg holds a {im.format} image, not a JPEG")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise records.RecordError(f"image_jpeg is not a readable JPEG ({e})") from None
    if w < 1 or h < 1:
        raise records.RecordError(f"image_jpeg is {w}x{h} pixels")


def _check_manifest(manifest: Any, mpath: pathlib.Path) -> None:
    """DatasetError unless the manifest's entries have the types and values the reader uses."""
    def bad(what):
        raise DatasetError(f"{mpath}: {what}; the manifest is damaged: convert the dataset again")

    if not isinstance(manifest, dict):
        bad(f"the manifest is a {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT_NAME:
        raise DatasetError(f"{mpath} is not an hmr_jax dataset manifest (format={manifest.get('format')!r:.80})")
    if manifest.get("schema_version") != records.SCHEMA_VERSION:
        raise DatasetError(f"{mpath} has record schema version {manifest.get('schema_version')!r:.40}, this code "
                           f"reads version {records.SCHEMA_VERSION}; convert the data again")
    if manifest.get("kind") not in records.KINDS:
        bad(f"kind {manifest.get('kind')!r:.40} is not one of {records.KINDS}")
    n = manifest.get("num_records")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        bad(f"num_records {n!r:.40} is not a count")
    if not isinstance(manifest.get("sizes"), dict) or not isinstance(manifest.get("metadata", {}), dict):
        bad("sizes / metadata are not objects")
    for key, value in manifest["sizes"].items():
        if key.startswith("num_") and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            bad(f"sizes.{key} = {value!r:.40} is not a count")
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        bad("shards is not a list")
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict):
            bad(f"shard entry {i} is not an object")
        name = shard.get("file")
        if not isinstance(name, str) or not _SHARD_NAME.fullmatch(name):
            bad(f"shard entry {i} names the file {name!r:.80}, not data-NNNNN.array_record in the folder")
        for key in ("num_records", "bytes"):
            v = shard.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(f"shard entry {i} has {key} {v!r:.40}")
        if not isinstance(shard.get("sha256"), str):
            bad(f"shard entry {i} has no sha256 string")
    manifest.setdefault("metadata", {})


def open_dataset(path: str | os.PathLike, kind: str | None = None, verify_checksums: bool = False) -> Dataset:
    """Opens a dataset folder after checking it is complete.

    Args:
      path: the folder written by :class:`ShardWriter` (or a converter in ``data_prep``).
      kind: expected record kind (``"image"`` / ``"mesh"``), or None for any.
      verify_checksums: also recompute every shard's SHA-256 (reads all the data).

    Raises:
      DatasetError: no folder, no manifest (an unfinished or interrupted conversion), a
        manifest of another format or version or with malformed entries, missing or truncated
        shards, wrong checksums or the wrong kind. The message names the file and what to do.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise DatasetError(f"dataset folder {path} does not exist; create it with a data_prep converter "
                           "(e.g. python -m data_prep.synthetic --out DIR)")
    mpath = path / MANIFEST
    if not mpath.exists():
        raise DatasetError(f"{path} has no {MANIFEST}: the dataset is incomplete (its conversion did not "
                           "finish); run the converter again with --overwrite")
    check_file_size(mpath, MAX_MANIFEST_BYTES, DatasetError, "dataset manifest")
    try:
        manifest = json.loads(mpath.read_bytes())
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DatasetError(f"{mpath} is not valid JSON ({e}); rerun the converter with --overwrite") from None
    _check_manifest(manifest, mpath)
    if kind is not None and manifest.get("kind") != kind:
        raise DatasetError(f"{path} holds {manifest.get('kind')!r} records, {kind!r} records are needed here")
    total = 0
    for shard in manifest["shards"]:
        f = path / shard["file"]
        if not f.is_file():
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
