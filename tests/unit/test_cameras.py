"""Cameras: the original's weak-perspective `cam`, its perspective equivalent and the full-image camera."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.geometry import (
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


def test_constants_are_the_originals():
    assert CROP_SIZE == 224 and FOCAL_LENGTH == 1000.0


def test_weak_perspective_known_value():
    points = jnp.float32([[[0.1, -0.2, 5.0], [0.0, 0.0, -3.0]]])
    cam = jnp.float32([[2.0, 0.05, 0.1]])
    out = np.asarray(weak_perspective_projection(points, cam))
    np.testing.assert_allclose(out, [[[0.3, -0.2], [0.1, 0.2]]], rtol=1e-6)  # s * (X + t), depth ignored
    with pytest.raises(ValueError, match="cam"):
        weak_perspective_projection(points, cam[0])


def test_perspective_equivalent_on_the_crop():
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.8, 0.8, (3, 20, 3)).astype(np.float32)
    points[..., 2] = 0.0  # on the depth-zero plane the two cameras agree exactly
    cam = np.stack([rng.uniform(0.5, 1.5, 3), rng.normal(0, 0.1, 3), rng.normal(0, 0.1, 3)], -1).astype(np.float32)
    weak = normalized_to_pixels(weak_perspective_projection(points, cam))
    trans = weak_perspective_to_translation(jnp.asarray(cam))
    np.testing.assert_allclose(np.asarray(trans[:, 2]), 2 * 1000.0 / (224 * cam[:, 0]), rtol=1e-6)
    persp = perspective_projection(points, trans, FOCAL_LENGTH, jnp.float32([112.0, 112.0]))
    np.testing.assert_allclose(np.asarray(persp), np.asarray(weak), atol=1e-3)
    # Off the plane, a point nearer the camera moves away from the centre (perspective only).
    near = points.copy()
    near[..., 2] = -0.5
    persp_near = np.asarray(perspective_projection(near, trans, FOCAL_LENGTH, jnp.float32([112.0, 112.0])))
    assert np.all(np.abs(persp_near - 112.0) >= np.abs(np.asarray(persp) - 112.0) - 1e-3)


def test_crop_to_full_image():
    rng = np.random.default_rng(1)
    img = jnp.float32([[1280.0, 720.0], [640.0, 960.0]])
    box_center = jnp.float32([[900.0, 300.0], [200.0, 500.0]])
    box_size = jnp.float32([350.0, 420.0])
    cam = jnp.float32([[0.9, 0.05, -0.1], [1.2, -0.02, 0.2]])
    f = full_image_focal_length(img)
    np.testing.assert_allclose(np.asarray(f), [1000 / 224 * 1280, 1000 / 224 * 960], rtol=1e-6)
    full_t = cam_crop_to_full(cam, box_center, box_size, img, f)
    points = jnp.asarray(rng.uniform(-0.5, 0.5, (2, 10, 3)).astype(np.float32)).at[..., 2].set(0.0)
    pixels = perspective_projection(points, full_t, f, img / 2)
    # The point lands where the crop projection puts it, mapped into the image through the box.
    crop = weak_perspective_projection(points, cam)
    expected = box_center[:, None] + crop * box_size[:, None, None] / 2
    np.testing.assert_allclose(np.asarray(pixels), np.asarray(expected), atol=1e-2)


def test_pixel_normalisation_round_trip():
    x = jnp.float32([[0.0, 224.0], [112.0, 56.0]])
    n = pixels_to_normalized(x)
    np.testing.assert_allclose(np.asarray(n), [[-1.0, 1.0], [0.0, -0.5]])
    np.testing.assert_allclose(np.asarray(normalized_to_pixels(n)), np.asarray(x))
