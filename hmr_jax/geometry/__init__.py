"""Geometry shared by every model: rotations (JAX: :mod:`~hmr_jax.geometry.rotations`; NumPy float64 for
host code: :mod:`~hmr_jax.geometry.rotations_np`), cameras, vertex normals (:mod:`~hmr_jax.geometry.normals`)."""
from hmr_jax.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
    rotation_from_covariance,
)
from hmr_jax.geometry.cameras import (
    CROP_SIZE,
    FOCAL_LENGTH,
    cam_crop_to_full,
    full_image_focal_length,
    normalized_to_pixels,
    perspective_projection,
    pixels_to_normalized,
    weak_perspective_projection,
    weak_perspective_to_translation,
)

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_rotation_6d",
    "rotation_6d_to_matrix",
    "rotation_from_covariance",
    "CROP_SIZE",
    "FOCAL_LENGTH",
    "cam_crop_to_full",
    "full_image_focal_length",
    "normalized_to_pixels",
    "perspective_projection",
    "pixels_to_normalized",
    "weak_perspective_projection",
    "weak_perspective_to_translation",
]
