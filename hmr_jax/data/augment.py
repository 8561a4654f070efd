"""Per-record image augmentation and cropping, as the original projects' datasets do it.

The originals (VQ-HPS / MEGA ``DatasetHMR``, after BEDLAM and SPIN) draw per sample:

* flip with probability 0.5 (when flipping is on);
* rotation ``clip(N(0, 1) * 30, -60, 60)`` degrees, set to 0 with probability 0.6;
* scale ``clip(N(0, 1) * 0.25 + 1, 0.75, 1.25)`` multiplying the box size;

then crop the square box ``200 * scale`` pixels around ``center`` (rotated by the rotation)
to ``S x S`` pixels (224 for HRNet / ResNet: the originals' square loader; 256 for ViT, which
then keeps the middle 192 columns: 256x192, the originals' other loader, the only one whose
crops fit ViT-H's 16x12 patch grid), flip the crop, and transform the 2D keypoints
(normalised over the square crop to [-1, 1] by the square loader, to [-0.5, 0.5] by the
other: ``keypoint_range``), the global orientation (rotated about the camera axis by ``-rotation``,
mirrored when flipped) and the mesh (the mirrored body's mesh when flipped). Colour noise
multiplies each channel by ``U(1 - 0.4, 1 + 0.4)`` (SPIN's ``noise_factor``; the originals
additionally run a chain of albumentations effects, which we do not reproduce). Images are
then divided by 255 and normalised with the backbone's mean and standard deviation.

Pixel convention: the centre of pixel ``(row i, column j)`` is at ``(x, y) = (j, i)``.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from hmr_jax.geometry.rotations_np import axis_angle_to_matrix, matrix_to_axis_angle, mirror_axis_angle, rotation_about_z

#: ImageNet statistics, used by every backbone of the originals (HRNet, ResNet-50, ViTPose).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class BackboneInput:
    """Image geometry and normalisation a backbone expects.

    Attributes:
      crop: side ``S`` of the square crop around the person, pixels.
      width: columns kept from the middle of the crop (``S`` = all; 192 for ViT).
      keypoint_range: normalised 2D keypoints span ``[-r, r]`` over the square crop (1 for
        HRNet / ResNet, 0.5 for ViT, as the originals' loaders); the models' weak-perspective
        cameras are trained in this convention.
      mean, std: per-channel normalisation of images in 0..1.
    """

    crop: int
    width: int
    keypoint_range: float = 1.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


#: Input of each backbone of the originals: 224x224 for HRNet-w48 / ResNet-50 (7x7 condition
#: tokens), a 256x256 crop cut to 256x192 for ViT-H (16x12 patches).
BACKBONE_INPUTS = {
    "hrnet": BackboneInput(crop=224, width=224),
    "resnet": BackboneInput(crop=224, width=224),
    "vit": BackboneInput(crop=256, width=192, keypoint_range=0.5),
}

#: Left/right swaps of each keypoint layout (index i of the flipped person = index perm[i]).
FLIP_PERMUTATIONS = {
    # The originals' flip_17 on their J24->J17 selection (zero padding kept in place).
    "h36m17": (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16) + tuple(range(17, 24)),
    # SMPL joint order (the originals apply a wrong, LSP-order permutation here; see README).
    "smpl24": (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22),
    "smpl22": (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20),
    "coco17": (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15),
}


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation: flip (bool), rotation (degrees), scale factor, colour (3,)."""

    flip: bool = False
    rotation: float = 0.0
    scale: float = 1.0
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


NO_AUGMENTATION = AugmentParams()


def sample_augmentation(rng: np.random.Generator, flip: bool = True, rot_factor: float = 30.0,
                        scale_factor: float = 0.25, noise_factor: float = 0.4,
                        rot_zero_prob: float = 0.6) -> AugmentParams:
    """Draws :class:`AugmentParams` with the originals' distributions (module docstring)."""
    do_flip = bool(flip and rng.uniform() <= 0.5)
    rot = float(np.clip(rng.standard_normal() * rot_factor, -2 * rot_factor, 2 * rot_factor))
    sc = float(np.clip(rng.standard_normal() * scale_factor + 1, 1 - scale_factor, 1 + scale_factor))
    if rng.uniform() <= rot_zero_prob:
        rot = 0.0
    color = tuple(float(c) for c in rng.uniform(1 - noise_factor, 1 + noise_factor, size=3))
    return AugmentParams(do_flip, rot, sc, color)


def crop_transform(center, scale: float, rotation_deg: float, size: int) -> np.ndarray:
    """``(2, 3)`` affine from source pixels to crop pixels.

    The square box of side ``200 * scale`` pixels centred on ``center`` and turned by
    ``rotation_deg`` (the crop content appears turned counter-clockwise) maps onto
    ``size x size`` pixels.
    """
    k = size / (200.0 * float(scale))
    t = np.deg2rad(-float(rotation_deg))
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * k
    # Box edges map to the crop's pixel edges -0.5 and size - 0.5: its centre to (size - 1) / 2.
    half = np.full(2, (size - 1) * 0.5)
    offset = half - rot @ np.asarray(center, dtype=np.float64)
    return np.concatenate([rot, offset[:, None]], axis=1)


def invert_affine(a: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine map."""
    m = np.linalg.inv(a[:, :2])
    return np.concatenate([m, -m @ a[:, 2:]], axis=1)


def apply_affine(a: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies a ``(2, 3)`` affine to ``(N, 2)`` points."""
    return points @ a[:, :2].T + a[:, 2]


def warp_affine(image: Image.Image, src_to_dst: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear warp of a PIL image by ``src_to_dst`` (pixel-centre convention) -> uint8 (H, W, 3).

    Pixels that fall outside the source are black, as the originals' crops.
    """
    inv = invert_affine(src_to_dst)
    # PIL samples at output (x + 0.5, y + 0.5) in a frame whose pixel centres are at +0.5.
    shift = inv[:, :2] @ np.array([-0.5, -0.5]) + inv[:, 2] + 0.5
    coeffs = (inv[0, 0], inv[0, 1], shift[0], inv[1, 0], inv[1, 1], shift[1])
    out = image.transform((int(width), int(height)), Image.Transform.AFFINE, coeffs,
                          resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(out, dtype=np.uint8)


def decode_jpeg(data: bytes, min_size: tuple[int, int] | None = None) -> tuple[Image.Image, float]:
    """Decodes JPEG bytes to an RGB PIL image, possibly at a reduced scale.

    Args:
      data: JPEG bytes.
      min_size: ``(width, height)`` the decoded image must keep at least; JPEG's DCT scaling
        (1/2, 1/4, 1/8) is used when the image is bigger, which is much faster.

    Returns:
      ``(image, factor)`` with ``factor`` = decoded size / stored size.
    """
    im = Image.open(io.BytesIO(data))
    full_w = im.size[0]
    if min_size is not None:
        im.draft("RGB", (int(min_size[0]), int(min_size[1])))
    im = im.convert("RGB")
    return im, im.size[0] / full_w


def rotate_about_camera_axis(aa: np.ndarray, rotation_deg: float) -> np.ndarray:
    """(3,) axis-angle (radians) of ``R_z(-rotation) @ R(aa)``: the body turned with the image crop."""
    return matrix_to_axis_angle(rotation_about_z(np.deg2rad(-rotation_deg)) @ axis_angle_to_matrix(aa))


def process_image_record(record: dict, params: AugmentParams, backbone: BackboneInput) -> dict[str, np.ndarray]:
    """Turns one decoded image record into one training / evaluation example.

    Args:
      record: a decoded ``image`` record (see :mod:`hmr_jax.data.records`).
      params: the augmentation draw (:data:`NO_AUGMENTATION` for evaluation).
      backbone: the backbone's :class:`BackboneInput`.

    Returns:
      dict of float32 arrays (``V`` vertices, ``K`` keypoints, ``J`` 3D joints):
        ``image`` (S, W, 3) normalised, NHWC;
        ``keypoints_2d`` (K, 3): x, y in ``[-r, r]`` over the square crop
        (``r * ((2 x + 1) / S - 1)``, ``r = backbone.keypoint_range``: the crop's outer pixel
        edges at -r and r, its centre at 0), confidence;
        ``vertices`` (V, 3): posed mesh ``R @ canonical``, centred, meters (the originals'
        ``mesh``); ``vertices_canonical`` (V, 3): without the global rotation (``local_mesh``);
        ``global_orient`` (3,) axis-angle and ``rotation_matrix`` (3, 3);
        ``joints_3d`` (J, 3): posed joints, meters;
        ``is_3dpw`` (bool): keypoints are SMPL joints without confidences (3DPW, EMDB).
    """
    s = backbone.crop
    a = crop_transform(record["center"], float(record["scale"]) * params.scale, params.rotation, s)
    # Decode at reduced size (JPEG DCT scaling by 1/2, 1/4, 1/8) when the crop shrinks the
    # stored image at least twice; the decoded image keeps at least the crop's resolution.
    k = np.sqrt(abs(np.linalg.det(a[:, :2])))
    want = None
    if k <= 0.5:
        w, h = Image.open(io.BytesIO(record["image_jpeg"])).size
        want = (int(np.ceil(w * k)), int(np.ceil(h * k)))
    img, factor = decode_jpeg(record["image_jpeg"], min_size=want)
    a_img = a
    if factor != 1.0:
        # decoded pixel x_d sits at stored pixel (x_d + 0.5) / factor - 0.5
        lin = a[:, :2] / factor
        a_img = np.concatenate([lin, (a[:, :2] @ np.full(2, 0.5 / factor - 0.5) + a[:, 2])[:, None]], axis=1)
    crop = warp_affine(img, a_img, s, s)  # uint8
    kp = np.array(record["keypoints_2d"], dtype=np.float64)
    kp[:, :2] = apply_affine(a, kp[:, :2])
    kind = str(record["keypoints_kind"])
    vertices = np.asarray(record["vertices"], np.float32)
    joints = np.asarray(record["joints_3d"], np.float32)
    orient = np.asarray(record["global_orient"], np.float64)
    if params.rotation:  # before the mirror, as the originals (rot_aa, then flip_pose)
        orient = rotate_about_camera_axis(orient, params.rotation)
    if params.flip:
        crop = crop[:, ::-1]
        kp[:, 0] = s - 1 - kp[:, 0]
        kp = kp[list(FLIP_PERMUTATIONS[kind][: len(kp)])]
        vertices = np.asarray(record["vertices_flipped"], np.float32)
        if len(joints):
            perm = FLIP_PERMUTATIONS[joints_3d_layout(len(joints))]
            joints = joints[list(perm)] * np.array([-1.0, 1.0, 1.0], np.float32)
        orient = mirror_axis_angle(orient)
    if backbone.width != s:
        left = (s - backbone.width) // 2
        crop = crop[:, left:left + backbone.width]
    std = np.asarray(backbone.std, np.float32)
    if params.color != (1.0, 1.0, 1.0):  # colour noise, clipped to the 8-bit range as SPIN does
        crop = np.minimum(crop * np.asarray(params.color, np.float32), np.float32(255.0))
    image = crop * (np.float32(1.0 / 255.0) / std) - np.asarray(backbone.mean, np.float32) / std
    kp[:, :2] = backbone.keypoint_range * ((2.0 * kp[:, :2] + 1.0) / s - 1.0)
    rot = axis_angle_to_matrix(orient).astype(np.float32)
    return {
        "image": np.ascontiguousarray(image, dtype=np.float32),
        "keypoints_2d": kp.astype(np.float32),
        "vertices": vertices @ rot.T,
        "vertices_canonical": vertices,
        "global_orient": orient.astype(np.float32),
        "rotation_matrix": rot,
        "joints_3d": (joints @ rot.T).astype(np.float32),
        "is_3dpw": np.bool_(kind == "smpl24"),
    }


def joints_3d_layout(num_joints: int) -> str:
    """Layout name of a ``joints_3d`` array from its length: 22 SMPL body joints or 17 COCO."""
    layouts = {22: "smpl22", 17: "coco17"}
    if num_joints not in layouts:
        raise ValueError(f"joints_3d with {num_joints} joints: expected 22 (SMPL body) or 17 (COCO)")
    return layouts[num_joints]
