"""Augmentation of the user's audio, so a small model learns words rather than one
synthesizer's sound (see ../shared/notes/measurements.md): pitch and formant shift
(librosa's time-preserving shift), random EQ, band limits, spectral tilt, room reverb,
level and a noise floor (scipy's filters); dMel channel masking on the packed bins, and
per batch a level shift of the bins and camera noise (`augment_batch`). Timing is never
changed, so event times stay exact; speaking rate varies at synthesis instead."""

from __future__ import annotations

import numpy as np
import torch
from scipy import signal

from microturn.codecs import dmel
from microturn.codecs.audio import SAMPLE_RATE
from microturn.stream.layout import MicroTurns


def augment_audio(pcm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly degraded copy of `pcm` (same length, same timing)."""
    x = pcm.astype(np.float64)
    if rng.random() < 0.35:  # another vocal tract: pitch and formants move together
        import librosa  # here, not above: GPU training machines lack it (shards are ready)

        steps = rng.uniform(-2.5, 2.5)
        x = librosa.effects.pitch_shift(x, sr=SAMPLE_RATE, n_steps=steps)
    if rng.random() < 0.5:  # random EQ: a smooth gain curve of +-9 dB over 5 bands
        freqs = np.array([0, 250, 700, 1800, 4000, SAMPLE_RATE / 2])
        gains = 10 ** (rng.uniform(-9, 9, freqs.size) / 20)
        x = signal.fftconvolve(x, signal.firwin2(129, freqs, gains, fs=SAMPLE_RATE), "same")
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


def augment_batch(batch: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    """Per-batch augmentation on the device, in place, so every epoch sees new variants:
    the user's dMel bins shifted by -1..+1 bin per sequence (a level change of ~11 dB;
    silence stays silence), and camera noise (shards store noise-free frames)."""
    audio = batch["user_audio"]
    b = audio.shape[0]
    shift = torch.randint(-1, 2, (b,), generator=generator, device="cpu").to(audio.device)
    shift = shift.view(b, *([1] * (audio.dim() - 1)))
    shifted = (audio.long() + shift).clamp(1, dmel.N_BINS - 1)
    batch["user_audio"] = torch.where(audio > 0, shifted, audio.long()).to(audio.dtype)
    video = batch.get("user_video")
    if video is not None and video.numel():
        std = torch.rand((b,), generator=generator, device="cpu").to(video.device) * 5
        std = std.view(b, *[1] * (video.dim() - 1))
        # noise drawn on the device (fast) from a generator seeded by ours (reproducible)
        seed = int(torch.randint(2**62, (1,), generator=generator).item())
        device_gen = torch.Generator(device=video.device).manual_seed(seed)
        noise = torch.randn(video.shape, generator=device_gen, device=video.device) * std
        batch["user_video"] = (video.float() + noise).round().clamp(0, 255).to(video.dtype)
