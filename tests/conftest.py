"""Shared fixtures: real synthesized speech (espeak-ng, flite), rendered once per session."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def voice_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("voices")


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
