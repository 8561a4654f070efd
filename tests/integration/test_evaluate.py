"""evaluate.py on a tiny prepared split with known answers: the mean-mesh baseline's errors are
recomputed here with NumPy (centring, joint regression, Procrustes) from the stored records."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT

ROOT = str(REPO_ROOT)
NV = 24


def _procrustes(pred, gt):
    """Similarity transform of pred (J, 3) onto gt (J, 3) (rotation, scale, translation)."""
    mp, mg = pred.mean(0), gt.mean(0)
    x, y = pred - mp, gt - mg
    u, s, vt = np.linalg.svd(x.T @ y)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = np.sum(s * np.diag(fix)) / np.sum(x ** 2)
    return scale * x @ rot + mg


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    from hmr_jax.testing.toy_data import write_toy_image_dataset

    root = tmp_path_factory.mktemp("eval")
    write_toy_image_dataset(root / "toy_test", 10, seed=5)
    rng = np.random.default_rng(1)
    os.makedirs(root / "body_models")
    reg = rng.random((17, NV)).astype(np.float32)
    np.save(root / "body_models" / "J_regressor_h36m.npy", reg / reg.sum(1, keepdims=True))
    mean_mesh = rng.normal(scale=0.2, size=(NV, 3)).astype(np.float32)
    np.save(root / "mean.npy", mean_mesh)
    return root


def _expected(split_dir, mean_mesh, reg):
    from hmr_jax.data import decode_record, open_dataset
    from hmr_jax.data.augment import axis_angle_to_matrix

    src = open_dataset(split_dir).data_source()
    rows = []
    for i in range(len(src)):
        r = decode_record(src[i])
        gt = np.asarray(r["vertices"], np.float64) @ axis_angle_to_matrix(r["global_orient"]).T
        gt -= gt.mean(0)
        pred = mean_mesh.astype(np.float64) - mean_mesh.mean(0)
        pj, gj = reg @ pred, reg @ gt
        rows.append({"image_name": r["image_name"],
                     "pve": 1000 * np.linalg.norm(pred - gt, axis=-1).mean(),
                     "mpjpe": 1000 * np.linalg.norm(pj - gj, axis=-1).mean(),
                     "pa_mpjpe": 1000 * np.linalg.norm(_procrustes(reg @ mean_mesh, reg @ gt) - gj,
                                                       axis=-1).mean()})
    return rows


def test_mean_mesh_baseline_matches_numpy(split):
    out = split / "out"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "evaluate.py"), "--mode=mean_mesh",
         f"--mean-mesh={split / 'mean.npy'}", "--split=toy_test", f"--data-root={split}",
         f"--body-models={split / 'body_models'}", "--batch-size=4", f"--out={out}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PA-MPJPE" in proc.stdout and "10 images" in proc.stdout
    expected = _expected(split / "toy_test", np.load(split / "mean.npy"),
                         np.load(split / "body_models" / "J_regressor_h36m.npy").astype(np.float64))
    with open(out / "per_image.csv") as f:
        got = list(csv.DictReader(f))
    assert [r["image_name"] for r in got] == [r["image_name"] for r in expected]
    for g, e in zip(got, expected):
        for k in ("pve", "mpjpe", "pa_mpjpe"):
            assert float(g[k]) == pytest.approx(e[k], rel=1e-4, abs=1e-3), (g["image_name"], k)
    summary = json.load(open(out / "summary.json"))
    assert summary["num_images"] == 10
    for k in ("pve", "mpjpe", "pa_mpjpe"):
        assert summary["metrics_mm"][k] == pytest.approx(np.mean([e[k] for e in expected]), rel=1e-4)
    assert summary["metrics_mm"]["pa_mpjpe"] < summary["metrics_mm"]["mpjpe"]


def test_missing_split_is_a_clear_error(split):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), "--mode=mean_mesh",
                           f"--mean-mesh={split / 'mean.npy'}", "--split=nowhere",
                           f"--data-root={split}"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "nowhere" in proc.stderr
