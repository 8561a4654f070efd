"""Where training numbers go: ``WORKDIR/metrics.jsonl``, TensorBoard event files, the console.

Only process 0 writes. ``metrics.jsonl`` holds one JSON object per logged step
(``{"step": 10, "loss": ..., "<term>": ..., "lr": ..., "steps_per_s": ..., "images_per_s": ...}``),
so runs can be compared by a script. After a resume, ``truncate_after(step)`` drops lines
logged after the restored checkpoint so the file reads as one uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os
from typing import Mapping

import numpy as np
from tensorboardX import SummaryWriter

from hmr_jax.files import DiskFullError, atomic_open, is_disk_full


def _plain(value):
    """JSON-safe Python scalar (NaN / inf become strings, which JSON cannot hold)."""
    value = float(np.asarray(value)) if np.ndim(value) == 0 else np.asarray(value).tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricWriter:
    """Appends metrics to ``metrics.jsonl`` and TensorBoard (tensorboardX) in ``workdir``.

    Args:
      workdir: the run's folder.
      enabled: False on processes other than 0 (nothing is written).
      tensorboard: also write event files under ``workdir/tensorboard``.
    """

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._tb = None
        if enabled and tensorboard:
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop lines with ``"step" > step`` (atomically rewrites the file)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        kept = []
        with open(self.path) as f:
            for line in f:
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line if line.endswith("\n") else line + "\n")
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut by a kill mid-write
        with atomic_open(self.path, "w") as f:
            f.writelines(kept)

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
        """Record ``metrics`` (scalars) at ``step``; ``prefix`` ("val/") namespaces the names."""
        if not self.enabled:
            return
        record = {"step": int(step)}
        record.update({prefix + k: _plain(v) for k, v in metrics.items()})
        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        try:
            # Appended in place (one short line per step; atomic_write would rewrite the file):
            # a failed append is cut back, so the file always ends with a whole line.
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            try:
                os.truncate(self.path, size)
            except OSError:
                pass
            if is_disk_full(err):
                raise DiskFullError(self.path, "metrics file") from err
            raise
        if self._tb is not None:
            for k, v in metrics.items():
                if np.ndim(v) == 0:
                    self._tb.add_scalar(prefix + k, float(v), int(step))
            self._tb.flush()

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        """An (H, W, 3) uint8 picture to TensorBoard."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(name, image, int(step), dataformats="HWC")
            self._tb.flush()

    def close(self) -> None:
        """Flush and close the event files."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(workdir: str) -> list[dict]:
    """All records of ``WORKDIR/metrics.jsonl`` (a helper for scripts and tests)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
