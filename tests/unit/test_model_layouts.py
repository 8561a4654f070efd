"""The inference layout (hmr_jax.models.layouts.for_inference) runs the network of the checkpoint
layout: HRNet with unstacked weights (modules unrolled, blocks picked by lax.switch in a loop) and
MEGA with its all-masked encoder output precomputed give the checkpoint layout's outputs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.models import decoding
from hmr_jax.models import mega as M
from hmr_jax.models.backbones import hrnet
from hmr_jax.models.layouts import for_inference
from hmr_jax.models.mega import build_mega
from hmr_jax.models.vqhps import build_vqhps
from helpers.inference import random_like

SIZE = 64   # crop side (pixels): the smallest HRNet input (1/32 = 2 x 2 at the last branch)
TINY_HRNET = {"backbone": "hrnet", "width": 4, "head": "downsample_conv"}


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    return (jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
            and all(pa == pb and np.array_equal(np.asarray(x), np.asarray(y)) for (pa, x), (pb, y) in zip(la, lb)))


@pytest.fixture(scope="module")
def net():
    model = hrnet.HRNet(width=4)
    images = np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    variables = random_like(jax.eval_shape(model.init, jax.random.PRNGKey(0), images), seed=3)
    return model, variables, images


def test_unstacked_variables_have_the_layout_of_the_unscanned_module_and_stack_back(net):
    model, variables, images = net
    unstacked = hrnet.unstack_variables(variables)
    expected = jax.eval_shape(model.clone(scan_layers=False).init, jax.random.PRNGKey(0), images)
    assert jax.tree_util.tree_structure(unstacked) == jax.tree_util.tree_structure(expected)
    assert [x.shape for x in jax.tree_util.tree_leaves(unstacked)] == [
        x.shape for x in jax.tree_util.tree_leaves(expected)]
    params = unstacked["params"]
    assert "stage3" not in params and {"stage3_0", "stage3_3", "stage4_2"} <= set(params)
    kernel = variables["params"]["stage3"]["branch1"]["conv2"]["kernel"]
    assert kernel.shape[:2] == (4, 4)
    np.testing.assert_array_equal(params["stage3_2"]["branch1"]["block3"]["conv2"]["kernel"], kernel[2, 3])
    np.testing.assert_array_equal(params["stage3_2"]["fuse0_1"]["conv"]["kernel"],
                                  variables["params"]["stage3"]["fuse0_1"]["conv"]["kernel"][2])
    assert _leaves_equal(hrnet.stack_variables(unstacked), variables)


def test_unstacked_hrnet_gives_the_checkpoint_layout_features(net):
    model, variables, images = net
    unstacked = hrnet.unstack_variables(variables)
    fast = model.clone(scan_layers=False)
    ref = jax.jit(model.apply)(variables, images)
    out = jax.jit(fast.apply)(unstacked, images)
    assert out.shape == ref.shape == (2, SIZE // 32, SIZE // 32, 15 * 4)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    # the inference program reads each block's weights in place: no dynamic-slice of a stacked kernel
    hlo = jax.jit(fast.apply).lower(unstacked, images).compile().as_text()
    assert "conditional(" in hlo and "dynamic-slice" not in hlo
    stacked_hlo = jax.jit(model.apply).lower(variables, images).compile().as_text()
    assert "dynamic-slice" in stacked_hlo


def test_unstacked_hrnet_trains_like_the_checkpoint_layout(net):
    model, variables, images = net
    fast = model.clone(scan_layers=False)
    ref, ref_state = model.apply(variables, images, train=True, mutable=["batch_stats"])
    out, state = fast.apply(hrnet.unstack_variables(variables), images, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    stacked = hrnet.stack_variables(state)
    for a, b in zip(jax.tree_util.tree_leaves(stacked), jax.tree_util.tree_leaves(ref_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5 * (1 + float(np.abs(b).max())))


@pytest.fixture(scope="module")
def mega():
    config = {"mega": dict(seq_length=8, emb_dim=32, encoder_layer=2, encoder_head=2, decoder_layer=2,
                           decoder_head=2, num_embeddings=16, dim_tokens=16, cond_length=4, cond_dim=60,
                           cond_dropout=0.0),
              "backbone": TINY_HRNET}
    model = build_mega(config)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32),
                              jnp.zeros((1, 8), bool), jnp.zeros((1, SIZE, SIZE, 3)))
    variables = random_like(abstract, seed=5)
    images = np.random.default_rng(1).standard_normal((3, SIZE, SIZE, 3)).astype(np.float32)
    return model, variables, images


def test_for_inference_mega_gives_the_same_predictions(mega):
    model, variables, images = mega
    fast, fast_vars = for_inference(model, variables)
    assert fast.backbone.scan_layers is False and model.backbone.scan_layers is True
    assert M.CONSTANTS in fast_vars and "stage2_0" in fast_vars["params"]["backbone"]
    ref = decoding.mega_deterministic(model, variables, images=images)
    out = decoding.mega_deterministic(fast, fast_vars, images=images)
    for k in ("logits", "rot6d", "cam"):
        np.testing.assert_allclose(np.asarray(out[k]), np.asarray(ref[k]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(ref["tokens"]))
    key = jax.random.PRNGKey(7)
    ref = decoding.mega_generate(model, variables, images=images, key=key, num_samples=3, steps=3)
    out = decoding.mega_generate(fast, fast_vars, images=images, key=key, num_samples=3, steps=3)
    np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(ref["tokens"]))
    # already in the inference layout: returned as it is (not unstacked twice)
    again, again_vars = for_inference(fast, fast_vars)
    assert again is fast and _leaves_equal(again_vars, fast_vars)


def test_the_precomputed_encoding_is_the_encoder_output_and_is_used(mega):
    model, variables, _ = mega
    _, fast_vars = for_inference(model, variables)
    tokens, visible = jnp.zeros((2, 8), jnp.int32), jnp.zeros((2, 8), bool)
    encode = jax.jit(lambda v: model.apply(v, tokens, visible, method=lambda m, t, s: m.encoder(t, s, 0)))
    full = encode(variables)
    constant = fast_vars[M.CONSTANTS]["encoder"]["masked_output"]
    assert constant.shape == (32,)
    np.testing.assert_allclose(np.asarray(encode(fast_vars)), np.asarray(full), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(constant), np.asarray(full[0, 0]), rtol=1e-6, atol=1e-6)
    assert float(np.abs(full[:, 1:]).max()) == 0.0
    # the encoder returns the stored constant (a changed one shows in its output) ...
    changed = {**fast_vars, M.CONSTANTS: {"encoder": {"masked_output": constant + 1.0}}}
    np.testing.assert_allclose(np.asarray(encode(changed)[:, 0]), np.asarray(full[:, 0]) + 1.0, rtol=1e-5, atol=1e-5)
    # ... only when nothing is visible
    some = jnp.zeros((2, 8), bool).at[:, :3].set(True)
    enc3 = jax.jit(lambda v: model.apply(v, tokens, some, method=lambda m, t, s: m.encoder(t, s, 3)))
    np.testing.assert_array_equal(np.asarray(enc3(changed)), np.asarray(enc3(variables)))


def test_for_inference_unstacks_both_vqhps_backbones():
    config = {"vqhps": dict(model_dim=16, num_heads=2, feedforward_dim=16, num_enc_layers=1, num_dec_layers=1,
                            dict_size=16, num_tokens=8, dropout=0.0, autoreg=True, seq_len=4, pose_dim=51),
              "backbone": TINY_HRNET}
    model = build_vqhps(config)
    images = np.random.default_rng(2).standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    pose = np.zeros((2, 51), np.float32)
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, pose))
    variables = random_like(abstract, seed=9)
    fast, fast_vars = for_inference(model, variables)
    assert not fast.backbone_pose.scan_layers and not fast.backbone_rot.scan_layers
    assert M.CONSTANTS not in fast_vars
    for name in ("backbone_pose", "backbone_rot"):
        assert "stage4_2" in fast_vars["params"][name] and "stage4" not in fast_vars["params"][name]
    ref = decoding.vqhps_predict(model, variables, images, pose)
    out = decoding.vqhps_predict(fast, fast_vars, images, pose)
    for k in ("logits", "rot6d", "cam"):
        np.testing.assert_allclose(np.asarray(out[k]), np.asarray(ref[k]), rtol=1e-5, atol=1e-5)
