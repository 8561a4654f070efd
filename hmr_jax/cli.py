"""The command lines' one style: absl flags (``--name=value`` or ``--name value``, ``--help``).

``train.py`` and ``evaluate.py`` define their flags on absl's global ``FLAGS`` and run under
``absl.app.run`` (ml_collections' ``--config=FILE.py:ARG --config.key=value`` overrides are absl
flags). Commands whose ``main(argv)`` is also called from Python (``convert_torch_weights.py``,
``python -m hmr_jax.demo``) parse with :func:`parse_flags`: the same flag syntax on a fresh
``FlagValues`` per call, so one call's values never leak into the next.
"""
from __future__ import annotations

from typing import Callable, Sequence

from absl import flags


def parse_flags(argv: Sequence[str], define: Callable[[flags.FlagValues], None], program: str,
                doc: str = "") -> tuple[flags.FlagValues, list[str]] | None:
    """Parse ``argv`` (without the program name) with the flags ``define`` puts on a new ``FlagValues``.

    Args:
      argv: the arguments.
      define: ``define(fv)`` declares the flags (``flags.DEFINE_*(..., flag_values=fv)``).
      program: the program name, for messages.
      doc: printed before the flags by ``--help``.
    Returns:
      ``(flag values, positional arguments)``, or None after ``--help`` / ``-h`` printed the help.
    Raises:
      ValueError: an unknown flag or a bad value, naming it (one ``error:`` line at the command line).
    """
    fv = flags.FlagValues()
    define(fv)
    argv = list(argv)
    if "--help" in argv or "-h" in argv or "--helpfull" in argv:
        print((doc.rstrip() + "\n\n" if doc else "") + "Flags:\n" + fv.get_help(include_special_flags=False))
        return None
    try:
        rest = fv([program, *argv])[1:]
    except flags.Error as e:
        raise ValueError(f"{e} (see {program} --help)") from None
    return fv, rest
