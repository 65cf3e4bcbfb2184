"""A crash between a delivery and its record, on a fake clock: every send is claimed by the
daemon run before it leaves; after a restart a send of unknown outcome goes once more,
marked 【重发】/[RESENT], and never a third time. Real state database, real apprise
deliveries to a local receiver; a "crash" abandons the services mid-delivery (nothing of
the result is recorded) and a new set of services starts on the same database."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.clock import FakeClock
from sentinel.config.model import EscalationSettings, NotifySettings, RulesSettings
from sentinel.escalation.model import OncallConfig, PolicyConfig
from sentinel.escalation.service import EscalationService
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import SCHEMA as STATE_SCHEMA
from sentinel.incidents.store import StateStore
from sentinel.notify import outbox
from sentinel.notify.outbox import NewRow
from sentinel.notify.sender import AppriseSender
from sentinel.types import Reading, Severity

from daemon import LOADED
from receivers import HttpReceiver, ReceivedRequest

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 12, 1, 14, 0, tzinfo=TZ).timestamp()
SMOKE = next(d for d in LOADED.inventory.values() if d.kind == "smoke")
# How long the receiver holds its answer while the test "crashes" the daemon.
HANG = 1.0


def _policies() -> PolicyConfig:
    return PolicyConfig.model_validate({
        "storm": {"window": 30, "max_messages": 6, "per": 600},
        "policy": [
            {"name": "smoke", "match": {"incidents": ["smoke_alarm"]},
             "step": [{"after": 0, "notify": ["grid_worker", "property"]},
                      {"after": 180, "notify": ["duty_officer"]}]},
            {"name": "system", "match": {"kinds": ["system"]},
             "step": [{"after": 0, "notify": ["duty_officer"]}]},
        ]})


def _oncall(hooks: HttpReceiver) -> OncallConfig:
    return OncallConfig.model_validate({"contact": [
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


@dataclass
class Life:
    """One run of the daemon's incident and escalation stages."""

    state: StateStore
    incidents: IncidentService
    escalation: EscalationService
    sender: AppriseSender


@dataclass
class Rig:
    path: Path
    clock: FakeClock
    hooks: HttpReceiver
    life: Life | None = None
    statements: list[str] = field(default_factory=list)

    @property
    def escalation(self) -> EscalationService:
        assert self.life is not None
        return self.life.escalation

    @property
    def incidents(self) -> IncidentService:
        assert self.life is not None
        return self.life.incidents

    async def start(self) -> None:
        state = StateStore(self.path)
        await state.__aenter__()
        await state.call(lambda conn: conn.set_trace_callback(self.statements.append))
        incidents = IncidentService(LOADED.rules, LOADED.inventory, state, self.clock,
                                    RulesSettings(startup_grace=0))
        await incidents.start()
        sender = AppriseSender(timeout=60)
        escalation = EscalationService(
            incidents, state, _oncall(self.hooks), _policies(), sender,
            EscalationSettings(tick_interval=0.01), NotifySettings(), self.clock)
        await escalation.start()
        self.life = Life(state, incidents, escalation, sender)

    async def crash(self) -> None:
        """Die like kill -9 with deliveries in flight: nothing after this is recorded."""
        assert self.life is not None
        life, self.life = self.life, None
        for task in list(life.escalation.dispatcher._tasks):
            task.cancel()
        await asyncio.sleep(0)
        await life.sender.aclose()  # its threads finish talking to the receiver
        await life.state.__aexit__(None, None, None)

    async def stop(self) -> None:
        if self.life is not None:
            await self.life.escalation.close()
            await self.life.sender.aclose()
            await self.life.state.__aexit__(None, None, None)
            self.life = None

    async def settle(self) -> None:
        """One escalation pass, then send what is due and wait for the results."""
        await self.escalation._pass()
        await self.escalation.dispatcher._dispatch_due()
        await self.escalation.dispatcher.drain(10)
        await self.escalation._pass()

    async def sent_and_held(self, count: int) -> None:
        """Start sending what is due and wait until the receiver holds `count` requests
        (their answers held back)."""
        assert self.life is not None
        await self.escalation._pass()
        await self.escalation.dispatcher._dispatch_due()
        await asyncio.to_thread(self.hooks.wait_for, count, 10.0)

    async def at(self, seconds: float) -> None:
        self.clock.advance(START + seconds - self.clock.now())
        await self.settle()

    async def alarm(self) -> None:
        await self.incidents.process(
            [Reading(SMOKE.id, "smoke", START, START, {"alarm": True})])

    def rows(self) -> list[tuple[str, str, int, int | None]]:
        conn = sqlite3.connect(self.path)
        try:
            return list(conn.execute(
                "SELECT key, status, unknown, claimed_run FROM outbox ORDER BY id"))
        finally:
            conn.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with HttpReceiver() as hooks:
        rig = Rig(tmp_path / "incidents.sqlite3", FakeClock(START), hooks)
        await rig.start()
        try:
            yield rig
        finally:
            await rig.stop()


def copies(requests: list[ReceivedRequest]) -> Counter[str]:
    return Counter(str(r.headers.get("idempotency-key")) for r in requests)


async def test_an_alarms_first_page_is_claimed_in_the_escalation_commit(rig: Rig) -> None:
    """The first pages of a smoke alarm are inserted claimed by this run, inside the
    escalation commit: no claim statement of their own before they are sent."""
    await rig.alarm()
    rig.statements.clear()
    await rig.settle()
    assert sorted(r.path for r in rig.hooks.requests) == ["/gw", "/pm"]
    trace = rig.statements
    run = rig.escalation.dispatcher.run_id
    inserts = [i for i, s in enumerate(trace) if s.startswith("INSERT OR IGNORE INTO outbox")]
    assert len(inserts) == 2
    assert all(trace[i].endswith(f", {run})") for i in inserts), [trace[i] for i in inserts]
    # Both inserts and the read-back of the claimed rows are in one transaction.
    commit = next(i for i in range(inserts[0], len(trace)) if trace[i] == "COMMIT")
    begin = max(i for i in range(inserts[0]) if trace[i] == "BEGIN")
    assert "BEGIN" not in trace[begin + 1:commit] and inserts[1] < commit
    recorded = next(i for i, s in enumerate(trace) if s.startswith("INSERT INTO attempts"))
    assert not [s for s in trace[commit:recorded] if s.startswith("UPDATE outbox")]
    assert [(status, claimed) for _, status, _, claimed in rig.rows()] == [
        ("sent", None), ("sent", None)]


async def test_each_start_is_a_new_run(rig: Rig) -> None:
    """The run id rises by one at every start and is kept in the state database."""
    first = rig.escalation.dispatcher.run_id
    await rig.stop()
    await rig.start()
    assert rig.escalation.dispatcher.run_id == first + 1
    await rig.crash()
    await rig.start()
    assert rig.escalation.dispatcher.run_id == first + 2


async def test_a_page_sent_before_a_crash_is_resent_once_marked_in_the_contacts_language(
        rig: Rig) -> None:
    """Killed while both pages were at the receiver: after the restart each is sent once
    more with the same Idempotency-Key, marked 【重发】 (zh) or [RESENT] (en); a further
    clean restart sends nothing."""
    await rig.alarm()
    rig.hooks.hang(HANG)
    await rig.sent_and_held(2)
    await rig.crash()
    rig.hooks.hang(0)
    assert [(status, unknown) for _, status, unknown, claimed in rig.rows()] == [
        ("pending", 0), ("pending", 0)]
    await rig.start()
    await rig.settle()
    requests = rig.hooks.requests
    assert len(requests) == 4
    assert set(copies(requests).values()) == {2}
    first, again = requests[:2], requests[2:]
    assert not any("重发" in str(r.json["title"]) or "RESENT" in str(r.json["title"])
                   for r in first)
    by_path = {r.path: r.json for r in again}
    assert by_path["/gw"]["title"].startswith("【重发】")
    assert by_path["/gw"]["message"].startswith("【重发】")
    assert by_path["/pm"]["title"].startswith("[RESENT] ")
    assert by_path["/pm"]["message"].startswith("[RESENT] ")
    assert [(status, unknown) for _, status, unknown, _ in rig.rows()] == [
        ("sent", 1), ("sent", 1)]
    await rig.stop()
    await rig.start()
    await rig.at(60)
    assert len(rig.hooks.requests) == 4


async def test_a_resend_of_unknown_outcome_is_not_sent_a_third_time(rig: Rig) -> None:
    """Killed during the page and again during its resend: no third copy; the rows end
    `unknown`, the audit trail says so, and the climb goes on to the duty officer."""
    await rig.alarm()
    rig.hooks.hang(HANG)
    await rig.sent_and_held(2)
    await rig.crash()
    await rig.start()
    await rig.sent_and_held(4)
    await rig.crash()
    rig.hooks.hang(0)
    await rig.start()
    await rig.settle()
    assert len(rig.hooks.requests) == 4
    assert [(status, unknown, claimed) for _, status, unknown, claimed in rig.rows()] == [
        ("unknown", 2, None), ("unknown", 2, None)]
    inc_id = rig.rows()[0][0].split("/")[0]
    audit = await rig.escalation.audit(inc_id)
    unknown = [e for e in audit if e["type"] == "notification_unknown"]
    assert sorted((e["contact"], e["resend"]) for e in unknown) == [
        ("gw", False), ("gw", True), ("pm", False), ("pm", True)]
    assert set(rig.escalation.engine.escalations[inc_id].reached) == {"gw", "pm"}
    # Nobody acknowledged: the next tier is paged on time, an ordinary first copy.
    await rig.at(181)
    assert [r.path for r in rig.hooks.requests[4:]] == ["/do"]
    assert "重发" not in str(rig.hooks.requests[4].json["title"])


async def test_a_held_summary_is_claimed_before_it_leaves_and_resent_marked(rig: Rig) -> None:
    """Notices that are not life-safety are claimed by one statement when the dispatcher
    sends them; a crash mid-send resends the summary once, its items marked."""
    for name in ("spool_nearly_full", "store_failing"):
        await rig.incidents.system(name, True, Severity.WARNING)
    await rig.settle()
    assert rig.hooks.requests == []
    rig.clock.advance(31)
    rig.hooks.hang(HANG)
    rig.statements.clear()
    await rig.sent_and_held(1)
    claims = [s for s in rig.statements if s.startswith("UPDATE outbox SET claimed_run")]
    assert len(claims) == 1
    await rig.crash()
    rig.hooks.hang(0)
    await rig.start()
    await rig.settle()
    requests = rig.hooks.requests
    assert len(requests) == 2 and requests[0].path == requests[1].path == "/do"
    assert requests[0].headers["idempotency-key"] == requests[1].headers["idempotency-key"]
    assert "重发" not in requests[0].json["message"]
    assert requests[1].json["message"].count("【重发】") == 2
    assert [status for _, status, _, _ in rig.rows()] == ["sent", "sent"]


async def test_an_outbox_of_an_older_release_gains_the_claim_columns(tmp_path: Path) -> None:
    """A state database whose outbox lacks the claim columns is migrated at start; its
    pending rows are unclaimed and still sent, unmarked."""
    path = tmp_path / "incidents.sqlite3"
    conn = sqlite3.connect(path)
    old = outbox.SCHEMA.replace(",\n    claimed_run INTEGER,\n    unknown INTEGER NOT NULL"
                                " DEFAULT 0", "")
    assert "claimed_run" not in old
    conn.executescript(STATE_SCHEMA + old)
    conn.execute("INSERT INTO outbox (key, incident_id, kind, round, step, contact_id,"
                 " channel, life_safety, title, body, created, due) VALUES"
                 " ('X-1/0.0/do/0', 'X-1', 'alert', 0, 0, 'do', 0, 1, 'T', 'B', ?, ?)",
                 (START, START))
    conn.commit()
    conn.close()
    with HttpReceiver() as hooks:
        rig = Rig(path, FakeClock(START), hooks)
        await rig.start()
        try:
            await rig.settle()
            assert [(r.path, r.json["title"]) for r in hooks.requests] == [("/do", "T")]
            assert rig.rows() == [("X-1/0.0/do/0", "sent", 0, None)]
        finally:
            await rig.stop()


# -- the outbox's promise as a model: any sequence of crashes ---------------------------

# What happens to one claimed send: its result recorded (delivered or refused), or the
# daemon dies before it left or after the receiver took it.
OUTCOMES = st.sampled_from(["ok", "refused", "crash_before_send", "crash_after_send"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(OUTCOMES, min_size=1, max_size=4), min_size=1, max_size=8))
def test_any_sequence_of_crashes_delivers_a_row_at_most_twice(
        runs: list[list[str]]) -> None:
    """Over any runs of sends and crashes, a message reaches the person at most twice
    (accepted, or taken before a crash), every copy after the first is marked, and the
    row ends finished and unclaimed."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(STATE_SCHEMA + outbox.SCHEMA)
    outbox.insert(conn, [NewRow("I-1/0.0/gw/0", "I-1", "alert", 0, 0, "gw", 0, True, "t",
                                "b", 0.0, 0.0)])
    reached: list[bool] = []  # per copy that may have arrived: was it marked?
    now = 0.0
    for plan in [*runs, []]:  # a last, clean run settles what the others left
        run = outbox.next_run(conn)
        before = outbox.claimed_before(conn, run)
        with conn:
            outbox.recover(conn, before, now)
        for outcome in plan or ["ok"]:
            now += 1.0
            due = outbox.due(conn, now)
            if not due:
                break
            row = due[0]
            assert outbox.claim(conn, [row.id], run) == {row.id}
            if outcome == "crash_before_send":
                break
            if outcome in ("ok", "crash_after_send"):
                reached.append(row.resent)
            if outcome == "crash_after_send":
                break
            if outcome == "ok":
                outbox.mark(conn, row.id, "sent", now)
            elif row.attempts + 1 >= 3:
                outbox.mark(conn, row.id, "failed", now, "refused")
            else:
                outbox.retry_later(conn, row.id, now, "refused")
    assert len(reached) <= 2, reached
    assert all(reached[1:]), reached
    ((status, claimed),) = conn.execute("SELECT status, claimed_run FROM outbox")
    assert status in ("sent", "failed", "unknown") and claimed is None
