"""Rotations for host code: NumPy float64 (data preparation, the input pipeline's workers).

The same conventions as :mod:`hmr_jax.geometry.rotations` (radians, matrices acting on column
vectors ``x' = R @ x``, right-handed), computed with SciPy in float64 on any leading batch
shape. Kept apart from the JAX module so that the model code does not import SciPy and the
data workers do not trace JAX.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

#: Mirror in the x (left / right) axis.
_MIRROR_X = np.array([1.0, -1.0, -1.0])


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle (direction = axis, norm = angle, radians) -> (..., 3, 3) rotation matrices, float64."""
    aa = np.asarray(axis_angle, np.float64)
    return Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(aa.shape[:-1] + (3, 3))


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle, angle in [0, pi] radians, float64."""
    r = np.asarray(matrix, np.float64)
    return Rotation.from_matrix(r.reshape(-1, 3, 3)).as_rotvec().reshape(r.shape[:-2] + (3,))


def mirror_axis_angle(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle of rotations mirrored in the x (left / right) axis: ``M R M`` with
    M = diag(-1, 1, 1) (the rotation of the mirror image; dtype kept)."""
    aa = np.asarray(axis_angle)
    return aa * _MIRROR_X.astype(aa.dtype)


def rotation_about_z(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about the z axis (the camera axis: x right, y down)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_about_y(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about the y axis (vertical in the camera frame)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def euler_xyz_to_matrix(angles: np.ndarray) -> np.ndarray:
    """(3,) angles (x, y, z) in radians -> (3, 3) ``R = Rx @ Ry @ Rz`` (each about the fixed axis)."""
    x, y, z = angles
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rx @ ry @ rz
