"""Training machinery on one device, in process: optimizers against PyTorch, losses against
independent PyTorch / numpy formulas, resume, corrupt-checkpoint fallback, NaN stop."""
from __future__ import annotations

import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.training import checkpointing, losses, optim
from hmr_jax.training.config import load_config
from hmr_jax.training.metric_writers import read_metrics
from hmr_jax.training.trainer import NonFiniteLossError, train

torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------------- optimizers
def _torch_run(opt_cls, kwargs, params, grads, lr_factors):
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    opt = opt_cls(tparams, **kwargs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factors[e])
    for g_step in grads:
        opt.zero_grad()
        for p, g in zip(tparams, g_step):
            p.grad = torch.tensor(g)
        opt.step()
        sched.step()
    return [p.detach().numpy() for p in tparams]


@pytest.mark.parametrize("name", ["mega", "mesh_vqvae", "vqhps"])
def test_optimizer_matches_torch(name):
    """Five steps of our optax optimizer equal torch's AdamW / Adam with the original settings
    (lr schedule advanced once per "epoch" = one step here)."""
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    grads = [[rng.normal(size=p.shape).astype(np.float32) for p in params] for _ in range(5)]
    cfg = load_config("train_toy").optim
    if name == "mega":   # AdamW, betas (0.9, 0.95), wd 0.05, lr 1e-3 * 16 / 256, warmup 2 / cosine 5
        cfg.update(name="adamw", base_lr=1e-3, b2=0.95, weight_decay=0.05, scale_by_batch=True,
                   schedule="warmup_cosine", warmup_epochs=2.0, total_epochs=5.0)
        factors = [min((e + 1) / (2 + 1e-8), 0.5 * (math.cos(e / 5 * math.pi) + 1)) for e in range(6)]
        ref = _torch_run(torch.optim.AdamW, dict(lr=1e-3 * 16 / 256, betas=(0.9, 0.95),
                                                 weight_decay=0.05), params, grads, factors)
    elif name == "mesh_vqvae":
        cfg.update(name="adam", base_lr=5e-5, schedule="constant")
        ref = _torch_run(torch.optim.Adam, dict(lr=5e-5), params, grads, [1.0] * 6)
    else:  # VQ-HPS: AdamW lr 1e-4 wd 1e-3, StepLR every 2 epochs here
        cfg.update(name="adamw", base_lr=1e-4, weight_decay=1e-3, schedule="step", step_epochs=2,
                   gamma=0.1)
        ref = _torch_run(torch.optim.AdamW, dict(lr=1e-4, weight_decay=1e-3), params, grads,
                         [0.1 ** (e // 2) for e in range(6)])
    tx, _ = optim.make_optimizer(cfg, global_batch_size=16, steps_per_epoch=1)
    p = [jnp.asarray(x) for x in params]
    state = tx.init(p)
    for g in grads:
        updates, state = tx.update([jnp.asarray(x) for x in g], state, p)
        p = [a + u for a, u in zip(p, updates)]
    for ours, theirs in zip(p, ref):
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=2e-5, atol=1e-7)


def test_warmup_cosine_is_per_epoch_and_scaled():
    sched = optim.warmup_cosine_schedule(optim.peak_learning_rate(1e-3, 512, True), 20, 200,
                                         steps_per_epoch=10)
    assert float(sched(0)) == pytest.approx(2e-3 / 20, rel=1e-6)
    assert float(sched(9)) == float(sched(0))          # constant within an epoch
    assert float(sched(10)) == pytest.approx(2e-3 * 2 / 20, rel=1e-6)
    assert float(sched(100 * 10)) == pytest.approx(2e-3 * 0.5, rel=1e-5)
    with pytest.raises(ValueError, match="schedule"):
        cfg = load_config("train_toy").optim
        cfg.schedule = "linear"
        optim.make_optimizer(cfg, 16, 1)


# ----------------------------------------------------------------------------- losses
def test_masked_cross_entropy_matches_torch_masked_select():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 7, 11)).astype(np.float32)
    labels = rng.integers(0, 11, size=(3, 7))
    mask = rng.random((3, 7)) < 0.4
    ours, valid = losses.masked_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
    flat = torch.tensor(logits).flatten(0, 1)[torch.tensor(mask).flatten()]
    ref = torch.nn.functional.cross_entropy(flat, torch.tensor(labels).flatten()[torch.tensor(mask).flatten()])
    assert bool(valid)
    np.testing.assert_allclose(float(ours), ref.item(), rtol=1e-6)
    empty, valid = losses.masked_cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                               jnp.zeros((3, 7), bool))
    assert float(empty) == 0.0 and not bool(valid)
    np.testing.assert_allclose(float(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels))),
                               torch.nn.functional.cross_entropy(torch.tensor(logits).flatten(0, 1),
                                                                 torch.tensor(labels).flatten()).item(),
                               rtol=1e-6)


def test_rotation_and_reprojection_losses():
    rng = np.random.default_rng(2)
    b, v = 4, 30
    rot6d = rng.normal(size=(b, 6)).astype(np.float32)
    aa = rng.normal(size=(b, 3)).astype(np.float32)
    # Independent reference: Gram-Schmidt 6D (pytorch3d convention) and Rodrigues in numpy.
    a1, a2 = rot6d[:, :3], rot6d[:, 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - np.sum(b1 * a2, -1, keepdims=True) * b1
    b2 /= np.linalg.norm(b2, axis=-1, keepdims=True)
    r_pred = np.stack([b1, b2, np.cross(b1, b2)], axis=-2)
    theta = np.linalg.norm(aa, axis=-1)[:, None, None]
    k = aa / np.linalg.norm(aa, axis=-1, keepdims=True)
    kx = np.zeros((b, 3, 3), np.float32)
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx = kx - kx.transpose(0, 2, 1)
    r_gt = np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx
    np.testing.assert_allclose(float(losses.rotation_loss(jnp.asarray(rot6d), jnp.asarray(aa))),
                               np.mean((r_pred - r_gt) ** 2), rtol=1e-5)

    verts = rng.normal(size=(b, v, 3)).astype(np.float32)
    cam = rng.normal(size=(b, 3)).astype(np.float32)
    reg17 = rng.random((17, v)).astype(np.float32)
    reg24 = rng.random((24, v)).astype(np.float32)
    j2d = rng.normal(size=(b, 24, 3)).astype(np.float32)
    j2d[..., 2] = rng.random((b, 24))
    is_3dpw = np.array([True, False, False, True])

    def proj(reg, order=None):
        j = np.einsum("jv,bvc->bjc", reg, verts)
        if order is not None:
            j = j[:, list(order)]
        return cam[:, None, :1] * (j[..., :2] + cam[:, None, 1:])

    ref_24 = np.mean(np.abs(proj(reg24)[is_3dpw] - j2d[is_3dpw, :, :2]))
    p17 = proj(reg17, losses.H36M_TO_J17)[~is_3dpw]
    ref_17 = np.mean(np.mean(np.abs(p17 - j2d[~is_3dpw, :17, :2]), -1) * j2d[~is_3dpw, :17, 2])
    ours = losses.mixed_reprojection_loss(jnp.asarray(j2d), jnp.asarray(is_3dpw), jnp.asarray(verts),
                                          jnp.asarray(cam), jnp.asarray(reg24), jnp.asarray(reg17))
    np.testing.assert_allclose(float(ours), ref_24 + ref_17, rtol=1e-5)
    only17 = losses.mixed_reprojection_loss(jnp.asarray(j2d), jnp.zeros(b, bool), jnp.asarray(verts),
                                            jnp.asarray(cam), jnp.asarray(reg24), jnp.asarray(reg17))
    ref_all17 = np.mean(np.mean(np.abs(proj(reg17, losses.H36M_TO_J17) - j2d[:, :17, :2]), -1) * j2d[:, :17, 2])
    np.testing.assert_allclose(float(only17), ref_all17, rtol=1e-5)


def test_vertex_error_centres_prediction_only():
    gt = np.random.default_rng(3).normal(size=(2, 50, 3)).astype(np.float32)
    shifted = gt + np.array([1.0, -2.0, 0.5], np.float32)
    gt_c = gt - gt.mean(1, keepdims=True)
    assert float(losses.vertex_error(jnp.asarray(gt_c), jnp.asarray(shifted))) < 1e-6
    assert float(losses.vertex_error(jnp.asarray(gt), jnp.asarray(shifted))) > 1e-3


# ----------------------------------------------------------------------------- the loop
def _toy(**overrides):
    c = load_config("train_toy")
    c.progress_bar = False
    c.tensorboard = False
    c.log_every_steps = 1
    c.checkpoint.every_steps = 5
    c.total_steps = 15
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("full"))
    out = train(_toy(), workdir)
    return workdir, out


def test_train_logs_every_step_and_keeps_last_checkpoints(uninterrupted):
    workdir, out = uninterrupted
    records = read_metrics(workdir)
    assert [r["step"] for r in records] == list(range(1, 16))
    for key in ("loss", "mse", "l2", "lr", "steps_per_s", "images_per_s"):
        assert all(math.isfinite(r[key]) for r in records), key
    assert records[-1]["loss"] < records[0]["loss"]
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=5)
    assert ckpt.all_steps() == [5, 10, 15]
    ckpt.close()
    assert out["step"] == 15 and out["resumed_from"] is None


def test_resume_continues_the_same_loss_sequence(uninterrupted, tmp_path):
    full_dir, _ = uninterrupted
    workdir = str(tmp_path)
    train(_toy(total_steps=7), workdir)       # checkpoint at 5, logged up to 7
    out = train(_toy(), workdir)
    assert out["resumed_from"] == 7
    ours = [(r["step"], r["loss"]) for r in read_metrics(workdir)]
    ref = [(r["step"], r["loss"]) for r in read_metrics(full_dir)]
    assert ours == ref


def test_corrupt_latest_checkpoint_falls_back(uninterrupted, tmp_path, caplog):
    import shutil
    workdir = str(tmp_path)
    shutil.copytree(os.path.join(uninterrupted[0], "checkpoints"), os.path.join(workdir, "checkpoints"))
    # Corrupt step 15: truncate every array data file of its state item.
    state_dir = os.path.join(workdir, "checkpoints", "15", "state")
    hit = 0
    for root, _, files in os.walk(state_dir):
        for name in files:
            path = os.path.join(root, name)
            if name != "commit_success.txt":
                with open(path, "wb") as f:
                    f.write(b"garbage")
                hit += 1
    assert hit
    with caplog.at_level("WARNING"):
        out = train(_toy(total_steps=15), workdir)
    assert out["resumed_from"] == 10
    assert "falling back" in caplog.text
    assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "15"))
    ref = {r["step"]: r["loss"] for r in read_metrics(uninterrupted[0])}
    assert all(ref[r["step"]] == r["loss"] for r in read_metrics(workdir))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = _toy(total_steps=20)
    cfg.toy.nan_at_step = 7        # the 8th step
    with pytest.raises(NonFiniteLossError, match=r"step 8.*last good checkpoint is step 5"):
        train(cfg, str(tmp_path))
    ckpt = checkpointing.Checkpointer(os.path.join(str(tmp_path), "checkpoints"), save_every=5)
    assert ckpt.latest_step() == 5
    ckpt.close()
    steps = [r["step"] for r in read_metrics(str(tmp_path))]
    assert steps == list(range(1, 8))  # nothing logged from the bad step on
