"""Storm control, rate limits and the daily digest on a fake clock: the real incident and
escalation services on a real state database, real apprise deliveries to a local receiver."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sentinel.clock import FakeClock
from sentinel.config.model import EscalationSettings, NotifySettings, RulesSettings
from sentinel.control.links import LinkClaims
from sentinel.escalation.model import OncallConfig, PolicyConfig
from sentinel.escalation.service import EscalationService
from sentinel.incidents.model import Outcome
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore
from sentinel.notify.sender import AppriseSender
from sentinel.types import Reading, Severity

from daemon import LOADED
from receivers import HttpReceiver, ReceivedRequest

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 12, 1, 14, 0, tzinfo=TZ).timestamp()
START_DAY = "20261201"
SMOKE = next(d for d in LOADED.inventory.values() if d.kind == "smoke")


@dataclass
class Rig:
    clock: FakeClock
    incidents: IncidentService
    escalation: EscalationService
    hooks: HttpReceiver

    async def settle(self) -> None:
        """One escalation pass, then send what is due and wait for the results."""
        await self.escalation._pass()
        await self.escalation.dispatcher._dispatch_due()
        await self.escalation.dispatcher.drain(10)
        await self.escalation._pass()

    async def at(self, seconds: float) -> None:
        self.clock.advance(START + seconds - self.clock.now())
        await self.settle()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with HttpReceiver() as hooks:
        oncall = OncallConfig.model_validate({"contact": [
            {"id": "do", "name": "值班", "role": "duty_officer",
             "channels": [hooks.url("json", "/do")]},
            {"id": "gw", "name": "网格员", "role": "grid_worker",
             "channels": [hooks.url("json", "/gw")]},
            {"id": "pm", "name": "物业", "role": "property", "language": "en",
             "channels": [hooks.url("json", "/pm")]},
        ], "roster": [
            {"role": "duty_officer", "shift": [{"members": ["do"]}]},
            {"role": "grid_worker", "shift": [{"members": ["gw"]}]},
            {"role": "property", "shift": [{"members": ["pm"]}]},
        ]})
        policies = PolicyConfig.model_validate({
            "storm": {"window": 30, "max_messages": 2, "per": 600},
            "policy": [
                {"name": "fire", "match": {"incidents": ["fire_confirmed"]},
                 "step": [{"after": 0, "notify": ["grid_worker", "duty_officer"]}]},
                {"name": "smoke", "match": {"incidents": ["smoke_alarm"]},
                 "step": [{"after": 0, "notify": ["grid_worker"]}]},
                {"name": "tank", "match": {"kinds": ["water_level"]},
                 "step": [{"after": 0, "notify": ["grid_worker"]}]},
                {"name": "maintenance", "match": {"severities": ["maintenance"]},
                 "mode": "digest", "digest_to": ["property"], "digest_at": "09:00"},
                {"name": "system", "match": {"kinds": ["system"]},
                 "step": [{"after": 0, "notify": ["duty_officer"]}]},
            ]})
        clock = FakeClock(START)
        async with StateStore(tmp_path / "incidents.sqlite3") as state:
            incidents = IncidentService(LOADED.rules, LOADED.inventory, state, clock,
                                        RulesSettings(startup_grace=0))
            await incidents.start()
            # Generous: this rig tests holding and merging, not timeouts (a loaded CI box).
            sender = AppriseSender(timeout=60)
            escalation = EscalationService(
                incidents, state, oncall, policies, sender,
                EscalationSettings(tick_interval=0.01), NotifySettings(), clock)
            await escalation.start()
            incidents.same_commit = escalation.same_commit  # as the app wires it
            yield Rig(clock, incidents, escalation, hooks)
            await sender.aclose()


def titles(requests: list[ReceivedRequest]) -> list[str]:
    return [str(r.json["title"]) for r in requests]


async def test_non_life_safety_notices_are_held_merged_and_rate_limited(rig: Rig) -> None:
    """Three system incidents within the window reach the duty officer as one summary at
    30 s; after two messages in 10 min the next ones wait and leave together."""
    for name in ("spool_nearly_full", "store_failing", "clock_stepped"):
        await rig.incidents.system(name, True, Severity.WARNING)
    await rig.settle()
    assert rig.hooks.requests == [], "held for the storm window"
    await rig.at(29)
    assert rig.hooks.requests == []
    await rig.at(31)
    assert [r.path for r in rig.hooks.requests] == ["/do"]
    summary = rig.hooks.requests[0].json
    assert summary["title"].startswith("3 条通知")
    for name in ("缓存将满", "store failing", "系统时钟跳变"):
        assert name in summary["message"]
    # A second message within 10 minutes is still allowed ...
    await rig.incidents.system("disk_low", True, Severity.WARNING)
    await rig.at(40)
    await rig.at(71)
    assert len(rig.hooks.requests) == 2
    # ... the third and fourth wait until the first leaves the 10-minute window.
    await rig.incidents.system("tsdb_down", True, Severity.WARNING)
    await rig.incidents.system("broker_down", True, Severity.WARNING)
    await rig.at(80)
    await rig.at(200)
    assert len(rig.hooks.requests) == 2
    await rig.at(632)
    assert len(rig.hooks.requests) == 3
    assert titles(rig.hooks.requests)[2].startswith("2 条通知")


async def test_a_burst_over_three_seconds_reaches_the_grid_worker_as_one_summary(
        rig: Rig) -> None:
    """The demo's case: tank warnings for one grid worker opening over 3 s (each held 30 s
    from its own start) leave as one summary, not four messages in three seconds; a smoke
    alarm in the middle of it reaches the same person at once, alone."""
    tanks = [d for d in LOADED.inventory.values() if d.kind == "water_level"][:4]
    for i, tank in enumerate(tanks):
        await rig.at(i)
        height = tank.settings.tank_height_m or 4.0
        await rig.incidents.process([Reading(tank.id, "water_level", START + i, START + i,
                                             {"level": round(0.5 * height, 3)})])
        if i == 2:
            await rig.incidents.process([Reading(SMOKE.id, "smoke", START + i, START + i,
                                                 {"alarm": True})])
        await rig.settle()
    assert [r.path for r in rig.hooks.requests] == ["/gw"], "the first page at once"
    assert "烟感报警" in titles(rig.hooks.requests)[0]
    for second in (29.5, 30, 31, 32, 33, 45):
        await rig.at(second)
    held = rig.hooks.requests[1:]
    assert [r.path for r in held] == ["/gw"], titles(held)
    assert titles(held)[0].startswith("4 条通知")
    assert all(f"sentinel ack {START_DAY}-000{n}" in str(held[0].json["message"])
               for n in (1, 2, 3, 5)), "the three tanks before the smoke alarm and the one after"


async def test_life_safety_is_never_held_behind_a_storm(rig: Rig) -> None:
    """While system notices are held, a smoke alarm reaches the grid worker at once."""
    await rig.incidents.system("spool_nearly_full", True, Severity.WARNING)
    await rig.settle()
    await rig.incidents.process([Reading(SMOKE.id, "smoke", START, START, {"alarm": True})])
    await rig.settle()
    assert [r.path for r in rig.hooks.requests] == ["/gw"]
    assert "烟感报警" in titles(rig.hooks.requests)[0]


async def test_an_alarm_and_its_first_page_commit_once_before_the_send(rig: Rig) -> None:
    """The smoke alarm and its first tier's outbox row are one transaction: the page is on
    the wire after that single commit, before the escalation follower has run at all."""
    rig.hooks.hang(2.0)  # the receiver holds its answer: no result commit meanwhile
    state = rig.escalation._state
    before = state.commits
    await rig.incidents.process([Reading(SMOKE.id, "smoke", START, START, {"alarm": True})])
    sent = await asyncio.to_thread(rig.hooks.wait_for, 1, 10)
    assert [r.path for r in sent] == ["/gw"]
    assert state.commits - before == 1, "one durable write between the alarm and its page"
    types = [e.type for e in await rig.incidents.events_after(0)]
    assert types[:3] == ["opened", "escalation_started", "escalation_step"], types
    rig.hooks.hang(0.0)
    await rig.escalation.dispatcher.drain(10)
    await rig.escalation._pass()
    assert [r.path for r in rig.hooks.requests] == ["/gw"], "the follower did not page again"


async def test_alarms_grouped_into_a_fire_as_they_open_page_only_as_the_fire(rig: Rig
                                                                             ) -> None:
    """Two detectors of one building in one batch: the confirmed fire pages; the two
    alarms, grouped into it in the same pass, do not page on their own."""
    pair = [d for d in LOADED.inventory.values() if d.kind == "smoke"
            and (d.compound, d.building) == (SMOKE.compound, SMOKE.building)][:2]
    assert len(pair) == 2
    await rig.incidents.process([Reading(d.id, "smoke", START, START, {"alarm": True})
                                 for d in pair])
    await rig.settle()
    assert sorted(r.path for r in rig.hooks.requests) == ["/do", "/gw"]
    assert all("确认火情" in t for t in titles(rig.hooks.requests))


async def test_maintenance_goes_into_the_daily_digest_at_nine(rig: Rig) -> None:
    """A low battery pages nobody; at 09:00 the next day property management gets one
    digest (in its language) listing it; only once that day."""
    await rig.incidents.process([Reading(SMOKE.id, "smoke", START, START,
                                         {"alarm": False, "battery": 12.0})])
    await rig.settle()
    await rig.at(3600)
    assert rig.hooks.requests == []
    nine = datetime(2026, 12, 2, 9, 0, tzinfo=TZ).timestamp() - START
    await rig.at(nine - 1)
    assert rig.hooks.requests == []
    await rig.at(nine + 1)
    await rig.at(nine + 40)  # past the storm window: the digest is not life-safety
    assert [r.path for r in rig.hooks.requests] == ["/pm"]
    digest = rig.hooks.requests[0].json
    assert SMOKE.id in digest["message"] and "battery" in digest["message"].lower()
    await rig.at(nine + 3600)
    assert len(rig.hooks.requests) == 1, "one digest a day"


async def test_finished_work_is_pruned_but_the_attempts_stay(rig: Rig) -> None:
    """After `keep_days` the sent message rows, the stopped climb and the used link go;
    the delivery attempts (the audit record) stay; the engine forgets the climb."""
    await rig.incidents.process([Reading(SMOKE.id, "smoke", START, START, {"alarm": True})])
    await rig.settle()
    inc = rig.incidents.open_incidents()[0]
    claims = LinkClaims(inc.id, "gw", START + 3600, "nonce-1")
    assert await rig.escalation.claim_link(claims, START + 10)
    await rig.incidents.resolve(inc.id, "陈值班", Outcome.HANDLED, "checked")
    await rig.at(60)
    assert len(rig.hooks.requests) == 2  # the alert, then the resolution

    def counts(conn: sqlite3.Connection) -> tuple[int, ...]:
        return tuple(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                     for table in ("outbox", "attempts", "escalations", "used_links"))

    state = rig.escalation._state
    assert await state.call(counts) == (2, 2, 1, 1)
    # The link is spent: claiming it again is refused until it has expired anyway.
    assert not await rig.escalation.claim_link(claims, START + 70)
    await rig.at(31 * 86400)
    assert await state.call(counts) == (0, 2, 0, 0)
    assert inc.id not in rig.escalation.engine.escalations
