"""BEDLAM / CLIFF training annotations (``coco.npz``, ``mpii.npz``, ``h36m_train.npz``,
``mpi_inf_3dhp_train.npz``) -> hmr_jax image records.

``python -m data_prep.cliff_npz --npz datasets/coco/coco.npz --body-models body_models --out OUT``

Input layout (BEDLAM's "Training CLIFF model with real images" instructions)::

    datasets/coco/coco.npz                 + datasets/coco/train2014/...
    datasets/mpii/mpii.npz                 + datasets/mpii/images/...
    datasets/h36m_train/h36m_train.npz     + datasets/h36m_train/Images/...
    datasets/mpi_inf_3dhp_train/mpi_inf_3dhp_train.npz + its image folders

Images are found at ``IMAGES/imgname`` with ``IMAGES`` the folder of the ``.npz`` (the
originals' ``datasets/{npz stem}/{imgname}``), or ``--images``.

Keys read, with the alternatives the original loaders accept: ``imgname``, ``center`` (2,),
``scale`` (box side = 200 x scale pixels), the pose (``pose_cam`` or ``pose`` (72) or
``root_orient`` + ``pose_body``; the first 66 values are used: root then 21 body joints),
``betas`` or ``shape`` (first 10), ``j2d`` or ``part`` (>= 24 joints, x, y, confidence; the
originals keep joints ``J24_TO_J17``, zero-padded to 24: ``keypoints_kind='h36m17'``) and
``gender`` when present (else neutral). The global orientation is taken as already in the
camera frame, as the originals do.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Sequence

import numpy as np

from data_prep import common
from hmr_jax.data.shards import ShardWriter


def convert(npz: str | pathlib.Path, out: str | pathlib.Path, meshes: common.BodyMeshes,
            images: str | pathlib.Path | None = None, dataset: str | None = None, records_per_shard: int = 1000,
            overwrite: bool = False, margin: float = 1.5, max_box: int = 448, chunk: int = 256,
            progress: bool = True) -> pathlib.Path:
    """Converts one annotation file (see the module docstring); returns the manifest path."""
    from tqdm import tqdm

    npz = pathlib.Path(npz)
    data = common.load_npz(npz)
    common.require(data, ["imgname", "center", "scale"], npz)
    images = pathlib.Path(images) if images is not None else npz.parent
    dataset = dataset or npz.stem
    names = np.asarray(data["imgname"]).reshape(-1)
    n = len(names)
    if "pose_cam" in data or "pose" in data:
        pose = np.asarray(data[common.first_key(data, ["pose_cam", "pose"], npz)], np.float64).reshape(n, -1)[:, :66]
    else:
        common.require(data, ["root_orient", "pose_body"], npz)
        pose = np.concatenate([np.asarray(data["root_orient"], np.float64).reshape(n, 3),
                               np.asarray(data["pose_body"], np.float64).reshape(n, -1)[:, :63]], axis=1)
    if pose.shape[1] != 66:
        raise common.ConversionInputError(f"{npz}: poses have {pose.shape[1]} values, at least 66 are needed")
    betas = np.asarray(data[common.first_key(data, ["betas", "shape"], npz)], np.float64).reshape(n, -1)[:, :10]
    j2d = np.asarray(data[common.first_key(data, ["j2d", "part"], npz)], np.float64)
    if j2d.ndim != 3 or j2d.shape[1] < 24 or j2d.shape[2] < 3:
        raise common.ConversionInputError(f"{npz}: 2D joints have shape {j2d.shape}, expected (N, >=24, 3)")
    centers = np.asarray(data["center"], np.float64).reshape(n, 2)
    scales = np.asarray(data["scale"], np.float64).reshape(n)
    genders = ([common.gender_name(g) for g in np.asarray(data["gender"]).reshape(-1)] if "gender" in data
               else ["neutral"] * n)
    meta = {"source": "BEDLAM/CLIFF annotations", "file": str(npz), "images": str(images),
            "body_model": "SMPL+H by the file's gender (neutral when absent), 10 betas"}
    with ShardWriter(out, "image", records_per_shard=records_per_shard, metadata=meta, overwrite=overwrite) as w:
        with tqdm(total=n, desc=dataset, disable=not progress) as bar:
            for start in range(0, n, chunk):
                idx = np.arange(start, min(n, start + chunk))
                mesh = {}
                for g in sorted({genders[i] for i in idx}):
                    sel = np.array([i for i in idx if genders[i] == g])
                    m = meshes.canonical(g, betas[sel], pose[sel, 3:66])
                    for k, v in m.items():
                        mesh.setdefault(k, {}).update({int(i): v[j] for j, i in enumerate(sel)})
                for i in idx:
                    name = str(names[i])
                    image = common.open_image(images / name, rotate_closeup=True)
                    region = common.store_region(image, centers[i], scales[i], margin=margin, max_box=max_box)
                    kp = np.zeros((24, 3))
                    kp[:17] = j2d[i, :24][list(common.J24_TO_J17), :3]
                    w.write(common.image_record(
                        region, kp, "h36m17", {k: v[int(i)] for k, v in mesh.items()}, pose[i, :3], dataset, name,
                        betas=betas[i], body_pose=pose[i, 3:66], gender=genders[i]))
                    bar.update(1)
    return pathlib.Path(out) / "manifest.json"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m data_prep.cliff_npz", description=__doc__.split("\n")[0])
    p.add_argument("--npz", required=True, help="annotation file, e.g. datasets/coco/coco.npz")
    p.add_argument("--images", default=None, help="folder imgname is relative to (default: the npz's folder)")
    p.add_argument("--dataset", default=None, help="dataset name stored in records (default: npz stem)")
    common.add_output_arguments(p)
    a = p.parse_args(argv)
    manifest = convert(a.npz, a.out, common.BodyMeshes.from_folder(a.body_models), images=a.images,
                       dataset=a.dataset, **common.output_options(a))
    print(f"wrote {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
