"""Incidents from the shipped rules: lifecycle, dedup, flapping, correlation, windows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.config.inventory import Device
from sentinel.incidents.model import (
    Incident,
    IncidentBook,
    IncidentEvent,
    Outcome,
    Status,
    Window,
)
from sentinel.loading import Loaded, load_all
from sentinel.rules.engine import RuleEngine
from sentinel.rules.model import merge_rule_files
from sentinel.types import Reading, Severity, Value

from helpers import SHIPPED_CONFIG

LOADED: Loaded = load_all(SHIPPED_CONFIG, {})
INV = LOADED.inventory
T0 = 1_780_030_000.0  # 12:53 local time: daytime


class World:
    """The shipped rules over the shipped inventory, with time in our hands."""

    def __init__(self, windows: Iterable[Window] = (), rules: Any = None,
                 inventory: dict[str, Device] | None = None) -> None:
        config = rules or LOADED.rules
        inventory = INV if inventory is None else inventory
        self.engine = RuleEngine(config, inventory, T0 - 3600, 0.0)
        self.windows = list(windows)
        self.book = IncidentBook(config, inventory, lambda: self.windows)
        self.events: list[IncidentEvent] = []

    def send(self, device: Device, ts: float, **values: Value) -> None:
        self.book.apply(self.engine.on_readings(
            [Reading(device.id, device.kind, ts, ts, values)]), ts)
        self._collect()

    def tick(self, now: float) -> None:
        self.book.apply(self.engine.tick(now), now)
        self.book.tick(now)
        self._collect()

    def _collect(self) -> None:
        self.events += self.book.take_changes()[1]

    def open(self, name: str | None = None) -> list[Incident]:
        return [i for i in self.book.open.values() if name is None or i.name == name]

    def types(self, incident: Incident) -> list[str]:
        return [e.type for e in self.events if e.incident_id == incident.id]


def devices(kind: str, **where: str) -> list[Device]:
    return [d for d in INV.values()
            if d.kind == kind and all(getattr(d, k) == v for k, v in where.items())]


def building_with(kind_counts: dict[str, int]) -> tuple[str, str]:
    """A (compound, building) holding at least the given number of devices per kind."""
    places = {(d.compound, d.building) for d in INV.values() if d.building}
    for compound, building in sorted(places):
        if all(len(devices(k, compound=compound, building=building)) >= n
               for k, n in kind_counts.items()):
            return compound, building
    raise AssertionError(f"no building with {kind_counts}")


def test_fire_in_one_building_is_grouped_once() -> None:
    """3 detectors alarming in one building within 2 min → 3 alarms and 1 confirmed fire."""
    compound, building = building_with({"smoke": 4})
    w = World()
    three = devices("smoke", compound=compound, building=building)[:3]
    for i, d in enumerate(three):
        w.send(d, T0 + i * 20, alarm=True)
        w.send(d, T0 + i * 20 + 10, alarm=True)   # repeated reports change nothing
    alarms, fires = w.open("smoke_alarm"), w.open("fire_confirmed")
    assert len(alarms) == 3 and len(fires) == 1
    fire = fires[0]
    assert fire.severity == Severity.CRITICAL and fire.life_safety
    assert sorted(fire.members) == sorted(a.id for a in alarms)
    assert all(a.groups == [fire.id] for a in alarms)
    assert fire.place["building"] == building and fire.place["compound"] == compound
    # Every alarm is its own incident at once: life-safety alarms are never grouped away.
    assert all(a.severity == Severity.CRITICAL and w.types(a)[0] == "opened" for a in alarms)


def test_alarms_far_apart_or_in_other_buildings_are_not_a_confirmed_fire() -> None:
    """Two alarms 3 minutes apart, or in two buildings, open no group."""
    compound, building = building_with({"smoke": 2})
    w = World()
    a, b = devices("smoke", compound=compound, building=building)[:2]
    w.send(a, T0, alarm=True)
    w.send(b, T0 + 180, alarm=True)
    assert w.open("fire_confirmed") == []
    other = next(d for d in devices("smoke") if d.building and
                 (d.compound, d.building) != (compound, building))
    w2 = World()
    w2.send(a, T0, alarm=True)
    w2.send(other, T0 + 10, alarm=True)
    assert w2.open("fire_confirmed") == []


def test_hydrant_drop_during_a_fire_attaches_to_it() -> None:
    """A hydrant pressure drop in the compound of a confirmed fire is attached, not separate."""
    compound, building = building_with({"smoke": 2})
    hydrants = devices("hydrant_pressure", compound=compound)
    assert hydrants, "the example inventory has a hydrant in every compound with smoke"
    elsewhere = next(d for d in devices("hydrant_pressure") if d.compound != compound)
    w = World()
    for h in (hydrants[0], elsewhere):
        w.send(h, T0 + 5, pressure=0.35)
    for i, d in enumerate(devices("smoke", compound=compound, building=building)[:2]):
        w.send(d, T0 + i, alarm=True)
    fire = w.open("fire_confirmed")[0]
    for h in (hydrants[0], elsewhere):
        w.send(h, T0 + 20, pressure=0.28)
    drops = {i.device_id: i for i in w.open("hydrant_pressure_drop")}
    assert drops[hydrants[0].id].attached_to == fire.id
    assert drops[hydrants[0].id].id in fire.members
    assert drops[elsewhere.id].attached_to is None


def test_smoke_and_gas_in_one_building_is_critical_group() -> None:
    """Smoke plus gas in the same building opens one fire_with_gas group."""
    compound, building = building_with({"smoke": 1, "gas": 1})
    w = World()
    w.send(devices("smoke", compound=compound, building=building)[0], T0, alarm=True)
    gas = devices("gas", compound=compound, building=building)[0]
    w.send(gas, T0 + 30, concentration_lel=12.0)
    group = w.open("fire_with_gas")
    assert len(group) == 1 and group[0].severity == Severity.CRITICAL
    assert len(group[0].members) == 2


def test_gas_alarm_and_lel_reading_are_one_incident() -> None:
    """A detector's alarm flag and its %LEL describe one leak: one incident, worst severity."""
    gas = devices("gas")[0]
    w = World()
    w.send(gas, T0, concentration_lel=12.0)
    w.send(gas, T0 + 10, concentration_lel=30.0, alarm=True)
    leaks = w.open("gas_leak")
    assert len(leaks) == 1
    assert leaks[0].severity == Severity.CRITICAL
    assert w.types(leaks[0]) == ["opened", "severity_raised"]


def test_lifecycle_ack_resolve_and_audit_trail() -> None:
    """firing → acknowledged → resolved by a person with a note; every step recorded."""
    smoke = devices("smoke")[0]
    w = World()
    w.send(smoke, T0, alarm=True)
    inc = w.open("smoke_alarm")[0]
    w.book.acknowledge(inc.id, "网格员 张三", T0 + 30)
    assert inc.status == Status.ACKNOWLEDGED
    w.send(smoke, T0 + 60, alarm=False)
    w.tick(T0 + 3600)
    assert inc.open and not inc.active, "a smoke alarm is resolved by a person only"
    w.book.resolve(inc.id, "值班员 李四", T0 + 4000, Outcome.FALSE_ALARM, "burnt toast")
    w._collect()
    assert not inc.open and inc.outcome == "false_alarm" and inc.note == "burnt toast"
    assert w.types(inc) == ["opened", "acknowledged", "condition_cleared", "resolved"]
    actors = [e.actor for e in w.events if e.incident_id == inc.id]
    assert actors == ["sentinel", "网格员 张三", "sentinel", "值班员 李四"]
    with pytest.raises(KeyError):
        w.book.acknowledge(inc.id, "x", T0 + 5000)


def test_auto_resolve_waits_until_clear_holds() -> None:
    """A hydrant back above 0.15 MPa resolves after staying clear for clear_for."""
    hydrant = devices("hydrant_pressure")[0]
    w = World()
    w.send(hydrant, T0, pressure=0.13)
    inc = w.open("hydrant_pressure_low")[0]
    w.send(hydrant, T0 + 10, pressure=0.16)
    w.tick(T0 + 69)
    assert inc.open
    w.tick(T0 + 70)
    assert not inc.open and inc.outcome == "cleared"
    assert w.types(inc) == ["opened", "condition_cleared", "resolved"]


def test_condition_returning_within_the_hold_reuses_the_incident() -> None:
    """Clear then active again before clear_for: the same incident, counted again."""
    hydrant = devices("hydrant_pressure")[0]
    w = World()
    w.send(hydrant, T0, pressure=0.13)
    w.send(hydrant, T0 + 10, pressure=0.16)
    w.send(hydrant, T0 + 20, pressure=0.13)
    w.tick(T0 + 200)
    assert len(w.open("hydrant_pressure_low")) == 1
    assert w.open("hydrant_pressure_low")[0].fired == 2


def test_severity_raise_on_acknowledged_incident_pages_again() -> None:
    """Acknowledged at warning, then critical: back to firing."""
    hydrant = devices("hydrant_pressure")[0]
    w = World()
    w.send(hydrant, T0, pressure=0.12)
    inc = w.open("hydrant_pressure_low")[0]
    w.book.acknowledge(inc.id, "someone", T0 + 5)
    w.send(hydrant, T0 + 10, pressure=0.09)
    w.tick(T0 + 70)
    assert inc.severity == Severity.CRITICAL and inc.status == Status.FIRING


def test_flapping_condition_is_held_open() -> None:
    """More than N changes in M minutes: one incident held open, then resolved when quiet."""
    rules = merge_rule_files([{
        "defaults": {"clear_for": 0, "flap": {"changes": 4, "window": "10m"}},
        "rule": [{"name": "low", "kind": "hydrant_pressure", "type": "threshold",
                  "field": "pressure", "levels": [{"severity": "warning", "below": 0.14}],
                  "clear_above": 0.15}]}])
    hydrant = devices("hydrant_pressure")[0]
    w = World(rules=rules)
    for i in range(12):
        w.send(hydrant, T0 + i * 20, pressure=0.13 if i % 2 == 0 else 0.16)
        w.tick(T0 + i * 20 + 1)
    opened = [e for e in w.events if e.type == "opened"]
    assert len(opened) == 3, "opens and closes only until flapping is detected"
    held = w.open("low")[0]
    assert held.flapping and not held.active
    w.tick(T0 + 11 * 20 + 599)
    assert held.open
    w.tick(T0 + 11 * 20 + 600)
    assert not held.open
    assert "flapping" in w.types(held) and "flapping_ended" in w.types(held)


def test_silence_and_drill_windows_mark_incidents() -> None:
    """A silence changes nothing as incidents open (it is asked at send time); a drill
    marks them drills."""
    compound, building = building_with({"smoke": 2})
    a, b = devices("smoke", compound=compound, building=building)[:2]
    silence = Window(1, "silence", {"compound": compound, "building": building}, T0 - 10,
                     T0 + 3600, "物业", "detector maintenance")
    w = World([silence])
    w.send(a, T0, alarm=True)
    w.send(b, T0 + 5, alarm=True)
    assert w.open("smoke_alarm")[0].silenced_by is None
    assert w.open("fire_confirmed"), "a silenced place still confirms a fire"
    drill = Window(2, "drill", {"compound": compound}, T0 - 10, T0 + 3600, "社区", "fire drill")
    w2 = World([drill])
    w2.send(a, T0, alarm=True)
    w2.send(b, T0 + 5, alarm=True)
    assert all(i.drill for i in w2.open())
    assert w2.open("fire_confirmed")[0].drill
    expired = World([Window(3, "drill", {}, T0 - 100, T0 - 1, "x", "over")])
    expired.send(a, T0, alarm=True)
    assert not expired.open()[0].drill


def test_sos_cancel_within_window_only() -> None:
    """An SOS cancelled on the watch within 60 s resolves as cancelled; later it stays."""
    watch, other = devices("elderly_watch")[:2]
    w = World()
    w.send(watch, T0, sos=True)
    w.send(watch, T0 + 30, sos=False, sos_cancel=True)
    inc = [e for e in w.events if e.type == "resolved"]
    assert len(inc) == 1 and inc[0].data["outcome"] == "cancelled"
    w.send(other, T0, sos=True)
    w.send(other, T0 + 90, sos=False, sos_cancel=True)
    late = w.open("sos")[0]
    assert late.open and "cancel_refused" in w.types(late)


def test_fall_with_no_movement_raises_severity() -> None:
    """Fall → critical; no step for 2 minutes → the same incident becomes emergency."""
    watch = devices("elderly_watch")[0]
    w = World()
    w.send(watch, T0 - 10, steps=500, fall=False)
    w.send(watch, T0, fall=True, steps=500)
    falls = w.open("fall")
    assert len(falls) == 1 and falls[0].severity == Severity.CRITICAL
    w.send(watch, T0 + 60, fall=True, steps=500)
    w.tick(T0 + 120)
    assert falls[0].severity == Severity.EMERGENCY
    assert w.types(falls[0]) == ["opened", "severity_raised"]


def test_a_raise_by_stillness_carries_its_own_condition() -> None:
    """After a fall raised for lying still, the incident shows the stillness, not steps."""
    watch = devices("elderly_watch")[0]
    w = World()
    w.send(watch, T0 - 10, steps=112, fall=False)
    w.send(watch, T0, fall=True, steps=112)
    fall = w.open("fall")[0]
    assert (fall.rule, fall.value, fall.detail) == ("fall", True, {"field": "fall"})
    w.tick(T0 + 120)
    assert fall.severity == Severity.EMERGENCY
    assert (fall.rule, fall.detail) == ("fall_still", {"still_for": 120.0})
    raised = next(e for e in w.events if e.type == "severity_raised")
    assert raised.data["rule"] == "fall_still" and raised.data["detail"] == fall.detail


def test_a_raised_gas_leak_carries_the_level_that_raised_it() -> None:
    """10 → 30 %LEL: the leak now reads 30 against ≥ 25 %LEL, the critical level."""
    gas = devices("gas")[0]
    w = World()
    w.send(gas, T0, concentration_lel=10.0)
    leak = w.open("gas_leak")[0]
    assert leak.severity == Severity.WARNING
    assert (leak.rule, leak.value, leak.detail) == (
        "gas_lel", 10.0, {"field": "concentration_lel", "op": "≥", "limit": 10.0})
    w.send(gas, T0 + 10, concentration_lel=30.0)
    assert leak.severity == Severity.CRITICAL
    assert (leak.rule, leak.value, leak.detail) == (
        "gas_lel", 30.0, {"field": "concentration_lel", "op": "≥", "limit": 25.0})


def test_a_lesser_condition_of_another_rule_keeps_the_worse_text() -> None:
    """A detector in alarm (critical) keeps showing the alarm when its %LEL only warns."""
    gas = devices("gas")[0]
    w = World()
    w.send(gas, T0, alarm=True)
    w.send(gas, T0 + 10, alarm=True, concentration_lel=12.0)
    leak = w.open("gas_leak")[0]
    assert leak.conditions == {"gas_alarm": 3, "gas_lel": 2}
    assert (leak.rule, leak.value, leak.detail) == ("gas_alarm", True, {"field": "alarm"})


def test_a_returned_condition_reads_its_current_level() -> None:
    """Critical, cleared, back at a warning level: the text says the warning level it is at."""
    gas = devices("gas")[0]
    w = World()
    w.send(gas, T0, concentration_lel=30.0)
    w.send(gas, T0 + 10, concentration_lel=2.0)
    w.send(gas, T0 + 20, concentration_lel=12.0)
    leak = w.open("gas_leak")[0]
    assert leak.severity == Severity.CRITICAL   # never lowered while open
    assert (leak.value, leak.detail["limit"]) == (12.0, 10.0)


def test_low_battery_is_maintenance_only() -> None:
    """A low battery opens a maintenance incident for the digest, never a page."""
    smoke = devices("smoke")[0]
    w = World()
    w.send(smoke, T0, battery=12.0)
    inc = w.open("battery_low")[0]
    assert inc.severity == Severity.MAINTENANCE and inc.digest_only


def test_tamper_cleared_expires_after_a_day() -> None:
    """The one-off 'tamper cleared' maintenance item resolves by itself after resolve_after."""
    smoke = devices("smoke")[0]
    w = World()
    w.send(smoke, T0, tamper=True)
    w.send(smoke, T0 + 60, tamper=False)
    item = w.open("tamper_cleared")[0]
    assert item.severity == Severity.MAINTENANCE
    w.tick(T0 + 120)
    assert not w.open("device_tamper"), "the tamper warning resolved when the tamper cleared"
    w.tick(T0 + 60 + 86400)
    assert not item.open and item.outcome == "expired"


def test_offline_detectors_open_once_each() -> None:
    """20 silent detectors → 20 offline warnings on the timer, none repeated."""
    fleet = devices("smoke")[:40]
    w = World(inventory={d.id: d for d in fleet})
    quiet = fleet[:20]
    for d in fleet:
        w.send(d, T0, alarm=False)
    for d in fleet[20:]:
        w.send(d, T0 + 7000, alarm=False)
    for t in range(0, 7300, 60):
        w.tick(T0 + t)
    offline = w.open("detector_offline")
    assert sorted(i.device_id for i in offline if i.device_id) == sorted(d.id for d in quiet)
    assert all(i.severity == Severity.WARNING for i in offline)
    assert len([e for e in w.events if e.type == "opened"]) == 20


def test_group_resolution_resolves_its_members() -> None:
    """Resolving a confirmed fire resolves the alarms and attached incidents it holds."""
    compound, building = building_with({"smoke": 2})
    w = World()
    for i, d in enumerate(devices("smoke", compound=compound, building=building)[:2]):
        w.send(d, T0 + i, alarm=True)
    fire = w.open("fire_confirmed")[0]
    w.book.resolve(fire.id, "街道", T0 + 600, Outcome.HANDLED, "extinguished")
    assert w.open() == []
    members = [w.book.by_id[m] for m in fire.members]
    assert all(m.outcome == "with_group" for m in members)


def test_acting_on_a_fire_acts_on_its_open_members() -> None:
    """Acknowledging or assigning a confirmed fire does the same to each open member alarm,
    once; a member closed before is left alone."""
    compound, building = building_with({"smoke": 3})
    w = World()
    for i, d in enumerate(devices("smoke", compound=compound, building=building)[:3]):
        w.send(d, T0 + i, alarm=True)
    fire = w.open("fire_confirmed")[0]
    first, *others = [w.book.by_id[m] for m in fire.members]
    w.book.resolve(first.id, "board:王", T0 + 30, Outcome.FALSE_ALARM, None)
    w.book.acknowledge(fire.id, "board:王", T0 + 60)
    w.book.assign(fire.id, "zhang_wei", "board:王", T0 + 70)
    w.book.assign(fire.id, "zhang_wei", "board:王", T0 + 80)  # again: nothing new
    w.tick(T0 + 81)
    for inc in (fire, *others):
        assert (inc.status, inc.acknowledged_by) == (Status.ACKNOWLEDGED, "board:王")
        assert (inc.assigned_to, inc.assigned_at) == ("zhang_wei", T0 + 70)
        assigned = [e for e in w.events if e.incident_id == inc.id and e.type == "assigned"]
        assert len(assigned) == 1 and assigned[0].actor == "board:王"
        assert assigned[0].data["person"] == "zhang_wei" and assigned[0].data["by"] == "board:王"
    assert all(e.data["group"] == fire.id for e in w.events if e.type == "assigned"
               and e.incident_id != fire.id)
    assert first.assigned_to is None and first.status == Status.RESOLVED


def test_notes_record_text_photo_and_the_first_note_time() -> None:
    """A note is an audit event with its text (and photo id); first_note_at keeps the first."""
    w = World()
    smoke = devices("smoke")[0]
    w.send(smoke, T0, alarm=True)
    inc = w.open("smoke_alarm")[0]
    w.book.note(inc.id, "zhang_wei", T0 + 300, "已到场")
    w.book.note(inc.id, "zhang_wei", T0 + 400, "", photo="ab.jpg")
    w.tick(T0 + 401)
    notes = [e for e in w.events if e.type == "noted"]
    assert [dict(e.data) for e in notes] == [{"text": "已到场"},
                                             {"text": "", "photo": "ab.jpg"}]
    assert inc.first_note_at == T0 + 300
    assert Incident.from_json(inc.to_json()).first_note_at == T0 + 300
    w.book.resolve(inc.id, "zhang_wei", T0 + 500, Outcome.HANDLED)
    with pytest.raises(KeyError):
        w.book.note(inc.id, "zhang_wei", T0 + 600, "too late")


def test_system_incident_for_sentinel_itself() -> None:
    """The spool crossing its mark opens a system incident; going below resolves it."""
    w = World()
    w.book.system("spool_nearly_full", True, Severity.WARNING, T0, used_bytes=900)
    inc = w.open("spool_nearly_full")[0]
    w.book.system("spool_nearly_full", True, Severity.WARNING, T0 + 1)
    assert len(w.open()) == 1
    w.book.system("spool_nearly_full", False, Severity.WARNING, T0 + 60)
    assert not inc.open


def test_incident_json_round_trip() -> None:
    """Incidents serialise for the state database and come back equal."""
    w = World()
    w.send(devices("gas")[0], T0, concentration_lel=30.0)
    inc = w.open()[0]
    assert Incident.from_json(inc.to_json()) == inc


_texts = st.text(max_size=8)
_values = st.one_of(st.floats(allow_nan=False), st.booleans(), _texts)


@given(st.builds(
    Incident, id=_texts, key=_texts, name=_texts, target=_texts, kind=_texts,
    severity=st.sampled_from(list(Severity)), opened_at=st.floats(0, 2e9),
    place=st.dictionaries(_texts, _texts, max_size=4),
    detail=st.dictionaries(_texts, _values, max_size=4),
    conditions=st.dictionaries(_texts, st.integers(-1, 5), max_size=3),
    members=st.lists(_texts, max_size=3), groups=st.lists(_texts, max_size=3),
    value=st.one_of(st.none(), _values), note=st.one_of(st.none(), _texts)))
def test_incident_json_is_a_deep_copy_equal_to_asdict(inc: Incident) -> None:
    """The hand-written to_json gives what dataclasses.asdict gave, shares no container,
    and reads back to the same incident."""
    import dataclasses

    expected = dataclasses.asdict(inc)
    expected.update(severity=inc.severity.label, status=inc.status.value)
    data = inc.to_json()
    assert data == expected
    for name in ("place", "detail", "conditions", "members", "groups"):
        assert data[name] is not getattr(inc, name)
    assert Incident.from_json(data) == inc


def test_taking_a_member_alarms_link_acts_on_its_fire_and_stops_the_reminders() -> None:
    """A smoke alarm's link went out before the alarms were grouped into a fire. Taking it
    (我去处理: acknowledge + assign to the link's contact) acknowledges and assigns the
    fire and its other alarms, the fire's 2-minute reminders stop, and the link page says
    the alarm belongs to the fire and who handles that. Real book, real escalation
    engine and policies, explicit times."""
    from sentinel.control import pages
    from sentinel.escalation.engine import EscalationEngine
    from sentinel.escalation.roster import Rosters

    compound, building = building_with({"smoke": 3})
    contacts = LOADED.oncall.contacts()
    engine = EscalationEngine(LOADED.policies, Rosters(LOADED.oncall), contacts)
    w = World()
    fed = 0

    def feed(now: float) -> list[str]:
        """Escalate the events since the last call; the kinds of notices queued."""
        nonlocal fed
        kinds: list[str] = []
        for ev in w.events[fed:]:
            kinds += [n.kind for n in engine.on_event(ev, w.book.by_id[ev.incident_id],
                                                      now).notices]
        fed = len(w.events)
        return kinds

    first, *rest = devices("smoke", compound=compound, building=building)[:3]
    w.send(first, T0, alarm=True)
    assert "alert" in feed(T0), "the lone alarm pages with its own link"
    for i, d in enumerate(rest, start=1):
        w.send(d, T0 + i * 10, alarm=True)
    feed(T0 + 20)
    fire = w.open("fire_confirmed")[0]
    member = next(a for a in w.open("smoke_alarm") if a.device_id == first.id)
    assert member.groups == [fire.id]
    open_now = {i.id: i for i in w.open()}
    assert engine.tick(T0 + 20 + 120, open_now).notices, "the fire reminds every 2 min"

    person = next(c.id for c in LOADED.oncall.contact if c.id in contacts)
    took = T0 + 150
    w.book.acknowledge(member.id, person, took)       # as IncidentService.assign(ack=True)
    w.book.assign(member.id, person, person, took)
    w.tick(took)
    assert feed(took) == [], "taking it oneself sends nobody a message"
    for inc in (fire, *(w.book.by_id[m] for m in fire.members)):
        assert (inc.status, inc.acknowledged_by, inc.assigned_to) == (
            Status.ACKNOWLEDGED, person, person), inc.id
    assert engine.escalations[fire.id].state == "acknowledged"
    open_now = {i.id: i for i in w.open()}
    assert engine.tick(took + 15 * 60 - 1, open_now).notices == [], "no more reminders"
    fire_events = [e for e in w.events if e.incident_id == fire.id]
    assert [e.data.get("member") for e in fire_events if e.type in ("acknowledged",
                                                                    "assigned")] == [
        member.id, member.id]

    people = {c.id: c.name for c in LOADED.oncall.contact}
    view = pages.LinkView(member, person, people[person], "zh", people, done="taken",
                          group=fire)
    text = pages.link_page(view).text or ""
    assert "确认火情" in text and f"#{fire.id}" in text and "整起事件及其全部报警" in text
    assert f"整起事件: 由 {people[person]} 处理" in text and person not in text

    # Assigned from the dispatch room through one of its alarms: the person hears once,
    # about the fire.
    other = next(c.id for c in LOADED.oncall.contact if c.id != person and c.id in contacts)
    second = next(a for a in w.open("smoke_alarm") if a.device_id == rest[0].id)
    w.book.assign(second.id, other, "board:值班", took + 60)
    w.tick(took + 60)
    assert feed(took + 60) == ["assigned"] and fire.assigned_to == other
