"""Body models (SMPL, SMPL+H) in JAX, joint regressors, and fitting SMPL+H to meshes.

``load_body_model(path, gender=...)`` reads ``body_models/smplh/{neutral,m,f}/model.npz`` (or an
SMPL ``.pkl``, chumpy objects included) and returns a callable, jit-compiled model:
``model(betas=..., body_pose=..., global_orient=..., transl=...)`` -> vertices (B, 6890, 3) and
joints (B, J, 3) in meters.
"""
from hmr_jax.body.fit import FitResult, fit_to_vertices, initial_pose
from hmr_jax.body.model import BodyModel, BodyOutput, lbs, load_body_model, pose_to_matrices, vertex_subset
from hmr_jax.body.model_io import LAYOUT_HELP, BodyModelFileError, read_body_model_file
from hmr_jax.body.regressors import (
    H36M_TO_J14,
    H36M_TO_J17,
    JOINT_LAYOUTS,
    JointLayout,
    JointLayoutError,
    JointRegressorError,
    JointRegressors,
    fit_joint_regressor,
    load_joint_regressor,
    load_joint_regressors,
    regress_joints,
)

__all__ = [
    "BodyModel",
    "BodyModelFileError",
    "BodyOutput",
    "FitResult",
    "H36M_TO_J14",
    "H36M_TO_J17",
    "JOINT_LAYOUTS",
    "JointLayout",
    "JointLayoutError",
    "JointRegressorError",
    "JointRegressors",
    "LAYOUT_HELP",
    "fit_joint_regressor",
    "fit_to_vertices",
    "initial_pose",
    "lbs",
    "load_body_model",
    "load_joint_regressor",
    "load_joint_regressors",
    "pose_to_matrices",
    "read_body_model_file",
    "regress_joints",
    "vertex_subset",
]
