"""What we guarantee when things go wrong around a run (README "What we guarantee"):

* one writer per workdir: a second ``train.py`` stops at once naming the live one, a lock left
  by a killed process is taken over; evaluations writing to one folder take turns;
* a full disk (a small tmpfs) while saving a checkpoint, metrics, a dataset or a converted
  checkpoint stops with ``DiskFullError`` and leaves the previous good state loadable;
* corrupt or mismatched data is named (shard file and record index), or skipped and counted;
* a resumed workdir whose checkpoint has other model shapes fails before training.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax import files
from hmr_jax.data import records, shards
from hmr_jax.testing import toy_data as toy
from hmr_jax.data.pipeline import image_pipeline, mesh_pipeline
from hmr_jax.training import checkpointing
from hmr_jax.training.config import load_config
from hmr_jax.training.metric_writers import read_metrics
from hmr_jax.training.stages import LossOutput, Stage, Variables
from hmr_jax.training.trainer import train
from helpers import REPO_ROOT
from helpers.stages import quick

ROOT = REPO_ROOT
TOY = ROOT / "configs" / "train_toy.py"


def _toy(**overrides):
    """The toy stage: 5 quiet steps, logged each, checkpointed every 5 (``overrides`` on top)."""
    c = quick(load_config("train_toy"), 5)
    c.update(overrides)
    return c


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    return env


def _snapshot(folder: pathlib.Path, skip=(".lock",)) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.name not in skip}


# ----------------------------------------------------------------------------- one writer per workdir
_HOLD = """
import sys, time
from hmr_jax.files import folder_lock
with folder_lock(sys.argv[1], "holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@contextlib.contextmanager
def _holder(folder, seconds=60.0):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE,
                            text=True, env=_env(), start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_lock_held_by_a_live_process_is_refused_and_a_killed_ones_taken_over(tmp_path):
    with _holder(tmp_path) as proc:
        with pytest.raises(files.LockHeldError, match=rf"pid {proc.pid} on host {socket.gethostname()}"):
            with files.folder_lock(tmp_path, "second"):
                pass
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        with files.folder_lock(tmp_path, "second"):  # the kernel dropped the flock: taken over
            assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_stale_lock_rules_for_this_host_and_another(tmp_path, caplog):
    lock = tmp_path / ".lock"
    # this host, a pid that does not exist: stale
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2 ** 22 + 12345, "what": "train.py"}))
    with caplog.at_level("WARNING"):
        with files.folder_lock(tmp_path):
            pass
    assert "Taking over the stale lock" in caplog.text
    # another host (a shared filesystem flock may not reach): live while its heartbeat is fresh
    lock.write_text(json.dumps({"host": "node-17", "pid": 4242, "what": "train.py"}))
    with pytest.raises(files.LockHeldError, match="pid 4242 on host node-17"):
        with files.folder_lock(tmp_path):
            pass
    old = time.time() - files.LOCK_STALE_AFTER_S - 5
    os.utime(lock, (old, old))
    with files.folder_lock(tmp_path):
        assert json.loads(lock.read_text())["host"] == socket.gethostname()
    assert lock.read_text() == ""  # released


def test_lock_waits_for_the_holder_when_asked(tmp_path):
    with _holder(tmp_path, seconds=1.5):
        start = time.monotonic()
        with files.folder_lock(tmp_path, wait_s=30):
            assert time.monotonic() - start > 0.5


def test_second_train_py_on_a_live_workdir_stops_at_once(tmp_path):
    """Two real train.py processes: the second one names the first and touches nothing; after a
    SIGKILL of the first, a new run takes the stale lock over and resumes."""
    workdir = tmp_path / "run"
    common = [sys.executable, str(ROOT / "train.py"), f"--config={TOY}", f"--workdir={workdir}",
              "--config.progress_bar=False", "--config.tensorboard=False"]
    first = subprocess.Popen(common + ["--config.total_steps=100000000", "--config.log_every_steps=1000000000",
                                       "--config.checkpoint.every_steps=1000000000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (workdir / "checkpoints").is_dir() or not (workdir / "config.json").is_file():
            assert first.poll() is None, first.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.2)
        time.sleep(1.0)
        before = _snapshot(workdir)
        second = subprocess.run(common + ["--config.total_steps=3"], capture_output=True, text=True, env=_env(),
                                timeout=240)
        assert second.returncode == 2
        lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-2000:]
        assert f"pid {first.pid} on host {socket.gethostname()}" in errors[0] and "train.py" in errors[0]
        assert _snapshot(workdir) == before  # nothing touched (the holder's heartbeat aside)
        assert first.poll() is None  # the first run goes on
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    third = subprocess.run(common + ["--config.total_steps=3", "--config.log_every_steps=1"], capture_output=True,
                           text=True, env=_env(), timeout=240)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "Taking over the stale lock" in third.stderr and f"pid {first.pid}" in third.stderr
    assert [r["step"] for r in read_metrics(str(workdir))] == [1, 2, 3]


def test_evaluations_writing_to_one_folder_take_turns(tmp_path, monkeypatch):
    """A second writer waits for the lock: summary.json and per_image.csv come from one run."""
    from hmr_jax import evaluation

    split = tmp_path / "split"
    toy.write_toy_image_dataset(split, 4, seed=3)
    (tmp_path / "bm").mkdir()
    np.save(tmp_path / "bm" / "J_regressor_h36m.npy", np.full((17, 24), 1 / 24, np.float32))
    out = tmp_path / "eval"
    mesh = np.random.default_rng(0).normal(scale=0.2, size=(24, 3)).astype(np.float32)
    release = threading.Event()
    holding = threading.Event()

    def hold():
        with files.folder_lock(out, "other evaluation"):
            holding.set()
            release.wait(30)
            files.atomic_write(out / "summary.json", '{"other": true}')

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)
    threading.Timer(1.0, release.set).start()
    summary = evaluation.evaluate(evaluation.mean_mesh_predictor(mesh), str(split), str(out), str(tmp_path / "bm"),
                                  batch_size=2, progress=False)
    t.join()
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert len((out / "per_image.csv").read_text().splitlines()) == 5


# ----------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root can mount one; elsewhere there is no honest way to fill a disk)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()}); run as root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: pathlib.Path, leave: int = 0) -> pathlib.Path:
    """Fill ``disk`` up, then free ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    size = filler.stat().st_size
    os.truncate(filler, max(size - leave, 0))
    return filler


def test_full_disk_at_checkpoint_stops_and_keeps_the_last_one(small_disk):
    workdir = str(small_disk / "run")
    cfg = dict(log_every_steps=1000, toy={"width": 2048, "nan_at_step": -1})
    train(_toy(**cfg), workdir)  # a complete checkpoint at step 5
    filler = _fill(small_disk, leave=48 << 10)  # room for the lock and config.json, not a checkpoint
    with pytest.raises(checkpointing.CheckpointDiskFullError, match="last complete checkpoint is step 5") as info:
        train(_toy(total_steps=15, **cfg), workdir)
    assert "free some space" in str(info.value).lower() and workdir in str(info.value)
    filler.unlink()
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=5)
    assert ckpt.all_steps() == [5]
    ckpt.close()
    out = train(_toy(total_steps=15, **cfg), workdir)  # the previous state loads and training goes on
    assert out["resumed_from"] == 5 and out["step"] == 15


def test_full_disk_at_metrics_keeps_whole_lines(small_disk):
    workdir = str(small_disk / "run")
    train(_toy(), workdir)
    _fill(small_disk, leave=0)
    with pytest.raises(files.DiskFullError, match="metrics"):
        train(_toy(total_steps=8), workdir)
    assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3, 4, 5]  # every line whole


def test_full_disk_while_writing_a_dataset_keeps_the_old_one(small_disk):
    folder = small_disk / "ds"
    toy.write_toy_image_dataset(folder, 4)
    before = _snapshot(folder)
    rng = np.random.default_rng(0)
    with pytest.raises(files.DiskFullError, match="dataset"):
        shards.write_dataset(folder, "image", (toy.toy_image_record(rng) for _ in range(20000)), overwrite=True)
    assert _snapshot(folder) == before
    assert len(shards.open_dataset(folder, verify_checksums=True)) == 4


def test_full_disk_while_writing_a_converted_checkpoint_keeps_the_old_one(small_disk):
    from hmr_jax.conversion.common import read_converted, write_converted

    out = small_disk / "converted"
    small = {"params": {"w": np.ones((4, 4), np.float32)}}
    write_converted(out, small, {"model": "x"}, {"source": "a"})
    big = {"params": {"w": np.random.default_rng(0).normal(size=(2048, 1024)).astype(np.float32)}}  # 8 MiB
    with pytest.raises(files.DiskFullError, match="converted"):
        write_converted(out, big, {"model": "x"}, {"source": "b"}, overwrite=True)
    variables, config = read_converted(out)
    np.testing.assert_array_equal(np.asarray(variables["params"]["w"]), small["params"]["w"])
    assert sorted(p.name for p in small_disk.iterdir()) == ["converted"]


# ----------------------------------------------------------------------------- corrupt data
def _two_datasets(tmp_path):
    good = tmp_path / "good"
    toy.write_toy_image_dataset(good, 6, records_per_shard=3)
    return good


def _replace_shard(dataset: pathlib.Path, shard: str, source: pathlib.Path):
    """Put ``source``'s shard file in place of ``dataset``'s, updating the manifest's size and
    checksum so that only the records themselves disagree."""
    (dataset / shard).write_bytes((source / shard).read_bytes())
    manifest = json.loads((dataset / "manifest.json").read_text())
    for s in manifest["shards"]:
        if s["file"] == shard:
            s["bytes"] = (dataset / shard).stat().st_size
            s["sha256"] = shards._sha256(dataset / shard)
    (dataset / "manifest.json").write_text(json.dumps(manifest))


def _iterate(dataset, **kwargs):
    return list(image_pipeline(str(dataset), batch_size=2, train=False, shard_index=0, shard_count=1, **kwargs))


def test_record_of_another_vertex_count_is_named(tmp_path):
    good = _two_datasets(tmp_path)
    other = tmp_path / "other"
    rng = np.random.default_rng(0)
    recs = []
    for _ in range(6):
        r = toy.toy_image_record(rng)
        r["vertices"], r["vertices_flipped"] = r["vertices"][:20], r["vertices_flipped"][:20]
        recs.append(r)
    shards.write_dataset(other, "image", recs, records_per_shard=3)
    _replace_shard(good, "data-00001.array_record", other)
    with pytest.raises(shards.DatasetError, match=r"data-00001.array_record record 0 \(record 3 of .*num_vertices 20 "
                                                  r"\(manifest: 24\)"):
        _iterate(good)
    batches = _iterate(good, skip_bad_records=True)  # skipped and counted instead
    assert sum(int(b["skipped_records"].sum()) for b in batches) == 3
    assert sum(len(b["skipped_records"]) for b in batches) == 6


def test_corrupt_jpeg_and_corrupt_bytes_are_named(tmp_path):
    good = _two_datasets(tmp_path)
    bad = tmp_path / "bad"
    rng = np.random.default_rng(1)
    recs = [toy.toy_image_record(rng) for _ in range(6)]
    recs[4]["image_jpeg"] = b"\xff\xd8" + b"\x00" * 64  # starts like a JPEG, is not one
    shards.write_dataset(bad, "image", recs, records_per_shard=3)
    _replace_shard(good, "data-00001.array_record", bad)
    with pytest.raises(shards.DatasetError, match=r"data-00001.array_record record 1 .*not a readable JPEG"):
        _iterate(good)
    # a record whose bytes are damaged inside the shard (same length: the manifest's size passes)
    again = _two_datasets(tmp_path / "again")
    src = shards.open_dataset(again).data_source()
    payload = src[2]
    path = again / "data-00000.array_record"
    data = path.read_bytes()
    at = data.find(payload[:64])
    assert at > 0
    path.write_bytes(data[:at + 10] + b"\xc1" * 40 + data[at + 50:])
    with pytest.raises(shards.DatasetError, match=r"data-00000.array_record record 2"):
        _iterate(again)


def test_manifest_that_disagrees_with_its_shards_is_named(tmp_path):
    good = _two_datasets(tmp_path)
    manifest = json.loads((good / "manifest.json").read_text())
    manifest["shards"][0]["num_records"], manifest["shards"][1]["num_records"] = 4, 2  # same total
    (good / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(shards.DatasetError, match=r"data-00000.array_record holds 3 records, manifest.json says 4"):
        _iterate(good)
    with pytest.raises(shards.DatasetError, match="data-00000.array_record holds 3 records"):
        list(mesh_pipeline(str(good), batch_size=2, train=False, shard_index=0, shard_count=1))


def test_bad_records_are_rejected_by_default_and_counted_when_skipped():
    from hmr_jax.training.config import base_config

    assert base_config().data.skip_bad_records is False
    with pytest.raises(records.RecordError, match="num_vertices 24 \\(manifest: 30\\)"):
        records.read_record(records.encode_record(toy.toy_image_record(np.random.default_rng(0)), "image"), "image",
                            {"num_vertices": 30})


# ----------------------------------------------------------------------------- config drift
def test_resume_with_other_model_shapes_fails_before_training(tmp_path):
    workdir = str(tmp_path)
    train(_toy(toy={"width": 8, "nan_at_step": -1}), workdir)
    before = _snapshot(tmp_path)
    with pytest.raises(checkpointing.CheckpointMismatchError) as info:
        train(_toy(total_steps=10, toy={"width": 16, "nan_at_step": -1}), workdir)
    message = str(info.value)
    assert "step 5" in message and "params/BatchNorm_0/bias has shape (8,) in the checkpoint and (16,) in this " \
                                  "config" in message, message  # the first differing parameter, in tree order
    assert _snapshot(tmp_path) == before  # no step ran, nothing written or moved (config.json included)
    assert not (tmp_path / "corrupt_checkpoints").exists()


class MeshMeanStage(Stage):
    """A minimal stage on a mesh dataset (``config.data.train``): fits one number to the mean of
    the vertices, through the real Grain pipeline (so bad records reach the trainer)."""

    name = "mesh_mean"

    def train_pipeline(self, local_batch, seed):
        return mesh_pipeline(self.config.data.train, batch_size=local_batch, train=True, seed=seed,
                             shard_index=0, shard_count=1,
                             skip_bad_records=self.config.data.skip_bad_records), 1

    def val_batches(self, local_batch):
        return None

    def init(self, rng, batch):
        return Variables(params={"m": jnp.zeros(())}, model_state={})

    def loss(self, params, model_state, frozen, batch, rng, step, draws):
        loss = jnp.mean((batch["vertices"] - params["m"]) ** 2)
        return loss, LossOutput(terms={}, model_state={})

    def validate(self, params, model_state, frozen, batch):
        return {}


def test_skipped_records_are_counted_in_the_metrics(tmp_path, monkeypatch):
    from hmr_jax.training import stages

    data = tmp_path / "meshes"
    toy.write_toy_mesh_dataset(data, 8, num_vertices=24, records_per_shard=4)
    other = tmp_path / "other"
    toy.write_toy_mesh_dataset(other, 8, num_vertices=20, records_per_shard=4)
    _replace_shard(data, "data-00001.array_record", other)  # records 4..7 have 20 vertices
    monkeypatch.setitem(stages.STAGES, "mesh_mean", MeshMeanStage)
    cfg = _toy(stage="mesh_mean", batch_size=8, total_steps=2, log_every_steps=1)
    with cfg.unlocked():
        cfg.data.train = str(data)
    with pytest.raises(shards.DatasetError, match=r"data-00001.array_record record \d .*num_vertices 20"):
        train(cfg, str(tmp_path / "strict"))  # off by default: the bad record stops training, named
    cfg.data.skip_bad_records = True
    train(cfg, str(tmp_path / "skip"))
    counts = [r["skipped_records"] for r in read_metrics(str(tmp_path / "skip"))]
    assert counts == [4, 4]  # each pass over the 8 records meets the 4 bad ones once


def test_command_lines_print_one_error_line(tmp_path):
    """Bad input at each command line: exit status 2 and exactly one ``error:`` line, no traceback."""
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"PK\x03\x04 not really a checkpoint")
    runs = {
        "train.py": ([str(ROOT / "train.py"), f"--config={TOY}", f"--workdir={tmp_path / 'w'}",
                      "--config.stage=nope"], "config.stage='nope' is unknown"),
        "evaluate.py": ([str(ROOT / "evaluate.py"), f"--split={tmp_path / 'nowhere'}", "--mode=mean_mesh",
                         f"--mean-mesh={tmp_path / 'm.npy'}"], "neither a folder"),
        "convert_torch_weights.py": ([str(ROOT / "convert_torch_weights.py"), str(garbage), "--out",
                                      str(tmp_path / "c")], "model.pt"),
        "data_prep.threedpw": (["-m", "data_prep.threedpw", "--root", str(tmp_path), "--out", str(tmp_path / "d")],
                               "sequenceFiles"),
    }
    procs = {name: subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=_env(), cwd=ROOT) for name, (args, _) in runs.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=240)
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, (name, err[-2000:])
        assert runs[name][1] in lines[0], (name, lines[0])
    assert not (tmp_path / "c").exists() and not (tmp_path / "d" / "manifest.json").exists()
