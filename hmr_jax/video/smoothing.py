"""Temporal smoothing of per-track time series with the One-Euro filter.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a low-pass filter whose cutoff
rises with speed: slow motion is smoothed hard (little jitter), fast motion little (little
lag). For each sample ``x_i`` at time ``t_i`` (seconds), with ``dt = t_i - t_{i-1}``:

* ``alpha(c) = 1 / (1 + 1 / (2 pi c dt))`` -- the smoothing factor of an exponential filter
  with cutoff frequency ``c`` (Hz);
* speed ``dx = (x_i - y_{i-1}) / dt``, smoothed: ``ds_i = ds_{i-1} + alpha(d_cutoff) (dx - ds_{i-1})``;
* cutoff ``c = min_cutoff + beta |ds_i|``; output ``y_i = y_{i-1} + alpha(c) (x_i - y_{i-1})``.

Parameters (element-wise, every coordinate filtered on its own):

* ``min_cutoff`` (Hz): the cutoff at rest; lower = smoother and more lag when still.
* ``beta`` (Hz per unit/s, e.g. 1/m for meters): how fast the cutoff grows with speed; higher
  = less lag when moving.
* ``d_cutoff`` (Hz): cutoff of the speed estimate.

Gaps (frames where a track was not seen) need no special care: times come from the frame
indices, so a gap is a larger ``dt`` and a larger ``alpha`` (the filter trusts the new sample
more); ``reset_after`` (seconds) restarts the filter after longer gaps.
"""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["OneEuroFilter", "SmoothingParams", "one_euro", "smooth_track"]


def _alpha(cutoff, dt):
    return 1.0 / (1.0 + 1.0 / (2 * np.pi * cutoff * dt))


class OneEuroFilter:
    """A streaming One-Euro filter over arrays of any fixed shape (see the module docstring)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0,
                 reset_after: float | None = None):
        """Args: ``min_cutoff`` (Hz, > 0), ``beta`` (>= 0), ``d_cutoff`` (Hz, > 0), ``reset_after``
        (seconds; a gap longer than this restarts the filter; ``None``: never)."""
        if not min_cutoff > 0 or not d_cutoff > 0 or not beta >= 0:
            raise ValueError(f"One-Euro needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, "
                             f"{d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset_after = reset_after
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next sample passes through unchanged."""
        self._t = None
        self._y = None
        self._ds = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter one sample ``x`` (any shape, the same each call) at time ``t`` (seconds, increasing).

        Returns:
          the filtered sample, float64, the shape of ``x``.
        """
        x = np.asarray(x, np.float64)
        if self._y is not None:
            if self._y.shape != x.shape:
                raise ValueError(f"sample shape {x.shape} differs from the previous {self._y.shape}")
            dt = t - self._t
            if not dt > 0:
                raise ValueError(f"times must increase, got {self._t} then {t}")
            if self.reset_after is not None and dt > self.reset_after:
                self.reset()
        if self._y is None:
            self._t, self._y, self._ds = t, x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self._y) / dt
        self._ds = self._ds + _alpha(self.d_cutoff, dt) * (dx - self._ds)
        cutoff = self.min_cutoff + self.beta * np.abs(self._ds)
        self._y = self._y + _alpha(cutoff, dt) * (x - self._y)
        self._t = t
        return self._y.copy()


def one_euro(x: np.ndarray, times: np.ndarray, *, min_cutoff: float = 1.0, beta: float = 0.0,
             d_cutoff: float = 1.0, reset_after: float | None = None) -> np.ndarray:
    """One-Euro filter a whole series.

    Args:
      x: (T, ...) samples (any units).
      times: (T,) seconds, strictly increasing (e.g. ``frame_indices / fps``).
      min_cutoff, beta, d_cutoff, reset_after: see :class:`OneEuroFilter`.
    Returns:
      (T, ...) filtered, the dtype of ``x`` when floating (else float64).
    """
    x = np.asarray(x)
    times = np.asarray(times, np.float64).reshape(-1)
    if len(times) != len(x):
        raise ValueError(f"{len(x)} samples but {len(times)} times")
    f = OneEuroFilter(min_cutoff, beta, d_cutoff, reset_after)
    out = np.empty(x.shape, x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)
    for i in range(len(x)):
        out[i] = f(x[i], times[i])
    return out


@dataclasses.dataclass(frozen=True)
class SmoothingParams:
    """One-Euro parameters of one quantity (see :class:`OneEuroFilter`)."""

    min_cutoff: float = 1.0
    beta: float = 20.0
    d_cutoff: float = 1.0
    reset_after: float | None = None


#: defaults for mesh vertices (meters, camera-aligned, centred): 1 Hz at rest, +20 Hz per m/s.
#: Chosen with ``benchmarks/bench_smoothing.py`` (synthetic limbs swinging at ~1 Hz, the body
#: turning, 1.5 cm whole-body + 0.6 cm per-vertex noise): at 30 fps the frame-to-frame jitter
#: drops from 6.3 to 3.5 cm for an error of 2.6 cm against 2.8 cm unfiltered; settings of a
#: slightly lower error (5 Hz) keep more jitter, slower ones (beta <= 3) lag behind the limbs.
#: At 10 fps (``--every 3`` of 30 fps) it lags more than it removes (3.1 cm against 2.7 cm):
#: there, raise ``min_cutoff`` (about 5 Hz) or leave the meshes unfiltered.
VERTEX_SMOOTHING = SmoothingParams(min_cutoff=1.0, beta=20.0)
#: defaults for the full-image camera translation (meters): 1 Hz at rest, +3 Hz per m/s. The
#: depth is the noisiest output (10 cm noise in the benchmark), so a large beta would let its
#: noise through as "speed": beta 3 gives the least error (7.2 cm against 10.6 cm unfiltered at
#: 30 fps) and a third of the jitter, for a person walking at 1.2 m/s.
CAMERA_SMOOTHING = SmoothingParams(min_cutoff=1.0, beta=3.0)


def smooth_track(vertices: np.ndarray, cameras: np.ndarray, frames: np.ndarray, fps: float, *,
                 vertex_params: SmoothingParams = VERTEX_SMOOTHING,
                 camera_params: SmoothingParams = CAMERA_SMOOTHING) -> tuple[np.ndarray, np.ndarray]:
    """Smooth one track's meshes and cameras over time.

    Args:
      vertices: (T, V, 3) meters.
      cameras: (T, 3) per-frame camera (e.g. translation in meters).
      frames: (T,) increasing video frame indices of the samples (gaps allowed).
      fps: the video's frames per second (times are ``frames / fps`` seconds).
      vertex_params, camera_params: One-Euro parameters of each.
    Returns:
      ``(vertices (T, V, 3), cameras (T, 3))`` smoothed, the input dtypes.
    """
    vertices, cameras = np.asarray(vertices), np.asarray(cameras)
    frames = np.asarray(frames).reshape(-1)
    if vertices.ndim != 3 or vertices.shape[-1] != 3 or cameras.shape != (len(vertices), 3):
        raise ValueError(f"expected vertices (T, V, 3) and cameras (T, 3), got {vertices.shape} and {cameras.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    times = frames / float(fps)
    return (one_euro(vertices, times, **dataclasses.asdict(vertex_params)),
            one_euro(cameras, times, **dataclasses.asdict(camera_params)))
