"""Full-size backbones: converting the released checkpoints' key / shape lists gives exactly the
parameter trees of HRNet-w48, ResNet-50 and ViT-H.

Nothing full-size is allocated: the models are built abstractly with ``jax.eval_shape`` and the
fake checkpoints are zero-strided broadcasts of a single float (the converter only makes views).
"""
from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.conversion import backbones as conv_bb
from hmr_jax.conversion import common
from hmr_jax.models.backbones import build_backbone

# manifest -> (kind, prefixes, expected config items, input size (H, W), output shape)
CASES = {
    "pose_hrnet_w48": ("hrnet", [""], {"width": 48}, (224, 224), (7, 7, 720)),
    "mega_hrnet": ("hrnet", ["backbone."], {"width": 48}, (224, 224), (7, 7, 720)),
    "vqhps_hrnet": ("hrnet", ["backbone_pose.", "backbone_rot."], {"width": 48}, (224, 224), (7, 7, 720)),
    "mega_resnet": ("resnet50", ["backbone."], {"layers": [3, 4, 6, 3]}, (224, 224), (7, 7, 2048)),
    "vqhps_resnet": ("resnet50", ["backbone_pose.", "backbone_rot."], {"layers": [3, 4, 6, 3]}, (224, 224), (7, 7, 2048)),
    "vitpose_backbone": ("vit", [""], {"embed_dim": 1280, "depth": 32, "num_heads": 16, "pos_grid": [16, 12]}, (256, 192), (16, 12, 1280)),
    "mega_vit": ("vit", ["backbone."], {"embed_dim": 1280, "depth": 32, "pos_grid": [16, 12]}, (256, 192), (16, 12, 1280)),
}

_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "bool": np.bool_}


def _fake_state(manifest: dict) -> dict[str, np.ndarray]:
    """Key -> zero-strided array of the manifest's shape and dtype (no memory allocated)."""
    return {
        k: np.broadcast_to(_DTYPES.get(m["dtype"], np.float32)(0), tuple(m["shape"]))
        for k, m in manifest["state_dict"].items()
    }


@functools.lru_cache(maxsize=None)
def _abstract(cfg_json: str, h: int, w: int):
    """(abstract variables, abstract output) of the model a config describes, built once."""
    model = build_backbone(json.loads(cfg_json))
    images = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
    abstract = jax.eval_shape(model.init, jax.random.key(0), images)
    return abstract, jax.eval_shape(model.apply, abstract, images)


def _shapes(tree):
    return jax.tree.map(lambda a: (tuple(a.shape), jnp.dtype(a.dtype).name), tree)


@pytest.mark.parametrize("name", sorted(CASES))
def test_manifest_converts_to_the_eval_shape_tree(parity_dir, name):
    kind, prefixes, expected, (h, w), out_shape = CASES[name]
    manifest = json.loads((parity_dir / "manifests" / f"{name}.json").read_text())
    state = common.StateDict(_fake_state(manifest), what=name)
    for prefix in prefixes:
        variables, cfg = conv_bb.convert_backbone(state, kind, prefix, None)
        for key, value in expected.items():
            assert cfg[key] == value, (key, cfg[key])
        model_cfg = {k: v for k, v in cfg.items() if k not in ("initialised_layers", "initialisation")}
        abstract, out = _abstract(json.dumps(model_cfg, sort_keys=True), h, w)
        assert _shapes(variables) == _shapes(abstract)
        assert out.shape == (1, *out_shape)
    # Every backbone key is used or ignored with a reason; only the rest of the model is left.
    left = state.unused()
    assert not [k for k in left if any(k.startswith(p) for p in prefixes) or not any(prefixes)]
    if prefixes == [""]:
        state.finish()
    if kind == "hrnet":
        for p in prefixes:
            assert p + "final_layer.weight" in state.ignored
    if name == "pose_hrnet_w48":
        # The upstream file has no downsample_stage_*: initialised as the original's init_weights.
        assert cfg["initialised_layers"] == [
            "downsample_stage_1_0", "downsample_stage_1_1", "downsample_stage_1_2",
            "downsample_stage_2_0", "downsample_stage_2_1", "downsample_stage_3_0",
        ]


def test_released_vit_takes_256x192(parity_dir):
    """pos_embed has 193 entries: 16 x 12 patches + the class slot, i.e. 256 x 192 inputs."""
    manifest = json.loads((parity_dir / "manifests" / "vitpose_backbone.json").read_text())
    assert manifest["state_dict"]["pos_embed"]["shape"] == [1, 193, 1280]
    state = common.StateDict(_fake_state(manifest), what="vitpose")
    _, cfg = conv_bb.convert_backbone(state, "vit", "", None)
    assert cfg["input_size"] == [256, 192]
    model = build_backbone(cfg)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 256, 192, 3), jnp.float32))
    with pytest.raises(ValueError, match="patch grid"):
        jax.eval_shape(model.apply, abstract, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
