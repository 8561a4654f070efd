"""``sample.py --video`` and hmr_jax.video.pipeline: a rendered 24-frame clip of a person walking
across the frame (tests/helpers/inference.walking_person) with injected per-frame boxes.

* end to end on the fixture-converted MEGA (6890-vertex meshes): one track with one id over all
  frames, its .npz, an overlay video of 24 frames of the input size drawn where the meshes project;
* on a stand-in model (known meshes plus noise, no JAX): persons of neighbouring frames share
  fixed-size batches, detection gaps keep the id (and a short track life ends it), ``--smooth``
  lowers the frame-to-frame jitter, ``--num-samples`` gives the per-frame spread, ``--every`` /
  ``--max-frames``, the boxes file by frame index, a bounded number of frames in memory;
* every bad input is one ``error:`` line.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import inference as H
import sample
from hmr_jax.detection import DetectionError
from hmr_jax.mesh.io import read_mesh
from hmr_jax.render import PerspectiveCamera, rasterize
from hmr_jax.video import VideoReader, write_video
from hmr_jax.video.pipeline import FrameBoxesDetector, TRACK_COLORS, track_color

N_FRAMES, HH, WW, FPS = 24, 128, 192, 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    frames, boxes = H.walking_person(N_FRAMES, HH, WW)
    path = write_video(root / "walk.mp4", frames, fps=FPS, crf=0)
    return {"root": root, "video": str(path), "frames": frames, "boxes": boxes}


def _boxes_json(path, boxes, skip=(), also=None):
    """The per-frame boxes file; ``also``: a second (static) box in every frame."""
    return H.json_boxes(path, {str(i): [list(map(float, b))] + ([list(also)] if also else [])
                               for i, b in enumerate(boxes) if i not in skip})


def _read(path):
    with VideoReader(path) as r:
        return r.info, [f.image for f in r.frames()]


# ------------------------------------------------------------------------------------------
# end to end on the fixture model


@pytest.fixture(scope="module")
def fixture_model(parity_dir, reference_dir, tmp_path_factory):
    return H.convert_fixture_mega(parity_dir, reference_dir, tmp_path_factory.mktemp("video_model"))


def test_video_end_to_end_one_track(fixture_model, clip, capsys):
    m = fixture_model
    out = clip["root"] / "out"
    boxes = _boxes_json(clip["root"] / "boxes.json", clip["boxes"])
    rc = sample.main(["--checkpoint", m["ckpt"], "--tokenizer", m["tok"], "--faces", m["faces"],
                      "--connections", m["conns"], "--video", clip["video"], "--detector", "boxes",
                      "--bboxes", boxes, "--batch-size", "8", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "frames" in err   # the progress bar
    results = json.loads((out / "results.json").read_text())
    assert results["frames_read"] == N_FRAMES and results["frames_with_people"] == N_FRAMES
    assert results["fps"] == pytest.approx(FPS) and results["output_fps"] == pytest.approx(FPS)
    assert (results["width"], results["height"], results["detector"], results["errors"]) == (WW, HH, "boxes", [])
    (track,) = results["tracks"]
    assert (track["id"], track["num_frames"], track["first_frame"], track["last_frame"]) == (0, N_FRAMES, 0, 23)
    with np.load(out / track["file"]) as z:
        npz = {k: z[k] for k in z.files}
    assert npz["vertices"].shape == (N_FRAMES, 6890, 3) and npz["vertices"].dtype == np.float32
    assert npz["frames"].tolist() == list(range(N_FRAMES))
    assert npz["camera_translation"].shape == (N_FRAMES, 3) and npz["tokens"].shape == (N_FRAMES, 1, 54)
    np.testing.assert_allclose(npz["boxes"], clip["boxes"], atol=1e-3)
    np.testing.assert_allclose(npz["times"], np.arange(N_FRAMES) / FPS, atol=1e-6)
    # the overlay video: 24 frames of the input size, the mesh drawn where it projects
    info, overlay = _read(out / "overlay.mp4")
    assert (len(overlay), info.width, info.height) == (N_FRAMES, WW, HH) and info.fps == pytest.approx(FPS)
    _, faces = read_mesh(m["faces"])
    for t in (0, 11, 23):
        camera = PerspectiveCamera((float(npz["focal_length"][t]),) * 2, tuple(npz["principal_point"].tolist()),
                                   tuple(npz["camera_translation"][t].tolist()))
        covered = rasterize(npz["vertices"][t], faces, camera, HH, WW).mask
        assert covered.sum() > 100, t
        diff = np.abs(overlay[t].astype(int) - clip["frames"][t].astype(int)).max(-1)
        x1, y1, x2, y2 = clip["boxes"][t]
        box_ring = np.zeros((HH, WW), bool)   # the box outline and id label are drawn too
        box_ring[max(int(y1) - 14, 0):int(y2) + 3, max(int(x1) - 2, 0):int(x2) + 3] = True
        box_ring[int(y1) + 3:int(y2) - 2, int(x1) + 3:int(x2) - 2] = False
        inside = covered & ~box_ring
        assert (diff[inside] > 24).mean() > 0.9, t            # the mesh drawn where it projects (H.264 noise ~ few levels)
        assert (diff[~covered & ~box_ring] > 24).mean() < 0.02, t   # and nowhere else


# ------------------------------------------------------------------------------------------
# a stand-in model: known meshes and noise


def _run(clip, tmp_path, predictor, *extra, skip=(), also=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    boxes = _boxes_json(tmp_path / "boxes.json", clip["boxes"], skip, also)
    predictor.detector = FrameBoxesDetector(boxes)
    out = tmp_path / "out"
    rc = sample.main(["--checkpoint", "unused", "--video", clip["video"], "--out", str(out), *extra],
                     predictor=predictor)
    results = json.loads((out / "results.json").read_text())
    tracks = {}
    for t in results["tracks"]:
        with np.load(out / t["file"]) as z:
            tracks[t["id"]] = {k: z[k] for k in z.files}
    return rc, results, tracks, out


def test_batches_across_frames_and_colours(clip, tmp_path, capsys):
    """The walking person and a second, still one (top right): two tracks, 48 persons in twelve
    full batches, each mesh drawn in its track's colour."""
    still = (150.0, 4.0, 186.0, 40.0)
    predictor = H.standin_predictor(batch_size=4)
    rc, results, tracks, out = _run(clip, tmp_path, predictor, also=still)
    assert rc == 0, capsys.readouterr().err
    assert predictor.model.calls == [4] * 12                     # 48 persons of 24 frames: twelve full batches
    assert list(tracks) == [0, 1] and [len(t["frames"]) for t in tracks.values()] == [N_FRAMES, N_FRAMES]
    np.testing.assert_allclose(tracks[1]["boxes"], np.tile(still, (N_FRAMES, 1)))
    assert [t["color"] for t in results["tracks"]] == [[round(c * 255) for c in TRACK_COLORS[k]] for k in (0, 1)]
    _, overlay = _read(out / "overlay.mp4")
    changed = np.abs(overlay[5].astype(int) - clip["frames"][5].astype(int)).max(-1) > 40
    for track_id, (x1, y1, x2, y2) in ((0, clip["boxes"][5]), (1, still)):
        region = np.zeros_like(changed)
        region[int(y1) + 4:int(y2) - 3, int(x1) + 4:int(x2) - 3] = True   # inside the box outline
        colour = overlay[5][changed & region].astype(float).mean(0)
        assert (changed & region).sum() > 30 and np.argmax(colour) == np.argmax(track_color(track_id)), track_id
    assert sorted(p.name for p in out.iterdir()) == [".lock", "overlay.mp4", "results.json", "track_000.npz",
                                                     "track_001.npz"]   # no spool left (.lock: sample.py's writer lock)


def test_detection_gaps_keep_the_id(clip, tmp_path, capsys):
    gap = set(range(8, 13))                                       # 5 frames without a detection
    rc, results, tracks, _ = _run(clip, tmp_path, H.standin_predictor(), skip=gap)
    assert rc == 0, capsys.readouterr().err
    assert list(tracks) == [0]
    assert tracks[0]["frames"].tolist() == [i for i in range(N_FRAMES) if i not in gap]
    assert results["frames_read"] == N_FRAMES and results["frames_with_people"] == N_FRAMES - len(gap)
    # a track life shorter than the gap: the person comes back as a new track
    rc, results, tracks, _ = _run(clip, tmp_path / "short", H.standin_predictor(), "--track-max-age", "3", skip=gap)
    assert rc == 0 and list(tracks) == [0, 1]
    assert tracks[0]["frames"].max() == 7 and tracks[1]["frames"].min() == 13


def _jitter(x):
    """Mean magnitude of the second difference over time (frame-to-frame shake, meters)."""
    return float(np.linalg.norm(np.diff(x, 2, axis=0), axis=-1).mean())


def test_smooth_lowers_the_jitter(clip, tmp_path, capsys):
    rc, raw_results, raw, _ = _run(clip, tmp_path / "raw", H.standin_predictor(noise=0.02, seed=3))
    assert rc == 0, capsys.readouterr().err
    rc, results, smooth, _ = _run(clip, tmp_path / "smooth", H.standin_predictor(noise=0.02, seed=3), "--smooth")
    assert rc == 0, capsys.readouterr().err
    assert raw_results["smooth"] is None and results["smooth"]["method"] == "one_euro"
    v_raw, v_smooth = raw[0]["vertices"], smooth[0]["vertices"]
    assert _jitter(v_smooth) < 0.6 * _jitter(v_raw)                 # 0.49 (12 fps, 2 cm noise)
    np.testing.assert_array_equal(smooth[0]["camera_translation_raw"], raw[0]["camera_translation"])
    assert _jitter(smooth[0]["camera_translation"]) < 0.8 * _jitter(raw[0]["camera_translation"])   # 0.61
    np.testing.assert_array_equal(v_smooth[0], v_raw[0])           # the first sample passes unchanged
    # stronger settings smooth more
    rc, _, stronger, _ = _run(clip, tmp_path / "stronger", H.standin_predictor(noise=0.02, seed=3), "--smooth",
                              "--smooth-vertices", "0.3,5")
    assert rc == 0 and _jitter(stronger[0]["vertices"]) < _jitter(v_smooth)


def test_hypotheses_spread_every_and_max_frames(clip, tmp_path, capsys):
    rc, results, tracks, out = _run(clip, tmp_path, H.standin_predictor(noise=0.01), "--num-samples", "3", "--every", "2",
                                    "--max-frames", "7")
    assert rc == 0, capsys.readouterr().err
    t = tracks[0]
    assert t["frames"].tolist() == [0, 2, 4, 6, 8, 10, 12] and t["tokens"].shape == (7, 3, 4)
    assert t["vertices"].shape == (7, 80, 3)
    assert t["spread_mean_m"].shape == (7,) and (t["spread_mean_m"] > 0.005).all() and (t["spread_mean_m"] < 0.03).all()
    assert (t["spread_max_m"] >= t["spread_mean_m"]).all()
    assert results["mode"] == "stochastic" and results["tracks"][0]["spread"]["mean_vertex_distance_to_mean_m"] > 0
    info, overlay = _read(out / "overlay.mp4")
    assert len(overlay) == 7 and info.fps == pytest.approx(FPS / 2)


def test_frames_in_memory_are_bounded(clip, tmp_path):
    """One person in frame 0, nobody after: predict_iter's max_pending runs the waiting person as a
    partial batch instead of holding every empty frame behind it."""
    predictor = H.standin_predictor(batch_size=4)
    seen = []
    boxes = [[clip["boxes"][0]]] + [[] for _ in range(N_FRAMES - 1)]
    stream = iter(clip["frames"])

    def frames():
        for i, f in enumerate(stream):
            seen.append(i)
            yield f
    got = []
    for record in predictor.predict_iter(frames(), boxes, max_pending=3):
        got.append((record.index, len(seen)))
    assert [i for i, _ in got] == list(range(N_FRAMES))
    assert all(read - index <= 3 for index, read in got)            # at most 3 frames read ahead
    assert predictor.model.calls == [1]


def test_frame_boxes_file():
    det = FrameBoxesDetector({"0": [[1, 2, 30, 40, 0.5], [5, 5, 9, 9, 0.9]], "3": []})
    assert det.detect(None, "0").scores.tolist() == pytest.approx([0.9, 0.5])    # sorted by score
    assert len(det.detect(None, "1")) == 0 and len(det.detect(None, "3")) == 0   # gaps: nobody
    with pytest.raises(DetectionError, match="not a frame index"):
        FrameBoxesDetector({"frame.png": [[1, 2, 3, 4]]})


def test_video_errors_are_one_line(clip, tmp_path, capsys):
    from test_video_io import _empty_avi

    predictor = H.standin_predictor()
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    good = (clip["root"] / "walk.mp4").read_bytes()
    codec = tmp_path / "codec.mp4"
    codec.write_bytes(good.replace(b"avc1", b"qqq1"))
    boxes = _boxes_json(tmp_path / "b.json", clip["boxes"])
    cases = [
        (["--video", str(tmp_path / "missing.mp4")], "no such file"),
        (["--video", str(text)], "not a readable video"),
        (["--video", str(codec)], "cannot be decoded"),
        (["--video", str(_empty_avi(tmp_path / "empty.avi"))], "holds no frames"),
        (["--video", clip["video"], "--every", "0"], "--every must be >= 1"),
        (["--video", clip["video"], "--max-frames", "0"], "--max-frames must be >= 1"),
        (["--video", clip["video"], "--images", "x.png"], "not both"),
        (["--video", clip["video"], "--smooth-vertices", "0,1"], "MIN_CUTOFF > 0"),
        (["--video", clip["video"], "--smooth-vertices", "0.3", "5"],   # two numbers are one flag value: 0.3,5
         "flag --smooth-vertices=0.3: expected MIN_CUTOFF,BETA (2 comma-separated numbers)"),
        (["--video", clip["video"], "x.png"], "not both"),   # a positional path is an image
        (["--video", clip["video"], "--smpl-fit"], "--images only"),
    ]
    for argv, words in cases:
        out = tmp_path / "o"
        rc = sample.main(["--checkpoint", "unused", "--out", str(out), "--bboxes", boxes, *argv], predictor=predictor)
        err = capsys.readouterr().err
        assert rc == 2, argv
        assert words in err and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert not (out / "overlay.mp4").exists()
    # a boxes file keyed by image names is refused with the expected layout
    bad = H.json_boxes(tmp_path / "names.json", {"walk.png": [[1, 2, 3, 4]]})
    args = sample._parse(["--checkpoint", "unused", "--video", clip["video"], "--bboxes", bad, "--out", "o"])
    with pytest.raises(sample.SampleError, match="frame index"):
        sample.make_detector(args)


def test_damaged_frame_keeps_the_frames_before(clip, tmp_path, capsys, monkeypatch):
    """A frame that fails to decode mid-way (the reader raises VideoError after 5 frames): the 5
    frames before it are written, the error is one line, the exit status 1."""
    from hmr_jax.video import VideoError, pipeline

    class Damaged(pipeline.VideoReader):
        def frames(self, every=1, max_frames=None):
            inner = super().frames(every, max_frames)

            def gen():
                for k, frame in enumerate(inner):
                    if k == 5:
                        raise VideoError(f"{self.path}: frame 5 cannot be decoded (test); use --max-frames 5")
                    yield frame
            return gen()
    monkeypatch.setattr(pipeline, "VideoReader", Damaged)
    rc, results, tracks, out = _run(clip, tmp_path, H.standin_predictor())
    err = capsys.readouterr().err
    assert rc == 1 and err.count("error: ") == 1 and "frame 5 cannot be decoded" in err and "Traceback" not in err
    assert results["frames_read"] == 5 and tracks[0]["frames"].tolist() == [0, 1, 2, 3, 4]
    _, overlay = _read(out / "overlay.mp4")
    assert len(overlay) == 5
