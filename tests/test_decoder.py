"""Decoding: every reject reason, unit conversion, and properties of the shipped profiles."""

from __future__ import annotations

import contextlib
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.config.inventory import Device
from sentinel.decode import Decoder
from sentinel.decode.encode import encode
from sentinel.errors import DecodeError
from sentinel.loading import Loaded, load_all
from sentinel.types import RawMessage, Reading, RejectReason

from helpers import SHIPPED_CONFIG

LOADED: Loaded = load_all(SHIPPED_CONFIG, {})
DECODER = Decoder(LOADED.profiles, LOADED.inventory, LOADED.kinds, LOADED.settings.ingest)
NOW = time.time()


def _first(kind: str, profile: str) -> Device:
    return next(d for d in LOADED.inventory.values() if d.kind == kind and d.profile == profile)


SMOKE = _first("smoke", "sentinel-json")
TANK = _first("water_level", "lorawan-tts")
ESP = _first("hydrant_pressure", "esphome")
Z2M_GAS = _first("gas", "zigbee2mqtt")


def decode(topic: str, payload: bytes | str, received_at: float = NOW) -> Reading:
    data = payload.encode() if isinstance(payload, str) else payload
    return DECODER.decode(RawMessage(topic, data, 1, False, received_at))


def native(device: Device, **fields: Any) -> tuple[str, bytes]:
    doc = {"id": device.id, "ts": round(NOW * 1000), **fields}
    return f"sentinel/v1/{device.id}/telemetry", orjson.dumps(doc)


def tts(device: Device, decoded: dict[str, Any]) -> tuple[str, bytes]:
    doc = {"end_device_ids": {"device_id": device.id.lower()},
           # Nanosecond ISO time as TTS sends it; near NOW so it is never "too old".
           "received_at": datetime.fromtimestamp(NOW, UTC).strftime(
               "%Y-%m-%dT%H:%M:%S.123456789+00:00"),
           "uplink_message": {"decoded_payload": decoded,
                              "rx_metadata": [{"rssi": -97, "snr": 6.5}]}}
    return f"v3/app@ttn/devices/{device.id.lower()}/up", orjson.dumps(doc)


# -- every reason of part 9 ----------------------------------------------------------------

REJECTS: list[tuple[str, tuple[str, bytes | str], RejectReason]] = [
    ("invalid JSON", (native(SMOKE)[0], b'{"alarm": tru'), RejectReason.INVALID_JSON),
    ("invalid UTF-8", (native(SMOKE)[0], b'{"alarm": "\xff\xfe"}'), RejectReason.INVALID_ENCODING),
    ("invalid UTF-8 plain value", (f"esphome/{ESP.id}/sensor/pipe_pressure/state", b"\xff0.3"),
     RejectReason.INVALID_ENCODING),
    ("zero-length payload", (native(SMOKE)[0], b""), RejectReason.EMPTY_PAYLOAD),
    ("oversized payload", (native(SMOKE)[0], b"{" + b" " * 70_000 + b"}"),
     RejectReason.PAYLOAD_TOO_LARGE),
    ("JSON that is not an object", (native(SMOKE)[0], b"42"), RejectReason.WRONG_TYPE),
    ("wrong type", native(SMOKE, alarm=True, battery="lots"), RejectReason.WRONG_TYPE),
    ("boolean as number", native(SMOKE, alarm="maybe"), RejectReason.WRONG_TYPE),
    ("missing fields", native(SMOKE), RejectReason.MISSING_FIELD),
    ("battery over 100", native(SMOKE, battery=101), RejectReason.IMPOSSIBLE_VALUE),
    ("NaN as a string", native(SMOKE, battery="NaN"), RejectReason.IMPOSSIBLE_VALUE),
    ("Infinity literal", (native(SMOKE)[0], b'{"id":"%s","battery":Infinity}' % SMOKE.id.encode()),
     RejectReason.INVALID_JSON),
    ("number beyond double",
     (native(SMOKE)[0], b'{"id":"%s","battery":1e400}' % SMOKE.id.encode()),
     RejectReason.INVALID_JSON),
    ("huge number", (native(SMOKE)[0], b'{"id":"%s","battery":1e300}' % SMOKE.id.encode()),
     RejectReason.IMPOSSIBLE_VALUE),
    ("integer beyond 64 bits",
     (native(SMOKE)[0], b'{"id":"%s","battery":%d}' % (SMOKE.id.encode(), 10**30)),
     RejectReason.IMPOSSIBLE_VALUE),
    ("negative pressure", tts(_first("hydrant_pressure", "lorawan-tts"), {"pressure": -12}),
     RejectReason.IMPOSSIBLE_VALUE),
    ("level above tank height", tts(TANK, {"distance": 1}), RejectReason.IMPOSSIBLE_VALUE),
    ("unknown device", ("sentinel/v1/NOPE-1/telemetry", b'{"id":"NOPE-1","alarm":true}'),
     RejectReason.UNKNOWN_DEVICE),
    ("topic names another device",
     (native(SMOKE)[0], orjson.dumps({"id": "SB-SMK-0002", "alarm": True})),
     RejectReason.DEVICE_MISMATCH),
    ("device on another vendor's topic", (f"zigbee2mqtt/{SMOKE.id}", b'{"smoke": true}'),
     RejectReason.PROFILE_MISMATCH),
    ("no profile for the topic", ("random/topic", b"{}"), RejectReason.NO_PROFILE),
    ("timestamp in the future",
     (native(SMOKE)[0], orjson.dumps({"id": SMOKE.id, "ts": round((NOW + 600) * 1000),
                                      "alarm": False})),
     RejectReason.TIMESTAMP_IN_FUTURE),
    ("timestamp too old",
     (native(SMOKE)[0], orjson.dumps({"id": SMOKE.id, "ts": round((NOW - 30 * 86400) * 1000),
                                      "alarm": False})),
     RejectReason.TIMESTAMP_TOO_OLD),
    ("unreadable timestamp",
     (native(SMOKE)[0], orjson.dumps({"id": SMOKE.id, "ts": "yesterday", "alarm": False})),
     RejectReason.INVALID_TIMESTAMP),
    ("ISO time without offset",
     (native(SMOKE)[0], orjson.dumps({"id": SMOKE.id, "ts": "2026-11-23T09:00:00",
                                      "alarm": False})),
     RejectReason.INVALID_TIMESTAMP),
    ("deeply nested JSON", (native(SMOKE)[0], b"[" * 5000 + b"]" * 5000),
     RejectReason.INVALID_JSON),
    ("unmapped plain-value quantity", (f"esphome/{ESP.id}/sensor/uptime/state", b"3600"),
     RejectReason.MISSING_FIELD),
    ("gas type not known", native(_first("gas", "sentinel-json"), gas={"type": "XX"}),
     RejectReason.IMPOSSIBLE_VALUE),
]


@pytest.mark.parametrize(("case", "message", "reason"), REJECTS, ids=[r[0] for r in REJECTS])
def test_bad_input_is_rejected_with_its_reason(case: str, message: tuple[str, bytes | str],
                                               reason: RejectReason) -> None:
    """Each kind of bad input raises DecodeError carrying the expected reason."""
    with pytest.raises(DecodeError) as info:
        decode(*message)
    assert info.value.reason is reason, info.value.detail


# -- conversions ---------------------------------------------------------------------------

def test_lorawan_distance_becomes_level_and_percent() -> None:
    """Ultrasonic distance in mm becomes level = mount height − distance, and its %."""
    mount, height = TANK.settings.mount_height_m, TANK.settings.tank_height_m
    assert mount is not None and height is not None
    distance_mm = (mount - height / 2) * 1000
    reading = decode(*tts(TANK, {"distance": distance_mm, "battery": 3.6}))
    assert reading.values["level"] == pytest.approx(height / 2)
    assert reading.values["level_percent"] == pytest.approx(50.0)
    assert reading.values["signal"] == -97
    assert reading.ts == pytest.approx(math.floor(NOW) + 0.123456)  # ns → µs


@pytest.mark.parametrize(("raw", "unit", "mpa"), [
    ("3.5", "bar", 0.35), ("350", "kPa", 0.35), ("350000", "Pa", 0.35), ("0.35", "MPa", 0.35),
    ("50.76", "psi", 0.35),
])
def test_pressure_units_convert_to_mpa(raw: str, unit: str, mpa: float) -> None:
    """Pressure in bar, kPa, Pa, MPa or psi arrives in MPa."""
    from sentinel import units
    assert float(raw) * units.factor(unit, "MPa") == pytest.approx(mpa, rel=1e-3)


def test_plain_value_topic_maps_quantity() -> None:
    """ESPHome-style plain values: the topic names the quantity; bar becomes MPa; ON is true."""
    reading = decode(f"esphome/{ESP.id}/sensor/pipe_pressure/state", "3.52")
    assert reading.values == {"pressure": pytest.approx(0.352)}
    assert reading.ts == NOW  # no device time: the receive time
    tamper = decode(f"esphome/{ESP.id}/binary_sensor/case_open/state", "ON")
    assert tamper.values == {"tamper": True}


def test_zigbee_gas_alarm_and_vendor_words() -> None:
    """Zigbee2MQTT gas state maps `gas` to alarm and mV to V; last_seen ISO time is used."""
    reading = decode(f"zigbee2mqtt/{Z2M_GAS.id}", orjson.dumps(
        {"gas": True, "voltage": 3000, "last_seen": "2026-11-23T09:00:00+08:00"}),
        received_at=1795395700)
    assert reading.values["alarm"] is True
    assert reading.values["battery_voltage"] == pytest.approx(3.0)
    assert reading.ts == pytest.approx(1795395600.0)


@pytest.mark.parametrize("stamp", [1795395600, 1795395600000, "1795395600000",
                                   "2026-11-23T01:00:00Z", "2026-11-23T09:00:00+08:00"])
def test_timestamp_forms(stamp: object) -> None:
    """Epoch seconds, milliseconds, numeric strings and ISO-8601 with offset all decode."""
    reading = decode(native(SMOKE)[0], orjson.dumps({"id": SMOKE.id, "ts": stamp,
                                                     "alarm": False}), received_at=1795395700)
    assert reading.ts == pytest.approx(1795395600.0)


# -- properties ----------------------------------------------------------------------------

TOPICS = st.sampled_from([
    native(SMOKE)[0], f"zigbee2mqtt/{Z2M_GAS.id}", f"esphome/{ESP.id}/sensor/pipe_pressure/state",
    tts(TANK, {})[0], "sentinel/v1/x/telemetry", "v3/a/devices/b/up", "zigbee2mqtt/bridge",
]) | st.text(max_size=40)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(topic=TOPICS, payload=st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_the_decoder(topic: str, payload: bytes) -> None:
    """Any bytes on any topic either decode or raise DecodeError — nothing else."""
    try:
        reading = decode(topic, payload)
    except DecodeError:
        return
    for value in reading.values.values():
        assert not (isinstance(value, float) and not math.isfinite(value))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.dictionaries(st.sampled_from(
    ["alarm", "battery", "tamper", "ts", "id", "gas", "pressure", "level", "steps", "position"]),
    JSON_VALUES, max_size=6))
def test_structured_garbage_never_escapes_the_decoder(fields: dict[str, Any]) -> None:
    """Well-formed JSON with arbitrary values under known keys is decoded or rejected."""
    for device in (SMOKE, _first("elderly_watch", "sentinel-json")):
        with contextlib.suppress(DecodeError):
            decode(f"sentinel/v1/{device.id}/telemetry", json.dumps(fields).encode())


def _value_strategy(kind: str, name: str, device: Device) -> st.SearchStrategy[Any]:
    spec = LOADED.kinds[kind].fields[name]
    if spec.type == "bool":
        return st.booleans()
    if spec.type == "string":
        return st.sampled_from(spec.choices or ("x",))
    lo = spec.min if spec.min is not None else -1e6
    hi = spec.max if spec.max is not None else 1e6
    if spec.max_setting is not None:
        cap = device.settings.number(spec.max_setting)
        hi = min(hi, cap) if cap is not None else hi
    if name == "level_percent":
        return st.nothing()  # derived from the level by the profile, not sent on its own
    if spec.type == "integer":
        return st.integers(int(lo), int(min(hi, 1e6)))
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _profile_cases() -> list[tuple[str, Device]]:
    cases: dict[tuple[str, str], Device] = {}
    for device in LOADED.inventory.values():
        cases.setdefault((device.profile, device.kind), device)
    return [(f"{p}-{k}", d) for (p, k), d in sorted(cases.items())]


@pytest.mark.parametrize(("case", "device"), _profile_cases(), ids=[c for c, _ in _profile_cases()])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_shipped_profile_round_trips(case: str, device: Device, data: st.DataObject) -> None:
    """Canonical values encoded in a profile's vendor format decode back to the same values."""
    profile = LOADED.profiles[device.profile]
    names = [n for n in profile.fields_for(device.kind)
             if n in LOADED.kinds[device.kind].fields and n != "level_percent"]
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    values = {n: data.draw(_value_strategy(device.kind, n, device)) for n in chosen}
    ts = round(NOW - data.draw(st.integers(0, 86400)), 3)
    decoded: dict[str, Any] = {}
    for topic, payload in encode(profile, device, values, ts, LOADED.kinds):
        reading = decode(topic, payload)
        assert reading.device_id == device.id
        decoded.update(reading.values)
        if profile.timestamp is not None and profile.timestamp.format != "iso8601":
            assert reading.ts == pytest.approx(ts, abs=1e-3)
    for name, value in values.items():
        if isinstance(value, float):
            assert decoded[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
        else:
            assert decoded[name] == value, name


def test_inventory_file_is_the_shipped_one() -> None:
    """The tests decode against the shipped Shuibei inventory (1005 devices)."""
    assert len(LOADED.inventory) == 1005
    assert Path(LOADED.settings.devices.inventory[0]).name == "shuibei.csv"
