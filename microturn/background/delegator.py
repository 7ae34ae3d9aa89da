"""The delegator: the one piece the engine calls, and it never blocks a micro-turn.

`submit` hands a context package to a thinker on a worker thread and returns an id at
once; `poll` returns whatever has finished since the last call (never waits); `cancel`
drops a delegation. A delegation that runs past its time limit is answered by poll with
a spoken failure ("I could not finish that: it took too long.") and its thinker is told
to stop; if the thinker answers later anyway, that answer is dropped. Every failure
becomes a result the model can voice: nothing a user asked for ends in silence.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from microturn.background.context import (
    FAILURE_TEXT,
    ContextPackage,
    DelegationResult,
    ThinkerError,
)

log = logging.getLogger("microturn.background")

DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MAX_IN_FLIGHT = 8


class Thinker(Protocol):
    """Answers one delegated task. Runs on a worker thread: it may block, but should
    return soon after `cancel` is set. Returns the result text (short: it flows onto the
    background track at 10 bytes/s); raises `ThinkerError` with a spoken reason when it
    cannot answer. A `name` attribute, when present, labels its results."""

    def think(self, package: ContextPackage, cancel: threading.Event) -> str: ...


@dataclass
class _Flight:
    id: str
    package: ContextPackage
    thinker_name: str
    started_s: float
    deadline_s: float
    cancel: threading.Event
    thinker: Thinker


class Delegator:
    """Runs delegations beside the micro-turn clock.

    `clock` gives the times in results (pass the engine's `clock.now` so they are on the
    session's time axis); `timeout_s` is each delegation's limit on that clock;
    `max_in_flight` is the number of worker threads, started here, not in `submit`
    (starting a thread costs milliseconds on a busy machine, too much inside a tick);
    one delegation more than that is answered "busy" at once.

    `inline=True` runs the thinker inside `submit`: only for offline runs on a simulated
    clock with a fast thinker (the built-in one), where it makes results deterministic;
    `hold_s` then keeps each result back until `hold_s` after its delegation started,
    so a simulated run can give the thinker a realistic latency (the delegation scenario
    trains 1.5-3 s). A live engine uses neither.
    """

    def __init__(
        self,
        thinker: Thinker | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
        inline: bool = False,
        hold_s: float = 0.0,
        keep: int = 256,
    ) -> None:
        if timeout_s <= 0 or max_in_flight < 1 or hold_s < 0:
            raise ValueError("timeout_s must be > 0, max_in_flight >= 1, hold_s >= 0")
        self.thinker = thinker
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.clock = clock
        self.inline = inline
        self.hold_s = hold_s
        self.history: deque[DelegationResult] = deque(maxlen=keep)  # every result polled
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._finished: queue.SimpleQueue[tuple[str, str | BaseException, float]] = (
            queue.SimpleQueue()
        )
        self._ready: list[DelegationResult] = []
        self._jobs: queue.SimpleQueue[_Flight | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._worker, name=f"microturn-thinker-{i}", daemon=True)
            for i in range(0 if inline else max_in_flight)
        ]
        for w in self._workers:
            w.start()
        self._closed = False

    def __enter__(self) -> Delegator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the engine's calls ----------------------------------------------------------
    def submit(
        self,
        package: ContextPackage,
        thinker: Thinker | None = None,
        *,
        timeout_s: float | None = None,
    ) -> str:
        """Start a delegation and return its id at once (the thinker runs elsewhere)."""
        if self._closed:
            raise RuntimeError("the delegator is closed")
        thinker = thinker or self.thinker
        if thinker is None:
            raise ValueError("no thinker: pass one to submit() or to Delegator()")
        now = self.clock()
        did = f"d{next(self._ids)}"
        name = str(getattr(thinker, "name", type(thinker).__name__))
        limit = self.timeout_s if timeout_s is None else timeout_s
        flight = _Flight(did, package, name, now, now + limit, threading.Event(), thinker)
        log.info("delegation %s to %s: %r", did, name, package.task[:200])
        if self.inline:
            self._ready.append(self._result(flight, self._run(thinker, flight), self.clock()))
            return did
        with self._lock:
            if len(self._flights) >= self.max_in_flight:
                busy = ThinkerError("busy", detail=f"{len(self._flights)} in flight")
                self._ready.append(self._result(flight, busy, now))
                return did
            self._flights[did] = flight
        self._jobs.put(flight)
        return did

    def poll(self) -> list[DelegationResult]:
        """Results that are ready, oldest first; never blocks. A delegation past its time
        limit comes back here as a timeout failure (and its thinker is cancelled)."""
        now = self.clock()
        with self._lock:
            while True:
                try:
                    did, out, finished = self._finished.get_nowait()
                except queue.Empty:
                    break
                flight = self._flights.pop(did, None)
                if flight is None:  # timed out or cancelled before it answered
                    log.debug("delegation %s answered after it was given up: dropped", did)
                    continue
                self._ready.append(self._result(flight, out, finished))
            for flight in [f for f in self._flights.values() if now >= f.deadline_s]:
                del self._flights[flight.id]
                flight.cancel.set()
                late = ThinkerError(
                    "timeout", detail=f"no answer in {now - flight.started_s:.1f} s"
                )
                self._ready.append(self._result(flight, late, now))
            due = [r for r in self._ready if now >= r.started_s + self.hold_s]
            if not due:
                return []
            self._ready = [r for r in self._ready if now < r.started_s + self.hold_s]
        out = []
        for r in due:
            if self.hold_s and r.finished_s < r.started_s + self.hold_s:
                r = _replace_finished(r, r.started_s + self.hold_s)
            self.history.append(r)
            out.append(r)
        return out

    def cancel(self, delegation_id: str) -> bool:
        """Stop a delegation still in flight; poll then returns it as `cancelled` (the
        engine records it but need not put it on the background track). False when it
        has already finished or is unknown."""
        with self._lock:
            flight = self._flights.pop(delegation_id, None)
            if flight is None:
                return False
            flight.cancel.set()  # a worker that has not started it yet skips it
            self._ready.append(self._result(flight, ThinkerError("cancelled"), self.clock()))
        log.info("delegation %s cancelled", delegation_id)
        return True

    def in_flight(self) -> list[dict[str, Any]]:
        """What is still being worked on (for a status view or the event stream)."""
        with self._lock:
            return [
                {
                    "id": f.id,
                    "task": f.package.task,
                    "thinker": f.thinker_name,
                    "started_s": f.started_s,
                }
                for f in self._flights.values()
            ]

    def close(self) -> None:
        """Cancel everything in flight and let the worker threads go; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            for f in self._flights.values():
                f.cancel.set()
            self._flights.clear()
        for _ in self._workers:
            self._jobs.put(None)  # daemon threads: a thinker that hangs cannot block exit

    # ---- inside ----------------------------------------------------------------------
    def _worker(self) -> None:
        while (flight := self._jobs.get()) is not None:
            if flight.cancel.is_set():
                continue
            out = self._run(flight.thinker, flight)
            self._finished.put((flight.id, out, self.clock()))

    @staticmethod
    def _run(thinker: Thinker, flight: _Flight) -> str | BaseException:
        try:
            return thinker.think(flight.package, flight.cancel)
        except Exception as err:  # every failure becomes a spoken result
            if not isinstance(err, ThinkerError):
                log.warning(
                    "thinker %s failed on delegation %s",
                    flight.thinker_name,
                    flight.id,
                    exc_info=True,
                )
            return err

    def _result(
        self, flight: _Flight, out: str | BaseException, finished_s: float
    ) -> DelegationResult:
        if isinstance(out, str) and not out.strip():
            out = ThinkerError("malformed", detail="the thinker returned no text")
        if isinstance(out, str):
            text, error, detail = out.strip(), None, ""
        elif isinstance(out, ThinkerError):
            text, error, detail = out.spoken, out.kind, out.detail
        else:
            text, error, detail = FAILURE_TEXT["error"], "error", f"{type(out).__name__}: {out}"
        result = DelegationResult(
            flight.id,
            flight.package.task,
            text,
            error,
            flight.started_s,
            max(finished_s, flight.started_s),
            detail[:500],
            flight.thinker_name,
        )
        log.info(
            "delegation %s %s after %.2f s: %r%s",
            flight.id,
            "answered" if error is None else f"failed ({error})",
            result.elapsed_s,
            text[:200],
            f" [{detail[:200]}]" if detail else "",
        )
        return result


def _replace_finished(r: DelegationResult, finished_s: float) -> DelegationResult:
    return replace(r, finished_s=finished_s)
