"""Silences and maintenance windows, pure: what they mute, when, and what happens when they
end (the escalation engine asks them at every step; explicit times, no sleeping)."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.escalation.engine import EscalationEngine, Output
from sentinel.escalation.model import PolicyConfig
from sentinel.escalation.roster import Rosters
from sentinel.incidents.model import Incident, IncidentEvent, Status
from sentinel.incidents.windows import FOREVER, Recurrence, Vocabulary, Window, Windows
from sentinel.notify.templates import render_notice
from sentinel.types import Severity

from test_escalation import ONCALL, PLACE, POLICIES

TZ = ZoneInfo("Asia/Shanghai")


def local(text: str) -> float:
    """Epoch seconds of a local (Asia/Shanghai) time."""
    return datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp()


T0 = local("2026-12-07 10:00:00")  # a Monday


def incident(name: str = "tank_level_low", **kw: Any) -> Incident:
    values: dict[str, Any] = {
        "id": "20261207-0001", "key": f"{name}:T1", "name": name, "target": "T1",
        "kind": "water_level", "severity": Severity.WARNING, "opened_at": T0,
        "place": {**PLACE, "device": "T1", "kind": "water_level"}, "device_id": "T1",
        "life_safety": False, "conditions": {name: int(Severity.WARNING)}}
    values.update(kw)
    return Incident(**values)


def smoke(name: str = "smoke_alarm", **kw: Any) -> Incident:
    return incident(name, kind="smoke", severity=Severity.CRITICAL, life_safety=True,
                    place=dict(PLACE), device_id="S1", target="S1",
                    conditions={"smoke_alarm": int(Severity.CRITICAL)}, **kw)


def silence(id_: int = 1, scope: dict[str, str] | None = None, start: float = T0 - 60,
            end: float = T0 + 3600, **kw: Any) -> Window:
    return Window(id_, "silence", {"compound": "C1"} if scope is None else scope, start, end,
                  "物业王", kw.pop("reason", "消火栓冲洗"), **kw)


def engine(*windows: Window) -> tuple[EscalationEngine, Windows]:
    muter = Windows(list(windows))
    return EscalationEngine(POLICIES, Rosters(ONCALL), ONCALL.contacts(), muter=muter), muter


def opened(e: EscalationEngine, inc: Incident, now: float = T0) -> Output:
    return e.on_event(IncidentEvent(inc.id, "opened", now, "sentinel", inc.severity,
                                    inc.status), inc, now)


def who(out: Output) -> list[tuple[str, str]]:
    return sorted((n.contact.id, n.kind) for n in out.notices)


def test_a_place_only_silence_never_mutes_a_fire() -> None:
    """A silence over a place with no kind or rule mutes telemetry, not smoke alarms."""
    e, _ = engine(silence())
    out = opened(e, smoke())
    assert who(out) == [("gw", "alert"), ("pm", "alert")]
    assert all(n.maintenance is None for n in out.notices)
    tank = incident(id="20261207-0002")
    out = opened(e, tank)
    assert out.notices == [] and "notification_muted" in [n.type for n in out.notes]


def test_an_explicit_life_safety_silence_still_pages_the_duty_officer() -> None:
    """Muting smoke on purpose pages only the duty officer, labelled with the window."""
    window = silence(kinds=("smoke",), life_safety=True, reason="探测器年检")
    e, _ = engine(window)
    inc = smoke()
    out = opened(e, inc)
    assert who(out) == [("do", "alert")]
    assert out.notices[0].maintenance == window
    step = next(n for n in out.notes if n.type == "escalation_step")
    assert step.data["maintenance"] == "#1" and step.data["window_reason"] == "探测器年检"
    text = render_notice("alert", inc, "zh", now=T0, maintenance=window)
    assert text.title.startswith("【维护中】") and "探测器年检" in text.body
    english = render_notice("alert", inc, "en", now=T0, maintenance=window)
    assert english.title.startswith("[MAINTENANCE]") and "a fire" in english.body


def test_a_life_safety_flag_without_kinds_or_rules_mutes_nothing_life_safety() -> None:
    """`life_safety` alone is not enough: the window must name what it mutes."""
    e, _ = engine(silence(life_safety=True))
    assert who(opened(e, smoke())) == [("gw", "alert"), ("pm", "alert")]


def test_a_silence_ending_starts_the_escalation_of_what_it_held() -> None:
    """A muted incident still active and unacknowledged is paged when the window ends."""
    e, _ = engine(silence(kinds=("water_level",), end=T0 + 600))
    inc = incident()
    assert opened(e, inc).notices == []
    assert e.tick(T0 + 599, {inc.id: inc}).notices == []
    out = e.tick(T0 + 600, {inc.id: inc})
    assert who(out) == [("gw", "unmuted")]
    assert [n.type for n in out.notes][:2] == ["mute_ended", "escalation_started"]
    assert e.escalations[inc.id].state == "climbing"
    title = render_notice("unmuted", inc, "zh", now=T0 + 600).title
    assert "屏蔽结束" in title


def test_a_removed_silence_releases_at_the_next_tick() -> None:
    """Removing a window (the stored list replaced) lets the climb start at once."""
    e, muter = engine(silence(kinds=("water_level",)))
    inc = incident()
    opened(e, inc)
    muter.replace([])
    muter.configured = ()
    assert who(e.tick(T0 + 5, {inc.id: inc})) == [("gw", "unmuted")]


def test_a_silence_added_while_climbing_mutes_the_later_steps() -> None:
    """Muting is asked at send time: a step due under a new silence is held."""
    e, muter = engine()
    inc = incident()
    assert who(opened(e, inc)) == [("gw", "alert")]
    muter.configured = [silence(kinds=("water_level",), start=T0 + 60, end=T0 + 900)]
    out = e.tick(T0 + 300, {inc.id: inc})
    assert out.notices == [] and [n.type for n in out.notes] == ["notification_muted"]
    assert e.escalations[inc.id].state == "muted"
    assert who(e.tick(T0 + 900, {inc.id: inc})) == [("gw", "unmuted")]


def test_what_cleared_or_was_acknowledged_under_a_silence_is_not_paged_when_it_ends() -> None:
    """Only incidents still active and unacknowledged start when the window ends; one that
    cleared starts if its condition returns."""
    e, _ = engine(silence(kinds=("water_level",), end=T0 + 600))
    cleared = incident(active=False)
    acked = incident(id="20261207-0002", key="tank_level_low:T2",
                     status=Status.ACKNOWLEDGED, acknowledged_by="物业王")
    opened(e, cleared)
    opened(e, acked)
    incidents = {cleared.id: cleared, acked.id: acked}
    assert e.tick(T0 + 700, incidents).notices == []
    cleared.active = True
    assert who(e.tick(T0 + 710, incidents)) == [("gw", "unmuted")]


def test_an_acknowledged_muted_incident_waits_for_its_ack_timeout() -> None:
    """Acknowledging a held incident pauses it like a climbing one."""
    e, _ = engine(silence(kinds=("water_level",)))
    inc = incident()
    opened(e, inc)
    inc.status, inc.acknowledged_by = Status.ACKNOWLEDGED, "物业王"
    out = e.on_event(IncidentEvent(inc.id, "acknowledged", T0 + 5, "物业王", inc.severity,
                                   inc.status), inc, T0 + 5)
    assert e.escalations[inc.id].state == "acknowledged"
    assert [n.type for n in out.notes] == ["escalation_paused"]


def test_a_recurring_window_across_midnight() -> None:
    """Monday 23:00-01:00 is in force Monday night into Tuesday, not Tuesday night."""
    nightly = Recurrence((0,), time(23, 0), time(1, 0), "Asia/Shanghai")
    window = silence(kinds=("water_level",), start=0.0, end=FOREVER, every=nightly)
    assert not window.active(local("2026-12-07 22:59:59"))
    assert window.active(local("2026-12-07 23:00:00"))
    assert window.active(local("2026-12-08 00:59:59"))
    assert not window.active(local("2026-12-08 01:00:00"))
    assert not window.active(local("2026-12-08 23:30:00"))  # Tuesday night
    assert window.active(local("2026-12-14 23:30:00"))  # next Monday
    assert window.in_force_until(local("2026-12-08 00:30:00")) == local("2026-12-08 01:00:00")


def test_a_recurring_window_mutes_each_week_and_releases_at_its_end() -> None:
    """An incident opened in Monday night's slot is paged at 01:00 Tuesday, on the fake
    clock; the same incident kind opened outside the slot is paged at once."""
    nightly = Recurrence((0,), time(23, 0), time(1, 0), "Asia/Shanghai")
    e, _ = engine(silence(kinds=("water_level",), start=0.0, end=FOREVER, every=nightly))
    night = local("2026-12-07 23:40:00")
    inc = incident(opened_at=night)
    assert opened(e, inc, night).notices == []
    assert e.tick(local("2026-12-08 00:59:00"), {inc.id: inc}).notices == []
    assert who(e.tick(local("2026-12-08 01:00:00"), {inc.id: inc})) == [("gw", "unmuted")]
    day = incident(id="20261208-0002", key="tank_level_low:T9",
                   opened_at=local("2026-12-08 12:00:00"))
    assert who(opened(e, day, local("2026-12-08 12:00:00"))) == [("gw", "alert")]


def test_rules_and_kinds_limit_what_a_silence_mutes() -> None:
    """A silence of hydrant rules leaves tank incidents in the same place alone."""
    hydrant_only = silence(rules=("hydrant_pressure_low", "hydrant_pressure_drop"))
    assert hydrant_only.mutes(incident("hydrant_pressure_low", kind="hydrant_pressure",
                                       conditions={"hydrant_pressure_low": 2}), T0)
    assert not hydrant_only.mutes(incident(), T0)
    elsewhere = silence(scope={"compound": "C2"})
    assert not elsewhere.mutes(incident(), T0)


@given(name=st.sampled_from(["smoke_alarm", "gas_leak", "fire_confirmed", "sos", "fall"]),
       life_safety=st.booleans(), scope=st.sampled_from([{}, {"compound": "C1"},
                                                          {"building": "1栋"}]))
def test_no_window_without_kinds_or_rules_mutes_a_life_safety_incident(
        name: str, life_safety: bool, scope: dict[str, str]) -> None:
    """Whatever its place and flag, a window that names no kind or rule never mutes a
    life-safety incident."""
    window = silence(scope=scope, life_safety=life_safety)
    assert not window.mutes(smoke(name=name), T0)


class _Device:
    def __init__(self, id_: str, kind: str, compound: str, building: str) -> None:
        self.id, self.kind, self.compound, self.building = id_, kind, compound, building
        self.community, self.grid = "水贝社区", "SB-G01"


def test_a_window_naming_what_does_not_exist_is_refused() -> None:
    """Unknown places, devices, kinds and rules are named in the refusal."""
    vocabulary = Vocabulary.of([_Device("SB-SMK-0001", "smoke", "水贝花园", "1栋")],
                               ["smoke", "hydrant_pressure"], ["smoke_alarm"])
    ok = silence(scope={"compound": "水贝花园", "building": "1栋"})
    assert vocabulary.problems(ok) == []
    bad = silence(scope={"compound": "水贝花园", "building": "不存在/1栋", "device": "X-1"},
                  kinds=("h2s",), rules=("no_such_rule",))
    assert vocabulary.problems(bad) == [
        "unknown device 'X-1'", "unknown building '不存在/1栋' in compound '水贝花园'",
        "unknown kind 'h2s'", "unknown rule 'no_such_rule'"]
    assert vocabulary.problems(silence(scope={}, life_safety=True)) == [
        "muting life-safety incidents needs the kinds or rules it mutes"]


def test_maintenance_windows_from_the_policy_file() -> None:
    """A weekly [[maintenance]] entry becomes a recurring silence in the on-call zone."""
    config = PolicyConfig.model_validate({"maintenance": [
        {"name": "hydrant-flush", "reason": "消火栓每周冲洗", "compound": "C1",
         "kinds": ["hydrant_pressure"], "days": "tue", "start": "09:00", "end": "11:00"}]})
    (window,) = config.maintenance_windows("Asia/Shanghai")
    assert window.id == -1 and window.label == "hydrant-flush" and window.kinds == (
        "hydrant_pressure",)
    assert window.active(local("2026-12-08 09:30:00"))
    assert not window.active(local("2026-12-07 09:30:00"))
    with pytest.raises(ValueError, match="needs the kinds or rules"):
        PolicyConfig.model_validate({"maintenance": [
            {"name": "all", "reason": "x", "life_safety": True, "days": "daily",
             "start": "01:00", "end": "02:00"}]})
