"""Train-step speed per stage (float32 / bfloat16), full-size MEGA-HRNet vs the original, and
data-parallel scaling; prints ONE JSON line.

    python benchmarks/bench_train.py                  # every stage, CPU sizes, full size at batch 2 and 8
    python benchmarks/bench_train.py --quick          # mega_pretrain, full size at batch 2, 1 / 2 devices
    python benchmarks/bench_train.py --quick --original ../orig/MEGA --original-mesh-vqvae ../orig/Mesh-VQ-VAE \
        --original-deps ../orig_deps                  # ... and the original's training step, same run
    python benchmarks/bench_train.py --stages mega_hrnet,vqhps_resnet --dtypes bfloat16 --scaling ''
    python benchmarks/bench_train.py --released       # released sizes and batches (an accelerator)

Flags are absl's (``--name value`` or ``--name=value``; ``--flag`` / ``--noflag``; ``--help``
lists them); an empty value (``--scaling ''`` or ``--scaling=``) skips that part.

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

Full size (``full_size``, float32, in every profile): the MEGA-HRNet image stage at released model
sizes (HRNet-w48, emb 1024, 12 + 4 blocks; forward + backward + AdamW update, tokenizer encode and
decode included) at ``--image-batches`` (2, 8), and HRNet-w48 forward + backward alone (training
mode) at ``--hrnet-batches`` (2, 8). With ``--original`` (MEGA checkout) and
``--original-mesh-vqvae`` (its tokenizer's checkout) the original's training step
(:func:`original_image_step`) and its HRNet forward + backward run in the same process,
interleaved step by step with ours (``--min-rounds`` / ``--max-rounds`` / ``--budget-s``; medians);
``targets`` says whether our step is at least as fast. See ``_original.py`` for how the original
code is imported. Host-side draws (MEGA: each batch's visible-token count, which picks the
encoder length and so the compiled program) are taken at fixed quantiles
(:data:`DRAW_QUANTILES`, six steps per timed call, reported per step), and the original runs the
same counts (its ``fixed_ratio``), so both sides do the same work and the figure is the
schedule's average.

Compile time (``jit(...).lower(...).compile()``, every program the draws need) is reported apart
from the step time (mean over ``--steps`` rounds after one warm-up round). Scaling: one stage (``--scaling-stage``, default
mega_pretrain) at a fixed global batch on 1, 2, 4, 8 devices, measured in a subprocess started
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (on a CPU these are host devices
sharing the same cores: the 2-device figure is the "one device per core" question). The
per-stage figures come from this process, on the real single device.

Output keys: the machine (CPU model and features, cores, load, XLA flags); ``stages.{name}.{float32|bfloat16}`` = {batch, step_ms, images_per_s (or
meshes_per_s), compile_s, setup_s (stage, variables, optimizer state; the first stage also
builds the shared random tokenizer)}; ``{name}_batch``; ``{name}_reduced`` (the overrides, or absent when
released sizes); ``full_size`` = {``mega_hrnet_full_f32_b{B}``, ``hrnet_w48_fwd_bwd_f32_b{B}``: {s,
cpu_s, images_per_s, compile_s}, the ``original_...`` entries, ``..._speedup_vs_original``,
``targets``}; ``scaling`` = {stage, batch, dtype, devices: {n: {step_ms, per_s, compile_s}}};
``loadavg_end`` (1, 5, 15 min); ``wall_s``.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import copy  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

import hmr_jax  # noqa: E402,F401  (XLA CPU flags before JAX starts)
import _common  # noqa: E402
from hmr_jax.cli import parse_command  # noqa: E402
from hmr_jax.errors import command_line  # noqa: E402

PROGRAM = "python benchmarks/bench_train.py"

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
        raise ValueError(f"unknown stage {name!r}; choose from {','.join(STAGES)}")
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


#: quantiles at which the benchmarks take the stages' host-side draws (MEGA: the batch's visible
#: count, 0 / 4 / 11 / 21 / 33 / 46 of 54 tokens; the original gets the same as ``fixed_ratio``)
DRAW_QUANTILES = tuple((i + 0.5) / 6 for i in range(6))


def bench_draws(stage):
    """The stage's draws at :data:`DRAW_QUANTILES`, or one empty draw when it draws nothing."""
    from hmr_jax.training.stages import StepDraws

    draws = [stage.draws_at(q) for q in DRAW_QUANTILES]
    return [StepDraws()] if all(d == StepDraws() for d in draws) else draws


def prepare_step(config, kind, num_devices):
    """``(advance, compile_s, setup_s, last_metrics, steps)`` of the stage's jitted train step on
    the first ``num_devices`` devices: ``advance()`` runs ``steps`` training steps, one per draw of
    :func:`bench_draws` (state carried over, blocks until done); ``last_metrics()`` returns the
    metrics of the latest step. Setup = building the stage, initialising and placing variables and
    optimizer state; compile = every program those draws need."""
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
    jax.block_until_ready(setup.state)
    setup_s = time.perf_counter() - t_setup
    draws = bench_draws(stage)
    t0 = time.perf_counter()
    programs = {}
    for d in draws:
        if d.program not in programs:
            programs[d.program] = setup.step_fn.lower(setup.state, setup.frozen, batch, dict(d.values),
                                                      d.program).compile()
    compile_s = time.perf_counter() - t0
    carried = {"state": setup.state, "metrics": None}

    def advance():
        for d in draws:
            carried["state"], carried["metrics"] = programs[d.program](carried["state"], setup.frozen, batch,
                                                                       dict(d.values))
        jax.block_until_ready((carried["state"], carried["metrics"]))

    return advance, compile_s, setup_s, (lambda: carried["metrics"]), len(draws)


def measure(config, kind, num_devices, steps):
    """``(step_ms, compile_s, setup_s)`` of the stage's train step on the first ``num_devices``
    devices (mean over ``steps`` rounds of :func:`bench_draws` after one warm-up round)."""
    advance, compile_s, setup_s, metrics, per_round = prepare_step(config, kind, num_devices)
    advance()  # warm-up round
    t0 = time.perf_counter()
    for _ in range(steps):
        advance()
    ms = 1000 * (time.perf_counter() - t0) / (steps * per_round)
    if not np.isfinite(float(metrics()["loss"])):
        raise RuntimeError(f"{config.stage}: non-finite loss in the benchmark")
    return ms, compile_s, setup_s


def full_image_config(connections, tmp, batch):
    """The MEGA-HRNet image stage at released model sizes (HRNet-w48, emb 1024, 12 + 4 blocks,
    the released Mesh-VQ-VAE as frozen tokenizer), float32, at ``batch``."""
    config, kind, _ = stage_config("mega_hrnet", connections, tmp, released=True)
    config.batch_size = batch
    config.dtype = "float32"
    return config, kind


def ours_hrnet_fwd_bwd(images):
    """``(call, compile_s)``: gradients of mean(features) w.r.t. HRNet-w48's parameters, training
    mode (batch statistics, updated running statistics returned too)."""
    import jax
    import jax.numpy as jnp

    from hmr_jax.models.backbones import hrnet_w48

    model = hrnet_w48()
    x = jax.device_put(images)
    variables = jax.device_put(_common.random_variables(jax.eval_shape(model.init, jax.random.key(0), x)))

    def loss(params, stats, x):
        y, updates = model.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
        return jnp.mean(y), updates["batch_stats"]

    args = (variables["params"], variables["batch_stats"], x)
    t0 = time.perf_counter()
    fn = jax.jit(jax.grad(loss, has_aux=True)).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    return (lambda: jax.block_until_ready(fn(*args))), compile_s


def original_hrnet_fwd_bwd(original, images):
    """The original HRNet-w48 in training mode: ``net(x).mean().backward()`` (gradients zeroed first)."""
    import _original

    net = _original.hrnet(original).train()
    x = _original.to_nchw(images)

    def call():
        net.zero_grad(set_to_none=True)
        net(x).mean().backward()

    return call


def original_image_step(originals, mega_config, connections, tmp, batch_np):
    """Training steps of the original MEGA-HRNet, as its ``CVQMAE_Train.one_epoch`` does them.

    One step per :data:`DRAW_QUANTILES` ``u``, each with ``fixed_ratio = cos(pi u / 2)`` (the
    schedule's ratio at ``u``, so its visible counts are those our steps draw there). A step:
    tokens from the frozen tokenizer (no gradient), ``model(tokens, images, fixed_ratio)``
    (training mode), argmax tokens (visible ones kept) decoded by the tokenizer (no
    gradient), rotation from 6D (``_original.rotation_6d_to_matrix``, a stand-in for pytorch3d's),
    loss = cross-entropy on the masked tokens + MSE of the rotation matrices + its
    ``reprojection_loss`` (3DPW rows, 24 joints) + ``reprojection_loss_conf`` (other rows, 17
    H36M joints), ``backward()``, AdamW (lr 1e-3 x batch / 256, betas 0.9 / 0.95, wd 0.05)
    ``step()``. Not timed: its per-step metrics and logging after the update. The ground-truth
    rotation matrices are converted once, outside the step.
    """
    import torch  # the original is PyTorch code (only with --original)
    from scipy.spatial.transform import Rotation

    from hmr_jax.models.mega import scheduled_mask_ratio

    import _original

    mega, vq, losses = originals
    b = batch_np["image"].shape[0]
    model = _original.mega_hrnet(mega, mega_config).train()
    tokenizer = _original.mesh_vqvae(vq, connections, b)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3 * b / 256, betas=(0.9, 0.95), weight_decay=0.05)
    images = _original.to_nchw(batch_np["image"])
    meshes = torch.from_numpy(batch_np["vertices_canonical"])
    gt_rot = torch.from_numpy(Rotation.from_rotvec(batch_np["global_orient"]).as_matrix().astype(np.float32))
    j2d = torch.from_numpy(batch_np["keypoints_2d"])
    is_3dpw = torch.from_numpy(batch_np["is_3dpw"])
    j24 = torch.from_numpy(np.load(os.path.join(tmp, "J_regressor_24.npy")))
    j17 = torch.from_numpy(np.load(os.path.join(tmp, "J_regressor_h36m.npy")))
    cross_entropy, mse = torch.nn.CrossEntropyLoss(), torch.nn.MSELoss()

    def one_step(ratio):
        opt.zero_grad()
        with torch.no_grad():
            tokens = tokenizer.get_codebook_indices(meshes)
        logits, rot, cam, mask = model(tokens, images, fixed_ratio=ratio)
        with torch.no_grad():
            pred = (logits.argmax(-1) * mask + tokens * (~mask.bool())).long()
            canonical = tokenizer.decode(pred)
        rotmat = _original.rotation_6d_to_matrix(rot)
        posed = (rotmat @ canonical.transpose(2, 1)).transpose(2, 1)
        masked = mask.flatten().bool()
        loss = cross_entropy(logits.flatten(0, 1)[masked], tokens.flatten()[masked].long()) + mse(rotmat, gt_rot)
        loss = loss + losses.reprojection_loss(j2d[is_3dpw][:, :, :2], posed[is_3dpw], cam[is_3dpw], j24)
        loss = loss + losses.reprojection_loss_conf(j2d[~is_3dpw][:, :17], posed[~is_3dpw], cam[~is_3dpw], j17)
        loss.backward()
        opt.step()
        return loss

    def call():
        for u in DRAW_QUANTILES:  # the schedule's ratio at u: the visible counts of ours
            one_step(scheduled_mask_ratio(u))

    return call


def _per_step(times: dict, steps: int) -> dict:
    """:func:`_common.interleave` times of calls that run ``steps`` steps -> times per step."""
    scaled = ("first_s", "s", "cpu_s")
    return {name: {k: (v / steps if k in scaled else v) for k, v in t.items()} for name, t in times.items()}


def run_full_size(args, connections, tmp, originals) -> dict:
    """Full-size MEGA-HRNet image stage and HRNet-w48 forward + backward, ours interleaved with the
    original's (when given) step by step; float32."""
    import jax

    out: dict = {}
    targets = {}
    for b in _common.parse_ints(args.image_batches, "--image-batches") if args.image_batches else []:
        config, kind = full_image_config(connections, tmp, b)
        advance, compile_s, setup_s, metrics, per_call = prepare_step(config, kind, 1)
        candidates = {"ours": advance}
        if originals:
            candidates["original"] = original_image_step(originals, dict(config.mega), connections, tmp,
                                                         _batch(kind, b, "hrnet"))
        times = _per_step(_common.interleave(candidates, args.min_rounds, args.max_rounds, args.budget_s),
                          per_call)
        if not np.isfinite(float(metrics()["loss"])):
            raise RuntimeError("mega_hrnet full size: non-finite loss in the benchmark")
        key = f"mega_hrnet_full_f32_b{b}"
        out[key] = _common.rounded({**times["ours"], "images_per_s": b / times["ours"]["s"],
                                    "compile_s": compile_s, "setup_s": setup_s})
        if originals:
            out["original_" + key] = _common.rounded({**times["original"], "images_per_s": b / times["original"]["s"]})
            out[key + "_speedup_vs_original"] = round(times["original"]["s"] / times["ours"]["s"], 3)
            targets[key] = _common.target(times["ours"]["s"], times["original"]["s"],
                                          f"MEGA-HRNet training step, batch {b}, no slower than the original's")
        _log(f"{key}: {json.dumps({k: v for k, v in out.items() if key in k})}")
        del advance, candidates, metrics  # the closures hold the train state and the original's model
        gc.collect()
        jax.clear_caches()
    for b in _common.parse_ints(args.hrnet_batches, "--hrnet-batches") if args.hrnet_batches else []:
        images = np.random.default_rng(1).standard_normal((b, 224, 224, 3), np.float32)
        ours, compile_s = ours_hrnet_fwd_bwd(images)
        candidates = {"ours": ours}
        if originals:
            candidates["original"] = original_hrnet_fwd_bwd(originals[0], images)
        times = _common.interleave(candidates, args.min_rounds, args.max_rounds, args.budget_s)
        key = f"hrnet_w48_fwd_bwd_f32_b{b}"
        out[key] = _common.rounded({**times["ours"], "images_per_s": b / times["ours"]["s"], "compile_s": compile_s})
        if originals:
            out["original_" + key] = _common.rounded({**times["original"], "images_per_s": b / times["original"]["s"]})
            out[key + "_speedup_vs_original"] = round(times["original"]["s"] / times["ours"]["s"], 3)
        _log(f"{key}: {json.dumps({k: v for k, v in out.items() if key in k})}")
        del ours, candidates
        gc.collect()
        jax.clear_caches()
    if targets:
        out["targets"] = targets
    return out


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
    raise FileNotFoundError("the dfaust2 connection files are needed: pass --connections DIR "
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


def _define(fv: flags.FlagValues) -> None:
    """This benchmark's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("connections", "", "folder of the dfaust2 _pool*/_unpool*.npy (default: "
                        "body_models/ConnectionMatrices or $HMR_JAX_REFERENCE_DIR/ConnectionMatrices)",
                        flag_values=fv)
    flags.DEFINE_string("stages", None, f"comma list of {', '.join(STAGES)} (default: all; --quick: "
                        f"{','.join(QUICK_STAGES)})", flag_values=fv)
    flags.DEFINE_string("dtypes", None, "comma list of float32, bfloat16 (default: both; --quick: float32)",
                        flag_values=fv)
    flags.DEFINE_integer("steps", None, "timed steps per measurement (default 2)", flag_values=fv)
    flags.DEFINE_string("scaling", None, "device counts, e.g. 1,2,4,8 (default; --quick: 1,2; '' to skip)",
                        flag_values=fv)
    flags.DEFINE_string("scaling-stage", "mega_pretrain", "the stage of the scaling figures", flag_values=fv)
    flags.DEFINE_boolean("released", False, "released model and batch sizes (an accelerator; hours on a CPU)",
                         flag_values=fv)
    flags.DEFINE_boolean("quick", False, "mega_pretrain (cpu profile), full-size MEGA-HRNet and HRNet-w48 at "
                         "batch 2, float32, scaling 1,2", flag_values=fv)
    flags.DEFINE_string("image-batches", None, "batches of the full-size MEGA-HRNet image stage (default 2,8; "
                        "'' to skip)", flag_values=fv)
    flags.DEFINE_string("hrnet-batches", None, "batches of HRNet-w48 forward + backward alone (default 2,8; '' "
                        "to skip)", flag_values=fv)
    _common.define_original(fv, "root of the original MEGA checkout: time its training step too")
    flags.DEFINE_string("original-mesh-vqvae", None, "root of the original Mesh-VQ-VAE checkout (its "
                        "tokenizer)", flag_values=fv)
    _common.define_rounds(fv, 3, 5, 120.0, "interleaved steps (ours and the original's)")
    flags.DEFINE_boolean("scaling-child", False, "internal: the scaling subprocess (simulated devices) the "
                         "benchmark starts; prints the scaling figures as one JSON line", flag_values=fv)


@command_line
def main(argv=None) -> int:
    """Time each stage's train step, the full-size step and the scaling (a subprocess), print one JSON
    line; 0, or 2 after one ``error:`` line on a bad flag or missing connection files."""
    args = parse_command(argv, _define, PROGRAM, __doc__)
    if args is None:   # --help
        return 0
    args.stages = args.stages if args.stages is not None else (
        ",".join(QUICK_STAGES) if args.quick else ",".join(STAGES))
    args.dtypes = args.dtypes if args.dtypes is not None else ("float32" if args.quick else "float32,bfloat16")
    args.steps = args.steps if args.steps is not None else 2
    args.scaling = args.scaling if args.scaling is not None else ("1,2" if args.quick else "1,2,4,8")
    for name in ("image_batches", "hrnet_batches"):
        if getattr(args, name) is None:
            setattr(args, name, "2" if args.quick else "2,8")
    if args.quick:
        args.max_rounds = args.min_rounds
    if args.original and not args.original_mesh_vqvae:
        raise ValueError("the original MEGA training step needs the original tokenizer too: "
                         "pass --original-mesh-vqvae /path/to/Mesh-VQ-VAE")
    connections = _find_connections(args.connections)

    if args.scaling_child:
        print(json.dumps(run_scaling(args, connections)))
        return 0

    # This process measures on the real single device: no simulated devices here.
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in xla_flags:
        os.environ["XLA_FLAGS"] = " ".join(f for f in xla_flags.split()
                                           if "xla_force_host_platform_device_count" not in f)
    import jax

    originals = None
    if args.original:
        import _original

        originals = (_original.load_mega(args.original, args.original_deps),
                     _original.load_mesh_vqvae(args.original_mesh_vqvae, args.original_deps),
                     _original.load_mega_losses(args.original))
    result = {"benchmark": "train_step", **_common.machine(),
              "original": args.original or "not timed (pass --original and --original-mesh-vqvae)",
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
        result["full_size"] = run_full_size(args, connections, tmp, originals)

    if args.scaling:
        env = dict(os.environ)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
        cmd = [sys.executable, os.path.abspath(__file__), "--scaling-child", f"--connections={connections}",
               f"--scaling={args.scaling}", f"--scaling-stage={args.scaling_stage}", f"--steps={args.steps}"]
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
