"""Training stages: what differs between Mesh-VQ-VAE, MEGA pre-training, MEGA and VQ-HPS.

A stage says which data it reads, how to initialise its variables and what its loss is; the
generic loop in ``hmr_jax.training.trainer`` does the rest (sharding, optimizer, checkpoints,
logging). ``config.stage`` names one of ``STAGES``; each lives in its own module, imported only
when used so that a stage whose model is not installed does not break the others.
"""
from __future__ import annotations

import dataclasses
import importlib

import flax.struct
from typing import Any, Mapping

import jax
import numpy as np

STAGES = {
    "toy": "hmr_jax.training.stages.toy:ToyStage",
    "mesh_vqvae": "hmr_jax.training.stages.mesh_vqvae:MeshVQVAEStage",
    "mega_pretrain": "hmr_jax.training.stages.mega:MegaPretrainStage",
    "mega": "hmr_jax.training.stages.mega:MegaStage",
    "vqhps": "hmr_jax.training.stages.vqhps:VQHPSStage",
}


@flax.struct.dataclass
class Variables:
    """A stage's trainable variables.

    params: trained by the optimizer. model_state: mutable collections updated by the forward
    pass (BatchNorm ``batch_stats``, the VQ codebook EMA ``vq_stats``), checkpointed with params.
    (Constants the loss reads but never changes, such as the frozen tokenizer, come from
    ``Stage.frozen()`` instead and are not checkpointed.)
    """

    params: Any
    model_state: Any = dataclasses.field(default_factory=dict)


@flax.struct.dataclass
class LossOutput:
    """What ``Stage.loss`` returns besides the scalar loss.

    terms: named scalar loss terms (each is logged). model_state: the updated mutable
    collections. valid: False when the original would have skipped this step (for example a
    MEGA batch with no masked token, whose cross-entropy the original finds NaN and drops).
    """

    terms: Mapping[str, jax.Array]
    model_state: Any
    valid: jax.Array | bool = True


class Stage:
    """Base class of a training stage; subclasses override the methods below.

    Examples are dicts of numpy arrays; a batch is the same dict with a leading batch axis
    (sharded over devices by the trainer).
    """

    name = "stage"

    def __init__(self, config):
        self.config = config

    # -- data ---------------------------------------------------------------------------
    def train_source(self):
        """Random-access training examples (a ``grain.MapDataset`` or a sequence)."""
        raise NotImplementedError

    def val_source(self):
        """Validation examples (same kinds), or None for no periodic validation."""
        return None

    def augment(self, example: dict, rng: np.random.Generator) -> dict:
        """Per-example random augmentation (applied to training data only)."""
        return example

    # Stages with their own Grain pipelines (hmr_jax.data) define instead:
    #   train_pipeline(local_batch, seed) -> (grain IterDataset of local batches, steps_per_epoch)
    #   val_batches(local_batch) -> iterable of local batches, or None

    def frozen(self) -> Any:
        """Constant pytree passed to ``loss`` / ``validate`` (frozen tokenizer, regressors)."""
        return {}

    # -- model --------------------------------------------------------------------------
    def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> Variables:
        """Initial variables for a batch of the training shapes (called under ``jax.jit``)."""
        raise NotImplementedError

    def loss(self, params, model_state, frozen, batch, rng: jax.Array,
             step: jax.Array) -> tuple[jax.Array, LossOutput]:
        """Scalar training loss of ``batch`` and its ``LossOutput`` (pure, traced by jit)."""
        raise NotImplementedError

    def validate(self, params, model_state, frozen, batch) -> Mapping[str, jax.Array]:
        """Per-sample validation metrics ``{name: (B,)}`` (averaged by the trainer)."""
        return {}


def get_stage(config) -> Stage:
    """Instantiate the stage ``config.stage`` with ``config``."""
    name = config.stage
    if name not in STAGES:
        raise ValueError(f"config.stage={name!r} is unknown; choose one of {sorted(STAGES)}")
    module_name, cls_name = STAGES[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"Stage {name!r} cannot be loaded ({err}). Its model or data module "
                          "may not be installed yet.") from err
    return getattr(module, cls_name)(config)
