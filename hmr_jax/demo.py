"""`make demo`: the embedded default, end to end, on this CPU, without any licensed asset.

1. Data: toy people in the record format (a 24-point 3D skeleton per image: a template plus 3
   random deformation modes and a random global rotation; the picture has a dot at each
   projected joint), a training and a held-out test split, and joint regressors for them
   (SMPL-24 = the 24 points, "H36M-17" = the first 17).
2. The tokenizer: a small Mesh-VQ-VAE (``configs/train_demo_tokenizer.py``) over a generated
   connection hierarchy (:mod:`hmr_jax.mesh.build`), trained with ``train.py``'s loop.
3. MEGA (``configs/train_demo_mega.py``): a small CVQMAE on a reduced ResNet, trained on the
   tokenizer's tokens with the paper's losses.
4. Evaluation (:mod:`hmr_jax.training.evaluation`) on the test split: deterministic mode,
   stochastic mode (min of N hypotheses) and the mean-mesh baseline, same protocol.
5. Pictures of the hypotheses over held-out images and ``demo_out/report.md``.

The numbers are those of this tiny problem, not of the papers' benchmarks. Everything goes to
``demo_out/`` (``--out``); a second run resumes the trainings from their checkpoints.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NV = 24


def _config(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _grid_faces(h: int, w: int) -> np.ndarray:
    faces = []
    for i in range(h - 1):
        for j in range(w - 1):
            a, b, c, d = i * w + j, i * w + j + 1, (i + 1) * w + j, (i + 1) * w + j + 1
            faces += [(a, b, c), (b, d, c)]
    return np.array(faces)


def _structured_person_records(num: int, seed: int, name: str):
    """Image records (the :mod:`hmr_jax.data.records` format) of toy people with structure to
    learn: a fixed 24-point template skeleton plus 3 random deformation modes, a random global
    rotation, drawn as dots like :mod:`hmr_jax.data.toy` (whose people are i.i.d. random points)."""
    import io

    from PIL import Image

    from hmr_jax.data import augment as aug

    shape_rng = np.random.default_rng(2024)
    template = shape_rng.normal(scale=0.25, size=(NV, 3))
    modes = shape_rng.normal(scale=0.12, size=(3, NV, 3))
    perm = list(aug.FLIP_PERMUTATIONS["smpl24"])
    rng = np.random.default_rng(seed)
    h, w = 160, 128
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(num):
        joints = template + np.tensordot(rng.normal(size=3), modes, axes=1)
        joints -= joints.mean(0)
        orient = rng.normal(scale=0.6, size=3)
        rot = aug.axis_angle_to_matrix(orient)
        scale = min(h, w) / 200.0 * rng.uniform(0.7, 0.9)
        center = np.array([w * rng.uniform(0.45, 0.55), h * rng.uniform(0.45, 0.55)])
        kp = center + 200.0 * scale / 2.2 * (joints @ rot.T)[:, :2]
        image = rng.uniform(40, 120, size=3) + 30 * np.sin(xx[..., None] / rng.uniform(5, 15)) \
            + 30 * np.cos(yy[..., None] / rng.uniform(5, 15))
        for x, y in kp:
            image[(xx - x) ** 2 + (yy - y) ** 2 <= 2.5 ** 2] = 255.0
        buf = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=95)
        yield {
            "image_jpeg": buf.getvalue(), "center": center.astype(np.float32),
            "scale": np.float32(scale),
            "keypoints_2d": np.concatenate([kp, np.ones((NV, 1))], 1).astype(np.float32),
            "keypoints_kind": "smpl24", "vertices": joints.astype(np.float32),
            "vertices_flipped": (joints[perm] * [-1.0, 1.0, 1.0]).astype(np.float32),
            "global_orient": orient.astype(np.float32), "joints_3d": joints[:22].astype(np.float32),
            "dataset": name, "image_name": f"{name}_{i:05d}.jpg",
            "image_size": np.array([h, w], np.int32),
            "stored_to_original": np.array([[1, 0, 0], [0, 1, 0]], np.float32),
        }


def prepare_data(out: str, num_train: int, num_test: int) -> dict:
    """Toy splits, connection files and regressors under ``out/data`` (kept if present)."""
    from hmr_jax.data import write_dataset
    from hmr_jax.mesh.build import build_hierarchy, write_hierarchy

    data = os.path.join(out, "data")
    paths = {k: os.path.join(data, k) for k in ("train", "test", "conn", "body_models")}
    for split, num, seed in (("train", num_train, 0), ("test", num_test, 1)):
        if not os.path.exists(os.path.join(paths[split], "manifest.json")):
            write_dataset(paths[split], "image", _structured_person_records(num, seed, f"toy_{split}"),
                          records_per_shard=256)
    if not os.path.exists(os.path.join(paths["conn"], "hierarchy.json")):
        write_hierarchy(build_hierarchy(_grid_faces(4, 6), NV, ["1", "2", "1"]), paths["conn"])
    os.makedirs(paths["body_models"], exist_ok=True)
    np.save(os.path.join(paths["body_models"], "J_regressor_24.npy"), np.eye(NV, dtype=np.float32))
    np.save(os.path.join(paths["body_models"], "J_regressor_h36m.npy"), np.eye(NV, dtype=np.float32)[:17])
    return paths


def mean_training_mesh(train_dir: str) -> np.ndarray:
    """Mean posed, centred mesh (V, 3) of the training split (the trivial baseline)."""
    from hmr_jax.data import decode_record, open_dataset
    from hmr_jax.data.augment import axis_angle_to_matrix

    src = open_dataset(train_dir).data_source()
    acc = np.zeros((NV, 3))
    for i in range(len(src)):
        r = decode_record(src[i])
        acc += np.asarray(r["vertices"], np.float64) @ axis_angle_to_matrix(r["global_orient"]).T
    return (acc / len(src)).astype(np.float32)


def draw_hypotheses(out_png: str, image: np.ndarray, gt_2d: np.ndarray, hyps_2d: np.ndarray,
                    det_2d: np.ndarray) -> None:
    """Save the crop with the hypotheses (faint red), the deterministic prediction (blue) and
    the ground-truth keypoints (green); points in [-1, 1] crop coordinates."""
    from hmr_jax.training.pictures import overlay, save_png

    layers = [(h, (255, 40, 40, 90), 2) for h in hyps_2d]
    layers += [(det_2d, (40, 80, 255, 255), 3), (gt_2d, (40, 220, 40, 200), 4)]
    save_png(out_png, overlay(image, layers))


def sample_pictures(mega_dir: str, test_dir: str, out_dir: str, num_images: int, num_samples: int) -> list[str]:
    """Hypotheses over held-out images: one PNG per image; returns their paths."""
    import jax
    import jax.numpy as jnp

    from hmr_jax.data import image_pipeline
    from hmr_jax.models import decoding
    from hmr_jax.training.losses import orthographic_projection
    from hmr_jax.training.stages import common, get_stage
    import ml_collections

    state, cfg = common.restore_workdir(mega_dir)
    stage = get_stage(ml_collections.ConfigDict(cfg))
    variables = {"params": state["params"], **state["model_state"]}
    decode = decoding.mesh_decoder_fn(stage.tokenizer, stage.frozen()["tokenizer"])
    batch = next(iter(image_pipeline(test_dir, batch_size=num_images, backbone=stage.config.backbone.kind,
                                     train=False, crop_size=stage.config.data.crop_size or None)))
    images = jnp.asarray(batch["image"])
    gen = decoding.mega_generate(stage.model, variables, images=images, key=jax.random.key(0),
                                 num_samples=num_samples, steps=5, gen_temp=1.0)
    det = decoding.mega_deterministic(stage.model, variables, images=images)
    hyps = decoding.meshes_from_tokens(decode, gen["tokens"], gen["rot6d"])["vertices"]  # (B, N, V, 3)
    det_v = decoding.meshes_from_tokens(decode, det["tokens"], det["rot6d"])["vertices"]
    cam = det["cam"]
    paths = []
    os.makedirs(out_dir, exist_ok=True)
    for b in range(images.shape[0]):
        h2d = np.stack([np.asarray(orthographic_projection(hyps[b, n][None], cam[b][None])[0])
                        for n in range(num_samples)])
        d2d = np.asarray(orthographic_projection(det_v[b][None], cam[b][None])[0])
        path = os.path.join(out_dir, f"hypotheses_{b}.png")
        draw_hypotheses(path, np.asarray(batch["image"][b]), np.asarray(batch["keypoints_2d"][b, :, :2]),
                        h2d, d2d)
        paths.append(path)
    return paths


def _stop_if_preempted(summary: dict) -> None:
    if summary.get("preempted"):
        print(f"[demo] stopped by SIGTERM at step {summary['step']} (checkpoint saved); run it again "
              "to continue")
        sys.exit(0)


def main(argv=None) -> None:
    """Run the whole demo (see the module docstring); ``--quick`` for a short smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--quick", action="store_true", help="tiny step counts (a smoke test)")
    args = parser.parse_args(argv)
    from absl import flags
    from absl import logging as absl_logging

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    absl_logging.set_verbosity(absl_logging.WARNING)
    from hmr_jax.training import evaluation
    from hmr_jax.training.trainer import train

    t_start = time.time()
    out = os.path.abspath(args.out)
    n_train, n_test = (64, 16) if args.quick else (512, 64)
    print(f"[demo] 1/5 toy data in {out}/data ({n_train} training, {n_test} test images)")
    paths = prepare_data(out, n_train, n_test)

    print("[demo] 2/5 training the tokenizer (Mesh-VQ-VAE)")
    tok = _config("train_demo_tokenizer")
    tok.model.autoencoder.connection_folder = paths["conn"]
    tok.data.train = paths["train"]
    if args.quick:
        tok.total_steps, tok.log_every_steps = 20, 10
    tok_dir = os.path.join(out, "tokenizer")
    _stop_if_preempted(train(tok, tok_dir))

    print("[demo] 3/5 training MEGA")
    mega = _config("train_demo_mega")
    mega.tokenizer.path = tok_dir
    mega.body_models = paths["body_models"]
    mega.data.train = paths["train"]
    if args.quick:
        mega.total_steps, mega.log_every_steps = 10, 5
    mega_dir = os.path.join(out, "mega")
    _stop_if_preempted(train(mega, mega_dir))

    print("[demo] 4/5 evaluation on the held-out split")
    eval_dir = os.path.join(out, "eval")
    results = {}
    n_samples = 4 if args.quick else 10
    baseline = evaluation.mean_mesh_predictor(mean_training_mesh(paths["train"]), "resnet")
    baseline.crop_size = mega.data.crop_size or None
    for name, predictor in (
            ("MEGA deterministic", evaluation.load_predictor(mega_dir, "deterministic")),
            (f"MEGA stochastic (min of {n_samples})",
             evaluation.load_predictor(mega_dir, "stochastic", num_samples=n_samples)),
            ("mean training mesh (baseline)", baseline)):
        sub = os.path.join(eval_dir, name.split(" ")[0].lower() + "_" + name.split(" ")[1].strip("(").lower())
        summary = evaluation.evaluate(predictor, paths["test"], sub, paths["body_models"],
                                      batch_size=16, progress=False)
        print(evaluation.format_table(summary))
        results[name] = summary["metrics_mm"]

    print("[demo] 5/5 hypotheses over held-out images and the report")
    pictures = sample_pictures(mega_dir, paths["test"], os.path.join(out, "pictures"), 4, n_samples)
    write_report(out, results, pictures, time.time() - t_start, tok, mega)
    print(f"[demo] done in {time.time() - t_start:.0f} s: {out}/report.md")


def write_report(out, results, pictures, seconds, tok, mega) -> None:
    """``out/report.md``: what was run, the table, the pictures."""
    from hmr_jax.training.metric_writers import read_metrics

    tok_last = read_metrics(os.path.join(out, "tokenizer"))[-1]
    mega_last = read_metrics(os.path.join(out, "mega"))[-1]
    lines = [
        "# hmr_jax demo report", "",
        f"Run in {seconds:.0f} s on this machine. Toy people: 24-point skeletons (a template, 3 "
        "deformation modes, a random rotation) drawn as dots; the numbers are for this toy problem "
        "only, not the papers' benchmarks.", "",
        "## What was trained", "",
        f"* Tokenizer (Mesh-VQ-VAE, `configs/train_demo_tokenizer.py`): {tok.total_steps} steps, "
        f"batch {tok.batch_size}; last training v2v {tok_last.get('v2v_mm', float('nan')):.1f} mm, "
        f"codebook perplexity {tok_last.get('perplexity', float('nan')):.1f}.",
        f"* MEGA (CVQMAE on a reduced ResNet, `configs/train_demo_mega.py`): {mega.total_steps} steps, "
        f"batch {mega.batch_size}; last loss {mega_last.get('loss', float('nan')):.3f} "
        f"(cross-entropy {mega_last.get('cross_entropy', float('nan')):.3f}, rotation "
        f"{mega_last.get('rotation', float('nan')):.3f}, reprojection {mega_last.get('reprojection', float('nan')):.3f}).",
        "", "## Held-out errors (mm, protocol `original`)", "",
        "| predictor | PVE | MPJPE | PA-MPJPE |", "| --- | --- | --- | --- |"]
    for name, m in results.items():
        lines.append(f"| {name} | {m['pve']:.1f} | {m['mpjpe']:.1f} | {m['pa_mpjpe']:.1f} |")
    lines += ["", "## Hypotheses on held-out images", "",
              "Green circles: ground-truth keypoints; blue squares: deterministic prediction; "
              "red dots: the stochastic hypotheses (projected with the predicted camera).", ""]
    lines += [f"![hypotheses]({os.path.relpath(p, out)})" for p in pictures]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
