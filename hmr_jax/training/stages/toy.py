"""A tiny self-contained stage that exercises the whole training machinery in seconds.

Regression of ``y = tanh(x @ W)`` (x: 8 features, y: 4 outputs) by an MLP with BatchNorm (a
mutable collection, like the real models) and dropout (randomness from the step's key). The data
are either generated in memory (``config.data.num_examples``) or read from an ArrayRecord file of
serialized examples (``config.data.path``, written by ``write_toy_array_record``), batched by
the real pipeline (:func:`hmr_jax.data.pipeline.example_pipeline`, same multi-host rule as the
record datasets). Used by the tests and benchmarks of the trainer; not a model of the papers.
"""
from __future__ import annotations

import pickle

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from hmr_jax.data.pipeline import example_pipeline
from hmr_jax.training.stages.base import LossOutput, Stage, Variables


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
    writer = ArrayRecordWriter(path, "group_size:1")
    for example in make_toy_examples(num, seed):
        writer.write(pickle.dumps(example))
    writer.close()


def _augment(example: dict, rng: np.random.Generator) -> dict:
    """Training augmentation: Gaussian noise (std 0.01) on ``x``."""
    noise = rng.normal(scale=0.01, size=example["x"].shape).astype(np.float32)
    return {**example, "x": example["x"] + noise}


class ToyStage(Stage):
    """See the module docstring. Config: ``data.path`` or ``data.num_examples``,
    ``toy.width``, ``toy.nan_at_step`` (>= 0 makes the loss NaN at that step, for tests)."""

    name = "toy"

    def train_pipeline(self, local_batch, seed):
        data = self.config.data
        if data.get("path"):
            examples = grain.MapDataset.source(grain.sources.ArrayRecordDataSource([data.path])).map(
                pickle.loads)
        else:
            examples = grain.MapDataset.source(make_toy_examples(data.num_examples, 0))
        steps_per_epoch = len(examples) // self.config.batch_size
        if steps_per_epoch < 1:
            raise ValueError(f"The training set has {len(examples)} examples, fewer than one batch "
                             f"(config.batch_size={self.config.batch_size}).")
        return example_pipeline(examples, batch_size=local_batch, transform=_augment, seed=seed,
                                num_workers=data.get("workers", 0),
                                read_threads=data.get("read_threads", 0)), steps_per_epoch

    def val_batches(self, local_batch):
        return example_pipeline(make_toy_examples(64, 99), batch_size=local_batch, train=False,
                                drop_remainder=True)

    @property
    def model(self):
        return ToyMLP(width=self.config.toy.width)

    def init(self, rng, batch):
        variables = self.model.init({"params": rng}, batch["x"], train=False)
        return Variables(params=variables["params"],
                         model_state={"batch_stats": variables["batch_stats"]})

    def loss(self, params, model_state, frozen, batch, rng, step, draws):
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
