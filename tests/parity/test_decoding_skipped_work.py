"""Work the decoders skip or share changes no output.

* A transformer block asked for some query positions returns the full block's output there;
  one given its attention inputs precomputed (``project_only`` rows) returns its own output.
* MEGA's decoder projects the first block's rows that are repeated (a condition shared by the
  hypotheses of an image) or constant (the masked tokens) once: the same logits.
* MEGA's decoder computes its last block only where logits are read (the mesh tokens, or the
  still-masked positions while decoding stochastically): the same logits as the full pass.
* The stochastic decoding (corrected mode, recorded noise) gives exactly the tokens of a plain
  step-by-step reference that computes every logit of every position with :func:`mega_forward`
  and applies the documented sampling rule.
"""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.conversion import common
from hmr_jax.conversion import mega as CM
from hmr_jax.models import decoding as D
from hmr_jax.models import mega as M
from hmr_jax.models.transformer import Block


@pytest.fixture(scope="module")
def cvqmae(parity_dir):
    raw, _ = common.load_torch_state_dict(parity_dir / "mega_cvqmae_small.pt")
    fixture = json.loads((parity_dir / "mega_cvqmae_small.json").read_text())
    state = common.StateDict(raw)
    variables, config = CM.convert(state, fixture, "mega_hrnet")
    state.finish()
    with np.load(parity_dir / "mega_cvqmae_small_io.npz") as z:
        cond = np.transpose(z["out_cond_features"], (0, 2, 3, 1)).reshape(2, 49, 30)
    return M.build_mega(config), variables, jnp.asarray(cond)


def test_block_queries_equal_the_full_block():
    block = Block(num_heads=4, mlp_dim=64)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 11, 16))
    variables = block.init(jax.random.PRNGKey(1), x)
    full = np.asarray(block.apply(variables, x))
    np.testing.assert_allclose(np.asarray(block.apply(variables, x, queries=slice(4, None))), full[:, 4:],
                               rtol=1e-5, atol=1e-6)
    idx = np.array([[0, 5, 9], [10, 2, 2], [7, 1, 3]])
    got = np.asarray(block.apply(variables, x, queries=jnp.asarray(idx)))
    np.testing.assert_allclose(got, np.take_along_axis(full, idx[..., None], axis=1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="causal"):
        Block(num_heads=4, mlp_dim=64, causal=True).apply(variables, x, queries=slice(1, None))


def test_block_with_precomputed_attention_inputs_equals_the_block():
    block = Block(num_heads=4, mlp_dim=64)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 11, 16))
    variables = block.init(jax.random.PRNGKey(1), x)
    full = np.asarray(block.apply(variables, x))
    # rows projected in pieces (as the decoder does), then passed back
    qkv = jnp.concatenate([block.apply(variables, x[:, :4], project_only=True),
                           block.apply(variables, x[:, 4:], project_only=True)], axis=1)
    assert qkv.shape == (3, 11, 48)
    np.testing.assert_allclose(np.asarray(block.apply(variables, x, qkv=qkv)), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(block.apply(variables, x, qkv=qkv, queries=slice(6, None))), full[:, 6:],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        block.apply(variables, x, qkv=qkv[:, :5])


def test_decoder_shared_and_constant_rows_give_the_same_logits(cvqmae):
    """One condition for 3 consecutive rows and the masked rows' table (``num_visible``) against
    every row projected, at exactly ``num_visible`` visible tokens per row, fewer (the training
    buckets), and none (the deterministic mode)."""
    model, variables, cond = cvqmae
    rng = np.random.default_rng(1)
    n = 3
    emb = model.apply(variables, cond, method=M.CVQMAE.embed_condition)  # (2, L, C)
    emb_rows = jnp.repeat(emb, n, axis=0)
    tokens = jnp.asarray(rng.integers(0, 512, (2 * n, 54)), jnp.int32)
    for counts, num_visible in (([7] * 6, 7), ([7, 3, 0, 7, 5, 1], 7), ([0] * 6, 0)):
        visible = np.zeros((2 * n, 54), bool)
        for row, k in enumerate(counts):
            visible[row, rng.permutation(54)[:k]] = True
        visible = jnp.asarray(visible)
        plain = np.asarray(model.apply(variables, tokens, visible, emb_rows, method=M.CVQMAE.predict_tokens))
        shared = np.asarray(model.apply(variables, tokens, visible, emb, num_visible=num_visible,
                                        method=M.CVQMAE.predict_tokens))
        np.testing.assert_allclose(shared, plain, rtol=1e-5, atol=1e-5)
        assert np.array_equal(shared.argmax(-1), plain.argmax(-1))
    with pytest.raises(ValueError, match="consecutive"):
        model.apply(variables, tokens[:5], visible[:5], emb, method=M.CVQMAE.predict_tokens)


def test_decoder_positions_give_the_full_logits_there(cvqmae):
    model, variables, cond = cvqmae
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 512, (2, 54)), jnp.int32)
    visible = jnp.asarray(rng.random((2, 54)) < 0.4)
    emb = model.apply(variables, cond, method=M.CVQMAE.embed_condition)
    full = np.asarray(model.apply(variables, tokens, visible, emb, method=M.CVQMAE.predict_tokens))
    assert full.shape == (2, 54, model.dim_tokens)
    positions = np.stack([np.flatnonzero(~np.asarray(v))[:10] for v in visible])
    part = np.asarray(model.apply(variables, tokens, visible, emb, positions=jnp.asarray(positions),
                                  method=M.CVQMAE.predict_tokens))
    np.testing.assert_allclose(part, np.take_along_axis(full, positions[..., None], axis=1), rtol=1e-5, atol=1e-5)


def _reference_generate(model, variables, cond, noise_logits, noise_conf, num_samples, steps):
    """MEGA's corrected stochastic decoding written plainly: full logits every step (mega_forward)."""
    seq = model.seq_length
    n = cond.shape[0] * num_samples
    cond_rows = jnp.repeat(cond, num_samples, axis=0)
    patches = np.zeros((n, seq), np.int32)
    visible = np.zeros((n, seq), bool)
    history = []
    for s in range(steps):
        logits = np.asarray(D.mega_forward(model, variables, patches, visible, cond=cond_rows)["logits"])
        sampled = np.argmax(logits + noise_logits[s], axis=-1)
        sampled_logit = np.take_along_axis(logits, sampled[..., None], axis=-1)[..., 0]
        sampled = np.where(visible, patches, sampled)
        confidence = np.where(visible, np.inf, sampled_logit) + noise_conf[s]
        count = (~visible).sum(-1)
        mask_len = math.floor(seq * math.cos((s + 1) / steps * math.pi / 2))
        m = np.zeros(n, int) if s == steps - 1 else np.maximum(1, np.minimum(count - 1, mask_len))
        rank = np.argsort(np.argsort(confidence, axis=-1, kind="stable"), axis=-1, kind="stable")
        masking = rank < m[:, None]
        patches = np.where(masking, 0, sampled).astype(np.int32)
        visible = ~masking
        history.append(patches)
    return np.stack(history)


def test_stochastic_tokens_equal_a_full_logit_reference(cvqmae):
    """Every step's tokens, 2 images x 3 hypotheses, 5 steps (the last included), recorded noise."""
    model, variables, cond = cvqmae
    steps, n = 5, 3
    rng = np.random.default_rng(3)
    noise_logits = rng.gumbel(size=(steps, 2 * n, 54, model.dim_tokens)).astype(np.float32)
    noise_conf = rng.gumbel(size=(steps, 2 * n, 54)).astype(np.float32)
    got = D.mega_generate(model, variables, cond=cond, key=jax.random.PRNGKey(0), num_samples=n, steps=steps,
                          noise=(noise_logits, noise_conf), return_steps=True)
    want = _reference_generate(model, variables, cond, noise_logits, noise_conf, n, steps)
    np.testing.assert_array_equal(np.asarray(got["step_tokens"]).reshape(steps, 2 * n, 54), want)
    assert len({tuple(t) for t in want[-1].tolist()}) > 1  # the noise made the hypotheses differ
