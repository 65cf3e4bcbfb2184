"""Silence and drill windows: what they cover, when they are in force, what they mute.

Pure: no I/O, every question takes `now`. A *drill* window marks the incidents that open
under it as drills. A *silence* window mutes notifications; it is asked at send time (each
escalation step asks again, as Alertmanager's mute stage does), never when an incident
opens, so a silence added while an incident climbs mutes its later steps, and one that
ends or is removed lets every incident it held start its escalation.

A silence cannot hide a fire by accident: one that names no kind and no rule mutes only
incidents that are not life-safety (a hydrant being flushed, a tank being cleaned). Muting
life-safety incidents (smoke, gas, fire groups, SOS, falls and any rule marked
life-safety) needs the window to name what it mutes *and* to say `life_safety`, with a
reason; even then the duty officer is paged, labelled with the maintenance window (see
escalation.engine): a detector under maintenance that reports a fire is a fire until a
person says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sentinel.zone import current as current_zone

# Place keys a window may be limited to (every one given must match).
PLACE_KEYS = ("community", "compound", "building", "grid", "device")
# An open-ended window (recurring, until removed) ends at 2100-01-01 UTC.
FOREVER = 4_102_444_800.0
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Mutable(Protocol):
    """What a silence looks at: an incident's name, kind, place, rules, and life-safety."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def place(self) -> Mapping[str, str]: ...
    @property
    def conditions(self) -> Mapping[str, int]: ...
    @property
    def life_safety(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A weekly slot in the community's time zone: `days` it starts on, `start`-`end`.

    An `end` at or before `start` runs past midnight into the next day (Monday 23:00-01:00
    is in force from Monday 23:00 to Tuesday 01:00).
    """

    days: tuple[int, ...]  # 0 = Monday
    start: time
    end: time
    zone: str = field(default_factory=lambda: current_zone().key)

    def __post_init__(self) -> None:
        if not self.days or any(not 0 <= d < 7 for d in self.days):
            raise ValueError("a recurring window needs weekdays (mon..sun)")
        ZoneInfo(self.zone)  # unknown zone: an error now, not at the first question

    def slot(self, now: float) -> tuple[float, float] | None:
        """The slot in force at `now` as (start, end) epoch seconds, or None."""
        tz = ZoneInfo(self.zone)
        local = datetime.fromtimestamp(now, tz)
        for back in (0, 1):
            day = local.date() - timedelta(days=back)
            if day.weekday() not in self.days:
                continue
            begin = datetime.combine(day, self.start, tz)
            end_day = day if self.end > self.start else day + timedelta(days=1)
            finish = datetime.combine(end_day, self.end, tz)
            if begin <= local < finish:
                return begin.timestamp(), finish.timestamp()
        return None

    def to_json(self) -> dict[str, Any]:
        return {"days": [_WEEKDAYS[d] for d in self.days], "start": self.start.strftime("%H:%M"),
                "end": self.end.strftime("%H:%M"), "zone": self.zone}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], zone: str | None = None) -> Recurrence:
        """From {"days": ["tue"] or "mon-fri", "start": "09:00", "end": "11:00"}."""
        days = parse_days(data.get("days"))
        return cls(days, parse_clock(data.get("start")), parse_clock(data.get("end")),
                   str(data.get("zone") or zone or current_zone().key))


def parse_days(value: object) -> tuple[int, ...]:
    """Weekdays from ["mon", "tue"], "tue", "mon-fri", "daily", "weekdays" or "weekend"."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("daily", "all", "every day"):
            return tuple(range(7))
        if text == "weekdays":
            return tuple(range(5))
        if text == "weekend":
            return (5, 6)
        if "," in text:
            return parse_days([p for p in text.split(",") if p.strip()])
        if "-" in text:
            first, _, last = text.partition("-")
            a, b = _weekday(first), _weekday(last)
            return tuple(range(a, b + 1)) if a <= b else (*range(a, 7), *range(0, b + 1))
        return (_weekday(text),)
    if isinstance(value, list | tuple) and value:
        return tuple(sorted({v if isinstance(v, int) and 0 <= v < 7 else _weekday(str(v))
                             for v in value}))
    raise ValueError('days: at least one, e.g. ["tue"], "mon-fri", "daily", "weekend"')


def _weekday(text: str) -> int:
    key = text.strip().lower()[:3]
    if key not in _WEEKDAYS:
        raise ValueError(f"unknown weekday {text!r} (mon, tue, wed, thu, fri, sat, sun)")
    return _WEEKDAYS.index(key)


def parse_clock(value: object) -> time:
    """A local time of day from "09:00" ("24:00" is midnight)."""
    if isinstance(value, time):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text == "24:00":
            return time(0, 0)
        try:
            parsed = time.fromisoformat(text)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                return parsed
            raise ValueError("a time of day is local to the community's timezone: no offset")
    raise ValueError(f"invalid time of day {value!r} (use \"09:00\")")


@dataclass(frozen=True, slots=True)
class Window:
    """A silence or drill window over a place, optionally limited to kinds or rules.

    `scope` holds place keys (empty: the whole community). `kinds` and `rules` limit it to
    incidents of those device kinds or those rules/incident names. `every` makes it recur
    weekly between `start` and `end`. Windows from the configuration file have a `name`
    and a negative id; windows added by people are numbered from 1.
    """

    id: int
    type: str  # "silence" | "drill"
    scope: Mapping[str, str]
    start: float
    end: float
    author: str
    reason: str
    kinds: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    life_safety: bool = False
    every: Recurrence | None = None
    name: str = ""

    @property
    def label(self) -> str:
        """How people refer to it: #3, or the configured window's name."""
        return self.name or f"#{self.id}"

    def active(self, now: float) -> bool:
        if not self.start <= now < self.end:
            return False
        return self.every is None or self.every.slot(now) is not None

    def in_force_until(self, now: float) -> float | None:
        """When the period in force at `now` ends (None: not in force)."""
        if not self.start <= now < self.end:
            return None
        if self.every is None:
            return self.end
        slot = self.every.slot(now)
        return None if slot is None else min(slot[1], self.end)

    def covers(self, place: Mapping[str, str], now: float) -> bool:
        """In force at `now` over this place (and its kind, when the window names kinds)."""
        if not self.active(now):
            return False
        if self.kinds and place.get("kind") not in self.kinds:
            return False
        return all(place.get(k) == v for k, v in self.scope.items())

    def mutes(self, inc: Mutable, now: float) -> bool:
        """Whether this window holds back notifications about `inc` at `now`."""
        if self.type != "silence" or not self.active(now):
            return False
        place = inc.place
        if not all(place.get(k) == v for k, v in self.scope.items()):
            return False
        if self.kinds and inc.kind not in self.kinds:
            return False
        if self.rules and inc.name not in self.rules \
                and not any(r in self.rules for r in inc.conditions):
            return False
        if inc.life_safety:
            # Only a window that names what it mutes and says so explicitly.
            return self.life_safety and bool(self.kinds or self.rules)
        return True

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "scope": dict(self.scope),
                "kinds": list(self.kinds), "rules": list(self.rules),
                "life_safety": self.life_safety,
                "every": self.every.to_json() if self.every is not None else None,
                "start": self.start, "end": self.end, "author": self.author,
                "reason": self.reason, "name": self.name, "label": self.label}


def split_scope(scope: Mapping[str, str], kinds: Iterable[str] = ()
                ) -> tuple[dict[str, str], tuple[str, ...]]:
    """Place keys and kinds from a scope that may still hold a `kind` key (older windows)."""
    place = {k: v for k, v in scope.items() if k != "kind"}
    found = list(kinds)
    if scope.get("kind") and scope["kind"] not in found:
        found.append(scope["kind"])
    return place, tuple(found)


@dataclass
class Windows:
    """Every window the daemon knows: those people added (stored) and configured ones.

    One object shared by the incident stage (drills mark incidents as they open) and the
    escalation stage (silences mute steps as they are taken); the incident stage replaces
    the stored ones when the state database changes.
    """

    configured: Sequence[Window] = ()
    stored: Sequence[Window] = field(default_factory=list)

    def replace(self, stored: Sequence[Window]) -> None:
        self.stored = list(stored)

    def all(self) -> list[Window]:
        return [*self.configured, *self.stored]

    def __iter__(self) -> Any:
        return iter(self.all())

    def muted_by(self, inc: Mutable, now: float) -> Window | None:
        """The window that mutes `inc` now; one that names life-safety explicitly first."""
        found = [w for w in self.all() if w.mutes(inc, now)]
        if not found:
            return None
        return max(found, key=lambda w: (w.life_safety, -abs(w.id)))

    def upcoming(self, now: float) -> list[Window]:
        """Windows in force now or later (what people list and the board shows)."""
        return [w for w in self.all() if w.end > now]


class _Placed(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def community(self) -> str: ...
    @property
    def compound(self) -> str: ...
    @property
    def building(self) -> str: ...
    @property
    def grid(self) -> str: ...


@dataclass(frozen=True)
class Vocabulary:
    """What a window may name: the inventory's places and devices, kinds, and rules."""

    devices: frozenset[str]
    communities: frozenset[str]
    compounds: frozenset[str]
    buildings: frozenset[tuple[str, str]]  # (compound, building)
    grids: frozenset[str]
    kinds: frozenset[str]
    rules: frozenset[str]  # rule names and incident names (correlation groups included)

    @classmethod
    def of(cls, devices: Iterable[_Placed], kinds: Iterable[str], rules: Iterable[str]
           ) -> Vocabulary:
        found = list(devices)
        return cls(frozenset(d.id for d in found), frozenset(d.community for d in found),
                   frozenset(d.compound for d in found),
                   frozenset((d.compound, d.building) for d in found if d.building),
                   frozenset(d.grid for d in found if d.grid), frozenset(kinds),
                   frozenset(rules))

    def problems(self, window: Window) -> list[str]:
        """Why this window names something that does not exist (empty: it is fine)."""
        out: list[str] = []
        scope = window.scope
        for key, known in (("device", self.devices), ("community", self.communities),
                           ("compound", self.compounds), ("grid", self.grids)):
            value = scope.get(key)
            if value is not None and value not in known:
                out.append(f"unknown {key} {value!r}")
        building = scope.get("building")
        if building is not None:
            compound = scope.get("compound")
            inside = {b for c, b in self.buildings if compound is None or c == compound}
            if building not in inside:
                where = f" in compound {compound!r}" if compound else ""
                out.append(f"unknown building {building!r}{where}")
        out += [f"unknown kind {k!r}" for k in window.kinds if k not in self.kinds]
        out += [f"unknown rule {r!r}" for r in window.rules if r not in self.rules]
        if window.life_safety and not (window.kinds or window.rules):
            out.append("muting life-safety incidents needs the kinds or rules it mutes")
        if window.life_safety and window.type != "silence":
            out.append("life_safety applies to silences only")
        return out
