"""The per-alert record against GB 50440: stage times, the two limits, and the report.

GB 50440 asks that an alarm reach the monitoring centre within 10 s and be forwarded within
3 s. Every incident keeps the epoch seconds at which it passed each stage in
`Incident.timing` (only the stages it reached):

* `device`: the reading's own time, when the payload carries one;
* `received`: when sentinel received the message (or decided, for timer-based conditions);
* `committed`: when the incident's opening commit returned;
* `handed`: when the first notification was handed to a channel (the send started);
* `accepted`: when a receiver first accepted a delivery;
* `acknowledged`: when a person first acknowledged it.

Two budgets are checked for life-safety incidents: the *alarm* budget, from the device time
(or receipt) to the first accepted delivery, and the *forward* budget, from receipt to the
first notification handed to a channel. Pure functions; the incident stage applies them.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentinel.config.model import LatencySettings
from sentinel.incidents.model import Incident

STAGES = ("device", "received", "committed", "handed", "accepted", "acknowledged")
BREACH_INCIDENT = "latency_budget_exceeded"
# The two budgets: name -> (first stage, last stage); the first falls back as noted.
ALARM = "accepted"   # origin (device, else received) -> accepted
FORWARD = "handed"   # received -> handed
# Spans in the report: name -> (from stage, to stage); "origin" is device, else received.
SPANS: dict[str, tuple[str, str]] = {
    "first_notification": ("origin", "accepted"),
    "forward": ("received", "handed"),
    "transport": ("device", "received"),
    "commit": ("received", "committed"),
    "hand_over": ("committed", "handed"),
    "delivery": ("handed", "accepted"),
    "acknowledge": ("origin", "acknowledged"),
}


def _at(timing: Mapping[str, float], stage: str) -> float | None:
    if stage == "origin":
        return origin(timing)
    return timing.get(stage)


def origin(timing: Mapping[str, float]) -> float | None:
    """Where the alarm budget starts: the device's time, else the receipt."""
    found = timing.get("device")
    return found if found is not None else timing.get("received")


def span(timing: Mapping[str, float], name: str) -> float | None:
    """Seconds of one span of the record (SPANS), None while either end is missing."""
    start, end = SPANS[name]
    a, b = _at(timing, start), _at(timing, end)
    if a is None or b is None:
        return None
    return max(0.0, b - a)


def limit_of(budget: str, limits: LatencySettings) -> float:
    return limits.accepted_within if budget == ALARM else limits.handed_within


@dataclass(frozen=True, slots=True)
class Breach:
    """One budget exceeded by one alarm, and the stage that took the time."""

    incident_id: str
    budget: str          # "accepted" (alarm budget) or "handed" (forward budget)
    seconds: float       # the budget's span, or time waited so far when `pending`
    limit: float
    stage: str           # the stage reached late (the end of the longest step)
    stage_from: str      # the stage before it
    stage_seconds: float
    pending: bool        # the budget's last stage has not been reached yet

    def detail(self) -> dict[str, float | bool | str]:
        # "alarm", not "incident": event data is logged beside the event's own incident.
        return {"alarm": self.incident_id, "budget": self.budget,
                "seconds": round(self.seconds, 3), "limit": self.limit, "stage": self.stage,
                "stage_from": self.stage_from, "stage_seconds": round(self.stage_seconds, 3),
                "pending": self.pending}


def _slowest_step(timing: Mapping[str, float], first: str, last: str, now: float
                  ) -> tuple[str, str, float]:
    """The step (from, to, seconds) that took longest between two stages of the record.

    A stage not reached yet counts as reached `now`, so a stuck alarm names where it waits.
    """
    order = [s for s in STAGES[:STAGES.index(last) + 1]
             if STAGES.index(s) >= STAGES.index(first)]
    best = (first, last, -1.0)
    previous, previous_at = order[0], timing.get(order[0])
    if previous_at is None:
        return best
    for stage in order[1:]:
        at = timing.get(stage)
        if at is None and stage != last:
            continue  # a record from before this stage was kept: measure across it
        reached = at if at is not None else now
        seconds = max(0.0, reached - previous_at)
        if seconds > best[2]:
            best = (previous, stage, seconds)
        previous, previous_at = stage, reached
    return best


def _budget_first(timing: Mapping[str, float], budget: str) -> str | None:
    if budget == ALARM:
        return "device" if "device" in timing else ("received" if "received" in timing
                                                    else None)
    return "received" if "received" in timing else None


def check(inc: Incident, limits: LatencySettings, now: float,
          done: Iterable[str] = ()) -> list[Breach]:
    """The budgets `inc` has exceeded by `now` (skipping those in `done`).

    Only life-safety alarms that page on their own: silenced ones page nobody, and an
    alarm merged into a group is paged through the group's own record. While a budget's
    last stage is still missing it is checked against the time waited so far, but only
    while the incident is open and nobody has acknowledged it (a person then knows).
    """
    if not inc.life_safety or inc.silenced_by is not None or not inc.timing:
        return []
    skip = set(done)
    out: list[Breach] = []
    for budget in (FORWARD, ALARM):
        if budget in skip:
            continue
        first = _budget_first(inc.timing, budget)
        if first is None:
            continue
        started = inc.timing[first]
        reached = inc.timing.get(budget)
        pending = reached is None
        if pending and (not inc.open or inc.acknowledged_at is not None or inc.groups
                        or inc.attached_to):
            continue
        seconds = (now if reached is None else reached) - started
        limit = limit_of(budget, limits)
        if seconds <= limit:
            continue
        stage_from, stage, stage_seconds = _slowest_step(inc.timing, first, budget, now)
        out.append(Breach(inc.id, budget, seconds, limit, stage, stage_from, stage_seconds,
                          pending))
    return out


# -- the report ---------------------------------------------------------------------------

def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of values sorted ascending."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _summary(values: list[float]) -> dict[str, float | int]:
    values.sort()
    return {"count": len(values), "p50": round(percentile(values, 50), 3),
            "p90": round(percentile(values, 90), 3), "p99": round(percentile(values, 99), 3),
            "max": round(values[-1], 3)}


def _spans(incidents: Iterable[Incident]) -> dict[str, dict[str, float | int]]:
    collected: dict[str, list[float]] = {name: [] for name in SPANS}
    for inc in incidents:
        for name in SPANS:
            value = span(inc.timing, name)
            if value is not None:
                collected[name].append(value)
    return {name: _summary(values) for name, values in collected.items() if values}


def report(incidents: Iterable[Incident], limits: LatencySettings, since: float,
           until: float) -> dict[str, Any]:
    """Percentiles per span, overall and per incident kind, and how many life-safety alarms
    kept each limit (JSON-ready)."""
    recorded = [i for i in incidents if i.timing and since <= i.opened_at <= until]
    kinds: dict[str, list[Incident]] = {}
    for inc in recorded:
        kinds.setdefault(inc.kind, []).append(inc)
    alarms = [i for i in recorded if i.life_safety and i.silenced_by is None
              and not i.groups and not i.attached_to]
    kept: dict[str, dict[str, float | int]] = {}
    for budget, span_name in ((ALARM, "first_notification"), (FORWARD, "forward")):
        limit = limit_of(budget, limits)
        values = [span(i.timing, span_name) for i in alarms]
        within = sum(1 for v in values if v is not None and v <= limit)
        over = sum(1 for v in values if v is not None and v > limit)
        kept[budget] = {"limit": limit, "kept": within, "exceeded": over,
                        "unknown": len(values) - within - over}
    return {"since": since, "until": until, "incidents": len(recorded),
            "alarms": len(alarms), "limits": kept, "spans": _spans(recorded),
            "kinds": {kind: {"incidents": len(members), "spans": _spans(members)}
                      for kind, members in sorted(kinds.items())}}


def query_recorded(conn: sqlite3.Connection, since: float, until: float) -> list[Incident]:
    """Incidents opened in [since, until] from the state database (for the report)."""
    return [Incident.from_json(json.loads(d)) for (d,) in conn.execute(
        "SELECT data FROM incidents WHERE opened_ms >= ? AND opened_ms <= ? ORDER BY number",
        (math.floor(since * 1000), math.ceil(until * 1000)))]


def summary_line(timing: Mapping[str, float], limits: LatencySettings
                 ) -> dict[str, float | None]:
    """The two budget spans of one record with their limits (for show and the board)."""
    return {"first_notification": span(timing, "first_notification"),
            "first_notification_limit": limits.accepted_within,
            "forward": span(timing, "forward"), "forward_limit": limits.handed_within}
