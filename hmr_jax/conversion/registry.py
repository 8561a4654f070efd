"""Registry of model converters, used by ``convert_torch_weights.py``.

A converter describes one checkpoint kind (``mesh_vqvae``, ``hrnet``, ``mega_hrnet``, ...):

* ``name``: the kind, also written as ``config["model"]`` of the converted checkpoint;
* ``detect(keys) -> bool``: whether a state dict with these keys is of this kind;
* ``convert(state: StateDict, config: dict | None) -> (variables, config)``: Flax variables
  (every key used or explicitly ignored; ``state.finish()`` is called by the caller) and the
  complete model config (inferred from shapes, completed from ``config``);
* ``verify(variables, config, io: dict[str, np.ndarray], fixture: dict, fixture_dir) ->
  dict[str, float]``: runs the converted model on the fixture's ``in_*`` arrays and returns the
  maximum relative error of every ``out_*`` array (each one present must be produced).

The table below is the one list of kinds: the family modules (``backbones``, ``mesh_vqvae``,
``mega``, ``vqhps``) map the keys, :mod:`hmr_jax.conversion.fixtures` runs the fixtures.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

from hmr_jax.conversion import backbones, common, fixtures, mega, mesh_vqvae, vqhps


@dataclasses.dataclass(frozen=True)
class Converter:
    """One checkpoint kind: how to recognise, convert and verify it."""

    name: str
    detect: Callable[[list[str]], bool]
    convert: Callable[..., tuple[Any, dict]]
    verify: Callable[..., dict[str, float]] | None = None
    description: str = ""


def _family(module, verify) -> list[Converter]:
    """One converter per kind of a family module (its ``KINDS``, ``detect(keys, name)``,
    ``convert(state, config, name)``)."""
    return [Converter(name=name, detect=functools.partial(module.detect, name=name),
                      convert=functools.partial(module.convert, name=name), verify=verify, description=description)
            for name, description in module.KINDS.items()]


CONVERTERS: dict[str, Converter] = {c.name: c for c in [
    *_family(backbones, fixtures.verify_backbone),
    Converter(name=mesh_vqvae.NAME, detect=mesh_vqvae.detect, convert=mesh_vqvae.convert,
              verify=fixtures.verify_mesh_vqvae, description=mesh_vqvae.DESCRIPTION),
    *_family(mega, fixtures.verify_mega),
    *_family(vqhps, fixtures.verify_vqhps),
]}


def load_all() -> dict[str, Converter]:
    """The registry: checkpoint kind -> converter."""
    return CONVERTERS


def detect(keys: list[str]) -> list[str]:
    """Names of the converters whose ``detect`` accepts these state-dict keys."""
    return [name for name, c in CONVERTERS.items() if c.detect(keys)]


@dataclasses.dataclass
class Converted:
    """A converted checkpoint: its kind, Flax variables, model config and provenance."""

    name: str
    variables: Any
    config: dict
    meta: dict
    converter: Converter


def convert_checkpoint(path, name: str | None = None, config: dict | None = None) -> Converted:
    """Read a ``torch.save`` file and convert it (the kind detected from its keys unless ``name``).

    Every key must be used or explicitly ignored. A tensor of the wrong shape, dtype or rank
    anywhere in a converter ends in ``ConversionError`` naming the file and the key read last.

    Args:
      path: the ``.pt`` / ``.pth`` file.
      name: checkpoint kind (``CONVERTERS``), or None to detect it.
      config: user model config completing what shapes do not tell (``--config``), or None.
    Raises:
      ConversionError: unreadable file, unknown / ambiguous kind, keys or shapes that do not fit.
    """
    raw, info = common.load_torch_state_dict(path)
    if name is None:
        found = detect(list(raw))
        if len(found) != 1:
            what = f"several kinds ({', '.join(found)})" if found else "no known kind"
            raise common.ConversionError(f"{path} matches {what}; name it with --model "
                                         f"(one of {', '.join(sorted(CONVERTERS))})")
        name = found[0]
    if name not in CONVERTERS:
        raise common.ConversionError(f"unknown --model {name!r}; known: {', '.join(sorted(CONVERTERS))}")
    conv = CONVERTERS[name]
    state = common.StateDict(raw, what=f"{path} as {name}")
    try:
        variables, model_config = conv.convert(state, config)
    except common.ConversionError as e:
        if str(path) in str(e):
            raise
        raise common.ConversionError(f"{path} as {name}: {e}") from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, ZeroDivisionError,
            OverflowError) as e:
        where = f" (last key read: {state.last_key}, shape {tuple(state.state[state.last_key].shape)}, " \
                f"dtype {state.state[state.last_key].dtype})" if state.last_key else ""
        raise common.ConversionError(
            f"{path} as {name}: the tensors do not fit the model{where}: {type(e).__name__}: {e}; check that "
            "--model / --config describe this checkpoint") from None
    try:
        state.finish()
    except common.ConversionError as e:  # the state's name holds the path
        raise common.ConversionError(str(e)) from None
    meta = dict(info, model=name, ignored_keys=state.ignored)
    return Converted(name, variables, dict(model_config, model=name), meta, conv)
