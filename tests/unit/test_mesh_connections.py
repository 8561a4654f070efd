"""Connection-matrix files: reading the dfaust2 hierarchy and clear errors for bad files."""
import json
import shutil

import numpy as np
import pytest

from hmr_jax.mesh import connections as cn

MEDIUM = ["pool0", "pool1", "pool2", "pool3", "pool4", "pool5", "pool6",
          "unpool6", "unpool5", "unpool4", "unpool3", "unpool2", "unpool1", "unpool0"]


def _array(rows, in_points, m):
    """Build a file-format array from {row: [(id, dist), ...]} lists (padding added)."""
    out = np.empty((len(rows), 1 + 2 * m), np.int32)
    for p, nb in enumerate(rows):
        out[p, 0] = len(nb)
        pairs = list(nb) + [(in_points, -1)] * (m - len(nb))
        out[p, 1:] = np.asarray(pairs, np.int32).reshape(-1)
    return out


SMALL = _array([[(0, 0), (1, 1)], [(2, 0)], [(1, 0), (2, 1), (3, 1)]], in_points=4, m=3)


@pytest.fixture(scope="module")
def medium(reference_dir, parity_dir):
    sums = json.loads((parity_dir / "mesh_vqvae.json").read_text())["connection_files_sha256"]
    folder = reference_dir / "ConnectionMatrices"
    return folder, sums, cn.load_hierarchy(folder, MEDIUM, initial="pool0", sha256=sums)


def test_medium_hierarchy_point_counts_and_padding(medium):
    folder, _, layers = medium
    counts = [(l.in_points, l.out_points) for l in layers]
    down = [6890, 6890, 1925, 1925, 400, 400, 54, 54]
    assert counts[:7] == list(zip(down[:7], down[1:8]))
    assert counts[7:] == [(a, b) for b, a in reversed(list(zip(down[:7], down[1:8])))]
    for layer in layers:
        real = layer.mask > 0
        # mask, count column and padding id all agree, and the layer round-trips to the file bytes.
        np.testing.assert_array_equal(real.sum(1), layer.neighbor_counts)
        assert np.all(layer.neighbor_ids[~real] == layer.in_points)
        assert np.all(layer.neighbor_ids[real] < layer.in_points)
        assert np.all(layer.safe_ids < layer.in_points)
        np.testing.assert_array_equal(layer.to_array(), np.load(cn.connection_path(folder, layer.name)))
    assert [l.name for l in layers] == MEDIUM
    assert layers[1].max_neighbors == 32 and layers[5].max_neighbors == 66


def test_in_points_inferred_from_padding_matches_initial(medium):
    folder, _, layers = medium
    again = cn.load_hierarchy(folder, MEDIUM[:3])
    assert [l.in_points for l in again] == [l.in_points for l in layers[:3]]


def test_checksum_mismatch_names_the_file(medium, tmp_path):
    folder, sums, _ = medium
    bad = dict(sums, **{"_pool2.npy": "0" * 64})
    with pytest.raises(cn.ConnectionFileError, match=r"_pool2\.npy has sha256 .* expected 0{64}"):
        cn.load_hierarchy(folder, MEDIUM, initial="pool0", sha256=bad)


def test_missing_file_names_it(medium, tmp_path):
    folder, _, _ = medium
    for name in MEDIUM:
        if name != "pool3":
            shutil.copy(cn.connection_path(folder, name), tmp_path)
    with pytest.raises(cn.ConnectionFileError, match=r"_pool3\.npy does not exist"):
        cn.load_hierarchy(tmp_path, MEDIUM, in_points=6890)
    with pytest.raises(cn.ConnectionFileError, match="does not exist"):
        cn.load_hierarchy(tmp_path / "nowhere", MEDIUM)


def test_previous_layer_size_must_match_padding(medium):
    folder, _, _ = medium
    # pool2 reads 1925 points; placing it right after pool0 (6890 points) must be refused.
    with pytest.raises(cn.ConnectionFileError, match=r"_pool2\.npy.*padding id 6890"):
        cn.load_hierarchy(folder, ["pool0", "pool2"], in_points=6890)


def test_small_array_parses():
    layer = cn.parse_connection_array(SMALL)
    assert (layer.in_points, layer.out_points, layer.max_neighbors) == (4, 3, 3)
    np.testing.assert_array_equal(layer.neighbor_counts, [2, 1, 3])
    np.testing.assert_array_equal(layer.mask, [[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(layer.distances[0], [0, 1, -1])
    np.testing.assert_array_equal(layer.safe_ids, [[0, 1, 0], [2, 0, 0], [1, 2, 3]])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a.astype(np.float32), "dtype float32"),
        (lambda a: a[:, :-1], "odd number"),
        (lambda a: a[0], "shape"),
        # count column smaller than the real neighbours / larger than them
        (lambda a: _set(a, (2, 0), 2), "row 2 slot 2 is past the neighbour count 2 .* expected the padding id 4"),
        (lambda a: _set(a, (0, 0), 3), "row 0 neighbour 2 has id 4, which is the padding id"),
        (lambda a: _set(a, (2, 5), 7), "row 2 neighbour 2 has id 7, which is out of range"),
        (lambda a: _set(a, (2, 1), -1), "row 2 neighbour 0 has id -1"),
        (lambda a: _set(a, (1, 0), 0), "row 1 says 0 neighbours"),
        (lambda a: _set(a, (1, 0), 4), "row 1 says 4 neighbours"),
        (lambda a: _set(a, (0, 6), 2), "padding slot 2 of row 0 has distance 2"),
        (lambda a: _set(a, (0, 2), -3), "row 0 neighbour 0 has a negative distance"),
    ],
)
def test_bad_arrays_are_named_and_explained(tmp_path, edit, message):
    path = tmp_path / "_pool9.npy"
    np.save(path, edit(SMALL.copy()))
    with pytest.raises(cn.ConnectionFileError, match=message) as info:
        cn.read_connection_file(path, in_points=4)
    assert "_pool9.npy" in str(info.value)


def _set(a, index, value):
    a[index] = value
    return a


def test_unreadable_file_and_unpadded_inference(tmp_path):
    path = tmp_path / "_pool0.npy"
    path.write_bytes(b"not a numpy file")
    with pytest.raises(cn.ConnectionFileError, match="cannot be read"):
        cn.read_connection_file(path)
    full = _array([[(0, 0), (1, 1)], [(1, 0), (0, 1)]], in_points=2, m=2)
    with pytest.raises(cn.ConnectionFileError, match="pass in_points"):
        cn.parse_connection_array(full)
    assert cn.parse_connection_array(full, in_points=2).in_points == 2
