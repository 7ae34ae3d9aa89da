"""Text tokens: UTF-8 bytes plus the few special tokens the micro-turn layout needs.

Why bytes: no vocabulary to train or ship, every string round-trips, and the tiny model's
text is short (what it says, typed messages, background results). The cost is about one
token per character, which the layout budgets for (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import Any

import numpy as np

N_BYTES = 256


class Special(IntEnum):
    """Non-byte tokens. Ids are fixed: checkpoints depend on them."""

    PAD = 256  # this slot carries nothing this micro-turn
    MISSING = 257  # this micro-turn's input never arrived (network loss, late client)
    EOM = 258  # end of a message / utterance / background result
    DELEGATE = 259  # action: hand the task (the model text that follows, up to EOM) to a thinker


# Ids 260..271 are reserved for future specials so adding one keeps old checkpoints valid.
VOCAB_SIZE = 272

ACTIONS: dict[str, int] = {"delegate": Special.DELEGATE}
ACTION_NAMES: dict[int, str] = {v: k for k, v in ACTIONS.items()}


class ByteTokenizer:
    """UTF-8 byte tokenizer with the specials above."""

    vocab_size = VOCAB_SIZE
    pad_id = int(Special.PAD)
    missing_id = int(Special.MISSING)
    eom_id = int(Special.EOM)

    def encode(self, text: str, *, eom: bool = False) -> list[int]:
        """Text -> byte ids, optionally closed with EOM (a finished message)."""
        if not isinstance(text, str):
            raise ValueError(f"text must be str, got {type(text).__name__}")
        ids = list(text.encode("utf-8"))
        if eom:
            ids.append(self.eom_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Byte ids -> text, skipping specials; broken UTF-8 becomes U+FFFD, never an error."""
        ids = validate_ids(ids)
        return bytes(int(i) for i in ids if i < N_BYTES).decode("utf-8", errors="replace")


class MessageReader:
    """A text track, read as it is written: bytes gather into a message that EOM closes.

    Shared by the engine's live transcript, the Timeline recorder and episode unpacking.
    A message starts at the time of its first byte; an EOM with no byte before it closes nothing;
    a message never closed stops growing at `max_bytes`.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._bytes = bytearray()
        self._start: Any = None

    def feed(self, ids: Iterable[int], at: Any) -> list[tuple[Any, str]]:
        """Tokens written at `at` -> the (start, text) of each message they finish."""
        done = []
        for i in ids:
            i = int(i)
            if i == Special.EOM:
                if self._start is not None:
                    done.append((self._start, self._text()))
                self._bytes, self._start = bytearray(), None
            elif i < N_BYTES:
                if self._start is None:
                    self._start = at
                if self.max_bytes is None or len(self._bytes) < self.max_bytes:
                    self._bytes.append(i)
        return done

    def unfinished(self) -> tuple[Any, str] | None:
        """The message being written (no EOM yet), if any."""
        return None if self._start is None else (self._start, self._text())

    def _text(self) -> str:
        return self._bytes.decode("utf-8", errors="replace")


def validate_ids(ids: Iterable[int] | np.ndarray) -> Sequence[int]:
    """Check token ids are integers in 0..VOCAB_SIZE-1."""
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if arr.size == 0:
        return []
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= VOCAB_SIZE:
        raise ValueError(f"token ids must lie in 0..{VOCAB_SIZE - 1}, got {arr.min()}..{arr.max()}")
    return arr.tolist()
