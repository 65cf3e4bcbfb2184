"""Load configuration, kinds, inventory and profiles together and cross-check them.

`sentinel check` and the daemon's start-up both come through here, so the daemon never runs
on a configuration `check` would refuse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sentinel import units
from sentinel.config.inventory import DeviceSettings, Inventory, load_inventory
from sentinel.config.load import load_settings_lenient
from sentinel.config.model import Settings
from sentinel.config.profiles import ProfileSpec, load_profiles
from sentinel.decode.paths import PathError, parse_path
from sentinel.errors import ConfigError, Problem
from sentinel.kinds import BUILTIN_KINDS, KindRegistry, load_kind_file
from sentinel.rules.engine import effective_rules
from sentinel.rules.model import (
    RulesConfig,
    StillRule,
    load_rules_file,
    merge_rule_files,
    short_errors,
)


@dataclass(frozen=True)
class Loaded:
    """Everything the daemon needs that comes from files, validated together."""

    settings: Settings
    kinds: KindRegistry
    inventory: Inventory
    profiles: dict[str, ProfileSpec]
    config_path: Path
    rules: RulesConfig = field(default_factory=RulesConfig)


def _load_kinds(settings: Settings, problems: list[Problem]) -> KindRegistry:
    registry = KindRegistry(BUILTIN_KINDS)
    for folder in settings.devices.kind_dirs:
        if not folder.is_dir():
            problems.append(Problem(str(folder), "", "kind folder not found"))
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix not in (".toml", ".yaml", ".yml"):
                continue
            try:
                registry.add(load_kind_file(path))
            except (OSError, ValueError) as exc:
                problems.append(Problem(str(path), "", str(exc)))
    return registry


def check_profile(profile: ProfileSpec, kinds: KindRegistry, file: str) -> list[Problem]:
    """Problems of one profile against the known kinds (fields, units, paths)."""
    problems: list[Problem] = []
    served = list(profile.kinds) or kinds.names()
    for kind in profile.kinds:
        if kind not in kinds:
            problems.append(Problem(file, "kinds", f"unknown kind {kind!r}"))
    for kind in profile.by_kind:
        if kind not in kinds:
            problems.append(Problem(file, f"by_kind.{kind}", f"unknown kind {kind!r}"))
    for where, mapping in profile.all_mappings():
        name = where.rsplit(".", 1)[1]
        kinds_here = [where.split(".")[1]] if where.startswith("by_kind.") else served
        specs = [kinds[k].fields[name] for k in kinds_here
                 if k in kinds and name in kinds[k].fields]
        if not specs:
            problems.append(Problem(file, where, f"{name!r} is not a field of "
                                                 f"{', '.join(kinds_here)}"))
            continue
        if mapping.path is not None:
            try:
                parse_path(mapping.path)
            except PathError as exc:
                problems.append(Problem(file, f"{where}.path", str(exc)))
        if mapping.unit is not None:
            target = "m" if mapping.percent_of_setting else specs[0].unit
            try:
                if target is None:
                    units.dimension_of(mapping.unit)
                else:
                    units.factor(mapping.unit, target)
            except units.UnitError as exc:
                problems.append(Problem(file, f"{where}.unit", str(exc)))
        if (mapping.from_distance or mapping.percent_of_setting) and specs[0].type != "number":
            problems.append(Problem(file, where, "from_distance/percent_of_setting need a "
                                                 "numeric field"))
    for path in filter(None, [profile.device_id.path,
                              profile.timestamp.path if profile.timestamp else None]):
        try:
            parse_path(path)
        except PathError as exc:
            problems.append(Problem(file, "device_id/timestamp path", str(exc)))
    return problems


def _check_inventory(inventory: Inventory, kinds: KindRegistry,
                     profiles: Mapping[str, ProfileSpec], files: str) -> list[Problem]:
    problems: list[Problem] = []
    for device in inventory.values():
        entry = f"device {device.id}"
        if device.kind not in kinds:
            problems.append(Problem(files, entry, f"unknown kind {device.kind!r} "
                                                  f"(known: {', '.join(kinds.names())})"))
            continue
        profile = profiles.get(device.profile)
        if profile is None:
            problems.append(Problem(files, entry, f"profile {device.profile!r} does not exist"))
            continue
        if profile.kinds and device.kind not in profile.kinds:
            problems.append(Problem(files, entry, f"profile {profile.name!r} does not serve "
                                                  f"kind {device.kind!r}"))
        for name, mapping in profile.fields_for(device.kind).items():
            if name not in kinds[device.kind].fields:
                continue
            if mapping.from_distance and device.settings.mount_height_m is None:
                problems.append(Problem(files, entry, f"profile {profile.name!r} reads {name} as "
                                                      "a distance: set mount_height_m"))
            setting = mapping.percent_of_setting
            if setting and device.settings.number(setting) is None:
                problems.append(Problem(files, entry, f"profile {profile.name!r} needs {setting}"))
    return problems


def _load_rules(settings: Settings, kinds: KindRegistry, inventory: Inventory,
                problems: list[Problem]) -> RulesConfig:
    files = settings.rules.files
    where = ", ".join(str(f) for f in files)
    parts: list[Mapping[str, Any]] = []
    for path in files:
        try:
            parts.append(load_rules_file(path))
        except FileNotFoundError:
            problems.append(Problem(str(path), "", "rules file not found"))
        except (OSError, ValueError) as exc:
            problems.append(Problem(str(path), "", str(exc)))
    try:
        config = merge_rule_files(parts)
    except ValidationError as exc:
        problems += [Problem(where, loc, msg) for loc, msg in short_errors(exc)]
        return RulesConfig()
    setting_names = set(DeviceSettings.model_fields)
    for rule in config.rule:
        entry = f"rule {rule.name}"
        names = [getattr(rule, a) for a in ("field", "cancel_field", "steps_field",
                                             "motion_field") if getattr(rule, a, None)]
        for kind in rule.kinds:
            if kind not in kinds:
                problems.append(Problem(where, entry, f"unknown kind {kind!r}"))
                continue
            problems += [Problem(where, entry, f"{n!r} is not a field of kind {kind}")
                         for n in names if n not in kinds[kind].fields]
        relative = getattr(rule, "relative_to", None)
        if relative is not None and relative not in setting_names:
            problems.append(Problem(where, entry, f"relative_to: {relative!r} is not a device "
                                                  "setting"))
        if isinstance(rule, StillRule):
            after = next(r for r in config.rule if r.name == rule.after)
            if not set(rule.kinds) <= set(after.kinds):
                problems.append(Problem(where, entry, f"'after' rule {after.name} does not "
                                                      f"apply to every kind of this rule"))
    # Overrides are applied per device; a bad `set` shows up here, not at 3 a.m.
    seen: set[str] = set()
    for device in inventory.values():
        try:
            effective_rules(config, device)
        except ValidationError as exc:
            for loc, msg in short_errors(exc):
                text = f"override makes rule invalid: {loc}: {msg}"
                if text not in seen:
                    seen.add(text)
                    problems.append(Problem(where, f"device {device.id}", text))
    return config


def load_all(config_path: Path, environ: Mapping[str, str] | None = None) -> Loaded:
    """Load and cross-check everything; raise ConfigError listing every problem found."""
    environ = os.environ if environ is None else environ
    settings, problems = load_settings_lenient(config_path, environ)
    kinds = _load_kinds(settings, problems)
    profiles, profile_problems = load_profiles(settings.devices.profile_dirs)
    problems += profile_problems
    for profile in profiles.values():
        problems += check_profile(profile, kinds, profile.name)
    inventory, inventory_problems = load_inventory(settings.devices.inventory)
    problems += inventory_problems
    files = ", ".join(str(p) for p in settings.devices.inventory)
    problems += _check_inventory(inventory, kinds, profiles, files)
    if not inventory and not inventory_problems:
        problems.append(Problem(files, "", "the inventory lists no device"))
    rules = _load_rules(settings, kinds, inventory, problems)
    if problems:
        raise ConfigError(problems)
    return Loaded(settings, kinds, inventory, profiles, config_path, rules)
