"""The district's judgement of its boxes: reach, box_offline and whistle (吹哨), on the fake
clock, fed through the mirror's own consumer (sentinel.district.mirror) and committed by
the same incident stage a box uses."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.clock import FakeClock
from sentinel.config.model import RulesSettings
from sentinel.district import wire
from sentinel.district.config import Community
from sentinel.district.mirror import Mirror, Record, mirror_db
from sentinel.district.watch import BOX_OFFLINE, WHISTLE, Watch, judge
from sentinel.incidents.model import Status
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore, read_events
from sentinel.rules.model import RulesConfig
from sentinel.types import RawMessage, Severity

PREFIX = "sentinel"
COMMUNITIES = {"shuibei": Community(id="shuibei", name="水贝社区", phone="0755-1"),
               "tianbei": Community(id="tianbei", name="田贝社区", phone="0755-2")}


def message(community: str, leaf: str, payload: bytes | dict[str, Any], now: float,
            retain: bool = False) -> RawMessage:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return RawMessage(wire.topic(PREFIX, community, leaf), body, 1, retain, now)


def beat(community: str, now: float, last_seq: int = 0) -> bytes:
    return wire.Heartbeat("online", community, ts=now, last_seq=last_seq).payload()


def incident_state(incident_id: str, status: str, updated: float, *, life_safety: bool = True,
                   severity: str = "critical") -> dict[str, Any]:
    return {"id": incident_id, "name": "smoke_alarm", "kind": "smoke", "status": status,
            "severity": severity, "life_safety": life_safety, "opened_at": updated - 1,
            "updated_at": updated, "place": {"community": "水贝社区", "building": "3栋",
                                             "location": "3栋 2单元"}}


def event(seq: int, incident_id: str, type_: str, **data: Any) -> dict[str, Any]:
    return {"seq": seq, "incident": incident_id, "type": type_, "ts": 1.0, "actor": "sentinel",
            "severity": "critical", "status": "firing", **data}


class Rig:
    def __init__(self, clock: FakeClock, mirror: Mirror, watch: Watch,
                 incidents: IncidentService, state_path: Path) -> None:
        self.clock, self.mirror, self.watch = clock, mirror, watch
        self.incidents, self.state_path = incidents, state_path

    async def feed(self, *messages: RawMessage) -> None:
        await self.mirror.consume(list(messages))

    def open(self, name: str, target: str) -> Any:
        book = self.incidents.book
        assert book is not None
        return book.open.get(f"{name}:{target}")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock()
    db = mirror_db(tmp_path / "mirror.sqlite3")
    await db.open()
    async with StateStore(tmp_path / "incidents.sqlite3", "normal") as state:
        incidents = IncidentService(RulesConfig(), {}, state, clock, RulesSettings())
        await incidents.start()
        mirror = Mirror(db, COMMUNITIES, PREFIX, clock)
        await mirror.start()
        watch = Watch(mirror, incidents, COMMUNITIES, clock, offline_after=60.0)
        mirror.on_commit = watch.on_commit
        yield Rig(clock, mirror, watch, incidents, tmp_path / "incidents.sqlite3")
    await db.close()


def test_reach_from_heartbeat_will_bridge_and_staleness() -> None:
    started = 1000.0
    record = Record("c")
    assert judge(record, started + 10, 60, started) == "unknown"
    # Never heard for offline_after after the district started: offline.
    assert judge(record, started + 61, 60, started) == "offline"
    record.heartbeat = wire.Heartbeat("online", "c", ts=1000.0)
    record.heartbeat_at = record.last_heard = 1005.0
    assert judge(record, 1050.0, 60, started) == "online"
    assert judge(record, 1066.0, 60, started) == "offline"
    record.bridge, record.bridge_at = "0", 1010.0
    assert judge(record, 1011.0, 60, started) == "offline"
    # A heartbeat after the bridge's "0" (it came back and its "1" was lost): online.
    record.heartbeat_at = record.last_heard = 1012.0
    assert judge(record, 1013.0, 60, started) == "online"
    record.heartbeat = wire.Heartbeat.parse(wire.offline("c"))
    assert judge(record, 1013.0, 60, started) == "offline"
    record.heartbeat = wire.Heartbeat.parse(wire.stopped("c", 1014.0))
    assert judge(record, 1015.0, 60, started) == "stopped"
    # A restarted district gives a box offline_after to be heard, whatever it last knew.
    stale = Record("c", heartbeat=wire.Heartbeat("online", "c"), heartbeat_at=10.0,
                   last_heard=10.0)
    assert judge(stale, started + 5, 60, started) == "online"


async def test_box_offline_opens_on_will_and_resolves_when_back(rig: Rig) -> None:
    now = rig.clock.now()
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", now), now))
    assert rig.mirror.records["shuibei"].reach == "online"
    assert rig.open(BOX_OFFLINE, "shuibei") is None
    rig.clock.advance(5)
    await rig.feed(message("shuibei", wire.HEARTBEAT, wire.offline("shuibei"),
                           rig.clock.now(), retain=True))
    inc = rig.open(BOX_OFFLINE, "shuibei")
    assert inc is not None and inc.severity == Severity.CRITICAL and not inc.life_safety
    assert inc.place["community"] == "shuibei" and inc.detail["why"] == "will"
    assert inc.detail["phone"] == "0755-1"
    state = await rig.mirror.community("shuibei")
    assert state is not None and state.reach == "offline" and state.phone == "0755-1"
    # The board puts it first.
    assert (await rig.mirror.communities())[0].id == "shuibei"
    rig.clock.advance(5)
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", rig.clock.now()),
                           rig.clock.now()))
    assert rig.open(BOX_OFFLINE, "shuibei") is None
    found = rig.incidents.incident(inc.id)
    assert found is not None and found.status == Status.RESOLVED
    types = [e.type for e in read_events(rig.state_path) if e.incident_id == inc.id]
    assert types == ["opened", "condition_cleared", "resolved"]


async def test_staleness_and_bridge_loss_open_box_offline(rig: Rig) -> None:
    now = rig.clock.now()
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", now), now),
                   message("tianbei", wire.HEARTBEAT, beat("tianbei", now), now))
    rig.clock.advance(45)
    await rig.feed(message("tianbei", wire.HEARTBEAT, beat("tianbei", rig.clock.now()),
                           rig.clock.now()))
    rig.clock.advance(20)  # shuibei silent for 65 s, tianbei for 20 s
    await rig.watch.check()
    assert rig.open(BOX_OFFLINE, "shuibei").detail["why"] == "silent"
    assert rig.open(BOX_OFFLINE, "tianbei") is None
    await rig.feed(message("tianbei", wire.BRIDGE, b"0", rig.clock.now(), retain=True))
    assert rig.open(BOX_OFFLINE, "tianbei").detail["why"] == "bridge"
    await rig.feed(message("tianbei", wire.BRIDGE, b"1", rig.clock.now() + 1, retain=True),
                   message("tianbei", wire.HEARTBEAT, beat("tianbei", rig.clock.now()),
                           rig.clock.now() + 1))
    assert rig.open(BOX_OFFLINE, "tianbei") is None


async def test_a_clean_stop_is_a_warning_and_worsens_to_critical(rig: Rig) -> None:
    now = rig.clock.now()
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", now), now))
    await rig.feed(message("shuibei", wire.HEARTBEAT, wire.stopped("shuibei", now + 1),
                           now + 1, retain=True))
    inc = rig.open(BOX_OFFLINE, "shuibei")
    assert inc.severity == Severity.WARNING and inc.detail["reach"] == "stopped"
    # A stopped box is not judged stale: nobody expects its heartbeat.
    rig.clock.advance(600)
    await rig.watch.check()
    assert rig.open(BOX_OFFLINE, "shuibei").severity == Severity.WARNING
    # Its bridge then goes too (the box was switched off): critical, the same incident.
    await rig.feed(message("shuibei", wire.BRIDGE, b"0", rig.clock.now()))
    assert rig.open(BOX_OFFLINE, "shuibei").severity == Severity.CRITICAL
    assert rig.open(BOX_OFFLINE, "shuibei").id == inc.id


async def test_whistle_opens_at_the_street_office_step_and_resolves_on_ack(rig: Rig) -> None:
    now = rig.clock.now()
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", now), now))
    box = "20231115-0007"
    await rig.feed(
        message("shuibei", wire.EVENTS, event(1, box, "opened"), now),
        message("shuibei", wire.EVENTS, event(2, box, "escalation_step", step=0,
                                              roles=["grid_worker", "property"]), now),
        message("shuibei", f"{wire.INCIDENTS}/{box}", incident_state(box, "firing", now), now))
    assert rig.open(WHISTLE, f"shuibei/{box}") is None
    # The climb reaches the street office, nobody has acknowledged: the district whistles.
    await rig.feed(message("shuibei", wire.EVENTS, event(
        3, box, "escalation_step", step=2, roles=["street_office"]), now + 600))
    whistle = rig.open(WHISTLE, f"shuibei/{box}")
    assert whistle is not None and whistle.life_safety
    assert whistle.severity == Severity.CRITICAL
    assert whistle.detail["incident"] == box and whistle.place["building"] == "3栋"
    state = await rig.mirror.community("shuibei")
    assert state is not None and state.whistled and state.life_safety_unacknowledged == 1
    assert state.oldest_unacknowledged is not None
    assert state.oldest_unacknowledged["id"] == box
    # Acknowledged on the box (its state and event arrive): the whistle resolves.
    await rig.feed(
        message("shuibei", wire.EVENTS, event(4, box, "acknowledged", status="acknowledged"),
                now + 700),
        message("shuibei", f"{wire.INCIDENTS}/{box}",
                incident_state(box, "acknowledged", now + 700), now + 700))
    assert rig.open(WHISTLE, f"shuibei/{box}") is None
    assert not (await rig.mirror.community("shuibei")).whistled


async def test_whistle_needs_life_safety_and_a_nobody_on_duty_step_counts(rig: Rig) -> None:
    now = rig.clock.now()
    plain, urgent = "20231115-0001", "20231115-0002"
    await rig.feed(
        message("shuibei", f"{wire.INCIDENTS}/{plain}",
                incident_state(plain, "firing", now, life_safety=False), now),
        message("shuibei", f"{wire.INCIDENTS}/{urgent}",
                incident_state(urgent, "firing", now, severity="emergency"), now),
        message("shuibei", wire.EVENTS, event(1, plain, "escalation_step",
                                              roles=["street_office"]), now),
        message("shuibei", wire.EVENTS, event(2, urgent, "nobody_on_duty", step=2,
                                              roles=["street_office"]), now))
    assert rig.open(WHISTLE, f"shuibei/{plain}") is None
    whistle = rig.open(WHISTLE, f"shuibei/{urgent}")
    assert whistle is not None and whistle.severity == Severity.EMERGENCY
    # Resolved on the box: gone.
    await rig.feed(message("shuibei", f"{wire.INCIDENTS}/{urgent}",
                           incident_state(urgent, "resolved", now + 5), now + 5))
    assert rig.open(WHISTLE, f"shuibei/{urgent}") is None


async def test_decisions_survive_a_restart_without_repeating(tmp_path: Path) -> None:
    clock = FakeClock()
    for round_ in range(2):
        db = mirror_db(tmp_path / "mirror.sqlite3")
        await db.open()
        async with StateStore(tmp_path / "incidents.sqlite3", "normal") as state:
            incidents = IncidentService(RulesConfig(), {}, state, clock, RulesSettings())
            await incidents.start()
            mirror = Mirror(db, COMMUNITIES, PREFIX, clock)
            await mirror.start()
            watch = Watch(mirror, incidents, COMMUNITIES, clock, offline_after=60.0)
            mirror.on_commit = watch.on_commit
            if round_ == 0:
                await mirror.consume([message("shuibei", wire.HEARTBEAT,
                                              wire.offline("shuibei"), clock.now())])
            else:
                assert mirror.records["shuibei"].reach == "offline"
                await watch.check()
            assert incidents.book is not None
            assert len([i for i in incidents.book.open.values()
                        if i.name == BOX_OFFLINE]) == 1
            await incidents.close()
        await db.close()
    opened = [e for e in read_events(tmp_path / "incidents.sqlite3") if e.type == "opened"]
    assert len(opened) == 1


async def test_a_gap_the_box_never_fills_is_given_up_after_three_resyncs(rig: Rig) -> None:
    asked: list[tuple[str, int]] = []

    async def resync(community: str, after: int) -> None:
        asked.append((community, after))

    rig.mirror.resync = resync
    now = rig.clock.now()
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", now), now),
                   *(message("shuibei", wire.EVENTS, event(seq, "20231115-0001", "repeated"),
                             now) for seq in (1, 2, 5)))
    record = rig.mirror.records["shuibei"]
    assert (record.in_order, record.top, record.missing) == (2, 5, 2)
    for _ in range(8):
        rig.clock.advance(6)
        await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", rig.clock.now()),
                               rig.clock.now()))
        rig.mirror.check_gaps()
        await asyncio.sleep(0)
    # Asked three times from 2 (at most once per resync_interval), then gone on from 5.
    assert asked == [("shuibei", 2)] * 3
    assert (record.in_order, record.missing) == (5, 0)
    assert rig.mirror.stats.lost == 2
    await rig.watch.check()
    conn = sqlite3.connect(rig.state_path.parent / "mirror.sqlite3")
    try:
        assert conn.execute("SELECT in_order FROM mirror_communities WHERE community ="
                            " 'shuibei'").fetchone() == (5,)
    finally:
        conn.close()
    # A later event continues in order.
    await rig.feed(message("shuibei", wire.EVENTS, event(6, "20231115-0001", "repeated"),
                           rig.clock.now()))
    assert record.in_order == 6


async def test_retention_keeps_positions_and_open_incidents(rig: Rig) -> None:
    now = rig.clock.now()
    await rig.feed(*(message("shuibei", wire.EVENTS, event(seq, "20231115-0001", "repeated"), now)
                     for seq in (1, 2)),
                   message("shuibei", f"{wire.INCIDENTS}/20231115-0001",
                           incident_state("20231115-0001", "resolved", now), now),
                   message("shuibei", f"{wire.INCIDENTS}/20231115-0002",
                           incident_state("20231115-0002", "firing", now), now))
    rig.clock.advance(91 * 86400)
    await rig.feed(message("shuibei", wire.EVENTS, event(3, "20231115-0002", "opened"),
                           rig.clock.now()))
    assert await rig.mirror.prune(90) == 3
    assert [e["seq"] for e in await rig.mirror.events("shuibei")] == [3]
    assert [i["id"] for i in await rig.mirror.incidents("shuibei", open_only=False)] == [
        "20231115-0002"]
    assert rig.mirror.records["shuibei"].in_order == 3


async def test_a_step_filled_in_after_its_acknowledgement_does_not_whistle(rig: Rig) -> None:
    now = rig.clock.now()
    box = "20231115-0009"
    # Seq 4 (acknowledged) arrives before seq 3 (the street-office step), as after a gap;
    # the acknowledgement then expires on the box and its state is firing again.
    await rig.feed(
        message("shuibei", wire.EVENTS, event(4, box, "acknowledged"), now),
        message("shuibei", wire.EVENTS, event(5, box, "acknowledgement_expired"), now),
        message("shuibei", f"{wire.INCIDENTS}/{box}", incident_state(box, "firing", now), now))
    await rig.feed(message("shuibei", wire.EVENTS, event(
        3, box, "escalation_step", roles=["street_office"]), now))
    assert rig.open(WHISTLE, f"shuibei/{box}") is None
    # Its new climb reaches the street office again: now it whistles.
    await rig.feed(message("shuibei", wire.EVENTS, event(
        9, box, "escalation_step", roles=["street_office"]), now))
    assert rig.open(WHISTLE, f"shuibei/{box}") is not None


async def test_a_long_history_is_filled_batch_by_batch_without_waiting_the_interval(
        rig: Rig) -> None:
    asked: list[int] = []

    async def resync(community: str, after: int) -> None:
        asked.append(after)

    rig.mirror.resync = resync
    now = rig.clock.now()
    # A box with 1,500 events of history meets a new district.
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", now, last_seq=1500), now))
    record = rig.mirror.records["shuibei"]
    for _ in range(3):
        rig.clock.advance(5)
        rig.mirror.check_gaps()
        await asyncio.sleep(0)
        after = asked[-1]
        # The box republishes a batch of 500 (as sentinel.uplink does).
        await rig.feed(*(message("shuibei", wire.EVENTS, event(seq, "20231115-0001",
                                                                 "repeated"), rig.clock.now())
                         for seq in range(after + 1, after + 501)))
    # Every 5 s (resync_after) while each answer moved the position, not every 10 s.
    assert asked == [0, 500, 1000]
    assert (record.in_order, record.missing) == (1500, 0)
    assert rig.mirror.stats.lost == 0
