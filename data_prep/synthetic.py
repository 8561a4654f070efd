"""The embedded default dataset: synthetic people, no licensed asset.

``python -m data_prep.synthetic --out DIR --num N [--seed S] [--image-size 320] [--contact-sheet]``

Each example is an Anny body (Apache-2.0 parametric model, ``pip install anny==0.6.2``; it
ships its data and runs on the CPU with PyTorch) with a random phenotype (gender, age,
muscle, weight, height, proportions) and a random plausible pose (rotations of the main
limb, spine and neck bones within joint-angle limits), random clothes colours, a random
global orientation (upright, any heading, small tilt), seen by a random perspective camera
and rendered by :mod:`hmr_jax.render` over a random background. COCO keypoints come from
Anny's keypoint regressor. Examples are stored as ``image`` records exactly as the real
datasets (:mod:`hmr_jax.data.records`), with ``keypoints_kind='coco17'``.

Written to ``DIR``: the shards and ``manifest.json`` (last), and ``DIR/topology/``:
``template.ply`` (the rest mesh, canonical frame), ``faces.npy`` and the connection
hierarchy of the fixed topology built by :mod:`hmr_jax.mesh.build` (``_poolK.npy``,
``_unpoolK.npy``, ``hierarchy.json``) for the tokenizer. Generation is deterministic for a
seed (each example draws from its own generator ``(seed, index)``) and shows a progress bar.

Canonical frame of ``vertices`` (as SMPL's): y up, the person facing +z, centred on the
vertex mean; ``global_orient`` turns it into the camera frame (x right, y down, z forward).
"""
from __future__ import annotations

import io
import os
import pathlib
import sys
import time
from typing import Sequence

from absl import flags
import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from hmr_jax.cli import parse_command
from hmr_jax.data.shards import ShardWriter
from hmr_jax.errors import command_line
from hmr_jax.files import atomic_open
from hmr_jax.geometry.rotations_np import euler_xyz_to_matrix, matrix_to_axis_angle
from hmr_jax.mesh import build
from hmr_jax.mesh import io as mesh_io
from hmr_jax.mesh.symmetry import mirror_permutation
from hmr_jax.render import PerspectiveCamera, contact_sheet, draw_points, rasterize, shade, write_png
from hmr_jax.testing.box_person import StandInBody

#: Anny's z-up, facing -y frame -> canonical (y up, facing +z): a proper rotation.
ANNY_TO_CANONICAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
#: Canonical (y up, facing +z) -> camera (y down) for a person upright and facing the camera.
CANONICAL_TO_CAMERA_FACING = np.diag([1.0, -1.0, -1.0])
COCO17 = 17

# Joint-angle limits in degrees about the bone's local (x, y, z) axes of Anny's "local-ref"
# pose parameterisation, for the left side (the right side mirrors y and z). x is the main
# hinge (flexion), y the sideways swing, z the twist. Found by rendering each axis.
JOINT_LIMITS = {
    "upperleg01": ((-70, 15), (-35, 8), (-20, 20)),
    "lowerleg01": ((0, 100), (-3, 3), (-10, 10)),
    "foot": ((-25, 25), (-8, 8), (-8, 8)),
    "upperarm01": ((-110, 40), (-85, 35), (-40, 40)),
    "lowerarm01": ((-125, 0), (-8, 8), (-40, 40)),
    "wrist": ((-35, 35), (-20, 20), (-20, 20)),
    "clavicle": ((-8, 8), (-12, 8), (-5, 5)),
    "spine01": ((-6, 12), (-7, 7), (-8, 8)),
    "spine02": ((-6, 12), (-7, 7), (-8, 8)),
    "spine03": ((-6, 12), (-7, 7), (-8, 8)),
    "spine04": ((-5, 10), (-5, 5), (-6, 6)),
    "spine05": ((-5, 10), (-5, 5), (-6, 6)),
    "neck01": ((-12, 20), (-12, 12), (-25, 25)),
    "head": ((-15, 20), (-12, 12), (-30, 30)),
}
_SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96],
                        [161, 102, 70], [112, 72, 50], [87, 56, 38]]) / 255.0


def sample_bone_angles(rng: np.random.Generator, bone_labels: Sequence[str]) -> dict[int, np.ndarray]:
    """Random plausible joint angles: ``{bone index: (3,) degrees}`` within :data:`JOINT_LIMITS`.

    A per-person activity level in [0.25, 1] scales how far from the rest pose the angles go,
    so the set covers near-rest to wide poses.
    """
    activity = rng.uniform(0.25, 1.0)
    out = {}
    index = {name: i for i, name in enumerate(bone_labels)}
    for base, limits in JOINT_LIMITS.items():
        sides = [(base + ".L", 1.0), (base + ".R", -1.0)] if base + ".L" in index else [(base, 1.0)]
        for name, sign in sides:
            if name not in index:
                continue
            lo, hi = np.array(limits, dtype=np.float64).T
            u = rng.uniform(0.0, 1.0, size=3)
            # Centre of the range is rest (0) when it contains 0; scale toward it by activity.
            rest = np.clip(0.0, lo, hi)
            angles = rest + activity * (lo + u * (hi - lo) - rest)
            angles[1:] *= sign
            out[index[name]] = angles
    return out


def sample_global_orient(rng: np.random.Generator, max_heading_deg: float = 180.0) -> np.ndarray:
    """(3, 3) canonical -> camera rotation: upright, tilt and roll up to ~12 degrees, heading
    uniform within ``max_heading_deg`` degrees of facing the camera (180: any heading)."""
    yaw = rng.uniform(-max_heading_deg, max_heading_deg)
    tilt = rng.normal(0.0, 5.0, size=2).clip(-12.0, 12.0)
    body = euler_xyz_to_matrix(np.deg2rad(np.array([tilt[0], yaw, tilt[1]])))  # in the canonical frame (y up)
    return CANONICAL_TO_CAMERA_FACING @ body


#: Topologies Anny ships (no download): its full mesh and decimated meshes without toes.
TOPOLOGIES = {"anny": 13718, "notoes": 12272, "notoes_collapse10pc": 1229, "notoes_collapse5pc": 615,
              "notoes_collapse3pc": 369}


class AnnyBody:
    """Anny bodies in the canonical frame, with COCO keypoints (loads the model: ~35 s the first time).

    Args:
      topology: the mesh stored and rendered (:data:`TOPOLOGIES`: vertex counts). The COCO
        keypoint regressor works on the full mesh, so other topologies run both models with
        the same pose and phenotype (same skeleton).
    """

    def __init__(self, topology: str = "anny"):
        try:  # optional (the `synthetic` extra): only generating Anny bodies needs them
            import anny
            import torch
        except ImportError as e:
            raise ImportError("the synthetic dataset needs the anny body model: pip install anny==0.6.2 "
                              "(the 'synthetic' extra of setup.py)") from e
        if topology not in TOPOLOGIES:
            raise ValueError(f"unknown topology {topology!r}; choose one of {sorted(TOPOLOGIES)}")
        self._torch = torch
        self.topology = topology
        self.name = "anny" if topology == "anny" else f"anny:{topology}"
        self.full = anny.Anny()
        self.regressor = anny.KeypointsRegressor.coco(self.full)
        self.model = self.full if topology == "anny" else anny.Anny(topology=topology)
        self.bone_labels = list(self.model.bone_labels)
        if list(self.full.bone_labels) != self.bone_labels:
            raise RuntimeError(f"anny topology {topology!r} has another skeleton than the full model")
        self.faces = np.asarray(self.model.get_triangular_faces(), dtype=np.int32)
        template = np.asarray(self.model.template_vertices.detach().cpu().numpy(), np.float64)
        self.template = template @ ANNY_TO_CANONICAL.T
        bones = self.model.vertex_bone_indices.detach().cpu().numpy()
        weights = self.model.vertex_bone_weights.detach().cpu().numpy()
        dominant = bones[np.arange(len(bones)), np.argmax(weights, axis=1)]
        self.vertex_regions = _regions_from_bones([self.bone_labels[b] for b in dominant])
        self.mirror = mirror_permutation(self.template)

    @property
    def num_vertices(self) -> int:
        return len(self.template)

    def sample(self, rngs: Sequence[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
        """One body per generator -> canonical vertices (B, V, 3) and COCO keypoints (B, 17, 3), m."""
        torch = self._torch
        b = len(rngs)
        poses = np.tile(np.eye(4), (b, len(self.bone_labels), 1, 1))
        pheno = {k: np.zeros(b) for k in ("gender", "age", "muscle", "weight", "height", "proportions")}
        for i, rng in enumerate(rngs):
            pheno["gender"][i] = rng.uniform(0.0, 1.0)
            pheno["age"][i] = rng.uniform(0.45, 1.0)
            pheno["muscle"][i] = rng.uniform(0.1, 0.9)
            pheno["weight"][i] = rng.uniform(0.1, 0.9)
            pheno["height"][i] = rng.uniform(0.1, 0.9)
            pheno["proportions"][i] = rng.uniform(0.2, 0.8)
            for bone, angles in sample_bone_angles(rng, self.bone_labels).items():
                poses[i, bone, :3, :3] = euler_xyz_to_matrix(np.deg2rad(angles))
        with torch.no_grad():
            inputs = dict(pose_parameters=torch.tensor(poses),
                          phenotype_kwargs={k: torch.tensor(v) for k, v in pheno.items()})
            out = self.full(**inputs)
            kp = self.regressor(out)
            if self.model is not self.full:
                out = self.model(**inputs)
        vertices = out["vertices"].detach().cpu().numpy().astype(np.float64) @ ANNY_TO_CANONICAL.T
        keypoints = kp.detach().cpu().numpy().astype(np.float64)[:, :COCO17] @ ANNY_TO_CANONICAL.T
        return vertices, keypoints


def _regions_from_bones(names: Sequence[str]) -> np.ndarray:
    """Per-vertex region id from its dominant bone: 0 skin, 1 shirt, 2 trousers, 3 shoes."""
    def region(n: str) -> int:
        if n.startswith(("foot", "toe")):
            return 3
        if n.startswith(("upperleg", "lowerleg", "pelvis", "root")):
            return 2
        if n.startswith(("spine", "clavicle", "shoulder", "upperarm")):
            return 1
        return 0
    return np.array([region(n) for n in names], dtype=np.int32)


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random textured background: gradient, floor / wall split, shapes, blur, noise (uint8)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    if rng.uniform() < 0.6:  # floor
        horizon = rng.uniform(0.45, 0.85)
        floor = rng.uniform(0, 255, 3)
        img[yy > horizon] = 0.4 * img[yy > horizon] + 0.6 * floor
    im = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 15)):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.05, 0.5, 2) * size
        fill = tuple(int(c) for c in rng.uniform(0, 255, 3))
        if rng.uniform() < 0.5:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
        else:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
    im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 4.0))))
    out = np.asarray(im, dtype=np.float64) + rng.normal(0, rng.uniform(1, 6), size=(size, size, 3))
    return out.clip(0, 255).astype(np.uint8)


def _vertex_colors(rng: np.random.Generator, regions: np.ndarray) -> np.ndarray:
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.05)
    shirt = rng.uniform(0.05, 0.95, 3)
    trousers = rng.uniform(0.05, 0.6, 3)
    shoes = rng.uniform(0.02, 0.3, 3)
    palette = np.clip(np.stack([skin, shirt, trousers, shoes]), 0, 1)
    return palette[regions]


def make_example(rng: np.random.Generator, vertices: np.ndarray, keypoints: np.ndarray, body, size: int,
                 index: int, max_heading_deg: float = 180.0) -> tuple[dict, np.ndarray]:
    """Renders one body and returns ``(image record, rendered uint8 image)``.

    Args:
      rng: this example's generator (camera, orientation, colours, background).
      vertices: (V, 3) canonical vertices (m); keypoints: (17, 3) canonical COCO keypoints (m).
      body: the body (faces, vertex regions, mirror permutation).
      size: image side in pixels.
      max_heading_deg: largest heading away from facing the camera, degrees (180: any).
    """
    mean = vertices.mean(axis=0)
    local = vertices - mean
    kp_local = keypoints - mean
    rot = sample_global_orient(rng, max_heading_deg)
    posed = local @ rot.T
    focal = float(size * rng.uniform(0.9, 2.2))
    principal = size / 2.0 + rng.uniform(-0.04, 0.04, 2) * size
    height_m = np.ptp(posed[:, 1])
    target_px = size * rng.uniform(0.45, 0.75)
    tz = focal * height_m / target_px + np.ptp(posed[:, 2]) / 2
    offset_px = rng.uniform(-0.08, 0.08, 2) * size
    translation = np.array([offset_px[0] * tz / focal, offset_px[1] * tz / focal, tz])
    camera = PerspectiveCamera((focal, focal), (float(principal[0]), float(principal[1])), tuple(translation))
    frags = rasterize(posed, body.faces, camera, size, size)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.2, 0.8), 1.0])
    colors = shade(frags, posed, body.faces, camera, color=_vertex_colors(rng, body.vertex_regions),
                   ambient=float(rng.uniform(0.3, 0.5)), light_direction=light)
    background = random_background(rng, size).astype(np.float64) / 255.0
    mask = frags.mask[..., None]
    image = np.where(mask, colors, background)
    image = (image * 255.0 + rng.normal(0, 2.0, image.shape)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=92)

    uv = camera.project(posed)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    center = (lo + hi) / 2.0
    scale = 1.2 * float(np.max(hi - lo)) / 200.0
    kp_uv = camera.project(kp_local @ rot.T)
    inside = np.all((kp_uv >= 0) & (kp_uv <= size - 1), axis=1)
    kp_cam = camera.to_camera_frame(kp_local @ rot.T)
    mirrored = local[body.mirror] * np.array([-1.0, 1.0, 1.0])
    record = {
        "image_jpeg": buf.getvalue(),
        "center": center,
        "scale": np.float32(scale),
        "keypoints_2d": np.concatenate([kp_uv, inside[:, None]], axis=1),
        "keypoints_kind": "coco17",
        "vertices": local,
        "vertices_flipped": mirrored,
        "global_orient": matrix_to_axis_angle(rot),
        "joints_3d": kp_local,
        "dataset": "synthetic",
        "image_name": f"synthetic_{index:07d}.jpg",
        "image_size": np.array([size, size]),
        "stored_to_original": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        "camera_focal": np.array([focal, focal]),
        "camera_principal_point": principal,
        "camera_translation": translation,
        "keypoints_3d": np.concatenate([kp_cam, inside[:, None]], axis=1),
    }
    return record, image


def write_topology(out_dir: pathlib.Path, body, levels: Sequence[str] | None = None) -> dict:
    """Writes ``template.ply``, ``faces.npy`` and the connection hierarchy of the body's mesh."""
    out_dir.mkdir(parents=True, exist_ok=True)
    template = body.template - body.template.mean(axis=0)
    mesh_io.write_ply(out_dir / "template.ply", template.astype(np.float32), body.faces)
    with atomic_open(out_dir / "faces.npy", "wb") as f:
        np.save(f, body.faces.astype(np.int32))
    hierarchy = build.build_hierarchy(body.faces, len(template), list(levels or build.DEFAULT_LEVELS))
    build.write_hierarchy(hierarchy, out_dir, template="template.ply", overwrite=True)
    return {"template": "topology/template.ply", "faces": "topology/faces.npy",
            "connections": "topology", "levels": list(levels or build.DEFAULT_LEVELS),
            "points_per_level": [lv.pool.shape[0] for lv in hierarchy.levels]}


def generate(out: str | os.PathLike, num: int, seed: int = 0, size: int = 320, body=None,
             batch_size: int = 16, records_per_shard: int = 500, overwrite: bool = False,
             contact_sheet_path: str | os.PathLike | None = None, levels: Sequence[str] | None = None,
             progress: bool = True, topology: str = "anny", max_heading_deg: float = 180.0) -> pathlib.Path:
    """Generates ``num`` synthetic examples into the dataset folder ``out``.

    Args:
      out: output folder (shards, ``manifest.json``, ``topology/``).
      num: number of examples.
      seed: master seed; example ``i`` draws from ``np.random.default_rng([seed, i])``.
      size: rendered image side, pixels.
      body: the body (default :class:`AnnyBody` with ``topology``; the box person
        :class:`hmr_jax.testing.box_person.StandInBody` for tests).
      batch_size: bodies posed per call of the body model.
      records_per_shard: records per ArrayRecord shard.
      overwrite: replace an existing dataset in ``out``.
      contact_sheet_path: also write a PNG grid of the first (up to 16) images with their
        keypoints, to look at.
      levels: levels of the connection hierarchy (``hmr_jax.mesh.build`` syntax).
      progress: show a tqdm progress bar.
      topology: Anny mesh to store (:data:`TOPOLOGIES`), when ``body`` is not given.
      max_heading_deg: people face the camera within this many degrees (180: any heading).

    Returns:
      the manifest path.
    """
    if num < 1:
        raise ValueError("--num must be at least 1")
    if not 0.0 <= max_heading_deg <= 180.0:
        raise ValueError(f"--max-heading must be in [0, 180] degrees, got {max_heading_deg}")
    out = pathlib.Path(out)
    body = AnnyBody(topology) if body is None else body
    writer = ShardWriter(out, "image", records_per_shard=records_per_shard, overwrite=overwrite)
    topology = write_topology(out / "topology", body, levels)
    writer.metadata.update({"source": "data_prep.synthetic", "body_model": body.name, "seed": seed,
                            "image_size": size, "num_vertices": body.num_vertices, "topology": topology,
                            "keypoints": "COCO 17 (Anny keypoint regressor)",
                            "max_heading_deg": max_heading_deg})
    sheet = []
    with writer, tqdm(total=num, desc="synthetic", unit="img", disable=not progress) as bar:
        for start in range(0, num, batch_size):
            idx = list(range(start, min(num, start + batch_size)))
            rngs = [np.random.default_rng([seed, i]) for i in idx]
            vertices, keypoints = body.sample(rngs)
            for j, i in enumerate(idx):
                record, image = make_example(rngs[j], vertices[j], keypoints[j], body, size, i, max_heading_deg)
                writer.write(record)
                if contact_sheet_path is not None and len(sheet) < 16:
                    kp = record["keypoints_2d"]
                    sheet.append(draw_points(image, kp[kp[:, 2] > 0, :2], color=(255, 40, 40), radius=2))
                bar.update(1)
    if sheet:
        write_png(contact_sheet_path, contact_sheet(sheet, columns=4))
    return out / "manifest.json"


def _define(fv: flags.FlagValues) -> None:
    """This command's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("out", None, "output dataset folder", required=True, flag_values=fv)
    flags.DEFINE_integer("num", None, "number of examples", required=True, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "PRNG seed of the bodies, poses, cameras and backgrounds", flag_values=fv)
    flags.DEFINE_integer("image-size", 320, "rendered image side in pixels", flag_values=fv)
    flags.DEFINE_float("max-heading", 180.0, "people face the camera within this many degrees (default 180: any "
                       "heading)", flag_values=fv)
    flags.DEFINE_integer("batch-size", 16, "bodies posed per body-model call", flag_values=fv)
    flags.DEFINE_integer("records-per-shard", 500, "records per shard file", flag_values=fv)
    flags.DEFINE_enum("topology", "anny", sorted(TOPOLOGIES),
                      "Anny mesh stored and rendered (anny: 13718 vertices; notoes_collapse10pc: 1229)", flag_values=fv)
    flags.DEFINE_list("levels", None, "connection hierarchy levels (hmr_jax.mesh.build), comma-separated: "
                      "--levels=1,2,1,2", flag_values=fv)
    flags.DEFINE_string("contact-sheet", None, "write a PNG grid of the first images here", flag_values=fv)
    flags.DEFINE_boolean("standin-body", False, "use the tiny box-person instead of anny (tests)", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "replace an existing dataset in --out", flag_values=fv)
    flags.DEFINE_boolean("quiet", False, "no progress bar", flag_values=fv)


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    a = parse_command(argv, _define, "python -m data_prep.synthetic", __doc__)
    if a is None:   # --help
        return 0
    t0 = time.time()
    body = StandInBody() if a.standin_body else None
    manifest = generate(a.out, a.num, seed=a.seed, size=a.image_size, body=body, batch_size=a.batch_size,
                        records_per_shard=a.records_per_shard, overwrite=a.overwrite,
                        contact_sheet_path=a.contact_sheet, levels=a.levels, progress=not a.quiet,
                        topology=a.topology, max_heading_deg=a.max_heading)
    print(f"wrote {a.num} examples to {manifest.parent} in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
