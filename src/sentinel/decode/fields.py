"""One field of a reading: a profile's field mapping joined with the kind's field spec.

A `FieldReader` turns the raw value a path found into the canonical value: booleans from
vendor words, text through `map` and `default`, numbers (and numbers written as text, with
their unit) scaled, converted, rounded to the field's precision and range-checked. It raises
DecodeError with the reason a raw value cannot be read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from sentinel import units
from sentinel.config.inventory import Device
from sentinel.config.profiles import FieldMapping
from sentinel.decode.numbers import NumberTextError, parse_number_text, split_number_unit
from sentinel.decode.paths import Getter, compile_getter, is_key_ref, path_is_rooted
from sentinel.errors import DecodeError
from sentinel.kinds import CompiledField
from sentinel.types import RejectReason, Value

R = RejectReason

STANDARD_TRUE: frozenset[object] = frozenset(
    {"true", "on", "yes", "y", "1", "alarm", "detected", "active"})
STANDARD_FALSE: frozenset[object] = frozenset(
    {"false", "off", "no", "n", "0", "normal", "clear", "ok", "inactive", "idle"})
# Integers beyond ±2**53 are not exact as floats (and beyond 2**63 fit no store).
_EXACT_INT = 2.0 ** 53

# Where a path reads from (`each` profiles): the item, the message root (`$.`), or the key
# the last `*` of `each` matched (`@key`).
ITEM, ROOT, KEY = 0, 1, 2


def compile_source(path: str, batch: bool) -> tuple[Getter | None, int]:
    """The getter of a profile path and what it applies to (ITEM, ROOT or KEY). Outside a
    batch the root is the item. Raises PathError."""
    if is_key_ref(path):
        return None, KEY
    return compile_getter(path), ROOT if batch and path_is_rooted(path) else ITEM


def _norm_word(value: str | float | bool) -> str:
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(int(value)) if float(value).is_integer() else str(value)


def show(value: object, limit: int = 40) -> str:
    """A value as a reject detail shows it: text in double quotes (so that an empty text
    reads `""`, and control characters are escaped), clipped. Never str() of a JSON
    container: it can be 1,000 levels deep (RecursionError) or 64 KiB long."""
    if type(value) is str:
        text = value if len(value) <= limit else value[:limit] + "…"
        try:
            return orjson.dumps(text).decode()
        except orjson.JSONEncodeError:  # a lone surrogate from a topic level
            return repr(text)
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is dict or type(value) is list:
        return f"<{'object' if type(value) is dict else 'array'} of {len(value)}>"
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True, slots=True)
class FieldReader:
    """One profile field mapping joined with its canonical field spec, ready to run."""

    name: str
    getter: Getter | None
    source: int  # ITEM, ROOT or KEY: what `getter` is applied to
    quantity: str | None
    spec: CompiledField
    factor: float
    scale: float
    offset: float
    from_distance: bool
    percent_of_setting: str | None
    true_words: frozenset[object]
    false_words: frozenset[object]
    mapping: Mapping[str, str]
    default: str | None
    absent: frozenset[str]
    required: bool
    # Numeric fields: text holding a number is read (value payloads always are text), and
    # with units_in_text a unit may follow the number.
    text_ok: bool
    units_in_text: bool
    # The unit text values convert into (the canonical unit, or metres for
    # percent_of_setting), and the factors found so far per unit text.
    text_target: str | None
    text_factors: dict[str, float]
    open_range: bool  # the field lacks min or max, so the range check lets infinity through
    precision: int | None  # decimals a `number` field keeps
    decimal_scale: float  # 10 ** precision

    def is_absent(self, raw: Any) -> bool:
        """A vendor word meaning "no value" (`absent`)."""
        return type(raw) is not dict and type(raw) is not list and _norm_word(raw) in self.absent

    def convert(self, raw: Any, device: Device) -> Value:
        spec = self.spec
        kind = spec.type
        if kind == "number" or kind == "integer":
            return self._number(raw, device)
        if kind == "bool":
            if raw is True or raw is False:
                return raw
            if not isinstance(raw, str | int | float):
                raise DecodeError(R.WRONG_TYPE, f"{self.name}: expected a boolean, got "
                                  f"{show(raw)}", device.id)
            word = _norm_word(raw)
            if word in self.true_words:
                return True
            if word in self.false_words:
                return False
            raise DecodeError(R.WRONG_TYPE, f"{self.name}: {show(raw)} is not a boolean",
                              device.id)
        # string
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise DecodeError(R.WRONG_TYPE, f"{self.name}: expected text, got {show(raw)}",
                              device.id)
        word = raw if type(raw) is str else str(raw)
        text = self.mapping.get(word)
        if text is None:
            default = self.default
            text = default if default is not None and (
                spec.choices is None or word not in spec.choices) else word
        if spec.choices is not None and text not in spec.choices:
            raise DecodeError(R.IMPOSSIBLE_VALUE, f"{self.name}: {show(text)} is not one of "
                              f"{sorted(spec.choices)}", device.id)
        if not text:
            raise DecodeError(R.IMPOSSIBLE_VALUE, f"{self.name}: \"\" is empty", device.id)
        return text

    def _number(self, raw: Any, device: Device) -> float:
        if type(raw) is float or type(raw) is int:
            value = float(raw)
            factor = self.factor
        elif type(raw) is str:
            value, factor = self._from_text(raw, device)
        else:
            raise DecodeError(R.WRONG_TYPE, f"{self.name}: expected a number, got "
                              f"{show(raw)}", device.id)
        value = (value * self.scale + self.offset) * factor
        settings = device.settings
        if self.from_distance:
            mount = settings.mount_height_m
            if mount is None:
                raise DecodeError(R.IMPOSSIBLE_VALUE, f"{self.name}: device has no "
                                  "mount_height_m to turn a distance into a level", device.id)
            value = mount - value
        if self.percent_of_setting is not None:
            base = settings.number(self.percent_of_setting)
            if not base:
                raise DecodeError(R.IMPOSSIBLE_VALUE, f"{self.name}: device has no "
                                  f"{self.percent_of_setting}", device.id)
            value = value / base * 100.0
        spec = self.spec
        if self.precision is not None and not value.is_integer():  # a whole number is exact
            # Conversions leave float noise (0.32000000000000006): keep the decimals the
            # field means, before the range check so that 100.00000000000001 % is 100 %.
            value = round_decimals(value, self.precision, self.decimal_scale)
        # scale, offset and unit factors can overflow a finite raw value to infinity (or
        # inf - inf to NaN): a field without min or max must check that itself.
        if not spec.lo <= value <= spec.hi or (self.open_range and not math.isfinite(value)):
            where = f"outside [{spec.lo:g}, {spec.hi:g}]" if math.isfinite(value) else \
                "after scale and unit conversion"
            raise DecodeError(R.IMPOSSIBLE_VALUE, f"{self.name}: {value:g} {where}", device.id)
        if spec.max_setting is not None:
            cap = settings.number(spec.max_setting)
            if cap is not None and value > cap:
                raise DecodeError(R.IMPOSSIBLE_VALUE, f"{self.name}: {value:g} above "
                                  f"{spec.max_setting} {cap:g}", device.id)
        if spec.type == "integer":
            if not value.is_integer():
                raise DecodeError(R.WRONG_TYPE, f"{self.name}: {value:g} is not an integer",
                                  device.id)
            if not -_EXACT_INT <= value <= _EXACT_INT:
                raise DecodeError(R.IMPOSSIBLE_VALUE, f"{self.name}: {value:g} beyond the "
                                  "exact integer range ±2**53", device.id)
            return int(value)
        return value

    def _from_text(self, raw: str, device: Device) -> tuple[float, float]:
        """The number a text holds and the factor to the canonical unit (the text's own
        unit's if it names one)."""
        if not self.text_ok:
            raise DecodeError(R.WRONG_TYPE, f"{self.name}: {show(raw)} is text, not a number "
                              "(a profile reads numbers written as text with from_text: true)",
                              device.id)
        try:
            if not self.units_in_text:
                return parse_number_text(raw), self.factor
            value, unit = split_number_unit(raw)
        except NumberTextError as exc:
            raise DecodeError(R.WRONG_TYPE, f"{self.name}: {exc.reason}", device.id) from None
        if unit is None:
            return value, self.factor
        factor = self.text_factors.get(unit)
        if factor is None:
            target = self.text_target
            try:
                if target is None:
                    raise units.UnitError("the field has no unit")
                factor = units.factor(unit, target)
            except units.UnitError:
                raise DecodeError(R.WRONG_TYPE, f"{self.name}: unit {show(unit)} in "
                                  f"{show(raw)} does not convert to "
                                  f"{target or 'this unitless field'}", device.id) from None
            if len(self.text_factors) < 64:  # vendor unit spellings are few; text is not
                self.text_factors[unit] = factor
        return value, factor


def make_reader(name: str, m: FieldMapping, spec: CompiledField,
                 canonical_unit: str | None, batch: bool, value_format: bool) -> FieldReader:
    factor = 1.0
    target = "m" if m.percent_of_setting else canonical_unit
    if m.unit is not None and canonical_unit is not None and not m.percent_of_setting:
        factor = units.factor(m.unit, canonical_unit)
    elif m.unit is not None and m.percent_of_setting:
        # percent_of_setting divides by a setting in metres; convert the raw value to metres.
        factor = units.factor(m.unit, "m")
    getter, source = compile_source(m.path, batch) if m.path else (None, ITEM)
    return FieldReader(
        name=name,
        getter=getter,
        source=source,
        quantity=m.quantity,
        spec=spec,
        factor=factor,
        scale=m.scale,
        offset=m.offset,
        from_distance=m.from_distance,
        percent_of_setting=m.percent_of_setting,
        true_words=STANDARD_TRUE | {_norm_word(w) for w in m.true_values},
        false_words=STANDARD_FALSE | {_norm_word(w) for w in m.false_values},
        mapping=dict(m.map),
        default=m.default,
        absent=frozenset(_norm_word(w) for w in m.absent),
        required=m.required,
        text_ok=m.from_text or value_format,
        units_in_text=m.from_text,
        text_target=target,
        text_factors={},
        open_range=not (math.isfinite(spec.lo) and math.isfinite(spec.hi)),
        precision=spec.precision if spec.type == "number" else None,
        decimal_scale=10.0 ** spec.precision if spec.precision is not None else 1.0,
    )


def round_decimals(value: float, decimals: int, scale: float) -> float:
    """round(value, decimals) + 0.0, faster (`scale` is 10 ** decimals).

    round() with decimals converts through a decimal string. Scaled, the value's distance
    to the nearest integer decides the same way unless it is within the scaling's rounding
    error of a tie (below 1e-6 for |value × scale| < 1e9): there, and for huge or
    non-finite values, round() decides. k / 10**d (k an integer below 2**53, d ≤ 22) is the
    double nearest to the decimal, as round() returns it; 0 has no sign."""
    scaled = value * scale
    if -1e9 < scaled < 1e9:
        whole = round(scaled)
        if -0.4999 < scaled - whole < 0.4999:
            return whole / scale
    return round(value, decimals) + 0.0
