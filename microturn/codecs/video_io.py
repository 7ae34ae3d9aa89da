"""Reading camera input (video files, image folders) as `VideoTrack`s, and writing clips.

Choices, so behaviour is predictable:

* Time origin: `read_video` puts the first decoded frame at 0.0 s and every later frame at
  its presentation time (PTS) relative to it. Containers disagree about start times (mp4
  edit lists, B-frame delays, webm offsets), so the container's start time is ignored;
  `write_video` likewise writes the first frame at 0 and drops `track.times_s[0]`.
* Frames are RGB uint8 (FFmpeg's rgb24 conversion); nothing is resized unless `size` is
  given, and then only through `VisionCodec.fit`.
* Decimation (`fps=`): time is cut into intervals [k/fps, (k+1)/fps) and the latest frame
  of each interval is kept, with its own true time — the freshest frame a live system
  would have at the end of that interval. Frames are never duplicated, so a source slower
  than `fps` keeps all its frames.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from microturn.codecs.vision import FIT_MODES, VisionCodec
from microturn.stream.episode import VideoTrack

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Encoders tried in order for each container suffix (first one this FFmpeg build has wins).
_ENCODERS = {
    ".mp4": ("libx264", "h264", "mpeg4"),
    ".m4v": ("libx264", "h264", "mpeg4"),
    ".mov": ("libx264", "h264", "mpeg4"),
    ".mkv": ("libx264", "h264", "mpeg4"),
    ".webm": ("libvpx", "libvpx-vp9"),  # vp8 first: much faster to encode than vp9
}
# Near-transparent quality so written test clips and renders keep colours.
_ENCODER_OPTIONS = {
    "libx264": {"crf": "12", "preset": "veryfast"},
    "h264": {"crf": "12", "preset": "veryfast"},
    "libvpx": {"crf": "4", "deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"crf": "10", "deadline": "realtime", "cpu-used": "8"},
    "mpeg4": {"qscale": "2"},
}
_TIME_EPS = 1e-6  # seconds; absorbs float error when binning times exactly on an edge


# -- reading video files ---------------------------------------------------------------------


def read_video(
    path: str | Path,
    *,
    max_frames: int | None = None,
    size: int | None = None,
    fps: float | None = None,
    fit_mode: str = "pad",
) -> VideoTrack:
    """Decode a video file (mp4, webm, mkv, ... via PyAV) into an RGB uint8 `VideoTrack`.

    Times are PTS seconds relative to the first frame (first frame at 0.0). Frames whose
    timestamp does not advance past the previous one (broken or duplicate PTS) are dropped,
    because a track's times must strictly increase.

    Big clips: full-size frames are large (60 s of 640x480 at 30 fps is ~800 MB), so
    `fps` keeps only the latest frame per 1/fps interval and `size` fits each kept frame
    to size x size (`VisionCodec.fit`, `fit_mode`, pad by default) while decoding; only
    the kept, fitted frames are held in memory. `max_frames` stops after that many kept
    frames. Missing, unreadable or corrupt files and files with no video stream raise
    ValueError.
    """
    if max_frames is not None and (isinstance(max_frames, bool) or max_frames <= 0):
        raise ValueError(f"max_frames must be a positive int or None, got {max_frames!r}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number or None, got {fps!r}")
    if fit_mode not in FIT_MODES:
        raise ValueError(f"unknown fit mode {fit_mode!r}; use one of {FIT_MODES}")
    codec = VisionCodec(size) if size is not None else None
    p = Path(path)
    if not p.exists():
        raise ValueError(f"video file not found: {p}")
    if not p.is_file():
        raise ValueError(f"not a video file (is it a folder? see read_image_folder): {p}")

    frames: list[np.ndarray] = []
    times: list[float] = []

    def keep(frame: av.VideoFrame, t: float) -> None:
        rgb = frame.to_ndarray(format="rgb24")
        frames.append(rgb if codec is None else codec.fit(rgb, fit_mode))
        times.append(t)

    try:
        with av.open(str(p), mode="r") as container:
            if not container.streams.video:
                raise ValueError(f"{p}: no video stream (audio-only or not a video file)")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            pending: tuple[av.VideoFrame, float] | None = None  # latest frame of current bin
            for frame, t in _timed_frames(container, stream):
                if fps is None:
                    keep(frame, t)
                elif pending is not None and _bin(t, fps) != _bin(pending[1], fps):
                    keep(*pending)
                    pending = (frame, t)
                else:
                    pending = (frame, t)
                if max_frames is not None and len(frames) >= max_frames:
                    pending = None
                    break
            if pending is not None:
                keep(*pending)
    except av.FFmpegError as e:
        raise ValueError(f"{p}: cannot read video (corrupt or unsupported file?): {e}") from e
    if not frames:
        raise ValueError(f"{p}: the video stream has no decodable frames")
    return VideoTrack(frames=np.stack(frames), times_s=np.asarray(times, dtype=np.float64))


def _timed_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Iterator[tuple[av.VideoFrame, float]]:
    """Yield (frame, seconds since the first frame), skipping non-advancing timestamps."""
    rate = stream.average_rate or stream.guessed_rate
    step = float(1 / rate) if rate else 1 / 30  # only for frames with no PTS at all
    t0: float | None = None
    last: float | None = None
    for frame in container.decode(stream):
        if frame.pts is not None and frame.time_base is not None:
            abs_t = float(frame.pts * frame.time_base)
        elif last is not None and t0 is not None:
            abs_t = t0 + last + step
        else:
            abs_t = 0.0
        if t0 is None:
            t0 = abs_t
        t = abs_t - t0
        if last is not None and t <= last:
            continue
        last = t
        yield frame, t


def _bin(t: float, fps: float) -> int:
    """Index of the 1/fps interval that time t falls in."""
    return math.floor(t * fps + _TIME_EPS)


# -- image folders ------------------------------------------------------------------------------


def read_image_folder(path: str | Path, fps: float) -> VideoTrack:
    """Read a folder of images as a track: natural file-name order, frame i at i / fps.

    Takes .png/.jpg/.jpeg/.bmp/.webp (any case); other files and hidden files (".*") are
    ignored. Each image is turned upright by its EXIF orientation and converted to RGB on
    purpose by Pillow (`Image.convert("RGB")`): grayscale is replicated to 3 channels and
    an alpha channel is dropped (not composited). All images must have the same size.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"image folder not found or not a folder: {folder}")
    files = sorted(
        (
            f
            for f in folder.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
        ),
        key=lambda f: _natural_key(f.name),
    )
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    first = _read_rgb(files[0])
    h, w = first.shape[:2]
    frames = np.empty((len(files), h, w, 3), dtype=np.uint8)
    frames[0] = first
    for i, f in enumerate(files[1:], start=1):
        img = _read_rgb(f)
        if img.shape != first.shape:
            raise ValueError(
                f"{f.name} is {img.shape[1]}x{img.shape[0]} (WxH) but {files[0].name} is "
                f"{w}x{h}; all images in {folder} must have the same size"
            )
        frames[i] = img
    return VideoTrack(frames=frames, times_s=np.arange(len(files), dtype=np.float64) / fps)


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key so that 'frame2' < 'frame10': digit runs compare as numbers."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.casefold())
        for part in re.split(r"(\d+)", name)
        if part
    )


def _read_rgb(file: Path) -> np.ndarray:
    try:
        with Image.open(file) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {file}: {e}") from e


# -- writing ------------------------------------------------------------------------------------


def write_video(
    path: str | Path, track: VideoTrack, fps: float, *, codec: str | None = None
) -> None:
    """Write a track as .mp4/.m4v/.mov/.mkv (h264, else mpeg4) or .webm (vp8, else vp9).

    `codec` forces one FFmpeg encoder by name (e.g. "mpeg4", "libvpx-vp9").

    Frame timestamps come from `track.times_s` on a 1/fps grid, relative to the first frame
    (which is written at 0), so a track sampled at i / fps round-trips exactly; two frames
    falling on the same grid step is an error (raise fps or decimate). Width and height
    must be even (yuv420p); fit or pad frames on purpose first. Quality is set high so
    colours survive closely, but the codecs are lossy.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _ENCODERS:
        raise ValueError(
            f"cannot write {p.name}: unsupported suffix {suffix!r}; use one of "
            f"{', '.join(_ENCODERS)}"
        )
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    n, h, w = track.frames.shape[:3]
    if n == 0:
        raise ValueError("cannot write a video with no frames")
    if h % 2 or w % 2:
        raise ValueError(
            f"frame size {w}x{h} (WxH) must be even in both dimensions for yuv420p video "
            "codecs; pad or fit the frames on purpose (e.g. VisionCodec.fit) first"
        )
    rate = Fraction(fps).limit_denominator(1001)
    pts = np.round((track.times_s - track.times_s[0]) * float(rate)).astype(np.int64)
    clash = np.flatnonzero(np.diff(pts) <= 0)
    if clash.size:
        i = int(clash[0])
        raise ValueError(
            f"frames {i} and {i + 1} (t={track.times_s[i]:.4f}s, {track.times_s[i + 1]:.4f}s) "
            f"fall on the same 1/{fps:g} s step; write with a higher fps or decimate the track"
        )
    encoder = _pick_encoder(suffix) if codec is None else _check_encoder(codec)
    p.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(p), mode="w") as container:
        stream = container.add_stream(encoder, rate=rate, options=_ENCODER_OPTIONS.get(encoder))
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        if encoder == "mpeg4":
            stream.codec_context.bit_rate = max(2_000_000, int(w * h * float(rate) * 2))
        for frame_rgb, frame_pts in zip(track.frames, pts, strict=True):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
            frame.pts = int(frame_pts)
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
        return False
    return True


def _check_encoder(name: str) -> str:
    if not _has_encoder(name):
        raise ValueError(f"this FFmpeg build has no encoder named {name!r}")
    return name


def _pick_encoder(suffix: str) -> str:
    for name in _ENCODERS[suffix]:
        if _has_encoder(name):
            return name
    raise ValueError(
        f"this FFmpeg build has none of the encoders {_ENCODERS[suffix]} for {suffix} files"
    )
