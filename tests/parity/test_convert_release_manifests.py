"""Every released checkpoint converts structurally: the seven manifests of ``../shared/parity/manifests``.

For each manifest (full-size key / shape / dtype list of a released file) a fake state dict of
zero-strided arrays (``np.broadcast_to``: no memory) goes through the registry exactly as
``convert_torch_weights.py`` does: kind detected from the keys, every key used or ignored with a
reason, then the variables must have exactly the shapes of the model the returned config builds
(``jax.eval_shape`` of ``init``: nothing full-size is allocated) and that model's abstract
outputs the expected shapes.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.conversion import common, registry
from hmr_jax.training.config import load_config

_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "bool": np.bool_}

# manifest -> (kind, expected config entries)
CASES = {
    "mesh_vqvae_54": ("mesh_vqvae", {}),
    "mega_pretrained": ("mega_pretrained", {"mega": {"emb_dim": 1024, "encoder_layer": 12, "decoder_layer": 4,
                                                      "encoder_head": 4, "num_embeddings": 512, "dim_tokens": 512}}),
    "mega_hrnet": ("mega_hrnet", {"mega": {"emb_dim": 1024, "cond_dim": 720, "cond_length": 49}}),
    "mega_resnet": ("mega_resnet", {"mega": {"emb_dim": 1024, "cond_dim": 2048, "cond_length": 49}}),
    "mega_vit": ("mega_vit", {"mega": {"emb_dim": 1024, "cond_dim": 1280, "cond_length": 196}}),
    "vqhps_hrnet": ("vqhps_hrnet", {"vqhps": {"model_dim": 512, "num_heads": 8, "feedforward_dim": 1024,
                                              "dict_size": 512, "autoreg": True, "pose_dim": 51}}),
    "vqhps_resnet": ("vqhps_resnet", {"vqhps": {"model_dim": 512, "num_heads": 8, "pose_dim": 51}}),
}


def _fake_state(manifest: dict) -> dict[str, np.ndarray]:
    """Key -> zero-strided array of the manifest's shape and dtype (nothing allocated)."""
    return {k: np.broadcast_to(_DTYPES.get(m["dtype"], np.float32)(0), tuple(m["shape"]))
            for k, m in manifest["state_dict"].items()}


def _shapes(tree) -> dict:
    return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _abstract_model(kind: str, config: dict, reference_dir):
    """(abstract variables, abstract outputs) of the model ``config`` describes."""
    s = jax.ShapeDtypeStruct
    if kind == "mesh_vqvae":
        from hmr_jax.conversion.mesh_vqvae import build_model

        config = json.loads(json.dumps(config))
        config["autoencoder"]["connection_folder"] = str(reference_dir / "ConnectionMatrices")
        model = build_model(config)
        args, kwargs = (s((1, 6890, 3), jnp.float32),), {}
    elif kind.startswith("mega"):
        from hmr_jax.models.mega import build_mega

        model = build_mega(config)
        args, kwargs = (s((1, 54), jnp.int32), s((1, 54), jnp.bool_)), {}
        if "backbone" in config:
            h, w = config["image_size"]
            args = args + (s((1, h, w, 3), jnp.float32),)  # CVQMAE(tokens, visible, images)
    else:
        from hmr_jax.models.vqhps import build_vqhps

        model = build_vqhps(config)
        h, w = config["image_size"]
        args, kwargs = (s((1, h, w, 3), jnp.float32), s((1, 51), jnp.float32)), {}
    abstract = jax.eval_shape(lambda *a: model.init(jax.random.PRNGKey(0), *a, **kwargs), *args)
    out = jax.eval_shape(lambda v, *a: model.apply(v, *a, **kwargs), abstract, *args)
    return abstract, out


@pytest.mark.parametrize("name", sorted(CASES))
def test_release_manifest_converts(parity_dir, reference_dir, name):
    kind, expected = CASES[name]
    manifest = json.loads((parity_dir / "manifests" / f"{name}.json").read_text())
    raw = _fake_state(manifest)
    for key in [k for k in raw if k.endswith("attn.mask")]:  # VQ-HPS's causal-mask buffer: real content
        raw[key] = np.tril(np.ones(raw[key].shape[-2:], np.float32)).reshape(raw[key].shape)
    assert registry.detect(list(raw)) == [kind]
    converter = registry.load_all()[kind]
    state = common.StateDict(raw, what=name)
    variables, config = converter.convert(state, None)
    state.finish()  # every key used or ignored with a reason
    for section, items in expected.items():
        for key, value in items.items():
            assert config[section][key] == value, (section, key, config[section][key])
    abstract, out = _abstract_model(kind, config, reference_dir)
    want, got = _shapes(abstract), _shapes(variables)
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: got[k] for k in want if got[k] != want[k]} == {}
    n_params = sum(int(np.prod(v)) for k, v in got.items() if k.startswith("['params']"))
    if kind.startswith("mega"):
        assert out[0].shape == (1, 54, 512) if isinstance(out, tuple) else out.shape == (1, 54, 512)
        if isinstance(out, tuple):
            assert out[1].shape == (1, 6) and out[2].shape == (1, 3)
    elif kind.startswith("vqhps"):
        assert out["logits"].shape == (1, 54, 512) and out["rot6d"].shape == (1, 6) and out["cam"].shape == (1, 3)
    # parameter count: the original's, minus what the originals build but never use
    unused = sum(int(np.prod(raw[k].shape)) for k, why in state.ignored.items()
                 if "final_layer" in k and not k.endswith("num_batches_tracked"))
    if kind != "mesh_vqvae":
        assert n_params == manifest["parameter_count"]["parameters (model.parameters(), unique)"] - unused


def _plain(x):
    """Lists / tuples as lists, recursively (configs use tuples, JSON lists)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


@pytest.mark.parametrize("name", sorted(set(CASES) - {"mesh_vqvae_54"}))
def test_release_config_file_matches_the_converted_release(parity_dir, name):
    """configs/<name>.py describes exactly the model the released weights convert to."""
    cfg = _plain(load_config(name).to_dict())
    manifest = json.loads((parity_dir / "manifests" / f"{name}.json").read_text())
    raw = _fake_state(manifest)
    for key in [k for k in raw if k.endswith("attn.mask")]:
        raw[key] = np.tril(np.ones(raw[key].shape[-2:], np.float32)).reshape(raw[key].shape)
    _, converted = registry.load_all()[name].convert(common.StateDict(raw), None)
    converted = _plain(converted)
    assert cfg["model"] == name
    for section in ("mega", "vqhps", "backbone", "image_size"):
        if section in converted:
            want = converted[section]
            got = cfg[section]
            if isinstance(want, dict):
                got = {k: v for k, v in got.items() if k in want or k == "cond_dropout"}
                want = dict(want, **({"cond_dropout": 0.0} if "cond_dropout" in got else {}))
            assert got == want, section


def test_no_memory_is_allocated_for_the_biggest_release(parity_dir):
    """The converted mega_vit tree (837 M parameters) stays views of zero-strided arrays."""
    manifest = json.loads((parity_dir / "manifests" / "mega_vit.json").read_text())
    state = common.StateDict(_fake_state(manifest), what="mega_vit")
    variables, _ = registry.load_all()["mega_vit"].convert(state, None)
    leaves = jax.tree_util.tree_leaves(variables)
    owned = sum(x.nbytes for x in leaves if isinstance(x, np.ndarray) and x.base is None and x.size > 1)
    assert sum(x.size for x in leaves) > 800e6
    assert owned < 50e6
