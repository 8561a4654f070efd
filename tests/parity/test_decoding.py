"""Decoding: MEGA deterministic / stochastic (keys, hypotheses, corrected vs faithful), VQ-HPS, meshes.

Runs on the small converted fixtures; the condition features recorded after the backbone
(``out_cond_features``) feed the transformer so that only the tests about the backbone trace it.
"""
from __future__ import annotations

import json

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax.conversion import common
from hmr_jax.conversion import mega as CM
from hmr_jax.conversion import vqhps as CV
from hmr_jax.geometry.rotations import rotation_6d_to_matrix
from hmr_jax.models import decoding as D
from hmr_jax.models import mega as M
from hmr_jax.models import vqhps as V


def _convert(parity_dir, name, kind, module):
    raw, _ = common.load_torch_state_dict(parity_dir / f"{name}.pt")
    fixture = json.loads((parity_dir / f"{name}.json").read_text())
    state = common.StateDict(raw)
    variables, config = module.convert(state, fixture, kind)
    state.finish()
    with np.load(parity_dir / f"{name}_io.npz") as z:
        io = {k: z[k] for k in z.files}
    return variables, config, io


@pytest.fixture(scope="module")
def cvqmae(parity_dir):
    variables, config, io = _convert(parity_dir, "mega_cvqmae_small", "mega_hrnet", CM)
    model = M.build_mega(config)
    cond = jnp.asarray(np.transpose(io["out_cond_features"], (0, 2, 3, 1)).reshape(2, 49, 30))
    return model, variables, io, cond


@pytest.fixture(scope="module")
def vqmae(parity_dir):
    variables, config, io = _convert(parity_dir, "mega_vqmae_small", "mega_pretrained", CM)
    return M.build_mega(config), variables, io


def test_stochastic_reproducible_and_key_dependent(cvqmae):
    model, variables, _, cond = cvqmae
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    a = D.mega_generate(model, variables, cond=cond, key=k1, num_samples=4, gen_temp=1.0)
    b = D.mega_generate(model, variables, cond=cond, key=k1, num_samples=4, gen_temp=1.0)
    c = D.mega_generate(model, variables, cond=cond, key=k2, num_samples=4, gen_temp=1.0)
    assert a["tokens"].shape == (2, 4, 54) and a["tokens"].dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(a["tokens"]), np.asarray(b["tokens"]))
    assert not np.array_equal(np.asarray(a["tokens"]), np.asarray(c["tokens"]))
    # hypotheses of one image differ from each other
    for img in range(2):
        assert len({tuple(h) for h in np.asarray(a["tokens"][img]).tolist()}) > 1
    # rotation / camera come from the image only: one per image
    assert a["rot6d"].shape == (2, 6) and a["cam"].shape == (2, 3)


def test_batched_hypotheses_equal_one_at_a_time(cvqmae):
    """N hypotheses in one call (first step shared per image) = each decoded alone, same noise."""
    model, variables, io, cond = cvqmae
    steps, n, seq = 4, 3, 54
    vocab = io["out_logits"].shape[-1]
    rng = np.random.default_rng(7)
    nl = rng.gumbel(size=(steps, 2 * n, seq, vocab)).astype(np.float32)
    nc = rng.gumbel(size=(steps, 2 * n, seq)).astype(np.float32)
    kw = dict(key=jax.random.PRNGKey(0), steps=steps, gen_temp=1.0, return_steps=True)
    together = D.mega_generate(model, variables, cond=cond, num_samples=n, noise=(nl, nc), **kw)
    for img in range(2):
        for h in range(n):
            row = img * n + h
            alone = D.mega_generate(model, variables, cond=cond[img:img + 1], num_samples=1,
                                    noise=(nl[:, row:row + 1], nc[:, row:row + 1]), **kw)
            np.testing.assert_array_equal(np.asarray(alone["step_tokens"][:, 0, 0]),
                                          np.asarray(together["step_tokens"][:, img, h]))
    assert len({tuple(t) for t in np.asarray(together["tokens"]).reshape(-1, seq).tolist()}) > 1


def test_faithful_recorded_noise_and_corrected_last_step(cvqmae):
    model, variables, io, cond = cvqmae
    noise = (io["out_gen5_stoch_noise_logits"], io["out_gen5_stoch_noise_confidence"])
    kw = dict(cond=cond[:1], key=jax.random.PRNGKey(0), steps=5, gen_temp=1.0, noise=noise, return_steps=True)
    faithful = D.mega_generate(model, variables, faithful=True, **kw)
    corrected = D.mega_generate(model, variables, **kw)
    np.testing.assert_array_equal(np.asarray(faithful["tokens"][:, 0]), io["out_gen5_stoch_tokens"])
    np.testing.assert_array_equal(np.asarray(faithful["step_tokens"][:, :, 0]), io["out_gen5_stoch_step_tokens"])
    f, c = np.asarray(faithful["tokens"][0, 0]), np.asarray(corrected["tokens"][0, 0])
    # single row: steps agree until the last, where the original resets one token to id 0
    np.testing.assert_array_equal(np.asarray(faithful["step_tokens"][:4]), np.asarray(corrected["step_tokens"][:4]))
    diff = np.flatnonzero(f != c)
    assert len(diff) <= 1 and (f[diff] == 0).all()
    assert np.count_nonzero(f == 0) >= 1


def test_corrected_rows_use_their_own_mask_count(cvqmae):
    """Greedy decoding of a batch equals decoding each image alone (no row-0 coupling)."""
    model, variables, _, cond = cvqmae
    both = D.mega_generate(model, variables, cond=cond, key=jax.random.PRNGKey(0), gen_temp=0.0)
    alone = D.mega_generate(model, variables, cond=cond[1:], key=jax.random.PRNGKey(0), gen_temp=0.0)
    np.testing.assert_array_equal(np.asarray(both["tokens"][1]), np.asarray(alone["tokens"][0]))


def test_deterministic_corrected_and_faithful(cvqmae):
    model, variables, io, cond = cvqmae
    with jax.default_matmul_precision("highest"):
        out = D.mega_deterministic(model, variables, cond=cond)
        np.testing.assert_array_equal(np.asarray(out["tokens"]), io["out_det_pred_indices"])
        backward, _ = M.original_scheduled_shuffle(2, 54, 1.0, np.random.RandomState(18))
        faithful = D.mega_deterministic(model, variables, cond=cond, faithful=True,
                                        gt_tokens=io["in_tokens"], backward_indexes=backward)
    np.testing.assert_array_equal(np.asarray(faithful["tokens"]), io["out_det_mesh_indices"])
    with pytest.raises(ValueError, match="gt_tokens"):
        D.mega_deterministic(model, variables, cond=cond, faithful=True)


def test_backbone_runs_once_per_image_not_per_hypothesis(cvqmae):
    model, variables, io, _ = cvqmae
    images = jnp.zeros((2, 224, 224, 3), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda x: D.mega_generate(model, variables, images=x, key=jax.random.PRNGKey(0),
                                                     num_samples=5))(images)
    batches = []

    def walk(jp):
        for eqn in jp.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                batches.append(eqn.invars[0].aval.shape[0])
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    assert len(batches) > 50  # every HRNet convolution ...
    assert set(batches) == {2}  # ... on the 2 images, not 10 hypotheses


def test_vqmae_generate(vqmae):
    model, variables, io = vqmae
    out = D.mega_generate(model, variables, batch_size=2, key=jax.random.PRNGKey(0), num_samples=3,
                          gen_temp=4.5, steps=5)
    assert out["tokens"].shape == (2, 3, 54) and "rot6d" not in out
    assert len({tuple(r) for r in np.asarray(out["tokens"]).reshape(6, 54).tolist()}) > 1
    greedy = D.mega_generate(model, variables, batch_size=2, key=jax.random.PRNGKey(0), gen_temp=0.0,
                             faithful=True)
    np.testing.assert_array_equal(np.asarray(greedy["tokens"][:, 0]), io["out_gen5_t0_tokens"])
    with pytest.raises(ValueError, match="batch_size"):
        D.mega_generate(model, variables, key=jax.random.PRNGKey(0))


def test_vqhps_single_pass(parity_dir):
    variables, config, io = _convert(parity_dir, "vqhps_regressor_small", "vqhps_hrnet", CV)
    model = V.build_vqhps(config)
    feats = tuple(jnp.asarray(np.transpose(io[f"out_backbone_{k}_features"], (0, 2, 3, 1))) for k in ("rot", "pose"))
    pose = V.pose_from_mesh(io["in_joints_regressor"], io["in_tpose"])
    pose = jnp.broadcast_to(pose, (2, 51))
    with jax.default_matmul_precision("highest"):
        out = D.vqhps_predict(model, variables, pose_init=pose, features=feats, faithful=True)
    np.testing.assert_array_equal(np.asarray(out["tokens"]), io["out_pred_indices"])
    assert common.max_relative_error(np.asarray(out["rot6d"]), io["out_pred_rot"]) < 1e-4
    with pytest.raises(ValueError, match="pose_init"):
        D.vqhps_predict(model, variables, features=feats)


def test_meshes_from_tokens_rotates_every_hypothesis():
    table = jax.random.normal(jax.random.PRNGKey(0), (512, 3))

    def decode(ids):  # stand-in tokenizer: (M, 54) -> (M, 54, 3)
        return table[ids]

    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 3, 54), 0, 512)
    rot6d = jax.random.normal(jax.random.PRNGKey(2), (2, 6))
    out = D.meshes_from_tokens(decode, tokens, rot6d)
    assert out["vertices"].shape == (2, 3, 54, 3) and out["rotmat"].shape == (2, 3, 3)
    r = np.asarray(rotation_6d_to_matrix(rot6d))
    want = np.asarray(table[tokens]) @ np.swapaxes(r, -1, -2)[:, None]
    np.testing.assert_allclose(np.asarray(out["vertices"]), want, rtol=1e-5, atol=1e-5)
    single = D.meshes_from_tokens(decode, tokens[:, 0], rot6d)
    np.testing.assert_allclose(np.asarray(single["vertices"]), want[:, 0], rtol=1e-5, atol=1e-5)
