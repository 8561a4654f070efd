"""Training stages: what differs between Mesh-VQ-VAE, MEGA pre-training, MEGA and VQ-HPS.

``config.stage`` names one of :data:`STAGES`; each is a :class:`~hmr_jax.training.stages.base.Stage`
(the contract every stage implements, in :mod:`hmr_jax.training.stages.base`) in its own module.
"""
from __future__ import annotations

from hmr_jax.training.stages.base import LossOutput, Stage, StepDraws, Variables
from hmr_jax.training.stages.mega import MegaPretrainStage, MegaStage
from hmr_jax.training.stages.mesh_vqvae import MeshVQVAEStage
from hmr_jax.training.stages.toy import ToyStage
from hmr_jax.training.stages.vqhps import VQHPSStage

#: ``config.stage`` -> the stage class
STAGES: dict[str, type[Stage]] = {cls.name: cls for cls in (
    ToyStage, MeshVQVAEStage, MegaPretrainStage, MegaStage, VQHPSStage)}

__all__ = ["STAGES", "LossOutput", "Stage", "StepDraws", "Variables", "get_stage"]


def get_stage(config) -> Stage:
    """Instantiate the stage ``config.stage`` with ``config``."""
    name = config.stage
    if name not in STAGES:
        raise ValueError(f"config.stage={name!r} is unknown; choose one of {sorted(STAGES)}")
    return STAGES[name](config)
