"""Encoder-free vision codec: square RGB frames cut into raw 40x40 pixel patches.

There is no pretrained image encoder; the model's hMLP stem reads the raw patches. So this
module only does two things, both exactly and checked at the boundary:

* `fit` — the one, explicit place where an image is resized (pad or stretch) to the
  model's square frame size. Nothing else resizes or crops, so a wrong-sized frame is a
  clear error instead of a silently different model input.
* `patchify` / `unpatchify` — a lossless reshape between frames and patches, raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from microturn.stream.episode import VideoTrack

PATCH = 40
FIT_MODES = ("pad", "stretch")
# Pillow's resize convolves with a filter scaled to the reduction, so BILINEAR is
# antialiased when shrinking (area-like) and smooth when enlarging.
_RESAMPLE = Image.Resampling.BILINEAR


def check_rgb_image(image: np.ndarray, *, what: str = "image") -> np.ndarray:
    """Return `image` as an array after checking it is a non-empty uint8 [H, W, 3] RGB image.

    Raises ValueError naming the problem (dtype, ndim, channel count, empty) and the fix.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        raise ValueError(
            f"{what}: got a 2-D array {arr.shape} (grayscale?); expected [H, W, 3] RGB — "
            "convert to RGB, e.g. Image.convert('RGB') or np.repeat(x[..., None], 3, -1)"
        )
    if arr.ndim != 3:
        raise ValueError(f"{what}: expected a [H, W, 3] RGB image, got {arr.ndim}-D {arr.shape}")
    _check_channels(arr, what)
    _check_uint8(arr, what)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what}: empty image ({arr.shape[0]}x{arr.shape[1]} pixels)")
    return arr


def _check_channels(arr: np.ndarray, what: str) -> None:
    channels = arr.shape[-1]
    if channels == 3:
        return
    hint = {1: " (grayscale?)", 2: " (grayscale + alpha?)", 4: " (RGBA?)"}.get(channels, "")
    noun = "channel" if channels == 1 else "channels"
    raise ValueError(
        f"{what}: got {channels} {noun}{hint} in shape {arr.shape}; convert to RGB "
        "(3 channels), e.g. Image.convert('RGB')"
    )


def _check_uint8(arr: np.ndarray, what: str) -> None:
    if arr.dtype != np.uint8:
        raise ValueError(
            f"{what}: expected uint8 pixels in [0, 255], got dtype {arr.dtype} "
            "(scale and cast on purpose, e.g. (x * 255).round().clip(0, 255).astype(np.uint8))"
        )


@dataclass(frozen=True)
class VisionCodec:
    """Square frames of `size` pixels <-> [P, 40, 40, 3] uint8 patches (P = (size/40)^2).

    `size` must be a positive multiple of 40 (160 by default, 80 for small configs) so
    frames split into whole patches with nothing cropped.
    """

    size: int = 160

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int | np.integer):
            raise ValueError(f"VisionCodec size must be an int, got {self.size!r}")
        if self.size <= 0 or self.size % PATCH:
            raise ValueError(
                f"VisionCodec size must be a positive multiple of {PATCH}, got {self.size} "
                f"(e.g. {max(PATCH, round(self.size / PATCH) * PATCH)})"
            )

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.size // PATCH

    @property
    def patches_per_frame(self) -> int:
        """Patches in one frame, (size // 40) ** 2."""
        return self.grid**2

    # -- resizing: the only place it happens -----------------------------------------------

    def fit(self, frame: np.ndarray, mode: str = "pad") -> np.ndarray:
        """Resize an HxWx3 uint8 RGB image to size x size, on purpose.

        "pad" (default): keep the aspect ratio, scale so the whole image fits, centre it on
        black — nothing cropped, nothing distorted. "stretch": scale each axis separately
        (fills the frame but distorts). Always returns a new contiguous array.
        """
        if mode not in FIT_MODES:
            raise ValueError(f"unknown fit mode {mode!r}; use one of {FIT_MODES}")
        arr = check_rgb_image(frame, what="fit")
        h, w = arr.shape[:2]
        s = self.size
        if (h, w) == (s, s):
            return np.array(arr, dtype=np.uint8, order="C", copy=True)
        if mode == "stretch":
            return _resize(arr, s, s)
        scale = min(s / w, s / h)
        new_w = min(s, max(1, round(w * scale)))
        new_h = min(s, max(1, round(h * scale)))
        out = np.zeros((s, s, 3), dtype=np.uint8)
        top, left = (s - new_h) // 2, (s - new_w) // 2
        out[top : top + new_h, left : left + new_w] = _resize(arr, new_w, new_h)
        return out

    def fit_track(self, track: VideoTrack, mode: str = "pad") -> VideoTrack:
        """`fit` every frame of a track; times are unchanged."""
        if mode not in FIT_MODES:
            raise ValueError(f"unknown fit mode {mode!r}; use one of {FIT_MODES}")
        frames = np.empty((len(track.frames), self.size, self.size, 3), dtype=np.uint8)
        for i, frame in enumerate(track.frames):
            frames[i] = self.fit(frame, mode)
        return VideoTrack(frames=frames, times_s=track.times_s.copy())

    # -- patches ----------------------------------------------------------------------------

    def patchify(self, frame: np.ndarray) -> np.ndarray:
        """[size, size, 3] -> [P, 40, 40, 3] (or [F, size, size, 3] -> [F, P, 40, 40, 3]).

        Raster order: patch k covers rows (k // g)*40.. and columns (k % g)*40.., g = size/40.
        """
        arr = np.asarray(frame)
        if arr.ndim not in (3, 4):
            raise ValueError(
                f"patchify: expected a frame [{self.size}, {self.size}, 3] or a batch "
                f"[F, {self.size}, {self.size}, 3], got {arr.ndim}-D {arr.shape}"
            )
        _check_channels(arr, "patchify")
        _check_uint8(arr, "patchify")
        if arr.shape[-3:-1] != (self.size, self.size):
            h, w = arr.shape[-3:-1]
            raise ValueError(
                f"patchify: expected {self.size}x{self.size} frames, got {h}x{w} (HxW); "
                f"resize on purpose with VisionCodec(size={self.size}).fit(frame) "
                "(pad, keeps aspect) or fit(frame, mode='stretch')"
            )
        g = self.grid
        lead = arr.shape[:-3]
        x = arr.reshape(*lead, g, PATCH, g, PATCH, 3)
        x = np.moveaxis(x, -4, -3)  # [..., gy, gx, 40, 40, 3]
        return np.ascontiguousarray(x.reshape(*lead, g * g, PATCH, PATCH, 3))

    def unpatchify(self, patches: np.ndarray) -> np.ndarray:
        """Exact inverse of `patchify`: [P, 40, 40, 3] -> [size, size, 3] (batch too)."""
        arr = np.asarray(patches)
        p = self.patches_per_frame
        if arr.ndim not in (4, 5) or arr.shape[-4:] != (p, PATCH, PATCH, 3):
            raise ValueError(
                f"unpatchify: expected patches [{p}, {PATCH}, {PATCH}, 3] or a batch "
                f"[F, {p}, {PATCH}, {PATCH}, 3] for size {self.size}, got {arr.shape}"
            )
        _check_uint8(arr, "unpatchify")
        g = self.grid
        lead = arr.shape[:-4]
        x = arr.reshape(*lead, g, g, PATCH, PATCH, 3)
        x = np.moveaxis(x, -3, -4)  # [..., gy, 40, gx, 40, 3]
        return np.ascontiguousarray(x.reshape(*lead, self.size, self.size, 3))


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with Pillow (antialiased), never hand-written interpolation."""
    img = Image.fromarray(np.ascontiguousarray(arr))
    return np.asarray(img.resize((width, height), resample=_RESAMPLE), dtype=np.uint8)
