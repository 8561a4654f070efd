"""Fuzzing what ``convert_torch_weights.py`` reads: ``.pt`` checkpoints and ``--verify`` fixtures.

Seeds are the parity checkpoints of every model family (the original PyTorch code's state dicts
in ``HMR_JAX_PARITY_DIR``). Each example changes the state dict (a key dropped or added, a tensor
of another shape, rank or dtype, a value that is not a tensor, non-string keys, the dict nested
in a container) or the bytes of the saved file, then runs the whole conversion
(:func:`hmr_jax.conversion.registry.convert_checkpoint`): it must succeed or end in
``ConversionError`` naming the file. Fixtures ``NAME_io.npz`` are fuzzed through
:func:`hmr_jax.conversion.fixtures.load_fixture`.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import fuzz as fz
from hmr_jax.conversion import common, fixtures, registry

torch = pytest.importorskip("torch")

SEEDS = ["vit_small", "mega_vqmae_small", "hrnet_small", "resnet_small", "mega_cvqmae_small",
         "vqhps_regressor_small", "mesh_vqvae"]
# the default suite's slice uses the three smallest checkpoints (each example saves one)
DRAWN = SEEDS if fz.PROFILE != "quick" else ["vit_small", "mega_vqmae_small", "hrnet_small"]
_TORCH_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8,
                 torch.uint8, torch.bool, torch.complex64]


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    fz.report(__name__)


@pytest.fixture(scope="module")
def seeds(parity_dir):
    out = fz.Seeds()
    for name in SEEDS:
        sd = torch.load(parity_dir / f"{name}.pt", map_location="cpu", weights_only=True)
        for key in ("model", "state_dict", "model_state_dict"):  # the state dict inside a container
            if isinstance(sd.get(key), dict):
                sd = sd[key]
        cfg = json.loads((parity_dir / f"{name}.json").read_text())
        out[name] = (sd, cfg, (parity_dir / f"{name}.pt").read_bytes())
    return out


@st.composite
def _tensor_like(draw, like):
    if not isinstance(like, torch.Tensor):  # replaced by a non-tensor earlier in this example
        like = torch.zeros(3)
    kind = draw(st.sampled_from(["shape", "dtype", "rank", "scalar", "other"]))
    shape = list(like.shape)
    if kind == "shape" and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.sampled_from([0, 1, shape[i] + 1, max(shape[i] - 1, 0), 2 * shape[i]]))
        return torch.zeros(shape, dtype=like.dtype)
    if kind == "dtype":
        return like.to(draw(st.sampled_from(_TORCH_DTYPES)))
    if kind == "rank":
        return torch.zeros(shape[:-1] if shape and draw(st.booleans()) else shape + [2], dtype=like.dtype)
    if kind == "scalar":
        return torch.tensor(draw(st.floats(allow_nan=True)))
    return draw(st.one_of(st.none(), st.integers(), st.text(max_size=4), st.just([like]), st.just({"w": like})))


@st.composite
def _mutated_state(draw, sd):
    out = dict(sd)
    keys = list(out)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "add", "replace", "replace", "replace", "key"]))
        key = draw(st.sampled_from(keys))
        if kind == "drop":
            out.pop(key, None)
        elif kind == "add":
            out[key + draw(st.sampled_from(["_extra", ".weight", "x"]))] = torch.zeros(draw(st.integers(0, 4)))
        elif kind == "replace" and key in out:
            out[key] = draw(_tensor_like(out[key]))
        elif kind == "key" and key in out:
            out[draw(st.sampled_from([3, ("a", 1), b"bytes", "module." + key]))] = out.pop(key)
    container = draw(st.sampled_from(["bare", "bare", "model", "state_dict", "nested", "list", "other_key"]))
    if container in ("model", "state_dict"):
        return {container: out, "epoch": 3}
    if container == "nested":
        return {"model": {"inner": out}}
    if container == "list":
        return [out]
    if container == "other_key":
        return {"weights": out}
    return out


def _convert(name):
    def read(path):
        registry.convert_checkpoint(path, None if name is None else name)
    return read


@fz.examples(40)
@given(data=st.data())
def test_fuzz_torch_checkpoints(seeds, tmp_path, data):
    seed = data.draw(st.sampled_from(DRAWN))
    sd, cfg, raw = seeds[seed]
    if data.draw(st.integers(0, 3)) == 0:
        blob = data.draw(fz.mutated(raw, head=2048))
    else:
        buf = io.BytesIO()
        torch.save(data.draw(_mutated_state(sd)), buf)
        blob = buf.getvalue()
    config = cfg if data.draw(st.booleans()) else None
    with fz.fresh_dir(tmp_path) as d:
        path = fz.write(d, f"{seed}.pt", blob)
        fz.check_reader("converter .pt", lambda p: registry.convert_checkpoint(p, None, config), path,
                        common.ConversionError)


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned > /tmp/hmr_jax_fuzz_pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "hook": Evil()}, path)
    assert fz.check_reader("converter hostile", _convert(None), path, common.ConversionError) == "ConversionError"


@fz.examples(30)
@given(data=st.data())
def test_fuzz_verify_fixtures(parity_dir, tmp_path, data):
    seed = data.draw(st.sampled_from(["vit_small", "mega_vqmae_small", "mesh_vqvae"]))
    raw = (parity_dir / f"{seed}_io.npz").read_bytes()
    with np.load(parity_dir / f"{seed}_io.npz") as z:
        arrays = {k: z[k] for k in z.files}
    blob = fz.mutated_file(data, f"{seed}_io.npz", raw, arrays, head=4096)
    with fz.fresh_dir(tmp_path) as d:
        path = fz.write(d, f"{seed}_io.npz", blob)
        fz.check_reader("fixture _io.npz", fixtures.load_fixture, path, common.ConversionError)
