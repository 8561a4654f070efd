"""Mesh files: PLY (binary LE/BE, ASCII) and OBJ reading, atomic writing, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from hmr_jax.mesh import io as mesh_io
from hmr_jax.mesh.io import MeshFileError


@pytest.fixture(scope="module")
def sphere():
    m = trimesh.creation.icosphere(subdivisions=2)
    rng = np.random.default_rng(0)
    v = (np.asarray(m.vertices) * rng.uniform(0.5, 1.5, (1, 3))).astype(np.float32)
    return v, np.asarray(m.faces, np.int32)


def test_reads_reference_template(reference_dir):
    path = reference_dir / "template.ply"
    v, f, c = mesh_io.read_mesh(path, return_colors=True)
    assert v.dtype == np.float32 and v.shape == (6890, 3)
    assert f.dtype == np.int32 and f.shape == (13776, 3)
    assert c.shape == (6890, 3) and 0.0 <= c.min() and c.max() <= 1.0
    # An independent reader agrees on every coordinate and face.
    ref = trimesh.load(path, process=False)
    np.testing.assert_array_equal(v, np.asarray(ref.vertices, np.float32))
    np.testing.assert_array_equal(f, np.asarray(ref.faces))
    # SMPL-sized body in meters: about 1.5-2 m tall.
    assert 1.2 < float(v[:, 1].max() - v[:, 1].min()) < 2.2


@pytest.mark.parametrize("name,kw", [("m.obj", {}), ("m.ply", {}), ("m_ascii.ply", {"binary": False})])
def test_round_trip_is_exact(tmp_path, sphere, name, kw):
    v, f = sphere
    colors = np.random.default_rng(1).integers(0, 256, (len(v), 3)) / 255.0
    path = tmp_path / name
    if kw:
        mesh_io.write_ply(path, v, f, colors, **kw)
    else:
        mesh_io.write_mesh(path, v, f, colors)
    v2, f2, c2 = mesh_io.read_mesh(path, return_colors=True)
    np.testing.assert_array_equal(v2, v)
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_allclose(c2, colors, atol=1e-6)
    # Only the file itself: no temporary left behind.
    assert [p.name for p in tmp_path.iterdir()] == [name]
    # trimesh reads what we wrote.
    np.testing.assert_array_equal(np.asarray(trimesh.load(path, process=False).faces), f)


def test_write_replaces_and_failed_write_leaves_nothing(tmp_path, sphere):
    v, f = sphere
    path = tmp_path / "out.obj"
    mesh_io.write_obj(path, v, f)
    mesh_io.write_obj(path, v * 2, f)
    np.testing.assert_array_equal(mesh_io.read_obj(path)[0], v * 2)
    with pytest.raises(ValueError, match="faces"):
        mesh_io.write_obj(tmp_path / "bad.obj", v, f + len(v))
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        mesh_io.write_ply(tmp_path / "bad.ply", v[:, :2], f)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.obj"]


def test_ascii_ply_with_quads_and_extra_properties(tmp_path):
    text = "\n".join([
        "ply", "format ascii 1.0", "comment a unit square and a triangle",
        "element vertex 5", "property float x", "property float y", "property float z",
        "property float nx", "element face 2", "property list uchar int vertex_indices",
        "element edge 1", "property int vertex1", "property int vertex2", "end_header",
        "0 0 0 9", "1 0 0 9", "1 1 0 9", "0 1 0 9", "2 2 2 9",
        "4 0 1 2 3", "3 1 4 2", "0 1",
    ]) + "\n"  # fmt: skip
    path = tmp_path / "q.ply"
    path.write_text(text)
    v, f = mesh_io.read_ply(path)
    assert v.shape == (5, 3) and v[4].tolist() == [2, 2, 2]
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 2]]


def test_big_endian_and_mixed_polygons(tmp_path):
    v = np.arange(15, dtype=">f4").reshape(5, 3)
    head = ("ply\nformat binary_big_endian 1.0\nelement vertex 5\nproperty float x\nproperty float y\n"
            "property float z\nelement face 2\nproperty list uchar uint vertex_indices\nend_header\n")  # fmt: skip
    body = v.tobytes()
    body += bytes([4]) + np.array([0, 1, 2, 3], ">u4").tobytes() + bytes([3]) + np.array([1, 4, 2], ">u4").tobytes()
    path = tmp_path / "be.ply"
    path.write_bytes(head.encode() + body)
    vr, fr = mesh_io.read_ply(path)
    np.testing.assert_array_equal(vr, v.astype(np.float32))
    assert fr.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 2]]


def test_obj_corner_forms_and_negative_ids(tmp_path):
    path = tmp_path / "c.obj"
    path.write_text(
        "# comment\nmtllib x.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0 0.5 0.5 0.5\nv 0 1 0\nvt 0 0\nvn 0 0 1\n"
        "f 1/1/1 2/1/1 3/1/1 4/1/1\nf -3//1 -1//1 -2//1\n"
    )
    v, f, c = mesh_io.read_obj(path, return_colors=True)
    assert v.shape == (4, 3)
    assert c is None  # only one vertex had a colour
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [1, 3, 2]]


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("a.ply", b"not a ply", "not a PLY"),
        ("b.ply", b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\n", "end_header"),
        ("c.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                  b"property float z\nend_header\n" + b"\0" * 20, "truncated"),
        ("d.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                  b"element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
         "face 0 refers to vertex"),
        ("e.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                  b"end_header\n0 0 0\n1 0 0\n", "truncated"),
        ("f.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n0 0\n",
         "no z property"),
        ("g.ply", b"ply\nformat binary_middle_endian 1.0\nend_header\n", "unknown PLY format"),
        ("h.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n", "line 4: malformed face"),
        ("i.obj", b"v 0 0\n", "line 1: a vertex needs 3"),
        ("j.obj", b"v 0 0 0\nv 1 0 0\nf 1 2\n", "at least 3"),
        ("k.obj", b"f 1 2 3\n", "no vertices"),
        ("l.stl", b"solid", "unknown mesh file kind"),
    ],
)  # fmt: skip
def test_malformed_files_name_file_and_problem(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MeshFileError, match=match) as info:
        mesh_io.read_mesh(path)
    assert name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(MeshFileError, match="does not exist"):
        mesh_io.read_mesh(tmp_path / "nope.ply")
