"""Display names from configuration: kinds, fields and rules labelled in zh and en, shown in
notifications, the CLI's texts and the board's catalogue in the reader's language."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from sentinel import i18n
from sentinel.control import board
from sentinel.errors import ConfigError
from sentinel.i18n import Label, configure_labels, incident_title, kind_name
from sentinel.incidents.model import Incident
from sentinel.loading import load_all
from sentinel.notify.templates import render_digest, render_notice
from sentinel.rules.model import merge_rule_files
from sentinel.types import Severity

from helpers import SHIPPED_CONFIG, copy_deployment

T0 = 1_780_000_000.0
PLACE = {"community": "棠芳社区", "compound": "棠芳花园", "building": "3栋", "grid": "SB-G01",
         "location": "棠芳花园3栋化粪池", "kind": "septic_gas", "device": "TF-SPT-0001"}


@pytest.fixture(autouse=True)
def restore_labels() -> Iterator[None]:
    """Each test configures labels as it needs; the process's labels are put back after
    (other tests in this process read the shipped configuration's)."""
    saved = dict(i18n._CONFIGURED), dict(i18n._FIELD_UNITS)
    yield
    i18n._CONFIGURED.clear()
    i18n._CONFIGURED.update(saved[0])
    i18n._FIELD_UNITS.clear()
    i18n._FIELD_UNITS.update(saved[1])


def septic_h2s(**changes: object) -> Incident:
    inc = Incident(id="20260528-0001", key="septic_h2s:TF-SPT-0001", name="septic_h2s",
                   target="TF-SPT-0001", kind="septic_gas", severity=Severity.CRITICAL,
                   opened_at=T0, place=dict(PLACE), device_id="TF-SPT-0001",
                   life_safety=True, resolve_mode="manual", value=15.2,
                   detail={"field": "h2s_ppm", "op": "≥", "limit": 14.0})
    return dataclasses.replace(inc, **changes)  # type: ignore[arg-type]


def test_a_label_may_give_one_language_and_the_other_stands_in() -> None:
    """zh only shows zh to English readers too (better than an identifier); none is refused."""
    assert Label(zh="化粪池").texts() == {"zh": "化粪池", "en": "化粪池"}
    assert Label(en="septic").text("zh") == "septic"
    with pytest.raises(ValidationError, match="a label needs zh and/or en"):
        Label()
    with pytest.raises(ValidationError):
        Label(zh="")


def test_configured_names_win_then_the_catalogue_then_the_name() -> None:
    """A configured label replaces the catalogue's text; without one the catalogue
    speaks; without either, the bare name."""
    configure_labels({"kind.smoke": Label(zh="独立烟感", en="smoke alarm unit"),
                      "incident.septic_h2s": Label(zh="硫化氢超标", en="H2S high")})
    assert kind_name("smoke", "zh") == "独立烟感"
    assert kind_name("gas", "en") == "gas"
    assert kind_name("lane_camera", "en") == "lane_camera"
    assert incident_title("septic_h2s", "en") == "H2S high"
    assert incident_title("smoke_alarm", "zh") == "烟感报警"
    assert incident_title("lane_blocked", "zh") == "lane blocked"
    configure_labels({})  # a later load without them: the catalogue again
    assert kind_name("smoke", "zh") == "烟感"


def test_the_shipped_kinds_and_rules_are_named_in_both_languages() -> None:
    """Loading the shipped configuration names the seed kinds, their fields and rules."""
    load_all(SHIPPED_CONFIG, {})
    assert kind_name("septic_gas", "zh") == "化粪池气体监测"
    assert kind_name("fire_lane", "en") == "fire-lane occupancy sensor"
    assert kind_name("help_button", "zh") == "一键呼救按钮"
    assert incident_title("fire_lane_blocked", "zh") == "消防通道被占用"
    assert incident_title("help_pressed", "en") == "help button pressed"
    assert incident_title("septic_nh3", "zh") == "化粪池氨气超标"
    assert i18n.field_label("h2s_ppm", "en") == "H2S"
    assert i18n.field_unit("h2s_ppm") == "ppm"


def test_notifications_show_labels_and_field_names_in_the_readers_language() -> None:
    """A septic H2S notice: the rule's label in the title, the field's label and unit in
    the reading line, in Chinese and in English."""
    load_all(SHIPPED_CONFIG, {})
    zh = render_notice("alert", septic_h2s(), "zh", now=T0 + 30)
    assert zh.title == "【严重】化粪池硫化氢超标 · 棠芳花园3栋"
    assert "事件: 化粪池硫化氢超标 (严重)" in zh.body
    assert "读数: 硫化氢浓度 15.2 ppm (阈值 ≥ 14 ppm)" in zh.body
    en = render_notice("alert", septic_h2s(), "en", now=T0 + 30)
    assert en.title == "[CRITICAL] septic tank H2S · 棠芳花园 3栋"
    assert "Reading: H2S 15.2 ppm (threshold ≥ 14 ppm)" in en.body


def test_flags_of_the_seed_kinds_read_as_words() -> None:
    """A blocked fire lane and a pressed help button read as sentences, not "x: yes"."""
    load_all(SHIPPED_CONFIG, {})
    lane = Incident(id="20260528-0002", key="fire_lane_blocked:TF-FL-0001",
                    name="fire_lane_blocked", target="TF-FL-0001", kind="fire_lane",
                    severity=Severity.WARNING, opened_at=T0, place=dict(PLACE),
                    device_id="TF-FL-0001", value=True,
                    detail={"field": "occupied", "held_for": 300.0})
    body = render_notice("alert", lane, "zh", now=T0 + 30).body
    assert "读数: 消防通道被占用" in body
    assert "fire lane blocked" in render_notice("alert", lane, "en", now=T0 + 30).title


def test_the_digest_counts_by_label() -> None:
    """The daily digest names incident types by their labels."""
    configure_labels({"incident.device_fault": Label(zh="探测器故障", en="detector fault")})
    inc = septic_h2s(name="device_fault", severity=Severity.MAINTENANCE, value=True,
                     detail={"field": "fault"})
    digest = render_digest([inc], "en", day=date(2026, 5, 29),
                           area="棠芳花园")
    assert "detector fault 1" in digest.body


def test_the_board_catalogue_carries_configured_names() -> None:
    """The board's script reads kind and incident names from the catalogue it is given:
    the configured ones are in it, in each language."""
    load_all(SHIPPED_CONFIG, {})
    zh, en = board._catalog("zh"), board._catalog("en")
    assert zh["kind.septic_gas"] == "化粪池气体监测"
    assert en["incident.fire_lane_blocked"] == "fire lane blocked"
    assert zh["kind.smoke"] == "烟感"


def test_rules_of_one_incident_must_not_label_it_differently() -> None:
    """Two rules feeding one incident with two labels are refused (the title would
    depend on which fired first); the same label twice is fine."""
    def rule(name: str, label: dict[str, str]) -> dict[str, object]:
        return {"name": name, "kind": "gas", "type": "state", "field": "alarm",
                "severity": "critical", "incident": "leak", "label": label}

    with pytest.raises(ValidationError, match="give incident 'leak' different labels"):
        merge_rule_files([{"rule": [rule("a", {"zh": "泄漏"}), rule("b", {"zh": "漏气"})]}])
    config = merge_rule_files([{"rule": [rule("a", {"zh": "泄漏"}), rule("b", {"zh": "泄漏"})]}])
    assert config.labels() == {"leak": Label(zh="泄漏")}


def test_check_refuses_a_bad_label_naming_the_rule(tmp_path: Path) -> None:
    """A label with an unknown language key is a configuration error, with its rule."""
    config = copy_deployment(tmp_path)
    rules = config.parent / "rules.toml"
    rules.write_text(rules.read_text(encoding="utf-8").replace(
        'label = { zh = "消防通道被占用", en = "fire lane blocked" }',
        'label = { zh = "消防通道被占用", fr = "voie bloquée" }'), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_all(config, {})
    assert "label.fr" in str(info.value)
