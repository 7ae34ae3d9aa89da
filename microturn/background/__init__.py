"""Background thinking: hard work handed off the micro-turn clock and woven back in.

The foreground model writes a `delegate` action with its task on the text track; the
engine packs a `ContextPackage` and hands it to a `Delegator`, which runs a `Thinker` on
a worker thread and returns at once. Each tick the engine polls for `DelegationResult`s
and puts their text on the model's background track; the model decides when to say it.
Thinkers: `BuiltinThinker` (offline: exact arithmetic, units, clock and date, the fact
table) and `OpenAIThinker` (any OpenAI-compatible chat-completions server).
"""

from microturn.background.builtin import BuiltinThinker
from microturn.background.context import (
    ERROR_KINDS,
    FAILURE_TEXT,
    ContextPackage,
    DelegationResult,
    ThinkerError,
    TranscriptLine,
    delegate_action,
)
from microturn.background.delegator import Delegator, Thinker
from microturn.background.openai_client import OpenAIThinker
from microturn.background.options import add_thinker_arguments, thinker_from_args
from microturn.background.tools import Toolbox

__all__ = [
    "ERROR_KINDS",
    "FAILURE_TEXT",
    "BuiltinThinker",
    "ContextPackage",
    "DelegationResult",
    "Delegator",
    "OpenAIThinker",
    "Thinker",
    "ThinkerError",
    "Toolbox",
    "TranscriptLine",
    "add_thinker_arguments",
    "delegate_action",
    "thinker_from_args",
]
