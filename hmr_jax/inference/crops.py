"""Person crops from boxes, as the original MEGA demo cuts them (``DemoDataset``), and images in.

Every box source (a detector, a boxes file, the whole image) goes through :func:`crop_person`:

* the square around the box: centre = the box centre, side = the box's longer side (the box
  expanded to the crop's 1:1 aspect ratio, no extra margin), in full-image pixels;
* when the square is more than 2.2 times the crop side (``side / S / 2 > 1.1``), the image is
  first blurred with a Gaussian of standard deviation ``(side / S / 2 - 1) / 2`` pixels
  (edges repeated), as the demo does against aliasing;
* the square is mapped onto ``S x S`` pixels by a scale and a translation that put the box
  centre at crop pixel ``(S / 2, S / 2)`` (pixel centres at integer coordinates), sampled
  bilinearly in floating point, black beyond the image's edges (the demo's ``cv2.warpAffine``
  with ``INTER_LINEAR`` and ``BORDER_CONSTANT``);
* the backbone's width is kept from the middle of the square (ViT: 256 x 192 from 256 x 256,
  as its training crops) and the crop is normalised with the backbone's mean and std.

``S`` and the width come from the model (:class:`hmr_jax.data.augment.BackboneInput`).
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
from PIL import Image
from scipy import ndimage

from hmr_jax.data.augment import BackboneInput
from hmr_jax.errors import UserError

#: the demo blurs before downsampling by more than this factor times two (``downsampling_factor > 1.1``)
_BLUR_ABOVE = 1.1


class InferenceError(UserError, ValueError):
    """A problem with one input (image, box) or with the setup (checkpoint, tokenizer, faces);
    the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class PersonCrop:
    """One person's crop and where it lies in the full image.

    Attributes:
      image: (S, W, 3) float32, normalised with the backbone's mean / std (NHWC row).
      box: (4,) the box it was cut from, ``x1, y1, x2, y2`` full-image pixels.
      centre: (2,) the square's centre ``(x, y)``, full-image pixels.
      side: the square's side, full-image pixels.
    """

    image: np.ndarray
    box: np.ndarray
    centre: np.ndarray
    side: float


def read_image(path: str | pathlib.Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB.

    Raises:
      InferenceError: missing or unreadable file (the message names it).
    """
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise InferenceError(f"{path}: no such file (give an existing image file or folder)") from None
    except Exception as e:  # PIL raises several kinds for corrupt data
        raise InferenceError(f"{path}: cannot read the image ({type(e).__name__}: {e}); "
                             "give a JPEG / PNG / BMP / WebP file") from None


def as_rgb_uint8(image) -> np.ndarray:
    """An image array as (H, W, 3) uint8 RGB: gray (H, W) is repeated, an alpha channel dropped.

    Raises:
      InferenceError: any other shape or dtype.
    """
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise InferenceError(f"an image must be (H, W, 3) RGB, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise InferenceError(f"an image must be uint8 (0..255), got {a.dtype}; convert it with "
                             "np.clip(x * 255, 0, 255).astype(np.uint8) if it is in 0..1")
    return np.ascontiguousarray(a[..., :3])


def square_box(box) -> tuple[np.ndarray, float]:
    """``(centre (2,), side)`` of the square crop around ``box`` (full-image pixels), as the demo.

    Raises:
      InferenceError: a degenerate or non-finite box.
    """
    b = np.asarray(box, np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise InferenceError(f"box {b.tolist()} must be 4 finite numbers x1, y1, x2, y2 (pixels)")
    x1, y1, x2, y2 = b
    if not (x2 > x1 and y2 > y1):
        raise InferenceError(f"box {b.tolist()} is empty: need x1 < x2 and y1 < y2 (pixels)")
    return np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0]), float(max(x2 - x1, y2 - y1))


def crop_person(image: np.ndarray, box, geometry: BackboneInput) -> PersonCrop:
    """Cut, resize and normalise one person's crop (see the module docstring).

    Args:
      image: (H, W, 3) uint8 RGB full image.
      box: (4,) ``x1, y1, x2, y2`` full-image pixels.
      geometry: the backbone's input (square side ``crop``, kept ``width``, mean, std).
    Returns:
      the :class:`PersonCrop` (image (crop, width, 3) float32).
    Raises:
      InferenceError: a degenerate box, or one that does not overlap the image.
    """
    h, w = image.shape[:2]
    centre, side = square_box(box)
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, np.float64).reshape(4))
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        raise InferenceError(f"box {[x1, y1, x2, y2]} lies outside the {w}x{h} image: give boxes in "
                             "full-image pixels x1, y1, x2, y2 that overlap it")
    s = int(geometry.crop)
    a = side / s  # source pixels per crop pixel
    factor = a / 2.0
    sigma = (factor - 1.0) / 2.0 if factor > _BLUR_ABOVE else 0.0
    region, (x0, y0) = _source_region(image, centre, side, sigma)
    # crop pixel (r, c) samples the source at (cy + (r - S / 2) a, cx + (c - S / 2) a): the box
    # centre lands on crop pixel (S / 2, S / 2); bilinear, black (0) beyond the image's edges
    offset = (centre[1] - a * s / 2.0 - y0, centre[0] - a * s / 2.0 - x0, 0.0)
    crop = ndimage.affine_transform(region, np.array([a, a, 1.0]), offset=offset, output_shape=(s, s, 3),
                                    order=1, mode="grid-constant", cval=0.0)
    if geometry.width != s:
        left = (s - geometry.width) // 2
        crop = crop[:, left:left + geometry.width]
    std = np.asarray(geometry.std, np.float32)
    normalised = crop * (np.float32(1.0 / 255.0) / std) - np.asarray(geometry.mean, np.float32) / std
    return PersonCrop(np.ascontiguousarray(normalised, np.float32), np.array([x1, y1, x2, y2]),
                      centre, side)


def _source_region(image: np.ndarray, centre: np.ndarray, side: float, sigma: float):
    """The part of ``image`` the square samples (float32; Gaussian-blurred with ``sigma`` pixels,
    edges repeated, when ``sigma > 0``: as blurring the whole image would give), and its top-left
    corner ``(x0, y0)`` in the image."""
    h, w = image.shape[:2]
    margin = 2 + (int(np.ceil(4.0 * sigma)) if sigma > 0 else 0)  # bilinear neighbours + the filter's reach
    half = side / 2.0
    x0 = max(int(np.floor(centre[0] - half)) - margin, 0)
    y0 = max(int(np.floor(centre[1] - half)) - margin, 0)
    x1 = min(int(np.ceil(centre[0] + half)) + margin + 1, w)
    y1 = min(int(np.ceil(centre[1] + half)) + margin + 1, h)
    region = image[y0:y1, x0:x1].astype(np.float32)
    if sigma > 0:
        region = ndimage.gaussian_filter(region, sigma=(sigma, sigma, 0.0), mode="nearest", truncate=4.0)
    return region, (x0, y0)
