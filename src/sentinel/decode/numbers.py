"""Numbers written as text: one strict grammar for every numeric string a device sends.

Python's float() reads far more than a number a device means: `１.５` (full-width digits),
`٣`, `1_0`, `inf`, `nan`, and it turns `1e-400` into 0.0 without a word. A pressure of
`１.５` bar must not become 0.15 MPa by accident, so text is read by this grammar only:

    [sign] digits [. digits] [e|E [sign] digits]      (ASCII digits; `.5` and `5.` too)

with surrounding ASCII whitespace trimmed. A literal whose mantissa is not zero but whose
value underflows to 0.0, or overflows to infinity, is refused.
"""

from __future__ import annotations

import math
import re

_ASCII_SPACE = " \t\n\r\f\v"
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER_RE = re.compile(_NUMBER)
_RADIX = re.compile(r"[+-]?0(?:[xX][0-9a-fA-F]|[oO][0-7]|[bB][01])")
_NONZERO_MANTISSA = re.compile(r"[1-9]")
_WORDS = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity",
                    "nan", "+nan", "-nan"})
# A unit never starts like the rest of a number would (`1_000`, `1,5`, `1 2`, `1.2.3`).
_NOT_A_UNIT_START = frozenset("0123456789+-.,_")


class NumberTextError(ValueError):
    """The text is not a number of the strict grammar; `reason` says why (for a dead letter)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_number_text(text: str) -> float:
    """Return the number the text holds; raise NumberTextError when it is not one."""
    body = text.strip(_ASCII_SPACE)
    if _NUMBER_RE.fullmatch(body) is None:
        raise NumberTextError(_why_not(body))
    return _value(body)


def split_number_unit(text: str) -> tuple[float, str | None]:
    """Split `"1234 mm"`, `"3.305V"`, `"-3 dBm"`, `"21.5 °C"` into (number, unit or None).

    The number follows the strict grammar; the unit is the rest, trimmed, and must not start
    like a continuation of the number (so `1_000 mm`, `1,5 V` and `1 2` are refused)."""
    body = text.strip(_ASCII_SPACE)
    match = _NUMBER_RE.match(body)
    if match is None:
        raise NumberTextError(_why_not(body, _WITH_UNIT))
    number = match.group()
    rest = body[match.end():].strip(_ASCII_SPACE)
    if not rest:
        return _value(number), None
    if rest[0] in _NOT_A_UNIT_START or rest[0].isdigit() or _radix_prefix(body):
        raise NumberTextError(_why_not(body, _WITH_UNIT))
    return _value(number), rest


def round_to(value: float, decimals: int) -> float:
    """Return value rounded to `decimals` places (kills float noise: 0.32000000000000006 →
    0.32). Python rounds the exact binary value, half to even; -0.0 becomes 0.0."""
    if not math.isfinite(value):
        return value
    return round(float(value), decimals) + 0.0


def _value(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise NumberTextError(f"{_show(literal)} is beyond the range of a double")
    if value == 0.0:
        mantissa = literal.split("e")[0].split("E")[0]
        if _NONZERO_MANTISSA.search(mantissa):
            raise NumberTextError(f"{_show(literal)} is too small: it would read as 0")
        return 0.0  # not -0.0
    return value


def _radix_prefix(body: str) -> bool:
    """`0x1F`, `0o17`, `0b101` (but `0bar` is 0 bar)."""
    return _RADIX.match(body) is not None


_WITH_UNIT = "a number with an optional unit"


def _why_not(body: str, wanted: str = "a number") -> str:
    """The most useful reason text for something that is not a number of the grammar."""
    shown = _show(body)
    if not body:
        return f"empty text is not {wanted}"
    if any(c.isdigit() and not c.isascii() for c in body):
        return f"{shown} has non-ASCII digits (only 0-9 are read)"
    if "_" in body and any(c.isdigit() for c in body):
        return f"{shown} has an underscore (digits must not be grouped)"
    if body.lower() in _WORDS:
        return f"{shown} is not a finite number"
    if _radix_prefix(body):
        return f"{shown} is not a decimal number (no hex, octal or binary)"
    return f"{shown} is not {wanted}"


def _show(text: str, limit: int = 40) -> str:
    """repr-style quoting, clipped, so an empty or blank text shows as \"\" in a detail."""
    return repr(text if len(text) <= limit else text[:limit] + "…")
