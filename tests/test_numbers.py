"""Numbers written as text: the strict grammar against a reference, units after a number,
underflow and overflow refused, rounding to a field's precision."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sentinel.decode.numbers import NumberTextError, parse_number_text, round_to, split_number_unit

# The grammar written out another way: sign, then digits with an optional fraction or a bare
# fraction, then an optional exponent; ASCII only, ASCII blanks around.
_BLANK = "[ \\t\\n\\r\\f\\v]*"
_REFERENCE = re.compile(
    _BLANK + "[-+]?" + "(?:[0-9]+[.]?[0-9]*|[.][0-9]+)" + "(?:[eE][-+]?[0-9]+)?" + _BLANK,
    re.ASCII)


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0.0), ("12", 12.0), ("-3", -3.0), ("+4.5", 4.5), (".5", 0.5), ("5.", 5.0),
    ("1e3", 1000.0), ("1E-3", 0.001), (" \t21.5\n", 21.5), ("-0", 0.0), ("0e-400", 0.0),
    ("1e-310", 1e-310), ("1.7976931348623157e308", 1.7976931348623157e308),
])
def test_numbers_of_the_grammar(text: str, value: float) -> None:
    """Decimal literals with optional sign, fraction and exponent are read."""
    got = parse_number_text(text)
    assert got == value and math.copysign(1.0, got) == math.copysign(1.0, value)


@pytest.mark.parametrize(("text", "why"), [
    ("１.５", "non-ASCII digits"), ("٣", "non-ASCII digits"), ("1_0", "underscore"),
    ("1e-400", "too small"), ("-2.5e-999", "too small"), ("1e400", "beyond the range"),
    ("inf", "not a finite"), ("-Infinity", "not a finite"), ("NaN", "not a finite"),
    ("0x10", "no hex"), ("0b1", "no hex"), ("", "empty"), (" ", "empty"), (".", "not a number"),
    ("1.2.3", "not a number"), ("1,5", "not a number"), ("12 mm", "not a number"),
    ("\u00a012", "not a number"),  # a no-break space is not ASCII whitespace
    ("e5", "not a number"), ("--1", "not a number"), ("1e", "not a number"),
])
def test_loose_numbers_are_refused(text: str, why: str) -> None:
    """Full-width and other non-ASCII digits, underscores, infinities, hex, silent underflow
    and anything else float() would read are refused with a reason."""
    with pytest.raises(NumberTextError, match=why) as caught:
        parse_number_text(text)
    assert caught.value.reason == str(caught.value)


def test_reason_quotes_the_text_visibly() -> None:
    """An empty or blank text shows as quotes in the reason, never as nothing."""
    with pytest.raises(NumberTextError, match="'x' is not a number"):
        parse_number_text("x")
    with pytest.raises(NumberTextError, match="…"):
        parse_number_text("x" * 100)


@pytest.mark.parametrize(("text", "expected"), [
    ("1234 mm", (1234.0, "mm")), ("3.305V", (3.305, "V")), ("3.305 V", (3.305, "V")),
    ("-3 dBm", (-3.0, "dBm")), ("21.5 °C", (21.5, "°C")), ("12", (12.0, None)),
    (" 7 ", (7.0, None)), ("0bar", (0.0, "bar")), ("5 %", (5.0, "%")), ("1e3m", (1000.0, "m")),
    ("1.5 km / h", (1.5, "km / h")),
])
def test_number_and_unit(text: str, expected: tuple[float, str | None]) -> None:
    """A number of the grammar, then an optional unit text."""
    assert split_number_unit(text) == expected


@pytest.mark.parametrize("text", [
    "1_000 mm", "1,5 V", "1 2", "1.2.3 V", "0x10", "１.５ bar", "V", "", "inf V", "1e-400 V",
    "- 3 V", "1e999 Pa",
])
def test_number_and_unit_refused(text: str) -> None:
    """The number part follows the strict grammar; a 'unit' that continues the number is
    refused rather than read as a unit."""
    with pytest.raises(NumberTextError):
        split_number_unit(text)


def test_round_to() -> None:
    """Rounding removes float noise; infinities pass; -0.0 becomes 0.0."""
    assert round_to(0.32000000000000006, 4) == 0.32
    assert repr(round_to(0.1 + 0.2, 3)) == "0.3"
    assert repr(round_to(-0.0001, 2)) == "0.0"
    assert round_to(1234.5, -2) == 1200.0
    assert round_to(math.inf, 1) == math.inf
    assert math.isnan(round_to(math.nan, 1))


# -- properties ----------------------------------------------------------------------------

_ALPHABET = "0123456789+-.eE_ \t\n xXbo,%V١３"


@given(st.text(_ALPHABET, max_size=14))
def test_grammar_matches_the_reference(text: str) -> None:
    """Text is read exactly when the reference grammar accepts it (and it stays finite and
    does not underflow), and then as float() reads it."""
    accepted = _REFERENCE.fullmatch(text) is not None
    try:
        value = parse_number_text(text)
    except NumberTextError:
        if accepted:
            value = float(text)  # accepted by the grammar: refused only for its magnitude
            assert math.isinf(value) or (value == 0.0 and re.search("[1-9]", text.lower().split(
                "e")[0]))
        return
    assert accepted
    assert value == float(text) and math.isfinite(value)


@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["", " ", "\t"]))
def test_every_float_repr_reads_back(value: float, blank: str) -> None:
    """repr of any finite float is text of the grammar and reads back exactly."""
    assert parse_number_text(blank + repr(value) + blank) == value


@given(st.integers(-(10 ** 30), 10 ** 30), st.integers(-400, 400))
def test_underflow_is_refused_overflow_too(mantissa: int, exponent: int) -> None:
    """A non-zero literal is read as a non-zero finite number or refused, never as 0."""
    text = f"{mantissa}e{exponent}"
    exact = float(text)
    if mantissa != 0 and (exact == 0.0 or math.isinf(exact)):
        with pytest.raises(NumberTextError, match=r"too small|beyond"):
            parse_number_text(text)
    else:
        value = parse_number_text(text)
        assert value == exact and (value == 0.0) == (mantissa == 0)


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
       st.sampled_from(["mm", "V", "dBm", "°C", "%", "kPa", "µg/m³"]), st.sampled_from(["", " "]))
def test_split_number_unit_round_trip(value: float, unit: str, gap: str) -> None:
    """Any float written with any unit, with or without a space, splits back."""
    assume("e" not in repr(value) or not unit.startswith(("e", "E")))
    assert split_number_unit(f"{value!r}{gap}{unit}") == (value, unit)


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9),
       st.integers(0, 6))
def test_round_to_is_the_shortest_text(value: float, decimals: int) -> None:
    """A rounded value prints with at most `decimals` places (no float noise)."""
    text = repr(round_to(value, decimals))
    assume("e" not in text)
    assert len(text.split(".")[1].rstrip("0")) <= decimals
