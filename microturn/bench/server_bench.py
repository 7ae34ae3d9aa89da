"""`microturn bench server`: the live server under concurrent loopback clients.

N clients stream a recorded user (a turn-taking episode's audio) at real-time pace
through the real server (aiohttp, the engine on a RealClock in its own thread) and the
real client; every micro-turn's `turn` message says how late its output was and which
inputs were missing. For each N: lateness p50 / p99 over all sessions' micro-turns,
missing inputs and dropped audio. `realtime_clients` is the largest N whose p99
lateness (output ready after its micro-turn's end, the step time included) stays under
100 ms (`clients_within_micro_turn`: under 200 ms). The clients run in the same process
as the server (its own event-loop thread) and share the 2 cores with it. Then the same
at the largest passing N with 5% of the client's chunks lost and up to 100 ms of jitter:
lost chunks should show as missing micro-turns, and jitter should be absorbed by the
server's buffer (no extra missing ones, no extra lateness).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from microturn.bench.report import machine, markdown_table, write_report
from microturn.codecs.audio import SAMPLE_RATE

LATENESS_BUDGET_MS = 100.0
MICRO_TURN_MS = 200.0  # a looser figure: p99 ready within one micro-turn of being due
COUNTS = (1, 2, 4, 8, 12, 16)


def _user_audio(seconds: float) -> np.ndarray:
    from microturn.scenarios import get

    ep = get("turn_taking").generate(0, "eval", "speech")
    n = int(seconds * SAMPLE_RATE)
    return np.resize(ep.user_audio, n).astype(np.float32)  # repeated if shorter


async def _clients(url: str, n: int, audio: np.ndarray, loss: float, jitter_s: float) -> list:
    import aiohttp

    from microturn.server.client import talk

    async with aiohttp.ClientSession() as http:
        return await asyncio.gather(
            *[
                talk(url, audio, loss=loss, jitter_s=jitter_s, seed=i, session=http, tail_s=0.4)
                for i in range(n)
            ]
        )


def measure(model: Any, n: int, audio: np.ndarray, *, loss: float = 0.0, jitter_s: float = 0.0):
    """One server, `n` concurrent clients; figures over every session's micro-turns."""
    from microturn.server.app import ServerThread, create_app

    with ServerThread(create_app(model, max_sessions=n)) as srv:
        results = asyncio.run(_clients(srv.ws_url, n, audio, loss, jitter_s))
    turns = [t for r in results for t in r.timeline.turns]
    late = np.array([t.lateness_ms for t in turns]) if turns else np.zeros(1)
    step = np.array([t.step_ms for t in turns]) if turns else np.zeros(1)
    missing = sum(1 for t in turns if "user_audio" in t.missing)
    return {
        "clients": n,
        "loss": loss,
        "jitter_ms": jitter_s * 1000,
        "turns": len(turns),
        "step_ms_p50": float(np.percentile(step, 50)),
        "lateness_ms_p50": float(np.percentile(late, 50)),
        "lateness_ms_p99": float(np.percentile(late, 99)),
        "missing_share": missing / max(1, len(turns)),
        "dropped_audio": int(sum(r.stats.get("dropped_audio", 0) for r in results)),
        "errors": int(sum(len(r.stats.get("errors", [])) for r in results)),
    }


def run(out: Path, *, model_dir: str | None = None, seconds: float = 10.0) -> dict[str, Any]:
    from microturn.engine.engine import load_model
    from microturn.model.checkpoint import default_checkpoint

    model = load_model(str(model_dir or default_checkpoint()), None)
    audio = _user_audio(seconds)
    rows = []
    for n in tqdm(COUNTS, desc="clients", unit="count"):
        rows.append(measure(model, n, audio))
        if rows[-1]["lateness_ms_p99"] > MICRO_TURN_MS:
            break  # far past real time: larger counts only get worse
    passing = [r["clients"] for r in rows if r["lateness_ms_p99"] <= LATENESS_BUDGET_MS]
    best = max(passing, default=1)
    impaired = measure(model, best, audio, loss=0.05, jitter_s=0.1)
    within_turn = [r["clients"] for r in rows if r["lateness_ms_p99"] <= MICRO_TURN_MS]
    data = {
        "realtime_clients": max(passing, default=0),
        "clients_within_micro_turn": max(within_turn, default=0),
        "lateness_budget_ms": LATENESS_BUDGET_MS,
        "seconds_per_client": seconds,
        "rows": rows,
        "impaired": impaired,
        "machine": machine(),
    }
    cols = [
        "clients",
        "loss",
        "jitter_ms",
        "turns",
        "step_ms_p50",
        "lateness_ms_p50",
        "lateness_ms_p99",
        "missing_share",
        "dropped_audio",
        "errors",
    ]
    write_report(out, "server", data, markdown_table([*rows, impaired], cols))
    _plot(rows, out / "server.png")
    return data


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [r["clients"] for r in rows]
    ax.plot(x, [r["lateness_ms_p99"] for r in rows], "o-", label="lateness p99")
    ax.plot(x, [r["lateness_ms_p50"] for r in rows], "o-", label="lateness p50")
    ax.axhline(LATENESS_BUDGET_MS, color="grey", ls="--", label="budget")
    ax.set_xlabel("concurrent clients (loopback, real-time pace)")
    ax.set_ylabel("ms after the micro-turn's end")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
