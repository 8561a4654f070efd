"""The synthetic default dataset: record format, determinism, geometry, topology, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
import io

from data_prep import synthetic
from hmr_jax.data import records, shards
from hmr_jax.geometry import rotations_np
from hmr_jax.testing.box_person import StandInBody
from hmr_jax.data.pipeline import image_pipeline
from hmr_jax.render import PerspectiveCamera


@pytest.fixture(scope="module")
def standin():
    return StandInBody()


@pytest.fixture(scope="module")
def standin_set(tmp_path_factory, standin):
    out = tmp_path_factory.mktemp("syn") / "set"
    synthetic.generate(out, 6, seed=3, size=96, body=standin, batch_size=4, records_per_shard=4,
                       progress=False, levels=["1", "2"])
    return out


def _records(path):
    source = shards.open_dataset(path, kind="image", verify_checksums=True).data_source()
    return [records.decode_record(source[i]) for i in range(len(source))]


def test_records_follow_the_format_and_the_camera(standin_set, standin):
    recs = _records(standin_set)
    assert len(recs) == 6
    for r in recs:
        records.validate_record(r, "image")
        assert r["keypoints_kind"] == "coco17" and r["dataset"] == "synthetic"
        image = np.asarray(Image.open(io.BytesIO(r["image_jpeg"])))
        assert image.shape == (96, 96, 3)
        rot = rotations_np.axis_angle_to_matrix(r["global_orient"])
        cam = PerspectiveCamera(tuple(r["camera_focal"]), tuple(r["camera_principal_point"]),
                                tuple(r["camera_translation"]), rotation=rot)
        # 2D keypoints are the projection of the 3D joints; 3D keypoints are their camera-frame position.
        np.testing.assert_allclose(cam.project(r["joints_3d"]), r["keypoints_2d"][:, :2], atol=1e-3)
        np.testing.assert_allclose(cam.to_camera_frame(r["joints_3d"]), r["keypoints_3d"][:, :3], atol=1e-5)
        # The box holds the projected mesh (1.2 x its larger side).
        uv = cam.project(r["vertices"])
        np.testing.assert_allclose((uv.min(0) + uv.max(0)) / 2, r["center"], atol=1e-3)
        np.testing.assert_allclose(200 * r["scale"], 1.2 * np.ptp(uv, axis=0).max(), rtol=1e-5)
        # Canonical mesh: centred, upright (y up): the head (COCO nose) is above the ankles.
        np.testing.assert_allclose(r["vertices"].mean(0), 0.0, atol=1e-5)
        assert r["joints_3d"][0, 1] > r["joints_3d"][15:17, 1].max() + 0.5
        # The mirrored mesh is the x-mirror, vertex for vertex.
        np.testing.assert_allclose(r["vertices_flipped"], r["vertices"][standin.mirror] * [-1, 1, 1], atol=1e-6)
        # Confidence: 1 inside the image, 0 outside.
        assert np.all((r["keypoints_2d"][:, 2] == 0) | (r["keypoints_2d"][:, 2] == 1))


def test_generation_is_deterministic_for_a_seed(tmp_path, standin_set, standin):
    again = tmp_path / "again"
    synthetic.generate(again, 6, seed=3, size=96, body=standin, batch_size=2, records_per_shard=4,
                       progress=False, levels=["1", "2"])
    a, b = _records(standin_set), _records(again)
    for ra, rb in zip(a, b):
        assert ra["image_jpeg"] == rb["image_jpeg"]
        np.testing.assert_array_equal(ra["vertices"], rb["vertices"])
    other = tmp_path / "other"
    synthetic.generate(other, 2, seed=4, size=96, body=standin, progress=False, levels=["1"])
    assert _records(other)[0]["image_jpeg"] != a[0]["image_jpeg"]


def test_topology_and_manifest(standin_set, standin):
    manifest = json.loads((standin_set / "manifest.json").read_text())
    meta = manifest["metadata"]
    assert meta["body_model"] == "standin" and meta["seed"] == 3
    assert manifest["sizes"]["num_vertices"] == standin.num_vertices
    topo = standin_set / "topology"
    np.testing.assert_array_equal(np.load(topo / "faces.npy"), standin.faces)
    hierarchy = json.loads((topo / "hierarchy.json").read_text())
    assert (topo / "_pool0.npy").exists() and (topo / "_unpool1.npy").exists()
    assert meta["topology"]["points_per_level"][0] == standin.num_vertices
    assert hierarchy  # written by hmr_jax.mesh.build


def test_pipeline_reads_the_synthetic_set(standin_set, standin):
    batch = next(iter(image_pipeline(str(standin_set), batch_size=3, seed=0, shard_index=0, shard_count=1)))
    assert batch["image"].shape == (3, 224, 224, 3)
    assert batch["keypoints_2d"].shape == (3, 17, 3)
    assert batch["vertices"].shape == (3, standin.num_vertices, 3) and batch["joints_3d"].shape == (3, 17, 3)
    assert not batch["is_3dpw"].any()


def test_sampled_poses_respect_the_joint_limits():
    labels = ["root"] + [f"{b}.{s}" for b in ("upperleg01", "lowerleg01", "upperarm01") for s in "LR"] + ["spine03"]
    rng = np.random.default_rng(0)
    for _ in range(200):
        angles = synthetic.sample_bone_angles(rng, labels)
        assert set(angles) == set(range(1, len(labels)))
        for i, a in angles.items():
            base, _, side = labels[i].partition(".")
            lo, hi = np.array(synthetic.JOINT_LIMITS[base], float).T
            if side == "R":
                lo[1:], hi[1:] = -hi[1:], -lo[1:]
            assert np.all(a >= lo - 1e-9) and np.all(a <= hi + 1e-9), (labels[i], a)
    rot = synthetic.sample_global_orient(rng)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert rot[1, 1] < -0.9  # upright in a y-down camera


def _heading_deg(rot):
    """Angle between the person's forward direction (canonical +z) and facing the camera, degrees."""
    fwd = rot @ np.array([0.0, 0.0, 1.0])
    return np.degrees(np.arctan2(abs(fwd[0]), -fwd[2]))


def test_heading_range():
    rng = np.random.default_rng(3)
    narrow = [_heading_deg(synthetic.sample_global_orient(rng, 30.0)) for _ in range(300)]
    wide = [_heading_deg(synthetic.sample_global_orient(rng)) for _ in range(300)]
    assert max(narrow) < 30.0 + 15.0 and max(narrow) > 20.0  # tilt / roll add at most ~12 degrees
    assert max(wide) > 150.0 and np.mean(np.array(wide) > 90.0) > 0.3
    with pytest.raises(ValueError, match="max-heading"):
        synthetic.generate("unused", 1, body=object(), max_heading_deg=200.0)


def test_cli_with_the_standin_body(tmp_path, capsys):
    out = tmp_path / "cli"
    sheet = tmp_path / "sheet.png"
    assert synthetic.main(["--out", str(out), "--num", "3", "--standin-body", "--image-size", "64",
                           "--levels", "1,2", "--contact-sheet", str(sheet), "--quiet"]) == 0
    assert len(shards.open_dataset(out)) == 3
    topology = shards.open_dataset(out).metadata["topology"]
    assert topology["levels"] == ["1", "2"] and len(topology["points_per_level"]) == 2   # --levels=A,B: a list
    assert Image.open(sheet).size[0] > 64
    capsys.readouterr()
    assert synthetic.main(["--out", str(out), "--num", "1", "--standin-body", "--quiet"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "already holds" in err[0]  # one line, no traceback
    assert len(shards.open_dataset(out)) == 3  # the existing dataset untouched
    for argv, words in [(["--topology", "smpl"], "flag --topology=smpl: value should be one of"),
                        (["--levels", "1", "2"], "unexpected argument 2"),   # a list is one comma-separated value
                        (["--num-examples", "2"], "Unknown command line flag 'num-examples'"),
                        ([], "Flag --num must have a value other than None")]:
        rc = synthetic.main(["--out", str(tmp_path / "bad"), "--standin-body", "--quiet"]
                            + (["--num", "1"] if argv else []) + argv)
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "bad").exists()
    assert synthetic.main(["--help"]) == 0 and "--[no]standin-body" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("topology, faces", [("anny", 27420), ("notoes_collapse10pc", 2454)])
def test_anny_examples(tmp_path, topology, faces):
    pytest.importorskip("anny", reason="the synthetic extra (anny==0.6.2) is not installed")
    body = synthetic.AnnyBody(topology)
    assert body.num_vertices == synthetic.TOPOLOGIES[topology] and body.faces.shape == (faces, 3)
    np.testing.assert_array_equal(body.mirror[body.mirror], np.arange(body.num_vertices))
    synthetic.generate(tmp_path / "anny", 2, seed=0, body=body, progress=False)
    for r in _records(tmp_path / "anny"):
        height = np.ptp(r["vertices"][:, 1])
        assert 1.1 < height < 2.2
        assert r["keypoints_2d"][:, 2].sum() >= 15


def test_inspect_sheet(standin_set, tmp_path, capsys):
    from data_prep import inspect

    pts = np.random.default_rng(0).normal(size=(20, 3))
    kp = np.concatenate([0.8 * (pts[:, :2] + [0.1, -0.3]), np.ones((20, 1))], axis=1)
    np.testing.assert_allclose(inspect.fit_weak_perspective(pts, kp), [0.8, 0.1, -0.3], atol=1e-9)
    out = tmp_path / "sheet.png"
    assert inspect.main([str(standin_set), "--out", str(out), "--num", "3", "--augment"]) == 0
    assert '"records": 6' in capsys.readouterr().out
    w, h = Image.open(out).size
    assert w == 4 * (224 + 2) + 2 and h == 2 * (224 + 2) + 2
    other = tmp_path / "other.png"
    for argv, words in [([], "give one image dataset folder, got 0"),
                        ([str(standin_set), "more"], "give one image dataset folder, got 2"),
                        ([str(standin_set), "--backbone", "vgg"], "flag --backbone=vgg: value should be one of")]:
        rc = inspect.main(argv + ["--out", str(other)])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not other.exists()
