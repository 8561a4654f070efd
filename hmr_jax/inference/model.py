"""Loaded image models (MEGA, VQ-HPS) and the unconditional MEGA: crops in, meshes out, in fixed batches.

:func:`load_image_model` reads a converted folder or a ``train.py`` workdir through
:mod:`hmr_jax.checkpoints`, with its tokenizer, and checks that they fit together (token
count, codebook size), and puts the model in its inference layout
(:func:`hmr_jax.models.layouts.for_inference`: HRNet's weights unstacked, MEGA's all-masked
encoding precomputed; same outputs, faster). :meth:`ImageModel.predict_crops` is the one place
that chooses between MEGA's deterministic mode (every token masked, one pass), MEGA's stochastic decoding (N
hypotheses per person from one batched call; the backbone runs once per person) and VQ-HPS's
single pass.

Fixed batch sizes: persons are cut into chunks of ``batch_size`` and the last chunk is padded
(by repeating its last crop) up to the next size of :func:`bucket_sizes` (1, 2, 4, 8, 16 for
16), so every compiled function sees only those batch sizes: a folder of images with 1, 3 or 7
people compiles once per size, not once per image. Padded rows are dropped from the outputs
(no row depends on another, except VQ-HPS with ``faithful=True``, whose token head couples a
row to the rows before it, as the original).

Decoding defaults (``steps``, ``gen_temp``, ``faithful``) come from the checkpoint config's
``decoding`` section, else from the released-model config ``configs/KIND.py`` (the ``configs``
package), else from :mod:`hmr_jax.models.decoding`'s own defaults.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax import checkpoints
from hmr_jax.body.regressors import JointRegressorError, layout_of_file, load_joint_regressor, regressor_path
from hmr_jax.conversion.common import ConversionError
from hmr_jax.data.augment import BACKBONE_INPUTS, BackboneInput
from hmr_jax.inference.crops import InferenceError
from hmr_jax.mesh.connections import ConnectionFileError
from hmr_jax.models import decoding
from hmr_jax.models.layouts import for_inference
from hmr_jax.models.mesh_vqvae import MeshVQVAE, config_to_dict
from hmr_jax.models.vqhps import pose_from_mesh
from hmr_jax.training.config import load_config

#: persons per compiled call (the largest bucket)
DEFAULT_BATCH_SIZE = 16
#: the 6D rotation of the identity (pytorch3d rows): canonical meshes stay as decoded
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def bucket_sizes(batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[int, ...]:
    """The batch sizes compiled for at most ``batch_size`` rows: powers of two below it, and it."""
    if batch_size < 1:
        raise InferenceError(f"batch_size must be >= 1, got {batch_size}")
    sizes = [1 << i for i in range(batch_size.bit_length()) if (1 << i) < batch_size]
    return tuple(sizes) + (int(batch_size),)


def chunks(n: int, batch_size: int = DEFAULT_BATCH_SIZE) -> list[tuple[int, int, int]]:
    """``(start, stop, padded size)`` of the fixed-size batches covering ``n`` rows."""
    out = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        out.append((start, stop, next(b for b in bucket_sizes(batch_size) if b >= stop - start)))
    return out


def pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` (B, ...) with its last row repeated up to ``size`` rows."""
    x = np.asarray(x)
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)], axis=0)


def _as_key(key, seed: int):
    if key is None:
        return jax.random.PRNGKey(int(seed))
    if isinstance(key, (int, np.integer)):
        return jax.random.PRNGKey(int(key))
    return key


def _settings(defaults: dict, steps, temperature, faithful) -> dict:
    """Decoding keyword arguments: the given values, else the defaults; ``steps`` / ``gen_temp``
    only where known (else :func:`~hmr_jax.models.decoding.mega_generate`'s own defaults)."""
    out = {"faithful": bool(defaults.get("faithful", False) if faithful is None else faithful)}
    steps = defaults.get("steps") if steps is None else steps
    if steps is not None:
        if int(steps) < 1:
            raise InferenceError(f"steps must be >= 1, got {steps}")
        out["steps"] = int(steps)
    temperature = defaults.get("gen_temp") if temperature is None else temperature
    if temperature is not None:
        out["gen_temp"] = float(temperature)
    return out


def decoding_defaults(checkpoint: checkpoints.Checkpoint) -> dict:
    """``{"steps", "gen_temp", "faithful", ...}`` from the checkpoint config's ``decoding``
    section, else from the released-model config ``configs/KIND.py`` (empty when neither exists,
    e.g. without the repository's configs package)."""
    if checkpoint.config.get("decoding"):
        return dict(checkpoint.config["decoding"])
    try:
        cfg = load_config(checkpoint.kind)
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    return dict(cfg.decoding) if "decoding" in cfg else {}


def _geometry(checkpoint: checkpoints.Checkpoint) -> tuple[str, BackboneInput]:
    """(backbone name hrnet / resnet / vit, its input geometry with the checkpoint's image size)."""
    backbone = checkpoint.kind.split("_", 1)[1]
    geometry = BACKBONE_INPUTS[backbone]
    size = checkpoint.config.get("image_size")
    if size:
        crop, width = int(size[0]), int(size[1])
        geometry = dataclasses.replace(geometry, crop=crop, width=width)
    return backbone, geometry


def _load_tokenizer(tokenizer: str | None, connections: str | None, checkpoint, num_tokens: int,
                    num_embeddings: int):
    """The tokenizer (model, variables, decode function, vertex count), checked against the model."""
    tok_cfg = checkpoint.train_config.get("tokenizer") or {}
    path = tokenizer or tok_cfg.get("path")
    if not path:
        raise InferenceError(f"{checkpoint.path} is a converted model: give its tokenizer (a converted "
                             "mesh_vqvae folder, convert_torch_weights.py --model mesh_vqvae --out DIR)")
    folder = connections or tok_cfg.get("connection_folder") or ""
    try:
        tok_model, tok_vars = checkpoints.load_tokenizer(str(path), folder)
    except (ConversionError, ConnectionFileError, FileNotFoundError, ValueError, OSError) as e:
        raise InferenceError(f"tokenizer {path}: {e} (give a converted mesh_vqvae folder or a mesh_vqvae "
                             "train.py workdir, and its connection files with connections=)") from None
    codes = int(config_to_dict(tok_model.config)["quantizer"]["num_embeddings"])
    if codes != num_embeddings:
        raise InferenceError(f"tokenizer {path} has {codes} codes but {checkpoint.path} predicts {num_embeddings}: "
                             "give the tokenizer the model was trained with")
    try:
        shape = jax.eval_shape(lambda ids: tok_model.apply(tok_vars, ids, method=MeshVQVAE.decode),
                               jax.ShapeDtypeStruct((1, num_tokens), jnp.int32))
    except Exception as e:  # a shape mismatch surfaces as one of several jax / flax errors
        raise InferenceError(f"tokenizer {path} cannot decode the {num_tokens} tokens of {checkpoint.path} "
                             f"({type(e).__name__}): give the tokenizer the model was trained with") from None
    return tok_model, tok_vars, decoding.mesh_decoder_fn(tok_model, tok_vars), int(shape.shape[1]), str(path)


def _read(path, kinds: tuple[str, ...]) -> checkpoints.Checkpoint:
    try:
        return checkpoints.read_checkpoint(path, kinds=kinds)
    except checkpoints.CheckpointError as e:
        hint = ""
        if f"holds a '{checkpoints.UNCONDITIONAL_KIND}'" in str(e):
            hint = " (the pre-trained mega_pretrained model makes random meshes: sample.py --generate N)"
        elif kinds == (checkpoints.UNCONDITIONAL_KIND,) and "holds a" in str(e):
            hint = (" (--generate needs the unconditional MEGA: convert checkpoint/VQMAE/mega_pretrained "
                    "with convert_torch_weights.py --model mega_pretrained)")
        raise InferenceError(f"{e}{hint}") from None


@dataclasses.dataclass(eq=False)
class ImageModel:
    """A MEGA / VQ-HPS model with its tokenizer: normalised person crops in, meshes out.

    Attributes:
      kind: ``mega_hrnet`` / ``mega_resnet`` / ``mega_vit`` / ``vqhps_hrnet`` / ``vqhps_resnet``.
      model, variables: the Flax module and its variables, in the inference layout
        (:func:`hmr_jax.models.layouts.for_inference`; checkpoints keep the training layout).
      tokenizer, tokenizer_variables: the Mesh-VQ-VAE decoding the tokens.
      backbone: ``hrnet`` / ``resnet`` / ``vit`` (the crop kind of the data pipeline).
      geometry: the crops the model takes (square side, width, keypoint range, normalisation).
      decoding: decoding defaults (see the module docstring).
      num_vertices, num_tokens: mesh size and tokens per mesh.
      pose_init: VQ-HPS's starting pose (51,) (the T-pose's 17 H36M joints, meters), else None.
      batch_size: rows per compiled call (see :func:`bucket_sizes`).
      path, tokenizer_path: where they were read from.
      mesh: the devices a batch is split over (axis ``"batch"``), None for one device; see
        :func:`batch_mesh`.
    """

    kind: str
    model: Any
    variables: Any
    tokenizer: Any
    tokenizer_variables: Any
    backbone: str
    geometry: BackboneInput
    decoding: dict
    num_vertices: int
    num_tokens: int
    decode: Any
    pose_init: np.ndarray | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    path: str = ""
    tokenizer_path: str = ""
    mesh: jax.sharding.Mesh | None = None

    @property
    def family(self) -> str:
        """``"mega"`` or ``"vqhps"``."""
        return self.kind.split("_", 1)[0]

    def mode(self, num_samples: int, mode: str | None = None) -> str:
        """The decoding mode used: ``single_pass`` (VQ-HPS), ``deterministic`` or ``stochastic``
        (``mode=None``: deterministic for one hypothesis, stochastic for more)."""
        if self.family == "vqhps":
            if num_samples != 1 or mode == "stochastic":
                raise InferenceError("VQ-HPS predicts one mesh per person: use num_samples=1 (--num-samples 1)")
            return "single_pass"
        mode = mode or ("deterministic" if num_samples == 1 else "stochastic")
        if mode not in ("deterministic", "stochastic"):
            raise InferenceError(f"mode {mode!r} unknown: use 'deterministic' or 'stochastic'")
        if mode == "deterministic" and num_samples != 1:
            raise InferenceError("deterministic decoding gives one mesh per person: use num_samples=1 "
                                 "or the stochastic mode")
        return mode

    def predict_crops(self, crops, num_samples: int = 1, *, mode: str | None = None, key=None, seed: int = 0,
                      steps: int | None = None, temperature: float | None = None,
                      faithful: bool | None = None, first_chunk: int = 0) -> dict[str, np.ndarray]:
        """Meshes of normalised person crops, in fixed-size batches.

        Args:
          crops: (B, H, W, 3) float32 normalised crops (:func:`hmr_jax.inference.crops.crop_person`
            or the data pipeline's).
          num_samples: hypotheses per person (MEGA; > 1 is stochastic decoding).
          mode: ``None``, ``"deterministic"`` or ``"stochastic"`` (see :meth:`mode`).
          key / seed: PRNG key (or int seed) of the stochastic hypotheses; batch ``c`` of the
            call uses ``fold_in(key, first_chunk + c)``.
          steps, temperature, faithful: decoding settings (default: :attr:`decoding`).
        Returns:
          host arrays: ``tokens`` (B, N, T) int32, ``vertices`` (B, N, V, 3) meters (camera-aligned
          axes: x right, y down, z away; centred as the tokenizer decodes), ``rot6d`` (B, 6),
          ``rotmat`` (B, 3, 3) global rotation, ``cam`` (B, 3) weak-perspective ``(s, tx, ty)`` of
          the crop.
        """
        crops = np.asarray(crops, np.float32)
        want = (self.geometry.crop, self.geometry.width, 3)
        if crops.ndim != 4 or crops.shape[1:] != want:
            raise InferenceError(f"crops must be (B, {want[0]}, {want[1]}, 3) for {self.kind}, got {crops.shape}")
        if num_samples < 1:
            raise InferenceError(f"num_samples must be >= 1, got {num_samples}")
        mode = self.mode(num_samples, mode)
        settings = _settings(self.decoding, steps, temperature, faithful)
        key = _as_key(key, seed)
        parts = []
        for c, (start, stop, size) in enumerate(chunks(len(crops), self.batch_size)):
            out = self._run(self._place(pad_rows(crops[start:stop], size)), num_samples, mode,
                            jax.random.fold_in(key, first_chunk + c), **settings)
            parts.append({k: np.asarray(v)[:stop - start] for k, v in out.items()})
        if not parts:
            t, v = self.num_tokens, self.num_vertices
            n = num_samples
            return {"tokens": np.zeros((0, n, t), np.int32), "vertices": np.zeros((0, n, v, 3), np.float32),
                    "rot6d": np.zeros((0, 6), np.float32), "rotmat": np.zeros((0, 3, 3), np.float32),
                    "cam": np.zeros((0, 3), np.float32)}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _place(self, images: np.ndarray) -> jax.Array:
        """A padded batch on the device(s): split over :attr:`mesh` by rows when its size divides
        the batch (each device computes its rows; the same values), else on one device."""
        if self.mesh is not None and images.shape[0] % self.mesh.size == 0:
            return jax.device_put(images, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("batch")))
        return jnp.asarray(images)

    def _run(self, images, num_samples, mode, key, *, faithful, **generate) -> dict:
        """One fixed-size batch through the model and the tokenizer (device arrays); ``generate``:
        the stochastic decoding's ``steps`` / ``gen_temp`` where set."""
        b = images.shape[0]
        if mode == "single_pass":
            pose = np.broadcast_to(self.pose_init, (b, self.pose_init.shape[-1]))
            out = decoding.vqhps_predict(self.model, self.variables, images, pose, faithful=faithful)
            tokens = out["tokens"][:, None]
        elif mode == "deterministic":
            # faithful: as the original demo.py, whose input tokens are zeros: the off-by-one mask
            # copies token 0 into one random position
            gt = np.zeros((b, self.model.seq_length), np.int32) if faithful else None
            out = decoding.mega_deterministic(self.model, self.variables, images=images, faithful=faithful,
                                              gt_tokens=gt)
            tokens = out["tokens"][:, None]
        else:
            out = decoding.mega_generate(self.model, self.variables, images=images, key=key,
                                         num_samples=num_samples, faithful=faithful, **generate)
            tokens = out["tokens"]
        meshes = decoding.meshes_from_tokens(self.decode, tokens, out["rot6d"])
        return {"tokens": tokens, "vertices": meshes["vertices"], "rot6d": out["rot6d"],
                "rotmat": meshes["rotmat"], "cam": out["cam"]}


def batch_mesh(devices: int | None = None) -> jax.sharding.Mesh | None:
    """The devices a batch of persons is split over, or None for one device.

    ``devices=None`` decides: every local device of an accelerator (GPUs, TPU cores), and one on a
    CPU. On a CPU, ``import hmr_jax`` keeps XLA's one host device, whose convolutions and matmuls
    use every core: measured on a 2-core AVX-512 machine in one run (``benchmarks/bench_devices.py``),
    one host device per core was 1.03x (HRNet-w48, batch 16) and 1.10x (MEGA-HRNet deterministic,
    batch 16) as fast at inference, as fast at batch 1, and 0.88x as fast for HRNet-w48
    training (batch 8), so the process-wide choice is one device; where a user starts more host
    devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``) they are used. ``devices=1``:
    one device; ``devices=K``: the first K local devices.

    Raises:
      InferenceError: more devices asked for than exist.
    """
    local = jax.local_devices()
    if devices is None:
        devices = len(local)
    if not 1 <= devices <= len(local):
        raise InferenceError(f"devices={devices}: this process has {len(local)} local device(s) "
                             f"({local[0].platform}); ask for 1 to {len(local)}")
    if devices == 1:
        return None
    return jax.sharding.Mesh(np.array(local[:devices]), ("batch",))


def load_image_model(path: str | os.PathLike, tokenizer: str | None = None, *, connections: str | None = None,
                     joint_regressor=None, tpose=None, dtype=None,
                     batch_size: int = DEFAULT_BATCH_SIZE, devices: int | None = None) -> ImageModel:
    """Load a MEGA / VQ-HPS image model with its tokenizer.

    Args:
      path: a converted folder (``convert_torch_weights.py --out``) or a ``train.py`` workdir of
        the ``mega`` / ``vqhps`` stages (latest checkpoint).
      tokenizer: converted ``mesh_vqvae`` folder or mesh_vqvae workdir (default: a workdir's
        ``config.tokenizer.path``; required for a converted model).
      connections: the tokenizer's connection folder (default: its config's).
      joint_regressor, tpose: VQ-HPS only: (17, V) H36M joint regressor and (V, 3) T-pose mesh
        (meters), arrays or ``.npy`` paths (default: a workdir's ``body_models`` / ``tpose``).
      dtype: computation dtype (default: float32, or the workdir's ``config.dtype``).
      batch_size: persons per compiled call.
      devices: devices a batch is split over (:func:`batch_mesh`; default: all of an accelerator's,
        one CPU device).
    Raises:
      InferenceError: a folder of another kind (e.g. a tokenizer or the unconditional MEGA), a
        tokenizer that does not fit the model, missing VQ-HPS inputs, too many devices.
    """
    mesh = batch_mesh(devices)
    ckpt = _read(path, checkpoints.IMAGE_KINDS)
    model, variables = for_inference(checkpoints.build_model(ckpt, dtype), ckpt.variables)
    is_vqhps = ckpt.kind in checkpoints.VQHPS_KINDS
    num_tokens = int(model.num_tokens if is_vqhps else model.seq_length)
    num_embeddings = int(model.dict_size if is_vqhps else model.num_embeddings)
    tok_model, tok_vars, decode, nv, tok_path = _load_tokenizer(tokenizer, connections, ckpt, num_tokens,
                                                                num_embeddings)
    pose_init = _vqhps_pose_init(ckpt, joint_regressor, tpose, nv) if is_vqhps else None
    backbone, geometry = _geometry(ckpt)
    bucket_sizes(batch_size)
    if mesh is not None:   # every device holds the weights
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        variables, tok_vars = jax.device_put((variables, tok_vars), replicated)
        decode = decoding.mesh_decoder_fn(tok_model, tok_vars)
    return ImageModel(kind=ckpt.kind, model=model, variables=variables, tokenizer=tok_model,
                      tokenizer_variables=tok_vars, backbone=backbone, geometry=geometry,
                      decoding=decoding_defaults(ckpt), num_vertices=nv, num_tokens=num_tokens, decode=decode,
                      pose_init=pose_init, batch_size=int(batch_size), path=str(path), tokenizer_path=tok_path,
                      mesh=mesh)


def _vqhps_pose_init(ckpt, joint_regressor, tpose, num_vertices: int) -> np.ndarray:
    """(51,) VQ-HPS starting pose: the T-pose's 17 H36M joints (:func:`~hmr_jax.models.vqhps.pose_from_mesh`)."""
    train = ckpt.train_config
    if joint_regressor is None and train.get("body_models"):
        joint_regressor = regressor_path(train["body_models"], "h36m17")
    if tpose is None and train.get("tpose"):
        tpose = train["tpose"]
    if joint_regressor is None or tpose is None:
        raise InferenceError("VQ-HPS starts from the T-pose's joints: give joint_regressor= (17 x V H36M "
                             "regressor, body_models/J_regressor_h36m.npy) and tpose= ((V, 3) .npy mesh)")
    named = layout_of_file(joint_regressor) if isinstance(joint_regressor, (str, os.PathLike)) else None
    if named not in (None, "h36m17"):
        raise InferenceError(f"joint regressor {joint_regressor} is named as the {named} layout: VQ-HPS starts "
                             "from the T-pose's h36m17 (Human3.6M-17) joints (J_regressor_h36m.npy)")
    try:
        reg = (load_joint_regressor(joint_regressor, 17, num_vertices) if isinstance(joint_regressor, (str, os.PathLike))
               else np.asarray(joint_regressor, np.float32))
        mesh = np.load(tpose) if isinstance(tpose, (str, os.PathLike)) else np.asarray(tpose)
    except (FileNotFoundError, JointRegressorError, OSError, ValueError) as e:
        raise InferenceError(f"VQ-HPS inputs: {e}") from None
    if reg.shape != (17, num_vertices) or mesh.shape != (num_vertices, 3):
        raise InferenceError(f"VQ-HPS needs a (17, {num_vertices}) joint regressor and a ({num_vertices}, 3) "
                             f"T-pose, got {reg.shape} and {mesh.shape}")
    return np.asarray(pose_from_mesh(reg, mesh), np.float32)


@dataclasses.dataclass(eq=False)
class Generator:
    """The unconditional MEGA (VQMAE, ``mega_pretrained``) with its tokenizer: random meshes.

    Attributes:
      model, variables: the VQMAE and its variables; decode: tokens -> canonical meshes.
      decoding: decoding defaults (``steps``, ``gen_temp``: 5 and 4.5 in ``configs/mega_pretrained.py``).
      num_vertices, num_tokens, batch_size, path: as :class:`ImageModel`.
    """

    model: Any
    variables: Any
    decode: Any
    decoding: dict
    num_vertices: int
    num_tokens: int
    batch_size: int = DEFAULT_BATCH_SIZE
    path: str = ""

    def generate(self, num: int, *, steps: int | None = None, temperature: float | None = None,
                 key=None, seed: int = 0) -> dict[str, np.ndarray]:
        """``num`` random meshes, in fixed-size batches (batch ``c`` uses ``fold_in(key, c)``).

        Returns:
          ``tokens`` (num, T) int32 and ``vertices`` (num, V, 3) canonical meshes (meters, the
          tokenizer's frame: SMPL's, y up).
        """
        if num < 1:
            raise InferenceError(f"the number of meshes to generate must be >= 1, got {num}")
        settings = _settings(self.decoding, steps, temperature, None)
        key = _as_key(key, seed)
        tokens, vertices = [], []
        for c, (start, stop, size) in enumerate(chunks(num, self.batch_size)):
            out = decoding.mega_generate(self.model, self.variables, key=jax.random.fold_in(key, c),
                                         batch_size=size, num_samples=1, **settings)
            rot6d = jnp.broadcast_to(jnp.asarray(IDENTITY_6D, jnp.float32), (size, 6))
            meshes = decoding.meshes_from_tokens(self.decode, out["tokens"][:, 0], rot6d)
            tokens.append(np.asarray(out["tokens"][:stop - start, 0]))
            vertices.append(np.asarray(meshes["canonical"][:stop - start]))
        return {"tokens": np.concatenate(tokens), "vertices": np.concatenate(vertices)}


def load_generator(path: str | os.PathLike, tokenizer: str | None = None, *, connections: str | None = None,
                   dtype=None, batch_size: int = DEFAULT_BATCH_SIZE) -> Generator:
    """Load the unconditional MEGA (converted ``mega_pretrained`` or a ``mega_pretrain`` workdir).

    Raises:
      InferenceError: a folder of another kind, or a tokenizer that does not fit.
    """
    ckpt = _read(path, (checkpoints.UNCONDITIONAL_KIND,))
    model, variables = for_inference(checkpoints.build_model(ckpt, dtype), ckpt.variables)
    _, _, decode, nv, _ = _load_tokenizer(tokenizer, connections, ckpt, int(model.seq_length),
                                          int(model.num_embeddings))
    bucket_sizes(batch_size)
    return Generator(model=model, variables=variables, decode=decode, decoding=decoding_defaults(ckpt),
                     num_vertices=nv, num_tokens=int(model.seq_length), batch_size=int(batch_size),
                     path=str(path))
