"""Pictures for validation and reports: projected predictions drawn over the input crops.

Points are in the crops' normalised coordinates ([-1, 1], the data pipeline's convention for
keypoints and the weak-perspective camera's output); images are the normalised NHWC crops the
model saw (ImageNet statistics undone here).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hmr_jax.data.augment import IMAGENET_MEAN, IMAGENET_STD


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
    from PIL import Image, ImageDraw

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
    import os

    from PIL import Image

    tmp = path + ".tmp.png"
    Image.fromarray(picture).save(tmp)
    os.replace(tmp, path)
