"""``convert_torch_weights.py`` on the backbone fixtures: --verify JSON line, exit codes, --out."""
from __future__ import annotations

import json

import numpy as np

import convert_torch_weights as cli
from hmr_jax.conversion import common


def test_verify_prints_one_json_line_and_fails_above_atol(parity_dir, capsys):
    args = [str(parity_dir / "vit_small.pt"), "--verify", str(parity_dir / "vit_small_io.npz")]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["model"] == "vit" and result["ok"] is True
    assert set(result["max_rel_error"]) == {
        "out_patch_tokens", "out_tokens_plus_pos", "out_block00_out", "out_block01_out",
        "out_last_norm_out", "out_features",
    }
    assert cli.main(args + ["--atol", "1e-12"]) == 1
    assert json.loads(capsys.readouterr().out.strip())["ok"] is False


def test_out_writes_a_checkpoint_that_reads_back(parity_dir, tmp_path, capsys):
    out = tmp_path / "resnet"
    assert cli.main([str(parity_dir / "resnet_small.pt"), "--out", str(out)]) == 0
    variables, config = common.read_converted(out, expected_model="resnet50")
    assert config["layers"] == [1, 1, 1, 1] and config["backbone"] == "resnet50"
    raw, _ = common.load_torch_state_dict(parity_dir / "resnet_small.pt")
    np.testing.assert_array_equal(
        np.asarray(variables["params"]["layer3_0"]["conv2"]["kernel"]),
        np.transpose(raw["6.0.conv2.weight"], (2, 3, 1, 0)),
    )
    np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["bn1"]["var"]), raw["1.running_var"])
    meta = json.loads((out / "conversion.json").read_text())
    assert all("num_batches_tracked" in k for k in meta["ignored_keys"])


def test_wrong_kind_is_a_clear_error(parity_dir, capsys):
    assert cli.main([str(parity_dir / "vit_small.pt"), "--model", "hrnet", "--out", "/nonexistent/x"]) == 2
    assert "HRNet" in capsys.readouterr().err
