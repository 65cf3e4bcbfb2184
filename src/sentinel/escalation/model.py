"""Who is on duty and how alarms climb, as validated data.

Two files, both TOML: the *on-call* file (contacts and rosters: people, their channels, who
covers which grid or compound when) and the *policy* file (which incidents go to which
roles, how fast they climb, what only goes into the daily digest). Both are read once at
start-up and cross-checked by `sentinel check`.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from sentinel import zone
from sentinel.incidents.windows import FOREVER, Recurrence, Window, parse_clock, parse_days
from sentinel.rules.model import Duration, SeverityField
from sentinel.types import Severity

# Replaced at load by the top-level `timezone` setting unless the on-call file names one.
DEFAULT_TZ = zone.DEFAULT


class Role(enum.StrEnum):
    """The tiers of the community's response chain."""

    GRID_WORKER = "grid_worker"        # 网格员: owns the grids of a roster
    PROPERTY = "property"              # 物业: property management, owns compounds
    DUTY_OFFICER = "duty_officer"      # 社区值班: the community's duty officer
    STREET_OFFICE = "street_office"    # 街道: the street office ("吹哨")
    FIRE_LIAISON = "fire_liaison"      # 消防联络员
    ELDER_CONTACT = "elder_contact"    # an elderly resident's assigned contacts (family...)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Weekdays (0 = Monday) from ["mon", "tue"], "mon-fri", "daily" or "weekend"; a local time
# of day from "08:00" (the same words as maintenance windows).
Days = Annotated[tuple[int, ...], BeforeValidator(parse_days)]
ClockTime = Annotated[time, BeforeValidator(parse_clock)]


class Contact(_Model):
    """A person who can be notified, on one or more channels (first = primary)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    name: str = Field(min_length=1)
    role: Role
    phone: str = ""
    # apprise URLs, tried in order: the first is the primary, the rest are fallbacks.
    # They may hold secrets (bot keys, passwords): never logged, only their scheme.
    channels: tuple[str, ...] = Field(min_length=1)
    language: Literal["zh", "en"] = "zh"
    # Devices (elderly watches, help buttons) of the residents this person looks after
    # (role elder_contact).
    elders: tuple[str, ...] = ()
    # What their personal board login may do: operator (act) or viewer (look only).
    board_role: Literal["operator", "viewer"] = "operator"


class Shift(_Model):
    """Recurring hours of a roster; `end` before `start` runs past midnight."""

    days: Days = tuple(range(7))
    start: ClockTime = time(0, 0)
    end: ClockTime = time(0, 0)  # equal to start: the whole day
    members: tuple[str, ...] = Field(min_length=1)
    # none: every member is on duty; daily/weekly: one member at a time, in turn.
    rotation: Literal["none", "daily", "weekly"] = "none"
    # A day on which members[0] is on duty (weekly: the week containing it).
    rotation_start: date = date(2026, 1, 5)


class Override(_Model):
    """Leave and swaps: `contact` is on duty instead of `replaces` (or of everyone)."""

    start: datetime
    end: datetime
    contact: str
    replaces: str | None = None
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Override:
        if (self.start.tzinfo is None) != (self.end.tzinfo is None):
            raise ValueError("give start and end both with a UTC offset or both without")
        if self.end <= self.start:
            raise ValueError("an override must end after it starts")
        return self


class Roster(_Model):
    """Who of one role is on duty when, for some grids or compounds (none: everywhere)."""

    name: str = ""
    role: Role
    grids: tuple[str, ...] = ()
    compounds: tuple[str, ...] = ()
    shift: tuple[Shift, ...] = Field(min_length=1)
    override: tuple[Override, ...] = ()

    @model_validator(mode="after")
    def _one_area(self) -> Roster:
        if self.grids and self.compounds:
            raise ValueError("a roster covers grids or compounds, not both")
        return self


class OncallConfig(_Model):
    """The on-call file: contacts and rosters."""

    timezone: str = DEFAULT_TZ
    contact: tuple[Contact, ...] = ()
    roster: tuple[Roster, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _references(self) -> OncallConfig:
        ids = [c.id for c in self.contact]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate contact id(s): {', '.join(dupes)}")
        known = set(ids)
        for roster in self.roster:
            names = [m for s in roster.shift for m in s.members]
            names += [o.contact for o in roster.override]
            names += [o.replaces for o in roster.override if o.replaces]
            unknown = sorted({n for n in names if n not in known})
            if unknown:
                raise ValueError(f"roster {roster.name or roster.role.value}: unknown "
                                 f"contact(s) {', '.join(unknown)}")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def contacts(self) -> dict[str, Contact]:
        return {c.id: c for c in self.contact}


class Match(_Model):
    """Which incidents a policy takes; every key given must match (empty: all)."""

    incidents: tuple[str, ...] = ()
    # A kind names the kinds that extend it too (widened at load: PolicyConfig.with_kinds).
    kinds: tuple[str, ...] = ()
    severities: tuple[SeverityField, ...] = ()
    min_severity: SeverityField | None = None
    max_severity: SeverityField | None = None
    life_safety: bool | None = None
    compounds: tuple[str, ...] = ()
    grids: tuple[str, ...] = ()


class Step(_Model):
    """One tier: who is notified once the incident has been unacknowledged for `after`."""

    after: Duration = 0.0
    notify: tuple[Role, ...] = Field(min_length=1)


class Policy(_Model):
    """How one class of incidents reaches people."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    match: Match = Field(default_factory=Match)
    # Paged at once and climbing; or "digest": only listed in the daily digest.
    mode: Literal["page", "digest"] = "page"
    step: tuple[Step, ...] = ()
    # After the last step, the last step's people are notified again this often until
    # someone acknowledges (None: once).
    repeat: Duration | None = None
    # Acknowledged but not resolved within this: the climb starts again.
    ack_timeout: Duration | None = None
    # mode "digest": who gets it, at what local time each day.
    digest_to: tuple[Role, ...] = ()
    digest_at: ClockTime = time(9, 0)

    @model_validator(mode="after")
    def _shape(self) -> Policy:
        if self.mode == "page":
            if not self.step:
                raise ValueError(f"policy {self.name}: a paging policy needs at least one step")
            afters = [s.after for s in self.step]
            if afters != sorted(afters):
                raise ValueError(f"policy {self.name}: steps must be in order of `after`")
            if self.repeat is not None and self.repeat <= 0:
                raise ValueError(f"policy {self.name}: repeat must be positive")
        elif not self.digest_to:
            raise ValueError(f"policy {self.name}: a digest policy needs digest_to")
        return self


class StormSettings(_Model):
    """Storm control for incidents that are not life-safety (those are never held)."""

    # Notices for one contact and channel are held this long, so that several incidents of
    # one kind in one building arrive as one summary message.
    window: Duration = 30.0
    # At most this many messages per contact within `per`; the rest wait and are sent as
    # one summary when the window allows.
    max_messages: int = Field(default=6, ge=1)
    per: Duration = 600.0


class Maintenance(_Model):
    """A silence from the policy file: recurring maintenance (or one fixed period).

    Like a silence added with `sentinel silence add`: a place, optionally kinds or rules;
    one that names neither mutes only incidents that are not life-safety, and muting
    life-safety incidents needs `life_safety = true` (the duty officer is still paged).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    reason: str = Field(min_length=1)
    author: str = "config"
    community: str | None = None
    compound: str | None = None
    building: str | None = None
    grid: str | None = None
    device: str | None = None
    kinds: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    life_safety: bool = False
    # Weekly, in the on-call file's timezone: days the period starts on, local start/end
    # (an end before the start runs past midnight).
    days: Days | None = None
    start: ClockTime | None = None
    end: ClockTime | None = None
    # Or one fixed period (with a UTC offset, or local to the on-call timezone).
    start_at: datetime | None = None
    end_at: datetime | None = None

    @model_validator(mode="after")
    def _when(self) -> Maintenance:
        weekly = self.days is not None or self.start is not None or self.end is not None
        fixed = self.start_at is not None or self.end_at is not None
        if weekly == fixed:
            raise ValueError(f"maintenance {self.name}: give days/start/end (weekly) or "
                             "start_at/end_at (one period), not both")
        if weekly and (self.days is None or self.start is None or self.end is None):
            raise ValueError(f"maintenance {self.name}: a weekly window needs days, start "
                             "and end")
        if weekly and self.start == self.end:
            raise ValueError(f"maintenance {self.name}: start and end are the same time")
        if fixed and (self.start_at is None or self.end_at is None
                      or self.end_at <= self.start_at):
            raise ValueError(f"maintenance {self.name}: start_at and end_at, end after start")
        if self.life_safety and not (self.kinds or self.rules):
            raise ValueError(f"maintenance {self.name}: muting life-safety incidents needs "
                             "the kinds or rules it mutes")
        return self

    def window(self, number: int, zone: str) -> Window:
        """As a silence window (configured windows have negative ids)."""
        scope = {k: v for k in ("community", "compound", "building", "grid", "device")
                 if (v := getattr(self, k)) is not None}
        if self.days is not None and self.start is not None and self.end is not None:
            every = Recurrence(self.days, self.start, self.end, zone)
            start, end = 0.0, FOREVER
        else:
            assert self.start_at is not None and self.end_at is not None
            tz = ZoneInfo(zone)
            every = None
            start = (self.start_at if self.start_at.tzinfo else
                     self.start_at.replace(tzinfo=tz)).timestamp()
            end = (self.end_at if self.end_at.tzinfo else
                   self.end_at.replace(tzinfo=tz)).timestamp()
        return Window(-number, "silence", scope, start, end, self.author, self.reason,
                      self.kinds, self.rules, self.life_safety, every, self.name)


class PolicyConfig(_Model):
    """The policy file: the first policy whose match fits an incident takes it."""

    policy: tuple[Policy, ...] = ()
    maintenance: tuple[Maintenance, ...] = ()
    storm: StormSettings = Field(default_factory=StormSettings)
    # Applied to paging policies that do not set their own.
    ack_timeout: Duration = 1800.0

    @model_validator(mode="after")
    def _unique(self) -> PolicyConfig:
        names = [p.name for p in self.policy]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate policy name(s): {', '.join(dupes)}")
        names = [m.name for m in self.maintenance]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate maintenance name(s): {', '.join(dupes)}")
        return self

    def with_kinds(self, expand: Callable[[Iterable[str]], tuple[str, ...]]) -> PolicyConfig:
        """This file with the kinds of policies and maintenance windows widened by `expand`
        (to the kinds that extend them: `KindRegistry.expand`): a policy for `gas` takes a
        `septic_gas` incident, a maintenance window muting `gas` mutes `septic_gas`."""
        policies = tuple(
            p.model_copy(update={"match": p.match.model_copy(
                update={"kinds": expand(p.match.kinds)})}) if p.match.kinds else p
            for p in self.policy)
        maintenance = tuple(
            m.model_copy(update={"kinds": expand(m.kinds)}) if m.kinds else m
            for m in self.maintenance)
        return self.model_copy(update={"policy": policies, "maintenance": maintenance})

    def maintenance_windows(self, zone: str) -> list[Window]:
        return [m.window(i, zone) for i, m in enumerate(self.maintenance, start=1)]

    def select(self, name: str, kind: str, severity: Severity, life_safety: bool,
               place: dict[str, str]) -> Policy | None:
        """The first policy that takes an incident with these properties."""
        for policy in self.policy:
            m = policy.match
            if m.incidents and name not in m.incidents:
                continue
            if m.kinds and kind not in m.kinds:
                continue
            if m.severities and severity not in m.severities:
                continue
            if m.min_severity is not None and severity < m.min_severity:
                continue
            if m.max_severity is not None and severity > m.max_severity:
                continue
            if m.life_safety is not None and life_safety != m.life_safety:
                continue
            if m.compounds and place.get("compound") not in m.compounds:
                continue
            if m.grids and place.get("grid") not in m.grids:
                continue
            return policy
        return None

    def ack_timeout_of(self, policy: Policy) -> float:
        return policy.ack_timeout if policy.ack_timeout is not None else self.ack_timeout


def read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)
