"""The one record format every hmr_jax dataset is stored in.

A record is a flat ``dict`` of NumPy arrays, strings and bytes, serialised with msgpack
(``flax.serialization.msgpack_serialize``: no pickle, no code execution on read). Two kinds:

**image** records (training and evaluation sets; one person in one picture):

============================  ==========  ====================================================
field                         dtype/shape meaning
============================  ==========  ====================================================
``image_jpeg``                bytes       JPEG of the *stored region* around the person (never
                                          decoded pixels). Coordinates below are pixels of
                                          this stored image.
``center``                    f32 (2,)    bounding-box centre ``(x, y)``, pixels
``scale``                     f32 ()      box side = ``200 * scale`` pixels (the originals'
                                          convention)
``keypoints_2d``              f32 (K, 3)  ``(x, y, confidence)``, pixels; confidence 0 = absent
``keypoints_kind``            str         joint set of ``keypoints_2d``: ``smpl24`` (3DPW,
                                          EMDB: the 24 SMPL joints), ``h36m17`` (BEDLAM/CLIFF
                                          sets: the originals' J24_TO_J17 selection of the
                                          24-joint annotations, compared in training with the
                                          Human3.6M regressor's joints; zero-padded to 24),
                                          ``coco17`` (synthetic: COCO order)
``vertices``                  f32 (V, 3)  canonical mesh: body pose and shape, no global
                                          rotation, centred on its vertex mean; meters
``vertices_flipped``          f32 (V, 3)  the canonical mesh of the horizontally mirrored
                                          person (for flip augmentation)
``global_orient``             f32 (3,)    axis-angle (radians) of the body in the camera
                                          frame (x right, y down, z forward): the posed mesh
                                          is ``R(global_orient) @ vertices``
``joints_3d``                 f32 (J, 3)  joints of the canonical body (same frame and
                                          centring as ``vertices``), meters; may be (0, 3)
``dataset``, ``image_name``   str         source dataset, original image path (for reports)
``image_size``                i32 (2,)    original image ``(height, width)``
``stored_to_original``        f32 (2, 3)  affine map from stored-image pixels to original
                                          image pixels
============================  ==========  ====================================================

Optional image-record fields: ``betas`` f32 (10,), ``body_pose`` f32 (63,) axis-angle,
``gender`` str, ``camera_focal`` f32 (2,) and ``camera_principal_point`` f32 (2,) in
original-image pixels, ``camera_translation`` f32 (3,) meters (the posed mesh in the camera
frame is ``R(global_orient) @ vertices + camera_translation``), ``keypoints_3d`` f32 (K, 4)
camera-frame ``(x, y, z, confidence)`` in meters.

**mesh** records (tokenizer and pre-training stages): ``vertices`` f32 (V, 3) canonical and
centred as above, ``global_orient`` f32 (3,), ``dataset`` and ``name`` str; optional
``betas``, ``body_pose``, ``gender``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from flax import serialization

from hmr_jax.errors import UserError

#: Version of the record layout; stored in every manifest and checked on read.
SCHEMA_VERSION = 1
KINDS = ("image", "mesh")
KEYPOINT_KINDS = ("smpl24", "h36m17", "coco17")

# name -> (dtype, shape); "V", "K", "J" are sizes shared by all records of a dataset.
_IMAGE_REQUIRED = {
    "image_jpeg": (bytes, None),
    "center": (np.float32, (2,)),
    "scale": (np.float32, ()),
    "keypoints_2d": (np.float32, ("K", 3)),
    "keypoints_kind": (str, None),
    "vertices": (np.float32, ("V", 3)),
    "vertices_flipped": (np.float32, ("V", 3)),
    "global_orient": (np.float32, (3,)),
    "joints_3d": (np.float32, ("J", 3)),
    "dataset": (str, None),
    "image_name": (str, None),
    "image_size": (np.int32, (2,)),
    "stored_to_original": (np.float32, (2, 3)),
}
_IMAGE_OPTIONAL = {
    "betas": (np.float32, (10,)),
    "body_pose": (np.float32, (63,)),
    "gender": (str, None),
    "camera_focal": (np.float32, (2,)),
    "camera_principal_point": (np.float32, (2,)),
    "camera_translation": (np.float32, (3,)),
    "keypoints_3d": (np.float32, ("K", 4)),
}
_MESH_REQUIRED = {
    "vertices": (np.float32, ("V", 3)),
    "global_orient": (np.float32, (3,)),
    "dataset": (str, None),
    "name": (str, None),
}
_MESH_OPTIONAL = {
    "betas": (np.float32, (10,)),
    "body_pose": (np.float32, (63,)),
    "gender": (str, None),
}
SPECS = {
    "image": (_IMAGE_REQUIRED, _IMAGE_OPTIONAL),
    "mesh": (_MESH_REQUIRED, _MESH_OPTIONAL),
}


#: the largest serialised record read back (a 448-pixel JPEG region and a mesh are ~200 KB)
MAX_RECORD_BYTES = 64 << 20


class RecordError(UserError, ValueError):
    """A record that does not follow the format (missing field, wrong shape, corrupt bytes)."""


def _check_field(name: str, value: Any, dtype, shape, sizes: dict[str, int]) -> Any:
    if dtype is bytes:
        if not isinstance(value, (bytes, bytearray)):
            raise RecordError(f"field {name!r} must be bytes, got {type(value).__name__}")
        return bytes(value)
    if dtype is str:
        if not isinstance(value, str):
            raise RecordError(f"field {name!r} must be a str, got {type(value).__name__}")
        return value
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, UnicodeError, OverflowError) as e:  # ragged or mixed decoded values
        raise RecordError(f"field {name!r} is not an array ({type(e).__name__}: {e})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) \
            or np.issubdtype(arr.dtype, np.complexfloating):
        raise RecordError(f"field {name!r} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(dtype)
    if arr.ndim != len(shape):
        raise RecordError(f"field {name!r} must have shape {shape}, got {arr.shape}")
    for dim, want in zip(arr.shape, shape):
        if isinstance(want, str):
            if sizes.setdefault(want, dim) != dim:
                raise RecordError(f"field {name!r} has {want}={dim}, other fields have {want}={sizes[want]}")
        elif dim != want:
            raise RecordError(f"field {name!r} must have shape {shape}, got {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise RecordError(f"field {name!r} contains NaN or inf")
    return arr


def validate_record(record: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Checks a record against the format of ``kind`` and returns it with canonical dtypes.

    Raises:
      RecordError: naming the missing, unknown or malformed field.
    """
    if kind not in SPECS:
        raise RecordError(f"unknown record kind {kind!r}; expected one of {KINDS}")
    required, optional = SPECS[kind]
    missing = sorted(set(required) - set(record))
    if missing:
        raise RecordError(f"{kind} record is missing field(s) {missing}")
    unknown = sorted(set(record) - set(required) - set(optional))
    if unknown:
        raise RecordError(f"{kind} record has unknown field(s) {unknown}; see hmr_jax.data.records")
    sizes: dict[str, int] = {}
    out = {}
    for name, value in record.items():
        dtype, shape = required.get(name) or optional[name]
        out[name] = _check_field(name, value, dtype, shape, sizes)
    if kind == "image":
        if out["keypoints_kind"] not in KEYPOINT_KINDS:
            raise RecordError(f"keypoints_kind {out['keypoints_kind']!r} is not one of {KEYPOINT_KINDS}")
        if not out["image_jpeg"].startswith(b"\xff\xd8"):
            raise RecordError("image_jpeg does not hold JPEG bytes (no FF D8 start marker)")
        if out["scale"] <= 0:
            raise RecordError(f"scale must be positive, got {out['scale']}")
    return out


def encode_record(record: Mapping[str, Any], kind: str) -> bytes:
    """Validates a record (see :func:`validate_record`) and serialises it to msgpack bytes."""
    return serialization.msgpack_serialize(validate_record(record, kind))


def decode_record(data: bytes) -> dict[str, Any]:
    """msgpack bytes -> record dict (arrays as NumPy). Raises RecordError on corrupt bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RecordError(f"a record is bytes, got {type(data).__name__}")
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError(f"a record of {len(data)} bytes is larger than {MAX_RECORD_BYTES}: corrupt data")
    try:
        record = serialization.msgpack_restore(bytes(data))
    except Exception as e:  # noqa: BLE001 - msgpack raises several types on garbage
        raise RecordError(f"cannot decode a record ({len(data)} bytes): {type(e).__name__}: {e}") from None
    if not isinstance(record, dict):
        raise RecordError(f"a record must decode to a dict, got {type(record).__name__}")
    bad = [k for k in record if not isinstance(k, str)]
    if bad:
        raise RecordError(f"a record's field names are strings, got {bad[:3]!r}")
    return record


def read_record(data: bytes, kind: str, sizes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Decode and validate one stored record: the format of ``kind`` and, when given, the
    dataset's shared ``sizes`` (``manifest["sizes"]``: vertex count, keypoint count and kind).

    Raises:
      RecordError: corrupt bytes, a malformed field, or sizes that differ from the dataset's.
    """
    record = validate_record(decode_record(data), kind)
    if sizes:
        got = record_sizes(record)
        diff = {k: (got.get(k), v) for k, v in sizes.items() if got.get(k) != v}
        if diff:
            raise RecordError("sizes differ from the dataset's manifest: " + ", ".join(
                f"{k} {g} (manifest: {w})" for k, (g, w) in diff.items()))
    return record


def record_sizes(record: Mapping[str, Any]) -> dict[str, Any]:
    """The sizes every record of a dataset must share: vertex count, keypoint count and kind."""
    out = {"num_vertices": int(np.shape(record["vertices"])[0])}
    if "keypoints_2d" in record:
        out["num_keypoints"] = int(np.shape(record["keypoints_2d"])[0])
        out["keypoints_kind"] = str(record["keypoints_kind"])
        out["num_joints_3d"] = int(np.shape(record["joints_3d"])[0])
    return out
