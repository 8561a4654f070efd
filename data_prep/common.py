"""What every real-dataset converter shares.

* :class:`ConversionInputError`: a missing file or key, a truncated file, with its path.
* :func:`safe_pickle_load`: reads the official 3DPW / EMDB pickles with an allowlist of
  classes (NumPy arrays and plain Python containers only; nothing else is ever imported).
* :class:`BodyMeshes`: ground-truth canonical meshes from a body model (the SMPL+H of
  :mod:`hmr_jax.body`, or any stand-in callable), computed once at preparation, with the
  meshes of the mirrored poses for flip augmentation.
* :func:`store_region`: cuts the square region around a person from the original image
  (with a margin for scale / rotation augmentation) and encodes it as JPEG; returns the
  affine map between stored and original pixels.
* :func:`image_record`: assembles an ``image`` record (:mod:`hmr_jax.data.records`);
  :func:`calibrated_frames`: the record fields of a person filmed by a calibrated camera.
"""
from __future__ import annotations

import io
import os
import pathlib
from typing import Any, Callable, Mapping, Sequence

from absl import flags
import numpy as np
from PIL import Image

from hmr_jax.body import load_body_model
from hmr_jax.data.augment import FLIP_PERMUTATIONS, apply_affine, invert_affine
from hmr_jax.errors import UserError
from hmr_jax.geometry.rotations_np import axis_angle_to_matrix, matrix_to_axis_angle, mirror_axis_angle
from hmr_jax.safe_read import RestrictedUnpickler, read_npz, restricted_pickle_load

# The originals' selection of 17 joints from the 24-joint annotations of the BEDLAM / CLIFF
# training files (J24_TO_J17 in their dataset code).
J24_TO_J17 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17)


class ConversionInputError(UserError, RuntimeError):
    """An input of a converter is missing, incomplete or malformed (the message names it)."""


#: the largest annotation file read (a CLIFF .npz of all of Human3.6M is ~1 GB)
MAX_ANNOTATION_BYTES = 8 << 30


class _SafeUnpickler(RestrictedUnpickler):
    """NumPy arrays and plain containers only (what the official 3DPW / EMDB pickles hold)."""

    ALLOWED = frozenset({("builtins", "slice"), ("builtins", "complex"), ("collections", "OrderedDict")})


def safe_pickle_load(path: str | os.PathLike) -> Any:
    """Loads an official dataset pickle (Python 2 pickles included) without executing code.

    Raises:
      ConversionInputError: missing, truncated or unexpected content, naming the file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConversionInputError(f"missing file {path}")
    return restricted_pickle_load(path, ConversionInputError, max_bytes=MAX_ANNOTATION_BYTES, unpickler=_SafeUnpickler,
                                  what="official dataset pickle")


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads every array of an ``.npz`` (object arrays of strings allowed; no pickled objects).

    Raises:
      ConversionInputError: missing or truncated file, naming it.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConversionInputError(f"missing file {path}")
    return read_npz(path, ConversionInputError, max_bytes=MAX_ANNOTATION_BYTES,
                    object_loader=lambda f: _SafeUnpickler(f).load())


def array_field(value: Any, name: str, path, shape: Sequence, dtype=np.float64, finite: bool = True) -> np.ndarray:
    """``value`` as a ``dtype`` array whose shape matches ``shape``, else :class:`ConversionInputError`.

    ``shape`` entries: an int (exact), None (any), or a string ``">=k"`` (at least k).
    """
    try:
        arr = np.asarray(value)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError("complex numbers")
        arr = arr.astype(dtype)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConversionInputError(f"{path}: {name} is not a numeric array ({type(value).__name__}: {e})") from None
    ok = arr.ndim == len(shape)
    for got, want in zip(arr.shape, shape):
        if isinstance(want, str):
            ok &= got >= int(want[2:])
        elif want is not None:
            ok &= got == want
    if not ok:
        want = tuple("*" if w is None else w for w in shape)
        raise ConversionInputError(f"{path}: {name} has shape {arr.shape}, expected {want}")
    if finite and np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ConversionInputError(f"{path}: {name} contains NaN or infinite values")
    return arr


def as_mapping(value: Any, name: str, path) -> Mapping:
    """``value`` if it is a dict, else :class:`ConversionInputError` naming ``name`` in ``path``."""
    if not isinstance(value, Mapping):
        raise ConversionInputError(f"{path}: {name} is a {type(value).__name__}, expected a dict")
    return value


def require(data: Mapping[str, Any], keys: Sequence[str], path) -> None:
    """Raises :class:`ConversionInputError` naming the file and the missing keys."""
    as_mapping(data, "the content", path)
    missing = [k for k in keys if k not in data]
    if missing:
        raise ConversionInputError(f"{path} lacks key(s) {missing} (present: {sorted(map(str, data))[:20]})")


def first_key(data: Mapping[str, Any], names: Sequence[str], path) -> str:
    """The first of ``names`` present in ``data`` (alternative key names of the originals)."""
    for n in names:
        if n in data:
            return n
    raise ConversionInputError(f"{path} has none of the keys {list(names)}")


# ---------------------------------------------------------------------------------------------
# Body model meshes

#: SMPL (22 body joints) flip of the 66 root + body pose values: swap left/right, negate y, z.
_FLIP22 = np.asarray(FLIP_PERMUTATIONS["smpl22"])


def flip_body_pose(body_pose: np.ndarray) -> np.ndarray:
    """``(..., 63)`` axis-angle body pose of the mirrored person (the originals' flip_pose)."""
    p = np.asarray(body_pose, np.float64).reshape(body_pose.shape[:-1] + (21, 3))
    full = np.concatenate([np.zeros(p.shape[:-2] + (1, 3)), p], axis=-2)[..., _FLIP22, :]
    return mirror_axis_angle(full)[..., 1:, :].reshape(body_pose.shape)


class BodyMeshes:
    """Canonical ground-truth meshes from a body model, one model per gender.

    Args:
      model_for_gender: ``gender -> model`` where ``model(betas=(B, 10), body_pose=(B, 63),
        global_orient=(B, 3), transl=(B, 3) or None)`` returns an object with ``vertices``
        (B, V, 3) and ``joints`` (B, J >= 22, 3), meters (e.g.
        ``lambda g: hmr_jax.body.load_body_model("body_models", gender=g)``).
      chunk: bodies per call (calls are padded to it, so a jitted model compiles once).
    """

    def __init__(self, model_for_gender: Callable[[str], Callable], chunk: int = 128):
        self._factory = model_for_gender
        self._models: dict[str, Callable] = {}
        self.chunk = int(chunk)

    @classmethod
    def from_folder(cls, body_models: str | os.PathLike, chunk: int = 128) -> "BodyMeshes":
        """SMPL+H / SMPL models found under ``body_models`` (see ``hmr_jax.body.LAYOUT_HELP``)."""
        return cls(lambda g: load_body_model(body_models, gender=g), chunk)

    def model(self, gender: str) -> Callable:
        g = str(gender)
        if g not in self._models:
            self._models[g] = self._factory(g)
        return self._models[g]

    def _run(self, gender, betas, body_pose, global_orient=None, transl=None):
        model = self.model(gender)
        n = len(body_pose)
        verts, joints = [], []
        for s in range(0, n, self.chunk):
            e = min(n, s + self.chunk)
            pad = self.chunk - (e - s)

            def part(x):
                x = np.asarray(x[s:e], np.float32)
                return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x

            out = model(betas=part(betas), body_pose=part(body_pose),
                        global_orient=None if global_orient is None else part(global_orient),
                        transl=None if transl is None else part(transl))
            verts.append(np.asarray(out.vertices, np.float64)[: e - s])
            joints.append(np.asarray(out.joints, np.float64)[: e - s])
        return np.concatenate(verts), np.concatenate(joints)

    def canonical(self, gender: str, betas: np.ndarray, body_pose: np.ndarray) -> dict[str, np.ndarray]:
        """Canonical meshes (no global rotation), centred on the vertex mean, as the originals.

        Args:
          gender: 'neutral' / 'male' / 'female' (or aliases).
          betas: (B, 10); body_pose: (B, 63) axis-angle, radians.
        Returns:
          ``vertices`` (B, V, 3), ``vertices_flipped`` (B, V, 3) (mesh of the mirrored pose,
          centred), ``joints_3d`` (B, 22, 3) (same centring as ``vertices``), meters.
        """
        betas = np.asarray(betas, np.float64)[:, :10]
        body_pose = np.asarray(body_pose, np.float64)
        v, j = self._run(gender, betas, body_pose)
        vf, _ = self._run(gender, betas, flip_body_pose(body_pose))
        mean = v.mean(axis=1, keepdims=True)
        return {"vertices": v - mean, "vertices_flipped": vf - vf.mean(axis=1, keepdims=True),
                "joints_3d": j[:, :22] - mean}

    def posed_mean(self, gender, betas, body_pose, global_orient, transl) -> np.ndarray:
        """(B, 3) vertex mean of the posed, translated body (world frame of the inputs), meters."""
        v, _ = self._run(gender, np.asarray(betas)[:, :10], body_pose, global_orient, transl)
        return v.mean(axis=1)


# ---------------------------------------------------------------------------------------------
# Images

def open_image(path: str | os.PathLike, rotate_closeup: bool = False) -> Image.Image:
    """Opens an RGB image; BEDLAM 'closeup' images are turned 90 degrees clockwise as the originals do.

    Raises:
      ConversionInputError: missing, truncated or unreadable image, naming it.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConversionInputError(f"missing image {path}")
    try:
        im = Image.open(path)
        im.load()
    except (OSError, SyntaxError) as e:
        raise ConversionInputError(f"cannot read image {path} (truncated or corrupt?): {e}") from e
    im = im.convert("RGB")
    if rotate_closeup and "closeup" in str(path):
        im = im.transpose(Image.Transpose.ROTATE_270)
    return im


def store_region(image: Image.Image, center, scale: float, margin: float = 1.5, max_box: int = 448,
                 quality: int = 95) -> dict[str, Any]:
    """Cuts the person's region out of an image for storage.

    The square of side ``margin * 200 * scale`` pixels around ``center`` (black outside the
    image) is resized (antialiased) so that the person's box is at most ``max_box`` pixels
    (``max_box=0``: full resolution kept), and JPEG-encoded.

    Returns:
      dict with ``image_jpeg`` (bytes), ``stored_to_original`` (2, 3) affine (pixel-centre
      convention), ``center`` (2,) and ``scale`` in stored pixels, ``image_size``
      (original height, width).
    """
    box = 200.0 * float(scale)
    side = box * margin
    x0 = int(np.floor(center[0] - side / 2.0 + 0.5))
    y0 = int(np.floor(center[1] - side / 2.0 + 0.5))
    n = max(1, int(round(side)))
    region = image.crop((x0, y0, x0 + n, y0 + n))
    out_side = max(1, int(round(n * min(1.0, max_box / box)))) if max_box else n
    if out_side != n:
        region = region.resize((out_side, out_side), Image.Resampling.BILINEAR)
    f = n / out_side  # original pixels per stored pixel
    to_orig = np.array([[f, 0.0, 0.5 * f - 0.5 + x0], [0.0, f, 0.5 * f - 0.5 + y0]])
    buf = io.BytesIO()
    region.save(buf, format="JPEG", quality=quality)
    to_stored = invert_affine(to_orig)
    return {
        "image_jpeg": buf.getvalue(),
        "stored_to_original": to_orig,
        "center": apply_affine(to_stored, np.asarray(center, np.float64)[None])[0],
        "scale": float(scale) / f,
        "image_size": np.array([image.size[1], image.size[0]]),
    }


def image_record(region: Mapping[str, Any], keypoints_2d: np.ndarray, keypoints_kind: str,
                 meshes: Mapping[str, np.ndarray], global_orient: np.ndarray, dataset: str, image_name: str,
                 **optional) -> dict[str, Any]:
    """An ``image`` record from :func:`store_region` output and original-image keypoints (K, 3)."""
    kp = np.array(keypoints_2d, np.float64)
    kp[:, :2] = apply_affine(invert_affine(region["stored_to_original"]), kp[:, :2])
    rec = {
        "image_jpeg": region["image_jpeg"], "center": region["center"], "scale": np.float32(region["scale"]),
        "keypoints_2d": kp, "keypoints_kind": keypoints_kind, "vertices": meshes["vertices"],
        "vertices_flipped": meshes["vertices_flipped"], "global_orient": np.asarray(global_orient),
        "joints_3d": meshes["joints_3d"], "dataset": dataset, "image_name": str(image_name),
        "image_size": region["image_size"], "stored_to_original": region["stored_to_original"],
    }
    rec.update({k: v for k, v in optional.items() if v is not None})
    return rec


def focal_and_principal(intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3, 3) camera intrinsics -> focal lengths (fx, fy) and principal point (cx, cy), pixels."""
    return np.array([intrinsics[0, 0], intrinsics[1, 1]]), np.array([intrinsics[0, 2], intrinsics[1, 2]])


def calibrated_frames(meshes: BodyMeshes, gender: str, betas: np.ndarray, body_pose: np.ndarray,
                      root_orient: np.ndarray, transl: np.ndarray, extrinsics: np.ndarray,
                      intrinsics: np.ndarray) -> list[dict[str, Any]]:
    """The record fields of a person in T frames filmed by a calibrated camera (3DPW, EMDB).

    Args:
      meshes: the body model meshes.
      gender: the person's body model.
      betas: (T, 10); body_pose: (T, 63) axis-angle, radians.
      root_orient: (T, 3) axis-angle of the body in the world frame, radians; transl: (T, 3) m.
      extrinsics: (T, 4, 4) world -> camera; intrinsics: (3, 3) pixels.
    Returns:
      Per frame, the keyword arguments of :func:`image_record` besides the region, keypoints and
      names: ``meshes`` (canonical, :meth:`BodyMeshes.canonical`), ``global_orient`` (3,) in the
      camera frame, ``betas``, ``body_pose``, ``gender``, ``camera_focal`` (2,),
      ``camera_principal_point`` (2,) pixels and ``camera_translation`` (3,): the posed mesh's
      vertex mean in the camera frame, m.
    """
    cam_r, cam_t = extrinsics[:, :3, :3], extrinsics[:, :3, 3]
    mesh = meshes.canonical(gender, betas, body_pose)
    orient = matrix_to_axis_angle(cam_r @ axis_angle_to_matrix(root_orient))
    world_mean = meshes.posed_mean(gender, betas, body_pose, root_orient, transl)
    translation = np.einsum("tij,tj->ti", cam_r, world_mean) + cam_t
    focal, principal = focal_and_principal(intrinsics)
    return [{"meshes": {k: v[i] for k, v in mesh.items()}, "global_orient": orient[i], "betas": betas[i],
             "body_pose": body_pose[i], "gender": gender, "camera_focal": focal,
             "camera_principal_point": principal, "camera_translation": translation[i]}
            for i in range(len(betas))]


def gender_name(value: Any, path=None) -> str:
    """'male' / 'female' / 'neutral' from the datasets' spellings ('m', 'f', b'male', ...).

    ``path``: the file the value comes from, named in the error.
    """
    where = f"{path}: " if path is not None else ""
    try:
        if isinstance(value, bytes):
            value = value.decode("latin1")
        v = str(np.asarray(value).reshape(-1)[0] if np.ndim(value) else value).strip().lower()
    except (ValueError, IndexError, TypeError):
        raise ConversionInputError(f"{where}unknown gender {value!r:.60} (expected m / f / male / female / "
                                   "neutral)") from None
    if v in ("m", "male"):
        return "male"
    if v in ("f", "female"):
        return "female"
    if v in ("n", "neutral", ""):
        return "neutral"
    raise ConversionInputError(f"{where}unknown gender {value!r:.60} (expected m / f / male / female / neutral)")


def define_output_flags(fv: flags.FlagValues) -> None:
    """The absl flags every image-dataset converter shares: ``--body-models``, ``--out``,
    ``--records-per-shard``, ``--margin``, ``--max-box``, ``--overwrite``."""
    flags.DEFINE_string("body-models", "body_models", "folder with smplh/{neutral,m,f}/model.npz", flag_values=fv)
    flags.DEFINE_string("out", None, "dataset folder to write", required=True, flag_values=fv)
    flags.DEFINE_integer("records-per-shard", 1000, "records per shard file", flag_values=fv)
    flags.DEFINE_float("margin", 1.5, "stored region side / person box side", flag_values=fv)
    flags.DEFINE_integer("max-box", 448, "stored person box side in pixels at most (0: full resolution)",
                         flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "replace an existing dataset in --out", flag_values=fv)


def output_options(args) -> dict:
    """The converters' keyword arguments from :func:`define_output_flags`'s flags."""
    return dict(records_per_shard=args.records_per_shard, overwrite=args.overwrite, margin=args.margin,
                max_box=args.max_box)
