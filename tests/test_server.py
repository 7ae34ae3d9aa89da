"""The live server (microturn/server): protocol, limits, resume, isolation, fuzzing, talk.

One server (an untrained tiny model, 3 sessions) runs on a loopback port for the whole
module; tests that change a limit change it on the live config and put it back."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import numpy as np
import pytest

from microturn.server.app import (
    CLOSE_BAD_RESUME,
    CLOSE_FULL,
    CLOSE_IDLE,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_VERSION,
    Outbox,
    ServerSession,
    ServerThread,
    create_app,
)

SPT = 3200
MAX_SESSIONS = 3
MAX_BYTES = 32_768


@pytest.fixture(scope="module")
def srv():
    import torch

    from microturn.model import InteractionModel, ModelConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = InteractionModel(ModelConfig.preset("tiny"))
    app = create_app(
        model,
        max_sessions=MAX_SESSIONS,
        max_message_bytes=MAX_BYTES,
        idle_timeout_s=20.0,
        resume_window_s=1.0,
    )
    with ServerThread(app) as server:
        yield server
    torch.set_num_threads(threads)


def live_count(srv: ServerThread) -> int:
    return srv.live.live_sessions()


def wait_sessions(srv: ServerThread, n: int, timeout_s: float = 5.0) -> int:
    end = time.monotonic() + timeout_s
    while live_count(srv) != n and time.monotonic() < end:
        time.sleep(0.05)
    return live_count(srv)


def on_engine(srv: ServerThread, fn):
    return srv.run(srv.live.call(fn))


async def hello(http: aiohttp.ClientSession, url: str, **extra):
    ws = await http.ws_connect(url, max_msg_size=0)
    await ws.send_str(json.dumps({"type": "hello", "version": 1, **extra}))
    msg = await ws.receive(timeout=10)
    if msg.type != aiohttp.WSMsgType.TEXT:
        return ws, None
    return ws, json.loads(msg.data)


async def close_code(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 10.0) -> int | None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        msg = await ws.receive(timeout=timeout_s)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    return ws.close_code


async def until(ws, pred, timeout_s: float = 5.0):
    """Read messages until pred(parsed JSON) is true; return it (None on timeout)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        msg = await ws.receive(timeout=end - time.monotonic())
        if msg.type == aiohttp.WSMsgType.TEXT:
            obj = json.loads(msg.data)
            if pred(obj):
                return obj
        elif msg.type != aiohttp.WSMsgType.BINARY:
            return None
    return None


def audio_frame(n: int = SPT, amp: float = 0.1) -> bytes:
    t = np.arange(n) / 16000
    x = (amp * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    return b"\x01" + x.tobytes()


# ---- the handshake, audio out, turns, typed text -----------------------------------------


def test_handshake_streams_audio_and_turns(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            ws, ready = await hello(http, srv.ws_url)
            assert ready["type"] == "ready" and ready["version"] == 1
            assert ready["resumed"] is False and ready["sample_rate"] == 16000
            assert ready["micro_turn_ms"] == 200 and ready["samples_per_turn"] == SPT
            sid = ready["session"]
            turns, audio = [], []
            pending_turn = None
            start = time.monotonic()
            sent = 0
            await ws.send_str(json.dumps({"type": "text", "text": "hello there"}))
            while time.monotonic() - start < 2.4:
                due = start + 0.2 * (sent + 1)
                if time.monotonic() >= due and sent < 10:
                    await ws.send_bytes(audio_frame())
                    sent += 1
                try:
                    msg = await ws.receive(timeout=max(0.01, due - time.monotonic()))
                except TimeoutError:
                    continue
                if msg.type == aiohttp.WSMsgType.TEXT:
                    obj = json.loads(msg.data)
                    if obj["type"] == "turn":
                        turns.append(obj)
                        pending_turn = obj["turn"]
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    assert msg.data[0] == 1 and pending_turn is not None
                    audio.append((pending_turn, len(msg.data)))
            transcript = on_engine(
                srv, lambda: [ln.text for ln in srv.live.engine.sessions[sid].transcript]
            )
            await ws.send_str(json.dumps({"type": "bye"}))
            code = await close_code(ws)
            return turns, audio, transcript, code

    turns, audio, transcript, code = asyncio.run(go())
    assert code == 1000
    assert len(turns) >= 9  # one per 200 ms
    idx = [t["turn"] for t in turns]
    assert idx == list(range(idx[0], idx[0] + len(idx)))
    assert all(n == 1 + 2 * SPT for _, n in audio)  # one micro-turn of PCM16 per turn
    assert [t for t, _ in audio] == idx[: len(audio)] and len(audio) >= len(turns) - 1
    assert any(not t["missing"] for t in turns)  # our audio was used
    for t in turns:
        assert {"time_s", "play_at_s", "text", "eom", "step_ms", "lateness_ms"} <= t.keys()
    assert "hello there" in transcript
    assert wait_sessions(srv, 0) == 0


def test_speech_events_from_audio():
    from microturn.engine.engine import TurnOutputs
    from microturn.server.app import LiveServer

    ss = ServerSession("s", "r")
    loud = 0.3 * np.sin(np.arange(SPT) / 5).astype(np.float32)
    quiet = np.zeros(SPT, np.float32)
    events = []
    for t, pcm in enumerate([quiet, loud, quiet, quiet]):
        out = TurnOutputs(t, 0.25 + 0.2 * t, pcm, "", False, [], 1.0, 0.0, ())
        events += LiveServer._speech_events(None, ss, out)  # type: ignore[arg-type]
    kinds = [(e["kind"], e["time_s"]) for e in events]
    assert kinds == [("speech_start", 0.45), ("speech_stop", 0.65)]


def test_outbox_drops_oldest_audio_first():
    async def go():
        box = Outbox(4)
        box.put("turn", "t0")
        box.put("audio", b"a0")
        box.put("event", "e0")
        box.put("audio", b"a1")
        box.put("turn", "t1")  # full: a0 goes
        box.put("audio", b"a2")  # a1 goes
        assert box.dropped_audio == 2 and box.dropped_other == 0
        return [await box.get() for _ in range(4)]

    got = asyncio.run(go())
    assert [f for _, f in got] == ["t0", "e0", "t1", b"a2"]


# ---- auth and limits ---------------------------------------------------------------------


def test_token_required_when_configured(srv):
    async def go():
        srv.live.cfg.token = "s3cret"
        try:
            async with aiohttp.ClientSession() as http:
                codes = []
                for url in (srv.ws_url, srv.ws_url + "?token=wrong"):
                    ws, ready = await hello(http, url)
                    assert ready is None
                    codes.append(ws.close_code)
                ws, ready = await hello(http, srv.ws_url + "?token=s3cret")
                assert ready["type"] == "ready"
                await ws.send_str(json.dumps({"type": "bye"}))
                codes.append(await close_code(ws))
                return codes
        finally:
            srv.live.cfg.token = None

    assert asyncio.run(go()) == [CLOSE_POLICY, CLOSE_POLICY, 1000]
    assert wait_sessions(srv, 0) == 0


def test_hello_rules(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            codes = []
            ws = await http.ws_connect(srv.ws_url)
            await ws.send_str(json.dumps({"type": "ping"}))
            codes.append(await close_code(ws))
            ws, _ = await hello(http, srv.ws_url.replace("/ws", "/ws"), version=2)
            codes.append(ws.close_code)
            ws = await http.ws_connect(srv.ws_url)
            await ws.send_str(json.dumps({"type": "hello", "version": 2}))
            codes.append(await close_code(ws))
            ws = await http.ws_connect(srv.ws_url)
            await ws.send_str(json.dumps({"type": "hello", "version": 1, "resume": "nope"}))
            codes.append(await close_code(ws))
            return codes

    codes = asyncio.run(go())
    assert codes[0] == CLOSE_POLICY and codes[1] == CLOSE_VERSION
    assert codes[2] == CLOSE_VERSION and codes[3] == CLOSE_BAD_RESUME
    assert wait_sessions(srv, 0) == 0


def test_max_sessions_closes_4001(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            socks = []
            for _ in range(MAX_SESSIONS):
                ws, ready = await hello(http, srv.ws_url)
                assert ready["type"] == "ready"
                socks.append(ws)
            extra, ready = await hello(http, srv.ws_url)
            assert ready is None
            code = extra.close_code
            for ws in socks:
                await ws.send_str(json.dumps({"type": "bye"}))
                await close_code(ws)
            return code

    assert asyncio.run(go()) == CLOSE_FULL
    assert wait_sessions(srv, 0) == 0


def test_oversize_message_closes_1009(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            ws, ready = await hello(http, srv.ws_url)
            assert ready["type"] == "ready"
            await ws.send_bytes(b"\x01" + bytes(MAX_BYTES + 2))
            return await close_code(ws)

    assert asyncio.run(go()) == CLOSE_TOO_BIG
    assert wait_sessions(srv, 0) == 0  # a protocol close ends the session (no resume)


def test_idle_timeout_closes_4002(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            ws, ready = await hello(http, srv.ws_url)
            assert ready["type"] == "ready"
            t0 = time.monotonic()
            code = await close_code(ws)
            return code, time.monotonic() - t0

    srv.live.cfg.idle_timeout_s = 0.5
    try:
        code, waited = asyncio.run(go())
    finally:
        srv.live.cfg.idle_timeout_s = 20.0
    assert code == CLOSE_IDLE and waited < 3
    assert wait_sessions(srv, 0) == 0


# ---- bad input: error events, the session goes on ----------------------------------------


def test_bad_messages_get_errors_and_session_continues(srv):
    bad = [
        ("text", "{not json"),
        ("text", "[1, 2]"),
        ("text", json.dumps({"type": "dance"})),
        ("text", json.dumps({"type": "text"})),
        ("text", json.dumps({"type": "text", "text": "x" * 1001})),
        ("bytes", b"\x01\x00\x01\x02"),  # odd-length audio
        ("bytes", b"\x02not a jpeg at all"),
        ("bytes", b"\x07abc"),  # unknown kind
        ("bytes", b""),
    ]

    async def go():
        async with aiohttp.ClientSession() as http:
            ws, _ready = await hello(http, srv.ws_url)
            errors = []
            for kind, data in bad:
                if kind == "text":
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
                err = await until(ws, lambda o: o["type"] == "error")
                errors.append(err)
            await ws.send_bytes(audio_frame())
            await ws.send_str(json.dumps({"type": "ping", "t": 7}))
            pong = await until(ws, lambda o: o["type"] == "pong")
            turn = await until(ws, lambda o: o["type"] == "turn")
            await ws.send_str(json.dumps({"type": "bye"}))
            return errors, pong, turn, await close_code(ws)

    errors, pong, turn, code = asyncio.run(go())
    assert all(e is not None and e["code"] == "malformed" for e in errors), errors
    assert pong == {"type": "pong", "t": 7} and turn is not None and code == 1000
    assert wait_sessions(srv, 0) == 0


def test_camera_jpeg_reaches_the_session(srv):
    from microturn.server.client import encode_jpeg

    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)

    async def go():
        async with aiohttp.ClientSession() as http:
            ws, ready = await hello(http, srv.ws_url)
            sid = ready["session"]
            await ws.send_bytes(b"\x02" + encode_jpeg(img))
            await ws.send_str(json.dumps({"type": "ping", "t": 1}))
            await until(ws, lambda o: o["type"] == "pong")
            await asyncio.sleep(0.3)
            frame = on_engine(srv, lambda: srv.live.engine.sessions[sid]._frame)
            await ws.send_str(json.dumps({"type": "bye"}))
            await close_code(ws)
            return frame

    frame = asyncio.run(go())
    size = srv.live.layout.video_size
    assert frame is not None and frame.shape == (size, size, 3) and frame.dtype == np.uint8


def test_text_flood_is_limited(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            ws, _ready = await hello(http, srv.ws_url)
            for i in range(40):
                await ws.send_str(json.dumps({"type": "text", "text": f"m{i}"}))
            err = await until(ws, lambda o: o["type"] == "error")
            await ws.send_str(json.dumps({"type": "bye"}))
            await close_code(ws)
            return err

    assert asyncio.run(go())["code"] == "too_fast"
    assert wait_sessions(srv, 0) == 0


def test_audio_faster_than_real_time_is_dropped(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            ws, ready = await hello(http, srv.ws_url)
            chunk = audio_frame(MAX_BYTES // 2 - 8)  # ~1 s per message
            for _ in range(12):  # 12 s of audio at once
                await ws.send_bytes(chunk)
            err = await until(ws, lambda o: o["type"] == "error")
            await ws.send_str(json.dumps({"type": "ping", "t": 2}))
            pong = await until(ws, lambda o: o["type"] == "pong")
            dropped = srv.live.sessions[ready["session"]].conn.audio_dropped
            await ws.send_str(json.dumps({"type": "bye"}))
            return err, pong, dropped, await close_code(ws)

    err, pong, dropped, code = asyncio.run(go())
    assert err["code"] == "too_fast" and pong is not None and code == 1000
    assert dropped >= 6 * 16000  # what went beyond the burst allowance
    assert wait_sessions(srv, 0) == 0


def test_shutdown_closes_clients_with_1000():
    from microturn.model import InteractionModel, ModelConfig

    server = ServerThread(create_app(InteractionModel(ModelConfig.preset("tiny")))).start()

    async def go():
        async with aiohttp.ClientSession() as http:
            ws, ready = await hello(http, server.ws_url)
            assert ready["type"] == "ready"
            stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
            code = await close_code(ws)
            await stopping
            return code

    assert asyncio.run(go()) == 1000


# ---- resume ------------------------------------------------------------------------------


def test_resume_keeps_the_engine_session(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            ws, ready = await hello(http, srv.ws_url)
            sid, token = ready["session"], ready["resume_token"]
            for _ in range(3):
                await ws.send_bytes(audio_frame())
            before = await until(ws, lambda o: o["type"] == "turn" and o["turn"] >= 2)
            obj_before = srv.live.engine.sessions[sid]
            # a forced disconnect: the socket just goes away, no close handshake
            ws._response.connection.transport.abort()  # type: ignore[union-attr]
            await asyncio.sleep(0.5)
            assert live_count(srv) == 1  # kept for the resume
            ws2, ready2 = await hello(http, srv.ws_url, resume=token)
            after = await until(ws2, lambda o: o["type"] == "turn")
            row = on_engine(
                srv,
                lambda: (
                    srv.live.engine.sessions[sid] is obj_before,
                    int(srv.live.engine.state.turns[srv.live.engine.sessions[sid].row]),
                    srv.live.engine.sessions[sid].turn,
                    srv.live.engine.sessions[sid].metrics.missing_inputs,
                ),
            )
            await ws2.send_str(json.dumps({"type": "bye"}))
            code = await close_code(ws2)
            return ready, ready2, before, after, row, code

    ready, ready2, before, after, row, code = asyncio.run(go())
    assert ready2["resumed"] is True and ready2["session"] == ready["session"]
    assert ready2["turn"] > before["turn"]
    assert after["turn"] > before["turn"] + 1  # the micro-turns while away happened
    same, state_turns, turn, missing = row
    assert same and state_turns == turn and state_turns > before["turn"]
    assert missing >= 2  # the turns it was away were marked missing
    assert code == 1000
    assert wait_sessions(srv, 0) == 0


def test_resume_takes_over_a_live_socket(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            ws, ready = await hello(http, srv.ws_url)
            ws2, ready2 = await hello(http, srv.ws_url, resume=ready["resume_token"])
            old = await close_code(ws)
            turn = await until(ws2, lambda o: o["type"] == "turn")
            await ws2.send_str(json.dumps({"type": "bye"}))
            return ready, ready2, old, turn, await close_code(ws2)

    ready, ready2, old, turn, code = asyncio.run(go())
    assert ready2["resumed"] and ready2["session"] == ready["session"]
    assert old == 4005 and turn is not None and code == 1000
    assert wait_sessions(srv, 0) == 0


def test_resume_window_expires(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            ws, ready = await hello(http, srv.ws_url)
            await ws.close()  # no bye: resumable for resume_window_s (1 s here)
            await asyncio.sleep(1.6)
            ws2, ready2 = await hello(http, srv.ws_url, resume=ready["resume_token"])
            return ready2, ws2.close_code

    ready2, code = asyncio.run(go())
    assert ready2 is None and code == CLOSE_BAD_RESUME
    assert wait_sessions(srv, 0) == 0


# ---- a stalled client does not delay anyone else -----------------------------------------


def _small_socket(addr_info):
    import socket

    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills in moments
    return sock


def test_stalled_client_does_not_delay_others(srv):
    async def go():
        connector = aiohttp.TCPConnector(socket_factory=_small_socket)
        async with (
            aiohttp.ClientSession(connector=connector, read_bufsize=1024) as slow,
            aiohttp.ClientSession() as http,
        ):
            stalled, sready = await hello(slow, srv.ws_url)
            # then it never reads again: its socket stops taking data (TCP window full)
            stalled._response.connection.transport.pause_reading()  # type: ignore[union-attr]
            for _ in range(30):  # and floods audio it will never hear back
                await stalled.send_bytes(audio_frame())
            ws, _ready = await hello(http, srv.ws_url)
            arrivals, lateness = [], []
            start = time.monotonic()
            while time.monotonic() - start < 3.0:
                msg = await ws.receive(timeout=2)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    obj = json.loads(msg.data)
                    if obj["type"] == "turn":
                        arrivals.append(time.monotonic())
                        lateness.append(obj["lateness_ms"])
            box = srv.live.sessions[sready["session"]].conn.outbox
            dropped = box.dropped_audio
            await ws.send_str(json.dumps({"type": "bye"}))
            await close_code(ws)
            stalled._response.connection.transport.abort()  # type: ignore[union-attr]
            return arrivals, lateness, dropped

    cfg = srv.live.cfg
    cfg.client_queue, cfg.send_buffer_bytes = 6, 4096
    try:
        arrivals, lateness, dropped = asyncio.run(go())
    finally:
        cfg.client_queue, cfg.send_buffer_bytes = 64, 65_536
    gaps = np.diff(arrivals)
    assert len(arrivals) >= 13  # ~15 micro-turns in 3 s
    assert np.percentile(lateness, 90) < 200, lateness  # under one micro-turn
    assert gaps.max() < 0.6, gaps
    assert dropped > 0  # the stalled client's oldest audio went, counted
    assert wait_sessions(srv, 0) == 0


# ---- fuzzing: random and mutated frames against the live server --------------------------

CLOSE_CODES = {1000, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_FULL, CLOSE_IDLE, CLOSE_BAD_RESUME}
CLOSE_CODES |= {CLOSE_VERSION, 4005}


def _jpeg() -> bytes:
    from microturn.server.client import encode_jpeg

    return encode_jpeg(np.full((24, 32, 3), 90, np.uint8))


def _frames():
    from hypothesis import strategies as st

    jpeg = _jpeg()
    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.sampled_from(["text", "ping", "hello", "dance", "", "TEXT"]),
        st.lists(st.integers(), max_size=3),
    )
    keys = st.sampled_from(["type", "text", "t", "version", "resume", "x"])
    mutated_jpeg = st.tuples(
        st.integers(0, len(jpeg)),
        st.lists(st.tuples(st.integers(0, len(jpeg) - 1), st.integers(0, 255)), max_size=8),
    ).map(lambda cut: _mutate(jpeg, *cut))
    return st.one_of(
        st.binary(max_size=400).map(lambda b: ("bytes", b)),
        st.tuples(st.sampled_from([0, 1, 2, 3, 255]), st.binary(max_size=300)).map(
            lambda kb: ("bytes", bytes([kb[0]]) + kb[1])
        ),
        mutated_jpeg.map(lambda b: ("bytes", b"\x02" + b)),
        st.text(max_size=200).map(lambda s: ("text", s)),
        st.dictionaries(keys, values, max_size=4).map(lambda d: ("text", json.dumps(d))),
    )


def _mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for i, v in flips:
        b[i] = v
    return bytes(b[: max(cut, 1)])


def test_fuzzed_frames_never_break_the_server(srv):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    outcomes: list[str] = []
    sent = [0]

    async def one(frames):
        async with aiohttp.ClientSession() as http:
            ws, ready = await hello(http, srv.ws_url)
            assert ready is not None and ready["type"] == "ready", ready
            for kind, data in frames:
                if ws.closed:
                    break
                if kind == "text":
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
                sent[0] += 1
            if not ws.closed:
                await ws.send_str(json.dumps({"type": "ping", "t": 1}))
                pong = await until(ws, lambda o: o["type"] == "pong")
                if pong is not None:
                    outcomes.append("alive")
                    await ws.send_str(json.dumps({"type": "bye"}))
            code = await close_code(ws)
            assert code in CLOSE_CODES, code

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,  # writes nothing
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_frames(), min_size=10, max_size=60))
    def run(frames):
        asyncio.run(one(frames))

    run()
    assert sent[0] >= 2000  # thousands of random and mutated frames
    assert outcomes.count("alive") >= 40  # most sessions went on after the junk
    assert wait_sessions(srv, 0, timeout_s=5) == 0  # nothing leaked

    async def health():
        async with aiohttp.ClientSession() as http, http.get(srv.url + "/health") as r:
            return r.status, await r.json()

    status, body = asyncio.run(health())
    assert status == 200 and body["sessions"] == 0 and body["tick_errors"] == 0


# ---- the Python client and `microturn talk` ----------------------------------------------


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)


def test_talk_command_end_to_end(srv, tmp_path):
    from microturn.cli import main
    from microturn.codecs.audio import write_wav
    from microturn.stream.episode import Timeline

    wav = tmp_path / "in.wav"
    write_wav(wav, _tone(1.2))
    out = tmp_path / "out"
    args = ["talk", "--url", srv.ws_url, "--audio", str(wav), "--text", "0.4:hello"]
    rc = main([*args, "--out", str(out), "--tail-s", "0.4"])
    assert rc == 0
    tl = Timeline.load(out / "timeline.json")
    import soundfile as sf

    speech, rate = sf.read(out / "model.wav")
    assert rate == 16000
    n = len(tl.turns)
    assert n >= 8
    idx = [t.index for t in tl.turns]
    assert idx == list(range(idx[0], idx[0] + n))
    # one micro-turn of speech per micro-turn, after the 50 ms vocoder delay
    assert abs(speech.size - (0.25 + 0.2 * n) * 16000) <= 3200
    assert tl.meta["errors"] == 0 and tl.meta["audio_chunks"] == 8
    assert wait_sessions(srv, 0) == 0


def test_client_with_camera_loss_and_jitter(srv):
    from microturn.server.client import talk_sync
    from microturn.stream.episode import TextEvent, VideoTrack

    frames = (np.random.default_rng(1).random((3, 60, 80, 3)) * 255).astype(np.uint8)
    video = VideoTrack(frames=frames, times_s=np.array([0.0, 0.4, 0.8]))
    res = talk_sync(
        srv.ws_url,
        _tone(1.6),
        video=video,
        text=[TextEvent(0.5, "hi")],
        tail_s=0.2,
        loss=0.3,
        jitter_s=0.05,
        seed=3,
    )
    st = res.stats
    assert st["frames"] == 3 and st["texts"] == 1 and not st["errors"]
    assert st["lost_chunks"] >= 1 and st["audio_chunks"] + st["lost_chunks"] == 9
    assert res.timeline.meta["lost_chunks"] == st["lost_chunks"]
    missing = sum(1 for t in res.timeline.turns if t.missing)
    assert missing >= st["lost_chunks"]
    assert res.stats["close_code"] == 1000
    assert wait_sessions(srv, 0) == 0


# ---- `microturn serve` -------------------------------------------------------------------


def test_serve_needs_a_model(tmp_path, capsys):
    from microturn.cli import main

    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_serve_command_runs_and_stops(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "microturn.cli", "serve", "--preset", "tiny", "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--token", "tok", "--max-sessions", "1"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy()
    )
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("WebSocket:"):
                break
        assert f"ws://127.0.0.1:{port}/ws?token=tok" in "".join(lines), lines

        async def go():
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 30
                while True:  # the page is served once the model has warmed up
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/") as r:
                            page = r.status
                        break
                    except aiohttp.ClientConnectorError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)
                ws, ready = await hello(http, f"ws://127.0.0.1:{port}/ws?token=tok")
                await ws.send_str(json.dumps({"type": "bye"}))
                return page, ready, await close_code(ws)

        page, ready, code = asyncio.run(go())
        assert page == 200 and ready["type"] == "ready" and code == 1000
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0


def test_delegation_events_are_forwarded(srv):
    from microturn.engine.engine import TurnOutputs
    from microturn.server.app import Connection
    from microturn.stream.episode import ActionEvent

    events = [
        ActionEvent(1.25, "delegate", "347 * 29", {"id": "d1", "transcript_lines": 2}),
        ActionEvent(2.45, "delegation_result", "10063", {"id": "d1", "status": "ok"}),
    ]
    out = TurnOutputs(5, 1.25, np.zeros(SPT, np.float32), "ok", True, [], 3.0, 1.0, (), events)

    async def go():
        ss = ServerSession("fake", "fake-token")
        ss.conn = Connection(None, srv.live.cfg)  # type: ignore[arg-type]
        srv.live.sessions["fake"] = ss
        try:
            srv.live._deliver({"fake": out})
        finally:
            del srv.live.sessions["fake"]
        return list(ss.conn.outbox.items)

    items = srv.run(go())
    kinds = [c for c, _ in items]
    assert kinds == ["turn", "audio", "event", "event"]
    turn = json.loads(items[0][1])
    assert turn["turn"] == 5 and turn["text"] == "ok" and turn["eom"] is True
    assert len(items[1][1]) == 1 + 2 * SPT
    sent = [json.loads(f) for _, f in items[2:]]
    assert sent[0] == {
        "type": "event",
        "kind": "delegate",
        "time_s": 1.25,
        "text": "347 * 29",
        "data": {"id": "d1", "transcript_lines": 2},
    }
    assert sent[1]["kind"] == "delegation_result" and sent[1]["data"]["status"] == "ok"
