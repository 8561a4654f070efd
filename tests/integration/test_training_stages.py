"""The model stages train end to end on tiny data: a 24-vertex tokenizer (a generated connection
hierarchy), MEGA pre-training on its tokens, image-conditioned MEGA and VQ-HPS with a
reduced ResNet (one bottleneck per stage). Each
checks that its losses are finite, that training lowers them and that state is updated."""
from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from hmr_jax.training.config import load_config
from hmr_jax.training.metric_writers import read_metrics
from hmr_jax.training.stages import get_stage
from hmr_jax.training.trainer import train
from helpers.stages import grid_faces, quick, tiny_tokenizer_model
from helpers import REPO_ROOT

ROOT = str(REPO_ROOT)
NV = 24  # the toy datasets' "mesh" is a 24-point skeleton


def _write_structured_meshes(path, num, seed):
    """Meshes with structure to learn: a fixed 24-point shape plus 2 random deformation modes."""
    from hmr_jax.data import write_dataset

    base = np.random.default_rng(123).normal(scale=0.3, size=(3, NV, 3))
    rng = np.random.default_rng(seed)

    def items():
        for i in range(num):
            v = base[0] + rng.normal(size=(2, 1, 1)).__mul__(base[1:]).sum(0) * 0.5
            yield {"vertices": (v - v.mean(0)).astype(np.float32),
                   "global_orient": rng.normal(scale=0.5, size=3).astype(np.float32),
                   "dataset": "structured", "name": f"m{i:04d}"}

    write_dataset(path, "mesh", items())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Connection files for a 4x6 grid (24 points -> 8 tokens), toy mesh and image sets, and
    random joint regressors for 24 points."""
    from hmr_jax.testing.toy_data import write_toy_image_dataset
    from hmr_jax.mesh.build import build_hierarchy, write_hierarchy

    root = tmp_path_factory.mktemp("tiny")
    write_hierarchy(build_hierarchy(grid_faces(4, 6), NV, ["1", "2", "1"]), root / "conn")
    _write_structured_meshes(root / "meshes", 64, seed=0)
    _write_structured_meshes(root / "meshes_val", 16, seed=1)
    write_toy_image_dataset(root / "images", 16, seed=2)
    rng = np.random.default_rng(0)
    os.makedirs(root / "body_models")
    for name, rows in (("J_regressor_h36m.npy", 17), ("J_regressor_24.npy", 24)):
        reg = rng.random((rows, NV)).astype(np.float32)
        np.save(root / "body_models" / name, reg / reg.sum(1, keepdims=True))
    return root


def _tokenizer_config(c, tiny):
    c.model = tiny_tokenizer_model(tiny / "conn")
    return c


@pytest.fixture(scope="module")
def tokenizer_run(tiny):
    c = quick(load_config("train_mesh_vqvae"), 40)
    c = _tokenizer_config(c, tiny)
    c.batch_size = 8
    c.optim.base_lr = 3e-3
    c.eval_every_steps = 40
    c.eval_batches = 2
    c.data.train = str(tiny / "meshes")
    c.data.val = str(tiny / "meshes_val")
    workdir = str(tiny / "run_tokenizer")
    out = train(c, workdir)
    return workdir, out


def test_mesh_vqvae_stage_trains(tokenizer_run):
    workdir, out = tokenizer_run
    records = [r for r in read_metrics(workdir) if "loss" in r]
    assert len(records) == 40
    v2v = [r["v2v_mm"] for r in records]
    assert all(np.isfinite(v2v)) and np.mean(v2v[-5:]) < 0.8 * np.mean(v2v[:5])
    assert all(r["loss"] == pytest.approx(r["v2v_mm"] / 1000 + r["vq_loss"], rel=1e-5) for r in records)
    val = [r for r in read_metrics(workdir) if "val/v2v_mm" in r]
    assert val and np.isfinite(val[-1]["val/v2v_mm"])
    # The EMA codebook moved (it is in the checkpointed model_state, not the optimizer's params).
    stats = out["state"]["model_state"]["vq_stats"]["quantizer"]
    assert float(np.abs(np.asarray(stats["ema_cluster_size"])).sum()) > 0


@pytest.fixture(scope="module")
def pretrain_run(tiny, tokenizer_run):
    c = quick(load_config("train_mega_pretrain"), 30)
    c.mega.update(seq_length=8, emb_dim=32, encoder_layer=1, decoder_layer=1, num_embeddings=16,
                  dim_tokens=16, visible_buckets=4)  # the default lengths: several programs
    c.tokenizer.path = tokenizer_run[0]
    c.batch_size = 16
    c.optim.update(base_lr=0.05, warmup_epochs=1.0, total_epochs=10.0)
    c.eval_every_steps = 30
    c.eval_batches = 1
    c.data.train = str(tiny / "meshes")
    c.data.val = str(tiny / "meshes_val")
    workdir = str(tiny / "run_pretrain")
    return workdir, train(c, workdir), c


def test_mega_pretrain_stage_trains(pretrain_run):
    workdir, _, config = pretrain_run
    records = [r for r in read_metrics(workdir) if "loss" in r]
    ce = [r["cross_entropy"] for r in records]
    assert len(ce) == 30 and all(np.isfinite(ce))
    # each step masked as many tokens as the stage drew on the host for it (seed, step)
    stage = get_stage(config)
    drawn = [1 - int(stage.step_draws(r["step"] - 1, config.seed).values["num_visible"]) / 8 for r in records]
    np.testing.assert_allclose([r["masked_ratio"] for r in records], drawn, atol=1e-6)
    assert len(set(drawn)) > 3  # the schedule varies the ratio from step to step
    assert np.mean(ce[-5:]) < np.mean(ce[:5])
    # lr: 1e-3-style scaling by batch / 256 and the per-epoch warm-up (4 steps per epoch).
    assert records[0]["lr"] == pytest.approx(0.05 * 16 / 256 * 1 / (1 + 1e-8), rel=1e-5)
    val = [r for r in read_metrics(workdir) if "val/token_accuracy" in r]
    assert val and 0.0 <= val[-1]["val/token_accuracy"] <= 1.0


@pytest.mark.slow
def test_mega_stage_trains_with_small_resnet(tiny, tokenizer_run, pretrain_run):
    c = quick(load_config("train_mega", "resnet"), 6)
    c.mega.update(seq_length=8, emb_dim=32, encoder_layer=1, decoder_layer=1, num_embeddings=16,
                  dim_tokens=16)
    c.backbone.model.layers = (1, 1, 1, 1)
    c.tokenizer.path = tokenizer_run[0]
    c.init.mega = pretrain_run[0]
    c.body_models = str(tiny / "body_models")
    c.num_vertices = NV
    c.batch_size = 4
    c.data.train = str(tiny / "images")
    c.data.val = str(tiny / "images")
    c.eval_every_steps = 6
    c.eval_batches = 1
    c.loss_weights.update(rotation=3.0, reprojection=0.5)
    workdir = str(tiny / "run_mega")
    out = train(c, workdir)
    val = [r for r in read_metrics(workdir) if "val/pve_mm" in r]
    assert val and np.isfinite(val[-1]["val/pa_mpjpe_mm"])
    assert os.listdir(os.path.join(workdir, "pictures"))   # predictions drawn over the images
    records = [r for r in read_metrics(workdir) if "loss" in r]
    assert len(records) == 6
    for key in ("cross_entropy", "rotation", "reprojection"):
        assert all(np.isfinite(r[key]) for r in records), key
    assert all(r["loss"] == pytest.approx(r["cross_entropy"] + 3.0 * r["rotation"] + 0.5 * r["reprojection"],
                                          rel=1e-5) for r in records)
    assert "batch_stats" in out["state"]["model_state"]


@pytest.mark.slow
def test_vqhps_stage_trains_with_small_resnet(tiny, tokenizer_run):
    np.save(tiny / "tpose.npy", np.zeros((NV, 3), np.float32) + np.linspace(0, 1, NV)[:, None])
    c = quick(load_config("train_vqhps", "resnet"), 4)
    c.vqhps.update(model_dim=32, num_heads=4, feedforward_dim=32, dict_size=16, num_tokens=8)
    c.backbone.model.layers = (1, 1, 1, 1)
    c.tokenizer.path = tokenizer_run[0]
    c.body_models = str(tiny / "body_models")
    c.num_vertices = NV
    c.tpose = str(tiny / "tpose.npy")
    c.batch_size = 4
    c.data.train = str(tiny / "images")
    workdir = str(tiny / "run_vqhps")
    train(c, workdir)
    records = read_metrics(workdir)
    assert len(records) == 4
    assert all(r["loss"] == pytest.approx(r["cross_entropy"] + r["rotation"] + r["reprojection"],
                                          rel=1e-5) for r in records)
    assert records[-1]["lr"] == pytest.approx(1e-4)


def test_codebook_init_from_data_uses_encoder_latents(tiny):
    import jax.numpy as jnp

    from hmr_jax.training.stages import get_stage

    c = _tokenizer_config(load_config("train_mesh_vqvae"), tiny)
    c.codebook_init = "data"
    stage = get_stage(c)
    vertices = jnp.asarray(np.random.default_rng(0).normal(scale=0.3, size=(4, NV, 3)), jnp.float32)
    variables = jax.jit(stage.init)(jax.random.key(0), {"vertices": vertices})
    q = variables.model_state["vq_stats"]["quantizer"]
    latents = stage.model.apply({"params": variables.params, **variables.model_state}, vertices,
                                method="encode_latent").reshape(-1, 4)
    codes = np.asarray(q["embedding"])
    dist = np.min(np.linalg.norm(codes[:, None] - np.asarray(latents)[None], axis=-1), axis=1)
    assert np.all(dist < 1e-5)                       # every code is one of the batch's latents
    assert np.array_equal(np.asarray(q["ema_w"]), codes)
    assert np.all(np.asarray(q["ema_cluster_size"]) == 1)
    c.codebook_init = "kmeans"
    with pytest.raises(ValueError, match="codebook_init"):
        jax.eval_shape(get_stage(c).init, jax.random.key(0), {"vertices": vertices})
