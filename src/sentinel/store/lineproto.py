"""Readings as InfluxDB line protocol with millisecond timestamps.

One line per reading::

    <kind>[,<tag>=<value>...] <field>=<value>[,<field>=<value>...] <ts_ms>

Escaping follows the line-protocol reference: measurement commas and spaces; tag keys,
tag values and field keys commas, equals signs and spaces; string field values double
quotes. A backslash is written doubled everywhere (the reference reads two contiguous
backslashes as one literal backslash), so a value ending in a backslash cannot escape the
separator that follows it. A line feed or carriage return never reaches the output: each is
written as the two characters ``\\n`` / ``\\r``, because a raw one would end the line.

The tag part of a device's lines never changes, so it is built once with `tag_string` and
passed to `to_line` as a string; `to_line` also accepts the tags mapping for convenience.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sentinel.types import Reading, Value

__all__ = ["escape_key", "escape_measurement", "escape_string", "tag_string", "to_line"]

_MEASUREMENT = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ ", "\n": "\\n", "\r": "\\r"})
_KEY = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n", "\r": "\\r"})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# Measurements (kinds) and field keys come from a small, fixed vocabulary; their escaped
# forms are memoised. The bound only guards against a caller feeding arbitrary names.
_CACHE_MAX = 4096
_measurement_cache: dict[str, str] = {}
_field_key_cache: dict[str, str] = {}


def escape_measurement(name: str) -> str:
    """Escape a measurement name (commas, spaces, backslashes, line breaks)."""
    return name.translate(_MEASUREMENT)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key (commas, equals, spaces, ...)."""
    return text.translate(_KEY)


def escape_string(text: str) -> str:
    """Escape the inside of a string field value (double quotes, backslashes, ...)."""
    return text.translate(_STRING)


def tag_string(tags: Mapping[str, str]) -> str:
    """Build the escaped tag part of a line: ``,k1=v1,k2=v2`` (keys sorted) or ``""``.

    Tags with an empty key or value are left out: line protocol has no empty tag value.
    The result is meant to be cached per device and passed to `to_line`.
    """
    return "".join(
        f",{escape_key(key)}={escape_key(tags[key])}" for key in sorted(tags) if key and tags[key]
    )


def _measurement(kind: str) -> str:
    escaped = _measurement_cache.get(kind)
    if escaped is None:
        if not kind:
            raise ValueError("a reading needs a kind (measurement name)")
        escaped = escape_measurement(kind)
        if len(_measurement_cache) < _CACHE_MAX:
            _measurement_cache[kind] = escaped
    return escaped


def _field_key(name: str) -> str:
    escaped = _field_key_cache.get(name)
    if escaped is None:
        if not name:
            raise ValueError("a field needs a name")
        escaped = escape_key(name)
        if len(_field_key_cache) < _CACHE_MAX:
            _field_key_cache[name] = escaped
    return escaped


def _field_value(name: str, value: Value) -> str:
    # Exact type checks first: they are the common case and the cheapest test.
    if type(value) is float:
        if not math.isfinite(value):
            raise ValueError(f"field {name!r} is {value!r}; line protocol has no NaN or inf")
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{escape_string(value)}"'
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"field {name!r} is {value}; it does not fit a 64-bit integer")
        return f"{int(value)}i"
    if isinstance(value, float):  # a float subclass
        return _field_value(name, float(value))
    raise ValueError(f"field {name!r} has unsupported type {type(value).__name__}")


def to_line(reading: Reading, tags: str | Mapping[str, str]) -> str:
    """Render one reading as a line of line protocol (millisecond timestamp, no newline).

    `tags` is the result of `tag_string` (cache it per device) or the tags themselves.
    Floats are written as floats, a Python ``int`` with the ``i`` suffix, bools as
    ``true``/``false`` and strings quoted. Raises ValueError for a reading that line
    protocol cannot express: no fields, an empty name, NaN or infinity, an integer outside
    64 bits.
    """
    tag_part = tags if isinstance(tags, str) else tag_string(tags)
    values = reading.values
    if not values:
        raise ValueError(f"reading of {reading.device_id!r} has no fields")
    fields = ",".join(
        [f"{_field_key(name)}={_field_value(name, value)}" for name, value in values.items()]
    )
    return f"{_measurement(reading.kind)}{tag_part} {fields} {reading.ts_ms}"
