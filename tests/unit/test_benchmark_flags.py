"""Every benchmark script reads absl flags (hmr_jax.cli.parse_command): ``--help`` lists its flags
and exits 0; a bad flag is ONE ``error:`` line on stderr, nothing on stdout (where the JSON line
goes), exit status 2. No benchmark work runs: each case stops while parsing."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
#: Each script and one of its own flags that ``--help`` must list.
SCRIPTS = {
    "bench_backbones.py": "--backbones",
    "bench_body.py": "--body-model",
    "bench_conv_grad.py": "--batches",
    "bench_devices.py": "--workloads",
    "bench_inference.py": "--flops-only",
    "bench_input.py": "--workers",
    "bench_mesh_vqvae.py": "--connections",
    "bench_smoothing.py": "--seeds",
    "bench_train.py": "--scaling-stage",
}


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HMR_JAX_TRACEBACK"}
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_every_benchmark_script_is_listed():
    assert sorted(p.name for p in BENCHMARKS.glob("bench_*.py")) == sorted(SCRIPTS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_lists_the_flags_and_exits_0(script):
    proc = _run(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Flags:" in proc.stdout and SCRIPTS[script] in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_unknown_flag_is_one_error_line_status_2(script):
    line = _one_error_line(_run(script, "--no-such-flag=1"))
    assert "no-such-flag" in line and "--help" in line


@pytest.mark.parametrize("script, args, says", [
    ("bench_input.py", ["--workers=0,x"], "--workers"),         # a comma list of ints
    ("bench_input.py", ["--workers", "0", "1"], "unexpected argument"),   # the old nargs="+" form
    ("bench_input.py", ["--backbone=foo"], "hrnet|resnet|vit"),  # an enum
    ("bench_smoothing.py", ["--seeds=x"], "--seeds"),            # an integer
    ("bench_devices.py", ["--devices=1"], "--devices"),          # checked before any worker starts
    ("bench_backbones.py", ["--batches=0"], "--batches"),        # _common.parse_ints
])
def test_bad_value_is_one_error_line_status_2(script, args, says):
    assert says in _one_error_line(_run(script, *args))
