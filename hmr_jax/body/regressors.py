"""Joint regressors: meshes (B, V, 3) -> joints (B, J, 3), as the original evaluation uses them.

V = 6890 for SMPL meshes; the vertex count follows the regressor files (other topologies work).

A regressor file is named by its joint layout (:data:`JOINT_LAYOUTS`, keyed like the records'
``keypoints_kind``; files in ``body_models/`` beside the code, as the original instructions name
them):

* ``J_regressor_h36m.npy`` (layout ``h36m17``): (17, 6890), the 17 Human3.6M joints in H36M order
  (the file of SPIN / mmhuman3d). Records of kind ``h36m17`` hold their keypoints in the
  originals' J17 order: regressor rows ``H36M_TO_J17``. ``H36M_TO_J14`` picks the 14 joints
  the field reports on 3DPW.
* ``J_regressor_coco17.npy`` (layout ``coco17``): (17, V), the 17 COCO keypoints, in COCO order
  (bodies without an H36M regressor, e.g. the synthetic Anny data: fitted with
  :func:`fit_joint_regressor`).
* ``J_regressor_24.npy`` (layout ``smpl24``): (24, 6890), SMPL's 24 joints. The original README
  says to take it from ``smplh/m/model.npz``, but that array has the 52 SMPL+H rows; the
  original code needs 24 rows (its 3DPW reprojection loss compares with 24 keypoints). Extract a
  24-row regressor from an SMPL model file with ``python -m hmr_jax.body.regressors SMPL.pkl OUT.npy``.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
from typing import Iterable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.body.model_io import read_body_model_file
from hmr_jax.cli import parse_command
from hmr_jax.errors import UserError, command_line
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


class JointLayoutError(JointRegressorError):
    """A regressor of one joint layout was paired with keypoints of another; the message names both."""


@dataclasses.dataclass(frozen=True)
class JointLayout:
    """A joint set: the records' ``keypoints_kind`` and the regressor that gives its joints.

    Attributes:
      kind: the name (``h36m17``, ``coco17``, ``smpl24``), as the records' ``keypoints_kind``.
      description: in words, for messages.
      file: the regressor file in ``body_models/``.
      num_joints: rows of the regressor.
      keypoint_order: regressor rows in the order of the records' keypoints of this kind (None:
        the same order).
    """

    kind: str
    description: str
    file: str
    num_joints: int
    keypoint_order: tuple[int, ...] | None = None


JOINT_LAYOUTS = {
    "h36m17": JointLayout("h36m17", "Human3.6M-17", "J_regressor_h36m.npy", 17, H36M_TO_J17),
    "coco17": JointLayout("coco17", "COCO-17", "J_regressor_coco17.npy", 17),
    "smpl24": JointLayout("smpl24", "SMPL-24", "J_regressor_24.npy", 24),
}


def joint_layout(kind: str) -> JointLayout:
    """The :class:`JointLayout` named ``kind`` (a ``keypoints_kind``); JointLayoutError otherwise."""
    if kind not in JOINT_LAYOUTS:
        raise JointLayoutError(f"unknown joint layout {kind!r}; the layouts are {sorted(JOINT_LAYOUTS)}")
    return JOINT_LAYOUTS[kind]


def regressor_path(body_models_dir: str | os.PathLike, kind: str) -> pathlib.Path:
    """The regressor file of layout ``kind`` in ``body_models_dir`` (e.g. ``J_regressor_h36m.npy``)."""
    return pathlib.Path(body_models_dir) / joint_layout(kind).file


def layout_of_file(path: str | os.PathLike) -> str | None:
    """The layout a regressor file's name says (``J_regressor_coco17.npy`` -> ``coco17``), or None."""
    name = pathlib.Path(path).name
    return next((k for k, layout in JOINT_LAYOUTS.items() if layout.file == name), None)


def joints17_layout(keypoints_kinds: Iterable[str]) -> JointLayout:
    """The 17-joint layout that datasets of these ``keypoints_kind`` s are compared with.

    ``coco17`` records: COCO-17; every other kind (``h36m17``; ``smpl24`` sets, 3DPW / EMDB, whose
    17-joint metrics are the H36M regressor's): Human3.6M-17. Raises JointLayoutError when
    COCO-17 and Human3.6M-17 records are mixed (one batch compares one 17-joint layout).
    """
    kinds = set(keypoints_kinds)
    for k in kinds:
        joint_layout(k)
    if {"coco17", "h36m17"} <= kinds:
        raise JointLayoutError("the datasets mix coco17 (COCO-17) and h36m17 (Human3.6M-17) keypoints; train "
                               "or evaluate one 17-joint layout at a time")
    return JOINT_LAYOUTS["coco17" if "coco17" in kinds else "h36m17"]


def keypoint_regressor(regressor: np.ndarray, regressor_kind: str, keypoints_kind: str) -> np.ndarray:
    """A regressor's rows in the order of the records' keypoints of ``keypoints_kind``.

    Args:
      regressor: (J, V), of layout ``regressor_kind`` (its file's rows).
      regressor_kind, keypoints_kind: layout names (:data:`JOINT_LAYOUTS`).
    Returns:
      (J, V): row k regresses the records' keypoint k.
    Raises:
      JointLayoutError: the two layouts differ (naming both), or the regressor has the wrong rows.
    """
    if regressor_kind != keypoints_kind:
        have, want = joint_layout(regressor_kind), joint_layout(keypoints_kind)
        raise JointLayoutError(
            f"the keypoints are {want.kind} ({want.description}) but the joint regressor is {have.kind} "
            f"({have.description}): their joints differ; use the {want.description} regressor ({want.file})")
    layout = joint_layout(keypoints_kind)
    regressor = np.asarray(regressor)
    if regressor.ndim != 2 or regressor.shape[0] != layout.num_joints:
        raise JointLayoutError(f"a {layout.kind} ({layout.description}) regressor has {layout.num_joints} rows, "
                               f"got shape {regressor.shape}")
    return regressor if layout.keypoint_order is None else regressor[list(layout.keypoint_order)]


def load_layout_regressor(body_models_dir: str | os.PathLike, kind: str,
                          num_vertices: int | None = None) -> np.ndarray:
    """The regressor of layout ``kind`` from ``body_models_dir`` (:func:`load_joint_regressor`).

    Raises:
      JointLayoutError: the file is missing but the folder holds a 17-joint regressor of another
        layout (the message names both); FileNotFoundError / JointRegressorError otherwise.
    """
    layout = joint_layout(kind)
    path = regressor_path(body_models_dir, kind)
    if not path.is_file():
        others = [o for o in JOINT_LAYOUTS.values() if o.kind != kind and o.num_joints == layout.num_joints
                  and regressor_path(body_models_dir, o.kind).is_file()]
        if others:
            o = others[0]
            raise JointLayoutError(
                f"{path} not found: {layout.kind} ({layout.description}) joints need their own regressor; "
                f"{o.file} in that folder is {o.kind} ({o.description}), another joint layout. Put the "
                f"{layout.description} regressor there as {layout.file}"
                + (" (fit one with hmr_jax.body.regressors.fit_joint_regressor)" if kind == "coco17" else ""))
    return load_joint_regressor(path, layout.num_joints, num_vertices)


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
            "(24 x 6890) in body_models/ as the original instructions describe (J_regressor_coco17.npy "
            "for datasets with COCO keypoints)"
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
      h36m: (17, V) Human3.6M regressor, H36M row order, or None for bodies that have none.
      smpl24: (24, V) SMPL regressor, or None when not loaded.
      coco17: (17, V) COCO-17 regressor, COCO order: the 17 joints of datasets with COCO
        keypoints (used when ``h36m`` is None), or None.
    """

    h36m: jax.Array | None = None
    smpl24: jax.Array | None = None
    coco17: jax.Array | None = None


def load_joint_regressors(body_models_dir: str | os.PathLike = "body_models", require_smpl24: bool = False,
                          num_vertices: int | None = None, joints17: str = "h36m17") -> JointRegressors:
    """Load the 17-joint regressor (``J_regressor_h36m.npy``, or ``J_regressor_coco17.npy`` with
    ``joints17="coco17"``) and (if present or required) ``J_regressor_24.npy``.

    The vertex count V follows the files (6890 for SMPL; any topology works): both regressors
    must agree on it, and with ``num_vertices`` when given.

    Args:
      body_models_dir: folder holding the files.
      require_smpl24: fail when ``J_regressor_24.npy`` is absent (needed for EMDB's standard protocol).
      num_vertices: the vertex count of the meshes they will be applied to, or None (any).
      joints17: the 17-joint layout (``h36m17`` or ``coco17``; :func:`joints17_layout` of the data).
    Returns:
      ``JointRegressors`` with h36m (17, V) (or coco17) and smpl24 (24, V) or None.
    Raises:
      FileNotFoundError, JointRegressorError: a file is missing, malformed, or the vertex counts
      disagree (the message names both files and their counts).
    """
    if joint_layout(joints17).num_joints != 17:
        raise JointLayoutError(f"joints17={joints17!r} is not a 17-joint layout (h36m17 or coco17)")
    d = pathlib.Path(body_models_dir)
    reg17 = load_layout_regressor(d, joints17, num_vertices)
    p24 = regressor_path(d, "smpl24")
    smpl24 = None
    if require_smpl24 or p24.exists():
        smpl24 = load_joint_regressor(p24, 24, num_vertices)
        if smpl24.shape[1] != reg17.shape[1]:
            raise JointRegressorError(
                f"{regressor_path(d, joints17)} is for {reg17.shape[1]} vertices but {p24} for "
                f"{smpl24.shape[1]}: both joint regressors must belong to the same mesh topology")
    return JointRegressors(**{"h36m" if joints17 == "h36m17" else "coco17": jnp.asarray(reg17)},
                           smpl24=None if smpl24 is None else jnp.asarray(smpl24))


def regress_joints(regressor: jax.Array, vertices: jax.Array) -> jax.Array:
    """Joints as weighted sums of vertices.

    Args:
      regressor: (J, V).
      vertices: (..., V, 3), meters.
    Returns:
      (..., J, 3), meters.
    """
    return jnp.einsum("jv,...vk->...jk", regressor, vertices)


def fit_joint_regressor(vertices: np.ndarray, joints: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Linear joint regressor ``W`` (J, V) with ``W @ vertices ~ joints``, rows summing to 1.

    Least squares over all examples and coordinates, with a ridge term (``ridge`` times the mean
    diagonal of the normal matrix) and the affine constraint as a heavily weighted equation, so
    that translating a mesh translates its joints. (How the synthetic data's COCO-17 regressor,
    ``J_regressor_coco17.npy``, is made.)

    Args:
      vertices: (N, V, 3) meshes, m.
      joints: (N, J, 3) joints of the same examples, same frame, m.
    Returns:
      (J, V) float64.
    """
    vertices = np.asarray(vertices, np.float64)
    joints = np.asarray(joints, np.float64)
    if vertices.ndim != 3 or joints.ndim != 3 or vertices.shape[0] != joints.shape[0]:
        raise ValueError(f"need (N, V, 3) vertices and (N, J, 3) joints, got {vertices.shape}, {joints.shape}")
    nv = vertices.shape[1]
    a = np.transpose(vertices, (0, 2, 1)).reshape(-1, nv)     # (3N, V)
    b = np.transpose(joints, (0, 2, 1)).reshape(-1, joints.shape[1])   # (3N, J)
    ata = a.T @ a
    lam = ridge * np.trace(ata) / nv
    mu = 1e3 * np.trace(ata) / nv
    ones = np.ones((nv, 1))
    lhs = ata + lam * np.eye(nv) + mu * (ones @ ones.T)
    rhs = a.T @ b + mu * ones @ np.ones((1, joints.shape[1]))
    return np.linalg.solve(lhs, rhs).T


def write_smpl24_regressor(model_file: str | os.PathLike, out: str | os.PathLike) -> np.ndarray:
    """Save the (24, 6890) joint regressor of an SMPL model file (.pkl, chumpy or not) as ``.npy``.

    Written to a temporary name then renamed. Returns the array.
    """
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


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m hmr_jax.body.regressors SMPL_MODEL.pkl body_models/J_regressor_24.npy``;
    0 on success; a bad file is one ``error:`` line (exit status 2)."""
    args = parse_command(argv, lambda fv: None, "python -m hmr_jax.body.regressors",
                         "python -m hmr_jax.body.regressors SMPL_MODEL OUT.npy\n\nExtract SMPL's 24-joint "
                         "regressor from an SMPL model file (.pkl, chumpy objects are fine) into OUT.npy.",
                         positional="paths")
    if args is None:   # --help
        return 0
    if len(args.paths) != 2:
        raise ValueError(f"expected SMPL_MODEL and OUT.npy, got {len(args.paths)} argument(s) "
                         "(see python -m hmr_jax.body.regressors --help)")
    model_file, out = args.paths
    reg = write_smpl24_regressor(model_file, out)
    print(f"wrote {out}: {reg.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
