"""The per-alert record against GB 50440: stage times, the 10 s / 3 s budgets, the report."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from sentinel.clock import FakeClock
from sentinel.config.model import LatencySettings, RulesSettings
from sentinel.incidents import latency
from sentinel.incidents.model import Incident
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore, read_events, read_incidents
from sentinel.loading import Loaded, load_all
from sentinel.stats import ALARM_BUCKETS
from sentinel.types import Reading, Severity, Value

from helpers import SHIPPED_CONFIG

LOADED: Loaded = load_all(SHIPPED_CONFIG, {})
T0 = 1_780_030_000.0
SMOKE = next(d for d in LOADED.inventory.values() if d.kind == "smoke")
HYDRANT = next(d for d in LOADED.inventory.values() if d.kind == "hydrant_pressure")
SETTINGS = RulesSettings(startup_grace=3600)
LIMITS = LatencySettings()


def reading(device_id: str, kind: str, ts: float, received: float, **values: Value
            ) -> Reading:
    return Reading(device_id, kind, ts, received, values)


async def started(path: Path, clock: FakeClock, limits: LatencySettings | None = LIMITS
                  ) -> tuple[StateStore, IncidentService]:
    store = StateStore(path)
    await store.__aenter__()
    service = IncidentService(LOADED.rules, LOADED.inventory, store, clock, SETTINGS, limits)
    await service.start()
    return store, service


def stored(db: Path, incident_id: str) -> Incident:
    return next(i for i in read_incidents(db) if i.id == incident_id)


def breaches(db: Path) -> list[Incident]:
    return [i for i in read_incidents(db) if i.name == latency.BREACH_INCIDENT]


async def smoke_alarm(service: IncidentService, clock: FakeClock, device_ts: float,
                      received: float) -> Incident:
    await service.process([reading(SMOKE.id, "smoke", device_ts, received, alarm=True)])
    return next(i for i in service.open_incidents() if i.device_id == SMOKE.id)


async def test_every_stage_is_recorded_and_persisted_with_existing_commits(
        tmp_path: Path) -> None:
    """Device time, receipt, commit, handed, accepted and acknowledged are stored epoch
    seconds; handed and accepted ride on the delivery-result commit."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0 + 0.02)
    store, service = await started(db, clock)
    inc = await smoke_alarm(service, clock, T0 - 0.4, T0)
    assert inc.timing == {"device": T0 - 0.4, "received": T0, "committed": T0 + 0.02}
    # The commit time is known only after the commit: not written by it.
    assert "committed" not in stored(db, inc.id).timing
    clock.advance(0.01)
    service.note_delivery(inc.id, T0 + 0.03, None)
    clock.advance(0.02)
    service.note_delivery(inc.id, T0 + 0.05, T0 + 0.05)
    await service.record([])
    assert stored(db, inc.id).timing == {"device": T0 - 0.4, "received": T0,
                                         "committed": T0 + 0.02, "handed": T0 + 0.03,
                                         "accepted": T0 + 0.05}
    clock.advance(5)
    await service.acknowledge(inc.id, "网格员")
    record = stored(db, inc.id).timing
    assert record["acknowledged"] == clock.now()
    assert math.isclose(latency.span(record, "first_notification") or 0, 0.45,
                        abs_tol=1e-6)
    assert math.isclose(latency.span(record, "forward") or 0, 0.03, abs_tol=1e-6)
    assert breaches(db) == []
    await store.__aexit__()


async def test_a_reading_without_a_device_time_has_no_device_stage(tmp_path: Path) -> None:
    """When the decoder used the receipt as the reading's time, the record starts there."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    inc = await smoke_alarm(service, clock, T0, T0)
    assert "device" not in inc.timing and inc.timing["received"] == T0
    assert latency.origin(inc.timing) == T0
    await store.__aexit__()


async def test_accepted_after_ten_seconds_opens_one_breach_naming_alarm_and_stage(
        tmp_path: Path) -> None:
    """A first delivery accepted 11 s after the device time opens latency_budget_exceeded
    with the alarm's id and the step that took the time (handed → accepted), once."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    inc = await smoke_alarm(service, clock, T0 - 0.5, T0)
    clock.advance(0.1)
    service.note_delivery(inc.id, T0 + 0.1, None)  # the first attempt timed out
    clock.advance(10.4)
    service.note_delivery(inc.id, T0 + 0.1, T0 + 10.5)
    await service.record([])
    found = breaches(db)
    assert len(found) == 1
    detail = found[0].detail
    assert detail["alarm"] == inc.id and detail["budget"] == "accepted"
    assert detail["stage"] == "accepted" and detail["stage_from"] == "handed"
    assert detail["seconds"] == 11.0 and detail["limit"] == 10.0 and detail["pending"] is False
    assert found[0].severity == Severity.WARNING
    on_alarm = [e for e in read_events(db, incident_id=inc.id)
                if e.type == latency.BREACH_INCIDENT]
    assert [e.data["budget"] for e in on_alarm] == ["accepted"]
    # Another delivery of the same alarm reports nothing more.
    service.note_delivery(inc.id, T0 + 11, T0 + 11.2)
    await service.record([])
    assert len([e for e in read_events(db) if e.type == latency.BREACH_INCIDENT]) == 1
    await store.__aexit__()


async def test_forwarding_after_three_seconds_names_the_slow_stage(tmp_path: Path) -> None:
    """Received → first handed over 3 s is a breach of the forward budget, even when the
    delivery itself was accepted within 10 s."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    inc = await smoke_alarm(service, clock, T0, T0)
    clock.advance(3.5)
    service.note_delivery(inc.id, T0 + 3.5, T0 + 3.6)
    await service.record([])
    found = breaches(db)
    assert [(b.detail["budget"], b.detail["stage"], b.detail["stage_from"]) for b in found] \
        == [("handed", "handed", "committed")]
    await store.__aexit__()


async def test_an_alarm_still_waiting_at_the_limit_is_reported_then(tmp_path: Path) -> None:
    """No delivery accepted: the tick after 3 s reports the forward budget, the tick after
    10 s the alarm budget, without waiting for the delivery to arrive; later ticks add
    nothing, and the second breach is named on the open system incident's trail."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    inc = await smoke_alarm(service, clock, T0, T0)
    clock.advance(2.9)
    await service.tick()
    assert breaches(db) == []
    clock.advance(0.2)
    await service.tick()
    (system,) = breaches(db)
    assert system.detail["budget"] == "handed" and system.detail["pending"] is True
    assert system.detail["stage"] == "handed"
    clock.advance(6.8)
    await service.tick()
    assert [e.data.get("budget") for e in read_events(db, incident_id=system.id)
            if e.type == latency.BREACH_INCIDENT] == []
    clock.advance(0.2)
    await service.tick()
    trail = [e.data for e in read_events(db, incident_id=system.id)
             if e.type == latency.BREACH_INCIDENT]
    assert [(d["alarm"], d["budget"], d["pending"]) for d in trail] == [
        (inc.id, "accepted", True)]
    clock.advance(5)
    await service.tick()
    service.note_delivery(inc.id, clock.now(), clock.now())
    await service.record([])
    assert len([e for e in read_events(db, incident_id=inc.id)
                if e.type == latency.BREACH_INCIDENT]) == 2
    await store.__aexit__()


async def test_a_breach_reported_before_a_restart_is_not_reported_again(tmp_path: Path
                                                                       ) -> None:
    """The breaches already on an open alarm's trail are read back at start."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    await smoke_alarm(service, clock, T0, T0)
    clock.advance(10.5)
    await service.tick()
    # Both budgets on the alarm's trail, the second also on the open system incident's.
    before = len([e for e in read_events(db) if e.type == latency.BREACH_INCIDENT])
    assert before == 3
    await store.__aexit__()
    clock.advance(1)
    store, again = await started(db, clock)
    await again.tick()
    assert len([e for e in read_events(db) if e.type == latency.BREACH_INCIDENT]) == before
    await store.__aexit__()


async def test_acknowledged_non_life_safety_silenced_and_unlimited_alarms_never_breach(
        tmp_path: Path) -> None:
    """A person already acknowledged it, a hydrant warning, or a service given no limits
    (no notification stage behind it): nothing is reported however long it waits."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    inc = await smoke_alarm(service, clock, T0, T0)
    await service.acknowledge(inc.id, "物业")
    await service.process([reading(HYDRANT.id, "hydrant_pressure", T0, T0, pressure=0.08)])
    clock.advance(60)
    await service.tick()
    assert breaches(db) == []
    await store.__aexit__()
    plain_db = tmp_path / "plain.sqlite3"
    store, plain = await started(plain_db, FakeClock(T0), limits=None)
    alarm = await smoke_alarm(plain, clock, T0, T0)
    plain.note_delivery(alarm.id, T0 + 20, T0 + 30)
    await plain.record([])
    assert breaches(plain_db) == [] and stored(plain_db, alarm.id).timing["accepted"] == T0 + 30
    await store.__aexit__()


async def test_limits_are_settings(tmp_path: Path) -> None:
    """With accepted_within = 30 an alarm accepted after 11 s keeps its limit."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock, LatencySettings(accepted_within=30))
    inc = await smoke_alarm(service, clock, T0, T0)
    clock.advance(11)
    service.note_delivery(inc.id, T0 + 0.5, T0 + 11)
    await service.record([])
    assert breaches(db) == []
    await store.__aexit__()


async def test_histograms_have_edges_at_three_and_ten_seconds(tmp_path: Path) -> None:
    """Receipt → handed and device → accepted are observed per alarm, in buckets that end
    exactly at GB 50440's 3 s and 10 s."""
    assert 3.0 in ALARM_BUCKETS and 10.0 in ALARM_BUCKETS
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    inc = await smoke_alarm(service, clock, T0 - 1, T0)
    service.note_delivery(inc.id, T0 + 3.0, T0 + 9.0)
    forward, accepted = service.forward_seconds["true"], service.alarm_seconds["true"]
    assert forward.count == 1 and dict(forward.cumulative())[3.0] == 1
    assert dict(forward.cumulative())[2.0] == 0
    assert accepted.count == 1 and dict(accepted.cumulative())[10.0] == 1
    assert dict(accepted.cumulative())[5.0] == 0
    await store.__aexit__()


def _incident(number: int, timing: dict[str, float], kind: str = "smoke",
              life_safety: bool = True) -> Incident:
    return Incident(id=f"20260529-{number:04d}", key=f"k{number}", name="smoke_alarm",
                    target="d", kind=kind, severity=Severity.CRITICAL,
                    opened_at=timing.get("device", timing["received"]), place={},
                    life_safety=life_safety, timing=timing)


offsets = st.floats(min_value=0.0, max_value=30.0, allow_nan=False)


@given(transport=offsets, commit=offsets, hand=offsets, deliver=offsets)
def test_check_reports_exactly_the_budgets_over_their_limits(
        transport: float, commit: float, hand: float, deliver: float) -> None:
    """For any stage times, a budget is reported iff its span exceeds its limit, and the
    stage named is the longest step within that span."""
    device = T0
    timing = {"device": device, "received": device + transport}
    timing["committed"] = timing["received"] + commit
    timing["handed"] = timing["committed"] + hand
    timing["accepted"] = timing["handed"] + deliver
    found = {b.budget: b for b in latency.check(_incident(1, timing), LIMITS, T0 + 1000)}
    alarm = timing["accepted"] - device
    forward = timing["handed"] - timing["received"]
    assert ("accepted" in found) == (alarm > 10.0)
    assert ("handed" in found) == (forward > 3.0)
    if "accepted" in found:
        order = ["device", "received", "committed", "handed", "accepted"]
        steps = {b: timing[b] - timing[a] for a, b in itertools.pairwise(order)}
        assert found["accepted"].stage_seconds == max(steps.values())
        assert steps[found["accepted"].stage] == max(steps.values())


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1),
       st.sampled_from([50, 90, 99, 100]))
def test_percentile_is_a_nearest_rank(values: list[float], q: int) -> None:
    """The percentile is one of the values, with at least q % of them at or below it."""
    ordered = sorted(values)
    p = latency.percentile(ordered, q)
    assert p in ordered
    assert sum(v <= p for v in ordered) >= q / 100 * len(ordered)


def test_report_counts_limits_kept_per_budget_and_percentiles_per_kind() -> None:
    """Three smoke alarms (one slow), one gas alarm still unreached, one non-life-safety
    incident: limits kept counted over the alarms, spans summarised per kind."""
    incidents = [
        _incident(1, {"device": T0, "received": T0 + 0.1, "committed": T0 + 0.11,
                      "handed": T0 + 0.12, "accepted": T0 + 0.2}),
        _incident(2, {"received": T0 + 5, "committed": T0 + 5.01, "handed": T0 + 5.02,
                      "accepted": T0 + 5.4}),
        _incident(3, {"received": T0 + 9, "committed": T0 + 9.01, "handed": T0 + 13,
                      "accepted": T0 + 21}),
        _incident(4, {"received": T0 + 10, "committed": T0 + 10.01}, kind="gas"),
        _incident(5, {"received": T0 + 11, "handed": T0 + 41, "accepted": T0 + 42},
                  kind="hydrant_pressure", life_safety=False),
    ]
    report = latency.report(incidents, LIMITS, T0 - 1, T0 + 100)
    assert report["incidents"] == 5 and report["alarms"] == 4
    assert report["limits"]["accepted"] == {"limit": 10.0, "kept": 2, "exceeded": 1,
                                            "unknown": 1}
    assert report["limits"]["handed"] == {"limit": 3.0, "kept": 2, "exceeded": 1,
                                          "unknown": 1}
    first = report["kinds"]["smoke"]["spans"]["first_notification"]
    assert first == {"count": 3, "p50": 0.4, "p90": 12.0, "p99": 12.0, "max": 12.0}
    assert report["spans"]["first_notification"]["count"] == 4
    assert "first_notification" not in report["kinds"]["gas"]["spans"]
    # The window is by opening time.
    assert latency.report(incidents, LIMITS, T0 + 4, T0 + 100)["incidents"] == 4
