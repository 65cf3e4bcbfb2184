"""The seeds' devices end to end: a reading published to a real mosquitto in the
sentinel-json format → the daemon (in this process, on a clock the test moves forward) →
an incident under the shipped rules → the shipped escalation policy → a notification that
real apprise delivers to a local HTTP receiver.

One daemon per test, with its own small inventory of the new kinds (fire lane, septic
tank, help button, and a smoke alarm's GB 20517 signals), its own on-call file whose
every contact is a path on the receiver, and the shipped rules and policies unchanged.
Where the rules wait (a lane occupied for 5 minutes, the 09:00 digest) the test moves the
daemon's clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from sentinel.app import run_daemon
from sentinel.config.inventory import Device
from sentinel.decode.encode import encode
from sentinel.incidents.model import Incident
from sentinel.incidents.store import read_events, read_incidents
from sentinel.loading import Loaded, load_all
from sentinel.runtime import Daemon
from sentinel.types import Value

from daemon import eventually, publish_in_thread
from helpers import ROOT, SHIPPED_CONFIG
from receivers import HttpReceiver, ReceivedRequest
from servers import Mosquitto

TZ = ZoneInfo("Asia/Shanghai")

HEADER = ("id,kind,community,compound,building,floor,unit,grid,location,profile,"
          "mount_height_m,tank_height_m,resident")
DEVICES = {
    "TF-FL-0001": "fire_lane,棠芳社区,棠芳花园,3栋,,,TF-G01,棠芳花园3栋东侧消防通道",
    "TF-SPT-0001": "septic_gas,棠芳社区,棠芳花园,3栋,,,TF-G01,棠芳花园3栋化粪池",
    "PD-HLP-0001": "help_button,坪地社区,坪地花园,2栋,5,502,PD-G01,坪地花园2栋5楼502室卧室床头",
    "PD-HLP-0002": "help_button,坪地社区,坪地花园,2栋,6,602,PD-G01,坪地花园2栋6楼602室卫生间",
    "TF-SMK-0001": "smoke,棠芳社区,棠芳花园,3栋,4,401,TF-G01,棠芳花园3栋4楼401室客厅",
}

# Canonical names of the seed kinds' fields, as the sentinel-json format carries them.
SEED_FIELDS = {
    "occupied": {"path": "occupied"},
    "vehicles": {"path": "vehicles"},
    "h2s_ppm": {"path": "gas.h2s", "unit": "ppm"},
    "nh3_ppm": {"path": "gas.nh3", "unit": "ppm"},
    "help": {"path": "help"},
    "help_cancel": {"path": "help_cancel"},
    "battery_low": {"path": "battery_low"},
}

# Contacts: one per role, each a path on the receiver; property reads English.
CONTACTS = [("gw", "grid_worker", "zh"), ("pm", "property", "en"), ("do", "duty_officer", "zh"),
            ("so", "street_office", "zh"), ("ec", "elder_contact", "zh")]


class SkipClock:
    """Real time from a chosen start, plus the jumps the test makes: the daemon's loops
    keep their real pace (sockets, ticks) while rules, escalation and digests see the
    minutes or hours the test skips."""

    def __init__(self, start: float) -> None:
        self._offset = start - time.time()
        self._skipped = 0.0

    def now(self) -> float:
        return time.time() + self._offset

    def monotonic(self) -> float:
        return time.monotonic() + self._skipped

    def advance(self, seconds: float) -> None:
        self._offset += seconds
        self._skipped += seconds


def sentinel_json_with_seed_fields(dest: Path) -> Path:
    """The shipped profiles, with sentinel-json carrying the seed kinds' canonical fields
    (sentinel's own format names every canonical field as it is)."""
    shutil.copytree(ROOT / "devices" / "profiles", dest)
    path = dest / "sentinel-json.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name, mapping in SEED_FIELDS.items():
        spec["fields"].setdefault(name, mapping)
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return dest


def write_oncall(dest: Path, hooks: HttpReceiver) -> Path:
    data = {
        "timezone": "Asia/Shanghai",
        "contact": [{"id": cid, "name": cid, "role": role, "language": lang,
                     "channels": [hooks.url("json", f"/{cid}")],
                     **({"elders": ["PD-HLP-0001", "PD-HLP-0002"]} if cid == "ec" else {})}
                    for cid, role, lang in CONTACTS],
        "roster": [{"role": role, "shift": [{"members": [cid]}]}
                   for cid, role, _ in CONTACTS if role != "elder_contact"],
    }
    dest.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return dest


@dataclass
class Rig:
    """A running daemon, its clock and receiver, and how to publish to it."""

    loaded: Loaded
    daemon: Daemon
    clock: SkipClock
    hooks: HttpReceiver
    port: int
    db: Path

    def device(self, device_id: str) -> Device:
        return self.loaded.inventory[device_id]

    async def publish(self, device_id: str, ts: float | None = None, **values: Value) -> float:
        """One reading of the device, stamped with the daemon's time (or `ts`)."""
        device = self.device(device_id)
        ts = round(self.clock.now() if ts is None else ts, 3)
        messages = encode(self.loaded.profiles[device.profile], device, values, ts,
                          self.loaded.kinds)
        await publish_in_thread(self.port, messages, f"seed-{device_id}")
        return ts

    def incidents(self, name: str | None = None) -> list[Incident]:
        return [i for i in read_incidents(self.db) if name is None or i.name == name]

    async def incident(self, name: str, device_id: str) -> Incident:
        found: list[Incident] = []

        def opened() -> bool:
            found[:] = [i for i in self.incidents(name) if i.device_id == device_id]
            return bool(found)

        await eventually(opened, f"incident {name} of {device_id}", within=15)
        return found[0]

    async def received(self, count: int, within: float = 15) -> list[ReceivedRequest]:
        return await asyncio.to_thread(self.hooks.wait_for, count, within)

    async def skip(self, seconds: float) -> None:
        """Move the daemon's clock forward and wait until its timers have seen it: a rules
        tick at the new time, then two escalation passes (the second sees the events the
        tick made). Waiting on the daemon, not on the wall clock, holds on a loaded CI."""
        self.clock.advance(seconds)
        target = self.clock.now()
        await eventually(lambda: self.daemon.incidents.ticked_at >= target, "a rules tick")
        passes = self.daemon.escalation.passes
        await eventually(lambda: self.daemon.escalation.passes >= passes + 2,
                         "two escalation passes")


def sent_to(requests: list[ReceivedRequest], *paths: str) -> list[ReceivedRequest]:
    return [r for r in requests if r.path in paths]


def title(request: ReceivedRequest) -> str:
    return str(request.json["title"])


def body(request: ReceivedRequest) -> str:
    return str(request.json["message"])


@contextlib.asynccontextmanager
async def seed_daemon(tmp: Path, mosquitto: Mosquitto, start: float) -> AsyncIterator[Rig]:
    inventory = tmp / "seeds.csv"
    inventory.write_text("\n".join([HEADER, *(f"{i},{row},sentinel-json,,,"
                                              for i, row in DEVICES.items())]) + "\n",
                         encoding="utf-8")
    with HttpReceiver() as hooks:
        env = {
            "SENTINEL_MQTT__PORT": str(mosquitto.port),
            "SENTINEL_STATE_DIR": str(tmp / "state"),
            "SENTINEL_MQTT__RECONNECT__MAX_DELAY": "1",
            "SENTINEL_CONTROL__ENABLED": "false",
            "SENTINEL_NOTIFY__SENDER": "thread",
            "SENTINEL_RULES__STARTUP_GRACE": "0",
            "SENTINEL_RULES__TICK_INTERVAL": "0.2",
            "SENTINEL_ESCALATION__TICK_INTERVAL": "0.2",
            "SENTINEL_DEVICES__INVENTORY": f'["{inventory}"]',
            "SENTINEL_DEVICES__PROFILE_DIRS": f'["{sentinel_json_with_seed_fields(tmp / "p")}"]',
            "SENTINEL_ESCALATION__ONCALL": str(write_oncall(tmp / "oncall.yaml", hooks)),
        }
        loaded = load_all(SHIPPED_CONFIG, env)
        clock = SkipClock(start)
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
            yield Rig(loaded, ready.result(), clock, hooks, mosquitto.port,
                      tmp / "state" / "incidents.sqlite3")
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await task


def local(day_offset: int, hour: int, minute: int = 0) -> float:
    """A local (Asia/Shanghai) time on a day relative to today, as epoch seconds."""
    today = datetime.now(TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=day_offset, hours=hour, minutes=minute)).timestamp()


RigAt = Callable[[float], contextlib.AbstractAsyncContextManager[Rig]]


@pytest.fixture
def rig_at(tmp_path: Path, mosquitto: Mosquitto) -> RigAt:
    """The seed daemon, started with its clock at a given time."""
    return lambda start: seed_daemon(tmp_path, mosquitto, start)


# ---------------------------------------------------------------------------------------


async def test_fire_lane_occupied_five_minutes_reaches_property_and_grid_worker(
        rig_at: RigAt) -> None:
    """A lane reported occupied: nothing at 4 minutes; at 5 minutes an incident, sent to
    property management (English) and the grid worker (Chinese) after the 30 s storm
    window — and to nobody else."""
    async with rig_at(local(-1, 14)) as rig:
        await rig.publish("TF-FL-0001", occupied=True, vehicles=1, battery=80.0)
        await rig.skip(240)
        assert rig.incidents("fire_lane_blocked") == [], "not before 5 minutes"
        await rig.skip(61)
        inc = await rig.incident("fire_lane_blocked", "TF-FL-0001")
        assert inc.severity.label == "warning" and not inc.life_safety
        assert inc.detail.get("held_for") == 300
        await rig.skip(31)  # the storm window holds non-life-safety notices 30 s
        got = await rig.received(2)
        assert sorted(r.path for r in got) == ["/gw", "/pm"]
        (gw,), (pm,) = sent_to(got, "/gw"), sent_to(got, "/pm")
        assert title(gw) == "【警告】消防通道被占用 · 棠芳花园3栋"
        assert "读数: 消防通道被占用" in body(gw) and "TF-FL-0001" in body(gw)
        assert title(pm) == "[WARNING] fire lane blocked · 棠芳花园 3栋"
        assert "Reading: fire lane blocked" in body(pm)
        await asyncio.sleep(1.0)
        assert len(rig.hooks.requests) == 2, "the duty officer is not paged"


async def test_septic_tank_h2s_and_methane_page_like_a_gas_leak_and_climb(
        rig_at: RigAt) -> None:
    """A septic-tank monitor reads 15 ppm H2S and 12 %LEL CH4: its own H2S rule and the
    gas rules it inherits (septic_gas extends gas) open life-safety incidents, paged at
    once to the grid worker and property; unacknowledged, both climb to the duty officer
    after 3 minutes (policies toxic_gas, matched through kinds = [gas], and smoke_gas)."""
    async with rig_at(local(-1, 15)) as rig:
        await rig.publish("TF-SPT-0001", concentration_lel=12.0, h2s_ppm=15.0, nh3_ppm=3.0,
                          gas_type="CH4")
        h2s = await rig.incident("septic_h2s", "TF-SPT-0001")
        leak = await rig.incident("gas_leak", "TF-SPT-0001")
        assert (h2s.severity.label, h2s.life_safety) == ("critical", True)
        assert (leak.severity.label, leak.life_safety) == ("warning", True)
        assert leak.kind == "septic_gas"
        got = await rig.received(4, within=10)
        assert sorted(r.path for r in got) == ["/gw", "/gw", "/pm", "/pm"]
        titles = sorted(title(r) for r in sent_to(got, "/gw"))
        assert titles == ["【严重】化粪池硫化氢超标 · 棠芳花园3栋",
                          "【警告】燃气泄漏 · 棠芳花园3栋"]
        zh = next(r for r in got if r.path == "/gw" and "硫化氢" in title(r))
        assert "读数: 硫化氢浓度 15 ppm (阈值 ≥ 14 ppm)" in body(zh)
        en = next(r for r in got if r.path == "/pm" and "H2S" in title(r))
        assert "Reading: H2S 15 ppm (threshold ≥ 14 ppm)" in body(en)
        policies = {e.data.get("policy") for e in read_events(rig.db, incident_id=h2s.id)
                    if e.type == "escalation_started"}
        assert policies == {"toxic_gas"}
        await rig.skip(181)
        climbed = sent_to(await rig.received(6), "/do")
        assert len(climbed) == 2 and all("升级" in title(r) for r in climbed)


async def test_help_button_pages_like_sos_and_a_press_cancelled_in_time_resolves(
        rig_at: RigAt) -> None:
    """A help press is critical and life-safety: the resident's contact and the grid
    worker at once (policy elderly). Cancelled 30 s later, it resolves as cancelled and
    both hear so; a second button cancelled after the 60 s window stays open."""
    async with rig_at(local(-1, 16)) as rig:
        sent_at = time.time()
        pressed = await rig.publish("PD-HLP-0001", help=True, battery=90.0)
        inc = await rig.incident("help_pressed", "PD-HLP-0001")
        assert (inc.severity.label, inc.life_safety) == ("critical", True)
        got = await rig.received(2, within=10)
        assert sorted(r.path for r in got) == ["/ec", "/gw"]
        assert all(title(r) == "【严重】一键呼救 · 坪地花园2栋" for r in got)
        assert "读数: 一键呼救已按下" in body(got[0])
        assert max(r.received_at for r in got) - sent_at < 3, "paged within seconds"

        await rig.skip(30)
        await rig.publish("PD-HLP-0001", pressed + 30, help_cancel=True)
        await eventually(lambda: not any(i.open for i in rig.incidents("help_pressed")),
                         "the press resolved by its cancel")
        (done,) = rig.incidents("help_pressed")
        assert done.outcome == "cancelled"
        resolved = (await rig.received(4))[2:]
        assert sorted(r.path for r in resolved) == ["/ec", "/gw"]
        assert all("已解决" in title(r) for r in resolved)

        late = await rig.publish("PD-HLP-0002", help=True)
        second = await rig.incident("help_pressed", "PD-HLP-0002")
        await rig.received(6)
        await rig.skip(61)
        await rig.publish("PD-HLP-0002", late + 61, help_cancel=True)
        await eventually(lambda: any(e.type == "cancel_refused"
                                     for e in read_events(rig.db, incident_id=second.id)),
                         "the late cancel refused")
        assert next(i for i in rig.incidents("help_pressed") if i.id == second.id).open


async def test_smoke_alarm_battery_and_fault_signals_go_to_the_daily_digest(
        rig_at: RigAt) -> None:
    """GB 20517's battery_low and fault signals of a smoke alarm open maintenance
    incidents that page nobody; the next 09:00 digest lists both for property
    management."""
    # Started after today's digest time: the first pass marks the day (the first digest
    # is the next one), as a daemon running since the day before would have.
    async with rig_at(local(-1, 9, 30)) as rig:
        await rig.skip(0)
        await rig.publish("TF-SMK-0001", alarm=False, battery_low=True, fault=True,
                          battery=15.0)
        low = await rig.incident("battery_low", "TF-SMK-0001")
        fault = await rig.incident("device_fault", "TF-SMK-0001")
        assert {low.severity.label, fault.severity.label} == {"maintenance"}
        assert low.conditions.keys() >= {"battery_low_signal", "battery_low"}
        await rig.skip(60)
        assert rig.hooks.requests == [], "maintenance pages nobody"
        # To 09:00:30 the next day (23.5 h: the detector is silent, but not for 24 h).
        await rig.skip(local(0, 9) + 30 - rig.clock.now())
        # Property management gets two digests: maintenance, and the detectors silent
        # since the day before (policy offline); one message each, or both in one when
        # they leave together — each listed whole either way.

        def digest_text() -> str:
            return "\n".join(f"{title(r)}\n{body(r)}" for r in rig.hooks.requests)

        await eventually(lambda: "detector offline 5" in digest_text()
                         and "battery low 1" in digest_text(), "both digests")
        assert {r.path for r in rig.hooks.requests} == {"/pm"}
        maintenance = digest_text().split("[maintenance digest] 棠芳花园 ")[1]
        maintenance = maintenance.split("[maintenance digest]")[0]
        assert "battery low 1" in maintenance and "device fault 1" in maintenance
        assert "TF-SMK-0001 | 棠芳花园 3栋, 4F, 401" in maintenance
