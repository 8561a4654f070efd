"""Video building blocks: frames in and out, people linked into tracks, temporal smoothing.

* :mod:`hmr_jax.video.io` -- :class:`VideoReader` / :func:`read_frames` (every K-th frame, at
  most N), :class:`VideoWriter` / :func:`write_video` (atomic ``.mp4``), :class:`VideoError`;
  PyAV, the ``video`` extra, imported only when a video is opened.
* :mod:`hmr_jax.video.tracking` -- :class:`Tracker`: per-frame person boxes -> stable track ids.
* :mod:`hmr_jax.video.smoothing` -- :class:`OneEuroFilter` and :func:`smooth_track` over
  vertices (T, V, 3) and cameras (T, 3).
* :mod:`hmr_jax.video.pipeline` -- :func:`~hmr_jax.video.pipeline.track_video`: a video through
  a :class:`~hmr_jax.inference.Predictor` into tracks, an overlay video and per-track meshes
  (``sample.py --video``). It drives the model, so it is not imported here: the modules above
  need neither JAX nor a model.
"""
from hmr_jax.video.io import (Frame, VideoError, VideoInfo, VideoReader, VideoWriter, read_frames, selected_count,
                              write_video)
from hmr_jax.video.smoothing import OneEuroFilter, SmoothingParams, one_euro, smooth_track
from hmr_jax.video.tracking import Track, Tracker, link_tracks

__all__ = ["Frame", "OneEuroFilter", "SmoothingParams", "Track", "Tracker", "VideoError", "VideoInfo", "VideoReader", "VideoWriter",
           "link_tracks", "one_euro", "read_frames", "selected_count", "smooth_track", "write_video"]
