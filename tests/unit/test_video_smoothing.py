"""hmr_jax.video.smoothing: the One-Euro filter against its formula and on noisy motion."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hmr_jax.video import OneEuroFilter, SmoothingParams, one_euro, smooth_track


def jitter(x):
    return np.abs(np.diff(x, 2, axis=0)).mean()


def test_noisy_sine_less_jitter_and_follows_the_signal():
    rng = np.random.default_rng(1)
    fps, t = 30.0, np.arange(150) / 30.0
    phase = np.arange(40)[:, None] / 10                                         # 40 vertices, each its own phase
    clean = (0.2 * np.sin(2 * np.pi * 0.25 * t[:, None, None] + phase[None]) * np.ones(3)).astype(np.float32)
    noisy = clean + rng.normal(0, 0.015, clean.shape).astype(np.float32)      # 1.5 cm noise, meters
    cams = noisy[:, 0] + np.array([0, 0, 5], np.float32)
    verts, cameras = smooth_track(noisy, cams, np.arange(150), fps)
    assert verts.dtype == np.float32 and verts.shape == noisy.shape and cameras.shape == (150, 3)
    assert jitter(verts) < jitter(noisy) / 2
    rmse = lambda a: float(np.sqrt(np.mean((a - clean) ** 2)))
    assert rmse(verts) < 0.8 * rmse(noisy)                                     # closer to the truth than the input
    assert np.abs(verts - clean).max() < 0.06                                 # no runaway lag
    np.testing.assert_allclose(cameras, clean[:, 0] + np.array([0, 0, 5]), atol=0.06)
    # a higher beta lags less on fast motion
    fast = 0.3 * np.sin(2 * np.pi * 1.5 * t)
    lag = [np.abs(one_euro(fast, t, min_cutoff=1.0, beta=b) - fast).mean() for b in (0.0, 5.0, 50.0)]
    assert lag[0] > lag[1] > lag[2]


def test_constant_stays_constant_and_first_sample_passes():
    x = np.full((20, 7, 3), 0.25)
    np.testing.assert_array_equal(one_euro(x, np.arange(20) / 25, beta=3.0), x)
    f = OneEuroFilter()
    np.testing.assert_array_equal(f(np.array([1.0, 2.0]), 0.0), [1.0, 2.0])


def test_one_step_matches_the_formula_and_gaps_trust_the_new_sample():
    def alpha(c, dt):
        return 1 / (1 + 1 / (2 * math.pi * c * dt))
    for dt in (1 / 30, 11 / 30):                                              # the next frame, or after a gap
        f = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=2.0)
        f(np.zeros(1), 0.0)
        y = f(np.ones(1), dt)[0]
        speed = alpha(2.0, dt) * (1 / dt)
        assert y == pytest.approx(alpha(1.0 + 0.5 * speed, dt))
    # a step hidden in a gap: after 11 frames the filter moves much further than after 1
    frames = np.array([0, 1, 2, 3, 14, 15])
    x = np.array([0, 0, 0, 0, 1, 1.0])
    gap = one_euro(x, frames / 30)[4]
    no_gap = one_euro(x, np.arange(6) / 30)[4]
    assert gap > 2 * no_gap
    # with reset_after shorter than the gap the filter restarts at the new value
    assert one_euro(x, frames / 30, reset_after=0.2)[4] == 1.0


def test_checks():
    with pytest.raises(ValueError, match="min_cutoff > 0"):
        OneEuroFilter(min_cutoff=0)
    f = OneEuroFilter()
    f(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="times must increase"):
        f(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="shape"):
        f(np.zeros(2), 2.0)
    with pytest.raises(ValueError, match=r"\(T, V, 3\)"):
        smooth_track(np.zeros((5, 3)), np.zeros((5, 3)), np.arange(5), 30)
    with pytest.raises(ValueError, match="fps"):
        smooth_track(np.zeros((5, 2, 3)), np.zeros((5, 3)), np.arange(5), 0)
    assert SmoothingParams().beta == 20.0
