"""Streaming speech out: the model's dMel bins -> waveform, one micro-turn at a time.

Each call decodes the new frames together with a few frames of context, starting the
Griffin-Lim iterations from the phase the previous call ended with (and, for new frames,
that phase advanced at each bin's frequency), so consecutive chunks join without clicks
or gaps and the past is never decoded again. Mel -> linear magnitude uses the
filterbank's pseudo-inverse, precomputed once.

Why a loop of our own around librosa's STFT / ISTFT instead of `librosa.griffinlim`:
that function cannot resume from a given phase (with `init=None` it multiplies its
estimate by the complex input on every iteration, adding the initial phase again each
time; see its source), and resuming is the whole point of streaming. The transforms are
librosa's; only the few-line iteration is here.

Latency: a sample is final only once every frame whose 50 ms window covers it has been
decoded, so output runs 50 ms (800 samples) behind the frames; every call returns
exactly as many samples as it got frames x 200.
"""

from __future__ import annotations

import numpy as np

from microturn.codecs import dmel

_LEFT = dmel.LEFT_CONTEXT  # 712: frame i's FFT frame starts at original sample i*hop - 712
_DELAY = dmel.WIN_LENGTH  # 800 samples (50 ms) until a sample is covered by all its frames
_CROSSFADE = 200  # samples blended between the previous call's tail and this call's head


_STFT = {
    "n_fft": dmel.N_FFT,
    "hop_length": dmel.HOP,
    "win_length": dmel.WIN_LENGTH,
    "window": "hann",
    "center": False,
}
_BINS = dmel.N_FFT // 2 + 1


class StreamingVocoder:
    """Per-stream decoder state: the last frames' magnitudes and phases, and the tail of
    audio decoded but not yet final. `decode_many` steps many streams in one batch."""

    def __init__(self, n_iter: int = 4, context_frames: int = 8) -> None:
        if context_frames < _DELAY // dmel.HOP + 1:
            raise ValueError(f"context_frames must be >= {_DELAY // dmel.HOP + 1}")
        self.n_iter = n_iter
        self.context = context_frames
        self.mag = np.zeros((_BINS, context_frames), np.float32)  # zeros: nothing ringing
        self.phase = np.zeros((_BINS, context_frames), np.float32)
        self.tail = np.zeros(_CROSSFADE, np.float32)  # earlier decode of the next samples
        self.frames_seen = 0

    @property
    def quiet(self) -> bool:
        return not self.mag.any()

    def push(self, bins: np.ndarray) -> np.ndarray:
        """New dMel frames [F, 80] -> F * 200 samples of speech (50 ms behind)."""
        return decode_many([self], [bins])[0]


def decode_many(vocoders: list[StreamingVocoder], frames: list[np.ndarray]) -> list[np.ndarray]:
    """One micro-turn of speech for many streams at once (one batched set of STFTs).

    Every stream must get the same number of new frames and share n_iter / context.
    Streams that are silent and have nothing ringing cost nothing.
    """
    import librosa

    if len(vocoders) != len(frames):
        raise ValueError("one bins array per vocoder")
    if not vocoders:
        return []
    bins = [dmel.validate_bins(b) for b in frames]
    f = bins[0].shape[0]
    if any(b.shape[0] != f for b in bins):
        raise ValueError("decode_many needs the same number of frames for every stream")
    outs = [np.zeros(f * dmel.HOP, np.float32) for _ in vocoders]
    busy = [
        i for i, (v, b) in enumerate(zip(vocoders, bins, strict=True)) if b.any() or not v.quiet
    ]
    for i, v in enumerate(vocoders):
        if i not in busy:
            v.frames_seen += f
    if f == 0 or not busy:
        return outs
    n_iter, c = vocoders[busy[0]].n_iter, vocoders[busy[0]].context
    codec = dmel.shared_codec()
    advance = (2 * np.pi * np.arange(_BINS) * dmel.HOP / dmel.N_FFT).astype(np.float32)
    stacked = np.stack([bins[i] for i in busy])  # [R, F, 80]
    mel = np.power(10.0, dmel.BIN_CENTRES[stacked.astype(np.int64)]).astype(np.float32)
    new_mag = np.maximum(np.einsum("km,rfm->rkf", codec.mel_pinv, mel), 0.0)
    new_mag *= stacked.any(axis=2)[:, None, :]  # silent frames decode to silence
    mag = np.concatenate([np.stack([vocoders[i].mag for i in busy]), new_mag], axis=2)
    old_phase = np.stack([vocoders[i].phase for i in busy])
    # Phase: carried over for context frames, advanced at each bin's frequency after.
    steps = np.arange(1, f + 1, dtype=np.float32)
    new_phase = old_phase[:, :, -1:] + advance[None, :, None] * steps[None, None, :]
    estimate = mag * np.exp(1j * np.concatenate([old_phase, new_phase], axis=2))
    n = c + f
    length = (n - 1) * dmel.HOP + dmel.N_FFT
    for _ in range(n_iter):
        audio = librosa.istft(estimate, length=length, **_STFT)
        rebuilt = librosa.stft(audio, **_STFT)
        estimate = mag * np.exp(1j * np.angle(rebuilt))
    audio = librosa.istft(estimate, length=length, **_STFT)  # [R, length]
    for r, i in enumerate(busy):
        v = vocoders[i]
        # Decoded audio starts at original sample (first frame) * 200 - 712.
        origin = (v.frames_seen - c) * dmel.HOP - _LEFT
        emit = v.frames_seen * dmel.HOP - _DELAY - origin
        final = emit + f * dmel.HOP  # samples after this need frames not decoded yet
        out = audio[r, emit:final].astype(np.float32)
        ramp = np.linspace(0.0, 1.0, _CROSSFADE, dtype=np.float32)
        out[:_CROSSFADE] = v.tail * (1 - ramp) + out[:_CROSSFADE] * ramp
        v.tail = audio[r, final : final + _CROSSFADE].astype(np.float32)
        v.mag = mag[r, :, -c:]
        v.phase = np.angle(estimate[r, :, -c:]).astype(np.float32)
        if not bins[i][-c:].any():  # fell silent: forget, so silence costs nothing
            v.mag = np.zeros_like(v.mag)
            v.phase = np.zeros_like(v.phase)
            v.tail = np.zeros_like(v.tail)
        v.frames_seen += f
        outs[i] = np.clip(out, -1.0, 1.0)
    return outs
