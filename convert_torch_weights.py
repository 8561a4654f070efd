"""Convert the original PyTorch checkpoints (Mesh-VQ-VAE, backbones, VQ-HPS, MEGA) to Orbax.

Usage:
  python convert_torch_weights.py CHECKPOINT.pt --out DIR [--model KIND] [--config CFG.json]
  python convert_torch_weights.py CHECKPOINT.pt --verify NAME_io.npz [--atol 1e-4] [--out DIR]

The kind is detected from the state-dict keys unless ``--model`` names it (``--list`` shows the
kinds). What cannot be inferred from tensor shapes comes from a preset or ``--config`` (a JSON
object; a parity fixture's JSON works as it is). Missing or unexpected keys are an error that
lists them. ``--verify`` runs the converted model on the fixture's ``in_*`` arrays, compares
every ``out_*`` array, prints one JSON line of maximum relative errors (|diff| / max |ref|) and
exits with status 1 if any exceeds ``--atol``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from hmr_jax.conversion import common, registry


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="the original .pt/.pth file")
    p.add_argument("--out", help="folder to write the converted checkpoint to")
    p.add_argument("--model", help="checkpoint kind (default: detected from the keys)")
    p.add_argument("--config", help="JSON file with the model config (or a parity fixture JSON)")
    p.add_argument("--verify", help="NAME_io.npz fixture to compare the converted model against")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an entry of the completed model config (dotted key as in the written "
        "config.json; VALUE parsed as JSON, else kept as a string), e.g. "
        "--set autoencoder.connection_folder=/data/ConnectionMatrices; repeatable",
    )
    p.add_argument("--atol", type=float, default=1e-4, help="max relative error allowed by --verify")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--list", action="store_true", help="list the checkpoint kinds and exit")
    return p.parse_args(argv)


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


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    """Command-line entry; returns the exit status (0 ok, 1 verification failed, 2 error)."""
    args = _parse(argv)
    converters = registry.load_all()
    if args.list:
        for name, c in sorted(converters.items()):
            print(f"{name:24s} {c.description}")
        return 0
    if not args.checkpoint:
        return _fail("give the checkpoint to convert (see --help)")
    if not args.out and not args.verify:
        return _fail("nothing to do: give --out DIR and/or --verify IO.npz")
    try:
        raw, info = common.load_torch_state_dict(args.checkpoint)
        name = args.model
        if name is None:
            found = registry.detect(list(raw))
            if len(found) != 1:
                what = f"several kinds ({', '.join(found)})" if found else "no known kind"
                return _fail(
                    f"{args.checkpoint} matches {what}; name it with --model "
                    f"(one of {', '.join(sorted(converters))})"
                )
            name = found[0]
        if name not in converters:
            return _fail(f"unknown --model {name!r}; known: {', '.join(sorted(converters))}")
        conv = converters[name]
        user_config = json.loads(pathlib.Path(args.config).read_text()) if args.config else None
        state = common.StateDict(raw, what=f"{args.checkpoint} as {name}")
        variables, config = conv.convert(state, user_config)
        state.finish()
        config = _apply_overrides(dict(config, model=name), args.set)
        meta = dict(info, model=name, ignored_keys=state.ignored)
        result = {"model": name}
        if args.out:
            out = common.write_converted(args.out, variables, config, meta, overwrite=args.overwrite)
            result["out"] = str(out)
        if args.verify:
            if conv.verify is None:
                return _fail(f"--verify is not available for {name}")
            io_path = pathlib.Path(args.verify)
            if not io_path.is_file():
                return _fail(f"fixture {io_path} does not exist")
            fixture_json = io_path.with_name(io_path.name.replace("_io.npz", ".json"))
            fixture = json.loads(fixture_json.read_text()) if fixture_json.is_file() else {}
            with np.load(io_path) as z:
                io = {k: z[k] for k in z.files}
            errors = conv.verify(variables, config, io, fixture, io_path.parent)
            worst = max(errors.values()) if errors else float("nan")
            result.update(max_rel_error=errors, worst=worst, atol=args.atol, ok=bool(worst <= args.atol))
        print(json.dumps(result))
        if args.verify and not result["ok"]:
            return 1
        return 0
    except common.ConversionError as e:
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
