"""The escalation stage: committed incident events in, queued notifications out.

It follows the incident event log from a durable cursor, so an event committed just before
a crash is still escalated after the restart. Whatever one pass decides — escalation
state, outbox rows, audit events, the cursor — is committed in one transaction of the state
database. The dispatcher (notify stage) then sends the rows and reports each result back
here, where retries, fallback channels and the next tier are decided and recorded. At start,
sends an earlier run left without a result are settled here (see `notify.outbox`).

It is also what the control API acts on (acknowledge, resolve, one-tap links).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import structlog

from sentinel.clock import Clock
from sentinel.config.model import EscalationSettings, NotifySettings
from sentinel.escalation.engine import (
    Escalation,
    EscalationEngine,
    Muter,
    Notice,
    Output,
)
from sentinel.escalation.model import Contact, OncallConfig, Policy, PolicyConfig, Role
from sentinel.escalation.roster import Rosters
from sentinel.incidents.cursor import EventCursor
from sentinel.incidents.model import Incident, IncidentEvent, Outcome
from sentinel.incidents.service import Contribution, IncidentService
from sentinel.incidents.store import StateStore, query_events
from sentinel.notify import outbox
from sentinel.notify.channels import channel_type
from sentinel.notify.dispatch import Dispatcher
from sentinel.notify.outbox import NewRow, OutboxRow
from sentinel.notify.sender import Sender, channel_label
from sentinel.notify.stages import DeliveryOutcome, hold_until
from sentinel.notify.templates import render_digest, render_notice
from sentinel.stats import NOTIFY_BUCKETS, LatencyHistogram
from sentinel.store.db import transaction
from sentinel.types import Severity

log = structlog.get_logger("sentinel.escalation")

SCHEMA = """
CREATE TABLE IF NOT EXISTS escalations (
    incident_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS used_links (
    nonce TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    used_at REAL NOT NULL
);
"""
CURSOR_KEY = "escalation_seq"
_DIGEST_KEY = "digest_sent:"
# Finished escalations stay loaded this long (a late delivery still gets its resolution).
_KEEP_STOPPED = 24 * 3600.0
_CURSOR_EVERY = 5.0
_PRUNE_EVERY = 3600.0
_LINK_KINDS = frozenset({"alert", "escalated", "repeat", "raised", "ack_expired", "unmuted",
                         "assigned"})
UNREACHABLE_INCIDENT = "notification_failed"
_STEP_EVENTS = frozenset({"escalation_step", "escalation_reminder"})



class LinkSigner(Protocol):
    """Signs one-tap links (the application injects the control API's signer)."""

    @property
    def ttl(self) -> float: ...

    def sign(self, incident_id: str, contact_id: str, now: float) -> str: ...


class LinkClaims(Protocol):
    """A verified one-tap link: which incident, for whom, and its one-time nonce."""

    @property
    def incident_id(self) -> str: ...
    @property
    def contact_id(self) -> str: ...
    @property
    def nonce(self) -> str: ...


@dataclass(slots=True)
class _Batch:
    """What one escalation decision writes, and the rows to start once it is committed."""

    events: list[IncidentEvent]
    rows: list[NewRow]
    changed: list[Escalation]
    withdraw: list[str]
    now: float
    run: int  # this daemon run (the claim on rows sent at once)
    urgent: list[OutboxRow] = field(default_factory=list)

    def write(self, conn: sqlite3.Connection) -> None:
        now = self.now
        conn.executemany(
            "INSERT OR REPLACE INTO escalations (incident_id, state, updated, data)"
            " VALUES (?, ?, ?, ?)",
            [(e.incident_id, e.state, now, json.dumps(e.to_json(), ensure_ascii=False))
             for e in self.changed])
        for incident_id in self.withdraw:
            outbox.withdraw(conn, incident_id, now)
        # Pages due now leave as soon as this commit returns (see Dispatcher.send_now):
        # they are inserted claimed by this run, so their first send needs no commit of
        # its own.
        leaving = [r for r in self.rows if r.life_safety and r.due <= now]
        outbox.insert(conn, leaving, claimed_by=self.run)
        outbox.insert(conn, [r for r in self.rows if not (r.life_safety and r.due <= now)])
        self.urgent[:] = outbox.pending_by_key(conn, [r.key for r in leaving], self.run)


class EscalationService:
    """Escalation engine + outbox + delivery results, on the state database."""

    def __init__(self, incidents: IncidentService, state: StateStore, oncall: OncallConfig,
                 policies: PolicyConfig, sender: Sender, settings: EscalationSettings,
                 notify: NotifySettings, clock: Clock, signer: LinkSigner | None = None,
                 link_base: str = "", muter: Muter | None = None) -> None:
        self._incidents = incidents
        self._state = state
        self._oncall = oncall
        self._policies = policies
        self._settings = settings
        self._notify = notify
        self._clock = clock
        self.passes = 0
        self._signer = signer
        self._link_base = link_base.rstrip("/")
        self.contacts: dict[str, Contact] = oncall.contacts()
        # Who acted is named in notices, never shown as a contact id.
        self._people = {c.id: c.name for c in self.contacts.values()}
        self.rosters = Rosters(oncall)
        self._muter: Muter = muter if muter is not None else incidents.windows
        self.engine = EscalationEngine(policies, self.rosters, self.contacts,
                                       muter=self._muter)
        self.dispatcher = Dispatcher(state, sender, self.contacts, policies.storm, notify,
                                     notify.concurrency, self, clock,
                                     on_handed=self._handed)
        self._lock = asyncio.Lock()
        self._follow_ups: set[asyncio.Task[None]] = set()
        self._cursor = EventCursor(CURSOR_KEY, clock, _CURSOR_EVERY)
        self._pruned_at = 0.0
        # Day of the last digest per policy, as committed (read once at start: the pass
        # must not queue a read behind telemetry commits on the database thread).
        self._digest_sent: dict[str, str] = {}
        # Statistics for /metrics, counted once committed: steps (and reminders) taken by
        # notice kind, and per severity the seconds from an incident's opening to the
        # first delivery that reached anyone for it.
        self.steps_taken: dict[str, int] = {}
        self.first_notification: dict[str, LatencyHistogram] = {}

    # -- start-up ---------------------------------------------------------------------

    async def start(self) -> None:
        """Create the tables, resume the climbs and the cursor."""
        def load(conn: sqlite3.Connection
                 ) -> tuple[list[Escalation], int | None, int, int, list[OutboxRow]]:
            conn.executescript(SCHEMA + outbox.SCHEMA)
            outbox.migrate(conn)
            # This run's id, committed before anything is claimed; what earlier runs
            # claimed and never settled has an unknown outcome.
            run = outbox.next_run(conn)
            unsettled = outbox.claimed_before(conn, run)
            horizon = self._clock.now() - _KEEP_STOPPED
            escs = [Escalation.from_json(json.loads(d)) for (d,) in conn.execute(
                "SELECT data FROM escalations WHERE state != 'stopped' OR updated >= ?",
                (horizon,))]
            saved = self._cursor.read(conn)
            top = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            self._digest_sent = dict(conn.execute(
                "SELECT key, value FROM meta WHERE key LIKE ?", (_DIGEST_KEY + "%",)))
            return escs, saved, int(top), run, unsettled
        escalations, cursor, top, run, unsettled = await self._state.call(load)
        self.engine.escalations = {e.incident_id: e for e in escalations}
        self.dispatcher.run_id = run
        await self._recover(unsettled)
        # First start on an existing state database: escalate what is open now rather
        # than replaying history (old, resolved incidents must not page anyone).
        self._cursor.start_at(cursor if cursor is not None else top)
        if cursor is None:
            await self._adopt_open()
        log.info("escalation_resumed", climbs=sum(e.state != "stopped"
                                                  for e in escalations),
                 cursor=self._cursor.position, contacts=len(self.contacts),
                 policies=len(self._policies.policy), run=run)

    async def _recover(self, rows: Sequence[OutboxRow]) -> None:
        """Settle the sends an earlier run claimed and never recorded (a crash).

        Their outcome is unknown. A first such row is sent once more, marked as a repeat;
        a row whose resend is unknown too is not sent again: it ends `unknown`, and the
        climb counts it as a delivery that may have reached the person (it goes on until
        someone acknowledges, so the next tier is still paged).
        """
        if not rows:
            return
        now = self._clock.now()
        out = Output()
        events: list[IncidentEvent] = []
        for row in rows:
            final = row.resent
            contact = self.contacts.get(row.contact_id)
            label = (channel_label(contact.channels[row.channel])
                     if contact is not None and row.channel < len(contact.channels) else "-")
            inc = await self._incident(row.incident_id)
            if final:
                out.extend(self.engine.on_delivery(row.incident_id, row.round, row.step,
                                                   row.contact_id, row.channel, True, now,
                                                   inc))
            log.warning("notification_unknown", incident=row.incident_id,
                        contact=row.contact_id, channel=label, kind=row.kind, step=row.step,
                        key=row.key, resend=not final)
            if inc is not None:
                events.append(IncidentEvent(inc.id, "notification_unknown", now, "sentinel",
                                            inc.severity, inc.status, {
                    "contact": row.contact_id,
                    "contact_name": contact.name if contact else None, "channel": label,
                    "kind": row.kind, "step": row.step, "key": row.key,
                    "attempt": row.attempts + 1, "resend": not final}))
        planned = self._plan(out, now, await self._incidents_of(out))
        events += planned.events

        def write(conn: sqlite3.Connection) -> None:
            outbox.recover(conn, rows, now)
            planned.write(conn)
        await self._incidents.record(events, write)
        self._committed(planned)
        await self._follow_up(out)

    async def _adopt_open(self) -> None:
        now = self._clock.now()
        out = Output()
        for inc in self._incidents.open_incidents():
            if inc.id not in self.engine.escalations:
                opened = IncidentEvent(inc.id, "opened", inc.opened_at, "sentinel",
                                       inc.severity, inc.status)
                out.extend(self.engine.on_event(opened, inc, now))
        await self._commit(out, now)

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the event stream and the timers; run the dispatcher beside it."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.dispatcher.run(), name="notify-dispatch")
            while True:
                try:
                    await self._pass()
                except Exception:  # one bad pass must not end escalation for good
                    log.exception("escalation_pass_failed")
                    await asyncio.sleep(self._settings.tick_interval)

    async def _pass(self) -> None:
        now = self._clock.now()
        due = self.engine.next_due()
        wait = self._settings.tick_interval
        if due is not None:
            wait = max(0.0, min(wait, due - now))
        events = await self._incidents.events_after(self._cursor.position, 500, wait=wait)
        async with self._lock:
            now = self._clock.now()
            out = Output()
            for event in events:
                if event.seq <= self._cursor.position:
                    continue  # decided in the commit that made it (same_commit)
                self._cursor.advance(event.seq)
                if event.incident_id.startswith("digest:"):
                    continue
                inc = await self._incident(event.incident_id)
                if inc is not None:
                    out.extend(self.engine.on_event(event, inc, now))
            open_now = {i.id: i for i in self._incidents.open_incidents()}
            out.extend(self.engine.tick(now, open_now))
            digests, marks = await self._digests(now, open_now)
            await self._commit(out, now, digests, marks)
            if now - self._pruned_at >= _PRUNE_EVERY:
                await self._prune(now)
        await self._follow_up(out)
        self.passes += 1  # status views; tests that move the clock wait for passes

    async def _follow_up(self, out: Output) -> None:
        """Commands to the incident stage; they come back as events on the stream."""
        for incident_id, timeout in out.expire_ack:
            await self._incidents.expire_acknowledgement(incident_id, timeout)
        for incident_id, step in out.unreachable:
            if incident_id.startswith(UNREACHABLE_INCIDENT):
                continue
            await self._incidents.system(UNREACHABLE_INCIDENT, True, Severity.CRITICAL,
                                         incident=incident_id, step=step)
        if out.notices or out.withdraw:
            self.dispatcher.wake()

    # -- commits ----------------------------------------------------------------------

    async def _commit(self, out: Output, now: float, digests: Sequence[NewRow] = (),
                      digest_day: Mapping[str, str] | None = None) -> None:
        incidents = await self._incidents_of(out)
        cursor_due = self._cursor.save_due
        batch = self._plan(out, now, incidents, digests)
        if not (batch.rows or batch.events or batch.changed or batch.withdraw or cursor_due
                or digest_day):
            return
        cursor = self._cursor.position
        meta = dict(digest_day or {})

        def write(conn: sqlite3.Connection) -> None:
            batch.write(conn)
            self._cursor.write(conn, cursor)
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             list(meta.items()))
        await self._incidents.record(batch.events, write)
        self._committed(batch)
        self._cursor.written(cursor)
        self._digest_sent.update(digest_day or {})

    def same_commit(self, events: Sequence[IncidentEvent], changed: Sequence[Incident],
                    now: float) -> Contribution | None:
        """Decide the first escalation step of what a rules commit changes, in that commit.

        Called by the incident stage before it commits readings' incidents: the outbox rows
        of an alarm's first tier commit in the same transaction as the alarm (one fsync
        between its arrival and its first send), and the rows due now are handed to the
        dispatcher as soon as that commit returns. Only when this stage is idle and has
        followed every earlier event (else the event-log follower takes them, in order).
        """
        if self._lock.locked() or self._cursor.position != self._incidents.last_seq:
            return None
        known = {i.id: i for i in changed}
        out = Output()
        for event in events:
            inc = known.get(event.incident_id) or self._incidents.incident(event.incident_id)
            if inc is not None:
                known[inc.id] = inc
                out.extend(self.engine.on_event(event, inc, now))
        for inc in list(known.values()):
            for member_id in inc.members:
                member = self._incidents.incident(member_id)
                if member is not None:
                    known.setdefault(member_id, member)
        batch = self._plan(out, now, known)

        def write(conn: sqlite3.Connection) -> None:
            batch.write(conn)
            top = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            self._cursor.write(conn, int(top))

        def after(stored: Sequence[IncidentEvent]) -> None:
            if stored:
                self._cursor.advance(stored[-1].seq)
                self._cursor.written(stored[-1].seq)
            self._committed(batch)
            if out.expire_ack or out.unreachable:
                task = asyncio.get_running_loop().create_task(self._follow_up(out))
                self._follow_ups.add(task)
                task.add_done_callback(self._follow_ups.discard)
            elif out.notices or out.withdraw:
                self.dispatcher.wake()

        return Contribution(batch.events, write, after)

    def _committed(self, batch: _Batch) -> None:
        # Pages due now leave as soon as their commit returns (see Dispatcher.send_now).
        self.dispatcher.send_now(batch.urgent)
        self._count_steps(batch.events)
        if batch.rows:
            self.dispatcher.wake()

    def _plan(self, out: Output, now: float, incidents: Mapping[str, Incident],
              digests: Sequence[NewRow] = ()) -> _Batch:
        """What one escalation decision writes: audit events, outbox rows, climbs."""
        # An incident withdrawn in this same pass (opened and grouped into a fire at once)
        # must not page on its own; resolution messages still go out.
        withdrawn = set(out.withdraw)
        notices = [n for n in out.notices
                   if n.kind == "resolved" or n.incident_id not in withdrawn]
        rows = [*self._rows(notices, now, incidents), *digests]
        events = [IncidentEvent(inc.id, n.type, now, "sentinel", inc.severity, inc.status,
                                dict(n.data))
                  for n in out.notes if (inc := incidents.get(n.incident_id)) is not None]
        return _Batch(events, rows, list(out.changed.values()), list(out.withdraw), now,
                      self.dispatcher.run_id)

    async def _incidents_of(self, out: Output) -> dict[str, Incident]:
        """The incidents (and group members) an Output speaks of, from memory or the file."""
        found: dict[str, Incident] = {}
        wanted = [*(n.incident_id for n in out.notices), *(n.incident_id for n in out.notes)]
        for incident_id in wanted:
            if incident_id in found:
                continue
            inc = await self._incident(incident_id)
            if inc is None:
                continue
            found[incident_id] = inc
            for member_id in inc.members:
                if member_id not in found and (m := await self._incident(member_id)):
                    found[member_id] = m
        return found

    def _rows(self, notices: Sequence[Notice], now: float,
              incidents: Mapping[str, Incident]) -> list[NewRow]:
        rows: list[NewRow] = []
        for notice in notices:
            inc = incidents.get(notice.incident_id)
            if inc is None:
                continue
            members = [m for i in inc.members if (m := incidents.get(i)) is not None]
            contact = notice.contact
            link = None
            if self._signer is not None and notice.kind in _LINK_KINDS and inc.open:
                link = f"{self._link_base}/a/{self._signer.sign(inc.id, contact.id, now)}"
            text = render_notice(notice.kind, inc, contact.language, now=now, step=notice.step,
                                 ack_url=link, members=members,
                                 maintenance=notice.maintenance, people=self._people)
            due = hold_until(notice.life_safety, now, self._policies.storm)
            rows.append(NewRow(f"{notice.key}/0", inc.id, notice.kind, notice.round,
                               notice.step, contact.id, 0, notice.life_safety, text.title,
                               text.body, now, due))
        return rows

    async def _incident(self, incident_id: str) -> Incident | None:
        found = self._incidents.incident(incident_id)
        return found if found is not None else await self._state.incident(incident_id)

    async def _prune(self, now: float) -> None:
        """Keep memory and the state database bounded on a box that runs for years."""
        self._pruned_at = now
        forgotten = self.engine.forget(now - _KEEP_STOPPED)
        keep = self._notify.keep_days * 86400
        # A used link older than the link lifetime has expired anyway: its nonce can go.
        links_before = now - (self._signer.ttl if self._signer is not None else keep)

        def prune(conn: sqlite3.Connection) -> tuple[int, int, int]:
            with transaction(conn):
                rows = outbox.prune(conn, now - keep)
                climbs = conn.execute("DELETE FROM escalations WHERE state = 'stopped' AND"
                                      " updated < ?", (now - keep,)).rowcount
                links = conn.execute("DELETE FROM used_links WHERE used_at < ?",
                                     (links_before,)).rowcount
            return rows, climbs, links
        rows, climbs, links = await self._state.call(prune)
        if forgotten or rows or climbs or links:
            log.info("escalation_pruned", climbs_in_memory=forgotten, outbox_rows=rows,
                     stopped_climbs=climbs, used_links=links)

    # -- delivery results (called by the dispatcher) ----------------------------------

    async def recorded(self, outcomes: Sequence[DeliveryOutcome],
                       write_outbox: Callable[[sqlite3.Connection], None]) -> None:
        """Commit what notify decided about deliveries (`write_outbox`) with what follows
        for the climbs: a contact reached, a tier nobody in it could be reached in (the
        next tier, now), the audit trail. Called by notify's Record stage, which groups
        the outcomes that finish while a commit runs."""
        async with self._lock:
            out = Output()
            events: list[IncidentEvent] = []
            first_reached: list[tuple[Incident, float]] = []
            for o in outcomes:
                row = o.row
                contact = self.contacts.get(row.contact_id)
                inc = await self._incident(row.incident_id)
                data: dict[str, Any] = {"contact": row.contact_id,
                                        "contact_name": contact.name if contact else None,
                                        "channel": o.label, "kind": row.kind,
                                        "step": row.step, "key": row.key,
                                        "attempt": o.attempt}
                if o.status == "sent":
                    esc = self.engine.escalations.get(row.incident_id)
                    unreached = esc is not None and not esc.reached
                    out.extend(self.engine.on_delivery(row.incident_id, row.round, row.step,
                                                       row.contact_id, row.channel, True,
                                                       o.at, inc))
                    if unreached and esc is not None and esc.reached and inc is not None:
                        first_reached.append((inc, o.at))
                    if inc is not None:
                        # The latency record's "accepted", written by the commit below.
                        self._incidents.note_delivery(inc.id, None, o.at)
                    event = "notification_sent"
                elif o.status == "retry":
                    assert o.retry_at is not None
                    data.update(error=o.result.error, retry_in=round(o.retry_at - o.at, 3))
                    event = "notification_failed"
                else:
                    data.update(error=o.result.error, final=True)
                    event = "notification_failed"
                    if o.fallback is not None:
                        data["fallback"] = o.fallback.channel
                    else:
                        out.extend(self.engine.on_delivery(
                            row.incident_id, row.round, row.step, row.contact_id,
                            row.channel, False, o.at, inc))
                log.info(event, incident=row.incident_id, contact=row.contact_id,
                         channel=o.label, kind=row.kind, step=row.step, attempt=o.attempt,
                         error=o.result.error, elapsed=round(o.result.elapsed, 4))
                if inc is not None:
                    events.append(IncidentEvent(inc.id, event, o.at, "sentinel",
                                                inc.severity, inc.status, data))
            now = max(o.at for o in outcomes)
            planned = self._plan(out, now, await self._incidents_of(out))
            events += planned.events

            def write(conn: sqlite3.Connection) -> None:
                write_outbox(conn)
                planned.write(conn)
            await self._incidents.record(events, write)
            self._committed(planned)
            for inc, at in first_reached:
                histogram = self.first_notification.get(inc.severity.label)
                if histogram is None:
                    histogram = LatencyHistogram(NOTIFY_BUCKETS)
                    self.first_notification[inc.severity.label] = histogram
                histogram.observe(max(0.0, at - inc.opened_at))
        await self._follow_up(out)

    def _handed(self, rows: Sequence[OutboxRow], at: float) -> None:
        """A send started: the latency record's "handed" (written with the next commit)."""
        for row in rows:
            self._incidents.note_delivery(row.incident_id, at, None)

    def _count_steps(self, events: Sequence[IncidentEvent]) -> None:
        for event in events:
            if event.type in _STEP_EVENTS:
                kind = str(event.data.get("kind", "-"))
                self.steps_taken[kind] = self.steps_taken.get(kind, 0) + 1

    # -- the daily digest -------------------------------------------------------------

    async def _digests(self, now: float, open_now: Mapping[str, Incident]
                       ) -> tuple[list[NewRow], dict[str, str]]:
        """Digests due now, and the markers that they were sent (committed with them)."""
        rows: list[NewRow] = []
        marks: dict[str, str] = {}
        tz = self._oncall.tz
        local = datetime.fromtimestamp(now, tz)
        for policy in self._policies.policy:
            if policy.mode != "digest" or local.time() < policy.digest_at:
                continue
            day = local.date().isoformat()
            key = _DIGEST_KEY + policy.name
            sent = self._digest_sent.get(key)
            if sent == day:
                continue
            marks[key] = day
            if sent is None:
                # The very first run: the first digest is at the next digest_at, not now.
                # (A digest missed while the daemon was down is still sent on start.)
                continue
            rows += self._digest_rows(policy, open_now, now, local)
        return rows, marks

    def _digest_rows(self, policy: Policy, open_now: Mapping[str, Incident], now: float,
                     local: datetime) -> list[NewRow]:
        listed = [i for i in open_now.values() if self.engine.policy_for(i) is policy
                  and self._muter.muted_by(i, now) is None]
        per_contact: dict[str, tuple[Contact, list[Incident], set[str]]] = {}
        for inc in listed:
            for role in policy.digest_to:
                for contact in self.rosters.on_duty(role, inc.place, now):
                    entry = per_contact.setdefault(contact.id, (contact, [], set()))
                    entry[1].append(inc)
                    entry[2].add(_area(role, inc.place))
        rows: list[NewRow] = []
        day = local.date()
        for contact, incidents, areas in per_contact.values():
            text = render_digest(sorted(incidents, key=lambda i: i.opened_at),
                                 contact.language, day=day, area=", ".join(sorted(areas)))
            digest_id = f"digest:{policy.name}"
            rows.append(NewRow(f"{digest_id}/{day.isoformat()}/{contact.id}/0", digest_id,
                               "digest", 0, 0, contact.id, 0, False, text.title, text.body,
                               now, now))
        if rows:
            log.info("digest_queued", policy=policy.name, contacts=len(rows),
                     incidents=len(listed))
        return rows

    # -- the control API's controller -------------------------------------------------

    async def acknowledge(self, incident_id: str, actor: str, note: str | None) -> Incident:
        return await self._incidents.acknowledge(incident_id, actor, note)

    async def resolve(self, incident_id: str, actor: str, outcome: Outcome, note: str | None
                      ) -> Incident:
        return await self._incidents.resolve(incident_id, actor, outcome, note)

    async def get_incident(self, incident_id: str) -> Incident | None:
        return await self._incident(incident_id)

    async def list_open(self) -> list[Incident]:
        return self._incidents.open_incidents()

    async def claim_link(self, claims: LinkClaims, now: float) -> bool:
        """Record a one-tap link as used; False if it was used before (durably)."""
        def claim(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("INSERT OR IGNORE INTO used_links (nonce, incident_id,"
                               " contact_id, used_at) VALUES (?, ?, ?, ?)",
                               (claims.nonce, claims.incident_id, claims.contact_id, now))
            return cur.rowcount == 1
        return await self._state.call(claim)

    def contact(self, contact_id: str) -> tuple[str, Literal["zh", "en"]] | None:
        found = self.contacts.get(contact_id)
        return (found.name, found.language) if found is not None else None

    async def audit(self, incident_id: str) -> list[dict[str, Any]]:
        """The incident's events and delivery attempts, oldest first, JSON-ready."""
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            events = [{"seq": e.seq, "ts": e.ts, "type": e.type, "actor": e.actor,
                       "severity": e.severity.label, "status": e.status.value, **dict(e.data),
                       **({"channel_type": channel_type(e.data["channel"])}
                          if "channel" in e.data else {})}
                      for e in query_events(conn, incident_id=incident_id, limit=100_000)]
            attempts = [{"type": "attempt", **a,
                         "channel_type": channel_type(a.get("channel_label"))}
                        for a in outbox.attempts_of(conn, incident_id)]
            return sorted([*events, *attempts], key=lambda d: float(d["ts"]))
        return await self._state.call(read)

    async def outbox_depth(self) -> int:
        return await self._state.call(outbox.pending_count)

    async def close(self, limit: float = 5.0) -> None:
        """Let deliveries in flight finish (bounded) so their results are recorded."""
        with contextlib.suppress(Exception):
            await self.dispatcher.drain(limit)


def _area(role: Role, place: Mapping[str, str]) -> str:
    if role == Role.PROPERTY:
        return place.get("compound") or "-"
    if role == Role.GRID_WORKER:
        return place.get("grid") or "-"
    return place.get("community") or "-"

