import json
from pathlib import Path

import pytest

from microturn.bench import compare


def _rows(name: str, flags: list[bool], first: int = 0) -> list[dict]:
    """Per-episode rows as `bench interact` writes them (both views the same here)."""
    return [
        {"episode": f"{name}-eval-{first + i}", "driver": "speech", "text": s, "asr": s}
        for i, s in enumerate({"correct": f, "delay_s": None, "delegated": f} for f in flags)
    ]


def _write(folder: Path, system: str, episodes: dict, split: str = "eval") -> Path:
    folder.mkdir(parents=True)
    n = len(next(iter(episodes.values())))
    summary = {"system": system, "split": split, "episodes_per_scenario": n}
    (folder / "interact.json").write_text(json.dumps(summary))
    (folder / "episodes.json").write_text(json.dumps(episodes))
    return folder


def test_a_clear_gain_is_measured_and_a_tie_is_not() -> None:
    worse = {"repetition_counting": _rows("repetition_counting", [False] * 30)}
    better = {"repetition_counting": _rows("repetition_counting", [True] * 24 + [False] * 6)}
    result = compare.compare(worse, better, resamples=500)
    row = result["views"]["asr"][0]
    assert row["b_minus_a"] == pytest.approx(0.8)
    assert row["ci_low"] > 0.5 and compare.verdict(row) == "B better"
    mean = result["views"]["text"][-1]
    assert mean["scenario"] == "mean headline" and compare.verdict(mean) == "B better"
    # the other way round: worse
    assert compare.verdict(compare.compare(better, worse, resamples=200)["views"]["asr"][0]) == (
        "B worse"
    )
    # one episode apart out of 30: within the noise
    near = {"repetition_counting": _rows("repetition_counting", [True] * 10 + [False] * 20)}
    nearer = {"repetition_counting": _rows("repetition_counting", [True] * 11 + [False] * 19)}
    row = compare.compare(near, nearer, resamples=500)["views"]["asr"][0]
    assert row["ci_low"] <= 0 <= row["ci_high"]
    assert compare.verdict(row) == "no measurable difference"


def test_pairing_cancels_the_shared_episodes_noise() -> None:
    """B solves exactly A's episodes plus two more: unpaired, 10 vs 12 of 40 would be
    noise; paired, every resample that holds one of the two favours B."""
    flags_a = [i % 4 == 0 for i in range(40)]
    flags_b = list(flags_a)
    flags_b[1] = flags_b[2] = True
    a = {"repetition_counting": _rows("repetition_counting", flags_a)}
    b = {"repetition_counting": _rows("repetition_counting", flags_b)}
    row = compare.compare(a, b, resamples=1000)["views"]["asr"][0]
    assert row["ci_low"] >= 0 and row["p_b_ahead"] > 0.85


def test_runs_on_different_episodes_are_refused(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", "x", {"delegation": _rows("delegation", [True] * 4)})
    b = _write(tmp_path / "b", "y", {"delegation": _rows("delegation", [True] * 5)})
    with pytest.raises(ValueError, match="episodes_per_scenario"):
        compare.run(a, b, tmp_path / "out")
    c = _write(tmp_path / "c", "y", {"delegation": _rows("delegation", [True] * 4)}, "unseen")
    with pytest.raises(ValueError, match="split"):
        compare.run(a, c, tmp_path / "out")
    with pytest.raises(ValueError, match="not a `microturn bench interact` output"):
        compare.run(a, tmp_path, tmp_path / "out")


def test_run_writes_the_report_and_plot(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", "x", {"delegation": _rows("delegation", [False] * 8)})
    b = _write(tmp_path / "b", "y", {"delegation": _rows("delegation", [True] * 8)})
    compare.run(a, b, tmp_path / "out", resamples=50)
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| heard | delegation | 0 | 1 | 1 |" in md and "B better" in md
    assert (tmp_path / "out" / "compare.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["split"] == "eval"


def test_runs_at_other_seeds_pool_into_one_comparison(tmp_path: Path) -> None:
    """Seeds 0-3 and 4-7 of each system compare exactly as one run of 8 would."""
    a_flags, b_flags = [False, True, False, False, True, False, False, True], [True] * 8

    def write(folder: str, system: str, flags: list[bool], first: int = 0) -> Path:
        return _write(tmp_path / folder, system, {"delegation": _rows("delegation", flags, first)})

    whole = compare.run(write("a", "x", a_flags), write("b", "y", b_flags), tmp_path / "o1")
    pooled = compare.run(
        [write("a1", "x", a_flags[:4]), write("a2", "x", a_flags[4:], 4)],
        [write("b1", "y", b_flags[:4]), write("b2", "y", b_flags[4:], 4)],
        tmp_path / "o2",
    )
    assert pooled["views"] == whole["views"]
    assert "a1, " in pooled["a"]
    with pytest.raises(ValueError, match="twice"):
        compare.run(
            [tmp_path / "a1", tmp_path / "a1"], [tmp_path / "b1", tmp_path / "b2"], tmp_path
        )
    with pytest.raises(ValueError, match="another system"):
        compare.run(
            [tmp_path / "a1", tmp_path / "b2"], [tmp_path / "b1", tmp_path / "b2"], tmp_path
        )
