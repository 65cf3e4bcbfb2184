"""Who is on duty when: rosters, shifts, rotations and overrides evaluated at a given time.

Pure: no I/O and no clock; every question takes the time (epoch seconds) as an argument.

Shifts are wall-clock hours in the on-call file's timezone. One *occurrence* of a shift runs
from the first instant the local clock reads `start` on a listed day to the first instant it
reads `end` (the next day when `end <= start`; `start == end` is 24 wall-clock hours), so a
shift keeps its wall-clock hours across a daylight-saving change: a 20:00-08:00 night is 11
or 13 hours long that night, a shift wholly inside a skipped hour does not happen, and a
shift starting inside a skipped hour starts when the clocks jump. `on_duty` and
`coverage_gaps` share this definition of an occurrence, so they always agree.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sentinel.config.inventory import Device
from sentinel.escalation.model import (
    Contact,
    OncallConfig,
    PolicyConfig,
    Role,
    Roster,
    Shift,
)

# Inventory kind of the watches that elder contacts look after.
ELDER_DEVICE_KIND = "elderly_watch"
COMMUNITY = "community"

_DAY = timedelta(days=1)
_MIDNIGHT = time(0, 0)
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# How far `table` looks for the end of the current duty: one week covers every weekly
# rotation and every recurring shift; one extra day covers a night shift that started
# the day before.
_LOOKAHEAD = 8 * 24 * 3600.0

Interval = tuple[float, float]
Place = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class DutyRow:
    """Who of one role is on duty for one area at a given time (`sentinel oncall --at`)."""

    role: Role
    area: str                       # "grid SB-G03", "compound 水贝花园", "community", "device X"
    contacts: tuple[Contact, ...]   # empty: nobody
    until: float | None             # when these contacts change; None: not within 8 days


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch of the week in which nobody of a needed role is on duty for an area."""

    role: Role
    area: str        # "grid SB-G03", "compound 水贝花园" or "community"
    start: str       # local weekday and time, "Mon 20:00"
    end: str         # "Tue 08:00"; "Mon 00:00" when the gap runs to the end of the week
    start_at: float  # the same two instants, epoch seconds, for tools and tests
    end_at: float


class Rosters:
    """Answers who of a role is on duty for a place at a given time."""

    def __init__(self, config: OncallConfig) -> None:
        self._tz = config.tz
        self._contacts = config.contacts()
        self._elder_contacts = tuple(c for c in config.contact if c.role is Role.ELDER_CONTACT)
        # Elder contacts are always on duty; a roster of that role would mean nothing.
        self._rosters: dict[Role, tuple[_RosterClock, ...]] = {}
        for roster in config.roster:
            if roster.role is not Role.ELDER_CONTACT:
                clock = _RosterClock(roster, self._tz)
                self._rosters[roster.role] = (*self._rosters.get(roster.role, ()), clock)

    @property
    def tz(self) -> ZoneInfo:
        """The zone in which shifts are read."""
        return self._tz

    def on_duty(self, role: Role, place: Place, at: float) -> list[Contact]:
        """Return who of `role` is on duty for an incident at `place` at `at`.

        Contacts come in roster order, each once. Elder contacts are the contacts of the
        incident's device (`place["device"]`), at any hour.
        """
        if role is Role.ELDER_CONTACT:
            device = place.get("device")
            return [c for c in self._elder_contacts if device is not None and device in c.elders]
        return self._contacts_of(self._matching(role, [place]), at)

    def table(self, at: float, inventory: Mapping[str, Device]) -> list[DutyRow]:
        """Return one row per role and area with who is on duty at `at` (empty: nobody).

        Areas: every grid for grid workers, every compound for property management,
        "community" for the other roles, each elderly watch for elder contacts; a role
        gets rows only if it has a roster. Grids and compounds come from the inventory
        and from the rosters themselves.
        """
        places = _inventory_places(inventory)
        rows: list[DutyRow] = []
        for role in Role:
            if role is Role.ELDER_CONTACT or role not in self._rosters:
                continue
            extra = [r.roster for r in self._rosters[role]]
            for area, probes in _areas(role, [*places, {}], extra):
                clocks = self._matching(role, probes)
                contacts = self._contacts_of(clocks, at)
                until = self._next_change(clocks, at, contacts)
                rows.append(DutyRow(role, area, tuple(contacts), until))
        watches = {d.id for d in inventory.values() if d.kind == ELDER_DEVICE_KIND}
        watches.update(e for c in self._elder_contacts for e in c.elders)
        for device in sorted(watches):
            contacts = self.on_duty(Role.ELDER_CONTACT, {"device": device}, at)
            rows.append(DutyRow(Role.ELDER_CONTACT, f"device {device}", tuple(contacts), None))
        return rows

    def covered(self, role: Role, place: Place, start: float, end: float) -> list[Interval]:
        """Return the stretches of [start, end) in which someone of `role` is on duty at `place`.

        Sorted and merged. The elder contacts of a device cover all of it, or none of it.
        """
        if role is Role.ELDER_CONTACT:
            return [(start, end)] if self.on_duty(role, place, start) else []
        return _covered(self._matching(role, [place]), start, end)

    # -- internals --------------------------------------------------------------------

    def _matching(self, role: Role, places: Sequence[Place]) -> list[_RosterClock]:
        """The rosters of `role` responsible for any of `places`, in roster order."""
        return [c for c in self._rosters.get(role, ())
                if any(_responsible(c.roster, p) for p in places)]

    def _contacts_of(self, clocks: Iterable[_RosterClock], at: float) -> list[Contact]:
        ids = _unique(i for c in clocks for i in c.duty(at))
        return [self._contacts[i] for i in ids]

    def _next_change(self, clocks: Sequence[_RosterClock], at: float,
                     current: list[Contact]) -> float | None:
        """The first instant within the look-ahead at which these rosters' people change."""
        # Between two boundaries of its rosters an area's people cannot change, so only
        # the boundaries need checking.
        boundaries = sorted({b for c in clocks for b in c.boundaries(at, at + _LOOKAHEAD)})
        for instant in boundaries:
            if instant > at and self._contacts_of(clocks, instant) != current:
                return instant
        return None


class _RosterClock:
    """One roster with its overrides turned into instants in the roster's zone."""

    def __init__(self, roster: Roster, tz: ZoneInfo) -> None:
        self.roster = roster
        self._tz = tz
        self._overrides = [(_override_instant(o.start, tz), _override_instant(o.end, tz), o)
                           for o in roster.override]

    def duty(self, at: float) -> list[str]:
        """The ids of the people this roster puts on duty at `at`, each once."""
        ids: list[str] = []
        for shift in self.roster.shift:
            day = self._occurrence_at(shift, at)
            if day is not None:
                ids.extend(_members(shift, day))
        active = [o for start, end, o in self._overrides if start <= at < end]
        # Cover for everyone first, then swaps, so a swap can also replace the person
        # covering (cover for the holidays, then a doctor's appointment within them).
        cover = [o.contact for o in active if o.replaces is None]
        if cover:
            ids = cover
        for o in active:
            if o.replaces is not None:
                ids = [o.contact if i == o.replaces else i for i in ids]
        return _unique(ids)

    def covered(self, start: float, end: float) -> list[Interval]:
        """The stretches of [start, end) in which this roster has someone on duty."""
        # Swaps never leave a slot empty; shifts and cover for everyone fill it.
        spans = [(max(s, start), min(e, end)) for s, e, _ in self._occurrences(start, end)]
        spans += [(max(s, start), min(e, end)) for s, e, o in self._overrides
                  if o.replaces is None and s < end and e > start]
        return _merge(spans)

    def boundaries(self, start: float, end: float) -> list[float]:
        """Instants in [start, end] at which this roster's people may change."""
        marks = {b for s, e, _ in self._occurrences(start, end) for b in (s, e)}
        marks.update(b for s, e, _ in self._overrides for b in (s, e))
        return sorted(b for b in marks if start <= b <= end)

    def _occurrence_at(self, shift: Shift, at: float) -> date | None:
        """The day whose occurrence of `shift` contains `at`, if any."""
        local = datetime.fromtimestamp(at, self._tz).date()
        # An occurrence ends within a day after its start day, so only the day before,
        # the day itself and (for clocks set back across midnight) the day after can hold
        # `at`; occurrences of one shift never overlap, so the first found is the one.
        for day in (local - _DAY, local, local + _DAY):
            if day.weekday() in shift.days:
                start, end = _span(shift, day, self._tz)
                if start <= at < end:
                    return day
        return None

    def _occurrences(self, start: float, end: float) -> Iterator[tuple[float, float, date]]:
        """Every occurrence of every shift that overlaps [start, end)."""
        first = datetime.fromtimestamp(start, self._tz).date() - _DAY
        last = datetime.fromtimestamp(end, self._tz).date() + _DAY
        for shift in self.roster.shift:
            day = first
            while day <= last:
                if day.weekday() in shift.days:
                    s, e = _span(shift, day, self._tz)
                    if s < end and e > start:
                        yield s, e, day
                day += _DAY


def coverage_gaps(config: OncallConfig, policies: PolicyConfig, inventory: Mapping[str, Device],
                  week_start: date | None = None) -> list[Gap]:
    """Return every stretch of one week in which a role that policies page has nobody on duty.

    The week runs from Monday 00:00 to the next Monday 00:00 local time, of `week_start`
    (any day of it) or else of today (the only reading of the clock here). Roles checked:
    those in a paging policy's steps, and grid workers and property management also when
    a policy sends them its digest; elder contacts are always on duty. Each role is
    checked where its policies can send incidents: per grid for grid workers, per compound
    for property management, as one "community" area for the other roles (which includes
    incidents without a place, such as system incidents, if a policy takes those). An area
    counts as covered only where every place in it (every compound of a grid, say) has
    someone. Gaps are exact to the second, merged, in order of role, area and time; a gap
    over Sunday midnight appears as two gaps, at the end and at the start of the week.
    """
    rosters = Rosters(config)
    tz = rosters.tz
    day = week_start if week_start is not None else datetime.now(tz).date()
    monday = day - timedelta(days=day.weekday())
    week = (_instant(tz, monday, _MIDNIGHT), _instant(tz, monday + 7 * _DAY, _MIDNIGHT))
    needed = _needed_places(policies, _inventory_places(inventory))
    gaps: list[Gap] = []
    for role in Role:
        if role not in needed:
            continue
        # A big fleet has thousands of places but few sets of rosters responsible for
        # them; the holes are worked out once per set.
        responsible = _Responsible(rosters, role)
        holes_of: dict[tuple[_RosterClock, ...], list[Interval]] = {}
        for area, probes in _areas(role, needed[role], ()):
            holes: set[Interval] = set()
            for place in probes:
                clocks = responsible(place)
                if clocks not in holes_of:
                    holes_of[clocks] = _complement(_covered(clocks, *week), *week)
                holes.update(holes_of[clocks])
            gaps.extend(Gap(role, area, _label(s, tz), _label(e, tz), s, e)
                        for s, e in _merge(holes))
    return gaps


class _Responsible:
    """The rosters of one role responsible for a place, remembered by what decides it: the
    place's grid and compound if some roster of the role names them."""

    def __init__(self, rosters: Rosters, role: Role) -> None:
        self._rosters = rosters
        self._role = role
        clocks = rosters._rosters.get(role, ())
        self._grids = {g for c in clocks for g in c.roster.grids}
        self._compounds = {p for c in clocks for p in c.roster.compounds}
        self._known: dict[tuple[str | None, str | None], tuple[_RosterClock, ...]] = {}

    def __call__(self, place: Place) -> tuple[_RosterClock, ...]:
        grid, compound = place.get("grid"), place.get("compound")
        key = (grid if grid in self._grids else None,
               compound if compound in self._compounds else None)
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = tuple(self._rosters._matching(self._role, [place]))
        return found


# -- places and areas ---------------------------------------------------------------------

def _responsible(roster: Roster, place: Place) -> bool:
    """Whether `roster` takes incidents at `place` (a roster with no area takes all)."""
    if roster.grids:
        return place.get("grid") in roster.grids
    if roster.compounds:
        return place.get("compound") in roster.compounds
    return True


def _inventory_places(inventory: Mapping[str, Device]) -> list[dict[str, str]]:
    """Each distinct community, grid and compound of the inventory, as an incident place."""
    keys = set(map(operator.attrgetter("community", "grid", "compound"), inventory.values()))
    return [{"community": c, "grid": g, "compound": p} for c, g, p in sorted(keys)]


def _needed_places(policies: PolicyConfig,
                   places: Sequence[dict[str, str]]) -> dict[Role, list[dict[str, str]]]:
    """For each role that must be reachable, the places of the incidents it may get."""
    # Several policies take the same places: each is kept once, by its items.
    keyed = [(tuple(p.items()), p) for p in places]
    nowhere: dict[str, str] = {}  # incidents without a place (system incidents)
    needed: dict[Role, dict[tuple[tuple[str, str], ...], dict[str, str]]] = {}
    for policy in policies.policy:
        roles = {r for step in policy.step for r in step.notify} if policy.mode == "page" else set()
        roles.update(r for r in policy.digest_to if r in (Role.GRID_WORKER, Role.PROPERTY))
        roles.discard(Role.ELDER_CONTACT)
        m = policy.match
        # Only the place filters narrow the places: a kind filter may still take group
        # and system incidents, which have no device of that kind.
        taken = [(key, p) for key, p in keyed
                 if (not m.grids or p["grid"] in m.grids)
                 and (not m.compounds or p["compound"] in m.compounds)]
        if not m.grids and not m.compounds:
            taken.append(((), nowhere))
        for role in roles:
            needed.setdefault(role, {}).update(taken)
    return {role: list(found.values()) for role, found in needed.items()}


def _areas(role: Role, places: Sequence[Mapping[str, str]],
           rosters: Iterable[Roster]) -> list[tuple[str, list[Mapping[str, str]]]]:
    """Group places into the areas by which `role` is reported, with each area's places.

    Rosters add the grids or compounds they name that the places lack.
    """
    if role in (Role.GRID_WORKER, Role.PROPERTY):
        key, label = ("grid", "grid") if role is Role.GRID_WORKER else ("compound", "compound")
        groups: dict[str, list[Mapping[str, str]]] = {}
        for place in places:
            if key in place:  # incidents without a place have no grid worker or property
                groups.setdefault(place[key], []).append(place)
        for roster in rosters:
            for name in roster.grids if key == "grid" else roster.compounds:
                groups.setdefault(name, [{key: name}])
        return [(f"{label} {name}", groups[name]) for name in sorted(groups)]
    return [(COMMUNITY, list(places))] if places else []


# -- time -------------------------------------------------------------------------------

def _members(shift: Shift, day: date) -> tuple[str, ...]:
    """The members of `shift` on duty in its occurrence starting on `day`."""
    if shift.rotation == "none":
        return shift.members
    if shift.rotation == "daily":
        turn = (day - shift.rotation_start).days
    else:
        monday = shift.rotation_start - timedelta(days=shift.rotation_start.weekday())
        turn = (day - monday).days // 7
    # Python's modulo is never negative, so days before rotation_start rotate backwards.
    return (shift.members[turn % len(shift.members)],)


def _span(shift: Shift, day: date, tz: ZoneInfo) -> Interval:
    """The instants at which the occurrence of `shift` starting on `day` begins and ends."""
    # `end <= start` runs into the next day; equal is a whole (wall-clock) day.
    end_day = day if shift.end > shift.start else day + _DAY
    return _instant(tz, day, shift.start), _instant(tz, end_day, shift.end)


@functools.lru_cache(maxsize=8192)
def _instant(tz: ZoneInfo, day: date, clock: time) -> float:
    """The first instant at which the local clock in `tz` reads `clock` on `day` or later.

    Usually simply that local time. A time repeated when clocks go back counts from its
    first occurrence; a time skipped when clocks go forward counts from the jump.
    """
    # A time of day written with an offset ("08:00+08:00") is read as a plain local time.
    naive = datetime.combine(day, clock.replace(tzinfo=None))
    first = naive.replace(tzinfo=tz, fold=0).timestamp()
    second = naive.replace(tzinfo=tz, fold=1).timestamp()
    if second >= first:  # one instant, or a repeated time whose fold=0 comes first
        return first
    # Skipped: fold=1 reads it with the offset after the jump (an instant before the
    # jump), fold=0 with the offset before (one after). The jump lies between; find it.
    low, high = int(second), int(first)
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            high = mid
        else:
            low = mid
    return float(high)


def _override_instant(moment: datetime, tz: ZoneInfo) -> float:
    """An override's start or end; one without an offset is local time in `tz`."""
    if moment.tzinfo is None:
        return _instant(tz, moment.date(), moment.time())
    return moment.timestamp()


def _label(instant: float, tz: ZoneInfo) -> str:
    """"Mon 20:00" (seconds only when not zero), in local time."""
    local = datetime.fromtimestamp(instant, tz)
    clock = local.strftime("%H:%M:%S" if local.second else "%H:%M")
    return f"{_DAY_NAMES[local.weekday()]} {clock}"


def _covered(clocks: Iterable[_RosterClock], start: float, end: float) -> list[Interval]:
    """The stretches of [start, end) in which any of these rosters has someone on duty."""
    return _merge(s for c in clocks for s in c.covered(start, end))


def _merge(spans: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-empty spans with overlapping and touching ones joined."""
    merged: list[Interval] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _complement(spans: Sequence[Interval], start: float, end: float) -> list[Interval]:
    """The parts of [start, end) outside the sorted, merged `spans`."""
    holes: list[Interval] = []
    cursor = start
    for s, e in spans:
        if s > cursor:
            holes.append((cursor, s))
        cursor = max(cursor, e)
    if cursor < end:
        holes.append((cursor, end))
    return holes


def _unique(ids: Iterable[str]) -> list[str]:
    """`ids` in order, each once."""
    return list(dict.fromkeys(ids))

