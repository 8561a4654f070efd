"""Fields every training config has (``configs/train_*.py`` start from ``base_config()``), and
``load_config``, the one way to read a config file in Python.

Override any of them on the command line: ``--config.batch_size=64 --config.optim.base_lr=2e-4``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os

import ml_collections


def load_config(path_or_name: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of a config, as ``train.py --config PATH[:ARG]`` reads it.

    Args:
      path_or_name: a file (``configs/train_mega.py``) or the name of a module of the
        ``configs`` package (``train_mega``); ``NAME:ARG`` / ``PATH:ARG`` gives the argument as
        on the command line.
      arg: the config argument (``"hrnet"`` for ``configs/train_mega.py:hrnet``); None calls
        ``get_config()`` without one.
    Raises:
      FileNotFoundError naming the file or name when there is no such config;
      ModuleNotFoundError when the ``configs`` package a config file imports is not importable;
      ValueError (from the config) for an argument it does not take.
    """
    text = os.fspath(path_or_name)
    if arg is None and ":" in text:
        text, arg = text.split(":", 1)
    if text.endswith(".py") or os.sep in text:
        if not os.path.isfile(text):
            raise FileNotFoundError(f"config file {text!r} does not exist (configs/NAME.py of the repository)")
        name = os.path.splitext(os.path.basename(text))[0]
        spec = importlib.util.spec_from_file_location(f"config_{name}", text)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except ModuleNotFoundError as err:
            if err.name != "configs":
                raise
            raise ModuleNotFoundError(f"{text} imports the configs package, which is not importable here "
                                      "(run from the repository root, or pip install the repository)",
                                      name="configs") from err
    else:
        if importlib.util.find_spec("configs") is None or importlib.util.find_spec(f"configs.{text}") is None:
            raise FileNotFoundError(f"no config named {text!r}: configs/{text}.py of the repository (run from "
                                    "the repository root, or pip install the repository)")
        module = importlib.import_module(f"configs.{text}")
    return module.get_config() if arg is None else module.get_config(arg)


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
    c.data.read_threads = 0      # the toy stage: threads reading examples ahead
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
