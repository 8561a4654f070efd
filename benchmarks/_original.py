"""Import the ORIGINAL PyTorch model definitions from a user's checkout, to time them beside ours.

Nothing of the original code is in this project: the benchmarks take the path of a checkout
(``--original /path/to/MEGA`` or ``/path/to/Mesh-VQ-VAE``) and import its model files from
there at run time. Only the model definitions are imported; what the originals' package
``__init__`` files pull in for training, data and rendering (hydra, pytorch3d, pyrender,
smplx...) is irrelevant to timing and skipped:

* ``mega`` / ``mega.model`` / ``mega.model.backbone`` (and ``mesh_vq_vae`` /
  ``mesh_vq_vae.model``) are registered as bare packages pointing at the checkout's folders, so
  their ``__init__.py`` files do not run; the model modules themselves are imported unchanged
  (``mega/model/backbone/hrnet.py``, ``mega/model/cvqmae/masked_autoencoder.py`` with its
  ``masking`` package, ``mesh_vq_vae/model/{mesh_vq_vae,graphAE,Encoder_Decoder,
  Vector_Quantizer_EMA}.py``).
* Their third-party imports must be installed: ``torch`` (the ``torch`` extra), ``einops``,
  and for MEGA ``timm`` (the transformer ``Block``) and ``yacs`` (HRNet's config). They are not
  project dependencies; install them apart, e.g.
  ``pip install --no-deps --target ../orig_deps timm==1.0.15 yacs==0.1.8``, and pass
  ``--original-deps ../orig_deps``.
* ``torchvision``: timm imports it at module level for its data transforms and one norm layer
  that these models never use. When it is missing or broken (the registry's wheels need CUDA
  libraries), a stand-in package whose every attribute is an inert placeholder class is
  installed before timm is imported. The timed models never touch it.
* ``omegaconf``: the Mesh-VQ-VAE's ``graphAE.py`` uses only ``OmegaConf.to_object`` to turn its
  list of layer names into a Python list; a stand-in does exactly that when omegaconf is
  missing.
* ``FullyConvAE.__init__`` moves two index tensors to CUDA with ``.cuda()``; while it is
  constructed ``torch.Tensor.cuda`` returns the tensor unchanged (CPU run).

The original models then get random parameters of the same scheme as ours
(:func:`randomize_torch`, see :func:`_common.random_variables`), ``eval()`` mode for inference,
float32, ``torch.set_num_threads(os.cpu_count())``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import inspect
import math
import os
import sys
import types

import numpy as np


class OriginalError(SystemExit):
    """The original checkout or its dependencies are unusable (one ``error:`` line)."""


def _bare_package(name: str, folder: str) -> None:
    """Register ``name`` as a package at ``folder`` without running its ``__init__.py``."""
    if name in sys.modules:
        return
    module = types.ModuleType(name)
    module.__path__ = [folder]
    sys.modules[name] = module


class _Placeholder(type):
    """Metaclass of the torchvision stand-in: every attribute is a new distinct placeholder class."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _Placeholder(name, (cls,), {})
        setattr(cls, name, sub)
        return sub


class _Unused(metaclass=_Placeholder):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision stand-in: the benchmark's stub was called (it must not be)")


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``torchvision`` and its submodules as inert modules (see the module docstring)."""

    root = "torchvision"

    def find_spec(self, name, path, target=None):
        if name == self.root or name.startswith(self.root + "."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: getattr(_Unused, attr)
        return module

    def exec_module(self, module):
        pass


def _torchvision_usable() -> bool:
    try:
        import torchvision  # noqa: F401  (only probing whether the real one imports)

        return True
    except Exception:  # missing, or a CUDA build that fails on this CPU torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False


def _prepare(path: str, deps: str | None, package: str) -> None:
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.join(path, package)):
        raise OriginalError(f"error: --original {path} has no {package}/ folder; pass the root of the "
                            f"original {'MEGA' if package == 'mega' else 'Mesh-VQ-VAE'} checkout")
    if deps:
        if not os.path.isdir(deps):
            raise OriginalError(f"error: --original-deps {deps} is not a folder; pip install --no-deps --target "
                                f"{deps} timm==1.0.15 yacs==0.1.8")
        sys.path.insert(0, os.path.abspath(deps))
    sys.path.insert(0, path)
    try:
        import einops  # noqa: F401  (the originals need it)
        import torch
    except ImportError as e:
        raise OriginalError(f"error: timing the original needs {e.name}: pip install -e '.[torch]' einops==0.8.2")
    torch.set_num_threads(os.cpu_count())


def _require(module: str, hint: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise OriginalError(f"error: the original code needs {e.name}: {hint}")


def load_mega(path: str, deps: str | None = None) -> types.SimpleNamespace:
    """The original MEGA's ``hrnet_w48`` and ``CVQMAE`` classes from the checkout at ``path``."""
    _prepare(path, deps, "mega")
    hint = ("pip install --no-deps --target DIR timm==1.0.15 yacs==0.1.8, then --original-deps DIR")
    _require("yacs.config", hint)
    if not _torchvision_usable():
        sys.meta_path.insert(0, _StandInFinder())
    _require("timm.models.vision_transformer", hint)
    root = os.path.join(os.path.abspath(path), "mega")
    _bare_package("mega", root)
    _bare_package("mega.model", os.path.join(root, "model"))
    _bare_package("mega.model.backbone", os.path.join(root, "model", "backbone"))
    hrnet = importlib.import_module("mega.model.backbone.hrnet")
    cvqmae = importlib.import_module("mega.model.cvqmae.masked_autoencoder")
    return types.SimpleNamespace(hrnet_w48=hrnet.hrnet_w48, CVQMAE=cvqmae.CVQMAE)


def load_mesh_vqvae(path: str, deps: str | None = None) -> types.SimpleNamespace:
    """The original ``MeshVQVAE`` and ``FullyConvAE`` classes from the checkout at ``path``."""
    _prepare(path, deps, "mesh_vq_vae")
    try:
        import omegaconf  # noqa: F401  (the real one, when installed)
    except ImportError:
        stand_in = types.ModuleType("omegaconf")
        stand_in.OmegaConf = types.SimpleNamespace(to_object=lambda value: list(value))
        sys.modules["omegaconf"] = stand_in
    root = os.path.join(os.path.abspath(path), "mesh_vq_vae")
    _bare_package("mesh_vq_vae", root)
    _bare_package("mesh_vq_vae.model", os.path.join(root, "model"))
    vq = importlib.import_module("mesh_vq_vae.model.mesh_vq_vae")
    graph = importlib.import_module("mesh_vq_vae.model.graphAE")
    return types.SimpleNamespace(MeshVQVAE=vq.MeshVQVAE, FullyConvAE=graph.FullyConvAE)


@contextlib.contextmanager
def cpu_instead_of_cuda():
    """``tensor.cuda()`` returns the tensor itself while active (the original hard-codes CUDA)."""
    import torch

    saved = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = saved


def randomize_torch(module, seed: int = 0, conv_gain: float = 2.0) -> None:
    """Random parameters in place, the scheme of :func:`_common.random_variables`.

    Convolution / linear weights ~ N(0, gain / fan_in) (fan_in = in_channels x kernel area;
    gain ``conv_gain`` for convolutions, 1 for linear layers), norm weights and running
    variances 1, biases and running means 0; other parameters (embeddings, tokens) N(0, 1 / n).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                gain = 1.0 if isinstance(m, torch.nn.Linear) else conv_gain
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(gain / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, torch.nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / math.sqrt(m.weight.shape[0]))
            elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.BatchNorm1d)):
                if m.weight is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.zero_()
                    m.running_var.fill_(1.0)
        for name, p in module.named_parameters():
            if name.endswith(("token", "pos_embedding")):  # (1, 1, C) / (T, 1, C) learned tokens
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def hrnet(original, seed: int = 0):
    """The original MEGA backbone, ``hrnet_w48(downsample=True, use_conv=True)``, random parameters."""
    with contextlib.redirect_stdout(sys.stderr):  # it prints; stdout is the benchmark's JSON line
        net = original.hrnet_w48(pretrained_ckpt_path="", downsample=True, use_conv=True)
    randomize_torch(net, seed)
    return net


def mega_hrnet(original, mega_config: dict, seed: int = 0):
    """The original CVQMAE with its HRNet-w48 (sizes from our ``mega`` config entry, whose names
    are the original constructor's; other entries ignored), scheduled masking, random parameters."""
    accepted = inspect.signature(original.CVQMAE).parameters
    sizes = {k: v for k, v in dict(mega_config).items() if k in accepted and k not in ("masking", "backbone")}
    with contextlib.redirect_stdout(sys.stderr):  # it prints; stdout is the benchmark's JSON line
        model = original.CVQMAE(backbone=original.hrnet_w48(pretrained_ckpt_path="", downsample=True, use_conv=True),
                                masking="scheduled", **sizes)
    randomize_torch(model, seed)
    return model


def mesh_vqvae(original_vq, connections: str, batch: int):
    """The original Mesh-VQ-VAE tokenizer, released 54-token configuration, test mode, eval.

    Its own random initialisation; one instance per batch size: its test mode pre-allocates
    (batch, points, channels) buffers that pure pooling layers add to their output.
    """
    from hmr_jax.models.mesh_vqvae import RELEASED_54

    ae = RELEASED_54["autoencoder"]
    folder = os.path.join(os.path.abspath(connections), "")  # the original concatenates folder + name
    config = {
        "batch": batch,
        "connection_folder": folder,
        "initial_connection_fn": folder + "_pool0.npy",
        "connection_layer_lst": list(ae["layers"]),
        "channel_lst": list(ae["channels"]),
        "weight_num_lst": list(ae["weight_nums"]),
        "residual_rate_lst": list(ae["residual_rates"]),
    }
    q = RELEASED_54["quantizer"]
    with cpu_instead_of_cuda(), contextlib.redirect_stdout(sys.stderr):
        fcae = original_vq.FullyConvAE(config, test_mode=True)
        model = original_vq.MeshVQVAE(fcae, num_embeddings=q["num_embeddings"], embedding_dim=q["embedding_dim"],
                                      commitment_cost=0.25, decay=0.99, num_quantizer=1)
        fcae.init_test_mode()
    return model.eval()


def load_mega_losses(path: str):
    """The original MEGA's ``mega/utils/loss.py`` (reprojection losses; torch and einops only)."""
    root = os.path.join(os.path.abspath(path), "mega")
    _bare_package("mega", root)
    _bare_package("mega.utils", os.path.join(root, "utils"))
    return importlib.import_module("mega.utils.loss")


def rotation_6d_to_matrix(d6):
    """6D -> rotation matrices, rows b1, b2, b3 (Gram-Schmidt): a stand-in for pytorch3d's function,
    which the original training step calls (pytorch3d is not installed; B x 6 numbers)."""
    import torch

    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    return torch.stack((b1, b2, torch.cross(b1, b2, dim=-1)), dim=-2)


def parameter_count(module) -> int:
    """Number of parameters of a torch module."""
    return int(sum(p.numel() for p in module.parameters()))


def to_nchw(images: np.ndarray):
    """(B, H, W, 3) float32 NumPy images -> a contiguous (B, 3, H, W) torch tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2)))
