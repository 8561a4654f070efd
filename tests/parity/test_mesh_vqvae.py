"""Mesh-VQ-VAE in Flax: parity with the original PyTorch outputs and the model's own behaviour.

Parity uses the fixtures of ../shared/parity (original code, random weights, real dfaust2
connections). Behaviour tests use a tiny random hierarchy (compiles in a second) and compare
with a loop-by-loop NumPy transcription of the layer formula and of the EMA update.
"""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.conversion import common, fixtures
from hmr_jax.conversion import mesh_vqvae as conv
from hmr_jax.mesh import connections as cn
from hmr_jax.models.fcae import FullyConvAE
from hmr_jax.models.mesh_vqvae import MeshVQVAE
from hmr_jax.models.quantizers import ResidualVectorQuantizer

TOL = 1e-4


# --------------------------------------------------------------------------------------------
# parity with the original


def _converted(parity_dir, reference_dir, name):
    raw, _ = common.load_torch_state_dict(parity_dir / f"{name}.pt")
    state = common.StateDict(raw, what=name)
    fixture = json.loads((parity_dir / f"{name}.json").read_text())
    variables, config = conv.convert(state, fixture)
    state.finish()
    config["autoencoder"]["connection_folder"] = str(reference_dir / "ConnectionMatrices")
    with np.load(parity_dir / f"{name}_io.npz") as z:
        io = {k: z[k] for k in z.files}
    return variables, config, io, fixture


@pytest.fixture(scope="module")
def vq(parity_dir, reference_dir):
    variables, config, io, fixture = _converted(parity_dir, reference_dir, "mesh_vqvae")
    errors = fixtures.verify_mesh_vqvae(variables, config, io, fixture, parity_dir)
    return variables, config, io, errors


@pytest.fixture(scope="module")
def rq(parity_dir, reference_dir):
    variables, config, io, fixture = _converted(parity_dir, reference_dir, "mesh_rqvae")
    return fixtures.verify_mesh_vqvae(variables, config, io, fixture, parity_dir), io


def _assert_all_close(errors, io):
    outputs = sorted(k for k in io if k.startswith("out_"))
    assert sorted(errors) == outputs  # every recorded output was compared
    bad = {k: e for k, e in errors.items() if not e <= TOL}
    assert not bad, f"outputs beyond {TOL} relative error (ids: 1 = differ): {bad}"


def test_mesh_vqvae_matches_original(vq):
    _, config, io, errors = vq
    _assert_all_close(errors, io)
    # the per-layer, distance, EMA and id outputs are all part of it
    for name in ("out_enc_layer05_out_b0", "out_dec_layer08_out_b0", "out_vq_distances_b0",
                 "out_train_ema_w", "out_train_embedding", "out_indices", "out_test_indices"):
        assert name in errors
    assert errors["out_indices"] == 0.0 and errors["out_test_indices"] == 0.0


@pytest.mark.slow  # compiles a second full-size model (~1 min); the RQ logic is also checked below
def test_mesh_rqvae_matches_original(rq):
    errors, io = rq
    _assert_all_close(errors, io)
    assert io["out_indices"].shape == (4, 7, 8)
    for name in ("out_rq_distances", "out_rq_partial_quantized_st", "out_train_ema_cluster_size"):
        assert name in errors


@pytest.mark.slow  # compiles the full-size encoder and decoder for batch 1
def test_real_model_is_batch_size_independent(vq):
    variables, config, io, _ = vq
    model = conv.build_model(config)
    encode = jax.jit(lambda v, x: model.apply(v, x, method="encode"))
    ids1 = np.asarray(encode(variables, io["in_meshes"][2:3]))
    np.testing.assert_array_equal(ids1, io["out_indices"][2:3])
    decode = jax.jit(lambda v, i: model.apply(v, i, method="decode"))
    mesh1 = np.asarray(decode(variables, ids1))
    assert common.max_relative_error(mesh1, io["out_decoded"][2:3]) <= TOL


def test_library_decode_program_gives_the_original_meshes(vq):
    """``mesh_decoder_fn``, alone and inlined into ``meshes_from_tokens`` (whose program carries the
    tokenizer's CPU options, :func:`hmr_jax.runtime.small_matmul_compiler_options`), decodes the
    original's ids to its meshes."""
    from hmr_jax.models import decoding

    variables, config, io, _ = vq
    decode = decoding.mesh_decoder_fn(conv.build_model(config), variables)
    meshes = np.asarray(decode(io["out_indices"]))
    assert common.max_relative_error(meshes, io["out_decoded"]) <= TOL
    rot6d = jnp.tile(jnp.asarray([[1.0, 0, 0, 0, 1, 0]]), (len(meshes), 1))  # identity rotation
    out = decoding.meshes_from_tokens(decode, io["out_indices"], rot6d)
    assert common.max_relative_error(np.asarray(out["vertices"]), io["out_decoded"]) <= TOL


def test_wrong_vertex_count_and_id_shape_are_explained(vq):
    variables, config, io, _ = vq
    model = conv.build_model(config)
    with pytest.raises(ValueError, match=r"expects \(B, 6890, 3\)"):
        model.apply(variables, jnp.zeros((1, 6889, 3)), method="encode")
    with pytest.raises(ValueError, match=r"expects \(B, 6890, 3\)"):
        model.apply(variables, jnp.zeros((6890, 3)), method="encode")
    with pytest.raises(ValueError, match=r"expected \(B, L\)"):
        model.apply(variables, jnp.zeros((1, 54, 1), jnp.int32), method="decode")
    with pytest.raises(ValueError, match="must be integers"):
        model.apply(variables, jnp.zeros((1, 54)), method="decode")


def test_missing_connection_file_is_named(vq, tmp_path):
    _, config, _, _ = vq
    src = config["autoencoder"]["connection_folder"]
    for name in config["autoencoder"]["layers"]:
        if name != "unpool3":
            shutil.copy(cn.connection_path(src, name), tmp_path)
    cfg = json.loads(json.dumps(config))
    cfg["autoencoder"]["connection_folder"] = str(tmp_path)
    with pytest.raises(common.ConversionError, match=r"_unpool3\.npy does not exist"):
        conv.build_model(cfg)
    model = MeshVQVAE(cfg)  # reads the files itself when set up
    with pytest.raises(cn.ConnectionFileError, match=r"_unpool3\.npy does not exist"):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6890, 3))))


# --------------------------------------------------------------------------------------------
# a tiny hierarchy: 12 vertices -> 5 -> 5 (latent) -> 5 -> 12


def _random_layer(rng, in_points, out_points, m, name, identity=False):
    rows = []
    for p in range(out_points):
        n = int(rng.integers(1, m + 1))
        ids = rng.choice(in_points, size=n, replace=False)
        if identity:
            ids[0] = p if p not in ids[1:] else ids[0]
        rows.append([(int(i), int(d)) for i, d in zip(ids, rng.integers(0, 3, size=n))])
    a = np.empty((out_points, 1 + 2 * m), np.int32)
    for p, nb in enumerate(rows):
        a[p, 0] = len(nb)
        pairs = nb + [(in_points, -1)] * (m - len(nb))
        a[p, 1:] = np.asarray(pairs).reshape(-1)
    return cn.parse_connection_array(a, in_points=in_points, source=name)


def _tiny(seed=0):
    rng = np.random.default_rng(seed)
    conns = (
        _random_layer(rng, 12, 12, 4, "conv12"),
        _random_layer(rng, 12, 5, 5, "pool"),
        _random_layer(rng, 5, 5, 3, "mix"),       # conv + residual (rate 0.3) with channel change
        _random_layer(rng, 5, 5, 3, "conv5"),
        _random_layer(rng, 5, 12, 3, "unpool"),
        _random_layer(rng, 12, 12, 4, "out"),
    )
    config = {
        "conv": "fcae",
        "autoencoder": {
            "layers": [c.name for c in conns],
            "channels": [6, 6, 4, 8, 8, 3],
            "weight_nums": [3, 0, 2, 3, 0, 3],
            "residual_rates": [0, 1, 0.3, 0, 1, 0],
        },
        "quantizer": {"num_embeddings": 7, "embedding_dim": 4, "commitment_cost": 0.25,
                      "decay": 0.9, "num_quantizers": 1},
    }
    return conns, config


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _reference_layer(x, conn, p, rate, act):
    """Loop transcription of the original layer: x (B, in_points, I) float64."""
    b, n_in, _ = x.shape
    xp = np.concatenate([x, np.zeros((b, 1, x.shape[2]))], axis=1)
    ids, mask = conn.neighbor_ids, conn.mask
    out = 0.0
    if rate < 1:
        w = np.asarray(p["weights"], np.float64)  # (K, I, O)
        ww = np.asarray(p["w_weights"], np.float64)
        conv = np.zeros((b, conn.out_points, w.shape[2]))
        for q in range(conn.out_points):
            for m in range(conn.max_neighbors):
                kern = np.einsum("k,kio->io", ww[q, m] * mask[q, m], w)
                conv[:, q] += xp[:, ids[q, m]] @ kern
        conv = conv + np.asarray(p["bias"], np.float64)
        out = out + np.sqrt(1 - rate) * (_elu(conv) if act else conv)
    if rate > 0:
        h = xp @ np.asarray(p["weight_res"], np.float64) if "weight_res" in p else xp
        if conn.in_points == conn.out_points:
            res = h[:, :n_in]
        else:
            pw = np.abs(np.asarray(p["p_neighbors"], np.float64)) * mask
            pw = pw / (pw.sum(1, keepdims=True) + 1e-8)
            res = np.zeros((b, conn.out_points, h.shape[2]))
            for q in range(conn.out_points):
                for m in range(conn.max_neighbors):
                    res[:, q] += pw[q, m] * h[:, ids[q, m]]
        out = out + np.sqrt(rate) * res
    return out


@pytest.fixture(scope="module")
def tiny():
    conns, config = _tiny()
    model = MeshVQVAE(config, connections=conns)
    meshes = jax.random.normal(jax.random.PRNGKey(1), (3, 12, 3))
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), meshes)
    # non-zero biases so that they are exercised
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: v + 0.1 if "bias" in jax.tree_util.keystr(path) else v, variables
    )
    return model, conns, config, variables, meshes


def test_param_tree_has_the_original_parts(tiny):
    _, _, _, variables, _ = tiny
    params = variables["params"]["autoencoder"]
    assert set(params["layer0"]) == {"weights", "bias", "w_weights"}
    assert params["layer0"]["weights"].shape == (3, 3, 6) and params["layer0"]["w_weights"].shape == (12, 4, 3)
    assert set(params["layer1"]) == {"p_neighbors"}
    assert set(params["layer2"]) == {"weights", "bias", "w_weights", "weight_res"}
    assert params["layer2"]["weight_res"].shape == (6, 4)
    assert set(variables["vq_stats"]["quantizer"]) == {"embedding", "ema_w", "ema_cluster_size"}


def test_layers_match_loop_reference(tiny):
    model, conns, config, variables, meshes = tiny
    ae = FullyConvAE(conns, (6, 6, 4, 8, 8, 3), (3, 0, 2, 3, 0, 3), (0, 1, 0.3, 0, 1, 0))
    av = {"params": variables["params"]["autoencoder"]}
    recon, state = jax.jit(lambda v, x: ae.apply(v, x, mutable=["intermediates"]))(av, meshes)
    inter = state["intermediates"]
    x = np.asarray(meshes, np.float64)
    rates = config["autoencoder"]["residual_rates"]
    for l, conn in enumerate(conns):
        prev = x
        x = _reference_layer(x, conn, av["params"][f"layer{l}"], rates[l], act=l != len(conns) - 1)
        np.testing.assert_allclose(np.asarray(inter[f"layer{l}_out"]), x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(recon), x, rtol=1e-5, atol=1e-5)
    # the last layer has no ELU: with one, the result would differ
    with_elu = _reference_layer(prev, conns[-1], av["params"]["layer5"], 0, act=True)
    assert np.max(np.abs(with_elu - x)) > 1e-3
    z = np.asarray(jax.jit(lambda v, x: ae.apply(v, x, method="encode"))(av, meshes))
    assert z.shape == (3, 5, 4)


def test_batch_size_independent_and_jit_equal(tiny):
    model, _, _, variables, meshes = tiny
    encode = jax.jit(lambda v, x: model.apply(v, x, method="encode"))
    ids = encode(variables, meshes)
    assert ids.shape == (3, 5) and ids.dtype == jnp.int32
    for b in range(3):
        one = encode(variables, meshes[b:b + 1])
        np.testing.assert_array_equal(one[0], ids[b])
    dec = jax.jit(lambda v, i: model.apply(v, i, method="decode"))
    np.testing.assert_allclose(dec(variables, ids)[1], dec(variables, ids[1:2])[0], rtol=1e-6, atol=1e-6)


def test_vq_matches_numpy_and_ema_update(tiny):
    model, _, config, variables, meshes = tiny
    q = config["quantizer"]
    out, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["vq_stats"]))(variables, meshes)
    stats = variables["vq_stats"]["quantizer"]
    e = np.asarray(stats["embedding"], np.float64)
    z = np.asarray(out.z, np.float64).reshape(-1, 4)
    d = (z**2).sum(1, keepdims=True) + (e**2).sum(1) - 2 * z @ e.T
    idx = d.argmin(1)
    np.testing.assert_array_equal(np.asarray(out.quantized.indices).reshape(-1), idx)
    np.testing.assert_allclose(np.asarray(out.quantized.distances).reshape(-1, 7), d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.quantized.quantized).reshape(-1, 4), e[idx], atol=1e-6)
    np.testing.assert_allclose(out.loss, 0.25 * np.mean((e[idx] - z) ** 2), rtol=1e-5)
    counts = np.bincount(idx, minlength=7)
    probs = counts / len(idx)
    np.testing.assert_allclose(out.perplexity, np.exp(-(probs * np.log(probs + 1e-10)).sum()), rtol=1e-5)
    # EMA with Laplace smoothing
    decay, eps = q["decay"], 1e-5
    size = np.asarray(stats["ema_cluster_size"], np.float64) * decay + (1 - decay) * counts
    n = size.sum()
    size = (size + eps) / (n + 7 * eps) * n
    sums = np.zeros((7, 4))
    np.add.at(sums, idx, z)
    ema_w = np.asarray(stats["ema_w"], np.float64) * decay + (1 - decay) * sums
    new = state["vq_stats"]["quantizer"]
    np.testing.assert_allclose(new["ema_cluster_size"], size, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new["ema_w"], ema_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["embedding"], ema_w / size[:, None], rtol=1e-4, atol=1e-5)


def test_eval_mode_leaves_codebook_alone_and_train_needs_mutable(tiny):
    model, _, _, variables, meshes = tiny
    _, state = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["vq_stats"]))(variables, meshes)
    for a, b in zip(jax.tree.leaves(state["vq_stats"]), jax.tree.leaves(variables["vq_stats"])):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"mutable=\['vq_stats'\]"):
        jax.eval_shape(lambda: model.apply(variables, meshes, train=True))


def test_straight_through_gradients_reach_every_parameter(tiny):
    model, _, _, variables, meshes = tiny

    def loss(params):
        out, _ = model.apply({**variables, "params": params}, meshes, train=True, mutable=["vq_stats"])
        return jnp.mean((out.recon - meshes) ** 2) + out.loss

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_residual_quantizer_stages():
    z = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 4))
    rq = ResidualVectorQuantizer(num_quantizers=3, num_embeddings=6, embedding_dim=4)
    v = jax.jit(rq.init)(jax.random.PRNGKey(4), z)
    out = jax.jit(rq.apply)(v, z)
    assert out.indices.shape == (2, 5, 3) and out.distances.shape == (2, 5, 3, 6)
    residual = np.asarray(z)
    total = np.zeros_like(residual)
    for s in range(3):
        e = np.asarray(v["vq_stats"][f"stage{s}"]["embedding"])
        d = ((residual[..., None, :] - e) ** 2).sum(-1)
        np.testing.assert_array_equal(np.asarray(out.indices[..., s]), d.argmin(-1))
        total = total + e[d.argmin(-1)]
        residual = np.asarray(z) - total
        np.testing.assert_allclose(np.asarray(out.partial_quantized[s]), total, atol=1e-5)
    np.testing.assert_allclose(jax.jit(lambda v, i: rq.apply(v, i, method="lookup"))(v, out.indices), total, atol=1e-5)
    # one codebook shared by every stage
    shared = ResidualVectorQuantizer(num_quantizers=3, num_embeddings=6, embedding_dim=4, shared_codebook=True)
    sv = jax.jit(shared.init)(jax.random.PRNGKey(4), z)
    assert list(sv["vq_stats"]) == ["stage0"]
    _, st = jax.jit(lambda v, x: shared.apply(v, x, train=True, mutable=["vq_stats"]))(sv, z)
    # three sequential EMA updates of the one codebook: the counts of all stages were added
    size0 = np.asarray(sv["vq_stats"]["stage0"]["ema_cluster_size"])
    assert np.isclose(np.sum(st["vq_stats"]["stage0"]["ema_cluster_size"]),
                      np.sum(size0) * 0.99**3 + 0.01 * 10 * (0.99**2 + 0.99 + 1), rtol=1e-5)


def test_unknown_conv_kind_is_refused(tiny):
    _, conns, config, _, meshes = tiny
    bad = dict(config, conv="dense")
    with pytest.raises(ValueError, match="'fcae' or 'spiral'"):
        MeshVQVAE(bad, connections=conns).init(jax.random.PRNGKey(0), meshes)
