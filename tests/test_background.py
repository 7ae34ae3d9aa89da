"""Background thinking without a network: the built-in tools and thinker, the context
package, and the delegator's promises (never blocks, failures are spoken)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np
import pytest

from microturn.background import (
    FAILURE_TEXT,
    BuiltinThinker,
    ContextPackage,
    DelegationResult,
    Delegator,
    OpenAIThinker,
    ThinkerError,
    TranscriptLine,
    add_thinker_arguments,
    delegate_action,
    thinker_from_args,
)
from microturn.background.tools import (
    MAX_BITS,
    FactTable,
    Toolbox,
    calculate,
    convert_units,
    current_time,
    evaluate,
    parse_conversion,
)
from microturn.data import FACTS_PATH
from microturn.scenarios.delegation import Delegation, _arithmetic, load_facts

NOON = datetime(2026, 3, 3, 12, 5, 30, tzinfo=UTC)  # a Tuesday


def fixed_clock() -> datetime:
    return NOON


def pkg(task: str) -> ContextPackage:
    return ContextPackage(task)


# ---- arithmetic ----------------------------------------------------------------------


def test_arithmetic_is_exact_for_big_integers():
    a, b = 123456789123456789123456789, 987654321987654321987654321
    assert calculate(f"{a} * {b}") == str(a * b)
    assert calculate("2 ** 200") == str(2**200)
    assert calculate("-(3 ** 3) + 7 // 2 - 10 % 4") == str(-27 + 3 - 2)
    assert calculate("0.1 + 0.2") == "0.3"  # literals are read as decimals, not floats


def test_division_results_format():
    assert calculate("10 / 4") == "2.5"
    assert calculate("12 / 4") == "3"
    assert calculate("1 / 8") == "0.125"
    assert calculate("10 / 3") == "about 3.333333"
    assert calculate("-2 / 3") == "about -0.666667"
    assert calculate("1 / 3000000000") == "about 0.000000000333333"
    assert calculate("2 ** -3") == "0.125"
    assert calculate("7 // 2") == "3" and calculate("-7 // 2") == "-4"
    with pytest.raises(ThinkerError) as e:
        calculate("5 / (3 - 3)")
    assert e.value.kind == "invalid" and "zero" in e.value.spoken


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "x + 1",
        "abs(-3)",
        "(1).real",
        "[1, 2][0]",
        "'a' * 3",
        "True + 1",
        "1j * 2",
        "1 if 1 else 2",
        "2 < 3",
        "lambda: 1",
    ],
)
def test_arithmetic_rejects_anything_but_numbers_and_operators(expr):
    with pytest.raises(ThinkerError) as e:
        evaluate(expr)
    assert e.value.kind == "invalid"
    assert e.value.spoken  # a sentence the model can say


@pytest.mark.parametrize("expr", ["9 ** 9 ** 9", "2 ** 100000", "10 ** 5000", "(2 ** 4000) ** 2"])
def test_arithmetic_refuses_huge_numbers_quickly(expr):
    started = time.perf_counter()
    with pytest.raises(ThinkerError) as e:
        evaluate(expr)
    assert "too big" in e.value.spoken
    assert time.perf_counter() - started < 0.1  # refused before computing, not after


def test_arithmetic_bounds_and_edges():
    assert evaluate("2 ** 4000") == Fraction(2**4000)  # under MAX_BITS is fine
    assert MAX_BITS >= 4000
    assert calculate("0 ** 0") == "1" and calculate("(-1) ** 12345") == "-1"
    with pytest.raises(ThinkerError):
        calculate("2 ** 0.5")  # not exact: refused, not approximated
    with pytest.raises(ThinkerError):
        calculate("1 + " * 300 + "1")  # too many terms
    with pytest.raises(ThinkerError):
        calculate("")


def test_arithmetic_reads_how_tasks_are_written():
    assert calculate("1,204 plus 3,987?") == "5191"
    assert calculate("347 x 29") == calculate("347 × 29") == calculate("347 times 29") == "10063"
    assert calculate("what is 2^10") == "1024"
    assert calculate("100 divided by 8") == "12.5"


# ---- units, clock, facts -------------------------------------------------------------


def test_unit_conversion():
    assert convert_units(5, "km", "miles") == "3.11 miles"
    assert convert_units(1, "mile", "km") == "1.61 kilometres"
    assert convert_units(100, "C", "F") == "212 degrees Fahrenheit"
    assert convert_units(-40, "fahrenheit", "celsius") == "-40 degrees Celsius"
    assert convert_units(0, "c", "k") == "273.15 kelvin"
    assert convert_units(10, "kg", "lb") == "22.05 pounds"
    assert convert_units(1, "lb", "kg") == "0.454 kilograms"
    assert convert_units(3, "m", "ft") == "9.84 feet"
    assert convert_units("1,000", "l", "gal") == "264.17 gallons"
    assert convert_units(1, "ft", "in") == "12 inches"
    assert convert_units(1, "gal", "l") == "3.79 litres"
    assert convert_units(36, "km/h", "m/s") == "10 metres per second"
    with pytest.raises(ThinkerError) as e:
        convert_units(5, "km", "kg")
    assert e.value.kind == "invalid"
    with pytest.raises(ThinkerError) as e:
        convert_units(5, "furlongs", "km")
    assert e.value.kind == "unsupported"
    assert parse_conversion("convert 5 km to miles") == ("5", "km", "miles")
    assert parse_conversion("how many feet in 3 metres?") == ("3", "metres", "feet")
    assert parse_conversion("347 * 29") is None


def test_clock_and_date_with_an_injected_clock():
    assert current_time(now=fixed_clock, default_zone=UTC) == "12:05 pm"
    assert current_time("Asia/Tokyo", now=fixed_clock) == "9:05 pm in Tokyo"
    assert current_time("new york", now=fixed_clock) == "7:05 am in New York"
    assert current_time(what="date", now=fixed_clock, default_zone=UTC) == "Tuesday, 3 March 2026"
    assert (
        current_time("tokyo", "both", now=fixed_clock) == "Tuesday, 3 March 2026, 9:05 pm in Tokyo"
    )
    # a naive clock is read as UTC; DST is the zone database's business
    summer = datetime(2026, 7, 1, 12, 0)
    assert current_time("Europe/London", now=lambda: summer) == "1:00 pm in London"
    with pytest.raises(ThinkerError) as e:
        current_time("Narnia", now=fixed_clock)
    assert e.value.kind == "not_found"
    t = BuiltinThinker(now=fixed_clock, timezone="Europe/Paris")
    assert t.answer("time") == "1:05 pm"
    assert t.answer("what time is it in Tokyo?") == "9:05 pm in Tokyo"
    assert t.answer("today's date") == "Tuesday, 3 March 2026"
    assert t.answer("what day is it tomorrow") == "Wednesday, 4 March 2026"
    assert t.answer("time: Asia/Kolkata") == "5:35 pm in Kolkata"


def test_fact_lookup_default_table_and_a_user_file(tmp_path):
    t = BuiltinThinker()
    facts = load_facts()
    for key, value in facts.items():
        assert t.answer(f"lookup: {key}") == value
    assert t.answer("lookup: The Capital of Australia?") == "Canberra"
    assert t.answer("capital of australia") == "Canberra"
    with pytest.raises(ThinkerError) as e:
        t.answer("lookup: capital of atlantis")
    assert e.value.kind == "not_found" and "capital of atlantis" in e.value.spoken

    mine = tmp_path / "facts.tsv"
    mine.write_text("# mine\nwifi password\tcorrect horse\n", encoding="utf-8")
    t = BuiltinThinker(mine)
    assert t.answer("lookup: wifi password") == "correct horse"
    # an edit counts at the next lookup, without a restart
    mine.write_text("wifi password\tbattery staple\ndoor code\t4711\n", encoding="utf-8")
    assert t.answer("lookup: wifi password") == "battery staple"
    assert t.answer("lookup: door code") == "4711"
    # a broken edit is said, not swallowed
    mine.write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(ThinkerError) as e:
        t.answer("lookup: door code")
    assert e.value.kind == "error" and "mistake" in e.value.spoken
    with pytest.raises(ThinkerError):
        FactTable(tmp_path / "missing.tsv").lookup("x")


def test_toolbox_runs_tools_by_name_for_model_tool_calls():
    tools = Toolbox(now=fixed_clock, timezone="UTC")
    assert tools.run("calculate", {"expression": "347 * 29"}) == "10063"
    assert tools.run("convert_units", {"value": 5, "from_unit": "km", "to_unit": "mi"}) == (
        "3.11 miles"
    )
    assert tools.run("current_time", {"timezone": "Asia/Tokyo"}) == "9:05 pm in Tokyo"
    assert tools.run("current_time", {}) == "12:05 pm"
    assert tools.run("lookup_fact", {"key": "capital of japan"}) == "Tokyo"
    assert {s["function"]["name"] for s in tools.specs()} == {
        "calculate",
        "convert_units",
        "current_time",
        "lookup_fact",
    }
    for bad in (("calculate", {}), ("nope", {"x": 1}), ("calculate", ["1"])):
        with pytest.raises(ThinkerError):
            tools.run(*bad)


def test_builtin_thinker_answers_the_delegation_scenario_as_its_reference_does():
    """Same task text in, same background result out: the scenario can run end to end."""
    scenario = Delegation()
    thinker = BuiltinThinker()
    seen = set()
    for seed in range(400):
        rng = np.random.default_rng(seed)
        op, a, b, r = _arithmetic(rng)
        assert thinker.answer(f"{a} {op} {b}") == str(r)
        seen.add(op)
    assert seen == {"*", "+", "-"}
    for key, value in scenario.facts.items():
        assert thinker.answer(f"lookup: {key}") == value
    with pytest.raises(ThinkerError) as e:
        thinker.answer("write me a poem")
    assert e.value.kind == "unsupported"


# ---- context package / result --------------------------------------------------------


def test_context_package_and_result_serialize_without_media():
    frame = np.zeros((80, 80, 3), np.uint8)
    audio = np.zeros(16000, np.float32)
    p = ContextPackage(
        "347 * 29",
        [TranscriptLine(1.2, "user", "what is 347 times 29?"), TranscriptLine(2.0, "model", "hm")],
        session_s=2.5,
        frame=frame,
        audio=audio,
        session_id="s1",
    )
    d = p.to_dict()
    assert d["frame_shape"] == [80, 80, 3] and d["audio_s"] == 1.0
    assert d["transcript"][0] == {"time_s": 1.2, "role": "user", "text": "what is 347 times 29?"}
    assert len(json.dumps(d)) < 500  # no pixels, no samples
    with pytest.raises(ValueError):
        ContextPackage("x", frame=np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        ContextPackage("x", audio=np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError):
        TranscriptLine(0.0, "narrator", "hi")

    r = DelegationResult("d1", "347 * 29", "10063", None, 2.5, 4.75, thinker="builtin")
    assert r.ok and r.elapsed_s == pytest.approx(2.25)
    action = r.to_action(4.8)
    assert action.kind == "delegation_result" and action.text == "10063"
    assert action.data["id"] == "d1" and action.data["task"] == "347 * 29"
    json.dumps(action.data)


# ---- the delegator -------------------------------------------------------------------


class SleepyThinker:
    """Answers `task` after `delay` seconds, or stops when cancelled."""

    name = "sleepy"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.cancelled = threading.Event()

    def think(self, package: ContextPackage, cancel: threading.Event) -> str:
        if cancel.wait(self.delay):
            self.cancelled.set()
            raise ThinkerError("cancelled")
        return f"done: {package.task}"


class BrokenThinker:
    def think(self, package: ContextPackage, cancel: threading.Event) -> str:
        raise RuntimeError("a bug")


def wait_results(d: Delegator, n: int, limit_s: float = 5.0) -> list[DelegationResult]:
    out: list[DelegationResult] = []
    end = time.monotonic() + limit_s
    while len(out) < n and time.monotonic() < end:
        out += d.poll()
        time.sleep(0.01)
    return out


def test_delegator_submit_returns_at_once_and_poll_never_blocks():
    with Delegator(SleepyThinker(0.3)) as d:
        t0 = time.perf_counter()
        did = d.submit(pkg("a"))
        assert d.poll() == []
        assert time.perf_counter() - t0 < 0.05
        assert [f["id"] for f in d.in_flight()] == [did]
        (r,) = wait_results(d, 1)
        assert r.id == did and r.ok and r.text == "done: a" and r.thinker == "sleepy"
        assert 0.25 <= r.elapsed_s < 2.0
        assert d.in_flight() == [] and list(d.history) == [r]


def test_delegator_timeout_is_a_spoken_result_and_cancels_the_thinker():
    thinker = SleepyThinker(10.0)
    with Delegator(thinker, timeout_s=0.2) as d:
        d.submit(pkg("slow"))
        (r,) = wait_results(d, 1)
        assert r.error == "timeout" and r.text == FAILURE_TEXT["timeout"]
        assert r.text == "I could not finish that: it took too long."
        assert thinker.cancelled.wait(1.0)
        time.sleep(0.05)
        assert d.poll() == []  # the thinker's late "cancelled" is dropped: one result each


def test_delegator_cancel_failure_busy_and_close():
    with Delegator(SleepyThinker(5.0), max_in_flight=2) as d:
        a = d.submit(pkg("a"))
        d.submit(pkg("b"))
        c = d.submit(pkg("c"))  # over the limit: answered at once, and said
        assert d.cancel(a) and not d.cancel(a) and not d.cancel("nope")
        got = {r.id: r for r in d.poll()}
        assert got[a].error == "cancelled" and got[a].text == FAILURE_TEXT["cancelled"]
        assert got[c].error == "busy" and got[c].text
        assert len(d.in_flight()) == 1
    with pytest.raises(RuntimeError):
        d.submit(pkg("after close"))

    with Delegator(BrokenThinker()) as d:
        d.submit(pkg("x"))
        (r,) = wait_results(d, 1)
        assert r.error == "error" and r.text == FAILURE_TEXT["error"] and "a bug" in r.detail

    with Delegator(BuiltinThinker()) as d:
        d.submit(pkg("lookup: capital of nowhere"))
        d.submit(pkg("347 * 29"))
        rs = {r.task: r for r in wait_results(d, 2)}
        assert rs["347 * 29"].text == "10063" and rs["347 * 29"].ok
        assert rs["lookup: capital of nowhere"].error == "not_found"


def test_delegator_inline_with_hold_on_a_simulated_clock():
    """Offline runs: deterministic results, held back to a realistic thinking time."""
    now = [10.0]
    d = Delegator(BuiltinThinker(), clock=lambda: now[0], inline=True, hold_s=2.0)
    did = d.submit(pkg("347 * 29"))
    assert d.poll() == []
    now[0] = 11.9
    assert d.poll() == []
    now[0] = 12.2
    (r,) = d.poll()
    assert (r.id, r.text, r.started_s, r.finished_s) == (did, "10063", 10.0, 12.0)
    d.close()


def test_several_in_flight_finish_in_their_own_order():
    class Varied:
        def think(self, package: ContextPackage, cancel: threading.Event) -> str:
            time.sleep(float(package.task))
            return package.task

    with Delegator(Varied()) as d:
        t0 = time.monotonic()
        for task in ("0.6", "0.2", "0.4"):
            d.submit(pkg(task))
        rs = wait_results(d, 3)
        assert [r.text for r in rs] == ["0.2", "0.4", "0.6"]
        assert time.monotonic() - t0 < 1.1  # concurrently, not one after another


def test_timeline_records_and_spoken_detection():
    p = ContextPackage("347 * 29", [TranscriptLine(1.0, "user", "what is 347 times 29?")], 2.5)
    start = delegate_action("d1", p, 2.6)
    assert (start.kind, start.text, start.data["id"]) == ("delegate", "347 * 29", "d1")
    assert start.data["transcript_lines"] == 1 and start.data["frame_shape"] is None
    r = DelegationResult("d1", "347 * 29", "10063", None, 2.6, 4.6)
    assert r.spoken_in("347 times 29 is 10,063") and r.spoken_in("that's 10063.")
    assert not r.spoken_in("it's 10,064") and not r.spoken_in("let me check")
    spoken = r.spoken_action(5.2, "that's 10,063")
    assert spoken.kind == "delegation_spoken" and spoken.data["id"] == "d1"
    words = DelegationResult("d2", "lookup: capital of argentina", "Buenos Aires", None, 0, 1)
    assert words.spoken_in("The capital of Argentina is Buenos Aires.")
    assert not words.spoken_in("buenos dias")
    assert DelegationResult("d3", "x", "8,849 metres", None, 0, 1).spoken_in("8849 m")


def test_thinker_options(tmp_path, monkeypatch):
    import argparse

    facts = tmp_path / "f.tsv"
    facts.write_text("door code\t4711\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_thinker_arguments(parser)
    t = thinker_from_args(parser.parse_args(["--facts", str(facts)]))
    assert isinstance(t, BuiltinThinker) and t.answer("lookup: door code") == "4711"
    monkeypatch.setenv("MICROTURN_LLM_API_KEY", "sk-secret")
    args = parser.parse_args(
        ["--thinker", "openai", "--llm-base-url", "http://127.0.0.1:1/v1", "--llm-model", "m"]
    )
    t = thinker_from_args(args)
    assert isinstance(t, OpenAIThinker) and t.tools.facts.path == FACTS_PATH
    assert "sk-secret" not in repr(t) and args.thinker_timeout_s > 0


def test_a_missing_fact_file_does_not_stop_other_tools(tmp_path):
    t = BuiltinThinker(tmp_path / "gone.tsv", now=fixed_clock, timezone="Europe/Paris")
    assert t.answer("what time is it in Tokyo") == "9:05 pm in Tokyo"
    assert t.answer("2 + 3") == "5"
    with pytest.raises(ThinkerError) as e:  # a fact question still says what is wrong
        t.answer("capital of australia")
    assert e.value.kind != "unsupported"
