"""BEDLAM SMPL animation files -> hmr_jax mesh records (Mesh-VQ-VAE and MEGA pre-training).

``python -m data_prep.bedlam_animations --root datasets/bedlam_animations --body-models body_models --out OUT [--stride 1]``

Input: the "SMPL neutral" animation files of BEDLAM ("SMPL ground truth / animation files"),
extracted into ``ROOT`` (any depth): ``*.npz`` with ``poses`` (T, >= 66: root, then body
joints), ``betas`` and ``gender``; files whose path contains ``shape`` are skipped, as the
original loader does.

Each kept frame becomes a mesh record: the canonical mesh (no global rotation, centred on its
vertex mean; the originals' ``canonical=True, normalize=True``) and the frame's root
orientation. Every ``--stride``-th frame is kept (1 = all; the original draws one random frame
per file at each step, so all frames are potential samples). Gender, as the original loader:
``m`` uses the male model and anything else the *female* model (``--gender-policy original``);
``--gender-policy file`` uses the file's gender (neutral included).
"""
from __future__ import annotations

import pathlib
import sys
from typing import Sequence

from absl import flags
import numpy as np
from tqdm import tqdm

from data_prep import common
from hmr_jax.cli import parse_command
from hmr_jax.data.shards import ShardWriter
from hmr_jax.errors import command_line


def _gender(value, policy: str) -> str:
    if policy == "original":  # the original loader: exactly "m" -> male, anything else -> female
        raw = np.array(value, ndmin=1).reshape(-1)[0]
        raw = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        return "male" if raw == "m" else "female"
    return common.gender_name(value)


def convert(root: str | pathlib.Path, out: str | pathlib.Path, meshes: common.BodyMeshes, stride: int = 1,
            gender_policy: str = "original", records_per_shard: int = 2000, overwrite: bool = False,
            progress: bool = True) -> pathlib.Path:
    """Converts every animation file under ``root`` (see the module docstring); returns the manifest."""
    if stride < 1:
        raise ValueError("stride must be >= 1")
    if gender_policy not in ("original", "file"):
        raise ValueError("gender_policy must be 'original' or 'file'")
    root = pathlib.Path(root)
    if not root.is_dir():
        raise common.ConversionInputError(f"missing folder {root} (the extracted BEDLAM animation files)")
    files = sorted(p for p in root.glob("**/*.npz") if "shape" not in str(p.relative_to(root)))
    if not files:
        raise common.ConversionInputError(f"no animation .npz file under {root}")
    meta = {"source": "BEDLAM animation files", "root": str(root), "stride": stride, "gender_policy": gender_policy,
            "canonical": True, "centred": "vertex mean"}
    with ShardWriter(out, "mesh", records_per_shard=records_per_shard, metadata=meta, overwrite=overwrite) as w:
        for path in tqdm(files, desc="BEDLAM animations", disable=not progress):
            data = common.load_npz(path)
            common.require(data, ["poses", "betas", "gender"], path)
            poses = np.asarray(data["poses"], np.float64)
            if poses.ndim != 2 or poses.shape[1] < 66:
                raise common.ConversionInputError(f"{path}: poses have shape {poses.shape}, expected (T, >= 66)")
            frames = np.arange(0, len(poses), stride)
            if len(frames) == 0:
                continue
            gender = _gender(data["gender"], gender_policy)
            betas = np.repeat(np.asarray(data["betas"], np.float64).reshape(1, -1)[:, :10], len(frames), axis=0)
            mesh = meshes.canonical(gender, betas, poses[frames, 3:66])
            rel = str(path.relative_to(root))
            for i, t in enumerate(frames):
                w.write({"vertices": mesh["vertices"][i], "global_orient": poses[t, :3], "dataset": "bedlam_animations",
                         "name": f"{rel}:{t}", "betas": betas[i], "body_pose": poses[t, 3:66], "gender": gender})
    return pathlib.Path(out) / "manifest.json"


def _define(fv: flags.FlagValues) -> None:
    """This command's absl flags (parsed by :func:`hmr_jax.cli.parse_command`)."""
    flags.DEFINE_string("root", None, "folder of the BEDLAM animation .npz files (any depth)", required=True,
                        flag_values=fv)
    flags.DEFINE_string("body-models", "body_models", "folder with smplh/{neutral,m,f}/model.npz", flag_values=fv)
    flags.DEFINE_string("out", None, "dataset folder to write", required=True, flag_values=fv)
    flags.DEFINE_integer("stride", 1, "keep every N-th frame", flag_values=fv)
    flags.DEFINE_enum("gender-policy", "original", ["original", "file"],
                      "original: m -> male, anything else -> female; file: the file's gender", flag_values=fv)
    flags.DEFINE_integer("records-per-shard", 2000, "records per shard file", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "replace an existing dataset in --out", flag_values=fv)


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    a = parse_command(argv, _define, "python -m data_prep.bedlam_animations", __doc__)
    if a is None:   # --help
        return 0
    manifest = convert(a.root, a.out, common.BodyMeshes.from_folder(a.body_models), stride=a.stride,
                       gender_policy=a.gender_policy, records_per_shard=a.records_per_shard, overwrite=a.overwrite)
    print(f"wrote {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
