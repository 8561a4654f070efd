"""HRNet's scanned blocks keep only their convolution outputs for the backward pass (``nn.remat``
with ``layers.SAVE_CONV_OUTPUTS``): their training-mode gradients and batch statistics equal those
of the same blocks run one by one without remat, in both kernel-gradient forms."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.models.backbones import hrnet
from hmr_jax.models.backbones.layers import TAPS_MAX_BATCH


@pytest.mark.parametrize("batch", [TAPS_MAX_BATCH, TAPS_MAX_BATCH + 1])  # per-tap and convolution forms
def test_scanned_remat_blocks_equal_plain_blocks(batch):
    rng = np.random.default_rng(batch)
    x = jnp.asarray(rng.standard_normal((batch, 8, 8, 6)), jnp.float32)
    scanned = hrnet._BranchBlocks(6, jnp.float32, True)
    variables = scanned.init(jax.random.key(0), x, None)
    weights = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    block = hrnet.BasicBlock(6)

    def scanned_loss(params):
        (y, _), upd = scanned.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, None,
                                    mutable=["batch_stats"])
        return jnp.sum(jnp.tanh(y) * weights), upd["batch_stats"]

    def plain_loss(params):
        h, stats = x, []
        for i in range(hrnet.BLOCKS_PER_BRANCH):
            take = lambda a: a[i]  # noqa: E731  (block i of the stacked variables)
            h, upd = block.apply({"params": jax.tree.map(take, params),
                                  "batch_stats": jax.tree.map(take, variables["batch_stats"])},
                                 h, train=True, mutable=["batch_stats"])
            stats.append(upd["batch_stats"])
        return jnp.sum(jnp.tanh(h) * weights), jax.tree.map(lambda *a: jnp.stack(a), *stats)

    (loss_s, stats_s), grad_s = jax.jit(jax.value_and_grad(scanned_loss, has_aux=True))(variables["params"])
    (loss_p, stats_p), grad_p = jax.jit(jax.value_and_grad(plain_loss, has_aux=True))(variables["params"])
    np.testing.assert_allclose(float(loss_s), float(loss_p), rtol=1e-5)
    assert jax.tree.structure(grad_s) == jax.tree.structure(grad_p)
    for g, r in zip(jax.tree.leaves(grad_s), jax.tree.leaves(grad_p)):
        assert float(jnp.abs(r).max()) > 0
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-5 * float(jnp.abs(r).max()))
    for a, b in zip(jax.tree.leaves(stats_s), jax.tree.leaves(stats_p)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
