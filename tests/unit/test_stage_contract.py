"""The stage contract (hmr_jax.training.stages.base.Stage) and the one multi-host data rule."""
from __future__ import annotations

import ast
import inspect
import os

import numpy as np
import pytest

from hmr_jax.data.pipeline import example_pipeline, image_pipeline, mesh_pipeline
from hmr_jax.training.stages import STAGES, Stage, get_stage
from hmr_jax.training.stages.base import Stage as BaseStage
from helpers import REPO_ROOT

ROOT = str(REPO_ROOT)
CONTRACT = ("train_pipeline", "val_batches", "frozen", "init", "load_pretrained", "loss", "validate", "predict")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_registered_stage_implements_the_contract(name):
    cls = STAGES[name]
    assert issubclass(cls, BaseStage) and cls.name == name
    assert not cls.__abstractmethods__, f"{name} leaves {sorted(cls.__abstractmethods__)} unimplemented"
    for method in CONTRACT:
        ours, base = inspect.signature(getattr(cls, method)), inspect.signature(getattr(BaseStage, method))
        assert list(ours.parameters) == list(base.parameters), (name, method, ours, base)
    # an image stage (a backbone crop) predicts meshes for the pictures; the others read no images
    image_stage = isinstance(inspect.getattr_static(cls, "backbone"), property)
    assert image_stage == (cls.predict is not BaseStage.predict), name
    assert image_stage == (name in ("mega", "vqhps"))


def test_the_contract_is_complete_and_abstract():
    assert Stage is BaseStage
    with pytest.raises(TypeError, match="abstract"):
        BaseStage(None)  # noqa: the base alone is no stage

    class Partial(BaseStage):
        name = "partial"

        def train_pipeline(self, local_batch, seed):
            return [], 1

    with pytest.raises(TypeError, match="val_batches"):
        Partial(None)
    with pytest.raises(ValueError, match="unknown; choose one of"):
        get_stage(type("C", (), {"stage": "nope"})())


def test_trainer_and_pictures_call_the_contract_not_hasattr():
    """No dispatch on what a stage happens to define: every call is a method of the contract."""
    for rel in ("hmr_jax/training/trainer.py", "hmr_jax/training/pictures.py"):
        tree = ast.parse(open(os.path.join(ROOT, rel)).read())
        lookups = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                   and n.func.id in ("hasattr", "getattr") and isinstance(n.args[0], ast.Name)
                   and n.args[0].id == "stage"]
        assert not lookups, (rel, [n.lineno for n in lookups])
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name) and n.value.id == "stage"}
        assert used <= set(CONTRACT) | {"config", "backbone", "name"}, (rel, used)


# ----------------------------------------------------------------------------- the multi-host rule
def _shares_equal_the_single_process_batches(make, n=2, batches=3):
    """Process i's batch k is rows [iB, (i+1)B) of the one-process batch k of size nB."""
    single = iter(make(batch_size=n * 4, shard_index=0, shard_count=1))
    shares = [iter(make(batch_size=4, shard_index=i, shard_count=n)) for i in range(n)]
    for _ in range(batches):
        whole = next(single)
        parts = [next(s) for s in shares]
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key], err_msg=key)


def test_example_pipeline_training_shares_tile_the_global_batches():
    examples = [{"x": np.full((2,), i, np.float32)} for i in range(24)]

    def noise(example, rng):
        return {"x": example["x"] + rng.normal(size=2).astype(np.float32)}

    _shares_equal_the_single_process_batches(
        lambda **kw: example_pipeline(examples, transform=noise, seed=3, **kw), batches=5)  # past one epoch
    # evaluation: records i, i+n, ... once each over the processes
    seen = [np.asarray(b["x"][:, 0]) for i in range(3)
            for b in example_pipeline(examples[:9], batch_size=3, train=False, shard_index=i, shard_count=3)]
    assert sorted(np.concatenate(seen).tolist()) == list(range(9))


def test_record_pipelines_training_shares_tile_the_global_batches(tmp_path):
    from hmr_jax.testing.toy_data import write_toy_image_dataset, write_toy_mesh_dataset

    write_toy_image_dataset(tmp_path / "img", 12, seed=0, height=48, width=40)
    write_toy_mesh_dataset(tmp_path / "mesh", 20, seed=1, num_vertices=24)
    _shares_equal_the_single_process_batches(
        lambda **kw: image_pipeline(str(tmp_path / "img"), backbone="resnet", crop_size=32, augment=True,
                                    seed=1, read_threads=0, **kw), batches=2)
    _shares_equal_the_single_process_batches(
        lambda **kw: mesh_pipeline([str(tmp_path / "mesh"), str(tmp_path / "img")], seed=2, **kw))
