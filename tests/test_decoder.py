"""Decoding: every reject reason, unit conversion, and properties of the shipped profiles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import textwrap
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sentinel.config.inventory import Device, DeviceRecord, Inventory
from sentinel.config.profiles import DeviceIdSpec, ProfileSpec
from sentinel.config.yamlfile import parse_yaml
from sentinel.decode import Decoder
from sentinel.decode.checks import profile_problems
from sentinel.decode.decoder import MAX_ITEM_REJECTS, ItemsRejected, NoValue, parse_timestamp
from sentinel.decode.encode import encode
from sentinel.errors import DecodeError
from sentinel.ingest import Ingestor
from sentinel.kinds import BUILTIN_KINDS, FieldSpec, KindRegistry, KindSpec
from sentinel.loading import Loaded, load_all
from sentinel.types import DeadLetter, RawMessage, Reading, Receipt, RejectReason

from helpers import SHIPPED_CONFIG, CountingSource

R = RejectReason

LOADED: Loaded = load_all(SHIPPED_CONFIG, {})
DECODER = Decoder(LOADED.profiles, LOADED.inventory, LOADED.kinds, LOADED.settings.ingest)
NOW = time.time()


def _first(kind: str, profile: str) -> Device:
    return next(d for d in LOADED.inventory.values() if d.kind == kind and d.profile == profile)


SMOKE = _first("smoke", "sentinel-json")
TANK = _first("water_level", "lorawan-tts")
ESP = _first("hydrant_pressure", "esphome")
Z2M_GAS = _first("gas", "zigbee2mqtt")


def decode_all(topic: str, payload: bytes | str, received_at: float = NOW,
               decoder: Decoder = DECODER) -> list[Reading]:
    data = payload.encode() if isinstance(payload, str) else payload
    return decoder.decode(RawMessage(topic, data, 1, False, received_at))


def decode(topic: str, payload: bytes | str, received_at: float = NOW,
           decoder: Decoder = DECODER) -> Reading:
    """The one reading a message carries."""
    reading, = decode_all(topic, payload, received_at, decoder)
    return reading


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
    ("number as text without from_text", native(SMOKE, battery="87"), RejectReason.WRONG_TYPE),
    ("NaN as a string", native(SMOKE, battery="NaN"), RejectReason.WRONG_TYPE),
    ("Infinity literal", (native(SMOKE)[0], b'{"id":"%s","battery":Infinity}' % SMOKE.id.encode()),
     RejectReason.INVALID_JSON),
    ("number beyond double",
     (native(SMOKE)[0], b'{"id":"%s","battery":1e400}' % SMOKE.id.encode()),
     RejectReason.INVALID_JSON),
    ("duplicate key",
     (native(SMOKE)[0], b'{"id":"%s","alarm":false,"id":"SB-SMK-0002"}' % SMOKE.id.encode()),
     RejectReason.DUPLICATE_KEY),
    ("duplicate key deep inside",
     (native(SMOKE)[0], b'{"id":"%s","gas":{"lel":1, "lel" :2}}' % SMOKE.id.encode()),
     RejectReason.DUPLICATE_KEY),
    ("number that underflows to 0",
     (native(SMOKE)[0], b'{"id":"%s","battery":1e-400}' % SMOKE.id.encode()),
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
    """Any bytes on any topic either decode (a reading, or none on an excluded topic) or
    raise DecodeError — nothing else."""
    try:
        readings = decode_all(topic, payload)
    except DecodeError:
        return
    assert len(readings) <= 1
    for reading in readings:
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
    fields = LOADED.kinds.compiled(device.kind)
    for name, value in values.items():
        if isinstance(value, float):
            precision = fields[name].precision  # stored values keep the field's decimals
            want = value if precision is None else round(value, precision)
            assert decoded[name] == pytest.approx(want, rel=1e-9, abs=1e-9), name
        else:
            assert decoded[name] == value, name


def test_inventory_file_is_the_shipped_one() -> None:
    """The tests decode against the shipped Shuibei inventory (1005 devices)."""
    assert len(LOADED.inventory) == 1005
    assert Path(LOADED.settings.devices.inventory[0]).name == "shuibei.csv"


# -- the profile language of issue 15 ---------------------------------------------------------
# A small world of its own: profiles written here, devices with aliases and several profiles,
# and a kind whose fields carry precision.

LAB_KINDS = KindRegistry([*BUILTIN_KINDS, KindSpec(name="lab_gauge", fields={
    "pressure": FieldSpec(type="number", unit="MPa", min=0, max=10, precision=4),
    "level": FieldSpec(type="number", unit="m", min=0, max=100, precision=3),
    "battery": FieldSpec(type="number", unit="%", min=0, max=100, precision=1),
    "battery_voltage": FieldSpec(type="number", unit="V", min=0, max=60, precision=3),
    "mode": FieldSpec(type="string", choices=("auto", "manual", "unknown")),
    "label": FieldSpec(type="string"),
    "ok": FieldSpec(type="bool"),
    "count": FieldSpec(type="integer", unit="1", min=0),
})])

LAB_PROFILES = {
    # Zigbee2MQTT-like: names with slashes, the bridge's topics excluded, aliases.
    "bridge": """
        name: bridge
        match: ["zb/#"]
        exclude: ["zb/bridge/#", "zb/+/action", "zb/+/+/+/action"]
        device_id: {topic_segments: "1:"}
        fields:
          ok: {path: ok, absent: ["", "unknown", "N/A"]}
          battery: {path: battery, unit: "%", absent: [-1, 255]}
          mode: {path: mode, map: {A: auto, M: manual}, default: unknown}
          label: {path: label, default: other, map: {x: ex}}
          battery_voltage: {path: voltage, unit: V, from_text: true}
          level: {path: level, unit: mm, from_text: true}
          pressure: {path: pressure, unit: bar}
          count: {path: count}
        """,
    "action": """
        name: action
        match: ["zb/+/action", "zb/+/+/+/action"]
        format: value
        device_id: {topic_segments: "1:-1"}
        fields:
          ok: {true_values: [emergency], absent: [""]}
        """,
    # A gateway batch keyed by device name, with the batch's time at the root.
    "keyed": """
        name: keyed
        match: ["gw/+/up"]
        each: "LwDecoded.*"
        device_id: {path: "@key"}
        timestamp: {path: "$.ts", format: epoch_s}
        fields:
          pressure: {path: p, unit: kPa}
          ok: {path: ok}
        """,
    # A batch as a list, each item with its own id and (optional) time; the topic's last
    # level names the gateway, not a device.
    "listed": """
        name: listed
        match: ["gwl/+/-/batch"]
        each: "devices"
        device_id: {path: id, prefix: "LAB-", case: upper}
        timestamp: {path: t, format: epoch_s}
        fields:
          level: {path: v, unit: m}
          count: {path: "$.seq"}
        """,
    # Levels counted from the end: gw2/<site>/<id>/<quantity>.
    "tail": """
        name: tail
        match: ["gw2/#"]
        format: value
        device_id: {topic_segment: -2}
        quantity_segment: -1
        fields:
          pressure: {quantity: p, unit: bar}
          battery_voltage: {quantity: v, unit: V, from_text: true}
        """,
}

LAB_DEVICES = [
    {"id": "LAB-G1", "profile": "bridge|action", "aliases": ["1栋/3楼/烟感", "Smoke RIGHT"]},
    {"id": "LAB-G2", "profile": ["bridge"]},
    {"id": "LAB-G3", "profile": "keyed", "aliases": ["0x4EA0"]},
    {"id": "LAB-G4", "profile": "keyed", "aliases": ["0x4EA1"]},
    {"id": "LAB-L1", "profile": "listed"},
    {"id": "LAB-L2", "profile": "listed"},
    {"id": "LAB-T1", "profile": "tail"},
]


def _lab_decoder() -> tuple[Decoder, dict[str, ProfileSpec], Inventory]:
    profiles = {name: ProfileSpec.model_validate(parse_yaml(textwrap.dedent(text)))
                for name, text in LAB_PROFILES.items()}
    devices = [DeviceRecord.model_validate({"kind": "lab_gauge", "community": "c",
                                            "compound": "x", "grid": "g", **d}).device()
               for d in LAB_DEVICES]
    inventory = Inventory(devices)
    return (Decoder(profiles, inventory, LAB_KINDS, LOADED.settings.ingest), profiles,
            inventory)


LAB, LAB_SPECS, LAB_INVENTORY = _lab_decoder()


def lab(topic: str, payload: bytes | str | dict[str, Any], received_at: float = NOW
        ) -> list[Reading]:
    data = orjson.dumps(payload) if isinstance(payload, dict) else payload
    return decode_all(topic, data, received_at, LAB)


def lab_one(topic: str, payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    reading, = lab(topic, payload)
    return dict(reading.values)


def lab_reason(topic: str, payload: bytes | str | dict[str, Any]) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        lab(topic, payload)
    return info.value


def test_excluded_topics_are_ignored_not_dead_lettered() -> None:
    """A topic that only excluding profiles match yields no reading and no error; a topic
    no profile matches is still no_profile."""
    assert lab("zb/bridge/state", b'{"state": "online"}') == []
    assert lab("zb/bridge/devices", b"[]") == []
    assert lab_reason("elsewhere/x", b"{}").reason is R.NO_PROFILE


def test_slash_names_and_aliases_find_the_device() -> None:
    """topic_segments "1:" joins the levels of a friendly name; the alias table is looked
    up first, exactly (spaces, slashes and Chinese), then the id."""
    reading, = lab("zb/1栋/3楼/烟感", {"ok": True})
    assert reading.device_id == "LAB-G1" and reading.values == {"ok": True}
    assert lab("zb/Smoke RIGHT", {"ok": False})[0].device_id == "LAB-G1"
    assert lab("zb/LAB-G1", {"ok": False})[0].device_id == "LAB-G1"
    assert lab_reason("zb/smoke right", {"ok": False}).reason is R.UNKNOWN_DEVICE


def test_a_device_speaks_each_of_its_profiles() -> None:
    """A device listing two profiles decodes on both; a device of one profile on the other
    profile's topic is profile_mismatch."""
    assert lab("zb/1栋/3楼/烟感/action", b"emergency")[0].values == {"ok": True}
    assert lab("zb/Smoke RIGHT/action", b"emergency")[0].device_id == "LAB-G1"
    error = lab_reason("zb/LAB-G2/action", b"emergency")
    assert error.reason is R.PROFILE_MISMATCH and error.device_id == "LAB-G2"
    assert '"bridge"' in error.detail and '"action"' in error.detail


def test_levels_counted_from_the_end() -> None:
    """Negative topic_segment and quantity_segment count from the last level."""
    assert lab_one("gw2/site-9/LAB-T1/p", b"3.5") == {"pressure": pytest.approx(0.35)}
    assert lab_one("gw2/a/b/LAB-T1/v", b"3305 mV") == {"battery_voltage": 3.305}
    assert lab_reason("gw2/LAB-T1/x", b"1").reason is R.MISSING_FIELD


def test_absent_words_drop_the_field_and_keep_the_message() -> None:
    """Vendor words for "no value" (any case, numbers too) leave the field out; the rest
    of the message is kept. A message of nothing but absent values says its device has no
    value now (NoValue: acknowledged, nothing stored, nothing dead-lettered); a message
    with no field at all is still missing_field."""
    for word in ("", "unknown", "UNKNOWN", " N/A "):
        assert lab_one("zb/LAB-G2", {"ok": word, "battery": 80}) == {"battery": 80.0}
    assert lab_one("zb/LAB-G2", {"ok": True, "battery": 255}) == {"ok": True}
    assert lab_one("zb/LAB-G2", {"ok": True, "battery": -1.0}) == {"ok": True}
    for topic, payload in (("zb/LAB-G2", {"ok": "n/a", "battery": 255}),
                           ("zb/LAB-G1/action", b" ")):
        with pytest.raises(NoValue) as info:
            lab(topic, payload)
        assert info.value.device_id in ("LAB-G1", "LAB-G2")
    assert lab_reason("zb/LAB-G2", {"other": 1}).reason is R.MISSING_FIELD


def test_enum_default_replaces_unknown_words() -> None:
    """A word neither mapped nor a choice becomes `default`; mapped words and valid choices
    stay; without choices every unmapped word becomes the default."""
    assert lab_one("zb/LAB-G2", {"mode": "A"}) == {"mode": "auto"}
    assert lab_one("zb/LAB-G2", {"mode": "manual"}) == {"mode": "manual"}
    assert lab_one("zb/LAB-G2", {"mode": "eco"}) == {"mode": "unknown"}
    assert lab_one("zb/LAB-G2", {"mode": ""}) == {"mode": "unknown"}
    assert lab_one("zb/LAB-G2", {"label": "x"}) == {"label": "ex"}
    assert lab_one("zb/LAB-G2", {"label": "水贝"}) == {"label": "other"}


@pytest.mark.parametrize(("text", "volts"), [
    ("3.305 V", 3.305), ("3.305V", 3.305), ("3305 mV", 3.305), ("  3.3  ", 3.3),
    ("-0 V", 0.0), ("1e-3 V", 0.001),
])
def test_numbers_with_units_in_text(text: str, volts: float) -> None:
    """from_text reads a number with an optional unit; the text's unit converts to the
    canonical unit, and a text without one uses the mapping's `unit`."""
    assert lab_one("zb/LAB-G2", {"voltage": text}) == {"battery_voltage": volts}


def test_level_in_millimetres_text() -> None:
    assert lab_one("zb/LAB-G2", {"level": "1234 mm"}) == {"level": 1.234}
    assert lab_one("zb/LAB-G2", {"level": "1234"}) == {"level": 1.234}  # the mapping's mm
    assert lab_one("zb/LAB-G2", {"level": "1.5 m"}) == {"level": 1.5}


@pytest.mark.parametrize(("payload", "words"), [
    ({"voltage": "3.3 bar"}, ['"bar"', "does not convert to V"]),
    ({"voltage": "3.3 apples"}, ['"apples"']),
    ({"voltage": "１.５"}, ["non-ASCII digits"]),
    ({"voltage": "٣"}, ["non-ASCII digits"]),
    ({"voltage": "1_0 V"}, []),
    ({"voltage": "inf"}, []),
    ({"voltage": "0x1F"}, ["decimal"]),
    ({"pressure": "3.5"}, ['"3.5" is text', "from_text"]),
    ({"count": "12"}, ['"12" is text', "from_text"]),
    ({"ok": ""}, []),  # absent here: covered above; a word that is not one is below
    ({"ok": "maybe"}, ['ok: "maybe" is not a boolean']),
    ({"mode": 3.5}, ["expected text"]),
])
def test_text_that_is_not_a_number_is_wrong_type(payload: dict[str, Any],
                                                  words: list[str]) -> None:
    """Strict grammar: ASCII digits only, no underscores, inf, nan or hex; text in a numeric
    field without from_text is wrong_type with a detail naming from_text."""
    if payload == {"ok": ""}:
        return
    error = lab_reason("zb/LAB-G2", payload)
    assert error.reason is R.WRONG_TYPE, error.detail
    for word in words:
        assert word in error.detail, error.detail


def test_details_quote_values_visibly() -> None:
    """An empty text shows as "" in a dead letter's detail."""
    with pytest.raises(DecodeError) as info:
        decode(*native(_first("elderly_watch", "sentinel-json"), sos=""))
    error = info.value
    assert error.reason is R.WRONG_TYPE
    assert error.detail == 'sos: "" is not a boolean'


def test_values_are_rounded_to_the_field_precision() -> None:
    """Conversions leave float noise; stored values keep the field's decimals."""
    assert lab_one("zb/LAB-G2", {"pressure": 3.2}) == {"pressure": 0.32}  # 0.32000000000000006
    assert lab_one("zb/LAB-G2", {"battery": 33.333333}) == {"battery": 33.3}
    assert lab_one("zb/LAB-G2", {"voltage": 3.30549}) == {"battery_voltage": 3.305}
    assert lab_one("zb/LAB-G2", {"battery": 100.04}) == {"battery": 100.0}  # then in range
    assert math.copysign(1.0, lab_one("zb/LAB-G2", {"battery": -0.01})["battery"]) == 1.0


def test_keyed_batch_yields_one_reading_per_member() -> None:
    """`LwDecoded.*` with `device_id.path: "@key"`: each member is a device's reading,
    stamped with the batch's time at the root (`$.ts`)."""
    ts = round(NOW) - 60
    readings = lab("gw/gw-1/up", {"ts": ts, "LwDecoded": {
        "0x4EA0": {"p": 350, "ok": True}, "0x4EA1": {"p": 120}}})
    assert [(r.device_id, dict(r.values), r.ts) for r in readings] == [
        ("LAB-G3", {"pressure": 0.35, "ok": True}, ts),
        ("LAB-G4", {"pressure": 0.12}, ts)]


def test_a_bad_item_is_refused_alone() -> None:
    """An item that fails is refused with its own reason and device; the others are kept."""
    with pytest.raises(ItemsRejected) as info:
        lab("gw/gw-1/up", {"ts": round(NOW), "LwDecoded": {
            "0x4EA0": {"p": -5}, "0x9999": {"p": 1}, "0x4EA1": {"p": 100, "ok": "x"},
            "bad": [1, 2]}})
    rejected = info.value
    assert rejected.readings == []
    assert [(e.reason, e.device_id) for e in rejected.errors] == [
        (R.IMPOSSIBLE_VALUE, "LAB-G3"), (R.UNKNOWN_DEVICE, None), (R.WRONG_TYPE, "LAB-G4"),
        (R.UNKNOWN_DEVICE, None)]
    with pytest.raises(ItemsRejected) as info:
        lab("gwl/gw-7/-/batch", {"seq": 3, "devices": [
            {"id": "l1", "v": 1.5}, {"id": "l2", "v": "x"}, {"v": 2}]})
    kept, = info.value.readings
    assert kept.device_id == "LAB-L1" and kept.values == {"level": 1.5, "count": 3}
    assert [e.reason for e in info.value.errors] == [R.WRONG_TYPE, R.MISSING_DEVICE_ID]


def test_a_batch_without_items_is_missing_field() -> None:
    for body in ({"devices": []}, {"devices": None}, {"other": 1}):
        assert lab_reason("gwl/gw-7/-/batch", body).reason is R.MISSING_FIELD
    assert lab_reason("gw/gw-1/up", {"LwDecoded": {}}).reason is R.MISSING_FIELD


def test_untimed_readings_of_one_device_never_share_a_time() -> None:
    """Several readings of one device in one message without a device time: the decoder
    marks them untimed, and the ingest stage gives each its own millisecond, in message
    order; a reading with its device time keeps it."""
    readings = lab("gwl/gw-7/-/batch", {"devices": [
        {"id": "l1", "v": 1.0}, {"id": "l2", "v": 2.0}, {"id": "l1", "v": 1.1},
        {"id": "l1", "v": 1.2, "t": round(NOW) - 5}, {"id": "l1", "v": 1.3}]})
    assert [(r.device_id, r.ts, r.timed) for r in readings] == [
        ("LAB-L1", NOW, False), ("LAB-L2", NOW, False), ("LAB-L1", NOW, False),
        ("LAB-L1", round(NOW) - 5, True), ("LAB-L1", NOW, False)]
    sink = _Sink()
    ingestor = Ingestor(CountingSource(), LAB, sink, batch_max=10)
    payload = orjson.dumps({"devices": [{"id": "l1", "v": v / 10} for v in range(20)]})
    asyncio.run(ingestor.process([RawMessage("gwl/gw-7/-/batch", payload, 1, False, NOW)]))
    stamps = [r.ts_ms for r in sink.readings]
    assert len(stamps) == 20 and stamps == sorted(set(stamps))
    assert [r.values["level"] for r in sink.readings] == [v / 10 for v in range(20)]


def test_a_flood_of_bad_items_is_dead_lettered_at_most_fifty_times() -> None:
    """A 64 KiB batch of empty items must not become 20,000 dead letters."""
    with pytest.raises(ItemsRejected) as info:
        lab("gwl/gw-7/-/batch", orjson.dumps({"devices": [{}] * 5000}))
    errors = info.value.errors
    assert len(errors) == MAX_ITEM_REJECTS
    assert "and 4950 more refused items" in errors[-1].detail


def test_topic_and_payload_names_of_one_device_agree() -> None:
    """An alias on the topic and the id in the payload name one device: no mismatch."""
    profiles = dict(LAB_SPECS)
    profiles["bridge"] = profiles["bridge"].model_copy(update={
        "device_id": DeviceIdSpec(topic_segments="1:", path="id")})
    decoder = Decoder(profiles, LAB_INVENTORY, LAB_KINDS, LOADED.settings.ingest)
    reading = decode("zb/Smoke RIGHT", orjson.dumps({"id": "LAB-G1", "ok": True}),
                     decoder=decoder)
    assert reading.device_id == "LAB-G1"
    with pytest.raises(DecodeError) as info:
        decode("zb/Smoke RIGHT", orjson.dumps({"id": "LAB-G2", "ok": True}), decoder=decoder)
    assert info.value.reason is R.DEVICE_MISMATCH and info.value.device_id == "LAB-G1"


def test_timestamps_follow_the_strict_grammar() -> None:
    """Numeric text times: ASCII digits only (full-width digits are no time)."""
    assert parse_timestamp("1795395600", "auto", None) == 1795395600.0
    assert parse_timestamp(" 1795395600000 ", "epoch_ms", None) == 1795395600.0
    for text in ("１７９５３９５６００", "1_795_395_600", "0x6B0D6A10", "inf",
                 "2026-11-23T09:00:00+08:00"):
        assert parse_timestamp(text, "epoch_s", None) is None
    assert parse_timestamp("２０２６-11-23T09:00:00+08:00", "auto", None) is None


@pytest.mark.parametrize(("profile", "problem"), [
    ("match: [a/+]\ndevice_id: {path: '@key'}\nfields: {alarm: {path: x}}",
     "@key needs `each` with a `*`"),
    ("match: [a/+]\neach: items\ndevice_id: {path: '@key'}\nfields: {alarm: {path: x}}",
     "this profile's `each` has no `*`"),
    ("match: [a/+]\ndevice_id: {topic_segment: 1}\nfields: {alarm: {path: 'x.*'}}",
     "use `each`"),
    ("match: [a/+]\ndevice_id: {topic_segment: 1}\nfields: {alarm: {path: 'a[x=1][y=2]'}}",
     "use a[x=1,y=2]"),
    ("match: [a/+]\nexclude: [b/#]\ndevice_id: {topic_segment: 1}\nfields: {alarm: {path: x}}",
     "excludes no topic"),
    ("match: [a/+]\nexclude: ['a/#']\ndevice_id: {topic_segment: 1}\n"
     "fields: {alarm: {path: x}}", "never takes a message"),
    ("match: [a/+]\ndevice_id: {topic_segment: 1}\nfields: {alarm: {path: x, from_text: true}}",
     "from_text applies to numeric fields"),
    ("match: [a/+]\ndevice_id: {topic_segment: 1}\n"
     "fields: {gas_type: {path: x, default: XX}}", "default 'XX' is not one of"),
    ("match: [a/+]\ndevice_id: {topic_segment: 1}\nfields: {alarm: {path: x, default: 'on'}}",
     "default applies to string fields"),
])
def test_check_refuses_what_never_matches(profile: str, problem: str) -> None:
    """Paths that never match and keys that cannot apply are check errors."""
    spec = ProfileSpec.model_validate({"name": "p", **parse_yaml(profile)})
    found = profile_problems(spec, LOADED.kinds)
    assert any(problem in text for _, text in found), found


@pytest.mark.parametrize(("profile", "problem"), [
    ("match: [a/+]\ndevice_id: {topic_segment: 2}\nfields: {alarm: {path: x}}",
     "topic level 2 does not exist"),
    ("match: [a/+]\ndevice_id: {topic_segment: -3}\nfields: {alarm: {path: x}}",
     "topic level -3 does not exist"),
    ("match: ['a/#']\ndevice_id: {topic_segment: 1}\nfields: {alarm: {path: x}}",
     "topic level 1 does not exist"),
    ("match: [a/+]\ndevice_id: {topic_segments: '2:'}\nfields: {alarm: {path: x}}",
     "selects no level"),
    ("match: [a/+]\ndevice_id: {topic_segments: '1'}\nfields: {alarm: {path: x}}",
     "should match pattern"),
    ("match: [a/+]\ndevice_id: {topic_segment: 1, topic_segments: '1:'}\n"
     "fields: {alarm: {path: x}}", "not both"),
    ("match: [a/+]\nformat: value\neach: x\ndevice_id: {topic_segment: 1}\n"
     "fields: {alarm: {}}", "JSON profiles only"),
    ("match: ['a/+/+']\nformat: value\ndevice_id: {topic_segment: 1}\n"
     "fields: {alarm: {}, battery: {}}", "unless it maps one field"),
])
def test_profile_model_refuses_impossible_levels(profile: str, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        ProfileSpec.model_validate({"name": "p", **parse_yaml(profile)})
    assert problem in str(info.value)


def test_shipped_zigbee2mqtt_profiles() -> None:
    """zigbee2mqtt takes names with slashes and ignores the bridge's topics and a device's
    other topics; zigbee2mqtt-action reads an SOS button's presses."""
    profiles = {n: LOADED.profiles[n] for n in ("zigbee2mqtt", "zigbee2mqtt-action")}
    smoke = DeviceRecord.model_validate({
        "id": "Z-SMK-1", "kind": "smoke", "community": "c", "compound": "x", "grid": "g",
        "profile": "zigbee2mqtt", "aliases": "1栋/3楼/烟感"}).device()
    button = DeviceRecord.model_validate({
        "id": "Z-SOS-1", "kind": "help_button", "community": "c", "compound": "x",
        "grid": "g", "profile": "zigbee2mqtt|zigbee2mqtt-action",
        "aliases": ["Smoke RIGHT"]}).device()
    decoder = Decoder(profiles, Inventory([smoke, button]), LOADED.kinds, LOADED.settings.ingest)
    reading = decode("zigbee2mqtt/1栋/3楼/烟感",
                     b'{"smoke": true, "battery": 83, "battery_low": false}', decoder=decoder)
    assert reading.device_id == "Z-SMK-1"
    assert reading.values == {"alarm": True, "battery": 83, "battery_low": False}
    state = decode("zigbee2mqtt/Smoke RIGHT", b'{"action": "", "battery": 100}',
                   decoder=decoder)
    assert state.device_id == "Z-SOS-1" and state.values == {"battery": 100}
    state = decode("zigbee2mqtt/Smoke RIGHT", b'{"action": "emergency", "battery": 100}',
                   decoder=decoder)
    assert state.values == {"help": True, "battery": 100}
    for topic in ("zigbee2mqtt/bridge/state", "zigbee2mqtt/bridge/devices",
                  "zigbee2mqtt/1栋/3楼/烟感/availability", "zigbee2mqtt/Smoke RIGHT/set"):
        assert decode_all(topic, b'{"state": "online"}', decoder=decoder) == []
    press = decode("zigbee2mqtt/Smoke RIGHT/action", b"emergency", decoder=decoder)
    assert press.device_id == "Z-SOS-1" and press.values == {"help": True}
    with pytest.raises(DecodeError) as info:
        decode("zigbee2mqtt/Smoke RIGHT/action", b"single", decoder=decoder)
    assert info.value.reason is R.WRONG_TYPE


@pytest.mark.parametrize(("device_id", "profile", "values", "topic"), [
    ("LAB-G1", "bridge", {"ok": True, "battery": 50.5}, "zb/1栋/3楼/烟感"),
    ("LAB-G1", "action", {"ok": True}, "zb/1栋/3楼/烟感/action"),
    ("LAB-G3", "keyed", {"pressure": 0.35, "ok": False}, "gw/+/up"),
    ("LAB-L1", "listed", {"level": 1.25, "count": 7}, "gwl/+/-/batch"),
    ("LAB-T1", "tail", {"pressure": 0.35, "battery_voltage": 3.3}, "gw2/s/{device_id}/{quantity}"),
])
def test_the_simulator_encodes_the_new_keys(device_id: str, profile: str,
                                            values: dict[str, Any], topic: str | None) -> None:
    """What the simulator publishes for aliases, slices, batches, `$.` and `@key` decodes
    back to the same device and values."""
    spec = LAB_SPECS[profile]
    if topic is not None and ("+" in topic or "{" in topic):
        spec = spec.model_copy(update={"publish_topic": topic.replace("+", "gw-1")})
    device = LAB_INVENTORY[device_id]
    messages = encode(spec, device, values, round(NOW) - 10, LAB_KINDS)
    assert messages
    decoded: dict[str, Any] = {}
    for topic_sent, payload in messages:
        if topic is not None and spec.publish_topic is None:
            assert topic_sent == topic
        reading, = lab(topic_sent, payload)
        assert reading.device_id == device_id
        decoded.update(reading.values)
    assert decoded == values


class _Sink:
    """ReadingSink keeping what it is given."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.dead: list[DeadLetter] = []

    async def write(self, readings: Sequence[Reading], dead: Sequence[DeadLetter],
                    receipts: Sequence[Receipt] = ()) -> None:
        self.readings += readings
        self.dead += dead

    async def run(self) -> None:
        pass

    def health(self) -> dict[str, object]:
        return {}


def test_ingest_keeps_a_batch_and_dead_letters_each_refused_item() -> None:
    """Through the ingest stage: a batch's good items are stored, each refused item is a
    dead letter of its own (reason, device, the message's payload), an excluded topic is
    counted as ignored and neither stored nor dead-lettered."""
    source, sink = CountingSource(), _Sink()
    ingestor = Ingestor(source, LAB, sink, batch_max=10)
    batch = orjson.dumps({"ts": round(NOW), "LwDecoded": {
        "0x4EA0": {"p": 350}, "0x4EA1": {"p": -1}, "nobody": {"p": 1}}})
    messages = [RawMessage("gw/gw-1/up", batch, 1, False, NOW),
                RawMessage("zb/bridge/state", b"online", 1, False, NOW),
                RawMessage("zb/LAB-G2", b'{"ok": true}', 1, False, NOW)]
    asyncio.run(ingestor.process(messages))
    assert [(r.device_id, dict(r.values)) for r in sink.readings] == [
        ("LAB-G3", {"pressure": 0.35}), ("LAB-G2", {"ok": True})]
    assert [(d.reason, d.device_id, d.payload is batch) for d in sink.dead] == [
        (R.IMPOSSIBLE_VALUE, "LAB-G4", True), (R.UNKNOWN_DEVICE, None, True)]
    stats = ingestor.stats
    assert (stats.received, stats.stored, stats.ignored_topic) == (3, 2, 1)
    assert stats.rejected == {"impossible_value": 1, "unknown_device": 1}
    assert source.acked == 3


def test_only_profiles_a_device_speaks_are_subscribed_and_tried() -> None:
    """The shipped vendor profiles that no device of the inventory names (they are proven
    on devices/examples) neither widen the subscription nor read any message."""
    decoder = Decoder(LOADED.profiles, LOADED.inventory, LOADED.kinds, LOADED.settings.ingest)
    used = {p for d in LOADED.inventory.values() for p in d.profiles}
    assert {"tasmota-zigbee", "traccar", "chirpstack-milesight"}.isdisjoint(used)
    assert set(decoder.topic_filters()) == {
        f for name in used for f in LOADED.profiles[name].match}
    assert "tele/+/SENSOR" not in decoder.topic_filters()
    with pytest.raises(DecodeError) as info:
        decoder.decode(RawMessage("tele/tasmota_zigbee/SENSOR", b'{"ZbReceived": {}}', 1,
                                  False, NOW))
    assert info.value.reason is R.NO_PROFILE
