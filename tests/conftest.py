"""Shared pytest fixtures: where the parity fixtures and the reference mesh data live.

* ``HMR_JAX_PARITY_DIR`` (default ``../shared/parity`` beside the checkout): outputs of the
  original PyTorch code (see its README).
* ``HMR_JAX_REFERENCE_DIR`` (default ``../shared/reference``): the SMPL-topology template and
  the dfaust2 connection matrices.

Tests that need them use the ``parity_dir`` / ``reference_dir`` fixtures (and carry the
``parity`` marker). Where a folder is absent they skip with the reason, except under
``CI=true``, where absence is a failure: CI must never silently skip the parity checks.
"""
from __future__ import annotations

import os
import pathlib

import pytest

import hmr_jax  # noqa: F401  (sets XLA's CPU defaults before any test starts JAX)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _locate(env_var: str, default_name: str) -> pathlib.Path:
    value = os.environ.get(env_var)
    if value:
        return pathlib.Path(value).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / default_name).resolve()


def _require(env_var: str, default_name: str, must_contain: str) -> pathlib.Path:
    path = _locate(env_var, default_name)
    if not (path / must_contain).exists():
        reason = (
            f"{default_name} data not found at {path} (no {must_contain}); set {env_var} to the "
            f"folder that holds it"
        )
        if _on_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def parity_dir() -> pathlib.Path:
    """Folder of the PyTorch parity fixtures (``*.pt``, ``*_io.npz``, ``*.json``, ``manifests/``)."""
    return _require("HMR_JAX_PARITY_DIR", "parity", "README.md")


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
    """Folder with ``template.ply`` and ``ConnectionMatrices/`` (MeshConvolution's dfaust2 files)."""
    return _require("HMR_JAX_REFERENCE_DIR", "reference", "ConnectionMatrices")


def pytest_collection_modifyitems(config, items):
    # Tests that use the parity / reference fixtures are parity tests, marked or not.
    for item in items:
        if {"parity_dir", "reference_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.parity)
