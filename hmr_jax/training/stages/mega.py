"""Stages ``mega_pretrain`` (VQMAE on meshes) and ``mega`` (CVQMAE on images), as MEGA's trainers.

Both read tokens from the frozen Mesh-VQ-VAE (``config.tokenizer.path``) and mask them with the
cosine-scheduled ratio (``masking: scheduled``): one visible count per batch, drawn on the host
so that the encoder runs on the visible tokens only, as the original (padded to one of
``mega.visible_buckets`` lengths, one compiled step each: :class:`_MaskingMixin`). Losses, as
the originals weight them (all 1):

* ``mega_pretrain``: cross-entropy on the masked tokens. A batch with no masked token (the
  original's NaN) is skipped.
* ``mega``: that cross-entropy (0 when no token is masked, as the original drops the NaN)
  + rotation loss (MSE of 3x3 matrices, 6D prediction vs the ground-truth axis-angle)
  + 2D reprojection: the mesh decoded from the argmax tokens (visible tokens kept, no gradient
  through the decoder) rotated by the predicted rotation, joints regressed and projected with
  the predicted weak-perspective camera; L1 on 3DPW's 24 SMPL joints, confidence-weighted L1
  on the 17 H36M joints for the other sets (the 17 joints of the records' ``keypoints_kind``:
  COCO-17 for the synthetic sets, :func:`hmr_jax.training.stages.common.reprojection_loss`).
  ``config.loss_weights`` (``cross_entropy``, ``rotation``, ``reprojection``; 1 as the original)
  weight the three terms.

Optimizer (``configs/train_mega.py``): AdamW (0.9, 0.95), wd 0.05, lr 1e-3 x batch / 256,
warm-up 20 epochs then cosine over 500 (pre-training) / 200 epochs. The corrected decoder
mask is used (the original's off-by-one hides one masked token from the loss).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.metrics.protocols import mesh_errors
from hmr_jax.models.backbones import build_backbone
from hmr_jax.models.mega import (CVQMAE, VQMAE, random_visible_mask, scheduled_visible_count,
                                 scheduled_visible_mask, visible_buckets)
from hmr_jax.training import losses
from hmr_jax.training.stages import common
from hmr_jax.training.stages.base import LossOutput, Stage, StepDraws, Variables

_MEGA_FIELDS = ("seq_length", "emb_dim", "encoder_layer", "encoder_head", "decoder_layer",
                "decoder_head", "num_embeddings", "dim_tokens")


class _MaskingMixin:
    """Training masking of the MEGA stages (``config.mega.masking``).

    ``scheduled``: the batch's visible count is drawn on the host (:meth:`draws_at`, from
    ``(seed, step)``), the positions inside the step from its key; the encoder runs on the
    visible tokens padded to the smallest of ``visible_buckets`` lengths that holds them (the
    step's ``program``; one compilation per length). ``random``: the fixed count
    ``int(T (1 - mask_ratio))`` is the encoder length.
    """

    def _scheduled(self) -> bool:
        return self.config.mega.get("masking", "scheduled") == "scheduled"

    def draws_at(self, u):
        """``u`` -> the visible count ``int(T (1 - cos(pi u / 2)))`` (``values["num_visible"]``)
        and the encoder length holding it (``program``; None without buckets)."""
        seq = self.config.mega.seq_length
        if not self._scheduled():
            return StepDraws(program=int(seq * (1 - self.config.mega.mask_ratio)))
        count = scheduled_visible_count(u, seq)
        lengths = visible_buckets(seq, int(self.config.mega.get("visible_buckets", 4)))
        program = next((n for n in lengths if n >= count), None) if lengths else None
        return StepDraws(program=program, values={"num_visible": np.int32(count)})

    def _visible(self, key, shape, draws):
        """(B, T) bool visible mask of this step and the encoder length (``draws.program``)."""
        if self._scheduled():
            return scheduled_visible_mask(key, *shape, num_visible=draws.values["num_visible"]), draws.program
        return random_visible_mask(key, *shape, self.config.mega.mask_ratio), draws.program


class _TokenizerMixin:
    """The frozen Mesh-VQ-VAE of the MEGA / VQ-HPS stages (``config.tokenizer``)."""

    def _load_tokenizer(self):
        tok = self.config.tokenizer
        self.tokenizer, self._tokenizer_vars = common.load_tokenizer(
            tok.path, tok.get("connection_folder", ""))

    def _tokens(self, frozen, vertices):
        return jax.lax.stop_gradient(
            self.tokenizer.apply(frozen["tokenizer"], vertices, method="encode"))

    def _decode(self, frozen, tokens):
        return jax.lax.stop_gradient(
            self.tokenizer.apply(frozen["tokenizer"], tokens, method="decode"))


class MegaPretrainStage(_MaskingMixin, _TokenizerMixin, Stage):
    """Config: ``mega`` (VQMAE sizes, ``masking``), ``tokenizer.path``, ``data.train`` / ``val``
    (meshes), optional ``init.mega`` (a workdir or converted folder to start from)."""

    name = "mega_pretrain"

    def __init__(self, config):
        super().__init__(config)
        self.model = VQMAE(dtype=common.compute_dtype(config), **{k: config.mega[k] for k in _MEGA_FIELDS})
        self._load_tokenizer()

    def frozen(self):
        return {"tokenizer": self._tokenizer_vars}

    def train_pipeline(self, local_batch, seed):
        return common.mesh_train_pipeline(self.config, local_batch, seed)

    def val_batches(self, local_batch):
        return common.val_batches(self.config, local_batch, "mesh")

    def init(self, rng, batch):
        b = batch["vertices"].shape[0]
        t = self.config.mega.seq_length
        v = self.model.init(rng, jnp.zeros((b, t), jnp.int32), jnp.ones((b, t), bool))
        return Variables(params=v["params"])

    def loss(self, params, model_state, frozen, batch, rng, step, draws):
        tokens = self._tokens(frozen, batch["vertices"])
        visible, length = self._visible(rng, tokens.shape, draws)
        logits = self.model.apply({"params": params}, tokens, visible, length)
        ce, valid = losses.masked_cross_entropy(logits, tokens, ~visible)
        accuracy = jnp.sum((jnp.argmax(logits, -1) == tokens) & ~visible) / jnp.maximum(
            jnp.sum(~visible), 1)
        return ce, LossOutput(terms={"cross_entropy": ce, "masked_accuracy": accuracy,
                                     "masked_ratio": jnp.mean(~visible)},
                              model_state=model_state, valid=valid)

    def validate(self, params, model_state, frozen, batch):
        """Fully masked prediction (one step): per-sample token accuracy and vertex error."""
        tokens = self._tokens(frozen, batch["vertices"])
        visible = jnp.zeros(tokens.shape, bool)
        pred = jnp.argmax(self.model.apply({"params": params}, tokens, visible), -1)
        mesh = self._decode(frozen, pred.astype(jnp.int32))
        mesh = mesh - jnp.mean(mesh, axis=1, keepdims=True)
        return {"token_accuracy": jnp.mean(pred == tokens, -1),
                "pve_mm": 1000 * jnp.mean(jnp.linalg.norm(mesh - batch["vertices"], axis=-1), -1)}


class _ImageMixin:
    """What the image stages (MEGA, VQ-HPS) share: the backbone kind of ``config.backbone`` and
    the image record pipelines cropped for it."""

    @property
    def backbone(self) -> str:
        return self.config.backbone.kind

    def train_pipeline(self, local_batch, seed):
        return common.image_train_pipeline(self.config, local_batch, seed, self.backbone)

    def val_batches(self, local_batch):
        return common.val_batches(self.config, local_batch, "image", self.backbone)


class MegaStage(_MaskingMixin, _TokenizerMixin, _ImageMixin, Stage):
    """Config: ``mega`` (CVQMAE sizes incl. ``cond_length`` / ``cond_dim`` / ``cond_dropout``),
    ``backbone`` (a backbone config, see ``hmr_jax.models.backbones.build_backbone``; ``kind``
    hrnet | resnet | vit selects the crop), ``tokenizer.path``, ``body_models`` (folder with the
    joint regressors, see :func:`~hmr_jax.training.stages.common.load_regressors`),
    ``data.train`` / ``val`` (image datasets), ``init.backbone`` (converted backbone folder) and
    ``init.mega`` (pre-trained VQMAE: converted folder or workdir)."""

    name = "mega"

    def __init__(self, config):
        super().__init__(config)
        bb = dict(config.backbone.model.to_dict())
        fields = _MEGA_FIELDS + ("cond_length", "cond_dim", "cond_dropout")
        dtype = common.compute_dtype(config)
        self.model = CVQMAE(backbone=build_backbone(bb, dtype=dtype), dtype=dtype,
                            **{k: config.mega[k] for k in fields})
        self._load_tokenizer()
        self.regressors = common.load_regressors(config)

    def frozen(self):
        return {"tokenizer": self._tokenizer_vars, "regressors": self.regressors.frozen()}

    def init(self, rng, batch):
        b = batch["image"].shape[0]
        t = self.config.mega.seq_length
        v = self.model.init({"params": rng, "dropout": rng}, jnp.zeros((b, t), jnp.int32),
                            jnp.ones((b, t), bool), images=batch["image"], train=False)
        return Variables(params=v["params"],
                         model_state={k: v[k] for k in v if k != "params"})

    def load_pretrained(self, variables):
        init = self.config.get("init", {})
        params, state = variables.params, variables.model_state
        if init.get("mega"):
            src = common.load_variables(init.mega)
            src = {k: v for k, v in src["params"].items() if k != "backbone"}
            params = common.merge_pretrained(params, src, f"MEGA pre-trained {init.mega}")
        if init.get("backbone"):
            src = common.load_variables(init.backbone)
            params = {**params, "backbone": common.merge_pretrained(
                params["backbone"], src["params"], f"backbone {init.backbone}")}
            if "batch_stats" in src and "batch_stats" in state:
                state = {**state, "batch_stats": {**state["batch_stats"], "backbone": common.merge_pretrained(
                    state["batch_stats"]["backbone"], src["batch_stats"], "backbone statistics")}}
        return Variables(params=params, model_state=state)

    def loss(self, params, model_state, frozen, batch, rng, step, draws):
        k_mask, k_drop, k_cond = jax.random.split(rng, 3)
        tokens = self._tokens(frozen, batch["vertices_canonical"])
        visible, length = self._visible(k_mask, tokens.shape, draws)
        (logits, rot6d, cam), updates = self.model.apply(
            {"params": params, **model_state}, tokens, visible, images=batch["image"], train=True,
            cond_dropout_key=k_cond, num_visible=length, rngs={"dropout": k_drop},
            mutable=list(model_state.keys()))
        ce, _ = losses.masked_cross_entropy(logits, tokens, ~visible)
        rot = losses.rotation_loss(rot6d, batch["global_orient"])
        pred_tokens = jnp.where(visible, tokens, jnp.argmax(logits, -1)).astype(jnp.int32)
        canonical = self._decode(frozen, pred_tokens)
        pred_mesh = common.posed_meshes(rot6d, canonical)
        reproj = common.reprojection_loss(self.regressors, frozen["regressors"], batch, pred_mesh, cam)
        w = self.config.get("loss_weights", {})
        loss = (w.get("cross_entropy", 1.0) * ce + w.get("rotation", 1.0) * rot
                + w.get("reprojection", 1.0) * reproj)
        terms = {"cross_entropy": ce, "rotation": rot, "reprojection": reproj}
        return loss, LossOutput(terms=terms, model_state=dict(updates))

    def predict(self, params, model_state, frozen, images):
        """Deterministic mode (all tokens masked, one step): posed meshes (B, V, 3) m, cameras (B, 3)."""
        b, t = images.shape[0], self.config.mega.seq_length
        logits, rot6d, cam = self.model.apply({"params": params, **model_state},
                                              jnp.zeros((b, t), jnp.int32), jnp.zeros((b, t), bool),
                                              images=images, train=False)
        canonical = self._decode(frozen, jnp.argmax(logits, -1).astype(jnp.int32))
        return common.posed_meshes(rot6d, canonical), cam

    def validate(self, params, model_state, frozen, batch):
        """Deterministic mode: per-sample errors in mm (protocol ``original``)."""
        pred, _ = self.predict(params, model_state, frozen, batch["image"])
        errs = mesh_errors(pred, batch["vertices"], self.regressors.metric_regressors(frozen["regressors"]))
        return {k + "_mm": 1000 * v for k, v in errs.items()}
