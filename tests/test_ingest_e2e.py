"""End to end with real parts: mosquitto, the daemon as a process, SQLite and VictoriaMetrics."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import (
    LOADED,
    DaemonProcess,
    Publisher,
    deadletter_counts,
    readings,
    stored_keys,
    wait_until,
)
from helpers import SHIPPED_CONFIG, sentinel
from servers import Mosquitto, VictoriaMetrics

# The spool must carry a whole outage: a minute in the long fault run (FAULTS_SCALE=long,
# outside CI; test_faults.py holds the ten-minute one), long enough in CI for the writer
# to retry several times at its 2 s cap.
# The stream (about 1,000 readings a round at 1,000/s) outlasts the outage.
LONG = os.environ.get("FAULTS_SCALE") == "long"
OUTAGE_S, STREAM_ROUNDS = (60.0, 80) if LONG else (12.0, 25)

KINDS = ("smoke", "gas", "hydrant_pressure", "water_level", "elderly_watch")


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        d.close()


def _vm_keys(victoria: VictoriaMetrics) -> set[tuple[str, int]]:
    victoria.force_flush()
    keys: set[tuple[str, int]] = set()
    for kind in KINDS:
        keys |= victoria.distinct_points(kind)
    return keys


def test_full_inventory_into_sqlite(mosquitto: Mosquitto, tmp_path: Path,
                                    daemon_factory: list[DaemonProcess]) -> None:
    """≥ 10,000 QoS 1 readings from the whole inventory are all stored in SQLite."""
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port).start()
    daemon_factory.append(daemon)
    publisher = Publisher(mosquitto.port)
    publisher.publish_readings(readings(11, time.time() - 3600))
    publisher.close()
    assert len(publisher.ledger) >= 10_000
    db = tmp_path / "state" / "readings.sqlite3"
    assert wait_until(lambda: stored_keys(db) >= publisher.ledger, 60)
    assert stored_keys(db) == publisher.ledger
    assert daemon.stop() == 0
    events = [e["event"] for e in daemon.log_events()]
    assert "daemon_stopped" in events
    assert "message_rejected" not in events


def test_full_inventory_into_victoriametrics(mosquitto: Mosquitto, victoria: VictoriaMetrics,
                                             tmp_path: Path,
                                             daemon_factory: list[DaemonProcess]) -> None:
    """≥ 10,000 readings reach the InfluxDB v2 write API with the right tags and values."""
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port,
                           store__backend="influxdb", store__influxdb__url=victoria.url,
                           store__influxdb__flush_interval="0.2").start()
    daemon_factory.append(daemon)
    publisher = Publisher(mosquitto.port)
    start = time.time() - 3600
    publisher.publish_readings(readings(11, start))
    publisher.close()
    assert len(publisher.ledger) >= 10_000
    assert wait_until(lambda: _vm_keys(victoria) >= publisher.ledger, 90, interval=1.0)
    assert _vm_keys(victoria) == publisher.ledger

    tank = next(d for d in LOADED.inventory.values()
                if d.kind == "water_level" and d.profile == "lorawan-tts")
    series = victoria.export(f'{{__name__="water_level_level",device_id="{tank.id}"}}')
    assert series, "no level series for a LoRaWAN tank"
    labels = series[0]["metric"]
    assert labels["compound"] == tank.compound
    assert labels["grid"] == tank.grid
    assert labels["community"] == "水贝社区"
    assert tank.settings.tank_height_m is not None
    assert series[0]["values"][0] == pytest.approx(round(tank.settings.tank_height_m * 0.9, 3))
    percent = victoria.export(
        f'{{__name__="water_level_level_percent",device_id="{tank.id}"}}')
    assert percent[0]["values"][0] == pytest.approx(90.0)
    assert daemon.stop() == 0


def test_kill_9_mid_stream_loses_nothing(mosquitto: Mosquitto, tmp_path: Path,
                                         daemon_factory: list[DaemonProcess]) -> None:
    """kill -9 of the daemon while readings stream in; after restart every one is stored."""
    state = tmp_path / "state"
    db = state / "readings.sqlite3"
    daemon = DaemonProcess(state, mosquitto.port).start()
    daemon_factory.append(daemon)
    publisher = Publisher(mosquitto.port)
    stream = threading.Thread(target=publisher.publish_readings,
                              args=(readings(20, time.time() - 7200),), kwargs={"rate": 4000})
    stream.start()
    assert wait_until(lambda: len(stored_keys(db)) > 4000, 30)
    daemon.kill()
    stored_at_kill = len(stored_keys(db))
    time.sleep(1.0)  # the stream goes on; the broker queues it for our session
    daemon.start()
    stream.join(120)
    publisher.close()
    assert stored_at_kill < len(publisher.ledger)
    assert wait_until(lambda: stored_keys(db) >= publisher.ledger, 90)
    assert stored_keys(db) == publisher.ledger
    assert daemon.stop() == 0


def test_tsdb_down_mid_stream_loses_nothing(mosquitto: Mosquitto, victoria: VictoriaMetrics,
                                            tmp_path: Path,
                                            daemon_factory: list[DaemonProcess]) -> None:
    """VictoriaMetrics stopped mid-stream (60 s with FAULTS_SCALE=long, 12 s in CI): readings
    spool, then replay; none lost."""
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port,
                           store__backend="influxdb", store__influxdb__url=victoria.url,
                           store__influxdb__flush_interval="0.2",
                           store__influxdb__retry_max_delay="2").start()
    daemon_factory.append(daemon)
    publisher = Publisher(mosquitto.port)
    stop = threading.Event()
    stream = threading.Thread(target=publisher.publish_readings,
                              args=(readings(STREAM_ROUNDS, time.time() - 7200),),
                              kwargs={"rate": 1000, "stop": stop})
    stream.start()
    time.sleep(5)
    victoria.stop()
    down_at = time.monotonic()
    time.sleep(OUTAGE_S)
    spool_log = [e for e in daemon.log_events() if e.get("event") == "influx_write_retry"]
    victoria.start()
    outage = time.monotonic() - down_at
    stream.join(120)
    publisher.close()
    assert outage >= OUTAGE_S
    assert spool_log, "the writer never noticed the TSDB was down"
    assert wait_until(lambda: _vm_keys(victoria) >= publisher.ledger, 120, interval=2.0)
    assert _vm_keys(victoria) == publisher.ledger
    assert daemon.stop() == 0
    spool = tmp_path / "state" / "spool.sqlite3"
    import sqlite3
    conn = sqlite3.connect(spool)
    assert conn.execute("SELECT count(*) FROM spool").fetchone()[0] == 0
    conn.close()


BAD_MESSAGES: list[tuple[str, bytes, str]] = [
    ("sentinel/v1/SB-SMK-0001/telemetry", b'{"alarm": tru', "invalid_json"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b'{"alarm":"\xff"}', "invalid_encoding"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b"", "empty_payload"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b"{" + b" " * 70_000 + b"}", "payload_too_large"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b'{"id":"SB-SMK-0001","battery":"lots"}',
     "wrong_type"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b'{"id":"SB-SMK-0001"}', "missing_field"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b'{"id":"SB-SMK-0001","battery":150}',
     "impossible_value"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b'{"id":"SB-SMK-0001","battery":"NaN"}',
     "wrong_type"),  # text in a numeric field the profile does not read from_text
    ("sentinel/v1/SB-SMK-0001/telemetry", b'{"id":"SB-SMK-0001","battery":Infinity}',
     "invalid_json"),
    ("sentinel/v1/GHOST-1/telemetry", b'{"id":"GHOST-1","alarm":true}', "unknown_device"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b'{"id":"SB-SMK-0002","alarm":true}',
     "device_mismatch"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b'{"id":"SB-SMK-0001","ts":9999999999999,'
     b'"alarm":false}', "timestamp_in_future"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b'{"id":"SB-SMK-0001","ts":1000000000000,'
     b'"alarm":false}', "timestamp_too_old"),
    ("sentinel/v1/SB-SMK-0001/telemetry", b"[" * 3000 + b"]" * 3000, "invalid_json"),
]


def test_malformed_payloads_are_counted_dead_lettered_and_survived(
        mosquitto: Mosquitto, tmp_path: Path, daemon_factory: list[DaemonProcess]) -> None:
    """Every reason of bad input is dead-lettered and counted; the daemon keeps ingesting."""
    state = tmp_path / "state"
    daemon = DaemonProcess(state, mosquitto.port).start()
    daemon_factory.append(daemon)
    publisher = Publisher(mosquitto.port)
    for topic, payload, _ in BAD_MESSAGES:
        publisher.publish(topic, payload)
    good = next(iter(readings(1, time.time() - 60)))
    for topic, payload in good[2]:
        publisher.publish(topic, payload)
    publisher.close()
    db = state / "readings.sqlite3"
    expected: dict[str, int] = {}
    for _, _, reason in BAD_MESSAGES:
        expected[reason] = expected.get(reason, 0) + 1
    assert wait_until(lambda: deadletter_counts(db) == expected, 30), deadletter_counts(db)
    assert wait_until(lambda: (good[0].id, round(good[1] * 1000)) in stored_keys(db), 10)
    assert daemon.alive

    env = {**daemon.env}
    listing = sentinel("deadletter", "list", "-c", str(SHIPPED_CONFIG), "--json",
                       "--limit", "100", env=env)
    assert listing.returncode == 0, listing.stderr
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert sorted(r["reason"] for r in rows) == sorted(r for _, _, r in BAD_MESSAGES)
    big = next(r for r in rows if r["reason"] == "payload_too_large")
    assert big["payload_size"] > 70_000
    human = sentinel("deadletter", "list", "-c", str(SHIPPED_CONFIG), env=env)
    assert "设备不在清单中" in human.stdout and "unknown_device" not in human.stdout
    assert daemon.stop() == 0
    logged = [e for e in daemon.log_events() if e.get("event") == "message_rejected"]
    assert len(logged) == len(BAD_MESSAGES)  # each rejection logged once
    assert all(len(str(e["payload"])) < 400 for e in logged)  # payloads truncated
