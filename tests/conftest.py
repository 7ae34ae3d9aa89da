"""Shared fixtures: real synthesized speech (espeak-ng, flite), rendered once per session."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def voice_cache(tmp_path_factory: pytest.TempPathFactory):
    """One synthesis cache for the whole test session, never the user's own."""
    import os

    root = tmp_path_factory.mktemp("microturn-cache")
    old = os.environ.get("MICROTURN_CACHE")
    os.environ["MICROTURN_CACHE"] = str(root)
    yield root / "voices"
    if old is None:
        os.environ.pop("MICROTURN_CACHE", None)
    else:
        os.environ["MICROTURN_CACHE"] = old


@pytest.fixture(scope="session")
def speech(voice_cache) -> np.ndarray:
    """About 4 s of espeak-ng speech at 16 kHz."""
    from microturn.voices import synthesize

    s = synthesize(
        "remind me to breathe in and out every four seconds until I say stop",
        "espeak-ng:en-us",
        cache_dir=voice_cache,
    )
    return s.audio


@pytest.fixture(scope="session")
def flite_speech(voice_cache) -> np.ndarray:
    from microturn.voices import synthesize

    return synthesize("count down from ten", "flite:slt", cache_dir=voice_cache).audio
