"""Packaging for hmr_jax: JAX/Flax human mesh recovery (Mesh-VQ-VAE, VQ-HPS, MEGA).

Every dependency is pinned to a set known to resolve together on CPU with Python 3.11
(see README). The `torch` extra pins torch==2.13.0, whose CPU wheel is installed first by
the Makefile so that pip never pulls a CUDA build.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "protobuf==7.36.2",
    "grain==0.2.18",
    "array-record==0.8.6",
    "tensorflow-datasets==4.9.10",
    "absl-py==2.5.1",
    "pillow==12.3.0",  # gradio 6.31 (the app extra) needs pillow < 13
    "tqdm==4.70.1",
    "tensorboardX==2.6.5",
]

# Person detection (YOLOv8 ONNX exports through ONNX Runtime; hmr_jax.detection.yolo).
DETECT = ["onnxruntime==1.31.1"]
# Video in and out (PyAV: the ffmpeg libraries, H.264 encoder included, inside the wheel;
# no system ffmpeg needed; hmr_jax.video).
VIDEO = ["av==18.1.0"]
# The web app (python -m hmr_jax.app): Gradio and its client; trimesh for the .glb downloads.
APP = ["gradio==6.31.0", "gradio-client==2.7.2", "trimesh==5.2.0"]
# The browser tests (make test-browser): Playwright drives Debian's Chromium (apt-get install chromium;
# `playwright install` downloads browsers and is not used); psutil reads the server's memory.
BROWSER = ["playwright==1.65.2", "psutil==7.2.2"]

EXTRAS_REQUIRE = {
    # Checkpoint conversion from the original PyTorch code and SMPL checks against smplx.
    # torch must be the CPU wheel: the Makefile installs torch==2.13.0 before this extra.
    "torch": ["torch==2.13.0", "smplx==0.1.28"],
    # Data generation for the embedded synthetic default (anny body model runs on torch CPU).
    "synthetic": [
        "torch==2.13.0",
        "anny==0.6.2",
        "warp-lang==1.19.0",
        "roma==1.8.0",
        "safetensors==0.8.0",
        "trimesh==5.2.0",
    ],
    # sample.py's .glb meshes (the .obj / .png outputs need nothing extra).
    "sample": ["trimesh==5.2.0"],
    "detect": DETECT,
    "video": VIDEO,
    "app": APP,
    # The tests cover detection, video and the web app too; onnx builds the small test models;
    # hypothesis fuzzes the readers.
    "dev": (["pytest==9.0.3", "pytest-xdist==3.8.0", "trimesh==5.2.0", "onnx==1.23.2", "hypothesis==6.170.15"]
            + DETECT + VIDEO + APP + BROWSER),
    # NVIDIA GPUs: the JAX CUDA 12 plugin built for jaxlib 0.10.2 (what `jax[cuda12]==0.10.2`
    # installs); `with-cuda` pulls the CUDA / cuDNN / NCCL wheels it was built against.
    "cuda": ["jax-cuda12-plugin[with-cuda]==0.10.2", "jax-cuda12-pjrt==0.10.2"],
    # Cloud TPU VMs: the libtpu that jax 0.10.2's own `tpu` extra pins.
    "tpu": ["jax[tpu]==0.10.2"],
}

setup(
    name="hmr_jax",
    version="0.1.0",
    description="JAX/Flax reimplementation of Mesh-VQ-VAE, VQ-HPS and MEGA for human mesh recovery",
    packages=find_packages(include=["hmr_jax", "hmr_jax.*", "data_prep", "data_prep.*", "configs"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
