"""Fuzzing the readers of mesh, connection, regressor, body model and boxes files.

Seeds are files in the real formats written by the project's own writers and stand-ins; each
example mutates one (bytes: truncated, bit-flipped, overwritten, numbers replaced; values: wrong
shapes, dtypes, types, missing / extra keys) and checks the reader with
:func:`helpers.fuzz.check_reader` (its own error type naming the file, no hang, no memory
blow-up, nothing written). Hostile files (size-lying headers, pickle bombs) are checked one by one.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given
from hypothesis import strategies as st

from helpers import fuzz as fz
from hmr_jax.body import model_io
from hmr_jax.body.regressors import JointRegressorError, load_joint_regressor
from hmr_jax.testing.smpl_files import make_standin_arrays
from hmr_jax.detection.base import DetectionError, load_boxes
from hmr_jax.mesh import connections as cn
from hmr_jax.mesh.io import MeshFileError, read_mesh, write_obj, write_ply


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    fz.report(__name__)


# ----------------------------------------------------------------------------- seeds
def _mesh():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(12, 3)).astype(np.float32)
    f = rng.integers(0, 12, size=(20, 3)).astype(np.int32)
    c = rng.random((12, 3)).astype(np.float32)
    return v, f, c


@pytest.fixture(scope="module")
def mesh_seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("mesh_seeds")
    v, f, c = _mesh()
    seeds = fz.Seeds()
    for name, write in [("binary.ply", lambda p: write_ply(p, v, f, c)),
                        ("ascii.ply", lambda p: write_ply(p, v, f, c, binary=False)),
                        ("plain.ply", lambda p: write_ply(p, v, f)),
                        ("mesh.obj", lambda p: write_obj(p, v, f, c))]:
        write(d / name)
        seeds[name] = (d / name).read_bytes()
    # a quad face and a non-triangle list take the general path of the binary reader
    quads = seeds["ascii.ply"].replace(b"3 0 ", b"4 0 11 ", 1)
    seeds["quads.ply"] = quads
    return seeds


def _small_model(kind: str, nv: int = 40) -> dict:
    a = make_standin_arrays(kind, seed=3)
    keep = np.all(a["f"] < nv, axis=1)
    return {"v_template": a["v_template"][:nv], "shapedirs": a["shapedirs"][:nv], "posedirs": a["posedirs"][:nv],
            "J_regressor": a["J_regressor"][:, :nv], "weights": a["weights"][:nv],
            "kintree_table": a["kintree_table"], "f": a["f"][keep][:30]}


# ----------------------------------------------------------------------------- meshes
@fz.examples(60)
@given(data=st.data())
def test_fuzz_mesh_files(mesh_seeds, tmp_path, data):
    name = data.draw(st.sampled_from(sorted(mesh_seeds)))
    blob = data.draw(fz.mutated(mesh_seeds[name]))
    with fz.fresh_dir(tmp_path) as d:
        path = fz.write(d, name, blob)
        fz.check_reader("mesh " + name.split(".")[-1], lambda p: read_mesh(p, return_colors=True), path,
                        MeshFileError)


@pytest.mark.parametrize("header", [
    b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000000000\nproperty float x\nproperty float y\n"
    b"property float z\nend_header\n",
    b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
    b"element face 1000000000\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n",
    b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
    b"property float z\nelement face 2\nproperty list char int vertex_indices\nend_header\n" + bytes(36)
    + b"\xff" + bytes(8),
    b"ply\nformat binary_little_endian 1.0\nelement junk 90\nelement vertex 1\nproperty float x\n"
    b"property float y\nproperty float z\nend_header\n" + bytes(12),
    b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty list uint float x\nproperty float y\n"
    b"property float z\nend_header\n\xff\xff\xff\xff" + bytes(12),
])
def test_hostile_ply_headers(tmp_path, header):
    path = fz.write(tmp_path, "hostile.ply", header)
    assert fz.check_reader("mesh hostile", read_mesh, path, MeshFileError) == "MeshFileError"


def test_hostile_obj_ids(tmp_path):
    path = fz.write(tmp_path, "ids.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 99999999999999999999999\n")
    assert fz.check_reader("mesh hostile", read_mesh, path, MeshFileError) == "MeshFileError"


# ----------------------------------------------------------------------------- connection files
def _connection_seed() -> np.ndarray:
    # 3 output points over 4 input points, up to 2 neighbours, padding id 4 with distance -1
    return np.array([[2, 0, 0, 1, 1], [1, 2, 0, 4, -1], [2, 3, 0, 2, 1]], np.int32)


@fz.examples(40)
@given(data=st.data())
def test_fuzz_connection_files(tmp_path, data):
    import io
    buf = io.BytesIO()
    kind = data.draw(st.sampled_from(["bytes", "values", "liar"]))
    if kind == "values":
        np.save(buf, data.draw(fz.wrong_arrays(_connection_seed())))
        blob = buf.getvalue()
    elif kind == "liar":
        blob = fz.npy_bytes(data.draw(st.lists(st.integers(0, 10 ** 12), min_size=1, max_size=3)),
                            data.draw(st.sampled_from(["<i4", "<i8", "|O", "<f8"])), data.draw(st.binary(max_size=64)))
    else:
        np.save(buf, _connection_seed())
        blob = data.draw(fz.mutated(buf.getvalue()))
    in_points = data.draw(st.sampled_from([None, 4, 3]))
    with fz.fresh_dir(tmp_path) as d:
        path = fz.write(d, "_pool0.npy", blob)
        fz.check_reader("connection .npy", lambda p: cn.read_connection_file(p, in_points=in_points), path,
                        cn.ConnectionFileError)


# ----------------------------------------------------------------------------- joint regressors
@fz.examples(40)
@given(data=st.data())
def test_fuzz_joint_regressors(tmp_path, data):
    import io
    reg = np.random.default_rng(1).random((17, 30))
    buf = io.BytesIO()
    kind = data.draw(st.sampled_from(["bytes", "values", "liar"]))
    if kind == "values":
        np.save(buf, data.draw(fz.wrong_arrays(reg)))
        blob = buf.getvalue()
    elif kind == "liar":
        blob = fz.npy_bytes((17, data.draw(st.integers(0, 10 ** 12))), "<f8", data.draw(st.binary(max_size=64)))
    else:
        np.save(buf, reg)
        blob = data.draw(fz.mutated(buf.getvalue()))
    nv = data.draw(st.sampled_from([None, 30]))
    with fz.fresh_dir(tmp_path) as d:
        path = fz.write(d, "J_regressor_h36m.npy", blob)
        fz.check_reader("joint regressor .npy", lambda p: load_joint_regressor(p, 17, nv), path, JointRegressorError)


# ----------------------------------------------------------------------------- body models
@pytest.fixture(scope="module")
def body_seeds(tmp_path_factory):
    import io
    import pickle
    d = tmp_path_factory.mktemp("body_seeds")
    seeds = fz.Seeds()
    for kind in ("smpl", "smplh"):
        arrays = _small_model(kind)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        seeds[f"{kind}.npz"] = (buf.getvalue(), arrays)
    arrays = _small_model("smpl")
    data = dict(arrays, J_regressor=scipy.sparse.csc_matrix(arrays["J_regressor"]), bs_style="lbs")
    seeds["smpl.pkl"] = (pickle.dumps(data, protocol=2), arrays)
    from test_body_model import _chumpy_pickle
    _chumpy_pickle(d / "chumpy.pkl", arrays)
    seeds["chumpy.pkl"] = ((d / "chumpy.pkl").read_bytes(), arrays)
    return seeds


@fz.examples(60)
@given(data=st.data())
def test_fuzz_body_model_files(body_seeds, tmp_path, data):
    name = data.draw(st.sampled_from(sorted(body_seeds)))
    blob, arrays = body_seeds[name]
    blob = fz.mutated_file(data, name, blob, arrays)
    with fz.fresh_dir(tmp_path) as d:
        path = fz.write(d, name, blob)
        fz.check_reader("body model " + name.split(".")[-1], model_io.read_body_model_file, path,
                        model_io.BodyModelFileError)


@pytest.mark.parametrize("bomb", sorted(fz.pickle_bombs()))
def test_hostile_body_model_pickles(tmp_path, bomb):
    path = fz.write(tmp_path, "SMPL_NEUTRAL.pkl", fz.pickle_bombs()[bomb])
    assert fz.check_reader("body model hostile", model_io.read_body_model_file, path,
                           model_io.BodyModelFileError) == "BodyModelFileError"


def test_hostile_body_model_npz(tmp_path):
    import zipfile
    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w") as zf:  # a header announcing 10^12 floats
        zf.writestr("v_template.npy", fz.npy_bytes((10 ** 12, 3), "<f8", bytes(64)))
    assert fz.check_reader("body model hostile", model_io.read_body_model_file, path,
                           model_io.BodyModelFileError) == "BodyModelFileError"


# ----------------------------------------------------------------------------- boxes JSON
def _boxes_seed() -> bytes:
    return json.dumps({"img_000.jpg": [[10, 20, 110, 220, 0.9], [5.5, 6, 50, 60]], "b/c.png": [],
                       "frame_7": [[0, 0, 1, 1]]}).encode()


def _box_lists():
    number = st.one_of(st.integers(-10 ** 400, 10 ** 400), st.floats(), st.integers(-5000, 5000))
    return st.lists(st.lists(number, min_size=3, max_size=6), max_size=3)


@st.composite
def _json_values(draw):
    return draw(st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-10 ** 400, 10 ** 400), st.floats(), st.text(max_size=5)),
        lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
        max_leaves=12))


@fz.examples(40)
@given(data=st.data())
def test_fuzz_boxes_json(tmp_path, data):
    kind = data.draw(st.sampled_from(["bytes", "values", "deep"]))
    if kind == "values":
        value = json.loads(_boxes_seed())
        value = data.draw(fz.mutated_mapping(value, lambda like=None: st.one_of(_json_values(), _box_lists())))
        blob = json.dumps(value, allow_nan=True).encode()
    elif kind == "deep":
        depth = data.draw(st.integers(1, 200000))
        blob = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    else:
        blob = data.draw(fz.mutated(_boxes_seed()))
    with fz.fresh_dir(tmp_path) as d:
        path = fz.write(d, "boxes.json", blob)
        fz.check_reader("boxes JSON", load_boxes, path, DetectionError)


@pytest.mark.parametrize("text", ['{"a": [[1, 2, 3, 1' + "0" * 400 + ']]}', '{"a": [[1, 2, 3, 1e39]]}',
                                  '{"a": [[1, 2, 3, NaN]]}', '[' * 100000 + ']' * 100000])
def test_hostile_boxes(tmp_path, text):
    path = fz.write(tmp_path, "boxes.json", text.encode())
    assert fz.check_reader("boxes hostile", load_boxes, path, DetectionError) == "DetectionError"


def test_damaged_compressed_npz_member(tmp_path):
    import zipfile
    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("v_template.npy", fz.npy_bytes((100, 3), "<f8", bytes(2400)))
    data = bytearray(path.read_bytes())
    at = data.find(b"v_template.npy") + len("v_template.npy")
    data[at:at + 8] = b"\xff" * 8  # the start of the deflate stream
    path.write_bytes(bytes(data))
    assert fz.check_reader("body model hostile", model_io.read_body_model_file, path,
                           model_io.BodyModelFileError) == "BodyModelFileError"
