"""One setting holds the community's time zone; values are shown at their field's precision."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sentinel import zone
from sentinel.errors import ConfigError
from sentinel.i18n import value_text
from sentinel.loading import load_all

from helpers import SHIPPED_CONFIG


@pytest.fixture
def restored_zone() -> Iterator[None]:
    """The zone is process-wide: put the default back for the tests that follow."""
    yield
    zone.configure(zone.DEFAULT)


def test_the_timezone_setting_reaches_oncall_rules_and_every_time_shown(
        restored_zone: None) -> None:
    """`timezone` alone moves the on-call file's zone, daytime rules and formatted times."""
    loaded = load_all(SHIPPED_CONFIG, {"SENTINEL_TIMEZONE": "Europe/Berlin"})
    assert loaded.settings.timezone == "Europe/Berlin"
    assert zone.current().key == "Europe/Berlin"
    assert loaded.oncall.timezone == "Europe/Berlin"
    inactivity = next(r for r in loaded.rules.rule if r.type == "inactivity")
    assert inactivity.timezone is None  # follows the setting (see rules/engine.py)
    assert zone.stamp(0) == "1970-01-01 01:00:00"
    load_all(SHIPPED_CONFIG, {})
    assert zone.current().key == "Asia/Shanghai" and zone.clock(0) == "08:00:00"


def test_an_unknown_timezone_is_a_configuration_problem(restored_zone: None) -> None:
    """A zone name that is not IANA's is refused at load, naming the key."""
    with pytest.raises(ConfigError) as caught:
        load_all(SHIPPED_CONFIG, {"SENTINEL_TIMEZONE": "Beijing"})
    assert any("timezone" in str(p) for p in caught.value.problems)


def test_values_are_shown_at_their_fields_precision() -> None:
    """Float noise and digits past a field's precision never reach a person."""
    load_all(SHIPPED_CONFIG, {})
    assert value_text("pressure", 0.35000000000000003) == "0.35"   # MPa: 4 decimals
    assert value_text("pressure", 0.123456) == "0.1235"
    assert value_text("level", 2.2500000001) == "2.25"               # m: 3 decimals
    assert value_text("heart_rate", 72.4) == "72"                    # bpm: whole beats
    assert value_text("battery", 60.44) == "60.4"                    # %: 1 decimal
    assert value_text("alarm", True, "zh") == "是" and value_text("alarm", False, "en") == "no"
    assert value_text("steps", 1200) == "1200"
