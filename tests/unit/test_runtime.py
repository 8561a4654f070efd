"""XLA CPU defaults (hmr_jax.runtime): added before JAX starts, never over the user's flags."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from hmr_jax import runtime
from helpers import REPO_ROOT

REPO = REPO_ROOT
FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def _child(code: str, **env) -> dict:
    """Run ``code`` in a fresh interpreter (JAX not yet started); it prints one JSON line."""
    e = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", runtime.OPT_OUT_ENV)}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=e, capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


PRINT_FLAGS = "import json, os, hmr_jax; print(json.dumps({'flags': os.environ.get('XLA_FLAGS')}))"


def test_merge_keeps_user_flags_and_appends_missing():
    merged, added = runtime.merge_flags("--xla_dump_to=/tmp/x", [FLAG])
    assert merged == f"--xla_dump_to=/tmp/x {FLAG}" and added == [FLAG]
    user = "--xla_cpu_experimental_ynn_fusion_type="
    merged, added = runtime.merge_flags(user, [FLAG])
    assert merged == user and added == []


def test_flags_only_for_the_jaxlib_versions_that_need_them():
    assert runtime.default_cpu_flags((0, 10)) == [FLAG]
    assert runtime.default_cpu_flags((0, 11)) == []
    assert runtime.default_cpu_flags((0, 9)) == []
    assert runtime.default_cpu_flags(()) == []


def test_import_adds_the_flag():
    flags = _child(PRINT_FLAGS)["flags"]
    assert flags.split() == runtime.default_cpu_flags()


def test_user_value_wins_and_other_flags_stay():
    user = "--xla_force_host_platform_device_count=2 --xla_cpu_experimental_ynn_fusion_type="
    assert _child(PRINT_FLAGS, XLA_FLAGS=user)["flags"] == user
    other = "--xla_force_host_platform_device_count=2"
    assert _child(PRINT_FLAGS, XLA_FLAGS=other)["flags"].split() == [other] + runtime.default_cpu_flags()


def test_opt_out():
    assert _child(PRINT_FLAGS, HMR_JAX_XLA_DEFAULTS="0")["flags"] is None


def test_flag_reaches_xla(tmp_path):
    """XLA's own record of its options: YNNPACK no longer takes individual convolutions."""
    if not runtime.default_cpu_flags():
        return  # newer jaxlib: nothing is added, nothing to check
    code = (
        "import hmr_jax, jax, jax.numpy as jnp, json\n"
        "f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
        "dimension_numbers=('NHWC', 'HWIO', 'NHWC')))\n"
        "f(jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 4))).block_until_ready()\n"
        "print(json.dumps({}))\n")
    for opt, name in (("1", "on"), ("0", "off")):
        dump = tmp_path / name
        _child(code, XLA_FLAGS=f"--xla_dump_to={dump}", HMR_JAX_XLA_DEFAULTS=opt)
        options = "".join(p.read_text() for p in dump.glob("*jit__lambda*debug_options"))
        lines = [ln for ln in options.splitlines() if "ynn_fusion_type" in ln]
        if name == "on":
            assert lines and not any("INDIVIDUAL_CONVOLUTION" in ln for ln in lines), lines
        else:
            # the library default (no explicit list recorded, or one with convolutions)
            assert not lines or any("INDIVIDUAL_CONVOLUTION" in ln for ln in lines), lines


PRINT_OPTIONS = ("import json, hmr_jax; from hmr_jax import runtime; "
                 "print(json.dumps({'options': runtime.small_matmul_compiler_options()}))")


def test_tokenizer_options_follow_the_flag_rules():
    """The per-program options of the tokenizer: on by default (where the flags apply), off when
    opted out or when the user set the same XLA option."""
    want = dict(runtime.SMALL_MATMUL_OPTIONS) if runtime.default_cpu_flags() else {}
    assert _child(PRINT_OPTIONS)["options"] == want
    assert _child(PRINT_OPTIONS, XLA_FLAGS="--xla_force_host_platform_device_count=2")["options"] == want
    assert _child(PRINT_OPTIONS, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=")["options"] == {}
    assert _child(PRINT_OPTIONS, HMR_JAX_XLA_DEFAULTS="0")["options"] == {}


def test_tokenizer_options_reach_xla(tmp_path):
    """XLA's record of a program compiled with the options lists no YNNPACK fusion type; a plain
    program keeps the default list."""
    if not runtime.default_cpu_flags():
        return  # newer jaxlib: no options, nothing to check
    code = (
        "import hmr_jax, jax, jax.numpy as jnp, json\n"
        "from hmr_jax import runtime\n"
        "a = jnp.ones((8, 8))\n"
        "jax.jit(lambda x: x @ x, compiler_options=runtime.small_matmul_compiler_options())(a).block_until_ready()\n"
        "jax.jit(lambda x: x @ x + 1)(a).block_until_ready()\n"
        "print(json.dumps({}))\n")
    _child(code, XLA_FLAGS=f"--xla_dump_to={tmp_path}")
    records = sorted(tmp_path.glob("*jit__lambda*debug_options"))
    assert len(records) == 2, records
    ynn = [[ln for ln in p.read_text().splitlines() if "ynn_fusion_type" in ln] for p in records]
    assert ynn[0] == [] and ynn[1], ynn  # module ids follow the compile order
