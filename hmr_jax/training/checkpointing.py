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

Two failures stop training instead: a checkpoint whose array shapes differ from the model the
config builds (:class:`CheckpointMismatchError`, raised before any step and before anything is
moved, naming the first differing parameter), and a full disk while saving
(:class:`CheckpointDiskFullError`, naming the last complete step, which stays loadable).
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from hmr_jax.errors import UserError
from hmr_jax.files import DiskFullError, is_disk_full

log = logging.getLogger(__name__)


class CheckpointMismatchError(UserError, ValueError):
    """The checkpoint holds arrays of other shapes (or other names) than the configured model."""


class CheckpointUnreadableError(UserError, RuntimeError):
    """No checkpoint step of a workdir could be read."""


class CheckpointDiskFullError(DiskFullError):
    """A checkpoint could not be written for lack of space; the previous complete one is intact."""

    def __init__(self, directory: str, step: int | None, last: int | None):
        super().__init__(directory, "checkpoint")
        self.args = (f"no space left on the device while saving checkpoint step {step} in {directory}; the "
                     f"last complete checkpoint is {'step ' + str(last) if last is not None else 'none'} "
                     "(intact: a rerun resumes from it). Free some space and run again",)
        self.step, self.last = step, last

    def __str__(self) -> str:
        return self.args[0]


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def flat_shapes(tree: Any) -> dict[str, tuple]:
    """``{"params/encoder/kernel": shape, ...}`` of a pytree of arrays / shape structs / Orbax
    array metadata (paths joined with ``/``, in tree order)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape")
                                                  and not isinstance(x, (dict, list, tuple)))[0]
    return {"/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ()))
            for path, leaf in leaves if hasattr(leaf, "shape")}


def first_difference(saved: dict[str, tuple], wanted: dict[str, tuple]) -> str | None:
    """A sentence naming the first parameter whose shape differs (or that only one side has);
    model parameters (``params/...``) are looked at first, then ``model_state``, then the rest."""
    def order(path):
        return 0 if path.startswith("params/") else 1 if path.startswith("model_state/") else 2

    diffs = []
    for path, shape in sorted(wanted.items(), key=lambda kv: order(kv[0])):
        if path not in saved:
            diffs.append(f"{path} {shape} is not in the checkpoint")
        elif saved[path] != shape:
            diffs.append(f"{path} has shape {saved[path]} in the checkpoint and {shape} in this config")
    diffs += [f"{path} {shape} is in the checkpoint but not in this model" for path, shape in saved.items()
              if path not in wanted]
    if not diffs:
        return None
    return diffs[0] + (f" (and {len(diffs) - 1} more differences)" if len(diffs) > 1 else "")


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

    def _full(self, err: BaseException, step: int | None):
        """CheckpointDiskFullError for ``err`` if it is a full disk (else None)."""
        if not is_disk_full(err):
            return None
        try:
            self._manager.reload()
            last = self._manager.latest_step()
        except Exception:  # noqa: BLE001 - the error to report is the full disk
            last = None
        return CheckpointDiskFullError(self.directory, step, last)

    def save(self, step: int, state: Any, data_iterator: Any | None, force: bool = False) -> bool:
        """Start saving ``state`` and the iterator position at ``step``; True if a save started.

        ``state`` must be a pytree of arrays (the ``frozen`` entry excluded by the caller).
        The data iterator's state is taken now, so the iterator may advance right after.

        Raises:
          CheckpointDiskFullError: this save, or the previous (asynchronous) one, found the disk
            full; the last complete checkpoint is named and left intact.
        """
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self._pending = int(step)
        try:
            return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)
        except Exception as err:  # noqa: BLE001
            full = self._full(err, step)
            if full is not None:
                raise full from err
            raise

    def check_compatible(self, abstract_state: Any) -> None:
        """Raise :class:`CheckpointMismatchError` if the latest step's array shapes differ from
        ``abstract_state``'s (a config whose model is not the checkpoint's). Nothing is read but
        the metadata, nothing is moved; unreadable metadata is left to :meth:`restore_latest`."""
        step = self.latest_step()
        if step is None:
            return
        try:
            meta = self._manager.item_metadata(step)
            saved = flat_shapes(meta["state"].tree if hasattr(meta["state"], "tree") else meta["state"])
        except Exception:  # noqa: BLE001 - a corrupt step: restore_latest falls back
            return
        problem = first_difference(saved, flat_shapes(abstract_state))
        if problem:
            raise CheckpointMismatchError(
                f"{self.directory} step {step} was written by another model: {problem}. Resume with the config "
                f"the run was started with ({os.path.join(os.path.dirname(self.directory), 'config.json')}), "
                "or train in another --workdir")

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
        self.check_compatible(abstract_state)
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
        raise CheckpointUnreadableError(
            f"No checkpoint in {self.directory} could be restored (the unreadable ones were moved to "
            f"{os.path.join(os.path.dirname(self.directory), 'corrupt_checkpoints')}): " + "; ".join(errors)
            + ". Train in a new --workdir, or restore the files from a backup")

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
        """Block until pending async saves are on disk (CheckpointDiskFullError if one failed so)."""
        try:
            self._manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001
            full = self._full(err, getattr(self, "_pending", None))
            if full is not None:
                raise full from err
            raise

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        try:
            self.wait()
        finally:
            self._manager.close()


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton of a pytree of arrays, the target of a restore."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
