"""Record format, shard writer and manifest: round trips, validation, refusal of incomplete data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hmr_jax.data import records, shards
from hmr_jax.testing.toy_data import toy_image_record, write_toy_image_dataset, write_toy_mesh_dataset


def _record(seed=0):
    return toy_image_record(np.random.default_rng(seed))


def test_record_round_trip_keeps_values_and_dtypes():
    rec = _record()
    rec["betas"] = np.arange(10, dtype=np.float64)  # converted to float32
    data = records.encode_record(rec, "image")
    assert b"pickle" not in data
    back = records.decode_record(data)
    assert set(back) == set(rec)
    assert back["image_jpeg"] == rec["image_jpeg"]
    assert back["keypoints_kind"] == "smpl24"
    for k in ("center", "keypoints_2d", "vertices", "vertices_flipped", "global_orient", "betas"):
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], np.asarray(rec[k], np.float32))
    assert back["image_size"].dtype == np.int32


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("vertices"), "missing field"),
    (lambda r: r.update(extra=np.zeros(2)), "unknown field"),
    (lambda r: r.update(center=np.zeros(3)), "center"),
    (lambda r: r.update(vertices_flipped=np.zeros((5, 3))), "V=5"),
    (lambda r: r.update(image_jpeg=b"PNG..."), "JPEG"),
    (lambda r: r.update(keypoints_kind="lsp14"), "keypoints_kind"),
    (lambda r: r.update(global_orient=np.array([np.nan, 0, 0])), "NaN"),
    (lambda r: r.update(scale=np.float32(0)), "positive"),
    (lambda r: r.update(dataset=3), "str"),
])
def test_bad_records_are_refused_with_the_field_named(change, message):
    rec = _record()
    change(rec)
    with pytest.raises(records.RecordError, match=message):
        records.encode_record(rec, "image")


def test_corrupt_bytes_are_reported():
    with pytest.raises(records.RecordError, match="cannot decode"):
        records.decode_record(b"\xc1\x00garbage")


def test_writer_shards_and_manifest(tmp_path):
    path = write_toy_image_dataset(tmp_path / "ds", 21, records_per_shard=8)
    manifest = json.loads(path.read_text())
    assert manifest["num_records"] == 21 and manifest["kind"] == "image"
    assert [s["num_records"] for s in manifest["shards"]] == [8, 8, 5]
    assert manifest["sizes"] == {"num_vertices": 24, "num_keypoints": 24, "keypoints_kind": "smpl24",
                                 "num_joints_3d": 22}
    assert not list((tmp_path / "ds").glob("*.tmp"))
    ds = shards.open_dataset(tmp_path / "ds", kind="image", verify_checksums=True)
    source = ds.data_source()
    assert len(source) == 21
    # Records come back in write order.
    expected = toy_image_record(np.random.default_rng(0), name="toy_00000.jpg")
    got = records.decode_record(source[0])
    np.testing.assert_array_equal(got["vertices"], expected["vertices"])


def test_incomplete_or_corrupt_datasets_are_refused(tmp_path):
    with pytest.raises(shards.DatasetError, match="does not exist"):
        shards.open_dataset(tmp_path / "nothing")
    # An interrupted conversion: no manifest.
    with pytest.raises(RuntimeError):
        with shards.ShardWriter(tmp_path / "half", "image", records_per_shard=2) as w:
            for i in range(3):
                w.write(_record(i))
            raise RuntimeError("killed")
    assert not (tmp_path / "half" / "manifest.json").exists()
    assert not list((tmp_path / "half").glob("*.tmp"))
    with pytest.raises(shards.DatasetError, match="no manifest.json"):
        shards.open_dataset(tmp_path / "half")
    # A truncated shard.
    write_toy_image_dataset(tmp_path / "ok", 6, records_per_shard=4)
    shard = tmp_path / "ok" / "data-00000.array_record"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(shards.DatasetError, match="data-00000.array_record has .* bytes"):
        shards.open_dataset(tmp_path / "ok")
    # Same size, different bytes: only the checksum sees it.
    write_toy_image_dataset(tmp_path / "flip", 4, records_per_shard=4)
    shard = tmp_path / "flip" / "data-00000.array_record"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    shards.open_dataset(tmp_path / "flip")
    with pytest.raises(shards.DatasetError, match="SHA-256"):
        shards.open_dataset(tmp_path / "flip", verify_checksums=True)
    # A missing shard and the wrong kind.
    write_toy_mesh_dataset(tmp_path / "mesh", 5, records_per_shard=2)
    with pytest.raises(shards.DatasetError, match="'mesh' records"):
        shards.open_dataset(tmp_path / "mesh", kind="image")
    (tmp_path / "mesh" / "data-00001.array_record").unlink()
    with pytest.raises(shards.DatasetError, match="data-00001.array_record listed in manifest.json is missing"):
        shards.open_dataset(tmp_path / "mesh")


def test_writer_refuses_existing_data_and_mixed_sizes(tmp_path):
    write_toy_mesh_dataset(tmp_path / "m", 3)
    with pytest.raises(shards.DatasetError, match="already holds"):
        shards.ShardWriter(tmp_path / "m", "mesh")
    w = shards.ShardWriter(tmp_path / "m", "mesh", overwrite=True)
    # the old dataset stays complete and readable until the new one is closed
    assert len(shards.open_dataset(tmp_path / "m", verify_checksums=True)) == 3
    w.write({"vertices": np.zeros((4, 3)), "global_orient": np.zeros(3), "dataset": "x", "name": "a"})
    with pytest.raises(records.RecordError, match="num_vertices"):
        w.write({"vertices": np.zeros((5, 3)), "global_orient": np.zeros(3), "dataset": "x", "name": "b"})
    w.close()
    assert len(shards.open_dataset(tmp_path / "m")) == 1
