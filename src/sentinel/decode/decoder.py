"""Turn a raw MQTT message into a canonical Reading, or raise DecodeError with the reason."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from sentinel import units
from sentinel.config.inventory import Device, Inventory
from sentinel.config.model import IngestSettings
from sentinel.config.profiles import FieldMapping, ProfileSpec
from sentinel.decode.paths import MISSING, Getter, compile_getter
from sentinel.errors import DecodeError
from sentinel.kinds import CompiledField, KindRegistry
from sentinel.types import RawMessage, Reading, RejectReason, Value

R = RejectReason

STANDARD_TRUE: frozenset[object] = frozenset(
    {"true", "on", "yes", "y", "1", "alarm", "detected", "active"})
STANDARD_FALSE: frozenset[object] = frozenset(
    {"false", "off", "no", "n", "0", "normal", "clear", "ok", "inactive", "idle"})

# Epoch values above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_MS_THRESHOLD = 1e11
# Topics → matching profiles. Bounded in entries and in key length: a subscribed filter's
# `+` level can carry up to 64 KiB, and hostile topics must not make the cache grow without
# bound (200,000 × 64 KiB); longer topics are matched each time, which is cheap.
_TOPIC_CACHE_MAX = 200_000
_TOPIC_CACHE_KEY_MAX = 256
# Integers beyond ±2**53 are not exact as floats (and beyond 2**63 fit no store).
_EXACT_INT = 2.0 ** 53
_UTF8_BOM = b"\xef\xbb\xbf"


def topic_matches(filter_levels: list[str], topic_levels: list[str]) -> bool:
    """MQTT topic-filter matching on pre-split levels."""
    n = len(filter_levels)
    for i, want in enumerate(filter_levels):
        if want == "#":
            return True
        if i >= len(topic_levels):
            return False
        if want != "+" and want != topic_levels[i]:
            return False
    return n == len(topic_levels)


def _norm_word(value: str | float | bool) -> str:
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True, slots=True)
class _FieldReader:
    """One profile field mapping joined with its canonical field spec, ready to run."""

    name: str
    getter: Getter | None
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
    required: bool
    open_range: bool  # the field lacks min or max, so the range check lets infinity through

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
                                  f"{type(raw).__name__}", device.id)
            word = _norm_word(raw)
            if word in self.true_words:
                return True
            if word in self.false_words:
                return False
            raise DecodeError(R.WRONG_TYPE, f"{self.name}: {_clip(raw)!s} is not a boolean",
                              device.id)
        # string
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise DecodeError(R.WRONG_TYPE, f"{self.name}: expected text", device.id)
        text = self.mapping.get(str(raw), str(raw))
        if spec.choices is not None and text not in spec.choices:
            raise DecodeError(R.IMPOSSIBLE_VALUE, f"{self.name}: {_clip(text)!r} is not one of "
                              f"{sorted(spec.choices)}", device.id)
        if not text:
            raise DecodeError(R.IMPOSSIBLE_VALUE, f"{self.name}: empty", device.id)
        return text

    def _number(self, raw: Any, device: Device) -> float:
        if type(raw) is float or type(raw) is int:
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                raise DecodeError(R.WRONG_TYPE, f"{self.name}: {_clip(raw)!r} is not a number",
                                  device.id) from None
        else:
            raise DecodeError(R.WRONG_TYPE, f"{self.name}: expected a number, got "
                              f"{type(raw).__name__}", device.id)
        if not math.isfinite(value):
            raise DecodeError(R.IMPOSSIBLE_VALUE, f"{self.name}: {value} is not finite", device.id)
        value = (value * self.scale + self.offset) * self.factor
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


def _clip(value: object, limit: int = 40) -> object:
    """Short text of a value for a reject detail. Never str() of a JSON container: it can be
    1,000 levels deep (RecursionError) or 64 KiB long."""
    if type(value) is dict or type(value) is list:
        return f"<{'object' if type(value) is dict else 'array'} of {len(value)}>"
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


class CompiledProfile:
    """A profile prepared for the hot path; field readers are built per device kind."""

    def __init__(self, spec: ProfileSpec, kinds: KindRegistry) -> None:
        self.spec = spec
        self.name = spec.name
        self.filters = [f.split("/") for f in spec.match]
        self.is_json = spec.format == "json"
        self.id_segment = spec.device_id.topic_segment
        self.id_getter = compile_getter(spec.device_id.path) if spec.device_id.path else None
        self.id_prefix = spec.device_id.prefix
        self.id_case = spec.device_id.case
        self.quantity_segment = spec.quantity_segment
        ts = spec.timestamp
        self.ts_getter = compile_getter(ts.path) if ts else None
        self.ts_format = ts.format if ts else "auto"
        self.naive_tz = ZoneInfo(ts.naive_timezone) if ts and ts.naive_timezone else None
        self._kinds = kinds
        self._readers: dict[str, tuple[_FieldReader, ...]] = {}

    def matches(self, levels: list[str]) -> bool:
        return any(topic_matches(f, levels) for f in self.filters)

    def readers(self, kind: str) -> tuple[_FieldReader, ...]:
        readers = self._readers.get(kind)
        if readers is None:
            readers = self._readers[kind] = self._build_readers(kind)
        return readers

    def _build_readers(self, kind: str) -> tuple[_FieldReader, ...]:
        fields = self._kinds.compiled(kind)
        kind_spec = self._kinds[kind]
        out = []
        for name, mapping in self.spec.fields_for(kind).items():
            spec = fields.get(name)
            if spec is None:  # a multi-kind profile field this kind does not have
                continue
            out.append(_make_reader(name, mapping, spec, kind_spec.fields[name].unit))
        return tuple(out)


def _make_reader(name: str, m: FieldMapping, spec: CompiledField,
                 canonical_unit: str | None) -> _FieldReader:
    factor = 1.0
    if m.unit is not None and canonical_unit is not None and not m.percent_of_setting:
        factor = units.factor(m.unit, canonical_unit)
    elif m.unit is not None and m.percent_of_setting:
        # percent_of_setting divides by a setting in metres; convert the raw value to metres.
        factor = units.factor(m.unit, "m")
    return _FieldReader(
        name=name,
        getter=compile_getter(m.path) if m.path else None,
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
        required=m.required,
        open_range=not (math.isfinite(spec.lo) and math.isfinite(spec.hi)),
    )


class Decoder:
    """Decode raw messages with the loaded profiles against the inventory."""

    def __init__(self, profiles: Mapping[str, ProfileSpec], inventory: Inventory,
                 kinds: KindRegistry, settings: IngestSettings) -> None:
        self._profiles = [CompiledProfile(p, kinds) for p in profiles.values()]
        self._inventory = inventory
        self._max_payload = settings.max_payload_bytes
        self._max_future = settings.max_future_skew
        self._max_age = settings.max_age
        self._topic_cache: dict[str, tuple[CompiledProfile, ...]] = {}

    def topic_filters(self) -> list[str]:
        """Every topic filter of every profile, for subscribing."""
        seen: dict[str, None] = {}
        for p in self._profiles:
            for f in p.spec.match:
                seen.setdefault(f, None)
        return list(seen)

    def _profiles_for(self, topic: str) -> tuple[CompiledProfile, ...]:
        found = self._topic_cache.get(topic)
        if found is None:
            levels = topic.split("/")
            found = tuple(p for p in self._profiles if p.matches(levels))
            if len(topic) <= _TOPIC_CACHE_KEY_MAX:
                if len(self._topic_cache) >= _TOPIC_CACHE_MAX:
                    self._topic_cache.clear()
                self._topic_cache[topic] = found
        return found

    def decode(self, msg: RawMessage) -> Reading:
        """Return the reading the message carries; raise DecodeError if it must be rejected."""
        payload = msg.payload
        if len(payload) > self._max_payload:
            raise DecodeError(R.PAYLOAD_TOO_LARGE,
                              f"{len(payload)} bytes > limit {self._max_payload}")
        if not payload:
            raise DecodeError(R.EMPTY_PAYLOAD, "zero-length payload")
        profiles = self._profiles_for(msg.topic)
        if not profiles:
            raise DecodeError(R.NO_PROFILE, "no device profile matches the topic")
        first_error: DecodeError | None = None
        for profile in profiles:
            try:
                return self._decode_with(profile, msg)
            except DecodeError as exc:
                # With overlapping profiles, a device of the other profile is no error.
                if first_error is None or (first_error.reason is R.PROFILE_MISMATCH):
                    first_error = exc
        assert first_error is not None
        raise first_error

    def _decode_with(self, profile: CompiledProfile, msg: RawMessage) -> Reading:
        levels = msg.topic.split("/")
        doc: Any
        if profile.is_json:
            try:
                doc = orjson.loads(msg.payload)
            except orjson.JSONDecodeError as exc:
                doc = _parse_json_slow(msg.payload, exc)
            if type(doc) is not dict and type(doc) is not list:
                raise DecodeError(R.WRONG_TYPE, "payload is not a JSON object")
        else:
            try:
                doc = msg.payload.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise DecodeError(R.INVALID_ENCODING, "payload is not valid UTF-8") from None
            if doc[:1] == "\ufeff":  # a byte-order mark is not part of the value
                doc = doc[1:].strip()

        device = self._device(profile, levels, doc)
        readers = profile.readers(device.kind)
        ts = self._timestamp(profile, doc, msg.received_at, device.id)

        values: dict[str, Value] = {}
        if profile.is_json:
            for reader in readers:
                raw = reader.getter(doc) if reader.getter is not None else MISSING
                if raw is MISSING or raw is None:
                    if reader.required:
                        raise DecodeError(R.MISSING_FIELD, f"{reader.name} is missing", device.id)
                    continue
                values[reader.name] = reader.convert(raw, device)
        else:
            quantity = levels[profile.quantity_segment] if profile.quantity_segment is not None \
                else None
            for reader in readers:
                if quantity is None or reader.quantity == quantity:
                    values[reader.name] = reader.convert(doc, device)
            if not values and quantity is not None:
                raise DecodeError(R.MISSING_FIELD, f"no field maps quantity {_clip(quantity)!r}",
                                  device.id)
        if not values:
            raise DecodeError(R.MISSING_FIELD, f"no {device.kind} field in the payload", device.id)
        if ts is None:  # no device time: the receive time, made distinct by sentinel.stamps
            return Reading(device.id, device.kind, msg.received_at, msg.received_at, values,
                           False)
        return Reading(device.id, device.kind, ts, msg.received_at, values)

    def _device(self, profile: CompiledProfile, levels: list[str], doc: Any) -> Device:
        from_topic = levels[profile.id_segment] if profile.id_segment is not None else None
        from_payload: str | None = None
        if profile.id_getter is not None:
            raw = profile.id_getter(doc)
            if isinstance(raw, str | int) and not isinstance(raw, bool) and str(raw):
                from_payload = str(raw)
            elif raw is not MISSING and raw is not None:
                raise DecodeError(R.WRONG_TYPE, "device id in the payload is not text")
        if from_topic is not None and from_payload is not None and from_topic != from_payload:
            # The dead letter names the topic's device when the inventory knows it.
            named = self._inventory.get(_device_id(profile, from_topic))
            raise DecodeError(R.DEVICE_MISMATCH, f"topic names {_clip(from_topic)!r} but payload "
                              f"names {_clip(from_payload)!r}", named.id if named else None)
        found = from_payload if from_payload is not None else from_topic
        if not found:
            raise DecodeError(R.MISSING_DEVICE_ID, "no device id in topic or payload")
        device_id = _device_id(profile, found)
        device: Device | None = self._inventory.get(device_id)
        if device is None:
            raise DecodeError(R.UNKNOWN_DEVICE, f"device {_clip(device_id)!r} is not in the "
                              "inventory")
        if device.profile != profile.name:
            raise DecodeError(R.PROFILE_MISMATCH, f"device uses profile {device.profile!r}, "
                              f"message matched {profile.name!r}", device.id)
        return device

    def _timestamp(self, profile: CompiledProfile, doc: Any, received_at: float,
                   device_id: str) -> float | None:
        """The device's time, or None when the message carries none."""
        if profile.ts_getter is None:
            return None
        raw = profile.ts_getter(doc)
        if raw is MISSING or raw is None:
            return None
        ts = parse_timestamp(raw, profile.ts_format, profile.naive_tz)
        if ts is None:
            raise DecodeError(R.INVALID_TIMESTAMP, f"cannot read time {_clip(raw)!r}", device_id)
        if ts > received_at + self._max_future:
            raise DecodeError(R.TIMESTAMP_IN_FUTURE, f"{ts - received_at:.0f} s ahead of the "
                              "receive time", device_id)
        if ts < received_at - self._max_age:
            raise DecodeError(R.TIMESTAMP_TOO_OLD, f"{received_at - ts:.0f} s old", device_id)
        return ts


def _device_id(profile: CompiledProfile, found: str) -> str:
    if profile.id_case == "upper":
        found = found.upper()
    elif profile.id_case == "lower":
        found = found.lower()
    return profile.id_prefix + found


def _parse_json_slow(payload: bytes, exc: orjson.JSONDecodeError) -> Any:
    """orjson refused the payload: accept it after a UTF-8 byte-order mark (RFC 8259 lets a
    parser ignore one; orjson refuses it), else raise the reason. Only rejected payloads
    come here, so the checks cost the hot path nothing."""
    if payload.startswith(_UTF8_BOM):
        try:
            return orjson.loads(payload[3:])
        except orjson.JSONDecodeError as again:
            exc = again
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise DecodeError(R.INVALID_ENCODING, f"payload is not valid UTF-8 (byte {bad.start})"
                          ) from None
    raise DecodeError(R.INVALID_JSON, str(_clip(str(exc), 120))) from None


def parse_timestamp(raw: Any, fmt: str, naive_tz: ZoneInfo | None) -> float | None:
    """Epoch seconds from a device time, or None when it cannot be read."""
    number: float | None = None
    if type(raw) is int or type(raw) is float:
        number = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if fmt != "iso8601":
            try:
                number = float(text)
            except ValueError:
                number = None
        if number is None:
            if fmt in ("epoch_s", "epoch_ms"):
                return None
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                if naive_tz is None:
                    return None
                parsed = parsed.replace(tzinfo=naive_tz)
            return parsed.timestamp()
    else:
        return None
    if fmt == "iso8601" or not math.isfinite(number) or number < 0:
        return None
    if fmt == "epoch_ms" or (fmt == "auto" and number > _MS_THRESHOLD):
        number /= 1000.0
    return number if number < 1e11 else None
