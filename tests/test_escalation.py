"""The escalation engine, pure: events and explicit times in, notices out (no sleeping)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.escalation.engine import Escalation, EscalationEngine, Notice, Output
from sentinel.escalation.model import OncallConfig, PolicyConfig
from sentinel.escalation.roster import Rosters
from sentinel.incidents.model import Incident, IncidentEvent, Status
from sentinel.incidents.windows import Window, Windows
from sentinel.types import Severity

T0 = 1_790_000_000.0  # a fixed instant; the rosters below are on duty around the clock

ONCALL = OncallConfig.model_validate({
    "contact": [
        {"id": "gw", "name": "网格员", "role": "grid_worker", "channels": ["json://127.0.0.1/gw"]},
        {"id": "pm", "name": "物业", "role": "property", "channels": ["json://127.0.0.1/pm"]},
        {"id": "do", "name": "值班", "role": "duty_officer",
         "channels": ["json://127.0.0.1/do"]},
        {"id": "so", "name": "街道", "role": "street_office",
         "channels": ["json://127.0.0.1/so"]},
        {"id": "fl", "name": "消防", "role": "fire_liaison", "channels": ["json://127.0.0.1/fl"]},
        {"id": "ec", "name": "家属", "role": "elder_contact", "elders": ["W1"],
         "channels": ["json://127.0.0.1/ec"]},
    ],
    "roster": [
        {"role": "grid_worker", "grids": ["G1"], "shift": [{"members": ["gw"]}]},
        {"role": "property", "compounds": ["C1"], "shift": [{"members": ["pm"]}]},
        {"role": "duty_officer", "shift": [{"members": ["do"]}]},
        {"role": "street_office", "shift": [{"members": ["so"]}]},
        {"role": "fire_liaison", "shift": [{"members": ["fl"]}]},
    ],
})

POLICIES = PolicyConfig.model_validate({
    "ack_timeout": 1800,
    "policy": [
        {"name": "fire", "match": {"incidents": ["fire_confirmed"]}, "repeat": "2m",
         "step": [{"after": 0, "notify": ["grid_worker", "property", "duty_officer",
                                          "street_office", "fire_liaison"]}]},
        {"name": "smoke_gas", "match": {"incidents": ["smoke_alarm", "gas_leak"]},
         "repeat": "5m",
         "step": [{"after": 0, "notify": ["grid_worker", "property"]},
                  {"after": "3m", "notify": ["duty_officer"]},
                  {"after": "10m", "notify": ["street_office"]}]},
        {"name": "elderly", "match": {"incidents": ["sos", "fall"]},
         "step": [{"after": 0, "notify": ["elder_contact", "grid_worker"]}]},
        {"name": "maintenance", "match": {"severities": ["maintenance"]}, "mode": "digest",
         "digest_to": ["property"]},
        {"name": "nowhere", "match": {"incidents": ["tank_level_low"]},
         "step": [{"after": 0, "notify": ["grid_worker"]},
                  {"after": "5m", "notify": ["duty_officer"]}]},
    ],
})

PLACE = {"community": "水贝社区", "compound": "C1", "building": "1栋", "grid": "G1",
         "device": "S1", "kind": "smoke"}


def engine() -> EscalationEngine:
    return EscalationEngine(POLICIES, Rosters(ONCALL), ONCALL.contacts())


def incident(name: str = "smoke_alarm", **kw: Any) -> Incident:
    values: dict[str, Any] = {
        "id": "20260101-0001", "key": f"{name}:S1", "name": name, "target": "S1",
        "kind": "smoke", "severity": Severity.CRITICAL, "opened_at": T0,
        "place": dict(PLACE), "device_id": "S1", "life_safety": True}
    values.update(kw)
    return Incident(**values)


def event(inc: Incident, type_: str, **data: Any) -> IncidentEvent:
    return IncidentEvent(inc.id, type_, T0, "sentinel", inc.severity, inc.status, data)


def who(out: Output) -> list[tuple[str, str]]:
    return sorted((n.contact.id, n.kind) for n in out.notices)


def deliver_all(e: EscalationEngine, inc: Incident, notices: list[Notice], ok: bool,
                now: float) -> Output:
    out = Output()
    for n in notices:
        out.extend(e.on_delivery(n.incident_id, n.round, n.step, n.contact.id, 0, ok, now, inc))
    return out


def test_smoke_alarm_climbs_grid_then_duty_officer_then_street_office() -> None:
    """Unacknowledged: step 0 at once, the duty officer at 3 min, the street office at 10."""
    e, inc = engine(), incident()
    out = e.on_event(event(inc, "opened"), inc, T0)
    assert who(out) == [("gw", "alert"), ("pm", "alert")]
    assert all(n.life_safety for n in out.notices)
    assert e.tick(T0 + 179.9, {inc.id: inc}).notices == []
    assert who(e.tick(T0 + 180, {inc.id: inc})) == [("do", "escalated")]
    assert e.tick(T0 + 599, {inc.id: inc}).notices == []
    assert who(e.tick(T0 + 600, {inc.id: inc})) == [("so", "escalated")]
    # After the last step the last tier is reminded every `repeat`.
    assert e.tick(T0 + 899, {inc.id: inc}).notices == []
    assert who(e.tick(T0 + 900, {inc.id: inc})) == [("so", "repeat")]
    assert who(e.tick(T0 + 1200, {inc.id: inc})) == [("so", "repeat")]


def test_keys_are_unique_per_incident_round_step_and_contact() -> None:
    """Every notice of a climb has its own idempotency key."""
    e, inc = engine(), incident()
    notices = e.on_event(event(inc, "opened"), inc, T0).notices
    for t in (180, 600, 900, 1200):
        notices += e.tick(T0 + t, {inc.id: inc}).notices
    keys = [n.key for n in notices]
    assert len(keys) == len(set(keys)) == 6


def test_acknowledging_stops_the_climb_and_the_ack_timeout_restarts_it() -> None:
    """Ack at 1 min: no duty officer at 3 min; not resolved by the timeout → fire again."""
    e, inc = engine(), incident()
    e.on_event(event(inc, "opened"), inc, T0)
    inc.status, inc.acknowledged_by = Status.ACKNOWLEDGED, "gw"
    out = e.on_event(event(inc, "acknowledged"), inc, T0 + 60)
    assert [n.type for n in out.notes] == ["escalation_paused"]
    assert e.tick(T0 + 180, {inc.id: inc}).notices == []
    assert e.tick(T0 + 60 + 1799, {inc.id: inc}).expire_ack == []
    assert e.tick(T0 + 60 + 1800, {inc.id: inc}).expire_ack == [(inc.id, 1800.0)]
    # The incident stage puts it back to firing; that event starts round 1 from step 0.
    inc.status = Status.FIRING
    out = e.on_event(event(inc, "acknowledgement_expired"), inc, T0 + 1861)
    assert who(out) == [("gw", "ack_expired"), ("pm", "ack_expired")]
    assert {n.round for n in out.notices} == {1}
    assert who(e.tick(T0 + 1861 + 180, {inc.id: inc})) == [("do", "escalated")]


def test_resolving_tells_everyone_reached_and_nobody_else() -> None:
    """Resolution messages go to the contacts that were reached, once; the climb stops."""
    e, inc = engine(), incident()
    first = e.on_event(event(inc, "opened"), inc, T0).notices
    deliver_all(e, inc, [n for n in first if n.contact.id == "gw"], True, T0 + 1)
    inc.status = Status.RESOLVED
    out = e.on_event(event(inc, "resolved"), inc, T0 + 100)
    assert who(out) == [("gw", "resolved")]
    assert out.withdraw == [inc.id]
    assert e.tick(T0 + 600, {}).notices == []
    # Property management was reached only after the resolution: it hears that it is over.
    late = deliver_all(e, inc, [n for n in first if n.contact.id == "pm"], True, T0 + 101)
    assert who(late) == [("pm", "resolved")]


def test_a_tier_nobody_can_be_reached_in_escalates_at_once() -> None:
    """Every channel of every step-0 contact failed: the duty officer now, not at 3 min."""
    e, inc = engine(), incident()
    first = e.on_event(event(inc, "opened"), inc, T0).notices
    out = deliver_all(e, inc, first, False, T0 + 40)
    assert out.unreachable == [(inc.id, 0)]
    assert who(out) == [("do", "escalated")]
    assert "tier_unreachable" in [n.type for n in out.notes]


def test_one_reached_contact_is_enough_to_hold_the_tier() -> None:
    """Grid worker unreachable but property reached: no early escalation."""
    e, inc = engine(), incident()
    first = e.on_event(event(inc, "opened"), inc, T0).notices
    out = deliver_all(e, inc, [n for n in first if n.contact.id == "pm"], True, T0 + 1)
    out.extend(deliver_all(e, inc, [n for n in first if n.contact.id == "gw"], False, T0 + 40))
    assert out.unreachable == [] and out.notices == []


def test_a_tier_with_nobody_on_duty_is_passed_over() -> None:
    """No grid worker for this grid: noted, reported, and the next tier is taken now."""
    e = engine()
    inc = incident("tank_level_low", place={**PLACE, "grid": "G9"}, life_safety=False,
                   severity=Severity.WARNING)
    out = e.on_event(event(inc, "opened"), inc, T0)
    assert [n.type for n in out.notes][:2] == ["escalation_started", "nobody_on_duty"]
    assert out.unreachable == [(inc.id, 0)]
    assert who(out) == [("do", "escalated")]


def test_confirmed_fire_pages_every_tier_and_repeats_every_two_minutes() -> None:
    """A confirmed fire: all five roles at once, again every 2 minutes until acknowledged."""
    e = engine()
    inc = incident("fire_confirmed", kind="group", device_id=None, members=["a", "b"])
    out = e.on_event(event(inc, "opened"), inc, T0)
    assert sorted(n.contact.id for n in out.notices) == ["do", "fl", "gw", "pm", "so"]
    assert len(e.tick(T0 + 119, {inc.id: inc}).notices) == 0
    assert len(e.tick(T0 + 120, {inc.id: inc}).notices) == 5
    inc.status = Status.ACKNOWLEDGED
    e.on_event(event(inc, "acknowledged"), inc, T0 + 130)
    assert e.tick(T0 + 240, {inc.id: inc}).notices == []


def test_an_alarm_grouped_into_a_fire_stops_its_own_climb() -> None:
    """The group pages from then on; the member's pending notices are withdrawn."""
    e, inc = engine(), incident()
    e.on_event(event(inc, "opened"), inc, T0)
    inc.groups.append("20260101-0009")
    out = e.on_event(event(inc, "grouped", group="20260101-0009"), inc, T0 + 5)
    assert out.withdraw == [inc.id]
    assert e.tick(T0 + 180, {inc.id: inc}).notices == []


def test_an_alarm_grouped_in_the_commit_that_opened_it_pages_nothing_itself() -> None:
    """Opened and folded into a fire at once: no step is recorded for a page never sent."""
    e, inc = engine(), incident()
    inc.groups.append("20260101-0009")
    out = e.on_event(event(inc, "opened"), inc, T0)
    assert out.notices == [] and out.notes == []
    assert e.on_event(event(inc, "grouped", group="20260101-0009"), inc, T0).notices == []
    assert e.tick(T0 + 180, {inc.id: inc}).notices == []


def test_an_assignment_by_someone_else_tells_the_person() -> None:
    """Assigned from the board or CLI: the person gets a notice; taking it oneself, or a
    fire's member following its group, sends nothing."""
    e, inc = engine(), incident()
    e.on_event(event(inc, "opened"), inc, T0)
    out = e.on_event(event(inc, "assigned", person="do", by="board:小李"), inc, T0 + 30)
    assert who(out) == [("do", "assigned")]
    assert out.notices[0].life_safety
    again = e.on_event(event(inc, "assigned", person="gw", by="do"), inc, T0 + 40)
    assert who(again) == [("gw", "assigned")]
    assert again.notices[0].key != out.notices[0].key
    assert e.on_event(event(inc, "assigned", person="gw", by="gw"), inc, T0 + 50).notices == []
    assert e.on_event(event(inc, "assigned", person="gw", by="do", group="20260101-0009"),
                      inc, T0 + 60).notices == []
    assert e.on_event(event(inc, "assigned", person="nobody", by="do"), inc,
                      T0 + 70).notices == []


def test_sos_reaches_the_elders_contacts_and_the_grid_worker() -> None:
    """SOS/fall: the watch's assigned contacts and the grid worker at once."""
    e = engine()
    inc = incident("sos", kind="elderly_watch", device_id="W1",
                   place={**PLACE, "device": "W1", "kind": "elderly_watch"})
    assert who(e.on_event(event(inc, "opened"), inc, T0)) == [("ec", "alert"), ("gw", "alert")]


def test_silenced_and_digest_incidents_page_nobody() -> None:
    """A muted incident (not life-safety) and a maintenance one produce no notices."""
    silence = Window(3, "silence", {"compound": "C1"}, T0 - 10, T0 + 3600, "物业", "cleaning")
    e = EscalationEngine(POLICIES, Rosters(ONCALL), ONCALL.contacts(),
                         muter=Windows([silence]))
    silenced = incident("tank_level_low", life_safety=False, severity=Severity.WARNING)
    out = e.on_event(event(silenced, "opened"), silenced, T0)
    assert out.notices == []
    assert [n.type for n in out.notes] == ["escalation_started", "notification_muted"]
    low = incident("battery_low", id="20260101-0002", severity=Severity.MAINTENANCE,
                   life_safety=False)
    out = e.on_event(event(low, "opened"), low, T0)
    assert out.notices == [] and [n.type for n in out.notes] == ["escalation_digest"]


def test_severity_raised_while_climbing_keeps_the_clock() -> None:
    """A raise at 4 min re-notifies every tier reached so far, and the climb goes on."""
    e, inc = engine(), incident()
    e.on_event(event(inc, "opened"), inc, T0)
    e.tick(T0 + 180, {inc.id: inc})
    inc.severity = Severity.EMERGENCY
    out = e.on_event(event(inc, "severity_raised"), inc, T0 + 240)
    assert who(out) == [("do", "raised"), ("gw", "raised"), ("pm", "raised")]
    assert who(e.tick(T0 + 600, {inc.id: inc})) == [("so", "raised")]


def test_state_round_trips_and_replayed_events_queue_nothing_new() -> None:
    """After a restart from the stored state, replaying the same events adds no notice."""
    e, inc = engine(), incident()
    e.on_event(event(inc, "opened"), inc, T0)
    e.tick(T0 + 180, {inc.id: inc})
    stored = [Escalation.from_json(x.to_json()) for x in e.escalations.values()]
    again = EscalationEngine(POLICIES, Rosters(ONCALL), ONCALL.contacts(), stored)
    assert again.on_event(event(inc, "opened"), inc, T0 + 200).notices == []
    assert again.tick(T0 + 200, {inc.id: inc}).notices == []
    assert who(again.tick(T0 + 600, {inc.id: inc})) == [("so", "escalated")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1500, allow_nan=False), max_size=30))
def test_steps_are_taken_exactly_once_and_never_early(ticks: list[float]) -> None:
    """Whatever the tick times, each step's people are notified once, never before `after`."""
    e, inc = engine(), incident()
    taken: list[tuple[int, float]] = [(n.step, T0) for n in
                                      e.on_event(event(inc, "opened"), inc, T0).notices]
    for t in sorted(ticks):
        taken += [(n.step, T0 + t) for n in e.tick(T0 + t, {inc.id: inc}).notices
                  if n.kind != "repeat"]
    after = {0: 0.0, 1: 180.0, 2: 600.0}
    assert all(at - T0 >= after[step] for step, at in taken)
    steps = sorted(step for step, _ in taken)
    last = max(ticks, default=0.0)
    expected = [s for s, a in after.items() if a <= last or s == 0]
    # Step 0 has two contacts; each later step one.
    assert steps == sorted([0, 0, *[s for s in expected if s > 0]])
