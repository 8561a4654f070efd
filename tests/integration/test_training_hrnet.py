"""An HRNet stage trained end to end through ``train()``: MEGA on toy images with a tiny-width
HRNet backbone (width 2, every stage / branch / block of the released w48 layout), a 24-point
tokenizer trained first on a generated grid hierarchy. Checks that every loss term is finite,
that the parameters (backbone included) and the BatchNorm statistics change, and that the
summed loss is what the terms say."""
from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from hmr_jax.training.config import load_config
from hmr_jax.training.metric_writers import read_metrics
from hmr_jax.training.trainer import train
from helpers.stages import grid_faces, quick, tiny_tokenizer_model
from helpers import REPO_ROOT

ROOT = str(REPO_ROOT)
NV = 24  # the toy datasets' "mesh" is a 24-point skeleton
STEPS = 3

pytestmark = pytest.mark.slow  # the HRNet train step compiles in ~1-2 min on a 2-core CPU


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 4-step tokenizer run, then MEGA with a width-2 HRNet (returns both workdirs, the MEGA
    summary and its initial variables)."""
    from hmr_jax.testing.toy_data import write_toy_image_dataset, write_toy_mesh_dataset
    from hmr_jax.mesh.build import build_hierarchy, write_hierarchy

    root = tmp_path_factory.mktemp("hrnet_stage")
    write_hierarchy(build_hierarchy(grid_faces(4, 6), NV, ["1", "2", "1"]), root / "conn")
    write_toy_mesh_dataset(root / "meshes", 32, seed=0, num_vertices=NV)
    write_toy_image_dataset(root / "images", 8, seed=2)
    rng = np.random.default_rng(0)
    os.makedirs(root / "body_models")
    for name, rows in (("J_regressor_h36m.npy", 17), ("J_regressor_24.npy", 24)):
        reg = rng.random((rows, NV)).astype(np.float32)
        np.save(root / "body_models" / name, reg / reg.sum(1, keepdims=True))

    tok = quick(load_config("train_mesh_vqvae"), 4)
    tok.model = tiny_tokenizer_model(root / "conn")
    tok.batch_size = 8
    tok.data.train = str(root / "meshes")
    train(tok, str(root / "tokenizer"))

    c = quick(load_config("train_mega", "hrnet"), STEPS)
    c.mega.update(seq_length=8, emb_dim=32, encoder_layer=1, decoder_layer=1, num_embeddings=16,
                  dim_tokens=16, cond_dim=15 * 2)
    c.backbone.model.width = 2
    c.backbone.cond_dim = 15 * 2
    c.tokenizer.path = str(root / "tokenizer")
    c.body_models = str(root / "body_models")
    c.num_vertices = NV
    c.batch_size = 4
    c.optim.update(base_lr=0.5, warmup_epochs=0.0)   # lr 0.5 x 4 / 256: visible moves in 3 steps
    c.data.train = str(root / "images")
    c.data.crop_size = 64   # 64 x 64 crops: 2 x 2 condition tokens, the CPU budget
    c.mega.cond_length = 4

    from hmr_jax.training.stages import get_stage
    from hmr_jax.data import image_pipeline

    stage = get_stage(c)
    batch = next(iter(image_pipeline(str(root / "images"), batch_size=4, backbone="hrnet",
                                     train=False, crop_size=64)))
    initial = jax.device_get(jax.jit(stage.init)(jax.random.key(c.seed + 1), batch))
    out = train(c, str(root / "mega"))
    return root, out, initial


def test_hrnet_mega_stage_trains(runs):
    root, out, initial = runs
    records = [r for r in read_metrics(str(root / "mega")) if "loss" in r]
    assert len(records) == STEPS
    for r in records:
        for key in ("loss", "cross_entropy", "rotation", "reprojection", "grad_norm"):
            assert np.isfinite(r[key]), (r["step"], key)
        assert r["loss"] == pytest.approx(r["cross_entropy"] + r["rotation"] + r["reprojection"], rel=1e-5)
        assert r["grad_norm"] > 0
    assert out["step"] == STEPS
    state = jax.device_get(out["state"])
    params, stats = state["params"], state["model_state"]["batch_stats"]["backbone"]
    # The same initial variables as train() starts from (same key, no pre-trained weights).
    assert jax.tree.structure(params) == jax.tree.structure(initial.params)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                         params, initial.params)
    backbone_moved = jax.tree.leaves(moved["backbone"])
    assert max(backbone_moved) > 0 and sum(d > 0 for d in backbone_moved) > len(backbone_moved) // 2
    assert max(jax.tree.leaves({k: v for k, v in moved.items() if k != "backbone"})) > 0
    stat_moved = jax.tree.leaves(jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), stats,
        initial.model_state["batch_stats"]["backbone"]))
    assert max(stat_moved) > 0   # BatchNorm running statistics updated in training mode
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
