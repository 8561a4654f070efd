"""EMDB (official files) -> hmr_jax image records, as the original preprocessing does.

``python -m data_prep.emdb --root datasets/EMDB --subset emdb1 --body-models body_models --out OUT``

Input layout (the official download): one pickle per sequence with its images beside it::

    ROOT/P0/09_outdoor_walk/P0_09_outdoor_walk_data.pkl
    ROOT/P0/09_outdoor_walk/images/00000.jpg ...

For every sequence of the subset (``emdb1``: the test set the papers report; ``emdb2``) and
every frame in its ``good_frames_mask`` whose box is not in ``bboxes['invalid_idxs']`` (as
VQ-HPS ``preprocess_data/emdb.py``): the box is the annotated one (crop side ``1.2 x`` its
larger side), the global orientation is put in the camera frame (``extrinsics R @ R(root)``),
the 2D keypoints are the 24 projected SMPL joints ``kp2d`` (confidence 1,
``keypoints_kind='smpl24'``) and the ground-truth mesh is the subject's gendered body model.
The original's random 80/20 split of EMDB-2 into train / validation is not reproduced.
"""
from __future__ import annotations

import pathlib
import sys
from typing import Sequence

from absl import flags
import numpy as np
from tqdm import tqdm

from data_prep import common
from hmr_jax.cli import parse_command
from hmr_jax.data.shards import ShardWriter
from hmr_jax.errors import command_line


def read_sequence(path: str | pathlib.Path, subset: str = "emdb1") -> dict | None:
    """Read and check one official EMDB sequence pickle; None if it is not in ``subset``.

    Returns:
      ``frames`` (the usable frame indices: good, with a valid box), ``gender`` and, for every
      frame of the sequence, ``betas`` (>=10,), ``poses_root`` (N, 3) and ``poses_body`` (N, 63)
      axis-angle radians, ``trans`` (N, 3) meters, ``extrinsics`` (N, 4, 4), ``intrinsics``
      (3, 3), ``kp2d`` (N, K, >=2) pixels and ``bboxes`` (N, 4) ``x0, y0, x1, y1`` pixels.
    Raises:
      ConversionInputError: unreadable file, a missing key, a field of the wrong type or shape.
    """
    data = common.safe_pickle_load(path)
    common.require(data, [subset, "gender", "n_frames", "good_frames_mask", "smpl", "camera", "kp2d", "bboxes"],
                   path)
    flag = common.array_field(data[subset], subset, path, (), dtype=bool)
    if not flag:
        return None
    smpl = common.as_mapping(data["smpl"], "smpl", path)
    camera = common.as_mapping(data["camera"], "camera", path)
    bboxes = common.as_mapping(data["bboxes"], "bboxes", path)
    common.require(smpl, ["betas", "poses_root", "poses_body", "trans"], f"{path}['smpl']")
    common.require(camera, ["extrinsics", "intrinsics"], f"{path}['camera']")
    common.require(bboxes, ["bboxes", "invalid_idxs"], f"{path}['bboxes']")
    n = int(common.array_field(data["n_frames"], "n_frames", path, (), dtype=np.int64))
    f = lambda value, name, shape, **kw: common.array_field(value, name, path, shape, **kw)  # noqa: E731
    out = {
        "gender": common.gender_name(data["gender"], path),
        "betas": f(smpl["betas"], "smpl.betas", (">=10",)).reshape(-1),
        "poses_root": f(smpl["poses_root"], "smpl.poses_root", (n, 3)),
        "poses_body": f(smpl["poses_body"], "smpl.poses_body", (n, 63)),
        "trans": f(smpl["trans"], "smpl.trans", (n, 3)),
        "extrinsics": f(camera["extrinsics"], "camera.extrinsics", (n, 4, 4)),
        "intrinsics": f(camera["intrinsics"], "camera.intrinsics", (3, 3)),
        "kp2d": f(data["kp2d"], "kp2d", (n, ">=1", ">=2")),
        "bboxes": f(bboxes["bboxes"], "bboxes.bboxes", (n, 4)),
    }
    good = f(data["good_frames_mask"], "good_frames_mask", (n,), dtype=bool)
    invalid = set(f(bboxes["invalid_idxs"], "bboxes.invalid_idxs", (None,), dtype=np.int64).tolist())
    out["frames"] = [t for t in range(n) if good[t] and t not in invalid]
    return out


def convert(root: str | pathlib.Path, out: str | pathlib.Path, meshes: common.BodyMeshes, subset: str = "emdb1",
            records_per_shard: int = 1000, overwrite: bool = False, margin: float = 1.5, max_box: int = 448,
            progress: bool = True) -> pathlib.Path:
    """Converts the EMDB sequences flagged ``subset`` (see the module docstring); returns the manifest."""
    if subset not in ("emdb1", "emdb2"):
        raise ValueError(f"subset must be 'emdb1' or 'emdb2', got {subset!r}")
    root = pathlib.Path(root)
    if not root.is_dir():
        raise common.ConversionInputError(f"missing EMDB folder {root}")
    files = sorted(root.glob("**/*.pkl"))
    if not files:
        raise common.ConversionInputError(f"no sequence .pkl file under {root}")
    meta = {"source": "EMDB", "subset": subset, "root": str(root), "body_model": "gendered SMPL+H, 10 betas",
            "frames": "good_frames_mask and valid boxes"}
    with ShardWriter(out, "image", records_per_shard=records_per_shard, metadata=meta, overwrite=overwrite) as w:
        for path in tqdm(files, desc=f"EMDB {subset}", disable=not progress):
            seq = read_sequence(path, subset)
            if seq is None or not seq["frames"]:
                continue
            frames = seq["frames"]
            betas = np.repeat(seq["betas"].reshape(1, -1)[:, :10], len(frames), axis=0)
            fields = common.calibrated_frames(meshes, seq["gender"], betas, seq["poses_body"][frames],
                                              seq["poses_root"][frames], seq["trans"][frames],
                                              seq["extrinsics"][frames], seq["intrinsics"])
            kp2d = seq["kp2d"][frames]
            boxes = seq["bboxes"][frames]
            for i, t in enumerate(frames):
                img_path = path.parent / "images" / f"{t:05d}.jpg"
                image = common.open_image(img_path)
                x0, y0, x1, y1 = boxes[i]
                center = ((x0 + x1) / 2, (y0 + y1) / 2)
                scale = 1.2 * max(x1 - x0, y1 - y0) / 200.0
                region = common.store_region(image, center, scale, margin=margin, max_box=max_box)
                kp = np.concatenate([kp2d[i, :, :2], np.ones((kp2d.shape[1], 1))], axis=1)
                w.write(common.image_record(region, kp, "smpl24", dataset="emdb",
                                            image_name=str(img_path.relative_to(root)), **fields[i]))
        if w.num_records == 0:  # raised inside the writer: no manifest is written
            raise common.ConversionInputError(f"no {subset} frame found under {root}")
    return pathlib.Path(out) / "manifest.json"


def _define(fv: flags.FlagValues) -> None:
    """This command's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("root", None, "EMDB folder (P*/SEQUENCE/*.pkl and images/)", required=True, flag_values=fv)
    flags.DEFINE_enum("subset", "emdb1", ["emdb1", "emdb2"], "emdb1: the test set the papers report", flag_values=fv)
    common.define_output_flags(fv)


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    a = parse_command(argv, _define, "python -m data_prep.emdb", __doc__)
    if a is None:   # --help
        return 0
    manifest = convert(a.root, a.out, common.BodyMeshes.from_folder(a.body_models), subset=a.subset,
                       **common.output_options(a))
    print(f"wrote {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
