"""Pictures for validation and reports: predictions drawn over the input crops, as shaded
meshes (rendered by :mod:`hmr_jax.render` when the faces of the topology are known) or as
projected points.

Points are in the crops' normalised coordinates ([-1, 1], the data pipeline's convention for
keypoints and the weak-perspective camera's output); images are the normalised NHWC crops the
model saw (ImageNet statistics undone here).
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from PIL import Image, ImageDraw

from hmr_jax.data.augment import BACKBONE_INPUTS, IMAGENET_MEAN, IMAGENET_STD
from hmr_jax.files import atomic_open
from hmr_jax.geometry.cameras import weak_perspective_projection
from hmr_jax.mesh.io import load_faces
from hmr_jax.render import MESH_COLOR, PerspectiveCamera, draw_points, render_mesh, side_view


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) ImageNet-normalised float image -> (H, W, 3) uint8 RGB."""
    rgb = (np.asarray(image, np.float32) * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)) * 255
    return np.clip(rgb, 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, layers: Sequence[tuple[np.ndarray, tuple, int]], zoom: int = 2) -> np.ndarray:
    """Draw point sets over one crop.

    Args:
      image: (H, W, 3) normalised crop.
      layers: ``(points (N, 2) in [-1, 1], RGBA colour, radius in pixels)`` drawn in order.
      zoom: integer upscaling of the crop before drawing.
    Returns:
      (zoom H, zoom W, 3) uint8.
    """
    rgb = to_uint8(image)
    h, w = rgb.shape[:2]
    pic = Image.fromarray(rgb).resize((zoom * w, zoom * h))
    draw = ImageDraw.Draw(pic, "RGBA")
    side = max(h, w)  # keypoints are normalised over the square crop
    left = (side - w) / 2
    for points, color, radius in layers:
        for x, y in np.asarray(points, np.float32):
            px = ((x + 1) * side / 2 - 0.5 - left) * zoom
            py = ((y + 1) * side / 2 - 0.5) * zoom
            draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=color)
    return np.asarray(pic)


def prediction_grid(images: np.ndarray, pred_2d: np.ndarray, gt_2d: np.ndarray, max_images: int = 4,
                    max_points: int = 700) -> np.ndarray:
    """Side by side crops with projected predicted vertices (red) and target keypoints (green).

    images (B, H, W, 3), pred_2d (B, V, 2), gt_2d (B, K, 2 or 3; confidence 0 hides a point).
    Returns (2H, n 2W, 3) uint8.
    """
    tiles = []
    for b in range(min(max_images, images.shape[0])):
        pred = np.asarray(pred_2d[b])
        pred = pred[:: max(1, len(pred) // max_points)]
        gt = np.asarray(gt_2d[b])
        if gt.shape[-1] == 3:
            gt = gt[gt[:, 2] > 0]
        tiles.append(overlay(images[b], [(pred, (255, 40, 40, 150), 1.5), (gt[:, :2], (40, 220, 40, 255), 3)]))
    return np.concatenate(tiles, axis=1)


def save_png(path: str, picture: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 picture (temporary name, then renamed)."""
    with atomic_open(path, "wb") as f:
        Image.fromarray(picture).save(f, format="PNG")


# ----------------------------------------------------------------------------- rendered meshes


def crop_camera(camera: np.ndarray, crop_size: int, width: int | None = None, zoom: int = 1,
                keypoint_range: float = 1.0):
    """The :class:`hmr_jax.render.PerspectiveCamera` that draws a mesh where the weak-perspective
    camera ``(s, tx, ty)`` puts it on a ``crop_size`` square crop (``width`` < ``crop_size``: the
    centre columns kept, as the ViT crop), scaled by ``zoom``; ``keypoint_range`` as
    :class:`hmr_jax.data.augment.BackboneInput` (1, or 0.5 for ViT). Pixels and meters."""
    cam = PerspectiveCamera.from_weak_perspective(camera, crop_size * zoom, keypoint_range=keypoint_range)
    left = (crop_size - (width or crop_size)) / 2 * zoom
    cx, cy = cam.principal_point
    return PerspectiveCamera(cam.focal, (cx - left, cy), cam.translation)


def mesh_overlay(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, camera: np.ndarray,
                 zoom: int = 2, alpha: float = 0.8, color=None, keypoint_range: float = 1.0) -> np.ndarray:
    """A shaded mesh drawn over one crop with the model's weak-perspective camera.

    Args:
      image: (H, W, 3) ImageNet-normalised crop (W <= H: the centre columns of an H square).
      vertices: (V, 3) posed mesh, meters (camera-aligned axes, as the models predict).
      faces: (F, 3) int vertex indices.
      camera: (3,) weak-perspective ``(s, tx, ty)``.
      zoom: integer upscaling of the crop before drawing.
      alpha: opacity of the mesh.
      color: RGB in 0..1 (default :data:`hmr_jax.render.MESH_COLOR`).
      keypoint_range: the crop's normalised coordinate range (1; 0.5 for ViT).
    Returns:
      (zoom H, zoom W, 3) uint8. A non-positive scale (a degenerate prediction) draws no mesh.
    """
    rgb = to_uint8(image)
    h, w = rgb.shape[:2]
    pic = np.asarray(Image.fromarray(rgb).resize((zoom * w, zoom * h)))
    camera = np.asarray(camera, np.float64).reshape(3)
    if not np.all(np.isfinite(camera)) or camera[0] <= 0 or not np.all(np.isfinite(vertices)):
        return pic
    cam = crop_camera(camera, h, w, zoom, keypoint_range)
    return render_mesh(pic, np.asarray(vertices, np.float64), faces, cam,
                       color=MESH_COLOR if color is None else color, alpha=alpha)


def mesh_side_view(vertices: np.ndarray, faces: np.ndarray, size: int, color=None,
                   angle_deg: float = 90.0) -> np.ndarray:
    """(size, size, 3) uint8: the mesh (V, 3, meters) seen from its left side (``angle_deg``
    about the vertical axis), framed to fill about 80% of the picture, on white."""
    v = np.asarray(vertices, np.float64)
    v = v - 0.5 * (v.min(0) + v.max(0))
    extent = max(float(np.max(np.ptp(v, axis=0))), 1e-3)
    focal = 10.0 * size
    cam = PerspectiveCamera((focal, focal), ((size - 1) / 2, (size - 1) / 2),
                            (0.0, 0.0, focal * extent / (0.8 * size)))
    return side_view(v, faces, cam, size, size, angle_deg=angle_deg,
                     color=MESH_COLOR if color is None else color)


def mesh_prediction_grid(images: np.ndarray, vertices: np.ndarray, cameras: np.ndarray, faces: np.ndarray,
                         gt_2d: np.ndarray | None = None, max_images: int = 4, zoom: int = 2,
                         keypoint_range: float = 1.0) -> np.ndarray:
    """Side by side crops with the predicted mesh rendered over them (target keypoints in green).

    images (B, H, W, 3) normalised crops, vertices (B, V, 3) posed meshes (m), cameras (B, 3)
    weak-perspective, faces (F, 3), gt_2d (B, K, 2 or 3; confidence 0 hides a point) or None.
    Returns (zoom H, n zoom W, 3) uint8.
    """
    tiles = []
    for b in range(min(max_images, images.shape[0])):
        tile = mesh_overlay(images[b], vertices[b], faces, cameras[b], zoom=zoom, keypoint_range=keypoint_range)
        if gt_2d is not None:
            gt = np.asarray(gt_2d[b], np.float64)
            if gt.shape[-1] == 3:
                gt = gt[gt[:, 2] > 0]
            h, w = images.shape[1:3]
            px = ((gt[:, 0] / keypoint_range + 1) * h / 2 - 0.5 - (h - w) / 2) * zoom
            py = ((gt[:, 1] / keypoint_range + 1) * h / 2 - 0.5) * zoom
            tile = draw_points(tile, np.stack([px, py], 1), color=(40, 220, 40), radius=2)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def validation_picture(stage, params, model_state, frozen, batch, host_batch, fetch=None) -> np.ndarray:
    """The training validation picture of one batch of an image stage: its predicted meshes
    (:meth:`~hmr_jax.training.stages.base.Stage.predict`) rendered over the crops when the config
    names the faces of its topology (``config.faces``, see :func:`hmr_jax.mesh.io.load_faces`),
    else the projected vertices as points (:func:`prediction_grid`).

    ``batch`` is what the jitted functions take (possibly globally sharded), ``host_batch`` the
    same on the host; ``fetch`` brings arrays to the host (all-gathers across hosts; default
    ``jax.device_get``). Returns (H', W', 3) uint8.
    """
    fetch = fetch or jax.device_get
    images = np.asarray(host_batch["image"])
    keypoints = np.asarray(host_batch["keypoints_2d"])
    vertices, cameras = fetch(jax.jit(stage.predict)(params, model_state, frozen, batch["image"]))
    faces_path = stage.config.get("faces", "")
    if faces_path:
        faces, _ = load_faces(faces_path)
        r = BACKBONE_INPUTS[stage.backbone].keypoint_range
        return mesh_prediction_grid(images, np.asarray(vertices), np.asarray(cameras), faces, keypoints,
                                    keypoint_range=r)
    pred_2d = weak_perspective_projection(np.asarray(vertices), np.asarray(cameras))
    return prediction_grid(images, np.asarray(pred_2d), keypoints)
