"""Meshes of the people in images with a MEGA or VQ-HPS model; random meshes from the pre-trained MEGA.

    python sample.py --checkpoint converted/mega_hrnet --images photo.jpg more_photos/ --out out/
    python sample.py --checkpoint converted/mega_hrnet --images photo.jpg --bboxes boxes.json \\
        --num-samples 25 --out out/
    python sample.py --checkpoint runs/mega_hrnet --images photos/ --smpl-fit --out out/
    python sample.py --checkpoint converted/mega_pretrained --generate 16 --out random/
    python sample.py --checkpoint converted/mega_hrnet --video walk.mp4 --every 2 --smooth --out walk/

Flags are absl's (``--name value`` or ``--name=value``; ``--flag`` / ``--noflag``; ``--help``
lists them). Image paths follow ``--images`` (repeatable) or stand alone on the line:
``--images photo.jpg more_photos/`` reads both.

``--checkpoint``: a converted folder (``convert_torch_weights.py``) or a ``train.py`` workdir
(latest checkpoint). People are found by ``--detector``:

* ``yolo``: YOLOv8 (person class, confidence ``--detection-threshold`` 0.5, as the original
  demo) run by ONNX Runtime (``pip install -e '.[detect]'``) on ``--detector-weights``
  (default ``body_models/yolov8x.onnx``; make it once on a machine with ultralytics:
  ``yolo export model=yolov8x.pt format=onnx``; nothing is downloaded at run time);
* ``boxes``: the ``--bboxes`` JSON ``{"photo.jpg": [[x1, y1, x2, y2], ...], ...}`` keyed by
  path, file name or stem (full-image pixels);
* ``full``: each image is one person (crops that hold one person);
* ``auto`` (default): ``boxes`` with ``--bboxes``, else ``yolo`` when onnxruntime and the weights
  are there, else ``full`` with a warning saying how to get the detector.

Each person is cut as the original demo does (square around the box) and all persons of all
images go through fixed-size batches (``--batch-size``; compiled once per size). MEGA gives one
deterministic mesh (``--num-samples 1``) or N stochastic hypotheses (``--steps``,
``--temperature``: default the model config's ``decoding``); VQ-HPS one mesh.

Written to ``--out``, per image ``STEM``, person ``k``, hypothesis ``j``:
``STEM_p{k}_h{j}.obj`` (meters, camera-aligned axes: x right, y down, z away; add the person's
``camera_translation_m`` for the camera frame), ``.glb`` beside it (glTF axes: y up; needs
``pip install -e '.[sample]'``), ``.png`` (the mesh over the image), ``_side.png`` (side view),
``STEM_all.png`` (every person over the image, depth-ordered) and ``results.json`` (boxes,
weak-perspective camera of the crop, camera translation in the full image, focal length, 6D
rotation and matrix, tokens, and for N > 1 the spread of the hypotheses). ``--smpl-fit`` fits
SMPL(+H) (``--smpl-model``) to every mesh: ``STEM_p{k}_h{j}_smpl.npz`` in smplx's names
(``betas``, ``global_orient``, ``body_pose``, ``transl``, ...; the mesh's frame) and the fit's
vertex error in ``results.json``.

``--video IN.mp4`` (PyAV: ``pip install -e '.[video]'``; no system ffmpeg): frames 0, K, 2K, ...
(``--every K``), at most ``--max-frames N``; each frame's people are found by ``--detector``
(``boxes``: ``--bboxes`` is a JSON ``{"0": [[x1, y1, x2, y2], ...], "12": [...]}`` keyed by the
0-based frame index of the input video, frames without an entry have no people), linked into
tracks (box overlap, else box-centre distance, with motion prediction; a track survives
``--track-max-age`` frames read without a detection, so short occlusions keep their id), and all
persons of neighbouring frames go through the model in fixed-size batches (the video is streamed,
never held in memory). Written to ``--out``: ``overlay.mp4`` (the frames read, same size, at
``fps / K``; each track's mesh in its own colour, its box and id), ``track_{id:03d}.npz`` per
track (``frames`` (T,) frame indices, ``vertices`` (T, V, 3) m, ``camera_translation`` (T, 3) m,
weak-perspective cameras, focal length, boxes, scores, rotations, tokens; the N > 1 hypotheses'
mean mesh and per-frame ``spread_mean_m`` / ``spread_max_m`` / ``spread_std_m``; see
``hmr_jax.video.pipeline.track_video``) and ``results.json`` (the tracks, the settings, the
errors). ``--smooth``: One-Euro filter (``hmr_jax.video.smoothing``) of every track's vertices
and camera translation over time; ``--smooth-vertices MIN_CUTOFF,BETA`` and ``--smooth-camera
MIN_CUTOFF,BETA`` set its cutoff at rest (Hz; lower = smoother, more lag) and its speed
coefficient (per m/s; higher = less lag in fast motion). A video that cannot be read (missing,
not a video, a codec this ffmpeg build cannot decode, no frames) is one ``error:`` line; a frame
that fails to decode later ends the reading and the frames before it are kept (exit status 1).

``--generate N`` (an unconditional ``mega_pretrained`` checkpoint): N random meshes
``gen_{i}.obj`` / ``.glb`` (the tokenizer's frame, SMPL's: y up), ``generated.png`` (a grid of
front views) and ``results.json``.

Problems with one input (an unreadable image, a box outside the image) are one ``error:`` line
each and the other inputs are still processed (exit status 1); a setup problem (checkpoint,
tokenizer, faces, detector) is one ``error:`` line and exit status 2.
"""
from __future__ import annotations

import json
import pathlib
import sys

from absl import flags
import numpy as np
from PIL import Image
from tqdm import tqdm

from hmr_jax import detection
from hmr_jax.checkpoints import is_train_workdir
from hmr_jax.cli import define_floats, parse_command
from hmr_jax.detection import (DEFAULT_YOLO_WEIGHTS, EXPORT_COMMAND, DetectionError, FullImageDetector,
                               yolo_unavailable_reason)
from hmr_jax.errors import UserError, command_line
from hmr_jax.files import atomic_open, atomic_write, folder_lock
from hmr_jax.inference import (InferenceError, Predictor, fit_body_params, load_faces, load_generator,
                               load_smpl_model)
from hmr_jax.inference.export import framing_camera, person_record, write_mesh_files, write_smpl_params
from hmr_jax.render import contact_sheet, render_mesh, side_view
from hmr_jax.video import VideoError
from hmr_jax.video.pipeline import FrameBoxesDetector, TrackerParams, track_video
from hmr_jax.video.smoothing import CAMERA_SMOOTHING, VERTEX_SMOOTHING, SmoothingParams

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_TOKENIZER = "converted/mesh_vqvae_54"
GRID_TILE = 256  # pixels, one generated mesh in the --generate picture


class SampleError(UserError, RuntimeError):
    """A problem with the command line or the setup; the message names the fix."""


PROGRAM = "sample.py"


def _define(fv: flags.FlagValues) -> None:
    """sample.py's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("checkpoint", None, "converted folder or train.py workdir", required=True, flag_values=fv)
    flags.DEFINE_multi_string("images", None, "image files and/or folders of images (repeatable; more paths may "
                              "follow as positional arguments: --images photo.jpg more_photos/)", flag_values=fv)
    flags.DEFINE_string("video", None, "a video file (.mp4, .mov, .mkv, .avi, .webm): tracked people (see above)",
                        flag_values=fv)
    flags.DEFINE_integer("every", 1, "--video: read every K-th frame", flag_values=fv)
    flags.DEFINE_integer("max-frames", None, "--video: read at most N frames", flag_values=fv)
    flags.DEFINE_boolean("smooth", False, "--video: One-Euro filter each track over time", flag_values=fv)
    define_floats("smooth-vertices", (VERTEX_SMOOTHING.min_cutoff, VERTEX_SMOOTHING.beta),
                  "--smooth of the vertices: cutoff at rest (Hz), speed coefficient (per m/s)", fv, "MIN_CUTOFF,BETA")
    define_floats("smooth-camera", (CAMERA_SMOOTHING.min_cutoff, CAMERA_SMOOTHING.beta),
                  "--smooth of the camera translation: cutoff at rest (Hz), speed coefficient (per m/s)", fv,
                  "MIN_CUTOFF,BETA")
    flags.DEFINE_integer("track-max-age", TrackerParams.max_age,
                         "--video: frames read that a track survives without a detection", flag_values=fv)
    flags.DEFINE_string("out", None, "output folder", required=True, flag_values=fv)
    flags.DEFINE_enum("detector", "auto", ["auto", "yolo", "boxes", "full"], "how people are found (see above)",
                      flag_values=fv)
    flags.DEFINE_string("detector-weights", DEFAULT_YOLO_WEIGHTS,
                        f"YOLOv8 ONNX export ({EXPORT_COMMAND}) or .pt (ultralytics)", flag_values=fv)
    flags.DEFINE_float("detection-threshold", 0.5, "YOLO person confidence", flag_values=fv)
    flags.DEFINE_string("bboxes", None, 'JSON {"image name or path": [[x1, y1, x2, y2], ...]} '
                        '(--video: keyed by frame index, {"0": [...], ...})', flag_values=fv)
    flags.DEFINE_integer("num-samples", 1, "hypotheses per person (MEGA; 1 = deterministic)", flag_values=fv)
    flags.DEFINE_integer("steps", None, "MEGA stochastic decoding steps (default: the model config's)",
                         flag_values=fv)
    flags.DEFINE_float("temperature", None, "MEGA initial sampling temperature (default: the config's)",
                       flag_values=fv)
    flags.DEFINE_integer("seed", 0, "PRNG seed of the hypotheses / generated meshes", flag_values=fv)
    flags.DEFINE_integer("batch-size", 16, "persons per compiled batch", flag_values=fv)
    flags.DEFINE_string("tokenizer", None,
                        f"converted mesh_vqvae folder (default: a workdir's, else {DEFAULT_TOKENIZER})", flag_values=fv)
    flags.DEFINE_string("connections", None, "the tokenizer's connection folder (default: its config's)",
                        flag_values=fv)
    flags.DEFINE_string("faces", None, "mesh giving the faces (default: a workdir's config.faces, else "
                        "body_models/template.ply)", flag_values=fv)
    flags.DEFINE_string("joint-regressor", "body_models/J_regressor_h36m.npy", "VQ-HPS: (17, 6890)", flag_values=fv)
    flags.DEFINE_string("tpose", None, "VQ-HPS: (6890, 3) .npy T-pose (default: the --faces mesh, centred)",
                        flag_values=fv)
    flags.DEFINE_float("focal", 1000.0, "focal length (pixels) for a 224-pixel crop, scaled to the image as the "
                       "original demo", flag_values=fv)
    flags.DEFINE_boolean("smpl-fit", False, "fit SMPL(+H) parameters to every mesh", flag_values=fv)
    flags.DEFINE_string("smpl-model", "body_models/smplh/neutral/model.npz", "for --smpl-fit", flag_values=fv)
    flags.DEFINE_integer("generate", None, "N random meshes from a mega_pretrained checkpoint", flag_values=fv)
    flags.DEFINE_boolean("faithful", False, "reproduce the original code's quirks", flag_values=fv)


def _parse(argv):
    """The options (``--images`` and the positional arguments together in ``images``), or None
    after ``--help``."""
    args = parse_command(argv, _define, PROGRAM, __doc__, positional="paths")
    if args is not None:
        args.images = [*(args.images or ()), *args.paths] or None
    return args


def _error(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


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


def make_detector(args):
    """The person detector ``--detector`` asks for (``auto``: see the module docstring)."""
    kind = args.detector
    if kind == "auto":
        if args.bboxes:
            kind = "boxes"
        else:
            reason = yolo_unavailable_reason(args.detector_weights)
            if reason is None:
                try:
                    return detection.make_detector("yolo", weights=args.detector_weights,
                                                   threshold=args.detection_threshold)
                except DetectionError as e:
                    reason = str(e)
            _warn(f"no person detector ({reason}), so every image is taken as one person (--detector full); "
                  "give --bboxes FILE for boxes")
            return FullImageDetector()
    if kind == "boxes" and not args.bboxes:
        raise SampleError("--detector boxes needs --bboxes FILE (a JSON of boxes per image)")
    if kind != "boxes" and args.bboxes:
        raise SampleError(f"--bboxes is only read by --detector boxes (or auto), not --detector {kind}")
    if kind == "yolo":
        reason = yolo_unavailable_reason(args.detector_weights)
        if reason is not None:
            raise SampleError(f"--detector yolo: {reason} (or use --detector full or --bboxes FILE)")
    try:
        if kind == "boxes" and getattr(args, "video", None):
            return FrameBoxesDetector(args.bboxes)
        return detection.make_detector(kind, weights=args.detector_weights, threshold=args.detection_threshold,
                                       boxes=args.bboxes)
    except DetectionError as e:
        raise SampleError(f"--detector {kind}: {e}") from None


# ------------------------------------------------------------------------------------------
# outputs


def _write_png(path: pathlib.Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        Image.fromarray(np.asarray(array, np.uint8)).save(f, format="PNG")


class _Glb:
    """``.glb`` beside each ``.obj`` while trimesh is importable (one warning otherwise)."""

    def __init__(self):
        self.ok = True

    def write(self, stem: pathlib.Path, vertices: np.ndarray, faces: np.ndarray,
              camera_axes: bool = True) -> tuple[str, str | None]:
        """``stem.obj`` and (while trimesh imports) ``stem.glb``; their names (see write_mesh_files)."""
        if self.ok:
            try:
                return write_mesh_files(stem, vertices, faces, glb=True, camera_axes=camera_axes)
            except ImportError as e:
                _warn(f"{e}; writing .obj files only")
                self.ok = False
        return write_mesh_files(stem, vertices, faces, glb=False)


def save_person(out_dir: pathlib.Path, stem: str, image: np.ndarray, person, faces, glb: _Glb) -> dict:
    """Write the .obj / .glb / overlay / side view of every hypothesis of one person; its JSON record."""
    h, w = image.shape[:2]
    k = person.index
    camera = person.camera()
    record = person_record(person)
    for j, v in enumerate(person.vertices):
        name = f"{stem}_p{k}_h{j}"
        _, glb_name = glb.write(out_dir / name, v, faces)
        overlay = render_mesh(image, v, faces, camera) if person.camera_valid else image.copy()
        _write_png(out_dir / f"{name}.png", overlay)
        side_cam = camera if person.camera_valid else framing_camera(v, 512)
        sh, sw = (h, w) if person.camera_valid else (512, 512)
        _write_png(out_dir / f"{name}_side.png", side_view(v, faces, side_cam, sh, sw))
        record["hypotheses"].append({"mesh": f"{name}.obj", "glb": glb_name, "overlay": f"{name}.png",
                                     "side_view": f"{name}_side.png", "tokens": person.tokens[j].tolist()})
    spread = person.spread()
    if spread is not None:
        record["spread"] = spread
    return record


def save_smpl_fits(out_dir: pathlib.Path, stem: str, persons, records, body_model, batch_size: int) -> None:
    """Fit SMPL(+H) to every hypothesis of the image's persons; ``STEM_p{k}_h{j}_smpl.npz`` and
    the fit's vertex error in each hypothesis record."""
    meshes = [v for p in persons for v in p.vertices]
    if not meshes:
        return
    fits = iter(fit_body_params(np.stack(meshes), body_model, batch_size=batch_size))
    for person, record in zip(persons, records):
        for j, hyp in enumerate(record["hypotheses"]):
            params = next(fits)
            name = f"{stem}_p{person.index}_h{j}_smpl.npz"
            write_smpl_params(out_dir / name, params, person)
            hyp["smpl"] = {"file": name, "model": body_model.kind, "vertex_error_m": params["vertex_error_m"]}


def _unique_stem(path: pathlib.Path | None, index: int, seen: set) -> str:
    stem = path.stem if path is not None else f"image{index}"
    out, n = stem, 1
    while out in seen:
        out, n = f"{stem}_{n}", n + 1
    seen.add(out)
    return out


# ------------------------------------------------------------------------------------------
# runs


def _load_predictor(args) -> Predictor:
    converted = not is_train_workdir(args.checkpoint)
    tokenizer = args.tokenizer or (DEFAULT_TOKENIZER if converted else None)
    if tokenizer and not pathlib.Path(tokenizer).is_dir():
        raise SampleError(f"--tokenizer {tokenizer} is not a folder: convert the Mesh-VQ-VAE checkpoint with "
                          "convert_torch_weights.py --model mesh_vqvae --out DIR and pass --tokenizer DIR")
    predictor = Predictor.load(args.checkpoint, tokenizer, faces=args.faces, connections=args.connections,
                               joint_regressor=args.joint_regressor if converted else None,
                               tpose=np.load(args.tpose) if args.tpose else None, batch_size=args.batch_size,
                               focal_length=args.focal)
    return predictor


def run_images(args, predictor: Predictor | None = None) -> int:
    """Meshes of the people in ``--images``; returns the exit status (0, 1 inputs skipped, 2 setup error)."""
    out_dir = pathlib.Path(args.out)
    body_model = None
    try:
        if not args.images:
            raise SampleError("--images is required (image files or folders), unless --video FILE or --generate N")
        if args.num_samples < 1:
            raise SampleError("--num-samples must be >= 1")
        images = list_images(args.images)
        if not images:
            raise SampleError(f"no images found in {' '.join(args.images)}: give image files or folders holding "
                              f"{', '.join(IMAGE_SUFFIXES)} files")
        injected = predictor is not None
        if not injected:
            predictor = _load_predictor(args)
        predictor.model.mode(args.num_samples)
        if args.smpl_fit:
            body_model = load_smpl_model(args.smpl_model, predictor.model.num_vertices)
        if not injected:
            predictor.detector = make_detector(args)  # last: a model problem is reported alone
    except (SampleError, InferenceError, DetectionError, OSError, ValueError) as e:
        _error(e)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"checkpoint": str(args.checkpoint), "model": predictor.model.kind,
               "detector": getattr(predictor.detector, "name", type(predictor.detector).__name__),
               "num_samples": args.num_samples, "mode": predictor.model.mode(args.num_samples),
               "images": [], "errors": []}
    glb, seen = _Glb(), set()
    faces = predictor.faces
    try:
        for image in predictor.predict_iter([str(p) for p in images], num_samples=args.num_samples,
                                            steps=args.steps, temperature=args.temperature, seed=args.seed,
                                            faithful=True if args.faithful else None, keep_images=True,
                                            progress=True):
            for e in image.errors:
                _error(e)
            results["errors"].extend(image.errors)
            if image.image is None:
                continue
            stem = _unique_stem(pathlib.Path(image.path) if image.path else None, image.index, seen)
            record = {"image": image.path, "width": image.width, "height": image.height, "persons": []}
            for person in image.persons:
                record["persons"].append(save_person(out_dir, stem, image.image, person, faces, glb))
            if image.persons:
                _write_png(out_dir / f"{stem}_all.png", image.overlay(faces))
                record["overlay_all"] = f"{stem}_all.png"
            if body_model is not None:
                save_smpl_fits(out_dir, stem, image.persons, record["persons"], body_model, args.batch_size)
            results["images"].append(record)
    except InferenceError as e:
        _error(e)
        return 2
    finally:
        atomic_write(out_dir / "results.json", json.dumps(results, indent=2))
    return 1 if results["errors"] else 0


def run_generate(args) -> int:
    """``--generate N`` random meshes from the unconditional MEGA; returns the exit status."""
    try:
        if args.images or args.video:
            raise SampleError("--generate makes meshes without images: drop --images / --video (or --generate)")
        converted = not is_train_workdir(args.checkpoint)
        tokenizer = args.tokenizer or (DEFAULT_TOKENIZER if converted else None)
        generator = load_generator(args.checkpoint, tokenizer, connections=args.connections,
                                   batch_size=args.batch_size)
        faces, _ = load_faces(args.faces or "body_models/template.ply")
        if faces.max() + 1 != generator.num_vertices:
            raise SampleError(f"--faces index {faces.max() + 1} vertices but the tokenizer decodes "
                              f"{generator.num_vertices}: give the faces of the tokenizer's mesh")
        out = generator.generate(args.generate, steps=args.steps, temperature=args.temperature, seed=args.seed)
    except (SampleError, InferenceError, OSError, ValueError) as e:
        _error(e)
        return 2
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    glb, tiles, meshes = _Glb(), [], []
    for i, v in enumerate(tqdm(out["vertices"], desc="meshes", unit="mesh")):
        name = f"gen_{i:03d}"
        _, glb_name = glb.write(out_dir / name, v, faces, camera_axes=False)   # generated meshes: y up
        front = v * np.array([1.0, -1.0, -1.0], np.float32)  # y up, facing +z -> the camera's y down, facing it
        canvas = np.full((GRID_TILE, GRID_TILE, 3), 255, np.uint8)
        tiles.append(render_mesh(canvas, front, faces, framing_camera(front, GRID_TILE)))
        meshes.append({"mesh": f"{name}.obj", "glb": glb_name, "tokens": out["tokens"][i].tolist()})
    _write_png(out_dir / "generated.png", contact_sheet(tiles, columns=min(len(tiles), 8)))
    atomic_write(out_dir / "results.json", json.dumps(
        {"checkpoint": str(args.checkpoint), "model": "mega_pretrained", "num_meshes": len(meshes),
         "steps": args.steps, "temperature": args.temperature, "seed": args.seed, "grid": "generated.png",
         "meshes": meshes}, indent=2))
    return 0


def run_video(args, predictor: Predictor | None = None) -> int:
    """Tracked people of ``--video``; returns the exit status (0, 1 frames lost, 2 setup error)."""
    try:
        if args.images:
            raise SampleError("give --images or --video, not both")
        if args.smpl_fit:
            raise SampleError("--smpl-fit works on --images only; fit the meshes of a track's .npz afterwards")
        if args.every < 1:
            raise SampleError(f"--every must be >= 1 (read every K-th frame), got {args.every}")
        if args.max_frames is not None and args.max_frames < 1:
            raise SampleError(f"--max-frames must be >= 1, got {args.max_frames}")
        if args.num_samples < 1:
            raise SampleError("--num-samples must be >= 1")
        if args.track_max_age < 0:
            raise SampleError(f"--track-max-age must be >= 0, got {args.track_max_age}")
        smoothing = {}
        for name in ("vertices", "camera"):
            min_cutoff, beta = getattr(args, f"smooth_{name}")
            if not min_cutoff > 0 or not beta >= 0:
                raise SampleError(f"--smooth-{name} needs MIN_CUTOFF > 0 and BETA >= 0, got {min_cutoff} {beta}")
            smoothing[name] = SmoothingParams(min_cutoff=min_cutoff, beta=beta)
        if not pathlib.Path(args.video).is_file():
            raise SampleError(f"--video {args.video}: no such file")
        injected = predictor is not None
        if not injected:
            predictor = _load_predictor(args)
        predictor.model.mode(args.num_samples)
        if not injected:
            predictor.detector = make_detector(args)
        results = track_video(predictor, args.video, args.out, every=args.every, max_frames=args.max_frames,
                              num_samples=args.num_samples, steps=args.steps, temperature=args.temperature,
                              seed=args.seed, faithful=True if args.faithful else None, smooth=args.smooth,
                              vertex_params=smoothing["vertices"], camera_params=smoothing["camera"],
                              tracker=TrackerParams(max_age=args.track_max_age),
                              extra={"checkpoint": str(args.checkpoint)})
    except (SampleError, VideoError, InferenceError, DetectionError, OSError, ValueError) as e:
        _error(e)
        return 2
    for e in results["errors"]:
        _error(e)
    return 1 if results["errors"] else 0


@command_line
def main(argv=None, predictor: Predictor | None = None) -> int:
    """Command-line entry point; ``predictor`` replaces the one ``--checkpoint`` names (tests).

    One run writes to an output folder at a time (``--out/.lock``): a second run on the same
    folder stops with one error line naming the other process.
    """
    args = _parse(argv)
    if args is None:   # --help
        return 0
    with folder_lock(args.out, "sample.py"):
        if args.generate is not None:
            return run_generate(args)
        if args.video is not None:
            return run_video(args, predictor)
        return run_images(args, predictor)


if __name__ == "__main__":
    sys.exit(main())
