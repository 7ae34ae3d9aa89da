"""The built-in thinker: answers a delegated task with the offline tools, at once.

Task forms are the delegation scenario's (microturn/scenarios/delegation.py): the model
writes "347 * 29" or "lookup: capital of australia" and the background track gets the
bare result, "10063" or "Canberra", exactly as the scenario's reference does. It also
reads what a model is likely to write besides ("1,204 plus 3,987", "convert 5 km to
miles", "time in Tokyo", "capital of australia"). What it cannot read becomes a spoken
failure ("I don't know how to work that out."), never silence.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path

from microturn.background.context import ContextPackage, ThinkerError
from microturn.background.tools import (
    Toolbox,
    calculate,
    convert_units,
    normalize_expression,
    parse_clock,
    parse_conversion,
    utc_now,
)

_ARITHMETIC = re.compile(r"^(?:[\d\s.+\-*/%()]|(?<=\d)[eE](?=[+-]?\d))+$")  # 1e-9 too


class BuiltinThinker:
    """Offline thinker over a `Toolbox` (fact file, injectable clock, home time zone)."""

    name = "builtin"

    def __init__(
        self,
        facts_path: str | Path | None = None,
        *,
        now: Callable[[], datetime] = utc_now,
        timezone: str | tzinfo | None = None,
        toolbox: Toolbox | None = None,
    ) -> None:
        self.tools = toolbox or Toolbox(facts_path, now=now, timezone=timezone)

    def __repr__(self) -> str:
        return f"BuiltinThinker(facts={str(self.tools.facts.path)!r})"

    def think(self, package: ContextPackage, cancel: threading.Event | None = None) -> str:
        return self.answer(package.task)

    def answer(self, task: str) -> str:
        """The result text for one task; ThinkerError (with its spoken form) otherwise."""
        text = " ".join(task.split())
        if not text:
            raise ThinkerError("invalid", "I wasn't given anything to work out.", "empty task")
        if text.lower().startswith("lookup:"):
            return self.tools.facts.lookup(text[len("lookup:") :])
        expr = normalize_expression(text)
        if _ARITHMETIC.match(expr) and re.search(r"\d", expr):
            return calculate(expr)
        conversion = parse_conversion(text)
        if conversion is not None:
            return convert_units(*conversion)
        fact_error = None
        try:
            value = self.tools.facts.get(text)
        except ThinkerError as err:  # a missing or broken fact file must not stop the clock
            value, fact_error = None, err
        if value is not None:
            return value
        clock = parse_clock(text)
        if clock is not None:
            what, place, days = clock
            return self.tools.clock(place, what, days)
        if fact_error is not None:
            raise fact_error
        raise ThinkerError("unsupported", detail=f"no built-in tool reads {text[:80]!r}")
