"""MEGA's training masking: the host-drawn visible count, the encoder lengths it is rounded up
to (one compiled train step each) and the encoder run on the gathered, padded visible tokens,
which must give the logits and gradients of the full computation."""
from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hmr_jax.models import mega as M
from hmr_jax.training.stages import Stage, StepDraws
from hmr_jax.training.stages.mega import _MaskingMixin


def _expected_rows(lengths, seq, n=20000):
    u = (np.arange(n) + 0.5) / n
    counts = np.array([M.scheduled_visible_count(x, seq) for x in u])
    return np.mean([min(length for length in lengths if length >= c) + 1 for c in counts])


def test_visible_count_is_the_originals_schedule():
    for u in np.linspace(0, 0.999, 37):
        ratio = math.cos(u * math.pi * 0.5)  # the original's cosine_schedule(rand_time)
        assert M.scheduled_mask_ratio(u) == ratio
        assert M.scheduled_visible_count(u, 54) == int(54 * (1 - ratio))
    assert M.scheduled_visible_count(0.0, 54) == 0 and M.scheduled_visible_count(0.9999, 54) == 53


@pytest.mark.parametrize("seq,count", [(10, 3), (12, 2), (9, 4)])
def test_visible_buckets_are_the_best_lengths(seq, count):
    best = M.visible_buckets(seq, count)
    assert list(best) == sorted(best) and best[-1] == seq and len(best) == count
    # brute force over every set of lengths ending at seq
    brute = min(_expected_rows(c + (seq,), seq) for c in itertools.combinations(range(seq), count - 1))
    assert _expected_rows(best, seq) == pytest.approx(brute, rel=1e-9)


def test_four_buckets_halve_the_encoder_rows():
    lengths = M.visible_buckets(54, 4)
    assert lengths == (6, 20, 36, 54)
    rows = _expected_rows(lengths, 54)
    assert 26 < rows < 28                       # against 55 for every position
    assert rows > _expected_rows(M.visible_buckets(54, 6), 54) > 20.1
    assert M.visible_buckets(54, 0) == ()


def test_mask_has_the_drawn_count_in_every_row():
    for k in (0, 5, 23, 54):
        vis = np.asarray(M.scheduled_visible_mask(jax.random.key(k), 6, 54, num_visible=jnp.int32(k)))
        assert (vis.sum(-1) == k).all()
    # the positions come from the key: two keys, different positions
    a = M.scheduled_visible_mask(jax.random.key(0), 1, 54, num_visible=20)
    b = M.scheduled_visible_mask(jax.random.key(1), 1, 54, num_visible=20)
    assert (np.asarray(a) != np.asarray(b)).any()


class _Stage(_MaskingMixin):
    """The MEGA stages' masking alone (no tokenizer or model)."""

    step_draws = Stage.step_draws

    def __init__(self, **mega):
        self.config = ml_collections.ConfigDict(
            {"mega": {**dict(seq_length=54, masking="scheduled", mask_ratio=1.0), **mega}})


def test_draws_pick_the_smallest_length_holding_the_count():
    stage = _Stage(visible_buckets=4)
    seen = set()
    for u in np.linspace(0, 0.999, 200):
        d = stage.draws_at(u)
        count = int(d.values["num_visible"])
        assert count == M.scheduled_visible_count(u, 54)
        assert d.program == min(n for n in (6, 20, 36, 54) if n >= count)
        seen.add(d.program)
    assert seen == {6, 20, 36, 54}
    assert _Stage(visible_buckets=0).draws_at(0.5).program is None   # every position, one program
    fixed = _Stage(masking="random", mask_ratio=0.75).draws_at(0.3)
    assert fixed == StepDraws(program=int(54 * 0.25))


def test_step_draws_depend_on_seed_and_step_only():
    stage = _Stage(visible_buckets=4)
    first = [stage.step_draws(s, 7) for s in range(400)]
    assert first == [_Stage(visible_buckets=4).step_draws(s, 7) for s in range(400)]
    assert first != [stage.step_draws(s, 8) for s in range(400)]
    counts = np.array([int(d.values["num_visible"]) for d in first])
    # the cosine schedule: mean 54 (1 - 2 / pi) - 1/2 = 19.1 visible tokens, P(count <= 13) = 0.47
    assert abs(counts.mean() - 19.15) < 2.0 and abs(np.mean(counts <= 13) - 0.469) < 0.08


@pytest.fixture(scope="module")
def small_mega():
    model = M.VQMAE(seq_length=12, emb_dim=32, encoder_layer=2, encoder_head=4, decoder_layer=2,
                    decoder_head=4, num_embeddings=16, dim_tokens=16)
    tokens = jax.random.randint(jax.random.key(1), (5, 12), 0, 16)
    variables = model.init(jax.random.key(0), tokens, jnp.ones((5, 12), bool))
    return model, variables, tokens


@pytest.mark.parametrize("count", [0, 3, 7])
def test_padded_encoder_gives_the_full_logits_and_gradients(small_mega, count):
    model, variables, tokens = small_mega
    visible = M.scheduled_visible_mask(jax.random.key(count), 5, 12, num_visible=count)

    def loss(params, length):
        logits = model.apply({"params": params}, tokens, visible, length)
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], -1)[..., 0]
        return jnp.sum(jnp.where(visible, 0.0, ce)), logits

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (ref, ref_logits), ref_grads = grad(variables["params"], None)
    for length in sorted({count, max(count, 8), 12}):  # exact, padded, every position gathered
        (val, logits), grads = grad(variables["params"], length)
        masked = ~np.asarray(visible)
        np.testing.assert_allclose(np.asarray(logits)[masked], np.asarray(ref_logits)[masked], rtol=1e-5, atol=1e-5)
        assert float(val) == pytest.approx(float(ref), rel=1e-5)
        for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
            r = np.asarray(r)
            np.testing.assert_allclose(np.asarray(g), r, rtol=1e-4, atol=1e-5 * np.abs(r).max() + 1e-7)
    # a length shorter than a row's visible count drops tokens: the logits change
    if count >= 3:
        short = model.apply(variables, tokens, visible, count - 2)
        assert not np.allclose(np.asarray(short)[~np.asarray(visible)], np.asarray(ref_logits)[~np.asarray(visible)],
                               atol=1e-4)
