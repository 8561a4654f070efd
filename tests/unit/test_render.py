"""The NumPy software rasteriser: coverage, z-buffer, perspective depth, shading, side view."""
from __future__ import annotations

import numpy as np
import pytest

from hmr_jax.render import (
    PerspectiveCamera,
    contact_sheet,
    draw_points,
    rasterize,
    render_mesh,
    shade,
    side_view,
)

CAM = PerspectiveCamera(focal=(100.0, 120.0), principal_point=(31.5, 23.5))


def _square(half: float, z: float, cx: float = 0.0, cy: float = 0.0):
    v = np.array([[cx - half, cy - half, z], [cx + half, cy - half, z],
                  [cx + half, cy + half, z], [cx - half, cy + half, z]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    return v, f


def test_coverage_matches_projected_square():
    v, f = _square(0.1, 1.0)
    frags = rasterize(v, f, CAM, 48, 64)
    # Projected square: u in [cx - 10, cx + 10], v in [cy - 12, cy + 12]; pixel centres at integers.
    jj, ii = np.meshgrid(np.arange(64), np.arange(48))
    expected = (np.abs(jj - 31.5) <= 10) & (np.abs(ii - 23.5) <= 12)
    np.testing.assert_array_equal(frags.mask, expected)
    np.testing.assert_allclose(frags.depth[expected], 1.0, rtol=1e-12)
    assert np.all(np.isinf(frags.depth[~expected]))
    np.testing.assert_allclose(frags.barycentric[expected].sum(-1), 1.0, rtol=1e-12)


def test_z_buffer_keeps_nearest_whatever_the_face_order():
    near_v, near_f = _square(0.05, 1.0)
    far_v, far_f = _square(0.3, 2.0)  # projects to 3x the near square
    v = np.concatenate([far_v, near_v])
    colors = np.concatenate([np.tile([1.0, 0.0, 0.0], (4, 1)), np.tile([0.0, 1.0, 0.0], (4, 1))])
    for faces in (np.concatenate([far_f, near_f + 4]), np.concatenate([near_f + 4, far_f])):
        frags = rasterize(v, faces, CAM, 48, 64)
        centre = frags.face_index[23, 31]
        assert faces[centre].min() >= 4  # a triangle of the near square
        np.testing.assert_allclose(frags.depth[23, 31], 1.0)
        rgb = shade(frags, v, faces, CAM, color=colors, ambient=1.0)
        np.testing.assert_allclose(rgb[23, 31], [0.0, 1.0, 0.0])
        # Outside the near square, inside the far one: the far square shows.
        np.testing.assert_allclose(frags.depth[23, 31 + 8], 2.0)
        np.testing.assert_allclose(rgb[23, 31 + 8], [1.0, 0.0, 0.0])


def test_perspective_correct_depth_on_a_tilted_plane():
    # Plane z = 2 + 0.5 x, seen at an angle: depth at each pixel is the ray-plane intersection.
    v = np.array([[-0.5, -0.4, 1.75], [0.5, -0.4, 2.25], [0.5, 0.4, 2.25], [-0.5, 0.4, 1.75]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    frags = rasterize(v, f, CAM, 48, 64)
    ii, jj = np.nonzero(frags.mask)
    assert len(ii) > 300
    ray_x = (jj - CAM.principal_point[0]) / CAM.focal[0]
    z_true = 2.0 / (1.0 - 0.5 * ray_x)
    np.testing.assert_allclose(frags.depth[ii, jj], z_true, rtol=1e-9)


def test_render_mesh_keeps_background_and_dtype():
    v, f = _square(0.1, 1.0)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out, mask = render_mesh(image, v, f, CAM, color=(1.0, 1.0, 1.0), return_mask=True)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out[~mask], image[~mask])
    # A plane facing the camera with white colour and full diffuse light is white.
    np.testing.assert_array_equal(out[mask], 255)
    half = render_mesh(image.astype(np.float32) / 255, v, f, CAM, color=(1.0, 1.0, 1.0), alpha=0.5)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half[mask], 0.5 * image[mask] / 255 + 0.5, atol=1e-6)


def test_lambert_darker_when_tilted():
    v, f = _square(0.1, 1.0)
    frags = rasterize(v, f, CAM, 48, 64)
    flat = shade(frags, v, f, CAM, color=(1.0, 1.0, 1.0), ambient=0.2)[23, 31, 0]
    a = np.deg2rad(60.0)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    tilted_v = (v - [0, 0, 1.0]) @ rot.T + [0, 0, 1.0]
    frags_t = rasterize(tilted_v, f, CAM, 48, 64)
    tilted = shade(frags_t, tilted_v, f, CAM, color=(1.0, 1.0, 1.0), ambient=0.2)[23, 31, 0]
    np.testing.assert_allclose(flat, 1.0)
    np.testing.assert_allclose(tilted, 0.2 + 0.8 * np.cos(a), atol=1e-9)


def test_triangles_behind_the_camera_are_not_drawn():
    v, f = _square(0.1, -1.0)
    assert not rasterize(v, f, CAM, 48, 64).mask.any()


def test_side_view_shows_the_profile_of_a_plate():
    # A wide, thin box facing the camera: from the side it is narrow.
    x, y, z = 0.3, 0.3, 0.01
    corners = np.array([[sx * x, sy * y, 2.0 + sz * z] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    cam = PerspectiveCamera((60.0, 60.0), (32.0, 32.0))
    front = rasterize(corners, faces, cam, 64, 64).mask
    side = side_view(corners, faces, cam, 64, 64)
    side_mask = np.any(side != 255, axis=-1)
    assert side.dtype == np.uint8 and side.shape == (64, 64, 3)
    assert front.sum() > 250
    assert 0 < side_mask.sum() < front.sum() / 5
    # Same object height, seen a little larger from the side (its near edge is closer).
    front_h, side_h = np.ptp(np.nonzero(front)[0]), np.ptp(np.nonzero(side_mask)[0])
    assert front_h <= side_h <= 1.25 * front_h


def test_bad_inputs_are_reported():
    v, f = _square(0.1, 1.0)
    with pytest.raises(ValueError, match="faces index"):
        rasterize(v, f + 10, CAM, 8, 8)
    with pytest.raises(ValueError, match=r"shape \(V, 3\)"):
        rasterize(v[:, :2], f, CAM, 8, 8)
    with pytest.raises(ValueError, match="NaN"):
        rasterize(v * np.nan, f, CAM, 8, 8)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        render_mesh(np.zeros((8, 8)), v, f, CAM)


def test_draw_points_and_contact_sheet():
    img = np.zeros((10, 10, 3), np.uint8)
    out = draw_points(img, [[2, 3], [50, 50]], color=(0, 255, 0), radius=1)
    assert tuple(out[3, 2]) == (0, 255, 0) and out.sum() == 5 * 255
    sheet = contact_sheet([img, out, img], columns=2, pad=1)
    assert sheet.shape == (2 * 11 + 1, 2 * 11 + 1, 3)
    np.testing.assert_array_equal(sheet[1:11, 12:22], out)


def test_weak_perspective_camera_matches_the_crop_normalisation():
    pts = np.random.default_rng(0).normal(scale=0.3, size=(50, 3))
    pts[:, 2] = 0.0
    s, tx, ty, size = 0.9, 0.1, -0.2, 224
    cam = PerspectiveCamera.from_weak_perspective((s, tx, ty), size)
    uv = cam.project(pts)
    norm = (2.0 * uv + 1.0) / size - 1.0  # hmr_jax.data.augment's normalisation
    np.testing.assert_allclose(norm, s * (pts[:, :2] + [tx, ty]), atol=1e-9)
    half = PerspectiveCamera.from_weak_perspective((s, tx, ty), size, keypoint_range=0.5)
    np.testing.assert_allclose(0.5 * ((2.0 * half.project(pts) + 1.0) / size - 1.0), s * (pts[:, :2] + [tx, ty]),
                               atol=1e-9)
    with pytest.raises(ValueError, match="positive"):
        PerspectiveCamera.from_weak_perspective((0.0, 0, 0), size)
