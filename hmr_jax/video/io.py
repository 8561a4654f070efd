"""Video in and out as (H, W, 3) uint8 RGB frames, through PyAV (the ``video`` extra).

PyAV's wheel carries the ffmpeg libraries (the H.264 encoder libx264 included), so no system
ffmpeg is needed.

* :class:`VideoReader` / :func:`read_frames` -- decode frames in presentation order, keeping
  every K-th (``every``, frame indices 0, K, 2K, ...) and at most N of them (``max_frames``);
  frames are turned upright as players show them (the rotation stored by phones).
* :class:`VideoWriter` / :func:`write_video` -- encode an ``.mp4`` (H.264, yuv420p, at the
  given frame rate) frame by frame into a temporary file beside the target, renamed into place
  when complete (``hmr_jax.files.atomic_open``): a failed or interrupted write leaves no file.

Every problem with an input video (missing, not a video, no video stream, a codec this build
cannot decode, no frames) is a :class:`VideoError` naming the file and the fix.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fractions
import logging
import pathlib
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from hmr_jax.errors import UserError
from hmr_jax.files import atomic_open

__all__ = ["Frame", "VideoError", "VideoInfo", "VideoReader", "VideoWriter", "read_frames", "selected_count",
           "write_video"]

log = logging.getLogger(__name__)

#: the fix offered for a video that cannot be decoded
REENCODE_HINT = "re-encode it to H.264, e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`"
#: frame rate assumed when the container states none
FALLBACK_FPS = 30.0
#: containers written, by file suffix
WRITE_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


class VideoError(UserError, RuntimeError):
    """A video cannot be read (or written): the message names the file and the fix."""


def _av():
    try:
        import av  # optional: the `video` extra
    except ImportError:
        raise VideoError("reading and writing videos needs PyAV: pip install 'hmr_jax[video]'") from None
    return av


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video holds.

    Attributes:
      path: the file.
      fps: frames per second (the stream's average rate).
      width, height: frame size in pixels, upright (after the stored rotation).
      num_frames: frame count from the container header (``None`` when it states none; the
        decoded count can differ for damaged files).
      codec: the decoder's name (``"h264"``, ``"vp9"``, ...).
      rotation: degrees counter-clockwise that were applied to make frames upright (0, 90, 180, 270).
    """

    path: str
    fps: float
    width: int
    height: int
    num_frames: int | None
    codec: str
    rotation: int = 0


class Frame(NamedTuple):
    """One decoded frame: ``index`` (0-based, presentation order), ``time`` (seconds), ``image`` (H, W, 3) uint8 RGB."""

    index: int
    time: float
    image: np.ndarray


def selected_count(num_frames: int | None, every: int = 1, max_frames: int | None = None) -> int | None:
    """How many frames ``every`` / ``max_frames`` select from ``num_frames`` (``None`` if unknown)."""
    if num_frames is None:
        return max_frames
    n = -(-num_frames // every)
    return n if max_frames is None else min(n, max_frames)


def _check_selection(every, max_frames):
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a whole number >= 1 (keep every K-th frame), got {every!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be None or a whole number >= 1, got {max_frames!r}")


class VideoReader:
    """An open video; use as a context manager, iterate with :meth:`frames`.

    Opening decodes the first frame, so a file that cannot be decoded or holds no frames fails
    here, before any work is done.
    """

    def __init__(self, path: str | pathlib.Path):
        """Open ``path``.

        Raises:
          VideoError: missing file, not a video, no video stream, undecodable codec, no frames.
        """
        av = _av()
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise VideoError(f"{self.path}: no such video file")
        try:
            self._container = av.open(str(self.path))
        except av.error.FFmpegError as e:
            raise VideoError(f"{self.path}: not a readable video ({_reason(e)}); give an .mp4, .mov, .mkv, .avi or "
                             f".webm file, or {REENCODE_HINT}") from None
        try:
            self._stream, first = self._open_stream()
        except BaseException:
            self._container.close()
            raise
        self._first = first
        rate = self._stream.average_rate or self._stream.guessed_rate
        fps = float(rate) if rate else 0.0
        if not fps > 0:
            log.warning("%s states no frame rate; assuming %g fps", self.path, FALLBACK_FPS)
            fps = FALLBACK_FPS
        image = self._upright(first)
        self.info = VideoInfo(str(self.path), fps, image.shape[1], image.shape[0],
                              int(self._stream.frames) or None, self._stream.codec_context.name, self._rotation)

    def _open_stream(self):
        av = _av()
        if not self._container.streams.video:
            raise VideoError(f"{self.path}: holds no video stream (audio or data only); give a file with video")
        stream = self._container.streams.video[0]
        if stream.codec_context is None:
            raise VideoError(f"{self.path}: its video codec cannot be decoded by this build of ffmpeg; "
                             f"{REENCODE_HINT}")
        stream.thread_type = "AUTO"
        self._decoded = self._container.decode(stream)
        try:
            first = next(self._decoded)
        except StopIteration:
            raise VideoError(f"{self.path}: the video holds no frames; give a video with at least one frame") from None
        except av.error.FFmpegError as e:
            raise VideoError(f"{self.path}: the first frame cannot be decoded ({_reason(e)}); {REENCODE_HINT}") from None
        rotation = int(round(getattr(first, "rotation", 0) or 0))
        if rotation % 90:
            log.warning("%s: rotation of %d degrees is not a multiple of 90; frames are left as stored",
                        self.path, rotation)
            rotation = 0
        self._rotation = rotation % 360
        return stream, first

    def _upright(self, frame) -> np.ndarray:
        image = frame.to_ndarray(format="rgb24")
        if self._rotation:
            image = np.ascontiguousarray(np.rot90(image, self._rotation // 90))
        return image

    def frames(self, every: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
        """Frames with index 0, K, 2K, ... (``every = K``), at most ``max_frames`` of them.

        Can be called once per reader (decoding goes forward only).
        Yields:
          :class:`Frame` ``(index, time seconds, (H, W, 3) uint8 RGB)``.
        Raises:
          VideoError: a frame after the first cannot be decoded (the message names its index).
        """
        _check_selection(every, max_frames)
        return self._iterate(every, max_frames)

    def _iterate(self, every, max_frames):
        av = _av()
        if self._first is None:
            raise RuntimeError("VideoReader.frames() can be called only once")
        frame, self._first = self._first, None
        index, kept = 0, 0
        while max_frames is None or kept < max_frames:
            if index % every == 0:
                t = frame.time if frame.time is not None else index / self.info.fps
                yield Frame(index, float(t), self._upright(frame))
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
            try:
                frame = next(self._decoded)
            except StopIteration:
                return
            except av.error.FFmpegError as e:
                raise VideoError(f"{self.path}: frame {index + 1} cannot be decoded ({_reason(e)}); the file may be "
                                 f"truncated or damaged: {REENCODE_HINT}, or use --max-frames {index + 1}") from None
            index += 1

    def close(self) -> None:
        """Release the file."""
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_frames(path: str | pathlib.Path, every: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
    """Open ``path`` now (errors raise here) and yield its selected frames (see :meth:`VideoReader.frames`).

    The file is closed when the iteration ends or the iterator is closed.
    """
    _check_selection(every, max_frames)
    reader = VideoReader(path)

    def gen():
        with reader:
            yield from reader.frames(every, max_frames)
    return gen()


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e)


# ------------------------------------------------------------------------------------------
# writing


def _encoder(av, requested: str | None) -> str:
    names = [requested] if requested else ["libx264", "h264", "mpeg4"]
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # av raises its own UnknownCodecError types
            continue
    raise VideoError(f"no video encoder among {', '.join(names)} in this PyAV build; reinstall 'hmr_jax[video]'")


class VideoWriter:
    """Write frames to a video file, atomically; a context manager.

    ``with VideoWriter("out.mp4", fps=30) as w: w.write(frame)`` -- frames are (H, W, 3) uint8
    RGB of one size (the first frame's, unless ``size`` is given). The file appears at ``path``
    only when the ``with`` block ends without an error and at least one frame was written.

    H.264 (libx264, ``crf`` quality: 0 lossless .. 51 worst, 18 visually lossless) in yuv420p,
    which every player and browser plays; an odd width or height cannot be yuv420p, so it is
    written in yuv444p (plays in ffmpeg-based players, not in every browser). Without libx264
    the MPEG-4 part 2 encoder is used.
    """

    def __init__(self, path: str | pathlib.Path, fps: float, *, size: tuple[int, int] | None = None,
                 crf: int = 18, codec: str | None = None):
        """Args:
          path: ``.mp4`` (or ``.mov`` / ``.mkv``) output file.
          fps: frames per second (with ``every = K`` reading, ``fps / K`` keeps the duration).
          size: ``(width, height)`` pixels; default: the first frame's.
          crf: H.264 constant rate factor.
          codec: encoder name (default libx264, else mpeg4).
        """
        self.path = pathlib.Path(path)
        if self.path.suffix.lower() not in WRITE_FORMATS:
            raise ValueError(f"{self.path}: video output must end in {', '.join(WRITE_FORMATS)}")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = fractions.Fraction(fps).limit_denominator(1001)
        self.size = size
        self.crf = int(crf)
        self.codec = codec
        self.frames_written = 0
        self._stack = None

    def __enter__(self) -> "VideoWriter":
        self._av = av = _av()
        self._codec = _encoder(av, self.codec)
        self._stack = contextlib.ExitStack()
        f = self._stack.enter_context(atomic_open(self.path, "wb"))
        try:
            self._container = av.open(f, "w", format=WRITE_FORMATS[self.path.suffix.lower()])
        except BaseException:
            self._stack.__exit__(None, None, None)
            raise
        self._stream = None
        return self

    def _start(self, width: int, height: int):
        stream = self._container.add_stream(self._codec, rate=self.fps)
        stream.width, stream.height = width, height
        even = width % 2 == 0 and height % 2 == 0
        stream.pix_fmt = "yuv420p" if even or self._codec not in ("libx264", "h264") else "yuv444p"
        if self._codec in ("libx264", "h264"):
            stream.options = {"crf": str(self.crf)}
        else:
            stream.bit_rate = max(1_000_000, width * height * 8)
        self._stream = stream

    def write(self, image: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame (the size of the first / of ``size``)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"video frames must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
        if self._stream is None:
            w, h = self.size or (image.shape[1], image.shape[0])
            self._start(int(w), int(h))
        if image.shape[:2] != (self._stream.height, self._stream.width):
            raise ValueError(f"frame {self.frames_written} is {image.shape[1]}x{image.shape[0]}, the video is "
                             f"{self._stream.width}x{self._stream.height}")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb):
        stack, self._stack = self._stack, None
        own = None
        if exc_type is None:
            try:
                if self._stream is None:
                    raise VideoError(f"{self.path}: no frames were written; nothing saved")
                for packet in self._stream.encode():   # flush the encoder
                    self._container.mux(packet)
                self._container.close()
            except BaseException as e:
                own = e
                exc_type, exc, tb = type(e), e, e.__traceback__
        if exc_type is not None:
            with contextlib.suppress(Exception):
                self._container.close()
        # atomic_open renames the temporary file into place, or removes it when given the error
        stack.__exit__(exc_type, exc, tb)
        if own is not None:
            raise own
        return False


def write_video(path: str | pathlib.Path, frames: Iterable[np.ndarray], fps: float, **kwargs) -> pathlib.Path:
    """Write (H, W, 3) uint8 RGB ``frames`` to ``path`` atomically (see :class:`VideoWriter`); returns the path."""
    with VideoWriter(path, fps, **kwargs) as w:
        for image in frames:
            w.write(image)
    return pathlib.Path(path)
