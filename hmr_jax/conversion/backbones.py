"""Import the image backbones' PyTorch weights: HRNet, ResNet-50 and the ViTPose ViT.

Library entry point: :func:`convert_backbone` (``state``, ``kind``, ``prefix``, ``config``), which
the MEGA / VQ-HPS converters call with ``prefix="backbone."`` (or ``"backbone_pose."`` ...).
Registered checkpoint kinds (``convert_torch_weights.py --model``):

* ``hrnet``: a bare HRNet state dict: MEGA's backbone (``downsample_stage_*`` included, like
  ``hrnet_small.pt``) or the upstream ``pose_hrnet_w48.pth`` of the HRNet pose repository, which
  has no ``downsample_stage_*`` layers: those are then initialised as the original
  ``init_weights`` does (convolutions N(0, 0.001^2), BatchNorm 1 / 0, running statistics 0 / 1;
  ``seed`` in the config) and listed under ``initialised_layers``, unless ``{"head": "none"}``
  asks for the plain pose network. ``final_layer`` (joint heat-maps) is never used by the
  originals' ``forward`` and is ignored explicitly.
* ``resnet50``: a torchvision ResNet-50 state dict (``conv1.weight``, ``layer1.0...``, ``fc.*``
  ignored: the classifier is cut off) or the originals' ``Sequential(*children()[:-2])`` layout
  (``0.weight``, ``1.running_mean``, ``4.0.conv1.weight`` ...). The number of blocks per stage
  is read from the keys.
* ``vit``: the ViTPose backbone (``vitpose_backbone.pth``, ``{"state_dict": ...}``): depth and
  width are read from the keys, the positional-embedding grid from ``pos_embed`` (193 entries ->
  16 x 12 patches, i.e. 256 x 192 inputs); ``num_heads`` (not visible in the weights) comes from
  the config (default 16, ViT-H). Config ``interpolate_to: [rows, cols]`` resizes ``pos_embed``
  once at conversion (PyTorch bicubic) for another input size; ``interpolate_pos_embed: true``
  makes the model resize it on the fly to whatever grid the input gives.

Layouts: conv kernels OIHW -> HWIO, linear weights transposed, BatchNorm ``weight`` / ``bias``
-> ``params`` ``scale`` / ``bias``, ``running_mean`` / ``running_var`` -> ``batch_stats``
``mean`` / ``var``; ``num_batches_tracked`` is ignored (PyTorch uses it only when momentum is None).
The Flax HRNet scans its repeated identical parts (the 4 blocks of a branch, the modules of a
stage), so those leaves are stacked on leading axes. (The ViT's blocks are not scanned: slicing
the stacked weights cost ~25 % at batch 1 on CPU for little compile time gained.)
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import jax
import numpy as np

from hmr_jax.conversion.common import ConversionError, StateDict, conv_kernel, dense_kernel, user_config
from hmr_jax.models.backbones.hrnet import BLOCKS_PER_BRANCH, HEADS, STAGES
from hmr_jax.models.backbones.vit import interpolate_pos_embed

#: The bare backbone checkpoint kinds, with what each is.
KINDS = {
    "hrnet": "HRNet backbone state dict (MEGA / VQ-HPS variant, or upstream pose_hrnet_w48.pth)",
    "resnet50": "ResNet-50 without classifier (torchvision state dict or the originals' Sequential layout)",
    "vit": "ViTPose backbone (vitpose_backbone.pth: ViT-H, 256x192 inputs)",
}

_NBT_REASON = "BatchNorm num_batches_tracked: only used by PyTorch when momentum=None (not the case)"
_FINAL_LAYER_REASON = "HRNet final_layer (joint heat-maps): built by the original but unused by its forward()"
_FC_REASON = "torchvision ResNet classifier (avgpool + fc): the originals cut it off (children()[:-2])"


# ----------------------------------------------------------------------------------------
# Small helpers that fill the params / batch_stats trees.


def _stack(arrays) -> np.ndarray:
    """``np.stack``; zero-strided broadcasts of one value (abstract checkpoints) stay broadcasts."""
    shape = max((a.shape for a in arrays), key=len)
    # A missing key yields a scalar placeholder (reported by StateDict.finish): give it the shape.
    arrays = [a if a.shape == shape else np.broadcast_to(a, shape) for a in arrays]
    first = arrays[0]
    if all(a.size and not any(a.strides) for a in arrays) and all(a.flat[0] == first.flat[0] for a in arrays):
        return np.broadcast_to(first.flat[0], (len(arrays),) + first.shape)
    return np.stack(arrays)


class _Vars:
    """Accumulates Flax ``params`` and ``batch_stats`` trees from a StateDict."""

    def __init__(self, state: StateDict, prefix: str):
        self.state = state
        self.prefix = prefix
        self.params: dict = {}
        self.stats: dict = {}

    @staticmethod
    def _put(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
        for p in path[:-1]:
            tree = tree.setdefault(p, {})
        tree[path[-1]] = value

    def take(self, key: str) -> np.ndarray:
        return np.asarray(self.state.take(self.prefix + key), np.float32)

    def conv(self, key: str, path: tuple[str, ...], bias: bool = False) -> None:
        """``key.weight`` (O, I, kH, kW) [+ ``key.bias``] -> ``path/kernel`` [+ ``path/bias``]."""
        w = self.take(key + ".weight")
        if w.ndim != 4:
            raise ConversionError(f"{self.prefix}{key}.weight should be a conv weight, has shape {w.shape}")
        self._put(self.params, path + ("kernel",), conv_kernel(w))
        if bias:
            self._put(self.params, path + ("bias",), self.take(key + ".bias"))

    def dense(self, key: str, path: tuple[str, ...]) -> None:
        """``key.weight`` (out, in), ``key.bias`` -> ``path/kernel`` (in, out), ``path/bias``."""
        self._put(self.params, path + ("kernel",), dense_kernel(self.take(key + ".weight")))
        self._put(self.params, path + ("bias",), self.take(key + ".bias"))

    def norm(self, key: str, path: tuple[str, ...]) -> None:
        """LayerNorm ``key.weight`` / ``key.bias`` -> ``path/scale`` / ``path/bias``."""
        self._put(self.params, path + ("scale",), self.take(key + ".weight"))
        self._put(self.params, path + ("bias",), self.take(key + ".bias"))

    def bn(self, key: str, path: tuple[str, ...]) -> None:
        """BatchNorm ``key.*`` -> params ``scale`` / ``bias`` and batch_stats ``mean`` / ``var``."""
        self.norm(key, path)
        self._put(self.stats, path + ("mean",), self.take(key + ".running_mean"))
        self._put(self.stats, path + ("var",), self.take(key + ".running_var"))
        self.state.ignore([self.prefix + key + ".num_batches_tracked"], _NBT_REASON)

    def sub(self) -> "_Vars":
        """Empty trees over the same checkpoint (for parts that get stacked)."""
        return _Vars(self.state, self.prefix)

    def put_stacked(self, path: tuple[str, ...], parts: list["_Vars"]) -> None:
        """Put the trees of ``parts`` at ``path``, every leaf stacked on a new leading axis."""
        self._put(self.params, path, jax.tree.map(lambda *a: _stack(a), *[p.params for p in parts]))
        if parts[0].stats:
            self._put(self.stats, path, jax.tree.map(lambda *a: _stack(a), *[p.stats for p in parts]))

    def param(self, key: str, path: tuple[str, ...]) -> None:
        self._put(self.params, path, self.take(key))

    def variables(self) -> dict:
        out = {"params": self.params}
        if self.stats:
            out["batch_stats"] = self.stats
        return out


def _strip(keys, prefix: str) -> list[str]:
    return [k[len(prefix):] for k in keys if k.startswith(prefix)]


# ----------------------------------------------------------------------------------------
# HRNet


def _hrnet_head(state: StateDict, prefix: str, config: Mapping[str, Any]) -> tuple[int, str, bool]:
    """The HRNet's width (from the weights), the head asked for, and whether the weights have it."""
    keys = _strip(state.keys(), prefix)
    wkey = prefix + "stage2.0.branches.0.0.conv1.weight"
    if wkey not in state:
        raise ConversionError(f"{state.what}: no {wkey}: not an HRNet state dict (prefix {prefix!r})")
    width = int(state.state[wkey].shape[0])
    if "width" in config and int(config["width"]) != width:
        raise ConversionError(f"{state.what}: config width {config['width']} but the weights have width {width}")
    if any(k.startswith("upsample_stage_") for k in keys):
        raise ConversionError(
            f"{state.what}: has upsample_stage_* layers (HRNet built with downsample=False, use_conv=True); "
            "only the originals' downsample=True, use_conv=True variant is supported"
        )
    if config.get("downsample", True) is False or config.get("use_conv", True) is False:
        raise ConversionError(
            "only the HRNet head the originals use (downsample=True, use_conv=True) is implemented; "
            "the config asks for another one"
        )
    head = config.get("head", "downsample_conv")
    if head not in HEADS:
        raise ConversionError(f"HRNet head must be one of {HEADS}, got {head!r}")
    return width, head, any(k.startswith("downsample_stage_") for k in keys)


def _hrnet(state: StateDict, prefix: str, config: Mapping[str, Any]) -> tuple[dict, dict]:
    width, head, has_head = _hrnet_head(state, prefix, config)
    v = _Vars(state, prefix)
    v.conv("conv1", ("conv1",))
    v.bn("bn1", ("bn1",))
    v.conv("conv2", ("conv2",))
    v.bn("bn2", ("bn2",))
    _bottlenecks(v, "layer1", ("layer1",), 4, name_fmt="layer1_{}")
    pre = [256]
    for s, (modules, branches) in enumerate(STAGES, start=2):
        channels = [width * 2**j for j in range(branches)]
        _hrnet_transition(v, s, channels, pre)
        # The modules of a stage (and the 4 blocks of a branch) are scanned: stacked parameters.
        v.put_stacked((f"stage{s}",), [_hrnet_module(v, f"stage{s}.{m}", branches) for m in range(modules)])
        pre = channels
    state.ignore([prefix + "final_layer.weight", prefix + "final_layer.bias"], _FINAL_LAYER_REASON)
    out_config: dict[str, Any] = {"backbone": "hrnet", "width": width, "head": head}
    if head == "downsample_conv" and has_head:
        for b in range(3):
            for k in range(3 - b):
                v.conv(f"downsample_stage_{b + 1}.{3 * k}", (f"downsample_stage_{b + 1}_{k}", "conv"))
                v.bn(f"downsample_stage_{b + 1}.{3 * k + 1}", (f"downsample_stage_{b + 1}_{k}", "bn"))
    elif head == "downsample_conv":
        out_config.update(_init_downsample_head(v, width, int(config.get("seed", 0))))
    elif has_head:
        state.ignore(
            [prefix + k for k in _strip(state.keys(), prefix) if k.startswith("downsample_stage_")],
            "head='none' was asked for: the strided-convolution head is not built",
        )
    return v.variables(), out_config


def _hrnet_transition(v: _Vars, s: int, channels: list[int], pre: list[int]) -> None:
    """``transition{s-1}``: from the previous stage's branch widths ``pre`` to ``channels``."""
    for i, c in enumerate(channels):
        t = f"transition{s - 1}.{i}"
        if i < len(pre):
            if c != pre[i]:
                v.conv(f"{t}.0", (f"transition{s - 1}_{i}", "conv"))
                v.bn(f"{t}.1", (f"transition{s - 1}_{i}", "bn"))
        else:
            for k in range(i + 1 - len(pre)):
                v.conv(f"{t}.{k}.0", (f"transition{s - 1}_{i}_{k}", "conv"))
                v.bn(f"{t}.{k}.1", (f"transition{s - 1}_{i}_{k}", "bn"))


def _hrnet_module(v: _Vars, sp: str, branches: int) -> _Vars:
    """One HighResolutionModule ``sp`` (``stage{s}.{m}``): its branches (blocks stacked) and fuse layers."""
    mv = v.sub()
    for j in range(branches):
        blocks = []
        for k in range(BLOCKS_PER_BRANCH):
            bv = v.sub()
            for layer in ("conv1", "conv2"):
                bv.conv(f"{sp}.branches.{j}.{k}.{layer}", (layer,))
            for layer in ("bn1", "bn2"):
                bv.bn(f"{sp}.branches.{j}.{k}.{layer}", (layer,))
            blocks.append(bv)
        mv.put_stacked((f"branch{j}",), blocks)
    for i in range(branches):
        for j in range(branches):
            f = f"{sp}.fuse_layers.{i}.{j}"
            if j > i:
                mv.conv(f"{f}.0", (f"fuse{i}_{j}", "conv"))
                mv.bn(f"{f}.1", (f"fuse{i}_{j}", "bn"))
            elif j < i:
                for k in range(i - j):
                    mv.conv(f"{f}.{k}.0", (f"fuse{i}_{j}_{k}", "conv"))
                    mv.bn(f"{f}.{k}.1", (f"fuse{i}_{j}_{k}", "bn"))
    return mv


def _init_downsample_head(v: _Vars, width: int, seed: int) -> dict:
    """The ``downsample_stage_*`` layers an upstream pose_hrnet_w48.pth lacks, initialised as the
    originals' init_weights leaves them; returns what to record in the config."""
    rng = np.random.default_rng(seed)
    names = []
    for b in range(3):
        c = width * 2**b
        for k in range(3 - b):
            name = f"downsample_stage_{b + 1}_{k}"
            names.append(name)
            v._put(v.params, (name, "conv", "kernel"), rng.normal(0.0, 0.001, (3, 3, c, c)).astype(np.float32))
            v._put(v.params, (name, "bn", "scale"), np.ones((c,), np.float32))
            v._put(v.params, (name, "bn", "bias"), np.zeros((c,), np.float32))
            v._put(v.stats, (name, "bn", "mean"), np.zeros((c,), np.float32))
            v._put(v.stats, (name, "bn", "var"), np.ones((c,), np.float32))
    return {"initialised_layers": names,
            "initialisation": (f"not in the checkpoint; conv N(0, 0.001^2) (numpy seed {seed}), BatchNorm 1/0, "
                               "running stats 0/1, as the original init_weights")}


def _bottlenecks(v: _Vars, key: str, path: tuple[str, ...], n: int, name_fmt: str) -> None:
    """Bottleneck blocks ``key.{k}.*`` -> flat submodules ``name_fmt.format(k)``."""
    for k in range(n):
        tp, fp = f"{key}.{k}", (name_fmt.format(k),)
        for i in (1, 2, 3):
            v.conv(f"{tp}.conv{i}", fp + (f"conv{i}",))
            v.bn(f"{tp}.bn{i}", fp + (f"bn{i}",))
        if k == 0:
            v.conv(f"{tp}.downsample.0", fp + ("downsample_conv",))
            v.bn(f"{tp}.downsample.1", fp + ("downsample_bn",))


# ----------------------------------------------------------------------------------------
# ResNet


def _resnet_layout(keys: list[str], prefix: str) -> tuple[dict[str, str], list[str]] | None:
    """Map from our names (conv1, bn1, layer1..4) to the checkpoint's (Sequential or torchvision)."""
    keys = set(_strip(keys, prefix))
    if "0.weight" in keys and "4.0.conv1.weight" in keys:
        return {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}, []
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return (
            {f"layer{i}": f"layer{i}" for i in range(1, 5)} | {"conv1": "conv1", "bn1": "bn1"},
            ["fc.weight", "fc.bias"],
        )
    return None


def _resnet(state: StateDict, prefix: str, config: Mapping[str, Any]) -> tuple[dict, dict]:
    layout = _resnet_layout(state.keys(), prefix)
    if layout is None:
        raise ConversionError(
            f"{state.what}: no ResNet keys under prefix {prefix!r} (expected '0.weight' + '4.0.conv1.weight' "
            "of the originals' Sequential, or torchvision's 'conv1.weight' + 'layer1.0.conv1.weight')"
        )
    names, head = layout
    keys = _strip(state.keys(), prefix)
    layers = []
    for i in range(1, 5):
        pat = re.compile(rf"^{re.escape(names[f'layer{i}'])}\.(\d+)\.conv1\.weight$")
        idx = sorted(int(m.group(1)) for k in keys if (m := pat.match(k)))
        if not idx or idx != list(range(len(idx))):
            raise ConversionError(f"{state.what}: stage {i} of the ResNet has no / non-contiguous blocks {idx}")
        layers.append(len(idx))
    # A fixture JSON says strip_last=1 for children()[:-1] (global average pool kept, VQ-HPS backbone_rot).
    global_pool = bool(config.get("global_pool", int(config.get("strip_last", 2)) == 1))
    if "layers" in config and tuple(config["layers"]) != tuple(layers):
        raise ConversionError(f"{state.what}: config layers {config['layers']} but the weights have {layers}")
    first = state.state[prefix + f"{names['layer1']}.0.conv1.weight"]
    if first.shape[0] != 64 or state.state[prefix + f"{names['layer1']}.0.conv3.weight"].shape[0] != 256:
        raise ConversionError(f"{state.what}: not a bottleneck ResNet with ResNet-50 widths (64 -> 256 in stage 1)")
    v = _Vars(state, prefix)
    v.conv(names["conv1"], ("conv1",))
    v.bn(names["bn1"], ("bn1",))
    for i, n in enumerate(layers, start=1):
        _bottlenecks(v, names[f"layer{i}"], (), n, name_fmt=f"layer{i}_{{}}")
    state.ignore([prefix + k for k in head], _FC_REASON)
    out = {"backbone": "resnet50", "layers": layers, "global_pool": global_pool}
    return v.variables(), out


# ----------------------------------------------------------------------------------------
# ViT


def _vit(state: StateDict, prefix: str, config: Mapping[str, Any]) -> tuple[dict, dict]:
    pkey = prefix + "pos_embed"
    if pkey not in state or prefix + "patch_embed.proj.weight" not in state:
        raise ConversionError(f"{state.what}: no {pkey} / patch_embed: not a ViTPose backbone (prefix {prefix!r})")
    keys = _strip(state.keys(), prefix)
    depth = len({m.group(1) for k in keys if (m := re.match(r"^blocks\.(\d+)\.norm1\.weight$", k))})
    pos = np.asarray(state.state[pkey], np.float32)
    embed_dim = int(pos.shape[-1])
    patch = state.state[prefix + "patch_embed.proj.weight"]
    patch_size = int(patch.shape[-1])
    if int(config.get("ratio", 1)) != 1:
        raise ConversionError(f"ViT ratio={config['ratio']} is not supported (the originals use 1)")
    padding = int(config.get("patch_padding", 2))
    num_heads = int(config.get("num_heads", 16))
    if embed_dim % num_heads:
        raise ConversionError(
            f"{state.what}: width {embed_dim} is not divisible by num_heads={num_heads}; give num_heads in the config"
        )
    mlp_ratio = state.state[prefix + "blocks.0.mlp.fc1.weight"].shape[0] / embed_dim if depth else 4.0
    qkv_bias = prefix + "blocks.0.attn.qkv.bias" in state
    # The patch grid pos_embed was made for: from the configured image size (256 x 192 by default),
    # an explicit pos_grid, or a square grid; it must account for every entry but the class slot.
    n = pos.shape[1] - 1
    if "pos_grid" in config:
        grid = tuple(int(g) for g in config["pos_grid"])
    else:
        h, w = config.get("img_size", (256, 192))
        grid = ((h + 2 * padding - patch_size) // patch_size + 1, (w + 2 * padding - patch_size) // patch_size + 1)
        if grid[0] * grid[1] != n and math.isqrt(n) ** 2 == n:
            grid = (math.isqrt(n), math.isqrt(n))
    if grid[0] * grid[1] != n:
        raise ConversionError(
            f"{state.what}: pos_embed has {n} + 1 entries, which is not the {grid[0]}x{grid[1]} patch grid; "
            "give pos_grid=[rows, cols] (or img_size) in the config"
        )
    for key, value in (("embed_dim", embed_dim), ("depth", depth), ("patch_size", patch_size)):
        if key in config and int(config[key]) != value:
            raise ConversionError(f"{state.what}: config {key}={config[key]} but the weights have {value}")
    v = _Vars(state, prefix)
    interp = config.get("interpolate_to")
    if interp is not None:
        interp = tuple(int(g) for g in interp)
        pos = np.asarray(interpolate_pos_embed(np.asarray(state.take(pkey), np.float32), grid, interp))
        v._put(v.params, ("pos_embed",), pos)
        grid = interp
    else:
        v.param("pos_embed", ("pos_embed",))
    v.conv("patch_embed.proj", ("patch_embed",), bias=True)
    for i in range(depth):
        b, f = f"blocks.{i}", f"blocks_{i}"
        v.norm(f"{b}.norm1", (f, "norm1"))
        if qkv_bias:
            v.dense(f"{b}.attn.qkv", (f, "attn", "qkv"))
        else:
            v._put(v.params, (f, "attn", "qkv", "kernel"), dense_kernel(v.take(f"{b}.attn.qkv.weight")))
        v.dense(f"{b}.attn.proj", (f, "attn", "proj"))
        v.norm(f"{b}.norm2", (f, "norm2"))
        v.dense(f"{b}.mlp.fc1", (f, "fc1"))
        v.dense(f"{b}.mlp.fc2", (f, "fc2"))
    v.norm("last_norm", ("last_norm",))
    out = {
        "backbone": "vit",
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
        "mlp_ratio": float(mlp_ratio),
        "qkv_bias": bool(qkv_bias),
        "drop_path_rate": float(config.get("drop_path_rate", 0.55)),
        "patch_size": patch_size,
        "patch_padding": padding,
        "pos_grid": list(grid),
        "interpolate_pos_embed": bool(config.get("interpolate_pos_embed", False)),
        "input_size": [g * patch_size for g in grid],
    }
    return v.variables(), out


# ----------------------------------------------------------------------------------------
# Public API


def convert_backbone(
    state: StateDict, kind: str, prefix: str = "", config: Mapping[str, Any] | None = None
) -> tuple[dict, dict]:
    """Convert the backbone weights found under ``prefix`` in ``state``.

    Args:
      state: the checkpoint's StateDict; every backbone key is taken or explicitly ignored
        (the caller runs ``state.finish()`` once the rest of the checkpoint is converted).
      kind: ``"hrnet"``, ``"resnet50"`` or ``"vit"``.
      prefix: key prefix of the backbone (``""``, ``"backbone."``, ``"backbone_pose."`` ...).
      config: optional model config (flat, or a parity-fixture JSON); what the weights reveal
        (widths, depths, grids) is inferred and checked against it.
    Returns:
      ``(variables, config)``: ``{"params": ..., "batch_stats": ...}`` (no ``batch_stats`` for the
      ViT) as float32 NumPy arrays, and the complete config; ``build_backbone(config)`` builds the
      matching Flax module.
    Raises:
      ConversionError: unknown kind, or weights that do not match the architecture.
    """
    cfg = user_config(config)
    if kind == "hrnet":
        return _hrnet(state, prefix, cfg)
    if kind == "resnet50":
        return _resnet(state, prefix, cfg)
    if kind == "vit":
        return _vit(state, prefix, cfg)
    raise ConversionError(f"unknown backbone kind {kind!r}; one of {tuple(KINDS)}")


# ----------------------------------------------------------------------------------------
# Detection


def backbone_kind(keys, prefix: str = "") -> str | None:
    """Which backbone a state dict holds under ``prefix`` (``""``: a bare backbone state dict).

    Returns:
      ``"vit"``, ``"hrnet"``, ``"resnet50"`` (either ResNet layout), ``"unknown"`` when other
      keys start with ``prefix``, None when none does.
    """
    s = set(keys)
    if prefix + "patch_embed.proj.weight" in s:
        return "vit"
    if prefix + "conv1.weight" in s and any(k.startswith(prefix + "stage4.") for k in s):
        return "hrnet"
    if _resnet_layout(s, prefix) is not None:
        return "resnet50"
    return "unknown" if any(k.startswith(prefix) for k in s) else None


def detect(keys, name: str) -> bool:
    """Whether a state dict with these keys is a bare backbone of kind ``name`` (:data:`KINDS`)."""
    return backbone_kind(keys) == name


def convert(state: StateDict, config: Mapping[str, Any] | None, name: str) -> tuple[dict, dict]:
    """Convert a bare backbone state dict of kind ``name`` (:func:`convert_backbone` at prefix ``""``)."""
    return convert_backbone(state, name, "", config)
