"""The pooling / unpooling hierarchy generator: the released dfaust2 files, any mesh, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import trimesh

from hmr_jax.mesh import build, io as mesh_io

DFAUST_LEVELS = ["1", "2", "1", "2", "1", "2", "1", "2"]


def _graph_matrix(adj_pairs, n):
    a, b = adj_pairs
    m = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)).tocsr()
    return ((m + m.T) > 0).astype(np.float64)


def _mesh_matrix(faces, n):
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return _graph_matrix((e[:, 0], e[:, 1]), n)


def _rows(arr):
    """File array -> (counts, ids, dists)."""
    return arr[:, 0], arr[:, 1::2], arr[:, 2::2]


def check_level_format(arr, in_points, out_points, max_dist):
    """Padding, counts, id and distance ranges of one connection array."""
    assert arr.dtype == np.int32 and arr.ndim == 2 and arr.shape[1] % 2 == 1
    assert arr.shape[0] == out_points
    counts, ids, dists = _rows(arr)
    m = ids.shape[1]
    assert counts.min() >= 1, "an output vertex connected to no input vertex"
    assert counts.max() == m, "padding wider than the largest neighbourhood"
    real = np.arange(m)[None] < counts[:, None]
    assert (ids[~real] == in_points).all() and (dists[~real] == -1).all()
    assert (ids[real] >= 0).all() and (ids[real] < in_points).all()
    assert (dists[real] >= 0).all() and (dists[real] <= max_dist).all()
    # No vertex listed twice in a row.
    srt = np.sort(np.where(real, ids, -1 - np.arange(m)[None]), axis=1)
    assert (np.diff(srt, axis=1) != 0).all()


def _reach(graph, radius):
    """[R_0, ..., R_radius]: boolean sparse matrices, R_r[i, j] = (hops(i, j) <= r), by scipy."""
    step = (graph + sp.identity(graph.shape[0], format="csr")) > 0
    out = [sp.identity(graph.shape[0], dtype=bool, format="csr")]
    for _ in range(radius):
        out.append(((out[-1].astype(np.int32) @ step.astype(np.int32)) > 0).tocsr())
    return out


def _hops(reach, rows, cols):
    """Hop distance of each (row, col) pair from the reach matrices (len(reach) if farther)."""
    d = np.full(len(rows), len(reach), np.int64)
    for r in reversed(range(len(reach))):
        d[np.asarray(reach[r][rows, cols]).ravel()] = r
    return d


def _pattern(arr):
    counts, ids, dists = _rows(arr)
    m = ids.shape[1]
    real = np.arange(m)[None] < counts[:, None]
    rows = np.repeat(np.arange(arr.shape[0]), counts)
    return rows, ids[real], dists[real]


def check_hierarchy(h, faces, specs):
    """Every structural property the generator promises, checked with scipy sparse reachability
    (independent of the generator's breadth-first walks)."""
    graph = _mesh_matrix(faces, h.num_vertices)
    for k, (lv, spec) in enumerate(zip(h.levels, specs)):
        n_in, n_out = lv.in_points, lv.out_points
        assert n_in == (h.num_vertices if k == 0 else h.levels[k - 1].out_points)
        check_level_format(lv.pool, n_in, n_out, spec.radius_pool)
        check_level_format(lv.unpool, n_out, n_in, spec.radius_unpool)
        centers = lv.centers
        assert centers.shape == (n_out,) and (np.diff(centers) > 0).all()
        reach = _reach(graph, max(spec.radius_pool, spec.radius_unpool, 2 * spec.stride - 1))
        # Centres: no two within stride - 1 hops; every vertex within stride - 1 of a centre.
        near = reach[spec.stride - 1][centers]
        assert near[:, centers].nnz == n_out
        assert (np.asarray(near.sum(0)).ravel() > 0).all()
        # Pool rows: the centre first at distance 0, then exactly the ball of radius r_pool,
        # breadth-first (distances never decrease), each with its true hop distance.
        counts, ids, dists = _rows(lv.pool)
        assert (ids[:, 0] == centers).all() and (dists[:, 0] == 0).all()
        rows, cols, d = _pattern(lv.pool)
        assert len(rows) == reach[spec.radius_pool][centers].nnz
        np.testing.assert_array_equal(_hops(reach, centers[rows], cols), d)
        real = np.arange(ids.shape[1])[None] < counts[:, None]
        assert (np.diff(np.where(real, dists, 10**6), axis=1) >= 0).all()
        # Unpool rows: every centre within r_unpool, in increasing id, with its hop distance.
        rows, cols, d = _pattern(lv.unpool)
        assert len(rows) == reach[spec.radius_unpool][centers].nnz
        np.testing.assert_array_equal(_hops(reach, centers[cols], rows), d)
        assert (d <= spec.radius_unpool).all()
        same_row = rows[1:] == rows[:-1]
        assert (np.diff(cols)[same_row] > 0).all()
        # Next graph: centres joined when within 2 * stride - 1 hops.
        graph = reach[2 * spec.stride - 1][centers][:, centers].astype(np.float64)
        graph.setdiag(0)
        graph.eliminate_zeros()


# ---------------------------------------------------------------------------------------------
# The released SMPL hierarchy
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(reference_dir):
    return mesh_io.read_mesh(reference_dir / "template.ply")


@pytest.fixture(scope="module")
def dfaust(template):
    v, f = template
    return build.build_hierarchy(f, len(v), DFAUST_LEVELS, must_include=build.DFAUST_RED_CENTERS)


def test_reproduces_released_dfaust2_files(dfaust, template, reference_dir):
    check_hierarchy(dfaust, template[1], [build.parse_level(x) for x in DFAUST_LEVELS])
    folder = reference_dir / "ConnectionMatrices"
    for k, lv in enumerate(dfaust.levels):
        for kind, ours in (("pool", lv.pool), ("unpool", lv.unpool)):
            ref = np.load(folder / f"_{kind}{k}.npy")
            assert ours.shape == ref.shape, f"_{kind}{k}: {ours.shape} vs {ref.shape}"
            np.testing.assert_array_equal(ours, ref, err_msg=f"_{kind}{k}")


def test_smpl_hierarchy_structure(template, reference_dir):
    """Default (medium-config) levels without the DFAUST marks: a different but valid
    hierarchy whose point counts follow the released one to within a few percent."""
    v, f = template
    specs = [build.parse_level(x) for x in build.DEFAULT_LEVELS]
    h = build.build_hierarchy(f, len(v), specs)
    assert len(h.levels) == 7
    ref_counts = [np.load(reference_dir / "ConnectionMatrices" / f"_pool{k}.npy").shape[0] for k in range(7)]
    ours = h.point_counts[1:]
    for k, spec in enumerate(specs):
        if spec.stride == 1:
            assert ours[k] == h.point_counts[k]
        else:
            assert abs(ours[k] - ref_counts[k]) <= 0.15 * ref_counts[k]
    check_hierarchy(h, f, specs)
    # Deterministic.
    h2 = build.build_hierarchy(f, len(v), specs)
    for a, b in zip(h.levels, h2.levels):
        np.testing.assert_array_equal(a.pool, b.pool)
        np.testing.assert_array_equal(a.unpool, b.unpool)
    assert h.connection_layer_lst() == [f"pool{k}" for k in range(7)] + [f"unpool{k}" for k in range(6, -1, -1)]


# ---------------------------------------------------------------------------------------------
# Meshes that are not SMPL
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mesh_kind,levels",
    [
        ("icosphere", ["1", "2", "1", "2:2:2", "1", "2"]),
        ("box", ["1", "3:3:2", "1:2:1", "2:1:1"]),
    ],
)
def test_generated_meshes(mesh_kind, levels):
    if mesh_kind == "icosphere":
        m = trimesh.creation.icosphere(subdivisions=3)  # 642 vertices
    else:
        m = trimesh.creation.box(extents=(1.0, 0.4, 0.2)).subdivide().subdivide().subdivide()  # 386 vertices
    f = np.asarray(m.faces, np.int32)
    specs = [build.parse_level(x) for x in levels]
    h = build.build_hierarchy(f, len(m.vertices), specs)
    check_hierarchy(h, f, specs)
    counts = h.point_counts
    for k, spec in enumerate(specs):
        assert (counts[k + 1] == counts[k]) if spec.stride == 1 else (counts[k + 1] < counts[k])
    assert counts[-1] >= 1


def test_disconnected_mesh_and_isolated_vertex():
    a = trimesh.creation.icosphere(subdivisions=1)
    n = len(a.vertices)
    f = np.concatenate([a.faces, a.faces + n]).astype(np.int32)
    # two spheres plus one vertex in no face
    specs = [build.LevelSpec(2, 1, 1), build.LevelSpec(2, 2, 2)]
    h = build.build_hierarchy(f, 2 * n + 1, specs)
    check_hierarchy(h, f, specs)
    c = h.levels[0].centers
    assert (c < n).any() and ((c >= n) & (c < 2 * n)).any() and c[-1] == 2 * n


def test_must_include_centers_survive_every_level():
    m = trimesh.creation.icosphere(subdivisions=2)
    keep = [5, 77, 150]
    h = build.build_hierarchy(m.faces, len(m.vertices), ["2", "2", "1"], must_include=keep)
    ids = np.asarray(keep)
    for lv in h.levels:
        pos = np.searchsorted(lv.centers, ids)
        assert (lv.centers[pos] == ids).all()
        ids = pos


@pytest.mark.parametrize(
    "levels,match",
    [([], "no level"), (["0"], "stride 0"), (["3:3:1"], "radius_unpool 1 < stride - 1"), (["2:x"], "STRIDE")],
)
def test_bad_levels(levels, match):
    m = trimesh.creation.icosphere(subdivisions=1)
    with pytest.raises(build.HierarchyError, match=match):
        build.build_hierarchy(m.faces, len(m.vertices), levels)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def test_cli_writes_loadable_files(tmp_path, capsys):
    m = trimesh.creation.icosphere(subdivisions=3)
    colors = np.full((len(m.vertices), 3), 0.5)
    colors[[10, 300]] = (1.0, 0.0, 0.0)  # MeshConvolution's red marks: these stay centres
    tpl = tmp_path / "sphere.ply"
    mesh_io.write_ply(tpl, m.vertices, m.faces, colors)
    out = tmp_path / "conn"
    assert build.main([str(tpl), str(out), "--levels=1,2,1,2:2:1,1"]) == 0
    printed = capsys.readouterr().out
    assert "connection_layer_lst" in printed and "642" in printed
    meta = json.loads((out / "hierarchy.json").read_text())
    names = meta["connection_layer_lst"]
    assert names == ["pool0", "pool1", "pool2", "pool3", "pool4", "unpool4", "unpool3", "unpool2", "unpool1", "unpool0"]
    assert meta["num_vertices"] == 642 and meta["point_counts"][0] == 642
    # Every file is a valid connection array whose sizes chain through the hierarchy.
    counts = meta["point_counts"]
    for k in range(5):
        pool = np.load(out / f"_pool{k}.npy")
        unpool = np.load(out / f"_unpool{k}.npy")
        check_level_format(pool, counts[k], counts[k + 1], meta["levels"][k]["radius_pool"])
        check_level_format(unpool, counts[k + 1], counts[k], meta["levels"][k]["radius_unpool"])
        centers = np.load(out / f"_center_lst{k}.npy")
        np.testing.assert_array_equal(centers, pool[:, 1])
    assert {10, 300} <= set(np.load(out / "_center_lst1.npy").tolist())
    layers = {d["name"]: d for d in meta["layers"]}
    assert layers["pool3"]["out_points"] == counts[4] and layers["unpool3"]["out_points"] == counts[3]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    # The project's connection reader accepts the files in the config's layer order.
    from hmr_jax.mesh import connections

    loaded = connections.load_hierarchy(out, names, initial="pool0")
    assert [l.out_points for l in loaded] == counts[1:] + counts[-2::-1]
    # A second run refuses to overwrite; bad options fail with a message, not a traceback.
    assert build.main([str(tpl), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert build.main([str(tpl), str(tmp_path / "x"), "--levels=3:1:1"]) == 2
    assert "radius_unpool" in capsys.readouterr().err
    assert build.main([str(tmp_path / "missing.ply"), str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_reproduces_released_files(reference_dir, tmp_path, capsys):
    out = tmp_path / "smpl"
    args = [str(reference_dir / "template.ply"), str(out), "--levels=" + ",".join(build.DEFAULT_LEVELS)]
    assert build.main(args + ["--keep-centers", "dfaust"]) == 0
    assert "54" in capsys.readouterr().out
    for k in range(len(build.DEFAULT_LEVELS)):
        for kind in ("pool", "unpool"):
            ref = np.load(reference_dir / "ConnectionMatrices" / f"_{kind}{k}.npy")
            np.testing.assert_array_equal(np.load(out / f"_{kind}{k}.npy"), ref, err_msg=f"_{kind}{k}")
    assert build.main(args + ["--keep-centers", "1,x"]) == 2
    assert "--keep-centers" in capsys.readouterr().err


def test_stride_center_search_gives_a_sparser_next_level():
    m = trimesh.creation.icosphere(subdivisions=3)
    full = build.build_hierarchy(m.faces, len(m.vertices), ["2", "1"], full_center_search=True)
    short = build.build_hierarchy(m.faces, len(m.vertices), ["2", "1"], full_center_search=False)
    np.testing.assert_array_equal(full.levels[0].pool, short.levels[0].pool)
    assert short.levels[1].pool[:, 0].mean() < full.levels[1].pool[:, 0].mean()
    assert short.levels[1].pool[:, 0].min() >= 2  # still connected to a neighbour


def test_cli_flags_are_absl_and_bad_ones_one_line(tmp_path, capsys):
    """The absl flag style of every command: --help exits 0, a bad enum value / an unknown flag /
    a missing path is one ``error:`` line and status 2, nothing written."""
    assert build.main(["--help"]) == 0
    assert "--levels" in capsys.readouterr().out
    for argv, says in ((["a.ply", str(tmp_path / "o"), "--center-search=wide"], "--center-search"),
                       (["a.ply", str(tmp_path / "o"), "--nope"], "nope"),
                       (["a.ply"], "TEMPLATE and OUT_DIR")):
        assert build.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not (tmp_path / "o").exists()
