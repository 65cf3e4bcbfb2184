"""The rule engine, one rule type at a time, driven by explicit times (no sleeping)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config.inventory import Device, DeviceSettings
from sentinel.errors import ConfigError
from sentinel.incidents.model import IncidentBook
from sentinel.loading import load_all
from sentinel.rules.engine import CondState, RuleEngine, Signal, daytime_overlap
from sentinel.rules.model import (
    OPERATORS,
    RulesConfig,
    load_rules_file,
    merge_rule_files,
    parse_duration,
)
from sentinel.types import Reading, Severity, Value

from helpers import SHIPPED_CONFIG, copy_deployment

T0 = 1_780_000_000.0  # 2026-05-28 (a Thursday), 04:26:40 Asia/Shanghai


def device(id_: str = "D1", kind: str = "hydrant_pressure", **settings_: Any) -> Device:
    return Device(id=id_, kind=kind, community="c", compound="A", building="1", grid="G1",
                  profile="sentinel-json", settings=DeviceSettings(**settings_))


def engine(rules: list[dict[str, Any]], devices: list[Device] | None = None,
           started_at: float = T0, grace: float = 0.0, **extra: Any) -> RuleEngine:
    config = merge_rule_files([{"rule": rules, **extra}])
    devices = devices or [device()]
    return RuleEngine(config, {d.id: d for d in devices}, started_at, grace)


def feed(eng: RuleEngine, ts: float, device_id: str = "D1", kind: str = "hydrant_pressure",
         **values: Value) -> list[Signal]:
    return eng.on_readings([Reading(device_id, kind, ts, ts, values)])


def changes(signals: list[Signal]) -> list[tuple[str, str, str]]:
    return [(s.rule, s.change, s.severity.label) for s in signals]


HYDRANT: dict[str, Any] = {
    "name": "low", "kind": "hydrant_pressure", "type": "threshold", "field": "pressure",
    "levels": [{"severity": "warning", "below": 0.14},
               {"severity": "critical", "below": 0.10, "for": "60s"}],
    "clear_above": 0.15,
}


# -- durations and config -------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("2m", 120), ("1h30m", 5400), ("1d", 86400), (15, 15), ("0.5s", 0.5)])
def test_durations_parse(text: object, seconds: float) -> None:
    """Durations are seconds or compact text."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-3", "1y", True])
def test_bad_durations_are_refused(text: object) -> None:
    """Unparseable durations are errors, not zero."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_hysteresis_band_must_be_consistent() -> None:
    """A clear level inside the alarm band is a config error."""
    bad = dict(HYDRANT, clear_above=0.12)
    with pytest.raises(ValueError, match="clear_above"):
        merge_rule_files([{"rule": [bad]}])


def test_shipped_rules_load_with_every_issue_example() -> None:
    """The shipped rules hold the hydrant, gas, tank and heart-rate examples."""
    rules = {r.name: r for r in load_all(SHIPPED_CONFIG, {}).rules.rule}
    hydrant = rules["hydrant_pressure_low"]
    assert [(lv.severity, lv.below, lv.for_) for lv in hydrant.levels] == [  # type: ignore[union-attr]
        (Severity.WARNING, 0.14, 0.0), (Severity.CRITICAL, 0.10, 60.0)]
    assert hydrant.clear_above == 0.15  # type: ignore[union-attr]
    gas = rules["gas_lel"]
    assert [(lv.severity, lv.op, lv.limit) for lv in gas.levels] == [  # type: ignore[union-attr]
        (Severity.WARNING, "≥", 10), (Severity.CRITICAL, "≥", 25)]
    assert rules["hydrant_pressure_drop"].drop == 0.05  # type: ignore[union-attr]
    assert rules["heart_rate_high"].levels[0].for_ == 300  # type: ignore[union-attr]
    assert {"tank_level_low", "tank_level_overflow", "tank_level_falling", "sos", "fall",
            "fall_still", "inactive", "watch_not_worn", "detector_offline", "monitor_offline",
            "battery_low", "signal_weak", "tamper_cleared", "self_test"} <= set(rules)


def test_shipped_defaults_name_their_source() -> None:
    """Every shipped rule and correlation carries a comment naming its source."""
    text = (SHIPPED_CONFIG.parent / "rules.toml").read_text(encoding="utf-8")
    blocks = text.split("\n[[")[1:]
    for block in blocks:
        if block.startswith(("rule]]", "correlation]]")):
            name = block.split('name = "')[1].split('"')[0]
            assert "Source:" in block or "sentinel default" in block, name


def test_check_reports_rule_problems_with_file_and_entry(tmp_path: Path) -> None:
    """A rule naming an unknown field is reported by check, with file and rule."""
    config = copy_deployment(tmp_path)
    rules = config.parent / "rules.toml"
    rules.write_text(rules.read_text(encoding="utf-8").replace(
        'field = "pressure"', 'field = "presure"', 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_all(config, {})
    text = str(info.value)
    assert "rules.toml" in text and "rule hydrant_pressure_low" in text and "presure" in text


# -- state rules ------------------------------------------------------------------------

def test_state_rule_fires_at_once_and_clears() -> None:
    """An alarm flag opens at once; false clears; repeats change nothing."""
    eng = engine([{"name": "smoke", "kind": "smoke", "type": "state", "field": "alarm",
                   "severity": "critical", "life_safety": True}],
                 [device(kind="smoke")])
    assert changes(feed(eng, T0, kind="smoke", alarm=False)) == []
    assert changes(feed(eng, T0 + 1, kind="smoke", alarm=True)) == [
        ("smoke", "active", "critical")]
    assert feed(eng, T0 + 2, kind="smoke", alarm=True) == []
    assert feed(eng, T0 + 3, kind="smoke", battery=50.0) == []
    assert changes(feed(eng, T0 + 4, kind="smoke", alarm=False)) == [("smoke", "clear", "info")]


def test_state_rule_with_duration_fires_from_the_timer() -> None:
    """worn = false for 3 h fires on a tick, with no further reading."""
    eng = engine([{"name": "not_worn", "kind": "elderly_watch", "type": "state",
                   "field": "worn", "equals": False, "for": "3h", "severity": "warning"}],
                 [device(kind="elderly_watch")])
    assert feed(eng, T0, kind="elderly_watch", worn=False) == []
    assert eng.tick(T0 + 3 * 3600 - 1) == []
    signals = eng.tick(T0 + 3 * 3600)
    assert changes(signals) == [("not_worn", "active", "warning")]
    assert signals[0].ts == T0 + 3 * 3600
    assert eng.tick(T0 + 4 * 3600) == []


def test_duplicate_reading_is_ignored_and_stale_alarm_still_fires() -> None:
    """A redelivered reading changes nothing; an older alarm arriving late still opens."""
    eng = engine([{"name": "smoke", "kind": "smoke", "type": "state", "field": "alarm",
                   "severity": "critical"}], [device(kind="smoke")])
    feed(eng, T0 + 10, kind="smoke", alarm=False)
    assert feed(eng, T0 + 10, kind="smoke", alarm=False) == []
    late = feed(eng, T0 + 5, kind="smoke", alarm=True)
    assert changes(late) == [("smoke", "active", "critical")]
    # ...but a late "false" never clears a newer alarm.
    assert feed(eng, T0 + 4, kind="smoke", alarm=False) == []


# -- thresholds -------------------------------------------------------------------------

@pytest.mark.parametrize(("steps", "expected"), [
    # (ts offset, pressure) → signals at that step
    ([(0, 0.35), (10, 0.13)], [[], [("low", "active", "warning")]]),
    ([(0, 0.13), (10, 0.145), (20, 0.149)], [[("low", "active", "warning")], [], []]),
    ([(0, 0.13), (10, 0.151)], [[("low", "active", "warning")], [("low", "clear", "info")]]),
    ([(0, 0.09), (30, 0.09), (60, 0.09)],
     [[("low", "active", "warning")], [], [("low", "active", "critical")]]),
    # Critical needs 60 s *continuously* below 0.10.
    ([(0, 0.09), (30, 0.11), (50, 0.09), (100, 0.09)],
     [[("low", "active", "warning")], [], [], []]),
    # Severity does not fall back while open; it clears only above 0.15.
    ([(0, 0.09), (60, 0.09), (70, 0.13)],
     [[("low", "active", "warning")], [("low", "active", "critical")], []]),
])
def test_hydrant_threshold_table(steps: list[tuple[float, float]],
                                 expected: list[list[tuple[str, str, str]]]) -> None:
    """The shipped hydrant example: warning < 0.14, critical < 0.10 for 60 s, clear > 0.15."""
    eng = engine([HYDRANT])
    got = [changes(feed(eng, T0 + dt, pressure=p)) for dt, p in steps]
    assert got == expected


def test_threshold_duration_fires_on_tick_without_new_reading() -> None:
    """A device reporting once a minute still goes critical 60 s after crossing."""
    eng = engine([HYDRANT])
    feed(eng, T0, pressure=0.08)
    assert eng.tick(T0 + 59) == []
    assert changes(eng.tick(T0 + 60)) == [("low", "active", "critical")]


def test_threshold_relative_to_tank_height() -> None:
    """Tank marks are percentages of each tank's height; tanks without one are skipped."""
    rule = {"name": "tank_low", "kind": "water_level", "type": "threshold", "field": "level",
            "relative_to": "tank_height_m", "levels": [{"severity": "warning", "below": 70}],
            "clear_above": 75}
    tall = device("T1", "water_level", tank_height_m=4.0)
    unknown = device("T2", "water_level")
    eng = engine([rule], [tall, unknown])
    assert feed(eng, T0, "T1", "water_level", level=2.9) == []          # 72.5 %
    assert changes(feed(eng, T0 + 1, "T1", "water_level", level=2.7)) == [
        ("tank_low", "active", "warning")]                              # 67.5 %
    assert feed(eng, T0 + 2, "T1", "water_level", level=2.95) == []     # 73.75 %: in band
    assert changes(feed(eng, T0 + 3, "T1", "water_level", level=3.1)) == [
        ("tank_low", "clear", "info")]
    assert eng.rules_for("T2") == []


@settings(max_examples=300, deadline=None)
@given(start_inside=st.booleans(),
       values=st.lists(st.floats(min_value=0.14, max_value=0.15), min_size=1, max_size=60))
def test_values_inside_the_hysteresis_band_never_toggle(start_inside: bool,
                                                        values: list[float]) -> None:
    """Once on either side, any walk inside [0.14, 0.15] produces no signal at all."""
    eng = engine([HYDRANT])
    feed(eng, T0, pressure=0.12 if start_inside else 0.3)
    for i, value in enumerate(values, start=1):
        assert feed(eng, T0 + i, pressure=value) == []
        assert eng.tick(T0 + i + 0.5) == []


@settings(max_examples=300, deadline=None)
@given(start_inside=st.booleans(),
       values=st.lists(st.floats(min_value=0.14, max_value=0.15), min_size=1, max_size=60))
def test_band_walk_never_toggles_an_incident(start_inside: bool, values: list[float]) -> None:
    """Through the incident book too: no event at all while the value stays in the band."""
    config = merge_rule_files([{"rule": [HYDRANT]}])
    dev = device()
    eng = RuleEngine(config, {dev.id: dev}, T0, 0)
    book = IncidentBook(config, {dev.id: dev})
    book.apply(feed(eng, T0, pressure=0.12 if start_inside else 0.3), T0)
    book.tick(T0 + 0.5)
    opened = book.take_changes()[1]
    assert len(opened) == (1 if start_inside else 0)
    for i, value in enumerate(values, start=1):
        book.apply(feed(eng, T0 + i * 30, pressure=value), T0 + i * 30)
        book.apply(eng.tick(T0 + i * 30 + 15), T0 + i * 30 + 15)
        book.tick(T0 + i * 30 + 15)
    assert book.take_changes()[1] == []
    assert len(book.open) == (1 if start_inside else 0)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
                       min_size=1, max_size=80))
def test_threshold_signals_alternate_and_respect_levels(values: list[float]) -> None:
    """Any walk: signals alternate active/clear, actives only below 0.14, clears above 0.15."""
    eng = engine([HYDRANT])
    active = False
    for i, value in enumerate(values):
        for s in feed(eng, T0 + i * 10, pressure=value):
            if s.change == "active":
                assert value < 0.14
                active = True
            else:
                assert s.change == "clear" and active and value > 0.15
                active = False


# -- explicit comparisons: strict and inclusive bounds ----------------------------------

_HOLDS = {"above": lambda v, lim: v > lim, "at_or_above": lambda v, lim: v >= lim,
          "below": lambda v, lim: v < lim, "at_or_below": lambda v, lim: v <= lim}


@settings(max_examples=300, deadline=None)
@given(bound=st.sampled_from(sorted(OPERATORS)),
       limit=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False))
def test_a_level_alarms_exactly_where_its_operator_holds(bound: str, limit: float) -> None:
    """At the limit only inclusive forms alarm; one step past it always, one step short never."""
    for value, outside in ((limit, bound.startswith("at_or_")),
                           (math.nextafter(limit, -math.inf), bound.endswith("below")),
                           (math.nextafter(limit, math.inf), bound.endswith("above"))):
        assert _HOLDS[bound](value, limit) == outside
        rule = {"name": "t", "kind": "hydrant_pressure", "type": "threshold",
                "field": "pressure", "levels": [{"severity": "warning", bound: limit}]}
        signals = feed(engine([rule]), T0, pressure=value)
        assert changes(signals) == ([("t", "active", "warning")] if outside else [])
        if outside:
            assert signals[0].detail["op"] == OPERATORS[bound]  # type: ignore[index]
            assert signals[0].detail["limit"] == round(limit, 6)


@settings(max_examples=300, deadline=None)
@given(rising=st.booleans(), inclusive=st.booleans(),
       clear=st.floats(min_value=-1e5, max_value=1e5, allow_nan=False, allow_subnormal=False),
       gap=st.floats(min_value=0.5, max_value=100))
def test_a_clear_level_clears_exactly_where_its_operator_holds(
        rising: bool, inclusive: bool, clear: float, gap: float) -> None:
    """At the clear level only inclusive forms clear; one step past it always, one short never."""
    level = clear + gap if rising else clear - gap
    side = ("below" if rising else "above")
    clear_key = f"clear_at_or_{side}" if inclusive else f"clear_{side}"
    rule = {"name": "t", "kind": "hydrant_pressure", "type": "threshold", "field": "pressure",
            "levels": [{"severity": "warning", "above" if rising else "below": level}],
            clear_key: clear}
    beyond = math.nextafter(clear, -math.inf if rising else math.inf)
    short = math.nextafter(clear, math.inf if rising else -math.inf)
    for value, clears in ((clear, inclusive), (beyond, True), (short, False)):
        eng = engine([rule])
        alarm = level + 1 if rising else level - 1
        assert changes(feed(eng, T0, pressure=alarm)) == [("t", "active", "warning")]
        assert changes(feed(eng, T0 + 1, pressure=value)) == (
            [("t", "clear", "info")] if clears else [])


@pytest.mark.parametrize(("levels", "clear", "message"), [
    ([{"severity": "warning", "above": 1, "at_or_above": 2}], {}, "exactly one of"),
    ([{"severity": "warning"}], {}, "exactly one of"),
    ([{"severity": "warning", "at_or_above": 10}, {"severity": "critical", "below": 1}], {},
     "one direction"),
    ([{"severity": "warning", "at_or_above": 10}], {"clear_above": 5}, "clear_below"),
    ([{"severity": "warning", "at_or_below": 10}], {"clear_at_or_below": 15}, "clear_above"),
    ([{"severity": "warning", "at_or_above": 10}], {"clear_below": 5, "clear_at_or_below": 4},
     "one clear level"),
    ([{"severity": "warning", "at_or_above": 10}], {"clear_at_or_below": 10}, "both alarm"),
    ([{"severity": "warning", "above": 10}], {"clear_below": 10.5}, "both alarm"),
    ([{"severity": "warning", "at_or_below": 40}], {"clear_at_or_above": 40}, "both alarm"),
])
def test_inconsistent_comparisons_are_refused(levels: list[dict[str, Any]],
                                              clear: dict[str, float], message: str) -> None:
    """Two bounds, mixed directions, a clear level on the wrong side or overlapping, refused."""
    rule = {"name": "t", "kind": "gas", "type": "threshold", "field": "concentration_lel",
            "levels": levels, **clear}
    with pytest.raises(ValueError, match=message):
        merge_rule_files([{"rule": [rule]}])


@pytest.mark.parametrize(("bound", "clear"), [
    ("at_or_above", {"clear_below": 10}), ("above", {"clear_at_or_below": 10}),
    ("above", {"clear_below": 10}), ("at_or_above", {"clear_at_or_below": 9.99})])
def test_a_clear_level_touching_the_level_is_accepted(bound: str,
                                                      clear: dict[str, float]) -> None:
    """A clear level may meet the level when no value would both alarm and clear."""
    rule = {"name": "t", "kind": "gas", "type": "threshold", "field": "concentration_lel",
            "levels": [{"severity": "warning", bound: 10}], **clear}
    assert merge_rule_files([{"rule": [rule]}]).rule[0].name == "t"


def test_an_override_clear_level_replaces_the_other_form() -> None:
    """An override's clear_above replaces a rule's clear_at_or_above instead of clashing."""
    rule = dict(HYDRANT, clear_above=None, clear_at_or_above=0.15)
    config = merge_rule_files([{"rule": [rule], "override": [
        {"rule": "low", "match": {"device": "D1"}, "set": {"clear_above": 0.2}}]}])
    eng = RuleEngine(config, {"D1": device()}, T0, 0)
    low = eng.rules_for("D1")[0]
    assert (low.clear_above, low.clear_at_or_above) == (0.2, None)  # type: ignore[union-attr]
    feed(eng, T0, pressure=0.12)
    assert feed(eng, T0 + 1, pressure=0.2) == []
    assert changes(feed(eng, T0 + 2, pressure=0.201)) == [("low", "clear", "info")]


# -- the shipped rules at their edges ----------------------------------------------------

SHIPPED_RULES = SHIPPED_CONFIG.parent / "rules.toml"


def shipped_engine() -> RuleEngine:
    config = merge_rule_files([load_rules_file(SHIPPED_RULES)])
    devices = [device("H1", "hydrant_pressure"), device("G1", "gas"),
               device("T1", "water_level", tank_height_m=4.0), device("W1", "elderly_watch")]
    return RuleEngine(config, {d.id: d for d in devices}, T0, 0)


def shipped(rule: str, device_id: str, kind: str, field: str,
            steps: list[tuple[float, float]]) -> list[tuple[str, str]]:
    """(change, severity) of `rule` for each reading; ticks the engine after each one."""
    eng = shipped_engine()
    out = []
    for dt, value in steps:
        signals = feed(eng, T0 + dt, device_id, kind, **{field: value})
        signals += eng.tick(T0 + dt)
        out += [(s.change, s.severity.label) for s in signals if s.rule == rule]
    return out


@pytest.mark.parametrize(("value", "expected"), [
    (25.0, [("active", "critical")]), (24.99, [("active", "warning")]),
    (10.0, [("active", "warning")]), (9.99, []), (100.0, [("active", "critical")]),
])
def test_shipped_gas_rule_alarms_at_its_points(value: float,
                                               expected: list[tuple[str, str]]) -> None:
    """gas_lel: 25.0 %LEL is critical (GB/T 50493 first level), 10.0 warns, 9.99 is normal."""
    assert shipped("gas_lel", "G1", "gas", "concentration_lel", [(0, value)]) == expected


def test_shipped_gas_rule_says_its_operator_and_clears_below_five() -> None:
    """The gas signal carries op ≥ and limit 25; 5.0 %LEL holds the leak, 4.99 clears it."""
    eng = shipped_engine()
    signal = feed(eng, T0, "G1", "gas", concentration_lel=25.0)[0]
    assert dict(signal.detail) == {"field": "concentration_lel", "op": "≥", "limit": 25.0}
    assert shipped("gas_lel", "G1", "gas", "concentration_lel",
                   [(0, 12.0), (10, 5.0), (20, 4.99)]) == [("active", "warning"),
                                                          ("clear", "info")]


@pytest.mark.parametrize(("steps", "expected"), [
    ([(0, 0.14)], []),                                       # the GB 50974 minimum is met
    ([(0, 0.1399)], [("active", "warning")]),
    ([(0, 0.10), (60, 0.10)], [("active", "warning")]),      # 0.10 at fire flow is met
    ([(0, 0.0999), (60, 0.0999)], [("active", "warning"), ("active", "critical")]),
    ([(0, 0.0999), (59, 0.0999)], [("active", "warning")]),  # critical needs 60 s held
    ([(0, 0.12), (10, 0.15)], [("active", "warning")]),      # 0.15 is still in the band
    ([(0, 0.12), (10, 0.1501)], [("active", "warning"), ("clear", "info")]),
])
def test_shipped_hydrant_rule_edges(steps: list[tuple[float, float]],
                                    expected: list[tuple[str, str]]) -> None:
    """hydrant_pressure_low: < 0.14 warning, < 0.10 for 60 s critical, clears > 0.15 MPa."""
    assert shipped("hydrant_pressure_low", "H1", "hydrant_pressure", "pressure",
                   steps) == expected


@pytest.mark.parametrize(("rule", "field", "value", "expected"), [
    ("tank_level_low", "level", 2.8, [("active", "warning")]),        # 70 % reached
    ("tank_level_low", "level", 2.81, []),
    ("tank_level_low", "level", 1.6, [("active", "critical")]),       # 40 % reached
    ("tank_level_overflow", "level", 3.98, [("active", "warning")]),  # 99.5 % reached
    ("tank_level_overflow", "level", 3.979, []),
])
def test_shipped_tank_marks_alarm_when_reached(rule: str, field: str, value: float,
                                               expected: list[tuple[str, str]]) -> None:
    """Tank marks (percent of a 4 m tank) alarm when the water reaches them: ≤ 70/40, ≥ 99.5."""
    assert shipped(rule, "T1", "water_level", field, [(0, value)]) == expected


@pytest.mark.parametrize(("rule", "value", "expected"), [
    ("heart_rate_low", 40, []), ("heart_rate_low", 39, [("active", "warning")]),
    ("heart_rate_high", 130, []), ("heart_rate_high", 131, [("active", "warning")]),
])
def test_shipped_heart_rate_band_includes_its_ends(rule: str, value: float,
                                                   expected: list[tuple[str, str]]) -> None:
    """40 and 130 bpm are inside the normal band; beyond them for 5 minutes warns."""
    assert shipped(rule, "W1", "elderly_watch", "heart_rate",
                   [(0, value), (300, value)]) == expected


# -- rate of change ---------------------------------------------------------------------

def test_hydrant_drop_within_window() -> None:
    """0.05 MPa lost within 30 s opens; a slow decline of the same size does not."""
    rule = {"name": "drop", "kind": "hydrant_pressure", "type": "rate", "field": "pressure",
            "drop": 0.05, "window": "30s", "severity": "warning"}
    fast = engine([rule])
    feed(fast, T0, pressure=0.35)
    feed(fast, T0 + 10, pressure=0.33)
    assert changes(feed(fast, T0 + 20, pressure=0.29)) == [("drop", "active", "warning")]
    slow = engine([rule])
    for i in range(10):
        assert feed(slow, T0 + i * 20, pressure=0.35 - i * 0.01) == []


def test_tank_falling_rate_per_hour() -> None:
    """A tank losing 0.6 m/h over 10 minutes opens; normal draw does not."""
    rule = {"name": "falling", "kind": "water_level", "type": "rate", "field": "level",
            "falling_per_hour": 0.5, "window": "10m", "min_span": "5m", "severity": "warning"}
    tank = device("T1", "water_level", tank_height_m=4.0)
    leak = engine([rule], [tank])
    got: list[Signal] = []
    for i in range(11):
        got += feed(leak, T0 + i * 60, "T1", "water_level", level=3.5 - 0.01 * i)
    assert changes(got) == [("falling", "active", "warning")]
    normal = engine([rule], [tank])
    for i in range(30):
        assert feed(normal, T0 + i * 60, "T1", "water_level", level=3.5 - 0.0005 * i) == []


# -- offline ------------------------------------------------------------------------------

OFFLINE = {"name": "offline", "kind": "smoke", "type": "offline", "interval": "1h",
           "levels": [{"severity": "warning", "missed": 2},
                      {"severity": "critical", "after": "24h"}]}


def test_offline_levels_fire_on_the_timer() -> None:
    """Silent 2 intervals → warning, 24 h → critical; a reading clears it."""
    eng = engine([OFFLINE], [device(kind="smoke")])
    feed(eng, T0, kind="smoke", alarm=False)
    assert eng.tick(T0 + 7199) == []
    assert changes(eng.tick(T0 + 7200)) == [("offline", "active", "warning")]
    assert eng.tick(T0 + 7300) == []
    assert changes(eng.tick(T0 + 86400)) == [("offline", "active", "critical")]
    assert changes(feed(eng, T0 + 86500, kind="smoke", alarm=False)) == [
        ("offline", "clear", "info")]


def test_offline_uses_device_report_interval() -> None:
    """A device's report_interval_s overrides its kind's interval."""
    eng = engine([OFFLINE], [device(kind="smoke", report_interval_s=600)])
    feed(eng, T0, kind="smoke", alarm=False)
    assert changes(eng.tick(T0 + 1200)) == [("offline", "active", "warning")]


def test_offline_after_restart_resumes_from_last_seen_with_grace() -> None:
    """After a restart: no offline incident within the grace; then from stored last-seen."""
    eng = engine([OFFLINE], [device(kind="smoke")], started_at=T0 + 7000, grace=300)
    eng.restore({}, {"D1": T0})
    assert eng.tick(T0 + 7250) == []               # inside the start-up grace
    assert changes(eng.tick(T0 + 7300)) == [("offline", "active", "warning")]


def test_never_seen_device_counts_from_first_start() -> None:
    """A device that never reported is offline relative to when sentinel started."""
    eng = engine([OFFLINE], [device(kind="smoke")], started_at=T0, grace=300)
    assert eng.tick(T0 + 7199) == []
    assert changes(eng.tick(T0 + 7200)) == [("offline", "active", "warning")]


# -- edge, still, inactivity --------------------------------------------------------------

def test_tamper_cleared_is_a_one_off_event() -> None:
    """tamper true → false produces one event; false → false nothing."""
    eng = engine([{"name": "tamper_cleared", "kind": "smoke", "type": "edge", "field": "tamper",
                   "from": True, "to": False, "severity": "maintenance"}],
                 [device(kind="smoke")])
    assert feed(eng, T0, kind="smoke", tamper=False) == []
    assert feed(eng, T0 + 1, kind="smoke", tamper=True) == []
    assert changes(feed(eng, T0 + 2, kind="smoke", tamper=False)) == [
        ("tamper_cleared", "event", "maintenance")]
    assert feed(eng, T0 + 3, kind="smoke", tamper=False) == []


FALL_RULES: list[dict[str, Any]] = [
    {"name": "fall", "kind": "elderly_watch", "type": "state", "field": "fall",
     "severity": "critical", "life_safety": True, "resolve": "manual"},
    {"name": "fall_still", "kind": "elderly_watch", "type": "still", "after": "fall",
     "within": "2m", "severity": "emergency", "incident": "fall"},
]


def test_fall_without_movement_raises_to_emergency() -> None:
    """A fall, then no step for 2 minutes → the fall incident's severity is raised."""
    eng = engine(FALL_RULES, [device(kind="elderly_watch")])
    feed(eng, T0, kind="elderly_watch", steps=100)
    assert changes(feed(eng, T0 + 5, kind="elderly_watch", fall=True, steps=100)) == [
        ("fall", "active", "critical")]
    feed(eng, T0 + 60, kind="elderly_watch", fall=True, steps=100)
    assert eng.tick(T0 + 124) == []
    signals = eng.tick(T0 + 125)
    assert changes(signals) == [("fall_still", "active", "emergency")]
    assert signals[0].incident == "fall"


def test_fall_then_walking_does_not_raise() -> None:
    """Steps after the fall cancel the no-movement watch."""
    eng = engine(FALL_RULES, [device(kind="elderly_watch")])
    feed(eng, T0, kind="elderly_watch", steps=100)
    feed(eng, T0 + 5, kind="elderly_watch", fall=True, steps=100)
    feed(eng, T0 + 60, kind="elderly_watch", fall=True, steps=130)
    assert eng.tick(T0 + 600) == []


def test_inactivity_counts_daytime_only() -> None:
    """No step increase for 4 daytime hours fires; night hours do not count."""
    rule = {"name": "inactive", "kind": "elderly_watch", "type": "inactivity",
            "daytime": "08:00-20:00", "for": "4h", "severity": "warning"}
    eng = engine([rule], [device(kind="elderly_watch")])
    # T0 is 04:26:40 local: the clock starts counting at 08:00 (T0 + 12800 s).
    feed(eng, T0, kind="elderly_watch", steps=0)
    assert eng.tick(T0 + 12800 + 4 * 3600 - 1) == []
    assert changes(eng.tick(T0 + 12800 + 4 * 3600)) == [("inactive", "active", "warning")]
    assert changes(feed(eng, T0 + 30000, kind="elderly_watch", steps=10)) == [
        ("inactive", "clear", "info")]


def test_daytime_overlap_across_days() -> None:
    """Overlap with 08:00-20:00 over 36 h is 12 h + the part of the next day."""
    from zoneinfo import ZoneInfo
    tz = ZoneInfo("Asia/Shanghai")
    start = 1_780_000_000.0 - 16000  # 00:00 local
    assert daytime_overlap(start, start + 36 * 3600, 8 * 3600, 20 * 3600, tz) == \
        12 * 3600 + 4 * 3600


# -- overrides and state ---------------------------------------------------------------

def test_override_changes_a_rule_for_one_device_only() -> None:
    """An override by device id wins over one by grid; other devices keep the default."""
    a, b = device("A"), device("B")
    config = merge_rule_files([{
        "rule": [HYDRANT],
        "override": [
            {"rule": "low", "match": {"grid": "G1"}, "set": {"clear_above": 0.2}},
            {"rule": "low", "match": {"device": "A"},
             "set": {"levels": [{"severity": "warning", "below": 0.2}], "clear_above": 0.25}},
        ]}])
    eng = RuleEngine(config, {"A": a, "B": b}, T0, 0)
    assert changes(feed(eng, T0, "A", pressure=0.18)) == [("low", "active", "warning")]
    assert feed(eng, T0, "B", pressure=0.18) == []
    assert eng.rules_for("B")[0].clear_above == 0.2  # type: ignore[union-attr]


def test_override_can_disable_a_rule_for_a_group() -> None:
    """Disabling by named group removes the rule from those devices."""
    config: RulesConfig = merge_rule_files([{
        "rule": [HYDRANT], "groups": {"flushing": ["A"]},
        "override": [{"rule": "low", "match": {"group": "flushing"}, "enabled": False}]}])
    eng = RuleEngine(config, {"A": device("A"), "B": device("B")}, T0, 0)
    assert eng.rules_for("A") == [] and len(eng.rules_for("B")) == 1


def test_condition_state_round_trips_through_json() -> None:
    """Pending durations and windows survive serialisation (restart)."""
    eng = engine([HYDRANT])
    feed(eng, T0, pressure=0.08)
    dirty = eng.take_dirty(force_seen=True)
    saved = {k: v.to_json() for k, v in dirty.states.items()}
    assert dirty.last_seen == {"D1": T0}
    again = engine([HYDRANT], started_at=T0 + 30)
    again.restore(saved, dirty.last_seen)
    # The pending 60 s began before the restart and completes after it.
    assert changes(again.tick(T0 + 60)) == [("low", "active", "critical")]
    assert CondState.from_json(CondState(samples=[(1.0, 2.0)]).to_json()).samples == [(1.0, 2.0)]


def _rate_rule(**measure: float) -> Any:
    from sentinel.rules.model import RateRule
    return RateRule.model_validate({"name": "r", "kind": "hydrant_pressure", "type": "rate",
                                    "field": "pressure", "window": 30, "severity": "warning",
                                    **measure})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 5.0), st.floats(0.0, 1.0)), min_size=1, max_size=80),
       st.sampled_from(["drop", "rise"]))
def test_drop_and_rise_windows_keep_the_extreme(steps: list[tuple[float, float]],
                                                measure: str) -> None:
    """The window a drop/rise rule keeps gives the same change as all samples would."""
    from sentinel.rules.engine import RateEval
    rule = _rate_rule(**{measure: 0.05})
    ev = RateEval(rule, 0.0)
    state = CondState("SB-HYD-0001")
    ts, raw = 1_795_000_000.0, []
    for gap, value in steps:
        ts += gap
        raw = [(t, v) for t, v in [*raw, (ts, value)] if t >= ts - rule.window]
        ev.on_reading(state, Reading("SB-HYD-0001", "hydrant_pressure", ts, ts,
                                     {"pressure": value}), False)
        values = [v for _, v in raw]
        expected = max(values) - value if measure == "drop" else value - min(values)
        change = ev._change(state.samples)
        assert change is not None and change[0] == pytest.approx(expected)
        assert len(state.samples) <= len(raw)


def test_a_slope_window_keeps_few_samples_and_the_same_slope() -> None:
    """A 10-minute window of readings every second keeps about 60, and the slope holds."""
    from sentinel.rules.engine import _SLOPE_SAMPLES, RateEval
    from sentinel.rules.model import RateRule
    rule = RateRule.model_validate({"name": "t", "kind": "water_level", "type": "rate",
                                    "field": "level", "window": 600, "severity": "warning",
                                    "falling_per_hour": 0.5, "min_span": 300})
    ev = RateEval(rule, 0.0)
    state = CondState("SB-WL-0001")
    signals = []
    for i in range(1800):  # half an hour, falling 0.6 m/h
        ts = 1_795_000_000.0 + i
        reading = Reading("SB-WL-0001", "water_level", ts, ts, {"level": 3.0 - 0.6 * i / 3600})
        signals.append(ev.on_reading(state, reading, False))
    assert len(state.samples) <= 2 * _SLOPE_SAMPLES + 1
    measured = ev._change(state.samples)
    assert measured is not None and measured[0] == pytest.approx(0.6, rel=1e-6)
    assert any(s is not None and s.change == "active" for s in signals)


def _shipped_evaluators() -> list[Any]:
    loaded = load_all(SHIPPED_CONFIG, {})
    engine = RuleEngine(loaded.rules, loaded.inventory, T0, 0)
    seen: dict[int, Any] = {}
    for plan in engine._plans.values():
        for ev in plan:
            seen.setdefault(id(ev), ev)
    return [ev for ev in seen.values() if ev.inert is not None]


_EVALUATORS = _shipped_evaluators()


def _edges(ev: Any) -> list[Value]:
    """The values where an evaluator's decision turns: its limits and what it compares."""
    out: list[Value] = []
    for limit, *_ in getattr(ev, "limits", ()):
        out += [limit, math.nextafter(limit, math.inf), math.nextafter(limit, -math.inf)]
    for attr in ("equals", "from_"):
        value = getattr(ev.rule, attr, None)
        if value is not None:
            out.append(value)
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_inert_never_skips_a_reading_the_evaluator_would_act_on(data: st.DataObject) -> None:
    """The engine skips `on_reading` for a quiet device when `inert` says a reading would
    leave a new state new (sentinel.rules.engine.Evaluator.inert): for every evaluator of
    the shipped rules, on values at and around its edges and of every type, `inert` may say
    no when in doubt, but never yes where the evaluator would signal or remember."""
    ev = data.draw(st.sampled_from(_EVALUATORS))
    fields = sorted(ev.watches or {"smoke", "alarm", "value"})
    special: list[Value] = [*_edges(ev), True, False, 0, 1, -1, 0.0, math.nan, math.inf,
                            -math.inf, "alarm", "normal", "1", ""]
    values_of = st.one_of(st.sampled_from(special), st.floats(-1e3, 1e3), st.integers(-5, 5))
    values = data.draw(st.dictionaries(st.sampled_from(fields), values_of, max_size=3))
    if not ev.inert(values):
        return
    state = CondState(device_id="D1")
    reading = Reading("D1", "smoke", T0, T0, values)
    assert ev.on_reading(state, reading, False) is None, (ev.name, values)
    assert state.is_default, (ev.name, values, state)
