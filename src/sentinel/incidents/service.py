"""The rules-and-incidents stage: evaluate readings before they are acknowledged, own the
timers, persist every change, and offer the committed event stream to other stages.

Ordering is the guarantee: the ingest stage awaits `process()` before it acknowledges a
batch, and `process()` returns only after any new or changed incident is committed. A
crash therefore either loses nothing (the broker redelivers) or replays readings whose
effect is already stored (rule state makes the replay a no-op).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from sentinel.clock import Clock
from sentinel.config.inventory import Device
from sentinel.config.model import LatencySettings, RulesSettings
from sentinel.incidents import latency
from sentinel.incidents.model import (
    SYSTEM_TARGET,
    Incident,
    IncidentBook,
    IncidentEvent,
    Outcome,
)
from sentinel.incidents.store import Changes, StateStore, end_window, insert_window
from sentinel.incidents.windows import Window, Windows
from sentinel.rules.engine import RuleEngine, Signal
from sentinel.rules.model import RulesConfig, StateRule
from sentinel.stats import ALARM_BUCKETS, LatencyHistogram
from sentinel.store.db import transaction
from sentinel.types import Reading, Severity, Value

log = structlog.get_logger("sentinel.incidents")

# Soft state (last-seen times, rate samples) is written at least this often.
_SOFT_FLUSH = 5.0
# Recent committed events kept in memory for subscribers; older ones come from the file.
_RECENT = 4096


@dataclass(frozen=True, slots=True)
class Contribution:
    """What a later stage adds to a rules commit: its audit events, its own writes (run in
    the same transaction), and what to do once the commit has returned (the stored events
    with their seq)."""

    events: Sequence[IncidentEvent]
    write: Callable[[sqlite3.Connection], None]
    after: Callable[[Sequence[IncidentEvent]], None]


class SameCommit(Protocol):
    """A later stage that decides on a rules commit's events inside that commit."""

    def __call__(self, events: Sequence[IncidentEvent], changed: Sequence[Incident],
                 now: float) -> Contribution | None: ...


class IncidentService:
    """Readings and ticks → rule engine → incident book → one commit → event stream."""

    def __init__(self, rules: RulesConfig, inventory: Mapping[str, Device], store: StateStore,
                 clock: Clock, settings: RulesSettings,
                 latency_limits: LatencySettings | None = None,
                 windows: Windows | None = None, id_prefix: str = "") -> None:
        self._rules = rules
        self._id_prefix = id_prefix
        self._inventory = inventory
        self._store = store
        self._clock = clock
        self.ticked_at = -math.inf
        self._settings = settings
        self._lock = asyncio.Lock()
        # Shared with the escalation stage, which asks it whether a step is muted.
        self.windows = windows if windows is not None else Windows()
        self._data_version = -1
        self._recent: collections.deque[IncidentEvent] = collections.deque(maxlen=_RECENT)
        # Incidents as last committed, so views can still show one just resolved.
        self._written: collections.OrderedDict[str, Incident] = collections.OrderedDict()
        self._new_events = asyncio.Event()
        self.last_seq = 0
        self.engine: RuleEngine | None = None
        self.book: IncidentBook | None = None
        self._last_soft_flush = 0.0
        self.evaluated = 0
        # Per process() batch: lock wait, evaluation and the commit (what the gate waits for).
        self.eval_seconds = LatencyHistogram()
        # The escalation stage's first step, committed with the alarm (set by the app).
        self.same_commit: SameCommit | None = None
        self._urgent = urgent_checks(rules)
        # The per-alert record (sentinel.incidents.latency): incidents whose stage times
        # changed since they were last written go out with the next commit (never a commit
        # of their own); events of budget breaches likewise.
        # Without limits (a service with no notification stage behind it, as in tests of
        # this stage alone) stage times are recorded but no budget is checked.
        self._check_budgets = latency_limits is not None
        self._limits = latency_limits if latency_limits is not None else LatencySettings()
        self._timing_dirty: set[str] = set()
        self._pending_events: list[IncidentEvent] = []
        # Budgets already reported per incident ("accepted", "handed"): once each.
        self._breached: dict[str, set[str]] = {}
        # For /metrics, by life_safety "true"/"false": receipt -> first handed to a
        # channel, and device time (or receipt) -> first delivery accepted.
        self.forward_seconds: dict[str, LatencyHistogram] = {}
        self.alarm_seconds: dict[str, LatencyHistogram] = {}

    async def start(self) -> None:
        """Resume from the state database."""
        snapshot = await self._store.load()
        now = self._clock.now()
        self.engine = RuleEngine(self._rules, self._inventory, now,
                                 self._settings.startup_grace)
        self.engine.restore(snapshot.states, snapshot.last_seen)
        self.windows.replace(await self._store.windows(now))
        self.book = IncidentBook(self._rules, self._inventory, self.windows.all,
                                 snapshot.next_number, self._id_prefix)
        self.book.restore(snapshot.incidents, snapshot.flaps)
        self.last_seq = snapshot.last_seq
        open_ids = [i.id for i in self.book.open.values()]
        if open_ids:
            for incident_id, budget in await self._store.call(
                    lambda conn: _breaches_of(conn, open_ids)):
                self._breached.setdefault(incident_id, set()).add(budget)
        self._last_soft_flush = self._clock.monotonic()
        log.info("incidents_resumed", open=len(self.book.open), rule_states=len(snapshot.states),
                 devices_seen=len(snapshot.last_seen), last_seq=self.last_seq)

    # -- the ingest gate --------------------------------------------------------------

    async def process(self, readings: Sequence[Reading]) -> None:
        """Evaluate readings; return once their incidents are durably stored.

        Readings that may raise a life-safety incident (an alarm flag set, a gas
        concentration...) go through the rules and commit first, with every reading of
        their devices (a device's readings stay in order); the batch's telemetry follows.
        """
        started = time.perf_counter()
        urgent = self._urgent
        devices = {r.device_id for r in readings if (checks := urgent.get(r.kind))
                   and any(check(r.values) for check in checks)}
        if devices and len(devices) < len(readings):
            first = [r for r in readings if r.device_id in devices]
            rest = [r for r in readings if r.device_id not in devices]
            await self._evaluate(first)
            if rest:
                await self._evaluate(rest)
        else:
            await self._evaluate(readings)
        self.eval_seconds.observe(time.perf_counter() - started)

    async def _evaluate(self, readings: Sequence[Reading]) -> None:
        engine, book = self._require()
        async with self._lock:
            now = self._clock.now()
            signals = engine.on_readings(readings)
            self.evaluated += len(readings)
            if signals:
                first_new = book.next_number
                book.apply(signals, now)
                self._stamp_opened(signals, first_new, now)
            if book.has_changes or engine.has_significant_changes:
                await self._commit(joined=True)

    # -- timers -----------------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate timers every tick until cancelled."""
        while True:
            await asyncio.sleep(self._settings.tick_interval)
            try:
                await self.tick()
            except Exception:  # a defect in one tick must not stop the alarms of the next
                log.exception("incident_tick_failed")

    async def tick(self) -> None:
        engine, book = self._require()
        async with self._lock:
            now = self._clock.now()
            version = await self._store.data_version()
            if version != self._data_version:
                self._data_version = version
                self.windows.replace(await self._store.windows(now))
            signals = engine.tick(now)
            if signals:
                first_new = book.next_number
                book.apply(signals, now)
                self._stamp_opened(signals, first_new, now)
            book.tick(now)
            self._check_waiting(now)
            soft_due = self._clock.monotonic() - self._last_soft_flush >= _SOFT_FLUSH
            if book.has_changes or engine.has_significant_changes or soft_due \
                    or self._pending_events:
                await self._commit(joined=True)
            # The clock time the timers last saw (status views; tests that move the clock).
            self.ticked_at = now

    async def close(self) -> None:
        """Write everything still in memory (used at shutdown)."""
        if self.engine is None:
            return
        async with self._lock:
            await self._commit(force_seen=True)

    async def _commit(self, force_seen: bool = False,
                      extra_events: Sequence[IncidentEvent] = (),
                      extra: Callable[[sqlite3.Connection], None] | None = None,
                      joined: bool = False) -> None:
        engine, book = self._require()
        dirty = engine.take_dirty(force_seen)
        incidents, events, flaps = book.take_changes()
        incidents += self._take_timing_dirty(incidents)
        events += self._pending_events
        self._pending_events = []
        joining = None
        if joined and events and self.same_commit is not None:
            joining = self.same_commit(events, incidents, self._clock.now())
            if joining is not None:
                extra_events, extra = joining.events, joining.write
        stored = await self._store.commit(Changes(
            incidents=incidents, events=[*events, *extra_events], states=dirty.states,
            last_seen=dirty.last_seen, flaps=flaps, extra=extra))
        self._last_soft_flush = self._clock.monotonic()
        self._stamp_committed(incidents)
        for inc in incidents:
            self._written[inc.id] = inc
            self._written.move_to_end(inc.id)
        while len(self._written) > _RECENT:
            self._written.popitem(last=False)
        for event in stored:
            self._recent.append(event)
            self.last_seq = event.seq
            log.info("incident_" + event.type, incident=event.incident_id,
                     severity=event.severity.label, status=event.status.value,
                     actor=event.actor, **_loggable(event.data))
        if joining is not None:
            # Before followers wake: they must see these events as decided already.
            joining.after(stored)
        if stored:
            self._new_events.set()
            self._new_events = asyncio.Event()

    # -- the per-alert record (GB 50440) ----------------------------------------------

    def _stamp_opened(self, signals: Sequence[Signal], first_new: int, now: float) -> None:
        """Start the record of each incident these signals opened (and of new groups)."""
        _, book = self._require()
        for s in signals:
            if s.change not in ("active", "event"):
                continue
            inc = book.open.get(f"{s.incident}:{s.device_id}")
            if inc is None or inc.timing or _number(inc.id) < first_new:
                continue
            # A decoder gives a reading without a time of its own its receipt time.
            if s.received_at is not None and s.ts != s.received_at:
                inc.timing["device"] = s.ts
            inc.timing["received"] = s.received_at if s.received_at is not None else now
            for group_id in inc.groups:
                group = book.by_id.get(group_id)
                if group is not None and not group.timing and _number(group.id) >= first_new:
                    # A group's alarm is the reading that completed it.
                    group.timing.update(
                        {k: v for k, v in inc.timing.items() if k in ("device", "received")})

    def _stamp_system(self, name: str, first_new: int, now: float) -> None:
        _, book = self._require()
        inc = book.open.get(f"{name}:{SYSTEM_TARGET}")
        if inc is not None and not inc.timing and _number(inc.id) >= first_new:
            inc.timing["received"] = now

    def _stamp_committed(self, incidents: Sequence[Incident]) -> None:
        # Known only once the commit returned: written with the incident's next commit.
        at = self._clock.now()
        for inc in incidents:
            if "received" in inc.timing and "committed" not in inc.timing:
                inc.timing["committed"] = at
                self._timing_dirty.add(inc.id)

    def _take_timing_dirty(self, taken: Sequence[Incident]) -> list[Incident]:
        if not self._timing_dirty:
            return []
        ids = {i.id for i in taken}
        more = [inc for incident_id in self._timing_dirty if incident_id not in ids
                and (inc := self.incident(incident_id)) is not None]
        self._timing_dirty = set()
        return more

    def note_delivery(self, incident_id: str, handed: float | None,
                      accepted: float | None) -> None:
        """Record when a notification was handed to a channel, or a receiver accepted one.

        Called by the notification stage as a send starts and as its result is recorded;
        the next commit (the delivery result's) writes the stage times and any breach: no
        commit of its own on the alarm path. Only the first of each stage is kept.
        """
        inc = self.incident(incident_id)
        if inc is None or "received" not in inc.timing:
            return
        label = "true" if inc.life_safety else "false"
        if handed is not None and "handed" not in inc.timing:
            inc.timing["handed"] = handed
            self._timing_dirty.add(inc.id)
            _histogram(self.forward_seconds, label).observe(
                max(0.0, handed - inc.timing["received"]))
        if accepted is not None and "accepted" not in inc.timing:
            inc.timing["accepted"] = accepted
            self._timing_dirty.add(inc.id)
            start = latency.origin(inc.timing)
            if start is not None:
                _histogram(self.alarm_seconds, label).observe(max(0.0, accepted - start))
        self._check(inc, self._clock.now())

    def _check_waiting(self, now: float) -> None:
        """Budgets running out while an alarm still waits (no delivery accepted yet)."""
        _, book = self._require()
        if not self._check_budgets:
            return
        for inc in list(book.open.values()):
            if inc.life_safety and inc.timing and "accepted" not in inc.timing:
                self._check(inc, now)

    def _check(self, inc: Incident, now: float) -> None:
        done = self._breached.get(inc.id, set())
        if not self._check_budgets or len(done) == 2:
            return
        for breach in latency.check(inc, self._limits, now, done):
            self._breached.setdefault(inc.id, set()).add(breach.budget)
            self._report_breach(inc, breach, now)

    def _report_breach(self, inc: Incident, breach: latency.Breach, now: float) -> None:
        _, book = self._require()
        detail = breach.detail()
        log.warning("latency_budget_exceeded", **detail)
        self._pending_events.append(IncidentEvent(
            inc.id, latency.BREACH_INCIDENT, now, "sentinel", inc.severity, inc.status,
            detail))
        key = f"{latency.BREACH_INCIDENT}:{SYSTEM_TARGET}"
        already = book.open.get(key)
        if already is not None:
            # One system incident at a time; each further alarm is named on its trail.
            self._pending_events.append(IncidentEvent(
                already.id, latency.BREACH_INCIDENT, now, "sentinel", already.severity,
                already.status, detail))
            return
        first_new = book.next_number
        book.system(latency.BREACH_INCIDENT, True, Severity.WARNING, now, **detail)
        self._stamp_system(latency.BREACH_INCIDENT, first_new, now)

    # -- commands ---------------------------------------------------------------------

    async def acknowledge(self, incident_id: str, actor: str, note: str | None = None,
                          name: str | None = None) -> Incident:
        """Acknowledge an open incident (a group: its open members too); KeyError if none.
        `name`: the actor's name for people, kept on the events (a district person)."""
        _, book = self._require()
        async with self._lock:
            inc = book.acknowledge(incident_id, actor, self._clock.now(), note, name)
            self._stamp_acknowledged(inc, book.open_group_of(inc))
            await self._commit()
            return inc

    async def assign(self, incident_id: str, person: str, actor: str,
                     acknowledge: bool = False) -> Incident:
        """Assign an open incident to `person` (a contact id); with `acknowledge`, also
        acknowledge it if nobody has ("我去处理"), in the same commit. A group's open
        members follow it. KeyError when there is no open incident by that id."""
        _, book = self._require()
        async with self._lock:
            now = self._clock.now()
            if acknowledge:
                book.acknowledge(incident_id, actor, now, None)
            inc = book.assign(incident_id, person, actor, now)
            self._stamp_acknowledged(inc, book.open_group_of(inc))
            await self._commit()
            return inc

    async def note(self, incident_id: str, actor: str, text: str,
                   photo: str | None = None, name: str | None = None) -> Incident:
        """Add a note (and the id of a stored photo) to an open incident; KeyError if none."""
        _, book = self._require()
        async with self._lock:
            inc = book.note(incident_id, actor, self._clock.now(), text, photo, name)
            await self._commit()
            return inc

    def _stamp_acknowledged(self, *incidents: Incident | None) -> None:
        # An alarm of a fire is acknowledged with its fire: both records get the time.
        for inc in incidents:
            if inc is not None and inc.timing and inc.acknowledged_at is not None:
                inc.timing.setdefault("acknowledged", inc.acknowledged_at)

    async def resolve(self, incident_id: str, actor: str, outcome: Outcome,
                      note: str | None = None) -> Incident:
        _, book = self._require()
        async with self._lock:
            inc = book.resolve(incident_id, actor, self._clock.now(), outcome, note)
            await self._commit()
            return inc

    async def expire_acknowledgement(self, incident_id: str, after: float) -> bool:
        """Put an incident acknowledged too long ago back to firing; False if it is not."""
        _, book = self._require()
        async with self._lock:
            inc = book.expire_acknowledgement(incident_id, self._clock.now(), after)
            if inc is not None:
                await self._commit()
            return inc is not None

    async def record(self, events: Sequence[IncidentEvent],
                     extra: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Commit audit events of a later stage together with its own writes, atomically.

        Escalation and delivery record their steps here, so the event stream stays one
        gapless sequence and their state never disagrees with the audit trail.
        """
        self._require()
        async with self._lock:
            await self._commit(extra_events=events, extra=extra)

    async def system(self, name: str, active: bool, severity: Severity = Severity.WARNING,
                     **detail: Value) -> None:
        """Raise or clear a condition of sentinel itself (spool nearly full...)."""
        _, book = self._require()
        async with self._lock:
            now = self._clock.now()
            first_new = book.next_number
            book.system(name, active, severity, now, **detail)
            self._stamp_system(name, first_new, now)
            if book.has_changes:
                await self._commit()

    async def raised(self, name: str, target: str, active: bool, severity: Severity,
                     place: Mapping[str, str], life_safety: bool = False,
                     kind: str = "system", **detail: Value) -> Incident | None:
        """Raise or clear a condition that is no device's (IncidentBook.raised): the district
        daemon's view of its community boxes. Committed before it returns."""
        _, book = self._require()
        async with self._lock:
            now = self._clock.now()
            first_new = book.next_number
            inc = book.raised(name, target, active, severity, now, place, life_safety, kind,
                              detail)
            if inc is not None and not inc.timing and _number(inc.id) >= first_new:
                # Its own record starts here: there is no reading behind it.
                inc.timing["received"] = now
            if book.has_changes:
                await self._commit(joined=True)
            return inc

    async def add_window(self, window: Window) -> Window:
        """Store a silence or drill window (its id is assigned here); in force at once."""
        async with self._lock:
            now = self._clock.now()

            def add(conn: sqlite3.Connection) -> int:
                with transaction(conn):
                    return insert_window(conn, window, now)

            window_id = await self._store.call(add)
            self.windows.replace(await self._store.windows(now))
            log.info("window_added", type=window.type, id=window_id, scope=dict(window.scope),
                     kinds=list(window.kinds), rules=list(window.rules),
                     life_safety=window.life_safety,
                     every=window.every.to_json() if window.every else None,
                     start=window.start, end=window.end, author=window.author,
                     reason=window.reason)
            return dataclasses.replace(window, id=window_id)

    async def remove_window(self, type_: str, window_id: int, author: str) -> bool:
        """End a window now; False when there is no such active window."""
        async with self._lock:
            now = self._clock.now()

            def remove(conn: sqlite3.Connection) -> bool:
                with transaction(conn):
                    return end_window(conn, window_id, author, now, type_)

            removed = await self._store.call(remove)
            self.windows.replace(await self._store.windows(now))
            if removed:
                log.info("window_removed", type=type_, id=window_id, author=author)
            return removed

    def now(self) -> float:
        """The daemon's time (its one clock)."""
        return self._clock.now()

    def upcoming_windows(self) -> list[Window]:
        """Windows in force now or later (configured ones included)."""
        return self.windows.upcoming(self._clock.now())

    # -- the event stream -------------------------------------------------------------

    async def events_after(self, seq: int, limit: int = 500, wait: float | None = None
                           ) -> list[IncidentEvent]:
        """Committed events with seq > `seq`, oldest first; waits up to `wait` s for one."""
        if wait is not None and seq >= self.last_seq:
            waiter = self._new_events
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel()
            # that arrives just as an event is committed, and a follower (the MQTT
            # publisher) then outlives shutdown and the daemon never exits.
            try:
                async with asyncio.timeout(wait):
                    await waiter.wait()
            except TimeoutError:
                return []
        recent = self._recent
        if recent and recent[0].seq <= seq + 1:
            return [e for e in recent if e.seq > seq][:limit]
        return await self._store.events_after(seq, limit)

    def incident(self, incident_id: str) -> Incident | None:
        """An open or recently changed incident (None if older: read the state database)."""
        found = self.book.get(incident_id) if self.book is not None else None
        return found if found is not None else self._written.get(incident_id)

    def open_incidents(self) -> list[Incident]:
        _, book = self._require()
        return sorted(book.open.values(), key=lambda i: i.opened_at)

    def _require(self) -> tuple[RuleEngine, IncidentBook]:
        if self.engine is None or self.book is None:
            raise RuntimeError("IncidentService.start() has not run")
        return self.engine, self.book


def _number(incident_id: str) -> int:
    try:
        return int(incident_id.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _histogram(table: dict[str, LatencyHistogram], label: str) -> LatencyHistogram:
    found = table.get(label)
    if found is None:
        found = table[label] = LatencyHistogram(ALARM_BUCKETS)
    return found


def _breaches_of(conn: sqlite3.Connection, incident_ids: Sequence[str]
                 ) -> list[tuple[str, str]]:
    """(incident, budget) of every breach already recorded for these incidents."""
    out: list[tuple[str, str]] = []
    for start in range(0, len(incident_ids), 500):
        chunk = list(incident_ids[start:start + 500])
        marks = ",".join("?" * len(chunk))
        for incident_id, data in conn.execute(
                f"SELECT incident_id, data FROM events WHERE type = ? AND incident_id IN"
                f" ({marks})", [latency.BREACH_INCIDENT, *chunk]):
            budget = json.loads(data).get("budget")
            if isinstance(budget, str):
                out.append((incident_id, budget))
    return out


def urgent_checks(rules: RulesConfig) -> dict[str, list[Callable[[Mapping[str, Any]], bool]]]:
    """Per device kind, tests of a reading's values that say it may raise a life-safety
    incident: a life-safety state rule's field at its alarm value, or any value of the
    field of another life-safety rule (a threshold on %LEL)."""
    checks: dict[str, list[Callable[[Mapping[str, Any]], bool]]] = {}
    for rule in rules.rule:
        if not rule.life_safety or not rule.enabled:
            continue
        field = getattr(rule, "field", None)
        if not isinstance(field, str):
            continue
        if isinstance(rule, StateRule):
            def check(values: Mapping[str, Any], f: str = field,
                      v: Any = rule.equals) -> bool:
                return bool(values.get(f) == v)
        else:
            def check(values: Mapping[str, Any], f: str = field, v: Any = None) -> bool:
                return f in values
        for kind in rule.kinds:
            checks.setdefault(kind, []).append(check)
    return checks


def _loggable(data: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in ("place", "detail") and v is not None}
    place = data.get("place")
    if isinstance(place, Mapping) and "device" in place:
        out["device"] = place["device"]
    return out
