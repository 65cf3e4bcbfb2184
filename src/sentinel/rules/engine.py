"""The rule evaluator: readings and clock ticks in, condition changes (signals) out.

Pure and synchronous: no I/O and no clock of its own; every decision takes `now`. State is
one small `CondState` per (rule, device), plus each device's last-seen time; the caller
persists what `take_dirty()` returns and hands it back through `restore()` after a restart.

A condition is *active* or *clear*; a signal is emitted only when that changes (or its
severity rises), so a thousand identical readings cost nothing downstream.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sentinel import zone
from sentinel.config.inventory import Device
from sentinel.rules.model import (
    EdgeRule,
    InactivityRule,
    OfflineRule,
    RateRule,
    RulesConfig,
    RuleSpec,
    StateRule,
    StillRule,
    ThresholdRule,
    daytime_bounds,
)
from sentinel.types import Reading, Severity, Value

Change = Literal["active", "clear", "event", "cancel"]


# `before` of a new CondState in on_readings: (active, severity, pending, no mark).
_FRESH = (False, -1, 0, True)

# Readings per device remembered for replay detection (those that changed an incident).
_SIGNALLED_KEPT = 16


@dataclass(frozen=True, slots=True)
class Policy:
    """How the incident layer treats a rule's incidents (from the rule's settings)."""

    life_safety: bool
    resolve: Literal["auto", "manual"]
    clear_for: float
    resolve_after: float | None = None
    cancel_window: float = 0.0


@dataclass(frozen=True, slots=True)
class Signal:
    """One condition of one device changed (or a one-off event happened)."""

    rule: str
    incident: str
    device_id: str
    change: Change
    severity: Severity
    ts: float
    policy: Policy
    value: Value | None = None
    # What was crossed, for people: e.g. {"field": "pressure", "op": "<", "limit": 0.14};
    # `op` is one of > ≥ < ≤ as the rule's level says (rules.model.OPERATORS).
    detail: Mapping[str, Value] = field(default_factory=dict)
    # When sentinel received the reading behind it (None: a timer decided, at `ts`).
    received_at: float | None = None


@dataclass(slots=True)
class CondState:
    """Everything one rule remembers about one device; JSON-serialisable."""

    # Whose state this is; set by the engine from the state's key, never persisted.
    device_id: str = ""
    active: bool = False
    severity: int = -1
    # Level index -> since when it has held (pending durations).
    pending: dict[int, float] = field(default_factory=dict)
    last: Value | None = None
    mark: float | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def is_default(self) -> bool:
        """Nothing remembered: as a new state (such states need not be kept)."""
        return not (self.active or self.severity != -1 or self.pending or self.samples
                    or self.last is not None or self.mark is not None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"a": self.active, "s": self.severity}
        if self.pending:
            out["p"] = {str(k): v for k, v in self.pending.items()}
        if self.last is not None:
            out["l"] = self.last
        if self.mark is not None:
            out["m"] = self.mark
        if self.samples:
            out["x"] = self.samples
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CondState:
        return cls(active=bool(data.get("a", False)), severity=int(data.get("s", -1)),
                   pending={int(k): float(v) for k, v in data.get("p", {}).items()},
                   last=data.get("l"), mark=data.get("m"),
                   samples=[(float(a), float(b)) for a, b in data.get("x", [])])


def _fingerprint(values: Mapping[str, Value]) -> int:
    """Equal for equal values (a redelivered reading), whatever their order."""
    return hash(tuple(sorted(values.items())))


def _always(values: Mapping[str, Value]) -> bool:
    return True


def _num(value: object) -> float | None:
    if type(value) is float:  # the common case first: one check (bool is not float)
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class Evaluator:
    """One rule with its parameters. Subclasses decide; state lives in CondState.

    Devices whose rules and settings are the same share one evaluator: a 100,000-device
    inventory then costs a few hundred of them, not a million (measured: 19 s and 500 MB
    at start-up with one per rule and device). The device is the state's.
    """

    ticks = False
    # Fields whose presence in a reading concerns this rule (None: every reading).
    watches: frozenset[str] | None = None
    # Whether state changes that decide nothing yet (samples, last values) are persisted.
    soft = False
    # A quick test of a reading's values: True when `on_reading` on a new state would
    # signal nothing and leave the state new (a normal reading of a quiet device), so the
    # engine can skip the call and the state (None: no such test, call `on_reading`). It
    # covers `watches`. It may say False when in doubt, never True wrongly.
    inert: Callable[[Mapping[str, Value]], bool] | None = None
    rule: RuleSpec

    def __init__(self, rule: RuleSpec, default_clear_for: float) -> None:
        self.rule = rule
        self.name = rule.name
        clear_for = rule.clear_for if rule.clear_for is not None else default_clear_for
        self.policy = Policy(
            life_safety=rule.life_safety, resolve=rule.resolve, clear_for=clear_for,
            resolve_after=getattr(rule, "resolve_after", None),
            cancel_window=getattr(rule, "cancel_window", 0.0))

    def signal(self, st: CondState, change: Change, severity: Severity, ts: float,
               value: Value | None = None, **detail: Value) -> Signal:
        return Signal(self.rule.name, self.rule.incident_name, st.device_id, change, severity,
                      ts, self.policy, value, detail)

    def activate(self, st: CondState, severity: Severity, ts: float, value: Value | None,
                 **detail: Value) -> Signal | None:
        """Become active, or raise the severity; never lowers it while active."""
        if st.active and severity <= st.severity:
            return None
        st.active = True
        st.severity = int(severity)
        return self.signal(st, "active", severity, ts, value, **detail)

    def clear(self, st: CondState, ts: float, value: Value | None) -> Signal | None:
        if not st.active:
            st.pending.clear()
            return None
        st.active = False
        st.severity = -1
        st.pending.clear()
        return self.signal(st, "clear", Severity.INFO, ts, value)

    def on_reading(self, st: CondState, r: Reading, stale: bool) -> Signal | None:
        raise NotImplementedError

    def on_tick(self, st: CondState, now: float, last_seen: float) -> Signal | None:
        return None

    def due(self, st: CondState) -> float:
        """Earliest time `on_tick` may signal for this state (-inf: cannot tell). Used by
        `RuleEngine.next_due`, so that a replay ticks only when something can happen."""
        return -math.inf


class StateEval(Evaluator):
    rule: StateRule

    def __init__(self, rule: StateRule, default_clear_for: float) -> None:
        super().__init__(rule, default_clear_for)
        self.ticks = rule.for_ > 0
        self.watches = frozenset(f for f in (rule.field, rule.cancel_field) if f)
        # New state: only the watched value equal to `equals` (a pending hold or an
        # activation) or a cancel (a signal) does anything; clearing a new state does not.
        name, equals, cancel = rule.field, rule.equals, rule.cancel_field
        if cancel:
            self.inert = lambda values: (values.get(name) != equals
                                         and values.get(cancel) is not True)
        else:
            self.inert = lambda values: values.get(name) != equals

    def on_reading(self, st: CondState, r: Reading, stale: bool) -> Signal | None:
        rule = self.rule
        if rule.cancel_field and r.values.get(rule.cancel_field) is True and not stale:
            return self.signal(st, "cancel", Severity(st.severity) if st.active else rule.severity,
                               r.ts, True)
        value = r.values.get(rule.field)
        if value is None:
            return None
        if value == rule.equals:
            if stale and (st.active or rule.for_ > 0):
                return None
            since = st.pending.setdefault(0, r.ts)
            if r.ts - since >= rule.for_:
                return self.activate(st, rule.severity, r.ts, value, field=rule.field)
            return None
        if stale:
            return None
        return self.clear(st, r.ts, value)

    def on_tick(self, st: CondState, now: float, last_seen: float) -> Signal | None:
        since = st.pending.get(0)
        if since is None or st.active or now - since < self.rule.for_:
            return None
        return self.activate(st, self.rule.severity, since + self.rule.for_, self.rule.equals,
                             field=self.rule.field, held_for=self.rule.for_)

    def due(self, st: CondState) -> float:
        since = st.pending.get(0)
        return math.inf if since is None or st.active else since + self.rule.for_


class ThresholdEval(Evaluator):
    rule: ThresholdRule

    def __init__(self, rule: ThresholdRule, default_clear_for: float,
                 percent_of: float | None = None) -> None:
        super().__init__(rule, default_clear_for)
        self.ticks = any(lv.for_ > 0 for lv in rule.levels)
        self.watches = frozenset({rule.field})
        self.falling = rule.falling

        def scaled(value: float) -> float:
            # value * base / 100, not value * (base / 100): a 70 % mark of a 4 m tank is
            # then exactly 2.8 m, so a reading of 2.8 m is at the mark (inclusive bounds).
            return value if percent_of is None else value * percent_of / 100.0

        # (limit, severity, hold, inclusive, operator) per level, in the rule's order.
        self.limits = [(scaled(lv.limit), lv.severity, lv.for_, lv.inclusive, lv.op)
                       for lv in rule.levels]
        clear = rule.clear_level
        self.clear_at = None if clear is None else scaled(clear[0])
        self.clear_inclusive = clear is not None and clear[1]
        # New state: only a value at which some level holds does anything (it starts a
        # pending hold or activates). The loosest level decides whether any holds.
        name, falling = rule.field, self.falling
        edge = (max if falling else min)(limit for limit, *_ in self.limits)
        at_edge = any(inclusive for limit, _, _, inclusive, _ in self.limits
                      if limit == edge)

        def inert(values: Mapping[str, Value]) -> bool:
            value = values.get(name)
            if type(value) is not float:
                if value is None:
                    return True
                value = _num(value)
                if value is None:
                    return True
            # NaN and infinities: the comparisons below or on_reading's _num say no.
            if falling:
                return not (value < edge or (at_edge and value == edge))
            return not (value > edge or (at_edge and value == edge))

        self.inert = inert

    def _holds(self, limit: float, inclusive: bool, value: float) -> bool:
        if self.falling:
            return value <= limit if inclusive else value < limit
        return value >= limit if inclusive else value > limit

    def _clear(self, value: float) -> bool:
        if self.clear_at is None:
            return not any(self._holds(limit, inclusive, value)
                           for limit, _, _, inclusive, _ in self.limits)
        if self.falling:
            return value >= self.clear_at if self.clear_inclusive else value > self.clear_at
        return value <= self.clear_at if self.clear_inclusive else value < self.clear_at

    def on_reading(self, st: CondState, r: Reading, stale: bool) -> Signal | None:
        value = _num(r.values.get(self.rule.field))
        if value is None or stale:
            return None
        best: tuple[Severity, int] | None = None
        falling = self.falling
        for i, (limit, severity, hold, inclusive, _) in enumerate(self.limits):
            # self._holds, inlined: this runs for every reading of every such device.
            if falling:
                holds = value <= limit if inclusive else value < limit
            else:
                holds = value >= limit if inclusive else value > limit
            if holds:
                since = st.pending.setdefault(i, r.ts)
                if r.ts - since >= hold and (best is None or severity > best[0]):
                    best = (severity, i)
            else:
                st.pending.pop(i, None)
        # The value is remembered for a level held until on_tick decides, or for an active
        # condition; a normal reading leaves a normal device's state empty (not kept).
        st.last = value if st.pending or st.active else None
        if st.active and self._clear(value):
            return self.clear(st, r.ts, value)
        if best is not None:
            limit, _, hold, _, op = self.limits[best[1]]
            # A level with `for` says so (as on_tick does): "< 0.10 MPa for 60 s".
            held: dict[str, Value] = {"held_for": hold} if hold > 0 else {}
            return self.activate(st, best[0], r.ts, value, field=self.rule.field, op=op,
                                 limit=round(limit, 6), **held)
        return None

    def on_tick(self, st: CondState, now: float, last_seen: float) -> Signal | None:
        best: tuple[Severity, int, float] | None = None
        for i, since in st.pending.items():
            if i >= len(self.limits):
                continue
            _, severity, hold, _, _ = self.limits[i]
            if hold > 0 and now - since >= hold and (best is None or severity > best[0]):
                best = (severity, i, since + hold)
        if best is None:
            return None
        limit, _, hold, _, op = self.limits[best[1]]
        return self.activate(st, best[0], best[2], st.last, field=self.rule.field, op=op,
                             limit=round(limit, 6), held_for=hold)

    def due(self, st: CondState) -> float:
        # A held level decides at since + hold, unless it cannot raise what is active.
        due = math.inf
        for i, since in st.pending.items():
            if i >= len(self.limits):
                continue
            _, severity, hold, _, _ = self.limits[i]
            if hold > 0 and not (st.active and severity <= st.severity):
                due = min(due, since + hold)
        return due


class RateEval(Evaluator):
    rule: RateRule
    soft = True

    def __init__(self, rule: RateRule, default_clear_for: float) -> None:
        super().__init__(rule, default_clear_for)
        self.watches = frozenset({rule.field})

    def on_reading(self, st: CondState, r: Reading, stale: bool) -> Signal | None:
        rule = self.rule
        value = _num(r.values.get(rule.field))
        if value is None or stale:
            return None
        samples = st.samples
        horizon = r.ts - rule.window
        expired = 0
        while expired < len(samples) and samples[expired][0] < horizon:
            expired += 1
        if expired:
            del samples[:expired]
        _keep_sample(samples, r.ts, value, rule)
        change = self._change(samples)
        if change is None:
            return None
        measured, limit, label = change
        # Rounded: a difference of decimal readings is inexact (0.30 - 0.25 is
        # 0.04999999999999999), and a drop of exactly `drop` must alarm (≥) as the rule says.
        if round(measured, 9) >= limit:
            return self.activate(st, rule.severity, r.ts, value, field=rule.field, measure=label,
                                 measured=round(measured, 6), limit=limit, window=rule.window)
        return self.clear(st, r.ts, value)

    def _change(self, samples: Sequence[tuple[float, float]]
                ) -> tuple[float, float, str] | None:
        rule = self.rule
        if rule.drop is not None:  # samples fall from the window's maximum (_keep_sample)
            return samples[0][1] - samples[-1][1], rule.drop, "drop"
        if rule.rise is not None:  # samples climb from the window's minimum
            return samples[-1][1] - samples[0][1], rule.rise, "rise"
        span = samples[-1][0] - samples[0][0]
        if len(samples) < 3 or span <= 0 or span < rule.min_span:
            return None
        slope = _slope(samples) * 3600.0
        if rule.falling_per_hour is not None:
            return -slope, rule.falling_per_hour, "falling_per_hour"
        assert rule.rising_per_hour is not None
        return slope, rule.rising_per_hour, "rising_per_hour"


# Samples a slope rule keeps per window: a least-squares slope needs no more, and a tank
# reporting every second over a 10-minute window would otherwise keep 600 (evaluated and
# persisted with every reading).
_SLOPE_SAMPLES = 60


def _keep_sample(samples: list[tuple[float, float]], ts: float, value: float,
                 rule: RateRule) -> None:
    """Add a reading to a rate rule's window, keeping only what the rule can use.

    drop/rise compare the newest value with the window's maximum/minimum: a sample that a
    newer one at least as high (low) has passed can never be that extreme again, so the
    window keeps a falling (rising) sequence that starts at its extreme. Slope rules keep
    samples spaced at least window/_SLOPE_SAMPLES apart, the newest always current.
    """
    if rule.drop is not None or rule.rise is not None:
        falling = rule.drop is not None
        while samples and (samples[-1][1] <= value if falling else samples[-1][1] >= value):
            samples.pop()
        samples.append((ts, value))
        return
    if len(samples) >= 2 and samples[-1][0] - samples[-2][0] < rule.window / _SLOPE_SAMPLES:
        samples[-1] = (ts, value)
    else:
        samples.append((ts, value))


def _slope(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope per second: robust to one noisy sample, unlike first-to-last."""
    n = len(samples)
    t0 = samples[0][0]
    # The same sums in the same order as one generator each, from lists (a tank's window
    # holds ~30 samples and is summed on every reading).
    times = [t - t0 for t, _ in samples]
    values = [v for _, v in samples]
    mean_t = sum(times) / n
    mean_v = sum(values) / n
    offsets = [t - mean_t for t in times]
    num = sum([dt * (v - mean_v) for dt, v in zip(offsets, values, strict=True)])
    den = sum([dt ** 2 for dt in offsets])
    return num / den if den else 0.0


class OfflineEval(Evaluator):
    rule: OfflineRule
    ticks = True

    def __init__(self, rule: OfflineRule, default_clear_for: float,
                 report_interval: float | None) -> None:
        super().__init__(rule, 0.0 if rule.clear_for is None else rule.clear_for)
        interval = report_interval or rule.interval
        self.interval = interval
        self.limits = sorted(
            (max(lv.missed * interval if lv.missed else 0.0, lv.after or 0.0), lv.severity)
            for lv in rule.levels)
        # A reading only clears: a new state is never active.
        self.inert = _always

    def on_reading(self, st: CondState, r: Reading, stale: bool) -> Signal | None:
        return None if stale else self.clear(st, r.received_at, None)

    def on_tick(self, st: CondState, now: float, last_seen: float) -> Signal | None:
        silent = now - last_seen
        reached = [(limit, sev) for limit, sev in self.limits if silent >= limit]
        if not reached:
            return None
        limit, severity = max(reached, key=lambda x: x[1])
        return self.activate(st, severity, now, None, silent_for=round(silent),
                             limit=limit, last_seen=last_seen, interval=self.interval)


class EdgeEval(Evaluator):
    rule: EdgeRule
    soft = True

    def __init__(self, rule: EdgeRule, default_clear_for: float) -> None:
        super().__init__(rule, default_clear_for)
        self.watches = frozenset({rule.field})
        # New state: only the edge's start is remembered (a new state has no start yet).
        name, start = rule.field, rule.from_
        self.inert = lambda values: values.get(name) != start

    def on_reading(self, st: CondState, r: Reading, stale: bool) -> Signal | None:
        value = r.values.get(self.rule.field)
        if value is None or stale:
            return None
        before = st.last
        # Only the edge's start is worth remembering (any other value cannot begin it), so
        # the state of a device that never shows it stays empty and is not kept.
        st.last = value if value == self.rule.from_ else None
        if before == self.rule.from_ and value == self.rule.to:
            return self.signal(st, "event", self.rule.severity, r.ts, value,
                               field=self.rule.field)
        return None


class StillEval(Evaluator):
    rule: StillRule
    ticks = True
    soft = True

    def __init__(self, rule: StillRule, default_clear_for: float) -> None:
        super().__init__(rule, default_clear_for)
        self.watches = frozenset(f for f in (rule.steps_field, rule.motion_field) if f)

    def trigger(self, st: CondState, ts: float) -> None:
        """The rule this one follows fired: start watching for movement."""
        if st.mark is None:
            st.mark = ts

    def on_reading(self, st: CondState, r: Reading, stale: bool) -> Signal | None:
        rule = self.rule
        if stale:
            return None
        steps = _num(r.values.get(rule.steps_field))
        moved = rule.motion_field is not None and r.values.get(rule.motion_field) is True
        previous = _num(st.last)
        if steps is not None:
            moved = moved or (previous is not None and steps > previous)
            st.last = steps
        if moved and st.mark is not None and r.ts > st.mark:
            st.mark = None
            return self.clear(st, r.ts, steps)
        return None

    def on_tick(self, st: CondState, now: float, last_seen: float) -> Signal | None:
        if st.mark is None or st.active or now - st.mark < self.rule.within:
            return None
        return self.activate(st, self.rule.severity, st.mark + self.rule.within, st.last,
                             still_for=self.rule.within)

    def due(self, st: CondState) -> float:
        return math.inf if st.mark is None or st.active else st.mark + self.rule.within


class InactivityEval(Evaluator):
    rule: InactivityRule
    ticks = True
    soft = True

    def __init__(self, rule: InactivityRule, default_clear_for: float) -> None:
        super().__init__(rule, default_clear_for)
        self.watches = frozenset({rule.field})
        self.tz = ZoneInfo(rule.timezone) if rule.timezone else zone.current()
        self.day_start, self.day_end = daytime_bounds(rule.daytime)

    def on_reading(self, st: CondState, r: Reading, stale: bool) -> Signal | None:
        steps = _num(r.values.get(self.rule.field))
        if steps is None or stale:
            return None
        previous = _num(st.last)
        st.last = steps
        if st.mark is None:
            st.mark = r.ts
        if previous is not None and steps > previous:
            st.mark = r.ts
            return self.clear(st, r.ts, steps)
        return None

    def on_tick(self, st: CondState, now: float, last_seen: float) -> Signal | None:
        if st.mark is None or st.active:
            return None
        idle = daytime_overlap(st.mark, now, self.day_start, self.day_end, self.tz)
        if idle < self.rule.for_:
            return None
        return self.activate(st, self.rule.severity, now, st.last, idle_daytime=round(idle),
                             limit=self.rule.for_)

    def due(self, st: CondState) -> float:
        # When daytime_overlap(mark, t) reaches `for`: walk the days as it does.
        if st.mark is None or st.active:
            return math.inf
        need = self.rule.for_
        a = st.mark
        day = datetime.fromtimestamp(a, self.tz).replace(hour=0, minute=0, second=0,
                                                         microsecond=0)
        for _ in range(_DUE_DAYS):
            lo = max(a, (day + timedelta(seconds=self.day_start)).timestamp())
            span = (day + timedelta(seconds=self.day_end)).timestamp() - lo
            if span > 0:
                if span >= need:
                    return lo + need
                need -= span
            day = (day + timedelta(days=1, hours=3)).replace(hour=0)
        return -math.inf


def daytime_overlap(a: float, b: float, start: float, end: float, tz: ZoneInfo) -> float:
    """Seconds of [a, b) that fall between `start` and `end` local time of day."""
    if b <= a:
        return 0.0
    total = 0.0
    day = datetime.fromtimestamp(a, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    while day.timestamp() < b:
        lo = (day + timedelta(seconds=start)).timestamp()
        hi = (day + timedelta(seconds=end)).timestamp()
        total += max(0.0, min(b, hi) - max(a, lo))
        day = (day + timedelta(days=1, hours=3)).replace(hour=0)  # DST-safe next midnight
    return total


# Upper bound between two scans for silent devices, whatever the deadlines say.
_OFFLINE_RESCAN = 60.0
# next_due is this much early: `due` adds where on_tick subtracts, and floats may differ
# in the last bit; a tick early changes nothing, a tick late would.
_DUE_SLACK = 0.001
# Days InactivityEval.due looks ahead before it gives up (and says "tick now").
_DUE_DAYS = 400


# Field sets remembered per plan (a kind's readings carry one or a few); past this, a
# device sending ever new sets is narrowed on each reading instead.
_WATCHING_KEPT = 64


class _Plan(list[Evaluator]):
    """The evaluators of one device shape, and for each set of fields a reading may carry,
    those that watch one of them (or every reading): the others skip such a reading
    whatever their state, so on_readings need not look at them. `quiet`: the same for a
    device holding no state, without the evaluators that never act on a new state (their
    `inert` is always true: offline)."""

    __slots__ = ("quiet", "watching")

    def __init__(self, evaluators: Iterable[Evaluator] = ()) -> None:
        super().__init__(evaluators)
        self.watching: dict[tuple[str, ...], tuple[Evaluator, ...]] = {}
        self.quiet: dict[tuple[str, ...], tuple[Evaluator, ...]] = {}

    def narrow(self, fields: tuple[str, ...], quiet: bool) -> tuple[Evaluator, ...]:
        watching = tuple(ev for ev in self
                         if (ev.watches is None or not ev.watches.isdisjoint(fields))
                         and not (quiet and ev.inert is _always))
        cache = self.quiet if quiet else self.watching
        if len(cache) < _WATCHING_KEPT:
            cache[fields] = watching
        return watching


@dataclass(frozen=True, slots=True)
class Dirty:
    """State to persist: changed condition states, and last-seen times worth writing."""

    states: dict[tuple[str, str], CondState]
    last_seen: dict[str, float]
    significant: bool


class RuleEngine:
    """Evaluate every enabled rule for every device of the inventory."""

    def __init__(self, config: RulesConfig, inventory: Mapping[str, Device],
                 started_at: float, startup_grace: float, last_seen_resolution: float = 60.0,
                 keep_values: bool = False) -> None:
        self.config = config
        self.started_at = started_at
        self.startup_grace = startup_grace
        self._plans: dict[str, _Plan] = {}
        self._followers: dict[tuple[str, str], list[StillEval]] = {}
        self._offline: list[tuple[str, OfflineEval]] = []
        # Conditions with a running clock (pending hold, watch after a fall, inactivity).
        self._timers: dict[tuple[str, str], Evaluator] = {}
        self._next_offline_scan = -math.inf
        # shape -> (plan, its StillEvals, its OfflineEvals)
        plans: dict[tuple[Any, ...], tuple[_Plan, list[StillEval],
                                           list[OfflineEval]]] = {}
        # Per kind, the device settings its thresholds scale by (tank height...).
        relative: dict[str, list[str]] = {}
        for r in config.rule:
            if isinstance(r, ThresholdRule) and r.relative_to is not None:
                for kind in r.kinds:
                    if r.relative_to not in relative.setdefault(kind, []):
                        relative[kind].append(r.relative_to)
        any_overrides = bool(config.override)
        no_overrides: list[Any] = []
        offline_list = self._offline
        all_plans = self._plans
        for device in inventory.values():
            # Devices with the same kind, matching overrides and rule-relevant settings
            # get the same evaluators (see Evaluator).
            kind = device.kind
            settings = device.settings
            overrides = _matching_overrides(config, device) if any_overrides else no_overrides
            scaled_by = relative.get(kind)
            shape = (kind, tuple(id(ov) for ov in overrides) if overrides else (),
                     settings.report_interval_s,
                     tuple(settings.number(name) for name in scaled_by) if scaled_by else ())
            found = plans.get(shape)
            if found is None:
                plan = _Plan(ev for rule in _apply_overrides(config, device, overrides)
                             if (ev := _evaluator(rule, device, config.defaults.clear_for))
                             is not None)
                found = plans[shape] = (plan, [e for e in plan if isinstance(e, StillEval)],
                                        [e for e in plan if isinstance(e, OfflineEval)])
            plan, followers, offline = found
            all_plans[device.id] = plan
            for still in followers:
                self._followers.setdefault((still.rule.after, device.id), []).append(still)
            for ev in offline:
                offline_list.append((device.id, ev))
        self.states: dict[tuple[str, str], CondState] = {}
        # The same states by device, then rule: only devices holding some state are here,
        # so on_readings looks up nothing for a quiet device.
        self._held: dict[str, dict[str, CondState]] = {}
        self.last_seen: dict[str, float] = {}
        self._persisted_seen: dict[str, float] = {}
        self._seen_resolution = last_seen_resolution
        # Device -> (ts, fingerprint of the values) of its newest reading: drops exact
        # redeliveries. With keep_values, (ts, the values themselves), fingerprinted only
        # when a reading with the same ts comes (a replay, which keeps every device's newest
        # reading anyway, saves hashing each reading; a live fleet keeps the small int).
        self._keep_values = keep_values
        self._newest: dict[str, tuple[float, Any]] = {}
        # Device -> (ts, values) of its last readings that changed an incident: a replay of
        # one of them (an old message sent again) must not raise its alarm a second time.
        # Only readings that signalled are kept, so a big fleet costs next to nothing.
        self._signalled: dict[str, collections.deque[tuple[float, int]]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._significant = False
        # next_due: each timer's due time, and the keys whose state moved since computed.
        self._timer_due: dict[tuple[str, str], float] = {}
        self._touched: set[tuple[str, str]] = set()
        self._min_due = math.inf
        # on_readings: a new state no one holds, for the next rule and device without one.
        self._spare: CondState | None = CondState()

    # -- state ------------------------------------------------------------------------

    def restore(self, states: Mapping[tuple[str, str], Mapping[str, Any]],
                last_seen: Mapping[str, float]) -> None:
        for key, data in states.items():
            rule, device_id = key
            st = self.states[key] = CondState.from_json(data)
            st.device_id = device_id
            self._held.setdefault(device_id, {})[rule] = st
            ev = next((e for e in self._plans.get(device_id, ()) if e.rule.name == rule), None)
            if ev is not None:
                self._watch_timer(key, ev, st)
        self.last_seen.update(last_seen)
        self._persisted_seen.update(last_seen)

    def _state(self, rule: str, device_id: str) -> CondState:
        key = (rule, device_id)
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = CondState(device_id)
            self._held.setdefault(device_id, {})[rule] = st
        return st

    def take_dirty(self, force_seen: bool = False) -> Dirty:
        states = {k: self.states[k] for k in self._dirty}
        seen: dict[str, float] = {}
        resolution = 0.0 if force_seen else self._seen_resolution
        persisted = self._persisted_seen
        for device_id, ts in self.last_seen.items():
            if ts - persisted.get(device_id, -math.inf) >= resolution and \
                    persisted.get(device_id) != ts:
                seen[device_id] = ts
        persisted.update(seen)
        dirty = Dirty(states, seen, self._significant)
        self._dirty = set()
        self._significant = False
        return dirty

    @property
    def has_significant_changes(self) -> bool:
        return self._significant

    def devices(self) -> Iterable[str]:
        return self._plans.keys()

    def rules_for(self, device_id: str) -> list[RuleSpec]:
        return [ev.rule for ev in self._plans.get(device_id, [])]

    # -- evaluation -------------------------------------------------------------------

    def on_readings(self, readings: Iterable[Reading]) -> list[Signal]:
        out: list[Signal] = []
        plans = self._plans
        newest = self._newest
        last_seen = self.last_seen
        states = self.states
        held_by = self._held
        dirty = self._dirty
        touched = self._touched
        keep_values = self._keep_values
        # Taken, so that a spare an evaluator left half-changed (it raised) is not used again.
        spare = self._spare or CondState()
        self._spare = None
        for r in readings:
            device_id = r.device_id
            plan = plans.get(device_id)
            if plan is None:
                continue
            received = r.received_at
            if received > last_seen.get(device_id, -math.inf):
                last_seen[device_id] = received
            ts = r.ts
            values = r.values
            fingerprint = None if keep_values else _fingerprint(values)
            prev = newest.get(device_id)
            if prev is not None and ts == prev[0]:
                if fingerprint is None:
                    fingerprint = _fingerprint(values)
                if fingerprint == (_fingerprint(prev[1]) if keep_values else prev[1]):
                    continue  # the same reading again (QoS 1 redelivery)
            signalled = self._signalled.get(device_id)
            if signalled is not None:
                if fingerprint is None:
                    fingerprint = _fingerprint(values)
                if (ts, fingerprint) in signalled:
                    continue  # a replay of a reading that already raised or cleared something
            produced = len(out)
            stale = prev is not None and ts < prev[0]
            if not stale:
                newest[device_id] = (ts, values if keep_values else fingerprint)
            held = held_by.get(device_id)
            # Only the evaluators watching a field of this reading (or every reading).
            keys = tuple(values)
            watching = (plan.quiet if held is None else plan.watching).get(keys)
            if watching is None:
                watching = plan.narrow(keys, held is None)
            for ev in watching:
                st = held.get(ev.name) if held is not None else None
                if st is None:
                    # Kept only once it holds something: with 100,000 devices, a state per
                    # rule and device that stays at its defaults would be ~250 MB. A
                    # normal reading of a quiet device is told apart without a call.
                    inert = ev.inert
                    if inert is not None and inert(values):
                        continue
                    # The spare is such a new state; one left at its defaults serves again.
                    st = spare
                    st.device_id = device_id
                    before = _FRESH
                    signal = ev.on_reading(st, r, stale)
                    if signal is None and st.is_default:
                        continue  # nothing to remember, persist or time
                    key = (ev.name, device_id)
                    states[key] = st
                    if held is None:
                        held = held_by[device_id] = {}
                    held[ev.name] = st
                    spare = CondState()
                else:
                    key = (ev.name, device_id)
                    before = (st.active, st.severity, len(st.pending), st.mark is None)
                    signal = ev.on_reading(st, r, stale)
                if ev.ticks:
                    touched.add(key)
                if signal is not None:
                    out.append(signal)
                    self._after_signal(signal, out)
                if before != (st.active, st.severity, len(st.pending), st.mark is None):
                    self._significant = True
                    dirty.add(key)
                    if ev.ticks:
                        self._watch_timer(key, ev, st)
                elif ev.soft:
                    dirty.add(key)
                    if ev.ticks:
                        self._watch_timer(key, ev, st)
            if len(out) > produced:
                # The incident's latency record starts at this reading's receipt.
                for i in range(produced, len(out)):
                    out[i] = dataclasses.replace(out[i], received_at=received)
                if signalled is None:
                    signalled = self._signalled[device_id] = collections.deque(
                        maxlen=_SIGNALLED_KEPT)
                if fingerprint is None:
                    fingerprint = _fingerprint(values)
                signalled.append((ts, fingerprint))
        self._spare = spare
        return out

    def _watch_timer(self, key: tuple[str, str], ev: Evaluator, st: CondState) -> None:
        if ev.ticks and not isinstance(ev, OfflineEval) and (st.pending or st.mark is not None):
            self._timers[key] = ev
            self._touched.add(key)

    def next_due(self) -> float:
        """The earliest time at which `tick` may do anything: a running clock may decide,
        or the scan for silent devices is due. Ticks before it change nothing, so a replay
        (backtest) skips them; readings or a tick in between can only bring it forward
        when they change a state, so ask again after them."""
        if self._touched:
            due, timers, states = self._timer_due, self._timers, self.states
            for key in self._touched:
                ev = timers.get(key)
                if ev is None:
                    due.pop(key, None)
                else:
                    due[key] = ev.due(states[key])
            self._touched.clear()
            self._min_due = min(due.values(), default=math.inf)
        scan = max(self._next_offline_scan, self.started_at + self.startup_grace) \
            if self._offline else math.inf
        return min(self._min_due, scan) - _DUE_SLACK

    def tick(self, now: float) -> list[Signal]:
        """Evaluate running clocks; scan for silent devices when the earliest is due."""
        out: list[Signal] = []
        # A clock whose due time (as next_due last computed it, for a state not touched
        # since) is still ahead cannot decide now (Evaluator.due): it is not asked. Live,
        # where nothing calls next_due, every clock is asked as before.
        due, touched = self._timer_due, self._touched
        for key, ev in list(self._timers.items()):
            if key not in touched:
                when = due.get(key)
                if when is not None and when - _DUE_SLACK > now:
                    continue
            st = self.states[key]
            self._emit(key, ev.on_tick(st, now, 0.0), out)
            if not (st.pending or st.mark is not None):
                del self._timers[key]
            # It may have decided or stopped: next_due looks at it again.
            touched.add(key)
        if now >= self.started_at + self.startup_grace and now >= self._next_offline_scan:
            # The scan touches every device; between scans only readings move deadlines,
            # and only later, so the earliest deadline found is when to look again.
            earliest = now + _OFFLINE_RESCAN
            last_seen = self.last_seen
            held_by = self._held
            for device_id, ev in self._offline:
                seen = last_seen.get(device_id)
                if seen is None:
                    # Never heard from since we first started: count from then.
                    seen = last_seen[device_id] = self.started_at
                limits = ev.limits
                if now - seen >= limits[0][0]:
                    key = (ev.name, device_id)
                    self._emit(key, ev.on_tick(self._state(*key), now, seen), out)
                held = held_by.get(device_id)
                cond = held.get(ev.name) if held is not None else None
                current = cond.severity if cond is not None and cond.active else -1
                for limit, severity in limits:
                    if severity > current and seen + limit > now:
                        if seen + limit < earliest:
                            earliest = seen + limit
                        break
            self._next_offline_scan = earliest
        return out

    def _emit(self, key: tuple[str, str], signal: Signal | None, out: list[Signal]) -> None:
        if signal is not None:
            self._dirty.add(key)
            self._significant = True
            out.append(signal)
            self._after_signal(signal, out)

    def _after_signal(self, signal: Signal, out: list[Signal]) -> None:
        if signal.change != "active":
            return
        for follower in self._followers.get((signal.rule, signal.device_id), ()):
            key = (follower.rule.name, signal.device_id)
            st = self._state(*key)
            follower.trigger(st, signal.ts)
            self._watch_timer(key, follower, st)
            self._dirty.add(key)
            self._significant = True


def effective_rules(config: RulesConfig, device: Device) -> list[RuleSpec]:
    """The rules of the device's kind with the overrides that match it applied."""
    return _apply_overrides(config, device, _matching_overrides(config, device))


def _matching_overrides(config: RulesConfig, device: Device) -> list[Any]:
    return sorted((ov for ov in config.override if _matches(ov.match, device, config)),
                  key=lambda ov: ov.match.specificity)


_CLEAR_KEYS = frozenset({"clear_above", "clear_at_or_above", "clear_below", "clear_at_or_below"})


def _apply_overrides(config: RulesConfig, device: Device, matching: list[Any]
                     ) -> list[RuleSpec]:
    out: list[RuleSpec] = []
    for rule in config.rule:
        if device.kind not in rule.kinds:
            continue
        enabled = rule.enabled
        changes: dict[str, Any] = {}
        for ov in matching:
            if ov.rule != rule.name:
                continue
            changes.update(ov.set)
            if ov.enabled is not None:
                enabled = ov.enabled
        if not enabled:
            continue
        if changes:
            data = rule.model_dump(by_alias=True)
            if _CLEAR_KEYS.intersection(changes):
                # An override's clear level replaces the rule's, whichever form each uses.
                data.update(dict.fromkeys(_CLEAR_KEYS.intersection(data)))
            data.update(changes)
            rule = type(rule).model_validate(data)
        out.append(rule)
    return out


def _matches(match: Any, device: Device, config: RulesConfig) -> bool:
    if match.device is not None and match.device != device.id:
        return False
    for key in ("building", "compound", "grid"):
        want = getattr(match, key)
        if want is not None and want != getattr(device, key):
            return False
    return not (match.group is not None and device.id not in config.groups.get(match.group, ()))


def _evaluator(rule: RuleSpec, device: Device, clear_for: float) -> Evaluator | None:
    if isinstance(rule, StateRule):
        return StateEval(rule, clear_for)
    if isinstance(rule, ThresholdRule):
        setting = None
        if rule.relative_to is not None:
            setting = device.settings.number(rule.relative_to)
            if setting is None:
                return None
        return ThresholdEval(rule, clear_for, setting)
    if isinstance(rule, RateRule):
        return RateEval(rule, clear_for)
    if isinstance(rule, OfflineRule):
        return OfflineEval(rule, clear_for, device.settings.report_interval_s)
    if isinstance(rule, EdgeRule):
        return EdgeEval(rule, clear_for)
    if isinstance(rule, StillRule):
        return StillEval(rule, clear_for)
    return InactivityEval(rule, clear_for)
