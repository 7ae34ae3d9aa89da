"""The OpenAI-compatible thinker against a fake server on loopback: real HTTP, chunked
server-sent events. The server's behaviour is picked by the request's model name."""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import re
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from microturn.background import (
    FAILURE_TEXT,
    ContextPackage,
    Delegator,
    OpenAIThinker,
    ThinkerError,
    TranscriptLine,
)
from microturn.background.openai_client import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL

KEY = "sk-test-DO-NOT-LEAK-4711"


class FakeLLM:
    """State shared with the handler: every request seen, and when a slow stream found
    its client gone."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.got_request = threading.Event()
        self.client_gone = threading.Event()
        self.client_gone_at = 0.0
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    @property
    def fake(self) -> FakeLLM:
        return self.server.fake

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "auto-model"}]})
        else:
            self._json(404, {"error": {"message": "no such path"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.fake.lock:
            self.fake.requests.append(body)
            self.fake.headers.append(dict(self.headers))
        self.fake.got_request.set()
        if self.path != "/v1/chat/completions":
            return self._json(404, {"error": {"message": "no such path"}})
        getattr(self, "model_" + body["model"].replace("-", "_"))(body)

    # ---- behaviours ----------------------------------------------------------------
    def model_normal(self, body: dict[str, Any]) -> None:
        """Waits `delay=S` seconds (if the task says so), then streams "done <task>"."""
        task = body["messages"][-1]["content"]
        task = task if isinstance(task, str) else task[0]["text"]
        task = task.rsplit("Task: ", 1)[-1]
        m = re.search(r"delay=([\d.]+)", task)
        self._start_stream()
        self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        if m:
            time.sleep(float(m[1]))
        for piece in ("done ", task[: len(task) // 2], task[len(task) // 2 :]):
            self._event({"choices": [{"index": 0, "delta": {"content": piece}}]})
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._chunk(b"data: [DONE]\n\n")
        self._end()

    model_auto_model = model_normal  # the model /v1/models names

    def model_slow(self, body: dict[str, Any]) -> None:
        """Never answers: a keep-alive comment every 20 ms until the client goes away."""
        self._start_stream()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                self._chunk(b": keep-alive\n\n")
            except OSError:
                self.fake.client_gone_at = time.monotonic()
                self.fake.client_gone.set()
                return
            time.sleep(0.02)

    def model_malformed(self, body: dict[str, Any]) -> None:
        self._start_stream()
        self._event({"choices": [{"index": 0, "delta": {"content": "10"}}]})
        self._chunk(b"data: {this is not json\n\n")
        self._end()

    def model_no_choices(self, body: dict[str, Any]) -> None:
        self._start_stream()
        self._event({"id": "x", "object": "chat.completion.chunk"})
        self._end()

    def model_cut_short(self, body: dict[str, Any]) -> None:
        self._start_stream()
        self._event({"choices": [{"index": 0, "delta": {"content": "100"}}]})
        self._end()  # no finish_reason, no [DONE]

    def model_tools(self, body: dict[str, Any]) -> None:
        """First turn: call `calculate` (arguments streamed in pieces); after the tool's
        answer comes back: say it."""
        self._start_stream()
        tool = [m for m in body["messages"] if m["role"] == "tool"]
        if not tool:
            call = {"index": 0, "id": "call_1", "type": "function"}
            self._event(_tool_delta({**call, "function": {"name": "calculate", "arguments": ""}}))
            for part in ('{"expres', 'sion": "347 ', '* 29"}'):
                self._event(_tool_delta({"index": 0, "function": {"arguments": part}}))
            self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        else:
            content = f"it's {tool[0]['content']}"
            self._event({"choices": [{"index": 0, "delta": {"content": content}}]})
            self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._chunk(b"data: [DONE]\n\n")
        self._end()

    def model_plain_json(self, body: dict[str, Any]) -> None:
        """A server that ignores stream=true."""
        msg = {"role": "assistant", "content": "<think>hmm, 6 * 7</think> 42"}
        self._json(200, {"choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]})

    def model_denied(self, body: dict[str, Any]) -> None:
        """401 echoing the Authorization header back, as a careless server might."""
        self._json(401, {"error": {"message": f"bad key {self.headers['Authorization']}"}})

    # ---- HTTP plumbing -------------------------------------------------------------
    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, obj: Any) -> None:
        self._chunk(f"data: {json.dumps(obj)}\n\n".encode())

    def _end(self) -> None:
        self._chunk(b"")  # the zero-length chunk ends the body
        self.close_connection = True


def _tool_delta(call: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}


@pytest.fixture
def server():
    fake = FakeLLM()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"  # type: ignore[attr-defined]
    yield fake
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def thinker(server: FakeLLM, model: str, **kw: Any) -> OpenAIThinker:
    return OpenAIThinker(server.url, model, kw.pop("api_key", KEY), **kw)  # type: ignore[attr-defined]


def package(task: str) -> ContextPackage:
    return ContextPackage(
        task,
        (
            TranscriptLine(1.0, "user", "what is three forty seven times twenty nine?"),
            TranscriptLine(2.1, "model", "let me check"),
        ),
        session_s=2.3,
    )


def wait_results(d: Delegator, n: int, limit_s: float = 10.0) -> list:
    out: list = []
    end = time.monotonic() + limit_s
    while len(out) < n and time.monotonic() < end:
        out += d.poll()
        time.sleep(0.01)
    return out


def test_normal_streamed_answer_and_what_the_server_gets(server):
    t = thinker(server, "normal")
    assert t.think(package("347 * 29")) == "done 347 * 29"
    (req,) = server.requests
    assert req["model"] == "normal" and req["stream"] is True
    assert {tool["function"]["name"] for tool in req["tools"]} >= {"calculate", "lookup_fact"}
    system, user = req["messages"]
    assert system["role"] == "system" and "short" in system["content"]
    assert "[1.0 s] user: what is three forty seven" in user["content"]
    assert "[2.1 s] assistant: let me check" in user["content"]
    assert user["content"].endswith("Task: 347 * 29")
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"


def test_timeout_is_a_spoken_failure(server):
    t = thinker(server, "slow", timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(ThinkerError) as e:
        t.think(package("anything"))
    assert e.value.kind == "timeout"
    assert 0.35 < time.monotonic() - started < 1.5
    assert server.client_gone.wait(2.0)  # and the connection was dropped, not left open

    with Delegator(thinker(server, "slow", timeout_s=0.4)) as d:
        d.submit(package("anything"))
        (r,) = wait_results(d, 1)
    assert r.error == "timeout" and r.text == FAILURE_TEXT["timeout"]


def test_cancel_closes_the_connection_promptly(server):
    with Delegator(thinker(server, "slow")) as d:
        did = d.submit(package("never mind"))
        assert server.got_request.wait(5.0)
        time.sleep(0.1)  # the stream is flowing
        cancelled_at = time.monotonic()
        assert d.cancel(did)
        assert server.client_gone.wait(2.0)
        assert server.client_gone_at - cancelled_at < 0.5
        (r,) = d.poll()
        assert r.id == did and r.error == "cancelled"


def test_delegator_timeout_cancels_an_http_thinker(server):
    """The delegator's own limit (shorter than the request's) also hangs up."""
    with Delegator(thinker(server, "slow", timeout_s=30), timeout_s=0.3) as d:
        d.submit(package("slow one"))
        (r,) = wait_results(d, 1)
        gave_up = time.monotonic()
        assert r.error == "timeout"
        assert server.client_gone.wait(2.0)
        assert server.client_gone_at - gave_up < 0.5


@pytest.mark.parametrize("model", ["malformed", "no_choices", "cut_short"])
def test_malformed_responses_are_spoken_failures(server, model):
    with pytest.raises(ThinkerError) as e:
        thinker(server, model).think(package("347 * 29"))
    assert e.value.kind == "malformed", e.value.detail
    with Delegator(thinker(server, model)) as d:
        d.submit(package("347 * 29"))
        (r,) = wait_results(d, 1)
    assert not r.ok and r.text == FAILURE_TEXT["malformed"]


def test_unreachable_server_and_http_errors(server):
    with pytest.raises(ThinkerError) as e:
        OpenAIThinker("http://127.0.0.1:9/v1", "m", timeout_s=2).think(package("x"))
    assert e.value.kind == "unavailable"
    with pytest.raises(ThinkerError) as e:
        thinker(server, "denied").think(package("x"))
    assert e.value.kind == "unavailable" and "401" in e.value.detail


def test_tool_call_round_trip(server):
    t = thinker(server, "tools")
    assert t.think(package("what is 347 times 29")) == "it's 10063"
    first, second = server.requests
    assert first["messages"][-1]["role"] == "user"
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "calculate",
        "arguments": '{"expression": "347 * 29"}',
    }
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "10063"}


def test_non_streaming_server_model_discovery_and_think_tags(server):
    t = OpenAIThinker(server.url, None, timeout_s=5, use_tools=False)  # type: ignore[attr-defined]
    assert t.think(package("6 * 7")) == "done 6 * 7"  # the server's first model, asked once
    assert t.think(package("6 * 8")) == "done 6 * 8"
    assert t.model == "auto-model" and len(server.requests) == 2
    assert server.requests[-1]["model"] == "auto-model" and "tools" not in server.requests[-1]
    t2 = thinker(server, "plain_json")
    assert t2.think(package("6 * 7")) == "42"  # <think>...</think> is not the answer


def test_three_delegations_at_once(server):
    tasks = ["a delay=0.9", "b delay=0.2", "c delay=0.5"]
    with Delegator(thinker(server, "normal")) as d:
        started = time.monotonic()
        ids = {d.submit(package(task)): task for task in tasks}
        assert len(d.in_flight()) == 3
        results = wait_results(d, 3)
        took = time.monotonic() - started
    assert sorted(r.id for r in results) == sorted(ids)
    for r in results:
        assert r.ok and r.text == f"done {ids[r.id]}"
    assert {r.task for r in results} == set(tasks)
    assert took < 1.5  # side by side: one after another would take 1.6 s and more


def test_the_api_key_never_shows(server, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    t = thinker(server, "normal")
    assert KEY not in repr(t) and KEY not in str(t) and "api_key='set'" in repr(t)
    with Delegator(t) as d:
        d.submit(package("1 + 1"))
        d.submit(package("x"), thinker(server, "denied"))
        d.submit(package("y"), thinker(server, "tools"))
        results = wait_results(d, 3)
    assert len(results) == 3
    assert all(h["Authorization"] == f"Bearer {KEY}" for h in server.headers)  # it was used
    shown = caplog.text + json.dumps([r.to_dict() for r in results]) + repr(d.history)
    assert KEY not in shown
    assert "delegation d2" in caplog.text  # the log does speak of the delegations
    # from the environment too
    monkeypatch.setenv(ENV_BASE_URL, server.url)  # type: ignore[attr-defined]
    monkeypatch.setenv(ENV_MODEL, "normal")
    monkeypatch.setenv(ENV_API_KEY, KEY)
    env = OpenAIThinker()
    assert (env.base_url, env.model) == (server.url, "normal")  # type: ignore[attr-defined]
    assert KEY not in repr(env)
    parser = argparse.ArgumentParser()
    OpenAIThinker.add_arguments(parser)
    args = parser.parse_args(["--llm-model", "tools", "--llm-timeout-s", "3"])
    flagged = OpenAIThinker.from_args(args)
    assert (flagged.model, flagged.timeout_s) == ("tools", 3.0) and KEY not in repr(flagged)
    assert flagged.think(package("z")) == "it's 10063"
    monkeypatch.delenv(ENV_BASE_URL)
    with pytest.raises(ValueError, match=ENV_BASE_URL):
        OpenAIThinker()


def test_frame_and_audio_go_along_when_asked(server):
    from PIL import Image

    frame = np.zeros((40, 60, 3), np.uint8)
    frame[:, :, 0] = 200
    audio = np.zeros(8000, np.float32)
    p = ContextPackage("what colour is it", frame=frame, audio=audio)
    t = thinker(server, "normal", send_frame=True, send_audio=True)
    assert t.think(p) == "done what colour is it"
    text, image, sound = server.requests[-1]["messages"][-1]["content"]
    assert text["type"] == "text" and text["text"].endswith("what colour is it")
    png = base64.b64decode(image["image_url"]["url"].split(",", 1)[1])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), frame)
    assert sound["input_audio"]["format"] == "wav"
    assert thinker(server, "normal").messages(p)[-1]["content"].endswith("what colour is it")


def test_ticks_keep_their_budget_while_a_thinker_takes_2_s(server):
    """A 50 ms micro-turn loop submits and polls around a 2 s HTTP delegation: the calls
    cost almost nothing and every tick keeps its deadline."""
    tick_s, n_ticks = 0.05, 60
    overhead_ms: list[float] = []
    late = 0
    arrived_at = None
    with Delegator(thinker(server, "normal")) as d:
        start = time.monotonic()
        submitted_at = 0.0
        for t in range(n_ticks):
            deadline = start + (t + 1) * tick_s
            time.sleep(max(0.0, deadline - time.monotonic()))
            t0 = time.perf_counter()
            if t == 2:
                d.submit(package("hard one delay=2.0"))
                submitted_at = time.monotonic()
            results = d.poll()
            overhead_ms.append((time.perf_counter() - t0) * 1000)
            if results and arrived_at is None:
                arrived_at = time.monotonic()
                assert results[0].text == "done hard one delay=2.0"
            if time.monotonic() > deadline + tick_s:  # the work overran its micro-turn
                late += 1
    assert arrived_at is not None and 1.9 < arrived_at - submitted_at < 2.7
    print(
        f"submit+poll per tick: median {statistics.median(overhead_ms):.3f} ms, "
        f"max {max(overhead_ms):.3f} ms over {n_ticks} ticks of {tick_s * 1000:g} ms"
    )
    assert late == 0
    assert statistics.median(overhead_ms) < 1.0
    assert max(overhead_ms) < 5.0, sorted(overhead_ms)[-5:]
