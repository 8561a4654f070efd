"""train.py's command line: config files with ``--config.key=value`` overrides, clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from helpers import REPO_ROOT

ROOT = str(REPO_ROOT)
TOY = os.path.join(ROOT, "configs", "train_toy.py")


def _run(*args, timeout=240):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_overrides_reach_the_run(tmp_path):
    proc = _run(f"--config={TOY}", f"--workdir={tmp_path}", "--config.total_steps=3",
                "--config.log_every_steps=1", "--config.optim.base_lr=0.01",
                "--config.optim.schedule=constant", "--config.batch_size=8",
                "--config.toy.width=8", "--config.progress_bar=False", "--config.eval_every_steps=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.load(open(tmp_path / "config.json"))
    assert saved["total_steps"] == 3 and saved["batch_size"] == 8
    assert saved["optim"]["base_lr"] == 0.01 and saved["toy"]["width"] == 8
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    records = [r for r in lines if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    val = [r for r in lines if "val/mse" in r]
    assert [r["step"] for r in val] == [3] and val[0]["val/mse"] > 0
    assert all(abs(r["lr"] - 0.01) < 1e-8 for r in records)
    assert records[0]["images_per_s"] / records[0]["steps_per_s"] == 8
    assert os.listdir(tmp_path / "tensorboard")  # event files
    assert "done at step 3" in proc.stdout


def test_unknown_key_and_missing_workdir_are_clear_errors(tmp_path):
    proc = _run(f"--config={TOY}", f"--workdir={tmp_path}", "--config.no_such_key=1")
    assert proc.returncode != 0 and "no_such_key" in proc.stderr
    proc = _run(f"--config={TOY}")
    assert proc.returncode != 0 and "workdir" in proc.stderr
    proc = _run(f"--config={TOY}", f"--workdir={tmp_path}", "--config.stage=nope")
    assert proc.returncode != 0 and "config.stage='nope' is unknown" in proc.stderr
