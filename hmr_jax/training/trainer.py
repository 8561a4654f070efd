"""The generic training loop shared by every stage (``train.py`` calls ``train(config, workdir)``).

Reading order: distributed set-up -> device mesh and shardings -> input pipeline -> variables,
optimizer, train state -> restore from ``WORKDIR/checkpoints`` -> one jit-compiled train step ->
loop with logging, validation, checkpoints, preemption and NaN handling.

* Stages: everything model-specific comes through the contract of
  :class:`hmr_jax.training.stages.base.Stage` (data, variables, loss, validation, prediction).
* Devices: one ``jax.sharding.Mesh`` over every device of every host, axis ``"data"``. The batch
  is sharded on it (each host loads ``global_batch / process_count`` examples, its share by the
  multi-host rule of :mod:`hmr_jax.data.pipeline`, and
  ``jax.make_array_from_process_local_data`` assembles the global array); parameters and
  optimizer state are replicated (``config.sharding.params = "replicated"``) or sharded along
  their largest divisible axis (``"fsdp"``). jit inserts the gradient all-reduce.
* Determinism: the step's random key is ``fold_in(key(seed), step)``, the stage's host-side
  draws (:meth:`~hmr_jax.training.stages.base.Stage.step_draws`) depend on ``(seed, step)``
  only, and the Grain iterator position is checkpointed, so a run killed at any moment and
  restarted continues with exactly the loss sequence of an uninterrupted run.
* Programs: the step is compiled once per distinct ``StepDraws.program`` the stage returns
  (MEGA: the encoder length its masking needs, a few values) and cached by ``jax.jit``.
* Failures: a step whose loss is NaN / inf is not applied (parameters stay finite); the loop
  notices at the next logged or checkpointed step, stops with ``NonFiniteLossError`` and keeps
  the last checkpoint (written before). SIGTERM (preemption) saves a checkpoint and returns.
  A full disk stops the loop with ``CheckpointDiskFullError`` / ``DiskFullError`` naming the
  last complete checkpoint; a checkpoint of another model shape stops it before the first step
  (``CheckpointMismatchError``).
* One writer per workdir: each process holds ``WORKDIR/.lock`` (process ``i > 0``:
  ``.lock.p{i}``) for the whole run (:func:`hmr_jax.files.exclusive_lock`); a second
  ``train.py`` on a live workdir stops at once with ``LockHeldError`` naming the holder's host
  and pid, before writing anything. A lock left by a killed process is taken over.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from hmr_jax.errors import UserError
from hmr_jax.files import atomic_write, folder_lock
from hmr_jax.training import checkpointing, optim
from hmr_jax.training.metric_writers import MetricWriter
from hmr_jax.training.pictures import save_png, validation_picture
from hmr_jax.training.stages import Stage, StepDraws, get_stage

log = logging.getLogger(__name__)

DATA_AXIS = "data"


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or inf; the message names the step and the last checkpoint."""


# ----------------------------------------------------------------------------- distributed
def initialize_distributed(config) -> None:
    """Start ``jax.distributed`` when the run spans several processes.

    ``config.distributed.coordinator_address`` / ``num_processes`` / ``process_id`` set
    explicitly (e.g. two processes on one machine), or ``config.distributed.auto=True`` lets JAX
    discover them (TPU pods, SLURM, ...). Nothing happens for a single process.
    """
    dist = config.get("distributed")
    if dist is None or jax.distributed.is_initialized():
        return
    if dist.get("coordinator_address"):
        jax.distributed.initialize(coordinator_address=dist.coordinator_address,
                                   num_processes=dist.num_processes,
                                   process_id=dist.process_id)
    elif dist.get("auto", False):
        jax.distributed.initialize()


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh, axis ``"data"``, over all (or the first ``num_devices``) global devices."""
    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise ValueError(f"config.num_devices={num_devices} but only {len(devices)} devices exist")
        devices = devices[:num_devices]
    return jax.sharding.Mesh(np.array(devices), (DATA_AXIS,))


def param_shardings(tree: Any, mesh: jax.sharding.Mesh, mode: str, min_size: int = 2 ** 14):
    """Shardings of a pytree of arrays (or ShapeDtypeStructs).

    ``"replicated"``: every device holds everything. ``"fsdp"``: each array with at least
    ``min_size`` elements is split along its largest axis divisible by the mesh size.
    """
    replicated = NamedSharding(mesh, P())
    if mode == "replicated":
        return jax.tree.map(lambda _: replicated, tree)
    if mode != "fsdp":
        raise ValueError(f"config.sharding.params={mode!r} is unknown; use replicated or fsdp")
    n = mesh.devices.size

    def rule(x):
        shape = getattr(x, "shape", ())
        if int(np.prod(shape, dtype=np.int64)) < min_size:
            return replicated
        for axis in np.argsort(shape)[::-1]:
            if shape[axis] % n == 0:
                spec = [None] * len(shape)
                spec[axis] = DATA_AXIS
                return NamedSharding(mesh, P(*spec))
        return replicated

    return jax.tree.map(rule, tree)


# ----------------------------------------------------------------------------- input pipeline
def local_batch_size(global_batch: int) -> int:
    """Examples this process loads per step; the global batch must split evenly over hosts
    and devices."""
    if global_batch % jax.process_count() or global_batch % jax.device_count():
        raise ValueError(f"config.batch_size={global_batch} must be divisible by the number of "
                         f"processes ({jax.process_count()}) and devices ({jax.device_count()})")
    return global_batch // jax.process_count()


def to_global(batch: dict, sharding: NamedSharding) -> dict:
    """Assemble each process's local batch into globally sharded arrays."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        batch)


# ----------------------------------------------------------------------------- state and step
def make_train_step(stage: Stage, tx: optax.GradientTransformation, seed: int):
    """The pure train step ``(state, frozen, batch, values=None, program=None) -> (state, metrics)``.

    ``state`` = {"step", "params", "opt_state", "model_state", "nonfinite", "first_nonfinite"};
    ``values`` / ``program``: the step's :class:`~hmr_jax.training.stages.StepDraws` fields
    (``program`` static). An update whose loss is not finite, or that the stage marks invalid,
    is not applied; a non-finite loss increments ``nonfinite`` (and records its step) for the
    host to report.
    """
    base_key = jax.random.key(seed)

    def train_step(state, frozen, batch, values=None, program=None):
        step = state["step"]
        rng = jax.random.fold_in(base_key, step)
        draws = StepDraws(program, dict(values or {}))

        def loss_fn(params):
            return stage.loss(params, state["model_state"], frozen, batch, rng, step, draws)

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        finite = jnp.isfinite(loss)
        apply = jnp.logical_and(finite, jnp.asarray(out.valid))

        def update(old):
            params, opt_state, _ = old
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, out.model_state

        # One conditional around the whole update, not a jnp.where per leaf: a select keeps the old
        # and the new parameters / moments alive at once, so the donated buffers cannot be updated
        # in place (AdamW over MEGA-HRNet's 271 M parameters, 2 CPU cores: 0.84 s per step with
        # the selects, 0.13-0.19 s with the conditional).
        params, opt_state, model_state = jax.lax.cond(
            apply, update, lambda old: old, (state["params"], state["opt_state"], state["model_state"]))

        new_state = {
            "step": step + 1,
            "params": params,
            "opt_state": opt_state,
            "model_state": model_state,
            "nonfinite": state["nonfinite"] + (~finite).astype(jnp.int32),
            "first_nonfinite": jnp.where((state["nonfinite"] == 0) & ~finite, step,
                                         state["first_nonfinite"]),
        }
        metrics = {"loss": loss, **out.terms,
                   "grad_norm": optax.tree.norm(grads), "applied": apply.astype(jnp.float32)}
        return new_state, metrics

    return train_step


class _Preemption:
    """Turns SIGTERM into a flag the loop polls (single process). Multi-process runs use JAX's
    preemption sync point so that every host stops at the same step."""

    def __init__(self):
        self.requested = False
        self._previous = None
        if jax.process_count() == 1:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handler)
            except ValueError:  # not the main thread
                self._previous = None

    def _handler(self, signum, frame):
        self.requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            try:
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except Exception:  # noqa: BLE001 - no preemption service: never preempted
                return False
        return self.requested

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)


@dataclasses.dataclass
class TrainSetup:
    """Everything the loop needs besides data and checkpoints (also used by the benchmarks)."""

    state: dict
    state_shardings: dict
    frozen: Any
    schedule: optim.Schedule
    step_fn: Any        # jitted (state, frozen, batch, values, program) -> (state, metrics); donates state
    stage: Stage
    seed: int

    def run_step(self, state: dict, frozen: Any, batch: dict, step: int):
        """Training step number ``step`` (a host int equal to ``state["step"]``) with the stage's
        host-side draws for it: ``(state, metrics)``, ``state`` donated."""
        draws = self.stage.step_draws(step, self.seed)
        return self.step_fn(state, frozen, batch, dict(draws.values), draws.program)


def build_train_state(stage: Stage, config, mesh: jax.sharding.Mesh, example: dict,
                      steps_per_epoch: int) -> TrainSetup:
    """Initialise variables from ``example`` (a global batch), load pre-trained weights, build
    the optimizer and its state with their shardings, and jit the train step over ``mesh``."""
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
    init_key = jax.random.key(config.seed + 1)
    abstract_vars = jax.eval_shape(stage.init, init_key, example)
    var_shardings = type(abstract_vars)(
        params=param_shardings(abstract_vars.params, mesh, config.sharding.params,
                                config.sharding.get("min_size", 2 ** 14)),
        model_state=jax.tree.map(lambda _: replicated, abstract_vars.model_state))
    variables = jax.jit(stage.init, out_shardings=var_shardings)(init_key, example)
    variables = stage.load_pretrained(variables)

    tx, schedule = optim.make_optimizer(config.optim, config.batch_size, steps_per_epoch)
    # Optimizer moments are sharded like their parameters; counters are replicated.
    opt_shardings = optax.tree_map_params(
        tx, lambda _, s: s, jax.eval_shape(tx.init, variables.params), var_shardings.params,
        transform_non_params=lambda _: replicated)
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(variables.params)
    state = {"step": jnp.zeros((), jnp.int32), "params": variables.params, "opt_state": opt_state,
             "model_state": variables.model_state, "nonfinite": jnp.zeros((), jnp.int32),
             "first_nonfinite": jnp.full((), -1, jnp.int32)}
    state_shardings = {"step": replicated, "params": var_shardings.params,
                       "opt_state": opt_shardings, "model_state": var_shardings.model_state,
                       "nonfinite": replicated, "first_nonfinite": replicated}
    state = jax.device_put(state, state_shardings)
    frozen = jax.device_put(stage.frozen(), replicated)
    step_fn = jax.jit(make_train_step(stage, tx, config.seed),
                      in_shardings=(state_shardings, None, batch_sharding, replicated),
                      out_shardings=(state_shardings, replicated),
                      static_argnums=(4,), donate_argnums=(0,))
    return TrainSetup(state, state_shardings, frozen, schedule, step_fn, stage, config.seed)


# ----------------------------------------------------------------------------- the loop
def train(config, workdir: str) -> dict:
    """Train ``config.stage`` for ``config.total_steps`` steps in ``workdir``; resumable.

    Returns a summary ``{"step", "loss", "preempted", "resumed_from", ...}``. Raises
    ``NonFiniteLossError`` on a NaN / inf loss (the last checkpoint is kept).
    """
    initialize_distributed(config)
    index = jax.process_index()
    with folder_lock(workdir, "train.py", name=".lock" if index == 0 else f".lock.p{index}"):
        return _train(config, workdir)


def _train(config, workdir: str) -> dict:
    is_main = jax.process_index() == 0
    mesh = make_mesh(config.get("num_devices", 0) or None)
    if mesh.devices.size != jax.device_count() and jax.process_count() > 1:
        raise ValueError("config.num_devices must be unset in multi-process runs")
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS))

    stage = get_stage(config)
    data, steps_per_epoch = stage.train_pipeline(local_batch_size(config.batch_size), config.seed)
    train_iter = iter(data)
    # Variables from the shapes of one batch (a separate iterator: the real one is untouched).
    example = to_global(next(iter(data)), batch_sharding)
    setup = build_train_state(stage, config, mesh, example, steps_per_epoch)
    checkpointer, writer, state, resumed_from = _open_workdir(config, workdir, setup.state, train_iter)
    frozen = setup.frozen
    val_fn = jax.jit(stage.validate)

    total = int(config.total_steps)
    step = int(jax.device_get(state["step"]))
    log_every = max(int(config.log_every_steps), 1)
    eval_every = int(config.get("eval_every_steps", 0))
    preemption = _Preemption()
    bar = _progress(total, step, is_main and config.get("progress_bar", True))
    meter = _Meter(step)
    summary = {"resumed_from": resumed_from, "preempted": False}
    last_saved = resumed_from
    failed = True
    try:
        while step < total:
            if preemption.reached(step):
                if step != last_saved:
                    checkpointer.save(step, state, train_iter, force=True)
                checkpointer.wait()
                log.warning("Preemption signal: saved step %d and stopped.", step)
                summary["preempted"] = True
                break
            local = next(train_iter)
            if "skipped_records" in local:  # config.data.skip_bad_records: counted, not trained on
                meter.skipped += int(np.sum(local.pop("skipped_records")))
            state, metrics = setup.run_step(state, frozen, to_global(local, batch_sharding), step)
            step += 1
            if bar is not None:
                bar.update(1)
            do_log = step % log_every == 0 or step == total
            do_save = step % config.checkpoint.every_steps == 0 or step == total
            if not (do_log or do_save):
                continue
            _check_finite(state, checkpointer)
            if do_log:
                host = meter.line(step, metrics, setup.schedule, config, steps_per_epoch)
                writer.write(step, host)
                summary["loss"] = host["loss"]
                if bar is not None:
                    bar.set_postfix(loss=f"{host['loss']:.4g}", img_s=f"{host['images_per_s']:.1f}")
            if eval_every and (step % eval_every == 0 or step == total):
                _write_validation(stage, val_fn, state, frozen, config, batch_sharding, writer, workdir, step)
            if do_save:
                checkpointer.save(step, state, train_iter, force=step == total)
                last_saved = step
        failed = False
    finally:
        if bar is not None:
            bar.close()
        preemption.restore()
        try:
            checkpointer.close()
        except Exception:  # noqa: BLE001 - when the loop already failed, its error is the one to report
            if not failed:
                raise
        writer.close()
    summary.update(step=step, state=state, frozen=frozen)
    return summary


def _open_workdir(config, workdir: str, state: dict, train_iter):
    """``(checkpointer, metric writer, state to start from, step resumed from or None)``.

    The latest checkpoint is restored (or one of other shapes refused) before anything is
    written into the workdir; then ``config.json`` is written and ``metrics.jsonl`` cut back to
    the restored step.
    """
    ckpt_cfg = config.checkpoint
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                              save_every=ckpt_cfg.every_steps,
                                              keep=ckpt_cfg.keep,
                                              async_save=ckpt_cfg.get("async_save", True))
    try:
        restored, resumed_from = checkpointer.restore_latest(checkpointing.abstract_like(state), train_iter)
    except BaseException:
        checkpointer.close()
        raise
    is_main = jax.process_index() == 0
    if is_main:
        atomic_write(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
    writer = MetricWriter(workdir, enabled=is_main, tensorboard=config.get("tensorboard", True))
    if restored is not None:
        state = restored
        writer.truncate_after(resumed_from)
        log.warning("Resumed from step %d in %s", resumed_from, checkpointer.directory)
    return checkpointer, writer, state, resumed_from


class _Meter:
    """Throughput between log lines and the bad records skipped since the last one."""

    def __init__(self, step: int):
        self.time, self.step, self.skipped = time.perf_counter(), step, 0

    def line(self, step: int, metrics, schedule, config, steps_per_epoch: int) -> dict:
        """The ``metrics.jsonl`` entries of ``step``: the step's metrics on the host, lr,
        steps / s and images / s since the last line, epoch, skipped records (if counted)."""
        now = time.perf_counter()
        steps_per_s = (step - self.step) / max(now - self.time, 1e-9)
        self.time, self.step = now, step
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        host.update(lr=float(schedule(step - 1)), steps_per_s=steps_per_s,
                    images_per_s=steps_per_s * config.batch_size, epoch=(step - 1) / steps_per_epoch)
        if config.data.get("skip_bad_records", False):
            host["skipped_records"] = self.skipped  # bad records replaced since the last log line
            self.skipped = 0
        return host


def _write_validation(stage: Stage, val_fn, state, frozen, config, batch_sharding, writer: MetricWriter,
                      workdir: str, step: int) -> None:
    """Validate (:func:`_validate`) and log the means; the picture goes to TensorBoard and
    ``WORKDIR/pictures/val_STEP.png`` (main process)."""
    val_metrics, picture = _validate(stage, val_fn, state, frozen, config, batch_sharding)
    if val_metrics:
        writer.write(step, val_metrics, prefix="val/")
    if picture is not None and jax.process_index() == 0:
        writer.write_image(step, "val/predictions", picture)
        os.makedirs(os.path.join(workdir, "pictures"), exist_ok=True)
        save_png(os.path.join(workdir, "pictures", f"val_{step:08d}.png"), picture)


def _check_finite(state, checkpointer: checkpointing.Checkpointer) -> None:
    """Raise ``NonFiniteLossError`` if any step since the last check had a NaN / inf loss."""
    bad, first = (int(v) for v in jax.device_get((state["nonfinite"], state["first_nonfinite"])))
    if bad:
        checkpointer.wait()
        last = checkpointer.latest_step()
        raise NonFiniteLossError(
            f"The training loss became NaN/inf at step {first + 1} ({bad} step(s) so far); those "
            f"updates were not applied. Stopping. The last good checkpoint is "
            f"{'step ' + str(last) if last is not None else 'none'} in {checkpointer.directory}. "
            "Lower optim.base_lr, enable optim.grad_clip_norm, or check the data near this step.")


def _host(tree):
    """Fetch globally sharded arrays to every host (all-gathered when there are several)."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def _validate(stage: Stage, val_fn, state, frozen, config, batch_sharding):
    """Mean of the stage's per-sample validation metrics over ``config.eval_batches`` batches,
    and (image stages) a picture of the first batch's predictions, or None."""
    ds = stage.val_batches(local_batch_size(config.batch_size))
    if ds is None:
        return {}, None
    sums, count, picture = {}, 0, None
    for i, batch in enumerate(ds):
        if i >= config.get("eval_batches", 10):
            break
        global_batch = to_global(batch, batch_sharding)
        out = _host(val_fn(state["params"], state["model_state"], frozen, global_batch))
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(np.sum(v))
        count += config.batch_size
        if i == 0 and stage.backbone is not None:
            picture = validation_picture(stage, state["params"], state["model_state"], frozen,
                                         global_batch, batch, fetch=_host)
    return {k: v / max(count, 1) for k, v in sums.items()}, picture
