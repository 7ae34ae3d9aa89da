"""On-disk cache of rendered speech, safe for many worker processes at once.

One .npz per (code version, engine, voice name, rate, pitch, text), named by a hash of
those. Files are written to a temporary name and moved into place with os.replace, so a
reader sees a whole file or none; a file that cannot be read back is deleted and the
speech rendered again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from microturn.stream.episode import Word

from .base import Voice

# Bump when rendering or word timing changes, so old cache entries are not reused.
CACHE_VERSION = 1

_UNREADABLE = (
    OSError,
    ValueError,
    KeyError,
    EOFError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    zlib.error,
)


def default_cache_dir() -> Path:
    """`$MICROTURN_CACHE/voices`, else `~/.cache/microturn/voices`."""
    root = os.environ.get("MICROTURN_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "microturn"
    return base / "voices"


def entry_path(cache_dir: Path, voice: Voice, text: str) -> Path:
    """Where the speech for (voice, text) is kept."""
    ident = json.dumps(
        [CACHE_VERSION, voice.engine, voice.name, voice.rate, voice.pitch, text],
        ensure_ascii=False,
    )
    digest = hashlib.sha256(ident.encode("utf-8")).hexdigest()
    return Path(cache_dir) / voice.engine / digest[:2] / f"{digest}.npz"


def load(path: Path, voice: Voice, text: str) -> tuple[np.ndarray, tuple[Word, ...]] | None:
    """The cached (audio, words), or None when absent; an unreadable file is deleted."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION or str(z["key"]) != voice.key():
                raise ValueError("cache entry for another voice or version")
            if str(z["text"]) != text:
                raise ValueError("cache entry for another text")
            audio = np.ascontiguousarray(z["audio"])
            texts, starts, ends = z["word_text"], z["word_start"], z["word_end"]
        if audio.dtype != np.float32 or audio.ndim != 1 or audio.size == 0:
            raise ValueError("cached audio is not 1-D float32")
        if not np.all(np.isfinite(audio)) or not len(texts) == len(starts) == len(ends):
            raise ValueError("cached speech is damaged")
        words = tuple(
            Word(str(t), float(s), float(e)) for t, s, e in zip(texts, starts, ends, strict=True)
        )
    except _UNREADABLE:
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return audio, words


def store(path: Path, voice: Voice, text: str, audio: np.ndarray, words: tuple[Word, ...]) -> None:
    """Write atomically (temporary file + os.replace); a cache that cannot be written only warns."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                version=np.array(CACHE_VERSION),
                key=np.array(voice.key()),
                text=np.array(text),
                audio=np.asarray(audio, dtype=np.float32),
                word_text=np.array([w.text for w in words], dtype=str),
                word_start=np.array([w.start_s for w in words], dtype=np.float64),
                word_end=np.array([w.end_s for w in words], dtype=np.float64),
            )
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        warnings.warn(f"could not write speech cache {path}: {err}", stacklevel=3)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
