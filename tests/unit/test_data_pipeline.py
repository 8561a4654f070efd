"""Grain pipelines: augmentation geometry, backbone inputs, mixing, sharding, exact resume."""
from __future__ import annotations

import numpy as np
import pytest

from hmr_jax.data import augment as aug
from hmr_jax.data import records, shards
from hmr_jax.geometry import rotations_np
from hmr_jax.data.pipeline import Source, image_pipeline, mesh_pipeline
from hmr_jax.testing.toy_data import toy_image_record, write_toy_image_dataset, write_toy_mesh_dataset


@pytest.fixture(scope="module")
def toy_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_toy_image_dataset(root / "a", 24, seed=1, dataset="a")
    write_toy_image_dataset(root / "b", 10, seed=2, dataset="b")
    write_toy_mesh_dataset(root / "m", 13, seed=3)
    return root


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert set(x) == set(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _pixel(kp_norm, size):
    return ((kp_norm + 1.0) * size - 1.0) / 2.0


@pytest.mark.parametrize("params", [
    aug.NO_AUGMENTATION,
    aug.AugmentParams(flip=True),
    aug.AugmentParams(rotation=35.0, scale=1.2),
    aug.AugmentParams(flip=True, rotation=-50.0, scale=0.8),
])
def test_crop_keypoints_and_3d_agree(params):
    rec = toy_image_record(np.random.default_rng(5))
    out = aug.process_image_record(rec, params, aug.BACKBONE_INPUTS["hrnet"])
    s = 224
    assert out["image"].shape == (s, s, 3) and out["image"].dtype == np.float32
    # 2D keypoints are the orthographic projection of the posed 3D joints (toy construction):
    # normalised xy = posed xy / (1.1 * scale), whatever the flip and rotation.
    np.testing.assert_allclose(out["keypoints_2d"][:22, :2], out["joints_3d"][:, :2] / (1.1 * params.scale),
                               atol=2e-5)
    # The posed mesh is R @ canonical; the canonical mesh is the mirrored one when flipped.
    want = rec["vertices_flipped"] if params.flip else rec["vertices"]
    np.testing.assert_array_equal(out["vertices_canonical"], want)
    np.testing.assert_allclose(out["vertices"], want @ out["rotation_matrix"].T, atol=1e-6)
    np.testing.assert_allclose(out["rotation_matrix"], rotations_np.axis_angle_to_matrix(out["global_orient"]), atol=1e-6)
    # The pixels agree with the keypoints: the toy image has a white dot at every joint.
    rgb = out["image"] * np.array(aug.IMAGENET_STD) + np.array(aug.IMAGENET_MEAN)
    xy = np.round(_pixel(out["keypoints_2d"][:, :2], s)).astype(int)
    inside = np.all((xy >= 3) & (xy < s - 3), axis=1)
    assert inside.sum() >= 20
    values = rgb[xy[inside, 1], xy[inside, 0]].min(axis=-1)
    assert np.median(values) > 0.85 and values.min() > 0.6
    assert out["is_3dpw"]


def test_vit_input_is_the_middle_of_the_256_crop():
    rec = toy_image_record(np.random.default_rng(6))
    params = aug.AugmentParams(flip=True, rotation=10.0, scale=1.1, color=(0.9, 1.1, 1.3))
    vit = aug.process_image_record(rec, params, aug.BACKBONE_INPUTS["vit"])
    square = aug.process_image_record(rec, params, aug.BackboneInput(crop=256, width=256))
    assert vit["image"].shape == (256, 192, 3)
    np.testing.assert_array_equal(vit["image"], square["image"][:, 32:224])
    # The ViT loader of the originals normalises keypoints to [-0.5, 0.5].
    np.testing.assert_allclose(vit["keypoints_2d"][:, :2], 0.5 * square["keypoints_2d"][:, :2], atol=1e-7)
    np.testing.assert_array_equal(vit["keypoints_2d"][:, 2], square["keypoints_2d"][:, 2])


def test_augmentation_draws_follow_the_original_ranges():
    rng = np.random.default_rng(0)
    draws = [aug.sample_augmentation(rng) for _ in range(4000)]
    rot = np.array([d.rotation for d in draws])
    sc = np.array([d.scale for d in draws])
    col = np.array([d.color for d in draws])
    assert abs(np.mean([d.flip for d in draws]) - 0.5) < 0.03
    assert 0.58 < np.mean(rot == 0) < 0.66 and np.abs(rot).max() <= 60
    assert sc.min() >= 0.75 and sc.max() <= 1.25 and abs(sc.mean() - 1) < 0.02
    assert col.min() >= 0.6 and col.max() <= 1.4
    assert not any(d.flip for d in (aug.sample_augmentation(rng, flip=False) for _ in range(100)))


def test_rotation_factor_zero_augments_without_in_plane_rotation(toy_dirs):
    """Flips, scale and colour still vary; the orientation is the record's or its mirror."""
    source = shards.open_dataset(toy_dirs / "a").data_source()
    stored = np.stack([records.decode_record(source[i])["global_orient"] for i in range(len(source))])
    kwargs = dict(batch_size=8, augment=True, flip=True, seed=5, shard_index=0, shard_count=1)
    for factor, rotated in ((0.0, False), (30.0, True)):
        batches = _take(iter(image_pipeline(str(toy_dirs / "a"), rotation_factor=factor, **kwargs)), 4)
        n_rot = n_flip = 0
        for b in batches:
            for orient, idx, verts in zip(b["global_orient"], b["dataset_index"], b["vertices_canonical"]):
                assert idx == 0
                plain = np.min(np.abs(stored - orient).max(-1))
                mirrored = np.min(np.abs(np.stack([rotations_np.mirror_axis_angle(o) for o in stored]) - orient).max(-1))
                n_flip += mirrored < 1e-5 and plain > 1e-5
                n_rot += min(plain, mirrored) > 1e-4
        assert n_flip > 0
        assert (n_rot > 0) == rotated, (factor, n_rot)


def test_evaluation_pass_is_ordered_complete_and_unaugmented(toy_dirs):
    it = iter(image_pipeline(str(toy_dirs / "a"), batch_size=5, train=False, shard_index=0, shard_count=1))
    batches = list(it)
    assert [len(b["image"]) for b in batches] == [5, 5, 5, 5, 4]
    source = shards.open_dataset(toy_dirs / "a").data_source()
    both = list(image_pipeline([str(toy_dirs / "a"), str(toy_dirs / "b")], batch_size=8, train=False,
                               shard_index=0, shard_count=1))
    assert sum(len(b["image"]) for b in both) == 34
    np.testing.assert_array_equal(np.concatenate([b["dataset_index"] for b in both]), [0] * 24 + [1] * 10)
    for i in (0, 13, 23):
        rec = records.decode_record(source[i])
        b, j = divmod(i, 5)
        np.testing.assert_array_equal(batches[b]["vertices_canonical"][j], rec["vertices"])
        np.testing.assert_allclose(batches[b]["global_orient"][j], rec["global_orient"], atol=1e-6)


def test_training_batches_resume_exactly_from_saved_state(toy_dirs):
    kwargs = dict(batch_size=4, seed=3, shard_index=0, shard_count=1)
    sources = [Source(str(toy_dirs / "a"), 1.0), Source(str(toy_dirs / "b"), 1.0)]
    it = iter(image_pipeline(sources, **kwargs))
    _take(it, 3)
    state = it.get_state()
    expected = _take(it, 9)  # crosses the end of both sources (several epochs)
    again = iter(image_pipeline(sources, **kwargs))
    again.set_state(state)
    _assert_batches_equal(_take(again, 9), expected)
    # A different seed gives different batches; shapes are fixed.
    other = _take(iter(image_pipeline(sources, **{**kwargs, "seed": 4})), 1)[0]
    assert not np.array_equal(other["image"], _take(iter(image_pipeline(sources, **kwargs)), 1)[0]["image"])
    assert expected[0]["image"].shape == (4, 224, 224, 3)
    assert expected[0]["keypoints_2d"].shape == (4, 24, 3)
    assert expected[0]["vertices"].shape == (4, 24, 3)
    # Epochs are reshuffled and augmentations redrawn: no two batches identical.
    flat = [b["image"].tobytes() for b in expected]
    assert len(set(flat)) == len(flat)


def test_mixing_follows_the_proportions(toy_dirs):
    sources = [Source(str(toy_dirs / "a"), 3.0), Source(str(toy_dirs / "b"), 1.0)]
    it = iter(mesh_pipeline(sources, batch_size=8, seed=0, shard_index=0, shard_count=1))
    idx = np.concatenate([b["dataset_index"] for b in _take(it, 25)])
    assert abs(np.mean(idx == 0) - 0.75) < 0.04


def test_sharding_splits_records_between_processes(toy_dirs):
    seen = []
    for shard in range(3):
        it = iter(mesh_pipeline(str(toy_dirs / "m"), batch_size=2, train=False, shard_index=shard, shard_count=3))
        seen.append({v.tobytes() for b in it for v in b["vertices"]})
    assert [len(s) for s in seen] == [5, 4, 4]
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])
    with pytest.raises(ValueError, match="shard_index"):
        mesh_pipeline(str(toy_dirs / "m"), batch_size=2, shard_index=3, shard_count=3)


def test_mesh_pipeline_reads_mesh_and_image_datasets(toy_dirs):
    posed = next(iter(mesh_pipeline(str(toy_dirs / "m"), batch_size=4, train=False, posed=True,
                                    shard_index=0, shard_count=1)))
    canon = next(iter(mesh_pipeline(str(toy_dirs / "m"), batch_size=4, train=False,
                                    shard_index=0, shard_count=1)))
    assert canon["vertices"].shape == (4, 50, 3)
    rot = np.stack([rotations_np.axis_angle_to_matrix(a) for a in canon["global_orient"]])
    np.testing.assert_allclose(posed["vertices"], np.einsum("bij,bvj->bvi", rot, canon["vertices"]), atol=1e-5)
    from_images = next(iter(mesh_pipeline(str(toy_dirs / "a"), batch_size=3, seed=1, shard_index=0, shard_count=1)))
    assert from_images["vertices"].shape == (3, 24, 3)
    with pytest.raises(shards.DatasetError, match="vertex count"):
        mesh_pipeline([str(toy_dirs / "a"), str(toy_dirs / "m")], batch_size=2, shard_index=0, shard_count=1)
    with pytest.raises(shards.DatasetError, match="'mesh' records"):
        image_pipeline(str(toy_dirs / "m"), batch_size=2, shard_index=0, shard_count=1)


def test_worker_processes_give_the_same_batches_and_resume(toy_dirs):
    kwargs = dict(batch_size=4, seed=9, shard_index=0, shard_count=1)
    sources = [str(toy_dirs / "a"), str(toy_dirs / "b")]
    local = _take(iter(image_pipeline(sources, **kwargs)), 6)
    it = iter(image_pipeline(sources, num_workers=1, **kwargs))
    try:
        first = _take(it, 2)
        state = it.get_state()
        rest = _take(it, 4)
    finally:
        del it
    _assert_batches_equal(first + rest, local)
    resumed = iter(image_pipeline(sources, num_workers=1, **kwargs))
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 4), local[2:])
    del resumed


def test_iterator_state_goes_through_an_orbax_checkpoint(toy_dirs, tmp_path):
    import grain
    import orbax.checkpoint as ocp

    kwargs = dict(batch_size=4, seed=1, shard_index=0, shard_count=1)
    it = iter(image_pipeline(str(toy_dirs / "a"), **kwargs))
    _take(it, 2)
    mngr = ocp.CheckpointManager(tmp_path / "ckpt",
                                 options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
    mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = _take(it, 3)
    resumed = iter(image_pipeline(str(toy_dirs / "a"), **kwargs))
    mngr.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
    _assert_batches_equal(_take(resumed, 3), expected)
