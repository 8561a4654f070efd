"""Registry of model converters, used by ``convert_torch_weights.py``.

A converter describes one checkpoint kind (``mesh_vqvae``, ``hrnet``, ``mega_cvqmae``, ...):

* ``name``: the kind, also written as ``config["model"]`` of the converted checkpoint;
* ``detect(keys) -> bool``: whether a state dict with these keys is of this kind;
* ``convert(state: StateDict, config: dict | None) -> (variables, config)``: Flax variables
  (every key used or explicitly ignored; ``state.finish()`` is called by the caller) and the
  complete model config (inferred from shapes, completed from ``config``);
* ``verify(variables, config, io: dict[str, np.ndarray], fixture: dict, fixture_dir) ->
  dict[str, float]``: runs the converted model on the fixture's ``in_*`` arrays and returns the
  maximum relative error of every ``out_*`` array (each one present must be produced).

Model families register themselves by adding their module to ``_MODULES``.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

CONVERTERS: dict[str, "Converter"] = {}

# Modules that call ``register`` on import, one per model family.
_MODULES: list[str] = [
    "hmr_jax.conversion.backbones",
    "hmr_jax.conversion.mesh_vqvae",
    "hmr_jax.conversion.mega",
    "hmr_jax.conversion.vqhps",
]


@dataclasses.dataclass(frozen=True)
class Converter:
    """One checkpoint kind: how to recognise, convert and verify it."""

    name: str
    detect: Callable[[list[str]], bool]
    convert: Callable[..., tuple[Any, dict]]
    verify: Callable[..., dict[str, float]] | None = None
    description: str = ""


def register(converter: Converter) -> Converter:
    """Add a converter to the registry (called at import time by each family module)."""
    CONVERTERS[converter.name] = converter
    return converter


def register_variants(variants, detector: Callable[[str], Callable[[list[str]], bool]],
                      convert: Callable[..., tuple[Any, dict]],
                      verify: Callable[..., dict[str, float]] | None = None) -> None:
    """Register one converter per ``(name, description)`` of a family sharing its functions.

    ``detector(name)`` gives the key test of that kind; ``convert(state, config, name)`` converts.
    """
    for name, description in variants:
        register(Converter(name=name, detect=detector(name),
                           convert=(lambda n: lambda state, config=None: convert(state, config, n))(name),
                           verify=verify, description=description))


def load_all() -> dict[str, Converter]:
    """Import every family module and return the registry."""
    for mod in _MODULES:
        importlib.import_module(mod)
    return CONVERTERS


def detect(keys: list[str]) -> list[str]:
    """Names of the converters whose ``detect`` accepts these state-dict keys."""
    return [name for name, c in load_all().items() if c.detect(keys)]


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
    from hmr_jax.conversion import common

    converters = load_all()
    raw, info = common.load_torch_state_dict(path)
    if name is None:
        found = detect(list(raw))
        if len(found) != 1:
            what = f"several kinds ({', '.join(found)})" if found else "no known kind"
            raise common.ConversionError(f"{path} matches {what}; name it with --model "
                                         f"(one of {', '.join(sorted(converters))})")
        name = found[0]
    if name not in converters:
        raise common.ConversionError(f"unknown --model {name!r}; known: {', '.join(sorted(converters))}")
    conv = converters[name]
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
