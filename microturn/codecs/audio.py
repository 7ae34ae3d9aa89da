"""PCM conventions shared by every audio path: 16 kHz mono float32 in [-1, 1].

Everything that takes audio from outside checks it here, so a wrong sample rate or a
stereo file is a clear error at the boundary instead of a silently wrong model input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
SPEECH_DBFS = -45.0  # a 10 ms frame louder than this (RMS, dB full scale) is audible speech
ACTIVITY_FRAME = 160  # 10 ms


def audible_frames(pcm: np.ndarray, threshold_dbfs: float = SPEECH_DBFS) -> np.ndarray:
    """Per whole 10 ms frame of `pcm`: is it louder than `threshold_dbfs`?"""
    n = pcm.size // ACTIVITY_FRAME
    frames = np.asarray(pcm[: n * ACTIVITY_FRAME], np.float64).reshape(n, ACTIVITY_FRAME)
    rms = np.sqrt(np.mean(frames**2, axis=1) + 1e-12)
    return 20 * np.log10(rms) > threshold_dbfs


def validate_pcm(pcm: np.ndarray, sample_rate: int, *, what: str = "audio") -> np.ndarray:
    """Return `pcm` as contiguous float32 mono after checking rate, shape and values.

    Raises ValueError naming the problem: wrong sample rate, more than one channel,
    empty audio, a non-float dtype, or NaN / Inf samples.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"{what}: sample rate is {sample_rate} Hz, microturn needs {SAMPLE_RATE} Hz "
            "(resample on purpose, e.g. with --resample)"
        )
    arr = np.asarray(pcm)
    if arr.ndim == 2 and 1 in arr.shape:
        raise ValueError(f"{what}: expected a 1-D mono array, got shape {arr.shape} (squeeze it)")
    if arr.ndim != 1:
        raise ValueError(
            f"{what}: expected mono audio (1-D), got shape {arr.shape}; "
            "mix down on purpose, e.g. with --mixdown"
        )
    if arr.size == 0:
        raise ValueError(f"{what}: empty audio (0 samples)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what}: expected float samples in [-1, 1], got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{what}: {bad} NaN or Inf samples")
    return np.ascontiguousarray(arr, dtype=np.float32)


def read_wav(path: str | Path, *, resample: bool = False, mixdown: bool = False) -> np.ndarray:
    """Read an audio file as 16 kHz mono float32.

    Other rates and channel counts are errors unless `resample` / `mixdown` ask for the
    conversion; when they do, it is reported on stderr so nothing changes silently.
    """
    import sys

    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such audio file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"{path}: cannot read audio ({err})") from err
    if data.shape[1] > 1:
        if not mixdown:
            raise ValueError(
                f"{path}: {data.shape[1]} channels; microturn needs mono "
                "(pass --mixdown to average the channels)"
            )
        print(f"note: mixing {data.shape[1]} channels of {path} down to mono", file=sys.stderr)
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        if not resample:
            raise ValueError(
                f"{path}: sample rate is {rate} Hz, microturn needs {SAMPLE_RATE} Hz "
                "(pass --resample to convert)"
            )
        print(f"note: resampling {path} from {rate} Hz to {SAMPLE_RATE} Hz", file=sys.stderr)
        mono = resample_pcm(mono, rate)
    return validate_pcm(mono, SAMPLE_RATE, what=str(path))


def resample_pcm(pcm: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample with soxr (band-limited, well-kept); callers decide when this is on purpose."""
    import soxr

    if from_rate == to_rate:
        return np.asarray(pcm, dtype=np.float32)
    return soxr.resample(np.asarray(pcm, dtype=np.float32), from_rate, to_rate).astype(np.float32)


def to_pcm16(pcm: np.ndarray) -> bytes:
    """float [-1, 1] -> 16-bit little-endian PCM bytes (the wire format of the server,
    the browser and pocketsphinx); NaN becomes silence, overs are clipped."""
    x = np.clip(np.nan_to_num(np.asarray(pcm, np.float32)), -1.0, 1.0)
    return np.round(x * 32767.0).astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    """16-bit little-endian PCM bytes -> float32 in [-1, 1)."""
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def wav_bytes(pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Float mono audio as the bytes of a 16-bit PCM WAV file (for an HTTP upload)."""
    import io

    import soundfile as sf

    samples = np.frombuffer(to_pcm16(pcm), "<i2")  # the one float -> int16 conversion
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float32 mono audio as 16-bit PCM WAV, creating parent folders."""
    import soundfile as sf

    pcm = validate_pcm(pcm, sample_rate, what="audio to write") if pcm.size else pcm
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(pcm, -1.0, 1.0), sample_rate, subtype="PCM_16")
