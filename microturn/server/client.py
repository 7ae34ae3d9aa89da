"""A Python client for the live protocol (docs/protocol.md): stream a recording to a
server at real-time pace, collect what the model says and does, and build its Timeline
(the same `TimelineRecorder` every system uses). `microturn talk` is its command line.

Times in the Timeline are on the server session's clock (micro-turn 0 began when the
session opened, a moment before the client's first audio chunk was sent). For the bench:
`loss` drops a fraction of the audio chunks and `jitter_s` delays each chunk by up to
that much (in order), as a bad network would.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import numpy as np

from microturn.codecs.audio import SAMPLE_RATE, from_pcm16, to_pcm16
from microturn.engine.engine import record_event
from microturn.engine.recorder import TimelineRecorder
from microturn.server.protocol import KIND_AUDIO, KIND_CAMERA, PROTOCOL_VERSION
from microturn.stream.episode import ActionEvent, TextEvent, Timeline, TurnRecord, VideoTrack


class ServerClosedError(ConnectionError):
    def __init__(self, code: int | None, reason: str = "") -> None:
        tail = f": {reason}" if reason else ""
        super().__init__(f"server closed the connection (code {code}{tail})")
        self.code = code


@dataclass
class TalkResult:
    timeline: Timeline
    audio: np.ndarray  # the model's speech on the session's clock (sample 0 = time 0)
    ready: dict
    stats: dict = field(default_factory=dict)


def with_token(url: str, token: str | None) -> str:
    if not token:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def encode_jpeg(frame: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


async def talk(
    url: str,
    audio: np.ndarray,
    *,
    token: str | None = None,
    video: VideoTrack | None = None,
    text: list[TextEvent] | tuple[TextEvent, ...] = (),
    tail_s: float = 1.0,
    settle_s: float = 0.6,
    loss: float = 0.0,
    jitter_s: float = 0.0,
    seed: int = 0,
    session: aiohttp.ClientSession | None = None,
) -> TalkResult:
    """Stream `audio` (16 kHz mono float32, then `tail_s` of silence) one micro-turn per
    chunk at real-time pace, camera frames at their times (JPEG) and typed text at its
    times; return the model's Timeline and speech."""
    rng = random.Random(seed)
    own = session is None
    http = session or aiohttp.ClientSession()
    try:
        async with http.ws_connect(with_token(url, token), max_msg_size=0) as ws:
            await ws.send_str(json.dumps({"type": "hello", "version": PROTOCOL_VERSION}))
            ready = await _receive_ready(ws)
            spt = int(ready["samples_per_turn"])
            mt = ready["micro_turn_ms"] / 1000
            plan = _plan(audio, spt, mt, tail_s, video, text, loss, jitter_s, rng)
            state = _Collected()
            reader = asyncio.create_task(_read(ws, state))
            stats = await _send(ws, plan, reader)
            await asyncio.sleep(settle_s)  # the last chunks' micro-turns come back
            if not ws.closed:
                await ws.send_str(json.dumps({"type": "bye"}))
            try:
                await asyncio.wait_for(reader, timeout=5.0)
            except TimeoutError:
                reader.cancel()
            stats.update(close_code=ws.close_code)
    finally:
        if own:
            await http.close()
    return _result(state, ready, spt, mt, stats)


def talk_sync(url: str, audio: np.ndarray, **kwargs: Any) -> TalkResult:
    return asyncio.run(talk(url, audio, **kwargs))


async def _receive_ready(ws: aiohttp.ClientWebSocketResponse) -> dict:
    msg = await ws.receive(timeout=30)
    if msg.type == aiohttp.WSMsgType.TEXT:
        obj = json.loads(msg.data)
        if obj.get("type") == "ready":
            return obj
        raise ConnectionError(f"expected ready, got {obj}")
    raise ServerClosedError(ws.close_code, str(msg.extra or ""))


def _plan(
    audio: np.ndarray,
    spt: int,
    mt: float,
    tail_s: float,
    video: VideoTrack | None,
    text: Any,
    loss: float,
    jitter_s: float,
    rng: random.Random,
) -> list[tuple[float, int, str, Any]]:
    """(send time from the start, order, kind, payload), sorted."""
    n = int(np.ceil((audio.size / SAMPLE_RATE + tail_s) / mt - 1e-9))
    padded = np.zeros(n * spt, np.float32)
    padded[: audio.size] = audio
    plan: list[tuple[float, int, str, Any]] = []
    last = 0.0
    for t in range(n):
        at = max(last, (t + 1) * mt + (rng.uniform(0, jitter_s) if jitter_s > 0 else 0.0))
        last = at
        lost = loss > 0 and rng.random() < loss
        chunk = bytes([KIND_AUDIO]) + to_pcm16(padded[t * spt : (t + 1) * spt])
        plan.append((at, 0, "lost" if lost else "audio", chunk))
    if video is not None:
        for frame, at in zip(video.frames, video.times_s, strict=True):
            if at < n * mt:
                plan.append((float(at), 1, "camera", bytes([KIND_CAMERA]) + encode_jpeg(frame)))
    for e in text:
        plan.append((float(e.time_s), 2, "text", json.dumps({"type": "text", "text": e.text})))
    plan.sort(key=lambda p: (p[0], p[1]))
    return plan


async def _send(
    ws: aiohttp.ClientWebSocketResponse, plan: list, reader: asyncio.Task
) -> dict[str, Any]:
    stats = {"audio_chunks": 0, "lost_chunks": 0, "frames": 0, "texts": 0}
    start = time.monotonic()
    for at, _, kind, payload in plan:
        delay = start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if ws.closed or reader.done():
            break
        if kind == "lost":
            stats["lost_chunks"] += 1
            continue
        if kind == "text":
            await ws.send_str(payload)
            stats["texts"] += 1
        else:
            await ws.send_bytes(payload)
            stats["audio_chunks" if kind == "audio" else "frames"] += 1
    return stats


@dataclass
class _Collected:
    turns: dict[int, dict] = field(default_factory=dict)
    audio: dict[int, np.ndarray] = field(default_factory=dict)
    events: dict[int, list[dict]] = field(default_factory=dict)
    speech: list[dict] = field(default_factory=list)  # speech_start / speech_stop
    errors: list[dict] = field(default_factory=list)
    last_turn: int = -1


async def _read(ws: aiohttp.ClientWebSocketResponse, st: _Collected) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            data = msg.data
            first = data[:1] == bytes([KIND_AUDIO]) and st.last_turn not in st.audio
            if first and st.last_turn >= 0:
                pcm = from_pcm16(data[1:])
                st.audio[st.last_turn] = pcm
        elif msg.type == aiohttp.WSMsgType.TEXT:
            obj = json.loads(msg.data)
            kind = obj.get("type")
            if kind == "turn":
                st.turns[obj["turn"]] = obj
                st.last_turn = obj["turn"]
            elif kind == "event":
                if obj.get("kind") in ("speech_start", "speech_stop"):
                    st.speech.append(obj)
                else:
                    st.events.setdefault(st.last_turn, []).append(obj)
            elif kind == "error":
                st.errors.append(obj)
        else:
            break


def _result(st: _Collected, ready: dict, spt: int, mt: float, stats: dict) -> TalkResult:
    recorder = TimelineRecorder("microturn", mt, ready.get("session"))
    turns = sorted(st.turns)
    if turns:
        first, last = turns[0], turns[-1]
        recorder.audio_start_s = st.turns[first]["play_at_s"]
        for t in range(first, last + 1):
            recorder.add_audio(st.audio.get(t, np.zeros(spt, np.float32)))
            msg = st.turns.get(t)
            if msg is None:
                continue
            recorder.add_turn(
                TurnRecord(
                    t, msg["time_s"], msg["step_ms"], msg["lateness_ms"], tuple(msg["missing"])
                )
            )
            recorder.add_text(msg["play_at_s"], msg["text"], msg["eom"])
            for a in msg.get("actions", []):
                recorder.add_action(ActionEvent(a["time_s"], a["kind"]))
            for e in st.events.get(t, []):
                record_event(
                    recorder,
                    ActionEvent(e["time_s"], e["kind"], e.get("text", ""), e.get("data") or {}),
                )
    played = recorder.audio()
    start = round(recorder.audio_start_s * SAMPLE_RATE)
    audio = np.zeros(start + played.size, np.float32)
    audio[start:] = played
    stats = dict(stats)
    stats.update(
        turns=len(st.turns),
        audio_turns=len(st.audio),
        dropped_audio=max((m.get("dropped_audio", 0) for m in st.turns.values()), default=0),
        errors=st.errors,
        speech_events=st.speech,
    )
    tl = recorder.timeline()
    tl.meta = {
        "session": ready.get("session"),
        **{k: v for k, v in stats.items() if k not in ("errors", "speech_events")},
        "errors": len(st.errors),
    }
    return TalkResult(tl, audio, ready, stats)
