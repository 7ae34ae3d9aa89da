"""Festival through its CLI (`festival --batch`), for the held-out `unseen_engine` split.

Festival is a third synthesizer whose sound no training voice shares (see
shared/notes/measurements.md: a small model learns an engine's sound, so one whole engine
is kept out of training). Its two 16 kHz English diphone voices come from Debian:
kal_diphone (festvox-kallpc16k) and ked_diphone (festvox-kdlpc16k).

One small Scheme script per render synthesizes the text, saves a RIFF WAV and prints the
utterance's tokens with their words' times: a token ("4", "Dr.") expands to words ("four",
"doctor") whose first segment start and `word_end` bound it. Punctuation "words" have no
syllables and are skipped; a token with no spoken word (e.g. "--") is left out, as flite
does. When festival's tokens do not line up one to one with the text's whitespace tokens
the words are left out (empty tuple) rather than guessed.

Rate maps to `Duration_Stretch = 1.1 * 175 / rate` (1.1 is both voices' own stretch, taken
as their 175 wpm). Pitch maps like flite's: `target_f0_mean = 105 * 2 ** ((pitch - 50) / 75)`
Hz in the voices' linear-regression intonation (`int_lr_params`; 105 Hz is both voices'
own mean), so 50 keeps the voice's pitch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from microturn.codecs.audio import SAMPLE_RATE, resample_pcm
from microturn.stream.episode import Word

from .base import DEFAULT_RATE, MissingSynthesizerError, Voice, token_spans, word_text

ENGINE = "festival"
_INSTALL = "apt-get install festival festvox-kallpc16k festvox-kdlpc16k"
# The voices we use and the Debian package that brings each.
VOICE_PACKAGES = {"kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k"}
_OWN_STRETCH = 1.1  # both voices set Duration_Stretch 1.1 when selected
_F0_MEAN_HZ = 105.0  # target_f0_mean of both voices
_F0_STD_HZ = {"kal_diphone": 14.0, "ked_diphone": 15.0}
_TIMEOUT_S = 120

# Prints "T\t<token>" for each top-level token, then "W\t<word>\t<n syllables>\t<start>\t<end>"
# for each of its words. Flattened Token items include the words, so only parentless ones.
_REPORT = """
(mapcar
  (lambda (tok)
    (if (not (item.parent tok))
      (begin
        (format t "T\\t%s\\n" (item.name tok))
        (mapcar
          (lambda (w)
            (format t "W\\t%s\\t%d\\t%f\\t%f\\n" (item.name w)
              (length (item.relation.daughters w 'SylStructure))
              (item.feat w "R:SylStructure.daughter1.daughter1.segment_start")
              (item.feat w "word_end")))
          (item.daughters tok)))))
  (utt.relation.items utt 'Token))
"""


def _binary() -> str:
    path = shutil.which("festival")
    if path is None:
        raise MissingSynthesizerError(f"festival is not installed (not on PATH); {_INSTALL}")
    return path


def _run(binary: str, script: str) -> str:
    """Run a Scheme script in batch mode (C locale: festival reads floats with atof)."""
    env = {**os.environ, "LC_ALL": "C"}
    with tempfile.TemporaryDirectory(prefix="microturn-festival-") as tmp:
        path = Path(tmp) / "run.scm"
        path.write_text(script, encoding="utf-8")
        proc = subprocess.run(
            [binary, "--batch", str(path)],
            capture_output=True,
            env=env,
            timeout=_TIMEOUT_S,
            check=False,
        )
    out = proc.stdout.decode("utf-8", errors="replace")
    err = proc.stderr.decode("utf-8", errors="replace").strip()
    # festival exits 255 on a Scheme error and prints "SIOD ERROR" (sometimes on stdout).
    if proc.returncode != 0 or "SIOD ERROR" in out + err:
        raise RuntimeError(f"festival failed ({proc.returncode}): {(err or out)[-500:]}")
    return out


@lru_cache(maxsize=4)
def _installed(binary: str) -> tuple[str, ...]:
    """The voices festival can load (`voice.list`)."""
    out = _run(binary, "(print (voice.list))\n")
    return tuple(out.strip().strip("()").split())


def list_voices() -> list[Voice]:
    """kal_diphone and ked_diphone, where their packages are installed."""
    names = _installed(_binary())
    return [Voice(ENGINE, n) for n in sorted(VOICE_PACKAGES) if n in names]


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _script(text: str, voice: Voice, wav: Path) -> str:
    lines = [f"(voice_{voice.name})"]
    if voice.rate is not None:
        stretch = _OWN_STRETCH * DEFAULT_RATE / voice.rate
        lines.append(f"(Parameter.set 'Duration_Stretch {stretch:.4f})")
    if voice.pitch is not None:
        mean = _F0_MEAN_HZ * 2 ** ((voice.pitch - 50) / 75)
        std = _F0_STD_HZ[voice.name]
        lines.append(
            f"(set! int_lr_params '((target_f0_mean {mean:.1f}) (target_f0_std {std:.1f}) "
            "(model_f0_mean 170) (model_f0_std 34)))"
        )
    lines.append(f"(set! utt (utt.synth (Utterance Text {_scheme_string(text)})))")
    lines.append(f"(utt.save.wave utt {_scheme_string(str(wav))} 'riff)")
    return "\n".join(lines) + "\n" + _REPORT


def render(text: str, voice: Voice) -> tuple[np.ndarray, tuple[Word, ...]]:
    """Speak `text` with festival: 16 kHz float32 audio and (when they line up) word timings."""
    import soundfile as sf

    binary = _binary()
    if voice.name not in VOICE_PACKAGES:
        raise ValueError(f"festival voice {voice.name!r} is not one of {sorted(VOICE_PACKAGES)}")
    if voice.name not in _installed(binary):
        package = VOICE_PACKAGES[voice.name]
        raise MissingSynthesizerError(
            f"festival voice {voice.name} is not installed; apt-get install {package}"
        )
    with tempfile.TemporaryDirectory(prefix="microturn-festival-") as tmp:
        wav = Path(tmp) / "out.wav"
        out = _run(binary, _script(text, voice, wav))
        if not wav.is_file():
            raise RuntimeError(f"festival wrote no audio for {text!r}")
        pcm, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = np.clip(resample_pcm(pcm.mean(axis=1), rate), -1.0, 1.0)
    if audio.size == 0:
        raise ValueError(f"festival produced no audio for {text!r} (nothing speakable?)")
    duration = audio.size / SAMPLE_RATE
    words = tuple(
        Word(w.text, min(w.start_s, duration), min(w.end_s, duration))
        for w in _align(text, _parse(out))
    )
    return audio, words


def _parse(out: str) -> list[list[tuple[float, float]]]:
    """Per top-level token, the (start, end) of its spoken words (those with syllables)."""
    tokens: list[list[tuple[float, float]]] = []
    for line in out.splitlines():
        fields = line.split("\t")
        if fields[0] == "T" and len(fields) == 2:
            tokens.append([])
        elif fields[0] == "W" and len(fields) == 5 and tokens and int(fields[2]) > 0:
            tokens[-1].append((float(fields[3]), float(fields[4])))
    return tokens


def _align(text: str, tokens: list[list[tuple[float, float]]]) -> tuple[Word, ...]:
    """One Word per whitespace token that festival spoke; () when the counts differ."""
    spans = token_spans(text)
    if len(spans) != len(tokens):
        return ()
    words = []
    prev_end = 0.0
    for (s, e), times in zip(spans, tokens, strict=True):
        if not times:
            continue
        start, end = min(t[0] for t in times), max(t[1] for t in times)
        if not prev_end <= start < end:
            return ()
        words.append(Word(word_text(text[s:e]), start, end))
        prev_end = end
    return tuple(words)
