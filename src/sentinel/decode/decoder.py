"""Turn a raw MQTT message into canonical Readings, or raise DecodeError with the reason.

One message usually carries one reading; a gateway's batch (a profile with `each`) carries
several, and an item of a batch that cannot be read is refused alone (ItemsRejected).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from sentinel import units
from sentinel.config.inventory import Device, Inventory
from sentinel.config.model import IngestSettings
from sentinel.config.profiles import FieldMapping, ProfileSpec
from sentinel.decode.numbers import NumberTextError, parse_number_text, split_number_unit
from sentinel.decode.paths import (
    KEY_REF,
    MISSING,
    Getter,
    PathError,
    compile_getter,
    compile_matcher,
    is_key_ref,
    path_has_wildcard,
    path_is_rooted,
)
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
# Readings of one device from one message without a device time are this far apart, so
# that they never share a timestamp (the stores keep one row per device and time).
UNTIMED_STEP = 1e-6
# Dead letters one batch message may cause: a 64 KiB payload of empty items would otherwise
# become 20,000 dead letters, each keeping the payload. The last one counts the rest.
MAX_ITEM_REJECTS = 50

# Where a path reads from (`each` profiles): the item, the message root (`$.`), or the key
# the last `*` of `each` matched (`@key`).
ITEM, ROOT, KEY = 0, 1, 2


class ItemsRejected(DecodeError):
    """Some items of a batch message were refused. `readings` holds the items kept,
    `errors` one DecodeError per refused item, each with its own reason; the exception's
    own reason and detail are the first error's. Catching it as a DecodeError (refusing
    the whole message) loses nothing but the kept readings."""

    def __init__(self, readings: list[Reading], errors: list[DecodeError]) -> None:
        first = errors[0]
        super().__init__(first.reason, first.detail, first.device_id)
        self.readings = readings
        self.errors = errors


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
class _FieldReader:
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
        if spec.precision is not None and spec.type == "number" and math.isfinite(value):
            # Conversions leave float noise (0.32000000000000006): keep the decimals the
            # field means, before the range check so that 100.00000000000001 % is 100 %.
            value = round(value, spec.precision) + 0.0  # and no -0.0
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


@dataclass(frozen=True, slots=True)
class _KindReaders:
    """The readers of one profile for one kind, by what they read from."""

    item: tuple[_FieldReader, ...]  # the message (or the batch item)
    other: tuple[_FieldReader, ...]  # `$.` paths and `@key` in a batch
    value: tuple[_FieldReader, ...]  # every reader, in mapping order (value profiles)


def compile_source(path: str, batch: bool) -> tuple[Getter | None, int]:
    """The getter of a profile path and what it applies to (ITEM, ROOT or KEY). Outside a
    batch the root is the item. Raises PathError."""
    if is_key_ref(path):
        return None, KEY
    return compile_getter(path), ROOT if batch and path_is_rooted(path) else ITEM


class CompiledProfile:
    """A profile prepared for the hot path; field readers are built per device kind."""

    def __init__(self, spec: ProfileSpec, kinds: KindRegistry) -> None:
        self.spec = spec
        self.name = spec.name
        self.filters = [f.split("/") for f in spec.match]
        self.excludes = [f.split("/") for f in spec.exclude]
        self.is_json = spec.format == "json"
        self.batch = spec.each is not None
        self.items: Callable[[Any], list[tuple[str | int | None, Any]]] | None = None
        if spec.each is not None:
            self.items = _items_of(spec.each)
        ids = spec.device_id
        self.id_index = ids.topic_segment
        self.id_slice = ids.topic_slice() if ids.topic_segments is not None else None
        self.id_getter, self.id_source = (compile_source(ids.path, self.batch) if ids.path
                                          else (None, ITEM))
        self.id_in_payload = ids.path is not None
        self.id_prefix = ids.prefix
        self.id_case = ids.case
        self.quantity_segment = spec.quantity_segment
        ts = spec.timestamp
        self.ts_getter, self.ts_source = (compile_source(ts.path, self.batch) if ts
                                          else (None, ITEM))
        self.has_ts = ts is not None
        self.ts_format = ts.format if ts else "auto"
        self.naive_tz = ZoneInfo(ts.naive_timezone) if ts and ts.naive_timezone else None
        self._kinds = kinds
        self._readers: dict[str, _KindReaders] = {}

    def takes(self, levels: list[str]) -> int:
        """1: this profile takes the topic; -1: it matches but excludes it; 0: no match."""
        if not any(topic_matches(f, levels) for f in self.filters):
            return 0
        return -1 if any(topic_matches(f, levels) for f in self.excludes) else 1

    def readers(self, kind: str) -> _KindReaders:
        readers = self._readers.get(kind)
        if readers is None:
            readers = self._readers[kind] = self._build_readers(kind)
        return readers

    def _build_readers(self, kind: str) -> _KindReaders:
        fields = self._kinds.compiled(kind)
        kind_spec = self._kinds[kind]
        out = []
        for name, mapping in self.spec.fields_for(kind).items():
            spec = fields.get(name)
            if spec is None:  # a multi-kind profile field this kind does not have
                continue
            out.append(_make_reader(name, mapping, spec, kind_spec.fields[name].unit,
                                    self.batch, not self.is_json))
        return _KindReaders(item=tuple(r for r in out if r.source == ITEM),
                            other=tuple(r for r in out if r.source != ITEM), value=tuple(out))


def _items_of(path: str) -> Callable[[Any], list[tuple[str | int | None, Any]]]:
    """The items of a batch: every match of a `*` path (with the key its last `*` matched);
    or the elements of the list a plain path yields (keyed by index), or the one object."""
    if path_has_wildcard(path):
        return compile_matcher(path)
    getter = compile_getter(path)

    def items(doc: Any) -> list[tuple[str | int | None, Any]]:
        found = getter(doc)
        if found is MISSING or found is None:
            return []
        if type(found) is list:
            return list(enumerate(found))
        return [(None, found)]

    return items


def _make_reader(name: str, m: FieldMapping, spec: CompiledField,
                 canonical_unit: str | None, batch: bool, value_format: bool) -> _FieldReader:
    factor = 1.0
    target = "m" if m.percent_of_setting else canonical_unit
    if m.unit is not None and canonical_unit is not None and not m.percent_of_setting:
        factor = units.factor(m.unit, canonical_unit)
    elif m.unit is not None and m.percent_of_setting:
        # percent_of_setting divides by a setting in metres; convert the raw value to metres.
        factor = units.factor(m.unit, "m")
    getter, source = compile_source(m.path, batch) if m.path else (None, ITEM)
    return _FieldReader(
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
    )


class Decoder:
    """Decode raw messages with the loaded profiles against the inventory."""

    def __init__(self, profiles: Mapping[str, ProfileSpec], inventory: Inventory,
                 kinds: KindRegistry, settings: IngestSettings) -> None:
        self._profiles = [CompiledProfile(p, kinds) for p in profiles.values()]
        self._inventory = inventory
        # Wire names are looked up first, exactly; most fleets have none.
        self._by_alias = inventory.by_alias if inventory.has_aliases else None
        self._max_payload = settings.max_payload_bytes
        self._max_future = settings.max_future_skew
        self._max_age = settings.max_age
        self._topic_cache: dict[str, tuple[tuple[CompiledProfile, ...], bool]] = {}

    def topic_filters(self) -> list[str]:
        """Every topic filter of every profile, for subscribing."""
        seen: dict[str, None] = {}
        for p in self._profiles:
            for f in p.spec.match:
                seen.setdefault(f, None)
        return list(seen)

    def _profiles_for(self, topic: str) -> tuple[tuple[CompiledProfile, ...], bool]:
        """The profiles that take the topic, and whether a profile excluded it."""
        found = self._topic_cache.get(topic)
        if found is None:
            levels = topic.split("/")
            verdicts = [(p, p.takes(levels)) for p in self._profiles]
            found = (tuple(p for p, v in verdicts if v > 0), any(v < 0 for _, v in verdicts))
            if len(topic) <= _TOPIC_CACHE_KEY_MAX:
                if len(self._topic_cache) >= _TOPIC_CACHE_MAX:
                    self._topic_cache.clear()
                self._topic_cache[topic] = found
        return found

    def decode(self, msg: RawMessage) -> list[Reading]:
        """Return the readings the message carries (none: a topic its profiles exclude, to
        be ignored); raise DecodeError if it must be rejected, ItemsRejected if some items
        of a batch must."""
        payload = msg.payload
        if len(payload) > self._max_payload:
            raise DecodeError(R.PAYLOAD_TOO_LARGE,
                              f"{len(payload)} bytes > limit {self._max_payload}")
        if not payload:
            raise DecodeError(R.EMPTY_PAYLOAD, "zero-length payload")
        profiles, excluded = self._profiles_for(msg.topic)
        if not profiles:
            if excluded:
                return []
            raise DecodeError(R.NO_PROFILE, "no device profile matches the topic")
        first_error: DecodeError | None = None
        for profile in profiles:
            try:
                return self._decode_with(profile, msg)
            except ItemsRejected as exc:
                if exc.readings:  # the profile read the batch: its refusals are final
                    raise
                error: DecodeError = exc
            except DecodeError as exc:
                error = exc
            # With overlapping profiles, a device of the other profile is no error.
            if first_error is None or first_error.reason is R.PROFILE_MISMATCH:
                first_error = error
        assert first_error is not None
        raise first_error

    def _decode_with(self, profile: CompiledProfile, msg: RawMessage) -> list[Reading]:
        levels = msg.topic.split("/")
        doc: Any
        if profile.is_json:
            doc = _parse_json(msg.payload)
            if type(doc) is not dict and type(doc) is not list:
                raise DecodeError(R.WRONG_TYPE, "payload is not a JSON object")
        else:
            try:
                doc = msg.payload.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise DecodeError(R.INVALID_ENCODING, "payload is not valid UTF-8") from None
            if doc[:1] == "\ufeff":  # a byte-order mark is not part of the value
                doc = doc[1:].strip()
        if profile.items is None:
            device = self._device(profile, levels, doc, doc, None)
            return [self._reading(profile, device, levels, doc, doc, None, msg, None)]
        return self._decode_batch(profile, levels, doc, msg)

    def _decode_batch(self, profile: CompiledProfile, levels: list[str], doc: Any,
                      msg: RawMessage) -> list[Reading]:
        assert profile.items is not None
        items = profile.items(doc)
        if not items:
            raise DecodeError(R.MISSING_FIELD, f"no items at {show(profile.spec.each)}")
        readings: list[Reading] = []
        errors: list[DecodeError] = []
        untimed: dict[str, int] = {}
        for key, item in items:
            try:
                device = self._device(profile, levels, item, doc, key)
                readings.append(self._reading(profile, device, levels, item, doc, key, msg,
                                              untimed))
            except DecodeError as exc:
                errors.append(exc)
        if errors:
            if len(errors) > MAX_ITEM_REJECTS:
                last = errors[MAX_ITEM_REJECTS - 1]
                more = len(errors) - MAX_ITEM_REJECTS
                errors[MAX_ITEM_REJECTS - 1] = DecodeError(
                    last.reason, f"{last.detail} (and {more} more refused items of this "
                                 "message, not dead-lettered one by one)", last.device_id)
                del errors[MAX_ITEM_REJECTS:]
            raise ItemsRejected(readings, errors)
        return readings

    def _reading(self, profile: CompiledProfile, device: Device, levels: list[str], item: Any,
                 root: Any, key: str | int | None, msg: RawMessage,
                 untimed: dict[str, int] | None) -> Reading:
        readers = profile.readers(device.kind)
        ts = self._timestamp(profile, item, root, key, msg.received_at, device.id)
        if ts is None:
            ts = msg.received_at
            if untimed is not None:  # several readings of one device in one message
                n = untimed.get(device.id, 0)
                untimed[device.id] = n + 1
                ts += n * UNTIMED_STEP
        values: dict[str, Value] = {}
        if profile.is_json:
            for reader in readers.item:
                raw = reader.getter(item) if reader.getter is not None else MISSING
                if raw is MISSING or raw is None or (reader.absent and reader.is_absent(raw)):
                    if reader.required:
                        raise DecodeError(R.MISSING_FIELD, f"{reader.name} is missing", device.id)
                    continue
                values[reader.name] = reader.convert(raw, device)
            for reader in readers.other:
                if reader.source == KEY:
                    raw = key if key is not None else MISSING
                else:
                    raw = reader.getter(root) if reader.getter is not None else MISSING
                if raw is MISSING or raw is None or (reader.absent and reader.is_absent(raw)):
                    if reader.required:
                        raise DecodeError(R.MISSING_FIELD, f"{reader.name} is missing", device.id)
                    continue
                values[reader.name] = reader.convert(raw, device)
        else:
            quantity: str | None = None
            q = profile.quantity_segment
            if q is not None:
                if not -len(levels) <= q < len(levels):
                    raise DecodeError(R.MISSING_FIELD, "the topic has no quantity level",
                                      device.id)
                quantity = levels[q]
            for reader in readers.value:
                if quantity is None or reader.quantity == quantity:
                    if reader.absent and reader.is_absent(item):
                        if reader.required:
                            raise DecodeError(R.MISSING_FIELD, f"{reader.name} is missing",
                                              device.id)
                        continue
                    values[reader.name] = reader.convert(item, device)
            if not values and quantity is not None and \
                    not any(r.quantity == quantity for r in readers.value):
                raise DecodeError(R.MISSING_FIELD, f"no field maps quantity {show(quantity)}",
                                  device.id)
        if not values:
            raise DecodeError(R.MISSING_FIELD, f"no {device.kind} field in the payload", device.id)
        return Reading(device.id, device.kind, ts, msg.received_at, values)

    def _lookup(self, profile: CompiledProfile, found: str) -> Device | None:
        if self._by_alias is not None:
            named = self._by_alias(found)
            if named is not None:
                return named
        device: Device | None = self._inventory.get(_device_id(profile, found))
        return device

    def _device(self, profile: CompiledProfile, levels: list[str], item: Any, root: Any,
                key: str | int | None) -> Device:
        from_topic: str | None = None
        if profile.id_index is not None:
            i = profile.id_index
            if -len(levels) <= i < len(levels):
                from_topic = levels[i]
        elif profile.id_slice is not None:
            from_topic = "/".join(levels[profile.id_slice])
        from_payload: str | None = None
        if profile.id_in_payload:
            source = profile.id_source
            if source == KEY:
                raw: Any = key if key is not None else MISSING
            else:
                assert profile.id_getter is not None
                raw = profile.id_getter(item if source == ITEM else root)
            if isinstance(raw, str | int) and not isinstance(raw, bool) and str(raw):
                from_payload = str(raw)
            elif raw is not MISSING and raw is not None:
                raise DecodeError(R.WRONG_TYPE, f"device id in the payload is not text: "
                                  f"{show(raw)}")
        if from_topic and from_payload is not None and from_topic != from_payload:
            named = self._lookup(profile, from_topic)
            # Two names of one device (an alias on the topic, the id in the payload) agree.
            if named is None or named is not self._lookup(profile, from_payload):
                # The dead letter names the topic's device when the inventory knows it.
                raise DecodeError(R.DEVICE_MISMATCH, f"topic names {show(from_topic)} but "
                                  f"payload names {show(from_payload)}",
                                  named.id if named else None)
        found = from_payload if from_payload is not None else from_topic
        if not found:
            raise DecodeError(R.MISSING_DEVICE_ID, "no device id in topic or payload")
        device = self._lookup(profile, found)
        if device is None:
            raise DecodeError(R.UNKNOWN_DEVICE, f"device {show(_device_id(profile, found))} is "
                              "not in the inventory")
        if device.profile != profile.name and profile.name not in device.more_profiles:
            raise DecodeError(R.PROFILE_MISMATCH, f"device speaks profile "
                              f"{' or '.join(map(show, device.profiles))}, message matched "
                              f"{show(profile.name)}", device.id)
        return device

    def _timestamp(self, profile: CompiledProfile, item: Any, root: Any, key: str | int | None,
                   received_at: float, device_id: str) -> float | None:
        """The device's time, checked against the receive time; None if it sends none."""
        if not profile.has_ts:
            return None
        source = profile.ts_source
        if source == KEY:
            raw: Any = key if key is not None else MISSING
        else:
            assert profile.ts_getter is not None
            raw = profile.ts_getter(item if source == ITEM else root)
        if raw is MISSING or raw is None:
            return None
        ts = parse_timestamp(raw, profile.ts_format, profile.naive_tz)
        if ts is None:
            raise DecodeError(R.INVALID_TIMESTAMP, f"cannot read time {show(raw)}", device_id)
        if ts > received_at + self._max_future:
            raise DecodeError(R.TIMESTAMP_IN_FUTURE, f"{ts - received_at:.0f} s ahead of the "
                              "receive time", device_id)
        if ts < received_at - self._max_age:
            raise DecodeError(R.TIMESTAMP_TOO_OLD, f"{received_at - ts:.0f} s old", device_id)
        return ts


def profile_problems(profile: ProfileSpec, kinds: KindRegistry) -> list[tuple[str, str]]:
    """(where, problem) for what `check` refuses in a profile beyond its model: paths that
    do not parse or can never match, `exclude` filters that exclude nothing or everything,
    mapping keys that cannot apply to the field's type."""
    problems: list[tuple[str, str]] = []
    batch = profile.each is not None
    keyed = False
    if profile.each is not None:
        try:
            keyed = path_has_wildcard(profile.each)
        except PathError as exc:
            problems.append(("each", str(exc)))
    paths: list[tuple[str, str | None]] = [
        (f"{where}.path", m.path) for where, m in profile.all_mappings() if m.path]
    paths += [("device_id.path", profile.device_id.path),
              ("timestamp.path", profile.timestamp.path if profile.timestamp else None)]
    for where, path in paths:
        if path is None:
            continue
        if is_key_ref(path):
            if not keyed:
                problems.append((where, f"{KEY_REF} is the key a `*` of `each` matched; "
                                        "this profile's `each` has no `*`" if batch else
                                        f"{KEY_REF} needs `each` with a `*`"))
            continue
        try:
            compile_source(path, batch)
        except PathError as exc:
            problems.append((where, str(exc)))
    if profile.each is not None and is_key_ref(profile.each):
        problems.append(("each", f"{KEY_REF} is no path to the items"))
    match = [f.split("/") for f in profile.match]
    for item in profile.exclude:
        levels = item.split("/")
        if not any(filters_overlap(levels, m) for m in match):
            problems.append(("exclude", f"{item!r} excludes no topic that `match` takes"))
    if profile.exclude and all(any(filter_covers(e.split("/"), m) for e in profile.exclude)
                               for m in match):
        problems.append(("exclude", "every topic of `match` is excluded: the profile never "
                                    "takes a message"))
    served = list(profile.kinds) or kinds.names()
    for where, m in profile.all_mappings():
        name = where.rsplit(".", 1)[1]
        kinds_here = [where.split(".")[1]] if where.startswith("by_kind.") else served
        specs = [kinds[k].fields[name] for k in kinds_here
                 if k in kinds and name in kinds[k].fields]
        types = {spec.type for spec in specs}
        if m.from_text and not types & {"number", "integer"}:
            problems.append((where, "from_text applies to numeric fields"))
        if m.default is not None:
            if types and "string" not in types:
                problems.append((where, "default applies to string fields"))
            for spec in specs:
                if spec.choices is not None and m.default not in spec.choices:
                    problems.append((where, f"default {m.default!r} is not one of "
                                            f"{list(spec.choices)}"))
                    break
    return problems


def filters_overlap(a: list[str], b: list[str]) -> bool:
    """Whether some topic matches both filters (split into levels)."""
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#" or y == "#":
            return True  # `a/#` also matches `a`
        if x is None or y is None:
            return False
        if x != "+" and y != "+" and x != y:
            return False
    return True


def filter_covers(a: list[str], b: list[str]) -> bool:
    """Whether every topic filter `b` matches, filter `a` matches too."""
    for i, x in enumerate(a):
        if x == "#":
            return True
        if i >= len(b):
            return False
        y = b[i]
        if y == "#" or (x != "+" and (y == "+" or x != y)):
            return False
    return len(a) == len(b)


def _device_id(profile: CompiledProfile, found: str) -> str:
    if profile.id_case == "upper":
        found = found.upper()
    elif profile.id_case == "lower":
        found = found.lower()
    return profile.id_prefix + found


def parse_timestamp(raw: Any, fmt: str, naive_tz: ZoneInfo | None) -> float | None:
    """Epoch seconds from a device time, or None when it cannot be read."""
    number: float | None = None
    if type(raw) is int or type(raw) is float:
        number = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if fmt != "iso8601":
            try:
                number = parse_number_text(text)
            except NumberTextError:
                number = None
        if number is None:
            if fmt in ("epoch_s", "epoch_ms") or not text.isascii():
                return None  # fromisoformat reads other scripts' digits
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


def _parse_json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return _parse_json_slow(payload, exc)


def _parse_json_slow(payload: bytes, exc: orjson.JSONDecodeError) -> Any:
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
    raise DecodeError(R.INVALID_JSON, str(exc)[:120]) from None
