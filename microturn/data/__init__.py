"""Small data files shipped with the package, and their loaders.

`facts.tsv` is the local fact table the background thinker looks things up in (and the
delegation scenario asks about). Kept here, not in a scenario module, so the background
package can read it without importing scenarios.
"""

from __future__ import annotations

from pathlib import Path

FACTS_PATH = Path(__file__).with_name("facts.tsv")


def load_facts(path: str | Path | None = None) -> dict[str, str]:
    """Read a fact table: UTF-8 lines `key<TAB>value`; `#` comments and blank lines are
    skipped. Keys are matched case-insensitively, so they are stored lowercased.

    Raises ValueError naming the file and line for a line without exactly one tab, an
    empty key or value, or a key given twice (an edit gone wrong should not be silent).
    """
    path = Path(path) if path is not None else FACTS_PATH
    facts: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = raw.split("\t")
        key, value = (parts[0].strip().lower(), parts[1].strip()) if len(parts) == 2 else ("", "")
        if not key or not value:
            raise ValueError(
                f"{path}:{lineno}: expected 'key<TAB>value' (one tab, both non-empty), got {raw!r}"
            )
        if key in facts:
            raise ValueError(f"{path}:{lineno}: key {key!r} is given twice")
        facts[key] = value
    return facts
