"""The train step applies AdamW exactly as optax does, and leaves the whole state unchanged (but
counted) when the loss is not finite or the stage marks the batch invalid."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hmr_jax.training.stages.base import LossOutput
from hmr_jax.training.trainer import make_train_step


class _Quadratic:
    """A stand-in stage: loss = mean((w x - y)^2) (+ NaN / invalid on request); a running count
    in ``model_state`` stands for batch statistics."""

    def loss(self, params, model_state, frozen, batch, rng, step, draws):
        pred = batch["x"] @ params["w"] + params["b"]
        loss = jnp.mean((pred - batch["y"]) ** 2) + batch["nan"]
        new_state = {"count": model_state["count"] + 1.0}
        return loss, LossOutput(terms={"mse": loss}, model_state=new_state, valid=batch["valid"])


def _state(tx):
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
            "model_state": {"count": jnp.zeros(())}, "nonfinite": jnp.zeros((), jnp.int32),
            "first_nonfinite": jnp.full((), -1, jnp.int32)}


def _batch(nan=False, valid=True):
    rng = np.random.default_rng(1)
    return {"x": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32),
            "y": jnp.asarray(rng.standard_normal((4, 2)), jnp.float32),
            "nan": jnp.float32(np.nan if nan else 0.0), "valid": jnp.asarray(valid)}


def _close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_a_good_step_is_optax_adamw():
    tx = optax.adamw(1e-2, b1=0.9, b2=0.95, weight_decay=0.05)
    step = jax.jit(make_train_step(_Quadratic(), tx, seed=0), donate_argnums=(0,))
    state = _state(tx)
    ref_params, ref_opt = state["params"], state["opt_state"]
    for _ in range(3):
        grads = jax.grad(lambda p: _Quadratic().loss(p, {"count": 0.0}, None, _batch(), None, 0, None)[0])(ref_params)
        updates, ref_opt = tx.update(grads, ref_opt, ref_params)
        ref_params = optax.apply_updates(ref_params, updates)
    for _ in range(3):
        state, metrics = step(state, None, _batch())
    assert int(state["step"]) == 3 and float(metrics["applied"]) == 1.0
    assert float(state["model_state"]["count"]) == 3.0 and int(state["nonfinite"]) == 0
    _close(state["params"], ref_params)
    _close(state["opt_state"], ref_opt)


@pytest.mark.parametrize("nan,valid", [(True, True), (False, False)])
def test_a_bad_step_changes_nothing_but_the_counters(nan, valid):
    tx = optax.adamw(1e-2, b1=0.9, b2=0.95, weight_decay=0.05)
    step = jax.jit(make_train_step(_Quadratic(), tx, seed=0))
    state, _ = step(_state(tx), None, _batch())               # one good step: moments are non-zero
    before = jax.tree_util.tree_map(np.asarray, state)
    state, metrics = step(state, None, _batch(nan=nan, valid=valid))
    assert float(metrics["applied"]) == 0.0 and int(state["step"]) == 2
    for key in ("params", "opt_state", "model_state"):
        for x, y in zip(jax.tree_util.tree_leaves(state[key]), jax.tree_util.tree_leaves(before[key])):
            np.testing.assert_array_equal(np.asarray(x), y)
    assert int(state["nonfinite"]) == int(nan)
    assert int(state["first_nonfinite"]) == (1 if nan else -1)
