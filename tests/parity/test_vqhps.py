"""VQ-HPS mesh regressor: parity with ``vqhps_regressor_small`` and the corrected token head."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.conversion import common, fixtures
from hmr_jax.conversion import vqhps as CV
from hmr_jax.models import vqhps as V

NAME = "vqhps_regressor_small"


@pytest.fixture(scope="module")
def loaded(parity_dir):
    raw, _ = common.load_torch_state_dict(parity_dir / f"{NAME}.pt")
    fixture = json.loads((parity_dir / f"{NAME}.json").read_text())
    assert [n for n in ("vqhps_hrnet", "vqhps_resnet") if CV.detect(list(raw), n)] == ["vqhps_hrnet"]
    state = common.StateDict(raw, what=NAME)
    variables, config = CV.convert(state, fixture, "vqhps_hrnet")
    state.finish()
    with np.load(parity_dir / f"{NAME}_io.npz") as z:
        io = {k: z[k] for k in z.files}
    return raw, variables, config, io, fixture


@pytest.fixture(scope="module")
def outputs(loaded, parity_dir, reference_dir):
    _, variables, config, io, fixture = loaded
    return fixtures.vqhps_outputs(variables, config, io, fixture, parity_dir,
                              connection_folder=reference_dir / "ConnectionMatrices")


def test_parity_every_output(loaded, outputs):
    io = loaded[3]
    names = sorted(k for k in io if k.startswith("out_"))
    assert len(names) == 16
    bad = {}
    for name in names:
        want, have = io[name], outputs[name]
        assert have.shape == want.shape, name
        if np.issubdtype(want.dtype, np.integer):
            if not np.array_equal(have, want):
                bad[name] = "ids differ"
        elif not common.max_relative_error(have, want) <= 1e-4:
            bad[name] = common.max_relative_error(have, want)
    assert not bad, bad


def test_config_from_fixture(loaded):
    cfg = loaded[2]["vqhps"]
    assert cfg["num_heads"] == 4 and cfg["model_dim"] == 64 and cfg["feedforward_dim"] == 128
    assert cfg["autoreg"] is True and cfg["pose_dim"] == 51 and cfg["dict_size"] == 512


def test_sine_position_encoding_layout():
    pe = V.sine_position_encoding(7, 7, 64)
    assert pe.shape == (49, 64)
    # y channels first: constant along a row of the grid; x channels: constant along a column
    grid = pe.reshape(7, 7, 64)
    assert np.allclose(grid[:, 0, :32], grid[:, 3, :32]) and not np.allclose(grid[0, :, :32], grid[3, :, :32])
    assert np.allclose(grid[0, :, 32:], grid[4, :, 32:])


def test_corrected_head_is_independent_of_the_batch(loaded, outputs):
    """Corrected: image b's logits equal the original's for a batch of that image alone."""
    _, variables, config, io, _ = loaded
    model = V.build_vqhps(config)
    feats = tuple(jnp.asarray(np.transpose(io[f"out_backbone_{k}_features"], (0, 2, 3, 1))) for k in ("rot", "pose"))
    pose = jnp.asarray(outputs["out_pose_init"])
    with jax.default_matmul_precision("highest"):
        run = jax.jit(lambda f, p: model.apply(variables, None, p, features=f)["logits"])
        corrected = np.asarray(run(feats, pose))
        alone = np.asarray(run(tuple(f[1:] for f in feats), pose[1:]))
    faithful = io["out_prob_indices"]
    # image 0 attends only to itself in the original too
    assert common.max_relative_error(corrected[0], faithful[0]) < 1e-4
    # image 1 saw image 0 in the original; corrected, it does not
    assert common.max_relative_error(corrected[1], faithful[1]) > 1e-2
    assert common.max_relative_error(corrected[1], alone[0]) < 1e-5


def test_rotcam_feat_keys_are_dropped_and_recorded(loaded):
    raw = dict(loaded[0])
    raw["rotcam_feat.0.weight"] = np.zeros((4, 4), np.float32)
    state = common.StateDict(raw)
    CV.convert(state, json.loads("{}"), "vqhps_hrnet")
    state.finish()  # no unexpected key
    assert state.ignored["rotcam_feat.0.weight"] == CV.ROTCAM_FEAT_REASON


def test_bad_checkpoints_are_rejected(loaded):
    raw = dict(loaded[0])
    mask_key = "transformer.dec_head.blocks.0.attn.mask"
    raw[mask_key] = np.ones_like(raw[mask_key])
    with pytest.raises(common.ConversionError, match="causal"):
        CV.convert(common.StateDict(raw), None, "vqhps_hrnet")
    with pytest.raises(common.ConversionError, match="not a vqhps_resnet"):
        CV.convert(common.StateDict(dict(loaded[0])), None, "vqhps_resnet")
    del raw["cam_predictor.bias"]
    raw[mask_key] = loaded[0][mask_key]
    state = common.StateDict(raw)
    CV.convert(state, None, "vqhps_hrnet")
    with pytest.raises(common.ConversionError, match="cam_predictor.bias"):
        state.finish()


def test_non_autoregressive_variant_uses_rotation_and_camera():
    """autoreg=False: logits = Dense([mesh features, rot6d, cam]) (the original's indices_regressor)."""
    import flax.linen as nn

    model = V.VQHPSRegressor(backbone_pose=nn.Dense(1), backbone_rot=nn.Dense(1), model_dim=16, num_heads=2,
                             feedforward_dim=32, dict_size=20, autoreg=False, dropout=0.0)
    feats = (jnp.ones((2, 7, 7, 6)), jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 6)))
    pose = jax.random.normal(jax.random.PRNGKey(1), (2, 51))
    variables = model.init(jax.random.PRNGKey(2), None, pose, features=feats)
    assert "indices_regressor" in variables["params"] and "head" not in variables["params"]
    assert variables["params"]["indices_regressor"]["kernel"].shape == (16 + 9, 20)
    out = model.apply(variables, None, pose, features=feats)
    assert out["logits"].shape == (2, 54, 20)
    other = model.apply(variables, None, pose + 1.0, features=feats)  # pose_init -> rot/cam -> logits
    assert np.abs(np.asarray(other["logits"] - out["logits"])).max() > 1e-4
