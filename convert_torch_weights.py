"""Convert the original PyTorch checkpoints (Mesh-VQ-VAE, backbones, VQ-HPS, MEGA) to Orbax.

Usage:
  python convert_torch_weights.py CHECKPOINT.pt --out DIR [--model KIND] [--config CFG.json]
  python convert_torch_weights.py CHECKPOINT.pt --verify NAME_io.npz [--atol 1e-4] [--out DIR]
  python convert_torch_weights.py --help      # every flag (absl flags, as train.py / evaluate.py)

The kind is detected from the state-dict keys unless ``--model`` names it (``--list`` shows the
kinds). What cannot be inferred from tensor shapes comes from a preset or ``--config`` (a JSON
object; a parity fixture's JSON works as it is). Missing or unexpected keys are an error that
lists them. ``--verify`` runs the converted model on the fixture's ``in_*`` arrays, compares
every ``out_*`` array, prints one JSON line of maximum relative errors (|diff| / max |ref|) and
exits with status 1 if any exceeds ``--atol``.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

from absl import flags

from hmr_jax.cli import parse_flags
from hmr_jax.conversion import common, fixtures, registry
from hmr_jax.errors import command_line


@dataclasses.dataclass
class _Args:
    checkpoint: str | None
    out: str | None
    model: str | None
    config: str | None
    verify: str | None
    set: list
    atol: float
    overwrite: bool
    list: bool


def _define(fv: flags.FlagValues) -> None:
    """This command's absl flags (parsed by :func:`hmr_jax.cli.parse_flags`)."""
    flags.DEFINE_string("out", None, "Folder to write the converted checkpoint to.", flag_values=fv)
    flags.DEFINE_string("model", None, "Checkpoint kind (default: detected from the keys; --list shows them).",
                        flag_values=fv)
    flags.DEFINE_string("config", None, "JSON file with the model config (or a parity fixture JSON).", flag_values=fv)
    flags.DEFINE_string("verify", None, "NAME_io.npz fixture to compare the converted model against.",
                        flag_values=fv)
    flags.DEFINE_multi_string(
        "set", [], "KEY=VALUE: override an entry of the completed model config (dotted key as in the written "
        "config.json; VALUE parsed as JSON, else kept as a string), e.g. "
        "--set autoencoder.connection_folder=/data/ConnectionMatrices; repeatable.", flag_values=fv)
    flags.DEFINE_float("atol", 1e-4, "Max relative error allowed by --verify.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --out if it exists.", flag_values=fv)
    flags.DEFINE_boolean("list", False, "List the checkpoint kinds and exit.", flag_values=fv)


def _parse(argv) -> _Args | None:
    """The arguments (the checkpoint is the one positional argument), or None after ``--help``."""
    parsed = parse_flags(argv, _define, "convert_torch_weights.py", __doc__)
    if parsed is None:
        return None
    fv, rest = parsed
    if len(rest) > 1:
        raise ValueError(f"one checkpoint at a time, got {rest} (see --help)")
    return _Args(rest[0] if rest else None, fv.out, fv.model, fv.config, fv.verify, list(fv.set), fv.atol,
                 fv.overwrite, fv.list)


def _apply_overrides(config: dict, overrides: list[str]) -> dict:
    """``config`` with each ``KEY=VALUE`` of ``--set`` applied (dotted keys walk sub-dicts)."""
    config = json.loads(json.dumps(config, default=common._json_default))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise common.ConversionError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise common.ConversionError(f"--set {key}: the config has no section {part!r}")
            node = node[part]
        node[leaf] = value
    return config


@command_line
def main(argv=None) -> int:
    """Command-line entry (``argv`` without the program name; default ``sys.argv[1:]``); returns
    the exit status (0 ok, 1 verification failed, 2 error)."""
    args = _parse(sys.argv[1:] if argv is None else list(argv))
    if args is None:
        return 0
    if args.list:
        for name, c in sorted(registry.load_all().items()):
            print(f"{name:24s} {c.description}")
        return 0
    if not args.checkpoint:
        raise common.ConversionError("give the checkpoint to convert (see --help)")
    if not args.out and not args.verify:
        raise common.ConversionError("nothing to do: give --out DIR and/or --verify IO.npz")
    user_config = None
    if args.config:
        try:
            user_config = json.loads(pathlib.Path(args.config).read_text())
        except (OSError, ValueError) as e:
            raise common.ConversionError(f"--config {args.config}: not a readable JSON file ({e})") from None
    conv = registry.convert_checkpoint(args.checkpoint, args.model, user_config)
    config = _apply_overrides(conv.config, args.set)
    result = {"model": conv.name}
    io = fixture = None
    if args.verify:  # read before writing anything
        if conv.converter.verify is None:
            raise common.ConversionError(f"--verify is not available for {conv.name}")
        io, fixture = fixtures.load_fixture(args.verify)
    if args.out:
        out = common.write_converted(args.out, conv.variables, config, conv.meta, overwrite=args.overwrite)
        result["out"] = str(out)
    if args.verify:
        io_path = pathlib.Path(args.verify)
        try:
            errors = conv.converter.verify(conv.variables, config, io, fixture, io_path.parent)
        except (ValueError, TypeError, IndexError, KeyError) as e:
            raise common.ConversionError(f"fixture {io_path} does not fit the {conv.name} model "
                                         f"({type(e).__name__}: {e})") from None
        worst = max(errors.values()) if errors else float("nan")
        result.update(max_rel_error=errors, worst=worst, atol=args.atol, ok=bool(worst <= args.atol))
    print(json.dumps(result))
    if args.verify and not result["ok"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
