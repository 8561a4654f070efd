"""Body models (SMPL, SMPL+H) in JAX, joint regressors, and fitting SMPL+H to meshes."""
from hmr_jax.body.model import BodyModel, BodyOutput, lbs, load_body_model, pose_to_matrices
from hmr_jax.body.model_io import BodyModelFileError, LAYOUT_HELP

__all__ = [
    "BodyModel",
    "BodyModelFileError",
    "BodyOutput",
    "LAYOUT_HELP",
    "lbs",
    "load_body_model",
    "pose_to_matrices",
]
