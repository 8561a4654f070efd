"""Train-step speed per stage (float32 / bfloat16) and data-parallel scaling; prints ONE JSON line.

    python benchmarks/bench_train.py [--connections body_models/ConnectionMatrices]
        [--stages mesh_vqvae,mega_pretrain,mega_hrnet,vqhps_hrnet] [--steps 5] [--image-batch 2]

Each stage runs its real jitted train step (the one ``train.py`` uses: loss, gradients, AdamW,
sharded over a device mesh) on synthetic batches of the released shapes: Mesh-VQ-VAE and MEGA
pre-training at their released batch (16); the image stages at ``--image-batch`` (the released
16 / 32 do not fit this machine's time budget on CPU; set it on an accelerator). The frozen
tokenizer is randomly initialised (speed does not depend on its weights); the dfaust2 connection
files are needed (``--connections``, default ``body_models/ConnectionMatrices`` or
``$HMR_JAX_REFERENCE_DIR/ConnectionMatrices``). Scaling: MEGA pre-training at global batch 16
on 1, 2, 4, 8 devices (on CPU, simulated with ``--xla_force_host_platform_device_count=8``, so
it shows sharding overhead rather than speed-up).

Output keys: ``stages.{name}.{float32|bfloat16}`` = {batch, step_ms, images_per_s, compile_s},
``scaling`` = {devices: {step_ms, images_per_s}}, plus the device description.
"""
from __future__ import annotations

import os
import sys

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NV = 6890


def _config(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _body_models(tmp):
    rng = np.random.default_rng(0)
    for name, rows in (("J_regressor_h36m.npy", 17), ("J_regressor_24.npy", 24)):
        reg = rng.random((rows, NV)).astype(np.float32)
        np.save(os.path.join(tmp, name), reg / reg.sum(1, keepdims=True))
    np.save(os.path.join(tmp, "tpose.npy"), rng.normal(scale=0.3, size=(NV, 3)).astype(np.float32))
    return tmp


def _stage_config(name, connections, tmp, image_batch):
    if name == "mesh_vqvae":
        c = _config("train_mesh_vqvae")
        c.model.autoencoder.connection_folder = connections
        return c, "mesh"
    if name == "mega_pretrain":
        c = _config("train_mega_pretrain")
    elif name.startswith("mega_"):
        c = _config("train_" + name)
        c.batch_size = image_batch
    elif name.startswith("vqhps_"):
        c = _config("train_" + name)
        c.batch_size = image_batch
        c.tpose = os.path.join(tmp, "tpose.npy")
    else:
        raise ValueError(f"unknown stage {name}")
    c.tokenizer.path = "random"
    c.tokenizer.connection_folder = connections
    if "body_models" in c:
        c.body_models = tmp
    return c, ("mesh" if name == "mega_pretrain" else "image")


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


def measure(config, kind, num_devices, steps):
    """(step_ms, compile_s) of the stage's train step on ``num_devices`` devices."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    from hmr_jax.training.stages import get_stage
    from hmr_jax.training.trainer import DATA_AXIS, build_train_state, make_mesh

    mesh = make_mesh(num_devices)
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    stage = get_stage(config)
    crop = config.backbone.kind if "backbone" in config else None
    batch = jax.device_put(_batch(kind, config.batch_size, crop), sharding)
    setup = build_train_state(stage, config, mesh, batch, steps_per_epoch=1000)
    state = setup.state
    t0 = time.perf_counter()
    state, metrics = setup.step_fn(state, setup.frozen, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    state, metrics = setup.step_fn(state, setup.frozen, batch)  # one warm step
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = setup.step_fn(state, setup.frozen, batch)
    jax.block_until_ready((state, metrics))
    return 1000 * (time.perf_counter() - t0) / steps, compile_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="")
    parser.add_argument("--stages", default="mesh_vqvae,mega_pretrain,mega_hrnet,vqhps_hrnet")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--image-batch", type=int, default=2)
    parser.add_argument("--scaling", default="1,2,4,8", help="device counts ('' to skip)")
    args = parser.parse_args()

    connections = args.connections
    if not connections:
        for cand in ("body_models/ConnectionMatrices",
                     os.path.join(os.environ.get("HMR_JAX_REFERENCE_DIR", os.path.join(ROOT, "..", "shared", "reference")),
                                  "ConnectionMatrices")):
            if os.path.isfile(os.path.join(cand, "_pool0.npy")):
                connections = cand
                break
    if not connections:
        sys.exit("bench_train: the dfaust2 connection files are needed: pass --connections DIR")

    import jax

    result = {"benchmark": "train_step", "device": str(jax.devices()[0].device_kind),
              "platform": jax.devices()[0].platform, "num_devices": jax.device_count(),
              "steps_timed": args.steps, "stages": {}, "scaling": {}}
    with tempfile.TemporaryDirectory() as tmp:
        _body_models(tmp)
        for name in [s for s in args.stages.split(",") if s]:
            result["stages"][name] = {}
            for dtype in [d for d in args.dtypes.split(",") if d]:
                if name == "mesh_vqvae" and dtype != "float32":
                    result["stages"][name][dtype] = "n/a (the Mesh-VQ-VAE runs in float32)"
                    continue
                config, kind = _stage_config(name, connections, tmp, args.image_batch)
                config.dtype = dtype
                ms, compile_s = measure(config, kind, 1, args.steps)
                result["stages"][name][dtype] = {
                    "batch": config.batch_size, "step_ms": round(ms, 2),
                    "images_per_s": round(config.batch_size / ms * 1000, 2),
                    "compile_s": round(compile_s, 1)}
                print(f"bench_train: {name} {dtype}: {result['stages'][name][dtype]}", file=sys.stderr,
                      flush=True)  # progress (the JSON line comes at the end, on stdout)
        for n in [int(x) for x in args.scaling.split(",") if x]:
            if n > jax.device_count():
                continue
            config, kind = _stage_config("mega_pretrain", connections, tmp, args.image_batch)
            ms, _ = measure(config, kind, n, args.steps)
            result["scaling"][str(n)] = {"batch": config.batch_size, "step_ms": round(ms, 2),
                                         "images_per_s": round(config.batch_size / ms * 1000, 2)}
            print(f"bench_train: scaling {n} devices: {result['scaling'][str(n)]}", file=sys.stderr,
                  flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
