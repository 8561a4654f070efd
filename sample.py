"""Meshes from images with a converted MEGA or VQ-HPS checkpoint: .obj files, overlays, side views.

    python sample.py --checkpoint converted/mega_hrnet --images photo.jpg more_photos/ --out out/
    python sample.py --checkpoint converted/mega_hrnet --images photo.jpg --bboxes boxes.json \\
        --num-samples 25 --out out/

Each person is cropped (the whole image when no boxes are given; ``--bboxes`` is a JSON object
``{"photo.jpg": [[x1, y1, x2, y2], ...], ...}`` keyed by file name or path, pixels), squared
around the box like the originals' demo and resized to the model's input. MEGA gives one
deterministic mesh (``--num-samples 1``) or N stochastic hypotheses from one batched call;
VQ-HPS one mesh (from the T-pose joints: ``--joint-regressor``, ``--tpose``).

Written to ``--out``, per image ``STEM``, person ``k`` and hypothesis ``j``:
``STEM_p{k}_h{j}.obj`` (6890 vertices in meters, camera-aligned axes: x right, y down, z away),
``STEM_p{k}_h{j}.png`` (the mesh over the image), ``STEM_p{k}_h{j}_side.png`` (side view), and
``results.json`` (files, weak-perspective camera (s, tx, ty) of the crop, camera translation in
the full image, focal length, 6D rotation and matrix, and for N > 1 the spread of the
hypotheses). Images that cannot be read and boxes outside the image are reported and skipped;
the other images are still processed (exit status 1 if anything was skipped).

The tokenizer (``--tokenizer``, a converted ``mesh_vqvae`` folder), the mesh faces
(``--faces``, a 6890-vertex PLY/OBJ such as ``body_models/template.ply``) and the tokenizer's
connection files (``--connections``) default to the original projects' layout.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
MEGA_KINDS = ("mega_hrnet", "mega_resnet", "mega_vit")
VQHPS_KINDS = ("vqhps_hrnet", "vqhps_resnet")


class SampleError(RuntimeError):
    """A problem with one input (image, box) or with the setup (checkpoint, tokenizer, faces)."""


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="converted mega_* / vqhps_* folder")
    p.add_argument("--images", nargs="+", required=True, help="image files and/or folders of images")
    p.add_argument("--bboxes", help='JSON {"image name or path": [[x1, y1, x2, y2], ...]}')
    p.add_argument("--num-samples", type=int, default=1, help="hypotheses per person (MEGA; 1 = deterministic)")
    p.add_argument("--steps", type=int, default=5, help="MEGA stochastic decoding steps")
    p.add_argument("--temperature", type=float, default=1.0, help="MEGA initial sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the hypotheses")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tokenizer", default="converted/mesh_vqvae_54", help="converted mesh_vqvae folder")
    p.add_argument("--connections", help="dfaust2 connection folder (default: the tokenizer config's)")
    p.add_argument("--faces", default="body_models/template.ply", help="6890-vertex mesh giving the faces")
    p.add_argument("--joint-regressor", default="body_models/J_regressor_h36m.npy", help="VQ-HPS: (17, 6890)")
    p.add_argument("--tpose", help="VQ-HPS: (6890, 3) .npy T-pose (default: the --faces mesh, centred)")
    p.add_argument("--focal", type=float, default=1000.0,
                   help="focal length (pixels) for a 224-pixel crop, scaled to the image as the originals' demo")
    p.add_argument("--faithful", action="store_true", help="reproduce the original code's quirks")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------
# inputs


def list_images(paths) -> list[pathlib.Path]:
    """Image files named directly or found (sorted, not recursive) in the given folders."""
    out = []
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def read_image(path: pathlib.Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, or SampleError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise SampleError(f"{path}: no such file") from None
    except Exception as e:  # PIL raises several kinds for corrupt data
        raise SampleError(f"{path}: cannot read the image ({e})") from None


def load_boxes(path) -> dict:
    """The ``--bboxes`` JSON as ``{key: (N, 4) array}``."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SampleError(f"--bboxes {path}: {e}") from None
    if not isinstance(data, dict):
        raise SampleError(f"--bboxes {path}: expected an object {{image: [[x1, y1, x2, y2], ...]}}")
    boxes = {}
    for key, value in data.items():
        arr = np.asarray(value, np.float64).reshape(-1, 4) if np.size(value) else np.zeros((0, 4))
        boxes[key] = arr
    return boxes


def boxes_for(path: pathlib.Path, boxes: dict | None, height: int, width: int) -> np.ndarray:
    """(N, 4) boxes of one image: from ``--bboxes`` (by path or file name) or the whole image."""
    if boxes is None:
        return np.array([[0.0, 0.0, width, height]])
    for key in (str(path), path.name, path.stem):
        if key in boxes:
            return boxes[key]
    raise SampleError(f"{path}: no entry in --bboxes (keys are file names or paths)")


def crop_person(image: np.ndarray, box, out_hw: tuple[int, int]):
    """Square crop around a box (side = the box's longer side), resized, ImageNet-normalised.

    The square is resized to ``max(out_hw)`` and its centre cut to ``out_hw`` (the ViT's 256 x
    192 is the centre of a 256 x 256 crop, as MEGA's evaluation does). Pixels outside the image
    are black, as the originals' ``BORDER_CONSTANT``.

    Returns:
      ``(crop (H, W, 3) float32 normalised, centre (2,), side (pixels))``.
    Raises:
      SampleError: a box that is degenerate or does not overlap the image.
    """
    from PIL import Image

    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise SampleError(f"box {list(box)} is empty (need x1 < x2 and y1 < y2)")
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        raise SampleError(f"box {list(box)} lies outside the {w}x{h} image")
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    side = max(x2 - x1, y2 - y1)
    size = max(out_hw)
    left, top = (int(round(v)) for v in centre - side / 2)
    side_px = max(int(round(side)), 1)
    # crop (black outside the image), then resize (Pillow antialiases when downsampling)
    patch = Image.fromarray(image).crop((left, top, left + side_px, top + side_px))
    patch = patch.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(patch, np.float32) / 255.0
    oh, ow = out_hw
    r0, c0 = (size - oh) // 2, (size - ow) // 2
    arr = arr[r0:r0 + oh, c0:c0 + ow]
    return (arr - IMAGENET_MEAN) / IMAGENET_STD, centre, side


def full_image_camera(cam, centre, side, width: int, height: int, focal: float):
    """The originals' ``cam_crop_to_full``: weak-perspective (s, tx, ty) of a crop -> translation (m).

    Returns ``(translation (3,), valid)``; ``valid`` is False when s <= 0 (mesh behind the camera).
    """
    s, tx, ty = (float(v) for v in cam)
    bs = side * s + 1e-9
    t = np.array([tx + 2 * (centre[0] - width / 2) / bs, ty + 2 * (centre[1] - height / 2) / bs, 2 * focal / bs])
    return t, s > 0


# ------------------------------------------------------------------------------------------
# models


class Sampler:
    """A converted checkpoint + tokenizer: crops in, meshes (and cameras) out, jitted."""

    def __init__(self, checkpoint, tokenizer, connections=None, faithful=False, joint_regressor=None, tpose=None):
        import jax

        from hmr_jax.conversion.common import ConversionError, read_converted
        from hmr_jax.conversion.mesh_vqvae import load_converted
        from hmr_jax.models import decoding

        try:
            self.variables, self.config = read_converted(checkpoint)
        except ConversionError as e:
            raise SampleError(str(e)) from None
        kind = self.config.get("model")
        if kind not in MEGA_KINDS + VQHPS_KINDS:
            raise SampleError(
                f"{checkpoint} holds a {kind!r} model; sample.py needs an image model: one of "
                f"{', '.join(MEGA_KINDS + VQHPS_KINDS)} (convert it with convert_torch_weights.py)")
        self.kind = kind
        if not pathlib.Path(tokenizer).is_dir():
            raise SampleError(f"--tokenizer {tokenizer} is not a folder: convert the Mesh-VQ-VAE checkpoint "
                              "with convert_torch_weights.py --model mesh_vqvae --out DIR")
        try:
            tok_model, tok_vars = load_converted(tokenizer, connection_folder=connections)
        except ConversionError as e:
            raise SampleError(f"--tokenizer {tokenizer}: {e}") from None
        self.decode = decoding.mesh_decoder_fn(tok_model, tok_vars)
        self.faithful = faithful
        self.image_size = tuple(self.config.get("image_size", (224, 224)))
        if kind in MEGA_KINDS:
            from hmr_jax.models.mega import build_mega

            self.model = build_mega(self.config)
        else:
            from hmr_jax.models.vqhps import build_vqhps, pose_from_mesh

            if joint_regressor is None or tpose is None:
                raise SampleError("VQ-HPS needs --joint-regressor (17 x 6890) and a T-pose")
            self.model = build_vqhps(self.config)
            self.pose_init = np.asarray(pose_from_mesh(joint_regressor, tpose))
        self._jax = jax

    def predict(self, crops: np.ndarray, num_samples: int, steps: int, temperature: float, seed: int) -> dict:
        """(B, H, W, 3) normalised crops -> vertices (B, N, 6890, 3), cam (B, 3), rot6d, rotmat."""
        import jax.numpy as jnp

        from hmr_jax.models import decoding

        images = jnp.asarray(crops)
        if self.kind in VQHPS_KINDS:
            if num_samples != 1:
                raise SampleError("VQ-HPS predicts one mesh per person: use --num-samples 1")
            pose = np.broadcast_to(self.pose_init, (len(crops), self.pose_init.shape[-1]))
            out = decoding.vqhps_predict(self.model, self.variables, images, pose, faithful=self.faithful)
            tokens = out["tokens"][:, None]
        elif num_samples == 1:
            # faithful: as the original demo.py, whose input tokens are zeros: the off-by-one mask
            # copies token 0 into one random position
            gt = np.zeros((len(crops), self.model.seq_length), np.int32) if self.faithful else None
            out = decoding.mega_deterministic(self.model, self.variables, images=images,
                                              faithful=self.faithful, gt_tokens=gt)
            tokens = out["tokens"][:, None]
        else:
            out = decoding.mega_generate(self.model, self.variables, images=images,
                                         key=self._jax.random.PRNGKey(seed), num_samples=num_samples,
                                         steps=steps, gen_temp=temperature, faithful=self.faithful)
            tokens = out["tokens"]
        meshes = decoding.meshes_from_tokens(self.decode, tokens, out["rot6d"])
        return {"vertices": np.asarray(meshes["vertices"]), "rotmat": np.asarray(meshes["rotmat"]),
                "rot6d": np.asarray(out["rot6d"]), "cam": np.asarray(out["cam"]), "tokens": np.asarray(tokens)}


def load_faces(path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of the 6890-vertex mesh giving the topology."""
    from hmr_jax.mesh.io import read_mesh

    p = pathlib.Path(path)
    if not p.is_file():
        raise SampleError(f"--faces {p} not found: give a 6890-vertex SMPL-topology mesh (e.g. body_models/template.ply)")
    try:
        vertices, faces = read_mesh(p)
    except Exception as e:
        raise SampleError(f"--faces {p}: {e}") from None
    return np.asarray(vertices, np.float32), np.asarray(faces, np.int32)


# ------------------------------------------------------------------------------------------
# outputs


def _spread(vertices: np.ndarray) -> dict:
    """Spread of N hypotheses (N, V, 3): per-vertex distance to the mean mesh (meters)."""
    d = np.linalg.norm(vertices - vertices.mean(axis=0, keepdims=True), axis=-1)
    return {"mean_vertex_distance_to_mean_m": float(d.mean()), "max_vertex_distance_to_mean_m": float(d.max()),
            "mean_vertex_std_m": float(np.sqrt((d ** 2).mean(axis=0)).mean())}


def _framing_camera(vertices: np.ndarray, size: int):
    """A camera that frames the whole mesh (used when the predicted camera puts it behind)."""
    from hmr_jax.render import PerspectiveCamera

    centre = 0.5 * (vertices.min(0) + vertices.max(0))
    extent = float(np.max(vertices.max(0) - vertices.min(0))) + 1e-6
    focal = float(size)
    tz = 1.3 * focal * extent / size + extent
    c = (size - 1) / 2
    return PerspectiveCamera((focal, focal), (c, c), tuple((-centre + np.array([0, 0, tz])).tolist()))


def save_person(out_dir: pathlib.Path, stem: str, k: int, image: np.ndarray, pred: dict, b: int,
                centre, side, faces, focal_crop: float, crop_size: int) -> dict:
    """Write the .obj / overlay / side view of every hypothesis of one person; return its JSON record."""
    from hmr_jax.mesh.io import write_mesh
    from hmr_jax.render import PerspectiveCamera, render_mesh, side_view

    h, w = image.shape[:2]
    focal = focal_crop / crop_size * max(h, w)
    translation, valid = full_image_camera(pred["cam"][b], centre, side, w, h, focal)
    camera = PerspectiveCamera((focal, focal), (w / 2.0, h / 2.0), tuple(translation.tolist()))
    verts = pred["vertices"][b]
    record = {"box_centre": [float(c) for c in centre], "box_side": float(side),
              "camera_weak_perspective": pred["cam"][b].tolist(), "camera_translation_m": translation.tolist(),
              "focal_length_px": focal, "principal_point_px": [w / 2.0, h / 2.0],
              "rotation_6d": pred["rot6d"][b].tolist(), "rotation_matrix": pred["rotmat"][b].tolist(),
              "hypotheses": []}
    if not valid:
        record["warning"] = "predicted camera scale <= 0: the mesh is behind the camera and not drawn over the image"
    for j, v in enumerate(verts):
        name = f"{stem}_p{k}_h{j}"
        write_mesh(out_dir / f"{name}.obj", v, faces)
        overlay = render_mesh(image, v, faces, camera) if valid else image.copy()
        _write_png(out_dir / f"{name}.png", overlay)
        side_cam = camera if valid else _framing_camera(v, 512)
        sh, sw = (h, w) if valid else (512, 512)
        _write_png(out_dir / f"{name}_side.png", side_view(v, faces, side_cam, sh, sw))
        record["hypotheses"].append({"mesh": f"{name}.obj", "overlay": f"{name}.png", "side_view": f"{name}_side.png",
                                     "tokens": pred["tokens"][b, j].tolist()})
    if len(verts) > 1:
        record["spread"] = _spread(verts)
    return record


def _write_png(path: pathlib.Path, array: np.ndarray) -> None:
    """Atomic PNG write (temporary name, then rename)."""
    from PIL import Image

    from hmr_jax.files import atomic_open

    with atomic_open(path, "wb") as f:
        Image.fromarray(np.asarray(array, np.uint8)).save(f, format="PNG")


def run(args) -> int:
    """Process every image; returns the exit status (0 all done, 1 some inputs skipped, 2 setup error)."""
    from tqdm import tqdm

    out_dir = pathlib.Path(args.out)
    try:
        if args.num_samples < 1:
            raise SampleError("--num-samples must be >= 1")
        faces_vertices, faces = load_faces(args.faces)
        if faces_vertices.shape[0] != 6890:
            raise SampleError(f"--faces {args.faces} has {faces_vertices.shape[0]} vertices, the meshes 6890")
        joint_reg = tpose = None
        if "vqhps" in _peek_kind(args.checkpoint):
            if not pathlib.Path(args.joint_regressor).is_file():
                raise SampleError(f"--joint-regressor {args.joint_regressor} not found (VQ-HPS needs the H36M regressor)")
            joint_reg = np.load(args.joint_regressor)
            tpose = np.load(args.tpose) if args.tpose else faces_vertices - faces_vertices.mean(0)
        sampler = Sampler(args.checkpoint, args.tokenizer, args.connections, args.faithful, joint_reg, tpose)
        boxes = load_boxes(args.bboxes) if args.bboxes else None
        images = list_images(args.images)
        if not images:
            raise SampleError(f"no images found in {args.images}")
    except SampleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"checkpoint": str(args.checkpoint), "model": sampler.kind, "num_samples": args.num_samples,
               "mode": ("single_pass" if sampler.kind in VQHPS_KINDS else
                        "deterministic" if args.num_samples == 1 else "stochastic"),
               "images": [], "errors": []}
    for path in tqdm(images, desc="images", unit="img"):
        try:
            image = read_image(path)
            h, w = image.shape[:2]
            persons = []
            for k, box in enumerate(boxes_for(path, boxes, h, w)):
                try:
                    crop, centre, side = crop_person(image, box, sampler.image_size)
                    persons.append((k, crop, centre, side))
                except SampleError as e:
                    results["errors"].append(f"{path} person {k}: {e}")
                    print(f"error: {path} person {k}: {e}", file=sys.stderr)
            record = {"image": str(path), "width": w, "height": h, "persons": []}
            if persons:
                pred = sampler.predict(np.stack([p[1] for p in persons]), args.num_samples, args.steps,
                                       args.temperature, args.seed)
                for b, (k, _, centre, side) in enumerate(persons):
                    person = save_person(out_dir, path.stem, k, image, pred, b, centre, side, faces,
                                         args.focal, 224)
                    person["person"] = k
                    record["persons"].append(person)
            results["images"].append(record)
        except SampleError as e:
            results["errors"].append(str(e))
            print(f"error: {e}", file=sys.stderr)
    from hmr_jax.files import atomic_write

    atomic_write(out_dir / "results.json", json.dumps(results, indent=2))
    return 1 if results["errors"] else 0


def _peek_kind(checkpoint) -> str:
    cfg = pathlib.Path(checkpoint) / "config.json"
    try:
        return str(json.loads(cfg.read_text()).get("model", ""))
    except (OSError, json.JSONDecodeError):
        return ""


def main(argv=None) -> int:
    """Command-line entry point."""
    return run(_parse(argv))


if __name__ == "__main__":
    sys.exit(main())
