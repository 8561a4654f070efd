"""The configs package: every config loads (with each argument it takes), imports without path
hacks and without cycles, training recipes derive from at most one other, the training and
converter sizes come from the released-model configs, and ``load_config`` reads names, paths and
arguments."""
import ast
import functools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from hmr_jax.training.config import load_config
from helpers import REPO_ROOT

ROOT = REPO_ROOT
CONFIG_DIR = ROOT / "configs"
NOT_CONFIGS = {"__init__", "common"}
NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in NOT_CONFIGS)
# The arguments of the configs that take one (None: no argument); every other config takes none.
ARGS = {"train_mega": ("hrnet", "resnet", "vit"), "train_vqhps": ("hrnet", "resnet"),
        "train_demo_mega": (None, "quick"), "train_demo_tokenizer": (None, "quick")}
CASES = [(n, a) for n in NAMES for a in ARGS.get(n, (None,))]


def _ids(cases):
    return [n + (f":{a}" if a else "") for n, a in cases]


@pytest.mark.parametrize("name,arg", CASES, ids=_ids(CASES))
def test_config_loads(name, arg):
    cfg = load_config(name, arg).to_dict()
    if name.startswith("train_"):
        assert cfg["stage"] and cfg["total_steps"] > 0 and "optim" in cfg
    else:
        assert cfg["model"]


@pytest.mark.parametrize("name,bad", [("train_mega", None), ("train_mega", "resnet18"),
                                      ("train_demo_mega", "slow"), ("train_vqhps", "vit")])
def test_a_wrong_config_argument_names_the_accepted_ones(name, bad):
    with pytest.raises(ValueError, match=rf"configs/{name}\.py got .*; use configs/{name}\.py"):
        load_config(name, bad)


def _config_imports(name):
    """``configs`` modules (without the package prefix) and other top-level modules that
    ``configs/NAME.py`` imports, and whether it touches sys.path."""
    tree = ast.parse((CONFIG_DIR / f"{name}.py").read_text())
    local, other = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "configs":
            local |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("configs."):
            local.add(node.module.split(".", 1)[1])
        elif isinstance(node, ast.ImportFrom) and node.module:
            other.add(node.module)
        elif isinstance(node, ast.Import):
            other |= {a.name for a in node.names}
    uses_sys_path = any(isinstance(n, ast.Attribute) and n.attr == "path" and getattr(n.value, "id", "") == "sys"
                        for n in ast.walk(tree))
    return local, other, uses_sys_path


def test_configs_import_as_a_package_without_cycles_and_one_level_of_recipes():
    assert (CONFIG_DIR / "__init__.py").is_file()
    graph = {}
    for name in NAMES + sorted(NOT_CONFIGS - {"__init__"}):
        local, other, uses_sys_path = _config_imports(name)
        assert not uses_sys_path, f"configs/{name}.py changes sys.path"
        assert not any(m.startswith("importlib") for m in other), f"configs/{name}.py loads files by hand"
        graph[name] = local
    # released-model configs are leaves (the converters import them)
    for name in NAMES:
        if not name.startswith("train_"):
            assert graph[name] == set(), name
            _, other, _ = _config_imports(name)
            assert other <= {"ml_collections", "copy", "hmr_jax.models.mesh_vqvae"}, (name, other)
    assert {n for n in graph["common"]} <= {n for n in NAMES if not n.startswith("train_")}
    # a recipe derives from at most one recipe, which derives from none
    for name in NAMES:
        parents = {m for m in graph[name] if m.startswith("train_")}
        assert len(parents) <= 1, (name, parents)
        for parent in parents:
            assert not {m for m in graph[parent] if m.startswith("train_")}, (name, parent)

    def visit(node, path):
        assert node not in path, f"import cycle: {' -> '.join(path + [node])}"
        for nxt in graph.get(node, ()):
            visit(nxt, path + [node])

    for name in graph:
        visit(name, [])


def test_configs_load_from_any_directory_with_the_package_on_the_path(tmp_path):
    """What an install gives (setup.py packages ``configs``): the package importable, any cwd."""
    assert '"configs"' in (ROOT / "setup.py").read_text()
    code = ("from hmr_jax.training.config import load_config; import configs; "
            "c = load_config('train_demo_mega', 'quick'); print(configs.__file__, c.total_steps)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    path, steps = out.stdout.split()
    assert pathlib.Path(path).parent == CONFIG_DIR and int(steps) == 10


def test_a_config_file_without_the_configs_package_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "configs", None)  # as if neither installed nor on the path
    with pytest.raises(ModuleNotFoundError, match="imports the configs package.*pip install"):
        load_config(CONFIG_DIR / "train_mega.py", "vit")


def test_spiral_config_builds_a_tokenizer_on_the_reference_topology(reference_dir):
    from hmr_jax.models.mesh_vqvae import MeshVQVAE

    model_cfg = load_config("train_mesh_vqvae_spiral").model
    assert model_cfg.conv == "spiral"
    model_cfg.autoencoder.connection_folder = str(reference_dir / "ConnectionMatrices")
    model_cfg.spiral.template = str(reference_dir / "template.ply")
    model = MeshVQVAE(model_cfg)
    meshes = jax.ShapeDtypeStruct((2, 6890, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, method="encode"), jax.random.key(0), meshes)
    assert "params" in variables and "vq_stats" in variables
    ids = jax.eval_shape(lambda v, m: model.apply(v, m, method="encode"), variables, meshes)
    assert ids.shape == (2, 54)


# (training config, argument, released-model config it trains)
TRAINED_RELEASES = [("train_mega_pretrain", None, "mega_pretrained"), ("train_mega", "hrnet", "mega_hrnet"),
                    ("train_mega", "resnet", "mega_resnet"), ("train_mega", "vit", "mega_vit"),
                    ("train_vqhps", "hrnet", "vqhps_hrnet"), ("train_vqhps", "resnet", "vqhps_resnet")]


@pytest.mark.parametrize("train,arg,released", TRAINED_RELEASES, ids=[r for _, _, r in TRAINED_RELEASES])
def test_training_config_model_equals_the_released_config(train, arg, released):
    t = load_config(train, arg).to_dict()
    r = load_config(released).to_dict()
    sections = [k for k in ("mega", "vqhps", "backbone") if k in r]
    assert sections, released
    for section in sections:
        got = t[section]["model"] if section == "backbone" else dict(t[section])
        want = dict(r[section])
        if section == "mega":
            assert got.pop("masking") == "scheduled" and got.pop("mask_ratio") == 1.0
            assert got.pop("visible_buckets") == 4  # training-only: encoder lengths (speed)
            if released == "mega_vit":
                # Documented exception: 196 in config_vit.yaml, 192 tokens from a 256 x 192 crop.
                assert want.pop("cond_length") == 196 and got.pop("cond_length") == 192
                assert t["backbone"]["cond_length"] == 192
        assert got == want, (train, section)
    if "backbone" in r:
        assert t["backbone"]["kind"] == released.split("_")[1]
        if "mega" in t and "cond_dim" in r["mega"]:
            assert t["backbone"]["cond_dim"] == r["mega"]["cond_dim"] == t["mega"]["cond_dim"]


def test_training_config_follows_an_edited_released_config(monkeypatch):
    """One source of truth: a change in configs/mega_hrnet.py reaches train_mega.py:hrnet and
    the demo built on it (from resnet: untouched)."""
    from configs import common

    original = common.released

    def edited(name):
        c = original(name)
        if name == "mega_hrnet":
            c.mega.encoder_layer = 3
            c.backbone.width = 18
            c.mega.cond_dim = 270
        return c

    monkeypatch.setattr(common, "released", edited)
    t = load_config("train_mega", "hrnet")
    assert t.mega.encoder_layer == 3 and t.mega.cond_dim == 270 and t.backbone.model.width == 18
    assert t.backbone.cond_dim == 270
    assert load_config("train_mega", "resnet").mega.encoder_layer == 12


def test_converter_presets_equal_the_released_configs():
    """What the converters assume where the weights are silent is what configs/mega_*.py and
    configs/vqhps_*.py say."""
    from hmr_jax.conversion import mega, vqhps

    assert set(mega.PRESETS) == {"mega_pretrained", "mega_hrnet", "mega_resnet", "mega_vit"}
    for name, preset in mega.PRESETS.items():
        r = load_config(name)
        assert preset["encoder_head"] == r.mega.encoder_head and preset["decoder_head"] == r.mega.decoder_head
        if "backbone" in r:
            assert preset["cond_length"] == r.mega.cond_length
            assert preset["backbone"] == r.backbone.backbone
            assert preset["image_size"] == list(r.image_size)
        else:
            assert set(preset) == {"encoder_head", "decoder_head"}
    assert mega.PRESETS["mega_vit"]["cond_length"] == 196  # the released config_vit.yaml value
    assert set(vqhps.PRESETS) == {"vqhps_hrnet", "vqhps_resnet"}
    for name, preset in vqhps.PRESETS.items():
        r = load_config(name)
        assert preset == {"num_heads": r.vqhps.num_heads, "dropout": r.vqhps.dropout, "seq_len": r.vqhps.seq_len,
                          "image_size": list(r.image_size)}


@pytest.mark.parametrize("name", ["train_demo_mega", "train_demo_tokenizer"])
def test_quick_argument_shortens_the_demo_run_only(name):
    """``:quick`` (``hmr_jax.demo --quick``) changes step counts only, and to fewer steps."""
    full, quick = load_config(name).to_dict(), load_config(name, "quick").to_dict()
    changed = {k for k in full if full[k] != quick[k]}
    assert set(quick) == set(full)
    assert changed and changed <= {"total_steps", "log_every_steps", "eval_every_steps", "eval_batches"}
    assert quick["total_steps"] < full["total_steps"]


def test_load_config_reads_names_paths_and_arguments(tmp_path):
    by_path = load_config(CONFIG_DIR / "train_toy.py")
    assert by_path.stage == "toy" and by_path.total_steps > 0
    assert load_config("train_toy").to_dict() == by_path.to_dict()
    assert load_config(f"{CONFIG_DIR}/train_mega.py:vit").backbone.kind == "vit"
    assert load_config("train_mega:resnet").to_dict() == load_config("train_mega", "resnet").to_dict()
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_config(tmp_path / "nope.py")
    with pytest.raises(FileNotFoundError, match="no config named 'train_nope'"):
        load_config("train_nope")
