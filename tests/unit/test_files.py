"""hmr_jax.files: atomic writes leave either the old file or the new one, never a mix."""
from __future__ import annotations

import errno
import os

import pytest

from hmr_jax import files


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_text_and_bytes(tmp_path):
    p = files.atomic_write(tmp_path / "sub" / "a.json", '{"a": 1}')
    assert p.read_text() == '{"a": 1}'
    files.atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert _listing(p.parent) == ["a.json"]  # no temporary left


def test_error_inside_keeps_previous_file(tmp_path):
    p = tmp_path / "results.json"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_open(p) as f:
            f.write("half of the new")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old" and _listing(tmp_path) == ["results.json"]


def test_disk_full_is_named_and_keeps_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "metrics.csv"
    p.write_text("old")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(files.DiskFullError, match="metrics.csv") as info:
        files.atomic_write(p, "new" * 1000)
    assert info.value.errno == errno.ENOSPC and "free some space" in str(info.value)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert p.read_text() == "old" and _listing(tmp_path) == ["metrics.csv"]


def test_atomic_folder_replaces_only_when_complete(tmp_path):
    out = tmp_path / "converted"
    with files.atomic_folder(out) as tmp:
        (tmp / "config.json").write_text("1")
    assert (out / "config.json").read_text() == "1"
    with pytest.raises(FileExistsError):
        with files.atomic_folder(out):
            pass
    with pytest.raises(RuntimeError):
        with files.atomic_folder(out, overwrite=True) as tmp:
            (tmp / "config.json").write_text("2")
            raise RuntimeError("conversion failed")
    assert (out / "config.json").read_text() == "1" and _listing(tmp_path) == ["converted"]
    with files.atomic_folder(out, overwrite=True) as tmp:
        (tmp / "config.json").write_text("2")
    assert (out / "config.json").read_text() == "2" and _listing(tmp_path) == ["converted"]


def test_mode_checked(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with files.atomic_open(tmp_path / "x", "a"):
            pass


def test_disk_full_is_recognised_through_wrapping_errors():
    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as e:
            raise ValueError("TensorStore: write failed") from e
    except ValueError as outer:
        assert files.is_disk_full(outer)
    assert files.is_disk_full(RuntimeError("RESOURCE_EXHAUSTED: No space left on device [while writing]"))
    assert not files.is_disk_full(ValueError("shape mismatch"))
