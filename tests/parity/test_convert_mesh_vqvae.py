"""convert_torch_weights.py on Mesh-VQ-VAE checkpoints: verify, outputs on disk, clear errors."""
import json
import shutil

import jax
import numpy as np
import pytest

import convert_torch_weights as cli
from hmr_jax.conversion import common, registry
from hmr_jax.conversion import mesh_vqvae as conv


def _args(parity_dir, reference_dir, *extra, name="mesh_vqvae"):
    return [
        str(parity_dir / f"{name}.pt"),
        "--config", str(parity_dir / f"{name}.json"),
        "--set", f"autoencoder.connection_folder={reference_dir / 'ConnectionMatrices'}",
        *extra,
    ]


def _json_line(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # exactly one JSON line
    return json.loads(out[0])


@pytest.fixture(scope="module")
def verified(parity_dir, reference_dir, tmp_path_factory):
    """One CLI run: convert, write, verify (the compiled model is reused by later runs)."""
    out_dir = tmp_path_factory.mktemp("conv") / "mesh_vqvae"
    with pytest.MonkeyPatch.context() as mp:
        import io
        import sys

        buf = io.StringIO()
        mp.setattr(sys, "stdout", buf)
        rc = cli.main(_args(parity_dir, reference_dir, "--verify", str(parity_dir / "mesh_vqvae_io.npz"),
                            "--out", str(out_dir)))
    return rc, buf.getvalue(), out_dir


def test_verify_passes_and_reports_every_output(verified, parity_dir):
    rc, stdout, _ = verified
    lines = stdout.strip().splitlines()
    assert rc == 0 and len(lines) == 1
    report = json.loads(lines[0])
    with np.load(parity_dir / "mesh_vqvae_io.npz") as z:
        outputs = sorted(k for k in z.files if k.startswith("out_"))
    assert sorted(report["max_rel_error"]) == outputs
    assert report["ok"] is True and report["worst"] <= 1e-4
    assert report["max_rel_error"]["out_indices"] == 0.0


def test_verify_fails_above_atol(verified, parity_dir, reference_dir, capsys):
    rc = cli.main(_args(parity_dir, reference_dir, "--verify", str(parity_dir / "mesh_vqvae_io.npz"),
                        "--atol", "1e-12"))
    report = _json_line(capsys)
    assert rc == 1 and report["ok"] is False and report["worst"] > 1e-12


def test_written_checkpoint_loads_and_tokenizes(verified, parity_dir, reference_dir):
    _, _, out_dir = verified
    config = json.loads((out_dir / "config.json").read_text())
    assert config["model"] == "mesh_vqvae"
    assert config["autoencoder"]["connection_folder"] == str(reference_dir / "ConnectionMatrices")
    assert config["autoencoder"]["connection_sha256"]["pool0"].startswith("bb8f3661")
    meta = json.loads((out_dir / "conversion.json").read_text())
    dup = [k for k in meta["ignored_keys"] if k.startswith("decoder.model.")]
    assert len(dup) == 30 and not any(k.startswith("encoder.") for k in meta["ignored_keys"])
    model, variables = conv.load_converted(out_dir)
    with np.load(parity_dir / "mesh_vqvae_io.npz") as z:
        meshes, ids = z["in_meshes"][:1], z["out_indices"][:1]
    got = jax.jit(lambda v, x: model.apply(v, x, method="encode"))(variables, meshes)
    np.testing.assert_array_equal(np.asarray(got), ids)


def test_detected_without_model_flag(parity_dir):
    raw, _ = common.load_torch_state_dict(parity_dir / "mesh_vqvae.pt")
    assert "mesh_vqvae" in registry.detect(list(raw))
    vit, _ = common.load_torch_state_dict(parity_dir / "vit_small.pt")
    assert "mesh_vqvae" not in registry.detect(list(vit))


def test_checkpoint_of_another_model_is_refused_with_its_keys(parity_dir, tmp_path, capsys):
    rc = cli.main([str(parity_dir / "vit_small.pt"), "--model", "mesh_vqvae", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not a Mesh-VQ-VAE checkpoint" in err and "pos_embed" in err and "patch_embed.proj.weight" in err
    assert not (tmp_path / "x").exists()


def test_missing_connection_file_is_named(parity_dir, reference_dir, tmp_path, capsys):
    folder = tmp_path / "conn"
    shutil.copytree(reference_dir / "ConnectionMatrices", folder)
    (folder / "_pool4.npy").unlink()
    rc = cli.main([str(parity_dir / "mesh_vqvae.pt"), "--config", str(parity_dir / "mesh_vqvae.json"),
                   "--set", f"autoencoder.connection_folder={folder}",
                   "--verify", str(parity_dir / "mesh_vqvae_io.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "_pool4.npy does not exist" in err and "--set autoencoder.connection_folder" in err


def test_connection_file_with_other_content_fails_the_checksum(parity_dir, reference_dir, tmp_path, capsys):
    folder = tmp_path / "conn"
    shutil.copytree(reference_dir / "ConnectionMatrices", folder)
    a = np.load(folder / "_unpool5.npy")
    a[0, 2] = 2 if a[0, 2] != 2 else 1  # a distance: still a valid file, but not the original
    np.save(folder / "_unpool5.npy", a)
    rc = cli.main([str(parity_dir / "mesh_vqvae.pt"), "--config", str(parity_dir / "mesh_vqvae.json"),
                   "--set", f"autoencoder.connection_folder={folder}",
                   "--verify", str(parity_dir / "mesh_vqvae_io.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "_unpool5.npy has sha256" in err


def test_default_preset_needs_the_connection_folder(parity_dir, tmp_path, capsys):
    # no --config: the released 54-token preset fits the medium fixture's shapes
    raw, _ = common.load_torch_state_dict(parity_dir / "mesh_vqvae.pt")
    state = common.StateDict(raw)
    _, config = conv.convert(state, None)
    state.finish()
    assert config["quantizer"]["num_embeddings"] == 512 and len(config["autoencoder"]["layers"]) == 14
    # ... but not the 16-layer residual one, and the error says what to pass
    raw, _ = common.load_torch_state_dict(parity_dir / "mesh_rqvae.pt")
    with pytest.raises(common.ConversionError, match="up to 15 .* 14 layers.*--config"):
        conv.convert(common.StateDict(raw), None)


def test_encoder_decoder_copies_must_agree_and_keys_must_match(parity_dir):
    raw, _ = common.load_torch_state_dict(parity_dir / "mesh_vqvae.pt")
    fixture = json.loads((parity_dir / "mesh_vqvae.json").read_text())
    edited = dict(raw)
    edited["decoder.model.bias4"] = raw["decoder.model.bias4"] + 1
    with pytest.raises(common.ConversionError, match="encoder.model.bias4 and decoder.model.bias4 differ"):
        conv.convert(common.StateDict(edited), fixture)
    # a missing tensor and a stray one are both listed
    edited = {k: v for k, v in raw.items() if k not in ("encoder.model.w_weights2", "decoder.model.w_weights2")}
    edited["vq_vae.extra_buffer"] = np.zeros(3, np.float32)
    pattern = r"missing keys \(1\): encoder.model.w_weights2[\s\S]*unexpected keys \(1\): vq_vae.extra_buffer"
    with pytest.raises(common.ConversionError, match=pattern):
        conv.convert(common.StateDict(edited), fixture)


def test_module_prefix_and_float16_container(parity_dir, tmp_path):
    torch = pytest.importorskip("torch")
    ckpt = torch.load(parity_dir / "mesh_vqvae.pt", map_location="cpu", weights_only=True)
    ckpt["model"] = {f"module.{k}": v.half() for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "prefixed.pt")
    raw, info = common.load_torch_state_dict(tmp_path / "prefixed.pt")
    assert info["stripped_prefix"] == "module."
    state = common.StateDict(raw)
    variables, _ = conv.convert(state, json.loads((parity_dir / "mesh_vqvae.json").read_text()))
    state.finish()
    w = variables["params"]["autoencoder"]["layer2"]["weights"]
    ref = ckpt["model"]["module.encoder.model.weights2"].float().numpy().reshape(9, 64, 32).transpose(0, 2, 1)
    assert w.dtype == np.float32 and w.shape == (9, 32, 64)
    np.testing.assert_array_equal(w, ref)
