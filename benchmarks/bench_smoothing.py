"""How the video smoothing defaults (hmr_jax.video.smoothing) were chosen: error and jitter of the
One-Euro filter on synthetic noisy tracks, over a grid of parameters.

Usage:
  python benchmarks/bench_smoothing.py [--seeds 4] [--seconds 8]

Flags are absl's (``--name value`` or ``--name=value``; ``--help`` lists them).

A synthetic track at 30 fps and at 10 fps (``--every 3`` of a 30 fps video), for several seeds:

* mesh vertices (camera-aligned axes, centred): a body of 60 points turning by 90 degrees in one
  second every three seconds, limbs swinging at about 1 Hz with up to 0.35 m amplitude; noise: a
  1.5 cm whole-body shift per frame plus 0.6 cm per vertex (meters);
* camera translation: walking sideways at 1.2 m/s and back, the depth drifting by 1 m; noise
  1.5 cm in x and y and 10 cm in depth (monocular depth is the least certain).

For each (min_cutoff, beta) the root-mean-square distance to the clean track (meters: noise left
plus lag) and the jitter (mean norm of the second difference per frame, meters) are averaged over
the seeds. Prints ONE JSON line: the unfiltered error and jitter, those of the defaults, and the
parameters of least error, per quantity and frame rate.
"""
from __future__ import annotations

import itertools
import json
import os
import sys

from absl import flags
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hmr_jax.cli import parse_command  # noqa: E402
from hmr_jax.errors import command_line  # noqa: E402
from hmr_jax.video.smoothing import CAMERA_SMOOTHING, VERTEX_SMOOTHING, one_euro  # noqa: E402

PROGRAM = "python benchmarks/bench_smoothing.py"

MIN_CUTOFFS = (0.1, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
BETAS = (0.0, 0.3, 1.0, 3.0, 10.0, 20.0, 50.0)


def scenario(fps: float, seed: int, seconds: float) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{"vertices": (times (T,), clean (T, 60, 3), noisy), "camera": (times, clean (T, 3), noisy)}``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fps)) / fps
    n = 60
    phase, amp = rng.uniform(0, 2 * np.pi, n), rng.uniform(0.02, 0.35, n)
    freq = rng.uniform(0.7, 1.3)
    w = 2 * np.pi * freq * t[:, None]
    limbs = np.stack([amp * np.sin(w + phase), 0.3 * amp * np.cos(w + phase), 0.5 * amp * np.sin(w + 2 * phase)], -1)
    yaw = np.cumsum(np.where((t % 3) < 1, np.pi / 2, 0.0) / fps) * rng.choice([-1, 1])
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    rest = rng.normal(0, 0.25, (n, 3))
    body = np.stack([c * rest[:, 0] + s * rest[:, 2], np.broadcast_to(rest[:, 1], (len(t), n)),
                     -s * rest[:, 0] + c * rest[:, 2]], -1)
    clean_v = body + limbs
    noisy_v = clean_v + rng.normal(0, 0.015, (len(t), 1, 3)) + rng.normal(0, 0.006, clean_v.shape)
    x = 1.2 * (np.abs((t / 4) % 2 - 1) * 4 - 2)
    clean_c = np.stack([x, 0.2 + 0.02 * np.sin(2 * np.pi * 2 * t), 5 + np.sin(2 * np.pi * 0.15 * t)], -1)
    noisy_c = clean_c + rng.normal(0, 1, clean_c.shape) * [0.015, 0.015, 0.10]
    return {"vertices": (t, clean_v, noisy_v), "camera": (t, clean_c, noisy_c)}


def _measure(clean: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    rmse = float(np.sqrt(np.mean(np.sum((y - clean) ** 2, -1))))
    jitter = float(np.linalg.norm(np.diff(y, 2, axis=0), axis=-1).mean())
    return rmse, jitter


def _define(fv: flags.FlagValues) -> None:
    """This benchmark's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_integer("seeds", 4, "synthetic tracks (seeds) per frame rate", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("seconds", 8.0, "length of each synthetic track (seconds)", flag_values=fv)


@command_line
def main(argv=None) -> int:
    """Score the One-Euro grid on the synthetic tracks and print one JSON line; 0, or 2 after one
    ``error:`` line on a bad flag."""
    args = parse_command(argv, _define, PROGRAM, __doc__)
    if args is None:   # --help
        return 0
    defaults = {"vertices": VERTEX_SMOOTHING, "camera": CAMERA_SMOOTHING}
    out = {}
    for fps in (30, 10):
        runs = [scenario(fps, seed, args.seconds) for seed in range(args.seeds)]
        for name in ("vertices", "camera"):
            tracks = [r[name] for r in runs]

            def score(min_cutoff, beta):
                return np.mean([_measure(clean, one_euro(noisy, t, min_cutoff=min_cutoff, beta=beta))
                                for t, clean, noisy in tracks], axis=0)
            grid = {(mc, b): score(mc, b) for mc, b in itertools.product(MIN_CUTOFFS, BETAS)}
            best = min(grid, key=lambda k: grid[k][0])
            raw = np.mean([_measure(clean, noisy) for _, clean, noisy in tracks], axis=0)
            d = defaults[name]
            dflt = score(d.min_cutoff, d.beta)
            key = f"{name}_{fps}fps"
            out.update({f"{key}_raw_rmse_m": round(raw[0], 4), f"{key}_raw_jitter_m": round(raw[1], 4),
                        f"{key}_default_rmse_m": round(dflt[0], 4), f"{key}_default_jitter_m": round(dflt[1], 4),
                        f"{key}_least_rmse_params": list(best), f"{key}_least_rmse_m": round(grid[best][0], 4),
                        f"{key}_least_rmse_jitter_m": round(grid[best][1], 4)})
    out["defaults"] = {"vertices": [VERTEX_SMOOTHING.min_cutoff, VERTEX_SMOOTHING.beta],
                       "camera": [CAMERA_SMOOTHING.min_cutoff, CAMERA_SMOOTHING.beta]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
