"""Stage ``vqhps``: VQ-HPS training, as the original ``MeshRegressor_Train``.

Loss (weights 1): cross-entropy on all 54 tokens (targets from the frozen tokenizer) + rotation
loss (MSE of 3x3 matrices) + 2D reprojection of the mesh decoded from the argmax tokens (no
gradient through the decoder) rotated by the prediction (L1 on 3DPW's 24 SMPL joints,
confidence-weighted L1 on the 17 H36M joints elsewhere: the joints of the records'
``keypoints_kind``, :func:`hmr_jax.training.stages.common.reprojection_loss`). The pose the
rotation head starts from is the T-pose's 17 H36M joints (``config.tpose``: a (V, 3) ``.npy``;
``J_regressor_h36m.npy`` whatever the data's layout). AdamW (0.9, 0.999),
lr 1e-4 (unscaled), wd 1e-3, divided by 10 every 100 epochs; batch 32; augmentation and flips on.
"""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from hmr_jax.body.regressors import load_layout_regressor
from hmr_jax.metrics.protocols import mesh_errors
from hmr_jax.models.vqhps import build_vqhps, pose_from_mesh
from hmr_jax.training import losses
from hmr_jax.training.stages import common
from hmr_jax.training.stages.base import LossOutput, Stage, Variables
from hmr_jax.training.stages.mega import _ImageMixin, _TokenizerMixin

_FIELDS = ("model_dim", "num_heads", "feedforward_dim", "num_enc_layers", "num_dec_layers",
           "dict_size", "num_tokens", "dropout", "autoreg", "seq_len", "pose_dim")


class VQHPSStage(_TokenizerMixin, _ImageMixin, Stage):
    """Config: ``vqhps`` (regressor sizes), ``backbone`` (see ``configs/common.py``),
    ``tokenizer.path``, ``body_models``, ``tpose``, ``data.train`` / ``val``, ``init.backbone``."""

    name = "vqhps"

    def __init__(self, config):
        super().__init__(config)
        self.model = build_vqhps({"vqhps": {k: config.vqhps[k] for k in _FIELDS},
                                  "backbone": config.backbone.model.to_dict()},
                                 dtype=common.compute_dtype(config))
        self._load_tokenizer()
        self.regressors = common.load_regressors(config)
        if not os.path.isfile(config.tpose):
            raise FileNotFoundError(f"config.tpose={config.tpose!r} does not exist: VQ-HPS starts from "
                                    "the T-pose mesh's joints ((V, 3) .npy, the original body_models/tpose.npy)")
        tpose = np.load(config.tpose).astype(np.float32)
        h36m = (self.regressors.joints17 if self.regressors.layout17.kind == "h36m17" else
                load_layout_regressor(config.body_models, "h36m17", int(config.get("num_vertices", 6890))))
        self._pose_init = pose_from_mesh(h36m, tpose)

    def frozen(self):
        return {"tokenizer": self._tokenizer_vars, "regressors": self.regressors.frozen(),
                "pose_init": self._pose_init}

    def init(self, rng, batch):
        b = batch["image"].shape[0]
        v = self.model.init({"params": rng, "dropout": rng}, batch["image"],
                            jnp.zeros((b, self.config.vqhps.pose_dim)), train=False)
        return Variables(params=v["params"],
                         model_state={k: v[k] for k in v if k not in ("params", "intermediates")})

    def load_pretrained(self, variables):
        path = self.config.get("init", {}).get("backbone", "")
        if not path:
            return variables
        src = common.load_variables(path)
        params, state = dict(variables.params), dict(variables.model_state)
        for name in ("backbone_pose", "backbone_rot"):
            params[name] = common.merge_pretrained(params[name], src["params"], f"{name} {path}")
            if "batch_stats" in src and name in state.get("batch_stats", {}):
                state["batch_stats"] = {**state["batch_stats"], name: common.merge_pretrained(
                    state["batch_stats"][name], src["batch_stats"], f"{name} statistics")}
        return Variables(params=params, model_state=state)

    def _forward(self, params, model_state, frozen, images, train, rng=None):
        b = images.shape[0]
        pose_init = jnp.broadcast_to(frozen["pose_init"], (b, frozen["pose_init"].shape[0]))
        kwargs = dict(rngs={"dropout": rng}, mutable=list(model_state.keys())) if train else {}
        out = self.model.apply({"params": params, **model_state}, images, pose_init, train=train, **kwargs)
        return out if train else (out, model_state)

    def loss(self, params, model_state, frozen, batch, rng, step, draws):
        out, updates = self._forward(params, model_state, frozen, batch["image"], True, rng)
        tokens = self._tokens(frozen, batch["vertices_canonical"])
        ce = losses.cross_entropy(out["logits"], tokens)
        rot = losses.rotation_loss(out["rot6d"], batch["global_orient"])
        canonical = self._decode(frozen, jnp.argmax(out["logits"], -1).astype(jnp.int32))
        pred = common.posed_meshes(out["rot6d"], canonical)
        reproj = common.reprojection_loss(self.regressors, frozen["regressors"], batch, pred, out["cam"])
        accuracy = jnp.mean(jnp.argmax(out["logits"], -1) == tokens)
        terms = {"cross_entropy": ce, "rotation": rot, "reprojection": reproj, "token_accuracy": accuracy}
        return ce + rot + reproj, LossOutput(terms=terms, model_state=dict(updates))

    def predict(self, params, model_state, frozen, images):
        """Posed meshes (B, V, 3) m of the argmax tokens and weak-perspective cameras (B, 3)."""
        out, _ = self._forward(params, model_state, frozen, images, False)
        canonical = self._decode(frozen, jnp.argmax(out["logits"], -1).astype(jnp.int32))
        return common.posed_meshes(out["rot6d"], canonical), out["cam"]

    def validate(self, params, model_state, frozen, batch):
        """Per-sample errors in mm (protocol ``original``)."""
        pred, _ = self.predict(params, model_state, frozen, batch["image"])
        errs = mesh_errors(pred, batch["vertices"], self.regressors.metric_regressors(frozen["regressors"]))
        return {k + "_mm": 1000 * v for k, v in errs.items()}
