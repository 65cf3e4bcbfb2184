"""Rules and incidents end to end: real broker, the daemon as a process, its state database."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.config.inventory import Device
from sentinel.decode.encode import encode
from sentinel.incidents.model import Incident
from sentinel.incidents.store import read_events, read_incidents

from daemon import LOADED, DaemonProcess, Publisher, wait_until
from servers import Mosquitto

INV = LOADED.inventory


def json_devices(kind: str, **where: str) -> list[Device]:
    """Devices of the sentinel-json profile (device timestamps: exact redelivery keys)."""
    return [d for d in INV.values() if d.kind == kind and d.profile == "sentinel-json"
            and all(getattr(d, k) == v for k, v in where.items())]


def fire_building() -> tuple[str, str]:
    """A building with ≥ 3 JSON smoke detectors in a compound with a JSON hydrant."""
    for d in json_devices("smoke"):
        if d.building and len(json_devices("smoke", compound=d.compound,
                                           building=d.building)) >= 3 \
                and json_devices("hydrant_pressure", compound=d.compound):
            return d.compound, d.building
    raise AssertionError("the example inventory has no such building")


def send(pub: Publisher, device: Device, ts: float, **values: Any) -> None:
    for topic, payload in encode(LOADED.profiles[device.profile], device, values, ts,
                                 LOADED.kinds):
        pub.publish(topic, payload)


def write_overrides(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def daemon_with_rules(state: Path, port: int, extra_rules: Path,
                      **overrides: str) -> DaemonProcess:
    shipped = str(Path(LOADED.config_path).parent / "rules.toml")
    return DaemonProcess(state, port, rules__files=json.dumps([shipped, str(extra_rules)]),
                         rules__startup_grace="0", rules__tick_interval="0.2", **overrides)


class RetainedWatcher:
    """Subscribes to the published incident topics and keeps the latest retained state."""

    def __init__(self, port: int) -> None:
        self.state: dict[str, bytes] = {}
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watcher")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([("sentinel/+/incidents/+", 1), ("sentinel/+/events", 1)])
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            if msg.topic.endswith("/events"):
                self.events.append(json.loads(msg.payload))
            else:
                self.state[msg.topic.rsplit("/", 1)[1]] = bytes(msg.payload)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def by_name(incidents: list[Incident]) -> dict[str, list[Incident]]:
    out: dict[str, list[Incident]] = {}
    for inc in incidents:
        out.setdefault(inc.name, []).append(inc)
    return out


def test_scripted_scenario_produces_exactly_the_expected_incidents(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """Fire (3 detectors) + hydrant opened during it + gas leak elsewhere + fall with no
    movement + 20 detectors offline + 30 low batteries → exactly the expected incidents."""
    compound, building = fire_building()
    detectors = json_devices("smoke", compound=compound, building=building)[:3]
    hydrant = json_devices("hydrant_pressure", compound=compound)[0]
    gas = next(d for d in json_devices("gas") if d.compound != compound)
    watch = json_devices("elderly_watch")[0]
    others = [d for d in json_devices("smoke") if d.compound != compound]
    quiet, low_battery = others[:20], others[20:50]
    rules = write_overrides(tmp_path / "site-rules.toml", f"""
[groups]
quiet = {json.dumps([d.id for d in quiet])}

# The scenario runs in seconds: the same rules with shorter clocks.
[[override]]
rule = "detector_offline"
match = {{ group = "quiet" }}
set = {{ interval = "1s" }}

[[override]]
rule = "fall_still"
match = {{ device = "{watch.id}" }}
set = {{ within = "3s" }}
""")
    daemon = daemon_with_rules(tmp_path / "state", mosquitto.port, rules).start()
    daemons.append(daemon)
    watcher = RetainedWatcher(mosquitto.port)
    pub = Publisher(mosquitto.port)
    now = time.time()
    for d in quiet:
        send(pub, d, now, alarm=False, battery=90.0)
    for d in low_battery:
        send(pub, d, now, alarm=False, battery=12.0)
    send(pub, hydrant, now, pressure=0.35)
    send(pub, watch, now, steps=1200, fall=False, worn=True)
    pub.flush()
    time.sleep(1.0)
    t = time.time()
    for i, d in enumerate(detectors):
        send(pub, d, t + i * 0.2, alarm=True, battery=90.0)
    send(pub, gas, t + 0.5, alarm=True, concentration_lel=31.0)
    send(pub, watch, t + 0.6, fall=True, steps=1200)
    pub.flush()
    time.sleep(0.5)
    send(pub, hydrant, time.time(), pressure=0.27)
    pub.flush()
    db = tmp_path / "state" / "incidents.sqlite3"

    def settled() -> bool:
        names = by_name(read_incidents(db)) if db.exists() else {}
        falls = names.get("fall", [])
        return len(names.get("detector_offline", [])) >= 20 and bool(falls) and \
            falls[0].severity.label == "emergency" and bool(names.get("hydrant_pressure_drop"))

    assert wait_until(settled, 30), by_name(read_incidents(db)).keys()
    time.sleep(1.0)  # anything extra would show up now
    incidents = read_incidents(db)
    names = by_name(incidents)
    assert sorted((k, len(v)) for k, v in names.items()) == sorted([
        ("smoke_alarm", 3), ("fire_confirmed", 1), ("hydrant_pressure_drop", 1),
        ("gas_leak", 1), ("fall", 1), ("detector_offline", 20), ("battery_low", 30)])
    fire = names["fire_confirmed"][0]
    alarms = names["smoke_alarm"]
    drop = names["hydrant_pressure_drop"][0]
    assert fire.severity.label == "critical" and fire.place["building"] == building
    assert sorted(fire.members) == sorted([a.id for a in alarms] + [drop.id])
    assert drop.attached_to == fire.id
    assert {a.device_id for a in alarms} == {d.id for d in detectors}
    assert all(a.severity.label == "critical" and a.groups == [fire.id] for a in alarms)
    assert names["gas_leak"][0].severity.label == "critical"
    assert names["gas_leak"][0].device_id == gas.id
    assert names["fall"][0].severity.label == "emergency"
    assert {i.device_id for i in names["detector_offline"]} == {d.id for d in quiet}
    assert all(i.severity.label == "warning" for i in names["detector_offline"])
    # Low batteries page no one: maintenance severity, for the daily digest.
    assert {i.device_id for i in names["battery_low"]} == {d.id for d in low_battery}
    assert all(i.digest_only for i in names["battery_low"])
    # Once each: one "opened" event per incident, none for a duplicate key.
    opened = [e for e in read_events(db) if e.type == "opened"]
    assert len(opened) == len(incidents) == 57
    # The stream is published: every open incident retained under its id.
    assert wait_until(lambda: set(watcher.state) >= {i.id for i in incidents}, 10)
    retained = json.loads(watcher.state[fire.id])
    assert retained["name"] == "fire_confirmed" and retained["status"] == "firing"
    assert wait_until(lambda: len([e for e in watcher.events if e["type"] == "opened"]) == 57,
                      10)
    pub.close()
    watcher.close()
    assert daemon.stop() == 0


def test_kill_9_keeps_incidents_and_pending_durations(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """kill -9 with an open incident and a pending hold: after restart the same incidents,
    the hold completes once, redelivered readings duplicate nothing, and a cleared
    condition clears its retained MQTT state."""
    hydrant = json_devices("hydrant_pressure")[0]
    smoke = json_devices("smoke")[0]
    rules = write_overrides(tmp_path / "site-rules.toml", f"""
[[override]]
rule = "hydrant_pressure_low"
match = {{ device = "{hydrant.id}" }}
set = {{ levels = [{{ severity = "warning", below = 0.14 }},
                   {{ severity = "critical", below = 0.10, for = "6s" }}], clear_for = "1s" }}
""")
    state = tmp_path / "state"
    daemon = daemon_with_rules(state, mosquitto.port, rules).start()
    daemons.append(daemon)
    db = state / "incidents.sqlite3"
    pub = Publisher(mosquitto.port)
    t = time.time()
    send(pub, smoke, t, alarm=True)
    send(pub, hydrant, t, pressure=0.08)
    pub.flush()
    assert wait_until(lambda: db.exists() and len(read_incidents(db, open_only=True)) == 2, 10)
    before = {i.id: (i.name, i.severity.label) for i in read_incidents(db, open_only=True)}
    assert sorted(before.values()) == [("hydrant_pressure_low", "warning"),
                                       ("smoke_alarm", "critical")]
    daemon.kill()
    # While it is down the same readings arrive again (a device retry) and queue up.
    send(pub, smoke, t, alarm=True)
    send(pub, hydrant, t, pressure=0.08)
    pub.flush()
    restarted = daemon_with_rules(state, mosquitto.port, rules).start()
    daemons.append(restarted)
    hydrant_id = next(k for k, v in before.items() if v[0] == "hydrant_pressure_low")

    def critical() -> bool:
        return any(i.id == hydrant_id and i.severity.label == "critical"
                   for i in read_incidents(db, open_only=True))

    assert wait_until(critical, 15)
    assert time.time() - t >= 6, "the 6 s hold was honoured across the restart"
    after = {i.id for i in read_incidents(db, open_only=True)}
    assert after == set(before)
    events = read_events(db)
    # The incident's own transitions (escalation and delivery events share the trail).
    assert [e.type for e in events if e.incident_id == hydrant_id and not e.type.startswith(
        ("escalation_", "notification_"))] == ["opened", "severity_raised"]
    assert len([e for e in events if e.type == "opened"]) == 2
    # The condition clears: the incident resolves and its retained message is cleared.
    watcher = RetainedWatcher(mosquitto.port)
    assert wait_until(lambda: hydrant_id in watcher.state, 10)
    send(pub, hydrant, time.time(), pressure=0.3)
    pub.flush()
    assert wait_until(lambda: all(i.id != hydrant_id
                                  for i in read_incidents(db, open_only=True)), 10)
    assert wait_until(lambda: watcher.state.get(hydrant_id) == b"", 10)
    watcher.close()
    fresh = RetainedWatcher(mosquitto.port)
    time.sleep(1.0)
    assert hydrant_id not in fresh.state, "no retained state left for a resolved incident"
    assert set(fresh.state) == set(before) - {hydrant_id}
    fresh.close()
    pub.close()
    assert restarted.stop() == 0
