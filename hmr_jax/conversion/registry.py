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
