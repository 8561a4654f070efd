"""MEGA (VQMAE / CVQMAE): parity with the original PyTorch fixtures, masking, error handling.

Parity: every ``out_*`` array of ``mega_vqmae_small`` and ``mega_cvqmae_small`` (explicit-mask
pass, deterministic path with its off-by-one mask, greedy and recorded-noise ``generate``, the
mesh decoded with ``mesh_vqvae.pt``) reproduced in faithful mode: floats within 1e-4 of the
array's max, integers identical.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.conversion import common, fixtures
from hmr_jax.conversion import mega as CM
from hmr_jax.models import mega as M

RTOL = 1e-4


def _load(parity_dir, name, kind):
    raw, _ = common.load_torch_state_dict(parity_dir / f"{name}.pt")
    fixture = json.loads((parity_dir / f"{name}.json").read_text())
    found = [n for n in ("mega_pretrained", "mega_hrnet", "mega_resnet", "mega_vit") if CM.detect(list(raw), n)]
    assert found == [kind], f"{name} detected as {found}"
    state = common.StateDict(raw, what=name)
    variables, config = CM.convert(state, fixture, kind)
    state.finish()
    with np.load(parity_dir / f"{name}_io.npz") as z:
        io = {k: z[k] for k in z.files}
    return variables, config, io, fixture


@pytest.fixture(scope="module")
def vqmae(parity_dir):
    variables, config, io, fixture = _load(parity_dir, "mega_vqmae_small", "mega_pretrained")
    got = fixtures.mega_outputs(variables, config, io, fixture, parity_dir)
    return variables, config, io, got


@pytest.fixture(scope="module")
def cvqmae(parity_dir, reference_dir):
    variables, config, io, fixture = _load(parity_dir, "mega_cvqmae_small", "mega_hrnet")
    got = fixtures.mega_outputs(variables, config, io, fixture, parity_dir,
                             connection_folder=reference_dir / "ConnectionMatrices")
    return variables, config, io, got


def _check_all(io, got):
    names = sorted(k for k in io if k.startswith("out_"))
    assert names, "fixture without outputs"
    bad = {}
    for name in names:
        want, have = io[name], np.asarray(got[name])
        assert have.shape == want.shape, f"{name}: shape {have.shape} != {want.shape}"
        if np.issubdtype(want.dtype, np.integer):
            if not np.array_equal(have, want):
                bad[name] = f"{int((have != want).sum())} ids differ"
        else:
            err = common.max_relative_error(have, want)
            if not err <= RTOL:
                bad[name] = err
    assert not bad, bad


def test_vqmae_parity_every_output(vqmae):
    _, _, io, got = vqmae
    _check_all(io, got)


def test_cvqmae_parity_every_output(cvqmae):
    _, _, io, got = cvqmae
    _check_all(io, got)


def test_config_read_from_weights(vqmae, cvqmae):
    assert vqmae[1]["mega"]["emb_dim"] == 64 and vqmae[1]["mega"]["encoder_layer"] == 2
    assert "backbone" not in vqmae[1]
    c = cvqmae[1]
    assert c["mega"]["cond_dim"] == 30 and c["mega"]["cond_length"] == 49
    assert c["backbone"]["backbone"] == "hrnet"


def test_masked_tokens_do_not_leak(vqmae):
    """Logits may depend only on visible tokens: changing masked ones changes nothing."""
    variables, config, io, _ = vqmae
    model = M.build_mega(config)
    tokens = jnp.asarray(io["in_tokens"], jnp.int32)
    visible = jnp.asarray(io["in_mask_visible"] > 0)
    other = jnp.where(visible, tokens, (tokens + 7) % 512)
    a = model.apply(variables, tokens, visible)
    b = model.apply(variables, other, visible)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)
    # ...while changing a visible token does change them.
    flip = jnp.where(visible, (tokens + 7) % 512, tokens)
    assert np.abs(np.asarray(model.apply(variables, flip, visible)) - np.asarray(a)).max() > 1e-3


def test_faithful_cond_length_mismatch_is_an_error(cvqmae):
    variables, config, io, got = cvqmae
    model = M.build_mega(config)
    cond = jnp.asarray(np.transpose(got["out_cond_features"], (0, 2, 3, 1)).reshape(2, 49, 30))
    tokens = jnp.zeros((2, 54), jnp.int32)
    visible = jnp.zeros((2, 54), bool)
    short = cond[:, :45]
    with pytest.raises(ValueError, match="cond_length"):
        model.apply(variables, tokens, visible, cond=short, faithful=True)
    logits, _, _ = model.apply(variables, tokens, visible, cond=short)  # corrected: real count
    assert logits.shape == (2, 54, 512)


def test_condition_features_from_backbone_match_direct_condition(cvqmae):
    variables, config, io, got = cvqmae
    model = M.build_mega(config)
    images = jnp.asarray(np.transpose(io["in_images"], (0, 2, 3, 1)))
    tokens = jnp.asarray(io["in_tokens"], jnp.int32)
    visible = jnp.asarray(io["in_mask_visible"] > 0)
    with jax.default_matmul_precision("highest"):
        a = model.apply(variables, tokens, visible, images=images)
        cond = model.apply(variables, images, method=M.CVQMAE.condition)
        b = model.apply(variables, tokens, visible, cond=cond)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)


def test_training_masks():
    key = jax.random.PRNGKey(3)
    m = M.random_visible_mask(key, 4, 54, 0.75)
    assert m.shape == (4, 54) and set(np.asarray(m.sum(-1)).tolist()) == {int(54 * 0.25)}
    assert not np.array_equal(np.asarray(m[0]), np.asarray(m[1]))
    assert not np.asarray(M.scheduled_visible_mask(key, 4, 54, fixed_ratio=1.0)).any()
    assert np.asarray(M.scheduled_visible_mask(key, 4, 54, fixed_ratio=0.0)).all()
    counts = {int(M.scheduled_visible_mask(jax.random.PRNGKey(i), 2, 54).sum(-1)[0]) for i in range(20)}
    assert len(counts) > 3 and all(0 <= c <= 54 for c in counts)


def test_decoder_mask_out_faithful_and_corrected():
    visible = np.zeros((2, 6))
    visible[:, :2] = 1
    backward, eff = M.original_inference_shuffle(visible, np.random.RandomState(0))
    np.testing.assert_array_equal(eff, visible > 0)
    corrected = np.asarray(M.decoder_mask_out(visible))
    np.testing.assert_array_equal(corrected, 1 - visible)
    faithful = np.asarray(M.decoder_mask_out(visible, backward, faithful=True))
    # exactly one masked token per row is reported visible: the first masked one in shuffle order
    np.testing.assert_array_equal((corrected - faithful).sum(-1), [1, 1])
    assert ((faithful == 0) == (backward <= 2)).all()


def test_original_shuffle_uses_row0_count():
    visible = np.array([[1, 1, 0, 0], [1, 1, 1, 0]])
    _, eff = M.original_inference_shuffle(visible, np.random.RandomState(1))
    assert eff.sum(-1).tolist() == [2, 2]  # row 1 loses one visible token, as in the original
    assert (eff <= visible).all()


def test_token_embedding_from_codebook(vqmae):
    variables = vqmae[0]
    codebook = np.random.RandomState(0).randn(512, 64).astype(np.float32)
    new = M.token_embedding_from_codebook(variables, codebook)
    np.testing.assert_array_equal(np.asarray(new["params"]["encoder"]["token_embedding"]["embedding"]), codebook)
    with pytest.raises(ValueError, match="codebook shape"):
        M.token_embedding_from_codebook(variables, codebook[:, :9])


def test_wrong_kind_is_rejected(parity_dir):
    raw, _ = common.load_torch_state_dict(parity_dir / "mega_vqmae_small.pt")
    with pytest.raises(common.ConversionError, match="backbone"):
        CM.convert(common.StateDict(raw), None, "mega_hrnet")
    raw, _ = common.load_torch_state_dict(parity_dir / "hrnet_small.pt")
    with pytest.raises(common.ConversionError, match="not a MEGA checkpoint"):
        CM.convert(common.StateDict(raw), None, "mega_pretrained")


def test_cli_writes_a_checkpoint_that_reloads(parity_dir, tmp_path, vqmae, capsys):
    import convert_torch_weights

    out = tmp_path / "mega_pretrained"
    rc = convert_torch_weights.main([str(parity_dir / "mega_vqmae_small.pt"), "--config",
                                     str(parity_dir / "mega_vqmae_small.json"), "--out", str(out)])
    assert rc == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == "mega_pretrained"
    variables, config = common.read_converted(out, expected_model="mega_pretrained")
    meta = json.loads((out / "conversion.json").read_text())
    assert meta["source"].endswith("mega_vqmae_small.pt") and meta["container_keys"][0] == "model"
    model = M.build_mega(config)
    _, _, io, got = vqmae
    with jax.default_matmul_precision("highest"):
        logits = model.apply(variables, jnp.asarray(io["in_tokens"], jnp.int32), jnp.asarray(io["in_mask_visible"] > 0))
    assert common.max_relative_error(np.asarray(logits), io["out_logits"]) < 1e-4
    with pytest.raises(common.ConversionError, match="mega_hrnet"):
        common.read_converted(out, expected_model="mega_hrnet")


def test_condition_dropout_and_bfloat16(cvqmae):
    variables, config, io, got = cvqmae
    cond = jnp.asarray(np.transpose(got["out_cond_features"], (0, 2, 3, 1)).reshape(2, 49, 30))
    dropping = M.CVQMAE(**dict(config["mega"], cond_dropout=1.0))
    emb = dropping.apply(variables, cond, jax.random.PRNGKey(0), method=M.CVQMAE.embed_condition)
    assert not np.asarray(emb).any()  # every condition dropped
    kept = dropping.apply(variables, cond, method=M.CVQMAE.embed_condition)  # no key: inference
    assert np.asarray(kept).any()
    # bfloat16 computation: same argmax tokens almost everywhere, logits within bf16 precision
    tokens = jnp.asarray(io["in_tokens"], jnp.int32)
    visible = jnp.asarray(io["in_mask_visible"] > 0)
    f32 = M.build_mega(config).apply(variables, tokens, visible, cond=cond)[0]
    bf16 = M.build_mega(config, dtype=jnp.bfloat16).apply(variables, tokens, visible, cond=cond)[0]
    assert bf16.dtype == jnp.float32
    assert common.max_relative_error(np.asarray(bf16), np.asarray(f32)) < 5e-2
    assert (np.argmax(bf16, -1) == np.argmax(f32, -1)).mean() > 0.9
