"""The simulator: seeded device models valid for their kinds, injected events, publishing."""

from __future__ import annotations

import itertools
import re
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from sentinel.decode import Decoder
from sentinel.decode.encode import encode
from sentinel.loading import Loaded, load_all
from sentinel.sim import SimOptions, SimProgress, parse_inject, run_simulation
from sentinel.sim.model import NATURAL_INTERVALS, FleetModel, Sample, resolve_injections
from sentinel.types import RawMessage, Reading

from servers import Mosquitto

CONFIG = Path(__file__).resolve().parent.parent / "config" / "sentinel.toml"
# 2026-11-23 00:00 in Shenzhen (UTC+8).
T0 = datetime(2026, 11, 22, 16, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
LOCAL = 8 * 3600
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    """The shipped configuration, inventory and profiles, validated together."""
    return load_all(CONFIG)


def decoder(loaded: Loaded) -> Decoder:
    return Decoder(loaded.profiles, loaded.inventory, loaded.kinds, loaded.settings.ingest)


def decode_sample(dec: Decoder, loaded: Loaded, sample: Sample) -> list[Reading]:
    """Encode a sample in its device's profile and decode every message (raises on reject)."""
    device = sample.device
    msgs = encode(loaded.profiles[device.profile], device, sample.values, sample.ts,
                  loaded.kinds)
    assert msgs, f"{device.id}: nothing to publish"
    return [r for topic, payload in msgs
            for r in dec.decode(RawMessage(topic, payload, 1, False, sample.t + 0.5))]


@pytest.fixture(scope="module")
def day(loaded: Loaded) -> list[tuple[Sample, list[Reading]]]:
    """One simulated day of the whole inventory, each reading encoded and decoded."""
    fleet = FleetModel(loaded.inventory, loaded.kinds, loaded.profiles, seed=7, start=T0)
    dec = decoder(loaded)
    return [(s, decode_sample(dec, loaded, s)) for s in fleet.samples(T0 + DAY)]


def by_device(day: list[tuple[Sample, list[Reading]]]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = defaultdict(list)
    for sample, _ in day:
        out[sample.device.id].append(sample)
    return out


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


def test_model_is_deterministic_with_a_seed(loaded: Loaded) -> None:
    """The same seed gives the same readings; another seed gives other readings."""
    def run(seed: int) -> list[tuple[str, int, dict[str, Any]]]:
        fleet = FleetModel(loaded.inventory, loaded.kinds, loaded.profiles, seed=seed, start=T0)
        return [(s.device.id, s.ts_ms, s.values) for s in fleet.samples(T0 + 7200)]

    first = run(3)
    assert len(first) > 10_000
    assert run(3) == first
    assert run(4) != first


def test_whole_inventory_decodes_for_a_day_without_rejects(
        loaded: Loaded, day: list[tuple[Sample, list[Reading]]]) -> None:
    """Every message of every device over a simulated day passes the real decoder."""
    devices = by_device(day)
    assert set(devices) == set(loaded.inventory)
    for sample, readings in day:
        for reading in readings:
            assert reading.device_id == sample.device.id
            profile = loaded.profiles[sample.device.profile]
            if profile.format == "json" and profile.timestamp is not None:
                assert reading.ts_ms == sample.ts_ms
    assert len(day) > 200_000


def test_devices_report_at_their_kinds_intervals_with_offsets(
        day: list[tuple[Sample, list[Reading]]]) -> None:
    """Each device reports at its kind's natural interval, devices at different instants."""
    firsts: dict[str, list[int]] = defaultdict(list)
    for device_id, samples in by_device(day).items():
        kind = samples[0].device.kind
        gaps = {round(b.t - a.t, 6) for a, b in itertools.pairwise(samples)}
        assert gaps == {NATURAL_INTERVALS[kind]}, device_id
        firsts[kind].append(samples[0].ts_ms)
    for kind, starts in firsts.items():
        assert len(set(starts)) > 0.9 * len(starts), kind
        assert max(starts) - min(starts) > 0.8 * NATURAL_INTERVALS[kind] * 1000, kind


def test_timestamps_strictly_increase_per_device(
        loaded: Loaded, day: list[tuple[Sample, list[Reading]]]) -> None:
    """Per device, timestamps are whole ms and strictly increasing, even when sent together."""
    for device_id, samples in by_device(day).items():
        stamps = [s.ts_ms for s in samples]
        assert all(a < b for a, b in itertools.pairwise(stamps)), device_id
    fleet = FleetModel(loaded.inventory, loaded.kinds, loaded.profiles, seed=1, start=T0)
    model = fleet.models["SB-SMK-0001"]
    burst = [model.sample(T0 + i * 1e-5, T0) for i in range(50)]
    stamps = [s.ts_ms for s in burst if s is not None]
    assert stamps == list(range(round(T0 * 1000), round(T0 * 1000) + 50))


def test_values_are_realistic_for_each_kind(
        loaded: Loaded, day: list[tuple[Sample, list[Reading]]]) -> None:
    """Quiet-day values stay in each kind's normal band (smoke, gas, pressure, tank, watch)."""
    for device_id, samples in by_device(day).items():
        device = loaded.inventory[device_id]
        values = [s.values for s in samples]
        for v in values:
            if "signal" in v:
                assert -110 <= float(v["signal"]) <= -70
        if device.kind == "smoke":
            assert all(v["alarm"] is False for v in values)
            assert all(0 <= float(v.get("obscuration", 0)) <= 0.5 for v in values)
            power = [float(v.get("battery", v.get("battery_voltage", 0))) for v in values]
            assert power == sorted(power, reverse=True)
            if device.profile == "lorawan-tts":
                assert all("snr" in v for v in values)
        elif device.kind == "gas":
            assert all(v["alarm"] is False for v in values)
            assert all(0 <= float(v.get("concentration_lel", 0)) <= 3 for v in values)
            if "gas_type" in values[0]:
                want = "LPG" if "液化" in device.location else "CH4"
                assert {v["gas_type"] for v in values} == {want}
        elif device.kind == "hydrant_pressure":
            pressures = [float(v["pressure"]) for v in values]
            assert all(0.28 <= p <= 0.45 for p in pressures)
            assert max(pressures) - min(pressures) > 0.01  # the daily swing
            assert all(3.3 <= float(v["battery_voltage"]) <= 3.7 for v in values)
        elif device.kind == "water_level":
            height = device.settings.tank_height_m
            assert height is not None
            assert all(0.85 * height <= float(v["level"]) <= 0.98 * height for v in values)
        elif device.kind == "elderly_watch":
            assert all(v["sos"] is False and v["fall"] is False for v in values)
            assert sum(v["worn"] is True for v in values) > 0.8 * len(values)
            assert all(60 <= float(v["heart_rate"]) <= 90 for v in values if "heart_rate" in v)
            assert all(abs(float(v["latitude"]) - 22.566) <= 0.003 for v in values)
            assert all(abs(float(v["longitude"]) - 114.127) <= 0.003 for v in values)
            for a, b in itertools.pairwise(samples):
                hour = ((b.t + LOCAL) % DAY) / 3600
                if int((a.t + LOCAL) // DAY) != int((b.t + LOCAL) // DAY):
                    continue  # steps restart at local midnight
                assert int(b.values["steps"]) >= int(a.values["steps"])
                if hour < 7 or hour >= 21.02:
                    assert b.values["steps"] == a.values["steps"], "steps at night"
            assert max(int(v["steps"]) for v in values) > 2000


# ---------------------------------------------------------------------------------------
# Injected events
# ---------------------------------------------------------------------------------------


def _event_run(loaded: Loaded, event: str, device_id: str, at: float,
               until: float) -> tuple[list[Sample], list[Sample]]:
    """Samples of one device before and from an injection at `at` (decoded: no reject)."""
    fleet = FleetModel(loaded.inventory, loaded.kinds, loaded.profiles, seed=5, start=T0)
    fleet.inject(event, device_id, at)
    model = fleet.models[device_id]
    dec = decoder(loaded)
    before: list[Sample] = []
    after: list[Sample] = []
    t = model.first_due()
    while t <= until:
        sample = model.sample(t)
        if sample is not None:
            decode_sample(dec, loaded, sample)
            (after if sample.t >= at else before).append(sample)
        t = model.due_after(t)
    return before, after


def test_smoke_alarm_event(loaded: Loaded) -> None:
    """smoke-alarm: reported at once, alarm true and obscuration 8-15 %/m from then on."""
    at = T0 + 4000
    before, after = _event_run(loaded, "smoke-alarm", "SB-SMK-0001", at, at + 120)
    assert before and all(s.values["alarm"] is False for s in before)
    assert after[0].t == at
    assert len(after) >= 10
    assert all(s.values["alarm"] is True for s in after)
    assert all(8 <= float(s.values["obscuration"]) <= 15 for s in after)


def test_gas_leak_event(loaded: Loaded) -> None:
    """gas-leak: concentration rises to 30 %LEL within a minute, alarm true."""
    device_id = next(d.id for d in loaded.inventory.values()
                     if d.kind == "gas" and d.profile == "sentinel-json")
    at = T0 + 1000
    _, after = _event_run(loaded, "gas-leak", device_id, at, at + 300)
    lel = [float(s.values["concentration_lel"]) for s in after]
    assert all(s.values["alarm"] is True for s in after)
    assert lel == sorted(lel) and lel[0] < 30
    assert all(x == 30 for s, x in zip(after, lel, strict=True) if s.t - at >= 60)


def test_hydrant_drop_event(loaded: Loaded) -> None:
    """hydrant-drop: pressure falls to 0.08 MPa within 20 s of the injection."""
    at = T0 + 500
    before, after = _event_run(loaded, "hydrant-drop", "SB-HYD-0001", at, at + 120)
    assert float(before[-1].values["pressure"]) >= 0.28
    assert after[0].t == at
    assert [s.t - at for s in after[:5]] == [0, 5, 10, 15, 20]
    assert all(abs(float(s.values["pressure"]) - 0.08) <= 0.005
               for s in after if s.t - at >= 20)


def test_tank_low_event(loaded: Loaded) -> None:
    """tank-low: the level falls to 20 % of the tank height and stays there."""
    at = T0 + 900
    _, after = _event_run(loaded, "tank-low", "SB-TNK-0005", at, at + 1800)
    height = loaded.inventory["SB-TNK-0005"].settings.tank_height_m
    assert height is not None
    levels = [float(s.values["level"]) for s in after]
    assert levels[0] > 0.8 * height
    settled = [x for s, x in zip(after, levels, strict=True) if s.t - at >= 600]
    assert settled and all(abs(x / height - 0.20) <= 0.006 for x in settled)


def test_sos_and_fall_events(loaded: Loaded) -> None:
    """sos sets sos true; fall sets fall true and the steps stop."""
    at = T0 + 10 * 3600  # 10:00 local: the wearer is walking
    _, after = _event_run(loaded, "sos", "SB-WCH-0001", at, at + 600)
    assert after and all(s.values["sos"] is True for s in after)
    before, after = _event_run(loaded, "fall", "SB-WCH-0002", at, at + 3600)
    assert int(before[-1].values["steps"]) > int(before[0].values["steps"])
    assert all(s.values["fall"] is True for s in after)
    assert len({s.values["steps"] for s in after}) == 1


def test_offline_event(loaded: Loaded) -> None:
    """offline: the device publishes nothing from the injection on."""
    at = T0 + 1800
    before, after = _event_run(loaded, "offline", "SB-HYD-0002", at, at + 3600)
    assert before and not after


def test_random_and_selector_targets_resolve(loaded: Loaded) -> None:
    """`random` picks one fitting device (seeded); selectors name every fitting device."""
    inv = loaded.inventory
    [one] = resolve_injections([("gas-leak", "random", 5.0)], inv, seed=1)
    assert inv[one.device_id].kind == "gas" and one.offset == 5.0
    assert resolve_injections([("gas-leak", "random", 5.0)], inv, seed=1) == [one]
    tanks = resolve_injections([("tank-low", "kind:water_level", 0.0)], inv)
    assert len(tanks) == inv.count_by_kind()["water_level"]
    building = resolve_injections([("smoke-alarm", "building:水贝花园/1栋", 0.0)], inv)
    assert building and all(inv[e.device_id].building == "1栋" for e in building)


# ---------------------------------------------------------------------------------------
# parse_inject
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("smoke-alarm:SB-SMK-0001", ("smoke-alarm", "SB-SMK-0001", 0.0)),
    ("gas-leak:SB-GAS-0003@30", ("gas-leak", "SB-GAS-0003", 30.0)),
    ("sos@12.5", ("sos", "random", 12.5)),
    ("offline:random@60", ("offline", "random", 60.0)),
    ("tank-low:kind:water_level", ("tank-low", "kind:water_level", 0.0)),
])
def test_parse_inject_accepts(loaded: Loaded, text: str, expected: tuple[str, str, float]
                              ) -> None:
    """parse_inject reads EVENT[:TARGET][@SECONDS]."""
    assert parse_inject(text) == expected
    assert parse_inject(text, loaded.inventory) == expected


@pytest.mark.parametrize(("text", "needs_inventory", "message"), [
    ("smoke-fire:SB-SMK-0001", False, "unknown event 'smoke-fire'"),
    ("", False, "empty injection"),
    ("gas-leak:SB-GAS-0003@soon", False, "'soon' is not a number of seconds"),
    ("gas-leak:SB-GAS-0003@-5", False, "0 or more seconds"),
    ("smoke-alarm:SB-SMK-9999", True, "unknown device 'SB-SMK-9999'"),
    ("smoke-alarm:SB-GAS-0003", True, "smoke-alarm applies to smoke devices; SB-GAS-0003 is gas"),
    ("sos:kind:smoke", True, "no elderly_watch device matches 'kind:smoke'"),
])
def test_parse_inject_rejects(loaded: Loaded, text: str, needs_inventory: bool, message: str
                              ) -> None:
    """parse_inject explains unknown events, bad times, unknown or unfit devices."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_inject(text, loaded.inventory)
    if not needs_inventory:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_inject(text)


def test_run_simulation_refuses_unknown_devices_before_connecting(loaded: Loaded) -> None:
    """A bad injection raises ValueError without needing a broker."""
    options = SimOptions(port=1, inject=[("smoke-alarm", "SB-NOPE-1", 0.0)], count=1)
    with pytest.raises(ValueError, match="unknown device 'SB-NOPE-1'"):
        run_simulation(loaded, options)


# ---------------------------------------------------------------------------------------
# Publishing to a real broker
# ---------------------------------------------------------------------------------------


class Subscriber:
    """A persistent-session paho subscriber to every profile's topics, collecting messages."""

    def __init__(self, broker: Mosquitto, filters: list[str]) -> None:
        self.messages: list[tuple[str, bytes, float]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="sim-test-subscriber", clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda *a: self._ready.set()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self._ready.wait(TIMEOUT), "no CONNACK"
        self.client.subscribe([(f, 1) for f in filters])
        assert self._subscribed.wait(TIMEOUT), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, time.time()))

    def wait_for(self, count: int) -> list[tuple[str, bytes, float]]:
        deadline = time.monotonic() + TIMEOUT
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # anything beyond `count` would show up now
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(mosquitto: Mosquitto, loaded: Loaded) -> Iterator[Subscriber]:
    """A subscriber to every topic the daemon would subscribe to, ready before publishing."""
    sub = Subscriber(mosquitto, decoder(loaded).topic_filters())
    yield sub
    sub.close()


def _ledger(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_burst_of_2000_readings_arrives_at_qos1(
        mosquitto: Mosquitto, subscriber: Subscriber, loaded: Loaded, tmp_path: Path) -> None:
    """count=2000 burst at QoS 1: every message of every reading reaches a subscriber."""
    ledger = tmp_path / "ledger.jsonl"
    options = SimOptions(mosquitto.host, mosquitto.port, qos=1, count=2000, burst=True,
                         seed=11, client_id="sim-test-burst", ledger_path=ledger)
    result = run_simulation(loaded, options)
    assert result.readings == 2000
    assert sum(result.by_kind.values()) == 2000
    assert result.messages > result.readings  # value profiles send one message per quantity
    assert result.refused == 0
    lines = _ledger(ledger)
    assert len(lines) == 2000

    got = subscriber.wait_for(result.messages)
    assert len(got) == result.messages
    dec = decoder(loaded)
    readings = [r for topic, payload, at in got
                for r in dec.decode(RawMessage(topic, payload, 1, False, at))]
    stamped = {(r["device_id"], r["ts_ms"]) for r in lines if r["ts_ms"] is not None}
    assert len(stamped) == sum(1 for r in lines if r["ts_ms"] is not None)
    decoded = {(r.device_id, r.ts_ms) for r in readings
               if loaded.profiles[loaded.inventory[r.device_id].profile].format == "json"}
    assert decoded == stamped
    per_device_ledger = defaultdict(int)
    for r in lines:
        per_device_ledger[r["device_id"]] += 1
    value_messages = defaultdict(int)
    for r in readings:
        if loaded.inventory[r.device_id].profile == "esphome":
            value_messages[r.device_id] += 1
    assert value_messages
    for device_id, n in value_messages.items():
        assert n == 3 * per_device_ledger[device_id]  # pressure, battery voltage, signal


def test_natural_schedule_with_injection_and_stop(
        mosquitto: Mosquitto, subscriber: Subscriber, loaded: Loaded, tmp_path: Path) -> None:
    """Time-compressed natural intervals: hydrants every 60 s / speed, events and stop work."""
    ledger = tmp_path / "ledger.jsonl"
    stop = threading.Event()
    progress: list[SimProgress] = []
    options = SimOptions(mosquitto.host, mosquitto.port, speed=300.0, seed=2,
                         client_id="sim-test-natural", ledger_path=ledger,
                         inject=[("smoke-alarm", "SB-SMK-0001", 0.5),
                                 ("offline", "SB-HYD-0001", 0.0)])
    timer = threading.Timer(2.5, stop.set)
    timer.start()
    started = time.monotonic()
    result = run_simulation(loaded, options, stop=stop, progress=progress.append)
    assert time.monotonic() - started < 4.0
    assert progress and progress[-1].readings == result.readings
    assert [(e.event, e.device_id) for e in result.events] == [
        ("smoke-alarm", "SB-SMK-0001"), ("offline", "SB-HYD-0001")]

    lines = _ledger(ledger)
    assert len(lines) == result.readings
    stamps: dict[str, list[int]] = defaultdict(list)
    for r in lines:
        if r["ts_ms"] is not None:
            stamps[r["device_id"]].append(r["ts_ms"])
    assert "SB-HYD-0001" not in stamps
    gaps = [b - a for device_id, ts in stamps.items() if device_id.startswith("SB-HYD")
            for a, b in itertools.pairwise(ts)]
    assert gaps and 150 <= statistics.median(gaps) <= 250  # 60 s at speed 300 = 200 ms

    got = subscriber.wait_for(result.messages)
    dec = decoder(loaded)
    smoke = [r for topic, payload, at in got
             for r in dec.decode(RawMessage(topic, payload, 1, False, at))
             if r.device_id == "SB-SMK-0001"]
    assert len(smoke) >= 10 and smoke[-1].values["alarm"] is True


def test_rate_paces_the_fleet(mosquitto: Mosquitto, loaded: Loaded) -> None:
    """rate=400 for 1.5 s publishes about 600 readings, round-robin over the devices."""
    options = SimOptions(mosquitto.host, mosquitto.port, rate=400.0, duration=1.5,
                         client_id="sim-test-rate")
    result = run_simulation(loaded, options)
    assert 500 <= result.readings <= 610
    assert len(result.by_kind) == len(loaded.inventory.count_by_kind())


def test_publisher_reconnects_after_a_broker_restart(mosquitto: Mosquitto, loaded: Loaded
                                                     ) -> None:
    """A broker restart mid-run: the simulator reconnects and keeps publishing to the end."""
    timer = threading.Timer(1.0, mosquitto.restart)
    timer.start()
    options = SimOptions(mosquitto.host, mosquitto.port, rate=1000.0, duration=3.0,
                         client_id="sim-test-restart")
    try:
        result = run_simulation(loaded, options)
    finally:
        timer.join()
    assert result.readings >= 2500
    assert result.refused == 0


def test_a_kind_that_extends_gas_is_simulated_as_a_quiet_gas_detector(loaded: Loaded) -> None:
    """A septic-tank monitor (septic_gas extends gas) reads methane like a kitchen gas
    detector and its own H2S and NH3 near zero: a simulated community does not raise
    septic alarms by itself."""
    from sentinel.config.inventory import Device
    from sentinel.sim.model import model_for

    device = Device(id="TF-SEP-0001", kind="septic_gas", community="塘坊社区",
                    compound="塘坊新村", grid="TF-G01", profile="sentinel-json")
    model = model_for(device, None, loaded.kinds, 7, T0)
    assert type(model).__name__ == "GasModelExtension"
    for step in range(200):
        values = model.values(T0 + step * 300.0, 300.0)
        assert values["alarm"] is False and float(values["concentration_lel"]) <= 3
        assert 0 <= float(values["h2s_ppm"]) < 7 and 0 <= float(values["nh3_ppm"]) < 28


def test_the_shipped_inventory_places_every_building_and_watches_start_at_home(
        loaded: Loaded) -> None:
    """Every building of devices/shuibei.csv has a position (the site plan draws them all),
    no two buildings closer than 20 m; a simulated watch reports from its building at first
    (T0 is midnight: at home), and its other values are those of a watch without one."""
    import math

    from sentinel.config.inventory import NO_SETTINGS
    from sentinel.control.siteplan import layout
    from sentinel.sim.model import model_for

    devices = list(loaded.inventory.values())
    buildings = {(d.compound, d.building) for d in devices}
    assert all(d.settings.lat is not None and d.settings.lon is not None for d in devices)
    plan = layout(devices)
    assert {(b.compound, b.building) for b in plan.buildings} == buildings
    points = [(b.x, b.y) for b in plan.buildings]
    closest = min(math.dist(p, q) for i, p in enumerate(points) for q in points[i + 1:])
    assert closest >= 20.0
    watches = [d for d in devices if d.kind == "elderly_watch"]
    assert watches
    for device in watches:
        values = model_for(device, None, loaded.kinds, 7, T0).values(T0, 60.0)
        assert (values["latitude"], values["longitude"]) == (device.settings.lat,
                                                             device.settings.lon)
        bare = model_for(device._replace(settings=NO_SETTINGS), None, loaded.kinds, 7, T0)
        others = bare.values(T0, 60.0)
        assert {k: v for k, v in others.items() if k not in ("latitude", "longitude")} == {
            k: v for k, v in values.items() if k not in ("latitude", "longitude")}
