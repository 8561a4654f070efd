"""The backbones' convolution (hmr_jax.models.backbones.layers.conv2d): hand-written gradient ==
autodiff of ``lax.conv_general_dilated``, also inside a scan (where XLA:CPU's own transposed
convolutions are slow), and the module keeps ``nn.Conv``'s parameters and initial values."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.models.backbones.layers import TAPS_MAX_BATCH, Conv, conv2d

CASES = [  # batch, size, in, out, kernel, stride, padding
    (2, 9, 3, 4, 3, 1, 1), (2, 10, 3, 4, 3, 2, 1), (1, 9, 3, 5, 3, 2, 1), (2, 8, 4, 6, 1, 1, 0),
    (2, 7, 4, 6, 1, 2, 0), (2, 11, 3, 2, 7, 2, 3), (1, 6, 2, 3, 3, 1, 0),
    # above layers.TAPS_MAX_BATCH: the kernel gradient's convolution form (stride 1 and 2)
    (5, 9, 3, 4, 3, 1, 1), (6, 10, 3, 4, 3, 2, 1), (5, 8, 2, 3, 5, 1, 2), (6, 7, 4, 6, 1, 2, 0),
]


def test_cases_cover_both_kernel_gradient_forms():
    assert any(b <= TAPS_MAX_BATCH and k > 1 for b, _, _, _, k, s, _ in CASES)  # per-tap matmuls
    assert any(b > TAPS_MAX_BATCH and k > 1 for b, _, _, _, k, _, _ in CASES)  # convolution form


def _reference(x, w, s, p):
    return jax.lax.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("b,h,cin,cout,k,s,p", CASES)
def test_gradients_equal_autodiff(b, h, cin, cout, k, s, p):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((b, h, h, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(conv2d(x, w, s, p)), np.asarray(_reference(x, w, s, p)))
    want = jax.grad(lambda x, w: jnp.sum(jnp.sin(_reference(x, w, s, p))), (0, 1))(x, w)
    got = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv2d(x, w, s, p))), (0, 1))(x, w)
    for g, r in zip(got, want):
        assert g.shape == r.shape and g.dtype == r.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5 * float(jnp.abs(r).max()))


@pytest.mark.parametrize("batch", [TAPS_MAX_BATCH, TAPS_MAX_BATCH + 1])
def test_gradients_inside_a_scan(batch):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((batch, 8, 8, 4)), jnp.float32)
    ws = jnp.asarray(rng.standard_normal((3, 3, 3, 4, 4)) * 0.3, jnp.float32)

    def run(f):
        def loss(x, ws):
            y, _ = jax.lax.scan(lambda h, w: (jax.nn.relu(f(h, w, 1, 1)) + h, None), x, ws)
            return jnp.sum(y ** 2)
        return jax.jit(jax.grad(loss, (0, 1)))(x, ws)

    for g, r in zip(run(conv2d), run(_reference)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4 * float(jnp.abs(r).max()))


def test_module_has_nn_conv_parameters_and_values():
    x = jnp.ones((1, 8, 8, 3))
    ours = Conv(5, 3, stride=2, padding=1, use_bias=True)
    flax_conv = nn.Conv(5, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=True)
    v, u = ours.init(jax.random.key(0), x), flax_conv.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, u)
    for a, c in zip(jax.tree.leaves(v), jax.tree.leaves(u)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    u = jax.tree.map(lambda a: a + 0.5, u)  # a nonzero bias
    np.testing.assert_allclose(np.asarray(ours.apply(u, x)), np.asarray(flax_conv.apply(u, x)), rtol=1e-6, atol=1e-6)
