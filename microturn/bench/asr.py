"""What the model actually said: voice activity + pocketsphinx over its output audio.

A system's text track says what it meant to say; the benchmark also scores what came out
of its speaker. `asr_timeline` finds where the model's audio has speech, transcribes each
stretch and returns a Timeline whose speech is those stretches, so words written on the
text track but never voiced count as not said (and voiced babble counts as speech).

ASR is pocketsphinx from PyPI (`pip install pocketsphinx`): it ships a US English acoustic
model, dictionary and language model inside the wheel, runs offline on a CPU at ~0.1x
real time, and transcribes the model's voice (flite slt) well; see `measure_wer` and
`python -m microturn.bench.asr` for the figures on typical scenario sentences.

Voice activity is plain energy, chosen for synthesized speech:
- 10 ms frames; a frame is active when its RMS is at least -45 dBFS. flite slt speech sits
  at -10..-20 dBFS, its fricative onsets around -40; its noise floor and the residue of
  dMel's Griffin-Lim decoding lie below -55.
- Gaps shorter than 0.3 s are bridged (a hangover), so stop closures and comma pauses
  (< 0.25 s in flite) do not split an utterance, while utterances placed apart (a
  countdown at one number a second leaves ~0.5 s between numbers) stay apart.
- Stretches with under 80 ms of active frames are dropped (clicks). Stretches less than
  2 s apart are transcribed together (with 0.1 s of audio either side, since onsets start
  below the threshold) and each recognized word goes to the stretch its middle falls in:
  pocketsphinx's language model hears lone short words poorly and numbers in a row well.

Decoder settings: the bundled model as shipped, plus vocal tract length normalization with
a warp of 1.3, because slt is a high female voice: on 24 short flite slt cues (numbers,
"turn left", acknowledgements), clean and after dMel, exact transcripts went from 41 to
46 of 48. The feature state (noise and CMN estimates) is reset before every call, so a
transcript does not depend on what was decoded before; one lock guards the one decoder.
"""

from __future__ import annotations

import dataclasses
import threading
from functools import lru_cache
from typing import Any

import numpy as np

from microturn.codecs.audio import SAMPLE_RATE, to_pcm16, validate_pcm
from microturn.stream.episode import SpeechSegment, Timeline, Word

FRAME_S = 0.01
ACTIVE_DBFS = -45.0
HANGOVER_S = 0.3
MIN_ACTIVE_S = 0.08
CONTEXT_S = 0.1
VTLN_WARP = 1.3
GROUP_GAP_S = 2.0
_FRAME = round(FRAME_S * SAMPLE_RATE)
# pocketsphinx's own tokens that are not words: silence, sentence marks, fillers.
_NOT_WORDS = {"<s>", "</s>", "<sil>"}
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _decoder() -> Any:
    """One pocketsphinx decoder per process (loading the model takes ~0.3 s)."""
    try:
        from pocketsphinx import Decoder
    except ImportError as err:  # pragma: no cover - a dependency of the project
        raise RuntimeError("pocketsphinx is not installed: pip install pocketsphinx") from err
    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", warp_params=str(VTLN_WARP))


def _decode(pcm: np.ndarray) -> tuple[str, list[tuple[str, float, float]]]:
    """Text and (word, start, end) seconds within `pcm`."""
    raw = to_pcm16(pcm)
    with _LOCK:
        dec = _decoder()
        dec.reinit_feat()  # noise and CMN estimates otherwise carry over between calls
        dec.start_utt()
        dec.process_raw(raw, full_utt=True)
        dec.end_utt()
        if dec.hyp() is None:
            return "", []
        frame_s = 1.0 / float(dec.config["frate"])
        words = [
            (seg.word, seg.start_frame * frame_s, (seg.end_frame + 1) * frame_s)
            for seg in dec.seg()
            if seg.word not in _NOT_WORDS and not seg.word.startswith("[")
        ]
    # Alternative pronunciations are written "word(2)".
    words = [(w.split("(", 1)[0], s, e) for w, s, e in words]
    return " ".join(w for w, _, _ in words), words


def transcribe(pcm: np.ndarray) -> str:
    """Lowercase words heard in 16 kHz mono float32 `pcm`; "" when no frame is loud enough
    to be speech (pocketsphinx "hears" words in digital silence)."""
    pcm = validate_pcm(pcm, SAMPLE_RATE, what="audio to transcribe")
    return _decode(pcm)[0] if speech_stretches(pcm) else ""


def active_frames(pcm: np.ndarray) -> np.ndarray:
    """Per 10 ms frame: is its RMS at least ACTIVE_DBFS?"""
    n = pcm.size // _FRAME
    frames = pcm[: n * _FRAME].reshape(n, _FRAME).astype(np.float64)
    rms_db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    return rms_db >= ACTIVE_DBFS


def speech_stretches(pcm: np.ndarray) -> list[tuple[float, float]]:
    """(start_s, end_s) of each stretch of speech in `pcm`, gaps < HANGOVER_S bridged."""
    pcm = validate_pcm(pcm, SAMPLE_RATE, what="model audio")
    active = np.flatnonzero(active_frames(pcm))
    if active.size == 0:
        return []
    max_gap = round(HANGOVER_S / FRAME_S)
    breaks = np.flatnonzero(np.diff(active) > max_gap)
    firsts = np.concatenate([[0], breaks + 1])
    lasts = np.concatenate([breaks, [active.size - 1]])
    stretches = []
    for a, b in zip(firsts, lasts, strict=True):
        if (b - a + 1) * FRAME_S < MIN_ACTIVE_S:
            continue
        stretches.append((active[a] * FRAME_S, (active[b] + 1) * FRAME_S))
    return stretches


def asr_segments(model_audio: np.ndarray) -> list[SpeechSegment]:
    """The model's speech as heard: one segment per voiced stretch, text from ASR.

    Stretches less than GROUP_GAP_S apart are decoded in one ASR call and the words are
    handed back to the stretch they fall in: the language model needs context (a lone
    "Two." comes back as "deal", inside "four three two one" it is heard right).
    """
    pcm = validate_pcm(model_audio, SAMPLE_RATE, what="model audio")
    stretches = speech_stretches(pcm)
    segments = []
    for group in _groups(stretches):
        a = max(0, round((group[0][0] - CONTEXT_S) * SAMPLE_RATE))
        b = min(pcm.size, round((group[-1][1] + CONTEXT_S) * SAMPLE_RATE))
        offset = a / SAMPLE_RATE
        heard = [(w, offset + s, offset + e) for w, s, e in _decode(pcm[a:b])[1]]
        for start, end in group:
            words = tuple(
                Word(w, min(max(s, start), end), min(max(e, start), end))
                for w, s, e in heard
                if start - CONTEXT_S <= (s + e) / 2 < end + CONTEXT_S
            )
            segments.append(SpeechSegment(start, end, " ".join(w.text for w in words), words))
    return segments


def _groups(stretches: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """Consecutive stretches with gaps under GROUP_GAP_S, decoded together."""
    groups: list[list[tuple[float, float]]] = []
    for st in stretches:
        if groups and st[0] - groups[-1][-1][1] < GROUP_GAP_S:
            groups[-1].append(st)
        else:
            groups.append([st])
    return groups


def asr_timeline(timeline: Timeline, model_audio: np.ndarray) -> Timeline:
    """A copy of `timeline` whose speech is what the model's audio says.

    `model_audio` is the system's whole output, 16 kHz mono float32, sample 0 at episode
    time 0. Actions and turn records are kept; the text-track speech is replaced.
    """
    meta = {
        **timeline.meta,
        "speech_source": "asr",
        "asr": {
            "engine": "pocketsphinx",
            "active_dbfs": ACTIVE_DBFS,
            "hangover_s": HANGOVER_S,
            "frame_s": FRAME_S,
            "vtln_warp": VTLN_WARP,
        },
    }
    return dataclasses.replace(
        timeline,
        speech=asr_segments(model_audio),
        actions=list(timeline.actions),
        turns=list(timeline.turns),
        meta=meta,
    )


# ---------------------------------------------------------------------------------
# How well it hears the model's voice
# ---------------------------------------------------------------------------------

# Short sentences like the scenarios' reference replies (numbers, cues, acknowledgements).
WER_SENTENCES = (
    "Breathe in.",
    "Breathe out.",
    "Turn left.",
    "Okay, I will remind you every five seconds.",
    "Ten.",
    "Seven.",
    "Three, two, one.",
    "Sure, I will say it in about eight seconds.",
    "Okay.",
    "Mm-hmm.",
    "Yeah, go on.",
    "Sorry, you wanted to know about the weather?",
    "Stand up and stretch.",
    "Drink some water.",
    "Four hundred and twelve.",
    "The capital of France is Paris.",
    "Sure, let me count to twenty.",
    "Of course. What would you like to ask?",
    "Time to check the oven.",
    "Got it, I will stop now.",
)


def word_error_rate(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words) between the normalized texts (Levenshtein on words)."""
    from microturn.scenarios.scoring import normalize

    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def measure_wer(sentences: tuple[str, ...] = WER_SENTENCES) -> dict[str, Any]:
    """Corpus WER of ASR on the model's voice, clean and after a dMel encode/decode."""
    from microturn.codecs.dmel import DMelCodec
    from microturn.scenarios.base import MODEL_VOICE
    from microturn.voices import synthesize

    codec = DMelCodec()
    totals = {"clean": [0, 0], "dmel": [0, 0]}
    rows = []
    for text in sentences:
        audio = synthesize(text, MODEL_VOICE).audio
        heard = {"clean": transcribe(audio), "dmel": transcribe(codec.decode(codec.encode(audio)))}
        for kind, hyp in heard.items():
            edits, n = word_error_rate(text, hyp)
            totals[kind][0] += edits
            totals[kind][1] += n
        rows.append({"text": text, **heard})
    return {
        "voice": MODEL_VOICE.key(),
        "sentences": len(sentences),
        "wer_clean": totals["clean"][0] / totals["clean"][1],
        "wer_dmel": totals["dmel"][0] / totals["dmel"][1],
        "rows": rows,
    }


if __name__ == "__main__":
    result = measure_wer()
    for row in result["rows"]:
        print(f"{row['text']!r:55} clean: {row['clean']!r:45} dmel: {row['dmel']!r}")
    print(f"WER clean {result['wer_clean']:.3f}  after dMel {result['wer_dmel']:.3f}")
