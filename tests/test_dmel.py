import numpy as np
import pytest

from microturn.codecs import dmel
from microturn.codecs.dmel import DMelCodec

codec = DMelCodec()


@pytest.mark.parametrize("fixture", ["speech", "flite_speech"])
def test_round_trip_keeps_speech(fixture: str, request: pytest.FixtureRequest) -> None:
    pcm = request.getfixturevalue(fixture)
    bins = codec.encode(pcm)
    assert bins.dtype == np.uint8 and bins.shape == (dmel.n_frames(pcm.size), 80)
    assert bins.max() < 16 and len(np.unique(bins)) >= 6  # speech uses many bins
    decoded = codec.decode(bins)
    assert decoded.shape == (bins.shape[0] * dmel.HOP,)
    # Quantization alone costs ~0.14 decades; measured round trip ~0.16.
    assert codec.mel_distance(pcm, decoded) < 0.25
    again = codec.encode(decoded)
    assert (again == bins).mean() > 0.8
    assert (np.abs(again.astype(int) - bins) <= 1).mean() > 0.97


def test_decoded_audio_is_not_noise(speech: np.ndarray) -> None:
    """A decoded signal must correlate with the original's loudness envelope."""
    decoded = codec.decode(codec.encode(speech))
    n = min(speech.size, decoded.size) // dmel.HOP * dmel.HOP
    env_a = np.abs(speech[:n]).reshape(-1, dmel.HOP).mean(1)
    env_b = np.abs(decoded[:n]).reshape(-1, dmel.HOP).mean(1)
    assert np.corrcoef(env_a, env_b)[0, 1] > 0.8


def test_silence_is_bin_zero_and_decodes_to_zeros() -> None:
    bins = codec.encode(np.zeros(3200, np.float32))
    assert bins.shape == (16, 80) and not bins.any()
    assert not codec.decode(bins).any()


@pytest.mark.parametrize(
    ("seconds", "frames"), [(0.37, 30), (0.2, 16), (0.0125, 1), (0.01, 1), (1.0, 80)]
)
def test_frame_counts_for_odd_lengths(seconds: float, frames: int) -> None:
    n = round(seconds * 16000)
    assert dmel.n_frames(n) == frames
    assert codec.encode(np.full(n, 0.01, np.float32)).shape == (frames, 80)


def test_zero_seconds_is_zero_frames_but_encoding_it_is_an_error() -> None:
    assert dmel.n_frames(0) == 0
    with pytest.raises(ValueError, match="empty audio"):
        codec.encode(np.zeros(0, np.float32))
    assert codec.decode(np.zeros((0, 80), np.uint8)).size == 0


def test_streaming_encoder_matches_offline(speech: np.ndarray) -> None:
    n = speech.size // 3200 * 3200
    stream = codec.stream()
    chunks = [stream.push(speech[i : i + 3200]) for i in range(0, n, 3200)]
    assert np.array_equal(np.concatenate(chunks), codec.encode(speech[:n]))


def test_frames_are_causal(speech: np.ndarray) -> None:
    """Changing the future never changes past frames."""
    a = codec.encode(speech[:16000])
    altered = speech[:16000].copy()
    altered[8000:] = 0.5 * np.sin(np.arange(8000))
    b = codec.encode(altered)
    assert np.array_equal(a[:40], b[:40])  # frames 0..39 end at or before sample 8000
    assert not np.array_equal(a[40:], b[40:])


def test_stream_chunk_must_be_whole_hops() -> None:
    with pytest.raises(ValueError, match="multiple of the 200-sample hop"):
        codec.stream().push(np.zeros(250, np.float32))


@pytest.mark.parametrize(
    ("pcm", "rate", "match"),
    [
        (np.zeros(1600, np.float32), 44100, "44100 Hz"),
        (np.zeros((2, 1600), np.float32), 16000, "mono"),
        (np.zeros((1600, 2), np.float32), 16000, "mono"),
        (np.zeros(0, np.float32), 16000, "empty"),
        (np.array([0.0, np.nan] * 100, np.float32), 16000, "NaN or Inf"),
        (np.array([0.0, np.inf] * 100, np.float32), 16000, "NaN or Inf"),
        (np.zeros(1600, np.int16), 16000, "dtype int16"),
    ],
)
def test_bad_audio_is_a_clear_error(pcm: np.ndarray, rate: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        codec.encode(pcm, rate)


@pytest.mark.parametrize(
    ("bins", "match"),
    [
        (np.zeros((4, 79), np.uint8), "shape"),
        (np.full((4, 80), 16, np.uint8), "0..15"),
        (np.full((4, 80), -1, np.int16), "0..15"),
        (np.zeros((4, 80), np.float32), "integers"),
    ],
)
def test_bad_bins_are_a_clear_error(bins: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        codec.decode(bins)


def test_unknown_decode_method() -> None:
    with pytest.raises(ValueError, match="unknown decode method"):
        codec.decode(np.zeros((4, 80), np.uint8), method="magic")
