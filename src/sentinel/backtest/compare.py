"""Incidents of a backtest: summed up from its events, compared with what the daemon
recorded, and compared between two rule sets.

Matching is by what an operator would call "the same alarm": the same incident name (the
rule, or the incident several rules share), the same target (device, or place of a group)
and the same severity. Against the record, open times must lie within one tick (the daemon
ticked on its own wall clock, the replay on a grid). Between two rule sets a stricter rule
may open the same episode later, so there two incidents match when their open spans
overlap, and the report gives the shift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sentinel.backtest.replay import BacktestEvent, Trigger
from sentinel.incidents.model import SYSTEM_TARGET, Incident
from sentinel.incidents.store import read_incidents
from sentinel.types import Severity

__all__ = ["Diff", "Matched", "Recorded", "Summary", "compare_recorded", "diff_rule_sets",
           "read_recorded", "summarize"]

# Rounding of stored times (milliseconds) on top of the tolerance.
_EPSILON = 0.002


@dataclass
class Summary:
    """One incident of a backtest (or of the record), as the reports show it."""

    id: str
    name: str
    rule: str
    target: str
    device_id: str | None
    kind: str
    severity: str            # the highest it reached
    opened_at: float
    place: Mapping[str, str]
    opening_severity: str = ""
    resolved_at: float | None = None
    cleared_at: float | None = None
    outcome: str | None = None
    trigger: Trigger | None = None
    raised: list[tuple[float, str]] = field(default_factory=list)
    group: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.target, self.severity)


def summarize(events: Iterable[BacktestEvent]) -> list[Summary]:
    """One Summary per incident, in order of opening."""
    out: dict[str, Summary] = {}
    for ev in events:
        inc = out.get(ev.incident_id)
        if ev.type == "opened" or inc is None:
            if inc is None:
                inc = out[ev.incident_id] = Summary(
                    ev.incident_id, ev.name, ev.rule, ev.target, ev.device_id, ev.kind,
                    ev.severity, ev.ts, ev.place, ev.severity, trigger=ev.trigger)
            continue
        if ev.type == "severity_raised":
            inc.severity = ev.severity
            inc.raised.append((ev.ts, ev.severity))
        elif ev.type == "condition_cleared":
            inc.cleared_at = ev.ts
        elif ev.type == "condition_returned":
            inc.cleared_at = None
        elif ev.type == "resolved":
            inc.resolved_at = ev.ts
            inc.outcome = str(ev.data.get("outcome") or "")
        elif ev.type in ("grouped", "attached"):
            group = ev.data.get("group")
            inc.group = group if isinstance(group, str) else inc.group
    return sorted(out.values(), key=lambda s: s.opened_at)


@dataclass(frozen=True)
class Recorded:
    """An incident as the daemon stored it."""

    id: str
    name: str
    target: str
    severity: str
    opened_at: float
    device_id: str | None
    kind: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.target, self.severity)


def read_recorded(path: Path, start: float, end: float,
                  devices: Sequence[str] | None = None) -> list[Recorded]:
    """Incidents the daemon opened in [start, end) (read-only; sentinel's own left out)."""
    wanted = set(devices) if devices is not None else None
    out = []
    for inc in read_incidents(path):
        if not start <= inc.opened_at < end or inc.target == SYSTEM_TARGET:
            continue
        if wanted is not None and inc.device_id is not None and inc.device_id not in wanted:
            continue
        if wanted is not None and inc.device_id is None and not _group_within(inc, wanted):
            continue
        out.append(Recorded(inc.id, inc.name, inc.target, inc.severity.label, inc.opened_at,
                            inc.device_id, inc.kind))
    return sorted(out, key=lambda r: r.opened_at)


def _group_within(inc: Incident, wanted: set[str]) -> bool:
    # A group is kept when one of its member devices is in the chosen set; without the
    # members' devices at hand (they are other incidents), keep it if any is named.
    device = inc.place.get("device")
    return device is None or device in wanted


@dataclass(frozen=True)
class Matched:
    backtest: Summary
    recorded: Recorded

    @property
    def shift(self) -> float:
        return self.backtest.opened_at - self.recorded.opened_at


@dataclass
class Comparison:
    """Backtest against the record: matched, missed (recorded only), extra (backtest only)."""

    matched: list[Matched] = field(default_factory=list)
    missed: list[Recorded] = field(default_factory=list)
    extra: list[Summary] = field(default_factory=list)


def compare_recorded(backtest: Sequence[Summary], recorded: Sequence[Recorded],
                     tolerance: float) -> Comparison:
    """Pair incidents with the same key whose open times lie within `tolerance` seconds."""
    result = Comparison()
    pool: dict[tuple[str, str, str], list[Recorded]] = {}
    for rec in recorded:
        pool.setdefault(rec.key, []).append(rec)
    used: set[str] = set()
    for inc in backtest:
        best: Recorded | None = None
        for rec in pool.get(inc.key, ()):
            if rec.id in used or abs(rec.opened_at - inc.opened_at) > tolerance + _EPSILON:
                continue
            if best is None or abs(rec.opened_at - inc.opened_at) < \
                    abs(best.opened_at - inc.opened_at):
                best = rec
        if best is None:
            result.extra.append(inc)
        else:
            used.add(best.id)
            result.matched.append(Matched(inc, best))
    result.missed = [rec for rec in recorded if rec.id not in used]
    return result


@dataclass(frozen=True)
class Paired:
    a: Summary
    b: Summary

    @property
    def shift(self) -> float:
        """Seconds B opened after A (negative: earlier)."""
        return self.b.opened_at - self.a.opened_at


@dataclass
class Diff:
    """Two rule sets over the same readings."""

    only_a: list[Summary] = field(default_factory=list)
    only_b: list[Summary] = field(default_factory=list)
    both: list[Paired] = field(default_factory=list)


def diff_rule_sets(a: Sequence[Summary], b: Sequence[Summary], end: float,
                   tick: float) -> Diff:
    """Pair incidents of A and B with the same incident name and target whose open spans
    (opened → resolved, or the period's end) overlap: the same episode, seen by each."""
    result = Diff()
    pool: dict[tuple[str, str], list[Summary]] = {}
    for inc in b:
        pool.setdefault((inc.name, inc.target), []).append(inc)
    used: set[str] = set()
    for inc in a:
        lo, hi = _span(inc, end, tick)
        match = None
        for other in pool.get((inc.name, inc.target), ()):
            if other.id in used:
                continue
            olo, ohi = _span(other, end, tick)
            if olo <= hi and lo <= ohi:
                match = other
                break
        if match is None:
            result.only_a.append(inc)
        else:
            used.add(match.id)
            result.both.append(Paired(inc, match))
    result.only_b = [inc for inc in b if inc.id not in used]
    return result


def _span(inc: Summary, end: float, tick: float) -> tuple[float, float]:
    close = inc.resolved_at if inc.resolved_at is not None else end
    return inc.opened_at, max(close, inc.opened_at + tick)


def severity_rank(label: str) -> int:
    """Order of a severity label (for sorting and colours)."""
    try:
        return int(Severity.parse(label))
    except ValueError:
        return -1
