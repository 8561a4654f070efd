"""Optimizers and learning-rate schedules of the original trainers.

The three original codebases train with:

* Mesh-VQ-VAE: ``Adam`` (betas 0.9 / 0.999, no weight decay), a constant learning rate.
* MEGA (VQMAE pre-training and CVQMAE): ``AdamW`` with betas (0.9, 0.95), the learning rate
  ``lr * batch / 256`` and a schedule evaluated once per *epoch*::

      factor(epoch) = min((epoch + 1) / (warmup_epochs + 1e-8),
                          0.5 * (cos(pi * epoch / total_epochs) + 1))

* VQ-HPS: ``AdamW`` (betas 0.9 / 0.999), an unscaled learning rate divided by 10 every 100
  epochs (``StepLR(step_size=100)``).

Weight decay applies to every parameter (biases and norms included), as the originals pass
``model.parameters()`` unfiltered. ``make_optimizer(config, steps_per_epoch)`` builds the
``optax`` transformation and the schedule (a function of the optimizer step) from
``config.optim`` (see ``configs/train_*.py``).
"""
from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp
import optax

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def peak_learning_rate(base_lr: float, batch_size: int, scale_by_batch: bool) -> float:
    """Learning rate after the linear scaling rule ``base_lr * batch_size / 256`` (if enabled).

    ``batch_size`` is the global batch (all devices, all hosts), as the original counts it.
    """
    return base_lr * batch_size / 256.0 if scale_by_batch else base_lr


def warmup_cosine_schedule(peak_lr: float, warmup_epochs: float, total_epochs: float,
                           steps_per_epoch: int, per_epoch: bool = True) -> Schedule:
    """MEGA's schedule: ``peak_lr * min((e + 1) / warmup, (cos(pi e / total) + 1) / 2)``.

    ``e`` is the epoch index ``step // steps_per_epoch`` when ``per_epoch`` (the original, which
    steps its ``LambdaLR`` after each epoch), else the fractional epoch ``step / steps_per_epoch``.
    Returns a function of the (integer) optimizer step.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        epoch = jnp.floor(step / steps_per_epoch) if per_epoch else step / steps_per_epoch
        warm = (epoch + 1.0) / (warmup_epochs + 1e-8)
        cosine = 0.5 * (jnp.cos(epoch / total_epochs * math.pi) + 1.0)
        return peak_lr * jnp.minimum(warm, cosine)

    return schedule


def step_decay_schedule(peak_lr: float, step_epochs: int, gamma: float,
                        steps_per_epoch: int) -> Schedule:
    """VQ-HPS's ``StepLR``: ``peak_lr * gamma ** (epoch // step_epochs)``."""
    def schedule(step):
        epoch = jnp.floor(jnp.asarray(step, jnp.float32) / steps_per_epoch)
        return peak_lr * gamma ** jnp.floor(epoch / step_epochs)

    return schedule


def make_schedule(optim_config, global_batch_size: int, steps_per_epoch: int) -> Schedule:
    """The learning-rate schedule named by ``optim_config.schedule``.

    Args:
      optim_config: ``ml_collections.ConfigDict`` with ``base_lr``, ``scale_by_batch`` and
        ``schedule`` in {"constant", "warmup_cosine", "step"} plus that schedule's fields
        (``warmup_epochs``, ``total_epochs``, ``per_epoch``; ``step_epochs``, ``gamma``).
      global_batch_size: examples per optimizer step over all hosts.
      steps_per_epoch: optimizer steps per pass over the training set.
    """
    peak = peak_learning_rate(optim_config.base_lr, global_batch_size,
                              optim_config.get("scale_by_batch", False))
    kind = optim_config.get("schedule", "constant")
    if kind == "constant":
        return lambda step: jnp.full((), peak, jnp.float32)
    if kind == "warmup_cosine":
        return warmup_cosine_schedule(peak, optim_config.warmup_epochs, optim_config.total_epochs,
                                      steps_per_epoch, optim_config.get("per_epoch", True))
    if kind == "step":
        return step_decay_schedule(peak, optim_config.step_epochs, optim_config.gamma,
                                   steps_per_epoch)
    raise ValueError(f"optim.schedule={kind!r} is unknown; use constant, warmup_cosine or step")


def make_optimizer(optim_config, global_batch_size: int,
                   steps_per_epoch: int) -> tuple[optax.GradientTransformation, Schedule]:
    """``(optax transformation, schedule)`` for ``optim_config.name`` in {"adam", "adamw"}.

    ``b1``, ``b2``, ``eps`` and ``weight_decay`` follow PyTorch's meaning (decoupled weight decay
    multiplied by the learning rate, as ``torch.optim.AdamW``). ``grad_clip_norm`` (0 = off, as in
    the originals) clips the global gradient norm first.
    """
    schedule = make_schedule(optim_config, global_batch_size, steps_per_epoch)
    name = optim_config.get("name", "adamw")
    b1, b2 = optim_config.get("b1", 0.9), optim_config.get("b2", 0.999)
    eps = optim_config.get("eps", 1e-8)
    if name == "adam":
        tx = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    elif name == "adamw":
        tx = optax.adamw(schedule, b1=b1, b2=b2, eps=eps,
                         weight_decay=optim_config.get("weight_decay", 0.01))
    else:
        raise ValueError(f"optim.name={name!r} is unknown; use adam or adamw")
    clip = optim_config.get("grad_clip_norm", 0.0)
    if clip:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, schedule
