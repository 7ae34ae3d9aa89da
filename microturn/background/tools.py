"""The built-in tools: exact arithmetic, unit conversion, clock and date, fact lookup.

They work offline and answer in the short form the background track carries (it flows
at 10 bytes/s, so "10063" beats "347 times 29 is 10,063"). The same functions back the
built-in thinker and the function tools an OpenAI-compatible model may call.

Arithmetic never calls `eval`: the expression is parsed with `ast` and only numbers,
+ - * / // % ** and parentheses are walked, over `Fraction`s, so results are exact, and
every intermediate value is held to `MAX_BITS` so "9 ** 9 ** 9" is refused, not computed.
"""

from __future__ import annotations

import ast
import math
import os
import re
import threading
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from microturn.background.context import ThinkerError
from microturn.data import FACTS_PATH, load_facts

MAX_EXPRESSION_CHARS = 400
MAX_NODES = 200
MAX_BITS = 4096  # ~1,233 decimal digits: any numerator or denominator along the way
MAX_DECIMALS = 12  # a terminating decimal longer than this is rounded ("about ...")
ROUNDED_DECIMALS = 6

# ---- arithmetic ---------------------------------------------------------------------

_OPS: dict[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: Fraction(a // b),
    ast.Mod: lambda a, b: a % b,
}
_WORD_OPS = (
    (r"\bmultiplied by\b", "*"),
    (r"\btimes\b", "*"),
    (r"\bdivided by\b", "/"),
    (r"\bover\b", "/"),
    (r"\bplus\b", "+"),
    (r"\bminus\b", "-"),
    (r"\bto the power of\b", "**"),
    (r"\bmod(?:ulo)?\b", "%"),
)
_PREFIX = re.compile(
    r"^(?:what(?:'s| is)|calculate|compute|work out|evaluate|how much is)\s+", re.IGNORECASE
)


def _too_big() -> ThinkerError:
    return ThinkerError("invalid", "That number is too big for me to work out.", "too large")


def _check_size(x: Fraction) -> Fraction:
    if max(x.numerator.bit_length(), x.denominator.bit_length()) > MAX_BITS:
        raise _too_big()
    return x


def normalize_expression(text: str) -> str:
    """A task as people and models write it ("1,204 plus 3,987?", "12 x 3", "2^10")
    -> Python arithmetic syntax ("1204 + 3987", "12 * 3", "2 ** 10")."""
    s = text.strip().rstrip("?.!= ").strip()
    s = _PREFIX.sub("", s)
    s = s.replace("×", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
    for pattern, op in _WORD_OPS:
        s = re.sub(pattern, f" {op} ", s, flags=re.IGNORECASE)
    s = re.sub(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])", " * ", s)
    # digit grouping: 10,063 -> 10063 (a comma followed by exactly three digits)
    while True:
        t = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)
        if t == s:
            break
        s = t
    return " ".join(s.split())


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression (see the module docstring)."""
    src = normalize_expression(expression)
    if not src:
        raise ThinkerError("invalid", "There was nothing to work out.", "empty expression")
    if len(src) > MAX_EXPRESSION_CHARS:
        raise ThinkerError("invalid", "That is too long for me to work out.", "too long")
    try:
        tree = ast.parse(src, mode="eval")
    except (SyntaxError, ValueError) as err:
        raise ThinkerError(
            "invalid", "I can only work out plain arithmetic.", f"not arithmetic: {err}"
        ) from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ThinkerError("invalid", "That is too long for me to work out.", "too many terms")
    return _eval(tree.body)


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ThinkerError("invalid", "I can only work out plain arithmetic.", repr(v))
        if isinstance(v, float) and not math.isfinite(v):
            raise _too_big()
        return _check_size(Fraction(repr(v)) if isinstance(v, float) else Fraction(v))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        x = _eval(node.operand)
        return -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left), _eval(node.right)
        try:
            if isinstance(node.op, ast.Pow):
                return _power(a, b)
            op = _OPS.get(type(node.op))
            if op is None:
                raise ThinkerError(
                    "invalid", "I can only work out plain arithmetic.", type(node.op).__name__
                )
            return _check_size(op(a, b))
        except ZeroDivisionError:
            raise ThinkerError(
                "invalid", "That divides by zero, so it has no answer.", "division by zero"
            ) from None
    raise ThinkerError(
        "invalid", "I can only work out plain arithmetic.", f"not allowed: {type(node).__name__}"
    )


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise ThinkerError(
            "invalid", "I can only raise numbers to whole powers.", "fractional exponent"
        )
    e = exponent.numerator
    if abs(base) in (0, 1):
        if base == 0 and e < 0:
            raise ZeroDivisionError
        return Fraction(base**e)  # 0, 1 or -1: no size to check
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if (size - 1) * abs(e) > MAX_BITS:  # checked before computing: 2 ** 10 ** 9 is refused
        raise _too_big()
    return _check_size(base**e)


def format_number(x: Fraction) -> str:
    """Exact where short: integers as digits without grouping ("10063", as the delegation
    scenario's results are), terminating decimals in full ("2.5"); otherwise rounded and
    said so ("about 3.333333")."""
    if x.denominator == 1:
        return str(x.numerator)
    den, twos, fives = x.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den == 1 and max(twos, fives) <= MAX_DECIMALS:
        return _decimal(x, max(twos, fives))
    return "about " + _decimal(x, None)


def _decimal(x: Fraction, places: int | None) -> str:
    with localcontext() as ctx:
        ctx.prec = 60 + len(str(abs(x.numerator) // x.denominator))
        d = Decimal(x.numerator) / Decimal(x.denominator)
        if places is None:  # rounded: 6 decimals, more for tiny numbers
            places = ROUNDED_DECIMALS if d == 0 else max(ROUNDED_DECIMALS, 5 - d.adjusted())
            places = min(places, 30)
        text = f"{d:.{places}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def calculate(expression: str) -> str:
    """Tool: an arithmetic expression -> its exact value, formatted by `format_number`."""
    return format_number(evaluate(expression))


# ---- units --------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    singular: str
    plural: str
    dimension: str
    factor: Fraction  # one of this unit in the dimension's base unit
    offset: Fraction = Fraction(0)  # temperature: base = value * factor + offset


def _u(singular: str, plural: str, dim: str, factor: str, offset: str = "0") -> Unit:
    return Unit(singular, plural, dim, Fraction(factor), Fraction(offset))


# Exact definitions (international mile, foot and pound; US liquid gallon, cup and pint).
_UNITS: dict[str, tuple[Unit, tuple[str, ...]]] = {
    "mm": (_u("millimetre", "millimetres", "length", "0.001"), ("millimeter",)),
    "cm": (_u("centimetre", "centimetres", "length", "0.01"), ("centimeter",)),
    "m": (_u("metre", "metres", "length", "1"), ("meter",)),
    "km": (_u("kilometre", "kilometres", "length", "1000"), ("kilometer", "kms")),
    "in": (_u("inch", "inches", "length", "0.0254"), ()),
    "ft": (_u("foot", "feet", "length", "0.3048"), ()),
    "yd": (_u("yard", "yards", "length", "0.9144"), ()),
    "mi": (_u("mile", "miles", "length", "1609.344"), ()),
    "nmi": (_u("nautical mile", "nautical miles", "length", "1852"), ()),
    "mg": (_u("milligram", "milligrams", "mass", "0.000001"), ()),
    "g": (_u("gram", "grams", "mass", "0.001"), ()),
    "kg": (_u("kilogram", "kilograms", "mass", "1"), ("kilo", "kilos", "kgs")),
    "t": (_u("tonne", "tonnes", "mass", "1000"), ("metric ton", "metric tons")),
    "oz": (_u("ounce", "ounces", "mass", "0.028349523125"), ()),
    "lb": (_u("pound", "pounds", "mass", "0.45359237"), ("lbs",)),
    "st": (_u("stone", "stone", "mass", "6.35029318"), ("stones",)),
    "ml": (_u("millilitre", "millilitres", "volume", "0.001"), ("milliliter",)),
    "l": (_u("litre", "litres", "volume", "1"), ("liter",)),
    "cup": (_u("cup", "cups", "volume", "0.2365882365"), ()),
    "pt": (_u("pint", "pints", "volume", "0.473176473"), ()),
    "qt": (_u("quart", "quarts", "volume", "0.946352946"), ()),
    "gal": (_u("gallon", "gallons", "volume", "3.785411784"), ()),
    "fl oz": (_u("fluid ounce", "fluid ounces", "volume", "0.0295735295625"), ()),
    "m/s": (_u("metre per second", "metres per second", "speed", "1"), ("meters per second",)),
    "km/h": (
        _u("kilometre per hour", "kilometres per hour", "speed", "5/18"),
        ("kph", "kmh", "kilometers per hour"),
    ),
    "mph": (_u("mile per hour", "miles per hour", "speed", "0.44704"), ()),
    "kn": (_u("knot", "knots", "speed", "463/900"), ()),
    "s": (_u("second", "seconds", "time", "1"), ("sec", "secs")),
    "min": (_u("minute", "minutes", "time", "60"), ("mins",)),
    "h": (_u("hour", "hours", "time", "3600"), ("hr", "hrs")),
    "day": (_u("day", "days", "time", "86400"), ()),
    "week": (_u("week", "weeks", "time", "604800"), ()),
    "c": (
        _u("degree Celsius", "degrees Celsius", "temperature", "1", "273.15"),
        ("celsius", "centigrade", "degrees celsius", "degree celsius", "°c"),
    ),
    "f": (
        _u("degree Fahrenheit", "degrees Fahrenheit", "temperature", "5/9", "45967/180"),
        ("fahrenheit", "degrees fahrenheit", "degree fahrenheit", "°f"),
    ),
    "k": (
        _u("kelvin", "kelvin", "temperature", "1"),
        ("kelvins", "degrees kelvin"),
    ),
}


def _unit_aliases() -> dict[str, Unit]:
    table: dict[str, Unit] = {}
    for symbol, (unit, extra) in _UNITS.items():
        for name in (symbol, unit.singular.lower(), unit.plural.lower(), *extra):
            table[name] = unit
            if name.endswith(("metre", "litre")):  # the American spellings' plurals
                table[name[:-2] + "ers"] = unit
            if name.endswith(("meter", "liter")):
                table[name + "s"] = unit
    return table


UNIT_ALIASES = _unit_aliases()


def find_unit(name: str) -> Unit:
    key = " ".join(name.lower().replace(".", " ").split())
    unit = UNIT_ALIASES.get(key) or UNIT_ALIASES.get(key.removeprefix("the "))
    if unit is None:
        raise ThinkerError("unsupported", f"I don't know the unit {name.strip()[:30]}.", name)
    return unit


def convert_units(value: float | int | str | Fraction, from_unit: str, to_unit: str) -> str:
    """Tool: `value` in `from_unit` -> "3.11 miles" (2 decimals; exact when whole)."""
    src, dst = find_unit(from_unit), find_unit(to_unit)
    if src.dimension != dst.dimension:
        raise ThinkerError(
            "invalid",
            f"I can't convert {src.plural} to {dst.plural}.",
            f"{src.dimension} vs {dst.dimension}",
        )
    try:
        v = Fraction(str(value).replace(",", ""))
    except (ValueError, ZeroDivisionError):
        raise ThinkerError("invalid", "That is not a number I can convert.", repr(value)) from None
    _check_size(v)
    out = ((v * src.factor + src.offset) - dst.offset) / dst.factor
    text = _round_for_speech(out)
    return f"{text} {dst.singular if text in ('1', '-1') else dst.plural}"


def _round_for_speech(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    if abs(x) >= 1:
        return _decimal(x, 2)
    return _decimal(x, max(2, 2 - Decimal(float(abs(x))).adjusted()))  # 3 significant


_CONVERT = re.compile(
    r"^(?:convert\s+)?(?P<value>[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+)\s*(?P<src>.+?)\s+"
    r"(?:to|in|into|as)\s+(?P<dst>.+)$",
    re.IGNORECASE,
)
_HOW_MANY = re.compile(
    r"^how many\s+(?P<dst>.+?)\s+(?:are\s+)?(?:in|is)\s+"
    r"(?P<value>[-+]?\d[\d,]*(?:\.\d+)?)\s*(?P<src>.+)$",
    re.IGNORECASE,
)


def parse_conversion(task: str) -> tuple[str, str, str] | None:
    """ "convert 5 km to miles", "100 F in C", "how many feet in 3 metres" ->
    (value, from, to), or None when the task is not a unit conversion we know."""
    s = task.strip().rstrip("?.! ").strip()
    for pattern in (_CONVERT, _HOW_MANY):
        m = pattern.match(s)
        if m and _is_unit(m["src"]) and _is_unit(m["dst"]):
            return m["value"], m["src"].strip(), m["dst"].strip()
    return None


def _is_unit(name: str) -> bool:
    try:
        find_unit(name)
    except ThinkerError:
        return False
    return True


# ---- clock and date -----------------------------------------------------------------

_TZ_ALIASES = {"utc": "UTC", "gmt": "UTC", "z": "UTC"}


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    """Lower-case lookups for every IANA zone: the full name and its city part
    ("europe/paris", "paris", "new york")."""
    names: dict[str, str] = {}
    for zone in sorted(zoneinfo.available_timezones()):
        names.setdefault(zone.lower(), zone)
        city = zone.rsplit("/", 1)[-1].replace("_", " ").lower()
        names.setdefault(city, zone)
    return names


def find_zone(name: str) -> zoneinfo.ZoneInfo:
    """An IANA zone from its name or city, any case ("Europe/Paris", "tokyo", "UTC")."""
    key = " ".join(name.strip().lower().split())
    zone = (
        _TZ_ALIASES.get(key) or _zone_names().get(key) or _zone_names().get(key.replace(" ", "_"))
    )
    if zone is None:
        raise ThinkerError("not_found", f"I don't know the time in {name.strip()[:30]}.", name)
    return zoneinfo.ZoneInfo(zone)


def utc_now() -> datetime:
    return datetime.now(UTC)


def say_time(t: datetime) -> str:
    """ "2:05 pm": how people say a clock time (12-hour, no leading zero)."""
    hour = t.hour % 12 or 12
    return f"{hour}:{t.minute:02d} {'am' if t.hour < 12 else 'pm'}"


def say_date(t: datetime) -> str:
    """ "Tuesday, 3 March 2026"."""
    return f"{t:%A}, {t.day} {t:%B %Y}"


def current_time(
    timezone: str | None = None,
    what: str = "time",
    *,
    now: Callable[[], datetime] = utc_now,
    default_zone: tzinfo | None = None,
    days: int = 0,
) -> str:
    """Tool: the time ("2:05 pm"), date ("Tuesday, 3 March 2026") or both, here
    (`default_zone`; None: this machine's zone) or in `timezone` ("2:05 pm in Tokyo").
    `now` returns the present (aware; naive is read as UTC): tests inject their own."""
    if what not in ("time", "date", "both"):
        raise ThinkerError("invalid", detail=f"what must be time, date or both, got {what!r}")
    t = now()
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t
    zone = find_zone(timezone) if timezone else default_zone
    t = t.astimezone(zone) + timedelta(days=days)
    parts = []
    if what in ("date", "both"):
        parts.append(say_date(t))
    if what in ("time", "both"):
        parts.append(say_time(t))
    text = ", ".join(parts)
    if timezone:
        place = str(getattr(zone, "key", timezone)).rsplit("/", 1)[-1].replace("_", " ")
        text += f" in {place}"
    return text


_CLOCK = re.compile(
    r"\b(?P<time>time|clock)\b|\b(?P<date>date|day|today|tomorrow|yesterday)\b", re.IGNORECASE
)
_IN_PLACE = re.compile(r"\bin\s+(?P<place>[A-Za-z][A-Za-z_/ +-]*)$", re.IGNORECASE)


def parse_clock(task: str) -> tuple[str, str | None, int] | None:
    """ "time", "what time is it in Tokyo", "today's date", "what day is it tomorrow" ->
    (what, timezone or None, day offset); None when the task is not about the clock."""
    s = task.strip().rstrip("?.! ").strip()
    m = re.match(r"^(time|date|clock)\s*:\s*(.*)$", s, re.IGNORECASE)
    if m:  # "time: Tokyo", "date:"
        return ("date" if m[1].lower() == "date" else "time"), m[2].strip() or None, 0
    found = {k for m in _CLOCK.finditer(s) for k, v in m.groupdict().items() if v}
    if not found or len(s) > 80:
        return None
    what = "both" if found == {"time", "date"} else found.pop()
    low = s.lower()
    days = 1 if "tomorrow" in low else -1 if "yesterday" in low else 0
    m = _IN_PLACE.search(s)
    return what, (m["place"].strip() if m else None), days


# ---- facts --------------------------------------------------------------------------


def fact_key(text: str) -> str:
    """How a key is matched: lower case, single spaces, without a leading "the" or
    trailing punctuation ("The capital of Australia?" -> "capital of australia")."""
    key = " ".join(text.lower().split()).strip(" ?.!")
    key = re.sub(r"^(?:what(?:'s| is| are)|do you know|look up)\s+", "", key)
    return key.removeprefix("the ").strip()


class FactTable:
    """The fact table file (microturn/data/facts.tsv or the user's own), read with
    `microturn.data.load_facts` and read again when the file changes, so a user's edit
    counts at the next lookup without a restart."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else FACTS_PATH
        self._facts: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def facts(self) -> dict[str, str]:
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as err:
                raise ThinkerError(
                    "not_found", "I could not open my fact table.", f"{self.path}: {err}"
                ) from None
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                try:
                    self._facts = {fact_key(k): v for k, v in load_facts(self.path).items()}
                except (ValueError, OSError, UnicodeDecodeError) as err:
                    raise ThinkerError(
                        "error", "My fact table has a mistake in it.", str(err)
                    ) from None
                self._stamp = stamp
            return self._facts

    def get(self, key: str) -> str | None:
        """The value for `key`, None when the table has no such fact."""
        return self.facts().get(fact_key(key))

    def lookup(self, key: str) -> str:
        """Tool: the value for `key` ("capital of australia" -> "Canberra")."""
        value = self.get(key)
        if value is None:
            k = fact_key(key)
            raise ThinkerError("not_found", f"I don't have the {k[:60]} in my facts.", k)
        return value


# ---- the toolbox: what the thinkers call --------------------------------------------

TOOL_SPECS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "Exact arithmetic: numbers with + - * / // % ** and parentheses.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "e.g. 347 * 29"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_units",
            "description": "Convert a quantity between units of length, mass, volume, "
            "speed, time or temperature (km, miles, kg, lb, C, F, l, gal, ...).",
            "parameters": {
                "type": "object",
                "properties": {
                    "value": {"type": "number"},
                    "from_unit": {"type": "string"},
                    "to_unit": {"type": "string"},
                },
                "required": ["value", "from_unit", "to_unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "current_time",
            "description": "The current time and/or date, here or in a time zone or city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "timezone": {"type": "string", "description": "e.g. Asia/Tokyo or Tokyo"},
                    "what": {"type": "string", "enum": ["time", "date", "both"]},
                },
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "lookup_fact",
            "description": "Look a fact up in the user's local fact table by its key, "
            "e.g. 'capital of australia' or 'height of mount everest'.",
            "parameters": {
                "type": "object",
                "properties": {"key": {"type": "string"}},
                "required": ["key"],
            },
        },
    },
]


class Toolbox:
    """The built-in tools with their settings (fact file, clock, home time zone)."""

    def __init__(
        self,
        facts_path: str | Path | None = None,
        *,
        now: Callable[[], datetime] = utc_now,
        timezone: str | tzinfo | None = None,
    ) -> None:
        self.facts = FactTable(facts_path)
        self.now = now
        self.zone = find_zone(timezone) if isinstance(timezone, str) else timezone

    def specs(self) -> list[dict[str, Any]]:
        return TOOL_SPECS

    def clock(self, timezone: str | None = None, what: str = "time", days: int = 0) -> str:
        return current_time(timezone, what, now=self.now, default_zone=self.zone, days=days)

    def run(self, name: str, arguments: dict[str, Any]) -> str:
        """Call tool `name` with a model's JSON arguments; ThinkerError when it fails."""
        if not isinstance(arguments, dict):
            raise ThinkerError("malformed", detail=f"{name}: arguments are not an object")
        try:
            if name == "calculate":
                return calculate(str(arguments["expression"]))
            if name == "convert_units":
                return convert_units(
                    arguments["value"], str(arguments["from_unit"]), str(arguments["to_unit"])
                )
            if name == "current_time":
                tz = arguments.get("timezone") or None
                return self.clock(tz and str(tz), str(arguments.get("what") or "time"))
            if name == "lookup_fact":
                return self.facts.lookup(str(arguments["key"]))
        except KeyError as err:
            raise ThinkerError("malformed", detail=f"{name}: missing argument {err}") from None
        raise ThinkerError("unsupported", detail=f"no tool named {name!r}")
