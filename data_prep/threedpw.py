"""3DPW (official files) -> hmr_jax image records, prepared as the original preprocessing does.

``python -m data_prep.threedpw --root datasets/3DPW --split test --body-models body_models --out OUT``

Input layout (the official download)::

    ROOT/sequenceFiles/{train,validation,test}/SEQUENCE.pkl
    ROOT/imageFiles/SEQUENCE/image_00000.jpg ...

For every person of every sequence (as VQ-HPS ``preprocess_data/threedpw.py``):

* the box comes from the person's 2D pose (``poses2d``, joints with confidence > 0.3): centre
  of the keypoints' extent, ``scale = 150 / extent``, linearly interpolated over frames
  without keypoints, median filtered (kernel 11) and Gaussian smoothed (sigma 8); the crop
  side is ``200 / scale`` pixels (the originals invert 3DPW's scale when loading);
* frames with an invalid camera pose (``campose_valid``) or outside the span of detected
  keypoints are skipped;
* the global orientation is put in the camera frame (``cam_R @ R(root)``), the 24 SMPL joints
  (``jointPositions``) are projected with the intrinsics for the 2D keypoints
  (``keypoints_kind='smpl24'``, confidence 1; their camera-frame positions are kept as
  ``keypoints_3d``);
* the ground-truth mesh is the gendered body model with the sequence's betas (first 10) and
  body pose (63 values), computed once here.

Deviation from the original script: when a person's keypoints are missing in the first frames,
the original pairs image ``t + start`` with the annotations of frame ``t``; here every field
comes from the same frame.
"""
from __future__ import annotations

import pathlib
import sys
import warnings
from typing import Sequence

from absl import flags
import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import medfilt
from tqdm import tqdm

from data_prep import common
from hmr_jax.cli import parse_command
from hmr_jax.data.shards import ShardWriter
from hmr_jax.errors import command_line

VIS_THRESH = 0.3


def _bbox_from_keypoints(kp: np.ndarray, vis_thresh: float):
    """(K, 3) keypoints -> [cx, cy, scale] with scale = 150 / extent, or None."""
    vis = kp[:, 2] > vis_thresh
    if not np.any(vis):
        return None
    lo, hi = kp[vis, :2].min(axis=0), kp[vis, :2].max(axis=0)
    extent = np.linalg.norm(hi - lo)
    if extent < 0.5:
        return None
    return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 150.0 / extent])


def smooth_boxes(keypoints: np.ndarray, vis_thresh: float = VIS_THRESH, kernel: int = 11,
                 sigma: float = 8.0) -> tuple[np.ndarray, int, int]:
    """Smoothed per-frame boxes of one person.

    Args:
      keypoints: (T, K, 3) 2D keypoints with confidences, per frame.
    Returns:
      ``(params (T, 3) [cx, cy, scale], start, end)``: frames ``start <= t < end`` have a box
      (from the first to the last frame with keypoints; gaps interpolated linearly).
    """
    raw = [_bbox_from_keypoints(k, vis_thresh) for k in keypoints]
    valid = [t for t, b in enumerate(raw) if b is not None]
    if not valid:
        return np.zeros((len(raw), 3)), 0, 0
    start, end = valid[0], valid[-1] + 1
    known = np.array([raw[t] for t in valid])
    frames = np.arange(start, end)
    params = np.stack([np.interp(frames, valid, known[:, i]) for i in range(3)], axis=1)
    with warnings.catch_warnings():  # short tracks: scipy zero-pads the window (as in the original)
        warnings.simplefilter("ignore", UserWarning)
        params = np.stack([medfilt(params[:, i], kernel) for i in range(3)], axis=1)
    params = np.stack([gaussian_filter1d(params[:, i], sigma) for i in range(3)], axis=1)
    out = np.zeros((len(raw), 3))
    out[start:end] = params
    return out, start, end


_PERSON_FIELDS = ("poses", "betas", "genders", "poses2d", "jointPositions", "campose_valid", "trans")


def read_sequence(path: str | pathlib.Path) -> dict:
    """Read and check one official 3DPW sequence pickle.

    Returns:
      ``cam_poses`` (T, 4, 4), ``cam_intrinsics`` (3, 3) and ``people``: per person a dict with
      ``poses`` (T, 72) axis-angle radians, ``betas`` (>=10,), ``gender``, ``poses2d`` (T, 3, K)
      pixels + confidence, ``jointPositions`` (T, 72) meters, ``campose_valid`` (T,) bool and
      ``trans`` (T, 3) meters.
    Raises:
      ConversionInputError: unreadable file, a missing key, a field of the wrong type or shape
        (naming the file, the field and the person).
    """
    data = common.safe_pickle_load(path)
    common.require(data, ["poses", "betas", "genders", "poses2d", "jointPositions", "cam_poses",
                          "cam_intrinsics", "campose_valid", "trans"], path)
    cam = common.array_field(data["cam_poses"], "cam_poses", path, (None, 4, 4))
    t = cam.shape[0]
    out = {"cam_poses": cam, "cam_intrinsics": common.array_field(data["cam_intrinsics"], "cam_intrinsics", path,
                                                                  (3, 3)), "people": []}
    lists = {}
    for key in _PERSON_FIELDS:
        value = data[key]
        if isinstance(value, np.ndarray):
            if value.ndim == 0:
                raise common.ConversionInputError(f"{path}: {key} is a single value, expected one entry per person")
            value = list(value)
        if not isinstance(value, (list, tuple)) and not (isinstance(value, np.ndarray) and value.ndim == 1):
            raise common.ConversionInputError(f"{path}: {key} is a {type(value).__name__}, expected one entry "
                                              "per person")
        lists[key] = list(value)
    counts = {k: len(v) for k, v in lists.items()}
    if len(set(counts.values())) > 1:
        raise common.ConversionInputError(f"{path}: the per-person fields disagree on the number of people {counts}")
    shapes = {"poses": (t, ">=66"), "betas": (">=10",), "poses2d": (t, 3, ">=1"), "jointPositions": (t, 72),
              "campose_valid": (t,), "trans": (t, 3)}
    for p in range(counts["poses"]):
        person = {k: common.array_field(lists[k][p], f"{k}[{p}]", path, shape, finite=k != "poses2d")
                  for k, shape in shapes.items()}
        person["poses2d"] = np.nan_to_num(person["poses2d"])  # undetected joints may be NaN
        person["campose_valid"] = person["campose_valid"].astype(bool)
        person["gender"] = common.gender_name(lists["genders"][p], f"{path} genders[{p}]")
        out["people"].append(person)
    return out


def convert(root: str | pathlib.Path, split: str, out: str | pathlib.Path, meshes: common.BodyMeshes,
            records_per_shard: int = 1000, overwrite: bool = False, margin: float = 1.5, max_box: int = 448,
            progress: bool = True) -> pathlib.Path:
    """Converts one split of 3DPW (see the module docstring); returns the manifest path."""
    root = pathlib.Path(root)
    seq_dir = root / "sequenceFiles" / split
    if not seq_dir.is_dir():
        raise common.ConversionInputError(f"missing folder {seq_dir} (expected ROOT/sequenceFiles/{split}/*.pkl "
                                          "from the official 3DPW download)")
    files = sorted(seq_dir.glob("*.pkl"))
    if not files:
        raise common.ConversionInputError(f"no .pkl sequence file in {seq_dir}")
    meta = {"source": "3DPW", "split": split, "root": str(root), "body_model": "gendered SMPL+H, 10 betas",
            "box": "smoothed keypoint boxes (VQ-HPS preprocessing)"}
    with ShardWriter(out, "image", records_per_shard=records_per_shard, metadata=meta, overwrite=overwrite) as w:
        for path in tqdm(files, desc=f"3DPW {split}", disable=not progress):
            data = read_sequence(path)
            seq = path.stem
            cam = data["cam_poses"]
            k = data["cam_intrinsics"]
            focal, principal = common.focal_and_principal(k)
            for person in data["people"]:
                poses = person["poses"]
                n = len(poses)
                kp2d = person["poses2d"].transpose(0, 2, 1)
                boxes, start, end = smooth_boxes(kp2d)
                valid = person["campose_valid"]
                # (tracks shorter than 6 frames smooth to a zero scale in the original: skipped)
                frames = [t for t in range(start, end) if valid[t] and boxes[t, 2] > 0]
                if not frames:
                    continue
                betas = np.repeat(person["betas"][None, :10], len(frames), axis=0)
                fields = common.calibrated_frames(meshes, person["gender"], betas, poses[frames, 3:66],
                                                  poses[frames, :3], person["trans"][frames], cam[frames], k)
                joints = person["jointPositions"].reshape(n, -1, 3)[frames]
                cam_j = np.einsum("tij,tkj->tki", cam[frames, :3, :3], joints) + cam[frames, None, :3, 3]
                uv = cam_j[..., :2] / cam_j[..., 2:3] * focal + principal
                for i, t in enumerate(frames):
                    img_path = root / "imageFiles" / seq / f"image_{t:05d}.jpg"
                    image = common.open_image(img_path)
                    cx, cy, s = boxes[t]
                    region = common.store_region(image, (cx, cy), 1.0 / s, margin=margin, max_box=max_box)
                    kp = np.concatenate([uv[i], np.ones((uv.shape[1], 1))], axis=1)
                    w.write(common.image_record(
                        region, kp, "smpl24", dataset="3dpw", image_name=str(img_path.relative_to(root)),
                        keypoints_3d=np.concatenate([cam_j[i], np.ones((cam_j.shape[1], 1))], axis=1), **fields[i]))
        if w.num_records == 0:  # raised inside the writer: no manifest is written
            raise common.ConversionInputError(f"no usable frame in {seq_dir}")
    return pathlib.Path(out) / "manifest.json"


def _define(fv: flags.FlagValues) -> None:
    """This command's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("root", None, "3DPW folder (sequenceFiles/, imageFiles/)", required=True, flag_values=fv)
    flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "the split to convert", flag_values=fv)
    common.define_output_flags(fv)


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    a = parse_command(argv, _define, "python -m data_prep.threedpw", __doc__)
    if a is None:   # --help
        return 0
    manifest = convert(a.root, a.split, a.out, common.BodyMeshes.from_folder(a.body_models),
                       **common.output_options(a))
    print(f"wrote {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
