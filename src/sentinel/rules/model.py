"""Rule definitions: what turns readings (and silence) into conditions, as validated data.

Rules live in config (`config/rules.toml` for the shipped defaults). A rule applies to the
devices of its kind; overrides change a rule's settings for a device, building, compound,
grid or named group, so a tank with its own marks or a resident with a different daily
rhythm needs no new rule.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sentinel.i18n import Label
from sentinel.types import Severity, Value

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*"
                       r"(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


def parse_duration(value: object) -> float:
    """Seconds from a number or text such as "90s", "2m", "1h30m", "1d"."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like '2m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and any(match.groups()):
            d, h, m, s = (float(g) if g else 0.0 for g in match.groups())
            return d * 86400 + h * 3600 + m * 60 + s
    raise ValueError(f"invalid duration {value!r} (use seconds or text like '90s', '2m', '1h')")


def _severity(value: object) -> Severity:
    if isinstance(value, Severity):
        return value
    if isinstance(value, str):
        return Severity.parse(value)
    raise ValueError("severity is one of: maintenance, info, warning, critical, emergency")


Duration = Annotated[float, BeforeValidator(parse_duration)]
SeverityField = Annotated[Severity, BeforeValidator(_severity)]
ResolveMode = Literal["auto", "manual"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- examples: readings a rule is run on by `sentinel check` (sentinel.rules.examples) ------

# The incident events an example may expect, by the short names people write in a rule
# file (the incident book's own names are accepted too and shortened on loading).
ExampleEventName = Literal["opened", "raised", "cleared", "returned", "resolved", "repeated",
                           "cancel_refused", "flapping", "flapping_ended", "grouped",
                           "attached"]
EVENT_SHORT_NAMES: dict[str, str] = {"severity_raised": "raised",
                                     "condition_cleared": "cleared",
                                     "condition_returned": "returned"}


class ExampleDevice(_Model):
    """A device made up for an example (or name an inventory device by its id instead)."""

    id: str = "example"
    # None: the rule's first kind.
    kind: str | None = None
    community: str = "example"
    compound: str = "example"
    building: str = ""
    grid: str = "example"
    # Device settings, as in the inventory (tank_height_m, report_interval_s...).
    settings: dict[str, float | str] = Field(default_factory=dict)


class ExampleReading(_Model):
    """One reading of the example's device, `at` after the example's start."""

    at: Duration
    values: dict[str, Value] = Field(min_length=1)


class ExpectedEvent(_Model):
    """An incident event the example must produce; unset fields are not compared."""

    at: Duration
    event: ExampleEventName
    severity: SeverityField | None = None
    # The rule behind it (an incident fed by several rules: fall, then fall_still).
    rule: str | None = None
    # For `resolved`: how it ended (cleared, cancelled, expired, with_group).
    outcome: Literal["cleared", "cancelled", "expired", "with_group"] | None = None

    @field_validator("event", mode="before")
    @classmethod
    def _short(cls, value: object) -> object:
        return EVENT_SHORT_NAMES.get(value, value) if isinstance(value, str) else value


class RuleExample(_Model):
    """Readings with relative times and the incident events they must (not) produce."""

    name: str = Field(min_length=1)
    # An inventory device id, or a device made up for the example.
    device: str | ExampleDevice = Field(default_factory=ExampleDevice)
    # The local time of "0s" (ISO, the community's zone); a fixed Monday morning by default
    # so that daytime rules and incident numbers do not depend on when check runs.
    start: str = "2026-01-05T10:00:00"
    readings: tuple[ExampleReading, ...] = ()
    # Ticks (every second) run until the last reading or expected event, or until this.
    ticks_until: Duration | None = None
    # Exactly these events of the rule's incident, in order (nothing else may happen).
    expect: tuple[ExpectedEvent, ...] = ()
    # The rule must raise nothing at all.
    expect_none: bool = False

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"start {value!r} must be an ISO time such as "
                             "2026-01-05T10:00:00") from None
        return value

    @model_validator(mode="after")
    def _expectation(self) -> RuleExample:
        if bool(self.expect) == self.expect_none:
            raise ValueError(f"example {self.name!r}: give either expect = [...] or "
                             "expect_none = true")
        if not self.readings and self.ticks_until is None:
            raise ValueError(f"example {self.name!r}: give readings, or ticks_until for a "
                             "silent device")
        return self


class _RuleBase(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    # Readings and the incidents they must produce, run by `sentinel check`.
    example: tuple[RuleExample, ...] = ()
    # One kind or several (tamper, battery and offline rules apply to most kinds). A kind
    # names every kind that extends it too (rules of `gas` watch `septic_gas` devices);
    # loading widens this to them (`RulesConfig.with_kinds`).
    kind: str | tuple[str, ...]
    # Rules with the same `incident` on one device feed one incident (e.g. a gas detector's
    # own alarm flag and its %LEL reading describe the same leak).
    incident: str | None = None
    description: str = ""
    # The incident's title for people (zh/en); without it, the built-in catalogue's, else
    # the incident name. Rules feeding one incident must not give it two labels.
    label: Label | None = None
    life_safety: bool = False
    # "manual": the condition clearing is recorded, but a person must resolve.
    resolve: ResolveMode = "auto"
    # How long the condition must stay clear before the incident resolves by itself.
    clear_for: Duration | None = None
    enabled: bool = True

    @property
    def incident_name(self) -> str:
        return self.incident or self.name

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.kind,) if isinstance(self.kind, str) else self.kind


class StateRule(_RuleBase):
    """A field reported by the device equals a value (alarm flags, worn = false)."""

    type: Literal["state"]
    field: str
    equals: Value = True
    severity: SeverityField
    # The state must hold this long (0: at once).
    for_: Duration = Field(default=0.0, alias="for")
    # If the device reports this field true within `cancel_window` of the incident opening,
    # the incident resolves as cancelled by the wearer (SOS pressed by mistake).
    cancel_field: str | None = None
    cancel_window: Duration = 0.0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# A bound of a threshold level, and the operator a person reads for it. `above` / `below`
# are strict (the limit itself is normal: a main at exactly 0.14 MPa meets GB 50974);
# `at_or_above` / `at_or_below` include the limit (a detector's alarm point: 25 %LEL alarms).
Bound = Literal["above", "at_or_above", "below", "at_or_below"]
OPERATORS: dict[Bound, str] = {"above": ">", "at_or_above": "≥", "below": "<",
                               "at_or_below": "≤"}
_BOUNDS: tuple[Bound, ...] = ("above", "at_or_above", "below", "at_or_below")


class Level(_Model):
    """One severity step of a threshold: beyond a value, held for a duration.

    Exactly one of `above` (>), `at_or_above` (≥), `below` (<), `at_or_below` (≤).
    """

    severity: SeverityField
    below: float | None = None
    at_or_below: float | None = None
    above: float | None = None
    at_or_above: float | None = None
    for_: Duration = Field(default=0.0, alias="for")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_bound(self) -> Level:
        given = [b for b in _BOUNDS if getattr(self, b) is not None]
        if len(given) != 1:
            raise ValueError("a level needs exactly one of above (>), at_or_above (≥), "
                             "below (<), at_or_below (≤)")
        return self

    @property
    def bound(self) -> Bound:
        return next(b for b in _BOUNDS if getattr(self, b) is not None)

    @property
    def limit(self) -> float:
        value = getattr(self, self.bound)
        assert isinstance(value, float | int)
        return float(value)

    @property
    def rising(self) -> bool:
        """The alarm side is above the limit."""
        return self.bound in ("above", "at_or_above")

    @property
    def inclusive(self) -> bool:
        return self.bound.startswith("at_or_")

    @property
    def op(self) -> str:
        return OPERATORS[self.bound]


def _overlaps(level: Level, clear: float, clear_inclusive: bool) -> bool:
    """Whether some value would both hold `level` and clear (the rule would flap on it)."""
    limit = level.limit
    if level.rising:   # alarm: v > limit (or ≥); clear: v < clear (or ≤)
        return clear > limit or (clear == limit and level.inclusive and clear_inclusive)
    return clear < limit or (clear == limit and level.inclusive and clear_inclusive)


class ThresholdRule(_RuleBase):
    """A numeric field beyond levels, with a separate clear level (hysteresis).

    Levels watch one direction. The clear level is on the other side: `clear_above` (>) or
    `clear_at_or_above` (≥) for levels below a limit, `clear_below` (<) or
    `clear_at_or_below` (≤) for levels above one. Without a clear level the condition
    clears as soon as no level holds.
    """

    type: Literal["threshold"]
    field: str
    levels: tuple[Level, ...] = Field(min_length=1)
    # The condition clears only once the value is back past these (hysteresis band).
    clear_above: float | None = None
    clear_at_or_above: float | None = None
    clear_below: float | None = None
    clear_at_or_below: float | None = None
    # Values are percentages of this per-device setting (e.g. tank_height_m); devices
    # without the setting are not checked by this rule.
    relative_to: str | None = None

    @model_validator(mode="after")
    def _directions(self) -> ThresholdRule:
        rising = {lv.rising for lv in self.levels}
        if len(rising) > 1:
            raise ValueError("a threshold rule watches one direction; write two rules")
        clears = {name: getattr(self, name) for name in
                  ("clear_above", "clear_at_or_above", "clear_below", "clear_at_or_below")
                  if getattr(self, name) is not None}
        if len(clears) > 1:
            raise ValueError(f"a threshold rule has one clear level, not {', '.join(clears)}")
        if not clears:
            return self
        (name, clear), = clears.items()
        if self.falling and name in ("clear_below", "clear_at_or_below"):
            raise ValueError("levels use 'below' / 'at_or_below': the clear level is "
                             "'clear_above' or 'clear_at_or_above'")
        if not self.falling and name in ("clear_above", "clear_at_or_above"):
            raise ValueError("levels use 'above' / 'at_or_above': the clear level is "
                             "'clear_below' or 'clear_at_or_below'")
        inclusive = name.startswith("clear_at_or_")
        for level in self.levels:
            if _overlaps(level, clear, inclusive):
                raise ValueError(f"{name} {clear} overlaps the level {level.op} {level.limit}: "
                                 f"a value there would both alarm and clear")
        return self

    @property
    def falling(self) -> bool:
        return not self.levels[0].rising

    @property
    def clear_level(self) -> tuple[float, bool] | None:
        """(value, inclusive) of the clear level, if one is set."""
        for name, inclusive in (("clear_above", False), ("clear_at_or_above", True),
                                ("clear_below", False), ("clear_at_or_below", True)):
            value = getattr(self, name)
            if value is not None:
                return float(value), inclusive
        return None


class RateRule(_RuleBase):
    """A field changing too fast: an absolute drop/rise within a window, or a rate per hour."""

    type: Literal["rate"]
    field: str
    window: Duration = Field(gt=0)
    severity: SeverityField
    drop: float | None = Field(default=None, gt=0)
    rise: float | None = Field(default=None, gt=0)
    falling_per_hour: float | None = Field(default=None, gt=0)
    rising_per_hour: float | None = Field(default=None, gt=0)
    # A per-hour rate needs samples spanning at least this long (noise over short spans).
    min_span: Duration = 0.0

    @model_validator(mode="after")
    def _one_measure(self) -> RateRule:
        given = [x for x in (self.drop, self.rise, self.falling_per_hour, self.rising_per_hour)
                 if x is not None]
        if len(given) != 1:
            raise ValueError("a rate rule needs exactly one of drop, rise, falling_per_hour, "
                             "rising_per_hour")
        return self


class OfflineLevel(_Model):
    severity: SeverityField
    # Silent for `missed` report intervals, or for `after`; with both, the later one.
    missed: float | None = Field(default=None, gt=0)
    after: Duration | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> OfflineLevel:
        if self.missed is None and self.after is None:
            raise ValueError("an offline level needs missed and/or after")
        return self


class OfflineRule(_RuleBase):
    """A device silent for too long (a deadman check, evaluated on a timer)."""

    type: Literal["offline"]
    # How often a device of this kind reports; a device's report_interval_s overrides it.
    interval: Duration = Field(gt=0)
    levels: tuple[OfflineLevel, ...] = Field(min_length=1)


class EdgeRule(_RuleBase):
    """A field changing from one value to another: a one-off event (tamper cleared)."""

    type: Literal["edge"]
    field: str
    from_: Value = Field(alias="from")
    to: Value
    severity: SeverityField
    # One-off incidents have no condition to clear; they resolve after this long.
    resolve_after: Duration = 86400.0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StillRule(_RuleBase):
    """No movement within `within` after another rule fired (a fall, then lying still)."""

    type: Literal["still"]
    after: str
    within: Duration = Field(gt=0)
    severity: SeverityField
    # Movement is the step count rising, or this flag reported true.
    steps_field: str = "steps"
    motion_field: str | None = None


class InactivityRule(_RuleBase):
    """No increase of a counter during daytime hours for `for` (an elder not walking)."""

    type: Literal["inactivity"]
    field: str = "steps"
    daytime: str = "08:00-20:00"
    # None: the community's zone (the top-level `timezone` setting).
    timezone: str | None = None
    for_: Duration = Field(alias="for", gt=0)
    severity: SeverityField

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("daytime")
    @classmethod
    def _daytime(cls, value: str) -> str:
        daytime_bounds(value)
        return value


def daytime_bounds(text: str) -> tuple[float, float]:
    """("HH:MM-HH:MM") → (start, end) seconds after local midnight."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", text.strip())
    if not match:
        raise ValueError(f"daytime {text!r} must look like 08:00-20:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
    if not (0 <= start < end <= 86400) or m1 >= 60 or m2 >= 60:
        raise ValueError(f"daytime {text!r}: start must be before end within one day")
    return float(start), float(end)


RuleSpec = Annotated[
    StateRule | ThresholdRule | RateRule | OfflineRule | EdgeRule | StillRule | InactivityRule,
    Field(discriminator="type"),
]

Scope = Literal["building", "compound", "grid"]


class GroupCorrelation(_Model):
    """Incidents of `rules` from distinct devices in one place within `window` → one group."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: Literal["group"]
    description: str = ""
    label: Label | None = None
    rules: tuple[str, ...] = Field(min_length=1)
    scope: Scope = "building"
    window: Duration = Field(gt=0)
    min_devices: int = Field(default=2, ge=1)
    # Each inner list must be represented by at least one member (smoke AND gas).
    requires: tuple[tuple[str, ...], ...] = ()
    severity: SeverityField
    life_safety: bool = True
    resolve: ResolveMode = "manual"


class AttachCorrelation(_Model):
    """Incidents of `rules` in the scope of an open `to` group attach to it (not paged)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: Literal["attach"]
    description: str = ""
    rules: tuple[str, ...] = Field(min_length=1)
    to: tuple[str, ...] = Field(min_length=1)
    scope: Scope = "compound"


Correlation = Annotated[GroupCorrelation | AttachCorrelation, Field(discriminator="type")]


class Match(_Model):
    """Which devices an override applies to; every given key must match."""

    device: str | None = None
    building: str | None = None
    compound: str | None = None
    grid: str | None = None
    group: str | None = None

    @model_validator(mode="after")
    def _something(self) -> Match:
        if not any(getattr(self, k) for k in type(self).model_fields):
            raise ValueError("an override must match a device, building, compound, grid "
                             "or group")
        return self

    @property
    def specificity(self) -> int:
        """Narrower matches win: device > building > compound > grid > group."""
        return max(({"group": 1, "grid": 2, "compound": 3, "building": 4, "device": 5}[k]
                    for k in type(self).model_fields if getattr(self, k)), default=0)


class Override(_Model):
    rule: str
    match: Match
    set: dict[str, Any] = Field(default_factory=dict)
    enabled: bool | None = None


class FlapSettings(_Model):
    # More than `changes` condition changes within `window` → flapping: held open.
    changes: int = Field(default=6, ge=2)
    window: Duration = 900.0


class RuleDefaults(_Model):
    clear_for: Duration = 60.0
    flap: FlapSettings = Field(default_factory=FlapSettings)


class RulesConfig(_Model):
    """Everything rules.toml may hold."""

    defaults: RuleDefaults = Field(default_factory=RuleDefaults)
    rule: tuple[RuleSpec, ...] = ()
    correlation: tuple[Correlation, ...] = ()
    override: tuple[Override, ...] = ()
    # Named groups of device ids (e.g. "residents_with_night_shift").
    groups: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> RulesConfig:
        names = [r.name for r in self.rule]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(dupes)}")
        known = set(names)
        for rule in self.rule:
            if isinstance(rule, StillRule) and rule.after not in known:
                raise ValueError(f"rule {rule.name}: 'after' names unknown rule {rule.after!r}")
        groups = {c.name for c in self.correlation if isinstance(c, GroupCorrelation)}
        for corr in self.correlation:
            missing = [r for r in corr.rules if r not in known]
            if isinstance(corr, GroupCorrelation):
                missing += [r for req in corr.requires for r in req if r not in known]
            if isinstance(corr, AttachCorrelation):
                missing += [g for g in corr.to if g not in groups]
            if missing:
                raise ValueError(f"correlation {corr.name}: unknown {', '.join(missing)}")
        for ov in self.override:
            if ov.rule not in known:
                raise ValueError(f"override for unknown rule {ov.rule!r}")
            if ov.match.group is not None and ov.match.group not in self.groups:
                raise ValueError(f"override for rule {ov.rule}: unknown group "
                                 f"{ov.match.group!r}")
        self.labels()
        return self

    def labels(self) -> dict[str, Label]:
        """Incident name → its title from a rule's or group's `label`.

        Raises ValueError when the rules of one incident label it differently (which title
        people read would depend on which rule fired first).
        """
        out: dict[str, Label] = {}
        owner: dict[str, str] = {}
        named: list[tuple[str, str, Label | None]] = [
            (r.incident_name, r.name, r.label) for r in self.rule]
        named += [(c.name, c.name, c.label) for c in self.correlation
                  if isinstance(c, GroupCorrelation)]
        for incident, source, label in named:
            if label is None:
                continue
            if incident in out and out[incident] != label:
                raise ValueError(f"rules {owner[incident]} and {source} give incident "
                                 f"{incident!r} different labels; label it once or alike")
            out.setdefault(incident, label)
            owner.setdefault(incident, source)
        return out

    def with_kinds(self, expand: Callable[[Iterable[str]], tuple[str, ...]]) -> RulesConfig:
        """This configuration with each rule's kinds widened by `expand` (to the kinds that
        extend them: `KindRegistry.expand`), so that matching a device's kind stays a
        membership test on the hot path and every stage sees the same answer."""
        rules = []
        for rule in self.rule:
            kinds = expand(rule.kinds)
            rules.append(rule if kinds == rule.kinds else
                         rule.model_copy(update={"kind": kinds}))
        return self.model_copy(update={"rule": tuple(rules)})


def load_rules_file(path: Path) -> dict[str, Any]:
    """Raw mapping of one rules file (TOML or YAML)."""
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("a rules file must hold a mapping")
    return data


def merge_rule_files(parts: list[Mapping[str, Any]]) -> RulesConfig:
    """Later files add rules, correlations, overrides and groups; a later `[[rule]]` with a
    known name replaces the earlier one (a site file redefining a shipped default)."""
    merged: dict[str, Any] = {"rule": [], "correlation": [], "override": [], "groups": {}}
    for part in parts:
        for key, value in part.items():
            if key in ("rule", "correlation"):
                for entry in value if isinstance(value, list) else [value]:
                    name = entry.get("name") if isinstance(entry, dict) else None
                    merged[key] = [e for e in merged[key]
                                   if not (name and isinstance(e, dict) and e.get("name") == name)]
                    merged[key].append(entry)
            elif key == "override":
                merged[key] += value if isinstance(value, list) else [value]
            elif key == "groups" and isinstance(value, dict):
                merged[key].update(value)
            else:
                merged[key] = value
    return RulesConfig.model_validate(merged)


def short_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """(location, message) pairs without echoing input values."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        out.append((".".join(str(p) for p in err["loc"]), err["msg"]))
    return out
