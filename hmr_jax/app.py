"""A web app: a photo in, the people's meshes back (Gradio, the ``app`` extra).

    pip install -e '.[app]'
    python -m hmr_jax.app --checkpoint converted/mega_hrnet --tokenizer converted/mesh_vqvae_54 \\
        [--smpl-model body_models/smplh/neutral/model.npz] [--host 127.0.0.1 --port 7860]

Then open http://127.0.0.1:7860. Upload a photo and choose the detection threshold, the number
of hypotheses (1 = MEGA's deterministic decoding, more = stochastic samples) and the stochastic
decoding's steps. The app shows the meshes over the photo, a side view, every hypothesis in a
grid, and offers per person and hypothesis the ``.obj`` (meters, camera-aligned axes: x right,
y down, z away), the ``.glb`` (glTF axes: y up), with ``--smpl-model`` the fitted SMPL(+H)
parameters (``_smpl.npz``, smplx's names) and a ``results.json`` (boxes, cameras, rotations,
tokens, the hypotheses' spread).

People are found by YOLOv8 (``--detector yolo``: ONNX Runtime and ``--detector-weights``, as
``sample.py``), or the whole photo is one person (``--detector full``; ``auto``, the default,
takes YOLO when it can run and says so on the page otherwise). The threshold is YOLO's person
confidence; at most ``--max-persons`` people (the most confident) are reconstructed.

Limits (each a command-line option):

* the server listens on 127.0.0.1 only, unless ``--host`` says otherwise;
* uploads larger than ``--max-upload-mb`` (10 MB) are refused by the server;
* images of more than ``--max-pixels`` (40 million) pixels are refused before they are decoded;
  larger than ``--max-side`` (1280) pixels on their longer side they are scaled down first;
* at most ``--max-hypotheses`` (8) hypotheses and ``--max-steps`` (20) steps;
* one model call at a time: requests wait in a queue of at most ``--queue-size`` (16);
* the app writes only inside its temporary folder (``--temp-dir``, default a new folder in the
  system's temporary directory, removed on exit): Gradio's uploads and caches
  (``GRADIO_TEMP_DIR``), the libraries' caches and temporary files (``XDG_CACHE_HOME``,
  ``TMPDIR``) and the result files;
  results older than an hour are deleted.
  Gradio's analytics are off and nothing is downloaded at run time.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid

from absl import flags
import numpy as np
from PIL import Image, ImageOps

from hmr_jax import detection
from hmr_jax.cli import parse_command
from hmr_jax.detection import (DEFAULT_YOLO_WEIGHTS, DetectionError, Detections, FullImageDetector,
                               yolo_unavailable_reason)
from hmr_jax.errors import command_line
from hmr_jax.files import atomic_write
from hmr_jax.inference import InferenceError, ImagePrediction, Predictor, fit_body_params, load_smpl_model
from hmr_jax.inference.export import person_record, write_mesh_files, write_smpl_params
from hmr_jax.render import contact_sheet

MAX_UPLOAD_MB = 10
MAX_PIXELS = 40_000_000
MAX_SIDE = 1280
MAX_HYPOTHESES = 8
MAX_STEPS = 20
MAX_PERSONS = 8
QUEUE_SIZE = 16
#: result folders older than this are deleted (seconds)
KEEP_RESULTS_S = 3600
#: the detector runs at this confidence; the page's threshold then keeps the boxes above its value
#: (greedy NMS by decreasing score: the boxes kept at a threshold are those kept at a lower one
#: that score above it)
DETECTION_FLOOR = 0.05
#: side of one picture in the hypotheses grid (pixels)
GRID_TILE = 320


class AppError(ValueError):
    """A problem with one request (the image, a setting); the message is shown on the page."""


@dataclasses.dataclass
class Result:
    """What one request returns.

    Attributes:
      overlay: (H, W, 3) uint8 the meshes over the (possibly scaled-down) photo.
      side_view: (H, W, 3) uint8 the meshes from the side, on white.
      grid: (h, w, 3) uint8 one picture per hypothesis (all persons), left to right, top to bottom.
      files: paths of the downloadable files (``.obj``, ``.glb``, ``_smpl.npz``, ``results.json``).
      summary: one Markdown paragraph (people found, decoding, time).
      record: the ``results.json`` content.
    """

    overlay: np.ndarray
    side_view: np.ndarray
    grid: np.ndarray | None
    files: list[str]
    summary: str
    record: dict


class Reconstructor:
    """The app without its web page: an image file and the settings in, a :class:`Result` out.

    Not thread-safe by itself: the app calls it from one queue worker at a time.
    """

    def __init__(self, predictor: Predictor, results_dir: str | os.PathLike, *, detector_note: str = "",
                 body_model=None, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE,
                 max_hypotheses: int = MAX_HYPOTHESES, max_steps: int = MAX_STEPS, max_persons: int = MAX_PERSONS):
        """Args:
          predictor: the loaded model (its detector finds the people; a YOLO detector should run at
            :data:`DETECTION_FLOOR`).
          results_dir: where each request's files go (one sub-folder per request).
          detector_note: shown with every result (e.g. why YOLO is not used).
          body_model: an SMPL(+H) :class:`~hmr_jax.body.BodyModel` for the ``_smpl.npz`` files, or None.
          max_pixels, max_side, max_hypotheses, max_steps, max_persons: the limits (module docstring).
        """
        self.predictor = predictor
        self.results_dir = pathlib.Path(results_dir)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.detector_note = detector_note
        self.body_model = body_model
        self.max_pixels, self.max_side = int(max_pixels), int(max_side)
        self.max_hypotheses, self.max_steps, self.max_persons = int(max_hypotheses), int(max_steps), int(max_persons)
        self.default_steps = int(predictor.model.decoding.get("steps") or 5)
        self.stochastic = predictor.model.family == "mega"

    # ------------------------------------------------------------------------------------
    def load_image(self, path: str | os.PathLike) -> np.ndarray:
        """The uploaded file as (H, W, 3) uint8 RGB, upright (EXIF orientation), its longer side
        at most ``max_side`` pixels.

        Raises:
          AppError: not an image, or more than ``max_pixels`` pixels (checked before decoding).
        """
        try:
            with Image.open(path) as im:
                w, h = im.size
                if w * h > self.max_pixels:
                    raise AppError(f"the image is {w} x {h} pixels, more than this app's limit of "
                                   f"{self.max_pixels:,} pixels: scale it down first")
                im = ImageOps.exif_transpose(im).convert("RGB")
                scale = self.max_side / max(im.size)
                if scale < 1:
                    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                                   Image.Resampling.LANCZOS)
                return np.asarray(im)
        except AppError:
            raise
        except Exception as e:  # PIL raises several kinds for files that are not images
            raise AppError(f"cannot read the upload as an image ({type(e).__name__}: {e}): give a JPEG, PNG "
                           "or WebP photo") from None

    def _detect(self, image: np.ndarray, threshold: float) -> Detections:
        found = self.predictor.detector.detect(image)
        keep = np.flatnonzero(found.scores >= threshold)[: self.max_persons]
        return Detections(found.boxes[keep], found.scores[keep])

    def _clean_old(self) -> None:
        now = time.time()
        for d in self.results_dir.iterdir():
            if d.is_dir() and now - d.stat().st_mtime > KEEP_RESULTS_S:
                shutil.rmtree(d, ignore_errors=True)

    def __call__(self, image_path, threshold: float = 0.5, hypotheses: int = 1, steps: int | None = None,
                 seed: int = 0) -> Result:
        """Reconstruct the people of one uploaded image.

        Args:
          image_path: the uploaded file.
          threshold: person confidence in [0, 1] (YOLO).
          hypotheses: 1 = deterministic; N > 1 = N stochastic hypotheses (MEGA).
          steps: stochastic decoding steps (default: the model config's).
          seed: PRNG seed of the hypotheses.
        Raises:
          AppError: no image, an unreadable or too large one, settings out of range.
        """
        start, started_at = time.perf_counter(), time.time()
        if image_path is None:
            raise AppError("upload a photo first")
        hypotheses = int(hypotheses)
        steps = self.default_steps if steps is None else int(steps)
        if not 1 <= hypotheses <= self.max_hypotheses:
            raise AppError(f"hypotheses must lie in 1..{self.max_hypotheses}, got {hypotheses}")
        if hypotheses > 1 and not self.stochastic:
            raise AppError(f"{self.predictor.model.kind} predicts one mesh per person: use 1 hypothesis")
        if not 1 <= steps <= self.max_steps:
            raise AppError(f"steps must lie in 1..{self.max_steps}, got {steps}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise AppError(f"the detection threshold must lie in [0, 1], got {threshold}")
        image = self.load_image(image_path)
        h, w = image.shape[:2]
        self._clean_old()
        out_dir = self.results_dir / uuid.uuid4().hex
        out_dir.mkdir()
        try:
            boxes = self._detect(image, float(threshold))
        except DetectionError as e:
            raise AppError(f"the person detector failed: {e}") from None
        record = {"width": w, "height": h, "model": self.predictor.model.kind,
                  "mode": self.predictor.model.mode(hypotheses), "hypotheses": hypotheses,
                  "steps": steps if hypotheses > 1 else None, "seed": seed, "threshold": float(threshold),
                  "detector": getattr(self.predictor.detector, "name", "?"), "persons": []}
        faces = self.predictor.faces
        if not len(boxes):
            atomic_write(out_dir / "results.json", json.dumps(record, indent=2))
            summary = (f"No person found above the threshold {threshold:.2f}: lower it, or use a photo with a "
                       "person in it. " + self.detector_note)
            return Result(image.copy(), np.full_like(image, 255), None, [str(out_dir / "results.json")],
                          summary.strip(), record)
        (pred,) = self.predictor.predict([image], boxes=[boxes], num_samples=hypotheses,
                                         steps=steps if hypotheses > 1 else None, seed=seed)
        files = []
        for person in pred.persons:
            rec = person_record(person)
            for j, v in enumerate(person.vertices):
                obj, glb = write_mesh_files(out_dir / f"person{person.index}_h{j}", v, faces)
                files += [str(out_dir / obj), str(out_dir / glb)]
                rec["hypotheses"].append({"mesh": obj, "glb": glb, "tokens": person.tokens[j].tolist()})
            if person.spread() is not None:
                rec["spread"] = person.spread()
            record["persons"].append(rec)
        if self.body_model is not None:
            files += self._smpl_files(out_dir, pred, record)
        overlay = pred.overlay(faces, image)
        side = pred.side_view(faces)
        grid = self._grid(pred, image, hypotheses)
        record["started_unix_s"], record["seconds"] = started_at, time.perf_counter() - start
        atomic_write(out_dir / "results.json", json.dumps(record, indent=2))
        files.append(str(out_dir / "results.json"))
        n = len(pred.persons)
        decoding = (f"{hypotheses} stochastic hypotheses, {steps} steps" if hypotheses > 1
                    else f"{record['mode']} decoding")
        summary = (f"{n} {'person' if n == 1 else 'people'} found ({record['detector']} detector, threshold "
                   f"{threshold:.2f}); {decoding}; {time.perf_counter() - start:.1f} s. {self.detector_note}")
        if any(not p.camera_valid for p in pred.persons):
            summary += " Some meshes lie behind the camera (scale <= 0) and are not drawn."
        return Result(overlay, side, grid, files, summary.strip(), record)

    def _smpl_files(self, out_dir: pathlib.Path, pred: ImagePrediction, record: dict) -> list[str]:
        meshes = [v for p in pred.persons for v in p.vertices]
        fits = iter(fit_body_params(np.stack(meshes), self.body_model, batch_size=self.predictor.model.batch_size))
        files = []
        for person, rec in zip(pred.persons, record["persons"]):
            for j, hyp in enumerate(rec["hypotheses"]):
                params = next(fits)
                name = f"person{person.index}_h{j}_smpl.npz"
                write_smpl_params(out_dir / name, params, person)
                hyp["smpl"] = {"file": name, "model": self.body_model.kind, "vertex_error_m": params["vertex_error_m"]}
                files.append(str(out_dir / name))
        return files

    def _grid(self, pred: ImagePrediction, image: np.ndarray, hypotheses: int) -> np.ndarray:
        """Each hypothesis (all persons) over the photo scaled to :data:`GRID_TILE` pixels."""
        h, w = image.shape[:2]
        s = min(1.0, GRID_TILE / max(h, w))
        th, tw = max(1, round(h * s)), max(1, round(w * s))
        small = np.asarray(Image.fromarray(image).resize((tw, th), Image.Resampling.BILINEAR))
        sx, sy = tw / w, th / h
        persons = [dataclasses.replace(p, focal_length=p.focal_length * (sx + sy) / 2,
                                       principal_point=p.principal_point * np.array([sx, sy]))
                   for p in pred.persons]
        scaled = ImagePrediction(pred.index, None, tw, th, persons)
        tiles = [scaled.overlay(self.predictor.faces, small, hypothesis=j) for j in range(hypotheses)]
        return contact_sheet(tiles, columns=min(hypotheses, 4))


# ------------------------------------------------------------------------------------------
# the page


def build_app(reconstructor: Reconstructor, *, queue_size: int = QUEUE_SIZE, title: str = "hmr_jax"):
    """The Gradio Blocks page around ``reconstructor``: requests wait in Gradio's queue (concurrency
    1) and run on one worker thread, so model calls run one at a time.

    Call with ``GRADIO_TEMP_DIR`` already set (:func:`configure_environment`).
    """
    import gradio as gr  # optional (the app extra): only the web app needs it

    r = reconstructor
    # every model call runs on this one thread, whichever of Gradio's threads serves the request:
    # one call at a time even beside the queue, and the memory the model and the renderer
    # allocate is reused from one thread's heap instead of growing one heap per server thread
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hmr_jax-model")

    def run(image_path, threshold, hypotheses, steps):
        try:
            res = worker.submit(r, image_path, threshold, int(hypotheses), int(steps)).result()
        except (AppError, InferenceError) as e:
            raise gr.Error(str(e)) from None
        return res.overlay, res.side_view, res.grid, res.files, res.summary

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(600, KEEP_RESULTS_S)) as demo:
        gr.Markdown(f"## Human mesh recovery ({r.predictor.model.kind})\n"
                    "Upload a photo; the people's meshes are drawn over it. One hypothesis is the "
                    "deterministic prediction; more are stochastic samples (their spread shows how "
                    "uncertain the model is).")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Photo", type="filepath", image_mode=None, sources=["upload"],
                                 elem_id="photo")
                threshold = gr.Slider(DETECTION_FLOOR, 0.95, value=0.5, step=0.05, label="Detection threshold",
                                      elem_id="threshold")
                hypotheses = gr.Slider(1, r.max_hypotheses if r.stochastic else 1, value=1, step=1,
                                       label="Hypotheses (1 = deterministic)", interactive=r.stochastic,
                                       elem_id="hypotheses")
                steps = gr.Slider(1, r.max_steps, value=r.default_steps, step=1,
                                  label="Decoding steps (stochastic)", interactive=r.stochastic, elem_id="steps")
                button = gr.Button("Reconstruct", variant="primary", elem_id="run")
                summary = gr.Markdown(elem_id="summary")
            with gr.Column(scale=2):
                with gr.Row():
                    overlay = gr.Image(label="Meshes over the photo", type="numpy", format="png",
                                       interactive=False, elem_id="overlay")
                    side = gr.Image(label="Side view", type="numpy", format="png", interactive=False,
                                    elem_id="side")
                grid = gr.Image(label="Hypotheses", type="numpy", format="png", interactive=False, elem_id="grid")
                files = gr.File(label="Meshes (.obj, .glb), SMPL parameters (.npz), results.json",
                                file_count="multiple", interactive=False, elem_id="files")
        button.click(run, [image, threshold, hypotheses, steps], [overlay, side, grid, files, summary],
                     api_name="reconstruct", concurrency_limit=1)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo


def configure_environment(temp_dir: pathlib.Path) -> None:
    """Point Gradio, the libraries' caches and temporary files at the app's own folder and keep it
    offline: ``GRADIO_TEMP_DIR``, ``XDG_CACHE_HOME`` (ONNX Runtime writes a device id file there),
    ``TMPDIR`` (upload spooling, ONNX Runtime's session file), no analytics, no Hugging Face Hub
    calls. Must run before gradio and onnxruntime are imported."""
    for sub in ("gradio", "cache", "tmp"):
        (temp_dir / sub).mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir / "gradio")
    os.environ["XDG_CACHE_HOME"] = str(temp_dir / "cache")
    os.environ["TMPDIR"] = str(temp_dir / "tmp")
    tempfile.tempdir = None   # Python's tempfile reads TMPDIR again
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("GRADIO_SSR_MODE", "False")


PROGRAM = "python -m hmr_jax.app"


def _define(fv: flags.FlagValues) -> None:
    """The app's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("checkpoint", None, "converted MEGA / VQ-HPS folder or train.py workdir", required=True,
                        flag_values=fv)
    flags.DEFINE_string("tokenizer", None, "converted mesh_vqvae folder (a workdir's own by default)", flag_values=fv)
    flags.DEFINE_string("connections", None, "the tokenizer's connection folder (default: its config's)",
                        flag_values=fv)
    flags.DEFINE_string("faces", None, "mesh giving the faces (default: a workdir's config.faces, else "
                        "body_models/template.ply)", flag_values=fv)
    flags.DEFINE_string("joint-regressor", None, "VQ-HPS: (17, V) .npy (default body_models/J_regressor_h36m.npy)",
                        flag_values=fv)
    flags.DEFINE_string("smpl-model", None, "SMPL / SMPL+H model file: offer the fitted parameters too",
                        flag_values=fv)
    flags.DEFINE_enum("detector", "auto", ["auto", "yolo", "full"], "how people are found", flag_values=fv)
    flags.DEFINE_string("detector-weights", DEFAULT_YOLO_WEIGHTS, "YOLOv8 ONNX export or .pt", flag_values=fv)
    flags.DEFINE_string("host", "127.0.0.1", "address to listen on (127.0.0.1: this machine only)", flag_values=fv)
    flags.DEFINE_integer("port", 7860, "port to listen on", flag_values=fv)
    flags.DEFINE_string("temp-dir", None, "the app's folder for uploads and results (default: a new temporary one)",
                        flag_values=fv)
    flags.DEFINE_float("max-upload-mb", MAX_UPLOAD_MB, "largest upload the server accepts (MB)", flag_values=fv)
    flags.DEFINE_integer("max-pixels", MAX_PIXELS, "images with more pixels are refused before decoding",
                         flag_values=fv)
    flags.DEFINE_integer("max-side", MAX_SIDE, "longer image side (pixels) above which images are scaled down",
                         flag_values=fv)
    flags.DEFINE_integer("max-hypotheses", MAX_HYPOTHESES, "most hypotheses per person a request may ask for",
                         flag_values=fv)
    flags.DEFINE_integer("max-steps", MAX_STEPS, "most stochastic decoding steps a request may ask for",
                         flag_values=fv)
    flags.DEFINE_integer("max-persons", MAX_PERSONS, "most people reconstructed per photo (the most confident)",
                         flag_values=fv)
    flags.DEFINE_integer("queue-size", QUEUE_SIZE, "requests waiting for the model at most", flag_values=fv)
    flags.DEFINE_integer("batch-size", 8, "persons per compiled batch", flag_values=fv)


def _parse(argv):
    """The options, or None after ``--help``."""
    return parse_command(argv, _define, PROGRAM, __doc__)


def _detector(args) -> tuple[object, str]:
    """The detector ``--detector`` asks for (YOLO at :data:`DETECTION_FLOOR`) and a note for the page."""
    if args.detector != "full":
        reason = yolo_unavailable_reason(args.detector_weights)
        if reason is None:
            try:
                return detection.make_detector("yolo", weights=args.detector_weights, threshold=DETECTION_FLOOR), ""
            except DetectionError as e:
                reason = str(e)
        if args.detector == "yolo":
            raise DetectionError(f"--detector yolo: {reason} (or use --detector full)")
        return FullImageDetector(), (f"No person detector ({reason}): the whole photo is taken as one person, "
                                     "so give photos cropped around one person.")
    return FullImageDetector(), "The whole photo is taken as one person (--detector full)."


def load(args) -> Reconstructor:
    """The model, detector and body model the options name, as a :class:`Reconstructor` writing
    into ``TEMP/results``."""
    joint_regressor = args.joint_regressor
    if joint_regressor is None and os.path.isfile("body_models/J_regressor_h36m.npy"):
        joint_regressor = "body_models/J_regressor_h36m.npy"
    predictor = Predictor.load(args.checkpoint, args.tokenizer, faces=args.faces, connections=args.connections,
                               joint_regressor=joint_regressor, batch_size=args.batch_size)
    body_model = load_smpl_model(args.smpl_model, predictor.model.num_vertices) if args.smpl_model else None
    predictor.detector, note = _detector(args)
    return Reconstructor(predictor, pathlib.Path(args.temp_dir) / "results", detector_note=note,
                         body_model=body_model, max_pixels=args.max_pixels, max_side=args.max_side,
                         max_hypotheses=args.max_hypotheses, max_steps=args.max_steps,
                         max_persons=args.max_persons)


@command_line
def main(argv=None) -> int:
    """Command-line entry point: load the model, serve the page until interrupted."""
    args = _parse(argv)
    if args is None:   # --help
        return 0
    own_temp = args.temp_dir is None
    if own_temp:
        args.temp_dir = tempfile.mkdtemp(prefix="hmr_jax_app_")
    temp = pathlib.Path(args.temp_dir).resolve()
    args.temp_dir = str(temp)
    try:
        configure_environment(temp)
        if importlib.util.find_spec("gradio") is None:   # optional: the app extra
            print("error: the web app needs Gradio: pip install -e '.[app]'", file=sys.stderr)
            return 2
        try:
            reconstructor = load(args)
        except (InferenceError, DetectionError, OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        demo = build_app(reconstructor, queue_size=args.queue_size)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # `kill`: close the server, remove the folder
        try:
            demo.launch(server_name=args.host, server_port=args.port,
                        max_file_size=f"{int(args.max_upload_mb * 1e6)}b", ssr_mode=False, show_error=True,
                        quiet=True, enable_monitoring=False, mcp_server=False, pwa=False, footer_links=[],
                        run_history=False, prevent_thread_lock=True, inbrowser=False, share=False,
                        allowed_paths=[str(reconstructor.results_dir)])   # the result files, served for download
        except OSError as e:
            print(f"error: cannot serve on {args.host}:{args.port} ({e}): choose another --port", file=sys.stderr)
            return 2
        print(f"hmr_jax app: http://{args.host}:{args.port} (files in {temp})", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()
        return 0
    finally:
        if own_temp:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
