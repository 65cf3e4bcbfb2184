"""The escalation engine: incident events and time in, notices and audit notes out.

Pure: no I/O, every method takes `now`. One `Escalation` per paged incident remembers how
far the climb has gone; the service persists it with the notices it produced, in the same
transaction, so after a crash the climb resumes at the step it had reached and the outbox
(keyed per incident × round × step × contact × channel) never holds a notice twice.

A climb: step 0 at once, each later step once the incident has gone unacknowledged for the
step's `after`; after the last step the last tier is reminded every `repeat`. An
acknowledgement stops it; if no resolution follows within the acknowledgement timeout the
incident fires again and a new round starts from step 0. Resolving stops everything and
tells every contact who was reached. A tier in which nobody is on duty, or nobody can be
reached on any channel, is passed over at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from sentinel.escalation.model import Contact, Policy, PolicyConfig, Role
from sentinel.escalation.roster import Rosters
from sentinel.incidents.model import Incident, IncidentEvent, Status
from sentinel.incidents.windows import Mutable, Window

NoticeKind = Literal["alert", "escalated", "repeat", "raised", "ack_expired", "resolved",
                     "assigned",
                     "unmuted"]
# muted: a silence holds the climb; it starts (again) once no window mutes the incident.
ClimbState = Literal["climbing", "acknowledged", "muted", "stopped"]

# Events that end an incident's own escalation (its group pages instead).
_MERGED = frozenset({"grouped", "attached"})


@dataclass(slots=True)
class Escalation:
    """How far one incident's climb has gone; JSON-serialisable."""

    incident_id: str
    policy: str
    started_at: float
    round: int = 0
    step: int = 0                      # the next step to take
    next_at: float | None = None       # when the next step or reminder is due
    repeats: int = 0
    state: ClimbState = "climbing"
    reason: str = "opened"             # why this round started: opened, raised, ack_expired
    ack_deadline: float | None = None
    # The step taken last: contact id -> "pending" | "sent" | "failed".
    tier: dict[str, str] = field(default_factory=dict)
    tier_step: int = -1
    # Everyone reached so far: contact id -> channel index that delivered.
    reached: dict[str, int] = field(default_factory=dict)
    life_safety: bool = False
    stopped_at: float | None = None
    # The silence holding the climb (state "muted"), or labelling a life-safety page.
    muted_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Escalation:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Notice:
    """A message due to one contact; the outbox turns it into deliveries per channel."""

    incident_id: str
    kind: NoticeKind
    contact: Contact
    round: int
    step: int
    life_safety: bool
    # Distinguishes reminders, resolutions and re-raises of the same step.
    tag: str = ""
    # A life-safety incident paged to the duty officer although a maintenance window
    # mutes it: the window, so the message says so.
    maintenance: Window | None = None

    @property
    def key(self) -> str:
        """Idempotency key (the outbox appends the channel index)."""
        suffix = f".{self.tag}" if self.tag else ""
        return f"{self.incident_id}/{self.round}.{self.step}{suffix}/{self.contact.id}"


@dataclass(frozen=True, slots=True)
class Note:
    """An audit-trail entry about an incident (becomes an IncidentEvent)."""

    incident_id: str
    type: str
    data: Mapping[str, Any]


@dataclass(slots=True)
class Output:
    notices: list[Notice] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    changed: dict[str, Escalation] = field(default_factory=dict)
    # Incidents whose acknowledgement expired (the incident stage puts them back to firing).
    expire_ack: list[tuple[str, float]] = field(default_factory=list)
    # Incidents whose held notices not yet sent should be withdrawn (resolved, merged).
    withdraw: list[str] = field(default_factory=list)
    # A tier nobody could be reached in: (incident id, step) — operators must see it.
    unreachable: list[tuple[str, int]] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.notices += other.notices
        self.notes += other.notes
        self.changed.update(other.changed)
        self.expire_ack += other.expire_ack
        self.withdraw += other.withdraw
        self.unreachable += other.unreachable


class Muter(Protocol):
    """Which silence, if any, holds back notifications about an incident now."""

    def muted_by(self, inc: Mutable, now: float) -> Window | None: ...


class _NoSilences:
    def muted_by(self, inc: Mutable, now: float) -> Window | None:
        return None


class EscalationEngine:
    """Climbs of every paged incident."""

    def __init__(self, policies: PolicyConfig, rosters: Rosters,
                 contacts: Mapping[str, Contact],
                 escalations: Iterable[Escalation] = (), muter: Muter | None = None) -> None:
        self._muter: Muter = muter if muter is not None else _NoSilences()
        self._policies = policies
        self._by_name = {p.name: p for p in policies.policy}
        self._rosters = rosters
        self._contacts = contacts
        self.escalations: dict[str, Escalation] = {e.incident_id: e for e in escalations}

    def policy_for(self, inc: Incident) -> Policy | None:
        return self._policies.select(inc.name, inc.kind, inc.severity, inc.life_safety,
                                     inc.place)

    # -- incident events --------------------------------------------------------------

    def on_event(self, event: IncidentEvent, inc: Incident, now: float) -> Output:
        out = Output()
        esc = self.escalations.get(inc.id)
        kind = event.type
        if kind == "opened":
            # `inc` is the state after the commit: an alarm grouped into a confirmed fire
            # (or attached to one) in the same commit that opened it is paged by its group.
            # Starting its own climb would record a step whose notices are withdrawn
            # unsent, and the audit trail and `tail` would show a page nobody received.
            if esc is None and not inc.groups and not inc.attached_to:
                self._start(inc, now, "opened", out)
        elif kind in ("severity_raised", "acknowledgement_expired"):
            if inc.open and inc.status == Status.FIRING and not inc.attached_to \
                    and not inc.groups:
                reason = "raised" if kind == "severity_raised" else "ack_expired"
                self._start(inc, now, reason, out, previous=esc)
        elif kind == "acknowledged" and esc is not None and esc.state in ("climbing", "muted"):
            esc.state = "acknowledged"
            esc.next_at = None
            policy = self._by_name.get(esc.policy)
            timeout = self._policies.ack_timeout_of(policy) if policy else None
            esc.ack_deadline = now + timeout if timeout else None
            out.changed[esc.incident_id] = esc
            out.notes.append(Note(inc.id, "escalation_paused", {
                "by": inc.acknowledged_by, "step": esc.tier_step,
                "ack_deadline": esc.ack_deadline}))
        elif kind == "resolved" and esc is not None and esc.state != "stopped":
            self._stop(esc, "resolved", now, out)
            for contact_id in esc.reached:
                contact = self._contacts.get(contact_id)
                if contact is not None:
                    out.notices.append(Notice(inc.id, "resolved", contact, esc.round,
                                              esc.tier_step, esc.life_safety, tag="resolved"))
        elif kind == "assigned" and not event.data.get("group"):
            # Assigned by someone else (the board, the CLI, a colleague): the person must
            # learn it from their phone, with the link that lets them report and close.
            # Taking it oneself (我去处理) needs no message; nor do a fire's members.
            person = str(event.data.get("person") or "")
            contact = self._contacts.get(person)
            if contact is not None and person != event.data.get("by") and inc.open:
                out.notices.append(Notice(
                    inc.id, "assigned", contact, esc.round if esc else 0,
                    esc.tier_step if esc else 0, inc.life_safety,
                    tag=f"assigned{event.seq or int(event.ts * 1000)}"))
        elif kind in _MERGED and esc is not None and esc.state != "stopped":
            group = event.data.get("group")
            self._stop(esc, f"merged into {group}", now, out)
        return out

    def _start(self, inc: Incident, now: float, reason: str, out: Output,
               previous: Escalation | None = None) -> None:
        policy = self.policy_for(inc)
        if policy is None:
            out.notes.append(Note(inc.id, "no_escalation_policy", {}))
            return
        if policy.mode == "digest":
            # Listed in the daily digest; nobody is paged for it.
            out.notes.append(Note(inc.id, "escalation_digest", {"policy": policy.name}))
            return
        esc = Escalation(inc.id, policy.name, started_at=now, life_safety=inc.life_safety,
                         reason=reason)
        if previous is not None:
            esc.round = previous.round + 1
            esc.reached = dict(previous.reached)
            if reason == "raised" and previous.state == "climbing" \
                    and previous.policy == policy.name:
                # Worse, but still unacknowledged: keep the climb's clock, so every tier
                # already reached hears of it now rather than starting again at step 0.
                esc.started_at = previous.started_at
        self.escalations[inc.id] = esc
        out.notes.append(Note(inc.id, "escalation_started", {
            "policy": policy.name, "round": esc.round, "reason": reason}))
        self._take_due(esc, policy, inc, now, out)

    def _stop(self, esc: Escalation, reason: str, now: float, out: Output) -> None:
        esc.state = "stopped"
        esc.stopped_at = now
        esc.next_at = None
        esc.ack_deadline = None
        out.changed[esc.incident_id] = esc
        out.withdraw.append(esc.incident_id)
        out.notes.append(Note(esc.incident_id, "escalation_stopped", {"reason": reason}))

    # -- time -------------------------------------------------------------------------

    def tick(self, now: float, incidents: Mapping[str, Incident]) -> Output:
        """Take the steps and reminders that are due; expire stale acknowledgements."""
        out = Output()
        for esc in list(self.escalations.values()):
            inc = incidents.get(esc.incident_id)
            if esc.state == "muted":
                if inc is not None:
                    self._unmute_if_free(esc, inc, now, out)
                continue
            if esc.state == "acknowledged":
                if esc.ack_deadline is not None and now >= esc.ack_deadline:
                    esc.ack_deadline = None
                    out.changed[esc.incident_id] = esc
                    policy = self._by_name.get(esc.policy)
                    timeout = self._policies.ack_timeout_of(policy) if policy else 0.0
                    out.expire_ack.append((esc.incident_id, timeout))
                continue
            if esc.state != "climbing" or esc.next_at is None or now < esc.next_at:
                continue
            policy = self._by_name.get(esc.policy)
            if inc is None or policy is None:
                continue
            self._take_due(esc, policy, inc, now, out)
        return out

    def forget(self, before: float) -> int:
        """Drop climbs that stopped before `before` (kept a while for late deliveries)."""
        old = [i for i, e in self.escalations.items() if e.state == "stopped"
               and e.stopped_at is not None and e.stopped_at < before]
        for incident_id in old:
            del self.escalations[incident_id]
        return len(old)

    def next_due(self) -> float | None:
        """The earliest time anything is due (the service sleeps until then)."""
        times = [t for e in self.escalations.values()
                 for t in (e.next_at if e.state == "climbing" else None,
                           e.ack_deadline if e.state == "acknowledged" else None)
                 if t is not None]
        return min(times, default=None)

    def _take_due(self, esc: Escalation, policy: Policy, inc: Incident, now: float,
                  out: Output) -> None:
        steps = policy.step
        # Several steps may be due at once (a tier with nobody, a daemon that was down):
        # take each in order, so the audit trail shows every tier.
        while esc.state == "climbing":
            if esc.step < len(steps):
                step = steps[esc.step]
                if now < esc.started_at + step.after:
                    esc.next_at = esc.started_at + step.after
                    break
                if self._hold(esc, inc, now, out):
                    break
                reached_someone = self._notify_tier(esc, inc, esc.step, step.notify, now,
                                                    out, repeat=False)
                esc.step += 1
                if reached_someone:
                    esc.next_at = self._after_step(esc, policy, now)
                    if esc.step < len(steps) and esc.next_at is not None \
                            and esc.next_at <= now:
                        continue  # the next tier is overdue too (e.g. after downtime)
                    break
                if esc.step < len(steps):
                    # Nobody to notify in this tier: the next one is due now.
                    esc.started_at = min(esc.started_at, now - steps[esc.step].after)
                continue
            # Past the last step: reminders to the last tier, until acknowledged.
            if policy.repeat is None:
                esc.next_at = None
                break
            if esc.next_at is not None and now < esc.next_at:
                break
            if self._hold(esc, inc, now, out):
                break
            esc.repeats += 1
            self._notify_tier(esc, inc, len(steps) - 1, steps[-1].notify, now, out,
                              repeat=True)
            esc.next_at = now + policy.repeat
            break
        out.changed[esc.incident_id] = esc

    def _after_step(self, esc: Escalation, policy: Policy, now: float) -> float | None:
        if esc.step < len(policy.step):
            return max(now, esc.started_at + policy.step[esc.step].after)
        return now + policy.repeat if policy.repeat is not None else None

    def _notify_tier(self, esc: Escalation, inc: Incident, index: int, roles: Sequence[Role],
                     now: float, out: Output, *, repeat: bool) -> bool:
        """Notify everyone on duty in `roles`; False if there was nobody to notify."""
        maintenance = self._muter.muted_by(inc, now) if inc.life_safety else None
        contacts: dict[str, Contact] = {}
        if maintenance is not None:
            # A life-safety incident under a window that mutes it explicitly: the duty
            # officer is paged all the same, told about the window; nobody else is (unless
            # no duty officer is on duty: then the step's own tier, labelled likewise).
            esc.muted_by = maintenance.label
            officers = self._rosters.on_duty(Role.DUTY_OFFICER, inc.place, now)
            if officers:
                roles = (Role.DUTY_OFFICER,)
                contacts = {c.id: c for c in officers}
        for role in roles if not contacts else ():
            for contact in self._rosters.on_duty(role, inc.place, now):
                contacts.setdefault(contact.id, contact)
        if repeat:
            kind: NoticeKind = "repeat"
            tag = f"r{esc.repeats}"
        elif esc.reason == "raised":
            kind = "raised"
            tag = ""
        elif index == 0:
            kind = "alert" if esc.reason == "opened" else \
                "unmuted" if esc.reason == "unmuted" else "ack_expired"
            tag = ""
        else:
            kind = "escalated"
            tag = ""
        esc.tier = {c: "pending" for c in contacts}
        esc.tier_step = index
        if not contacts:
            out.notes.append(Note(inc.id, "nobody_on_duty", {
                "step": index, "roles": [r.value for r in roles], "round": esc.round}))
            out.unreachable.append((inc.id, index))
            return False
        step_data: dict[str, Any] = {
            "step": index, "round": esc.round, "roles": [r.value for r in roles],
            "contacts": list(contacts), "kind": kind}
        if maintenance is not None:
            step_data.update(maintenance=maintenance.label, window_reason=maintenance.reason)
        out.notes.append(Note(inc.id, "escalation_reminder" if repeat else "escalation_step",
                              step_data))
        for contact in contacts.values():
            out.notices.append(Notice(inc.id, kind, contact, esc.round, index, esc.life_safety,
                                      tag=tag, maintenance=maintenance))
        return True

    # -- silences ---------------------------------------------------------------------

    def _hold(self, esc: Escalation, inc: Incident, now: float, out: Output) -> bool:
        """Hold the climb if a silence mutes `inc` now (life-safety incidents never are:
        their duty-officer page is labelled instead, see `_notify_tier`)."""
        if inc.life_safety:
            return False
        window = self._muter.muted_by(inc, now)
        if window is None:
            return False
        esc.state = "muted"
        esc.muted_by = window.label
        esc.next_at = None
        out.changed[esc.incident_id] = esc
        out.notes.append(Note(inc.id, "notification_muted", {
            "window": window.label, "reason": window.reason, "author": window.author,
            "step": esc.step, "until": window.in_force_until(now)}))
        return True

    def _unmute_if_free(self, esc: Escalation, inc: Incident, now: float, out: Output
                        ) -> None:
        """A held climb whose silence is over: start it if the incident still needs it."""
        if not inc.open or inc.status != Status.FIRING:
            return
        if self._muter.muted_by(inc, now) is not None:
            return
        if not inc.active:
            # Cleared while muted: nothing to page unless the condition returns (then
            # this runs again on the next tick and starts the climb).
            return
        held_by = esc.muted_by
        out.notes.append(Note(inc.id, "mute_ended", {"window": held_by}))
        esc.state = "stopped"
        self._start(inc, now, "unmuted", out, previous=esc)

    # -- delivery outcomes ------------------------------------------------------------

    def on_delivery(self, incident_id: str, round_: int, step: int, contact_id: str,
                    channel: int, ok: bool, now: float, incident: Incident | None) -> Output:
        """A contact was reached, or every channel of theirs failed."""
        out = Output()
        esc = self.escalations.get(incident_id)
        if esc is None or round_ != esc.round:
            return out
        if ok:
            first = contact_id not in esc.reached
            esc.reached[contact_id] = channel
            out.changed[incident_id] = esc
            if esc.state == "stopped" and first and incident is not None \
                    and incident.status == Status.RESOLVED:
                # Reached after the incident was resolved: tell them it is over.
                contact = self._contacts.get(contact_id)
                if contact is not None:
                    out.notices.append(Notice(incident_id, "resolved", contact, esc.round,
                                              esc.tier_step, esc.life_safety, tag="resolved"))
        if step != esc.tier_step or contact_id not in esc.tier:
            return out
        esc.tier[contact_id] = "sent" if ok else "failed"
        out.changed[incident_id] = esc
        if ok or any(v != "failed" for v in esc.tier.values()):
            return out
        # Nobody in this tier can be reached on any channel: the next tier, now.
        out.unreachable.append((incident_id, step))
        out.notes.append(Note(incident_id, "tier_unreachable", {
            "step": step, "round": esc.round, "contacts": list(esc.tier)}))
        policy = self._by_name.get(esc.policy)
        if esc.state == "climbing" and policy is not None and incident is not None \
                and esc.step < len(policy.step):
            esc.started_at = min(esc.started_at, now - policy.step[esc.step].after)
            self._take_due(esc, policy, incident, now, out)
        return out
