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


def read_annotations(npz: str | pathlib.Path) -> dict:
    """Read and check a BEDLAM / CLIFF annotation ``.npz`` (see the module docstring for the keys).

    Returns:
      ``imgname`` (N,) str, ``center`` (N, 2) and ``scale`` (N,) (box side 200 x scale pixels),
      ``pose`` (N, 66) axis-angle radians (root then 21 body joints), ``betas`` (N, 10),
      ``j2d`` (N, >=24, >=3) pixels + confidence, ``genders`` (N,) 'male' / 'female' / 'neutral'.
    Raises:
      ConversionInputError: unreadable file, a missing key, a field of the wrong type or shape.
    """
    npz = pathlib.Path(npz)
    data = common.load_npz(npz)
    common.require(data, ["imgname", "center", "scale"], npz)
    names = np.asarray(data["imgname"]).reshape(-1)
    if names.dtype.kind not in "US" and not (names.dtype == object and all(isinstance(x, (str, bytes)) for x in names)):
        raise common.ConversionInputError(f"{npz}: imgname holds {names.dtype}, expected image file names")
    names = np.array([x.decode("latin1") if isinstance(x, bytes) else str(x) for x in names.tolist()])
    n = len(names)
    f = lambda key, shape: common.array_field(data[key], key, npz, shape)  # noqa: E731
    if "pose_cam" in data or "pose" in data:
        pose = f(common.first_key(data, ["pose_cam", "pose"], npz), (n, ">=66"))[:, :66]
    else:
        common.require(data, ["root_orient", "pose_body"], npz)
        pose = np.concatenate([f("root_orient", (n, 3)), f("pose_body", (n, ">=63"))[:, :63]], axis=1)
    betas = f(common.first_key(data, ["betas", "shape"], npz), (n, ">=10"))[:, :10]
    j2d = common.array_field(data[common.first_key(data, ["j2d", "part"], npz)], "2D joints", npz, (n, ">=24", ">=3"))
    centers = f("center", (n, 2))
    scales = f("scale", (n,))
    if np.any(scales <= 0):
        raise common.ConversionInputError(f"{npz}: scale must be positive (box side = 200 x scale pixels); entry "
                                          f"{int(np.argmax(scales <= 0))} is {scales[scales <= 0][0]}")
    genders = ["neutral"] * n
    if "gender" in data:
        g = np.asarray(data["gender"]).reshape(-1)
        if len(g) != n:
            raise common.ConversionInputError(f"{npz}: gender has {len(g)} entries for {n} images")
        genders = [common.gender_name(x, npz) for x in g]
    return {"imgname": names, "center": centers, "scale": scales, "pose": pose, "betas": betas, "j2d": j2d,
            "genders": genders}


def convert(npz: str | pathlib.Path, out: str | pathlib.Path, meshes: common.BodyMeshes,
            images: str | pathlib.Path | None = None, dataset: str | None = None, records_per_shard: int = 1000,
            overwrite: bool = False, margin: float = 1.5, max_box: int = 448, chunk: int = 256,
            progress: bool = True) -> pathlib.Path:
    """Converts one annotation file (see the module docstring); returns the manifest path."""
    npz = pathlib.Path(npz)
    ann = read_annotations(npz)
    names, pose, betas, j2d = ann["imgname"], ann["pose"], ann["betas"], ann["j2d"]
    centers, scales, genders = ann["center"], ann["scale"], ann["genders"]
    n = len(names)
    images = pathlib.Path(images) if images is not None else npz.parent
    dataset = dataset or npz.stem
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


def _define(fv: flags.FlagValues) -> None:
    """This command's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("npz", None, "annotation file, e.g. datasets/coco/coco.npz", required=True, flag_values=fv)
    flags.DEFINE_string("images", None, "folder imgname is relative to (default: the npz's folder)", flag_values=fv)
    flags.DEFINE_string("dataset", None, "dataset name stored in records (default: npz stem)", flag_values=fv)
    common.define_output_flags(fv)


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    a = parse_command(argv, _define, "python -m data_prep.cliff_npz", __doc__)
    if a is None:   # --help
        return 0
    manifest = convert(a.npz, a.out, common.BodyMeshes.from_folder(a.body_models), images=a.images,
                       dataset=a.dataset, **common.output_options(a))
    print(f"wrote {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
