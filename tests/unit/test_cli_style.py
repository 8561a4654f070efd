"""One command-line style: every flag the project's commands define is spelled with hyphens
(no ``--num_samples`` beside ``--num-samples``), and no command parses with argparse."""
from __future__ import annotations

import ast

from helpers import REPO_ROOT

COMMANDS = ("train.py", "evaluate.py", "sample.py", "convert_torch_weights.py", "hmr_jax", "data_prep", "benchmarks")
DEFINES = ("DEFINE_string", "DEFINE_integer", "DEFINE_float", "DEFINE_boolean", "DEFINE_bool", "DEFINE_enum",
           "DEFINE_list", "DEFINE_multi_string", "DEFINE_multi_integer", "define_floats")


def _files():
    for name in COMMANDS:
        path = REPO_ROOT / name
        yield from ([path] if path.is_file() else sorted(path.rglob("*.py")))


def test_flag_names_use_hyphens_and_no_argparse():
    underscored, argparse_users, defined = [], [], 0
    for path in _files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if "argparse" in names:
                    argparse_users.append(str(path.relative_to(REPO_ROOT)))
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in DEFINES and isinstance(node.args[0].value, str):
                defined += 1
                if "_" in node.args[0].value:
                    underscored.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} --{node.args[0].value}")
    assert defined > 100, defined   # the walk found the commands' flags
    assert not underscored, underscored
    assert not argparse_users, argparse_users
