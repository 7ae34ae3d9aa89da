"""Vision codec (fit, patchify) and video / image-folder reading and writing."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from microturn.codecs.video_io import read_image_folder, read_video, write_video
from microturn.codecs.vision import PATCH, VisionCodec
from microturn.stream.episode import VideoTrack

RNG = np.random.default_rng(1234)


def _random_frames(n: int, size: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# -- patchify / unpatchify ------------------------------------------------------------------


@pytest.mark.parametrize("size", [40, 80, 160])
def test_patchify_roundtrip_single_and_batch(size: int) -> None:
    codec = VisionCodec(size)
    p = codec.patches_per_frame
    assert p == (size // PATCH) ** 2
    frames = _random_frames(3, size)
    patches = codec.patchify(frames[0])
    assert patches.shape == (p, PATCH, PATCH, 3) and patches.dtype == np.uint8
    np.testing.assert_array_equal(codec.unpatchify(patches), frames[0])
    batch = codec.patchify(frames)
    assert batch.shape == (3, p, PATCH, PATCH, 3)
    np.testing.assert_array_equal(batch[1], codec.patchify(frames[1]))
    np.testing.assert_array_equal(codec.unpatchify(batch), frames)


def test_patchify_raster_order() -> None:
    codec = VisionCodec(160)
    g = codec.grid
    frame = np.zeros((160, 160, 3), dtype=np.uint8)
    for row in range(g):
        for col in range(g):
            k = row * g + col
            frame[row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH] = (
                k * 10, 255 - k * 10, 7)  # fmt: skip
    patches = codec.patchify(frame)
    for k in range(codec.patches_per_frame):
        assert np.all(patches[k] == (k * 10, 255 - k * 10, 7)), f"patch {k} out of raster order"


# -- fit ---------------------------------------------------------------------------------------


def test_fit_pad_keeps_aspect() -> None:
    wide = np.full((80, 160, 3), 255, dtype=np.uint8)  # 160 wide, 80 high
    out = VisionCodec(160).fit(wide)
    assert out.shape == (160, 160, 3) and out.dtype == np.uint8
    assert np.all(out[:40] == 0) and np.all(out[120:] == 0)  # black bands top and bottom
    assert np.all(out[40:120] == 255)  # white band in the middle, full width

    tall = np.full((200, 100, 3), 255, dtype=np.uint8)  # downscaled by 0.4 -> 40 wide
    out = VisionCodec(80).fit(tall)
    assert np.all(out[:, :20] == 0) and np.all(out[:, 60:] == 0)
    assert np.all(out[:, 20:60] == 255)


def test_fit_stretch_and_identity() -> None:
    img = np.zeros((30, 90, 3), dtype=np.uint8)
    img[:, :45] = (255, 0, 0)
    img[:, 45:] = (0, 0, 255)
    out = VisionCodec(80).fit(img, mode="stretch")
    assert out.shape == (80, 80, 3)
    assert np.all(out[:, :35] == (255, 0, 0)) and np.all(out[:, 45:] == (0, 0, 255))
    same = _random_frames(1, 80)[0]
    fitted = VisionCodec(80).fit(same)
    np.testing.assert_array_equal(fitted, same)
    assert fitted is not same


def test_fit_track_keeps_times() -> None:
    track = VideoTrack(np.zeros((4, 48, 64, 3), np.uint8), np.arange(4) / 5.0)
    out = VisionCodec(80).fit_track(track)
    assert out.frames.shape == (4, 80, 80, 3)
    np.testing.assert_array_equal(out.times_s, track.times_s)


# -- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((80, 80, 3), np.float32), "uint8"),
        (np.zeros((80, 80), np.uint8), "grayscale"),
        (np.zeros((80, 80, 1), np.uint8), r"1 channel \(grayscale\?\)"),
        (np.zeros((80, 80, 4), np.uint8), r"4 channels \(RGBA\?\).*convert to RGB"),
        (np.zeros((2, 2, 80, 80, 3), np.uint8), "5-D"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
    ],
)
def test_fit_bad_input(image: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VisionCodec(80).fit(image)


def test_patchify_bad_input() -> None:
    codec = VisionCodec(80)
    with pytest.raises(ValueError, match=r"expected 80x80.*fit\("):
        codec.patchify(np.zeros((96, 80, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        codec.patchify(np.zeros((80, 80, 3), np.int64))
    with pytest.raises(ValueError, match="RGBA"):
        codec.patchify(np.zeros((80, 80, 4), np.uint8))
    with pytest.raises(ValueError, match="2-D"):
        codec.patchify(np.zeros((80, 80), np.uint8))
    with pytest.raises(ValueError, match="expected patches"):
        codec.unpatchify(np.zeros((16, PATCH, PATCH, 3), np.uint8))  # 160-size patches


@pytest.mark.parametrize("size", [0, -40, 100, 41])
def test_size_must_be_multiple_of_patch(size: int) -> None:
    with pytest.raises(ValueError, match="multiple of 40"):
        VisionCodec(size)


def test_unknown_fit_mode() -> None:
    with pytest.raises(ValueError, match="unknown fit mode"):
        VisionCodec(80).fit(np.zeros((10, 10, 3), np.uint8), mode="crop")


# -- video files ---------------------------------------------------------------------------------


def _colour_clip(n: int, fps: float, h: int = 48, w: int = 64) -> VideoTrack:
    """Each frame a different solid colour, left half and right half differing."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, :, : w // 2] = ((40 + 13 * i) % 256, 180, 60)
        frames[i, :, w // 2 :] = (20, 60, (240 - 11 * i) % 256)
    return VideoTrack(frames, np.arange(n) / fps)


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", None), (".mp4", "mpeg4"), (".webm", None)])
def test_write_read_roundtrip(tmp_path: Path, suffix: str, codec: str | None) -> None:
    fps = 10.0
    clip = _colour_clip(12, fps)
    path = tmp_path / f"clip{suffix}"
    write_video(path, clip, fps, codec=codec)
    back = read_video(path)
    assert back.frames.shape == clip.frames.shape and back.frames.dtype == np.uint8
    np.testing.assert_allclose(back.times_s, np.arange(12) / fps, atol=2e-3)
    # Lossy codec + 4:2:0 chroma: compare away from the colour edge, with a tolerance.
    inner = np.r_[0:24, 40:64]
    diff = np.abs(back.frames[:, 4:-4, inner].astype(int) - clip.frames[:, 4:-4, inner])
    assert diff.max() <= 12, diff.max()
    assert diff.mean() <= 3


def test_read_video_decimate_and_fit(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, _colour_clip(30, 30.0, h=60, w=80), 30.0)  # 1 s at 30 fps
    track = read_video(path, fps=5.0, size=80)
    # Latest frame of each 0.2 s interval: frames 5, 11, 17, 23, 29.
    assert track.frames.shape == (5, 80, 80, 3)
    np.testing.assert_allclose(track.times_s, np.array([5, 11, 17, 23, 29]) / 30, atol=1e-3)
    # 80x60 padded into 80x80: 10-pixel black bands top and bottom.
    assert track.frames[:, :8].max() <= 20 and track.frames[:, -8:].max() <= 20
    assert track.frames[:, 40, 20, 1].min() >= 160  # left half green channel ~180
    assert read_video(path, max_frames=7).frames.shape == (7, 60, 80, 3)
    assert read_video(path, fps=5.0, max_frames=2).frames.shape[0] == 2
    assert read_video(path, fps=100.0).frames.shape[0] == 30  # never duplicates


def test_read_video_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(RNG.bytes(4096))
    with pytest.raises(ValueError, match="cannot read video"):
        read_video(bad)
    wav = tmp_path / "audio.wav"
    with av.open(str(wav), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(ValueError, match="no video stream"):
        read_video(wav)


def test_write_video_errors(tmp_path: Path) -> None:
    odd = VideoTrack(np.zeros((2, 31, 40, 3), np.uint8), [0.0, 0.1])
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", odd, 10.0)
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "clip.gif", _colour_clip(2, 10.0), 10.0)
    dense = VideoTrack(np.zeros((2, 32, 32, 3), np.uint8), [0.0, 0.01])
    with pytest.raises(ValueError, match="same 1/10"):
        write_video(tmp_path / "dense.mp4", dense, 10.0)


# -- image folders ---------------------------------------------------------------------------------


def test_image_folder_natural_sort_and_conversion(tmp_path: Path) -> None:
    names = ["frame10.png", "frame2.png", "frame1.jpg", "Frame3.bmp"]
    for value, name in zip([100, 20, 10, 30], names, strict=True):
        mode = "RGBA" if name == "frame2.png" else "RGB"
        Image.new(mode, (8, 6), (value,) * 3 + ((255,) if mode == "RGBA" else ())).save(
            tmp_path / name
        )
    Image.new("L", (8, 6), 50).save(tmp_path / "frame4.png")  # grayscale -> RGB
    (tmp_path / "notes.txt").write_text("ignored")
    track = read_image_folder(tmp_path, fps=4.0)
    assert track.frames.shape == (5, 6, 8, 3)
    # frame1, frame2, Frame3, frame4, frame10
    np.testing.assert_allclose(track.frames[:, 0, 0, 0], [10, 20, 30, 50, 100], atol=2)
    np.testing.assert_allclose(track.times_s, np.arange(5) / 4.0)


def test_image_folder_errors(tmp_path: Path) -> None:
    Image.new("RGB", (8, 6)).save(tmp_path / "a1.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "a2.png")
    with pytest.raises(ValueError, match=r"a2\.png.*same size"):
        read_image_folder(tmp_path, fps=5.0)
    with pytest.raises(ValueError, match="fps"):
        read_image_folder(tmp_path, fps=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images"):
        read_image_folder(empty, fps=5.0)
    with pytest.raises(ValueError, match="not a folder"):
        read_image_folder(tmp_path / "missing", fps=5.0)
