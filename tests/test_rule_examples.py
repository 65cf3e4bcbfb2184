"""Rule examples (`[[rule.example]]`, sentinel.rules.examples): readings with relative times
and the incident events they must produce, run by `sentinel check` through the real rule
engine and incident book on a simulated clock.

The shipped examples must hold, and each must be able to fail: moving a rule past the edge
an example states (a strict bound made inclusive, a hold or window a little shorter...)
fails that example. Everything here is pure and in-process except the two `check` runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sentinel.incidents.model import IncidentBook
from sentinel.loading import Loaded, load_all
from sentinel.rules.examples import ExampleResult, report, run_examples
from sentinel.rules.model import RuleExample, RulesConfig, load_rules_file, merge_rule_files

from helpers import SHIPPED_CONFIG, copy_deployment, sentinel

RULES_FILE = SHIPPED_CONFIG.parent / "rules.toml"

Raw = dict[str, Any]


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    return load_all(SHIPPED_CONFIG, {})


def _rules(loaded: Loaded, raw: Raw) -> RulesConfig:
    """A raw rules mapping as loading makes it: validated, kinds widened."""
    return merge_rule_files([raw]).with_kinds(loaded.kinds.expand)


def _fields(loaded: Loaded) -> dict[str, tuple[str, ...]]:
    return {kind: tuple(loaded.kinds[kind].fields) for kind in loaded.kinds.names()}


def _run(loaded: Loaded, rules: RulesConfig) -> list[ExampleResult]:
    results, _ = run_examples(rules, loaded.inventory, IncidentBook, _fields(loaded))
    return results


def test_shipped_examples_hold_and_cover_the_edges(loaded: Loaded) -> None:
    """Every shipped example holds, and the edges the issue names all carry examples."""
    results = _run(loaded, loaded.rules)
    failed = report(results, 0, "en")[1]
    assert all(r.ok for r in results), "\n".join(failed)
    with_examples = {r.rule for r in results}
    assert {"gas_lel", "hydrant_pressure_low", "hydrant_pressure_drop", "tank_level_low",
            "tank_level_falling", "sos", "fall_still", "fire_lane_blocked",
            "heart_rate_high", "monitor_offline"} <= with_examples
    assert len(results) >= 25


def _move(key: str, new_key: str, level: int | None = None) -> Callable[[Raw], None]:
    """Rename a bound (e.g. `below` → `at_or_below`) of the rule or of one of its levels."""
    def apply(rule: Raw) -> None:
        where = rule if level is None else rule["levels"][level]
        where[new_key] = where.pop(key)
    return apply


def _set(key: str, value: object, level: int | None = None) -> Callable[[Raw], None]:
    def apply(rule: Raw) -> None:
        (rule if level is None else rule["levels"][level])[key] = value
    return apply


# (rule, how it moves, the example that must then fail): each edge an example states.
MUTATIONS: list[tuple[str, Callable[[Raw], None], str]] = [
    ("gas_lel", _move("at_or_above", "above", 1), "10 and 25 %LEL alarm at the point itself"),
    ("gas_lel", _move("at_or_above", "above", 0), "10 and 25 %LEL alarm at the point itself"),
    ("gas_lel", _move("clear_below", "clear_at_or_below"),
     "hysteresis: back to 9 or to 5 %LEL is not clear, below 5 is"),
    ("gas_lel", _set("clear_below", 9.5),
     "hysteresis: back to 9 or to 5 %LEL is not clear, below 5 is"),
    ("septic_h2s", _move("at_or_above", "above", 0), "7 and 14 ppm alarm at the limit itself"),
    ("hydrant_pressure_low", _move("below", "at_or_below", 0),
     "0.14 MPa itself meets GB 50974: no alarm"),
    ("hydrant_pressure_low", _move("below", "at_or_below", 1),
     "0.10 MPa itself is not critical"),
    ("hydrant_pressure_low", _set("for", "50s", 1), "below 0.10 for only 59 s is not critical"),
    ("hydrant_pressure_low", _set("for", "61s", 1),
     "below 0.14 warns at once, below 0.10 for 60 s is critical"),
    ("hydrant_pressure_low", _move("clear_above", "clear_at_or_above"),
     "hysteresis: 0.15 MPa is not clear, above it is; resolved 60 s later"),
    ("hydrant_pressure_drop", _set("window", "29s"),
     "a drop of 0.05 MPa within 30 s alarms at 0.05 itself"),
    ("hydrant_pressure_drop", _set("window", "31s"), "the same drop over 31 s is daily variation"),
    ("tank_level_low", _move("at_or_below", "below", 0),
     "a 4 m tank: 2.8 m (70 %) warns, 1.6 m (40 %) is critical, clears above 3.0 m"),
    ("tank_level_low", _move("clear_above", "clear_at_or_above"),
     "a 4 m tank: 2.8 m (70 %) warns, 1.6 m (40 %) is critical, clears above 3.0 m"),
    ("tank_level_falling", _set("falling_per_hour", 0.06),
     "the slow draw of normal use (5 cm/h, with 3 mm noise) is quiet"),
    ("tank_level_falling", _set("falling_per_hour", 0.35),
     "a busy hour's draw (0.4 m/h) is below the 0.5 m/h limit"),
    ("tank_level_falling", _set("min_span", "4m"),
     "a fast drop (0.6 m/h) opens once its samples span 5 minutes"),
    ("tank_level_falling", _set("falling_per_hour", 0.65),
     "a fast drop (0.6 m/h) opens once its samples span 5 minutes"),
    ("sos", _set("cancel_window", "59s"), "cancelled on the watch at 60 s: resolved as cancelled"),
    ("sos", _set("cancel_window", "61s"), "a cancel at 61 s is refused: a person must look"),
    ("fall_still", _set("within", "3m"), "a fall, then no step for 2 minutes: emergency"),
    ("fall_still", _set("within", "110s"), "a fall, then a step within 2 minutes: stays critical"),
    ("heart_rate_high", _move("above", "at_or_above", 0),
     "130 bpm itself, for 10 minutes, is normal"),
    ("fire_lane_blocked", _set("for", "4m"), "occupied 4m59s: a delivery stop, no alarm"),
    ("fire_lane_blocked", _set("clear_for", "2m"),
     "occupied 5 minutes opens; free for a minute resolves"),
    ("monitor_offline", _set("after", "20m", 0),
     "a hydrant monitor silent for 15 minutes warns; its next reading clears it"),
    ("battery_low", _move("below", "at_or_below", 0),
     "20 % itself is fine, below it goes in the digest; clears above 30 % at once"),
    ("smoke_alarm", _set("resolve", "auto"),
     "opens at once; a quiet detector still waits for a person"),
]


@pytest.mark.parametrize(("rule", "mutate", "example"), MUTATIONS,
                         ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(MUTATIONS)])
def test_each_edge_example_fails_once_its_rule_moves(loaded: Loaded, rule: str,
                                                     mutate: Callable[[Raw], None],
                                                     example: str) -> None:
    """A rule moved past the edge one of its examples states fails that example (the
    examples can fail: they are not true of any rule)."""
    raw = copy.deepcopy(load_rules_file(RULES_FILE))
    entry = next(r for r in raw["rule"] if r["name"] == rule)
    assert example in [ex["name"] for ex in entry["example"]]
    mutate(entry)
    # Only the moved rule's examples: the other rules are unchanged.
    others = {r["name"] for r in raw["rule"]} - {rule}
    for other in raw["rule"]:
        if other["name"] in others:
            other.pop("example", None)
    results = _run(loaded, _rules(loaded, raw))
    failed = {r.example.name for r in results if not r.ok}
    assert example in failed


def test_a_wrong_example_fails_check_with_the_rule_the_example_and_the_times(
        tmp_path: Path) -> None:
    """`sentinel check` on a wrong example: exit 1, naming the rule and the example, and the
    expected and actual events with their times, in Chinese and with --lang en."""
    config = copy_deployment(tmp_path)
    rules = config.parent / "rules.toml"
    text = rules.read_text(encoding="utf-8")
    wrong = text.replace('{ at = "70s", event = "raised", severity = "critical" }',
                         '{ at = "60s", event = "raised", severity = "critical" }')
    assert wrong != text
    rules.write_text(wrong, encoding="utf-8")

    zh = sentinel("check", "-c", str(config))
    assert zh.returncode == 1, zh.stdout + zh.stderr
    assert "规则示例: 1 个未通过" in zh.stdout
    assert ("规则 hydrant_pressure_low, 示例「below 0.14 warns at once, below 0.10 for 60 s "
            "is critical」") in zh.stdout
    # Times as a rule file writes them; ticks stop at the example's last time (1m here),
    # and a failed example is run on to show where the expected event did happen.
    assert "预期: 0s 新发生 警告; 1m 升级 严重" in zh.stdout
    assert "实际: 0s 新发生 警告\n" in zh.stdout
    assert "第 2 个事件不同: 预期 1m 升级 严重, 实际 (无)" in zh.stdout
    assert "在示例的最后时间之后: 1m10s 升级 严重" in zh.stdout
    assert "Traceback" not in zh.stderr

    en = sentinel("check", "-c", str(config), "--lang", "en")
    assert en.returncode == 1
    assert ('rule hydrant_pressure_low, example "below 0.14 warns at once, below 0.10 for '
            '60 s is critical"') in en.stdout
    assert "expected: 0s opened warning; 1m raised critical" in en.stdout
    assert "got:      0s opened warning\n" in en.stdout
    assert "after the example's last time: 1m10s raised critical" in en.stdout


def _one_rule(loaded: Loaded, example: dict[str, Any], rule: dict[str, Any] | None = None
              ) -> ExampleResult:
    rule = rule or {"name": "pressure_low", "kind": "hydrant_pressure", "type": "threshold",
                    "field": "pressure", "levels": [{"severity": "warning", "below": 0.14}]}
    results = _run(loaded, _rules(loaded, {"rule": [{**rule, "example": [example]}]}))
    assert len(results) == 1
    return results[0]


def test_expect_none_fails_when_the_rule_raises_something(loaded: Loaded) -> None:
    """expect_none fails on any event of the rule's incident, and shows what happened."""
    result = _one_rule(loaded, {"name": "quiet", "expect_none": True,
                                "readings": [{"at": "0s", "values": {"pressure": 0.13}}]})
    assert not result.ok
    lines = report([result], 0, "en")[1]
    assert "      expected: (nothing)" in lines
    assert "      got:      0s opened warning" in lines


def test_examples_may_name_an_inventory_device_with_its_settings(loaded: Loaded) -> None:
    """An inventory device id runs the example on that device (its tank height here)."""
    tank = next(d for d in loaded.inventory.values() if d.settings.tank_height_m)
    height = tank.settings.tank_height_m
    assert height is not None
    rule = {"name": "tank_low", "kind": "water_level", "type": "threshold", "field": "level",
            "relative_to": "tank_height_m", "levels": [{"severity": "warning", "below": 50}]}
    result = _one_rule(loaded, {
        "name": "half", "device": tank.id,
        "readings": [{"at": "0s", "values": {"level": height / 2}},
                     {"at": "1m", "values": {"level": height / 2 - 0.01}}],
        "expect": [{"at": "1m", "event": "opened", "severity": "warning"}]}, rule)
    assert result.ok, report([result], 0, "en")[1]


@pytest.mark.parametrize(("device", "values", "says"), [
    ("SB-NOPE-0001", {"pressure": 0.1}, "device SB-NOPE-0001 is not in the inventory"),
    ({"kind": "smoke"}, {"pressure": 0.1}, "device example is of kind smoke, which this rule"),
    ({}, {"presure": 0.1}, "presure is not a field of kind hydrant_pressure"),
    ({"settings": {"tank_height_m": -1}}, {"pressure": 0.1}, "settings are invalid"),
])
def test_an_example_that_cannot_run_says_why(loaded: Loaded, device: object,
                                             values: dict[str, float], says: str) -> None:
    """An unknown device, a kind the rule does not watch, a misspelt field (which would
    make expect_none pass by itself) or bad settings fail the example, with the reason."""
    result = _one_rule(loaded, {"name": "x", "device": device, "expect_none": True,
                                "readings": [{"at": "0s", "values": values}]})
    assert not result.ok
    assert says in "\n".join(report([result], 0, "en")[1])


@pytest.mark.parametrize(("example", "says"), [
    ({"name": "x", "readings": [{"at": "0s", "values": {"a": 1}}]}, "either expect"),
    ({"name": "x", "expect_none": True, "expect": [{"at": "0s", "event": "opened"}],
      "readings": [{"at": "0s", "values": {"a": 1}}]}, "either expect"),
    ({"name": "x", "expect_none": True}, "ticks_until for a silent device"),
    ({"name": "x", "expect_none": True, "readings": [{"at": "soon", "values": {"a": 1}}]},
     "invalid duration"),
    ({"name": "x", "expect": [{"at": "0s", "event": "exploded"}],
      "readings": [{"at": "0s", "values": {"a": 1}}]}, "'opened'"),
    ({"name": "x", "start": "monday", "expect_none": True,
      "readings": [{"at": "0s", "values": {"a": 1}}]}, "must be an ISO time"),
])
def test_a_malformed_example_is_a_configuration_error(example: dict[str, Any],
                                                      says: str) -> None:
    """Examples are validated with the rule file: the loader reports them like any key."""
    with pytest.raises(ValidationError) as info:
        RuleExample.model_validate(example)
    assert says in str(info.value)


def test_the_book_event_names_are_accepted_and_shortened() -> None:
    """`severity_raised` / `condition_cleared` as the incident log writes them are the
    same as `raised` / `cleared`."""
    ex = RuleExample.model_validate({
        "name": "x", "readings": [{"at": "0s", "values": {"a": 1}}],
        "expect": [{"at": "0s", "event": "severity_raised"},
                   {"at": "1s", "event": "condition_cleared"}]})
    assert [e.event for e in ex.expect] == ["raised", "cleared"]
