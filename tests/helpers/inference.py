"""Tiny image models and tokenizers written as converted folders / train.py workdirs, for the
inference tests: a 24-vertex tokenizer (4 x 6 grid, 8 tokens, 16 codes) and small MEGA / VQ-HPS
models with random weights, so that compiling them takes seconds."""
from __future__ import annotations

import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.training.config import load_config
from helpers.stages import grid_faces

NV = 24          # tokenizer mesh: a 4 x 6 vertex grid
NUM_TOKENS = 8
NUM_CODES = 16
CROP = 64        # crops of the tiny ResNet / HRNet models (pixels)

TINY_BACKBONES = {
    "resnet": {"backbone": "resnet50", "layers": [1, 1, 1, 1], "width": 4, "global_pool": False},
    "vit": {"backbone": "vit", "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0,
            "patch_size": 16, "patch_padding": 2, "pos_grid": [16, 12], "drop_path_rate": 0.0},
}


def tokenizer_config(conn_folder) -> dict:
    """The tiny Mesh-VQ-VAE config over the grid hierarchy in ``conn_folder``."""
    from hmr_jax.models.mesh_vqvae import RELEASED_54

    m = copy.deepcopy(RELEASED_54)
    m["autoencoder"] = dict(connection_folder=str(conn_folder), initial_connection="pool0",
                            layers=["pool0", "pool1", "pool2", "unpool2", "unpool1", "unpool0"],
                            channels=[16, 16, 4, 16, 16, 3], weight_nums=[9, 0, 9, 9, 0, 9],
                            residual_rates=[0, 1, 0, 0, 1, 0], connection_sha256=None)
    m["quantizer"].update(embedding_dim=4, num_embeddings=NUM_CODES)
    return m


def write_tokenizer(root) -> tuple[str, np.ndarray]:
    """A converted tiny tokenizer folder ``root/tokenizer`` and the grid's faces (F, 3)."""
    from hmr_jax.conversion.common import write_converted
    from hmr_jax.conversion.mesh_vqvae import build_model
    from hmr_jax.mesh.build import build_hierarchy, write_hierarchy

    faces = grid_faces(4, 6)
    write_hierarchy(build_hierarchy(faces, NV, ["1", "2", "1"]), root / "conn")
    cfg = tokenizer_config(root / "conn")
    model = build_model(cfg)
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, NV, 3))))
    variables = random_like(abstract, seed=1)
    write_converted(root / "tokenizer", variables, {**cfg, "model": "mesh_vqvae"}, {"source": "test"})
    np.save(root / "faces.npy", faces.astype(np.int32))
    return str(root / "tokenizer"), faces.astype(np.int32)


def image_model_config(kind: str) -> dict:
    """Converted-layout config of a tiny ``mega_resnet`` / ``mega_vit`` / ``vqhps_resnet``."""
    backbone = kind.split("_")[1]
    bb = dict(TINY_BACKBONES[backbone])
    size = [256, 192] if backbone == "vit" else [CROP, CROP]
    if kind.startswith("mega"):
        cond_length, cond_dim = ((16 * 12, bb["embed_dim"]) if backbone == "vit"
                                 else ((CROP // 32) ** 2, 32 * bb["width"]))
        mega = dict(seq_length=NUM_TOKENS, emb_dim=32, encoder_layer=1, encoder_head=2, decoder_layer=1,
                    decoder_head=2, num_embeddings=NUM_CODES, dim_tokens=16, cond_length=cond_length,
                    cond_dim=cond_dim, cond_dropout=0.0)
        return {"model": kind, "mega": mega, "backbone": bb, "image_size": size}
    vqhps = dict(model_dim=16, num_heads=2, feedforward_dim=16, num_enc_layers=1, num_dec_layers=1,
                 dict_size=NUM_CODES, num_tokens=NUM_TOKENS, dropout=0.0, autoreg=True, seq_len=4, pose_dim=51)
    return {"model": kind, "vqhps": vqhps, "backbone": bb, "image_size": size}


def random_like(abstract, seed: int = 0):
    """Random host arrays in the shapes of ``abstract`` (``jax.eval_shape`` of an init): normal
    weights of std 0.05, BatchNorm / LayerNorm statistics and scales as a fresh init (tracing
    only, nothing is compiled: faster than running ``init`` on these CPUs)."""
    rng = np.random.default_rng(seed)

    def leaf(path, x):
        name = jax.tree_util.keystr(path)
        if name.endswith("['var']") or name.endswith("['scale']"):
            return np.ones(x.shape, x.dtype)
        if name.endswith("['mean']"):
            return np.zeros(x.shape, x.dtype)
        return (0.05 * rng.standard_normal(x.shape)).astype(x.dtype)

    return jax.tree_util.tree_map_with_path(leaf, abstract)


def init_variables(cfg: dict, seed: int = 0):
    """Random variables of the model ``cfg`` describes (host arrays)."""
    from hmr_jax.models.mega import build_mega
    from hmr_jax.models.vqhps import build_vqhps

    h, w = cfg["image_size"]
    images = jnp.zeros((1, h, w, 3))
    key = jax.random.PRNGKey(seed)
    if "mega" in cfg:
        model = build_mega(cfg)
        t = cfg["mega"]["seq_length"]
        abstract = jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, jnp.zeros((1, t), jnp.int32),
                                                     jnp.ones((1, t), bool), images=images, train=False))
    else:
        model = build_vqhps(cfg)
        abstract = jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, images, jnp.zeros((1, 51)),
                                                     train=False))
        abstract = {k: x for k, x in abstract.items() if k != "intermediates"}
    return random_like(abstract, seed)


def write_image_model(root, kind: str, seed: int = 0) -> tuple[str, dict, dict]:
    """A converted tiny image model ``root/KIND``; returns (path, config, variables)."""
    from hmr_jax.conversion.common import write_converted

    cfg = image_model_config(kind)
    variables = init_variables(cfg, seed)
    path = root / kind
    write_converted(path, variables, cfg, {"source": "test"})
    return str(path), cfg, variables


def write_workdir(root, cfg: dict, variables, tokenizer: str, faces_path: str, name: str = "run",
                  **overrides) -> str:
    """The same model as a ``train.py`` workdir (``config.json`` + an Orbax checkpoint at step 1);
    ``overrides``: other training-config entries (``body_models``, ``tpose``...)."""
    from hmr_jax.training.checkpointing import Checkpointer

    kind = cfg["model"]
    family, backbone = kind.split("_")
    train = load_config(f"train_{family}", backbone)
    with train.unlocked():
        if family == "mega":
            train.mega.update(cfg["mega"])
        else:
            train.vqhps.update(cfg["vqhps"])
        train.backbone.model = dict(cfg["backbone"])
        train.data.crop_size = cfg["image_size"][0] if backbone != "vit" else 0
        train.tokenizer.path = tokenizer
        train.faces = faces_path
        train.update(overrides)
    workdir = root / name
    os.makedirs(workdir)
    (workdir / "config.json").write_text(train.to_json_best_effort(indent=2))
    ckpt = Checkpointer(str(workdir / "checkpoints"), save_every=1, async_save=False)
    state = {"step": np.int32(1), "params": variables["params"],
             "model_state": {k: v for k, v in variables.items() if k != "params"}}
    ckpt.save(1, state, None, force=True)
    ckpt.close()
    return str(workdir)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A (h, w, 3) uint8 image of smooth random colour blobs (bilinear sampling is well posed on it)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def json_boxes(path, boxes: dict) -> str:
    """Write a boxes JSON ``{image name: [[x1, y1, x2, y2], ...]}``; returns its path."""
    path.write_text(json.dumps(boxes))
    return str(path)


def convert_fixture_mega(parity_dir, reference_dir, root) -> dict:
    """The ``mesh_vqvae`` and ``mega_cvqmae_small`` parity fixtures converted into ``root``
    (``tokenizer/``, ``mega/``), the MEGA's camera scale bias raised by 0.3 so that its random
    (metres-wide) meshes land inside the crop (the fixture predicts a negative scale).

    Returns:
      ``{"tok", "ckpt", "faces", "conns"}`` paths (``faces``: the 6890-vertex SMPL template).
    """
    import convert_torch_weights
    from hmr_jax.conversion import common

    conns = reference_dir / "ConnectionMatrices"
    tok = root / "tokenizer"
    assert convert_torch_weights.main([str(parity_dir / "mesh_vqvae.pt"), "--config", str(parity_dir / "mesh_vqvae.json"),
                                       "--out", str(tok), "--set", f"autoencoder.connection_folder={conns}"]) == 0
    raw = root / "raw_mega"
    assert convert_torch_weights.main([str(parity_dir / "mega_cvqmae_small.pt"), "--config",
                                       str(parity_dir / "mega_cvqmae_small.json"), "--out", str(raw)]) == 0
    variables, config = common.read_converted(raw)
    variables = {k: dict(v) for k, v in variables.items()}
    bias = np.array(variables["params"]["decoder"]["cam_predictor"]["bias"])
    bias[0] += 0.3  # camera scale ~0.15: the mesh fits in the crop
    variables["params"]["decoder"]["cam_predictor"]["bias"] = bias
    ckpt = common.write_converted(root / "mega", variables, config, {"source": "test"})
    return {"tok": str(tok), "ckpt": str(ckpt), "faces": str(reference_dir / "template.ply"), "conns": str(conns)}


def walking_person(n: int = 24, h: int = 128, w: int = 192, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """A rendered person walking from the left of the frame to the right: ``data_prep.synthetic``'s
    stand-in body (swinging knees and elbows) shaded by :mod:`hmr_jax.render` over one of its random
    backgrounds, seen by a fixed pinhole camera.

    Returns:
      ``(frames, boxes)``: n (h, w, 3) uint8 RGB frames and (n, 4) ``x1, y1, x2, y2`` pixel boxes of
      the person (the projection's bounds).
    """
    from data_prep.synthetic import CANONICAL_TO_CAMERA_FACING, random_background
    from hmr_jax.geometry.rotations_np import euler_xyz_to_matrix
    from hmr_jax.render import PerspectiveCamera, rasterize, shade
    from hmr_jax.testing.box_person import StandInBody

    def bend(degrees):
        return euler_xyz_to_matrix(np.deg2rad(np.array([degrees, 0.0, 0.0])))

    rng = np.random.default_rng(seed)
    body = StandInBody()
    background = random_background(rng, max(h, w))[:h, :w].astype(np.float64) / 255.0
    colors = np.where(body.vertex_regions[:, None] == 1, [0.85, 0.3, 0.25], [0.25, 0.45, 0.8])
    focal = 1.2 * h
    frames, boxes = [], []
    for i in range(n):
        swing = 30 * np.sin(2 * np.pi * i / 12)
        bends = {"l_knee": bend(swing), "r_knee": bend(-swing), "l_elbow": bend(-swing), "r_elbow": bend(swing)}
        v = body._pose(bends)
        v = (v - v.mean(0)) @ CANONICAL_TO_CAMERA_FACING.T
        x = -1.3 + 2.6 * i / max(n - 1, 1)                  # metres, left to right at 4.5 m
        camera = PerspectiveCamera((focal, focal), (w / 2, h / 2), (x, 0.05, 4.5))
        frags = rasterize(v, body.faces, camera, h, w)
        shaded = shade(frags, v, body.faces, camera, color=colors)
        image = np.where(frags.mask[..., None], shaded, background)
        frames.append((image * 255).round().clip(0, 255).astype(np.uint8))
        uv = camera.project(v)
        boxes.append([*uv.min(0), *uv.max(0)])
    return frames, np.asarray(boxes, np.float64)


class NoisyModel:
    """A stand-in image model (no JAX): its meshes are fixed ``vertices`` plus Gaussian noise
    (``noise`` m), its weak-perspective camera ``(0.9, 0, 0.1)`` plus a quarter of that noise; it
    records the batch sizes it is called with (``calls``). ``family``: ``"mega"`` (N hypotheses)
    or ``"vqhps"`` (one)."""

    def __init__(self, vertices, noise=0.02, batch_size=4, seed=0, family="mega"):
        from hmr_jax.data.augment import BACKBONE_INPUTS

        self.kind = f"{family}_hrnet"
        self.family = family
        self.vertices = np.asarray(vertices, np.float32)
        self.num_vertices = len(vertices)
        self.geometry = BACKBONE_INPUTS["hrnet"]
        self.batch_size = batch_size
        self.decoding = {"steps": 3}
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.calls = []

    def mode(self, num_samples, mode=None):
        if self.family == "vqhps":
            return "single_pass"
        return "deterministic" if num_samples == 1 else "stochastic"

    def predict_crops(self, crops, num_samples=1, **kwargs):
        b = len(crops)
        self.calls.append(b)
        v = self.vertices + self.noise * self.rng.standard_normal((b, num_samples) + self.vertices.shape)
        cam = np.array([0.9, 0.0, 0.1]) + 0.25 * self.noise * self.rng.standard_normal((b, 3))
        return {"vertices": v.astype(np.float32), "tokens": np.zeros((b, num_samples, 4), np.int32),
                "rot6d": np.tile([1.0, 0, 0, 0, 1, 0], (b, 1)), "rotmat": np.tile(np.eye(3), (b, 1, 1)),
                "cam": cam}


def standin_predictor(noise=0.02, batch_size=4, seed=0, family="mega", vertices=None, faces=None):
    """A :class:`~hmr_jax.inference.Predictor` over a :class:`NoisyModel` of ``data_prep.synthetic``'s
    80-vertex box-person (camera-aligned axes) or of the given mesh."""
    from data_prep.synthetic import CANONICAL_TO_CAMERA_FACING, StandInBody
    from hmr_jax.inference import Predictor

    if vertices is None:
        body = StandInBody()
        vertices = (body.template - body.template.mean(0)) @ CANONICAL_TO_CAMERA_FACING.T
        faces = body.faces
    return Predictor(NoisyModel(vertices, noise, batch_size, seed, family), faces)
