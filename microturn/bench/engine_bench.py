"""`microturn bench engine`: how many live sessions one 2-core machine keeps in real
time, what streaming sessions save over re-prefilling, and whether long conversations
stay flat in time and memory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from microturn.bench.model_bench import random_turns
from microturn.bench.report import machine, markdown_table, write_report
from microturn.engine.engine import Engine
from microturn.model import InteractionModel, ModelConfig, to_batch

SESSION_COUNTS = (1, 4, 8, 16, 32)


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(0, 0.05, n).astype(np.float32)


def tick_times(model: InteractionModel, sessions: int, warmup: int, ticks: int) -> list[float]:
    """Wall time (ms) of whole engine ticks (model step + speech decoding for every
    session) with `sessions` live sessions, after `warmup` ticks."""
    engine = Engine(model, max_sessions=sessions)
    live = [engine.open(f"s{i}", seed=i) for i in range(sessions)]
    rng = np.random.default_rng(0)
    spt = model.layout.samples_per_turn
    times = []
    for t in range(warmup + ticks):
        for s in live:
            s.push_audio(_noise(rng, spt))
        start = time.perf_counter()
        engine.tick()
        if t >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return times


def reprefill_ratio(model: InteractionModel, minutes: float, step_ms: float) -> dict[str, float]:
    """Recomputing a whole conversation of `minutes` for one new micro-turn (what a
    server without streaming sessions does) over one streaming step."""
    lay = model.layout
    turns = round(minutes * 60 / lay.micro_turn_s)
    chunk = 50  # micro-turns per prefill forward: the same attention, bounded memory
    state = model.new_state(1)
    start = time.perf_counter()
    done = 0
    while done < turns:
        n = min(chunk, turns - done)
        model.prefill(state, to_batch(random_turns(lay, n, done)))
        done += n
    prefill_ms = (time.perf_counter() - start) * 1000
    return {"reprefill_ms": prefill_ms, "ratio": prefill_ms / step_ms}


def vocoder_rtf(streams: int, seconds: float = 10.0) -> float:
    """Real-time factor of streaming speech decoding per stream, `streams` decoded in one
    batch micro-turn by micro-turn (random speech-like bins: every frame voiced)."""
    from microturn.codecs.dmel import N_MELS
    from microturn.engine.vocoder import StreamingVocoder, decode_many

    rng = np.random.default_rng(0)
    vocoders = [StreamingVocoder(n_iter=2) for _ in range(streams)]
    turns = round(seconds / 0.2)
    decode_many([StreamingVocoder(n_iter=2)], [np.zeros((16, N_MELS), np.uint8) + 5])  # warm-up
    start = time.perf_counter()
    for _ in range(turns):
        bins = [rng.integers(4, 12, (16, N_MELS)).astype(np.uint8) for _ in range(streams)]
        decode_many(vocoders, bins)
    return (time.perf_counter() - start) / streams / seconds


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def long_session(
    minutes: float, preset: str = "tiny", threads: int | None = None
) -> dict[str, float]:
    """One session for `minutes` of simulated conversation: step time and resident memory
    in minute 1 against the last minute. Run it in a fresh process (`run` does), so the
    memory figures are this session's and not what earlier measurements left behind."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = InteractionModel(ModelConfig.preset(preset)).eval()
    lay = model.layout
    per_min = round(60 / lay.micro_turn_s)
    engine = Engine(model, max_sessions=1)
    s = engine.open("long")
    rng = np.random.default_rng(1)
    first, last, rss = [], [], {}
    total = round(minutes * per_min)
    for t in tqdm(range(total), desc=f"{minutes:g}-minute session", unit="turn", leave=False):
        s.push_audio(_noise(rng, lay.samples_per_turn))
        start = time.perf_counter()
        engine.tick()
        ms = (time.perf_counter() - start) * 1000
        if t < per_min:
            first.append(ms)
        elif t >= total - per_min:
            last.append(ms)
        if t == per_min - 1:
            rss["first"] = _rss_mb()
    rss["last"] = _rss_mb()
    return {
        "step_ms_minute_1": float(np.median(first)),
        "step_ms_last_minute": float(np.median(last)),
        "rss_mb_minute_1": rss["first"],
        "rss_mb_last_minute": rss["last"],
        "step_latency_growth": float(np.median(last) / np.median(first)),
        "memory_growth": rss["last"] / rss["first"],
    }


def run(out: Path, *, quick: bool = False, threads: int | None = None) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = InteractionModel(ModelConfig.preset("tiny")).eval()
    warmup, ticks = (3, 5) if quick else (10, 40)
    rows = []
    for n in tqdm(SESSION_COUNTS, desc="sessions", unit="count"):
        times = tick_times(model, n, warmup, ticks)
        rows.append(
            {
                "sessions": n,
                "step_ms_p50": float(np.percentile(times, 50)),
                "step_ms_p99": float(np.percentile(times, 99)),
            }
        )
    budget = model.layout.micro_turn_ms
    realtime = max((r["sessions"] for r in rows if r["step_ms_p99"] < budget), default=0)
    one = rows[0]["step_ms_p50"]
    minutes = (0.2, 0.5) if quick else (1, 5, 30)
    reprefill = {}
    for m in tqdm(minutes, desc="re-prefill", unit="context"):
        reprefill[f"{m:g}min"] = reprefill_ratio(model, m, one)
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        long = pool.apply(long_session, (1.2 if quick else 30, "tiny", threads))
    speech = {f"vocoder_rtf_{n}": vocoder_rtf(n, 2.0 if quick else 10.0) for n in (1, 16)}
    data = {
        "machine": machine(),
        **speech,
        "preset": "tiny",
        "micro_turn_ms": budget,
        "sessions": rows,
        "realtime_sessions": realtime,
        **{f"reprefill_ratio_{k}": v["ratio"] for k, v in reprefill.items()},
        "reprefill_ms": {k: v["reprefill_ms"] for k, v in reprefill.items()},
        "step_latency_growth_30min": long["step_latency_growth"],
        "memory_growth_30min": long["memory_growth"],
        "long_session": long,
        "quick": quick,
    }
    table = markdown_table(rows, ["sessions", "step_ms_p50", "step_ms_p99"])
    summary = markdown_table(
        [
            {
                k: data[k]
                for k in data
                if k.startswith(("realtime", "reprefill_ratio", "step_lat", "memory_growth"))
            }
        ],
        [
            k
            for k in data
            if k.startswith(("realtime", "reprefill_ratio", "step_lat", "memory_growth"))
        ],
    )
    write_report(out, "engine", data, table + "\n\n" + summary)
    return data
