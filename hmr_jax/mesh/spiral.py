"""Spiral neighbourhoods (SpiralNet++, Gong et al. 2019) on every level of a pooling hierarchy.

A spiral of length ``L`` for vertex ``v`` lists ``v``, then the vertices one hop away, then two
hops away, ..., each ring ordered counter-clockwise around ``v``'s normal, starting from a fixed
direction; it is cut at ``L`` entries (padded with the id ``num_points`` when the whole
component is smaller). A spiral convolution gathers the features along the spiral and applies one
dense layer to their concatenation, so the slot order must mean the same thing at every vertex:
here the rings start from the template's longest axis (the body's up direction), projected into
the vertex's tangent plane.

Levels. Level 0 is the mesh (its edge graph, its vertex normals). A down-sampling layer of the
hierarchy (a ``_poolK.npy`` whose rows start with their centre, at distance 0, as MeshConvolution
and :mod:`hmr_jax.mesh.build` write them) gives the next level: its vertices are the centres, at
their template positions and normals, and two centres are joined when their graph-Voronoi cells
on the finer level touch (the dual of the cells, which keeps about six neighbours per vertex as a
triangle mesh has). Stride-1 layers keep the level.

Pooling and unpooling between levels use the hierarchy's own files: every output vertex takes a
normalised average of its connected inputs (:func:`averaging_weights`).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from hmr_jax.geometry.normals import vertex_normals

__all__ = [
    "SpiralLevel",
    "SpiralHierarchy",
    "mesh_adjacency",
    "coarse_graph",
    "spiral_indices",
    "build_spiral_hierarchy",
    "averaging_weights",
]


@dataclasses.dataclass(frozen=True, eq=False)
class SpiralLevel:
    """One level of the hierarchy, with its spirals.

    Attributes:
      num_points: vertices at this level.
      spirals: (num_points, L) int32 spiral vertex ids; padding slots hold ``num_points``.
      positions: (num_points, 3) float32 template positions (meters) of the level's vertices.
      normals: (num_points, 3) float32 unit normals.
      template_ids: (num_points,) int32 mesh vertex id of each level vertex.
      graph: (num_points, num_points) symmetric CSR adjacency of the level (no self loops).
    """

    num_points: int
    spirals: np.ndarray
    positions: np.ndarray
    normals: np.ndarray
    template_ids: np.ndarray
    graph: sp.csr_matrix

    @property
    def length(self) -> int:
        """Spiral length L."""
        return int(self.spirals.shape[1])


@dataclasses.dataclass(frozen=True, eq=False)
class SpiralHierarchy:
    """Spirals of every level, finest first (``levels[0]`` is the mesh)."""

    levels: tuple[SpiralLevel, ...]

    def level_for(self, num_points: int) -> SpiralLevel:
        """The level with ``num_points`` vertices (point counts identify levels in a hierarchy)."""
        for lv in self.levels:
            if lv.num_points == num_points:
                return lv
        counts = [lv.num_points for lv in self.levels]
        raise ValueError(f"no level of the hierarchy has {num_points} points (levels have {counts})")


def mesh_adjacency(faces: np.ndarray, num_vertices: int) -> sp.csr_matrix:
    """(V, V) symmetric 0/1 CSR adjacency of a triangle mesh's edges (no self loops)."""
    f = np.asarray(faces, np.int64)
    a = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    b = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    keep = a != b
    m = sp.coo_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(num_vertices, num_vertices))
    m = ((m + m.T) > 0).astype(np.float64).tocsr()
    m.sort_indices()
    return m


def coarse_graph(graph: sp.csr_matrix, centers: np.ndarray) -> sp.csr_matrix:
    """Join centres whose graph-Voronoi cells touch.

    Each vertex belongs to its nearest centre in hops (scipy's multi-source Dijkstra); an edge
    between two cells joins their centres.

    Args:
      graph: (n, n) symmetric adjacency of the fine level.
      centers: (m,) fine ids of the centres.
    Returns:
      (m, m) symmetric 0/1 CSR adjacency, no self loops.
    """
    centers = np.asarray(centers, np.int64)
    n = graph.shape[0]
    _, _, sources = csgraph.dijkstra(
        graph, directed=False, indices=centers, unweighted=True, min_only=True, return_predecessors=True
    )
    index = np.full(n, -1, np.int64)
    index[centers] = np.arange(centers.size)
    cell = np.where(sources >= 0, index[np.maximum(sources, 0)], -1)
    g = graph.tocoo()
    cu, cw = cell[g.row], cell[g.col]
    keep = (cu >= 0) & (cw >= 0) & (cu != cw)
    m = sp.coo_matrix((np.ones(int(keep.sum())), (cu[keep], cw[keep])), shape=(centers.size, centers.size))
    m = ((m + m.T) > 0).astype(np.float64).tocsr()
    m.sort_indices()
    return m


def _reference_axes(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The template's longest and second-longest coordinate axes (unit vectors)."""
    extent = positions.max(0) - positions.min(0) if len(positions) else np.ones(3)
    order = np.argsort(-extent, kind="stable")
    eye = np.eye(3)
    return eye[order[0]], eye[order[1]]


def spiral_indices(
    graph: sp.csr_matrix,
    positions: np.ndarray,
    normals: np.ndarray,
    length: int,
    dilation: int = 1,
    axes: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Fixed-length spirals on a graph embedded in 3-D.

    Args:
      graph: (n, n) symmetric adjacency.
      positions: (n, 3) vertex positions.
      normals: (n, 3) unit normals (the rotation axis of each spiral).
      length: L, entries per spiral (the vertex itself first).
      dilation: keep every ``dilation``-th entry of a spiral ``1 + (L - 1) * dilation`` long.
      axes: the start direction and its fallback (where the first is nearly parallel to the
        normal); default: the two longest axes of ``positions``' bounding box.
    Returns:
      (n, L) int32 ids, padded with ``n`` where a component has fewer vertices.
    """
    if length < 1 or dilation < 1:
        raise ValueError(f"spiral length {length} and dilation {dilation} must be >= 1")
    n = graph.shape[0]
    full = 1 + (length - 1) * dilation
    pos = np.asarray(positions, np.float64)
    nrm = np.asarray(normals, np.float64)
    a0, a1 = axes if axes is not None else _reference_axes(pos)
    # Tangent frame per vertex: t = start direction projected on the tangent plane, b = n x t.
    t = a0[None] - (nrm @ a0)[:, None] * nrm
    weak = np.linalg.norm(t, axis=1) < 0.3
    t[weak] = a1[None] - (nrm[weak] @ a1)[:, None] * nrm[weak]
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    b = np.cross(nrm, t)

    # Rings by breadth-first reachability: ring[i, j] = hops, grown until every row has `full`
    # vertices or stops growing.
    step = (graph + sp.identity(n, format="csr")).astype(bool).astype(np.int32).tocsr()
    reach = sp.identity(n, dtype=np.int32, format="csr")
    hops = sp.identity(n, dtype=np.int32, format="csr")  # stores hops + 1 (0 = not reached)
    r = 0
    while True:
        counts = np.diff(reach.indptr)
        if counts.min() >= full:
            break
        grown = ((reach @ step) > 0).astype(np.int32).tocsr()
        if grown.nnz == reach.nnz:
            break
        r += 1
        hops = hops + (grown - reach) * (r + 1)
        reach = grown
    hops = hops.tocoo()
    rows, cols, ring = hops.row.astype(np.int64), hops.col.astype(np.int64), hops.data.astype(np.int64) - 1
    d = pos[cols] - pos[rows]
    angle = np.arctan2(np.einsum("ij,ij->i", d, b[rows]), np.einsum("ij,ij->i", d, t[rows]))
    angle = np.mod(angle, 2 * np.pi)
    angle[ring == 0] = -1.0  # the vertex itself first
    order = np.lexsort((cols, angle, ring, rows))
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, np.arange(n))
    slot = np.arange(rows.size) - starts[rows]
    out = np.full((n, full), n, np.int64)
    keep = slot < full
    out[rows[keep], slot[keep]] = cols[keep]
    return out[:, ::dilation][:, :length].astype(np.int32)


def _centers_of(layer, name: str) -> np.ndarray:
    ids = np.asarray(layer.neighbor_ids)
    dists = np.asarray(layer.distances)
    if not (dists[:, 0] == 0).all():
        raise ValueError(
            f"connection layer {name}: rows do not start with their centre (distance 0), so the "
            "coarse vertices cannot be placed on the template; build the hierarchy with "
            "`python -m hmr_jax.mesh.build` (or use MeshConvolution's files)"
        )
    return ids[:, 0].astype(np.int64)


def build_spiral_hierarchy(
    vertices: np.ndarray,
    faces: np.ndarray,
    pool_layers: Sequence,
    length: int | Sequence[int] = 9,
    dilation: int = 1,
) -> SpiralHierarchy:
    """Spirals for the mesh and every level its pooling layers reach.

    Args:
      vertices: (V, 3) template positions (meters).
      faces: (F, 3) template triangles.
      pool_layers: the encoder's connection layers in order (objects with ``neighbor_ids``,
        ``distances``, ``in_points``, ``out_points`` and ``name``, e.g.
        :class:`hmr_jax.mesh.connections.ConnectionLayer`); those that keep the point count are
        skipped, each one that reduces it adds a level.
      length: spiral length, one for all levels or one per level (finest first).
      dilation: spiral dilation (1 = plain spirals).
    Returns:
      The :class:`SpiralHierarchy`.
    Raises:
      ValueError: a layer whose input size does not follow the previous level, or whose rows do
        not start with their centre.
    """
    vertices = np.asarray(vertices, np.float32)
    num = vertices.shape[0]
    graph = mesh_adjacency(faces, num)
    normals = vertex_normals(vertices, faces).astype(np.float32)
    axes = _reference_axes(vertices)
    template_ids = np.arange(num, dtype=np.int64)
    levels_raw = [(graph, template_ids)]
    current = num
    for layer in pool_layers:
        name = getattr(layer, "name", "?")
        if layer.in_points != current:
            raise ValueError(
                f"connection layer {name}: {layer.in_points} input points, but the previous level has {current}"
            )
        if layer.out_points == layer.in_points:
            continue
        centers = _centers_of(layer, name)
        graph = coarse_graph(graph, centers)
        template_ids = template_ids[centers]
        levels_raw.append((graph, template_ids))
        current = layer.out_points
    lengths = [int(length)] * len(levels_raw) if np.isscalar(length) else [int(x) for x in length]
    if len(lengths) != len(levels_raw):
        raise ValueError(f"{len(lengths)} spiral lengths for {len(levels_raw)} levels")
    out = []
    for (g, ids), ln in zip(levels_raw, lengths):
        pos, nrm = vertices[ids], normals[ids]
        spirals = spiral_indices(g, pos, nrm, ln, dilation, axes)
        lv = SpiralLevel(
            num_points=int(g.shape[0]), spirals=spirals, positions=pos, normals=nrm,
            template_ids=ids.astype(np.int32), graph=g,
        )  # fmt: skip
        for arr in (lv.spirals, lv.positions, lv.normals, lv.template_ids):
            arr.setflags(write=False)
        out.append(lv)
    return SpiralHierarchy(levels=tuple(out))


def averaging_weights(layer, mode: str = "distance") -> tuple[np.ndarray, np.ndarray]:
    """Normalised averaging weights of a pooling / unpooling connection layer.

    Args:
      layer: a connection layer (``neighbor_ids``, ``mask``, ``distances``, ``in_points``).
      mode: ``"uniform"`` (every connected input counts the same) or ``"distance"`` (weight
        ``2 ** -hops``, so nearer inputs count more, as MeshConvolution's dense matrices did).
    Returns:
      ``(ids, weights)``: (out_points, M) int32 input ids (padding replaced by 0) and float32
      weights (0 on padding) whose rows sum to 1.
    """
    mask = np.asarray(layer.mask, np.float64)
    if mode == "uniform":
        w = mask
    elif mode == "distance":
        w = mask * np.exp2(-np.maximum(np.asarray(layer.distances, np.float64), 0))
    else:
        raise ValueError(f"averaging mode {mode!r}; expected 'uniform' or 'distance'")
    w = w / w.sum(1, keepdims=True)
    ids = np.where(mask > 0, np.asarray(layer.neighbor_ids), 0).astype(np.int32)
    return ids, w.astype(np.float32)
