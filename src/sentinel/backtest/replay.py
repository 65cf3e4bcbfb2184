"""Replay stored readings through the real rule engine and incident book.

The daemon's rules stage (`incidents/service.py`) does two things: `_evaluate` puts each
batch of readings through `RuleEngine.on_readings` and applies the signals to the
`IncidentBook` at the clock's `now`; `tick` runs every `tick_interval` and evaluates the
engine's timers (holds, offline, inactivity) and the book's (clear holds, flapping, expiry).
`Replay` does the same on a simulated clock: `now` is each reading's receive time, and the
ticks fall every `tick_interval` of simulated time between readings, so durations, offline
and daytime rules behave as they did live. Nothing is written and nothing is sent: the
engine and the book are pure, and their changes are only turned into `BacktestEvent`s.

Parallel: correlation never crosses a compound, so the devices of different compounds can
be replayed apart (`replay_parallel`), one process per share, results merged by time.
"""

from __future__ import annotations

import heapq
import math
import multiprocessing
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sentinel import zone
from sentinel.config.inventory import Device
from sentinel.config.model import RulesSettings
from sentinel.incidents.model import IncidentBook, IncidentEvent
from sentinel.rules.engine import RuleEngine
from sentinel.rules.model import RulesConfig
from sentinel.types import Reading, Value

__all__ = ["BacktestEvent", "Replay", "ReplayResult", "renumber", "replay_parallel",
           "split_by_compound"]

# The book's due times are taken this much early (see rules.engine._DUE_SLACK).
_DUE_SLACK = 0.001

# Event types of the incident book worth reporting (audit-only ones, such as
# member_added or acknowledged, follow from these or from people, who are not replayed).
REPORTED = frozenset({"opened", "severity_raised", "condition_cleared", "condition_returned",
                      "resolved", "grouped", "attached", "flapping", "cancel_refused",
                      "repeated"})


@dataclass(frozen=True, slots=True)
class Trigger:
    """The reading behind an opening or a raise (for a timer: the device's last reading)."""

    device_id: str
    ts: float
    received_at: float
    values: Mapping[str, Value]
    by_timer: bool = False


@dataclass(frozen=True, slots=True)
class BacktestEvent:
    """What would have happened to an incident, and when."""

    incident_id: str
    type: str
    ts: float
    rule: str
    name: str            # the incident's name (several rules may share one)
    target: str
    device_id: str | None
    kind: str
    severity: str
    place: Mapping[str, str]
    trigger: Trigger | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ReplayResult:
    """Events of one replay (one rule set), in time order, and what was read."""

    events: list[BacktestEvent] = field(default_factory=list)
    readings: int = 0
    devices: set[str] = field(default_factory=set)
    first: float | None = None
    last: float | None = None


class Replay:
    """One rule set over one stream of readings, on a simulated clock."""

    def __init__(self, rules: RulesConfig, inventory: Mapping[str, Device],
                 settings: RulesSettings, start: float, end: float) -> None:
        self.rules = rules
        self.start = start
        self.end = end
        self.tick_interval = settings.tick_interval
        # keep_values: the replay keeps each device's newest reading anyway (_latest).
        self.engine = RuleEngine(rules, inventory, start, settings.startup_grace,
                                 keep_values=True)
        self.book = IncidentBook(rules, inventory)
        # The daemon's first tick comes one interval after it started.
        self.next_tick = start + self.tick_interval
        self.result = ReplayResult()
        # Each device's newest reading: what a timer-decided opening reports as its reading.
        self._latest: dict[str, Reading] = {}
        self._rule_of: dict[str, str] = {}
        # When the book's clock next matters (it moves only with apply and tick).
        self._book_due = math.inf

    def feed(self, r: Reading) -> None:
        """One reading at its receive time, after the ticks that fell before it."""
        now = r.received_at
        if now >= self.next_tick:
            self.advance(now)
        result = self.result
        result.readings += 1
        if result.first is None:
            result.first = now
        result.last = now
        self._latest[r.device_id] = r
        signals = self.engine.on_readings((r,))
        if signals:
            self.book.apply(signals, now)
            self._book_due = self.book.next_due() - _DUE_SLACK
            self._collect(r)

    def advance(self, until: float) -> None:
        """Run every tick due at or before `until`.

        The ticks fall where the daemon's would (every `tick_interval` from the start, the
        same float sums), but only those at or after the engine's or the book's next due
        time do any work: the others would change nothing (a week has 604,800 of them, and
        each evaluates every running clock).
        """
        step = self.tick_interval
        engine, book = self.engine, self.book
        now = self.next_tick
        if now > until:
            return
        due = min(engine.next_due(), self._book_due)
        while now <= until:
            if now >= due:
                signals = engine.tick(now)
                if signals:
                    book.apply(signals, now)
                book.tick(now)
                if book.has_changes:
                    self._collect(None)
                self._book_due = book.next_due() - _DUE_SLACK
                due = min(engine.next_due(), self._book_due)
            now += step
        self.next_tick = now

    def finish(self) -> ReplayResult:
        """Tick up to the end of the period; the events in time order."""
        self.advance(self.end)
        self.result.events.sort(key=lambda e: e.ts)
        # The devices read: each has its newest reading kept (not counted per reading).
        self.result.devices = set(self._latest)
        return self.result

    def _collect(self, reading: Reading | None) -> None:
        incidents, events, _ = self.book.take_changes()
        by_id = {inc.id: inc for inc in incidents}
        for ev in events:
            inc = by_id.get(ev.incident_id)
            if inc is None or ev.type not in REPORTED:
                continue
            self.result.events.append(self._event(ev, inc, reading))

    def _event(self, ev: IncidentEvent, inc: Any, reading: Reading | None) -> BacktestEvent:
        rule = str(ev.data.get("rule") or self._rule_of.get(inc.id) or inc.rule or inc.name)
        if ev.type == "opened":
            self._rule_of[inc.id] = rule
        trigger = None
        if ev.type in ("opened", "severity_raised") and inc.device_id is not None:
            source = reading if reading is not None and reading.device_id == inc.device_id \
                else self._latest.get(inc.device_id)
            if source is not None:
                trigger = Trigger(source.device_id, source.ts, source.received_at,
                                  dict(source.values), by_timer=reading is None)
        data = {k: v for k, v in ev.data.items() if k not in ("place", "detail")}
        if ev.type in ("opened", "severity_raised") and inc.detail:
            data["detail"] = dict(inc.detail)
        if ev.type == "resolved":
            # resolved events name no rule: keep the one that opened it, freed here.
            self._rule_of.pop(inc.id, None)
        return BacktestEvent(inc.id, ev.type, ev.ts, rule, inc.name, inc.target,
                             inc.device_id, inc.kind, ev.severity.label, dict(inc.place),
                             trigger, data)


def run_replays(rule_sets: Sequence[RulesConfig], inventory: Mapping[str, Device],
                settings: RulesSettings, start: float, end: float,
                readings: Iterable[Reading],
                progress: Callable[[int, float], None] | None = None) -> list[ReplayResult]:
    """Feed one stream to one replay per rule set (the stream is read once)."""
    replays = [Replay(rules, inventory, settings, start, end) for rules in rule_sets]
    count = 0
    for r in readings:
        for replay in replays:
            replay.feed(r)
        count += 1
        if progress is not None and count % 10_000 == 0:
            progress(10_000, r.received_at)
    if progress is not None:
        progress(count % 10_000, end)
    return [replay.finish() for replay in replays]


def split_by_compound(inventory: Mapping[str, Device], jobs: int) -> list[set[str]]:
    """Devices in `jobs` shares of whole compounds, balanced by device count."""
    compounds: dict[str, set[str]] = {}
    for device in inventory.values():
        compounds.setdefault(device.compound, set()).add(device.id)
    shares: list[set[str]] = [set() for _ in range(max(1, min(jobs, len(compounds))))]
    # Largest first into the lightest share: a good enough balance for a handful of shares.
    heap = [(0, i) for i in range(len(shares))]
    for _, ids in sorted(compounds.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        size, i = heapq.heappop(heap)
        shares[i] |= ids
        heapq.heappush(heap, (size + len(ids), i))
    return [s for s in shares if s]


def renumber(shares: Iterable[Iterable[BacktestEvent]]) -> list[BacktestEvent]:
    """Events of several books merged in time order, with ids numbered as one book would.

    Each share's book numbered its incidents from 1, so an id is only unique within its
    share: the share's index is part of the key.
    """
    ordered = sorted(((ev, n) for n, events in enumerate(shares) for ev in events),
                     key=lambda pair: pair[0].ts)
    names: dict[tuple[int, str], str] = {}
    for ev, n in ordered:
        if (n, ev.incident_id) not in names:
            names[(n, ev.incident_id)] = f"{zone.local(ev.ts):%Y%m%d}-{len(names) + 1:04d}"
    def renamer(n: int) -> Callable[[str], str]:
        return lambda old: names.get((n, old), old)

    return [_with_id(ev, names[(n, ev.incident_id)], renamer(n)) for ev, n in ordered]


def _with_id(ev: BacktestEvent, incident_id: str, rename: Callable[[str], str]
             ) -> BacktestEvent:
    # Events naming another incident (grouped, attached: the group) follow the new ids.
    data = {k: (rename(v) if k == "group" and isinstance(v, str) else v)
            for k, v in ev.data.items()}
    return BacktestEvent(incident_id, ev.type, ev.ts, ev.rule, ev.name, ev.target, ev.device_id,
                         ev.kind, ev.severity, ev.place, ev.trigger, data)


# -- processes ---------------------------------------------------------------------------

SourceFactory = Callable[[], Any]


@dataclass(frozen=True)
class _Job:
    rule_sets: Sequence[RulesConfig]
    inventory: Mapping[str, Device]
    settings: RulesSettings
    start: float
    end: float
    make_source: SourceFactory
    devices: Collection[str] | None
    tag: str


def _run_job(job: _Job, counter: Any = None) -> list[ReplayResult]:
    source = job.make_source()

    def progress(n: int, at: float) -> None:
        if counter is not None:
            with counter.get_lock():
                counter.value += n

    return run_replays(job.rule_sets, job.inventory, job.settings, job.start, job.end,
                       source.readings(job.start, job.end, job.devices), progress)


def _worker(job: _Job, counter: Any, out: Any) -> None:
    try:
        out.put(("ok", job.tag, _run_job(job, counter)))
    except BaseException as exc:  # reported to the parent, which shows it as an error
        out.put(("error", job.tag, f"{type(exc).__name__}: {exc}"))


def replay_parallel(rule_sets: Sequence[RulesConfig], inventory: Mapping[str, Device],
                    settings: RulesSettings, start: float, end: float,
                    make_source: SourceFactory, devices: Collection[str] | None, jobs: int,
                    on_progress: Callable[[int], None] | None = None,
                    poll: float = 0.5) -> list[ReplayResult]:
    """Replay with `jobs` processes, each over the devices of whole compounds.

    Each process reads its own devices from its own source and keeps its own engine and
    book (their inventories are disjoint, so no device is timed twice); the events are
    merged by time and renumbered. With one job everything runs in this process.
    """
    chosen = {k: d for k, d in inventory.items() if devices is None or k in devices}
    shares = split_by_compound(chosen, jobs)
    if len(shares) <= 1:
        job = _Job(rule_sets, chosen, settings, start, end, make_source, devices, "0")
        total = [0]

        def local_progress(n: int, at: float) -> None:
            total[0] += n
            if on_progress is not None:
                on_progress(total[0])

        source = make_source()
        return run_replays(job.rule_sets, job.inventory, job.settings, start, end,
                           source.readings(start, end, devices), local_progress)
    # fork where there is one: the configuration is not pickled and start-up is instant.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx: Any = multiprocessing.get_context(method)
    counter = ctx.Value("q", 0)
    out = ctx.Queue()
    procs = []
    jobs_ = [_Job(rule_sets, {k: chosen[k] for k in share}, settings, start, end,
                  make_source, share, str(i)) for i, share in enumerate(shares)]
    # This process replays the first share itself rather than wait idle: one process
    # fewer holding an interpreter and the configuration (the tree's memory).
    for job in jobs_[1:]:
        proc = ctx.Process(target=_worker, args=(job, counter, out), daemon=True)
        proc.start()
        procs.append(proc)
    results: dict[str, list[ReplayResult]] = {}
    errors: list[str] = []

    def own_progress(n: int, at: float) -> None:
        with counter.get_lock():
            counter.value += n
        if on_progress is not None:
            on_progress(int(counter.value))

    try:
        try:
            own = jobs_[0]
            results[own.tag] = run_replays(
                own.rule_sets, own.inventory, settings, start, end,
                make_source().readings(start, end, own.devices), own_progress)
        except BaseException:
            for proc in procs:  # no one will read their results
                proc.kill()
            raise
        while len(results) + len(errors) < len(jobs_):
            try:
                status, tag, payload = out.get(timeout=poll)
            except Exception:  # queue.Empty: report progress, notice a dead worker
                if on_progress is not None:
                    on_progress(int(counter.value))
                if any(p.exitcode not in (None, 0) for p in procs):
                    errors.append("a replay process died")
                    break
                continue
            if status == "ok":
                results[tag] = payload
            else:
                errors.append(payload)
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    if errors:
        raise RuntimeError("; ".join(errors))
    if on_progress is not None:
        on_progress(int(counter.value))
    merged: list[ReplayResult] = []
    for n in range(len(rule_sets)):
        parts = [results[tag][n] for tag in sorted(results)]
        firsts = [p.first for p in parts if p.first is not None]
        lasts = [p.last for p in parts if p.last is not None]
        merged.append(ReplayResult(
            renumber(p.events for p in parts), sum(p.readings for p in parts),
            set().union(*(p.devices for p in parts)), min(firsts) if firsts else None,
            max(lasts) if lasts else None))
    return merged


def default_jobs() -> int:
    """Cores to use by default: all of them, at most 2 (the machine this is tuned for)."""
    return max(1, min(2, os.cpu_count() or 1))


