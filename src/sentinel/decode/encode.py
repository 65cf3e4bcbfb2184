"""The inverse of decoding: a canonical reading → the messages a device of a profile sends.

Used by the simulator (so simulated devices speak their vendor's format) and by the
round-trip property tests of every shipped profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from sentinel import units
from sentinel.config.inventory import Device
from sentinel.config.profiles import FieldMapping, ProfileSpec
from sentinel.decode.paths import (
    is_key_ref,
    parse_path,
    path_has_wildcard,
    path_is_rooted,
    set_path,
)
from sentinel.kinds import KindRegistry
from sentinel.types import Value


class EncodeError(ValueError):
    pass


def device_id_on_wire(profile: ProfileSpec, device: Device) -> str:
    """The id as the device's network writes it: its first alias (a bridge's name for it),
    else the id with the prefix removed and the case the network forces."""
    if device.aliases:
        return device.aliases[0]
    spec = profile.device_id
    wire = device.id[len(spec.prefix):] if spec.prefix else device.id
    # A network that upper-cases ids received lower-case ones, and the reverse.
    if spec.case == "upper":
        return wire.lower()
    if spec.case == "lower":
        return wire.upper()
    return wire


def _topic_for(profile: ProfileSpec, device: Device, quantity: str | None) -> str:
    device_part = device_id_on_wire(profile, device)
    if profile.publish_topic is not None:
        fields = {k: v for k, v in device.model_dump().items() if isinstance(v, str)}
        fields.update(device_id=device_part, quantity=quantity or "")
        return profile.publish_topic.format(**fields)
    levels = profile.match[0].split("/")
    id_slice = profile.device_id.topic_slice()
    counted_from_end = (profile.quantity_segment or 0) < 0 or (id_slice is not None and (
        (id_slice.start or 0) < 0 or (id_slice.stop or 0) < 0))
    if "#" in levels and counted_from_end:  # where the end is, only a real topic says
        raise EncodeError(f"profile {profile.name!r} needs publish_topic to publish")
    if profile.quantity_segment is not None and quantity is not None:
        levels[profile.quantity_segment] = quantity
    # The id last: a name with slashes (topic_segments) shifts the levels after it.
    if id_slice is not None:  # "1:" over "zigbee2mqtt/#" replaces the "#"
        start, stop, _ = id_slice.indices(len(levels))
        levels[start:max(stop, start + 1)] = [device_part]
    if "+" in levels or "#" in levels:
        raise EncodeError(f"profile {profile.name!r} needs publish_topic to publish")
    return "/".join(levels)


def _raw_value(name: str, mapping: FieldMapping, value: Value, device: Device,
               canonical_unit: str | None) -> Any:
    if isinstance(value, bool):
        if mapping.true_values and value:
            return mapping.true_values[0]
        if mapping.false_values and not value:
            return mapping.false_values[0]
        return value
    if isinstance(value, str):
        reverse = {v: k for k, v in mapping.map.items()}
        return reverse.get(value, value)
    number = float(value)
    if mapping.percent_of_setting:
        base = device.settings.number(mapping.percent_of_setting)
        if not base:
            raise EncodeError(f"{name}: device has no {mapping.percent_of_setting}")
        number = number * base / 100.0
        if mapping.from_distance:
            number = _mount(device, name) - number
        factor = units.factor(mapping.unit, "m") if mapping.unit else 1.0
    else:
        if mapping.from_distance:
            number = _mount(device, name) - number
        factor = (units.factor(mapping.unit, canonical_unit)
                  if mapping.unit and canonical_unit else 1.0)
    raw = (number / factor - mapping.offset) / mapping.scale
    if isinstance(value, int) and raw.is_integer():
        return int(raw)
    return raw


def _mount(device: Device, name: str) -> float:
    mount = device.settings.mount_height_m
    if mount is None:
        raise EncodeError(f"{name}: device has no mount_height_m")
    return mount


def _timestamp(profile: ProfileSpec, ts: float) -> Any:
    spec = profile.timestamp
    assert spec is not None
    if spec.format == "epoch_s":
        return ts
    if spec.format == "iso8601":
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return round(ts * 1000)


def encode(profile: ProfileSpec, device: Device, values: Mapping[str, Value], ts: float | None,
           kinds: KindRegistry) -> list[tuple[str, bytes]]:
    """Return (topic, payload) pairs a device of this profile publishes for these values.

    Values the profile cannot carry are left out; a value profile yields one message per
    field (and carries no timestamp: the receiver stamps it).
    """
    kind = kinds[device.kind]
    mappings = profile.fields_for(device.kind)
    if profile.format == "value":
        out = []
        for name, mapping in mappings.items():
            if name not in values or name not in kind.fields:
                continue
            raw = _raw_value(name, mapping, values[name], device, kind.fields[name].unit)
            text = ("true" if raw else "false") if isinstance(raw, bool) else (
                repr(raw) if isinstance(raw, float) else str(raw))
            out.append((_topic_for(profile, device, mapping.quantity), text.encode()))
        return out
    wire_id = device_id_on_wire(profile, device)
    # What goes where: (path, value); a batch's item paths are relative to the item, `$.`
    # paths to the message, and `@key` is the key the item is filed under.
    writes: list[tuple[str, Any]] = []
    if profile.device_id.path is not None:
        writes.append((profile.device_id.path, wire_id))
    if profile.timestamp is not None and ts is not None:
        writes.append((profile.timestamp.path, _timestamp(profile, ts)))
    for name, mapping in mappings.items():
        if name in values and name in kind.fields and mapping.path is not None:
            writes.append((mapping.path, _raw_value(name, mapping, values[name], device,
                                                    kind.fields[name].unit)))
    doc: Any
    if profile.each is None:
        doc = _document([w for w in writes if not is_key_ref(w[0])])
    else:
        doc = _batch_of_one(profile, writes)
    return [(_topic_for(profile, device, None), orjson.dumps(doc))]


def _document(writes: list[tuple[str, Any]]) -> dict[str, Any] | list[Any]:
    # A document whose paths start with [i] (or a selector) is a top-level array.
    doc: dict[str, Any] | list[Any] = (
        [] if any(parse_path(p)[0][0] != "key" for p, _ in writes) else {})
    for path, value in writes:
        set_path(doc, path, value)
    return doc


def _batch_of_one(profile: ProfileSpec, writes: list[tuple[str, Any]]) -> Any:
    """A batch message holding one item: the item's paths relative to it, `$.` paths from
    the root, the item filed where `each` finds it (at a `*`: under the `@key` value when
    that is text, else as element 0)."""
    each = profile.each
    assert each is not None
    key: Any = next((v for p, v in writes if is_key_ref(p)), None)
    item = _document([w for w in writes if not is_key_ref(w[0]) and not path_is_rooted(w[0])])
    rooted = [w for w in writes if path_is_rooted(w[0])]
    steps = parse_path(each)
    first = steps[0][0]
    doc: Any = [] if first in ("index", "select") or (
        first == "wildcard" and not isinstance(key, str)) else {}
    if len(steps) == 1 and first == "wildcard":  # `*` alone: the message is the batch
        if rooted:
            raise EncodeError(f"profile {profile.name!r}: a batch at the root has no room "
                              "for `$.` paths")
        return {key: item} if isinstance(key, str) else [item]
    for path, value in rooted:
        set_path(doc, path, value)
    if path_has_wildcard(each):
        set_path(doc, each, item, wildcard_key=key if isinstance(key, str) else 0)
    else:
        set_path(doc, each, [item])
    return doc
