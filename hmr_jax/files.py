"""The one way hmr_jax writes a file or a folder: build it beside the target, then rename.

A reader never sees a half-written file: the data goes to a temporary name in the same folder
(``.NAME.XXXX.partial``), is flushed to disk, then ``os.replace``-d over the target in one step.
On any error (a full disk included) the temporary file is removed and the previous file, if
any, is left exactly as it was; a full disk is reported as :class:`DiskFullError` naming the
file.

* :func:`atomic_open` -- a context manager yielding a file object (text or binary);
* :func:`atomic_write` -- ``bytes`` / ``str`` in one call;
* :func:`atomic_folder` -- a folder built in a temporary sibling, then renamed into place.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import shutil
import tempfile
from typing import IO, Iterator

__all__ = ["DiskFullError", "atomic_open", "atomic_write", "atomic_folder"]


class DiskFullError(OSError):
    """No space left (ENOSPC / EDQUOT) while writing ``path``; the previous version is intact."""

    def __init__(self, path: str | os.PathLike, what: str = "file"):
        super().__init__(errno.ENOSPC, f"no space left on the device while writing the {what} {path}: "
                                       "free some space and run again (the previous version, if any, is unchanged)")
        self.path = str(path)


def _is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, encoding: str = "utf-8",
                newline: str | None = "\n", fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    Args:
      path: the final file; its folder is created if needed.
      mode: ``"w"`` (text) or ``"wb"`` (binary).
      encoding, newline: for text mode.
      fsync: flush to disk before the rename (so a crash cannot leave an empty file).
    Raises:
      DiskFullError: the disk filled up (the temporary file is removed, ``path`` untouched).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding, "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        if _is_disk_full(e):
            raise DiskFullError(path) from e
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, **kwargs) -> pathlib.Path:
    """Write ``data`` (``bytes`` or ``str``) to ``path`` atomically; returns the path.

    ``kwargs`` go to :func:`atomic_open` (``encoding``, ``fsync``).
    """
    with atomic_open(path, "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w", **kwargs) as f:
        f.write(data)
    return pathlib.Path(path)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[pathlib.Path]:
    """Yield a temporary sibling folder to fill; on a clean exit it becomes ``path``.

    An existing ``path`` is an error unless ``overwrite``; then it is replaced only after the
    new folder is complete (moved aside, the new one renamed in, the old one deleted).
    Raises:
      FileExistsError: ``path`` exists and not ``overwrite``.
      DiskFullError: the disk filled up (the temporary folder is removed, ``path`` untouched).
    """
    path = pathlib.Path(path).resolve()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:  # put the previous folder back
                os.replace(old / path.name, path)
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_disk_full(e):
            raise DiskFullError(path, "folder") from e
        raise
