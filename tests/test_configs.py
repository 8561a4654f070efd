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


CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
# (training config, released-model config it trains)
TRAINED_RELEASES = [("train_mega_pretrain", "mega_pretrained"), ("train_mega_hrnet", "mega_hrnet"),
                    ("train_mega_resnet", "mega_resnet"), ("train_mega_vit", "mega_vit"),
                    ("train_vqhps_hrnet", "vqhps_hrnet"), ("train_vqhps_resnet", "vqhps_resnet")]
# Keys a training config adds to the released model entries (not model sizes).
TRAINING_ONLY = {"masking", "mask_ratio"}


@pytest.mark.parametrize("train,released", TRAINED_RELEASES, ids=[t for t, _ in TRAINED_RELEASES])
def test_training_config_model_equals_the_released_config(train, released):
    t = _load(CONFIG_DIR / f"{train}.py").to_dict()
    r = _load(CONFIG_DIR / f"{released}.py").to_dict()
    sections = [k for k in ("mega", "vqhps", "backbone") if k in r]
    assert sections, released
    for section in sections:
        got = t[section]["model"] if section == "backbone" else dict(t[section])
        want = dict(r[section])
        if section == "mega":
            assert got.pop("masking") == "scheduled" and got.pop("mask_ratio") == 1.0
            if released == "mega_vit":
                # Documented exception: 196 in config_vit.yaml, 192 tokens from a 256 x 192 crop.
                assert want.pop("cond_length") == 196 and got.pop("cond_length") == 192
                assert t["backbone"]["cond_length"] == 192
        assert got == want, (train, section)
    if "backbone" in r:
        assert t["backbone"]["kind"] == released.split("_")[1]
        if "mega" in t and "cond_dim" in r["mega"]:
            assert t["backbone"]["cond_dim"] == r["mega"]["cond_dim"] == t["mega"]["cond_dim"]


def test_training_config_follows_an_edited_released_config(monkeypatch):
    """One source of truth: a change in configs/mega_hrnet.py reaches train_mega_hrnet.py."""
    from configs import train_mega_backbones

    original = train_mega_backbones.released_config

    def edited(name):
        c = original(name)
        if name == "mega_hrnet":
            c.mega.encoder_layer = 3
            c.backbone.width = 18
            c.mega.cond_dim = 270
        return c

    monkeypatch.setattr(train_mega_backbones, "released_config", edited)
    t = train_mega_backbones.mega_image_config("hrnet")
    assert t.mega.encoder_layer == 3 and t.mega.cond_dim == 270 and t.backbone.model.width == 18
    assert t.backbone.cond_dim == 270


def test_load_config_reads_a_file_and_names_a_missing_one(tmp_path):
    from hmr_jax.training.config import load_config

    root = pathlib.Path(__file__).resolve().parents[1]
    config = load_config(root / "configs" / "train_toy.py")
    assert config.stage and config.total_steps > 0
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_config(tmp_path / "nope.py")
