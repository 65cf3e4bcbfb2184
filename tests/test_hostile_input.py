"""Hostile input end to end: the real daemon on the tests' private Mosquitto.

Retained garbage waiting on subscribed topics before the daemon subscribes, zero-length and
invalid UTF-8 payloads, a payload over 1 MB, JSON nested 10,000 deep, numbers beyond a
double, NaN and Infinity, replayed and future-dated messages, and an exact duplicate of a
stored alarm. What each must become is decided per case below (`CASES`): a dead letter
with its reason, or a reading stored once. Then: the daemon is alive, the dead letters and
the `/metrics` reject counters match the table exactly, each rejection is logged once, the
duplicate neither adds a row nor a second incident, and a normal reading right after is
stored.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.config.inventory import Device
from sentinel.incidents.model import Incident
from sentinel.incidents.store import read_events, read_incidents
from sentinel.types import RejectReason

from daemon import LOADED, DaemonProcess, Publisher, deadletter_counts, stored_keys, wait_until
from servers import Mosquitto

INV = LOADED.inventory
STORED = "stored"  # the expected outcome of a case that must become a reading


def _device(kind: str, profile: str, index: int = 0) -> Device:
    return [d for d in INV.values() if d.kind == kind and d.profile == profile][index]


SMOKE = _device("smoke", "sentinel-json")          # receives most of the garbage
ALARMING = _device("smoke", "sentinel-json", 1)    # its alarm is stored, then duplicated
LATE = _device("smoke", "sentinel-json", 2)        # a normal reading after everything
Z2M = _device("gas", "zigbee2mqtt")
ESP = _device("hydrant_pressure", "esphome")
NATIVE = f"sentinel/v1/{SMOKE.id}/telemetry"
ESP_PRESSURE = f"esphome/{ESP.id}/sensor/pipe_pressure/state"
DAY = 86400.0


def native(body: bytes, device: Device = SMOKE) -> bytes:
    return b'{"id":"%s",%s}' % (device.id.encode(), body)


def stamped(ts: float, device: Device = SMOKE, **values: object) -> bytes:
    return orjson.dumps({"id": device.id, "ts": round(ts * 1000), **values})


@dataclass(frozen=True)
class Case:
    name: str
    topic: str
    payload: bytes
    expect: str  # a RejectReason value, or STORED
    why: str


# Published (retained) before the daemon first subscribes: the broker hands them to its new
# subscription. A bridge's status on a device-shaped topic names no device; binary junk is
# not UTF-8.
RETAINED = [
    Case("retained bridge status", "zigbee2mqtt/bridge", b'{"state":"online"}',
         RejectReason.UNKNOWN_DEVICE, "`bridge` is not in the inventory"),
    Case("retained binary junk", NATIVE, b"\x00\xff\xfe\x80junk\x00",
         RejectReason.INVALID_ENCODING, "not UTF-8"),
    Case("retained junk on a plain-value topic", ESP_PRESSURE, b"\xfe\xff",
         RejectReason.INVALID_ENCODING, "not UTF-8"),
]


def live_cases(now: float) -> list[Case]:
    """Published while the daemon runs; times relative to `now`."""
    r = RejectReason
    deep = b"[" * 10_000 + b"]" * 10_000
    return [
        Case("zero-length", NATIVE, b"", r.EMPTY_PAYLOAD, "nothing to decode"),
        # Clearing a retained message is a zero-length retained publish; subscribers get it.
        Case("retained message cleared", ESP_PRESSURE, b"", r.EMPTY_PAYLOAD,
             "the broker forwards the deletion"),
        Case("invalid UTF-8 in a JSON string", NATIVE, native(b'"alarm":"\xff\xfe"'),
             r.INVALID_ENCODING, "not UTF-8"),
        Case("invalid UTF-8 plain value", ESP_PRESSURE, b"0.3\xc0\xaf",
             r.INVALID_ENCODING, "an overlong encoding is not UTF-8"),
        Case("1 MB + 1 payload", NATIVE, b'{"x":"' + b"a" * (1024 * 1024 - 7) + b'"}',
             r.PAYLOAD_TOO_LARGE, "over [ingest] max_payload_bytes (64 KiB); not parsed"),
        Case("nesting depth 10,000", NATIVE, deep, r.INVALID_JSON,
             "beyond the parser's depth limit (1,024)"),
        Case("nesting depth 1,000 as the time", NATIVE,
             native(b'"ts":' + b"[" * 1000 + b"]" * 1000 + b',"alarm":false'),
             r.INVALID_TIMESTAMP, "parseable, but not a time"),
        Case("nesting depth 1,000 as a field", NATIVE,
             native(b'"battery":' + b"[" * 1000 + b"]" * 1000), r.WRONG_TYPE,
             "parseable, but not a number"),
        Case("1e400", NATIVE, native(b'"battery":1e400'), r.INVALID_JSON,
             "beyond a double: orjson refuses the document"),
        Case("400-digit integer", NATIVE, native(b'"battery":1' + b"0" * 400), r.INVALID_JSON,
             "beyond a double: orjson refuses the document"),
        Case("1e300", NATIVE, native(b'"battery":1e300'), r.IMPOSSIBLE_VALUE,
             "a double, outside 0-100 %"),
        Case("integer beyond 64 bits", NATIVE, native(b'"battery":%d' % 10 ** 30),
             r.IMPOSSIBLE_VALUE, "read as a double, outside 0-100 %"),
        Case("NaN token", NATIVE, native(b'"battery":NaN'), r.INVALID_JSON, "not JSON"),
        Case("Infinity token", NATIVE, native(b'"battery":-Infinity'), r.INVALID_JSON,
             "not JSON"),
        Case("NaN as text", NATIVE, native(b'"battery":"NaN"'), r.WRONG_TYPE,
             "text in a numeric field the profile does not read from_text"),
        Case("Infinity plain value", ESP_PRESSURE, b"inf", r.WRONG_TYPE,
             "not a number in the strict grammar (no inf, nan)"),
        Case("full-width digits", ESP_PRESSURE, "１.５".encode(), r.WRONG_TYPE,
             "ASCII digits only: １.５ bar is no 0.15 MPa"),
        Case("replayed message, 30 days old", NATIVE,
             stamped(now - 30 * DAY, alarm=True), r.TIMESTAMP_TOO_OLD,
             "older than [ingest] max_age (7 days): no reading, no incident"),
        Case("replayed alarm, 8 days old", f"sentinel/v1/{ALARMING.id}/telemetry",
             stamped(now - 8 * DAY, ALARMING, alarm=True), r.TIMESTAMP_TOO_OLD,
             "older than max_age"),
        Case("dated a year ahead", NATIVE, stamped(now + 365 * DAY, alarm=False),
             r.TIMESTAMP_IN_FUTURE, "beyond [ingest] max_future_skew (300 s)"),
        Case("60,000-character device id", "zigbee2mqtt/" + "x" * 60_000, b'{"gas":false}',
             r.UNKNOWN_DEVICE, "a `+` level may be long; it is no device"),
        Case("JSON that is not an object", NATIVE, b"1e5", r.WRONG_TYPE,
             "a bare number"),
        Case("byte-order mark", f"zigbee2mqtt/{Z2M.id}",
             b'\xef\xbb\xbf{"gas":false,"battery":80}', STORED,
             "valid UTF-8; RFC 8259 lets a parser ignore the mark"),
    ]


def http_get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


def rejected_metric(port: int) -> dict[str, float]:
    text = http_get(port, "/metrics")
    return {s.labels["reason"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "sentinel_messages_rejected_total"}


def received_metric(port: int) -> float:
    text = http_get(port, "/metrics")
    return next(s.value for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "sentinel_messages_received_total")


def rows_for(db: Path, device_id: str) -> list[tuple[int, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT ts_ms, fields FROM readings WHERE device_id = ?",
                                 (device_id,)))
    finally:
        conn.close()


@pytest.fixture
def daemon(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[DaemonProcess]:
    # Retained garbage first: it waits at the broker for the daemon's first subscription.
    pub = Publisher(mosquitto.port, client_id="retained-garbage")
    for case in RETAINED:
        info = pub.client.publish(case.topic, case.payload, qos=1, retain=True)
        info.wait_for_publish(10)
    pub.close()
    d = DaemonProcess(tmp_path / "state", mosquitto.port).start()
    yield d
    d.close()


def test_hostile_input_is_dead_lettered_counted_logged_and_survived(
        daemon: DaemonProcess, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Every hostile case becomes the dead letter its row names (or one reading); counters,
    dead letters and log lines agree; a duplicate alarm adds no row and no incident."""
    db = tmp_path / "state" / "readings.sqlite3"
    incidents_db = tmp_path / "state" / "incidents.sqlite3"
    port = daemon.control_port
    retained_expected = Counter(str(c.expect) for c in RETAINED)
    assert wait_until(lambda: db.exists() and deadletter_counts(db) == retained_expected, 20), \
        deadletter_counts(db) if db.exists() else "no database"

    pub = Publisher(mosquitto.port)
    # A stored alarm, then the very same message again (a redelivery or a replay).
    now = time.time()
    alarm_topic = f"sentinel/v1/{ALARMING.id}/telemetry"
    alarm = stamped(now - 5, ALARMING, alarm=True, battery=90)
    pub.publish(alarm_topic, alarm)
    pub.flush()
    alarm_key = (ALARMING.id, round((now - 5) * 1000))
    assert wait_until(lambda: alarm_key in stored_keys(db), 15)

    def alarm_incidents() -> list[Incident]:
        if not incidents_db.exists():
            return []
        return [i for i in read_incidents(incidents_db)
                if i.name == "smoke_alarm" and i.device_id == ALARMING.id]

    assert wait_until(lambda: len(alarm_incidents()) == 1, 15)
    events_before = len(read_events(incidents_db))

    cases = live_cases(time.time())
    for case in cases:
        if case.name == "retained message cleared":
            pub.client.publish(case.topic, case.payload, qos=1, retain=True).wait_for_publish(10)
        else:
            pub.publish(case.topic, case.payload)
    pub.publish(alarm_topic, alarm)  # the duplicate
    late_ts = time.time() - 1
    pub.publish(f"sentinel/v1/{LATE.id}/telemetry", stamped(late_ts, LATE, alarm=False))
    pub.close()

    # The normal reading after everything is stored (messages are taken in order).
    late_key = (LATE.id, round(late_ts * 1000))
    assert wait_until(lambda: late_key in stored_keys(db), 30), deadletter_counts(db)
    assert daemon.alive

    everything = [*RETAINED, *cases]
    expected = Counter(str(c.expect) for c in everything if c.expect != STORED)
    assert wait_until(lambda: deadletter_counts(db) == expected, 15), (
        deadletter_counts(db), expected)

    # Counters: /metrics reports exactly the dead letters, every other reason at 0.
    metric = rejected_metric(port)
    assert {k: v for k, v in metric.items() if v} == {k: float(v) for k, v in expected.items()}
    assert set(metric) == {r.value for r in RejectReason}
    received = len(everything) + 3  # + the alarm, its duplicate and the late reading
    assert wait_until(lambda: received_metric(port) == received, 10), received_metric(port)

    # The 1 MB payload is kept cut to 4 KiB with its real size.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    size, kept = conn.execute("SELECT payload_size, length(payload) FROM deadletter "
                              "WHERE reason = 'payload_too_large'").fetchone()
    details = dict(conn.execute("SELECT reason, detail FROM deadletter"))
    conn.close()
    assert size > 1024 * 1024 and kept == 4096
    assert all(detail and len(detail) < 400 for detail in details.values())

    # The duplicate: one row, one incident, and nothing new in the incident trail.
    assert len(rows_for(db, ALARMING.id)) == 1
    assert len(alarm_incidents()) == 1
    time.sleep(0.5)
    assert len(read_events(incidents_db)) == events_before
    # The BOM case is a reading.
    assert [json.loads(f) for _, f in rows_for(db, Z2M.id)] == [{"alarm": False,
                                                                 "battery": 80.0}]

    assert daemon.stop() == 0
    events = daemon.log_events()
    logged = Counter(str(e["reason"]) for e in events if e.get("event") == "message_rejected")
    assert logged == expected  # each rejection logged once, with its reason
    assert not [e for e in events if e.get("event") == "decoder_defect"]
    assert not [e for e in events if e.get("level") in ("error", "critical")]


def test_replayed_alarm_after_resolution_opens_no_new_incident(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """An alarm, its all-clear, the incident resolved by hand — then the very same alarm
    message again (a replay within max_age): the same event, no second incident."""
    from helpers import SHIPPED_CONFIG, sentinel

    device = _device("smoke", "sentinel-json", 3)
    topic = f"sentinel/v1/{device.id}/telemetry"
    incidents_db = tmp_path / "state" / "incidents.sqlite3"
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port).start()
    try:
        pub = Publisher(mosquitto.port)
        t0 = time.time() - 60
        alarm = stamped(t0, device, alarm=True)
        pub.publish(topic, alarm)
        pub.publish(topic, stamped(t0 + 10, device, alarm=False))
        pub.flush()

        def mine() -> list[Incident]:
            return [i for i in read_incidents(incidents_db) if i.device_id == device.id] \
                if incidents_db.exists() else []

        assert wait_until(lambda: len(mine()) == 1, 15)
        incident, = mine()
        done = sentinel("resolve", incident.id, "-c", str(SHIPPED_CONFIG), "--outcome",
                        "false_alarm", env=daemon.env)
        assert done.returncode == 0, done.stderr
        pub.publish(topic, alarm)  # the replay
        late_ts = time.time() - 1
        pub.publish(f"sentinel/v1/{LATE.id}/telemetry", stamped(late_ts, LATE, alarm=False))
        pub.close()
        db = tmp_path / "state" / "readings.sqlite3"
        assert wait_until(lambda: (LATE.id, round(late_ts * 1000)) in stored_keys(db), 15)
        time.sleep(0.5)
        assert len(mine()) == 1
    finally:
        daemon.close()


def test_a_message_beyond_the_maximum_packet_size_never_reaches_memory(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """MQTT 5: the daemon tells the broker its Maximum Packet Size; a 17 MiB message is
    dropped by the broker instead of being held whole by the daemon, and the next message
    from the same publisher arrives."""
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port).start()
    try:
        device = _device("smoke", "sentinel-json", 5)
        topic = f"sentinel/v1/{device.id}/telemetry"
        before = received_metric(daemon.control_port)
        pub = Publisher(mosquitto.port, client_id="huge-publisher")
        pub.publish(topic, b"{" + b" " * (17 * 1024 * 1024) + b"}")
        control = stamped(time.time() - 5, device, alarm=False)
        pub.publish(topic, control)
        pub.flush()
        pub.close()
        db = tmp_path / "state" / "readings.sqlite3"
        assert wait_until(lambda: len(rows_for(db, device.id)) == 1, 15)
        time.sleep(0.5)
        assert received_metric(daemon.control_port) == before + 1
    finally:
        daemon.close()
