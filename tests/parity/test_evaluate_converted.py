"""evaluate.py on a converted RELEASED-FORMAT checkpoint (the ``mega_cvqmae_small`` parity fixture,
a MEGA CVQMAE with an HRNet-w2 backbone, saved in the original container with ``module.`` keys),
decoded with the converted ``mesh_vqvae`` fixture.

Known answers: (1) the converted checkpoint reproduces the reference's deterministic tokens and
rotation on the fixture's own images; (2) evaluate.py's per-image PVE / MPJPE / PA-MPJPE (CSV) and
means (JSON) equal the metrics recomputed here in NumPy (float64: centring, joint regression,
Procrustes) from the model's predictions obtained directly through ``hmr_jax.models.decoding``
(model built from the converted config, not through the training stage evaluate.py uses), on a
tiny split written in the real record format with real 6890-vertex meshes as ground truth.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO_ROOT

ROOT = str(REPO_ROOT)
NUM_IMAGES = 4

# ~60 s on an idle 2-core CPU (HRNet, MEGA and the 6890-vertex decoder compile twice: in
# evaluate.py's process and here), ~3 min under load.
pytestmark = [pytest.mark.parity, pytest.mark.slow]


def _procrustes(pred, gt):
    """Similarity transform of pred (J, 3) onto gt (J, 3) (rotation, scale, translation), float64."""
    mp, mg = pred.mean(0), gt.mean(0)
    x, y = pred - mp, gt - mg
    u, s, vt = np.linalg.svd(x.T @ y)
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ fix @ vt
    scale = np.sum(s * np.diag(fix)) / np.sum(x ** 2)
    return scale * x @ rot + mg


def _convert(argv):
    import convert_torch_weights

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdout", out)
        rc = convert_torch_weights.main(argv)
    assert rc == 0, out.getvalue()
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def setup(parity_dir, reference_dir, tmp_path_factory):
    """Converted MEGA + tokenizer, random joint regressors, a 4-image split with real meshes."""
    from hmr_jax.data.shards import write_dataset
    from hmr_jax.testing.toy_data import toy_image_record

    root = tmp_path_factory.mktemp("eval_converted")
    conns = reference_dir / "ConnectionMatrices"
    info = _convert([str(parity_dir / "mega_cvqmae_small.pt"), "--model", "mega_hrnet",
                     "--config", str(parity_dir / "mega_cvqmae_small.json"), "--out", str(root / "mega")])
    assert info["model"] == "mega_hrnet"
    _convert([str(parity_dir / "mesh_vqvae.pt"), "--config", str(parity_dir / "mesh_vqvae.json"),
              "--set", f"autoencoder.connection_folder={conns}", "--out", str(root / "tokenizer")])

    rng = np.random.default_rng(7)
    os.makedirs(root / "body_models")
    for name, rows in (("J_regressor_h36m.npy", 17), ("J_regressor_24.npy", 24)):
        reg = rng.random((rows, 6890)) ** 8          # a few dominant vertices per joint
        np.save(root / "body_models" / name, (reg / reg.sum(1, keepdims=True)).astype(np.float32))

    with np.load(parity_dir / "mesh_vqvae_io.npz") as z:
        meshes = z["in_meshes"].astype(np.float32)   # 4 real SMPL-topology bodies (template + noise)
    records = []
    for i in range(NUM_IMAGES):
        r = toy_image_record(rng, height=240, width=200, dataset="3dpw", name=f"img_{i}.jpg")
        v = meshes[i % len(meshes)] - meshes[i % len(meshes)].mean(0)
        r.update(vertices=v, vertices_flipped=v * np.float32([-1, 1, 1]))
        records.append(r)
    write_dataset(root / "split", "image", records, records_per_shard=3)
    return root


@pytest.fixture(scope="module")
def evaluated(setup):
    """One evaluate.py run (subprocess, as a user runs it) on the converted checkpoint."""
    out = setup / "out"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "evaluate.py"),
         "--config", os.path.join(ROOT, "configs", "train_mega.py") + ":hrnet",
         f"--config.tokenizer.path={setup / 'tokenizer'}", f"--config.body_models={setup / 'body_models'}",
         f"--checkpoint={setup / 'mega'}", f"--split={setup / 'split'}", "--mode=deterministic",
         f"--batch-size={NUM_IMAGES}", f"--out={out}"],
        capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


@pytest.fixture(scope="module")
def model(setup):
    """The converted MEGA built straight from its conversion config, and the tokenizer's decoder."""
    from hmr_jax.conversion.common import read_converted
    from hmr_jax.conversion.mesh_vqvae import load_converted
    from hmr_jax.models import decoding
    from hmr_jax.models.mega import build_mega

    variables, config = read_converted(setup / "mega", expected_model="mega_hrnet")
    tok_model, tok_vars = load_converted(setup / "tokenizer")
    return build_mega(config), variables, decoding.mesh_decoder_fn(tok_model, tok_vars)


def test_converted_checkpoint_reproduces_the_reference_tokens(model, parity_dir):
    from hmr_jax.geometry.rotations import rotation_6d_to_matrix
    from hmr_jax.models import decoding

    mega, variables, _ = model
    with np.load(parity_dir / "mega_cvqmae_small_io.npz") as z:
        ref = {k: z[k] for k in ("in_images", "out_det_pred_indices", "out_det_rotmat")}
    images = jnp.asarray(np.transpose(ref["in_images"], (0, 2, 3, 1)))
    with jax.default_matmul_precision("highest"):
        out = decoding.mega_deterministic(mega, variables, images=images)
    np.testing.assert_array_equal(np.asarray(out["tokens"]), ref["out_det_pred_indices"])
    rotmat = np.asarray(rotation_6d_to_matrix(out["rot6d"]))
    assert np.max(np.abs(rotmat - ref["out_det_rotmat"])) <= 2e-3


def test_evaluate_matches_metrics_recomputed_from_the_model(setup, evaluated, model):
    from hmr_jax.data import decode_record, image_pipeline, open_dataset
    from hmr_jax.data.augment import axis_angle_to_matrix
    from hmr_jax.models import decoding

    out, stdout = evaluated
    assert f"{NUM_IMAGES} images" in stdout and "PA-MPJPE" in stdout
    mega, variables, mesh_decode = model
    batch = next(iter(image_pipeline(str(setup / "split"), batch_size=NUM_IMAGES, backbone="hrnet",
                                     train=False, shard_index=0, shard_count=1)))
    pred = decoding.mega_deterministic(mega, variables, images=jnp.asarray(batch["image"]))
    pred = np.asarray(decoding.meshes_from_tokens(mesh_decode, pred["tokens"], pred["rot6d"])["vertices"],
                      np.float64)
    assert pred.shape == (NUM_IMAGES, 6890, 3)

    reg = np.load(setup / "body_models" / "J_regressor_h36m.npy").astype(np.float64)
    src = open_dataset(setup / "split").data_source()
    expected = []
    for i in range(NUM_IMAGES):
        r = decode_record(src[i])
        gt = np.asarray(r["vertices"], np.float64) @ axis_angle_to_matrix(r["global_orient"]).T
        gt = gt - gt.mean(0)
        p = pred[i] - pred[i].mean(0)
        pj, gj = reg @ p, reg @ gt
        expected.append({"image_name": r["image_name"], "dataset": r["dataset"],
                         "pve": 1000 * np.linalg.norm(p - gt, axis=-1).mean(),
                         "mpjpe": 1000 * np.linalg.norm(pj - gj, axis=-1).mean(),
                         "pa_mpjpe": 1000 * np.linalg.norm(_procrustes(reg @ pred[i], gj) - gj, axis=-1).mean()})

    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image_name"] for r in rows] == [f"img_{i}.jpg" for i in range(NUM_IMAGES)]
    assert all(r["dataset"] == "3dpw" for r in rows)
    for got, want in zip(rows, expected):
        for k in ("pve", "mpjpe", "pa_mpjpe"):
            assert float(got[k]) == pytest.approx(want[k], rel=1e-3, abs=0.05), (got["image_name"], k)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == NUM_IMAGES and summary["protocol"] == "original"
    assert summary["hypotheses"] == 1 and "deterministic" in summary["predictor"]
    for k in ("pve", "mpjpe", "pa_mpjpe"):
        assert summary["metrics_mm"][k] == pytest.approx(np.mean([e[k] for e in expected]), rel=1e-3)
    # A random model on random images: large but finite errors, PA-MPJPE below MPJPE.
    assert 10 < summary["metrics_mm"]["pve"] < 5000
    assert summary["metrics_mm"]["pa_mpjpe"] < summary["metrics_mm"]["mpjpe"]
