"""Interaction scenarios: one module per task, each generating episodes and scoring them.

`get(name)` returns the scenario object; `NAMES` lists them in benchmark order.
"""

from __future__ import annotations

import importlib

from microturn.scenarios.base import DRIVERS, SPLITS, TUNE_FIRST_SEED, Scenario

NAMES = (
    "turn_taking",
    "interruption",
    "backchannel",
    "time_awareness",
    "proactive_vision",
    "repetition_counting",
    "delegation",
)

__all__ = ["DRIVERS", "NAMES", "SPLITS", "TUNE_FIRST_SEED", "Scenario", "get"]


def get(name: str) -> Scenario:
    """The scenario called `name` (each module defines `SCENARIO`)."""
    if name not in NAMES:
        raise ValueError(f"unknown scenario {name!r}; scenarios: {', '.join(NAMES)}")
    module = importlib.import_module(f"microturn.scenarios.{name}")
    return module.SCENARIO
