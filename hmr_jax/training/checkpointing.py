"""Orbax checkpoints of a whole training run: train state and data position together.

One checkpoint step holds two items:

* ``state``: the train state pytree (``step``, ``params``, ``opt_state``, ``model_state`` = the
  mutable collections such as BatchNorm statistics and the VQ codebook EMA, ``frozen`` is *not*
  saved: it is reloaded from its source) via ``StandardSave``;
* ``data``: the Grain iterator state via grain's checkpoint handler (one file per process).

Saves are asynchronous (training continues while the files are written), happen every
``save_every`` steps, keep the last ``keep`` steps and are atomic (Orbax writes
``N.orbax-checkpoint-tmp-*`` and renames it when complete, so a SIGKILL mid-save leaves the
previous checkpoint as the latest). ``restore_latest`` falls back to the previous step, with a
warning, when the latest one cannot be read (corrupt or partial files), and moves the unreadable
one to ``<workdir>/corrupt_checkpoints/`` so the run can save that step number again.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    """Periodic async checkpoints in ``directory`` (created if needed).

    Args:
      directory: absolute or relative path of the checkpoint folder (``WORKDIR/checkpoints``).
      save_every: save when ``step % save_every == 0`` (``force=True`` saves any step).
      keep: how many of the most recent steps to keep (older ones are deleted).
      async_save: write in a background thread (the default); False blocks until written.
    """

    def __init__(self, directory: str, save_every: int, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(int(save_every), 1),
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler()},
        )

    def latest_step(self) -> int | None:
        """Newest complete step on disk (None when there is none)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Complete steps on disk, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any | None, force: bool = False) -> bool:
        """Start saving ``state`` and the iterator position at ``step``; True if a save started.

        ``state`` must be a pytree of arrays (the ``frozen`` entry excluded by the caller).
        The data iterator's state is taken now, so the iterator may advance right after.
        """
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def _restore(self, step: int, abstract_state: Any, data_iterator: Any | None):
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def restore_latest(self, abstract_state: Any, data_iterator: Any | None = None):
        """Restore the newest readable step; returns ``(state, step)`` or ``(None, None)``.

        ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` (with shardings) or arrays of
        the expected structure. ``data_iterator`` (a Grain iterator) is moved in place to the
        saved position. Unreadable steps are moved aside with a warning and the previous one is
        tried; if none can be read, raises ``RuntimeError`` naming the folder.
        """
        steps = self.all_steps()
        if not steps:
            return None, None
        errors = []
        for step in reversed(steps):
            try:
                return self._restore(step, abstract_state, data_iterator), step
            except Exception as err:  # noqa: BLE001 - any read failure means "unusable step"
                errors.append(f"step {step}: {type(err).__name__}: {err}")
                log.warning("Checkpoint step %d in %s cannot be restored (%s: %s); falling back "
                            "to the previous checkpoint.", step, self.directory,
                            type(err).__name__, str(err)[:300])
                self._quarantine(step)
        raise RuntimeError(
            f"No checkpoint in {self.directory} could be restored:\n  " + "\n  ".join(errors)
            + "\nDelete the folder to start from scratch, or fix the files.")

    def _quarantine(self, step: int) -> None:
        """Move an unreadable step out of the checkpoint folder (process 0 only)."""
        if jax.process_index() == 0:
            src = os.path.join(self.directory, str(step))
            dest_dir = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
            os.makedirs(dest_dir, exist_ok=True)
            dest = os.path.join(dest_dir, str(step))
            if os.path.exists(dest):
                shutil.rmtree(dest)
            if os.path.exists(src):
                shutil.move(src, dest)
        self._manager.reload()

    def wait(self) -> None:
        """Block until pending async saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton of a pytree of arrays, the target of a restore."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
