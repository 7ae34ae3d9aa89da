import numpy as np
import pytest
import soundfile as sf

from microturn.cli import main
from microturn.codecs.audio import read_wav, write_wav


def test_codec_roundtrip_command(tmp_path, speech, capsys) -> None:
    write_wav(tmp_path / "in.wav", speech)
    rc = main(
        [
            "codec",
            "roundtrip",
            str(tmp_path / "in.wav"),
            str(tmp_path / "out.wav"),
            "--plot",
            str(tmp_path / "bins.png"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    distance = float(out.split("mel distance: ")[1].split()[0])
    assert 0 < distance < 0.25
    kept = read_wav(tmp_path / "out.wav")
    assert abs(kept.size - speech.size) < 200
    assert (tmp_path / "bins.png").read_bytes()[:4] == b"\x89PNG"


def test_roundtrip_refuses_wrong_rate_without_flag(tmp_path, capsys) -> None:
    sf.write(tmp_path / "hi.wav", np.zeros(22050, np.float32), 22050)
    assert main(["codec", "roundtrip", str(tmp_path / "hi.wav"), str(tmp_path / "o.wav")]) == 2
    assert "22050 Hz" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()
    rc = main(
        ["codec", "roundtrip", str(tmp_path / "hi.wav"), str(tmp_path / "o.wav"), "--resample"]
    )
    assert rc == 0 and (tmp_path / "o.wav").exists()


def test_say_command_writes_speech_with_word_times(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MICROTURN_CACHE", str(tmp_path / "cache"))
    rc = main(["say", "count down from ten", str(tmp_path / "s.wav"), "--voice", "flite:slt"])
    assert rc == 0
    pcm = read_wav(tmp_path / "s.wav")
    assert pcm.size > 8000 and np.abs(pcm).max() > 0.05
    out = capsys.readouterr().out
    assert "down" in out and "flite:slt" in out


def test_say_unknown_voice(tmp_path, capsys) -> None:
    assert main(["say", "hi", str(tmp_path / "s.wav"), "--voice", "nosuch:x"]) == 2
    assert "engine" in capsys.readouterr().err


def test_layout_command(capsys) -> None:
    assert main(["layout", "--preset", "tiny"]) == 0
    assert "21 slots" in capsys.readouterr().out
    assert main(["layout", "--preset", "enormous"]) == 2


def test_data_command_rejects_a_bad_mix(tmp_path) -> None:
    assert main(["data", "--out", str(tmp_path), "--mix", "time_awareness:3"]) == 2
    assert main(["data", "--out", str(tmp_path), "--first-seed", "-1"]) == 2


def test_train_command_has_the_trainer_flags(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--eval-data" in capsys.readouterr().out


def test_calibrate_command_rejects_bad_biases(tmp_path, capsys) -> None:
    assert main(["bench", "calibrate", str(tmp_path), "--biases", "low,high"]) == 2
    assert "--biases" in capsys.readouterr().err
    assert main(["bench", "calibrate", str(tmp_path / "nothing"), "--biases", "0,1"]) == 2
    assert "not a microturn checkpoint" in capsys.readouterr().err
