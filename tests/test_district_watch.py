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
from sentinel.district.watch import BOX_OFFLINE, WHISTLE, Watch, WhistleAcks, box_actor, judge
from sentinel.incidents.model import Outcome, Status
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore, read_events
from sentinel.notify.templates import render_notice
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
                 incidents: IncidentService, state_path: Path,
                 state: StateStore | None = None) -> None:
        self.clock, self.mirror, self.watch = clock, mirror, watch
        self.incidents, self.state_path = incidents, state_path
        self.state = state

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
        watch = Watch(mirror, incidents, COMMUNITIES, clock, offline_after=60.0, store=state)
        mirror.on_commit = watch.on_commit
        yield Rig(clock, mirror, watch, incidents, tmp_path / "incidents.sqlite3", state)
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


async def test_box_offline_waits_its_grace_so_a_blip_pages_nobody(rig: Rig) -> None:
    rig.watch._grace = 30.0
    now = rig.clock.now()
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", now), now))
    # A 4G blip: the bridge's will, then the bridge back 10 s later.
    await rig.feed(message("shuibei", wire.BRIDGE, b"0", now + 1))
    assert rig.mirror.records["shuibei"].reach == "offline"  # the board shows it at once
    assert rig.open(BOX_OFFLINE, "shuibei") is None
    rig.clock.advance(10)
    await rig.watch.check()
    assert rig.open(BOX_OFFLINE, "shuibei") is None
    await rig.feed(message("shuibei", wire.BRIDGE, b"1", rig.clock.now()),
                   message("shuibei", wire.HEARTBEAT, beat("shuibei", rig.clock.now()),
                           rig.clock.now()))
    assert rig.mirror.records["shuibei"].reach == "online"
    # A real outage: box offline once it has lasted the grace, counted from its start.
    rig.clock.advance(5)
    await rig.feed(message("shuibei", wire.BRIDGE, b"0", rig.clock.now()))
    rig.clock.advance(29)
    await rig.watch.check()
    assert rig.open(BOX_OFFLINE, "shuibei") is None
    rig.clock.advance(2)
    await rig.watch.check()
    inc = rig.open(BOX_OFFLINE, "shuibei")
    assert inc is not None and inc.severity == Severity.CRITICAL
    # Its place names the community (the CLI's 地点 column is compound + building).
    assert inc.place["compound"] == "水贝社区"


async def _whistle(rig: Rig, box: str, first_seq: int = 1) -> Any:
    now = rig.clock.now()
    await rig.feed(
        message("shuibei", wire.EVENTS, event(first_seq, box, "opened"), now),
        message("shuibei", f"{wire.INCIDENTS}/{box}", incident_state(box, "firing", now), now),
        message("shuibei", wire.EVENTS, event(first_seq + 1, box, "escalation_step", step=2,
                                              roles=["street_office"]), now))
    return rig.open(WHISTLE, f"shuibei/{box}")


async def test_a_whistle_a_person_closed_is_not_raised_again_for_the_same_climb(
        rig: Rig, tmp_path: Path) -> None:
    now = rig.clock.now()
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", now), now))
    box = "20231115-0007"
    whistle = await _whistle(rig, box)
    assert whistle is not None and whistle.detail["street_seq"] == 2
    # Its place and its notice say which community, what alarm and its id on the box.
    assert whistle.place["compound"] == "水贝社区"
    assert "烟感报警" in whistle.place["location"] and box in whistle.place["location"]
    page = render_notice("alert", whistle, "zh", now=now)
    assert "吹哨: 烟感报警无人确认" in page.title and "水贝社区" in page.title
    en = render_notice("alert", whistle, "en", now=now)
    assert "smoke alarm" in en.title and "smoke alarm" in en.body and "烟感报警" not in en.body
    assert f"sentinel ack {whistle.id} -c district.toml" in page.body
    # A person closes it; the box's alarm is still unacknowledged (its ack is on its way).
    await rig.incidents.resolve(whistle.id, "so-a", Outcome.HANDLED)
    rig.clock.advance(5)
    await rig.watch.check()
    assert rig.open(WHISTLE, f"shuibei/{box}") is None
    # Nor after a restart of the district (what was whistled is read back).
    assert rig.state is not None
    again = Watch(rig.mirror, rig.incidents, COMMUNITIES, rig.clock, offline_after=60.0,
                  store=rig.state)
    await again.check()
    assert rig.open(WHISTLE, f"shuibei/{box}") is None
    # The box acknowledged it, the acknowledgement expired, the climb reached the street
    # office again: that is a new whistle.
    t = rig.clock.now()
    await rig.feed(
        message("shuibei", wire.EVENTS, event(3, box, "acknowledged", status="acknowledged"),
                t),
        message("shuibei", f"{wire.INCIDENTS}/{box}", incident_state(box, "acknowledged", t),
                t))
    await again.check()
    assert rig.open(WHISTLE, f"shuibei/{box}") is None
    await rig.feed(
        message("shuibei", f"{wire.INCIDENTS}/{box}", incident_state(box, "firing", t + 1),
                t + 1),
        message("shuibei", wire.EVENTS, event(4, box, "escalation_step", step=2,
                                              roles=["street_office"]), t + 1))
    await again.check()
    renewed = rig.open(WHISTLE, f"shuibei/{box}")
    assert renewed is not None and renewed.id != whistle.id
    assert renewed.detail["street_seq"] == 4


async def test_a_whistle_ended_on_the_box_says_who_acknowledged_it(rig: Rig) -> None:
    now = rig.clock.now()
    box = "20231115-0008"
    whistle = await _whistle(rig, box)
    assert whistle is not None
    state = incident_state(box, "acknowledged", now + 60)
    state.update(acknowledged_by="district:so-b", acknowledged_at=now + 60)
    await rig.feed(message("shuibei", f"{wire.INCIDENTS}/{box}", state, now + 60),
                   message("shuibei", wire.EVENTS, event(3, box, "acknowledged",
                                                         status="acknowledged"), now + 60))
    assert rig.open(WHISTLE, f"shuibei/{box}") is None
    ended = rig.incidents.incident(whistle.id)
    assert ended is not None and ended.outcome == Outcome.BOX_ACKNOWLEDGED.value
    zh = render_notice("resolved", ended, "zh", now=now + 60, people={"so-b": "胡勇"})
    assert "社区告警已由 胡勇 (街道)" in zh.body and "确认" in zh.body
    assert "系统" not in zh.body and "已恢复正常" not in zh.body
    en = render_notice("resolved", ended, "en", now=now + 60, people={"so-b": "胡勇"})
    assert "acknowledged by 胡勇 (street office)" in en.body
    # A person of the community: named by id with the community's name.
    other = "20231115-0009"
    whistle = await _whistle(rig, other, first_seq=4)
    state = incident_state(other, "resolved", now + 70)
    state.update(resolved_by="gw-02", resolved_at=now + 70)
    await rig.feed(message("shuibei", f"{wire.INCIDENTS}/{other}", state, now + 70))
    ended = rig.incidents.incident(whistle.id)
    assert ended is not None and ended.outcome == Outcome.BOX_RESOLVED.value
    text = render_notice("resolved", ended, "zh", now=now + 70).body
    assert "社区告警已由 gw-02 (水贝社区) 于" in text and "关闭" in text


def test_a_planned_stop_is_worded_as_one() -> None:
    from sentinel.incidents.model import Incident
    inc = Incident("D20231115-0001", "box_offline:shuibei", "box_offline", "shuibei",
                   "district", Severity.WARNING, 1.0, {"compound": "水贝社区"},
                   detail={"reach": "stopped"})
    zh = render_notice("alert", inc, "zh", now=2.0)
    assert "计划停机" in zh.title and "新发生" not in zh.body and "计划重启" in zh.body
    en = render_notice("alert", inc, "en", now=2.0)
    assert "planned" in en.title and "planned restart" in en.body
    assert not any("\u4e00" <= c <= "\u9fff" for c in en.title.replace("水贝社区", ""))
    # An outage (critical) keeps its urgent wording.
    inc.severity, inc.detail = Severity.CRITICAL, {"reach": "offline"}
    assert "新发生" in render_notice("alert", inc, "zh", now=2.0).body


class _Sender:
    def __init__(self, reply: dict[str, Any] | None) -> None:
        self.reply = reply
        self.sent: list[tuple[str, dict[str, Any], str]] = []
        self.types: list[str] = []

    async def __call__(self, community: str, type_: str, fields: Any, command_id: str
                       ) -> dict[str, Any] | None:
        self.sent.append((community, dict(fields), command_id))
        self.types.append(type_)
        return self.reply


async def test_acting_on_a_whistle_acknowledges_the_box_alarm_once_as_that_person(
        rig: Rig) -> None:
    now = rig.clock.now()
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", now), now))
    box = "20231115-0010"
    whistle = await _whistle(rig, box)
    assert whistle is not None and rig.state is not None
    sender = _Sender({"ok": True, "id": "x"})
    acks = WhistleAcks(rig.incidents, rig.state, rig.mirror, COMMUNITIES, sender,
                       {"so-b": "胡勇"}, rig.clock)
    start = rig.incidents.last_seq
    # 我去处理: an acknowledgement and an assignment in one commit: one command.
    await rig.incidents.assign(whistle.id, "so-b", "so-b", acknowledge=True)
    events = await rig.incidents.events_after(start)
    await acks.handle(events)
    assert len(sender.sent) == 1
    community, fields, command_id = sender.sent[0]
    assert community == "shuibei" and fields == {"incident": box, "actor": "district:so-b",
                                                 "name": "胡勇"}
    # Seen again (a restart before the cursor was saved): the same command id, which the
    # box executes once.
    await acks.handle(events)
    assert sender.sent[1][2] == command_id
    # The system's own acts (the whistle ended by the box) send nothing.
    mark = rig.incidents.last_seq
    await rig.incidents.resolve(whistle.id, "district:so-b", Outcome.BOX_ACKNOWLEDGED)
    await acks.handle(await rig.incidents.events_after(mark))
    assert len(sender.sent) == 2


async def test_a_whistle_ack_the_box_cannot_take_is_said_with_the_phone(rig: Rig) -> None:
    box = "20231115-0011"
    whistle = await _whistle(rig, box)
    assert whistle is not None and rig.state is not None
    acks = WhistleAcks(rig.incidents, rig.state, rig.mirror, COMMUNITIES, _Sender(None),
                       {}, rig.clock)
    start = rig.incidents.last_seq
    await rig.incidents.acknowledge(whistle.id, "cli:root")
    await acks.handle(await rig.incidents.events_after(start))
    notes = [e for e in await rig.incidents.events_after(start)
             if e.type == "noted" and e.incident_id == whistle.id]
    assert len(notes) == 1
    assert "0755-1" in notes[0].data["text"] and box in notes[0].data["text"]
    assert acks.failed == 1


def test_district_people_are_named_as_the_box_records_them() -> None:
    people = {"so-b": "胡勇"}
    assert box_actor("so-b", people) == ("district:so-b", "胡勇")
    assert box_actor("board:so-b", people) == ("district:so-b", "胡勇")
    assert box_actor("cli:root", people) == ("district:cli-root", "root")


async def test_a_silent_box_is_paged_once_unheard_for_its_grace_not_after_two_waits(
        rig: Rig) -> None:
    """A box that just goes quiet (power cut behind a half-open link: no will, no bridge
    notice yet) is judged offline after offline_after without a heartbeat; it has been
    unreachable since it was last heard, so the grace has run by then (offline_after ≥
    grace): paged at once, not offline_after + grace after its last word."""
    rig.watch._grace = 3.0
    now = rig.clock.now()
    await rig.feed(message("shuibei", wire.HEARTBEAT, beat("shuibei", now), now))
    rig.clock.advance(60.0 + 0.5)  # the rig's offline_after
    await rig.watch.check()
    assert rig.mirror.records["shuibei"].reach == "offline"
    inc = rig.open(BOX_OFFLINE, "shuibei")
    assert inc is not None and inc.severity == Severity.CRITICAL


async def test_a_note_on_a_whistle_reaches_the_box_alarm_as_that_person(rig: Rig) -> None:
    """The street office's note on a whistle (its link page's feedback) is also a note on
    the box's alarm, once per district event; a note the box cannot take is said, with the
    phone; the system's own notes are not sent."""
    box = "20231115-0012"
    whistle = await _whistle(rig, box)
    assert whistle is not None and rig.state is not None
    sender = _Sender({"ok": True, "id": "x"})
    acks = WhistleAcks(rig.incidents, rig.state, rig.mirror, COMMUNITIES, sender,
                       {"so-b": "胡勇"}, rig.clock)
    start = rig.incidents.last_seq
    await rig.incidents.note(whistle.id, "so-b", "消防车已到达小区门口")
    events = await rig.incidents.events_after(start)
    await acks.handle(events)
    assert sender.types == ["note"]
    community, fields, command_id = sender.sent[0]
    assert community == "shuibei" and fields == {
        "incident": box, "actor": "district:so-b", "name": "胡勇", "text": "消防车已到达小区门口"}
    await acks.handle(events)  # seen again: the same command id
    assert sender.sent[1][2] == command_id

    silent = _Sender(None)
    acks = WhistleAcks(rig.incidents, rig.state, rig.mirror, COMMUNITIES, silent, {},
                       rig.clock)
    mark = rig.incidents.last_seq
    await rig.incidents.note(whistle.id, "so-b", "再次确认")
    await acks.handle(await rig.incidents.events_after(mark))
    said = [e for e in await rig.incidents.events_after(mark)
            if e.type == "noted" and e.actor == "sentinel"]
    assert len(said) == 1 and "0755-1" in said[0].data["text"]
    # That note of the system's own is not sent on.
    await acks.handle(said)
    assert len(silent.sent) == 1
