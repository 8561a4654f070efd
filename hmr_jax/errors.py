"""Errors a user can fix, and the one way the command lines report them.

Every reader of an outside file raises its own error type (``MeshFileError``,
``BodyModelFileError``, ``ConversionError``, ``DatasetError``, ...); each of them is also a
:class:`UserError`, as are a full disk (``hmr_jax.files.DiskFullError``) and a busy workdir
(``hmr_jax.files.LockHeldError``). The command lines (``train.py``, ``evaluate.py``,
``convert_torch_weights.py``, ``sample.py``, ``python -m hmr_jax.app``, ``python -m data_prep.*``)
decorate their ``main`` with :func:`command_line`, which turns such an error into ONE line ``error: ...`` on stderr and
the return value (exit status) 2 instead of a traceback. Anything else (a bug) keeps its traceback; so does every
error when ``HMR_JAX_TRACEBACK=1`` is set.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

__all__ = ["UserError", "USER_ERRORS", "one_line", "command_line"]


class UserError(Exception):
    """Marker base: bad input, a full disk, a busy folder -- what the message tells the user to fix."""


#: What :func:`command_line` reports in one line. Besides :class:`UserError`: missing or
#: unreadable paths the user gave, and ``ValueError`` (how configs and arguments are refused).
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
    NotADirectoryError,
)


def one_line(err: BaseException) -> str:
    """The error's message on one line (line breaks and runs of spaces become one space)."""
    text = str(err)
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return " ".join(text.split()) or type(err).__name__


def command_line(main: Callable[..., Any] | None = None, *, status: int = 2):
    """Decorate a command line's ``main``: a user error is printed as ``error: ...`` on stderr and
    ``main`` returns ``status`` (absl's ``app.run`` and ``sys.exit(main())`` make it the exit status).

    Usable bare (``@command_line``) or with a status (``@command_line(status=3)``).
    """
    if main is None:
        return functools.partial(command_line, status=status)

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as err:
            if os.environ.get("HMR_JAX_TRACEBACK", "") not in ("", "0"):
                raise
            print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
            return status

    return wrapper
