"""Reading files that come from outside (users, downloads): size caps and allow-listed pickles.

Every reader of a user-given file goes through these, so a malformed or hostile file ends in
the reader's OWN error type (passed as ``error``, called with a message that names the file),
and nothing is allocated before its size is checked against a cap:

* :func:`check_file_size` -- the file exists, is a regular file and is not larger than a cap;
* :func:`read_npy` / :func:`read_npz` -- ``.npy`` / ``.npz`` arrays whose headers are parsed
  from a bounded prefix and checked against the bytes that follow and a cap before reading;
* :class:`RestrictedUnpickler` / :func:`restricted_pickle_load` -- pickles that may construct
  only NumPy arrays, plain containers and an allow-list, with caps on what they build.
"""
from __future__ import annotations

import io
import lzma
import os
import pathlib
import pickle
import threading
import zipfile
import zlib
from typing import IO, Any, Callable

import numpy as np

from hmr_jax.errors import UserError

__all__ = ["check_file_size", "read_npy", "read_npz", "RestrictedUnpickler", "restricted_pickle_load",
           "charge_current"]

ErrorType = Callable[[str], BaseException]
_MAX_NPY_HEADER = 1 << 16  # magic, version, length and the header dict of any sane .npy


def check_file_size(path: str | os.PathLike, max_bytes: int, error: ErrorType, what: str = "file") -> int:
    """The size of ``path`` in bytes; ``error`` (naming the file) if missing, not a file, or
    larger than ``max_bytes``."""
    path = pathlib.Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if not path.is_file():
        raise error(f"{path}: the {what} is not a regular file")
    if st.st_size > max_bytes:
        raise error(f"{path}: {st.st_size} bytes is more than the {max_bytes} bytes a {what} may have; "
                    "this is not the expected file (or raise the limit in the reader)")
    return int(st.st_size)


def _npy_header(f: IO[bytes], source: str, available: int, max_bytes: int, error: ErrorType):
    """(shape, fortran, dtype, data bytes) of an .npy stream, checked before any data is read."""
    fmt = np.lib.format
    # numpy would read the header length field's count of bytes first (a corrupt field asks for
    # gigabytes): parse the header from a bounded prefix instead.
    start = f.tell()
    head = io.BytesIO(f.read(min(max(available, 0), _MAX_NPY_HEADER)))
    try:
        version = fmt.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(head)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(head)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError / EOFError / SyntaxError...
        raise error(f"{source}: cannot be read as a .npy array (bad header: {e})") from None
    f.seek(start + head.tell())
    if not isinstance(shape, tuple) or any(not isinstance(n, int) or n < 0 for n in shape):
        raise error(f"{source}: not a readable .npy array (the header's shape {shape!r} is not a tuple of "
                    "non-negative integers)")
    count = 1
    for n in shape:
        count *= int(n)
    nbytes = count * int(dtype.itemsize)
    if not dtype.hasobject:
        header_end = f.tell() - start
        if nbytes > max_bytes:
            raise error(f"{source}: the array header announces shape {shape} of {dtype} ({nbytes} bytes), "
                        f"more than the {max_bytes} bytes allowed; the file is corrupt or not the expected one")
        if nbytes > available - header_end:
            raise error(f"{source}: the array header announces shape {shape} of {dtype} ({nbytes} bytes) but "
                        f"only {max(available - header_end, 0)} bytes follow: the file is truncated")
    return shape, fortran, dtype, nbytes


def _npy_data(f: IO[bytes], source: str, shape, fortran, dtype, nbytes: int, error: ErrorType,
              object_loader: Callable[[IO[bytes]], Any] | None) -> np.ndarray:
    if dtype.hasobject:
        if object_loader is None:
            raise error(f"{source}: the array holds Python objects (dtype {dtype}), which are not read "
                        "for safety; re-save it as a plain numeric array")
        arr = np.asarray(object_loader(f))
        if arr.shape != tuple(shape):
            raise error(f"{source}: the pickled objects have shape {arr.shape}, the header says {shape}")
        return arr
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise error(f"{source}: the array data is truncated ({len(data)} of {nbytes} bytes)")
    try:
        arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    except ValueError as e:
        raise error(f"{source}: cannot build the array ({e})") from None
    return arr.copy() if not arr.flags.writeable else arr


def read_npy(path: str | os.PathLike, error: ErrorType, max_bytes: int = 1 << 30) -> np.ndarray:
    """Read a plain (non-object) ``.npy`` array; its header's size is checked first.

    Args:
      path: the file.
      error: the reader's own error type (called with the message, which names the file).
      max_bytes: the largest array accepted.
    """
    size = check_file_size(path, max_bytes + 65536, error, ".npy file")
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype, nbytes = _npy_header(f, str(path), size, max_bytes, error)
            arr = _npy_data(f, str(path), shape, fortran, dtype, nbytes, error, None)
    except OSError as e:
        raise error(f"{path}: cannot read the .npy file ({e})") from None
    return np.array(arr)  # writeable, owns its memory


def read_npz(path: str | os.PathLike, error: ErrorType, max_bytes: int = 4 << 30,
             keys: tuple[str, ...] | None = None,
             object_loader: Callable[[IO[bytes]], Any] | None = None) -> dict[str, np.ndarray]:
    """Read the arrays of an ``.npz`` archive, each header and the total checked against caps.

    Args:
      path: the archive.
      error: the reader's own error type.
      max_bytes: the most bytes all arrays read may take together (uncompressed).
      keys: read only these members (the others are not decompressed); None: all.
      object_loader: how to read object arrays (an allow-listed unpickler), or None to refuse them.
    Returns:
      ``{name: array}`` (member names without ``.npy``).
    """
    size = check_file_size(path, max_bytes, error, ".npz file")
    out: dict[str, np.ndarray] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if keys is not None and name not in keys:
                    continue
                source = f"{path}: member {name!r}"
                if info.file_size > max_bytes - total:
                    raise error(f"{source} would decompress to {info.file_size} bytes, more than the "
                                f"{max_bytes} bytes allowed for {path}")
                with zf.open(info) as f:
                    shape, fortran, dtype, nbytes = _npy_header(f, source, info.file_size, max_bytes - total,
                                                                error)
                    out[name] = np.array(_npy_data(f, source, shape, fortran, dtype, nbytes, error,
                                                   object_loader))
                total += info.file_size
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, ValueError,
            RuntimeError, KeyError, zlib.error, lzma.LZMAError) as e:  # a damaged compressed member
        if isinstance(e, UserError):
            raise
        raise error(f"{path}: not a readable .npz archive ({type(e).__name__}: {e}); it is truncated or "
                    f"corrupt ({size} bytes)") from None
    return out


# ---------------------------------------------------------------------------------------------
# Allow-listed unpickling with caps
# ---------------------------------------------------------------------------------------------

_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
_local = threading.local()


class _NdarrayRef:
    """What a pickle's ``numpy.ndarray`` global becomes: usable only as ``_reconstruct``'s subtype."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that constructs only NumPy arrays, plain containers and an allow-list.

    What it constructs is capped: an array announced by ``_reconstruct`` / ``ndarray`` may not
    exceed ``max_array_bytes``; container copies (``list(x)``, ``set(x)``, ...) together may
    not exceed ``max_elements``; ``_codecs.encode`` only re-encodes text as latin-1 (what Python 2
    pickles of NumPy arrays use). Subclasses add names to :attr:`ALLOWED` or extend
    :meth:`find_class` (chumpy stand-ins, ...), falling back to this one.
    """

    #: (module, name) pairs returned as they are (beyond the NumPy / container names handled here)
    ALLOWED: frozenset = frozenset()
    _CONTAINERS = {"set": set, "frozenset": frozenset, "list": list, "tuple": tuple, "dict": dict}

    def __init__(self, file, *, max_array_bytes: int = 1 << 31, max_elements: int = 10 ** 7, **kwargs):
        kwargs.setdefault("encoding", "latin1")
        super().__init__(file, **kwargs)
        self.max_array_bytes = int(max_array_bytes)
        self.budget = int(max_elements)

    def charge(self, n: int, what: str) -> None:
        """Count ``n`` elements built from the file; refuse past the budget."""
        self.budget -= int(n)
        if self.budget < 0:
            raise pickle.UnpicklingError(f"the pickle builds too many elements ({what}); refusing it")

    def _reconstruct(self, subtype, shape, dtype):
        if subtype is not _NdarrayRef and subtype is not np.ndarray:
            raise pickle.UnpicklingError(f"_reconstruct of {subtype!r} is not allowed")
        shape = tuple(int(n) for n in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        nbytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize if shape else 0
        if nbytes > self.max_array_bytes or any(n < 0 for n in shape):
            raise pickle.UnpicklingError(f"an array of shape {shape} is too large ({nbytes} bytes)")
        return np.ndarray.__new__(np.ndarray, shape, dtype)

    def _container(self, kind):
        def build(*args):
            if len(args) > 1:
                raise pickle.UnpicklingError(f"{kind.__name__}() takes at most one argument")
            if args:
                self.charge(len(args[0]) if hasattr(args[0], "__len__") else 1, kind.__name__)
            return kind(*args)
        return build

    def _reconstructor(self, cls, base, state):
        if base is object and isinstance(cls, type):
            return object.__new__(cls)
        raise pickle.UnpicklingError(f"copyreg._reconstructor with base {base!r} is not allowed")

    @staticmethod
    def _bytes(*args):
        if args and (isinstance(args[0], int) or len(args) > 2):
            raise pickle.UnpicklingError("bytes(n) is not allowed in this file")
        return bytes(*args)

    @staticmethod
    def _encode(obj, encoding="utf-8", errors="strict"):
        if not isinstance(obj, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1",
                                                                                     "iso-8859-1"):
            raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
        return obj.encode("latin1", errors)

    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_CORE:
            if name == "_reconstruct":
                return self._reconstruct
            if name in ("scalar", "_frombuffer"):
                return super().find_class(module.replace("numpy.core", "numpy._core"), name)
        if module == "numpy" and name == "ndarray":
            return _NdarrayRef
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module in ("builtins", "__builtin__"):
            if name in self._CONTAINERS:
                return self._container(self._CONTAINERS[name])
            if name == "object":
                return object
            if name == "bytes":  # Python 3 protocol-2 pickles write b"" as bytes()
                return self._bytes
        if (module, name) in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
            return self._reconstructor
        if (module, name) == ("_codecs", "encode"):
            return self._encode
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only NumPy arrays and plain "
                                     "containers are allowed in this file)")

    def load(self):
        _local.unpickler = self
        try:
            return super().load()
        finally:
            _local.unpickler = None


def charge_current(n: int, what: str) -> None:
    """Charge ``n`` elements to the unpickler running in this thread (for stand-in classes)."""
    unpickler = getattr(_local, "unpickler", None)
    if unpickler is not None:
        unpickler.charge(n, what)


def restricted_pickle_load(path: str | os.PathLike, error: ErrorType, *, max_bytes: int = 4 << 30,
                           unpickler: type[RestrictedUnpickler] = RestrictedUnpickler, what: str = "pickle",
                           **kwargs) -> Any:
    """Load a pickle with ``unpickler``; any failure becomes ``error`` naming the file.

    Args:
      path: the file (refused above ``max_bytes``).
      error: the reader's own error type.
      unpickler: a :class:`RestrictedUnpickler` subclass (its allow-list).
      what: what the file should be, for the message.
      kwargs: for the unpickler (``max_array_bytes``, ``max_elements``).
    """
    size = check_file_size(path, max_bytes, error, what)
    # An array's data comes from the file: none may be announced larger than the file itself.
    kwargs["max_array_bytes"] = min(kwargs.get("max_array_bytes", max_bytes), size)
    # Container copies (list(x), set(x)) are rare in real files: a few elements per input byte.
    kwargs["max_elements"] = min(kwargs.get("max_elements", 10 ** 7), 16 * size + 65536)
    try:
        # From memory: a file object's read(n) allocates n bytes first, and a corrupt length
        # field in the pickle would ask for gigabytes; BytesIO returns what there is.
        data = pathlib.Path(path).read_bytes()
        return unpickler(io.BytesIO(data), **kwargs).load()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - anything an allow-listed pickle can raise means malformed
        if isinstance(e, pickle.UnpicklingError) and str(e).startswith("refusing"):
            raise error(f"{path}: {e}; nothing was run. This is not a {what}") from None
        raise error(f"{path}: not a readable {what} ({type(e).__name__}: {str(e)[:300]}); the file is "
                    "truncated, corrupt or of another kind") from None
