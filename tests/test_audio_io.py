import numpy as np
import pytest
import soundfile as sf

from microturn.codecs.audio import from_pcm16, read_wav, to_pcm16, wav_bytes, write_wav


def test_wav_round_trip(tmp_path) -> None:
    pcm = (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    write_wav(tmp_path / "a.wav", pcm)
    back = read_wav(tmp_path / "a.wav")
    assert back.dtype == np.float32 and np.abs(back - pcm).max() < 1e-3


def test_wrong_rate_is_an_error_unless_asked(tmp_path, capsys) -> None:
    sf.write(tmp_path / "a.wav", np.zeros(44100, np.float32), 44100)
    with pytest.raises(ValueError, match=r"44100 Hz.*--resample"):
        read_wav(tmp_path / "a.wav")
    out = read_wav(tmp_path / "a.wav", resample=True)
    assert out.size == 16000
    assert "resampling" in capsys.readouterr().err


def test_stereo_is_an_error_unless_asked(tmp_path, capsys) -> None:
    sf.write(tmp_path / "s.wav", np.zeros((1600, 2), np.float32), 16000)
    with pytest.raises(ValueError, match=r"2 channels.*--mixdown"):
        read_wav(tmp_path / "s.wav")
    assert read_wav(tmp_path / "s.wav", mixdown=True).shape == (1600,)
    assert "mixing 2 channels" in capsys.readouterr().err


def test_missing_and_garbage_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="no such audio file"):
        read_wav(tmp_path / "nope.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00garbage" * 10)
    with pytest.raises(ValueError, match="cannot read audio"):
        read_wav(tmp_path / "junk.wav")


def test_empty_file_is_an_error(tmp_path) -> None:
    sf.write(tmp_path / "e.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="empty"):
        read_wav(tmp_path / "e.wav")


def test_pcm16_round_trip_clips_and_silences_nan(tmp_path) -> None:
    x = np.array([0.0, 0.5, -0.5, 1.5, -1.5, np.nan], np.float32)
    back = from_pcm16(to_pcm16(x))
    assert back.dtype == np.float32 and back.shape == x.shape
    np.testing.assert_allclose(back[:3], x[:3], atol=1 / 32767)
    assert back[3] == pytest.approx(1.0, abs=1e-4) and back[4] == pytest.approx(-1.0, abs=1e-4)
    assert back[5] == 0.0
    path = tmp_path / "upload.wav"
    path.write_bytes(wav_bytes(x[:3]))
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16_000
    np.testing.assert_allclose(audio, x[:3], atol=1 / 32767)
