"""A tiny self-contained stage that exercises the whole training machinery in seconds.

Regression of ``y = tanh(x @ W)`` (x: 8 features, y: 4 outputs) by an MLP with BatchNorm (a
mutable collection, like the real models) and dropout (randomness from the step's key). The data
are either generated in memory (``config.data.num_examples``) or read from an ArrayRecord file of
serialized examples (``config.data.path``, written by ``write_toy_array_record``). Used by the
tests and benchmarks of the trainer; not a model of the papers.
"""
from __future__ import annotations

import pickle

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.training.stages import LossOutput, Stage, Variables


class ToyMLP(nn.Module):
    """MLP (B, 8) -> (B, 4) with BatchNorm and dropout."""

    width: int = 32

    @nn.compact
    def __call__(self, x, train: bool):
        # No bias before BatchNorm: its gradient is exactly zero in theory, so Adam would turn
        # float noise into full-size steps and make runs incomparable.
        x = nn.Dense(self.width, use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(4)(x)


def make_toy_examples(num: int, seed: int = 0) -> list[dict]:
    """``num`` examples ``{"x": (8,), "y": (4,)}`` float32, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(1234).normal(size=(8, 4)).astype(np.float32)
    x = rng.normal(size=(num, 8)).astype(np.float32)
    y = np.tanh(x @ w).astype(np.float32)
    return [{"x": x[i], "y": y[i]} for i in range(num)]


def write_toy_array_record(path: str, num: int, seed: int = 0) -> None:
    """Write ``num`` toy examples to an ArrayRecord file (one pickled dict per record)."""
    from array_record.python.array_record_module import ArrayRecordWriter
    writer = ArrayRecordWriter(path, "group_size:1")
    for example in make_toy_examples(num, seed):
        writer.write(pickle.dumps(example))
    writer.close()


class ToyStage(Stage):
    """See the module docstring. Config: ``data.path`` or ``data.num_examples``,
    ``toy.width``, ``toy.nan_at_step`` (>= 0 makes the loss NaN at that step, for tests)."""

    name = "toy"

    def _source(self, split_seed: int):
        data = self.config.data
        if data.get("path"):
            return grain.MapDataset.source(grain.sources.ArrayRecordDataSource([data.path])).map(
                pickle.loads)
        return grain.MapDataset.source(make_toy_examples(data.num_examples, split_seed))

    def train_source(self):
        return self._source(0)

    def val_source(self):
        return grain.MapDataset.source(make_toy_examples(64, 99))

    def augment(self, example, rng):
        noise = rng.normal(scale=0.01, size=example["x"].shape).astype(np.float32)
        return {**example, "x": example["x"] + noise}

    @property
    def model(self):
        return ToyMLP(width=self.config.toy.width)

    def init(self, rng, batch):
        variables = self.model.init({"params": rng}, batch["x"], train=False)
        return Variables(params=variables["params"],
                         model_state={"batch_stats": variables["batch_stats"]})

    def loss(self, params, model_state, frozen, batch, rng, step):
        pred, updates = self.model.apply({"params": params, **model_state}, batch["x"],
                                         train=True, rngs={"dropout": rng},
                                         mutable=["batch_stats"])
        mse = jnp.mean((pred - batch["y"]) ** 2)
        l2 = 1e-4 * sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params))
        loss = mse + l2
        nan_at = self.config.toy.get("nan_at_step", -1)
        if nan_at >= 0:
            loss = jnp.where(step == nan_at, jnp.nan, loss)
        return loss, LossOutput(terms={"mse": mse, "l2": l2}, model_state=dict(updates))

    def validate(self, params, model_state, frozen, batch):
        pred = self.model.apply({"params": params, **model_state}, batch["x"], train=False)
        return {"mse": jnp.mean((pred - batch["y"]) ** 2, axis=-1)}
