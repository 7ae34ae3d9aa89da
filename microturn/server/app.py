"""The live server: one Engine ticking on a RealClock in its own thread, one WebSocket
per session (docs/protocol.md), the browser page from `static/`.

Threads: the engine thread owns the Engine (open, push, tick, close all run there, as
commands it drains between ticks and while it waits for the next deadline); the asyncio
loop owns the sockets. The tick never touches a socket: its outputs are handed to the
loop, which puts them on each client's bounded outbox; one writer task per client sends
them. A client that stops reading only fills its own outbox, whose oldest audio is then
dropped (and counted), so no client can delay the tick or another session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import io
import json
import logging
import math
import queue
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from microturn.codecs.audio import (
    ACTIVITY_FRAME,
    SAMPLE_RATE,
    audible_frames,
    from_pcm16,
    to_pcm16,
)
from microturn.codecs.vision import VisionCodec
from microturn.engine.clock import RealClock
from microturn.engine.engine import Engine, TurnOutputs
from microturn.engine.recorder import MERGE_GAP_S  # silence this long ends an utterance
from microturn.server.protocol import KIND_AUDIO, KIND_CAMERA, PROTOCOL_VERSION

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_TEXT_CHARS = 1000
MAX_IMAGE_PIXELS = 4096 * 4096  # a JPEG header asking for more is rejected before decoding
AUDIO_BURST_S = 3  # audio a client may send ahead of real time (plus one largest message)

# Close codes (docs/protocol.md).
CLOSE_OK = 1000
CLOSE_POLICY = 1008  # token, or a first message that is not hello
CLOSE_TOO_BIG = 1009
CLOSE_FULL = 4001
CLOSE_IDLE = 4002
CLOSE_BAD_RESUME = 4003
CLOSE_VERSION = 4004
CLOSE_TAKEN_OVER = 4005

log = logging.getLogger("microturn.server")


@dataclass
class ServerConfig:
    token: str | None = None  # required in `?token=` when set
    max_sessions: int = 8
    max_message_bytes: int = 262_144
    idle_timeout_s: float = 60.0  # no client message for this long: close 4002
    resume_window_s: float = 30.0  # a dropped client's session is kept this long
    text_per_s: float = 20.0  # JSON messages per second per client (burst as many)
    client_queue: int = 64  # outgoing messages queued per client (~2 per micro-turn)
    # Bytes a client's socket may hold unsent before its writer waits (then its outbox
    # fills and drops its oldest audio): small, so a slow client gets fresh audio, not
    # seconds of stale buffered speech. 64 KiB is ~2 s of speech.
    send_buffer_bytes: int = 65_536
    hello_timeout_s: float = 10.0


# ---- the engine thread -----------------------------------------------------------------


class EngineThread:
    """Runs `engine.tick` at each micro-turn deadline on the engine's RealClock; other
    threads act on the engine only through `call` (run between ticks)."""

    def __init__(self, engine: Engine, on_tick: Callable[[dict[str, TurnOutputs]], None]):
        self.engine = engine
        self.on_tick = on_tick
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="microturn-engine", daemon=True)
        self.ticks = 0
        self.tick_errors = 0

    def start(self) -> None:
        self._thread.start()

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((fn, fut))
        return fut

    def stop(self, timeout_s: float = 10.0) -> None:
        def halt() -> None:
            self._stop = True

        self.call(halt)
        self._thread.join(timeout_s)

    def _do(self, item: tuple[Callable[[], Any], concurrent.futures.Future]) -> None:
        fn, fut = item
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn())
        except BaseException as err:  # handed to the caller
            fut.set_exception(err)

    def _wait_until(self, deadline: float) -> None:
        clock = self.engine.clock
        while not self._stop:
            remaining = deadline - clock.now()
            if remaining <= 0:
                return
            try:
                item = self._commands.get(timeout=remaining)
            except queue.Empty:
                return
            self._do(item)

    def _drain(self) -> None:
        while not self._stop:
            try:
                item = self._commands.get_nowait()
            except queue.Empty:
                return
            self._do(item)

    def _run(self) -> None:
        eng = self.engine
        step = eng.layout.micro_turn_s
        start, t = eng.clock.now(), 0
        try:
            while not self._stop:
                deadline = start + (t + 1) * step
                self._wait_until(deadline)
                self._drain()
                if self._stop:
                    break
                try:
                    outputs = eng.tick(deadline)
                except Exception:  # rolled back by the engine: the micro-turn never happened
                    self.tick_errors += 1
                    log.exception("tick failed")
                    outputs = {}
                self.ticks += 1
                if outputs:
                    self.on_tick(outputs)
                t += 1
                behind = eng.clock.now() - (start + (t + 1) * step)
                if behind > 1.0:  # fell a second behind (a stall): do not burst to catch up
                    start, t = eng.clock.now() - step, 0
        finally:
            self._stop = True
            self._drain_cancel()

    def _drain_cancel(self) -> None:
        while True:
            try:
                _, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            fut.cancel()


# ---- per client ------------------------------------------------------------------------


class Outbox:
    """A bounded queue of outgoing frames. When full, the oldest audio goes first (then
    the oldest `turn` message, then the oldest anything); each drop is counted."""

    def __init__(self, limit: int) -> None:
        self.limit = max(2, limit)
        self.items: deque[tuple[str, Any]] = deque()  # (category, frame: bytes | str)
        self.dropped_audio = 0
        self.dropped_other = 0
        self.event = asyncio.Event()

    def put(self, category: str, frame: bytes | str) -> None:
        if len(self.items) >= self.limit:
            self._drop_one()
        self.items.append((category, frame))
        self.event.set()

    def _drop_one(self) -> None:
        for cat in ("audio", "turn"):
            for i, (c, _) in enumerate(self.items):
                if c == cat:
                    del self.items[i]
                    if cat == "audio":
                        self.dropped_audio += 1
                    else:
                        self.dropped_other += 1
                    return
        self.items.popleft()
        self.dropped_other += 1

    async def get(self) -> tuple[str, Any]:
        while not self.items:
            self.event.clear()
            await self.event.wait()
        return self.items.popleft()


class Connection:
    def __init__(self, ws: web.WebSocketResponse, cfg: ServerConfig) -> None:
        self.ws = ws
        self.outbox = Outbox(cfg.client_queue)
        self.writer: asyncio.Task | None = None
        self.rate = cfg.text_per_s
        self.allowance = cfg.text_per_s
        self.last = time.monotonic()
        self.decoding = False  # a camera frame is being decoded (newer ones are dropped)
        self.frames_dropped = 0
        # Closing a socket from another task races aiohttp's reader (the client can see
        # 1006): a resume elsewhere or shutdown asks the handler to close it instead.
        self.kicked = asyncio.Event()
        self.kick_close = (CLOSE_TAKEN_OVER, b"resumed elsewhere", False)  # code, why, ends
        # Audio faster than real time: a bucket of samples refilled at 16 kHz, holding
        # AUDIO_BURST_S (or one largest message); what does not fit is dropped, counted.
        self.audio_cap = max(AUDIO_BURST_S * SAMPLE_RATE, cfg.max_message_bytes // 2)
        self.audio_allowance = float(self.audio_cap)
        self.audio_last = time.monotonic()
        self.audio_dropped = 0  # samples
        self.last_too_fast = -math.inf

    def kick(self, code: int, reason: bytes, ends: bool) -> None:
        self.kick_close = (code, reason, ends)
        self.kicked.set()

    def start(self) -> None:
        self.writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while True:
                _, frame = await self.outbox.get()
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return
        except Exception:  # a socket error mid-send: the reader side sees the close
            log.debug("writer stopped", exc_info=True)

    def send_json(self, category: str, obj: dict) -> None:
        self.outbox.put(category, json.dumps(obj, separators=(",", ":")))

    def error(self, code: str, message: str) -> None:
        self.send_json("error", {"type": "error", "code": code, "message": message[:300]})

    def allow_text(self) -> bool:
        now = time.monotonic()
        self.allowance = min(self.rate, self.allowance + (now - self.last) * self.rate)
        self.last = now
        if self.allowance < 1:
            return False
        self.allowance -= 1
        return True

    def allow_audio(self, samples: int) -> bool:
        now = time.monotonic()
        refill = (now - self.audio_last) * SAMPLE_RATE
        self.audio_allowance = min(self.audio_cap, self.audio_allowance + refill)
        self.audio_last = now
        if samples > self.audio_allowance:
            self.audio_dropped += samples
            if now - self.last_too_fast >= 1.0:  # said at most once a second
                self.last_too_fast = now
                self.error("too_fast", "audio faster than real time: dropped")
            return False
        self.audio_allowance -= samples
        return True

    async def flush(self, timeout_s: float = 1.0) -> None:
        """Give the writer a moment to send what is queued (before a close)."""
        end = time.monotonic() + timeout_s
        while self.outbox.items and time.monotonic() < end and not self.ws.closed:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.cancel()
            with contextlib.suppress(BaseException):  # cancelled or failed: gone either way
                await self.writer


@dataclass
class ServerSession:
    id: str
    resume_token: str
    conn: Connection | None = None
    expiry: asyncio.TimerHandle | None = None
    ended: bool = False
    speaking: bool = False
    last_voice_s: float = 0.0  # end of the model's latest audible 10 ms frame


# ---- the server ------------------------------------------------------------------------


class LiveServer:
    def __init__(self, engine: Engine, cfg: ServerConfig) -> None:
        self.engine = engine
        self.cfg = cfg
        self.layout = engine.layout
        self.vision = VisionCodec(self.layout.video_size) if self.layout.video_size else None
        self.sessions: dict[str, ServerSession] = {}
        self.by_resume: dict[str, ServerSession] = {}
        self.opening = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = EngineThread(engine, self._from_tick)
        self._ids = 0
        self.websockets: set[web.WebSocketResponse] = set()

    # engine-thread side
    def _from_tick(self, outputs: dict[str, TurnOutputs]) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._deliver, outputs)

    # loop side
    def live_sessions(self) -> int:
        """Sessions the engine holds (attached or waiting for a resume)."""
        return len(self.engine.sessions)

    async def call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(self.thread.call(fn))

    def post(self, fn: Callable[[], Any]) -> None:
        """Run fn on the engine thread; its errors are logged, never raised here."""
        fut = self.thread.call(fn)
        fut.add_done_callback(_log_failure)

    def _deliver(self, outputs: dict[str, TurnOutputs]) -> None:
        lay = self.layout
        for sid, out in outputs.items():
            ss = self.sessions.get(sid)
            if ss is None or ss.ended:
                continue
            speech = self._speech_events(ss, out)
            conn = ss.conn
            if conn is None:
                continue  # away: the micro-turn happened, nobody hears it
            conn.send_json(
                "turn",
                {
                    "type": "turn",
                    "turn": out.turn,
                    "time_s": round(lay.input_start_s(out.turn + 1), 3),
                    "play_at_s": round(out.play_at_s, 3),
                    "text": out.text,
                    "eom": out.end_of_message,
                    "actions": [{"time_s": a.time_s, "kind": a.kind} for a in out.actions],
                    "step_ms": round(out.step_ms, 2),
                    "lateness_ms": round(out.lateness_ms, 2),
                    "missing": list(out.missing),
                    "dropped_audio": conn.outbox.dropped_audio,
                },
            )
            conn.outbox.put("audio", bytes([KIND_AUDIO]) + to_pcm16(out.audio))
            for ev in speech:
                conn.send_json("event", ev)
            for e in out.events:
                conn.send_json(
                    "event",
                    {
                        "type": "event",
                        "kind": e.kind,
                        "time_s": e.time_s,
                        "text": e.text,
                        "data": _jsonable(e.data),
                    },
                )

    def _speech_events(self, ss: ServerSession, out: TurnOutputs) -> list[dict]:
        """speech_start / speech_stop from the model's audio itself: an audible 10 ms
        frame (the recorder's -45 dBFS rule) after silence starts an utterance; 0.3 s
        without one ends it (stamped at the end of the last audible frame)."""
        events = []
        step = ACTIVITY_FRAME / SAMPLE_RATE
        active = audible_frames(np.asarray(out.audio, np.float32))
        for i, on in enumerate(active.tolist()):
            t = out.play_at_s + i * step
            if on:
                if not ss.speaking:
                    ss.speaking = True
                    events.append({"type": "event", "kind": "speech_start", "time_s": round(t, 3)})
                ss.last_voice_s = t + step
            elif ss.speaking and t + step - ss.last_voice_s >= MERGE_GAP_S:
                ss.speaking = False
                events.append(
                    {"type": "event", "kind": "speech_stop", "time_s": round(ss.last_voice_s, 3)}
                )
        return events

    # sessions
    def _new_id(self) -> str:
        self._ids += 1
        return f"s{self._ids}"

    async def open_session(self) -> ServerSession | None:
        if len(self.sessions) + self.opening >= self.cfg.max_sessions:
            return None
        self.opening += 1
        try:
            sid = self._new_id()
            await self.call(lambda: self.engine.open(sid, seed=secrets.randbelow(2**31)))
        except RuntimeError:  # the engine is full (its own limit)
            return None
        finally:
            self.opening -= 1
        ss = ServerSession(sid, secrets.token_urlsafe(24))
        self.sessions[sid] = ss
        self.by_resume[ss.resume_token] = ss
        return ss

    def end_session(self, ss: ServerSession) -> None:
        if ss.ended:
            return
        ss.ended = True
        if ss.expiry is not None:
            ss.expiry.cancel()
        self.sessions.pop(ss.id, None)
        self.by_resume.pop(ss.resume_token, None)
        self.post(lambda: self.engine.close(ss.id) if ss.id in self.engine.sessions else None)

    def detach(self, ss: ServerSession, conn: Connection) -> None:
        """The client went away without `bye`: keep the session for a resume."""
        if ss.conn is not conn or ss.ended:
            return
        ss.conn = None
        assert self.loop is not None
        ss.expiry = self.loop.call_later(self.cfg.resume_window_s, self.end_session, ss)

    # the page
    async def index(self, request: web.Request) -> web.StreamResponse:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return web.Response(text="microturn server: no page installed; WebSocket at /ws\n")
        return web.FileResponse(page)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "sessions": self.live_sessions(),
                "max_sessions": self.cfg.max_sessions,
                "ticks": self.thread.ticks,
                "tick_errors": self.thread.tick_errors,
            }
        )

    # the WebSocket
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        cfg = self.cfg
        ws = web.WebSocketResponse(
            max_msg_size=cfg.max_message_bytes,
            timeout=2.0,
            compress=False,
            heartbeat=None,
            writer_limit=cfg.send_buffer_bytes,
        )
        await ws.prepare(request)
        _limit_send_buffer(request, cfg.send_buffer_bytes)
        self.websockets.add(ws)
        try:
            await self._serve(request, ws)
        except Exception:  # never let one client take the server down
            log.exception("session handler failed")
            if not ws.closed:
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
        finally:
            self.websockets.discard(ws)
        return ws

    async def _serve(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        cfg = self.cfg
        if cfg.token is not None:
            given = request.query.get("token", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, cfg.token.encode("utf-8")):
                await ws.close(code=CLOSE_POLICY, message=b"missing or wrong token")
                return
        try:
            msg = await ws.receive(timeout=cfg.hello_timeout_s)
        except TimeoutError:
            await ws.close(code=CLOSE_IDLE, message=b"no hello")
            return
        if msg.type != WSMsgType.TEXT:
            if not ws.closed:
                await ws.close(code=CLOSE_POLICY, message=b"first message must be hello")
            return
        hello = _parse_json(msg.data)
        if hello is None or hello.get("type") != "hello":
            await ws.close(code=CLOSE_POLICY, message=b"first message must be hello")
            return
        version = hello.get("version")
        if type(version) is not int or version != PROTOCOL_VERSION:
            await ws.close(code=CLOSE_VERSION, message=b"protocol version not supported")
            return
        resume = hello.get("resume")
        resumed = resume is not None
        if resumed:
            ss = self.by_resume.get(resume) if isinstance(resume, str) else None
            if ss is None or ss.ended:
                await ws.close(code=CLOSE_BAD_RESUME, message=b"unknown or expired resume token")
                return
        else:
            ss = await self.open_session()
            if ss is None:
                await ws.close(code=CLOSE_FULL, message=b"server full")
                return
        conn = Connection(ws, cfg)
        old = ss.conn
        if ss.expiry is not None:
            ss.expiry.cancel()
            ss.expiry = None
        ss.conn = conn
        if old is not None:  # a resume while the old socket still looked alive:
            old.kick(CLOSE_TAKEN_OVER, b"resumed elsewhere", False)  # its handler closes it
        conn.start()
        lay = self.layout
        session = self.engine.sessions.get(ss.id)
        conn.send_json(
            "ready",
            {
                "type": "ready",
                "version": PROTOCOL_VERSION,
                "session": ss.id,
                "resume_token": ss.resume_token,
                "resumed": resumed,
                "turn": session.turn if session is not None else 0,
                "sample_rate": SAMPLE_RATE,
                "micro_turn_ms": lay.micro_turn_ms,
                "samples_per_turn": lay.samples_per_turn,
                "camera_fps": (lay.video_frames / lay.micro_turn_s) if lay.video_size else 0,
                "camera_size": lay.video_size,
                "max_message_bytes": cfg.max_message_bytes,
                "idle_timeout_s": cfg.idle_timeout_s,
                "resume_window_s": cfg.resume_window_s,
            },
        )
        ended = False
        try:
            ended = await self._loop(ss, conn)
        finally:
            await conn.stop()
            if ended:
                self.end_session(ss)
            else:
                self.detach(ss, conn)

    async def _loop(self, ss: ServerSession, conn: Connection) -> bool:
        """Read the client's messages; True when the session is over (bye, idle, a
        protocol close), False when the client dropped (the session waits for a resume)."""
        ws = conn.ws
        kicked = asyncio.ensure_future(conn.kicked.wait())
        try:
            while True:
                recv = asyncio.ensure_future(ws.receive(timeout=self.cfg.idle_timeout_s))
                await asyncio.wait({recv, kicked}, return_when=asyncio.FIRST_COMPLETED)
                if not recv.done():  # taken over by a resume, or shutdown
                    recv.cancel()
                    with contextlib.suppress(BaseException):
                        await recv
                    code, reason, ends = conn.kick_close
                    await conn.flush(0.2)
                    await ws.close(code=code, message=reason)
                    return ends
                try:
                    msg = recv.result()
                except TimeoutError:
                    await ws.close(code=CLOSE_IDLE, message=b"idle timeout")
                    return True
                ended = await self._message(ss, conn, msg)
                if ended is not None:
                    return ended
        finally:
            kicked.cancel()

    async def _message(self, ss: ServerSession, conn: Connection, msg: Any) -> bool | None:
        """One client message; True / False end the loop (see `_loop`), None goes on."""
        ws = conn.ws
        if msg.type == WSMsgType.BINARY:
            self._binary(ss, conn, msg.data)
        elif msg.type == WSMsgType.TEXT:
            if self._text(ss, conn, msg.data):
                await conn.flush()
                await ws.close(code=CLOSE_OK, message=b"bye")
                return True
        elif msg.type == WSMsgType.ERROR:
            # aiohttp already closed the socket: a protocol violation (1009 for an
            # oversized message) ends the session; a network error only drops it
            return isinstance(msg.data, WebSocketError)
        else:  # CLOSE / CLOSING / CLOSED: the client left without bye
            return False
        return None

    def _binary(self, ss: ServerSession, conn: Connection, data: bytes) -> None:
        if not data:
            conn.error("malformed", "empty binary message")
            return
        kind, payload = data[0], data[1:]
        if kind == KIND_AUDIO:
            if not payload or len(payload) % 2:
                conn.error("malformed", "audio payload must be a whole number of PCM16 samples")
                return
            if not conn.allow_audio(len(payload) // 2):
                return
            pcm = from_pcm16(payload)
            sid = ss.id
            self.post(lambda: self._push(sid, lambda s: s.push_audio(pcm)))
        elif kind == KIND_CAMERA:
            if self.vision is None:
                conn.error("unsupported", "this model has no camera input")
                return
            if conn.decoding:
                conn.frames_dropped += 1  # the latest frame wins; one decode at a time
                return
            conn.decoding = True
            assert self.loop is not None
            fut = self.loop.run_in_executor(None, decode_jpeg, payload, self.vision)
            fut.add_done_callback(lambda f: self._decoded(ss, conn, f))
        else:
            conn.error("malformed", f"unknown binary kind 0x{kind:02x}")

    def _decoded(self, ss: ServerSession, conn: Connection, fut: asyncio.Future) -> None:
        conn.decoding = False
        try:
            frame = fut.result()
        except ValueError as err:
            conn.error("malformed", f"camera frame: {err}")
            return
        except Exception as err:  # anything Pillow raises on junk
            conn.error("malformed", f"camera frame: {type(err).__name__}")
            return
        if not ss.ended:
            sid = ss.id
            self.post(lambda: self._push(sid, lambda s: s.push_frame(frame)))

    def _push(self, sid: str, fn: Callable[[Any], None]) -> None:
        """On the engine thread: give a session its input (unless it closed meanwhile)."""
        s = self.engine.sessions.get(sid)
        if s is not None and not s.closed:
            fn(s)

    def _text(self, ss: ServerSession, conn: Connection, data: str) -> bool:
        """Handle one JSON message; True for `bye`."""
        obj = _parse_json(data)
        kind = obj.get("type") if obj is not None else None
        if kind == "bye":
            return True
        if not conn.allow_text():  # every JSON message but bye counts
            conn.error("too_fast", f"more than {self.cfg.text_per_s:g} messages per second")
            return False
        if obj is None:
            conn.error("malformed", "text frames must be JSON objects")
            return False
        if kind == "text":
            text = obj.get("text")
            if not isinstance(text, str) or not text.strip():
                conn.error("malformed", "text: 'text' must be a non-empty string")
            elif len(text) > MAX_TEXT_CHARS:
                conn.error("malformed", f"text: longer than {MAX_TEXT_CHARS} characters")
            else:
                sid = ss.id
                self.post(lambda: self._push(sid, lambda s: s.push_text(text)))
        elif kind == "ping":
            t = obj.get("t")
            if t is not None and not (
                isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
            ):
                conn.error("malformed", "ping: 't' must be a number")
            else:
                conn.send_json("pong", {"type": "pong", "t": t})
        elif kind == "hello":
            conn.error("malformed", "hello is only the first message")
        else:
            conn.error("malformed", f"unknown message type {str(kind)[:40]!r}")
        return False

    # lifecycle
    async def startup(self, app: web.Application) -> None:
        self.loop = asyncio.get_running_loop()
        await self.loop.run_in_executor(None, warm_up, self.engine)
        self.thread.start()

    async def cleanup(self, app: web.Application) -> None:
        for ss in list(self.sessions.values()):
            if ss.conn is not None:
                ss.conn.kick(CLOSE_OK, b"server shutdown", True)
        end = time.monotonic() + 3.0
        while self.websockets and time.monotonic() < end:  # their handlers close them
            await asyncio.sleep(0.02)
        for ws in list(self.websockets):
            if not ws.closed:
                with contextlib.suppress(Exception):  # shutting down anyway
                    await ws.close(code=CLOSE_OK, message=b"server shutdown")
        for ss in list(self.sessions.values()):
            self.end_session(ss)
        await asyncio.get_running_loop().run_in_executor(None, self.thread.stop)
        self.engine.shutdown()
        self.loop = None


def _limit_send_buffer(request: web.Request, size: int) -> None:
    transport = request.transport
    if transport is None:
        return
    with contextlib.suppress(Exception):  # best effort: not every transport has these
        transport.set_write_buffer_limits(high=size)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def _log_failure(fut: concurrent.futures.Future) -> None:
    if fut.cancelled():
        return
    err = fut.exception()
    if err is not None:
        log.warning("engine command failed: %s", err)


def _parse_json(data: str) -> dict | None:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _jsonable(data: Any) -> Any:
    try:
        json.dumps(data)
        return data
    except (TypeError, ValueError):
        return {k: str(v) for k, v in dict(data).items()} if isinstance(data, dict) else str(data)


def decode_jpeg(data: bytes, vision: VisionCodec) -> np.ndarray:
    """One JPEG (or any image Pillow reads) -> RGB uint8 fitted to the model's frame
    (`VisionCodec.fit`, letterboxed). Huge images are refused from their header."""
    from PIL import Image

    if not data:
        raise ValueError("empty image")
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        if w <= 0 or h <= 0 or w * h > MAX_IMAGE_PIXELS:
            raise ValueError(f"image of {w}x{h} pixels is too large")
        im.draft("RGB", (vision.size, vision.size))  # JPEG: decode at a reduced scale
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return vision.fit(rgb)


def warm_up(engine: Engine) -> None:
    """The first steps pay for torch's lazy set-up (seconds): pay them before serving."""
    lay = engine.layout
    s = engine.open("warm-up")
    try:
        for _ in range(2):
            s.push_audio(np.zeros(lay.samples_per_turn, np.float32))
            engine.tick()
    finally:
        engine.close(s)


LIVE = web.AppKey("microturn_live", LiveServer)


def create_app(
    model_or_factory: Any,
    *,
    thinker: Any = None,
    **settings: Any,
) -> web.Application:
    """The aiohttp application. `model_or_factory`: an InteractionModel (an Engine is made
    on a RealClock with `max_sessions` rows and `thinker`), or a callable
    `factory(clock=..., max_sessions=...) -> Engine` (it must use the given clock).
    `settings`: ServerConfig fields (token, max_sessions, limits); the rest keep their
    defaults."""
    cfg = ServerConfig(**settings)
    if cfg.max_sessions < 1:
        raise ValueError("max_sessions must be at least 1")
    clock = RealClock()
    if hasattr(model_or_factory, "layout") and hasattr(model_or_factory, "new_state"):
        engine = Engine(
            model_or_factory,
            max_sessions=cfg.max_sessions,
            clock=clock,
            idle_timeout_s=math.inf,  # the server closes idle clients itself
            thinker=thinker,
        )
    else:
        engine = model_or_factory(clock=clock, max_sessions=cfg.max_sessions)
    live = LiveServer(engine, cfg)
    app = web.Application(client_max_size=cfg.max_message_bytes)
    app[LIVE] = live
    app.router.add_get("/", live.index)
    app.router.add_get("/ws", live.websocket)
    app.router.add_get("/health", live.health)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    app.on_startup.append(live.startup)
    app.on_shutdown.append(live.cleanup)
    return app


class ServerThread:
    """Serve an app on its own event loop in a background thread (tests, benches):
    `with ServerThread(create_app(model)) as srv: talk_sync(srv.ws_url, ...)`."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def live(self) -> LiveServer:
        return self.app[LIVE]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def start(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(120)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def run(self, coro: Any, timeout_s: float = 60.0) -> Any:
        """Run a coroutine on the server's loop (to look at its state safely)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
            self._runner = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
