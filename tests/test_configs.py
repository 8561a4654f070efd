"""Every config file loads; the spiral tokenizer config builds a model on the SMPL topology."""
import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import pytest

CONFIGS = [
    p
    for p in sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py"))
    if "def get_config" in p.read_text()  # skip shared helper modules such as train_mega_backbones
]


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path):
    cfg = _load(path)
    assert hasattr(cfg, "to_dict") or isinstance(cfg, dict)
    assert len(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg) > 0


def test_spiral_config_builds_a_tokenizer_on_the_reference_topology(reference_dir):
    from hmr_jax.models.mesh_vqvae import MeshVQVAE

    cfg = _load(pathlib.Path(__file__).resolve().parents[1] / "configs" / "train_mesh_vqvae_spiral.py")
    model_cfg = cfg.model
    assert model_cfg.conv == "spiral"
    model_cfg.autoencoder.connection_folder = str(reference_dir / "ConnectionMatrices")
    model_cfg.spiral.template = str(reference_dir / "template.ply")
    model = MeshVQVAE(model_cfg)
    meshes = jax.ShapeDtypeStruct((2, 6890, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, method="encode"), jax.random.key(0), meshes)
    assert "params" in variables and "vq_stats" in variables
    ids = jax.eval_shape(lambda v, m: model.apply(v, m, method="encode"), variables, meshes)
    assert ids.shape == (2, 54)
