"""Incidents: the state machine that turns condition signals into things people act on.

Pure: no I/O, every method takes `now`. The book holds the open incidents, applies
signals, ticks (clear holds, flapping, one-off expiry), correlates by place and takes
commands (acknowledge, resolve). Every change appends an `IncidentEvent`; the caller
persists incidents and events together and never rewrites an event (the audit trail).

Lifecycle: firing → acknowledged → resolved. The *condition* (active / cleared) is tracked
beside the status: a smoke alarm that stops sounding is recorded as cleared but stays open
until a person resolves it; a hydrant back above its clear level resolves by itself.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sentinel import zone
from sentinel.config.inventory import Device
from sentinel.incidents.windows import Window
from sentinel.rules.engine import Policy, Signal
from sentinel.rules.model import AttachCorrelation, FlapSettings, GroupCorrelation, RulesConfig
from sentinel.types import Severity, Value

SYSTEM_TARGET = "sentinel"


class Status(enum.StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Outcome(enum.StrEnum):
    """How an incident ended: the closed loop the community reports on."""

    CLEARED = "cleared"            # the condition cleared and stayed clear
    HANDLED = "handled"            # a person dealt with it
    FALSE_ALARM = "false_alarm"
    REFERRED = "referred"          # passed to the fire brigade, utility, family...
    CANCELLED = "cancelled"        # the wearer cancelled an SOS within its window
    EXPIRED = "expired"            # a one-off event past its resolve_after
    WITH_GROUP = "with_group"      # resolved together with the group it belonged to
    # A district's whistle ended by the owning box: its alarm acknowledged / resolved there.
    BOX_ACKNOWLEDGED = "box_acknowledged"
    BOX_RESOLVED = "box_resolved"


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """One entry of the audit trail. `seq` is assigned when it is stored."""

    incident_id: str
    type: str
    ts: float
    actor: str
    severity: Severity
    status: Status
    data: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0


@dataclass(slots=True)
class Incident:
    id: str
    key: str
    name: str
    target: str
    kind: str
    severity: Severity
    opened_at: float
    place: dict[str, str]
    device_id: str | None = None
    status: Status = Status.FIRING
    active: bool = True
    life_safety: bool = False
    resolve_mode: str = "auto"
    clear_for: float = 0.0
    resolve_after: float | None = None
    cancel_window: float = 0.0
    updated_at: float = 0.0
    cleared_at: float | None = None
    value: Value | None = None
    detail: dict[str, Value] = field(default_factory=dict)
    # The rule whose condition `value` and `detail` describe: the one that opened the
    # incident or last raised it (notices show that condition, not the opening one).
    rule: str | None = None
    # Rule -> severity of each condition of this incident that is active now.
    conditions: dict[str, int] = field(default_factory=dict)
    fired: int = 1
    flapping: bool = False
    members: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    attached_to: str | None = None
    # Kept for incidents stored by older versions; muting is decided at send time now.
    silenced_by: int | None = None
    drill: bool = False
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    outcome: str | None = None
    note: str | None = None
    # The closed loop: the contact (on-call file id) who took it on, since when, and when
    # the first note (on-site feedback) came in: what the response report measures.
    assigned_to: str | None = None
    assigned_at: float | None = None
    first_note_at: float | None = None
    # Stage -> epoch seconds it was reached (sentinel.incidents.latency: GB 50440 record).
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.status != Status.RESOLVED

    @property
    def digest_only(self) -> bool:
        """Maintenance-level: reported in the daily digest, never paged."""
        return self.severity == Severity.MAINTENANCE

    def to_json(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict, which deep-copies through every value
        # generically: this runs for every incident shown or published (0.05 ms each).
        # The containers hold only text and numbers, so copying them one level deep is a
        # deep copy (tests check it against asdict).
        data = {name: getattr(self, name) for name in _INCIDENT_FIELDS}
        data["severity"] = self.severity.label
        data["status"] = self.status.value
        data["place"] = dict(self.place)
        data["detail"] = dict(self.detail)
        data["conditions"] = dict(self.conditions)
        data["members"] = list(self.members)
        data["groups"] = list(self.groups)
        data["timing"] = dict(self.timing)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Incident:
        values = dict(data)
        values["severity"] = Severity.parse(values["severity"])
        values["status"] = Status(values["status"])
        return cls(**values)


_INCIDENT_FIELDS = tuple(f.name for f in fields(Incident))


def place_of(device: Device) -> dict[str, str]:
    return {"community": device.community, "compound": device.compound,
            "building": device.building, "floor": device.floor, "unit": device.unit,
            "grid": device.grid, "location": device.location, "kind": device.kind,
            "device": device.id}


def scope_id(place: Mapping[str, str], scope: str) -> str | None:
    """The place key of a correlation scope; buildings are named within their compound."""
    if scope == "building":
        building = place.get("building")
        return f"{place.get('compound')}/{building}" if building else None
    return place.get(scope) or None


class IncidentBook:
    """The open incidents and everything that changes them."""

    def __init__(self, config: RulesConfig, inventory: Mapping[str, Device],
                 windows: Callable[[], Iterable[Window]] = tuple, next_number: int = 1,
                 id_prefix: str = "") -> None:
        self.config = config
        # Before every id this book makes (a district's "D"): ids of another book never
        # match one of its own.
        self.id_prefix = id_prefix
        self._inventory = inventory
        self._windows = windows
        self.next_number = next_number
        self.open: dict[str, Incident] = {}       # by key
        self.by_id: dict[str, Incident] = {}      # open ones, and resolved ones until taken
        self.flap_history: dict[str, list[float]] = {}
        self._flap: FlapSettings = config.defaults.flap
        self._groups = [c for c in config.correlation if isinstance(c, GroupCorrelation)]
        self._attach = [c for c in config.correlation if isinstance(c, AttachCorrelation)]
        self._events: list[IncidentEvent] = []
        self._dirty: set[str] = set()
        self._dirty_flaps: set[str] = set()

    # -- persistence ------------------------------------------------------------------

    def restore(self, incidents: Iterable[Incident], flaps: Mapping[str, list[float]]) -> None:
        for inc in incidents:
            if inc.open:
                self.open[inc.key] = inc
                self.by_id[inc.id] = inc
        self.flap_history.update({k: list(v) for k, v in flaps.items()})

    def take_changes(self) -> tuple[list[Incident], list[IncidentEvent], dict[str, list[float]]]:
        incidents = [self.by_id[i] for i in self._dirty if i in self.by_id]
        for inc in incidents:
            if not inc.open:
                del self.by_id[inc.id]
        events, self._events = self._events, []
        flaps = {k: self.flap_history.get(k, []) for k in self._dirty_flaps}
        self._dirty = set()
        self._dirty_flaps = set()
        return incidents, events, flaps

    @property
    def has_changes(self) -> bool:
        return bool(self._events or self._dirty)

    def get(self, incident_id: str) -> Incident | None:
        return self.by_id.get(incident_id)

    # -- events -----------------------------------------------------------------------

    def _event(self, inc: Incident, type_: str, ts: float, actor: str = "sentinel",
               **data: Any) -> None:
        inc.updated_at = max(inc.updated_at, ts)
        self._dirty.add(inc.id)
        self._events.append(IncidentEvent(inc.id, type_, ts, actor, inc.severity, inc.status,
                                          data))

    def _new_id(self, ts: float) -> str:
        number = self.next_number
        self.next_number += 1
        # Numbered per day of the community (its time zone setting).
        return f"{self.id_prefix}{zone.local(ts):%Y%m%d}-{number:04d}"

    def _open(self, key: str, name: str, target: str, kind: str, severity: Severity,
              ts: float, now: float, place: dict[str, str], policy: Policy,
              device_id: str | None = None, value: Value | None = None,
              detail: Mapping[str, Value] | None = None, rule: str | None = None) -> Incident:
        inc = Incident(
            id=self._new_id(now), key=key, name=name, target=target, kind=kind,
            severity=severity, opened_at=ts, place=place, device_id=device_id,
            life_safety=policy.life_safety, resolve_mode=policy.resolve,
            clear_for=policy.clear_for, resolve_after=policy.resolve_after,
            cancel_window=policy.cancel_window, updated_at=ts, value=value,
            detail=dict(detail or {}), conditions={rule: int(severity)} if rule else {},
            rule=rule)
        # Drills mark an incident as it opens; silences are asked when each notification
        # is due (escalation), so they are not decided here.
        inc.drill = any(w.type == "drill" and w.covers(place, ts) for w in self._windows())
        self.open[key] = inc
        self.by_id[inc.id] = inc
        self._event(inc, "opened", ts, rule=rule or name, value=value, detail=dict(inc.detail),
                    drill=inc.drill, place=place)
        return inc

    # -- signals ----------------------------------------------------------------------

    def apply(self, signals: Iterable[Signal], now: float) -> None:
        for signal in signals:
            self._apply(signal, now)

    def _apply(self, s: Signal, now: float) -> None:
        key = f"{s.incident}:{s.device_id}"
        inc = self.open.get(key)
        if s.change == "active":
            if inc is None:
                self._note_change(key, s.ts)
                device = self._inventory.get(s.device_id)
                place = place_of(device) if device else {"device": s.device_id}
                inc = self._open(key, s.incident, s.device_id, place.get("kind", "system"),
                                 s.severity, s.ts, now, place, s.policy, s.device_id, s.value,
                                 s.detail, s.rule)
                self._correlate(inc, now)
                self._check_flapping(inc, key, s.ts)
                return
            returned = not inc.active
            inc.conditions[s.rule] = int(s.severity)
            if s.rule == inc.rule or s.severity >= inc.severity:
                # The reading people see is the condition that sets the severity, with its
                # own value and threshold; a lesser condition of another rule leaves it.
                inc.rule, inc.value, inc.detail = s.rule, s.value, dict(s.detail)
            if returned:
                inc.active = True
                inc.cleared_at = None
                inc.fired += 1
                self._note_change(key, s.ts)
                self._event(inc, "condition_returned", s.ts, rule=s.rule, value=s.value)
                self._check_flapping(inc, key, s.ts)
            if s.severity > inc.severity:
                self._raise(inc, s.severity, s.ts, rule=s.rule, value=s.value,
                            detail=dict(s.detail))
            return
        if inc is None:
            if s.change == "event":
                device = self._inventory.get(s.device_id)
                place = place_of(device) if device else {"device": s.device_id}
                inc = self._open(key, s.incident, s.device_id, place.get("kind", "system"),
                                 s.severity, s.ts, now, place, s.policy, s.device_id, s.value,
                                 s.detail, None)
                inc.active = False
                inc.cleared_at = s.ts
            return
        if s.change == "event":
            inc.fired += 1
            self._event(inc, "repeated", s.ts, rule=s.rule, value=s.value)
        elif s.change == "clear":
            inc.conditions.pop(s.rule, None)
            if inc.conditions or not inc.active:
                return
            inc.active = False
            inc.cleared_at = s.ts
            self._note_change(key, s.ts)
            self._event(inc, "condition_cleared", s.ts, rule=s.rule, value=s.value)
            self._maybe_autoresolve(inc, now)
        elif s.change == "cancel":
            if inc.cancel_window > 0 and s.ts - inc.opened_at <= inc.cancel_window:
                self._resolve(inc, s.ts, "device", Outcome.CANCELLED, "cancelled on the device")
            else:
                self._event(inc, "cancel_refused", s.ts, actor="device",
                            reason="outside the cancel window" if inc.cancel_window > 0
                            else "this rule has no cancel window")

    def _raise(self, inc: Incident, severity: Severity, ts: float, **data: Any) -> None:
        before = inc.severity
        inc.severity = severity
        if inc.status == Status.ACKNOWLEDGED:
            # A worse situation than the one someone took on: page again.
            inc.status = Status.FIRING
        self._event(inc, "severity_raised", ts, previous=before.label, **data)

    # -- flapping ---------------------------------------------------------------------

    def _note_change(self, key: str, ts: float) -> None:
        history = self.flap_history.setdefault(key, [])
        history.append(ts)
        horizon = ts - self._flap.window
        while history and history[0] < horizon:
            history.pop(0)
        if not history:
            self.flap_history.pop(key, None)
        self._dirty_flaps.add(key)

    def _check_flapping(self, inc: Incident, key: str, ts: float) -> None:
        changes = len(self.flap_history.get(key, ()))
        if not inc.flapping and changes > self._flap.changes:
            inc.flapping = True
            self._event(inc, "flapping", ts, changes=changes, window=self._flap.window)

    # -- time -------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        for inc in list(self.open.values()):
            if inc.flapping:
                history = self.flap_history.get(inc.key, [])
                last_change = history[-1] if history else inc.updated_at
                if now - last_change >= self._flap.window:
                    inc.flapping = False
                    self._event(inc, "flapping_ended", now)
            if inc.resolve_after is not None and not inc.active and inc.cleared_at is not None:
                if now - inc.opened_at >= inc.resolve_after:
                    self._resolve(inc, now, "sentinel", Outcome.EXPIRED, None)
                continue
            self._maybe_autoresolve(inc, now)

    def next_due(self) -> float:
        """The earliest time at which `tick` may change something (a flapping spell ends,
        an incident expires or auto-resolves after its clear hold); inf when no open
        incident waits on the clock. Only `apply` and `tick` move it (see RuleEngine.next_due)."""
        due = math.inf
        for inc in self.open.values():
            if inc.flapping:
                history = self.flap_history.get(inc.key, [])
                due = min(due, (history[-1] if history else inc.updated_at) + self._flap.window)
            if inc.resolve_after is not None and not inc.active and inc.cleared_at is not None:
                due = min(due, inc.opened_at + inc.resolve_after)
            elif (inc.resolve_mode == "auto" and not inc.active and not inc.flapping
                  and inc.resolve_after is None and not inc.members
                  and inc.cleared_at is not None):
                due = min(due, inc.cleared_at + inc.clear_for)
        return due

    def _maybe_autoresolve(self, inc: Incident, now: float) -> None:
        if (inc.open and not inc.active and inc.resolve_mode == "auto" and not inc.flapping
                and inc.resolve_after is None and not inc.members
                and inc.cleared_at is not None and now - inc.cleared_at >= inc.clear_for):
            self._resolve(inc, max(now, inc.cleared_at), "sentinel", Outcome.CLEARED, None)

    # -- commands ---------------------------------------------------------------------

    def acknowledge(self, incident_id: str, actor: str, now: float, note: str | None = None,
                    name: str | None = None) -> Incident:
        """Acknowledge an open incident, and the open members of a group with it.

        A member of an open group (an alarm folded into a confirmed fire, whose own link
        went out before the grouping) is acknowledged through its group: the fire is what
        pages and reminds, so acting on any of its alarms acts on the fire and its alarms.
        """
        inc = self._require(incident_id)
        group = self.open_group_of(inc)
        # `name`: an actor the box has no contact for (a district person) is named by it.
        named = {"name": name} if name else {}
        self._acknowledge(inc, actor, now, note, **({"group": group.id} if group else {}),
                          **named)
        if group is not None:
            self._acknowledge(group, actor, now, note, member=inc.id, **named)
        for member in self._open_members(group or inc):
            self._acknowledge(member, actor, now, note, group=(group or inc).id, **named)
        return inc

    def _acknowledge(self, inc: Incident, actor: str, now: float, note: str | None,
                     **data: Any) -> None:
        if inc.status == Status.ACKNOWLEDGED:
            return
        inc.status = Status.ACKNOWLEDGED
        inc.acknowledged_at = now
        inc.acknowledged_by = actor
        self._event(inc, "acknowledged", now, actor=actor, note=note, **data)

    def assign(self, incident_id: str, person: str, actor: str, now: float) -> Incident:
        """Give an open incident (and a group's open members) to `person`, a contact id.

        Assigning to whom it is already assigned records nothing: a second tap on
        "我去处理" is not a second assignment.
        """
        inc = self._require(incident_id)
        group = self.open_group_of(inc)
        # The person hears of it once, about the fire (see escalation: a `group` mark).
        self._assign(inc, person, actor, now, **({"group": group.id} if group else {}))
        if group is not None:
            self._assign(group, person, actor, now, member=inc.id)
        for member in self._open_members(group or inc):
            self._assign(member, person, actor, now, group=(group or inc).id)
        return inc

    def _assign(self, inc: Incident, person: str, actor: str, now: float, **data: Any) -> None:
        if inc.assigned_to == person:
            return
        inc.assigned_to = person
        inc.assigned_at = now
        self._event(inc, "assigned", now, actor=actor, person=person, by=actor, **data)

    def note(self, incident_id: str, actor: str, now: float, text: str,
             photo: str | None = None, name: str | None = None) -> Incident:
        """Add a note (on-site feedback) to an open incident; `photo` is a stored photo id."""
        inc = self._require(incident_id)
        data: dict[str, Any] = {"text": text}
        if photo is not None:
            data["photo"] = photo
        if name:
            data["name"] = name
        group = self.open_group_of(inc)
        # Feedback on one alarm of a fire is feedback on the fire: its timeline and the
        # response report's time to arrival see it too.
        for target, mark in ((inc, {}), *(((group, {"member": inc.id}),) if group else ())):
            if target.first_note_at is None:
                target.first_note_at = now
            self._event(target, "noted", now, actor=actor, **data, **mark)
        return inc

    def open_group_of(self, inc: Incident) -> Incident | None:
        """The open group (confirmed fire) this incident belongs to or is attached to."""
        for group_id in [*inc.groups, *([inc.attached_to] if inc.attached_to else [])]:
            group = self.by_id.get(group_id)
            if group is not None and group.open:
                return group
        return None

    def _open_members(self, inc: Incident) -> list[Incident]:
        # A confirmed fire is acted on as one: its member alarms follow the group.
        found = (self.by_id.get(m) for m in inc.members)
        return [m for m in found if m is not None and m.open]

    def expire_acknowledgement(self, incident_id: str, now: float, timeout: float
                               ) -> Incident | None:
        """Acknowledged but not resolved in time: firing again, so the climb restarts."""
        inc = self.by_id.get(incident_id)
        if inc is None or inc.status != Status.ACKNOWLEDGED:
            return None
        inc.status = Status.FIRING
        self._event(inc, "acknowledgement_expired", now, acknowledged_by=inc.acknowledged_by,
                    acknowledged_at=inc.acknowledged_at, timeout=timeout)
        return inc

    def resolve(self, incident_id: str, actor: str, now: float, outcome: Outcome,
                note: str | None = None) -> Incident:
        inc = self._require(incident_id)
        self._resolve(inc, now, actor, outcome, note)
        return inc

    def _require(self, incident_id: str) -> Incident:
        inc = self.by_id.get(incident_id)
        if inc is None or not inc.open:
            raise KeyError(incident_id)
        return inc

    def _resolve(self, inc: Incident, ts: float, actor: str, outcome: Outcome,
                 note: str | None) -> None:
        if not inc.open:
            return
        inc.status = Status.RESOLVED
        inc.resolved_at = ts
        inc.resolved_by = actor
        inc.outcome = outcome.value
        inc.note = note
        self.open.pop(inc.key, None)
        self._event(inc, "resolved", ts, actor=actor, outcome=outcome.value, note=note,
                    condition_active=inc.active)
        # Resolving a group resolves what it grouped or absorbed ("resolving stops all").
        for member_id in inc.members:
            member = self.by_id.get(member_id)
            if member is not None and member.open:
                self._resolve(member, ts, actor, Outcome.WITH_GROUP, f"group {inc.id}")
        for group_id in [*inc.groups, *([inc.attached_to] if inc.attached_to else [])]:
            group = self.by_id.get(group_id)
            if group is not None and group.open:
                self._maybe_close_group(group, ts)

    def _maybe_close_group(self, group: Incident, ts: float) -> None:
        if group.resolve_mode != "auto":
            return
        if all(not (m := self.by_id.get(i)) or not m.open for i in group.members):
            group.active = False
            group.cleared_at = ts
            self._resolve(group, ts, "sentinel", Outcome.CLEARED, None)

    # -- correlation by place ---------------------------------------------------------

    def _correlate(self, inc: Incident, now: float) -> None:
        rule = next(iter(inc.conditions), inc.name)
        for attach in self._attach:
            if rule not in attach.rules:
                continue
            where = scope_id(inc.place, attach.scope)
            if where is None:
                continue
            for group in self.open.values():
                if group.name in attach.to and group.open and \
                        scope_id(group.place, attach.scope) == where:
                    inc.attached_to = group.id
                    group.members.append(inc.id)
                    self._event(inc, "attached", inc.opened_at, group=group.id,
                                group_name=group.name)
                    self._event(group, "member_added", inc.opened_at, member=inc.id,
                                device=inc.device_id, rule=rule, attached=True)
                    break
            if inc.attached_to:
                break
        for corr in self._groups:
            if rule not in corr.rules:
                continue
            where = scope_id(inc.place, corr.scope)
            if where is None:
                continue
            self._group(corr, where, inc, now)

    def _group(self, corr: GroupCorrelation, where: str, inc: Incident, now: float) -> None:
        key = f"{corr.name}:{where}"
        group = self.open.get(key)
        if group is not None:
            self._add_member(group, inc)
            return
        horizon = inc.opened_at - corr.window
        candidates = [o for o in self.open.values()
                      if o.key != key and o.device_id is not None and not o.attached_to
                      and o.opened_at >= horizon and scope_id(o.place, corr.scope) == where
                      and any(r in corr.rules for r in o.conditions or (o.name,))]
        devices = {o.device_id for o in candidates}
        if len(devices) < corr.min_devices:
            return
        rules_present = {r for o in candidates for r in (o.conditions or {o.name: 0})}
        if any(not rules_present.intersection(req) for req in corr.requires):
            return
        first = min(candidates, key=lambda o: o.opened_at)
        place = {k: v for k, v in first.place.items()
                 if k in ("community", "compound", "building", "grid")}
        if corr.scope != "building":
            place.pop("building", None)
        place["kind"] = "group"
        policy = Policy(life_safety=corr.life_safety, resolve=corr.resolve, clear_for=0.0)
        group = self._open(key, corr.name, where, "group", corr.severity, inc.opened_at, now,
                           place, policy, detail={"scope": corr.scope, "window": corr.window})
        group.conditions = {}
        group.drill = any(o.drill for o in candidates) or group.drill
        for member in sorted(candidates, key=lambda o: o.opened_at):
            self._add_member(group, member)

    def _add_member(self, group: Incident, member: Incident) -> None:
        if member.id in group.members:
            return
        group.members.append(member.id)
        member.groups.append(group.id)
        self._event(member, "grouped", group.updated_at, group=group.id, group_name=group.name)
        self._event(group, "member_added", member.opened_at, member=member.id,
                    device=member.device_id, rule=next(iter(member.conditions), member.name))

    # -- the daemon itself ------------------------------------------------------------

    def raised(self, name: str, target: str, active: bool, severity: Severity, now: float,
               place: Mapping[str, str], life_safety: bool = False, kind: str = "system",
               detail: Mapping[str, Value] | None = None) -> Incident | None:
        """A condition that is not a device's (a district's view of a community box): open
        `name` on `target` while `active`, raise its severity when a worse one comes, and
        clear (then resolve) it when no longer active. The incident, or None."""
        key = f"{name}:{target}"
        inc = self.open.get(key)
        if active and inc is None:
            policy = Policy(life_safety=life_safety, resolve="auto", clear_for=0.0)
            return self._open(key, name, target, kind, severity, now, now, dict(place), policy,
                              detail=detail, rule=name)
        if active and inc is not None:
            if not inc.active:
                inc.active = True
                inc.cleared_at = None
                inc.fired += 1
                self._event(inc, "condition_returned", now, rule=name)
            if severity > inc.severity:
                self._raise(inc, severity, now, rule=name, detail=dict(detail or {}))
            return inc
        if not active and inc is not None and inc.active:
            inc.active = False
            inc.conditions.clear()
            inc.cleared_at = now
            self._event(inc, "condition_cleared", now, rule=name, detail=dict(detail or {}))
            self._maybe_autoresolve(inc, now)
        return inc

    def system(self, name: str, active: bool, severity: Severity, now: float,
               **detail: Value) -> None:
        """A condition of sentinel itself (spool nearly full, store failing)."""
        key = f"{name}:{SYSTEM_TARGET}"
        inc = self.open.get(key)
        policy = Policy(life_safety=False, resolve="auto", clear_for=0.0)
        if active and inc is None:
            self._open(key, name, SYSTEM_TARGET, "system", severity, now, now,
                       {"device": SYSTEM_TARGET, "kind": "system"}, policy, detail=detail,
                       rule=name)
        elif not active and inc is not None and inc.active:
            inc.active = False
            inc.conditions.clear()
            inc.cleared_at = now
            self._event(inc, "condition_cleared", now, rule=name, detail=dict(detail))
            self._maybe_autoresolve(inc, now)
