"""The command lines' one style: absl flags (``--name=value`` or ``--name value``, ``--flag`` /
``--noflag`` for booleans, ``--help``).

``train.py`` and ``evaluate.py`` define their flags on absl's global ``FLAGS`` and run under
``absl.app.run`` (ml_collections' ``--config=FILE.py:ARG --config.key=value`` overrides are absl
flags). Commands whose ``main(argv)`` is also called from Python (``convert_torch_weights.py``,
``sample.py``, ``python -m hmr_jax.demo``, ``python -m hmr_jax.app``, ``python -m data_prep.*``)
parse with :func:`parse_flags` (or :func:`parse_command`, which gives the values as attributes):
the same flag syntax on a fresh ``FlagValues`` per call, so one call's values never leak into the
next. A value that is several numbers is one comma-separated flag (:func:`define_floats`); a
list of names is ``flags.DEFINE_list`` (``--levels=1,2,1``) or, for paths,
``flags.DEFINE_multi_string`` (repeat the flag). Names of several words are spelled with hyphens
(``--num-samples``, ``--batch-size``) in every command; ``tests/unit/test_cli_style.py`` checks it.
"""
from __future__ import annotations

import sys
import types
from typing import Callable, Sequence

from absl import flags


def parse_flags(argv: Sequence[str] | None, define: Callable[[flags.FlagValues], None], program: str,
                doc: str = "") -> tuple[flags.FlagValues, list[str]] | None:
    """Parse ``argv`` (without the program name) with the flags ``define`` puts on a new ``FlagValues``.

    Args:
      argv: the arguments (None: ``sys.argv[1:]``).
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv or "--helpfull" in argv:
        print((doc.rstrip() + "\n\n" if doc else "") + "Flags:\n" + fv.get_help(include_special_flags=False))
        return None
    try:
        rest = fv([program, *argv])[1:]
    except flags.Error as e:
        raise ValueError(f"{e} (see {program} --help)") from None
    return fv, rest


def parse_command(argv: Sequence[str] | None, define: Callable[[flags.FlagValues], None], program: str,
                  doc: str = "", positional: str | None = None) -> types.SimpleNamespace | None:
    """:func:`parse_flags`, the values as attributes: ``--max-frames`` is ``args.max_frames``.

    Args:
      argv, define, program, doc: as :func:`parse_flags`.
      positional: the attribute that holds the positional arguments (a list, maybe empty); None:
        positional arguments are an error.
    Returns:
      The values, or None after ``--help`` printed the help.
    Raises:
      ValueError: an unknown flag, a bad value or an unexpected positional argument, naming it.
    """
    parsed = parse_flags(argv, define, program, doc)
    if parsed is None:
        return None
    fv, rest = parsed
    values = {name.replace("-", "_"): value for name, value in fv.flag_values_dict().items()}
    if positional is not None:
        values[positional] = rest
    elif rest:
        raise ValueError(f"unexpected argument{'s' if len(rest) > 1 else ''} {' '.join(rest)}: {program} takes "
                         f"only flags (see {program} --help)")
    return types.SimpleNamespace(**values)


class _FloatsParser(flags.ArgumentParser):
    """``count`` comma-separated numbers -> a tuple of floats."""

    def __init__(self, count: int, names: str):
        self.count, self.names = count, names

    def parse(self, argument) -> tuple[float, ...]:
        items = argument.split(",") if isinstance(argument, str) else list(argument)
        try:
            values = tuple(float(v) for v in items)
        except (TypeError, ValueError):
            values = ()
        if len(values) != self.count:
            raise ValueError(f"expected {self.names} ({self.count} comma-separated numbers), got {argument!r}")
        return values

    def flag_type(self) -> str:
        return f"{self.count} numbers"


def define_floats(name: str, default: Sequence[float], help: str, fv: flags.FlagValues,
                  names: str) -> None:
    """Declare a flag of ``len(default)`` numbers given comma-separated (``--name=A,B``): its value
    is a tuple of floats; ``names`` spells the expected form for messages and ``--help`` (``A,B``)."""
    caller = sys._getframe(1).f_globals.get("__name__")   # --help lists the flag with its command's others
    if caller == "__main__":   # absl's name for a script's own flags
        caller = sys.argv[0]
    flags.DEFINE(_FloatsParser(len(default), names), name, tuple(default), f"{names}: {help}",
                 serializer=flags.CsvListSerializer(","), flag_values=fv, module_name=caller)
