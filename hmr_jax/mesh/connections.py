"""Connection matrices: the graph of one pooling / unpooling / convolution layer.

File format (MeshConvolution's ``_poolK.npy`` / ``_unpoolK.npy``, read by Mesh-VQ-VAE): an
integer array of shape ``(out_points, 1 + 2 * M)``. Row ``p`` describes output vertex ``p``:
column 0 holds ``N``, how many input vertices it is connected to, then come ``M`` pairs
``(input_vertex_id, distance)``. The first ``N`` pairs are real neighbours (distance = hops on
the mesh graph, >= 0); the other ``M - N`` are padding ``(in_points, -1)``: the padding id is
one past the last input vertex and selects an all-zero row appended to the layer input.

A layer's file is ``FOLDER/_{name}.npy`` (``name`` = ``pool0`` .. ``pool7``, ``unpool7`` ..
``unpool0`` for the released hierarchy). The number of input points is not stored: it is the
previous layer's ``out_points`` (the mesh's vertex count for the first layer), and the padding
id must equal it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
from typing import Mapping, Sequence

import numpy as np

from hmr_jax.errors import UserError
from hmr_jax.safe_read import read_npy

#: the largest connection array accepted (the released dfaust2 files are < 1 MB each)
MAX_CONNECTION_BYTES = 256 << 20


class ConnectionFileError(UserError, ValueError):
    """A connection file is missing, unreadable or does not follow the documented format."""


@dataclasses.dataclass(frozen=True, eq=False)
class ConnectionLayer:
    """The neighbourhoods of one graph layer, ready for gathers.

    Attributes:
      name: layer name (``pool0``, ``unpool3``, ...) or the file it came from.
      neighbor_ids: (out_points, M) int32 input vertex ids; padding slots hold ``in_points``.
      mask: (out_points, M) float32, 1 for real neighbours, 0 for padding.
      distances: (out_points, M) int32 graph distances (hops), -1 for padding.
      neighbor_counts: (out_points,) int32, real neighbours per output vertex (column 0).
      in_points: number of input vertices (also the padding id).
      out_points: number of output vertices.
    """

    name: str
    neighbor_ids: np.ndarray
    mask: np.ndarray
    distances: np.ndarray
    neighbor_counts: np.ndarray
    in_points: int
    out_points: int

    @property
    def max_neighbors(self) -> int:
        """M, the padded neighbourhood size."""
        return int(self.neighbor_ids.shape[1])

    @property
    def safe_ids(self) -> np.ndarray:
        """(out_points, M) int32 ids with padding replaced by 0 (valid for a gather whose
        result is multiplied by ``mask``; avoids appending a zero row to the input)."""
        return np.where(self.mask > 0, self.neighbor_ids, 0).astype(np.int32)

    def to_array(self) -> np.ndarray:
        """The layer in the file format: (out_points, 1 + 2M) int32."""
        out = np.empty((self.out_points, 1 + 2 * self.max_neighbors), np.int32)
        out[:, 0] = self.neighbor_counts
        out[:, 1::2] = self.neighbor_ids
        out[:, 2::2] = self.distances
        return out


def parse_connection_array(
    array: np.ndarray, in_points: int | None = None, source: str = "connection array"
) -> ConnectionLayer:
    """Validate a connection array in the file format and split it into a :class:`ConnectionLayer`.

    Args:
      array: (out_points, 1 + 2M) integer array (see the module docstring).
      in_points: number of input vertices; ``None`` infers it from the padding id (then at
        least one row must be padded).
      source: what to call the array in error messages (the file name).
    Returns:
      The layer.
    Raises:
      ConnectionFileError: naming ``source`` and the problem (dtype, shape, count column
        inconsistent with the padding, ids out of range, distances, in_points mismatch).
    """
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.integer):
        raise ConnectionFileError(
            f"{source}: dtype {a.dtype}, expected an integer array (int32) of (count, id, distance) entries"
        )
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 3 or a.shape[1] % 2 != 1:
        raise ConnectionFileError(
            f"{source}: shape {a.shape}, expected (out_points, 1 + 2 * max_neighbors) with at "
            "least one row and an odd number (>= 3) of columns"
        )
    a = a.astype(np.int64)
    counts = a[:, 0]
    ids = a[:, 1::2]
    dists = a[:, 2::2]
    out_points, m = ids.shape
    bad = np.flatnonzero((counts < 1) | (counts > m))
    if bad.size:
        p = int(bad[0])
        raise ConnectionFileError(
            f"{source}: row {p} says {int(counts[p])} neighbours, expected 1..{m} "
            f"({bad.size} rows out of range)"
        )
    real = np.arange(m)[None, :] < counts[:, None]
    if in_points is None:
        pads = ids[~real]
        if pads.size == 0:
            raise ConnectionFileError(
                f"{source}: no padding slot, so the number of input points cannot be inferred; pass in_points"
            )
        in_points = int(pads.max())
    in_points = int(in_points)
    _check_ids(ids, real, counts, in_points, source)
    _check_distances(dists, real, source)
    layer = ConnectionLayer(
        name=source,
        neighbor_ids=ids.astype(np.int32),
        mask=real.astype(np.float32),
        distances=dists.astype(np.int32),
        neighbor_counts=counts.astype(np.int32),
        in_points=in_points,
        out_points=int(out_points),
    )
    for arr in (layer.neighbor_ids, layer.mask, layer.distances, layer.neighbor_counts):
        arr.setflags(write=False)
    return layer


def _check_ids(ids: np.ndarray, real: np.ndarray, counts: np.ndarray, in_points: int, source: str) -> None:
    """Padding slots hold the padding id ``in_points``; real neighbours ids in 0..in_points-1."""
    bad_pad = ~real & (ids != in_points)
    if bad_pad.any():
        p, j = (int(v) for v in np.argwhere(bad_pad)[0])
        raise ConnectionFileError(
            f"{source}: row {p} slot {j} is past the neighbour count {int(counts[p])} but holds id "
            f"{int(ids[p, j])}, expected the padding id {in_points} (= number of input points): the "
            "count column is inconsistent with the padding, or the file belongs to a layer with "
            "another input size"
        )
    bad_real = real & ((ids < 0) | (ids >= in_points))
    if bad_real.any():
        p, j = (int(v) for v in np.argwhere(bad_real)[0])
        what = "is the padding id" if ids[p, j] == in_points else "is out of range"
        raise ConnectionFileError(
            f"{source}: row {p} neighbour {j} has id {int(ids[p, j])}, which {what} for "
            f"{in_points} input points (ids must be in 0..{in_points - 1}; the count column says "
            f"{int(counts[p])} real neighbours)"
        )


def _check_distances(dists: np.ndarray, real: np.ndarray, source: str) -> None:
    """Real neighbours have distances >= 0 (hops), padding slots -1."""
    if (dists[real] < 0).any():
        p, j = (int(v) for v in np.argwhere(real & (dists < 0))[0])
        raise ConnectionFileError(f"{source}: row {p} neighbour {j} has a negative distance {int(dists[p, j])}")
    if (dists[~real] != -1).any():
        p, j = (int(v) for v in np.argwhere(~real & (dists != -1))[0])
        raise ConnectionFileError(
            f"{source}: padding slot {j} of row {p} has distance {int(dists[p, j])}, expected -1"
        )


def connection_path(folder: str | os.PathLike, name: str) -> pathlib.Path:
    """Path of layer ``name``'s file in ``folder``: ``folder/_{name}.npy``."""
    return pathlib.Path(folder) / f"_{name}.npy"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_connection_file(
    path: str | os.PathLike,
    in_points: int | None = None,
    name: str | None = None,
    sha256: str | None = None,
) -> ConnectionLayer:
    """Read and validate one connection file.

    Args:
      path: the ``.npy`` file.
      in_points: number of input vertices (``None``: inferred from the padding id).
      name: layer name recorded in the result (default: the file name).
      sha256: expected hex digest of the file, checked when given.
    Returns:
      The validated :class:`ConnectionLayer`.
    Raises:
      ConnectionFileError: missing / unreadable file, checksum mismatch or a format problem.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConnectionFileError(
            f"connection file {path} does not exist: point the config's connection folder at the "
            "folder holding _pool*.npy / _unpool*.npy (MeshConvolution's dfaust2 files, or ones "
            "written by `python -m hmr_jax.mesh.build`)"
        )
    if sha256 is not None:
        got = file_sha256(path)
        if got.lower() != sha256.lower():
            raise ConnectionFileError(
                f"connection file {path} has sha256 {got}, expected {sha256}: it is not the file "
                "the model was trained with"
            )
    array = read_npy(path, lambda m: ConnectionFileError(f"connection file {m}"), MAX_CONNECTION_BYTES)
    layer = parse_connection_array(array, in_points=in_points, source=str(path))
    return dataclasses.replace(layer, name=name or path.stem.lstrip("_"))


def load_hierarchy(
    folder: str | os.PathLike,
    layer_names: Sequence[str],
    in_points: int | None = None,
    initial: str | None = None,
    sha256: Mapping[str, str] | None = None,
) -> tuple[ConnectionLayer, ...]:
    """Read the connection files of a whole encoder / decoder hierarchy.

    Args:
      folder: folder holding ``_{name}.npy`` for every name.
      layer_names: layer names in order (``["pool0", ..., "pool6", "unpool6", ..., "unpool0"]``).
      in_points: vertex count of the input mesh. ``None``: the row count of ``initial``'s file if
        given (the original "initial connection" file), else inferred from the first file's padding.
      initial: name of the initial connection file (``pool0`` in the released configs).
      sha256: optional ``{layer name (e.g. "pool0") or file name ("_pool0.npy"): hex digest}``; every loaded
        file with an entry is checked.
    Returns:
      One :class:`ConnectionLayer` per name; layer ``l``'s ``in_points`` is layer ``l-1``'s
      ``out_points``.
    Raises:
      ConnectionFileError: a missing file, a checksum mismatch, a format problem, or a file whose
        padding id does not match the previous layer's point count (each names the file).
    """
    if not layer_names:
        raise ConnectionFileError("no connection layers given (the layer list is empty)")
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ConnectionFileError(
            f"connection folder {folder} does not exist: give the folder that holds _pool*.npy / _unpool*.npy"
        )
    sums = dict(sha256 or {})

    def expected(name: str) -> str | None:
        path = connection_path(folder, name)
        return sums.get(path.name, sums.get(name))

    if in_points is None and initial is not None:
        in_points = read_connection_file(
            connection_path(folder, initial), name=initial, sha256=expected(initial)
        ).out_points
    layers = []
    for name in layer_names:
        layer = read_connection_file(
            connection_path(folder, name), in_points=in_points, name=name, sha256=expected(name)
        )
        layers.append(layer)
        in_points = layer.out_points
    return tuple(layers)


@functools.lru_cache(maxsize=8)
def load_hierarchy_cached(
    folder: str,
    layer_names: tuple[str, ...],
    in_points: int | None = None,
    initial: str | None = None,
    sha256: tuple[tuple[str, str], ...] = (),
) -> tuple[ConnectionLayer, ...]:
    """:func:`load_hierarchy` memoised on its (hashable) arguments, for model construction
    (``sha256`` as a tuple of ``(name, digest)`` pairs)."""
    return load_hierarchy(folder, layer_names, in_points=in_points, initial=initial, sha256=dict(sha256))
