"""Fields every training config has (``configs/train_*.py`` start from ``base_config()``).

Override any of them on the command line: ``--config.batch_size=64 --config.optim.base_lr=2e-4``.
"""
from __future__ import annotations

import importlib.util
import os

import ml_collections


def load_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """The ``get_config()`` of a config file (``configs/NAME.py``), as ``train.py --config`` reads it.

    Raises FileNotFoundError naming the file when it does not exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist (configs/NAME.py of the repository)")
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by all stages; a stage config sets ``stage``, ``optim`` and its own keys."""
    c = ml_collections.ConfigDict()
    c.stage = ""
    c.seed = 0
    c.batch_size = 16            # global: all devices of all hosts
    c.total_steps = 1000
    c.log_every_steps = 50
    c.eval_every_steps = 0       # 0 = no periodic validation
    c.eval_batches = 10
    c.num_devices = 0            # 0 = every device
    c.progress_bar = True
    c.tensorboard = True
    c.dtype = "float32"          # computation dtype of the models that support it (bfloat16)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"
    c.optim.base_lr = 1e-3
    c.optim.scale_by_batch = False
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.schedule = "constant"
    c.optim.warmup_epochs = 0.0
    c.optim.total_epochs = 1.0
    c.optim.per_epoch = True
    c.optim.step_epochs = 100
    c.optim.gamma = 0.1
    c.optim.grad_clip_norm = 0.0

    c.sharding = ml_collections.ConfigDict()
    c.sharding.params = "replicated"  # or "fsdp"
    c.sharding.min_size = 2 ** 14      # fsdp: smaller arrays stay replicated

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 500
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True

    c.data = ml_collections.ConfigDict()
    c.data.workers = 0           # Grain worker processes (0: in the main process)
    c.data.read_threads = 0
    c.data.prefetch = 0
    c.data.crop_size = 0         # image stages: square crop side in pixels (0 = the backbone's)
    c.data.rotation_factor = 30.0  # image stages, with augment: in-plane rotation (degrees, 0 = none)
    c.data.skip_bad_records = False  # True: a corrupt record is replaced by the next good one (counted
    #                                  in metrics.jsonl as skipped_records); False: training stops naming it

    c.distributed = ml_collections.ConfigDict()
    c.distributed.auto = False   # True: jax.distributed.initialize() discovers the hosts
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 1
    c.distributed.process_id = 0
    return c
