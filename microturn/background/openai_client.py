"""A thinker that asks any OpenAI-compatible chat-completions server (vLLM, SGLang,
llama.cpp's server, Ollama, a hosted API).

Standard library only (`http.client`): one streamed request at a time per delegation,
read as server-sent events (`data: {...}` lines, then `data: [DONE]`). A small watcher
thread shuts the socket down the moment the delegation is cancelled or the request's
time limit passes, so a blocked read returns at once and the server sees the
connection close. The built-in tools are offered as function tools; when the model calls
one it runs here and the conversation continues, up to `max_tool_rounds` times.

Configuration: arguments, else the environment (`MICROTURN_LLM_BASE_URL`,
`MICROTURN_LLM_MODEL`, `MICROTURN_LLM_API_KEY`, `MICROTURN_LLM_TIMEOUT_S`), or
`add_arguments` / `from_args` for a command line. The API key is sent only in the
Authorization header: `repr`, log lines and error details never contain it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from microturn.background.context import ContextPackage, ThinkerError
from microturn.background.tools import Toolbox
from microturn.codecs.audio import wav_bytes

log = logging.getLogger("microturn.background")

ENV_BASE_URL = "MICROTURN_LLM_BASE_URL"
ENV_MODEL = "MICROTURN_LLM_MODEL"
ENV_API_KEY = "MICROTURN_LLM_API_KEY"
ENV_TIMEOUT_S = "MICROTURN_LLM_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 30.0
WATCH_S = 0.02  # how often the watcher looks at the cancel flag and the clock
MAX_TRANSCRIPT_LINES = 40
MAX_TRANSCRIPT_CHARS = 4000
MAX_LINE_BYTES = 1 << 20  # one SSE line; a server that sends more is not a chat server

SYSTEM_PROMPT = (
    "You are the background thinker of a live voice assistant. The assistant is talking "
    "with a user right now and has handed you one task. Reply with the result only, as "
    "short as you can: a number, a name or a few words, at most one short sentence. The "
    "assistant reads your reply aloud a moment later. Use the tools for arithmetic, unit "
    "conversion, the time and date and the local fact table instead of guessing. Write "
    "whole numbers as plain digits without separators."
)


class OpenAIThinker:
    """Thinker over an OpenAI-compatible `/chat/completions` endpoint (see the module
    docstring). `base_url` is the API root, e.g. `http://localhost:8000/v1`; `model`
    None asks the server's `/models` once and takes the first."""

    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float | None = None,
        connect_timeout_s: float = 5.0,
        toolbox: Toolbox | None = None,
        use_tools: bool = True,
        max_tool_rounds: int = 4,
        send_frame: bool = False,
        send_audio: bool = False,
        max_tokens: int | None = None,
        temperature: float | None = None,
        max_chars: int = 240,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        base_url = base_url or os.environ.get(ENV_BASE_URL)
        if not base_url:
            raise ValueError(f"no server: pass base_url (--llm-base-url) or set {ENV_BASE_URL}")
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {_redact(base_url)!r}")
        self.base_url = base_url.rstrip("/")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path
        self.model = model or os.environ.get(ENV_MODEL) or None
        self._api_key = api_key or os.environ.get(ENV_API_KEY) or None
        env_timeout = os.environ.get(ENV_TIMEOUT_S)
        self.timeout_s = float(timeout_s or env_timeout or DEFAULT_TIMEOUT_S)
        self.connect_timeout_s = connect_timeout_s
        self.tools = toolbox or Toolbox()
        self.use_tools = use_tools
        self.max_tool_rounds = max_tool_rounds
        self.send_frame = send_frame
        self.send_audio = send_audio
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.max_chars = max_chars
        self.system_prompt = system_prompt
        self._model_lock = threading.Lock()

    def __repr__(self) -> str:
        key = "set" if self._api_key else None
        return (
            f"OpenAIThinker(base_url={_redact(self.base_url)!r}, model={self.model!r}, "
            f"api_key={key!r}, timeout_s={self.timeout_s:g})"
        )

    # ---- configuration from a command line --------------------------------------------
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """--llm-base-url, --llm-model, --llm-api-key-env, --llm-timeout-s. The key itself
        is read from the environment (named by --llm-api-key-env), never from a flag:
        command lines end up in shell history and process lists."""
        g = parser.add_argument_group("background thinker (OpenAI-compatible server)")
        g.add_argument(
            "--llm-base-url",
            help=f"API root, e.g. http://localhost:8000/v1 (default: ${ENV_BASE_URL})",
        )
        g.add_argument(
            "--llm-model", help=f"model name (default: ${ENV_MODEL}, else the server's first model)"
        )
        g.add_argument(
            "--llm-api-key-env",
            default=ENV_API_KEY,
            metavar="VAR",
            help="environment variable holding the API key (default: %(default)s)",
        )
        g.add_argument(
            "--llm-timeout-s",
            type=float,
            help=f"per-request time limit (default: ${ENV_TIMEOUT_S}, else {DEFAULT_TIMEOUT_S:g})",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace, **kwargs: Any) -> OpenAIThinker:
        return cls(
            args.llm_base_url,
            args.llm_model,
            os.environ.get(args.llm_api_key_env) or None,
            timeout_s=args.llm_timeout_s,
            **kwargs,
        )

    # ---- the Thinker protocol ------------------------------------------------------
    def think(self, package: ContextPackage, cancel: threading.Event | None = None) -> str:
        try:
            return self._think(package, cancel or threading.Event())
        except ThinkerError as err:
            if self._api_key and self._api_key in err.detail:  # a server echoed it back
                raise ThinkerError(
                    err.kind, err.spoken, err.detail.replace(self._api_key, "***")
                ) from None
            raise

    def _think(self, package: ContextPackage, cancel: threading.Event) -> str:
        messages = self.messages(package)
        for _ in range(self.max_tool_rounds + 1):
            content, calls = self._complete(messages, cancel)
            if not calls:
                return self._final(content)
            messages.append(
                {
                    "role": "assistant",
                    "content": content or None,
                    "tool_calls": [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"]},
                        }
                        for c in calls
                    ],
                }
            )
            for c in calls:
                messages.append(
                    {"role": "tool", "tool_call_id": c["id"], "content": self._run_tool(c)}
                )
        raise ThinkerError(
            "error", detail=f"still calling tools after {self.max_tool_rounds} rounds"
        )

    def messages(self, package: ContextPackage) -> list[dict[str, Any]]:
        """The request's messages: the system prompt, then one user message with the
        recent conversation and the task (plus the frame / audio when enabled)."""
        lines = [
            f"[{line.time_s:.1f} s] {'user' if line.role == 'user' else 'assistant'}: "
            f"{line.text.strip()}"
            for line in package.transcript[-MAX_TRANSCRIPT_LINES:]
            if line.text.strip()
        ]
        while lines and sum(len(s) + 1 for s in lines) > MAX_TRANSCRIPT_CHARS:
            lines.pop(0)
        text = ""
        if lines:
            text = "Conversation so far (oldest first):\n" + "\n".join(lines) + "\n\n"
        text += f"Task: {package.task.strip()}"
        content: str | list[dict[str, Any]] = text
        parts: list[dict[str, Any]] = []
        if self.send_frame and package.frame is not None:
            url = "data:image/png;base64," + base64.b64encode(png_bytes(package.frame)).decode()
            parts.append({"type": "image_url", "image_url": {"url": url}})
        if self.send_audio and package.audio is not None and package.audio.size:
            data = base64.b64encode(wav_bytes(package.audio)).decode()
            parts.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
        if parts:
            content = [{"type": "text", "text": text}, *parts]
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": content},
        ]

    # ---- one request -----------------------------------------------------------------
    def _complete(
        self, messages: list[dict[str, Any]], cancel: threading.Event
    ) -> tuple[str, list[dict[str, str]]]:
        """One streamed chat completion -> (text, tool calls)."""
        body: dict[str, Any] = {
            "model": self._model_name(cancel),
            "messages": messages,
            "stream": True,
        }
        if self.use_tools:
            body["tools"] = self.tools.specs()
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        with _Request(self, "POST", "/chat/completions", body, cancel) as req:
            ctype = (req.response.getheader("Content-Type") or "").lower()
            if "text/event-stream" in ctype:
                return req.guard(lambda: _read_stream(_sse_events(req.response)))
            if "json" in ctype:  # a server that ignores stream=true
                whole = req.guard(lambda: _json(req.response.read(MAX_LINE_BYTES)))
                return _read_whole(whole)
            raise ThinkerError("malformed", detail=f"unexpected content type {ctype!r}")

    def _model_name(self, cancel: threading.Event) -> str:
        with self._model_lock:
            if self.model is None:
                with _Request(self, "GET", "/models", None, cancel) as req:
                    listing = req.guard(lambda: _json(req.response.read(MAX_LINE_BYTES)))
                try:
                    self.model = str(listing["data"][0]["id"])
                except (KeyError, IndexError, TypeError):
                    raise ThinkerError(
                        "malformed", detail="the server's /models lists no model"
                    ) from None
                log.info("background thinker: using the server's model %r", self.model)
            return self.model

    def _headers(self, body: bytes | None) -> dict[str, str]:
        h = {"Accept": "text/event-stream, application/json", "User-Agent": "microturn"}
        if body is not None:
            h["Content-Type"] = "application/json"
        if self._api_key:
            h["Authorization"] = f"Bearer {self._api_key}"
        return h

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout_s)

    # ---- results -------------------------------------------------------------------
    def _run_tool(self, call: dict[str, str]) -> str:
        try:
            args = json.loads(call["arguments"] or "{}")
        except json.JSONDecodeError:
            return "error: the arguments were not valid JSON"
        try:
            out = self.tools.run(call["name"], args)
        except ThinkerError as err:
            out = f"error: {err.spoken}"
        log.info(
            "background thinker: tool %s(%s) -> %r",
            call["name"],
            call["arguments"][:200],
            out[:200],
        )
        return out

    def _final(self, content: str) -> str:
        text = re.sub(r"<think>.*?(</think>|$)", "", content, flags=re.DOTALL).strip()
        text = " ".join(text.split())
        if not text:
            raise ThinkerError("malformed", detail="the model's answer was empty")
        if len(text) > self.max_chars:  # the background track carries 10 bytes/s
            text = text[: self.max_chars].rsplit(" ", 1)[0].rstrip(",;:") + "..."
        return text


class _Request:
    """One HTTP request with its watcher: cancel or the time limit shuts the socket
    down (a blocked read returns at once); `guard` turns what that does to a read into
    the right ThinkerError."""

    def __init__(
        self,
        thinker: OpenAIThinker,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        cancel: threading.Event,
    ) -> None:
        self.cancel = cancel
        self.deadline = time.monotonic() + thinker.timeout_s
        self.reason: str | None = None
        self._done = threading.Event()
        data = None if body is None else json.dumps(body).encode()
        self.conn = thinker._connection(min(thinker.connect_timeout_s, thinker.timeout_s))
        self._watcher = threading.Thread(
            target=self._watch, name="microturn-llm-watch", daemon=True
        )
        self._watcher.start()
        url = thinker._prefix + path
        self.response: http.client.HTTPResponse
        try:
            self.conn.connect()
            self.conn.sock.settimeout(thinker.timeout_s + 1.0)  # the watcher acts first
            self.guard(lambda: self.conn.request(method, url, data, thinker._headers(data)))
            self.response = self.guard(self.conn.getresponse)
        except ThinkerError:
            self.close()
            raise
        except OSError as err:
            self.close()
            raise self._stopped() or ThinkerError(
                "unavailable", detail=f"{_redact(thinker.base_url)}: {err}"
            ) from None
        if self.response.status != 200:
            status, snippet = self.response.status, ""
            with contextlib.suppress(OSError, http.client.HTTPException):
                snippet = self.response.read(600).decode("utf-8", "replace")
            self.close()
            raise ThinkerError("unavailable", detail=f"HTTP {status} {snippet}".strip())

    def __enter__(self) -> _Request:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _watch(self) -> None:
        while not self._done.wait(WATCH_S):
            if self.cancel.is_set():
                self.reason = "cancelled"
            elif time.monotonic() >= self.deadline:
                self.reason = "timeout"
            else:
                continue
            sock = self.conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return

    def _stopped(self) -> ThinkerError | None:
        if self.reason == "cancelled":
            return ThinkerError("cancelled")
        if self.reason == "timeout" or time.monotonic() >= self.deadline:
            return ThinkerError("timeout", detail="the server did not finish in time")
        return None

    def guard(self, fn: Any) -> Any:
        """Run `fn` (a read); a read cut short by the watcher is `cancelled`/`timeout`,
        a broken connection `unavailable`, anything unreadable `malformed`."""
        try:
            out = fn()
        except ThinkerError as err:
            raise self._stopped() or err from None
        except (OSError, http.client.HTTPException) as err:
            raise self._stopped() or ThinkerError(
                "unavailable", detail=f"connection lost: {type(err).__name__}: {err}"
            ) from None
        except (ValueError, UnicodeDecodeError) as err:
            raise self._stopped() or ThinkerError(
                "malformed", detail=f"unreadable response: {err}"
            ) from None
        stopped = self._stopped() if self.reason else None
        if stopped is not None:  # e.g. EOF after the shutdown: partial is not an answer
            raise stopped
        return out

    def close(self) -> None:
        self._done.set()
        self.conn.close()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ThinkerError("malformed", detail=f"not JSON: {err}") from None


def _sse_events(response: http.client.HTTPResponse) -> Iterator[Any]:
    """The JSON payloads of a server-sent event stream, up to `data: [DONE]`; raises
    ThinkerError("malformed") for a data line that is not JSON. Ends (returns) at EOF."""
    while True:
        raw = response.readline(MAX_LINE_BYTES)
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line.startswith("data:"):
            continue  # blank separators, comments (": ping"), event: / id: fields
        payload = line[5:].strip()
        if payload == "[DONE]":
            yield _DONE
            return
        yield _json(payload.encode())


_DONE = object()


def _read_stream(events: Iterator[Any]) -> tuple[str, list[dict[str, str]]]:
    """Streamed chunks -> (content, tool calls), checking each chunk's shape."""
    content: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finished = False
    for chunk in events:
        if chunk is _DONE:
            finished = True
            break
        if not isinstance(chunk, dict):
            raise ThinkerError("malformed", detail=f"a chunk is not an object: {chunk!r:.100}")
        if "error" in chunk:
            err = chunk["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise ThinkerError("unavailable", detail=f"server error: {str(msg)[:300]}")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise ThinkerError("malformed", detail=f"a chunk without choices: {chunk!r:.200}")
        for choice in choices[:1]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                raise ThinkerError("malformed", detail=f"a choice without delta: {choice!r:.200}")
            piece = delta.get("content")
            if piece is not None and not isinstance(piece, str):
                raise ThinkerError("malformed", detail=f"content is not text: {piece!r:.100}")
            content.append(piece or "")
            _merge_tool_calls(calls, delta.get("tool_calls"))
            if choice.get("finish_reason"):
                finished = True
    if not finished:
        raise ThinkerError("malformed", detail="the stream ended before the answer did")
    return "".join(content), _finish_tool_calls(calls)


def _read_whole(whole: Any) -> tuple[str, list[dict[str, str]]]:
    """A non-streamed chat completion -> (content, tool calls)."""
    try:
        message = whole["choices"][0]["message"]
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise TypeError("content is not text")
        calls: dict[int, dict[str, str]] = {}
        _merge_tool_calls(calls, message.get("tool_calls"))
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        raise ThinkerError("malformed", detail=f"not a chat completion: {err}") from None
    return content, _finish_tool_calls(calls)


def _merge_tool_calls(calls: dict[int, dict[str, str]], deltas: Any) -> None:
    """Streamed tool-call pieces (by `index`; the name once, the arguments in pieces)."""
    if deltas is None:
        return
    if not isinstance(deltas, list):
        raise ThinkerError("malformed", detail="tool_calls is not a list")
    for pos, d in enumerate(deltas):
        if not isinstance(d, dict):
            raise ThinkerError("malformed", detail="a tool call is not an object")
        i = d.get("index", pos)
        call = calls.setdefault(int(i), {"id": "", "name": "", "arguments": ""})
        call["id"] = call["id"] or str(d.get("id") or "")
        fn = d.get("function") or {}
        if not isinstance(fn, dict):
            raise ThinkerError("malformed", detail="a tool call's function is not an object")
        call["name"] = call["name"] or str(fn.get("name") or "")  # sent once
        args = fn.get("arguments") or ""
        call["arguments"] += args if isinstance(args, str) else json.dumps(args)


def _finish_tool_calls(calls: dict[int, dict[str, str]]) -> list[dict[str, str]]:
    out = []
    for i in sorted(calls):
        c = calls[i]
        if not c["name"]:
            raise ThinkerError("malformed", detail="a tool call without a name")
        out.append({**c, "id": c["id"] or f"call_{i}"})
    return out


def _redact(url: str) -> str:
    """A URL without user:password@ (some people put keys there)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def png_bytes(frame: np.ndarray) -> bytes:
    """uint8 HxWx3 camera frame -> PNG bytes (lossless: the thinker sees what the model saw)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buf, "PNG")
    return buf.getvalue()
