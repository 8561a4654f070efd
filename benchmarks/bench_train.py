"""Train-step speed per stage (float32 / bfloat16) and data-parallel scaling; prints ONE JSON line.

    python benchmarks/bench_train.py                  # every stage, CPU sizes (~40 min, shared 2-core CPU)
    python benchmarks/bench_train.py --quick          # mega_pretrain, float32, 1 / 8 devices (~3 min)
    python benchmarks/bench_train.py --stages mega_hrnet,vqhps_resnet --dtypes bfloat16 --scaling ''
    python benchmarks/bench_train.py --released       # released sizes and batches (an accelerator)

Each stage runs its real jitted train step (the one ``train.py`` uses: frozen tokenizer, loss,
gradients, AdamW, sharded over a device mesh) on synthetic batches of the stage's shapes. The
frozen tokenizer is the released-size Mesh-VQ-VAE, randomly initialised (speed does not depend on
its weights); it needs the dfaust2 connection files (``--connections``, default
``body_models/ConnectionMatrices`` or ``$HMR_JAX_REFERENCE_DIR/ConnectionMatrices``).

Sizes: ``--released`` uses the released configs untouched (``configs/train_*.py``: model sizes
and batch sizes). The default (``cpu``) profile keeps each stage's compile and steps within a
few minutes on a 2-core CPU: the released Mesh-VQ-VAE (also every other stage's frozen
tokenizer) and the released VQ-HPS regressor head, but a reduced MEGA transformer (emb 256, 4 encoder / 2 decoder layers), HRNet width 16 instead of 48,
a 4-block ViT of width 256 instead of ViT-H, batches of 4 (Mesh-VQ-VAE), 8 (MEGA pre-training)
and 2 (image stages); ResNet-50 stays full size.
Every change is written into the JSON (``{stage}_batch``, ``{stage}_reduced``, ``scaled_down``).

Compile time (``jit(...).lower(...).compile()``) is reported apart from the step time (mean over
``--steps`` steps after one warm-up step). Scaling: one stage (``--scaling-stage``, default
mega_pretrain) at a fixed global batch on 1, 2, 4, 8 devices, measured in a subprocess started
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (on a CPU these are simulated devices
sharing the same cores, so the figures show the sharding overhead, not a speed-up). The per-stage
figures come from this process, on the real single device.

Output keys: ``stages.{name}.{float32|bfloat16}`` = {batch, step_ms, images_per_s (or
meshes_per_s), compile_s, setup_s (stage, variables, optimizer state; the first stage also
builds the shared random tokenizer)}; ``{name}_batch``; ``{name}_reduced`` (the overrides, or absent when
released sizes); ``scaling`` = {stage, batch, dtype, devices: {n: {step_ms, per_s, compile_s}}};
``loadavg_start`` / ``loadavg_end`` (1, 5, 15 min); the device, jax version and cpu count.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

NV = 6890
STAGES = ("mesh_vqvae", "mega_pretrain", "mega_hrnet", "mega_resnet", "mega_vit", "vqhps_hrnet",
          "vqhps_resnet")
MESH_STAGES = ("mesh_vqvae", "mega_pretrain")

# The CPU profile: (batch, overrides of the released training config). ``None`` batch = released.
_MEGA_SMALL = dict(emb_dim=256, encoder_layer=4, decoder_layer=2)
_HRNET_SMALL = dict(width=16)
_VIT_SMALL = dict(embed_dim=256, depth=4, num_heads=4)
CPU_PROFILE = {
    "mesh_vqvae": (4, {}),
    "mega_pretrain": (8, {"mega": _MEGA_SMALL}),
    "mega_hrnet": (2, {"mega": _MEGA_SMALL, "backbone.model": _HRNET_SMALL}),
    "mega_resnet": (2, {"mega": _MEGA_SMALL}),
    "mega_vit": (2, {"mega": _MEGA_SMALL, "backbone.model": _VIT_SMALL}),
    "vqhps_hrnet": (2, {"backbone.model": _HRNET_SMALL}),
    "vqhps_resnet": (2, {}),
}
QUICK_STAGES = ("mega_pretrain",)


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _config(name):
    """The training config of a stage: ``mega_hrnet`` -> ``configs/train_mega.py:hrnet``."""
    from hmr_jax.training.config import load_config

    family, _, kind = name.partition("_")
    return load_config(f"train_{family}", kind) if family in ("mega", "vqhps") and kind != "pretrain" \
        else load_config(f"train_{name}")


def _body_models(tmp):
    """Random stand-in joint regressors and T-pose (speed does not depend on their values)."""
    rng = np.random.default_rng(0)
    for name, rows in (("J_regressor_h36m.npy", 17), ("J_regressor_24.npy", 24)):
        reg = rng.random((rows, NV)).astype(np.float32)
        np.save(os.path.join(tmp, name), reg / reg.sum(1, keepdims=True))
    np.save(os.path.join(tmp, "tpose.npy"), rng.normal(scale=0.3, size=(NV, 3)).astype(np.float32))
    return tmp


def stage_config(name, connections, tmp, released):
    """``(config, kind, reduced)`` of a stage: kind "mesh" or "image"; reduced = the overrides."""
    if name not in STAGES:
        raise SystemExit(f"bench_train: unknown stage {name!r}; choose from {','.join(STAGES)}")
    c = _config(name)
    if name == "mesh_vqvae":
        c.model.autoencoder.connection_folder = connections
    else:
        c.tokenizer.path = "random"
        c.tokenizer.connection_folder = connections
        c.body_models = tmp
        if "tpose" in c:
            c.tpose = os.path.join(tmp, "tpose.npy")
    reduced = {}
    if not released:
        batch, overrides = CPU_PROFILE[name]
        if batch is not None and batch != c.batch_size:
            reduced["batch_size"] = batch
            c.batch_size = batch
        for path, values in overrides.items():
            node = c
            for part in path.split("."):
                node = node[part]
            node.update(copy.deepcopy(values))
            reduced[path] = dict(values)
        if name.startswith("mega_") and name != "mega_pretrain" and "backbone.model" in overrides:
            if "embed_dim" in overrides["backbone.model"]:   # ViT: condition tokens are its width
                c.mega.cond_dim = overrides["backbone.model"]["embed_dim"]
            else:                                          # HRNet: 15 x width condition channels
                c.mega.cond_dim = 15 * overrides["backbone.model"]["width"]
            reduced["mega"] = {**reduced.get("mega", {}), "cond_dim": c.mega.cond_dim}
    return c, ("mesh" if name in MESH_STAGES else "image"), reduced


def _batch(kind, batch, crop):
    rng = np.random.default_rng(0)
    out = {"vertices": rng.normal(scale=0.3, size=(batch, NV, 3)).astype(np.float32)}
    if kind == "image":
        h, w = (256, 192) if crop == "vit" else (224, 224)
        out.update(image=rng.normal(size=(batch, h, w, 3)).astype(np.float32),
                   vertices_canonical=out["vertices"],
                   global_orient=rng.normal(size=(batch, 3)).astype(np.float32),
                   keypoints_2d=rng.uniform(-1, 1, size=(batch, 24, 3)).astype(np.float32),
                   is_3dpw=np.arange(batch) % 2 == 0)
    return out


def _memoize_tokenizer():
    """Build the frozen (random) tokenizer once per process: its eager initialisation takes about
    a minute on a CPU and is not part of the train step; every stage reuses the same one."""
    import functools

    from hmr_jax.training.stages import common

    if not hasattr(common.load_tokenizer, "cache_info"):
        common.load_tokenizer = functools.lru_cache(maxsize=None)(common.load_tokenizer)


def measure(config, kind, num_devices, steps):
    """``(step_ms, compile_s, setup_s)`` of the stage's train step on the first ``num_devices``
    devices; setup = building the stage, initialising and placing variables and optimizer state."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    from hmr_jax.training.stages import get_stage
    from hmr_jax.training.trainer import DATA_AXIS, build_train_state, make_mesh

    t_setup = time.perf_counter()
    _memoize_tokenizer()
    mesh = make_mesh(num_devices)
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    stage = get_stage(config)
    crop = config.backbone.kind if "backbone" in config else None
    batch = jax.device_put(_batch(kind, config.batch_size, crop), sharding)
    setup = build_train_state(stage, config, mesh, batch, steps_per_epoch=1000)
    state = setup.state
    jax.block_until_ready(state)
    setup_s = time.perf_counter() - t_setup
    t0 = time.perf_counter()
    step = setup.step_fn.lower(state, setup.frozen, batch).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = step(state, setup.frozen, batch)  # warm-up step
    jax.block_until_ready((state, metrics))
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, setup.frozen, batch)
    jax.block_until_ready((state, metrics))
    ms = 1000 * (time.perf_counter() - t0) / steps
    if not np.isfinite(float(metrics["loss"])):
        raise RuntimeError(f"{config.stage}: non-finite loss in the benchmark")
    return ms, compile_s, setup_s


def _log(msg):
    print(f"bench_train: {msg}", file=sys.stderr, flush=True)  # progress; the JSON goes to stdout


def _find_connections(arg):
    if arg:
        return arg
    for cand in ("body_models/ConnectionMatrices",
                 os.path.join(os.environ.get("HMR_JAX_REFERENCE_DIR",
                                             os.path.join(ROOT, "..", "shared", "reference")),
                              "ConnectionMatrices")):
        if os.path.isfile(os.path.join(cand, "_pool0.npy")):
            return cand
    raise SystemExit("bench_train: the dfaust2 connection files are needed: pass --connections DIR "
                     "(the folder with _pool0.npy ... _unpool7.npy)")


def run_scaling(args, connections):
    """Child process (8 simulated devices): the scaling figures as a dict."""
    import jax

    out = {"stage": args.scaling_stage, "dtype": "float32", "devices": {}}
    with tempfile.TemporaryDirectory() as tmp:
        _body_models(tmp)
        for n in [int(x) for x in args.scaling.split(",") if x]:
            if n > jax.device_count():
                out["devices"][str(n)] = f"skipped: only {jax.device_count()} devices"
                continue
            config, kind, reduced = stage_config(args.scaling_stage, connections, tmp, args.released)
            if config.batch_size % n:
                out["devices"][str(n)] = f"skipped: batch {config.batch_size} not divisible by {n}"
                continue
            ms, compile_s, _ = measure(config, kind, n, args.steps)
            unit = "meshes_per_s" if kind == "mesh" else "images_per_s"
            out["batch"] = config.batch_size
            out["reduced"] = reduced or None
            out["devices"][str(n)] = {"step_ms": round(ms, 2), unit: round(config.batch_size / ms * 1e3, 2),
                                      "compile_s": round(compile_s, 2)}
            _log(f"scaling {n} devices: {out['devices'][str(n)]}")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="", help="folder of the dfaust2 _pool*/_unpool*.npy")
    parser.add_argument("--stages", default=None, help=f"comma list of {','.join(STAGES)}")
    parser.add_argument("--dtypes", default=None, help="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (2)")
    parser.add_argument("--scaling", default=None, help="device counts, e.g. 1,2,4,8 ('' to skip)")
    parser.add_argument("--scaling-stage", default="mega_pretrain")
    parser.add_argument("--released", action="store_true",
                        help="released model and batch sizes (an accelerator; hours on a CPU)")
    parser.add_argument("--quick", action="store_true",
                        help="mega_pretrain only, float32, scaling 1,8 (a few minutes)")
    parser.add_argument("--scaling-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.stages = args.stages if args.stages is not None else (
        ",".join(QUICK_STAGES) if args.quick else ",".join(STAGES))
    args.dtypes = args.dtypes if args.dtypes is not None else ("float32" if args.quick else "float32,bfloat16")
    args.steps = args.steps if args.steps is not None else 2
    args.scaling = args.scaling if args.scaling is not None else ("1,8" if args.quick else "1,2,4,8")
    connections = _find_connections(args.connections)

    if args.scaling_child:
        print(json.dumps(run_scaling(args, connections)))
        return

    # This process measures on the real single device: no simulated devices here.
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        os.environ["XLA_FLAGS"] = " ".join(f for f in flags.split()
                                           if "xla_force_host_platform_device_count" not in f)
    import jax

    result = {"benchmark": "train_step", "device": str(jax.devices()[0].device_kind),
              "platform": jax.devices()[0].platform, "jax": jax.__version__,
              "cpu_count": os.cpu_count(), "loadavg_start": _loadavg(),
              "profile": "released" if args.released else "cpu", "steps_timed": args.steps,
              "stages": {}}
    if not args.released:
        result["scaled_down"] = ("cpu profile: Mesh-VQ-VAE batch 4 and MEGA pre-training batch 8 "
                                 "(released 16), image batches of 2 (released 16 / 4 / 32), MEGA "
                                 "transformer emb 256 with 4 + 2 layers (released 1024, 12 + 4), HRNet "
                                 "width 16 (48), ViT 256 wide x 4 blocks (ViT-H 1280 x 32); the Mesh-VQ-VAE "
                                 "(also the frozen tokenizer of every other stage), ResNet-50 and the "
                                 "VQ-HPS head at released size; see *_reduced")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _body_models(tmp)
        for name in [s for s in args.stages.split(",") if s]:
            result["stages"][name] = {}
            for dtype in [d for d in args.dtypes.split(",") if d]:
                if name == "mesh_vqvae" and dtype != "float32":
                    result["stages"][name][dtype] = "n/a (the Mesh-VQ-VAE trains in float32)"
                    continue
                config, kind, reduced = stage_config(name, connections, tmp, args.released)
                config.dtype = dtype
                result[f"{name}_batch"] = config.batch_size
                if reduced:
                    result[f"{name}_reduced"] = reduced
                ms, compile_s, setup_s = measure(config, kind, 1, args.steps)
                unit = "meshes_per_s" if kind == "mesh" else "images_per_s"
                result["stages"][name][dtype] = {
                    "batch": config.batch_size, "step_ms": round(ms, 2),
                    unit: round(config.batch_size / ms * 1000, 2), "compile_s": round(compile_s, 2),
                    "setup_s": round(setup_s, 2)}
                _log(f"{name} {dtype}: {result['stages'][name][dtype]} "
                     f"(loadavg {_loadavg()}, {time.perf_counter() - t_start:.0f} s)")
                jax.clear_caches()

    if args.scaling:
        env = dict(os.environ)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
        cmd = [sys.executable, os.path.abspath(__file__), "--scaling-child", "--connections", connections,
               "--scaling", args.scaling, "--scaling-stage", args.scaling_stage, "--steps", str(args.steps)]
        if args.released:
            cmd.append("--released")
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            result["scaling"] = f"failed (exit {proc.returncode}; see stderr)"
        else:
            result["scaling"] = json.loads(proc.stdout.strip().splitlines()[-1])
            result["scaling"]["note"] = ("simulated devices (--xla_force_host_platform_device_count=8) "
                                         "share this CPU's cores: overhead, not speed-up")
    result["loadavg_end"] = _loadavg()
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
