"""Rosters: who is on duty at a given time, and where a week has nobody (no sleeping)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config.inventory import Device, load_inventory
from sentinel.escalation.model import Contact, OncallConfig, PolicyConfig, Role, Shift
from sentinel.escalation.roster import Gap, Rosters, coverage_gaps

from helpers import ROOT

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY = date(2026, 3, 2)  # a Monday; the weeks of the tests start here
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
GRID_PLACE = {"community": "水贝社区", "compound": "水贝花园", "grid": "SB-G01"}


def at(day: date, hh: int, mm: int = 0, tz: ZoneInfo = SHANGHAI) -> float:
    """Epoch seconds of a local wall-clock time (first occurrence if repeated)."""
    return datetime.combine(day, time(hh, mm), tzinfo=tz).timestamp()


def day(offset: int) -> date:
    """The day `offset` days after MONDAY (0 = Mon 2 March 2026)."""
    return MONDAY + timedelta(days=offset)


def oncall(*rosters: dict[str, Any], timezone: str = "Asia/Shanghai",
           extra: tuple[dict[str, Any], ...] = ()) -> OncallConfig:
    """An on-call config with a contact (of the roster's role) for every person named."""
    contacts: dict[str, dict[str, Any]] = {}
    for roster in rosters:
        names = [m for s in roster["shift"] for m in s["members"]]
        names += [o[k] for o in roster.get("override", ()) for k in ("contact", "replaces")
                  if o.get(k)]
        for name in names:
            contacts.setdefault(name, {"id": name, "name": name.upper(), "role": roster["role"],
                                       "channels": [f"mailto://{name}@example.org"]})
    return OncallConfig.model_validate({"timezone": timezone,
                                        "contact": [*contacts.values(), *extra],
                                        "roster": list(rosters)})


def grid_roster(*shifts: dict[str, Any], grids: tuple[str, ...] = ("SB-G01",),
                **more: Any) -> dict[str, Any]:
    """A grid workers' roster for some grids."""
    return {"role": "grid_worker", "grids": list(grids), "shift": list(shifts), **more}


def shift(members: list[str], start: str = "00:00", end: str = "00:00",
          days: str | list[str] = "daily", **more: Any) -> dict[str, Any]:
    """A shift as written in the on-call file."""
    return {"members": members, "start": start, "end": end, "days": days, **more}


def ids(contacts: list[Contact]) -> list[str]:
    """The contacts' ids, in order."""
    return [c.id for c in contacts]


def grid_worker(config: OncallConfig, when: float,
                place: dict[str, str] = GRID_PLACE) -> list[str]:
    """The ids of the grid workers on duty."""
    return ids(Rosters(config).on_duty(Role.GRID_WORKER, place, when))


def device(id_: str, grid: str, compound: str, kind: str = "smoke") -> Device:
    """One inventory device."""
    return Device(id=id_, kind=kind, community="水贝社区", compound=compound, grid=grid,
                  profile="sentinel-json")


def inventory(*devices: Device) -> dict[str, Device]:
    """An inventory of these devices."""
    return {d.id: d for d in devices}


INVENTORY = inventory(device("D1", "SB-G01", "水贝花园"), device("D2", "SB-G02", "翠竹苑"))


def paging(*roles: str, **match: Any) -> PolicyConfig:
    """One paging policy notifying these roles in its first step."""
    return PolicyConfig.model_validate(
        {"policy": [{"name": "p", "match": match, "step": [{"notify": list(roles)}]}]})


def spans(gaps: list[Gap]) -> list[tuple[str, str, str, str]]:
    """Gaps as (role, area, start, end)."""
    return [(g.role.value, g.area, g.start, g.end) for g in gaps]


# -- shifts -------------------------------------------------------------------------------

def test_day_shift_covers_start_but_not_end() -> None:
    """A weekday 08:00-20:00 shift is on from 08:00 up to but not including 20:00."""
    config = oncall(grid_roster(shift(["wang"], "08:00", "20:00", "mon-fri")))
    assert grid_worker(config, at(day(1), 8)) == ["wang"]
    assert grid_worker(config, at(day(1), 19, 59)) == ["wang"]
    assert grid_worker(config, at(day(1), 20)) == []
    assert grid_worker(config, at(day(1), 7, 59)) == []
    assert grid_worker(config, at(day(5), 10)) == []  # Saturday


def test_night_shift_belongs_to_the_day_it_starts() -> None:
    """A Monday 20:00-08:00 shift covers Tuesday 03:00 but not Monday 03:00."""
    config = oncall(grid_roster(shift(["li"], "20:00", "08:00", ["mon"])))
    assert grid_worker(config, at(day(0), 20)) == ["li"]
    assert grid_worker(config, at(day(1), 3)) == ["li"]
    assert grid_worker(config, at(day(1), 8)) == []
    assert grid_worker(config, at(day(0), 3)) == []
    assert grid_worker(config, at(day(1), 20)) == []


def test_sunday_night_shift_runs_into_monday() -> None:
    """A Sunday 22:00-06:00 shift covers Monday 05:59 of the next week."""
    config = oncall(grid_roster(shift(["li"], "22:00", "06:00", ["sun"])))
    assert grid_worker(config, at(day(6), 22)) == ["li"]
    assert grid_worker(config, at(day(7), 5, 59)) == ["li"]
    assert grid_worker(config, at(day(7), 6)) == []
    assert grid_worker(config, at(day(6), 21, 59)) == []


def test_whole_day_shift() -> None:
    """start == end is a whole day: 00:00 the calendar day, 08:00 from 08:00 to 08:00."""
    calendar = oncall(grid_roster(shift(["zhao"], days=["sat"])))
    assert grid_worker(calendar, at(day(5), 0)) == ["zhao"]
    assert grid_worker(calendar, at(day(5), 23, 59)) == ["zhao"]
    assert grid_worker(calendar, at(day(6), 0)) == []
    assert grid_worker(calendar, at(day(4), 23, 59)) == []
    from_eight = oncall(grid_roster(shift(["zhao"], "08:00", "08:00", ["sat"])))
    assert grid_worker(from_eight, at(day(5), 7, 59)) == []
    assert grid_worker(from_eight, at(day(6), 7, 59)) == ["zhao"]
    assert grid_worker(from_eight, at(day(6), 8)) == []


def test_24_00_ends_at_midnight() -> None:
    """An end of "24:00" runs to the end of the start day."""
    config = oncall(grid_roster(shift(["wang"], "16:00", "24:00", ["mon"])))
    assert grid_worker(config, at(day(0), 23, 59)) == ["wang"]
    assert grid_worker(config, at(day(1), 0)) == []


# -- rotations ----------------------------------------------------------------------------

def test_daily_rotation_counts_days_from_rotation_start() -> None:
    """Daily rotation: one member a day in turn, also before rotation_start."""
    config = oncall(grid_roster(shift(["a", "b", "c"], rotation="daily",
                                      rotation_start="2026-03-02")))
    assert [grid_worker(config, at(day(n), 12)) for n in range(-1, 4)] == [
        ["c"], ["a"], ["b"], ["c"], ["a"]]


def test_daily_rotation_of_a_night_shift_uses_its_start_day() -> None:
    """The member of a night shift stays the same after midnight."""
    config = oncall(grid_roster(shift(["a", "b"], "20:00", "08:00", rotation="daily",
                                      rotation_start="2026-03-02")))
    assert grid_worker(config, at(day(0), 23)) == ["a"]
    assert grid_worker(config, at(day(1), 7, 59)) == ["a"]
    assert grid_worker(config, at(day(1), 20)) == ["b"]


def test_weekly_rotation_changes_on_monday() -> None:
    """Weekly rotation counts weeks from the Monday of rotation_start's week."""
    config = oncall(grid_roster(shift(["a", "b"], rotation="weekly",
                                      rotation_start="2026-03-04")))  # a Wednesday
    assert grid_worker(config, at(day(0), 0)) == ["a"]
    assert grid_worker(config, at(day(6), 23, 59)) == ["a"]
    assert grid_worker(config, at(day(7), 0)) == ["b"]
    assert grid_worker(config, at(day(14), 0)) == ["a"]
    assert grid_worker(config, at(day(-1), 12)) == ["b"]


def test_weekly_rotation_of_sunday_night_stays_with_the_old_week() -> None:
    """A Sunday night shift running into Monday keeps the member of Sunday's week."""
    config = oncall(grid_roster(shift(["a", "b"], "22:00", "06:00", ["sun"],
                                      rotation="weekly", rotation_start="2026-03-02")))
    assert grid_worker(config, at(day(7), 3)) == ["a"]
    assert grid_worker(config, at(day(13), 23)) == ["b"]


# -- overrides ----------------------------------------------------------------------------

def test_override_replaces_one_person_in_place() -> None:
    """A swap puts its contact where the replaced person was, only while it lasts."""
    swap = {"start": "2026-03-03T08:00:00", "end": "2026-03-04T08:00:00",
            "contact": "zhou", "replaces": "a"}
    config = oncall(grid_roster(shift(["a", "b"]), override=[swap]))
    assert grid_worker(config, at(day(1), 10)) == ["zhou", "b"]
    assert grid_worker(config, at(day(1), 7, 59)) == ["a", "b"]
    assert grid_worker(config, at(day(2), 8)) == ["a", "b"]


def test_override_of_someone_off_duty_changes_nothing() -> None:
    """A swap for someone the rotation does not put on duty adds nobody."""
    swap = {"start": "2026-03-02T00:00:00", "end": "2026-03-09T00:00:00",
            "contact": "zhou", "replaces": "b"}
    config = oncall(grid_roster(shift(["a", "b"], "08:00", "20:00", rotation="weekly",
                                      rotation_start="2026-03-02"), override=[swap]))
    assert grid_worker(config, at(day(1), 10)) == ["a"]
    assert grid_worker(config, at(day(1), 22)) == []


def test_override_without_replaces_covers_for_everyone() -> None:
    """Cover without `replaces` takes the place of everybody on the roster."""
    cover = {"start": "2026-03-03T00:00:00", "end": "2026-03-04T00:00:00", "contact": "zhou"}
    config = oncall(grid_roster(shift(["a", "b"], "08:00", "20:00"), override=[cover]))
    assert grid_worker(config, at(day(1), 10)) == ["zhou"]
    assert grid_worker(config, at(day(2), 10)) == ["a", "b"]


def test_leave_cover_applies_outside_shifts() -> None:
    """Cover without `replaces` is on duty even when no shift is."""
    cover = {"start": "2026-03-03T20:00:00", "end": "2026-03-04T08:00:00", "contact": "zhou"}
    config = oncall(grid_roster(shift(["a"], "08:00", "20:00"), override=[cover]))
    assert grid_worker(config, at(day(1), 23)) == ["zhou"]
    assert grid_worker(config, at(day(2), 23)) == []


def test_swap_within_cover_replaces_the_person_covering() -> None:
    """A swap applies after cover, so it can stand in for the one covering."""
    overrides = [
        {"start": "2026-03-02T00:00:00", "end": "2026-03-09T00:00:00", "contact": "zhou"},
        {"start": "2026-03-03T09:00:00", "end": "2026-03-03T11:00:00", "contact": "qian",
         "replaces": "zhou"},
    ]
    config = oncall(grid_roster(shift(["a"]), override=overrides))
    assert grid_worker(config, at(day(1), 10)) == ["qian"]
    assert grid_worker(config, at(day(1), 11)) == ["zhou"]


def test_override_times_with_offset_are_absolute() -> None:
    """A naive override time is local; one with an offset is that instant."""
    local = {"start": "2026-03-03T08:00:00", "end": "2026-03-03T09:00:00", "contact": "x"}
    utc = {"start": "2026-03-03T00:00:00+00:00", "end": "2026-03-03T01:00:00+00:00",
           "contact": "y"}
    config = oncall(grid_roster(shift(["a"]), override=[local, utc]))
    assert grid_worker(config, at(day(1), 8, 30)) == ["x", "y"]
    assert grid_worker(config, at(day(1), 9)) == ["a"]


# -- places, roles, elders ----------------------------------------------------------------

def test_rosters_match_by_grid_compound_or_community() -> None:
    """A roster takes its grids, or its compounds, or (with neither) every place."""
    config = oncall(
        grid_roster(shift(["g1"]), grids=("SB-G01",)),
        {"role": "grid_worker", "compounds": ["翠竹苑"], "shift": [shift(["cz"])]},
        {"role": "grid_worker", "shift": [shift(["all"])]},
    )
    noon = at(day(0), 12)
    assert grid_worker(config, noon, {"grid": "SB-G01", "compound": "水贝花园"}) == ["g1", "all"]
    assert grid_worker(config, noon, {"grid": "SB-G03", "compound": "翠竹苑"}) == ["cz", "all"]
    assert grid_worker(config, noon, {"grid": "SB-G01", "compound": "翠竹苑"}) == [
        "g1", "cz", "all"]
    assert grid_worker(config, noon, {"device": "sentinel", "kind": "system"}) == ["all"]


def test_only_rosters_of_the_role_count() -> None:
    """Asking for property management never returns grid workers."""
    config = oncall(grid_roster(shift(["g1"])),
                    {"role": "property", "compounds": ["水贝花园"], "shift": [shift(["pm"])]})
    rosters = Rosters(config)
    noon = at(day(0), 12)
    assert ids(rosters.on_duty(Role.PROPERTY, GRID_PLACE, noon)) == ["pm"]
    assert ids(rosters.on_duty(Role.DUTY_OFFICER, GRID_PLACE, noon)) == []


def test_elder_contacts_are_those_of_the_device_at_any_hour() -> None:
    """Elder contacts are the contacts listing the incident's watch, day and night."""
    family = [
        {"id": "son", "name": "儿子", "role": "elder_contact", "channels": ["tel://1"],
         "elders": ["W1", "W2"]},
        {"id": "niece", "name": "侄女", "role": "elder_contact", "channels": ["tel://2"],
         "elders": ["W2"]},
    ]
    rosters = Rosters(oncall(extra=tuple(family)))
    for hour in (3, 15):
        assert ids(rosters.on_duty(Role.ELDER_CONTACT, {"device": "W2"}, at(day(0), hour))) == [
            "son", "niece"]
    assert ids(rosters.on_duty(Role.ELDER_CONTACT, {"device": "W1"}, at(day(0), 3))) == ["son"]
    assert rosters.on_duty(Role.ELDER_CONTACT, {"grid": "SB-G01"}, at(day(0), 3)) == []


def test_people_are_listed_once_in_roster_order() -> None:
    """Someone on two shifts or two rosters is listed once, where first seen."""
    config = oncall(
        grid_roster(shift(["a", "b"], "08:00", "20:00"), shift(["b", "c"], "12:00", "14:00")),
        {"role": "grid_worker", "shift": [shift(["c", "a", "d"])]},
    )
    assert grid_worker(config, at(day(0), 13)) == ["a", "b", "c", "d"]


# -- time zones ---------------------------------------------------------------------------

def test_shift_hours_are_in_the_configured_zone() -> None:
    """Sunday 23:59 UTC is Monday 07:59 in Shanghai (off); Monday 00:00 UTC is 08:00 (on)."""
    roster = grid_roster(shift(["wang"], "08:00", "20:00", "mon-fri"))
    shanghai = oncall(roster)
    before = datetime(2026, 3, 1, 23, 59, tzinfo=ZoneInfo("UTC")).timestamp()
    assert grid_worker(shanghai, before) == []
    assert grid_worker(shanghai, before + 60) == ["wang"]
    assert grid_worker(oncall(roster, timezone="UTC"), before + 60) == []


def test_shifts_keep_wall_clock_hours_across_daylight_saving() -> None:
    """Berlin, clocks forward on 29 March: a night shift ends at 08:00 local, not 09:00."""
    berlin = ZoneInfo("Europe/Berlin")
    config = oncall(grid_roster(shift(["n"], "20:00", "08:00", ["sat"]),
                                shift(["skip"], "02:15", "02:45", ["sun"]),
                                shift(["late"], "02:30", "04:00", ["sun"])),
                    timezone="Europe/Berlin")
    saturday, sunday = date(2026, 3, 28), date(2026, 3, 29)
    assert grid_worker(config, at(sunday, 7, 59, berlin)) == ["n"]
    assert grid_worker(config, at(sunday, 8, 0, berlin)) == []
    # 02:00-03:00 does not exist that night: "skip" never starts, "late" starts at the jump.
    jump = at(sunday, 3, 0, berlin)
    assert grid_worker(config, jump - 1) == ["n"]
    assert grid_worker(config, jump) == ["n", "late"]
    assert at(sunday, 8, 0, berlin) - at(saturday, 20, 0, berlin) == 11 * 3600


def test_repeated_hour_counts_once_when_clocks_go_back() -> None:
    """New York, clocks back on 1 November: a shift from 01:30 starts at the first 01:30."""
    ny = ZoneInfo("America/New_York")
    config = oncall(grid_roster(shift(["a"], "01:30", "06:00", ["sun"])),
                    timezone="America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=ny, fold=0).timestamp()
    assert grid_worker(config, first - 1) == []
    # Every second until 06:00, including the repeated 01:00-01:30, is covered.
    assert all(grid_worker(config, first + s) == ["a"] for s in range(0, 5 * 3600, 600))
    assert grid_worker(config, first + 5.5 * 3600) == []


# -- coverage gaps ------------------------------------------------------------------------

def test_day_shift_only_leaves_every_night_uncovered() -> None:
    """A grid covered only 08:00-20:00 has a gap 20:00-08:00 every night."""
    config = oncall(grid_roster(shift(["wang"], "08:00", "20:00")))
    gaps = coverage_gaps(config, paging("grid_worker"), INVENTORY, MONDAY)
    mine = [(g.start, g.end) for g in gaps if g.area == "grid SB-G01"]
    assert mine == [("Mon 00:00", "Mon 08:00"), ("Mon 20:00", "Tue 08:00"),
                    ("Tue 20:00", "Wed 08:00"), ("Wed 20:00", "Thu 08:00"),
                    ("Thu 20:00", "Fri 08:00"), ("Fri 20:00", "Sat 08:00"),
                    ("Sat 20:00", "Sun 08:00"), ("Sun 20:00", "Mon 00:00")]
    # The other grid has no roster at all: the whole week in one gap.
    assert spans([g for g in gaps if g.area == "grid SB-G02"]) == [
        ("grid_worker", "grid SB-G02", "Mon 00:00", "Mon 00:00")]


def test_complete_roster_has_no_gaps() -> None:
    """Day shifts plus a rotating night shift leave no gap anywhere."""
    config = oncall(
        grid_roster(shift(["wang"], "08:00", "20:00", "mon-fri"),
                    shift(["zhao"], "08:00", "20:00", "weekend"),
                    shift(["li", "sun"], "20:00", "08:00", rotation="daily"),
                    grids=("SB-G01", "SB-G02")),
        {"role": "property", "shift": [shift(["pm"])]},
        {"role": "duty_officer", "shift": [shift(["d1", "d2"], "08:30", "08:30",
                                                 rotation="weekly")]},
    )
    policies = paging("grid_worker", "property", "duty_officer", "elder_contact")
    assert coverage_gaps(config, policies, INVENTORY, MONDAY) == []


def test_gaps_are_exact_not_rounded_to_slots() -> None:
    """Five uncovered minutes at a handover are found as exactly those minutes."""
    config = oncall(grid_roster(shift(["a"], "20:00", "08:05"), shift(["b"], "08:10", "20:00"),
                                grids=("SB-G01", "SB-G02")))
    gaps = coverage_gaps(config, paging("grid_worker"), INVENTORY, date(2026, 3, 4))
    # Mon 00:00-08:05 is the end of Sunday's night shift: no gap there.
    assert spans(gaps)[:2] == [("grid_worker", "grid SB-G01", "Mon 08:05", "Mon 08:10"),
                               ("grid_worker", "grid SB-G01", "Tue 08:05", "Tue 08:10")]
    assert gaps[0].end_at - gaps[0].start_at == 300


def test_leave_cover_fills_a_gap_in_its_week_only() -> None:
    """Cover through one night removes that night's gap in that week."""
    cover = {"start": "2026-03-03T20:00:00", "end": "2026-03-04T08:00:00", "contact": "zhou"}
    config = oncall(grid_roster(shift(["a"], "08:00", "20:00"), override=[cover]))
    this_week = coverage_gaps(config, paging("grid_worker"), INVENTORY, MONDAY)
    next_week = coverage_gaps(config, paging("grid_worker"), INVENTORY, day(7))
    nights = ("Tue 20:00", "Wed 08:00")
    assert nights not in [(g.start, g.end) for g in this_week]
    assert nights in [(g.start, g.end) for g in next_week]


def test_only_roles_that_policies_need_are_checked() -> None:
    """Paged roles and digest grid workers are checked; elder contacts and spare roles not."""
    policies = PolicyConfig.model_validate({"policy": [
        {"name": "fire", "step": [{"notify": ["street_office", "elder_contact"]}]},
        {"name": "low", "mode": "digest", "digest_to": ["grid_worker", "duty_officer"]},
    ]})
    gaps = coverage_gaps(oncall(), policies, INVENTORY, MONDAY)
    assert spans(gaps) == [
        ("grid_worker", "grid SB-G01", "Mon 00:00", "Mon 00:00"),
        ("grid_worker", "grid SB-G02", "Mon 00:00", "Mon 00:00"),
        ("street_office", "community", "Mon 00:00", "Mon 00:00"),
    ]


def test_property_is_checked_per_compound_where_policies_reach() -> None:
    """Property is checked per compound, only where the paging policy's place filter reaches."""
    config = oncall({"role": "property", "compounds": ["水贝花园"], "shift": [shift(["pm"])]})
    assert spans(coverage_gaps(config, paging("property"), INVENTORY, MONDAY)) == [
        ("property", "compound 翠竹苑", "Mon 00:00", "Mon 00:00")]
    assert coverage_gaps(config, paging("property", grids=["SB-G01"]), INVENTORY, MONDAY) == []


def test_grid_split_duty_officers_leave_system_incidents_uncovered() -> None:
    """Duty officers rostered per grid cover the grids but not incidents without a place."""
    config = oncall({"role": "duty_officer", "grids": ["SB-G01", "SB-G02"],
                     "shift": [shift(["d"])]})
    gaps = coverage_gaps(config, paging("duty_officer"), INVENTORY, MONDAY)
    assert spans(gaps) == [("duty_officer", "community", "Mon 00:00", "Mon 00:00")]
    limited = paging("duty_officer", grids=["SB-G01", "SB-G02"])
    assert coverage_gaps(config, limited, INVENTORY, MONDAY) == []


def test_gap_labels_follow_daylight_saving() -> None:
    """In Berlin's spring-forward week a night gap ends at 08:00 local time."""
    config = oncall(grid_roster(shift(["a"], "08:00", "20:00"), grids=("SB-G01", "SB-G02")),
                    timezone="Europe/Berlin")
    gaps = coverage_gaps(config, paging("grid_worker"), INVENTORY, date(2026, 3, 23))
    night = next(g for g in gaps if g.start == "Sat 20:00")
    assert night.end == "Sun 08:00" and night.end_at - night.start_at == 11 * 3600


def test_coverage_of_the_example_inventory_finds_nights_and_weekends() -> None:
    """A week of the example inventory: property uncovered every night, grids at weekends."""
    devices, problems = load_inventory([ROOT / "devices" / "shuibei.csv"])
    assert not problems
    grids = sorted({d.grid for d in devices.values()})
    rosters = [grid_roster(shift([f"gw{i}"], "08:00", "20:00", "mon-fri"),
                           shift([f"n{i}", f"m{i}"], "20:00", "08:00", rotation="daily"),
                           grids=(g,)) for i, g in enumerate(grids)]
    config = oncall(*rosters, {"role": "property", "shift": [shift(["pm"], "07:00", "23:00")]})
    gaps = coverage_gaps(config, paging("grid_worker", "property", "duty_officer"), devices,
                         MONDAY)
    assert len(grids) == 15 and len({d.compound for d in devices.values()}) == 24
    assert sum(g.role is Role.PROPERTY for g in gaps) == 24 * 8  # every night, plus the wrap
    assert sum(g.role is Role.GRID_WORKER for g in gaps) == 15 * 2  # each weekend day


# -- the duty table -----------------------------------------------------------------------

def test_table_lists_every_area_with_who_and_until_when() -> None:
    """The table has a row per grid (nobody where unrostered), community and watch."""
    family = {"id": "son", "name": "儿子", "role": "elder_contact", "channels": ["tel://1"],
              "elders": ["W1"]}
    config = oncall(grid_roster(shift(["a", "b"], "08:00", "20:00", rotation="daily",
                                      rotation_start="2026-03-02")),
                    {"role": "duty_officer", "shift": [shift(["d"])]}, extra=(family,))
    devices = {**INVENTORY, "W2": device("W2", "SB-G02", "翠竹苑", kind="elderly_watch")}
    rows = Rosters(config).table(at(day(0), 10), devices)
    table = [(r.role.value, r.area, ids(list(r.contacts)), r.until) for r in rows]
    assert table == [
        ("grid_worker", "grid SB-G01", ["a"], at(day(0), 20)),
        ("grid_worker", "grid SB-G02", [], None),  # no roster for this grid
        ("duty_officer", "community", ["d"], None),
        ("elder_contact", "device W1", ["son"], None),
        ("elder_contact", "device W2", [], None),
    ]


def test_table_until_skips_boundaries_that_change_nobody() -> None:
    """Back-to-back shifts of the same person do not end that person's duty."""
    config = oncall(grid_roster(shift(["a"], "08:00", "20:00"), shift(["a"], "20:00", "23:00")))
    (row, *_) = Rosters(config).table(at(day(0), 10), INVENTORY)
    assert ids(list(row.contacts)) == ["a"] and row.until == at(day(0), 23)


# -- properties ---------------------------------------------------------------------------

ZONES = ("Asia/Shanghai", "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe")
# Mondays of weeks with a daylight-saving change in one of the zones, and a plain week.
WEEKS = (MONDAY, date(2026, 3, 23), date(2026, 10, 19), date(2026, 10, 26), date(2026, 3, 30),
         date(2026, 9, 28))
PEOPLE = ("a", "b", "c", "d")

clock_times = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23),
                        st.sampled_from([0, 15, 30, 45, 7]))
shifts = st.fixed_dictionaries({
    "days": st.lists(st.sampled_from(WEEKDAYS), unique=True, min_size=1),
    "start": clock_times,
    "end": clock_times,
    "members": st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=3),
    "rotation": st.sampled_from(["none", "daily", "weekly"]),
    "rotation_start": st.dates(date(2025, 1, 1), date(2027, 1, 1)).map(date.isoformat),
})


@st.composite
def overrides(draw: st.DrawFn, week: date) -> dict[str, Any]:
    """An override of a few hours to a few days, somewhere around `week`."""
    start = datetime.combine(week, time()) + timedelta(minutes=15 * draw(st.integers(-96, 700)))
    end = start + timedelta(minutes=15 * draw(st.integers(1, 300)))
    replaces = draw(st.none() | st.sampled_from(PEOPLE))
    return {"start": start.isoformat(), "end": end.isoformat(), "contact": "cover",
            **({"replaces": replaces} if replaces else {})}


@st.composite
def weekly_setups(draw: st.DrawFn) -> tuple[OncallConfig, date, float]:
    """A random config of grid-worker rosters, a week, and an instant in that week."""
    zone, week = draw(st.sampled_from(ZONES)), draw(st.sampled_from(WEEKS))
    areas = st.sampled_from([{"grids": ["SB-G01"]}, {"grids": ["SB-G02"]},
                             {"compounds": ["水贝花园"]}, {}])
    rosters = [{"role": "grid_worker", **draw(areas),
                "shift": draw(st.lists(shifts, min_size=1, max_size=3)),
                "override": draw(st.lists(overrides(week), max_size=2))}
               for _ in range(draw(st.integers(0, 3)))]
    config = oncall(*rosters, timezone=zone)
    tz = ZoneInfo(zone)
    start = at(week, 0, tz=tz)
    minute = draw(st.integers(0, int(at(week + timedelta(days=7), 0, tz=tz) - start) // 60 - 1))
    # Just before a whole minute as well as on it: shift edges fall on whole minutes.
    return config, week, max(start, start + 60 * minute - draw(st.sampled_from([0, 0, 1])))


@settings(max_examples=300, deadline=None)
@given(weekly_setups())
def test_on_duty_agrees_with_coverage_gaps(setup: tuple[OncallConfig, date, float]) -> None:
    """Somebody is on duty at an instant iff that instant lies in no coverage gap."""
    config, week, when = setup
    rosters = Rosters(config)
    gaps = coverage_gaps(config, paging("grid_worker"), INVENTORY, week)
    places = {"grid SB-G01": {"grid": "SB-G01", "compound": "水贝花园"},
              "grid SB-G02": {"grid": "SB-G02", "compound": "翠竹苑"}}
    for area, place in places.items():
        mine = [g for g in gaps if g.area == area]
        in_gap = any(g.start_at <= when < g.end_at for g in mine)
        assert bool(rosters.on_duty(Role.GRID_WORKER, place, when)) != in_gap
        for g in mine:  # and exactly at the edges of every gap
            assert rosters.on_duty(Role.GRID_WORKER, place, g.start_at) == []
            assert rosters.on_duty(Role.GRID_WORKER, place, g.end_at - 0.5) == []
            if g.end_at < at(week + timedelta(days=7), 0, tz=rosters.tz):
                assert rosters.on_duty(Role.GRID_WORKER, place, g.end_at) != []


def reference(one: Shift, local: datetime) -> tuple[str, ...]:
    """Who a single shift puts on duty at a local time, straight from the rules as written."""
    now, today, yesterday = local.time(), local.date(), local.date() - timedelta(days=1)
    if one.end > one.start:
        started = today if today.weekday() in one.days and one.start <= now < one.end else None
    elif today.weekday() in one.days and now >= one.start:
        started = today
    elif yesterday.weekday() in one.days and now < one.end:
        started = yesterday
    else:
        started = None
    if started is None:
        return ()
    if one.rotation == "none":
        return tuple(dict.fromkeys(one.members))
    origin = one.rotation_start
    if one.rotation == "daily":
        turn = (started - origin).days
    else:
        turn = (started - (origin - timedelta(days=origin.weekday()))).days // 7
    return (one.members[turn % len(one.members)],)


@settings(max_examples=400, deadline=None)
@given(shifts, st.datetimes(datetime(2025, 6, 1), datetime(2027, 6, 1)))
def test_single_shift_matches_the_written_rules(raw: dict[str, Any], local: datetime) -> None:
    """Without daylight saving, on_duty follows the rules literally; rotation picks one."""
    config = oncall(grid_roster(raw))
    expected = reference(config.roster[0].shift[0], local)
    got = grid_worker(config, local.replace(tzinfo=SHANGHAI).timestamp())
    assert tuple(got) == expected
    if raw["rotation"] != "none":
        assert len(got) in (0, 1)

