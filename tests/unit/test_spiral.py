"""Spiral neighbourhoods and the spiral-convolution autoencoder: shapes, gradients, learning."""
from __future__ import annotations

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import trimesh

from hmr_jax.geometry.normals import vertex_normals
from hmr_jax.mesh import build, connections
from hmr_jax.mesh import io as mesh_io
from hmr_jax.mesh import spiral as spiral_lib
from hmr_jax.models import spiral as spiral_models

LEVELS = ["1", "2", "1", "2", "1"]
CHANNELS = [16, 16, 32, 32, 8, 32, 32, 16, 16, 3]


@pytest.fixture(scope="module")
def sphere_setup(tmp_path_factory):
    """A 642-vertex icosphere, its hierarchy written by the CLI, and a spiral config for it."""
    root = tmp_path_factory.mktemp("spiral")
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    template = root / "sphere.ply"
    mesh_io.write_ply(template, m.vertices, m.faces)
    assert build.main([str(template), str(root / "conn"), "--levels=" + ",".join(LEVELS)]) == 0
    meta = json.loads((root / "conn" / "hierarchy.json").read_text())
    config = {
        "conv": "spiral",
        "autoencoder": {
            "connection_folder": str(root / "conn"),
            "initial_connection": "pool0",
            "layers": meta["connection_layer_lst"],
            "channels": CHANNELS,
        },
        "quantizer": {"num_embeddings": 32, "embedding_dim": CHANNELS[4]},
        "spiral": {"template": str(template), "length": 9},
    }
    v, f = mesh_io.read_mesh(template)
    return {"config": config, "vertices": v, "faces": f, "meta": meta, "root": root}


def _meshes(vertices, n, seed):
    """Smoothly deformed copies of the template: anisotropic scale, shift and low-frequency bumps."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scale = rng.uniform(0.7, 1.3, (1, 3))
        d = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
        bump = 0.1 * np.sin(d @ rng.normal(size=(3, 2)) * 2.0).sum(1, keepdims=True)
        out.append(vertices * scale * (1 + bump) + rng.normal(0, 0.05, (1, 3)))
    return np.asarray(out, np.float32)


# ---------------------------------------------------------------------------------------------
# Spirals
# ---------------------------------------------------------------------------------------------


def test_first_ring_is_the_counter_clockwise_fan(sphere_setup):
    v, f = sphere_setup["vertices"], sphere_setup["faces"]
    adj = spiral_lib.mesh_adjacency(f, len(v))
    spirals = spiral_lib.spiral_indices(adj, v, vertex_normals(v, f).astype(np.float32), length=7)
    oriented = {tuple(t) for face in f.tolist() for t in (face, face[1:] + face[:1], face[2:] + face[:2])}
    for i in range(len(v)):
        nb = adj.indices[adj.indptr[i] : adj.indptr[i + 1]]
        assert spirals[i, 0] == i
        ring = spirals[i, 1 : 1 + len(nb)].tolist()
        assert sorted(ring) == sorted(nb.tolist())
        # Consecutive ring vertices form a face with the centre, oriented like the mesh.
        for a, b in zip(ring, ring[1:] + ring[:1]):
            assert (i, a, b) in oriented, f"vertex {i}: ({a}, {b}) is not the next edge of its fan"


def test_spiral_hierarchy_levels(sphere_setup):
    cfg = sphere_setup["config"]["autoencoder"]
    layers = connections.load_hierarchy(cfg["connection_folder"], cfg["layers"][:5], initial="pool0")
    v, f = sphere_setup["vertices"], sphere_setup["faces"]
    h = spiral_lib.build_spiral_hierarchy(v, f, layers, length=[9, 7, 5], dilation=1)
    counts = sphere_setup["meta"]["point_counts"]
    assert [lv.num_points for lv in h.levels] == [counts[0], counts[2], counts[4]]
    for lv, length in zip(h.levels, [9, 7, 5]):
        s = lv.spirals
        assert s.shape == (lv.num_points, length) and s.dtype == np.int32
        assert (s[:, 0] == np.arange(lv.num_points)).all()
        assert s.min() >= 0 and s.max() <= lv.num_points
        for row in s:  # no vertex twice in a spiral (padding aside)
            real = row[row < lv.num_points]
            assert len(set(real.tolist())) == len(real)
        g = lv.graph
        assert (g != g.T).nnz == 0 and g.diagonal().sum() == 0
        # Second entry is a graph neighbour.
        assert np.asarray(g[np.arange(lv.num_points), s[:, 1]]).all()
    # Coarse vertices sit at their centres' template positions.
    np.testing.assert_array_equal(h.levels[1].positions, v[h.levels[1].template_ids])
    np.testing.assert_array_equal(h.levels[1].template_ids, layers[1].neighbor_ids[:, 0])
    # Dilated spirals skip entries of the plain one.
    plain = spiral_lib.spiral_indices(h.levels[0].graph, v, h.levels[0].normals, 1 + 4 * 2)
    dil = spiral_lib.spiral_indices(h.levels[0].graph, v, h.levels[0].normals, 5, dilation=2)
    np.testing.assert_array_equal(dil, plain[:, ::2])


def test_averaging_weights(sphere_setup):
    cfg = sphere_setup["config"]["autoencoder"]
    layers = connections.load_hierarchy(cfg["connection_folder"], cfg["layers"], initial="pool0")
    for layer in layers:
        for mode in ("uniform", "distance"):
            ids, w = spiral_lib.averaging_weights(layer, mode)
            np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
            assert (w[layer.mask == 0] == 0).all() and (w[layer.mask > 0] > 0).all()
            assert ids.max() < layer.in_points
        _, w = spiral_lib.averaging_weights(layer, "distance")
        d = layer.distances
        near, far = (d == 0) & (layer.mask > 0), (d == 2)
        rows = near.any(1) & far.any(1)
        if rows.any():  # nearer inputs weigh more
            assert (w[rows][near[rows]].min() > w[rows][far[rows]].max() * 0.99)


@pytest.mark.parametrize("channels_in,channels_out", [(3, 8), (8, 4)])
def test_spiral_conv_equals_dense_over_concatenated_neighbours(channels_in, channels_out):
    """Both gather strategies equal the definition, padding included (a 3-vertex component
    cannot fill a 9-long spiral)."""
    ico = trimesh.creation.icosphere(subdivisions=0)
    v = np.concatenate([ico.vertices, [[3, 0, 0], [3, 1, 0], [3, 0, 1]]]).astype(np.float32)
    f = np.concatenate([ico.faces, [[12, 13, 14]]])
    graph = spiral_lib.mesh_adjacency(f, len(v))
    spirals = spiral_lib.spiral_indices(graph, v, vertex_normals(v, f).astype(np.float32), length=9)
    assert (spirals[12:, 3:] == len(v)).all() and (spirals[:12] < len(v)).all()
    level = spiral_lib.SpiralLevel(len(v), spirals, v, v, np.arange(len(v)), graph)
    conv = spiral_models.SpiralConv(level, channels_out)
    x = np.random.default_rng(0).normal(size=(len(v), 2, channels_in)).astype(np.float32)
    params = conv.init(jax.random.PRNGKey(0), jnp.asarray(x))
    params = jax.tree.map(lambda a: a + 0.1, params)  # non-zero bias too
    got = np.asarray(conv.apply(params, jnp.asarray(x)))
    padded = np.concatenate([x, np.zeros((1,) + x.shape[1:], np.float32)])
    cat = padded[spirals].transpose(0, 2, 1, 3).reshape(len(v), 2, -1)  # (P, B, L * C)
    lin = cat @ np.asarray(params["params"]["kernel"]) + np.asarray(params["params"]["bias"])
    want = np.where(lin > 0, lin, np.expm1(lin))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_resample_is_the_weighted_average(sphere_setup):
    cfg = sphere_setup["config"]["autoencoder"]
    layer = connections.load_hierarchy(cfg["connection_folder"], cfg["layers"][:2], initial="pool0")[1]
    ids, w = spiral_lib.averaging_weights(layer, "distance")
    x = np.random.default_rng(1).normal(size=(layer.in_points, 2, 5)).astype(np.float32)
    got = np.asarray(spiral_models._resample(jnp.asarray(x), ids, w))
    want = np.einsum("pm,pmbc->pbc", w, x[ids])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sphere_model(sphere_setup):
    cfg = sphere_setup["config"]
    enc, dec = spiral_models.SpiralEncoder(cfg), spiral_models.SpiralDecoder(cfg)
    x = jnp.asarray(_meshes(sphere_setup["vertices"], 8, seed=0))
    pe = jax.jit(enc.init)(jax.random.PRNGKey(0), x[:1])
    z0 = jax.jit(enc.apply)(pe, x[:1])
    pd = jax.jit(dec.init)(jax.random.PRNGKey(1), z0)
    return enc, dec, {"enc": pe, "dec": pd}, x


@pytest.fixture(scope="module")
def train_step(sphere_model):
    """One compiled Adam step on the reconstruction error, shared by the gradient and learning tests."""
    enc, dec, params, x = sphere_model
    opt = optax.adam(3e-3)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(lambda p: _loss(enc, dec, p, x))(params)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, loss, g

    return step, opt.init(params)


def test_shapes_and_batch_independence(sphere_model, sphere_setup):
    enc, dec, params, x = sphere_model
    meta = sphere_setup["meta"]
    z = jax.jit(enc.apply)(params["enc"], x)
    assert z.shape == (8, meta["point_counts"][-1], CHANNELS[4])
    y = jax.jit(dec.apply)(params["dec"], z)
    assert y.shape == x.shape and bool(jnp.isfinite(y).all())
    # The same mesh gives the same latent in any batch (no batch-size-dependent state).
    z1 = jax.jit(enc.apply)(params["enc"], x[3:4])
    np.testing.assert_allclose(np.asarray(z1[0]), np.asarray(z[3]), rtol=1e-5, atol=1e-6)
    # Parameter names follow the connection layers; pooling-only layers have none.
    names = set(params["enc"]["params"])
    assert names == {"pool0", "pool2", "pool4"}
    assert params["enc"]["params"]["pool0"]["kernel"].shape == (9 * 3, CHANNELS[0])


def _loss(enc, dec, params, x):
    y = dec.apply(params["dec"], enc.apply(params["enc"], x))
    return jnp.mean(jnp.sum((y - x) ** 2, -1))


def test_gradients_finite_and_nonzero(sphere_model, train_step):
    _, _, params, _ = sphere_model
    step, state = train_step
    _, _, loss, grads = step(params, state)
    assert np.isfinite(float(loss))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.isfinite(g).all()), jax.tree_util.keystr(path)
        assert float(jnp.abs(g).max()) > 0, f"zero gradient for {jax.tree_util.keystr(path)}"


def test_reconstruction_error_falls_when_training(sphere_model, train_step):
    _, _, params, _ = sphere_model
    step, state = train_step
    losses = []
    for _ in range(60):
        params, state, loss, _ = step(params, state)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert min(losses[-5:]) < 0.2 * losses[0], f"reconstruction error {losses[0]:.4g} -> {losses[-1]:.4g}"


def test_inside_mesh_vqvae(sphere_setup):
    """The tokenizer's ``conv: "spiral"`` switch runs this encoder / decoder end to end."""
    from hmr_jax.models.mesh_vqvae import MeshVQVAE

    model = MeshVQVAE(sphere_setup["config"])
    x = jnp.asarray(_meshes(sphere_setup["vertices"], 2, seed=3))
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    ids = jax.jit(lambda v, x: model.apply(v, x, method=MeshVQVAE.encode))(variables, x)
    assert ids.shape == (2, sphere_setup["meta"]["point_counts"][-1])
    out = jax.jit(lambda v, i: model.apply(v, i, method=MeshVQVAE.decode))(variables, ids)
    assert out.shape == x.shape and bool(jnp.isfinite(out).all())


def test_clear_errors(sphere_setup, tmp_path):
    cfg = sphere_setup["config"]
    enc = spiral_models.SpiralEncoder(cfg)
    with pytest.raises(ValueError, match=r"expected \(B, 642, 3\)"):
        enc.init(jax.random.PRNGKey(0), jnp.zeros((1, 600, 3)))
    dec = spiral_models.SpiralDecoder(cfg)
    with pytest.raises(ValueError, match="latent has shape"):
        dec.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 8)))
    bad = copy.deepcopy(cfg)
    del bad["spiral"]["template"]
    with pytest.raises(ValueError, match="spiral.template"):
        spiral_models.spiral_topology(bad)
    bad = copy.deepcopy(cfg)
    other = tmp_path / "other.ply"
    m = trimesh.creation.icosphere(subdivisions=2)
    mesh_io.write_ply(other, m.vertices, m.faces)
    bad["spiral"]["template"] = str(other)
    with pytest.raises(ValueError, match="162 vertices"):
        spiral_models.spiral_topology(bad)
    bad = copy.deepcopy(cfg)
    bad["quantizer"]["embedding_dim"] = 4
    with pytest.raises(ValueError, match="embedding_dim"):
        spiral_models.spiral_topology(bad)
    bad = copy.deepcopy(cfg)
    bad["autoencoder"]["connection_folder"] = str(tmp_path / "none")
    with pytest.raises(connections.ConnectionFileError, match="does not exist"):
        spiral_models.spiral_topology(bad)


@pytest.mark.slow
def test_smpl_medium_layers_learn(reference_dir):
    """The released "medium" layer list on the SMPL template: 6890 -> 54 x 9 -> 6890."""
    from hmr_jax.models.mesh_vqvae import RELEASED_54

    cfg = copy.deepcopy(RELEASED_54)
    cfg["conv"] = "spiral"
    cfg["autoencoder"]["connection_folder"] = str(reference_dir / "ConnectionMatrices")
    cfg["spiral"] = {"template": str(reference_dir / "template.ply")}
    v, _ = mesh_io.read_mesh(reference_dir / "template.ply")
    x = jnp.asarray(_meshes(v - v.mean(0), 4, seed=1))
    enc, dec = spiral_models.SpiralEncoder(cfg), spiral_models.SpiralDecoder(cfg)
    params = {"enc": enc.init(jax.random.PRNGKey(0), x[:1])}
    assert enc.apply(params["enc"], x).shape == (4, 54, 9)
    params["dec"] = dec.init(jax.random.PRNGKey(1), jnp.zeros((1, 54, 9)))
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(lambda p: _loss(enc, dec, p, x))(params)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, loss

    first = float(_loss(enc, dec, params, x))
    for _ in range(30):
        params, state, _ = step(params, state)
    assert float(_loss(enc, dec, params, x)) < 0.5 * first
