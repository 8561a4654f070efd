"""Training across devices and processes, and interruption: 1 vs 8 simulated devices give the
same parameters; two ``jax.distributed`` processes train on one globally sharded batch; a run
killed with SIGTERM / SIGKILL and restarted reproduces the uninterrupted loss sequence."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import REPO_ROOT

ROOT = str(REPO_ROOT)
PY = sys.executable
TOY = os.path.join(ROOT, "configs", "train_toy.py")
QUIET = ["--config.progress_bar=False", "--config.tensorboard=False"]


def _env(**extra):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(r["step"], r["loss"]) for r in map(json.loads, f)]


# 1 device vs 8 devices ------------------------------------------------------------------------
EQUALITY_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    from hmr_jax.training.config import load_config
    from hmr_jax.training.trainer import train
    assert jax.device_count() == 8, jax.devices()
    out = {}
    for name, n, sharding in (("d1", 1, "replicated"), ("d8", 8, "replicated"), ("fsdp8", 8, "fsdp")):
        c = load_config("train_toy")
        c.update(num_devices=n, total_steps=12, log_every_steps=4, progress_bar=False, tensorboard=False)
        c.checkpoint.every_steps = 100
        c.sharding.params = sharding
        c.sharding.min_size = 64
        c.toy.width = 64
        res = train(c, sys.argv[2] + "/" + name)
        leaves = jax.tree.leaves({"p": res["state"]["params"], "s": res["state"]["model_state"]})
        for i, x in enumerate(leaves):
            out[f"{name}_{i}"] = np.asarray(jax.device_get(x))
        out[f"{name}_nshards"] = np.array(max(len(x.sharding.device_set) for x in leaves))
        out[f"{name}_sharded"] = np.array(sum(not x.sharding.is_fully_replicated for x in leaves))
    np.savez(sys.argv[2] + "/params.npz", **out)
""")


def test_one_and_eight_devices_give_the_same_parameters(tmp_path):
    """Tolerance: |a - b| <= 1e-5 + 1e-4 |b| after 12 AdamW steps (only the order of float32
    reductions differs: batch sums are split over 8 devices and all-reduced)."""
    proc = subprocess.run([PY, "-c", EQUALITY_SCRIPT, ROOT, str(tmp_path)], capture_output=True,
                          text=True, timeout=300,
                          env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "params.npz")
    names = sorted(k[3:] for k in got.files if k.startswith("d1_") and k[3:].isdigit())
    assert len(names) >= 5
    for k in names:
        np.testing.assert_allclose(got["d8_" + k], got["d1_" + k], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["fsdp8_" + k], got["d1_" + k], rtol=1e-4, atol=1e-5)
    # The runs really used 1 and 8 devices, and fsdp split some parameters.
    assert int(got["d1_nshards"]) == 1 and int(got["d8_nshards"]) == 8
    assert int(got["d8_sharded"]) == 0 and int(got["fsdp8_sharded"]) > 0
    # Training moved the parameters (the comparison is not between two initialisations).
    l1 = _losses(str(tmp_path / "d1"))
    assert l1[-1][1] < l1[0][1]
    np.testing.assert_allclose([v for _, v in _losses(str(tmp_path / "d8"))], [v for _, v in l1],
                               rtol=1e-4)


# two processes ----------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_distributed_training(tmp_path):
    """Two processes (one CPU device each) form a 2-device mesh; each loads half of every
    global batch. The loss sequence equals a single-process run of the same global batches."""
    port = _free_port()
    workdir = str(tmp_path / "dist")
    common = [PY, os.path.join(ROOT, "train.py"), f"--config={TOY}", f"--workdir={workdir}",
              "--config.total_steps=6", "--config.log_every_steps=1",
              "--config.checkpoint.every_steps=3", "--config.toy.width=16",
              f"--config.distributed.coordinator_address=127.0.0.1:{port}",
              "--config.distributed.num_processes=2", *QUIET]
    procs = [subprocess.Popen(common + [f"--config.distributed.process_id={i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=_env(), start_new_session=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert os.path.exists(os.path.join(workdir, "checkpoints", "6", "data", "process_1-of-2.json"))
    single = str(tmp_path / "single")
    proc = subprocess.run([PY, os.path.join(ROOT, "train.py"), f"--config={TOY}", f"--workdir={single}",
                           "--config.total_steps=6", "--config.log_every_steps=1",
                           "--config.checkpoint.every_steps=3", "--config.toy.width=16", *QUIET],
                          capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist, ref = _losses(workdir), _losses(single)
    assert [s for s, _ in dist] == list(range(1, 7))
    np.testing.assert_allclose([v for _, v in dist], [v for _, v in ref], rtol=1e-5)


# interruption -----------------------------------------------------------------------------
def _start(workdir, total):
    cmd = [PY, os.path.join(ROOT, "train.py"), f"--config={TOY}", f"--workdir={workdir}",
           f"--config.total_steps={total}", "--config.log_every_steps=1",
           "--config.checkpoint.every_steps=4", *QUIET]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), start_new_session=True)


def _wait_for_steps(proc, workdir, n, timeout=180):
    path = os.path.join(workdir, "metrics.jsonl")
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError("finished before it could be interrupted:\n" + proc.stdout.read()[-2000:])
        if os.path.exists(path):
            with open(path) as f:
                if sum(1 for _ in f) >= n:
                    return
        time.sleep(0.05)
    raise AssertionError("training did not start in time")


@pytest.mark.slow
def test_sigterm_then_sigkill_then_resume_reproduces_the_loss_sequence(tmp_path):
    total = 60
    ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "run")
    ref = _start(ref_dir, total)
    out = ref.communicate(timeout=300)[0]
    assert ref.returncode == 0, out[-3000:]

    # 1) SIGTERM (preemption): saves the step it reached and exits cleanly.
    proc = _start(run_dir, total)
    _wait_for_steps(proc, run_dir, 6)
    os.killpg(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "preempted, checkpoint saved at step" in out
    preempted_at = int(out.split("checkpoint saved at step ")[1].split(";")[0])
    assert os.path.isdir(os.path.join(run_dir, "checkpoints", str(preempted_at)))

    # 2) SIGKILL of the whole process group at an arbitrary later moment.
    proc = _start(run_dir, total)
    _wait_for_steps(proc, run_dir, preempted_at + 11)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)

    # 3) Restart: finishes, and every step's loss equals the uninterrupted run's, exactly.
    proc = _start(run_dir, total)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "Resumed from step" in out
    assert _losses(run_dir) == _losses(ref_dir)
