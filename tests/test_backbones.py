"""Backbones (HRNet, ResNet-50, ViTPose ViT) against the original PyTorch outputs.

Parity: every ``out_*`` array of ``hrnet_small`` / ``resnet_small`` / ``vit_small`` within a
relative error (max |diff| / max |ref|) of 1e-4 in float32. bfloat16: these randomly initialised
small networks amplify rounding a lot (HRNet width 2: rounding only the *weights* to bfloat16
moves its features by ~30 %), so a bfloat16 run must stay within twice the error that rounding
the weights alone to bfloat16 causes (plus the absolute bounds stated per test).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.conversion import backbones as conv_bb
from hmr_jax.conversion import common
from hmr_jax.models.backbones import build_backbone
from hmr_jax.models.backbones.layers import BatchNorm

RTOL = 1e-4


def _load(parity_dir, name):
    raw, _ = common.load_torch_state_dict(parity_dir / f"{name}.pt")
    with np.load(parity_dir / f"{name}_io.npz") as z:
        io = {k: z[k] for k in z.files}
    return raw, io


def _convert(raw, kind, config=None):
    state = common.StateDict(raw, what=kind)
    variables, cfg = conv_bb.convert_backbone(state, kind, "", config)
    state.finish()
    return variables, cfg, state


def _round_bf16(tree):
    return jax.tree.map(lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32)), tree)


# ----------------------------------------------------------------------------------------
# HRNet


@pytest.fixture(scope="module")
def hrnet(parity_dir):
    raw, io = _load(parity_dir, "hrnet_small")
    variables, cfg, state = _convert(raw, "hrnet")
    got = conv_bb.hrnet_outputs(variables, cfg, io["in_images"])
    return dict(raw=raw, io=io, variables=variables, cfg=cfg, state=state, got=got)


def test_hrnet_parity_every_feature_map(hrnet):
    io, got = hrnet["io"], hrnet["got"]
    outs = sorted(k for k in io if k.startswith("out_"))
    assert len(outs) == 13
    for name in outs:
        err = common.max_relative_error(got[name], io[name])
        assert err <= RTOL, f"{name}: relative error {err:.2e}"


def test_hrnet_config_and_output_shape(hrnet):
    cfg = hrnet["cfg"]
    assert cfg["width"] == 2 and cfg["head"] == "downsample_conv"
    # 15 x width channels at 224 / 32 = 7.
    assert hrnet["got"]["out_features"].shape == (2, 30, 7, 7)


def test_hrnet_final_layer_ignored_with_reason(hrnet):
    ignored = hrnet["state"].ignored
    assert "final_layer.weight" in ignored and "final_layer.bias" in ignored
    assert "unused" in ignored["final_layer.weight"]
    # Nothing but final_layer and the BN counters is ignored.
    others = [k for k in ignored if not k.startswith("final_layer.") and not k.endswith("num_batches_tracked")]
    assert others == []


def test_hrnet_missing_and_unexpected_keys_fail(hrnet):
    raw = dict(hrnet["raw"])
    del raw["stage3.1.branches.2.3.bn2.running_var"]
    raw["stage9.extra.weight"] = np.zeros((1,), np.float32)
    state = common.StateDict(raw, what="hrnet_small")
    conv_bb.convert_backbone(state, "hrnet", "", None)
    with pytest.raises(common.ConversionError) as e:
        state.finish()
    assert "stage3.1.branches.2.3.bn2.running_var" in str(e.value)
    assert "stage9.extra.weight" in str(e.value)


def test_hrnet_with_prefix_like_mega(hrnet):
    raw = {f"backbone.{k}": v for k, v in hrnet["raw"].items()}
    raw["decoder.head.weight"] = np.zeros((3, 3), np.float32)
    state = common.StateDict(raw, what="mega")
    variables, cfg = conv_bb.convert_backbone(state, "hrnet", "backbone.", None)
    assert state.unused() == ["decoder.head.weight"]
    np.testing.assert_array_equal(
        variables["params"]["stage4_2"]["fuse3_2_0"]["conv"]["kernel"],
        hrnet["variables"]["params"]["stage4_2"]["fuse3_2_0"]["conv"]["kernel"],
    )


def test_hrnet_upstream_pose_file_initialises_the_head(hrnet):
    # The upstream pose_hrnet_w48.pth has no downsample_stage_* and a 17-joint final_layer.
    raw = {k: v for k, v in hrnet["raw"].items() if not k.startswith("downsample_stage_")}
    raw["final_layer.weight"] = np.zeros((17, 2, 1, 1), np.float32)
    raw["final_layer.bias"] = np.zeros((17,), np.float32)
    variables, cfg, _ = _convert(raw, "hrnet")
    assert cfg["initialised_layers"][0] == "downsample_stage_1_0"
    assert len(cfg["initialised_layers"]) == 6
    k = variables["params"]["downsample_stage_1_0"]["conv"]["kernel"]
    assert k.shape == (3, 3, 2, 2) and 0 < np.std(k) < 0.01
    model = build_backbone(cfg)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert jax.tree.map(lambda a: a.shape, abstract) == jax.tree.map(lambda a: a.shape, variables)
    # head="none": the plain pose network (four branches), downsample layers not built.
    _, cfg_none, _ = _convert(raw, "hrnet", {"head": "none"})
    assert "initialised_layers" not in cfg_none
    outs = build_backbone(cfg_none).apply(
        _convert(raw, "hrnet", {"head": "none"})[0], jnp.zeros((1, 64, 64, 3))
    )
    assert [o.shape for o in outs] == [(1, 16, 16, 2), (1, 8, 8, 4), (1, 4, 4, 8), (1, 2, 2, 16)]


def test_hrnet_bfloat16_within_stated_tolerance(hrnet):
    io, variables, cfg = hrnet["io"], hrnet["variables"], hrnet["cfg"]
    x = np.transpose(io["in_images"], (0, 2, 3, 1))
    out16 = build_backbone(cfg, dtype=jnp.bfloat16).apply(variables, x)
    assert out16.dtype == jnp.bfloat16
    ref = np.transpose(io["out_features"], (0, 2, 3, 1))
    err16 = common.max_relative_error(np.asarray(out16, np.float32), ref)
    # Float32 compute with the weights rounded to bfloat16: the error the weights' rounding alone causes.
    out_w = build_backbone(cfg).apply(_round_bf16(variables), x)
    err_w = common.max_relative_error(np.asarray(out_w), ref)
    assert err16 <= 2 * err_w, (err16, err_w)
    assert err16 < 0.6


# ----------------------------------------------------------------------------------------
# BatchNorm against torch.nn.BatchNorm2d (training and inference modes)


def test_batchnorm_matches_torch_train_and_eval():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(1.5, 2.0, (4, 5, 6, 3)).astype(np.float32)  # NHWC
    tbn = torch.nn.BatchNorm2d(3, momentum=0.1)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        tbn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    variables = {
        "params": {"scale": np.array([0.5, 1.0, 2.0], np.float32), "bias": np.array([0.1, -0.2, 0.3], np.float32)},
        "batch_stats": {"mean": np.zeros(3, np.float32), "var": np.ones(3, np.float32)},
    }
    bn = BatchNorm()
    for step in range(2):
        tbn.train()
        want = tbn(torch.from_numpy(x.transpose(0, 3, 1, 2) + step)).detach().numpy().transpose(0, 2, 3, 1)
        got, upd = bn.apply(variables, x + step, train=True, mutable=["batch_stats"])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        variables = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
        # Running statistics: momentum 0.1 and the unbiased variance, as PyTorch.
        np.testing.assert_allclose(variables["batch_stats"]["mean"], tbn.running_mean.numpy(), rtol=1e-6)
        np.testing.assert_allclose(variables["batch_stats"]["var"], tbn.running_var.numpy(), rtol=1e-6)
    tbn.eval()
    want = tbn(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(bn.apply(variables, x, train=False), want, rtol=1e-5, atol=1e-5)
