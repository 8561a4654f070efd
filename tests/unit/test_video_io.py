"""hmr_jax.video.io: frames in and out through PyAV, frame selection, atomic writes, errors."""
from __future__ import annotations

import av
import numpy as np
import pytest

from hmr_jax.video import VideoError, VideoReader, VideoWriter, read_frames, selected_count, write_video


def clip(n=24, h=48, w=64):
    """n frames: a smooth colour gradient with a bright square moving right."""
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for i in range(n):
        f = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 60)], -1).astype(np.uint8)
        x0 = 2 * i
        f[10:26, x0:x0 + 16] = 240
        frames.append(f)
    return frames


def test_round_trip_count_size_fps_pixels(tmp_path):
    frames = clip()
    path = write_video(tmp_path / "clip.mp4", frames, fps=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]          # no temporary left
    with VideoReader(path) as r:
        info = r.info
        got = list(r.frames())
    assert (info.width, info.height, info.num_frames, info.codec, info.rotation) == (64, 48, 24, "h264", 0)
    assert info.fps == pytest.approx(24.0)
    assert [f.index for f in got] == list(range(24))
    np.testing.assert_allclose([f.time for f in got], np.arange(24) / 24, atol=1e-6)
    diff = np.abs(np.stack([f.image for f in got]).astype(int) - np.stack(frames))
    assert got[0].image.dtype == np.uint8 and got[0].image.shape == (48, 64, 3)
    assert diff.mean() < 3.0 and np.percentile(diff, 99) < 16                # yuv420p, crf 18
    # the moving square is where it was drawn in every frame
    for i, f in enumerate(got):
        assert f.image[18, 2 * i + 8].min() > 200


def test_ntsc_rate_and_every_max_frames(tmp_path):
    path = write_video(tmp_path / "clip.mp4", clip(), fps=30000 / 1001)
    assert [f.index for f in read_frames(path, every=5)] == [0, 5, 10, 15, 20]
    assert [f.index for f in read_frames(path, max_frames=3)] == [0, 1, 2]
    got = list(read_frames(path, every=5, max_frames=2))
    assert [f.index for f in got] == [0, 5]
    assert got[1].time == pytest.approx(5 * 1001 / 30000, abs=1e-6)
    with VideoReader(path) as r:
        assert r.info.fps == pytest.approx(30000 / 1001)
    assert selected_count(24, 5) == 5 and selected_count(24, 5, 2) == 2 and selected_count(None, 1, 7) == 7
    for bad in ({"every": 0}, {"max_frames": 0}, {"every": 1.5}):
        with pytest.raises(ValueError):
            read_frames(path, **bad)


def test_rotated_phone_video_is_turned_upright(tmp_path):
    img = np.zeros((32, 64, 3), np.uint8)
    img[:8, :16] = 255                                                          # top-left marker
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv444p"
        s.set_display_rotation(90)
        for _ in range(2):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with VideoReader(path) as r:
        assert (r.info.width, r.info.height, r.info.rotation) == (32, 64, 90)
        frame = next(r.frames()).image
    assert frame.shape == (64, 32, 3)
    # 90 degrees counter-clockwise: the top-left marker goes to the bottom-left (as ffmpeg shows it)
    assert frame[60, 2].min() > 200 and frame[2, 2].max() < 50


def test_odd_size_and_writer_checks(tmp_path):
    frames = [f[:47, :63] for f in clip(4)]
    path = write_video(tmp_path / "odd.mp4", frames, fps=10)
    with VideoReader(path) as r:
        assert (r.info.width, r.info.height) == (63, 47)
        assert len(list(r.frames())) == 4
    with pytest.raises(ValueError, match="63x47"):
        with VideoWriter(tmp_path / "mix.mp4", fps=10) as w:
            w.write(frames[0])
            w.write(clip(1)[0])
    with pytest.raises(ValueError, match="must end in"):
        VideoWriter(tmp_path / "x.gif", fps=10)


def test_failed_writes_leave_nothing_and_keep_the_old_file(tmp_path):
    path = write_video(tmp_path / "out.mp4", clip(3), fps=10)
    before = path.read_bytes()
    with pytest.raises(KeyError):
        with VideoWriter(path, fps=10) as w:
            w.write(clip(1)[0])
            raise KeyError("stop")
    assert path.read_bytes() == before
    with pytest.raises(VideoError, match="no frames were written"):
        with VideoWriter(tmp_path / "empty.mp4", fps=10):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def _empty_avi(path):
    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    return path


def test_bad_inputs_are_named_with_the_fix(tmp_path):
    with pytest.raises(VideoError, match="no such video file") as e:
        read_frames(tmp_path / "missing.mp4")
    assert "missing.mp4" in str(e.value)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    with pytest.raises(VideoError, match="not a readable video") as e:
        VideoReader(text)
    assert "notes.mp4" in str(e.value) and "libx264" in str(e.value)
    with pytest.raises(VideoError, match="holds no frames"):
        VideoReader(_empty_avi(tmp_path / "empty.avi"))
    good = write_video(tmp_path / "good.mp4", clip(3), fps=10).read_bytes()
    unknown = tmp_path / "unknown_codec.mp4"
    unknown.write_bytes(good.replace(b"avc1", b"qqq1"))                     # a codec tag no decoder knows
    with pytest.raises(VideoError, match="cannot be decoded") as e:
        VideoReader(unknown)
    assert "unknown_codec.mp4" in str(e.value) and "re-encode" in str(e.value)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good[: len(good) // 2])                           # index (moov) lost
    with pytest.raises(VideoError, match="truncated.mp4"):
        VideoReader(truncated)
