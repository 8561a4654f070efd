"""`make demo`: the embedded default, end to end, on this CPU, without any licensed asset.

1. Data (:mod:`data_prep.synthetic`): Anny bodies (Apache-2.0) with random shapes and poses,
   rendered over random backgrounds, stored as image records with Anny's decimated
   ``notoes_collapse5pc`` mesh (615 vertices, 1226 faces) and its connection hierarchy
   (``topology/``); a training and a held-out test split drawn with different seeds.
   Ground-truth 3D joints: the records' 17 COCO keypoints (Anny's keypoint regressor on its
   full mesh; the records' ``keypoints_kind`` is ``coco17``). The losses and metrics regress
   joints from meshes, so a linear (17, 615) regressor is fitted by least squares on the
   training meshes to those keypoints (:func:`hmr_jax.body.regressors.fit_joint_regressor`,
   rows sum to 1) and saved under its layout's name, ``data/body_models/J_regressor_coco17.npy``;
   the training stage and the evaluation pick it for COCO-17 records. MPJPE / PA-MPJPE are over
   those 17 joints, regressed with the same matrix from the predicted and the ground-truth meshes.
2. The tokenizer: a small Mesh-VQ-VAE (``configs/train_demo_tokenizer.py``, 30 tokens) over that
   hierarchy, trained with ``train.py``'s loop.
3. MEGA (``configs/train_demo_mega.py``): a small CVQMAE on a reduced ResNet, trained on the
   tokenizer's tokens with the paper's losses (its validation pictures are rendered meshes).
4. Evaluation (:mod:`hmr_jax.evaluation`) on the test split: deterministic mode,
   stochastic mode (min of N hypotheses) and the mean-mesh baseline, same protocol.
5. Rendered hypotheses over held-out images, side views, and ``demo_out/report.md``.

The numbers are those of this small problem, not of the papers' benchmarks. Everything goes to
``demo_out/`` (``--out``); a second run reuses the data and resumes the trainings from their
checkpoints (finished ones are not retrained). ``--standin`` uses the box-person of
:class:`hmr_jax.testing.box_person.StandInBody` instead of Anny (no ``anny`` needed; the tokenizer's token
count follows the topology).
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import flags
from absl import logging as absl_logging
from PIL import Image

from data_prep import synthetic
from hmr_jax import evaluation
from hmr_jax.body.regressors import fit_joint_regressor, regressor_path
from hmr_jax.cli import parse_command
from hmr_jax.errors import command_line
from hmr_jax.data import decode_record, image_pipeline, open_dataset
from hmr_jax.files import atomic_open, atomic_write
from hmr_jax.inference import load_image_model
from hmr_jax.render import contact_sheet
from hmr_jax.testing.box_person import StandInBody
from hmr_jax.training.config import load_config
from hmr_jax.training.metric_writers import read_metrics
from hmr_jax.training.pictures import mesh_overlay, mesh_side_view, save_png, to_uint8
from hmr_jax.training.trainer import train

#: Anny mesh of the demo (see ``data_prep.synthetic.TOPOLOGIES``) and its hierarchy levels
#: (``hmr_jax.mesh.build`` syntax): 615 -> 615 -> 166 -> 166 -> 30 -> 30 points = 30 tokens.
TOPOLOGY = "notoes_collapse5pc"
LEVELS = ("1", "2", "1", "2", "1")
IMAGE_SIZE = 128
#: People face the camera within this many degrees (data_prep.synthetic's ``max_heading_deg``):
#: with any heading (180) the small demo MEGA does not learn the global rotation in a few
#: minutes and loses to the mean mesh on PVE / MPJPE, although its pose is better (PA-MPJPE).
MAX_HEADING_DEG = 45.0


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare_data(out: str, num_train: int, num_test: int, size: int = IMAGE_SIZE, topology: str = TOPOLOGY,
                 levels=LEVELS, body=None, progress: bool = True, max_heading_deg: float = MAX_HEADING_DEG) -> dict:
    """Synthetic splits and the joint regressor under ``out/data`` (each kept if present).

    Args:
      out: the demo folder.
      num_train, num_test: examples per split (seeds 0 and 1).
      size: image side, pixels.
      topology: the Anny mesh (:data:`TOPOLOGY`).
      levels: connection hierarchy levels (:data:`LEVELS`).
      body: a body object for :func:`data_prep.synthetic.generate` (default: Anny, loaded only if
        a split must be generated; tests pass ``StandInBody``).
      max_heading_deg: people face the camera within this many degrees (:data:`MAX_HEADING_DEG`).
    Returns:
      ``{"train", "test", "conn", "faces", "body_models"}`` paths, ``"regressor_fit_mm"``: the
      regressor's mean joint error on the test split (mm), and ``"num_vertices"`` /
      ``"num_tokens"``: the topology's vertex count and latent points (the tokenizer's tokens).
    """
    data = os.path.join(out, "data")
    paths = {k: os.path.join(data, k) for k in ("train", "test", "body_models")}
    paths["conn"] = os.path.join(paths["train"], "topology")
    paths["faces"] = os.path.join(paths["conn"], "faces.npy")
    for split, num, seed in (("train", num_train, 0), ("test", num_test, 1)):
        manifest = os.path.join(paths[split], "manifest.json")
        if os.path.exists(manifest):
            _say(f"  {split}: kept the existing split ({paths[split]})")
            continue
        if body is None:
            _say(f"  loading the Anny body model ({topology})")
            body = synthetic.AnnyBody(topology)
        _say(f"  generating {num} {split} examples ({size} x {size} px)")
        synthetic.generate(paths[split], num, seed=seed, size=size, body=body, overwrite=True,
                           levels=list(levels), progress=progress, max_heading_deg=max_heading_deg,
                           contact_sheet_path=os.path.join(data, f"{split}_contact_sheet.png"))
    reg_path = regressor_path(paths["body_models"], "coco17")
    if not reg_path.exists():
        verts, joints = _meshes_and_joints(paths["train"])
        reg = fit_joint_regressor(verts, joints)
        os.makedirs(paths["body_models"], exist_ok=True)
        with atomic_open(reg_path, "wb") as f:
            np.save(f, reg.astype(np.float32))
        atomic_write(os.path.join(paths["body_models"], "README.txt"),
                     f"{reg_path.name} here holds the 17 COCO keypoints (COCO order) of Anny's keypoint "
                     "regressor, fitted linearly to the demo mesh by hmr_jax.body.regressors.fit_joint_regressor "
                     "on the training split.\n")
    reg = np.load(reg_path)
    verts, joints = _meshes_and_joints(paths["test"])
    paths["regressor_fit_mm"] = float(1000 * np.mean(np.linalg.norm(
        np.einsum("jv,nvc->njc", reg, verts) - joints, axis=-1)))
    with open(os.path.join(paths["conn"], "hierarchy.json")) as f:
        hierarchy = json.load(f)
    paths["num_vertices"], paths["num_tokens"] = int(hierarchy["num_vertices"]), int(hierarchy["latent_points"])
    return paths


def _meshes_and_joints(split_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Canonical vertices (N, V, 3) and 3D keypoints ``joints_3d`` (N, J, 3) of a split (m)."""
    src = open_dataset(split_dir).data_source()
    recs = [decode_record(src[i]) for i in range(len(src))]
    return (np.stack([np.asarray(r["vertices"], np.float64) for r in recs]),
            np.stack([np.asarray(r["joints_3d"], np.float64) for r in recs]))


def sample_pictures(mega_dir: str, test_dir: str, faces: np.ndarray, out_dir: str, num_images: int,
                    num_samples: int, show_samples: int = 3, seed: int = 0) -> list[str]:
    """Rendered meshes over held-out images, one PNG row per image; returns their paths.

    Each row: the input crop; the ground-truth mesh (green) placed with the deterministic
    prediction's camera; the deterministic prediction; ``show_samples`` of the ``num_samples``
    stochastic hypotheses; side views of the ground truth and of the prediction.
    """
    model = load_image_model(mega_dir)
    batch = next(iter(image_pipeline(test_dir, batch_size=num_images, backbone=model.backbone,
                                     train=False, crop_size=model.geometry.crop)))
    det = model.predict_crops(batch["image"], 1)
    hyps = model.predict_crops(batch["image"], num_samples, mode="stochastic", seed=seed, steps=5,
                               temperature=1.0)["vertices"]
    det_v = det["vertices"][:, 0]
    cams = det["cam"]
    gt = np.asarray(batch["vertices"])
    paths = []
    os.makedirs(out_dir, exist_ok=True)
    green, orange = (0.45, 0.85, 0.45), (0.95, 0.65, 0.35)
    for b in range(len(det_v)):
        image = np.asarray(batch["image"][b])
        zoom = 2
        h, w = image.shape[:2]
        # the ground truth is centred; put it where the prediction is (same centre, same camera)
        gt_placed = gt[b] - gt[b].mean(0) + det_v[b].mean(0)
        tiles = [np.asarray(Image.fromarray(to_uint8(image)).resize((zoom * w, zoom * h))),
                 mesh_overlay(image, gt_placed, faces, cams[b], zoom=zoom, color=green),
                 mesh_overlay(image, det_v[b], faces, cams[b], zoom=zoom)]
        tiles += [mesh_overlay(image, hyps[b, n], faces, cams[b], zoom=zoom, color=orange)
                  for n in range(min(show_samples, num_samples))]
        tiles += [mesh_side_view(gt[b], faces, zoom * h, color=green), mesh_side_view(det_v[b], faces, zoom * h)]
        path = os.path.join(out_dir, f"hypotheses_{b}.png")
        save_png(path, contact_sheet(tiles, columns=len(tiles)))
        paths.append(path)
    return paths


def _stop_if_preempted(summary: dict) -> None:
    if summary.get("preempted"):
        _say(f"stopped by SIGTERM at step {summary['step']} (checkpoint saved); run it again to continue")
        sys.exit(0)


def _finished(workdir: str, total_steps: int) -> bool:
    """True if ``workdir`` holds a checkpoint of step ``total_steps`` (nothing left to train)."""
    ckpt = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt):
        return False
    return str(total_steps) in os.listdir(ckpt) and os.path.isfile(os.path.join(workdir, "config.json"))


def _train(config, workdir: str) -> float:
    """``train.py``'s loop on ``config`` in ``workdir`` (resumes from its latest checkpoint; a
    finished run is skipped)."""
    t = time.time()
    if _finished(workdir, config.total_steps):
        _say(f"  already trained ({config.total_steps} steps in {workdir})")
        return 0.0
    _stop_if_preempted(train(config, workdir))
    return time.time() - t


def _define(fv: flags.FlagValues) -> None:
    """The demo's flags (absl, parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("out", "demo_out", "Folder of everything the demo writes.", flag_values=fv)
    flags.DEFINE_boolean("quick", False, "Tiny data and step counts (a smoke test).", flag_values=fv)
    flags.DEFINE_integer("num-train", None, "Training images (default 1536; 64 with --quick).", flag_values=fv)
    flags.DEFINE_integer("num-test", None, "Held-out images (default 96; 16 with --quick).", flag_values=fv)
    flags.DEFINE_integer("tokenizer-steps", None, "Tokenizer training steps (default: its config's).",
                         flag_values=fv)
    flags.DEFINE_integer("mega-steps", None, "MEGA training steps (default: its config's).", flag_values=fv)
    flags.DEFINE_boolean("standin", False, "Use hmr_jax.testing.box_person.StandInBody (a box-person) instead of "
                         "Anny (tests).", flag_values=fv)


def _configs(args: flags.FlagValues, paths: dict, out: str):
    """The tokenizer and MEGA training configs with the demo's paths and sizes filled in."""
    variant = "quick" if args.quick else None   # the configs' short smoke-run step counts
    tok = load_config("train_demo_tokenizer", variant)
    tok.model.autoencoder.connection_folder = paths["conn"]
    tok.data.train = paths["train"]
    if args.tokenizer_steps:
        tok.total_steps = args.tokenizer_steps
    mega = load_config("train_demo_mega", variant)
    mega.tokenizer.path = os.path.join(out, "tokenizer")
    mega.body_models = paths["body_models"]
    mega.data.train = paths["train"]
    mega.data.val = paths["test"]
    mega.faces = paths["faces"]
    mega.num_vertices = paths["num_vertices"]
    mega.mega.seq_length = paths["num_tokens"]   # 30 for Anny's mesh; the topology's own count
    if args.mega_steps:
        mega.total_steps = args.mega_steps
    return tok, mega


def _evaluate(mega, mega_dir: str, paths: dict, out: str, num_samples: int) -> dict:
    """``{predictor name: metrics_mm}`` of MEGA (deterministic, stochastic) and the mean-mesh
    baseline on the test split (tables printed, files under ``out/eval``)."""
    baseline = evaluation.mean_mesh_predictor(evaluation.mean_training_mesh(paths["train"]), "resnet")
    baseline.crop_size = mega.data.crop_size or None
    results = {}
    for key, name, predictor in (
            ("deterministic", "MEGA deterministic", evaluation.load_predictor(mega_dir, "deterministic")),
            ("stochastic", f"MEGA stochastic (min of {num_samples})",
             evaluation.load_predictor(mega_dir, "stochastic", num_samples=num_samples)),
            ("mean_mesh", "mean training mesh (baseline)", baseline)):
        summary = evaluation.evaluate(predictor, paths["test"], os.path.join(out, "eval", key),
                                      paths["body_models"], batch_size=16, progress=False)
        print(evaluation.format_table(summary), flush=True)
        results[name] = summary["metrics_mm"]
    return results


def main(argv=None) -> dict:
    """Run the whole demo (see the module docstring); ``--quick`` for a short smoke run.

    Returns the results (``{predictor: metrics_mm}``) also written to ``out/results.json``.
    """
    args = parse_command(argv, _define, "python -m hmr_jax.demo", __doc__)
    if args is None:   # --help
        return {}
    if not flags.FLAGS.is_parsed():   # Grain's worker processes read absl flags
        flags.FLAGS.mark_as_parsed()
    absl_logging.set_verbosity(absl_logging.WARNING)

    t_start = time.time()
    times = {}
    out = os.path.abspath(args.out)
    n_train, n_test = (64, 16) if args.quick else (1536, 96)
    n_train = args.num_train or n_train
    n_test = args.num_test or n_test
    _say(f"1/5 synthetic data in {out}/data ({n_train} training, {n_test} test images)")
    t = time.time()
    paths = prepare_data(out, n_train, n_test, body=StandInBody() if args.standin else None)
    faces = np.load(paths["faces"])
    times["data"] = time.time() - t
    _say(f"  joint regressor fit on the test split: {paths['regressor_fit_mm']:.1f} mm mean joint error")
    tok, mega = _configs(args, paths, out)

    _say("2/5 training the tokenizer (Mesh-VQ-VAE)")
    times["tokenizer"] = _train(tok, mega.tokenizer.path)
    _say("3/5 training MEGA")
    mega_dir = os.path.join(out, "mega")
    times["mega"] = _train(mega, mega_dir)

    _say("4/5 evaluation on the held-out split")
    t = time.time()
    n_samples = 4 if args.quick else 10
    results = _evaluate(mega, mega_dir, paths, out, n_samples)
    times["evaluation"] = time.time() - t

    _say("5/5 rendered hypotheses over held-out images and the report")
    t = time.time()
    pictures = sample_pictures(mega_dir, paths["test"], faces, os.path.join(out, "pictures"), 4, n_samples)
    times["pictures"] = time.time() - t
    times["total"] = time.time() - t_start
    write_report(out, results, pictures, times, tok, mega, paths, n_train, n_test)
    for k, v in times.items():
        _say(f"  {k:<10} {v:7.1f} s")
    _say(baseline_comparison(results))
    _say(f"done in {times['total']:.0f} s: {out}/report.md")
    return results


def _augmentation_words(config) -> str:
    if not config.data.get("augment", False):
        return "no augmentation"
    parts = (["flips"] if config.data.get("flip", False) else []) + ["scale", "colour noise"]
    if config.data.get("rotation_factor", 30.0):
        parts.append(f"in-plane rotation (factor {config.data.rotation_factor:g} degrees)")
    return "augmentation: " + ", ".join(parts)


def baseline_comparison(results: dict, model: str = "MEGA deterministic",
                        baseline: str = "mean training mesh (baseline)") -> str:
    """One sentence saying, per metric, how ``model``'s mean error (mm) compares with the baseline's.

    Args:
      results: ``{predictor name: {"pve" | "mpjpe" | "pa_mpjpe": mm}}``.
    Returns:
      e.g. ``"MEGA deterministic vs the mean training mesh: PVE 152.4 vs 204.8 mm (25% lower), ..."``.
    """
    if model not in results or baseline not in results:
        return ""
    words = []
    for key, name in (("pve", "PVE"), ("mpjpe", "MPJPE"), ("pa_mpjpe", "PA-MPJPE")):
        a, b = results[model][key], results[baseline][key]
        change = f"{100 * (b - a) / b:.0f}% lower" if a < b else f"{100 * (a - b) / b:.0f}% HIGHER"
        words.append(f"{name} {a:.1f} vs {b:.1f} mm ({change})")
    better = all(results[model][k] < results[baseline][k] for k in ("pve", "mpjpe", "pa_mpjpe"))
    verdict = "beats the baseline on every metric" if better else "does NOT beat the baseline on every metric"
    return f"{model} vs the mean training mesh: " + ", ".join(words) + f": it {verdict}."


def write_report(out, results, pictures, times, tok, mega, paths, n_train, n_test) -> None:
    """``out/report.md``: what was run, the table, the times, the pictures; ``out/results.json``."""
    tok_last = read_metrics(os.path.join(out, "tokenizer"))[-1]
    mega_rows = read_metrics(os.path.join(out, "mega"))
    mega_last = [r for r in mega_rows if "loss" in r][-1]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    val_pics = sorted(os.listdir(os.path.join(out, "mega", "pictures"))) if os.path.isdir(
        os.path.join(out, "mega", "pictures")) else []
    lines = [
        "# hmr_jax demo report", "",
        f"Run in {times['total']:.0f} s on this machine ({os.cpu_count()} CPUs, 1-min load average "
        f"{load:.2f} at the end; a resumed run counts only what it still had to do).", "",
        "## Data", "",
        f"Synthetic people from `data_prep.synthetic` (Anny body model, random shape, pose, "
        f"clothes colours, camera and background; upright, facing the camera within "
        f"{MAX_HEADING_DEG:g} degrees; {IMAGE_SIZE} x {IMAGE_SIZE} px): "
        f"{n_train} training and {n_test} held-out images (other seed), Anny's `{TOPOLOGY}` mesh "
        f"({paths['num_vertices']} vertices). Ground-truth joints: the 17 COCO keypoints of Anny's regressor; the "
        f"metrics regress them from meshes with a linear regressor fitted to the training "
        f"meshes (its own error on the held-out meshes: {paths['regressor_fit_mm']:.1f} mm).", "",
        "## What was trained", "",
        f"* Tokenizer (Mesh-VQ-VAE, `configs/train_demo_tokenizer.py`): {tok.total_steps} steps, "
        f"batch {tok.batch_size}, {tok.model.quantizer.num_embeddings} codes; last training v2v "
        f"{tok_last.get('v2v_mm', float('nan')):.1f} mm, codebook perplexity "
        f"{tok_last.get('perplexity', float('nan')):.1f}.",
        f"* MEGA (CVQMAE on a reduced ResNet, one bottleneck per stage, "
        f"{32 * mega.backbone.model.get('width', 64)} output channels, from scratch; "
        f"`configs/train_demo_mega.py`, {mega.data.crop_size} px crops, "
        f"{_augmentation_words(mega)}): {mega.total_steps} steps, batch {mega.batch_size}; last loss {mega_last.get('loss', float('nan')):.3f} "
        f"(cross-entropy {mega_last.get('cross_entropy', float('nan')):.3f}, rotation "
        f"{mega_last.get('rotation', float('nan')):.3f}, reprojection {mega_last.get('reprojection', float('nan')):.3f}).",
        "", "## Held-out errors (mm, protocol `original`: meshes centred on their mean vertex; "
        "MPJPE over the 17 regressed COCO joints)", "",
        "| predictor | PVE | MPJPE | PA-MPJPE |", "| --- | --- | --- | --- |"]
    for name, m in results.items():
        lines.append(f"| {name} | {m['pve']:.1f} | {m['mpjpe']:.1f} | {m['pa_mpjpe']:.1f} |")
    lines += ["", baseline_comparison(results)]
    lines += ["", "Deterministic: all tokens predicted at once, one step. Stochastic: for each image "
              "and each metric, the best of the hypotheses (MEGA's min-of-N). Baseline: the mean of "
              "the training meshes posed with their global orientation, the same mesh for every image.", "",
              "## Wall time per phase (s)", "", "| phase | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v:.0f} |" for k, v in times.items()]
    lines += ["", "## Hypotheses on held-out images", "",
              "Each row: the input crop; the ground-truth mesh (green, placed with the predicted "
              "camera); the deterministic prediction (blue); three stochastic hypotheses (orange); "
              "side views of the ground truth and of the deterministic prediction.", ""]
    lines += [f"![hypotheses]({os.path.relpath(p, out)})" for p in pictures]
    if val_pics:
        lines += ["", "## Last validation picture during training", "",
                  f"![validation](mega/pictures/{val_pics[-1]})"]
    atomic_write(os.path.join(out, "report.md"), "\n".join(lines) + "\n")
    atomic_write(os.path.join(out, "results.json"),
                 json.dumps({"metrics_mm": results, "seconds": times, "load_average_1min": load}, indent=2))


@command_line
def _command_line() -> int:
    """``python -m hmr_jax.demo``: a bad flag or input is one ``error:`` line and exit status 2."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(_command_line())
