"""Evaluate a model on a prepared split: a table of PVE, MPJPE, PA-MPJPE (mm), JSON and CSV.

    python evaluate.py --checkpoint runs/mega_hrnet --split 3dpw_test
    python evaluate.py --checkpoint runs/mega_hrnet --split emdb --mode stochastic --num-samples 25
    python evaluate.py --config configs/train_mega.py:hrnet --checkpoint converted/mega_hrnet \\
        --split datasets/3dpw_test --protocol standard
    python evaluate.py --mode mean_mesh --mean-mesh mean.npy --split 3dpw_test   # trivial baseline

``--checkpoint``: a ``train.py`` workdir (latest checkpoint; its config is reused) or a converted
released checkpoint (then ``--config`` names the matching ``configs/train_*.py`` for the
tokenizer, body models and crop). ``--split``: a dataset folder, or a name under
``--data-root`` (default ``datasets``). Results go to ``--out`` (default
``CHECKPOINT/eval/SPLIT_MODE_PROTOCOL``): ``summary.json`` and ``per_image.csv``.
"""
from __future__ import annotations

import json
import os

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from hmr_jax import evaluation
from hmr_jax.errors import command_line
from hmr_jax.safe_read import read_npy

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config (needed for converted checkpoints).",
                                lock_config=False)
flags.DEFINE_string("checkpoint", None, "train.py workdir or converted checkpoint folder.")
flags.DEFINE_string("split", None, "Dataset folder, or its name under --data-root (3dpw_test, emdb, ...).")
flags.DEFINE_string("data-root", "datasets", "Where named splits live.")
flags.DEFINE_enum("mode", "deterministic", ["deterministic", "stochastic", "mean_mesh"], "Prediction mode.")
flags.DEFINE_integer("num-samples", 25, "Hypotheses per image (stochastic mode).")
flags.DEFINE_integer("steps", 5, "Decoding steps (stochastic mode).")
flags.DEFINE_float("temperature", 1.0, "Initial sampling temperature (stochastic mode).")
flags.DEFINE_enum("protocol", "original", ["original", "standard"], "Metric protocol.")
flags.DEFINE_string("dataset", "", "3dpw or emdb joints for the standard protocol (default: from --split).")
flags.DEFINE_string("body-models", "", "Folder with the joint regressors (default: the config's).")
flags.DEFINE_string("mean-mesh", "", "(V, 3) .npy mesh for --mode mean_mesh.")
flags.DEFINE_string("backbone", "hrnet", "Crop for --mode mean_mesh (hrnet / resnet / vit).")
flags.DEFINE_integer("batch-size", 16, "Images per batch.")
flags.DEFINE_integer("seed", 0, "Seed of the stochastic hypotheses.")
flags.DEFINE_string("out", "", "Output folder.")
flags.mark_flags_as_required(["split"])


@command_line
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    absl_logging.set_verbosity(absl_logging.WARNING)

    split = FLAGS.split if os.path.isdir(FLAGS.split) else os.path.join(FLAGS["data-root"].value, FLAGS.split)
    if not os.path.isdir(split):
        raise FileNotFoundError(f"split {FLAGS.split!r} is neither a folder nor {split!r}; prepare it with "
                                "data_prep/ or pass the folder")
    name = os.path.basename(os.path.normpath(split))
    dataset = FLAGS.dataset or ("emdb" if "emdb" in name.lower() else "3dpw")
    config = FLAGS.config
    if FLAGS.mode == "mean_mesh":
        if not FLAGS["mean-mesh"].value:
            raise ValueError("--mode mean_mesh needs --mean-mesh MESH.npy")
        predictor = evaluation.mean_mesh_predictor(read_npy(FLAGS["mean-mesh"].value, ValueError), FLAGS.backbone)
        base = os.path.dirname(os.path.abspath(FLAGS["mean-mesh"].value))
    else:
        if not FLAGS.checkpoint:
            raise ValueError("--checkpoint is required (a train.py workdir or a converted folder)")
        predictor = evaluation.load_predictor(FLAGS.checkpoint, FLAGS.mode, config, FLAGS["num-samples"].value,
                                              FLAGS.steps, FLAGS.temperature)
        base = FLAGS.checkpoint
    body_models = FLAGS["body-models"].value or (config.get("body_models") if config else None)
    if not body_models and FLAGS.checkpoint and os.path.isfile(os.path.join(FLAGS.checkpoint, "config.json")):
        body_models = json.load(open(os.path.join(FLAGS.checkpoint, "config.json"))).get("body_models")
    body_models = body_models or "body_models"
    out = FLAGS.out or os.path.join(base, "eval", f"{name}_{FLAGS.mode}_{FLAGS.protocol}")
    summary = evaluation.evaluate(predictor, split, out, body_models, FLAGS.protocol, dataset,
                                  FLAGS["batch-size"].value, FLAGS.seed)
    print(evaluation.format_table(summary))
    print(f"written: {out}/summary.json, {out}/per_image.csv")


if __name__ == "__main__":
    app.run(main)
