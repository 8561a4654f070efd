"""Cameras with the original projects' conventions (MEGA / VQ-HPS).

The models predict ``cam = (s, tx, ty)`` per image, a weak-perspective camera for the square
224 x 224 crop: a 3D point X (meters) lands at ``x = s * (X[:2] + (tx, ty))`` in normalised
crop coordinates, where [-1, 1] spans the crop (the datasets store 2D keypoints as
``2 * pixel / 224 - 1``; ``reprojection_loss`` compares that with L1). Image axes: x right,
y down, as the points' own x and y (OpenCV style); the renderer flips y and z only for OpenGL.

The same camera as a perspective one (the demo's renderer): focal length ``1000`` pixels for
the 224-pixel crop and camera translation ``(tx, ty, 2 * f / (224 * s))``; a point at depth
zero then projects exactly where the weak-perspective camera puts it. For a full image the
demo scales the focal length to ``1000 / 224 * max(width, height)`` and moves the translation
with the box (:func:`cam_crop_to_full`).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

CROP_SIZE = 224  # pixels, the square crop MEGA / VQ-HPS images are resized to
FOCAL_LENGTH = 1000.0  # pixels, for a CROP_SIZE crop (demo renderer: Renderer(1000, 224))


def weak_perspective_projection(points: jnp.ndarray, cam: jnp.ndarray) -> jnp.ndarray:
    """Project 3D points with the predicted weak-perspective camera (the original's ``orthographic_projection``).

    Args:
      points: (B, N, 3) meters.
      cam: (B, 3) as predicted: scale s (1/meters in crop units), tx, ty (meters).
    Returns:
      (B, N, 2) normalised crop coordinates, [-1, 1] across the crop.
    """
    cam = jnp.asarray(cam)
    if cam.ndim != 2 or cam.shape[-1] != 3 or points.shape[-1] != 3:
        raise ValueError(f"points {points.shape} must be (B, N, 3) and cam {cam.shape} (B, 3)")
    return cam[:, None, :1] * (points[..., :2] + cam[:, None, 1:])


def weak_perspective_to_translation(cam: jnp.ndarray, focal_length: float = FOCAL_LENGTH,
                                    crop_size: float = CROP_SIZE) -> jnp.ndarray:
    """Camera translation of the perspective camera equivalent to ``cam`` for the crop.

    Args:
      cam: (..., 3) (s, tx, ty): a NumPy array (computed in NumPy, its dtype kept: the
        renderer's float64 cameras) or a JAX array.
      focal_length: pixels, for the crop.
      crop_size: crop side in pixels.
    Returns:
      (..., 3) translation (tx, ty, tz) in meters with ``tz = 2 f / (crop_size * s)``.
    """
    xp = np if isinstance(cam, np.ndarray) else jnp
    s, tx, ty = cam[..., 0], cam[..., 1], cam[..., 2]
    return xp.stack([tx, ty, 2.0 * focal_length / (crop_size * s)], axis=-1)


def perspective_projection(points: jnp.ndarray, translation: jnp.ndarray, focal_length: float | jnp.ndarray,
                           camera_center: jnp.ndarray, rotation: jnp.ndarray | None = None) -> jnp.ndarray:
    """Pinhole projection to pixels: ``u = f * X_c / Z_c + c`` with ``X_c = R X + t`` (x right, y down).

    Args:
      points: (B, N, 3) meters.
      translation: (B, 3) camera translation, meters.
      focal_length: scalar or (B,) or (B, 2) pixels.
      camera_center: (2,) or (B, 2) principal point, pixels.
      rotation: optional (B, 3, 3) applied before the translation.
    Returns:
      (B, N, 2) pixel coordinates.
    """
    if rotation is not None:
        points = jnp.einsum("bij,bnj->bni", rotation, points)
    p = points + translation[:, None, :]
    f = jnp.asarray(focal_length, p.dtype)
    if f.ndim == 1:  # (B,)
        f = f[:, None, None]
    elif f.ndim == 2:  # (B, 2): fx, fy
        f = f[:, None, :]
    c = jnp.asarray(camera_center, p.dtype)
    c = c[:, None, :] if c.ndim == 2 else c
    return f * p[..., :2] / p[..., 2:3] + c


def normalized_to_pixels(x: jnp.ndarray, crop_size: float = CROP_SIZE) -> jnp.ndarray:
    """Normalised crop coordinates ([-1, 1]) to crop pixels: ``(x + 1) * crop_size / 2``."""
    return (x + 1.0) * (crop_size / 2.0)


def pixels_to_normalized(x: jnp.ndarray, crop_size: float = CROP_SIZE) -> jnp.ndarray:
    """Crop pixels to normalised coordinates, as the datasets do: ``2 * x / crop_size - 1``."""
    return 2.0 * x / crop_size - 1.0


def full_image_focal_length(image_size: jnp.ndarray, focal_length: float = FOCAL_LENGTH,
                            crop_size: float = CROP_SIZE) -> jnp.ndarray:
    """Focal length the demo uses for a full image: ``f / crop_size * max(width, height)``.

    Args:
      image_size: (..., 2) (width, height) pixels.
    Returns:
      (...,) pixels.
    """
    return focal_length / crop_size * jnp.max(image_size, axis=-1)


def cam_crop_to_full(cam: jnp.ndarray, box_center: jnp.ndarray, box_size: jnp.ndarray, image_size: jnp.ndarray,
                     focal_length: float | jnp.ndarray) -> jnp.ndarray:
    """Camera translation for the full image from the crop camera (the demo's ``cam_crop_to_full``).

    Args:
      cam: (B, 3) (s, tx, ty) of the crop.
      box_center: (B, 2) crop centre in the image, pixels.
      box_size: (B,) crop side in the image, pixels.
      image_size: (B, 2) (width, height), pixels.
      focal_length: scalar or (B,) pixels for the full image (see :func:`full_image_focal_length`).
    Returns:
      (B, 3) translation (meters) for :func:`perspective_projection` with the principal point at
      the image centre.
    """
    w_half, h_half = image_size[:, 0] / 2.0, image_size[:, 1] / 2.0
    bs = box_size * cam[:, 0] + 1e-9
    tz = 2.0 * focal_length / bs
    tx = 2.0 * (box_center[:, 0] - w_half) / bs + cam[:, 1]
    ty = 2.0 * (box_center[:, 1] - h_half) / bs + cam[:, 2]
    return jnp.stack([tx, ty, tz], axis=-1)
