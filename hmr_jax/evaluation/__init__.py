"""Evaluation: predictors of meshes (trained or converted models, the mean-mesh baseline) run
over a prepared split, with the benchmark protocols' errors written as JSON and CSV.

* :mod:`~hmr_jax.evaluation.predictors` -- :class:`EvalPredictor`, :func:`load_predictor`,
  :func:`mean_mesh_predictor`, :func:`mean_training_mesh`.
* :mod:`~hmr_jax.evaluation.split` -- :func:`evaluate` on a split, :func:`format_table`.

``evaluate.py`` at the repository root is the command line.
"""
from hmr_jax.evaluation.predictors import (MODES, EvalPredictor, load_predictor, mean_mesh_predictor,
                                           mean_training_mesh)
from hmr_jax.evaluation.split import EVAL_LOCK_WAIT_S, evaluate, format_table, image_names

__all__ = ["EVAL_LOCK_WAIT_S", "MODES", "EvalPredictor", "evaluate", "format_table", "image_names",
           "load_predictor", "mean_mesh_predictor", "mean_training_mesh"]
