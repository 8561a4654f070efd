"""Layers point down: every import in the project goes to a package of the same or a lower layer.

The one table of layers (lowest first). A module belongs to the longest entry that prefixes its
dotted name. Imports inside functions count as much as those at the top of a module (a lazy
import is still a dependency). Tests may import anything and are not checked.
"""
from __future__ import annotations

import ast
import os
import pathlib
from helpers import REPO_ROOT

ROOT = REPO_ROOT

#: (layer name, module prefixes). Lowest first; an import may go to its own layer or below.
LAYERS = (
    # files / errors / safe reading / XLA set-up / the command lines' flag style: what every layer may use
    ("base", ("hmr_jax.files", "hmr_jax.errors", "hmr_jax.safe_read", "hmr_jax.runtime", "hmr_jax.cli")),
    ("geometry", ("hmr_jax.geometry",)),
    # meshes, body models and what is computed on meshes alone (drawing them, their errors)
    ("mesh / body", ("hmr_jax.mesh", "hmr_jax.body", "hmr_jax.render", "hmr_jax.metrics")),
    # Flax modules, and the released model sizes they are built with (configs/ but train_*.py)
    ("models", ("hmr_jax.models", "configs")),
    # PyTorch checkpoints in, records in, person boxes in; the one way to read model folders; the
    # stand-ins tests use for licensed files and datasets (hmr_jax.testing)
    ("conversion / data", ("hmr_jax.conversion", "hmr_jax.data", "hmr_jax.detection", "hmr_jax.checkpoints",
                           "hmr_jax.testing")),
    # what uses models on data; data_prep writes record datasets from the public sets
    ("training / evaluation / inference", ("hmr_jax.training", "hmr_jax.evaluation", "hmr_jax.inference",
                                           "hmr_jax.video", "data_prep")),
    # command lines and what only they read (the training configs, the demo, the app, benchmarks)
    ("command lines", ("train", "evaluate", "sample", "convert_torch_weights", "hmr_jax.demo", "hmr_jax.app",
                       "configs.train_", "benchmarks")),
)
#: top-level names of the project (imports of anything else are third-party)
PROJECT = ("hmr_jax", "data_prep", "configs", "benchmarks", "train", "evaluate", "sample",
           "convert_torch_weights")
SOURCES = ("hmr_jax", "data_prep", "configs", "benchmarks", "train.py", "evaluate.py", "sample.py",
           "convert_torch_weights.py")


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS` of a dotted module name (longest matching prefix), or None.

    A prefix ending in ``_`` matches names that start with it (``configs.train_`` covers
    ``configs.train_mega``); others match the module and its submodules. ``hmr_jax`` itself (its
    ``__init__``: the XLA set-up) is base.
    """
    if module == "hmr_jax":
        return 0
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            hit = module.startswith(p) if p.endswith("_") else module == p or module.startswith(p + ".")
            if hit and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    p = ROOT.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _imports(path: pathlib.Path, module: str):
    """(line, imported module) of every import statement of a file, relative ones resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            for a in node.names:  # `from hmr_jax import checkpoints` imports the module hmr_jax.checkpoints
                full = f"{base}.{a.name}"
                yield node.lineno, full if _is_module(full) else base


def _project_files():
    for s in SOURCES:
        p = ROOT / s
        if p.is_file():
            yield p
        elif p.is_dir():
            yield from sorted(p.rglob("*.py"))


def test_every_import_points_down_the_layers():
    unplaced, upward, checked = [], [], 0
    for path in _project_files():
        module = _module_name(path)
        own = layer_of(module)
        if own is None:
            unplaced.append(module)
            continue
        for line, target in _imports(path, module):
            if target.split(".")[0] not in PROJECT:
                continue
            checked += 1
            theirs = layer_of(target)
            if theirs is None:
                unplaced.append(target)
            elif theirs > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[own][0]}) imports {target} "
                              f"({LAYERS[theirs][0]})")
    assert not unplaced, f"modules in no layer (add them to LAYERS): {sorted(set(unplaced))}"
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)
    assert checked > 200  # the walk really read the project


def test_the_layer_table_places_the_packages_it_names():
    assert LAYERS[layer_of("hmr_jax.files")][0] == "base"
    assert layer_of("hmr_jax.models.mega") < layer_of("hmr_jax.conversion.mega")
    assert layer_of("configs.mega_hrnet") < layer_of("hmr_jax.conversion") < layer_of("configs.train_mega")
    assert layer_of("hmr_jax.training.trainer") == layer_of("hmr_jax.evaluation") == layer_of("hmr_jax.inference")
    assert layer_of("hmr_jax.demo") == layer_of("train") == len(LAYERS) - 1
    assert layer_of("hmr_jax.somethingnew") is None   # a new package must be placed on purpose
    # every package folder of hmr_jax is in the table
    for entry in os.scandir(ROOT / "hmr_jax"):
        if entry.is_dir() and (pathlib.Path(entry.path) / "__init__.py").is_file():
            assert layer_of(f"hmr_jax.{entry.name}") is not None, entry.name
