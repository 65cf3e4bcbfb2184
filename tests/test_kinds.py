"""Kinds: built-in fields and precision, kind files, and kinds that extend others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sentinel.config.inventory import Device
from sentinel.errors import ConfigError
from sentinel.escalation.model import PolicyConfig
from sentinel.kinds import (
    BUILTIN_KINDS,
    FieldSpec,
    KindRegistry,
    KindSpec,
    load_kind_file,
)
from sentinel.loading import load_all
from sentinel.rules.engine import RuleEngine
from sentinel.rules.model import load_rules_file, merge_rule_files
from sentinel.types import Reading, Severity

from helpers import SHIPPED_CONFIG, copy_deployment

T0 = 1_780_000_000.0


def kind(name: str, extends: str | None = None, **fields: dict[str, Any]) -> KindSpec:
    return KindSpec.model_validate({"name": name, "extends": extends, "fields": fields})


def registry(*kinds: KindSpec) -> tuple[KindRegistry, list[str]]:
    """The built-in kinds plus `kinds` (in the order given), and the reasons any were
    refused."""
    reg = KindRegistry(BUILTIN_KINDS)
    return reg, [str(e) for e in reg.add_all(kinds)]


# -- built-in kinds ------------------------------------------------------------------------

def test_every_builtin_kind_has_the_battery_low_signal() -> None:
    """battery_low (GB 20517's low-battery signal) is a bool of every built-in kind, beside
    the percentage."""
    for spec in BUILTIN_KINDS:
        assert spec.fields["battery_low"].type == "bool", spec.name
        assert spec.fields["battery"].unit == "%", spec.name
    assert BUILTIN_KINDS[0].fields["fault"].type == "bool"  # smoke keeps fault


def test_builtin_numeric_fields_carry_their_precision() -> None:
    """Each built-in number field says how many decimals a stored value keeps, and the
    compiled field (what the decoder reads) carries it."""
    reg = KindRegistry(BUILTIN_KINDS)
    expected = {("hydrant_pressure", "pressure"): 4, ("water_level", "level"): 3,
                ("water_level", "level_percent"): 1, ("gas", "concentration_lel"): 1,
                ("gas", "concentration_ppm"): 1, ("hydrant_pressure", "battery_voltage"): 3,
                ("smoke", "temperature"): 1, ("elderly_watch", "latitude"): 6,
                ("elderly_watch", "heart_rate"): 0, ("smoke", "battery"): 1}
    for (name, field), decimals in expected.items():
        assert reg[name].fields[field].precision == decimals, (name, field)
        assert reg.compiled(name)[field].precision == decimals, (name, field)
    for spec in BUILTIN_KINDS:
        for field, fs in spec.fields.items():
            assert (fs.precision is not None) == (fs.type == "number"), (spec.name, field)


def test_precision_is_for_number_fields_only() -> None:
    """A precision on a bool or integer field is refused: there is nothing to round."""
    with pytest.raises(ValueError, match="precision applies to number fields"):
        FieldSpec(type="bool", precision=1)
    with pytest.raises(ValueError, match="precision applies to number fields"):
        FieldSpec(type="integer", precision=0)
    assert FieldSpec(type="number", unit="ppm", precision=2).precision == 2


def test_builtin_kinds_carry_zh_and_en_labels() -> None:
    """Built-in kinds carry their display names (from the one catalogue)."""
    labels = {spec.name: spec.label for spec in BUILTIN_KINDS}
    assert labels["smoke"] is not None and labels["smoke"].texts() == {"zh": "烟感",
                                                                       "en": "smoke"}
    assert all(label is not None for label in labels.values())


# -- extends -------------------------------------------------------------------------------

SEPTIC = {"h2s_ppm": {"type": "number", "unit": "ppm", "min": 0, "precision": 1}}


def test_a_kind_extending_a_builtin_has_its_fields_and_its_lineage() -> None:
    """`extends = "gas"`: every gas field plus its own; lineage is itself then gas."""
    reg, refused = registry(kind("septic", "gas", **SEPTIC))
    assert refused == []
    assert set(reg["gas"].fields) < set(reg["septic"].fields)
    assert reg["septic"].fields["h2s_ppm"].unit == "ppm"
    assert reg.compiled("septic")["concentration_lel"].hi == 100
    assert reg.lineage("septic") == ("septic", "gas")
    assert reg.lineage("gas") == ("gas",)
    assert reg.lineage("no_such_kind") == ("no_such_kind",)
    assert reg.is_a("septic", ["gas"]) and not reg.is_a("gas", ["septic"])


def test_chains_resolve_whatever_order_the_files_come_in() -> None:
    """A kind may extend a kind of a file read after it; chains are allowed and the
    lineage lists every base, nearest first."""
    reg, refused = registry(
        kind("tank_b", "tank_a", b={"type": "bool"}),
        kind("tank_a", "septic", a={"type": "bool"}),
        kind("septic", "gas", **SEPTIC))
    assert refused == []
    assert reg.lineage("tank_b") == ("tank_b", "tank_a", "septic", "gas")
    assert {"a", "b", "h2s_ppm", "concentration_lel"} <= set(reg["tank_b"].fields)
    assert reg.expand(["gas"]) == ("gas", "septic", "tank_a", "tank_b")
    assert reg.expand(["tank_a", "smoke"]) == ("tank_a", "smoke", "tank_b")


def test_a_cycle_of_extends_is_refused_naming_the_loop() -> None:
    """a → b → a can never be resolved: both are refused, the message shows the loop."""
    reg, refused = registry(kind("a", "b", x={"type": "bool"}),
                            kind("b", "a", y={"type": "bool"}))
    assert len(refused) == 2
    assert "extends forms a cycle (a → b → a)" in refused[0]
    assert "a" not in reg and "b" not in reg
    with pytest.raises(ValueError, match="cannot extend itself"):
        kind("c", "c", x={"type": "bool"})


def test_an_unknown_base_is_refused_and_so_are_kinds_built_on_it() -> None:
    """A base that is not defined (a typo) refuses the kind and anything extending it."""
    reg, refused = registry(kind("septic", "gass", **SEPTIC),
                            kind("deeper", "septic", z={"type": "bool"}))
    assert any("'septic' extends 'gass', which is not defined" in r for r in refused)
    assert any("'deeper' extends 'septic', which is not defined (or was refused)" in r
               for r in refused)
    assert "septic" not in reg and "deeper" not in reg


def test_a_field_clash_with_the_base_is_refused() -> None:
    """A field of the base restated with another type or unit is refused (the base's
    rules would read it wrongly); the same type and unit may narrow the range."""
    _, refused = registry(kind("bad", "gas", concentration_lel={"type": "bool"}))
    assert refused == ["kind 'bad': field 'concentration_lel' is bool here but number in "
                       "%LEL in 'gas', which it extends"]
    _, refused = registry(kind("bad2", "gas",
                               concentration_lel={"type": "number", "unit": "ppm"}))
    assert "number in ppm here but number in %LEL" in refused[0]
    reg, refused = registry(kind("narrow", "gas", concentration_lel={
        "type": "number", "unit": "%LEL", "min": 0, "max": 50}))
    assert refused == [] and reg.compiled("narrow")["concentration_lel"].hi == 50


def test_a_kind_named_like_another_is_refused() -> None:
    """A kind file may not redefine a built-in (extend it instead)."""
    _, refused = registry(kind("gas", None, x={"type": "bool"}))
    assert refused == ["kind 'gas' is defined twice"]


def test_kind_file_with_extends_takes_its_fields_from_the_base(tmp_path: Path) -> None:
    """A file that extends gets the base's fields only (common fields are the base's
    business); include_common_fields beside extends is refused as meaningless."""
    path = tmp_path / "septic.yaml"
    path.write_text("name: septic\nextends: gas\nfields:\n  h2s_ppm: {type: number, "
                    "unit: ppm}\n", encoding="utf-8")
    spec = load_kind_file(path)
    assert set(spec.fields) == {"h2s_ppm"} and spec.extends == "gas"
    path.write_text("name: septic\nextends: gas\ninclude_common_fields: true\n",
                    encoding="utf-8")
    with pytest.raises(ValueError, match="include_common_fields does not go with extends"):
        load_kind_file(path)
    path.write_text("name: lonely\n", encoding="utf-8")
    with pytest.raises(ValueError, match="a kind needs fields"):
        load_kind_file(path)


def test_rules_of_the_base_apply_to_the_kind_that_extends_it() -> None:
    """The shipped gas rules watch a septic_gas device (CH4 %LEL) once the rules are
    widened by the registry, and the septic rules watch its H2S; gas devices are not
    watched by septic rules."""
    loaded = load_all(SHIPPED_CONFIG, {})
    config = merge_rule_files([load_rules_file(SHIPPED_CONFIG.parent / "rules.toml")])
    config = config.with_kinds(loaded.kinds.expand)
    devices = {d.id: d for d in (
        Device(id="S1", kind="septic_gas", community="c", compound="A", grid="G1",
               profile="sentinel-json"),
        Device(id="G1", kind="gas", community="c", compound="A", grid="G1",
               profile="sentinel-json"))}
    eng = RuleEngine(config, devices, T0, 0)
    assert {"gas_alarm", "gas_lel", "septic_h2s", "septic_nh3", "device_fault",
            "detector_offline", "battery_low_signal"} <= {r.name for r in eng.rules_for("S1")}
    assert "septic_h2s" not in {r.name for r in eng.rules_for("G1")}
    signals = eng.on_readings([Reading("S1", "septic_gas", T0, T0,
                                       {"concentration_lel": 26.0, "h2s_ppm": 15.0})])
    assert sorted((s.rule, s.incident, s.severity) for s in signals) == [
        ("gas_lel", "gas_leak", Severity.CRITICAL),
        ("septic_h2s", "septic_h2s", Severity.CRITICAL)]
    # Unwidened, the base's rules would not see the device: this is what loading adds.
    plain = RuleEngine(merge_rule_files([load_rules_file(SHIPPED_CONFIG.parent /
                                                         "rules.toml")]), devices, T0, 0)
    assert "gas_lel" not in {r.name for r in plain.rules_for("S1")}


def test_the_shipped_configuration_loads_the_seed_kinds() -> None:
    """config/sentinel.toml's kind_dirs brings fire_lane, septic_gas (a gas) and
    help_button; rules and policies naming gas name septic_gas too after loading."""
    loaded = load_all(SHIPPED_CONFIG, {})
    assert {"fire_lane", "septic_gas", "help_button"} <= set(loaded.kinds.names())
    assert loaded.kinds.lineage("septic_gas") == ("septic_gas", "gas")
    assert {"h2s_ppm", "nh3_ppm", "concentration_lel"} <= set(loaded.kinds["septic_gas"].fields)
    rules = {r.name: r for r in loaded.rules.rule}
    assert rules["gas_lel"].kinds == ("gas", "septic_gas")
    assert "septic_gas" in rules["detector_offline"].kinds
    toxic = next(p for p in loaded.policies.policy if p.name == "toxic_gas")
    assert toxic.match.kinds == ("gas", "septic_gas")


def test_escalation_policy_kinds_name_the_kinds_that_extend_them() -> None:
    """A policy matching kinds = ["gas"] takes an incident of a septic_gas device once
    widened; before, it would not."""
    reg, _ = registry(kind("septic", "gas", **SEPTIC))
    policies = PolicyConfig.model_validate({"policy": [
        {"name": "gas", "match": {"kinds": ["gas"]},
         "step": [{"after": 0, "notify": ["grid_worker"]}]}]})
    assert policies.select("x", "septic", Severity.CRITICAL, True, {}) is None
    widened = policies.with_kinds(reg.expand)
    chosen = widened.select("x", "septic", Severity.CRITICAL, True, {})
    assert chosen is not None and chosen.name == "gas"
    assert widened.select("x", "smoke", Severity.CRITICAL, True, {}) is None


def write_kind(config: Path, name: str, text: str) -> None:
    (config.parent.parent / "devices" / "kinds" / name).write_text(text, encoding="utf-8")


def add_device(config: Path, row: str) -> None:
    with (config.parent.parent / "devices" / "shuibei.csv").open("a", encoding="utf-8") as fh:
        fh.write(row + "\n")


def test_a_profile_serving_the_base_serves_the_kind_that_extends_it(tmp_path: Path) -> None:
    """A profile with kinds = [gas] may name septic_gas fields and serve septic_gas
    devices; one with kinds = [smoke] is refused for them."""
    config = copy_deployment(tmp_path)
    profiles = tmp_path / "devices" / "profiles"
    (profiles / "septic-vendor.yaml").write_text(
        "name: septic-vendor\nkinds: [gas]\nmatch: ['septic/+']\n"
        "device_id: {topic_segment: 1}\nfields:\n  concentration_lel: {path: ch4}\n"
        "  h2s_ppm: {path: h2s}\n", encoding="utf-8")
    add_device(config, "TF-SPT-0001,septic_gas,水贝社区,水贝花园,1栋,,,SB-G01,化粪池,"
                       "septic-vendor,,,")
    loaded = load_all(config, {})
    assert loaded.inventory["TF-SPT-0001"].kind == "septic_gas"
    add_device(config, "TF-SPT-0002,septic_gas,水贝社区,水贝花园,1栋,,,SB-G01,化粪池,"
                       "esphome,,,")
    with pytest.raises(ConfigError) as info:
        load_all(config, {})
    assert "profile 'esphome' does not serve kind 'septic_gas'" in str(info.value)


def test_check_reports_kind_file_problems_by_file(tmp_path: Path) -> None:
    """A cycle and a clash in kind files are reported by check with the file's path."""
    config = copy_deployment(tmp_path)
    write_kind(config, "loop_a.yaml", "name: loop_a\nextends: loop_b\nfields:\n"
                                      "  x: {type: bool}\n")
    write_kind(config, "loop_b.toml", 'name = "loop_b"\nextends = "loop_a"\n')
    write_kind(config, "clash.yaml", "name: clash\nextends: septic_gas\nfields:\n"
                                     "  h2s_ppm: {type: integer}\n")
    with pytest.raises(ConfigError) as info:
        load_all(config, {})
    text = str(info.value)
    assert "loop_a.yaml" in text and "loop_b.toml" in text and "cycle" in text
    assert "clash.yaml" in text and "field 'h2s_ppm' is integer here" in text
