"""Command-line options for choosing a thinker, for whichever command runs an engine:
`--thinker builtin|openai`, `--facts PATH`, `--thinker-timeout-s`, and the OpenAI-
compatible server's `--llm-*` flags (the API key comes from the environment only)."""

from __future__ import annotations

import argparse

from microturn.background.builtin import BuiltinThinker
from microturn.background.delegator import DEFAULT_TIMEOUT_S, Thinker
from microturn.background.openai_client import OpenAIThinker
from microturn.background.tools import Toolbox


def add_thinker_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("background thinking")
    g.add_argument(
        "--thinker",
        choices=("builtin", "openai"),
        default="builtin",
        help="who answers delegated tasks: the offline tools (default) or an "
        "OpenAI-compatible server (--llm-base-url)",
    )
    g.add_argument("--facts", metavar="PATH", help="fact table file (default: the shipped one)")
    g.add_argument(
        "--thinker-timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="a delegation not answered by then is answered with a spoken failure "
        "(default: %(default)s)",
    )
    OpenAIThinker.add_arguments(parser)


def thinker_from_args(args: argparse.Namespace) -> Thinker:
    """The thinker the flags ask for; both share one toolbox (the same fact file)."""
    tools = Toolbox(args.facts)
    if args.thinker == "openai":
        return OpenAIThinker.from_args(args, toolbox=tools)
    return BuiltinThinker(toolbox=tools)
