"""Augmentation of the user's audio, so a small model learns words rather than one
synthesizer's sound (see ../shared/notes/measurements.md): level, noise floor, band
limits, spectral tilt and room reverb, all from scipy's filters; dMel channel masking on
the packed bins. Timing is never changed, so event times stay exact."""

from __future__ import annotations

import numpy as np
from scipy import signal

from microturn.codecs.audio import SAMPLE_RATE
from microturn.stream.layout import MicroTurns


def augment_audio(pcm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly degraded copy of `pcm` (same length, same timing)."""
    x = pcm.astype(np.float64)
    if rng.random() < 0.5:  # a room: exponentially decaying noise as impulse response
        rt60 = rng.uniform(0.1, 0.6)
        n = int(rt60 * SAMPLE_RATE)
        ir = rng.normal(0, 1, n) * np.exp(-6.9 * np.arange(n) / n)
        ir[0] = 1.0 / rng.uniform(0.05, 0.5)  # direct path against the reverberant tail
        wet = signal.fftconvolve(x, ir)[: x.size]
        x = wet * (np.max(np.abs(x)) / (np.max(np.abs(wet)) + 1e-9))
    if rng.random() < 0.5:  # telephone-ish or dull microphones
        cutoff = rng.uniform(2800, 7500)
        sos = signal.butter(4, cutoff, "lowpass", fs=SAMPLE_RATE, output="sos")
        x = signal.sosfilt(sos, x)
    if rng.random() < 0.3:
        low = rng.uniform(80, 400)
        sos = signal.butter(2, low, "highpass", fs=SAMPLE_RATE, output="sos")
        x = signal.sosfilt(sos, x)
    if rng.random() < 0.5:  # spectral tilt: a first-order emphasis or de-emphasis
        a = rng.uniform(-0.6, 0.6)
        x = signal.lfilter([1.0, -a], [1.0], x)
    peak = np.max(np.abs(x)) + 1e-9
    x = x / peak * 10 ** (rng.uniform(-24, -1) / 20)  # level
    noise_db = rng.uniform(-75, -40)  # a noise floor: espeak-ng writes digital silence
    noise = rng.normal(0, 1, x.size)
    if rng.random() < 0.5:  # pinkish
        noise = signal.lfilter([1.0], [1.0, -0.95], noise)
        noise /= np.std(noise) + 1e-9
    x = x + noise * 10 ** (noise_db / 20)
    return np.clip(x, -1, 1).astype(np.float32)


def mask_channels(turns: MicroTurns, rng: np.random.Generator, max_width: int = 12) -> None:
    """Frequency masking on the user's dMel bins (one band, whole episode), in place."""
    if rng.random() < 0.5:
        return
    width = int(rng.integers(1, max_width + 1))
    start = int(rng.integers(0, turns.user_audio.shape[-1] - width))
    turns.user_audio[..., start : start + width] = 0
