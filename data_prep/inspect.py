"""Look at a converted dataset: crops with keypoints and ground-truth meshes, as training sees them.

``python -m data_prep.inspect DIR --out sheet.png [--num 16] [--augment] [--backbone hrnet|resnet|vit]``

Runs the dataset through ``hmr_jax.data.image_pipeline`` (no augmentation unless asked) and
writes a PNG grid: for each example, the input crop with its 2D keypoints (red; absent ones
not drawn), and the posed ground-truth mesh drawn over the crop with the weak-perspective
camera fitted to the keypoints (when the keypoints are joints of the mesh: ``smpl24``,
``coco17``) or to the crop centre otherwise. Misaligned data shows at a glance. Also prints
the manifest summary.
"""
from __future__ import annotations

import json
import sys
from typing import Sequence

from absl import flags
import numpy as np

from hmr_jax.cli import parse_command
from hmr_jax.data import augment as aug
from hmr_jax.data.pipeline import image_pipeline
from hmr_jax.data.shards import open_dataset
from hmr_jax.errors import command_line
from hmr_jax.render import PerspectiveCamera, contact_sheet, draw_points, render_mesh, write_png


def fit_weak_perspective(points_3d: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Least-squares ``(s, tx, ty)`` with ``keypoints[:, :2] ~ s * (points_3d[:, :2] + t)``, confidence-weighted."""
    w = keypoints[:, 2] > 0
    if w.sum() < 2:
        return np.array([0.9 / max(np.ptp(points_3d[:, 1]) / 2, 1e-3), 0.0, 0.0])
    x, y = points_3d[w, :2], keypoints[w, :2]
    xm, ym = x.mean(0), y.mean(0)
    s = float(np.sum((x - xm) * (y - ym)) / max(np.sum((x - xm) ** 2), 1e-9))
    s = max(s, 1e-3)
    t = ym / s - xm
    return np.array([s, t[0], t[1]])


def _faces(dataset) -> np.ndarray | None:
    topo = dataset.metadata.get("topology")
    if topo:
        return np.load(dataset.path / topo["faces"])
    return None


def sheet(path: str, num: int = 16, augment: bool = False, backbone: str = "hrnet", faces=None,
          seed: int = 0) -> np.ndarray:
    """The inspection grid of ``num`` examples (uint8 image)."""
    dataset = open_dataset(path, kind="image")
    faces = _faces(dataset) if faces is None else faces
    geometry = aug.BACKBONE_INPUTS[backbone]
    it = iter(image_pipeline(path, batch_size=1, backbone=backbone, train=augment, augment=augment, seed=seed,
                             shard_index=0, shard_count=1, read_threads=0))
    tiles = []
    for _ in range(min(num, len(dataset))):
        b = {k: v[0] for k, v in next(it).items()}
        rgb = (b["image"] * np.array(geometry.std) + np.array(geometry.mean)) * 255.0
        rgb = rgb.clip(0, 255).astype(np.uint8)
        left = (geometry.crop - geometry.width) // 2
        kp = b["keypoints_2d"]
        xy = ((kp[:, :2] / geometry.keypoint_range + 1.0) * geometry.crop - 1.0) / 2.0 - [left, 0]
        tiles.append(draw_points(rgb, xy[kp[:, 2] > 0], color=(255, 30, 30), radius=2))
        joints = b["joints_3d"]
        n = min(len(joints), len(kp))
        kind = dataset.sizes.get("keypoints_kind")
        fit = kind in ("smpl24", "coco17") and n > 0
        if fit:
            cam = fit_weak_perspective(joints[:n], kp[:n])
        else:  # mesh height to 90% of the crop, centred
            cam = np.array([0.9 * geometry.keypoint_range / max(np.ptp(b["vertices"][:, 1]) / 2, 1e-3), 0.0, 0.0])
        camera = PerspectiveCamera.from_weak_perspective(cam, geometry.crop, keypoint_range=geometry.keypoint_range)
        camera = PerspectiveCamera(camera.focal, (camera.principal_point[0] - left, camera.principal_point[1]),
                                   camera.translation)
        if faces is not None:
            tiles.append(render_mesh(rgb, b["vertices"], faces, camera, alpha=0.7))
        else:  # no faces known: draw the vertices
            tiles.append(draw_points(rgb, camera.project(b["vertices"][::7]), color=(120, 160, 255), radius=1))
    return contact_sheet(tiles, columns=4)


PROGRAM = "python -m data_prep.inspect"


def _define(fv: flags.FlagValues) -> None:
    """This command's absl flags (parsed by :func:`hmr_jax.cli.parse_command`); the dataset folder is
    the one positional argument."""
    flags.DEFINE_string("out", None, "PNG to write", required=True, flag_values=fv)
    flags.DEFINE_integer("num", 8, "examples (two tiles each)", flag_values=fv)
    flags.DEFINE_boolean("augment", False, "apply the training augmentation", flag_values=fv)
    flags.DEFINE_enum("backbone", "hrnet", sorted(aug.BACKBONE_INPUTS), "the backbone whose input crop is shown",
                      flag_values=fv)
    flags.DEFINE_string("faces", None, ".npy faces of the mesh (default: the dataset's topology)", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "PRNG seed of the augmentation", flag_values=fv)


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    a = parse_command(argv, _define, PROGRAM, __doc__, positional="datasets")
    if a is None:   # --help
        return 0
    if len(a.datasets) != 1:
        raise ValueError(f"give one image dataset folder, got {len(a.datasets)} ({' '.join(a.datasets) or 'none'}): "
                         f"{PROGRAM} DIR --out sheet.png")
    a.dataset = a.datasets[0]
    d = open_dataset(a.dataset)
    print(json.dumps({"records": len(d), "kind": d.kind, "sizes": d.sizes, "metadata": {
        k: v for k, v in d.metadata.items() if k != "topology"}}, indent=1))
    faces = np.load(a.faces) if a.faces else None
    write_png(a.out, sheet(a.dataset, a.num, a.augment, a.backbone, faces, a.seed))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
