"""Build a pooling / unpooling hierarchy for any triangle mesh, in the connection-file format.

This is the graph sampling of the fully convolutional mesh autoencoder (Zhou et al., "Fully
Convolutional Mesh Autoencoder using Efficient Spatially Varying Kernels", NeurIPS 2020), written
from its description and from the files it produces. Level ``k`` works on a graph ``G_k`` (``G_0``:
the mesh edges) and has three numbers: a ``stride`` ``s``, a pooling radius ``r_pool`` and an
unpooling radius ``r_unpool``; every distance is a number of hops on ``G_k``.

1. Centres. A breadth-first walk over ``G_k`` (from the vertices that must stay centres, else
   from vertex 0) looks at each vertex as it is discovered: it becomes a centre when no centre
   lies within ``s - 1`` hops of it. ``s = 1`` keeps every vertex; ``s = 2`` keeps a maximal set
   of vertices no two of which are adjacent. Centres are numbered in increasing old id. A graph
   with several components is walked one component after the other (lowest unvisited id first).
2. Pooling (``_poolK.npy``, one row per centre): the vertices within ``r_pool`` hops of the
   centre, in breadth-first order (the centre first, at distance 0), each with its distance.
3. Unpooling (``_unpoolK.npy``, one row per vertex of ``G_k``): the centres within ``r_unpool``
   hops of the vertex, in increasing centre id, each with its distance: the pooling
   neighbourhoods of radius ``r_unpool``, transposed. Every vertex needs a centre within
   ``r_unpool`` hops, which ``r_unpool >= s - 1`` guarantees.
4. The next graph ``G_{k+1}`` joins each centre to every centre within ``2s - 1`` hops (or ``s``
   hops with ``full_center_search=False``), itself included, in breadth-first order.

Rows are written as ``N, (id, distance) * N, (padding id, -1) * (M - N)`` with ``M`` the largest
``N`` of the file and the padding id the number of input points (see ``hmr_jax.mesh.connections``).
The files also hold ``_center_lstK.npy``: int32 ``(out_points,)``, the ``G_k`` id of each centre
(the released MeshConvolution files hold unreadable bytes there; nothing in hmr_jax reads them).

Neighbour order follows the order in which faces list the edges. The released dfaust2 files
(Mesh-VQ-VAE's ``body_models/ConnectionMatrices``) are reproduced bit for bit from the SMPL
template with levels ``1 2 1 2 1 2 1 2`` and the centres MeshConvolution's DFAUST template marks
in red (:data:`DFAUST_RED_CENTERS`, ``--keep-centers dfaust``).

Command line::

    python -m hmr_jax.mesh.build TEMPLATE.ply OUT_DIR --levels=1,2,1,2,1,2,1

writes ``_pool0..6.npy``, ``_unpool0..6.npy``, ``_center_lst0..6.npy`` and ``hierarchy.json``
(layer names, point counts and the ``connection_layer_lst`` for a Mesh-VQ-VAE config).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time
from typing import Sequence

import numpy as np
from absl import flags

from hmr_jax.cli import parse_command
from hmr_jax.files import atomic_open, atomic_write
from hmr_jax.mesh import io as mesh_io

__all__ = [
    "LevelSpec",
    "PoolLevel",
    "Hierarchy",
    "HierarchyError",
    "parse_level",
    "mesh_graph",
    "build_hierarchy",
    "build_from_file",
    "write_hierarchy",
    "main",
]

#: The sampling of MeshConvolution's dfaust meshes (strides 1, 2, 1, 2, ...; radii = strides).
#: Its first seven levels give SMPL 6890 -> 6890 -> 1925 -> 1925 -> 400 -> 400 -> 54 -> 54 points.
DEFAULT_LEVELS = ("1", "2", "1", "2", "1", "2", "1")

#: SMPL vertex ids that MeshConvolution's DFAUST template (``data/DFAUST/template.obj``) colours
#: pure red, i.e. centres kept at every level of the released dfaust2 hierarchy.
DFAUST_RED_CENTERS = (412, 2000, 3077, 3443, 5459, 6843)


class HierarchyError(ValueError):
    """A hierarchy cannot be built: bad level parameters, a mesh or level with no vertex, or a
    vertex that no centre reaches within the unpooling radius."""


@dataclasses.dataclass(frozen=True)
class LevelSpec:
    """How one level samples its graph.

    Attributes:
      stride: minimum spacing of the centres in hops (1: keep every vertex).
      radius_pool: hops from a centre to the vertices it pools (>= 0).
      radius_unpool: hops from a vertex to the centres it is rebuilt from (>= stride - 1).
    """

    stride: int
    radius_pool: int
    radius_unpool: int

    def validate(self, index: int) -> None:
        """Raise :class:`HierarchyError` naming level ``index`` when the numbers cannot work."""
        if self.stride < 1:
            raise HierarchyError(f"level {index}: stride {self.stride} must be >= 1")
        if self.radius_pool < 0 or self.radius_unpool < 0:
            raise HierarchyError(f"level {index}: radii must be >= 0 (got {self.radius_pool}, {self.radius_unpool})")
        if self.radius_unpool < self.stride - 1:
            raise HierarchyError(
                f"level {index}: radius_unpool {self.radius_unpool} < stride - 1 = {self.stride - 1}: some "
                "vertices would reach no centre; use radius_unpool >= stride - 1"
            )


def parse_level(text: str) -> LevelSpec:
    """Parse ``"S"`` (stride S, both radii S) or ``"S:RP:RU"`` (stride, pool and unpool radii)."""
    parts = text.split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise HierarchyError(f"level {text!r}: expected STRIDE or STRIDE:RADIUS_POOL:RADIUS_UNPOOL integers") from None
    if len(nums) == 1:
        return LevelSpec(nums[0], nums[0], nums[0])
    if len(nums) == 3:
        return LevelSpec(*nums)
    raise HierarchyError(f"level {text!r}: expected STRIDE or STRIDE:RADIUS_POOL:RADIUS_UNPOOL")


@dataclasses.dataclass(frozen=True, eq=False)
class PoolLevel:
    """One level of the hierarchy.

    Attributes:
      spec: the level's sampling numbers.
      pool: (out_points, 1 + 2M) int32 pooling connections (the ``_poolK.npy`` array).
      unpool: (in_points, 1 + 2M') int32 unpooling connections (``_unpoolK.npy``).
      centers: (out_points,) int32 input-vertex id of each output vertex.
      in_points: vertices of the level's graph.
      out_points: centres kept.
    """

    spec: LevelSpec
    pool: np.ndarray
    unpool: np.ndarray
    centers: np.ndarray
    in_points: int
    out_points: int


@dataclasses.dataclass(frozen=True, eq=False)
class Hierarchy:
    """A whole pooling / unpooling hierarchy.

    Attributes:
      num_vertices: vertex count of the mesh.
      levels: one :class:`PoolLevel` per level, finest first.
    """

    num_vertices: int
    levels: tuple[PoolLevel, ...]

    @property
    def point_counts(self) -> list[int]:
        """Vertex counts from the mesh down to the coarsest level (len(levels) + 1 entries)."""
        return [self.num_vertices] + [lv.out_points for lv in self.levels]

    def connection_layer_lst(self) -> list[str]:
        """Layer names for a Mesh-VQ-VAE config: ``pool0 .. poolN-1, unpoolN-1 .. unpool0``."""
        n = len(self.levels)
        return [f"pool{k}" for k in range(n)] + [f"unpool{k}" for k in reversed(range(n))]


# ---------------------------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------------------------


def mesh_graph(faces: np.ndarray, num_vertices: int) -> list[list[int]]:
    """The edge graph of a triangle mesh as ordered adjacency lists.

    Edges are taken face by face, ``(a, b), (b, c), (c, a)``; each new edge appends ``b`` to
    ``a``'s list and ``a`` to ``b``'s, so the order of every list is fixed by the face order.

    Args:
      faces: (F, 3) int vertex ids.
      num_vertices: V (vertices in no face get an empty list).
    Returns:
      V lists of neighbour ids.
    """
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise HierarchyError(f"faces have shape {faces.shape}, expected (F, 3) triangles")
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise HierarchyError(f"faces refer to vertex ids outside 0..{num_vertices - 1}")
    # Directed edges in visiting order; keep the first occurrence of each undirected edge.
    a = faces.reshape(-1).astype(np.int64)
    b = np.roll(faces, -1, axis=1).reshape(-1).astype(np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    key = lo[keep] * num_vertices + hi[keep]
    a, b = a[keep], b[keep]
    _, first = np.unique(key, return_index=True)
    first.sort()
    a, b = a[first], b[first]
    # Insertion order: edge e adds b to a then a to b. Stable sort by owner keeps that order.
    owner = np.stack([a, b], 1).reshape(-1)
    other = np.stack([b, a], 1).reshape(-1)
    order = np.argsort(owner, kind="stable")
    owner, other = owner[order], other[order]
    bounds = np.searchsorted(owner, np.arange(num_vertices + 1))
    other_l = other.tolist()
    return [other_l[bounds[i] : bounds[i + 1]] for i in range(num_vertices)]


def _ball(adj: list[list[int]], p: int, radius: int) -> list[tuple[int, int]]:
    """Vertices within ``radius`` hops of ``p`` in breadth-first order, as (id, hops)."""
    out = [(p, 0)]
    seen = {p}
    frontier = [p]
    for r in range(1, radius + 1):
        nxt = []
        for q in frontier:
            for n in adj[q]:
                if n not in seen:
                    seen.add(n)
                    nxt.append(n)
                    out.append((n, r))
        if not nxt:
            break
        frontier = nxt
    return out


def _select_centers(adj: list[list[int]], stride: int, must_include: Sequence[int]) -> np.ndarray:
    """Step 1 of the module docstring: sorted ids of the centres."""
    v = len(adj)
    radius = stride - 1
    cover = np.full(v, -1, np.int8)  # -1 unseen, 0 covered, 1 centre

    def can_be_center(p: int) -> bool:
        if radius == 0:
            return True
        seen = {p}
        frontier = [p]
        for _ in range(radius):
            nxt = []
            for q in frontier:
                for n in adj[q]:
                    if cover[n] == 1:
                        return False
                    if n not in seen:
                        seen.add(n)
                        nxt.append(n)
            frontier = nxt
        return True

    def walk(queue: collections.deque) -> None:
        while queue:
            s = queue.popleft()
            for p in adj[s]:
                if cover[p] >= 0:
                    continue
                cover[p] = 1 if can_be_center(p) else 0
                queue.append(p)

    queue = collections.deque()
    for s in must_include:
        cover[s] = 1
        queue.append(int(s))
    if not must_include:
        queue.append(0)  # the start is judged when a neighbour reaches it, like any vertex
    walk(queue)
    # Vertices the walk never reached (another component, or an isolated vertex).
    while True:
        unseen = np.flatnonzero(cover < 0)
        if unseen.size == 0:
            break
        s = int(unseen[0])
        walk(collections.deque([s]))
        if cover[s] < 0:
            cover[s] = 1 if can_be_center(s) else 0
    return np.flatnonzero(cover == 1).astype(np.int64)


def _to_rows(rows: list[list[tuple[int, int]]], pad_id: int) -> np.ndarray:
    """Ragged (id, distance) lists -> the padded (len(rows), 1 + 2M) int32 file array."""
    counts = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    m = int(counts.max()) if len(rows) else 0
    out = np.empty((len(rows), 1 + 2 * m), np.int32)
    out[:, 0] = counts
    out[:, 1::2] = pad_id
    out[:, 2::2] = -1
    flat = np.asarray([x for r in rows for x in r], np.int32).reshape(-1, 2)
    row = np.repeat(np.arange(len(rows)), counts)
    col = np.arange(flat.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
    out[row, 1 + 2 * col] = flat[:, 0]
    out[row, 2 + 2 * col] = flat[:, 1]
    return out


def _build_level(
    adj: list[list[int]], spec: LevelSpec, must_include: Sequence[int], full_center_search: bool, index: int
) -> tuple[PoolLevel, list[list[int]], list[int]]:
    v = len(adj)
    centers = _select_centers(adj, spec.stride, must_include)
    new_id = np.full(v, -1, np.int64)
    new_id[centers] = np.arange(centers.size)
    centers_l = centers.tolist()

    pool_rows = [_ball(adj, c, spec.radius_pool) for c in centers_l]
    unpool_rows: list[list[tuple[int, int]]] = [[] for _ in range(v)]
    for i, c in enumerate(centers_l):
        for t, d in _ball(adj, c, spec.radius_unpool):
            unpool_rows[t].append((i, d))
    lonely = [t for t in range(v) if not unpool_rows[t]]
    if lonely:
        raise HierarchyError(
            f"level {index}: {len(lonely)} vertices (first {lonely[0]}) have no centre within "
            f"radius_unpool={spec.radius_unpool} hops; increase radius_unpool"
        )
    search = 2 * spec.stride - 1 if full_center_search else spec.stride
    is_center = new_id >= 0
    next_adj = [[int(new_id[q]) for q, _ in _ball(adj, c, search) if is_center[q]] for c in centers_l]
    level = PoolLevel(
        spec=spec,
        pool=_to_rows(pool_rows, pad_id=v),
        unpool=_to_rows(unpool_rows, pad_id=int(centers.size)),
        centers=centers.astype(np.int32),
        in_points=v,
        out_points=int(centers.size),
    )
    next_must = [int(new_id[s]) for s in must_include]
    return level, next_adj, next_must


def build_hierarchy(
    faces: np.ndarray,
    num_vertices: int,
    levels: Sequence[LevelSpec | str],
    must_include: Sequence[int] = (),
    full_center_search: bool = True,
) -> Hierarchy:
    """Build the pooling / unpooling hierarchy of a triangle mesh (see the module docstring).

    Args:
      faces: (F, 3) int vertex ids of the mesh.
      num_vertices: V.
      levels: one :class:`LevelSpec` (or ``"S"`` / ``"S:RP:RU"`` string) per level, finest first.
      must_include: vertex ids that must stay centres at every level (MeshConvolution marks them
        red in the template).
      full_center_search: join centres within ``2s - 1`` hops in the next graph (True, the
        released setting) or within ``s`` hops (fewer edges).
    Returns:
      The :class:`Hierarchy`. Deterministic: the same inputs give the same arrays.
    Raises:
      HierarchyError: no level, bad level numbers, bad faces, or an unreachable vertex.
    """
    specs = [parse_level(x) if isinstance(x, str) else x for x in levels]
    if not specs:
        raise HierarchyError("no level given: pass at least one level (e.g. --levels=1,2,1,2)")
    for i, s in enumerate(specs):
        s.validate(i)
    num_vertices = int(num_vertices)
    if num_vertices < 1:
        raise HierarchyError("the mesh has no vertex")
    must = list(dict.fromkeys(int(x) for x in must_include))
    if any(m < 0 or m >= num_vertices for m in must):
        raise HierarchyError(f"must_include holds ids outside 0..{num_vertices - 1}")
    adj = mesh_graph(faces, num_vertices)
    out = []
    for i, spec in enumerate(specs):
        level, adj, must = _build_level(adj, spec, must, full_center_search, i)
        out.append(level)
    return Hierarchy(num_vertices=num_vertices, levels=tuple(out))


def red_vertices(colors: np.ndarray | None) -> list[int]:
    """Ids of vertices coloured pure red (1, 0, 0): MeshConvolution's "must stay a centre" marks."""
    if colors is None:
        return []
    c = np.asarray(colors)
    return np.flatnonzero((c[:, 0] == 1) & (c[:, 1] == 0) & (c[:, 2] == 0)).tolist()


def build_from_file(
    template: str | os.PathLike,
    levels: Sequence[LevelSpec | str] = DEFAULT_LEVELS,
    use_red_centers: bool = True,
    full_center_search: bool = True,
    keep_centers: Sequence[int] = (),
) -> Hierarchy:
    """Read a ``.ply`` / ``.obj`` template and build its hierarchy (see :func:`build_hierarchy`).

    Args:
      template: the mesh file.
      levels: per-level sampling, finest first.
      use_red_centers: pure-red vertices of the template stay centres at every level.
      full_center_search: see :func:`build_hierarchy`.
      keep_centers: more vertex ids that stay centres (listed before the red ones).
    """
    vertices, faces, colors = mesh_io.read_mesh(template, return_colors=True)
    must = list(keep_centers) + (red_vertices(colors) if use_red_centers else [])
    return build_hierarchy(faces, len(vertices), levels, must, full_center_search)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------



def _suggested_model(h: Hierarchy) -> dict:
    """Per-layer convolution / pooling pattern of the released configs, for this hierarchy."""
    enc_w, enc_r, dec_w, dec_r = [], [], [], []
    for lv in h.levels:
        resample = lv.out_points != lv.in_points
        enc_w.append(0 if resample else 9)
        enc_r.append(1 if resample else 0)
    for lv in reversed(h.levels):
        resample = lv.out_points != lv.in_points
        dec_w.append(0 if resample else 9)
        dec_r.append(1 if resample else 0)
    return {"weight_num_lst": enc_w + dec_w, "residual_rate_lst": enc_r + dec_r}


def describe(h: Hierarchy, template: str | None = None, files: dict | None = None) -> dict:
    """JSON-serialisable description of a hierarchy (what ``hierarchy.json`` holds)."""
    layers = []
    for k, lv in enumerate(h.levels):
        for kind, arr, n_in, n_out in (
            ("pool", lv.pool, lv.in_points, lv.out_points),
            ("unpool", lv.unpool, lv.out_points, lv.in_points),
        ):
            layers.append({
                "name": f"{kind}{k}", "file": f"_{kind}{k}.npy", "in_points": n_in, "out_points": n_out,
                "max_neighbors": (arr.shape[1] - 1) // 2, "mean_neighbors": round(float(arr[:, 0].mean()), 3),
                "stride": lv.spec.stride,
                "radius": lv.spec.radius_pool if kind == "pool" else lv.spec.radius_unpool,
            })  # fmt: skip
    out = {
        "format": "MeshConvolution connection matrices: int32 (out_points, 1 + 2M) rows "
        "N, (input_id, hops) * N, (in_points, -1) padding",
        "template": template,
        "num_vertices": h.num_vertices,
        "levels": [dataclasses.asdict(lv.spec) for lv in h.levels],
        "point_counts": h.point_counts,
        "latent_points": h.point_counts[-1],
        "layers": layers,
        "connection_layer_lst": h.connection_layer_lst(),
        "initial_connection_fn": "_pool0.npy",
        "suggested_model": _suggested_model(h),
    }
    if files:
        out["sha256"] = files
    return out


def write_hierarchy(
    h: Hierarchy, out_dir: str | os.PathLike, template: str | None = None, overwrite: bool = False
) -> pathlib.Path:
    """Write ``_poolK.npy``, ``_unpoolK.npy``, ``_center_lstK.npy`` and ``hierarchy.json``.

    Every file is written under a temporary name and renamed.

    Args:
      h: the hierarchy.
      out_dir: destination folder (created when missing).
      template: the template path, recorded in the JSON.
      overwrite: replace existing connection files (otherwise they are an error).
    Returns:
      The path of ``hierarchy.json``.
    Raises:
      FileExistsError: the folder already holds connection files and ``overwrite`` is False.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(p.name for p in out_dir.glob("_*pool*.npy")) + (
        ["hierarchy.json"] if (out_dir / "hierarchy.json").exists() else []
    )
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds {', '.join(existing[:4])}{' ...' if len(existing) > 4 else ''}; "
            "pass --overwrite to replace them or choose another folder"
        )
    sums = {}
    for k, lv in enumerate(h.levels):
        files = ((f"_pool{k}.npy", lv.pool), (f"_unpool{k}.npy", lv.unpool), (f"_center_lst{k}.npy", lv.centers))
        for name, arr in files:
            with atomic_open(out_dir / name, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            sums[name] = hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
    meta = describe(h, template, sums)
    path = out_dir / "hierarchy.json"
    atomic_write(path, json.dumps(meta, indent=2) + "\n")
    return path


def summary(h: Hierarchy) -> str:
    """A readable table of the hierarchy (one line per level)."""
    lines = [
        f"mesh: {h.num_vertices} vertices",
        "level  stride  r_pool  r_unpool   in_points -> out_points   pool M (mean)   unpool M (mean)",
    ]
    for k, lv in enumerate(h.levels):
        s = lv.spec
        lines.append(
            f"{k:5d}  {s.stride:6d}  {s.radius_pool:6d}  {s.radius_unpool:8d}   {lv.in_points:9d} -> {lv.out_points:10d}"
            f"   {(lv.pool.shape[1] - 1) // 2:6d} ({lv.pool[:, 0].mean():5.1f})"
            f"   {(lv.unpool.shape[1] - 1) // 2:8d} ({lv.unpool[:, 0].mean():5.1f})"
        )
    lines.append("connection_layer_lst: " + json.dumps(h.connection_layer_lst()))
    return "\n".join(lines)


def _parse_ids(text: str) -> list[int]:
    text = text.strip()
    if not text:
        return []
    if text.lower() == "dfaust":
        return list(DFAUST_RED_CENTERS)
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HierarchyError(f"--keep-centers {text!r}: expected comma-separated vertex ids or 'dfaust'") from None


def _define(fv: flags.FlagValues) -> None:
    """This command's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_list("levels", list(DEFAULT_LEVELS), "one entry per level, finest first, comma-separated: STRIDE "
                      "(radii = stride) or STRIDE:RADIUS_POOL:RADIUS_UNPOOL in hops", flag_values=fv)
    flags.DEFINE_boolean("no-red-centers", False, "ignore pure-red template vertices (by default they stay "
                         "centres)", flag_values=fv)
    flags.DEFINE_string("keep-centers", "", "comma-separated vertex ids that stay centres at every level, or "
                        "'dfaust' for the ids that reproduce the released dfaust2 SMPL files (with "
                        "--levels=1,2,1,2,1,2,1,2)", flag_values=fv)
    flags.DEFINE_enum("center-search", "full", ["full", "stride"], "next-level graph joins centres within "
                      "2*stride-1 hops (full) or stride hops", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "replace connection files already in OUT_DIR", flag_values=fv)


_USAGE = """python -m hmr_jax.mesh.build TEMPLATE OUT_DIR [--levels=1,2,1,2,1,2,1] [flags]

Build a pooling/unpooling hierarchy (MeshConvolution connection matrices) for a triangle mesh:
TEMPLATE (.ply or .obj) -> OUT_DIR/_poolK.npy, _unpoolK.npy, _center_lstK.npy and hierarchy.json.
Example (SMPL, 54 latent points; with --keep-centers=dfaust the files equal the released
Mesh-VQ-VAE ones): python -m hmr_jax.mesh.build body_models/template.ply body_models/ConnectionMatrices
--levels=1,2,1,2,1,2,1"""


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``python -m hmr_jax.mesh.build TEMPLATE OUT_DIR --levels=...``; 0 on
    success, 2 (after one ``error:`` line) on a bad flag, mesh or hierarchy."""
    try:
        args = parse_command(argv, _define, "python -m hmr_jax.mesh.build", _USAGE, positional="paths")
        if args is None:   # --help
            return 0
        if len(args.paths) != 2:
            raise ValueError(f"expected TEMPLATE and OUT_DIR, got {len(args.paths)} argument(s) "
                             "(see python -m hmr_jax.mesh.build --help)")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.template, args.out_dir = args.paths
    try:
        specs = [parse_level(x) for x in args.levels]
        keep = _parse_ids(args.keep_centers)
        t0 = time.perf_counter()
        h = build_from_file(args.template, specs, not args.no_red_centers, args.center_search == "full", keep)
        dt = time.perf_counter() - t0
        path = write_hierarchy(h, args.out_dir, template=str(args.template), overwrite=args.overwrite)
    except (HierarchyError, mesh_io.MeshFileError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(h))
    print(f"built in {dt:.2f} s; wrote {len(h.levels) * 3} .npy files and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
