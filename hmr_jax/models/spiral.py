"""The spiral-convolution variant of the Mesh-VQ-VAE autoencoder (SpiralNet++-style).

Same hierarchy, same layer list, same sizes as the fully convolutional autoencoder
(:mod:`hmr_jax.models.fcae`); only the convolution changes. Layer ``l`` of
``autoencoder.layers`` maps level ``a`` (its connection file's ``in_points``) to level ``b``
(``out_points``) with ``channels[l]`` output channels and residual rate ``r``
(``autoencoder.residual_rates[l]``; default 1 for a layer that changes the point count, else 0):

1. ``h`` = the input, resampled to level ``b`` when ``a != b`` (pooling / unpooling: each
   output vertex averages its connected inputs with normalised weights, see
   :func:`hmr_jax.mesh.spiral.averaging_weights`);
2. convolution (``r < 1``): gather ``h`` along the fixed-length spirals of level ``b``, one
   dense layer over the concatenated ``L x C`` features, ELU (none on the decoder's last layer);
3. residual (``r > 0``): ``h``, through a bias-free channel map when the channel count changes;
4. output ``sqrt(1 - r) * conv + sqrt(r) * residual``.

For the released "medium" layer list this gives: spiral conv at 6890 points, pool to 1925,
spiral conv, pool to 400, spiral conv, pool to 54, spiral conv to the 9-channel latent; the
decoder mirrors it. :class:`SpiralEncoder` runs the first half of the layers, :class:`SpiralDecoder`
the second.

Config: the Mesh-VQ-VAE config (see :mod:`hmr_jax.models.mesh_vqvae`), as a mapping or
ConfigDict. Used fields: ``autoencoder.connection_folder``, ``autoencoder.initial_connection``,
``autoencoder.layers``, ``autoencoder.channels``, ``autoencoder.residual_rates`` (optional),
``autoencoder.connection_sha256`` (optional), ``quantizer.embedding_dim`` (checked against the
latent channels when present) and ``spiral`` (``autoencoder.weight_nums`` is not used: the
spiral kernel replaces the kernel basis)::

  spiral:
    template: str           # the mesh (.ply / .obj) whose faces give the spirals (required)
    length: int | [int]     # spiral length, one or one per level (default 9)
    dilation: int           # default 1
    averaging: str          # "distance" (weights 2^-hops, default) or "uniform"

Parameters per layer ``NAME`` (e.g. ``pool0``): ``NAME/kernel`` (L * C_in, C_out) and
``NAME/bias`` for the convolution, ``NAME_res/kernel`` (C_in, C_out) for a residual channel map.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hmr_jax.mesh import connections as conn_lib
from hmr_jax.mesh import io as mesh_io
from hmr_jax.mesh import spiral as spiral_lib
from hmr_jax.models.config_dict import config_to_dict

__all__ = ["SpiralTopology", "spiral_topology", "SpiralConv", "SpiralEncoder", "SpiralDecoder"]


@dataclasses.dataclass(frozen=True)
class _LayerPlan:
    name: str
    in_points: int
    out_points: int
    in_channels: int
    out_channels: int
    residual_rate: float
    resample_ids: Any  # (out_points, M) int32 or None
    resample_weights: Any  # (out_points, M) float32 or None
    level: spiral_lib.SpiralLevel


@dataclasses.dataclass(frozen=True, eq=False)
class SpiralTopology:
    """Everything the spiral autoencoder needs that does not depend on parameters.

    Attributes:
      hierarchy: spirals of every level.
      layers: one plan per ``autoencoder.layers`` entry (sizes, resampling weights, level).
      num_vertices: V, vertices of the mesh.
      latent_points: L, points after the encoder.
      latent_channels: D, channels after the encoder.
    """

    hierarchy: spiral_lib.SpiralHierarchy
    layers: tuple[_LayerPlan, ...]
    num_vertices: int
    latent_points: int
    latent_channels: int

    @property
    def num_encoder_layers(self) -> int:
        """The encoder runs ``layers[:n // 2]``, the decoder the rest (as in the original)."""
        return len(self.layers) // 2


def _topology_key(cfg: dict) -> str:
    ae = cfg.get("autoencoder") or {}
    sp_cfg = cfg.get("spiral") or {}
    template = sp_cfg.get("template")
    key = {
        "folder": os.path.abspath(str(ae.get("connection_folder"))),
        "layers": ae.get("layers"),
        "initial": ae.get("initial_connection"),
        "channels": ae.get("channels"),
        "rates": ae.get("residual_rates"),
        "sha": ae.get("connection_sha256"),
        "template": os.path.abspath(str(template)) if template else None,
        "length": sp_cfg.get("length", 9),
        "dilation": sp_cfg.get("dilation", 1),
        "averaging": sp_cfg.get("averaging", "distance"),
        "dim": (cfg.get("quantizer") or {}).get("embedding_dim"),
    }
    return json.dumps(key, sort_keys=True, default=str)


def spiral_topology(config: Any) -> SpiralTopology:
    """Read the connection files and the template a config names and build the spirals.

    Memoised on the config fields it uses, so setting up a module many times reads the files
    once.

    Args:
      config: the Mesh-VQ-VAE config (see the module docstring).
    Returns:
      The :class:`SpiralTopology`.
    Raises:
      ValueError: a missing ``spiral.template``, inconsistent channel / rate lists, a template
        whose vertex count differs from the hierarchy's, or a decoder level the encoder never
        reaches. ``ConnectionFileError`` / ``MeshFileError`` for bad files.
    """
    return _topology_cached(_topology_key(config_to_dict(config)))


@functools.lru_cache(maxsize=8)
def _topology_cached(key: str) -> SpiralTopology:
    k = json.loads(key)
    if not k["template"]:
        raise ValueError(
            "the spiral autoencoder needs config.spiral.template: the path of the template mesh "
            "(.ply / .obj) whose faces define the spirals, e.g. body_models/template.ply"
        )
    names = list(k["layers"] or [])
    if len(names) < 2 or len(names) % 2:
        raise ValueError(f"autoencoder.layers has {len(names)} entries; expected an even number >= 2 (encoder, decoder)")
    channels = [int(c) for c in (k["channels"] or [])]
    if len(channels) != len(names):
        raise ValueError(f"autoencoder.channels has {len(channels)} entries for {len(names)} layers")
    layers = conn_lib.load_hierarchy(k["folder"], names, initial=k["initial"], sha256=k["sha"])
    rates = k["rates"]
    if rates is None:
        rates = [1.0 if l.in_points != l.out_points else 0.0 for l in layers]
    rates = [float(r) for r in rates]
    if len(rates) != len(names):
        raise ValueError(f"autoencoder.residual_rates has {len(rates)} entries for {len(names)} layers")
    for name, r in zip(names, rates):
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"layer {name}: residual rate {r} is outside [0, 1]")
    vertices, faces = mesh_io.read_mesh(k["template"])
    if len(vertices) != layers[0].in_points:
        raise ValueError(
            f"template {k['template']} has {len(vertices)} vertices but the hierarchy's first layer "
            f"({names[0]}) expects {layers[0].in_points}: use the template the connection files were built from"
        )
    n_enc = len(names) // 2
    hierarchy = spiral_lib.build_spiral_hierarchy(vertices, faces, layers[:n_enc], k["length"], int(k["dilation"]))
    plans = []
    in_ch = 3
    for i, (name, layer, out_ch, r) in enumerate(zip(names, layers, channels, rates)):
        try:
            level = hierarchy.level_for(layer.out_points)
        except ValueError as e:
            raise ValueError(f"layer {name}: {e}; the decoder must return through the encoder's levels") from None
        ids = weights = None
        if layer.in_points != layer.out_points:
            ids, weights = spiral_lib.averaging_weights(layer, k["averaging"])
        plans.append(_LayerPlan(name, layer.in_points, layer.out_points, in_ch, out_ch, r, ids, weights, level))
        in_ch = out_ch
    if channels[-1] != 3:
        raise ValueError(f"the decoder's last layer must output 3 channels (x, y, z), got {channels[-1]}")
    latent = plans[n_enc - 1]
    if k["dim"] is not None and int(k["dim"]) != latent.out_channels:
        raise ValueError(
            f"quantizer.embedding_dim is {k['dim']} but the encoder's last layer ({latent.name}) outputs "
            f"{latent.out_channels} channels"
        )
    return SpiralTopology(hierarchy, tuple(plans), int(len(vertices)), latent.out_points, latent.out_channels)


class SpiralConv(nn.Module):
    """Spiral convolution on one level: gather along the spirals, one dense layer, optional ELU.

    Attributes:
      level: the level (its ``spirals`` (P, L) with padding id P).
      features: output channels O.
      activation: apply ELU.

    Parameters: ``kernel`` (L * C, O) (Lecun-normal, as ``nn.Dense``), ``bias`` (O,).
    """

    level: spiral_lib.SpiralLevel
    features: int
    activation: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(P, B, C) point-major features -> (P, B, O)."""
        p, length = self.level.spirals.shape
        if x.shape[0] != p:
            raise ValueError(f"spiral conv on a {p}-point level got {x.shape[0]} points")
        c = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (length * c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        spirals = self.level.spirals
        pad = spirals == p  # padding (components smaller than L) contributes zero
        ids = np.where(pad, 0, spirals)
        kernel = kernel.reshape(length, c, self.features).astype(x.dtype)  # slot-major, as concatenated
        if c < self.features:
            # Fewer input than output channels: gather the (P, L, B, C) inputs (the smaller
            # tensor), one contraction over (slot, channel).
            gathered = x[jnp.asarray(ids)]
            if pad.any():
                gathered = gathered * jnp.asarray(~pad, x.dtype)[:, :, None, None]
            y = jnp.einsum("plbc,lco->pbo", gathered, kernel)
        else:
            # Otherwise apply every slot's kernel to every vertex in one matmul, (P, B, L, O),
            # then add slot l of the vertex at spiral position l (a loop of fused gather-adds;
            # the loop also stops XLA from fusing this sum into the next layer's gathers).
            k_all = kernel.transpose(1, 0, 2).reshape(c, length * self.features)
            per_slot = (x.reshape(-1, c) @ k_all).reshape(p, x.shape[1], length, self.features)
            ids_t = jnp.asarray(np.ascontiguousarray(ids.T))  # (L, P)
            keep_t = jnp.asarray(np.ascontiguousarray(~pad.T), x.dtype)

            def body(slot, acc):
                term = jnp.take(per_slot, slot, axis=2)[ids_t[slot]]
                return acc + (term * keep_t[slot][:, None, None] if pad.any() else term)

            y = jax.lax.fori_loop(0, length, body, jnp.zeros((p, x.shape[1], self.features), x.dtype))
        y = y + bias.astype(x.dtype)
        return nn.elu(y) if self.activation else y


def _resample(x: jnp.ndarray, ids: np.ndarray, weights: np.ndarray) -> jnp.ndarray:
    """Weighted average of connected inputs: (P_in, B, C) -> (P_out, B, C).

    A loop over the neighbour slots, one fused gather-multiply-add each. The loop (rather than
    one gather of a (P_out, M, B, C) tensor, or unrolled slots) also keeps XLA from fusing the
    previous layer into these gathers and recomputing it once per slot.
    """
    ids_t = jnp.asarray(np.ascontiguousarray(ids.T))  # (M, P_out)
    w_t = jnp.asarray(np.ascontiguousarray(weights.T), x.dtype)  # (M, P_out)

    def body(m, acc):
        return acc + w_t[m][:, None, None] * x[ids_t[m]]

    init = jnp.zeros((ids.shape[0],) + x.shape[1:], x.dtype)
    return jax.lax.fori_loop(0, ids.shape[1], body, init)


def _run(topo: SpiralTopology, x: jnp.ndarray, plans) -> jnp.ndarray:
    """Apply layer plans to (B, P, C) features (inside the calling module's compact scope) -> (B, P', C')."""
    last = topo.layers[-1].name
    x = jnp.transpose(x, (1, 0, 2))  # the layers work on (P, B, C)
    for plan in plans:
        h = x
        if plan.resample_ids is not None:
            h = _resample(h, plan.resample_ids, plan.resample_weights)
        out = None
        r = plan.residual_rate
        if r < 1:
            conv = SpiralConv(plan.level, plan.out_channels, activation=plan.name != last, name=plan.name)(h)
            out = conv if r == 0 else conv * math.sqrt(1 - r)
        if r > 0:
            res = h
            if plan.in_channels != plan.out_channels:
                res = nn.Dense(plan.out_channels, use_bias=False, name=f"{plan.name}_res")(res)
            res = res if r == 1 else res * math.sqrt(r)
            out = res if out is None else out + res
        x = out
    return jnp.transpose(x, (1, 0, 2))


class _SpiralHalf(nn.Module):
    """What the spiral encoder and decoder share.

    Attributes:
      config: the Mesh-VQ-VAE config (module docstring).
      topology: a prebuilt :class:`SpiralTopology` (default: :func:`spiral_topology` (config)).
    """

    config: Any
    topology: Any = None

    def _topology(self) -> SpiralTopology:
        return self.topology if self.topology is not None else spiral_topology(self.config)


class SpiralEncoder(_SpiralHalf):
    """Spiral encoder: meshes (B, V, 3) in meters -> latent (B, L, D) (attributes: ``config``, ``topology``)."""

    @nn.compact
    def __call__(self, meshes: jnp.ndarray) -> jnp.ndarray:
        """(B, V, 3) -> (B, L, D); any batch size."""
        topo = self._topology()
        meshes = jnp.asarray(meshes)
        if meshes.ndim != 3 or meshes.shape[1:] != (topo.num_vertices, 3):
            raise ValueError(
                f"meshes have shape {tuple(meshes.shape)}, expected (B, {topo.num_vertices}, 3): "
                "vertex positions of the template's topology"
            )
        return _run(topo, meshes, topo.layers[: topo.num_encoder_layers])


class SpiralDecoder(_SpiralHalf):
    """Spiral decoder: latent (B, L, D) -> meshes (B, V, 3) in meters (attributes: ``config``, ``topology``)."""

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        """(B, L, D) -> (B, V, 3); any batch size."""
        topo = self._topology()
        z = jnp.asarray(z)
        if z.ndim != 3 or z.shape[1:] != (topo.latent_points, topo.latent_channels):
            raise ValueError(
                f"latent has shape {tuple(z.shape)}, expected (B, {topo.latent_points}, {topo.latent_channels})"
            )
        return _run(topo, z, topo.layers[topo.num_encoder_layers :])
