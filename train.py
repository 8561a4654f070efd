"""Train any stage: ``python train.py --config configs/NAME.py[:ARG] --workdir DIR [--config.key=value]``.

Stages (one config file each): ``configs/train_mesh_vqvae.py`` (the tokenizer),
``configs/train_mega_pretrain.py`` (MEGA's VQMAE on meshes), ``configs/train_mega.py:{hrnet,resnet,vit}``,
``configs/train_vqhps.py:{hrnet,resnet}``, and ``configs/train_toy.py`` (a seconds-long check).
A run resumes from the latest checkpoint in ``--workdir`` automatically. Several hosts: set
``--config.distributed.auto=True`` (TPU pods, SLURM) or the explicit coordinator fields.
"""
from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from hmr_jax.errors import command_line
from hmr_jax.training.trainer import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/train_*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics.jsonl and TensorBoard.")
flags.mark_flags_as_required(["config", "workdir"])


@command_line
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file it writes at INFO
    summary = train(FLAGS.config, FLAGS.workdir)
    state = "preempted, checkpoint saved" if summary["preempted"] else "done"
    print(f"train.py: {state} at step {summary['step']}; workdir {FLAGS.workdir}")


if __name__ == "__main__":
    app.run(main)
