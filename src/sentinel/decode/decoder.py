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

from sentinel.config.inventory import Device, Inventory
from sentinel.config.model import IngestSettings
from sentinel.config.profiles import ProfileSpec
from sentinel.decode.fields import ITEM, KEY, FieldReader, compile_source, make_reader, show
from sentinel.decode.jsontext import JsonTextError, loads_strict
from sentinel.decode.numbers import NumberTextError, parse_number_text
from sentinel.decode.paths import (
    MISSING,
    Getter,
    compile_getter,
    compile_matcher,
    path_has_wildcard,
)
from sentinel.errors import DecodeError
from sentinel.kinds import KindRegistry
from sentinel.types import RawMessage, Reading, RejectReason, Value

R = RejectReason

# Epoch values above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_MS_THRESHOLD = 1e11
# Topics → matching profiles. Bounded in entries and in key length: a subscribed filter's
# `+` level can carry up to 64 KiB, and hostile topics must not make the cache grow without
# bound (200,000 × 64 KiB); longer topics are matched each time, which is cheap.
_TOPIC_CACHE_MAX = 200_000
_TOPIC_CACHE_KEY_MAX = 256
# Dead letters one batch message may cause: a 64 KiB payload of empty items would otherwise
# become 20,000 dead letters, each keeping the payload. The last one counts the rest.
MAX_ITEM_REJECTS = 50


class NoValue(Exception):  # an outcome, not an error
    """The message says its device has no value now (every field it carries is one of its
    mapping's `absent` words: ESPHome's "nan", a warming-up sensor's "unknown"). Nothing to
    store and nothing wrong: the message is acknowledged and counted, not dead-lettered."""

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id)
        self.device_id = device_id


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


@dataclass(frozen=True, slots=True)
class _KindReaders:
    """The readers of one profile for one kind, by what they read from."""

    item: tuple[FieldReader, ...]  # the message (or the batch item)
    other: tuple[FieldReader, ...]  # `$.` paths and `@key` in a batch
    value: tuple[FieldReader, ...]  # every reader, in mapping order (value profiles)


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
            out.append(make_reader(name, mapping, spec, kind_spec.fields[name].unit,
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


class Decoder:
    """Decode raw messages with the loaded profiles against the inventory."""

    def __init__(self, profiles: Mapping[str, ProfileSpec], inventory: Inventory,
                 kinds: KindRegistry, settings: IngestSettings) -> None:
        # Only profiles some device speaks: the shipped vendor profiles (devices/examples)
        # must not widen what the daemon subscribes to, nor be tried on every message.
        used = {name for device in inventory.values() for name in device.profiles}
        self._profiles = [CompiledProfile(p, kinds) for p in profiles.values()
                          if p.name in used]
        self._inventory = inventory
        # Wire names are looked up first, exactly; most fleets have none.
        self._by_alias = inventory.by_alias if inventory.has_aliases else None
        self._max_payload = settings.max_payload_bytes
        self._max_future = settings.max_future_skew
        self._max_age = settings.max_age
        self._topic_cache: dict[str, tuple[tuple[CompiledProfile, ...], bool]] = {}

    def topic_filters(self) -> list[str]:
        """Every topic filter of every profile a device speaks, for subscribing."""
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
        of a batch must, NoValue if it only says its device has no value now."""
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
            try:
                doc = loads_strict(msg.payload)
            except JsonTextError as exc:
                raise DecodeError(R(exc.reason), exc.detail) from None
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
            return [self._reading(profile, device, levels, doc, doc, None, msg)]
        return self._decode_batch(profile, levels, doc, msg)

    def _decode_batch(self, profile: CompiledProfile, levels: list[str], doc: Any,
                      msg: RawMessage) -> list[Reading]:
        assert profile.items is not None
        items = profile.items(doc)
        if not items:
            raise DecodeError(R.MISSING_FIELD, f"no items at {show(profile.spec.each)}")
        readings: list[Reading] = []
        errors: list[DecodeError] = []
        said_absent: NoValue | None = None
        for key, item in items:
            try:
                device = self._device(profile, levels, item, doc, key)
                readings.append(self._reading(profile, device, levels, item, doc, key, msg))
            except NoValue as exc:  # this item's device has no value now; the others may
                said_absent = exc
            except DecodeError as exc:
                errors.append(exc)
        if not readings and not errors and said_absent is not None:
            raise said_absent
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
                 root: Any, key: str | int | None, msg: RawMessage) -> Reading:
        readers = profile.readers(device.kind)
        ts = self._timestamp(profile, item, root, key, msg.received_at, device.id)
        values: dict[str, Value] = {}
        said_absent = False  # a field carried one of its `absent` words
        if profile.is_json:
            found = [(r, r.getter(item) if r.getter is not None else MISSING)
                     for r in readers.item]
            if readers.other:  # paths from the message root (`$.`) or the batch key (`@key`)
                found += [(r, _read(r.source, r.getter, item, root, key))
                          for r in readers.other]
            for reader, raw in found:
                if raw is MISSING or raw is None or (reader.absent and reader.is_absent(raw)):
                    if reader.required:
                        raise DecodeError(R.MISSING_FIELD, f"{reader.name} is missing", device.id)
                    said_absent = said_absent or (raw is not MISSING and raw is not None)
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
                        said_absent = True
                        continue
                    values[reader.name] = reader.convert(item, device)
            if not values and quantity is not None and \
                    not any(r.quantity == quantity for r in readers.value):
                raise DecodeError(R.MISSING_FIELD, f"no field maps quantity {show(quantity)}",
                                  device.id)
        if not values:
            if said_absent:
                raise NoValue(device.id)
            raise DecodeError(R.MISSING_FIELD, f"no {device.kind} field in the payload", device.id)
        if ts is None:  # no device time: the receive time, made distinct by sentinel.stamps
            return Reading(device.id, device.kind, msg.received_at, msg.received_at, values,
                           False)
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
            raw = _read(profile.id_source, profile.id_getter, item, root, key)
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
        device = self._lookup(profile, found) if self._by_alias is not None else \
            self._inventory.get(_device_id(profile, found))
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
        raw = _read(profile.ts_source, profile.ts_getter, item, root, key)
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


def _read(source: int, getter: Getter | None, item: Any, root: Any,
          key: str | int | None) -> Any:
    """A value by where its path starts: the batch item, the message root (`$.`), or the
    key the item was found under (`@key`)."""
    if source == KEY:
        return key if key is not None else MISSING
    assert getter is not None
    return getter(item if source == ITEM else root)


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
