"""A software rasteriser in NumPy: z-buffered triangles with Lambert shading.

No OpenGL and no display: everything is array arithmetic on the CPU, so it runs in tests,
in Grain workers and on headless servers. Used by ``sample.py`` (meshes over the input
image, side views) and by the synthetic data generator (``data_prep.synthetic``).

Conventions (OpenCV pinhole camera):

* camera frame: x to the right, y down, z forward (away from the camera), meters;
* a vertex ``v`` (meters, in the mesh frame) goes to the camera frame as
  ``rotation @ v + translation``;
* it projects to pixel coordinates ``u = fx * x / z + cx``, ``v = fy * y / z + cy``; the centre
  of pixel ``(row i, column j)`` is at ``(u, v) = (j, i)``;
* images are ``(H, W, 3)`` arrays, ``uint8`` (0..255) or floating point (0..1).

Rasterisation is exact for every pixel centre (edge functions, perspective-correct depth);
triangles with a vertex behind the near plane are dropped. Triangles are processed in
groups by bounding-box size so that a 14k-vertex mesh at 256x256 takes tens of
milliseconds.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
from PIL import Image

from hmr_jax.files import atomic_open
from hmr_jax.geometry.cameras import weak_perspective_to_translation
from hmr_jax.geometry.normals import vertex_normals
from hmr_jax.geometry.rotations_np import rotation_about_y

#: Default mesh colour (RGB in 0..1): a light blue-grey, as in the originals' renderings.
MESH_COLOR = (0.65, 0.74, 0.86)
_NEAR = 1e-3  # meters: triangles with a vertex closer than this are not drawn
_MAX_CANDIDATES = 1 << 22  # pixel candidates evaluated at once (memory bound)


@dataclasses.dataclass(frozen=True)
class PerspectiveCamera:
    """A pinhole camera (OpenCV convention, see the module docstring).

    Attributes:
      focal: ``(fx, fy)`` focal lengths in pixels.
      principal_point: ``(cx, cy)`` in pixels.
      translation: ``(3,)`` meters, added to the rotated vertices.
      rotation: ``(3, 3)`` rotation from the mesh frame to the camera frame (identity when
        ``None``).
    """

    focal: tuple[float, float]
    principal_point: tuple[float, float]
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: np.ndarray | None = None

    @classmethod
    def from_intrinsics(cls, intrinsics, translation=(0.0, 0.0, 0.0), rotation=None):
        """Builds a camera from a ``(3, 3)`` intrinsics matrix ``K`` (pixels)."""
        k = np.asarray(intrinsics, dtype=np.float64)
        if k.shape != (3, 3):
            raise ValueError(f"intrinsics must be a (3, 3) matrix K, got shape {k.shape}")
        return cls((k[0, 0], k[1, 1]), (k[0, 2], k[1, 2]), tuple(translation), rotation)

    @classmethod
    def from_weak_perspective(cls, camera, crop_size: int, focal: float = 5000.0, rotation=None,
                              keypoint_range: float = 1.0):
        """The perspective camera that matches the models' weak-perspective camera on a crop.

        The models predict ``(s, tx, ty)`` with normalised crop coordinates
        ``xy = s * (XY + (tx, ty))`` in ``[-r, r]`` over a ``crop_size`` square crop (see
        ``hmr_jax.data.augment``; ``r = keypoint_range``: 1 for the HRNet / ResNet models, 0.5
        for ViT). A camera of focal length ``focal`` pixels at distance
        ``tz = 2 * r * focal / (s * crop_size)`` gives the same picture (exactly for points at
        depth 0).

        Args:
          camera: ``(3,)`` ``(s, tx, ty)``.
          crop_size: crop side in pixels.
          focal: focal length in pixels (large: nearly orthographic).
          rotation: optional (3, 3) rotation applied to the mesh first.
          keypoint_range: ``r`` above.
        """
        s, tx, ty = (float(c) for c in np.asarray(camera, dtype=np.float64).reshape(3))
        if s <= 0:
            raise ValueError(f"weak-perspective scale must be positive, got {s}")
        c = (crop_size - 1) / 2.0
        translation = weak_perspective_to_translation(np.array([s, tx, ty]), keypoint_range * focal, crop_size)
        return cls((focal, focal), (c, c), tuple(float(t) for t in translation), rotation)

    def to_camera_frame(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` mesh-frame points (m) -> ``(N, 3)`` camera-frame points (m)."""
        points = np.asarray(points, dtype=np.float64)
        if self.rotation is not None:
            points = points @ np.asarray(self.rotation, dtype=np.float64).T
        return points + np.asarray(self.translation, dtype=np.float64)

    def project(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` mesh-frame points (m) -> ``(N, 2)`` pixel coordinates ``(u, v)``."""
        uv, _ = _project(self.to_camera_frame(points), self)
        return uv


def _project(cam_points: np.ndarray, camera: PerspectiveCamera):
    z = cam_points[:, 2]
    safe_z = np.where(np.abs(z) < 1e-12, 1e-12, z)
    u = camera.focal[0] * cam_points[:, 0] / safe_z + camera.principal_point[0]
    v = camera.focal[1] * cam_points[:, 1] / safe_z + camera.principal_point[1]
    return np.stack([u, v], axis=-1), z


class Fragments(NamedTuple):
    """Per-pixel result of rasterisation of an ``(H, W)`` image.

    Attributes:
      face_index: ``(H, W)`` int32, index of the visible triangle, -1 where none.
      depth: ``(H, W)`` float64, camera-frame z (m) of the visible surface, ``inf`` where none.
      barycentric: ``(H, W, 3)`` float64 perspective-correct barycentric coordinates of the
        pixel centre in its triangle (0 where none).
    """

    face_index: np.ndarray
    depth: np.ndarray
    barycentric: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool: pixels covered by the mesh."""
        return self.face_index >= 0


def _check_mesh(vertices, faces):
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be an integer array of shape (F, 3), got {faces.shape} {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(
            f"faces index vertices 0..{faces.max()} but the mesh has {len(vertices)} vertices"
        )
    if not np.all(np.isfinite(vertices)):
        raise ValueError("vertices contain NaN or inf")
    return vertices, faces.astype(np.int64)


def _covered_pixels(t, px, py, inside_box, corners, area, tri_z, width: int):
    """The pixel centres ``(px, py)`` (T, P) that triangles ``t`` (T,) cover: their flat pixel
    ids, depths (m), triangle ids and perspective-correct barycentrics (N, 3); None if none."""
    ta, tb, tc = (corner[t] for corner in corners)
    inv = 1.0 / area[t]
    # Edge functions -> screen-space barycentrics of the pixel centres.
    w0 = ((tb[:, 0, None] - px) * (tc[:, 1, None] - py)
          - (tb[:, 1, None] - py) * (tc[:, 0, None] - px)) * inv[:, None]
    w1 = ((tc[:, 0, None] - px) * (ta[:, 1, None] - py)
          - (tc[:, 1, None] - py) * (ta[:, 0, None] - px)) * inv[:, None]
    w2 = 1.0 - w0 - w1
    inside = inside_box & (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
    rows, cols = np.nonzero(inside)
    if rows.size == 0:
        return None
    tz = tri_z[t[rows]]
    s0, s1, s2 = w0[rows, cols] / tz[:, 0], w1[rows, cols] / tz[:, 1], w2[rows, cols] / tz[:, 2]
    inv_z = s0 + s1 + s2
    return ((py[rows, cols] * width + px[rows, cols]).astype(np.int64), 1.0 / inv_z, t[rows],
            np.stack([s0, s1, s2], axis=-1) / inv_z[:, None])


def rasterize(vertices, faces, camera: PerspectiveCamera, height: int, width: int) -> Fragments:
    """Z-buffered rasterisation of a triangle mesh.

    Args:
      vertices: ``(V, 3)`` mesh-frame vertices (m).
      faces: ``(F, 3)`` integer vertex indices.
      camera: the :class:`PerspectiveCamera`.
      height, width: image size in pixels.

    Returns:
      :class:`Fragments` for the ``(height, width)`` image.
    """
    vertices, faces = _check_mesh(vertices, faces)
    cam = camera.to_camera_frame(vertices)
    uv, z = _project(cam, camera)
    face_index = np.full(height * width, -1, dtype=np.int32)
    depth = np.full(height * width, np.inf)
    bary = np.zeros((height * width, 3))

    tri_uv = uv[faces]  # (F, 3, 2)
    tri_z = z[faces]  # (F, 3)
    keep = np.all(tri_z > _NEAR, axis=1)
    x0 = np.ceil(tri_uv[..., 0].min(axis=1) - 1e-9)
    x1 = np.floor(tri_uv[..., 0].max(axis=1) + 1e-9)
    y0 = np.ceil(tri_uv[..., 1].min(axis=1) - 1e-9)
    y1 = np.floor(tri_uv[..., 1].max(axis=1) + 1e-9)
    x0, y0 = np.maximum(x0, 0), np.maximum(y0, 0)
    x1, y1 = np.minimum(x1, width - 1), np.minimum(y1, height - 1)
    keep &= (x1 >= x0) & (y1 >= y0)
    # Signed doubled area; degenerate triangles cover no pixel centre.
    a, b, c = tri_uv[:, 0], tri_uv[:, 1], tri_uv[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep &= np.abs(area) > 1e-12
    ids = np.nonzero(keep)[0]
    if ids.size == 0:
        return Fragments(face_index.reshape(height, width), depth.reshape(height, width),
                         bary.reshape(height, width, 3))

    extent = np.maximum(x1[ids] - x0[ids], y1[ids] - y0[ids]).astype(np.int64) + 1
    bucket = np.ceil(np.log2(extent)).astype(np.int64)  # box side <= 2**bucket
    all_pix, all_depth, all_tri, all_bary = [], [], [], []
    for k in np.unique(bucket):
        side = 1 << int(k)
        group = ids[bucket == k]
        oy, ox = np.divmod(np.arange(side * side), side)
        chunk = max(1, _MAX_CANDIDATES // (side * side))
        for start in range(0, len(group), chunk):
            t = group[start:start + chunk]
            px = x0[t, None] + ox[None, :]
            py = y0[t, None] + oy[None, :]
            found = _covered_pixels(t, px, py, (px <= x1[t, None]) & (py <= y1[t, None]), (a, b, c), area, tri_z,
                                    width)
            if found is not None:
                for acc, value in zip((all_pix, all_depth, all_tri, all_bary), found):
                    acc.append(value)
    if all_pix:
        pix = np.concatenate(all_pix)
        dep = np.concatenate(all_depth)
        order = np.lexsort((dep, pix))  # by pixel, nearest first
        pix_sorted = pix[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = pix_sorted[1:] != pix_sorted[:-1]
        win = order[first]
        face_index[pix[win]] = np.concatenate(all_tri)[win]
        depth[pix[win]] = dep[win]
        bary[pix[win]] = np.concatenate(all_bary)[win]
    return Fragments(face_index.reshape(height, width), depth.reshape(height, width),
                     bary.reshape(height, width, 3))


def shade(fragments: Fragments, vertices, faces, camera: PerspectiveCamera,
          color=MESH_COLOR, ambient: float = 0.35, light_direction=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Lambert shading of rasterised fragments.

    Args:
      fragments: from :func:`rasterize` with the same mesh and camera.
      vertices, faces: the mesh (``(V, 3)`` m, ``(F, 3)``).
      camera: the camera.
      color: RGB in 0..1, one colour for the mesh or ``(V, 3)`` per-vertex colours.
      ambient: ambient fraction in 0..1; the rest is diffuse.
      light_direction: ``(3,)`` direction the light travels, in the camera frame (default:
        from the camera along its axis). Lighting is two-sided.

    Returns:
      ``(H, W, 3)`` float64 colours in 0..1 (0 outside the mesh).
    """
    vertices, faces = _check_mesh(vertices, faces)
    cam_vertices = camera.to_camera_frame(vertices)
    normals = vertex_normals(cam_vertices, faces)
    mask = fragments.mask
    out = np.zeros(mask.shape + (3,))
    if not mask.any():
        return out
    tri = faces[fragments.face_index[mask]]  # (P, 3)
    w = fragments.barycentric[mask]  # (P, 3)
    n = np.einsum("pk,pkc->pc", w, normals[tri])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    light = np.asarray(light_direction, dtype=np.float64)
    light = light / np.linalg.norm(light)
    diffuse = np.abs(n @ light)
    color = np.asarray(color, dtype=np.float64)
    if color.ndim == 2:
        if color.shape != (len(vertices), 3):
            raise ValueError(f"per-vertex colours must have shape ({len(vertices)}, 3), got {color.shape}")
        base = np.einsum("pk,pkc->pc", w, color[tri])
    else:
        base = np.broadcast_to(color, (len(w), 3))
    out[mask] = base * (ambient + (1.0 - ambient) * diffuse)[:, None]
    return np.clip(out, 0.0, 1.0)


def _as_float_image(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0, True
    return image.astype(np.float64), False


def render_mesh(image, vertices, faces, camera: PerspectiveCamera, color=MESH_COLOR,
                alpha: float = 1.0, return_mask: bool = False):
    """Draws a shaded mesh over an image.

    Args:
      image: ``(H, W, 3)`` uint8 (0..255) or float (0..1) background.
      vertices: ``(V, 3)`` mesh-frame vertices (m).
      faces: ``(F, 3)`` integer vertex indices.
      camera: the :class:`PerspectiveCamera` (pixels, meters).
      color: mesh colour, RGB in 0..1 (or ``(V, 3)`` per vertex).
      alpha: opacity of the mesh in 0..1.
      return_mask: also return the ``(H, W)`` bool coverage mask.

    Returns:
      The composited image, same dtype and shape as ``image`` (and the mask if asked).
    """
    background, is_uint8 = _as_float_image(image)
    h, w = background.shape[:2]
    frags = rasterize(vertices, faces, camera, h, w)
    colors = shade(frags, vertices, faces, camera, color=color)
    a = frags.mask[..., None] * float(alpha)
    out = background * (1.0 - a) + colors * a
    if is_uint8:
        out = np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
    else:
        out = out.astype(np.asarray(image).dtype)
    return (out, frags.mask) if return_mask else out


def side_view(vertices, faces, camera: PerspectiveCamera, height: int, width: int,
              angle_deg: float = 90.0, background=(1.0, 1.0, 1.0), color=MESH_COLOR) -> np.ndarray:
    """Renders the mesh seen from the side, on a plain background.

    The camera-frame mesh is turned by ``angle_deg`` about the vertical (y) axis through its
    centre, so the same camera shows its profile (90 degrees: seen from the person's left
    when they face the camera).

    Args:
      vertices: ``(V, 3)`` mesh-frame vertices (m); faces: ``(F, 3)``.
      camera: the camera of the front view (pixels, meters).
      height, width: output size in pixels.
      angle_deg: rotation about the vertical axis, degrees.
      background: RGB in 0..1.
      color: mesh colour, RGB in 0..1.

    Returns:
      ``(height, width, 3)`` uint8 image.
    """
    vertices, faces = _check_mesh(vertices, faces)
    cam = camera.to_camera_frame(vertices)
    centre = 0.5 * (cam.min(axis=0) + cam.max(axis=0))
    turned = (cam - centre) @ rotation_about_y(np.deg2rad(angle_deg)).T + centre
    frame_camera = PerspectiveCamera(camera.focal, camera.principal_point)
    canvas = np.broadcast_to(np.asarray(background, dtype=np.float64), (height, width, 3)).copy()
    out = render_mesh(canvas, turned, faces, frame_camera, color=color)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def draw_points(image, points, color=(255, 0, 0), radius: int = 2) -> np.ndarray:
    """Draws filled discs at ``(N, 2)`` pixel positions ``(u, v)`` on a copy of a uint8 image."""
    out = np.array(image, copy=True)
    h, w = out.shape[:2]
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc = (yy ** 2 + xx ** 2) <= radius ** 2
    for u, v in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        if not np.isfinite(u) or not np.isfinite(v):
            continue
        cy, cx = int(round(v)), int(round(u))
        ys, xs = cy + yy[disc], cx + xx[disc]
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        out[ys[ok], xs[ok]] = color
    return out


def contact_sheet(images, columns: int = 4, pad: int = 2, background: int = 255) -> np.ndarray:
    """Tiles equally sized ``(H, W, 3)`` uint8 images into one grid image (uint8)."""
    images = [np.asarray(im) for im in images]
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    rows = -(-len(images) // columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), background, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + im.shape[0], x:x + im.shape[1]] = im
    return sheet


def write_png(path, image) -> None:
    """Write an ``(H, W, 3)`` uint8 image as PNG, atomically (:func:`hmr_jax.files.atomic_open`)."""
    with atomic_open(path, "wb") as f:
        Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG")
