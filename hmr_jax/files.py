"""The one way hmr_jax writes a file or a folder, and locks a folder against a second writer.

Writing: build it beside the target, then rename.

A reader never sees a half-written file: the data goes to a temporary name in the same folder
(``.NAME.XXXX.partial``), is flushed to disk, then ``os.replace``-d over the target in one step.
On any error (a full disk included) the temporary file is removed and the previous file, if
any, is left exactly as it was; a full disk is reported as :class:`DiskFullError` naming the
file.

* :func:`atomic_open` -- a context manager yielding a file object (text or binary);
* :func:`atomic_write` -- ``bytes`` / ``str`` in one call;
* :func:`atomic_folder` -- a folder built in a temporary sibling, then renamed into place;
* :func:`partial_folder` / :func:`rename_into` -- for writers that must write by name (ArrayRecord
  shards): files built in a hidden folder inside the destination, then renamed into it, the one
  that marks the set complete (a manifest) last.

One writer per folder: :func:`exclusive_lock` / :func:`folder_lock` (see there for the rule
that tells a live holder from a stale one).

Reading outside files safely is :mod:`hmr_jax.safe_read`.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import pathlib
import shutil
import socket
import tempfile
import threading
import time
from typing import IO, Iterator

from hmr_jax.errors import UserError

__all__ = ["DiskFullError", "is_disk_full", "atomic_open", "atomic_write", "atomic_folder", "partial_folder",
           "rename_into", "LockHeldError", "exclusive_lock", "folder_lock"]


class DiskFullError(UserError, OSError):
    """No space left (ENOSPC / EDQUOT) while writing ``path``; the previous version is intact."""

    def __init__(self, path: str | os.PathLike, what: str = "file"):
        super().__init__(errno.ENOSPC, f"no space left on the device while writing the {what} {path}: "
                                       "free some space and run again (the previous version, if any, is unchanged)")
        self.path = str(path)


def is_disk_full(e: BaseException | None) -> bool:
    """True if ``e`` or an exception it was raised from is ENOSPC / EDQUOT.

    Libraries that write from C++ (Orbax's TensorStore, ArrayRecord) report a full disk as a
    ``ValueError`` / ``RuntimeError`` whose text holds the OS message, so the text counts too.
    """
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "Disk quota exceeded" in text or "ENOSPC" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


_is_disk_full = is_disk_full


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


def partial_folder(parent: str | os.PathLike) -> pathlib.Path:
    """A new hidden folder ``parent/.partial-XXXX`` to build files in (``parent`` is created).

    Files written there by name (a library's own writer) are moved into ``parent`` by
    :func:`rename_into` once complete; the caller removes the folder (``shutil.rmtree``) when done
    or on an error, so ``parent`` never shows a half-written file.
    """
    parent = pathlib.Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=".partial-", dir=parent))


def rename_into(build: str | os.PathLike, dest: str | os.PathLike, names) -> None:
    """Move the finished files ``names`` from ``build`` (a :func:`partial_folder`) into ``dest``.

    One rename per file (no data copied), in the order given: name the file that marks the set
    complete (a manifest) last, so a reader sees either the old set or the complete new one.
    """
    build, dest = pathlib.Path(build), pathlib.Path(dest)
    for name in names:
        os.replace(build / name, dest / name)


# ---------------------------------------------------------------------------------------------
# One writer per folder
# ---------------------------------------------------------------------------------------------

#: seconds between two heartbeats of a lock holder (the lock file's modification time)
LOCK_HEARTBEAT_S = 10.0
#: a lock held from ANOTHER host whose heartbeat is older than this is stale
LOCK_STALE_AFTER_S = 120.0


class LockHeldError(UserError, RuntimeError):
    """Another live process holds the lock of a folder; the message names its host and pid."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = dict(holder or {})


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` on this host (field 22 of /proc/PID/stat), if known."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    now = _process_start(pid)
    return start is None or now is None or now == start  # another process reusing the pid: gone


def _read_holder(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0).rstrip(b"\0 \n")
        holder = json.loads(raw.decode("utf-8")) if raw else {}
        if not isinstance(holder, dict):
            return {}
        holder["pid"] = int(holder["pid"]) if holder.get("pid") is not None else None
        return holder
    except (OSError, ValueError, TypeError):  # unreadable or damaged: no usable holder
        return {}


def _describe(holder: dict, age: float | None) -> str:
    what = holder.get("what") or "a process"
    beat = f", last heartbeat {age:.0f} s ago" if age is not None else ""
    return (f"{what} (pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"since {holder.get('since', '?')}{beat})")


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str = "", *, wait_s: float = 0.0,
                   heartbeat_s: float = LOCK_HEARTBEAT_S,
                   stale_after_s: float = LOCK_STALE_AFTER_S) -> Iterator[pathlib.Path]:
    """Hold the lock file ``path`` for the duration of the block (one holder at a time).

    The holder keeps ``flock`` on the file (the kernel drops it when the process dies, SIGKILL
    included) and writes ``{"host", "pid", "start", "since", "what"}`` into it; a thread touches
    the file every ``heartbeat_s`` seconds. The rule for a lock found in place:

    * ``flock`` is refused: a live process holds it -> :class:`LockHeldError`;
    * ``flock`` is granted but the file names a holder: on THIS host it is stale when its pid is
      gone (or reused by a process with another start time); from ANOTHER host (a shared
      filesystem where ``flock`` may not reach across hosts) it is stale when its heartbeat is
      older than ``stale_after_s`` seconds. A stale lock is taken over (with a warning), a live
      one is refused.

    The file stays after release (emptied), so it never has to be created under a racing reader.

    Args:
      path: the lock file (its folder must exist).
      what: who holds it, for the other process's message (e.g. ``"train.py"``).
      wait_s: wait up to this many seconds for a live holder to finish (0: fail at once).
    Raises:
      LockHeldError: naming the holder's host and pid, and what to do.
    """
    path = pathlib.Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + max(float(wait_s), 0.0)
    try:
        while True:
            live, holder, age = _lock_state(fd, stale_after_s)
            if not live:
                break
            if time.monotonic() >= deadline:
                raise LockHeldError(
                    f"{path.parent} is in use by {_describe(holder, age)}: wait for it to finish, or "
                    f"stop it (kill {holder.get('pid', 'PID')} on {holder.get('host', 'its host')}); "
                    f"a lock whose process is gone is taken over automatically (another host's after "
                    f"{stale_after_s:.0f} s without heartbeat)", holder)
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0.01)))
        if holder.get("pid") is not None:
            logging.getLogger(__name__).warning("Taking over the stale lock %s of %s.", path,
                                                _describe(holder, age))
        _write_holder(fd, path, what)
        with _heartbeat(fd, path, heartbeat_s):
            try:
                yield path
            finally:
                if _read_holder(fd).get("pid") == os.getpid():
                    os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases flock


def _lock_state(fd: int, stale_after_s: float) -> tuple[bool, dict, float | None]:
    """``(live, holder record, heartbeat age in s)`` of the lock file ``fd`` (flock taken when free),
    by the rule of :func:`exclusive_lock`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
    except BlockingIOError:
        locked = False
    except OSError:  # a filesystem without flock: the holder record alone decides
        locked = None
    holder = _read_holder(fd)
    age = time.time() - os.fstat(fd).st_mtime if holder else None
    if locked is False:
        return True, holder, age
    if holder.get("pid") is None:
        return False, holder, age
    if holder.get("host") == socket.gethostname():
        live = int(holder["pid"]) != os.getpid() and _pid_alive(int(holder["pid"]), holder.get("start"))
        # flock granted: the process may live but does not hold the lock
        return bool(live and not locked), holder, age
    return age is not None and age < stale_after_s, holder, age


def _write_holder(fd: int, path: pathlib.Path, what: str) -> None:
    """This process's ``{"host", "pid", "start", "since", "what"}`` into the lock file, in place
    (not atomic_write: the lock lives on this inode; one small pwrite)."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid()),
          "since": time.strftime("%Y-%m-%d %H:%M:%S"), "what": what}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8") + b"\n", 0)
        os.fsync(fd)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path, "lock file") from e
        raise


@contextlib.contextmanager
def _heartbeat(fd: int, path: pathlib.Path, every_s: float) -> Iterator[None]:
    """Touch the lock file every ``every_s`` seconds from a daemon thread while the block runs."""
    stop = threading.Event()

    def beat():
        while not stop.wait(every_s):
            try:
                os.utime(fd)
            except OSError:
                pass

    thread = threading.Thread(target=beat, name=f"lock-heartbeat:{path}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def folder_lock(folder: str | os.PathLike, what: str = "", *, name: str = ".lock", **kwargs):
    """:func:`exclusive_lock` on ``folder/name`` (the folder is created): one writer per folder."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return exclusive_lock(folder / name, what, **kwargs)
