"""HRNet (the pose-estimation "PoseHighResolutionNet") as MEGA and VQ-HPS build it, NHWC.

Architecture (width W, 48 for the released models):

* stem: two 3x3/2 convolutions (64 channels) with BatchNorm + ReLU, then ``layer1``: four
  bottlenecks (256 channels) at 1/4 resolution;
* stages 2, 3, 4 with 2, 3, 4 parallel branches (W * 2^j channels at 1/(4 * 2^j) resolution),
  made of 1, 4, 3 high-resolution modules; each module runs 4 basic blocks per branch and fuses
  every branch into every other (1x1 convolution + nearest up-sampling from lower resolutions,
  chains of 3x3/2 convolutions from higher ones, summed, ReLU); transitions add the new
  lowest-resolution branch;
* the head the originals select (``hrnet_w48(downsample=True, use_conv=True)``): branches 0, 1, 2
  go through 3, 2, 1 strided 3x3 convolutions (+BN+ReLU) down to the resolution of branch 3, and
  the four maps are concatenated: (B, H/32, W/32, 15 W), i.e. 7 x 7 x 720 for a 224 x 224 crop.

The unused 1x1 ``final_layer`` (24 joint heat-maps) of the original is not built: the converter
accounts for its weights explicitly. ``head="none"`` returns the four stage-4 branches instead
(the upstream pose network without its heat-map layer).

Two parameter layouts of the same network (the MaxText ``scan_layers`` idea):

* ``scan_layers=True`` (checkpoints, the converter, training): a stage's modules and a branch's
  blocks are scanned, so their parameters are stacked (``stage{s}/branch{j}/conv1/kernel`` has
  leading axes (modules, 4)); compiles fast, and the backward pass saves only convolution outputs;
* ``scan_layers=False`` (inference, :func:`unstack_variables` converts once at load):
  ``stage{s}_{m}/branch{j}/block{k}/...``, every weight its own array. A scan copies each
  iteration's weights out of the stacks (twice: module, then block); here the modules are
  unrolled and a branch's blocks run in a loop that picks block k's weights with ``lax.switch``
  (no copies, and the loop keeps XLA from fusing the whole residual chain of a branch into every
  consumer, which a plain unroll does: batch 16 2.7 s instead of 1.5 s). HRNet-w48 forward, 2 CPU
  cores, alternating calls in one process: batch 1 0.121 -> 0.092 s (0.161 -> 0.127 s in a
  slower process), batch 16 unchanged (1.49 s). Training in this layout runs the blocks one after
  the other (correct, slower to compile).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.models.backbones.layers import SAVE_CONV_OUTPUTS, BatchNorm, Bottleneck, ConvBN, conv

Dtype = Any

# (modules, branches) of stages 2, 3, 4; every branch has 4 basic blocks (all HRNet variants).
STAGES = ((1, 2), (4, 3), (3, 4))
BLOCKS_PER_BRANCH = 4
HEADS = ("downsample_conv", "none")


def _basic_block(x: jnp.ndarray, features: int, dtype: Dtype, train: bool) -> jnp.ndarray:
    """Body of a basic block; creates ``conv1``, ``bn1``, ``conv2``, ``bn2`` in the calling module."""
    out = conv(features, 3, dtype=dtype, name="conv1")(x)
    out = nn.relu(BatchNorm(dtype=dtype, name="bn1")(out, train))
    out = conv(features, 3, dtype=dtype, name="conv2")(out)
    out = BatchNorm(dtype=dtype, name="bn2")(out, train)
    return nn.relu(out + x.astype(out.dtype))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity shortcut (channels unchanged).

    Attributes:
      features: channels in and out.
      dtype: computation dtype.
    """

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """(B, H, W, C) -> (B, H, W, C)."""
        return _basic_block(x, self.features, self.dtype, train)


class _BasicBlockStep(nn.Module):
    """A basic block as a scan step (``train`` static); see :data:`_BranchBlocks`."""

    features: int
    dtype: Dtype
    train: bool

    @nn.compact
    def __call__(self, x: jnp.ndarray, _) -> tuple[jnp.ndarray, None]:
        return _basic_block(x, self.features, self.dtype, self.train), None


# The 4 basic blocks of a branch share their shapes: one scanned block whose parameters and
# statistics have a leading axis of 4 (compiles ~10x faster than 4 copies, runs as fast).
# Scan steps (blocks here, modules in _stage_modules) keep only their convolution outputs for the
# backward pass (nn.remat, layers.SAVE_CONV_OUTPUTS) and recompute the batch norms, ReLUs and
# sums between them: each residual a scan saves is written into a stacked buffer and read back,
# which cost more than the recomputation (HRNet-w48 forward + backward on 2 CPU cores, f32:
# batch 2 1.13-1.24 s -> 0.98-1.01 s, batch 8 3.98-4.26 s -> 3.35-3.49 s). Forward values and
# inference are unchanged.
_BranchBlocks = nn.scan(
    nn.remat(_BasicBlockStep, policy=SAVE_CONV_OUTPUTS),
    variable_axes={"params": 0, "batch_stats": 0},
    split_rngs={"params": True},
    length=BLOCKS_PER_BRANCH,
)


class _UnstackedBlocks(nn.Module):
    """The 4 basic blocks of a branch with their own parameters (``block{k}``): the inference layout.

    At inference a loop over k runs ``lax.switch(k, blocks)`` (flax's lifted ``while_loop`` and
    ``switch``): each block reads its own weights in place. Initialisation and training run the
    blocks one after the other.
    """

    features: int
    dtype: Dtype

    def setup(self):
        self.blocks = [BasicBlock(self.features, self.dtype, name=f"block{k}") for k in range(BLOCKS_PER_BRANCH)]

    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """(B, H, W, C) -> (B, H, W, C)."""
        if train or self.is_initializing():
            for block in self.blocks:
                x = block(x, train)
            return x
        branches = [lambda mdl, h, k=k: mdl.blocks[k](h) for k in range(BLOCKS_PER_BRANCH)]

        def body(mdl, carry):
            k, h = carry
            return k + 1, nn.switch(k, branches, mdl, h)

        return nn.while_loop(lambda mdl, carry: carry[0] < BLOCKS_PER_BRANCH, body, self, (jnp.int32(0), x))[1]


def _upsample_nearest(x: jnp.ndarray, factor: int) -> jnp.ndarray:
    """Nearest-neighbour up-sampling of (B, H, W, C) by an integer factor."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def _hr_module(xs: Sequence[jnp.ndarray], channels: Sequence[int], dtype: Dtype, train: bool,
               scan_blocks: bool = True) -> list[jnp.ndarray]:
    """Body of a high-resolution module (submodules created in the calling module)."""
    n = len(channels)
    if scan_blocks:
        xs = [_BranchBlocks(c, dtype, train, name=f"branch{j}")(xs[j], None)[0] for j, c in enumerate(channels)]
    else:
        xs = [_UnstackedBlocks(c, dtype, name=f"branch{j}")(xs[j], train) for j, c in enumerate(channels)]
    if n == 1:
        return xs
    fused = []
    for i in range(n):
        y = None
        for j in range(n):
            if j == i:
                z = xs[j]
            elif j > i:
                z = ConvBN(channels[i], 1, relu=False, dtype=dtype, name=f"fuse{i}_{j}")(xs[j], train)
                z = _upsample_nearest(z, 2 ** (j - i))
            else:
                z = xs[j]
                for k in range(i - j):
                    last = k == i - j - 1
                    z = ConvBN(
                        channels[i] if last else channels[j], 3, stride=2, relu=not last, dtype=dtype,
                        name=f"fuse{i}_{j}_{k}",
                    )(z, train)
            y = z if y is None else y + z
        fused.append(nn.relu(y))
    return fused


class HighResolutionModule(nn.Module):
    """One multi-branch module: per-branch basic blocks, then the all-to-all fusion.

    Submodules: ``branch{j}`` (the 4 basic blocks of branch j, scanned: parameters with a
    leading axis of 4; with ``scan_blocks=False`` ``branch{j}/block{k}``); ``fuse{i}_{j}`` for
    j > i (1x1 convolution + BN, then nearest up-sampling by 2^(j-i)); ``fuse{i}_{j}_{k}`` for
    j < i (k-th 3x3/2 convolution + BN, with ReLU except after the last one). The branch outputs
    are summed per target branch, then ReLU.

    Attributes:
      channels: channels of each branch (W * 2^j).
      dtype: computation dtype.
      scan_blocks: stacked block parameters (True) or one set per block (the inference layout).
    """

    channels: Sequence[int]
    dtype: Dtype = jnp.float32
    scan_blocks: bool = True

    @nn.compact
    def __call__(self, xs: Sequence[jnp.ndarray], train: bool = False) -> list[jnp.ndarray]:
        """List of (B, H/2^j, W/2^j, channels[j]) -> list of the same shapes."""
        return _hr_module(xs, self.channels, self.dtype, train, self.scan_blocks)


class _ModuleStep(nn.Module):
    """A high-resolution module as a scan step over the modules of a stage."""

    channels: Sequence[int]
    dtype: Dtype
    train: bool

    @nn.compact
    def __call__(self, xs: tuple, _) -> tuple[tuple, None]:
        return tuple(_hr_module(xs, self.channels, self.dtype, self.train)), None


def _stage_modules(modules: int):
    """The ``modules`` identical high-resolution modules of a stage as one scanned module."""
    return nn.scan(
        nn.remat(_ModuleStep, policy=SAVE_CONV_OUTPUTS),
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True},
        length=modules,
    )


class HRNet(nn.Module):
    """HRNet backbone (PoseHighResolutionNet of MEGA / VQ-HPS, ``downsample=True, use_conv=True``).

    Submodules (named after the original's): ``conv1``, ``bn1``, ``conv2``, ``bn2``,
    ``layer1_{k}``; ``transition{s}_{i}`` (a changed-width branch) or ``transition{s}_{i}_{k}``
    (k-th 3x3/2 convolution of a new branch); ``stage{s}``: the stage's 1, 4 or 3 modules
    (:class:`HighResolutionModule` layout) scanned, i.e. every parameter of a stage has a leading
    axis of length ``modules`` and the branch blocks a second one of length 4 (with
    ``scan_layers=False``: ``stage{s}_{m}`` per module, ``branch{j}/block{k}`` per block, see the
    module docstring); ``downsample_stage_{b}_{k}``.

    Attributes:
      width: channels of the highest-resolution branch (48 for the released models, 32 for
        HRNet-w32); the output has 15 * width channels.
      head: ``"downsample_conv"`` (the originals: strided convolutions + concatenation) or
        ``"none"`` (return the four stage-4 branches).
      dtype: computation dtype (float32 default, bfloat16 for speed); parameters stay float32.
      scan_layers: the stacked parameter layout (True: checkpoints, training) or the unstacked
        inference layout (False; :func:`unstack_variables` converts).
    """

    width: int = 48
    head: str = "downsample_conv"
    dtype: Dtype = jnp.float32
    scan_layers: bool = True

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False):
        """Run the backbone.

        Args:
          images: (B, H, W, 3) ImageNet-normalised RGB images, H and W multiples of 32
            (224 x 224 for MEGA / VQ-HPS).
          train: BatchNorm uses batch statistics (and updates ``batch_stats`` when mutable).
        Returns:
          ``head="downsample_conv"``: (B, H/32, W/32, 15 * width) features in ``dtype``;
          ``head="none"``: list of the four stage-4 branches (B, H/2^(j+2), W/2^(j+2), width * 2^j).
          Stage outputs are also sown in the ``intermediates`` collection (``stage{s}_out``: tuple of
          branches, ``downsample_stage_{b}``) when that collection is mutable.
        """
        if self.head not in HEADS:
            raise ValueError(f"HRNet head must be one of {HEADS}, got {self.head!r}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"HRNet expects NHWC images (B, H, W, 3), got shape {images.shape}")
        if images.shape[1] % 32 or images.shape[2] % 32:
            raise ValueError(
                f"HRNet needs H and W divisible by 32 (branches are fused at 1/32), got {images.shape[1:3]}"
            )
        d = self.dtype
        x = images.astype(d)
        x = conv(64, 3, 2, dtype=d, name="conv1")(x)
        x = nn.relu(BatchNorm(dtype=d, name="bn1")(x, train))
        x = conv(64, 3, 2, dtype=d, name="conv2")(x)
        x = nn.relu(BatchNorm(dtype=d, name="bn2")(x, train))
        for k in range(4):
            x = Bottleneck(64, downsample=k == 0, dtype=d, name=f"layer1_{k}")(x, train)

        pre_channels = [256]
        ys = [x]
        for s, (modules, branches) in enumerate(STAGES, start=2):
            channels = [self.width * 2**j for j in range(branches)]
            xs = []
            for i, c in enumerate(channels):
                if i < len(pre_channels):
                    if c != pre_channels[i]:
                        xs.append(ConvBN(c, 3, dtype=d, name=f"transition{s - 1}_{i}")(ys[i], train))
                    else:
                        xs.append(ys[i])
                else:
                    z = ys[-1]
                    n_new = i + 1 - len(pre_channels)
                    for k in range(n_new):
                        out_c = c if k == n_new - 1 else pre_channels[-1]
                        z = ConvBN(out_c, 3, stride=2, dtype=d, name=f"transition{s - 1}_{i}_{k}")(z, train)
                    xs.append(z)
            if self.scan_layers:
                xs, _ = _stage_modules(modules)(tuple(channels), d, train, name=f"stage{s}")(tuple(xs), None)
            else:
                for m in range(modules):
                    module = HighResolutionModule(tuple(channels), d, scan_blocks=False, name=f"stage{s}_{m}")
                    xs = module(xs, train)
            xs = list(xs)
            self.sow("intermediates", f"stage{s}_out", tuple(xs))
            ys, pre_channels = xs, channels

        if self.head == "none":
            return ys
        outs = []
        for b in range(3):
            z = ys[b]
            for k in range(3 - b):
                z = ConvBN(self.width * 2**b, 3, stride=2, dtype=d, name=f"downsample_stage_{b + 1}_{k}")(z, train)
            self.sow("intermediates", f"downsample_stage_{b + 1}", z)
            outs.append(z)
        outs.append(ys[3])
        return jnp.concatenate(outs, axis=-1)


def hrnet_w48(**kwargs) -> HRNet:
    """The released models' backbone: HRNet-w48 with the strided-convolution head (720 channels)."""
    return HRNet(width=48, **kwargs)


def hrnet_w32(**kwargs) -> HRNet:
    """HRNet-w32 with the strided-convolution head (480 channels)."""
    return HRNet(width=32, **kwargs)


# ------------------------------------------------------------------------------------------
# Parameter layouts

_STAGE = re.compile(r"stage([234])$")
_STAGE_MODULE = re.compile(r"stage([234])_(\d+)$")
_BLOCK = re.compile(r"block(\d+)$")


def _is_hrnet(tree: Mapping) -> bool:
    return isinstance(tree, Mapping) and "layer1_0" in tree and (
        "stage2" in tree or "stage2_0" in tree)


def _take(tree, i: int):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def _unstack_hrnet(tree: Mapping) -> dict:
    out = {}
    for name, sub in tree.items():
        if not _STAGE.match(name):
            out[name] = sub
            continue
        modules = len(jax.tree_util.tree_leaves(sub)[0])
        for m in range(modules):
            module = _take(sub, m)
            out[f"{name}_{m}"] = {
                key: ({f"block{k}": _take(val, k) for k in range(BLOCKS_PER_BRANCH)}
                      if key.startswith("branch") else val)
                for key, val in module.items()}
    return out


def _stack(trees: list):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a) if isinstance(a[0], jax.Array) else np.stack(a), *trees)


def _stack_hrnet(tree: Mapping) -> dict:
    out, stages = {}, {}
    for name, sub in tree.items():
        match = _STAGE_MODULE.match(name)
        if not match:
            out[name] = sub
            continue
        module = {key: (_stack([val[f"block{k}"] for k in range(BLOCKS_PER_BRANCH)])
                        if key.startswith("branch") else val)
                  for key, val in sub.items()}
        stages.setdefault(f"stage{match.group(1)}", {})[int(match.group(2))] = module
    for name, modules in stages.items():
        out[name] = _stack([modules[m] for m in range(len(modules))])
    return out


def _relayout(tree, convert):
    if _is_hrnet(tree):
        return convert(tree)
    if isinstance(tree, Mapping):
        return {k: _relayout(v, convert) for k, v in tree.items()}
    return tree


def unstack_variables(variables: Mapping) -> dict:
    """Variables of any model holding HRNets, with every HRNet in the ``scan_layers=False`` layout.

    Args:
      variables: ``{collection: {...}}`` in the stacked layout (a checkpoint's); HRNet subtrees
        are found wherever they sit (``params/backbone``, VQ-HPS's two backbones) in every
        collection. Host (NumPy) or device arrays.
    Returns:
      The same leaves re-laid: ``stage{s}`` (leading axes modules[, 4]) becomes ``stage{s}_{m}``
      with ``branch{j}/block{k}`` per block; everything else is returned as it is.
    """
    return _relayout(variables, _unstack_hrnet)


def stack_variables(variables: Mapping) -> dict:
    """The inverse of :func:`unstack_variables` (inference layout -> the checkpoints' layout)."""
    return _relayout(variables, _stack_hrnet)
