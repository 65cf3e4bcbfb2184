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
from sentinel.decode.paths import parse_path, set_path
from sentinel.kinds import KindRegistry
from sentinel.types import Value


class EncodeError(ValueError):
    pass


def device_id_on_wire(profile: ProfileSpec, device: Device) -> str:
    """The id as the device's network writes it (prefix removed, case as the network forces)."""
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
    if profile.device_id.topic_segment is not None:
        levels[profile.device_id.topic_segment] = device_part
    if profile.quantity_segment is not None and quantity is not None:
        levels[profile.quantity_segment] = quantity
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
    paths = [m.path for m in mappings.values() if m.path is not None]
    paths += [p.path for p in (profile.device_id, profile.timestamp) if p and p.path]
    # A profile whose paths start with [i] (or a selector) reads a top-level array.
    doc: dict[str, Any] | list[Any] = (
        [] if any(parse_path(p)[0][0] != "key" for p in paths) else {})
    if profile.device_id.path is not None:
        set_path(doc, profile.device_id.path, device_id_on_wire(profile, device))
    if profile.timestamp is not None and ts is not None:
        set_path(doc, profile.timestamp.path, _timestamp(profile, ts))
    for name, mapping in mappings.items():
        if name in values and name in kind.fields and mapping.path is not None:
            set_path(doc, mapping.path,
                     _raw_value(name, mapping, values[name], device, kind.fields[name].unit))
    return [(_topic_for(profile, device, None), orjson.dumps(doc))]
