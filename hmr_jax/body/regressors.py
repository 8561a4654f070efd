"""Joint regressors: meshes (B, V, 3) -> joints (B, J, 3), as the original evaluation uses them.

V = 6890 for SMPL meshes; the vertex count follows the regressor files (other topologies work).

Files (``body_models/`` beside the code, as the original instructions name them):

* ``J_regressor_h36m.npy``: (17, 6890), the 17 Human3.6M joints in H36M order (the file of
  SPIN / mmhuman3d). ``H36M_TO_J14`` picks the 14 joints the field reports on 3DPW.
* ``J_regressor_24.npy``: (24, 6890), SMPL's 24 joints. The original README says to take it
  from ``smplh/m/model.npz``, but that array has the 52 SMPL+H rows; the original code needs
  24 rows (its 3DPW reprojection loss compares with 24 keypoints). Extract a 24-row
  regressor from an SMPL model file with ``python -m hmr_jax.body.regressors SMPL.pkl OUT.npy``.
"""
from __future__ import annotations

import argparse
import os
import pathlib

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.errors import UserError
from hmr_jax.files import atomic_open
from hmr_jax.safe_read import read_npy

# H36M regressor rows in the order of the 17 evaluation joints (SPIN's convention, also
# MEGA / VQ-HPS `H36M_TO_J17`); its first 14 are the LSP-style joints used on 3DPW.
H36M_TO_J17 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
H36M_TO_J14 = H36M_TO_J17[:14]
H36M_PELVIS = 0  # row of the H36M regressor that is the pelvis
SMPL_PELVIS = 0  # joint 0 of SMPL's 24
NUM_VERTICES = 6890


#: the largest regressor file accepted ((24, 6890) float64 is 1.3 MB)
MAX_REGRESSOR_BYTES = 1 << 30


class JointRegressorError(UserError, ValueError):
    """A joint regressor file is missing or has the wrong shape."""


def load_joint_regressor(path: str | os.PathLike, num_joints: int, num_vertices: int | None = None) -> np.ndarray:
    """Load a ``(num_joints, V)`` regressor from ``.npy`` with shape checks.

    Args:
      path: ``.npy`` file.
      num_joints: expected rows (17 for H36M, 24 for SMPL).
      num_vertices: expected columns V (6890 for SMPL meshes), or None to take V from the file
        (any mesh topology).
    Returns:
      float32 NumPy array (num_joints, V).
    Raises:
      FileNotFoundError, JointRegressorError: naming the file and the fix.
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"joint regressor {p} not found; put J_regressor_h36m.npy (17 x 6890) and J_regressor_24.npy "
            "(24 x 6890) in body_models/ as the original instructions describe"
        )
    reg = read_npy(p, JointRegressorError, MAX_REGRESSOR_BYTES)
    if not (np.issubdtype(reg.dtype, np.floating) or np.issubdtype(reg.dtype, np.integer)):
        raise JointRegressorError(f"{p} holds {reg.dtype} values: a joint regressor is a real (float) matrix")
    if reg.ndim != 2:
        raise JointRegressorError(f"{p} has shape {reg.shape}: a joint regressor is a (joints, vertices) matrix")
    nv = reg.shape[1] if num_vertices is None else int(num_vertices)
    if reg.shape == (52, nv) and num_joints == 24:
        raise JointRegressorError(
            f"{p} has shape (52, {nv}): the SMPL+H 52-joint regressor (what "
            "`unzip smplh/m/model.npz J_regressor.npy` gives), not SMPL's 24 joints. Write a 24-row one "
            "from an SMPL model file: python -m hmr_jax.body.regressors SMPL_NEUTRAL.pkl " + str(p)
        )
    if reg.shape != (num_joints, nv):
        fix = "" if reg.shape[0] != num_joints else (
            f"; the regressor is for a {reg.shape[1]}-vertex mesh but the meshes have {nv} vertices: "
            "use the regressor of the same mesh topology")
        raise JointRegressorError(f"{p} has shape {reg.shape}, expected ({num_joints}, {nv}){fix}")
    reg = reg.astype(np.float32)
    if not np.all(np.isfinite(reg)):
        raise JointRegressorError(f"{p} contains NaN or infinite values (or values beyond float32)")
    return reg


@flax.struct.dataclass
class JointRegressors:
    """The regressors the metrics need (a pytree: pass it into jitted functions).

    Attributes:
      h36m: (17, V) Human3.6M regressor, H36M row order.
      smpl24: (24, V) SMPL regressor, or None when not loaded.
    """

    h36m: jax.Array
    smpl24: jax.Array | None = None


def load_joint_regressors(body_models_dir: str | os.PathLike = "body_models", require_smpl24: bool = False,
                          num_vertices: int | None = None) -> JointRegressors:
    """Load ``J_regressor_h36m.npy`` and (if present or required) ``J_regressor_24.npy``.

    The vertex count V follows the files (6890 for SMPL; any topology works): both regressors
    must agree on it, and with ``num_vertices`` when given.

    Args:
      body_models_dir: folder holding the two files.
      require_smpl24: fail when ``J_regressor_24.npy`` is absent (needed for EMDB's standard protocol).
      num_vertices: the vertex count of the meshes they will be applied to, or None (any).
    Returns:
      ``JointRegressors`` with h36m (17, V) and smpl24 (24, V) or None.
    Raises:
      FileNotFoundError, JointRegressorError: a file is missing, malformed, or the vertex counts
      disagree (the message names both files and their counts).
    """
    d = pathlib.Path(body_models_dir)
    h36m = load_joint_regressor(d / "J_regressor_h36m.npy", 17, num_vertices)
    p24 = d / "J_regressor_24.npy"
    smpl24 = None
    if require_smpl24 or p24.exists():
        smpl24 = load_joint_regressor(p24, 24, num_vertices)
        if smpl24.shape[1] != h36m.shape[1]:
            raise JointRegressorError(
                f"{d / 'J_regressor_h36m.npy'} is for {h36m.shape[1]} vertices but {p24} for "
                f"{smpl24.shape[1]}: both joint regressors must belong to the same mesh topology")
    return JointRegressors(h36m=jnp.asarray(h36m), smpl24=None if smpl24 is None else jnp.asarray(smpl24))


def regress_joints(regressor: jax.Array, vertices: jax.Array) -> jax.Array:
    """Joints as weighted sums of vertices.

    Args:
      regressor: (J, V).
      vertices: (..., V, 3), meters.
    Returns:
      (..., J, 3), meters.
    """
    return jnp.einsum("jv,...vk->...jk", regressor, vertices)


def write_smpl24_regressor(model_file: str | os.PathLike, out: str | os.PathLike) -> np.ndarray:
    """Save the (24, 6890) joint regressor of an SMPL model file (.pkl, chumpy or not) as ``.npy``.

    Written to a temporary name then renamed. Returns the array.
    """
    from hmr_jax.body.model_io import read_body_model_file

    arrays = read_body_model_file(model_file)
    if arrays.kind != "smpl":
        raise JointRegressorError(
            f"{model_file} is an {arrays.kind} model with {arrays.J_regressor.shape[0]} joints; SMPL's 24-joint "
            "regressor comes from an SMPL model file (SMPL_NEUTRAL.pkl or basicModel_*_lbs_10_207_0_v1.0.0.pkl)"
        )
    reg = arrays.J_regressor.astype(np.float32)
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    with atomic_open(out, "wb") as fh:
        np.save(fh, reg)
    return reg


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m hmr_jax.body.regressors SMPL_MODEL.pkl body_models/J_regressor_24.npy``."""
    parser = argparse.ArgumentParser(description="Extract SMPL's 24-joint regressor from an SMPL model file.")
    parser.add_argument("model_file", help="SMPL .pkl (chumpy objects are fine)")
    parser.add_argument("out", help="destination .npy, e.g. body_models/J_regressor_24.npy")
    args = parser.parse_args(argv)
    reg = write_smpl24_regressor(args.model_file, args.out)
    print(f"wrote {args.out}: {reg.shape}")


if __name__ == "__main__":
    main()
