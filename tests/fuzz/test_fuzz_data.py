"""Fuzzing the dataset readers: records and shards read back from ArrayRecord, manifests, and the
annotation files ``data_prep`` converts (3DPW and EMDB pickles, BEDLAM / CLIFF ``.npz``).

Seeds come from the project's writers (``hmr_jax.testing.toy_data``'s records and datasets) and from the
stand-ins of ``tests/unit/test_data_converters.py`` written in the official layouts. Checks as in
``helpers.fuzz.check_reader``: the reader's own error (``RecordError``, ``DatasetError``,
``ConversionInputError``) naming the file, no other exception, no hang, no memory blow-up,
nothing written.
"""
from __future__ import annotations

import io
import json
import pathlib
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import fuzz as fz
from data_prep import cliff_npz, common, emdb, threedpw
from hmr_jax.data import records, shards
from hmr_jax.testing import toy_data as toy


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    fz.report(__name__)


# ----------------------------------------------------------------------------- records
@pytest.fixture(scope="module")
def record_seeds():
    rng = np.random.default_rng(0)
    image = toy.toy_image_record(rng)
    mesh = {"vertices": rng.normal(size=(24, 3)), "global_orient": np.zeros(3), "dataset": "toy", "name": "m0"}
    return fz.Seeds(image=(records.encode_record(image, "image"), image),
                    mesh=(records.encode_record(mesh, "mesh"), mesh))


@fz.examples(60)
@given(data=st.data())
def test_fuzz_records(record_seeds, tmp_path, data):
    kind = data.draw(st.sampled_from(["image", "mesh"]))
    blob, rec = record_seeds[kind]
    if data.draw(st.booleans()):
        blob = data.draw(fz.mutated(blob, head=4096))
    else:
        values = data.draw(fz.mutated_mapping(rec))
        try:
            from flax import serialization
            blob = serialization.msgpack_serialize(values)
        except Exception:  # noqa: BLE001 - not serialisable: keep the seed
            pass
    sizes = {"num_vertices": 24} if data.draw(st.booleans()) else None
    with fz.fresh_dir(tmp_path) as d:  # records are bytes: the "file" holds them for the checks
        path = fz.write(d, "record.msgpack", blob)
        fz.check_reader(f"record ({kind})", lambda p: records.read_record(p.read_bytes(), kind, sizes), path,
                        records.RecordError, names_file=False)


# ----------------------------------------------------------------------------- shards and manifests
@pytest.fixture(scope="module")
def dataset_seed(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds_seed") / "ds"
    toy.write_toy_image_dataset(root, 6, records_per_shard=3)
    # ArrayRecord starts its global thread pool on first use: start it here, outside the fuzz
    # harness's address-space ceiling (under which creating its threads would fail and hang).
    _read_all(root)
    return root


def _read_all(folder: pathlib.Path):
    ds = shards.open_dataset(folder)
    src = ds.checked_source()
    for i in range(len(src)):
        src[i]


@fz.examples(40)
@given(data=st.data())
def test_fuzz_shard_files(dataset_seed, tmp_path, data):
    shard = data.draw(st.sampled_from(["data-00000.array_record", "data-00001.array_record"]))
    raw = (dataset_seed / shard).read_bytes()
    blob = data.draw(fz.mutated(raw, head=len(raw)))
    keep_size = data.draw(st.booleans())
    if keep_size:  # same length: the manifest's size check passes, the reader must find the damage
        blob = (blob + bytes(len(raw)))[:len(raw)]
    with fz.fresh_dir(tmp_path) as d:
        folder = d / "ds"
        shutil.copytree(dataset_seed, folder)
        fz.write(folder, shard, blob)
        fz.check_reader("ArrayRecord shard", lambda p: _read_all(p.parent), folder / shard, shards.DatasetError)


@fz.examples(40)
@given(data=st.data())
def test_fuzz_manifests(dataset_seed, tmp_path, data):
    raw = (dataset_seed / "manifest.json").read_bytes()
    if data.draw(st.booleans()):
        blob = data.draw(fz.mutated(raw, head=len(raw)))
    else:
        manifest = json.loads(raw)
        if data.draw(st.booleans()) and manifest["shards"]:
            i = data.draw(st.integers(0, len(manifest["shards"]) - 1))
            manifest["shards"][i] = data.draw(fz.mutated_mapping(manifest["shards"][i], _json_like))
        else:
            manifest = data.draw(fz.mutated_mapping(manifest, _json_like))
        blob = json.dumps(manifest, default=str).encode()
    with fz.fresh_dir(tmp_path) as d:
        folder = d / "ds"
        shutil.copytree(dataset_seed, folder)
        fz.write(folder, "manifest.json", blob)
        fz.check_reader("dataset manifest", lambda p: _read_all(p.parent), folder / "manifest.json",
                        shards.DatasetError, names_file=False)


def _json_like(like=None):
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 20, 10 ** 20), st.floats(allow_nan=False),
                       st.text(max_size=8), st.sampled_from(["../../etc/passwd", "data-00000.array_record",
                                                             "/tmp/x", "data-99999.array_record"]))
    return st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(st.text(max_size=4), scalar, max_size=3))


# ----------------------------------------------------------------------------- data_prep annotation files
@pytest.fixture(scope="module")
def annotation_seeds(tmp_path_factory):
    from test_data_converters import _write_3dpw, _write_emdb

    root = tmp_path_factory.mktemp("ann")
    _write_3dpw(root / "3DPW", t=7)
    _write_emdb(root / "EMDB", "09_outdoor_walk", "emdb1")
    pkl3 = next((root / "3DPW").glob("sequenceFiles/test/*.pkl"))
    pkle = next((root / "EMDB").glob("**/*.pkl"))
    rng = np.random.default_rng(0)
    n = 4
    cliff = {"imgname": np.array([f"img_{i}.jpg" for i in range(n)]), "center": rng.uniform(50, 100, (n, 2)),
             "scale": rng.uniform(0.5, 1.0, n), "pose": rng.normal(size=(n, 72)), "shape": rng.normal(size=(n, 10)),
             "part": rng.uniform(0, 100, (n, 24, 3)), "gender": np.array(["m", "f", "m", "f"])}
    buf = io.BytesIO()
    np.savez(buf, **cliff)
    return fz.Seeds({
        "3dpw.pkl": (pkl3.read_bytes(), common.safe_pickle_load(pkl3)),
        "emdb.pkl": (pkle.read_bytes(), common.safe_pickle_load(pkle)),
        "cliff.npz": (buf.getvalue(), cliff)})


_READERS = {"3dpw.pkl": threedpw.read_sequence, "emdb.pkl": emdb.read_sequence,
            "cliff.npz": cliff_npz.read_annotations}


def test_annotation_seeds_are_read(annotation_seeds, tmp_path):
    for name, (blob, _) in annotation_seeds.items():
        path = fz.write(tmp_path, name, blob)
        assert fz.check_reader("annotation seeds", _READERS[name], path, common.ConversionInputError) == "ok"


@fz.examples(60)
@given(data=st.data())
def test_fuzz_annotation_files(annotation_seeds, tmp_path, data):
    name = data.draw(st.sampled_from(sorted(annotation_seeds)))
    blob, content = annotation_seeds[name]
    blob = fz.mutated_file(data, name, blob, content, head=2048)
    with fz.fresh_dir(tmp_path) as d:
        path = fz.write(d, name, blob)
        fz.check_reader(f"annotations {name}", _READERS[name], path, common.ConversionInputError)


@pytest.mark.parametrize("bomb", sorted(fz.pickle_bombs()))
def test_hostile_annotation_pickles(tmp_path, bomb):
    path = fz.write(tmp_path, "seq.pkl", fz.pickle_bombs()[bomb])
    assert fz.check_reader("annotations hostile", threedpw.read_sequence, path,
                           common.ConversionInputError) == "ConversionInputError"
