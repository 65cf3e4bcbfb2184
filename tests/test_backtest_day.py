"""Backtest fidelity over a whole day: `sentinel backtest` reports the incidents the daemon
opened, from the embedded store and from VictoriaMetrics.

Two real daemons run in this process (sentinel.app.run_daemon), one with the embedded store
and one writing to a real VictoriaMetrics through its influxdb backend, on one FakeClock
that the test moves over 24 simulated hours. The simulator's models (two compounds of the
Shuibei inventory, 153 devices) report through a real mosquitto, with a day's events
injected: smoke alarms (one alone; two in one building, a confirmed fire), a gas leak, two
hydrant pressure drops held past the critical level's 60 s `for` (one attached to the fire),
a tank's fast drop (the other tanks drain slowly, as in use, and must stay quiet), a
detector and a hydrant monitor going silent (both offline rules), a fall (then stillness,
then four daytime hours without a step: the inactivity rule) and an SOS. Each store is then
backtested over the same day with the same configuration: the backtest's incidents must be
the daemon's own (same rule, target and severity, opened within one tick), and so must
each incident's life (raised, grouped or attached, cleared, resolved).

Time: the daemons' `rules.tick_interval` is 60 s (the most it may be), and the clock moves
in half ticks. Half a tick after each tick, the readings the models made since arrive (each
stamped with its own device time) and the test waits until both daemons have evaluated
them; then the clock reaches the next tick and the test runs both daemons' timers (the same
`IncidentService.tick` the daemon's timer loop calls every `tick_interval`: with a fake
clock the test is that loop, so the ticks fall on the grid a daemon started at midnight has).
Readings come at each device's natural interval, except that hydrant monitors and watches
report every 300 s instead of 60 s, to keep the day cheap (their 15-minute offline limit
still holds them).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from sentinel.app import run_daemon
from sentinel.backtest.command import Options, run
from sentinel.clock import FakeClock
from sentinel.decode.encode import encode
from sentinel.incidents.model import SYSTEM_TARGET
from sentinel.incidents.store import read_events, read_incidents
from sentinel.loading import Loaded, load_all
from sentinel.runtime import Daemon
from sentinel.sim.model import FleetModel

from daemon import Publisher, accepting_sink_url
from helpers import ROOT, SHIPPED_CONFIG
from servers import Mosquitto, VictoriaMetrics

TZ = ZoneInfo("Asia/Shanghai")
STEP = 60.0          # = rules.tick_interval of the daemons and the backtest
DAY = 86400.0
COMPOUNDS = ("水贝花园", "水贝新村")
# Hydrant monitors and watches report every 60 s in the models; 300 s here (cheaper).
SCALED = {"hydrant_pressure": 300, "elderly_watch": 300}

# The day's events: (model event, device, local time). Events make a device report more
# often until the day ends, so most come late; the fall comes in the morning so that four
# daytime hours without a step fit before 20:00.
EVENTS = [
    ("offline", "SB-SMK-0114", "03:00"),      # detector_offline: 2 missed hourly heartbeats
    ("fall", "SB-WCH-0001", "11:00"),         # fall, fall_still (emergency), inactive
    ("offline", "SB-HYD-0014", "16:00"),      # monitor_offline: 15 minutes silent
    ("tank-low", "SB-TNK-0001", "20:30"),     # tank_level_falling and tank_level_low
    ("gas-leak", "SB-GAS-0001", "21:00"),     # gas_alarm, gas_lel
    ("smoke-alarm", "SB-SMK-0001", "22:00"),  # smoke_alarm
    ("hydrant-drop", "SB-HYD-0001", "22:30"),   # hydrant_pressure_low, critical after 60 s
    ("sos", "SB-WCH-0012", "23:00"),          # sos
    # Two detectors of one building within 2 minutes: fire_confirmed (a group); a hydrant
    # of the same compound then loses pressure: attached to the fire, not paged apart.
    ("smoke-alarm", "SB-SMK-0158", "23:10"),
    ("smoke-alarm", "SB-SMK-0160", "23:11"),
    ("hydrant-drop", "SB-HYD-0020", "23:12"),
]


def _inventory(dest: Path) -> set[str]:
    """The two compounds of the shipped inventory, with the scaled report intervals."""
    text = (ROOT / "devices" / "shuibei.csv").read_text(encoding="utf-8")
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["compound"] in COMPOUNDS]
    out = io.StringIO()
    fields = [*rows[0].keys(), "report_interval_s"]
    writer = csv.DictWriter(out, fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "report_interval_s": SCALED.get(row["kind"], "")})
    dest.write_text(out.getvalue(), encoding="utf-8")
    return {r["id"] for r in rows}


def _oncall(dest: Path) -> None:
    """One contact per role, every channel a loopback sink that accepts (the shipped rosters
    name compounds this inventory does not have)."""
    roles = ("grid_worker", "property", "duty_officer", "street_office", "elder_contact")
    data = {
        "timezone": "Asia/Shanghai",
        "contact": [{"id": role, "name": role, "role": role, "language": "zh",
                     "channels": [accepting_sink_url()]} for role in roles],
        "roster": [{"role": role, "shift": [{"members": [role]}]}
                   for role in roles if role != "elder_contact"],
    }
    dest.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def _env(tmp: Path, name: str, broker: int, vm: VictoriaMetrics | None) -> dict[str, str]:
    env = {
        "SENTINEL_MQTT__PORT": str(broker),
        "SENTINEL_MQTT__CLIENT_ID": f"day-{name}",
        "SENTINEL_MQTT__RECONNECT__MAX_DELAY": "1",
        "SENTINEL_STATE_DIR": str(tmp / name),
        "SENTINEL_CONTROL__ENABLED": "false",
        "SENTINEL_NOTIFY__SENDER": "thread",
        "SENTINEL_DEVICES__INVENTORY": json.dumps([str(tmp / "inventory.csv")]),
        "SENTINEL_ESCALATION__ONCALL": str(tmp / "oncall.yaml"),
        # The daemon's own timer loop would wait 60 real seconds: the test ticks instead.
        "SENTINEL_RULES__TICK_INTERVAL": str(STEP),
    }
    if vm is not None:
        env |= {"SENTINEL_STORE__BACKEND": "influxdb",
                "SENTINEL_STORE__INFLUXDB__URL": vm.url,
                "SENTINEL_STORE__INFLUXDB__FLUSH_INTERVAL": "0.2"}
    return env


@contextlib.asynccontextmanager
async def _daemon(loaded: Loaded, clock: FakeClock) -> AsyncIterator[Daemon]:
    stop = asyncio.Event()
    ready: asyncio.Future[Daemon] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_daemon(loaded, stop, on_ready=ready.set_result,
                                          clock=clock))
    try:
        await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
            raise AssertionError("the daemon returned before it was ready")
        assert ready.done(), "the daemon was not ready within 30 s"
        yield ready.result()
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


async def _until(predicate: Any, what: str, within: float = 20.0) -> None:
    # Polled often: the day has 1440 steps, each waiting once for both daemons.
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.001)


def _local(start: float, hhmm: str) -> float:
    hours, minutes = hhmm.split(":")
    return start + int(hours) * 3600 + int(minutes) * 60


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).isoformat()


@pytest.fixture
def day_start() -> float:
    """Local midnight two days ago: the whole day lies in the past (VictoriaMetrics keeps it,
    no reading comes from the future)."""
    today = datetime.now(TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=2)).timestamp()


async def test_a_day_backtests_to_the_incidents_the_daemon_opened(
        tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics, day_start: float,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A simulated day through two daemons: backtests of the embedded store and of
    VictoriaMetrics report exactly the incidents each daemon opened, offline and duration
    rules among them."""
    ids = _inventory(tmp_path / "inventory.csv")
    _oncall(tmp_path / "oncall.yaml")
    envs = {"sql": _env(tmp_path, "sql", mosquitto.port, None),
            "vm": _env(tmp_path, "vm", mosquitto.port, victoria)}
    loaded = {name: load_all(SHIPPED_CONFIG, env) for name, env in envs.items()}
    assert loaded["sql"].settings.store.backend == "sqlite"
    fleet = FleetModel(loaded["sql"].inventory, loaded["sql"].kinds, loaded["sql"].profiles,
                       seed=17, start=day_start)
    for event, device_id, at in EVENTS:
        assert device_id in ids, device_id
        fleet.inject(event, device_id, _local(day_start, at))
    profiles, inventory, kinds = (loaded["sql"].profiles, loaded["sql"].inventory,
                                  loaded["sql"].kinds)

    clock = FakeClock(day_start)
    published = 0
    async with _daemon(loaded["sql"], clock) as sql, _daemon(loaded["vm"], clock) as vm:
        daemons = (sql, vm)
        base = [d.incidents.evaluated for d in daemons]
        publisher = Publisher(mosquitto.port, client_id="day-sim")
        try:
            for step in range(1, int(DAY / STEP) + 1):
                # Half a tick after the last tick: what the devices sent since arrives.
                clock.advance(STEP / 2)
                for sample in fleet.samples(clock.now()):
                    device = inventory[sample.device.id]
                    for topic, payload in encode(profiles[device.profile], device,
                                                 sample.values, sample.ts, kinds):
                        publisher.publish(topic, payload)
                    published += 1
                await _until(lambda n=published: all(
                    d.incidents.evaluated - b >= n for d, b in zip(daemons, base, strict=True)),
                    f"step {step}: {published} readings evaluated")
                # The tick, on the grid of every `tick_interval` since the start.
                clock.advance(STEP / 2)
                for d in daemons:
                    await d.incidents.tick()
        finally:
            publisher.close()
    end = day_start + DAY + STEP / 2   # the last tick (at 24:00) within the period

    for name, env in envs.items():
        monkeypatch.undo()  # the other daemon's settings out of the environment
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        lines = _backtest(capsys, day_start, end, victoria if name == "vm" else None,
                          published)
        db = loaded[name].settings.incidents.path
        recorded = [i for i in read_incidents(db) if i.target != SYSTEM_TARGET]
        _assert_same(name, lines, recorded, published)
        _assert_same_lives(name, lines, db)


def _backtest(capsys: pytest.CaptureFixture[str], start: float, end: float,
              vm: VictoriaMetrics | None, published: int) -> list[dict[str, Any]]:
    """`sentinel backtest --json --jobs 2` over the day (the configuration from the
    environment); its lines. From VictoriaMetrics, asked again until every reading the
    daemon sent it is searchable (its writes reach the index a moment later)."""
    extra: dict[str, Any] = {} if vm is None else {"source": "victoria", "url": vm.url}
    options = Options(config=SHIPPED_CONFIG, start=_iso(start), end=_iso(end), json=True,
                      jobs=2, **extra)
    deadline = time.monotonic() + 10
    while True:
        if vm is not None:
            vm.force_flush()
        capsys.readouterr()
        assert run(options, sys.stdout) == 0, capsys.readouterr().err
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        if lines[-1]["readings"] >= published or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def _assert_same(name: str, lines: list[dict[str, Any]], recorded: list[Any],
                 published: int) -> None:
    *incidents, summary = lines
    assert summary["readings"] == published, (name, summary["readings"], published)
    comparison = summary["recorded"]
    assert comparison["missed"] == [] and comparison["extra"] == [], (name, summary)
    assert len(comparison["matched"]) == len(recorded) == len(incidents), (name, summary)
    assert all(abs(m["shift"]) <= STEP + 0.002 for m in comparison["matched"]), comparison
    # Independently of compare.py: the same (name, target, severity) multiset.
    ours = sorted((i["incident"], i["target"], i["severity"]) for i in incidents)
    theirs = sorted((i.name, i.target, i.severity.label) for i in recorded)
    assert ours == theirs, (name, ours, theirs)
    opened = {i["rule"] for i in incidents}
    for rule in ("smoke_alarm", "fire_confirmed", "gas_alarm", "hydrant_pressure_low",
                 "tank_level_falling", "detector_offline", "monitor_offline", "fall", "sos",
                 "inactive"):
        assert rule in opened, (name, rule, sorted(opened))
    summary_rules = summary["by_rule"]
    assert summary_rules["hydrant_pressure_low"].get("severity_raised", 0) >= 1, summary_rules
    tanks = {i["target"] for i in incidents if i["rule"] == "tank_level_falling"}
    assert tanks == {"SB-TNK-0001"}, (name, tanks)



# What the rules and the book decide (people's actions and escalation are not replayed).
LIFE = ("opened", "severity_raised", "condition_cleared", "condition_returned", "resolved",
        "grouped", "attached")

Life = list[tuple[str, float, str]]


def _assert_same_lives(name: str, lines: list[dict[str, Any]], db: Path) -> None:
    """Beyond the opening: each incident is raised, grouped, cleared and resolved alike (the
    same steps, within a tick) in the backtest and in the daemon's record."""
    incidents = {i.id: i for i in read_incidents(db) if i.target != SYSTEM_TARGET}
    lives: dict[str, Life] = {}
    for ev in read_events(db):
        if ev.incident_id in incidents and ev.type in LIFE:
            lives.setdefault(ev.incident_id, []).append((ev.type, ev.ts, ev.severity.label))
    recorded = _by_target((incidents[k].name, incidents[k].target, life)
                          for k, life in lives.items())
    replayed = _by_target((i["incident"], i["target"],
                           [(e["type"], e["ts"], e["severity"]) for e in i["events"]
                            if e["type"] in LIFE]) for i in lines[:-1])
    assert replayed.keys() == recorded.keys(), name
    for key, ours in replayed.items():
        theirs = recorded[key]
        steps = [[(t, sev) for t, _, sev in life] for life in ours]
        assert steps == [[(t, sev) for t, _, sev in life] for life in theirs], \
            (name, key, ours, theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert all(abs(x[1] - y[1]) <= STEP + 0.002 for x, y in zip(a, b, strict=True)), \
                (name, key, ours, theirs)


def _by_target(items: Any) -> dict[tuple[str, str], list[Life]]:
    """Lives by (incident name, target), each list in order of opening."""
    out: dict[tuple[str, str], list[Life]] = {}
    for incident, target, life in items:
        out.setdefault((incident, target), []).append(sorted(life, key=lambda e: e[1]))
    return {k: sorted(v, key=lambda life: life[0][1]) for k, v in out.items()}
