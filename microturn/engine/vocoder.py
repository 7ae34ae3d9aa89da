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


class StreamingVocoder:
    """Per-stream decoder state: the last frames' magnitudes and phases, and the tail of
    audio decoded but not yet final."""

    def __init__(self, n_iter: int = 4, context_frames: int = 8) -> None:
        if context_frames < _DELAY // dmel.HOP + 1:
            raise ValueError(f"context_frames must be >= {_DELAY // dmel.HOP + 1}")
        self.codec = dmel.DMelCodec()
        self.n_iter = n_iter
        self.context = context_frames
        self._mag = np.zeros((dmel.N_FFT // 2 + 1, 0), np.float32)
        self._phase = np.zeros((dmel.N_FFT // 2 + 1, 0), np.float32)
        self._tail = np.zeros(0, np.float32)  # previous decode of not-yet-final samples
        self.frames_seen = 0
        freqs = np.arange(dmel.N_FFT // 2 + 1)
        self._advance = (2 * np.pi * freqs * dmel.HOP / dmel.N_FFT).astype(np.float32)

    def push(self, bins: np.ndarray) -> np.ndarray:
        """New dMel frames [F, 80] -> F * 200 samples of speech (50 ms behind)."""
        import librosa

        bins = dmel.validate_bins(bins)
        f = bins.shape[0]
        if f == 0:
            return np.zeros(0, np.float32)
        silent = not bins.any() and not self._mag.size
        if silent:  # nothing said and nothing ringing: no work
            self.frames_seen += f
            return np.zeros(f * dmel.HOP, np.float32)
        mel = self.codec.bins_to_mel(bins)
        new_mag = np.maximum(self.codec.mel_pinv @ mel, 0.0)
        new_mag[:, ~bins.any(axis=1)] = 0.0
        mag = np.concatenate([self._mag, new_mag], axis=1)
        c = self._mag.shape[1]
        # Phase: carried over for context frames, advanced at each bin's frequency after.
        last = self._phase[:, -1] if c else np.zeros(mag.shape[0], np.float32)
        steps = np.arange(1, f + 1, dtype=np.float32)[None, :]
        new_phase = last[:, None] + self._advance[:, None] * steps
        phase = np.concatenate([self._phase, new_phase], axis=1)
        n = mag.shape[1]
        stft_args = {
            "n_fft": dmel.N_FFT,
            "hop_length": dmel.HOP,
            "win_length": dmel.WIN_LENGTH,
            "window": "hann",
            "center": False,
        }
        length = (n - 1) * dmel.HOP + dmel.N_FFT
        estimate = mag * np.exp(1j * phase)
        for _ in range(self.n_iter):
            audio = librosa.istft(estimate, length=length, **stft_args)
            rebuilt = librosa.stft(audio, **stft_args)
            estimate = mag * np.exp(1j * np.angle(rebuilt))
        audio = librosa.istft(estimate, length=length, **stft_args)
        # Decoded audio starts at original sample (first frame)*200 - 712.
        first_frame = self.frames_seen - c
        origin = first_frame * dmel.HOP - _LEFT
        final_end = (self.frames_seen + f) * dmel.HOP - _DELAY  # covered by all its frames
        emit_start = self.frames_seen * dmel.HOP - _DELAY
        if emit_start >= origin:
            out = audio[emit_start - origin : final_end - origin].astype(np.float32)
        else:  # the stream's first frames: nothing was decoded before `origin`
            head = np.zeros(origin - emit_start, np.float32)
            out = np.concatenate([head, audio[: final_end - origin]]).astype(np.float32)
        fade = min(_CROSSFADE, self._tail.size, out.size)
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            out[:fade] = self._tail[:fade] * (1 - ramp) + out[:fade] * ramp
        self._tail = audio[final_end - origin : final_end - origin + _CROSSFADE].astype(np.float32)
        # Keep the last frames and the phase the iterations ended with.
        keep = min(self.context, n)
        self._mag = mag[:, -keep:]
        self._phase = np.angle(estimate[:, n - keep : n]).astype(np.float32)
        if not bins[-keep:].any():  # fell silent: forget, so silence costs nothing
            self._mag = self._mag[:, :0]
            self._phase = self._phase[:, :0]
        self.frames_seen += f
        return np.clip(out, -1.0, 1.0)
