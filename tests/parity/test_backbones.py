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
from hmr_jax.conversion import common, fixtures
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


def _jit_apply(model, variables, x):
    """Inference under jit (the scanned HRNet stages compile once instead of op by op)."""
    return jax.jit(lambda v, x: model.apply(v, x))(variables, x)


def _round_bf16(tree):
    return jax.tree.map(lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32)), tree)


# ----------------------------------------------------------------------------------------
# HRNet


@pytest.fixture(scope="module")
def hrnet(parity_dir):
    raw, io = _load(parity_dir, "hrnet_small")
    variables, cfg, state = _convert(raw, "hrnet")
    got = fixtures.hrnet_outputs(variables, cfg, io["in_images"])
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
        variables["params"]["stage4"]["fuse3_2_0"]["conv"]["kernel"],
        hrnet["variables"]["params"]["stage4"]["fuse3_2_0"]["conv"]["kernel"],
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
    outs = _jit_apply(build_backbone(cfg_none), _convert(raw, "hrnet", {"head": "none"})[0], jnp.zeros((1, 64, 64, 3)))
    assert [o.shape for o in outs] == [(1, 16, 16, 2), (1, 8, 8, 4), (1, 4, 4, 8), (1, 2, 2, 16)]


def test_hrnet_bfloat16_within_stated_tolerance(hrnet):
    io, variables, cfg = hrnet["io"], hrnet["variables"], hrnet["cfg"]
    x = np.transpose(io["in_images"], (0, 2, 3, 1))
    out16 = _jit_apply(build_backbone(cfg, dtype=jnp.bfloat16), variables, x)
    assert out16.dtype == jnp.bfloat16
    ref = np.transpose(io["out_features"], (0, 2, 3, 1))
    err16 = common.max_relative_error(np.asarray(out16, np.float32), ref)
    # Float32 compute with the weights rounded to bfloat16: the error the weights' rounding alone causes.
    out_w = _jit_apply(build_backbone(cfg), _round_bf16(variables), x)
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


# ----------------------------------------------------------------------------------------
# ResNet-50 (fixture: ResNet-50 widths, one block per stage, float16-exact weights)


@pytest.fixture(scope="module")
def resnet(parity_dir):
    raw, io = _load(parity_dir, "resnet_small")
    variables, cfg, state = _convert(raw, "resnet50")
    return dict(raw=raw, io=io, variables=variables, cfg=cfg, state=state)


def test_resnet_parity(resnet):
    io = resnet["io"]
    got = fixtures.resnet_outputs(resnet["variables"], resnet["cfg"], io["in_images"])
    assert resnet["cfg"]["layers"] == [1, 1, 1, 1]
    for name in ("out_features", "out_features_avgpool"):
        err = common.max_relative_error(got[name], io[name])
        assert err <= RTOL, f"{name}: relative error {err:.2e}"
    # global_pool=True (VQ-HPS backbone_rot) gives the pooled vector directly.
    x = np.transpose(io["in_images"], (0, 2, 3, 1))
    pooled = build_backbone(dict(resnet["cfg"], global_pool=True)).apply(resnet["variables"], x)
    assert common.max_relative_error(np.asarray(pooled), io["out_features_avgpool"]) <= RTOL


def test_resnet_width_scales_every_stage():
    """``width`` (64 = ResNet-50) sets the stem and stage widths: 32 * width output features."""
    import jax

    x = np.zeros((1, 64, 64, 3), np.float32)
    for width in (8, 64):
        model = build_backbone(dict(backbone="resnet50", layers=[1, 1, 1, 1], width=width))
        variables = model.init(jax.random.key(0), x)
        assert model.apply(variables, x).shape == (1, 2, 2, 32 * width)
        assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 3, width)
        assert variables["params"]["layer4_0"]["conv3"]["kernel"].shape[-1] == 32 * width


def test_resnet_torchvision_layout_gives_the_same_variables(resnet):
    names = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
    raw = {}
    for k, v in resnet["raw"].items():
        head, rest = k.split(".", 1)
        raw[f"{names[head]}.{rest}"] = v
    raw["fc.weight"] = np.zeros((1000, 2048), np.float32)
    raw["fc.bias"] = np.zeros((1000,), np.float32)
    assert conv_bb.detect(list(raw), "resnet50") and conv_bb.detect(list(resnet["raw"]), "resnet50")
    variables, cfg, state = _convert(raw, "resnet50")
    assert "fc.weight" in state.ignored
    same = jax.tree.map(np.array_equal, variables, resnet["variables"])
    assert all(jax.tree.leaves(same))


def test_resnet_bfloat16_within_stated_tolerance(resnet):
    io, variables, cfg = resnet["io"], resnet["variables"], resnet["cfg"]
    x = np.transpose(io["in_images"], (0, 2, 3, 1))
    ref = np.transpose(io["out_features"], (0, 2, 3, 1))
    out16 = build_backbone(cfg, dtype=jnp.bfloat16).apply(variables, x)
    assert out16.dtype == jnp.bfloat16
    err16 = common.max_relative_error(np.asarray(out16, np.float32), ref)
    out_w = build_backbone(cfg).apply(_round_bf16(variables), x)
    err_w = common.max_relative_error(np.asarray(out_w), ref)
    assert err16 <= max(2 * err_w, 0.02), (err16, err_w)
    assert err16 < 0.05


# ----------------------------------------------------------------------------------------
# ViT (fixture: width 64, depth 2, 4 heads, 256 x 192 input)


@pytest.fixture(scope="module")
def vit(parity_dir):
    raw, io = _load(parity_dir, "vit_small")
    variables, cfg, state = _convert(raw, "vit", {"num_heads": 4})
    return dict(raw=raw, io=io, variables=variables, cfg=cfg, state=state)


def test_vit_parity_every_array(vit):
    io, cfg = vit["io"], vit["cfg"]
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["pos_grid"]) == (64, 2, 4, [16, 12])
    assert cfg["input_size"] == [256, 192]
    got = fixtures.vit_outputs(vit["variables"], cfg, io["in_images"])
    outs = sorted(k for k in io if k.startswith("out_"))
    assert len(outs) == 6
    for name in outs:
        err = common.max_relative_error(got[name], io[name])
        assert err <= RTOL, f"{name}: relative error {err:.2e}"


def test_vit_rejects_other_grids_unless_interpolating(vit):
    cfg, variables = vit["cfg"], vit["variables"]
    x = jnp.zeros((1, 224, 224, 3))
    with pytest.raises(ValueError, match="256x192"):
        build_backbone(cfg).apply(variables, x)
    out = build_backbone(dict(cfg, interpolate_pos_embed=True)).apply(variables, x)
    assert out.shape == (1, 14, 14, 64)


def test_vit_pos_embed_interpolation_matches_torch_bicubic(vit):
    torch = pytest.importorskip("torch")
    from hmr_jax.models.backbones import interpolate_pos_embed

    pos = vit["variables"]["params"]["pos_embed"]
    got = np.asarray(interpolate_pos_embed(pos, (16, 12), (14, 14)))
    grid = torch.from_numpy(pos[:, 1:]).reshape(1, 16, 12, -1).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, size=(14, 14), mode="bicubic", align_corners=False)
    want = want.permute(0, 2, 3, 1).reshape(1, 196, -1).numpy()
    np.testing.assert_allclose(got[:, 1:], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[:, :1], pos[:, :1])
    # Converting with an explicit target grid stores the resized embedding.
    variables, cfg, _ = _convert(vit["raw"], "vit", {"num_heads": 4, "interpolate_to": [14, 14]})
    assert cfg["pos_grid"] == [14, 14] and cfg["input_size"] == [224, 224]
    np.testing.assert_allclose(variables["params"]["pos_embed"], got, rtol=1e-6, atol=1e-7)


def test_vit_drop_path_is_per_sample_and_only_in_training():
    from hmr_jax.models.backbones.vit import Block

    block = Block(num_heads=2, drop_path=0.5)
    x = jax.random.normal(jax.random.key(0), (256, 5, 8))
    variables = block.init(jax.random.key(1), x)
    np.testing.assert_array_equal(block.apply(variables, x), block.apply(variables, x, train=False))
    out = np.asarray(block.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)}))
    same = np.asarray(out == np.asarray(x)).reshape(256, -1)
    # A sample whose two residual branches are both dropped is returned unchanged, entirely:
    # the Bernoulli draw is per sample (probability 0.5 * 0.5), never per token or channel.
    whole = same.all(axis=1)
    assert np.array_equal(same.any(axis=1), whole)
    assert 30 < whole.sum() < 100


def test_vit_drop_path_rates_rise_from_zero(vit):
    # Rates rise linearly from 0 (first block) to drop_path_rate (last block): in training the
    # first block is deterministic, the last one is not.
    cfg, variables = dict(vit["cfg"], drop_path_rate=0.9), vit["variables"]
    x = np.transpose(vit["io"]["in_images"], (0, 2, 3, 1))
    model = build_backbone(cfg)
    _, ev = model.apply(variables, x, mutable=["intermediates"])
    _, tr = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)}, mutable=["intermediates"])
    ev, tr = ev["intermediates"], tr["intermediates"]
    np.testing.assert_array_equal(tr["block00_out"][0], ev["block00_out"][0])
    assert not np.allclose(tr["block01_out"][0], ev["block01_out"][0])


def test_vit_bfloat16_within_stated_tolerance(vit):
    io, variables, cfg = vit["io"], vit["variables"], vit["cfg"]
    x = np.transpose(io["in_images"], (0, 2, 3, 1))
    ref = np.transpose(io["out_features"], (0, 3, 2, 1)).transpose(0, 2, 1, 3)
    out16 = build_backbone(cfg, dtype=jnp.bfloat16).apply(variables, x)
    assert out16.dtype == jnp.bfloat16
    assert jax.tree.leaves(jax.tree.map(lambda a: a.dtype == np.float32, variables))
    err16 = common.max_relative_error(np.asarray(out16, np.float32), ref)
    assert err16 < 0.03, err16


def test_hrnet_training_mode_updates_every_running_statistic(hrnet):
    variables, cfg = hrnet["variables"], hrnet["cfg"]
    x = np.transpose(hrnet["io"]["in_images"], (0, 2, 3, 1))
    model = build_backbone(cfg)
    fn = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    out, upd = fn(variables, x)
    assert out.shape == (2, 7, 7, 30) and np.isfinite(np.asarray(out)).all()
    new, old = upd["batch_stats"], variables["batch_stats"]
    assert jax.tree.structure(new) == jax.tree.structure(old)
    # First BatchNorm: running = 0.9 * running + 0.1 * batch statistic of conv1's output.
    k = variables["params"]["conv1"]["kernel"]
    y = jax.lax.conv_general_dilated(
        jnp.asarray(x), jnp.asarray(k), (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision="highest",
    )
    n = y.shape[0] * y.shape[1] * y.shape[2]
    np.testing.assert_allclose(new["bn1"]["mean"], 0.9 * old["bn1"]["mean"] + 0.1 * y.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        new["bn1"]["var"], 0.9 * old["bn1"]["var"] + 0.1 * y.var((0, 1, 2)) * n / (n - 1), rtol=1e-4, atol=1e-5
    )
    # Every statistic moved, including each of the scanned modules / blocks of the stages.
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).reshape(a.shape[0], -1).max(1) > 0
                         if a.ndim > 1 else np.abs(np.asarray(a) - b).max() > 0, new, old)
    assert all(np.all(m) for m in jax.tree.leaves(moved))
