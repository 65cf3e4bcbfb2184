"""Load configuration, kinds, inventory and profiles together and cross-check them.

Part of the application layer (beside app and cli): it reads every stage's files, so it
imports the stages' models; no stage imports it.

`sentinel check` and the daemon's start-up both come through here, so the daemon never runs
on a configuration `check` would refuse.
"""

from __future__ import annotations

import operator
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sentinel import units, zone
from sentinel.config.inventory import (
    NUMBER_SETTINGS,
    SETTING_NAMES,
    Device,
    Inventory,
    collector_paused,
    load_inventory,
)
from sentinel.config.load import load_settings_lenient
from sentinel.config.model import Settings
from sentinel.config.profiles import ProfileSpec, load_profiles
from sentinel.config.yamlfile import parse_yaml
from sentinel.decode.checks import profile_problems
from sentinel.errors import ConfigError, Problem
from sentinel.escalation.model import OncallConfig, PolicyConfig, Role
from sentinel.i18n import configure_labels
from sentinel.incidents.windows import Vocabulary
from sentinel.kinds import BUILTIN_KINDS, KindRegistry, KindSpec, load_kind_file
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
    oncall: OncallConfig = field(default_factory=OncallConfig)
    policies: PolicyConfig = field(default_factory=PolicyConfig)
    # Findings that do not stop the daemon (coverage gaps); `check --strict` fails on them.
    warnings: list[Problem] = field(default_factory=list)


def _load_kinds(settings: Settings, problems: list[Problem]) -> KindRegistry:
    registry = KindRegistry(BUILTIN_KINDS)
    # Read every file first: a kind may extend one defined in a file read after it.
    found: list[tuple[Path, KindSpec]] = []
    for folder in settings.devices.kind_dirs:
        if not folder.is_dir():
            problems.append(Problem(str(folder), "", "kind folder not found"))
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix not in (".toml", ".yaml", ".yml"):
                continue
            try:
                found.append((path, load_kind_file(path)))
            except (OSError, ValueError) as exc:
                problems.append(Problem(str(path), "", str(exc)))
    files = {id(spec): path for path, spec in found}
    for refused in registry.add_all(spec for _, spec in found):
        problems.append(Problem(str(files[id(refused.spec)]), "", str(refused)))
    return registry


def check_profile(profile: ProfileSpec, kinds: KindRegistry, file: str) -> list[Problem]:
    """Problems of one profile against the known kinds (fields, units, paths)."""
    problems: list[Problem] = []
    # A profile serving a kind serves the kinds that extend it.
    served = list(kinds.expand(profile.kinds)) if profile.kinds else kinds.names()
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
    problems += [Problem(file, where, text) for where, text in profile_problems(profile, kinds)]
    return problems


def _device_problems(kind: str, profile_names: tuple[str, ...],
                     numbers: Mapping[str, float | None], kinds: KindRegistry,
                     profiles: Mapping[str, ProfileSpec]) -> list[str]:
    """What is wrong with a device of this kind and profiles whose number settings are
    these (any id, any place)."""
    if kind not in kinds:
        return [f"unknown kind {kind!r} (known: {', '.join(kinds.names())})"]
    return [text for name in profile_names
            for text in _profile_problems(kind, name, numbers, kinds, profiles)]


def _profile_problems(kind: str, profile_name: str, numbers: Mapping[str, float | None],
                      kinds: KindRegistry, profiles: Mapping[str, ProfileSpec]) -> list[str]:
    profile = profiles.get(profile_name)
    if profile is None:
        return [f"profile {profile_name!r} does not exist"]
    problems: list[str] = []
    if profile.kinds and not kinds.is_a(kind, profile.kinds):
        problems.append(f"profile {profile.name!r} does not serve kind {kind!r}")
    for name, mapping in profile.fields_for(kind).items():
        if name not in kinds[kind].fields:
            continue
        if mapping.from_distance and numbers["mount_height_m"] is None:
            problems.append(f"profile {profile.name!r} reads {name} as a distance: set "
                            "mount_height_m")
        setting = mapping.percent_of_setting
        if setting and numbers.get(setting) is None:
            problems.append(f"profile {profile.name!r} needs {setting}")
    return problems


# What the findings about a device depend on.
_FACTS = operator.attrgetter("kind", "profiles", *(f"settings.{n}" for n in NUMBER_SETTINGS))


def _check_inventory(inventory: Inventory, kinds: KindRegistry,
                     profiles: Mapping[str, ProfileSpec], files: str) -> list[Problem]:
    # Worked out once for each combination of the facts (a few dozen in a fleet of
    # thousands), then reported for every device.
    found: dict[tuple[Any, ...], list[str]] = {}
    for facts in set(map(_FACTS, inventory.values())):
        kind, profile, *numbers = facts
        found[facts] = _device_problems(kind, profile, dict(zip(NUMBER_SETTINGS, numbers,
                                                                strict=True)),
                                        kinds, profiles)
    if not any(found.values()):
        return []
    return [Problem(files, f"device {device.id}", text) for device in inventory.values()
            for text in found[_FACTS(device)]]


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
    setting_names = set(SETTING_NAMES)
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
            if not all(kinds.is_a(k, after.kinds) for k in rule.kinds):
                problems.append(Problem(where, entry, f"'after' rule {after.name} does not "
                                                      f"apply to every kind of this rule"))
    # Rules of a kind apply to the kinds that extend it.
    config = config.with_kinds(kinds.expand)
    # Overrides are applied per device; a bad `set` shows up here, not at 3 a.m.
    seen: set[str] = set()
    for device in _one_per_override_match(config, inventory):
        try:
            effective_rules(config, device)
        except ValidationError as exc:
            for loc, msg in short_errors(exc):
                text = f"override makes rule invalid: {loc}: {msg}"
                if text not in seen:
                    seen.add(text)
                    problems.append(Problem(where, f"device {device.id}", text))
    return config


def _one_per_override_match(config: RulesConfig, inventory: Inventory) -> Iterator[Device]:
    """The first device, in inventory order, of each group that overrides treat alike.

    Which overrides match a device depends only on the place keys they name and, for those
    naming devices or groups, on its id; its rules also on its kind. Every other device of
    a group gets the same rules, so checking one is enough. Without an override that sets
    something, no rule can become invalid: no device at all.
    """
    if not any(ov.set for ov in config.override):
        return
    places = [k for k in ("building", "compound", "grid")
              if any(getattr(ov.match, k) is not None for ov in config.override)]
    named = {ov.match.device for ov in config.override if ov.match.device is not None}
    for ov in config.override:
        if ov.match.group is not None:
            named.update(config.groups.get(ov.match.group, ()))
    kind_and_places = operator.attrgetter("kind", *places)
    done: set[tuple[object, str | None]] = set()
    for device in inventory.values():
        key = (kind_and_places(device), device.id if device.id in named else None)
        if key not in done:
            done.add(key)
            yield device


# Incidents sentinel raises about itself (besides those named by rules and correlations).
SYSTEM_INCIDENTS = ("spool_nearly_full", "notification_failed", "latency_budget_exceeded")


def _read_mapping(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix == ".toml" else parse_yaml(text)
    if not isinstance(data, dict):
        raise ValueError("expected a table of settings")
    return data


def load_escalation(settings: Settings, inventory: Inventory, rules: RulesConfig,
                     problems: list[Problem], warnings: list[Problem]
                     ) -> tuple[OncallConfig, PolicyConfig]:
    import apprise  # only here: its plugin registry takes a moment to build

    oncall, policies = OncallConfig(), PolicyConfig()
    files = ((settings.escalation.oncall, OncallConfig), (settings.escalation.policies,
                                                         PolicyConfig))
    loaded: list[Any] = []
    for path, model in files:
        try:
            loaded.append(model.model_validate(_read_mapping(path)))
        except FileNotFoundError:
            problems.append(Problem(str(path), "", "file not found"))
            loaded.append(model())
        except ValidationError as exc:
            problems += [Problem(str(path), loc, msg) for loc, msg in short_errors(exc)]
            loaded.append(model())
        except (OSError, ValueError, yaml.YAMLError) as exc:
            problems.append(Problem(str(path), "", f"cannot read: {exc}"))
            loaded.append(model())
    oncall, policies = loaded
    if "timezone" not in oncall.model_fields_set:
        # One setting holds the community's zone; the on-call file may still name its own.
        oncall = oncall.model_copy(update={"timezone": settings.timezone})
    where = str(settings.escalation.oncall)
    grids = set(map(operator.attrgetter("grid"), inventory.values()))
    compounds = set(map(operator.attrgetter("compound"), inventory.values()))
    for contact in oncall.contact:
        for index, url in enumerate(contact.channels):
            # The URL may hold a secret: name the contact and position, never the URL.
            if apprise.Apprise.instantiate(url) is None:
                scheme = url.split("://", 1)[0] if "://" in url else "?"
                problems.append(Problem(where, f"contact {contact.id}",
                                        f"channel {index + 1} ({scheme}://…) is not a valid "
                                        "apprise URL"))
        unknown = [d for d in contact.elders if d not in inventory]
        if unknown:
            problems.append(Problem(where, f"contact {contact.id}",
                                    f"elders: unknown device(s) {', '.join(unknown)}"))
    for roster in oncall.roster:
        entry = f"roster {roster.name or roster.role.value}"
        for grid in roster.grids:
            if grid not in grids:
                problems.append(Problem(where, entry, f"unknown grid {grid!r}"))
        for compound in roster.compounds:
            if compound not in compounds:
                problems.append(Problem(where, entry, f"unknown compound {compound!r}"))
    names = {r.incident_name for r in rules.rule} | {c.name for c in rules.correlation}
    names |= set(SYSTEM_INCIDENTS)
    pwhere = str(settings.escalation.policies)
    for policy in policies.policy:
        for name in policy.match.incidents:
            if name not in names:
                problems.append(Problem(pwhere, f"policy {policy.name}",
                                        f"no rule raises incident {name!r}"))
    vocabulary = _vocabulary(inventory, rules)
    for window in policies.maintenance_windows(oncall.timezone):
        for problem in vocabulary.problems(window):
            problems.append(Problem(pwhere, f"maintenance {window.name}", problem))
    roles_with_people = {c.role for c in oncall.contact}
    used = {r for p in policies.policy for s in p.step for r in s.notify}
    used |= {r for p in policies.policy for r in p.digest_to}
    for role in sorted(used - roles_with_people):
        warnings.append(Problem(where, f"role {role.value}", "no contact has this role"))
    if not problems:
        from sentinel.escalation.roster import coverage_gaps
        for gap in coverage_gaps(oncall, policies, inventory):
            if gap.role == Role.ELDER_CONTACT:
                continue
            warnings.append(Problem(where, f"{gap.role.value} {gap.area}",
                                    f"nobody on duty {gap.start} – {gap.end}"))
    return oncall, policies


def _vocabulary(inventory: Inventory, rules: RulesConfig) -> Vocabulary:
    names = {r.name for r in rules.rule} | {r.incident_name for r in rules.rule}
    names |= {c.name for c in rules.correlation} | set(SYSTEM_INCIDENTS)
    kinds = {d.kind for d in inventory.values()} | {k for r in rules.rule for k in r.kinds}
    return Vocabulary.of(inventory.values(), kinds, names)


def window_vocabulary(loaded: Loaded) -> Vocabulary:
    """What silences and drills may name: the loaded inventory's places, kinds and rules."""
    vocabulary = _vocabulary(loaded.inventory, loaded.rules)
    return replace(vocabulary, kinds=vocabulary.kinds | set(loaded.kinds.names()))


def _retention_warnings(settings: Settings, config_path: Path) -> list[Problem]:
    """Readings the embedded store would delete as soon as ingest accepts them."""
    store = settings.store
    max_age = settings.ingest.max_age
    if store.backend != "sqlite" or store.sqlite.retention_days * 86400 >= max_age:
        return []
    return [Problem(str(config_path), "store.sqlite.retention_days",
                    f"{store.sqlite.retention_days:g} days is shorter than [ingest] max_age "
                    f"({max_age / 86400:g} days): readings accepted as up to max_age old "
                    "are deleted by the next retention pass; raise retention_days or lower "
                    "max_age")]


def load_all(config_path: Path, environ: Mapping[str, str] | None = None) -> Loaded:
    """Load and cross-check everything; raise ConfigError listing every problem found."""
    with collector_paused():
        return _load_all(config_path, environ)


def _load_all(config_path: Path, environ: Mapping[str, str] | None) -> Loaded:
    environ = os.environ if environ is None else environ
    settings, problems = load_settings_lenient(config_path, environ)
    # Before anything reads local time (rules' daytime, on-call periods, messages).
    zone.configure(settings.timezone)
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
    warnings: list[Problem] = _retention_warnings(settings, config_path)
    oncall, policies = load_escalation(settings, inventory, rules, problems, warnings)
    policies = policies.with_kinds(kinds.expand)
    if problems:
        raise ConfigError(problems)
    labels, field_units = kinds.display()
    precisions = {name: spec.precision for kind in kinds.names()
                  for name, spec in kinds.compiled(kind).items() if spec.precision is not None}
    configure_labels({**labels, **{f"incident.{name}": label
                                   for name, label in rules.labels().items()}}, field_units,
                     precisions)
    return Loaded(settings, kinds, inventory, profiles, config_path, rules, oncall, policies,
                  warnings)
