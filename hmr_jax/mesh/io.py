"""Triangle-mesh files: ``.ply`` (binary little/big-endian and ASCII) and Wavefront ``.obj``;
binary glTF ``.glb`` written through trimesh (the ``sample`` extra).

Every reader returns ``(vertices, faces)``: vertices float32 ``(V, 3)`` in the file's units (the
project's templates are in meters), faces int32 ``(F, 3)`` 0-based vertex ids. Polygons with more
than three corners are split into triangle fans ``(a, b, c), (a, c, d), ...``. Per-vertex colours
(PLY ``red/green/blue`` or OBJ ``v x y z r g b``) come back with ``return_colors=True`` as float32
``(V, 3)`` in [0, 1] (``None`` when the file has none).

Writers build the file under a temporary name in the destination folder and rename it, so a
reader never sees half a file. A malformed file raises :class:`MeshFileError` naming the file,
the place and the problem.
"""
from __future__ import annotations

import os
import pathlib
from typing import Callable

import numpy as np

from hmr_jax.errors import UserError
from hmr_jax.files import atomic_open
from hmr_jax.safe_read import check_file_size, read_npy

__all__ = [
    "MeshFileError",
    "MeshFileNotFoundError",
    "load_faces",
    "read_mesh",
    "read_ply",
    "read_obj",
    "write_mesh",
    "write_ply",
    "write_obj",
    "write_glb",
]


#: the largest mesh file read (SMPL's 6890-vertex template is ~200 KB as binary PLY)
MAX_MESH_FILE_BYTES = 1 << 30
#: vertex ids must fit in int32 (what the faces are returned as)
_MAX_ID = 2 ** 31 - 1


class MeshFileError(UserError, ValueError):
    """A mesh file is missing, of an unknown kind, or does not follow its format."""


class MeshFileNotFoundError(MeshFileError, FileNotFoundError):
    """The faces of a topology were asked for from a file that does not exist."""


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _check_path(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.is_file():
        raise MeshFileError(f"mesh file {path} does not exist (give the path of a .ply or .obj file)")
    check_file_size(path, MAX_MESH_FILE_BYTES, MeshFileError, "mesh file")
    return path


def _finish(path, vertices, faces, colors, return_colors):
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    if vertices.shape[0] == 0:
        raise MeshFileError(f"{path}: the file has no vertices")
    if not np.isfinite(vertices).all():
        raise MeshFileError(f"{path}: vertex coordinates contain NaN or infinity")
    if faces.size and (faces.min() < 0 or faces.max() >= vertices.shape[0]):
        bad = int(np.flatnonzero((faces < 0).any(1) | (faces >= vertices.shape[0]).any(1))[0])
        raise MeshFileError(
            f"{path}: face {bad} refers to vertex {faces[bad].tolist()} but the file has "
            f"{vertices.shape[0]} vertices (ids must be 0..{vertices.shape[0] - 1})"
        )
    faces = faces.astype(np.int32)
    if return_colors:
        if colors is not None:
            colors = np.ascontiguousarray(colors, dtype=np.float32).reshape(-1, 3)
        return vertices, faces, colors
    return vertices, faces


def _fan(polygons: list[list[int]], path, where: Callable[[int], str]) -> np.ndarray:
    tris = []
    for i, poly in enumerate(polygons):
        if len(poly) < 3:
            raise MeshFileError(f"{path}: {where(i)} has {len(poly)} corners; a face needs at least 3")
        if any(not -_MAX_ID <= v <= _MAX_ID for v in poly):
            raise MeshFileError(f"{path}: {where(i)} has a vertex id outside the int32 range: {poly[:8]}")
        a = poly[0]
        for k in range(1, len(poly) - 1):
            tris.append((a, poly[k], poly[k + 1]))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _check_arrays(vertices, faces, colors=None):
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices have shape {v.shape}, expected (V, 3)")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces have shape {f.shape}, expected (F, 3) triangles")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces have dtype {f.dtype}, expected integers (0-based vertex ids)")
    if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
        raise ValueError(f"faces refer to vertex ids outside 0..{v.shape[0] - 1}")
    if not np.isfinite(v).all():
        raise ValueError("vertices contain NaN or infinity")
    c = None
    if colors is not None:
        c = np.asarray(colors, dtype=np.float32)
        if c.shape != (v.shape[0], 3):
            raise ValueError(f"colors have shape {c.shape}, expected ({v.shape[0]}, 3) in [0, 1]")
    return v.astype(np.float32), f.astype(np.int32), c


# ---------------------------------------------------------------------------------------------
# PLY
# ---------------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


class _Element:
    def __init__(self, name: str, count: int):
        self.name = name
        self.count = count
        # (name, dtype) for scalars, (name, count dtype, item dtype) for lists
        self.props: list[tuple] = []

    @property
    def has_list(self) -> bool:
        return any(len(p) == 3 for p in self.props)


def _parse_ply_header(path, data: bytes):
    if not data.startswith(b"ply"):
        raise MeshFileError(f"{path}: not a PLY file (it does not start with 'ply')")
    end = data.find(b"end_header")
    if end < 0:
        raise MeshFileError(f"{path}: PLY header has no 'end_header' line")
    body = data.index(b"\n", end) + 1 if b"\n" in data[end:] else len(data)
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    fmt = None
    elements: list[_Element] = []
    for n, raw in enumerate(lines[1:], start=2):
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if len(words) < 2 or words[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise MeshFileError(f"{path}: header line {n}: unknown PLY format {raw.strip()!r}")
            fmt = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isascii() or not words[2].isdigit():
                raise MeshFileError(f"{path}: header line {n}: malformed element line {raw.strip()!r}")
            count = int(words[2])
            if count > len(data):  # every element takes at least one byte in any format
                raise MeshFileError(f"{path}: header line {n}: {count} '{words[1]}' elements announced but the "
                                    f"file has only {len(data)} bytes: the header is corrupt or the file truncated")
            elements.append(_Element(words[1], count))
        elif words[0] == "property":
            if not elements:
                raise MeshFileError(f"{path}: header line {n}: property before any element")
            if len(words) == 5 and words[1] == "list":
                if words[2] not in _PLY_TYPES or words[3] not in _PLY_TYPES:
                    raise MeshFileError(f"{path}: header line {n}: unknown list types in {raw.strip()!r}")
                if _PLY_TYPES[words[2]][0] not in "iu" or _PLY_TYPES[words[3]][0] not in "iu":
                    raise MeshFileError(f"{path}: header line {n}: list counts and ids must be integer types "
                                        f"in {raw.strip()!r}")
                elements[-1].props.append((words[4], _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1].props.append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise MeshFileError(f"{path}: header line {n}: malformed property {raw.strip()!r}")
        else:
            raise MeshFileError(f"{path}: header line {n}: unknown keyword {words[0]!r}")
    if fmt is None:
        raise MeshFileError(f"{path}: PLY header has no 'format' line")
    for el in elements:
        names = [p[0] for p in el.props]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise MeshFileError(f"{path}: element '{el.name}' declares the property '{dup}' twice")
        if el.count and not el.props:
            raise MeshFileError(f"{path}: element '{el.name}' has {el.count} entries but no property")
    return fmt, elements, body


def _read_binary_element(path, data: bytes, offset: int, el: _Element, endian: str):
    """Returns ({prop: array or list of lists}, new offset)."""
    if not el.has_list:
        dt = np.dtype([(p[0], endian + p[1]) for p in el.props])
        need = dt.itemsize * el.count
        if offset + need > len(data):
            raise MeshFileError(
                f"{path}: file ends inside element '{el.name}' (needs {need} bytes at offset "
                f"{offset}, {len(data) - offset} left): the file is truncated"
            )
        arr = np.frombuffer(data, dt, el.count, offset)
        return {p[0]: arr[p[0]] for p in el.props}, offset + need
    # Fast path: one list property of constant length (all triangles), maybe after scalars.
    if len(el.props) == 1 and el.count > 0:
        name, cdt, idt = el.props[0]
        csize = np.dtype(cdt).itemsize
        if offset + csize > len(data):
            raise MeshFileError(f"{path}: file ends before element '{el.name}': the file is truncated")
        first = int(np.frombuffer(data, endian + cdt, 1, offset)[0])
        fits = 0 < first and (csize + first * np.dtype(idt).itemsize) * el.count <= len(data) - offset
        dt = np.dtype([("n", endian + cdt), ("i", endian + idt, (first if fits else 1,))])
        need = dt.itemsize * el.count
        if fits:
            arr = np.frombuffer(data, dt, el.count, offset)
            if (arr["n"] == first).all():
                return {name: arr["i"].astype(np.int64)}, offset + need
    # General path: walk record by record.
    out: dict[str, list] = {p[0]: [] for p in el.props}
    for i in range(el.count):
        for p in el.props:
            if len(p) == 2:
                size = np.dtype(p[1]).itemsize
                if offset + size > len(data):
                    raise MeshFileError(f"{path}: file ends inside {el.name} {i}: the file is truncated")
                out[p[0]].append(np.frombuffer(data, endian + p[1], 1, offset)[0])
                offset += size
            else:
                csize, isize = np.dtype(p[1]).itemsize, np.dtype(p[2]).itemsize
                if offset + csize > len(data):
                    raise MeshFileError(f"{path}: file ends inside {el.name} {i}: the file is truncated")
                k = int(np.frombuffer(data, endian + p[1], 1, offset)[0])
                offset += csize
                if k < 0:
                    raise MeshFileError(f"{path}: {el.name} {i} has a negative list length {k}: the file is corrupt")
                if offset + k * isize > len(data):
                    raise MeshFileError(f"{path}: file ends inside {el.name} {i}: the file is truncated")
                out[p[0]].append(np.frombuffer(data, endian + p[2], k, offset).astype(np.int64).tolist())
                offset += k * isize
    lists = {p[0] for p in el.props if len(p) == 3}
    return {k: (v if k in lists else np.asarray(v)) for k, v in out.items()}, offset


def _read_ascii_elements(path, data: bytes, body: int, elements: list[_Element]):
    tokens_lines = data[body:].decode("ascii", errors="replace").splitlines()
    lines = [ln for ln in tokens_lines if ln.strip() and not ln.lstrip().startswith("comment")]
    pos = 0
    result = {}
    for el in elements:
        if pos + el.count > len(lines):
            raise MeshFileError(
                f"{path}: the header announces {el.count} '{el.name}' lines but the file ends after "
                f"{len(lines) - pos}: the file is truncated"
            )
        chunk = lines[pos : pos + el.count]
        pos += el.count
        if not el.has_list:
            try:
                arr = np.array([ln.split() for ln in chunk], dtype=np.float64).reshape(el.count, len(el.props))
            except ValueError as e:
                raise MeshFileError(
                    f"{path}: element '{el.name}' lines must hold {len(el.props)} numbers each ({e})"
                ) from e
            result[el.name] = {p[0]: arr[:, j] for j, p in enumerate(el.props)}
            continue
        cols: dict[str, list] = {p[0]: [] for p in el.props}
        for i, ln in enumerate(chunk):
            words = ln.split()
            try:
                k = 0
                for p in el.props:
                    if len(p) == 2:
                        cols[p[0]].append(float(words[k]))
                        k += 1
                    else:
                        n = int(words[k])
                        ids = [int(w) for w in words[k + 1 : k + 1 + n]]
                        if len(ids) != n:
                            raise IndexError
                        cols[p[0]].append(ids)
                        k += 1 + n
            except (ValueError, IndexError):
                raise MeshFileError(f"{path}: {el.name} {i} is malformed: {ln.strip()!r}") from None
        result[el.name] = cols
    return result


def read_ply(path: str | os.PathLike, return_colors: bool = False):
    """Read a ``.ply`` triangle mesh (binary little/big-endian or ASCII).

    Args:
      path: the file. It needs a ``vertex`` element with ``x``, ``y``, ``z`` and a ``face``
        element with a ``vertex_indices`` (or ``vertex_index``) list; other elements and
        properties are skipped.
      return_colors: also return per-vertex colours (``red/green/blue``).
    Returns:
      ``(vertices (V, 3) float32, faces (F, 3) int32)``, plus colours ``(V, 3)`` float32 in
      [0, 1] or ``None`` when ``return_colors``.
    Raises:
      MeshFileError: missing file, bad header, truncated data, bad vertex ids.
    """
    path = _check_path(path)
    data = path.read_bytes()
    fmt, elements, body = _parse_ply_header(path, data)
    names = [e.name for e in elements]
    if "vertex" not in names:
        raise MeshFileError(f"{path}: PLY header has no 'vertex' element")
    if fmt == "ascii":
        parsed = _read_ascii_elements(path, data, body, elements)
    else:
        endian = "<" if fmt == "binary_little_endian" else ">"
        parsed, offset = {}, body
        for el in elements:
            parsed[el.name], offset = _read_binary_element(path, data, offset, el, endian)
    vert = parsed["vertex"]
    missing = [c for c in "xyz" if c not in vert]
    if missing:
        raise MeshFileError(f"{path}: the vertex element has no {'/'.join(missing)} property")
    kinds = {p[0]: len(p) for el in elements if el.name == "vertex" for p in el.props}
    lists = [c for c in ("x", "y", "z", "red", "green", "blue") if kinds.get(c) == 3]
    if lists:
        raise MeshFileError(f"{path}: vertex properties {lists} are lists; coordinates and colours are numbers")
    fkinds = {p[0]: len(p) for el in elements if el.name == "face" for p in el.props}
    if any(fkinds.get(k) == 2 for k in ("vertex_indices", "vertex_index")):
        raise MeshFileError(f"{path}: the face element's vertex_indices is a number, not a list of vertex ids")
    vertices = np.stack([np.asarray(vert[c], dtype=np.float64) for c in "xyz"], axis=1)
    colors = None
    if all(c in vert for c in ("red", "green", "blue")):
        vprops = {p[0]: p for p in next(e for e in elements if e.name == "vertex").props}
        scale = 255.0 if vprops["red"][1] in ("u1", "i1") else (65535.0 if vprops["red"][1] in ("u2", "i2") else 1.0)
        colors = np.stack([np.asarray(vert[c], dtype=np.float64) for c in ("red", "green", "blue")], 1) / scale
    faces = np.zeros((0, 3), np.int64)
    if "face" in parsed:
        fel = parsed["face"]
        key = next((k for k in ("vertex_indices", "vertex_index") if k in fel), None)
        if key is None:
            raise MeshFileError(f"{path}: the face element has no vertex_indices list")
        lists = fel[key]
        if isinstance(lists, np.ndarray) and lists.ndim == 2 and lists.shape[1] == 3:
            faces = lists
        else:
            faces = _fan([list(x) for x in lists], path, lambda i: f"face {i}")
    return _finish(path, vertices, faces, colors, return_colors)


def write_ply(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    binary: bool = True,
) -> pathlib.Path:
    """Write a triangle mesh as ``.ply`` (binary little-endian by default), atomically.

    Args:
      path: destination file.
      vertices: (V, 3) coordinates (meters), written as float32.
      faces: (F, 3) 0-based vertex ids.
      colors: optional (V, 3) colours in [0, 1], written as uchar red/green/blue.
      binary: binary little-endian (True) or ASCII (False).
    Returns:
      The written path.
    Raises:
      ValueError: shapes or ids that do not describe a triangle mesh.
    """
    v, f, c = _check_arrays(vertices, faces, colors)
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment hmr_jax",
              f"element vertex {len(v)}", "property float x", "property float y", "property float z"]  # fmt: skip
    if c is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        c8 = np.clip(np.round(c * 255.0), 0, 255).astype(np.uint8)
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    head = ("\n".join(header) + "\n").encode("ascii")
    if binary:
        vfields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
        if c is not None:
            vfields += [("r", "u1"), ("g", "u1"), ("b", "u1")]
        va = np.empty(len(v), dtype=vfields)
        va["x"], va["y"], va["z"] = v[:, 0], v[:, 1], v[:, 2]
        if c is not None:
            va["r"], va["g"], va["b"] = c8[:, 0], c8[:, 1], c8[:, 2]
        fa = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
        fa["n"] = 3
        fa["i"] = f
        body = va.tobytes() + fa.tobytes()
    else:
        lines = []
        for i in range(len(v)):
            s = f"{v[i, 0]:.9g} {v[i, 1]:.9g} {v[i, 2]:.9g}"
            if c is not None:
                s += f" {c8[i, 0]} {c8[i, 1]} {c8[i, 2]}"
            lines.append(s)
        lines += [f"3 {a} {b} {d}" for a, b, d in f.tolist()]
        body = ("\n".join(lines) + "\n").encode("ascii")
    with atomic_open(path, "wb") as fh:
        fh.write(head + body)
    return pathlib.Path(path)


# ---------------------------------------------------------------------------------------------
# OBJ
# ---------------------------------------------------------------------------------------------


def read_obj(path: str | os.PathLike, return_colors: bool = False):
    """Read a Wavefront ``.obj`` mesh (``v`` and ``f`` records; others are skipped).

    Face corners may be ``i``, ``i/t``, ``i//n`` or ``i/t/n``, 1-based or negative (relative);
    polygons are split into triangle fans.

    Args:
      path: the file.
      return_colors: also return per-vertex colours from ``v x y z r g b`` lines.
    Returns:
      ``(vertices (V, 3) float32, faces (F, 3) int32)``, plus colours ``(V, 3)`` float32 or
      ``None`` (when not every vertex has one) with ``return_colors``.
    Raises:
      MeshFileError: missing file, malformed ``v`` / ``f`` line, bad vertex ids.
    """
    path = _check_path(path)
    verts: list[list[float]] = []
    cols: list[list[float]] = []
    polys: list[list[int]] = []
    where: list[int] = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            if line.startswith("v "):
                w = line.split()
                try:
                    vals = [float(x) for x in w[1:]]
                except ValueError:
                    raise MeshFileError(f"{path}: line {n}: malformed vertex {line.strip()!r}") from None
                if len(vals) < 3:
                    raise MeshFileError(f"{path}: line {n}: a vertex needs 3 coordinates: {line.strip()!r}")
                verts.append(vals[:3])
                if len(vals) >= 6:
                    cols.append(vals[3:6])
            elif line.startswith("f "):
                ids = []
                try:
                    for corner in line.split()[1:]:
                        k = int(corner.split("/")[0])
                        if k == 0:
                            raise ValueError
                        ids.append(k - 1 if k > 0 else len(verts) + k)
                except ValueError:
                    raise MeshFileError(f"{path}: line {n}: malformed face {line.strip()!r}") from None
                polys.append(ids)
                where.append(n)
    faces = _fan(polys, path, lambda i: f"the face on line {where[i]}")
    colors = np.asarray(cols, np.float64) if cols and len(cols) == len(verts) else None
    return _finish(path, np.asarray(verts, np.float64).reshape(-1, 3), faces, colors, return_colors)


def write_obj(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
) -> pathlib.Path:
    """Write a triangle mesh as Wavefront ``.obj`` (1-based ``f a b c``), atomically.

    Args:
      path: destination file.
      vertices: (V, 3) coordinates (meters); written with 9 significant digits (float32 exact).
      faces: (F, 3) 0-based vertex ids.
      colors: optional (V, 3) colours in [0, 1], written as ``v x y z r g b``.
    Returns:
      The written path.
    Raises:
      ValueError: shapes or ids that do not describe a triangle mesh.
    """
    v, f, c = _check_arrays(vertices, faces, colors)
    if c is None:
        vl = [f"v {a:.9g} {b:.9g} {d:.9g}" for a, b, d in v.tolist()]
    else:
        vl = [f"v {a:.9g} {b:.9g} {d:.9g} {r:.6g} {g:.6g} {bl:.6g}"
              for (a, b, d), (r, g, bl) in zip(v.tolist(), c.tolist())]  # fmt: skip
    fl = [f"f {a + 1} {b + 1} {d + 1}" for a, b, d in f.tolist()]
    text = "\n".join(["# hmr_jax"] + vl + fl) + "\n"
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return pathlib.Path(path)


def write_glb(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
) -> pathlib.Path:
    """Write a triangle mesh as binary glTF ``.glb`` (vertices as given), atomically.

    glTF viewers take y as up and the viewer on the +z side: convert camera-frame meshes
    (y down, z away) with ``vertices * (1, -1, -1)`` first.

    Args:
      path: destination file.
      vertices: (V, 3) coordinates (meters); faces: (F, 3) 0-based vertex ids.
      colors: optional (V, 3) colours in [0, 1].
    Returns:
      The written path.
    Raises:
      ImportError: trimesh is not installed (``pip install -e '.[sample]'``).
      ValueError: shapes or ids that do not describe a triangle mesh.
    """
    v, f, c = _check_arrays(vertices, faces, colors)
    try:
        import trimesh  # optional (the sample extra): only .glb needs it
    except ImportError as e:
        raise ImportError(f"writing {path} needs trimesh: pip install -e '.[sample]' ({e})") from None
    mesh = trimesh.Trimesh(vertices=np.asarray(v, np.float32), faces=np.asarray(f, np.int64), process=False,
                           vertex_colors=None if c is None else np.round(np.asarray(c) * 255).astype(np.uint8))
    data = mesh.export(file_type="glb")
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return pathlib.Path(path)


# ---------------------------------------------------------------------------------------------
# Dispatch on the suffix
# ---------------------------------------------------------------------------------------------


def read_mesh(path: str | os.PathLike, return_colors: bool = False):
    """Read a ``.ply`` or ``.obj`` triangle mesh (chosen by the file suffix).

    Returns:
      ``(vertices (V, 3) float32, faces (F, 3) int32)`` (plus colours, see :func:`read_ply`).
    Raises:
      MeshFileError: unknown suffix, missing or malformed file.
    """
    suffix = pathlib.Path(path).suffix.lower()
    if suffix == ".ply":
        return read_ply(path, return_colors)
    if suffix == ".obj":
        return read_obj(path, return_colors)
    raise MeshFileError(f"{path}: unknown mesh file kind {suffix!r}; expected .ply or .obj")


def write_mesh(path: str | os.PathLike, vertices, faces, colors=None) -> pathlib.Path:
    """Write a ``.ply`` (binary little-endian), ``.obj`` or ``.glb`` mesh, chosen by the suffix, atomically."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix == ".ply":
        return write_ply(path, vertices, faces, colors)
    if suffix == ".obj":
        return write_obj(path, vertices, faces, colors)
    if suffix == ".glb":
        return write_glb(path, vertices, faces, colors)
    raise ValueError(f"{path}: unknown mesh file kind {suffix!r}; expected .ply, .obj or .glb")


def load_faces(source) -> tuple[np.ndarray, np.ndarray | None]:
    """The faces of a mesh topology, from an array, a ``.npy`` of faces or a ``.ply`` / ``.obj`` mesh.

    Args:
      source: an (F, 3) integer array, or the path of an (F, 3) ``.npy`` or of a mesh file.
    Returns:
      ``(faces (F, 3) int32, vertices (V, 3) float32 or None)``: the mesh file's vertices (in its
      units, meters for the project's templates), None for an array or a ``.npy``.
    Raises:
      MeshFileNotFoundError: no such file; MeshFileError: not (F, 3) integer faces, or a
      malformed mesh file (the messages say what the file should hold).
    """
    vertices = None
    if isinstance(source, (str, os.PathLike)):
        path = pathlib.Path(source)
        if not path.is_file():
            raise MeshFileNotFoundError(
                f"faces file {path} not found: give the mesh topology, an (F, 3) .npy of faces or a .ply / .obj "
                "mesh (e.g. body_models/template.ply, the 6890-vertex SMPL mesh)")
        if path.suffix.lower() == ".npy":
            faces = read_npy(path, MeshFileError)
        else:
            vertices, faces = read_mesh(path)
    else:
        path, faces = "the faces", source
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise MeshFileError(f"{path}: expected (F, 3) integer faces, got {faces.shape} {faces.dtype}")
    return faces.astype(np.int32), vertices
