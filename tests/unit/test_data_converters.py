"""Real-dataset converters on tiny stand-ins written in the official file layouts.

3DPW (sequenceFiles pickles + imageFiles), EMDB (per-sequence pickles with good-frames masks),
BEDLAM/CLIFF annotation ``.npz`` with image folders, BEDLAM animation ``.npz``. The body model
is the SMPL+H stand-in of ``hmr_jax.testing.smpl_files`` (6890 vertices, real kinematic tree).
"""
from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from data_prep import bedlam_animations, cliff_npz, common, emdb, threedpw
from hmr_jax import cli
from hmr_jax.data import augment as aug
from hmr_jax.data import records, shards
from hmr_jax.geometry import rotations_np
from hmr_jax.data.pipeline import Source, image_pipeline, mesh_pipeline


@pytest.fixture(scope="module")
def body(tmp_path_factory):
    from hmr_jax.body import load_body_model
    from hmr_jax.testing.smpl_files import write_standin_model

    path = tmp_path_factory.mktemp("body") / "smplh" / "neutral" / "model.npz"
    write_standin_model(path, kind="smplh")
    model = load_body_model(path)
    return common.BodyMeshes(lambda gender: model, chunk=8)


def _smooth_image(path, height, width, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = 128 + 60 * np.sin(xx[..., None] / 9.0 + rng.uniform(0, 6, 3)) + 50 * np.cos(yy[..., None] / 13.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=98)
    return np.asarray(Image.open(path), np.float64)


def _decode(ds_path):
    src = shards.open_dataset(ds_path, verify_checksums=True).data_source()
    return [records.decode_record(src[i]) for i in range(len(src))]


def _to_original(rec, xy):
    return aug.apply_affine(rec["stored_to_original"].astype(np.float64), np.asarray(xy, np.float64))


def _check_region(rec, original):
    """The stored JPEG shows the original image at the mapped positions."""
    stored = np.asarray(Image.open(io.BytesIO(rec["image_jpeg"])), np.float64)
    h, w = original.shape[:2]
    ys, xs = np.mgrid[2:stored.shape[0] - 2:7, 2:stored.shape[1] - 2:7]
    pts = _to_original(rec, np.stack([xs.ravel(), ys.ravel()], 1))
    inside = (pts[:, 0] > 1) & (pts[:, 0] < w - 2) & (pts[:, 1] > 1) & (pts[:, 1] < h - 2)
    assert inside.sum() > 10
    ref = original[np.round(pts[inside, 1]).astype(int), np.round(pts[inside, 0]).astype(int)]
    got = stored[ys.ravel()[inside], xs.ravel()[inside]]
    assert np.median(np.abs(ref - got)) < 12
    outside = ~inside & ((pts[:, 0] < -3) | (pts[:, 1] < -3) | (pts[:, 0] > w + 2) | (pts[:, 1] > h + 2))
    if outside.any():  # black beyond the image, as the originals' crops
        assert np.median(stored[ys.ravel()[outside], xs.ravel()[outside]]) < 20


# ------------------------------------------------------------------------------------- 3DPW

def _write_3dpw(root, t=7):
    rng = np.random.default_rng(0)
    h, w, f = 240, 320, 300.0
    k = np.array([[f, 0, 160.0], [0, f, 120.0], [0, 0, 1]])
    cams = np.tile(np.eye(4), (t, 1, 1))
    for i in range(t):
        a = 0.05 * i
        cams[i, :3, :3] = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        cams[i, :3, 3] = [0.1 * i, 0.0, 4.0]
    people = []
    for p in range(2):
        joints = rng.normal(scale=0.4, size=(24, 3)) + [0.6 * (p - 0.5), 0, 0]
        world = np.repeat(joints[None], t, axis=0) + rng.normal(scale=0.01, size=(t, 24, 3))
        cam_j = np.einsum("tij,tkj->tki", cams[:, :3, :3], world) + cams[:, None, :3, 3]
        uv = cam_j[..., :2] / cam_j[..., 2:] * f + k[:2, 2]
        poses2d = np.concatenate([uv[:, :18], np.ones((t, 18, 1))], axis=2).transpose(0, 2, 1)
        if p == 1:
            poses2d[0, 2] = 0.0  # not detected in the first frame
        people.append(dict(poses=rng.normal(scale=0.2, size=(t, 72)), betas=rng.normal(size=300),
                           joints=world.reshape(t, 72), poses2d=poses2d, trans=rng.normal(size=(t, 3)), uv=uv))
    valid = [np.ones(t, bool), np.ones(t, bool)]
    valid[0][min(3, t - 1)] = False
    data = {"sequence": "courtyard_stand_00", "poses": [p["poses"] for p in people],
            "betas": [p["betas"] for p in people], "genders": ["m", "f"], "poses2d": [p["poses2d"] for p in people],
            "jointPositions": [p["joints"] for p in people], "cam_poses": cams, "cam_intrinsics": k,
            "campose_valid": valid, "trans": [p["trans"] for p in people], "img_frame_ids": np.arange(t)}
    (root / "sequenceFiles" / "test").mkdir(parents=True)
    with open(root / "sequenceFiles" / "test" / "courtyard_stand_00.pkl", "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    images = [_smooth_image(root / "imageFiles" / "courtyard_stand_00" / f"image_{i:05d}.jpg", h, w, i)
              for i in range(t)]
    return data, people, images


def test_3dpw(tmp_path, body):
    root = tmp_path / "3DPW"
    data, people, images = _write_3dpw(root)
    manifest = threedpw.convert(root, "test", tmp_path / "out", body, progress=False)
    recs = _decode(manifest.parent)
    # person 0: 7 frames minus the invalid camera pose; person 1: from frame 1 (first detection)
    assert len(recs) == 6 + 6
    assert [r["image_name"] for r in recs[:3]] == [f"imageFiles/courtyard_stand_00/image_{i:05d}.jpg" for i in (0, 1, 2)]
    frames = [0, 1, 2, 4, 5, 6] + [1, 2, 3, 4, 5, 6]
    for rec, person, t in zip(recs, [0] * 6 + [1] * 6, frames):
        pp = people[person]
        assert rec["keypoints_kind"] == "smpl24" and rec["gender"] == ["male", "female"][person]
        np.testing.assert_allclose(_to_original(rec, rec["keypoints_2d"][:, :2]), pp["uv"][t], atol=2e-3)
        np.testing.assert_array_equal(rec["keypoints_2d"][:, 2], 1.0)
        k3 = rec["keypoints_3d"].astype(np.float64)
        np.testing.assert_allclose(k3[:, :2] / k3[:, 2:3] * 300.0 + [160.0, 120.0], pp["uv"][t], atol=1e-3)
        want = data["cam_poses"][t, :3, :3] @ rotations_np.axis_angle_to_matrix(pp["poses"][t, :3])
        np.testing.assert_allclose(rotations_np.axis_angle_to_matrix(rec["global_orient"]), want, atol=1e-5)
        mesh = body.canonical("male", pp["betas"][None, :10], pp["poses"][t:t + 1, 3:66])
        np.testing.assert_allclose(rec["vertices"], mesh["vertices"][0], atol=1e-5)
        np.testing.assert_allclose(rec["vertices_flipped"], mesh["vertices_flipped"][0], atol=1e-5)
        np.testing.assert_allclose(rec["body_pose"], pp["poses"][t, 3:66], atol=1e-6)
        _check_region(rec, images[t])
    # The box is the keypoint extent box (nearly constant keypoints: smoothing keeps it), side 200 / (150 / extent).
    vis = people[0]["uv"][0, :18]
    extent = np.linalg.norm(vis.max(0) - vis.min(0))
    box = 200 * recs[0]["scale"] * recs[0]["stored_to_original"][0, 0]
    assert abs(box / (200 * extent / 150) - 1) < 0.05
    # The camera puts the posed mesh where the 3DPW camera sees it.
    rec = recs[0]
    cam = rec["camera_translation"]
    assert 3.0 < cam[2] < 5.0


def test_3dpw_errors_name_the_file(tmp_path, body):
    root = tmp_path / "3DPW"
    _write_3dpw(root, t=7)
    (root / "imageFiles" / "courtyard_stand_00" / "image_00001.jpg").unlink()
    with pytest.raises(common.ConversionInputError, match="missing image .*image_00001.jpg"):
        threedpw.convert(root, "test", tmp_path / "o1", body, progress=False)
    assert not (tmp_path / "o1" / "manifest.json").exists()
    pkl = root / "sequenceFiles" / "test" / "courtyard_stand_00.pkl"
    pkl.write_bytes(pkl.read_bytes()[:200])
    with pytest.raises(common.ConversionInputError, match="courtyard_stand_00.pkl"):
        threedpw.convert(root, "test", tmp_path / "o2", body, progress=False)
    with pytest.raises(common.ConversionInputError, match="sequenceFiles/validation"):
        threedpw.convert(root, "validation", tmp_path / "o3", body, progress=False)


def test_pickles_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"poses": Evil()}))
    with pytest.raises(common.ConversionInputError, match="refusing to load builtins.print"):
        common.safe_pickle_load(path)


def test_smooth_boxes_interpolate_and_smooth():
    t = 30
    kp = np.zeros((t, 5, 3))
    for i in range(t):
        kp[i, :, :2] = np.array([[0, 0], [10, 0], [0, 40], [10, 40], [5, 20]]) + [100, 50]
        kp[i, :, 2] = 1.0
    kp[:3, :, 2] = 0.0  # not seen at first
    kp[10:13, :, 2] = 0.1  # below the visibility threshold: interpolated
    kp[10:13, :, :2] += 500  # (their positions are ignored)
    params, start, end = threedpw.smooth_boxes(kp)
    assert (start, end) == (3, 30)
    assert np.all(params[:3] == 0)
    extent = np.hypot(10, 40)
    np.testing.assert_allclose(params[3:, 2], 150 / extent, rtol=1e-9)
    np.testing.assert_allclose(params[3:, :2], np.tile([105, 70], (27, 1)), atol=1e-9)


# ------------------------------------------------------------------------------------- EMDB

def _write_emdb(root, name, flag, n=6, seed=0):
    rng = np.random.default_rng(seed)
    seq = root / "P0" / name
    h, w = 200, 150
    kp = rng.uniform([30, 40], [120, 160], size=(n, 24, 2))
    boxes = np.concatenate([kp.min(1) - 5, kp.max(1) + 5], axis=1)
    ext = np.tile(np.eye(4), (n, 1, 1))
    ext[:, :3, 3] = [0, 0, 3.0]
    ext[:, :3, :3] = rotations_np.axis_angle_to_matrix(np.array([0.0, 0.3, 0.0]))
    data = {"emdb1": flag == "emdb1", "emdb2": flag == "emdb2", "gender": "female", "n_frames": n,
            "good_frames_mask": np.array([True, True, False, True, True, True][:n]),
            "smpl": {"betas": rng.normal(size=10), "poses_root": rng.normal(scale=0.5, size=(n, 3)),
                     "poses_body": rng.normal(scale=0.2, size=(n, 63)), "trans": rng.normal(size=(n, 3))},
            "camera": {"extrinsics": ext, "intrinsics": np.array([[500.0, 0, 75], [0, 500.0, 100], [0, 0, 1]])},
            "kp2d": kp, "bboxes": {"bboxes": boxes, "invalid_idxs": np.array([4])}}
    seq.mkdir(parents=True)
    with open(seq / f"P0_{name}_data.pkl", "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    images = [_smooth_image(seq / "images" / f"{i:05d}.jpg", h, w, seed + i) for i in range(n)]
    return data, images


def test_emdb(tmp_path, body):
    root = tmp_path / "EMDB"
    data, images = _write_emdb(root, "09_outdoor_walk", "emdb1")
    _write_emdb(root, "10_other", "emdb2", seed=9)
    recs = _decode(emdb.convert(root, tmp_path / "out", body, progress=False, max_box=40).parent)
    frames = [0, 1, 3, 5]  # good frames without an invalid box
    assert [r["image_name"] for r in recs] == [f"P0/09_outdoor_walk/images/{t:05d}.jpg" for t in frames]
    for rec, t in zip(recs, frames):
        np.testing.assert_allclose(_to_original(rec, rec["keypoints_2d"][:, :2]), data["kp2d"][t], atol=2e-3)
        x0, y0, x1, y1 = data["bboxes"]["bboxes"][t]
        side = 200 * rec["scale"] * rec["stored_to_original"][0, 0]
        np.testing.assert_allclose(side, 1.2 * max(x1 - x0, y1 - y0), rtol=1e-5)
        np.testing.assert_allclose(_to_original(rec, rec["center"][None])[0], [(x0 + x1) / 2, (y0 + y1) / 2], atol=1e-3)
        want = data["camera"]["extrinsics"][t, :3, :3] @ rotations_np.axis_angle_to_matrix(data["smpl"]["poses_root"][t])
        np.testing.assert_allclose(rotations_np.axis_angle_to_matrix(rec["global_orient"]), want, atol=1e-5)
        assert rec["gender"] == "female" and rec["dataset"] == "emdb"
        _check_region(rec, images[t])
    assert len(_decode(emdb.convert(root, tmp_path / "out2", body, subset="emdb2", progress=False).parent)) == 4


def test_emdb_missing_key(tmp_path, body):
    root = tmp_path / "EMDB"
    data, _ = _write_emdb(root, "01_seq", "emdb1", n=3)
    pkl = next(root.glob("**/*.pkl"))
    del data["good_frames_mask"]
    pkl.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(common.ConversionInputError, match=r"01_seq_data.pkl lacks key\(s\) \['good_frames_mask'\]"):
        emdb.convert(root, tmp_path / "out", body, progress=False)


# ------------------------------------------------------------------------------ BEDLAM / CLIFF

def _write_cliff(folder, n=5, alternative_keys=False):
    rng = np.random.default_rng(3)
    names, images = [], []
    for i in range(n):
        name = f"train2014/COCO_train2014_{i:012d}.jpg"
        names.append(name)
        images.append(_smooth_image(folder / name, 180 + 10 * i, 220, i))
    part = np.concatenate([rng.uniform(40, 160, size=(n, 24, 2)), rng.integers(0, 2, size=(n, 24, 1))], axis=2)
    pose = rng.normal(scale=0.3, size=(n, 72))
    arrays = {"imgname": np.array(names), "center": rng.uniform(80, 120, size=(n, 2)),
              "scale": rng.uniform(0.5, 0.9, size=n)}
    if alternative_keys:
        arrays.update(root_orient=pose[:, :3], pose_body=pose[:, 3:66], betas=rng.normal(size=(n, 10)), j2d=part,
                      gender=np.array(["m", "f", "m", "f", "m"][:n]))
    else:
        arrays.update(pose=pose, shape=rng.normal(size=(n, 10)), part=part)
    np.savez(folder / f"{folder.name}.npz", **arrays)
    return arrays, images


@pytest.mark.parametrize("alternative_keys", [False, True])
def test_cliff_npz(tmp_path, body, alternative_keys):
    folder = tmp_path / "datasets" / "coco"
    arrays, images = _write_cliff(folder, alternative_keys=alternative_keys)
    recs = _decode(cliff_npz.convert(folder / "coco.npz", tmp_path / "out", body, chunk=3, progress=False).parent)
    assert len(recs) == 5
    part = arrays["j2d" if alternative_keys else "part"]
    pose = (np.concatenate([arrays["root_orient"], arrays["pose_body"]], 1) if alternative_keys else arrays["pose"])
    betas = arrays["betas" if alternative_keys else "shape"]
    for i, rec in enumerate(recs):
        assert rec["keypoints_kind"] == "h36m17" and rec["dataset"] == "coco"
        kp = rec["keypoints_2d"]
        sel = part[i, list(common.J24_TO_J17)]
        np.testing.assert_allclose(_to_original(rec, kp[:17, :2]), sel[:, :2], atol=2e-3)
        np.testing.assert_array_equal(kp[:17, 2], sel[:, 2])
        np.testing.assert_array_equal(kp[17:, 2], 0.0)
        np.testing.assert_allclose(rec["global_orient"], pose[i, :3], atol=1e-6)
        mesh = body.canonical("neutral", betas[i:i + 1], pose[i:i + 1, 3:66])
        np.testing.assert_allclose(rec["vertices"], mesh["vertices"][0], atol=1e-5)
        assert rec["gender"] == (["male", "female"][i % 2] if alternative_keys else "neutral")
        _check_region(rec, images[i])
        np.testing.assert_allclose(200 * rec["scale"] * rec["stored_to_original"][0, 0], 200 * arrays["scale"][i],
                                   rtol=1e-5)


def test_cliff_npz_command_line(tmp_path, capsys):
    """``python -m data_prep.cliff_npz`` with the shared output options (--max-box, --margin...)."""
    from hmr_jax.testing.smpl_files import write_standin_model

    write_standin_model(tmp_path / "bm" / "smplh" / "neutral" / "model.npz", kind="smplh")
    folder = tmp_path / "datasets" / "coco"
    _write_cliff(folder, n=3)
    out = tmp_path / "out"
    args = ["--npz", str(folder / "coco.npz"), "--body-models", str(tmp_path / "bm"), "--out", str(out),
            "--records-per-shard", "2", "--max-box", "64"]
    assert cliff_npz.main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_records"] == 3 and len(manifest["shards"]) == 2
    recs = _decode(out)
    assert max(max(np.asarray(Image.open(io.BytesIO(r["image_jpeg"]))).shape[:2]) for r in recs) <= 64 * 1.5 + 2
    capsys.readouterr()
    assert cliff_npz.main(args) == 2  # one error line, no traceback
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "already holds" in err[0]
    assert cliff_npz.main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize("argv, words", [
    (["--split", "val"], "flag --split=val: value should be one of <train|validation|test>"),
    (["--spilt", "test"], "Unknown command line flag 'spilt'"),
    (["--max-box", "big"], "flag --max-box=big: invalid literal for int()"),
    (["sequenceFiles"], "unexpected argument sequenceFiles"),
    (["--split"], "Missing value for flag --split"),
])
def test_converter_flag_errors_are_one_line(tmp_path, capsys, argv, words):
    """A bad enum value, an unknown flag, a bad number or a stray argument: one ``error:`` line naming it,
    exit status 2, nothing written."""
    out = tmp_path / "out"
    rc = threedpw.main(["--root", str(tmp_path), "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (out / "manifest.json").exists()


def test_converter_flags_and_help(capsys):
    """--help lists every flag (the shared output flags too) and returns 0; the documented defaults."""
    for module, program, flags in [
            (threedpw, "threedpw", ["--split: <train|validation|test>", "--root"]),
            (emdb, "emdb", ["--subset: <emdb1|emdb2>", "--root"]),
            (cliff_npz, "cliff_npz", ["--npz", "--images", "--dataset"]),
            (bedlam_animations, "bedlam_animations", ["--gender-policy: <original|file>", "--stride"])]:
        assert module.main(["--help"]) == 0
        text = capsys.readouterr().out
        for flag in flags + ["--body-models", "--out", "--records-per-shard", "--[no]overwrite"]:
            assert flag in text, (program, flag)
        if module is not bedlam_animations:
            assert "--margin" in text and "--max-box" in text, program
    a = cli.parse_command(["--root", "r", "--out", "o"], threedpw._define, "threedpw")
    assert (a.split, a.body_models, a.records_per_shard, a.margin, a.max_box, a.overwrite) == (
        "test", "body_models", 1000, 1.5, 448, False)
    assert common.output_options(a) == dict(records_per_shard=1000, overwrite=False, margin=1.5, max_box=448)
    a = cli.parse_command(["--root=r", "--out=o", "--gender-policy", "file", "--overwrite"],
                          bedlam_animations._define, "bedlam_animations")
    assert (a.gender_policy, a.stride, a.records_per_shard, a.overwrite) == ("file", 1, 2000, True)
    with pytest.raises(ValueError, match="Flag --out must have a value"):
        cli.parse_command(["--npz", "x.npz"], cliff_npz._define, "cliff_npz")


def test_cliff_npz_errors(tmp_path, body):
    folder = tmp_path / "datasets" / "coco"
    _write_cliff(folder, n=3)
    (folder / "train2014" / "COCO_train2014_000000000001.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(common.ConversionInputError, match="COCO_train2014_000000000001.jpg"):
        cliff_npz.convert(folder / "coco.npz", tmp_path / "o1", body, progress=False)
    raw = (folder / "coco.npz").read_bytes()
    (folder / "coco.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(common.ConversionInputError, match="coco.npz"):
        cliff_npz.convert(folder / "coco.npz", tmp_path / "o2", body, progress=False)
    np.savez(folder / "bad.npz", imgname=np.array(["a.jpg"]), center=np.zeros((1, 2)), scale=np.ones(1))
    with pytest.raises(common.ConversionInputError, match=r"bad.npz lacks key\(s\) \['root_orient', 'pose_body'\]"):
        cliff_npz.convert(folder / "bad.npz", tmp_path / "o3", body, progress=False)


# ----------------------------------------------------------------------- BEDLAM animations

def test_bedlam_animations(tmp_path, body):
    root = tmp_path / "bedlam_animations"
    rng = np.random.default_rng(4)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "shape").mkdir()
    seqs = {"a/seq1.npz": (7, "m"), "b/seq2.npz": (5, "neutral")}
    for name, (t, g) in seqs.items():
        np.savez(root / name, poses=rng.normal(scale=0.3, size=(t, 156)), betas=rng.normal(size=16),
                 gender=np.array(g), trans=rng.normal(size=(t, 3)))
    np.savez(root / "shape" / "s.npz", poses=np.zeros((2, 156)), betas=np.zeros(16), gender=np.array("m"))
    manifest = bedlam_animations.convert(root, tmp_path / "out", body, stride=2, progress=False)
    recs = _decode(manifest.parent)
    assert [r["name"] for r in recs] == ["a/seq1.npz:0", "a/seq1.npz:2", "a/seq1.npz:4", "a/seq1.npz:6",
                                         "b/seq2.npz:0", "b/seq2.npz:2", "b/seq2.npz:4"]
    # The original loader: exactly "m" -> male model, anything else (here "neutral") -> female.
    assert [r["gender"] for r in recs] == ["male"] * 4 + ["female"] * 3
    data = np.load(root / "a" / "seq1.npz")
    mesh = body.canonical("male", data["betas"][None, :10], data["poses"][2:3, 3:66])
    np.testing.assert_allclose(recs[1]["vertices"], mesh["vertices"][0], atol=1e-5)
    np.testing.assert_allclose(recs[1]["vertices"].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(recs[1]["global_orient"], data["poses"][2, :3], atol=1e-6)
    file_policy = _decode(bedlam_animations.convert(root, tmp_path / "o2", body, stride=3, gender_policy="file",
                                                    progress=False).parent)
    assert [r["gender"] for r in file_policy] == ["male"] * 3 + ["neutral"] * 2
    batch = next(iter(mesh_pipeline(str(manifest.parent), batch_size=4, seed=0, shard_index=0, shard_count=1)))
    assert batch["vertices"].shape == (4, 6890, 3)


def test_flip_body_pose():
    pose = np.zeros(63)
    pose[0:3] = [0.1, 0.2, 0.3]  # left hip (joint 1)
    flipped = common.flip_body_pose(pose)
    np.testing.assert_allclose(flipped[3:6], [0.1, -0.2, -0.3])  # right hip
    np.testing.assert_allclose(flipped[0:3], 0.0)
    p = np.random.default_rng(0).normal(size=(4, 63))
    np.testing.assert_allclose(common.flip_body_pose(common.flip_body_pose(p)), p)


def test_converted_sets_mix_in_one_pipeline(tmp_path, body):
    _write_cliff(tmp_path / "coco")
    cliff_npz.convert(tmp_path / "coco" / "coco.npz", tmp_path / "c", body, progress=False)
    _write_emdb(tmp_path / "EMDB", "09_walk", "emdb1")
    emdb.convert(tmp_path / "EMDB", tmp_path / "e", body, progress=False)
    it = iter(image_pipeline([Source(str(tmp_path / "c"), 0.5), Source(str(tmp_path / "e"), 0.5)], batch_size=4,
                             seed=0, shard_index=0, shard_count=1))
    batch = next(it)
    assert batch["vertices"].shape == (4, 6890, 3) and batch["keypoints_2d"].shape == (4, 24, 3)
    np.testing.assert_array_equal(batch["is_3dpw"], batch["dataset_index"] == 1)


def test_bedlam_animations_errors(tmp_path, body):
    root = tmp_path / "anim"
    root.mkdir()
    np.savez(root / "seq.npz", betas=np.zeros(16), gender=np.array("m"))
    with pytest.raises(common.ConversionInputError, match=r"seq.npz lacks key\(s\) \['poses'\]"):
        bedlam_animations.convert(root, tmp_path / "o1", body, progress=False)
    np.savez(root / "seq.npz", poses=np.zeros((3, 156)), betas=np.zeros(16), gender=np.array("m"))
    raw = (root / "seq.npz").read_bytes()
    (root / "seq.npz").write_bytes(raw[:100])
    with pytest.raises(common.ConversionInputError, match="seq.npz"):
        bedlam_animations.convert(root, tmp_path / "o2", body, progress=False)
    assert not (tmp_path / "o2" / "manifest.json").exists()
