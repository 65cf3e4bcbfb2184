"""Reach of each community box, and the district's own incidents about them.

Reach (sentinel.district.view.Reach) is judged from what the mirror holds: the box's
retained heartbeat (its will says `offline`, a clean stop `stopped`), Mosquitto's bridge
notification ("0": the box's uplink is lost) and staleness (no heartbeat for [district]
offline_after).

The district's own incidents go through the same stages as a box's (IncidentService ->
EscalationService -> outbox -> apprise), on the district's own state database:

  box_offline  target: the community. Opens once the box has been unreachable for
               [district] offline_grace (the board shows it offline at once: a blip pages
               nobody). Critical while the box is offline; warning when it stopped cleanly
               (a planned restart: not paged as critical). Resolves once the box is back.
  whistle      吹哨. target: <community>/<box incident id>, life-safety, the box incident's
               severity. Opens when a life-safety incident of the box is unacknowledged after
               its climb reached the street office (its street-office step's seq is kept in
               the whistle's detail: a whistle a person closed is not raised again for the
               same climb, only for a later one after an acknowledgement expired); resolves
               when the box's incident is acknowledged or resolved, by whoever did it there.

`WhistleAcks` follows the district's own event log (a durable cursor, like the box's
IncidentPublisher): a street-office person's acknowledgement, assignment or resolution of a
whistle sends an `ack` command for the box's incident to the owning box, as that person.

Every decision compares what should be open with what is open, so it is idempotent: after a
restart (or a crash between two commits) the next check puts things right.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from sentinel.clock import Clock
from sentinel.district.config import Community
from sentinel.district.mirror import STREET_OFFICE, Mirror, Record
from sentinel.district.view import Reach
from sentinel.i18n import Language, incident_title, t
from sentinel.incidents.cursor import EventCursor
from sentinel.incidents.model import Incident, IncidentEvent, Outcome
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore
from sentinel.store.db import transaction
from sentinel.types import Severity, Value

log = structlog.get_logger("sentinel.district.watch")

BOX_OFFLINE = "box_offline"
WHISTLE = "whistle"
DISTRICT_INCIDENTS = (BOX_OFFLINE, WHISTLE)
# How often the mirror's retention runs (seconds).
_PRUNE_EVERY = 3600.0
# Place keys of a box's incident carried over to the district's whistle.
_PLACE_KEYS = ("compound", "building", "floor", "unit", "grid", "location")
# The district's own incident ids start with this: a box's id never names one of them.
ID_PREFIX = "D"
# Event types of a box by which its climb reaches a role (their `roles` name it).
_STEP_TYPES = frozenset({"escalation_step", "escalation_reminder", "nobody_on_duty"})
# Whistle outcomes the box decided (not a street-office person's act).
_BOX_OUTCOMES = frozenset({Outcome.BOX_ACKNOWLEDGED.value, Outcome.BOX_RESOLVED.value})


def judge(record: Record, now: float, offline_after: float, started_at: float) -> Reach:
    """A community's reach now. Staleness counts from the district's own start at the
    earliest, so a restarted district gives every box offline_after to be heard."""
    beat = record.heartbeat
    if record.bridge == "0" and (record.heartbeat_at is None or record.bridge_at is None
                                 or record.bridge_at >= record.heartbeat_at):
        return "offline"
    if beat is not None and beat.state == "offline":
        return "offline"
    if beat is not None and beat.state == "stopped":
        return "stopped"
    heard = max(record.last_heard or -1.0, record.heartbeat_at or -1.0)
    if heard < 0:
        return "unknown" if now - started_at < offline_after else "offline"
    return "online" if now - max(heard, started_at) <= offline_after else "offline"


def _why(record: Record, reach: Reach) -> str:
    if reach != "offline":
        return reach
    if record.bridge == "0":
        return "bridge"
    if record.heartbeat is not None and record.heartbeat.state == "offline":
        return "will"
    return "silent"


class Watch:
    """Judges reach on every mirror commit and every check_interval; raises and clears the
    district's own incidents."""

    def __init__(self, mirror: Mirror, incidents: IncidentService,
                 communities: Mapping[str, Community], clock: Clock, offline_after: float,
                 check_interval: float = 1.0, keep_days: float = 90.0,
                 offline_grace: float = 0.0, store: StateStore | None = None,
                 language: Language = "zh") -> None:
        self._mirror = mirror
        self._grace = offline_grace
        self._store = store
        self._lang: Language = language
        # community -> when it became unreachable (offline or stopped) without a break.
        self._down_since: dict[str, float] = {}
        # whistle target -> the box's street-office step seq it was last raised for.
        self._whistled: dict[str, int] | None = None
        self._incidents = incidents
        self._communities = dict(communities)
        self._clock = clock
        self._offline_after = offline_after
        self._check_interval = check_interval
        self._keep_days = keep_days
        self._pruned_at = clock.monotonic()
        self.started_at = clock.now()
        self._lock = asyncio.Lock()
        self.changes = 0

    async def run(self) -> None:
        """Check staleness and gaps until cancelled."""
        while True:
            await asyncio.sleep(self._check_interval)
            try:
                await self.check()
                self._mirror.check_gaps()
                if self._clock.monotonic() - self._pruned_at >= _PRUNE_EVERY:
                    self._pruned_at = self._clock.monotonic()
                    await self._mirror.prune(self._keep_days)
            except Exception:  # one failed check must not end the watch
                log.exception("district_check_failed")

    async def on_commit(self, touched: set[str]) -> None:
        await self.check(touched)

    async def check(self, communities: Iterable[str] | None = None) -> None:
        async with self._lock:
            now = self._clock.now()
            records = self._mirror.records
            names = list(communities) if communities is not None else list(records)
            changed = []
            for community in names:
                record = records[community]
                reach = judge(record, now, self._offline_after, self.started_at)
                if reach != record.reach:
                    log.info("district_reach", community=community, reach=reach,
                             previous=record.reach, why=_why(record, reach),
                             last_heard=record.last_heard)
                    record.reach, record.since = reach, now
                    changed.append(community)
                    self.changes += 1
            skipped, self._mirror.skipped = self._mirror.skipped, set()
            await self._mirror.save_records({*changed, *skipped})
            for community in names:
                await self._box_offline(records[community])
            await self._whistles()

    async def _box_offline(self, record: Record) -> None:
        community = record.id
        book = self._incidents.book
        current = book.open.get(f"{BOX_OFFLINE}:{community}") if book is not None else None
        if record.reach in ("offline", "stopped"):
            now = self._clock.now()
            start = record.since if record.since is not None else now
            if _why(record, record.reach) == "silent" and record.last_heard is not None:
                # Judged offline for silence: it has been unreachable since it was last
                # heard (offline_after ago), not since that judgement.
                start = min(start, record.last_heard)
            down = self._down_since.setdefault(community, start)
            severity = Severity.CRITICAL if record.reach == "offline" else Severity.WARNING
            if current is not None and current.active and current.severity >= severity:
                return
            if (current is None or not current.active) and now - down < self._grace:
                return  # a blip: shown on the board, paged to nobody
            config = self._communities[community]
            await self._incidents.raised(
                BOX_OFFLINE, community, True, severity, self._place(community),
                kind="district", reach=record.reach, why=_why(record, record.reach),
                community_name=config.label, phone=config.phone,
                last_heard=record.last_heard if record.last_heard is not None else 0.0)
        elif record.reach == "online":
            self._down_since.pop(community, None)
        if record.reach == "online" and current is not None and current.active:
            await self._incidents.raised(BOX_OFFLINE, community, False, current.severity,
                                         self._place(community), kind="district",
                                         reach=record.reach)

    async def _whistles(self) -> None:
        wanted = {(c, i): sev for c, i, sev in await self._mirror.whistles()}
        book = self._incidents.book
        current = {inc.target: inc for inc in (book.open.values() if book else ())
                   if inc.name == WHISTLE and inc.active}
        whistled = await self._load_whistled()
        new: list[tuple[str, str, int]] = []
        for community, incident_id in wanted:
            target = f"{community}/{incident_id}"
            if target in current:
                continue
            street = await self._street_seq(community, incident_id)
            # Closed by a person (or resolved when the box acknowledged it) for this very
            # climb: raised again only when a later climb reaches the street office.
            if street <= whistled.get(target, -1):
                continue
            new.append((community, incident_id, street))
        rows = await self._mirror.incident_rows([(c, i) for c, i, _ in new]) if new else {}
        for community, incident_id, street in new:
            box = rows.get((community, incident_id), {})
            config = self._communities[community]
            name, kind = str(box.get("name") or ""), str(box.get("kind") or "")
            place = self._place(community, box.get("place"), (name, incident_id))
            place["device"] = f"{community}/{incident_id}"
            detail: dict[str, Value] = {
                "incident": incident_id, "box_incident": name, "box_kind": kind,
                "community_name": config.label, "phone": config.phone,
                "street_seq": street}
            log.warning("district_whistle", community=community, incident=incident_id,
                        street_seq=street)
            whistled[f"{community}/{incident_id}"] = street
            await self._incidents.raised(
                WHISTLE, f"{community}/{incident_id}", True,
                Severity.parse(wanted[(community, incident_id)]), place, life_safety=True,
                kind="whistle", **detail)
        ended = [(t, inc) for t, inc in current.items()
                 if tuple(t.partition("/")[::2]) not in wanted]
        if not ended:
            return
        rows = await self._mirror.incident_rows(
            [(c, i) for c, _, i in (t.partition("/") for t, _ in ended)])
        for target, inc in ended:
            community, _, incident_id = target.partition("/")
            box = rows.get((community, incident_id), {})
            status = box.get("status")
            by = box.get("resolved_by") if status == "resolved" else \
                box.get("acknowledged_by") if status == "acknowledged" else None
            if isinstance(by, str) and by:
                # Ended on the box, by a person there (or of the street office): the
                # notice names who, not "the system ... cleared".
                outcome = Outcome.BOX_RESOLVED if status == "resolved" else \
                    Outcome.BOX_ACKNOWLEDGED
                try:
                    await self._incidents.resolve(inc.id, by, outcome)
                    continue
                except KeyError:
                    continue
            await self._incidents.raised(WHISTLE, target, False, inc.severity,
                                         dict(inc.place), life_safety=True,
                                         kind="whistle")

    async def _street_seq(self, community: str, incident_id: str) -> int:
        """The seq of the box's last event by which this incident's climb reached the
        street office (0 when none is mirrored)."""
        events = await self._mirror.timeline(community, incident_id)
        return max((int(e.get("seq") or 0) for e in events if e.get("type") in _STEP_TYPES
                    and STREET_OFFICE in (e.get("roles") or ())), default=0)

    async def _load_whistled(self) -> dict[str, int]:
        """Every whistle target's last raised climb, read once from the state database."""
        if self._whistled is not None:
            return self._whistled
        found: dict[str, int] = {}
        if self._store is not None:
            def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
                return conn.execute("SELECT key, data FROM incidents WHERE key LIKE ?",
                                    (f"{WHISTLE}:%",)).fetchall()
            for key, data in await self._store.call(read):
                seq = json.loads(data).get("detail", {}).get("street_seq")
                target = key.partition(":")[2]
                if isinstance(seq, int):
                    found[target] = max(found.get(target, -1), seq)
        book = self._incidents.book
        for inc in (book.open.values() if book else ()):
            seq = inc.detail.get("street_seq")
            if inc.name == WHISTLE and isinstance(seq, int):
                found[inc.target] = max(found.get(inc.target, -1), seq)
        self._whistled = found
        return found

    def _place(self, community: str, box_place: Any = None,
               alarm: tuple[str, str] | None = None) -> dict[str, str]:
        """The place of a district incident: the community by name first (a list of the
        district's incidents says which community), for a whistle the box incident's place,
        what the alarm is and its id on the box."""
        config = self._communities[community]
        place = {"community": community, "kind": "district", "device": community}
        where = config.label
        if isinstance(box_place, Mapping):
            place.update({k: str(v) for k in _PLACE_KEYS if (v := box_place.get(k))})
            spot = box_place.get("location") or "".join(
                str(v) for k in ("compound", "building") if (v := box_place.get(k)))
            if spot:
                where = f"{config.label} {spot}"
        place["compound"] = " ".join(p for p in (config.label, place.get("compound")) if p)
        if alarm is not None:
            name, incident_id = alarm
            what = incident_title(name, self._lang) if name else ""
            where += " · " + " ".join(p for p in (what, incident_id) if p)
        # The page's place line carries the community's duty phone: the first thing the
        # street office does about either incident is to call it.
        place["location"] = f"{where} ☎ {config.phone}" if config.phone else where
        return place


# -- a whistle acknowledged at the district acknowledges the box's alarm -------------------

# send(community, command type ("ack" or "note"), its fields, command id): the box's reply,
# or None when none came (sentinel.district.service wires the command channel).
AckSender = Callable[[str, str, Mapping[str, Any], str], Awaitable[Mapping[str, Any] | None]]
ACKS_CURSOR = "district_whistle_acks_seq"
# A person's act on a whistle that acknowledges the box's alarm.
_ACTS = frozenset({"acknowledged", "assigned", "resolved"})
# Box errors meaning its alarm needs nothing more (closed there meanwhile).
_DONE = frozenset({"closed", "unknown_incident", "not_open", "not_found",
                   "already_acknowledged", "acknowledged"})


def box_actor(actor: str, people: Mapping[str, str]) -> tuple[str, str]:
    """(actor, name) of a district person as the box records them (`district:<id>`): a
    contact id of the street office's on-call file with their name; a board or command
    line user by what they were called."""
    where, sep, who = actor.partition(":")
    if actor in people:
        return f"district:{actor}", people[actor]
    if sep and where == "link" and who in people:
        return f"district:{who}", people[who]
    if sep and where in ("board", "cli") and who in people:
        return f"district:{who}", people[who]
    ident = "".join(c if c.isalnum() or c in "-_." else "-" for c in actor)[:100] or "district"
    return f"district:{ident}", (who or actor)[:100]


class WhistleAcks:
    """Follows the district's own events from a durable cursor; a person's act on a whistle
    sends one `ack` of the box's incident to its box, and a person's note on it the same
    note (command ids from the district events, so a restart that sees an event again sends
    the same command, which the box dedupes)."""

    def __init__(self, incidents: IncidentService, store: StateStore, mirror: Mirror,
                 communities: Mapping[str, Community], send: AckSender,
                 people: Mapping[str, str], clock: Clock, language: Language = "zh",
                 every: float = 1.0) -> None:
        self._incidents = incidents
        self._store = store
        self._mirror = mirror
        self._communities = dict(communities)
        self._send = send
        self._people = dict(people)
        self._clock = clock
        self._lang: Language = language
        self._every = every
        self.sent = 0
        self.failed = 0

    async def run(self) -> None:
        cursor = EventCursor(ACKS_CURSOR, self._clock, self._every)
        saved = await self._store.call(cursor.read)
        # A first start acts on nothing of the past: only on what people do from now.
        cursor.start_at(saved if saved is not None else self._incidents.last_seq)
        if saved is None:
            await self._save(cursor)
        while True:
            if cursor.save_due:
                await self._save(cursor)
            events = await self._incidents.events_after(
                cursor.position, 200, wait=5.0 if cursor.position == cursor.saved
                else self._every)
            if not events:
                continue
            try:
                await self.handle(events)
            except Exception:  # one failed pass must not end the follower
                log.exception("district_whistle_acks_failed")
            cursor.advance(events[-1].seq)

    async def _save(self, cursor: EventCursor) -> None:
        def save(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                return cursor.write(conn)
        cursor.written(await self._store.call(save))

    async def handle(self, events: Sequence[IncidentEvent]) -> None:
        """Act on a batch of the district's events: one command per whistle per batch."""
        first: dict[str, IncidentEvent] = {}
        for event in events:
            if event.type not in _ACTS or event.actor in ("sentinel", "device") \
                    or event.incident_id in first:
                continue
            if event.type == "resolved" and event.data.get("outcome") in _BOX_OUTCOMES:
                continue
            first[event.incident_id] = event
        notes = [e for e in events if e.type == "noted" and e.actor not in ("sentinel", "device")
                 and isinstance(e.data.get("text"), str) and e.data["text"].strip()]
        acts = []
        for event in [*first.values(), *notes]:
            inc = self._incidents.incident(event.incident_id) or \
                await self._store.incident(event.incident_id)
            if inc is not None and inc.name == WHISTLE and "/" in inc.target:
                acts.append(self._ack(inc, event) if event.type != "noted"
                            else self._note(inc, event))
        if acts:
            await asyncio.gather(*acts)

    async def _ack(self, inc: Incident, event: IncidentEvent) -> None:
        community, _, box_id = inc.target.partition("/")
        config = self._communities.get(community)
        if config is None:
            return
        actor, name = box_actor(event.actor, self._people)
        command_id = f"whistle-{event.incident_id}-{event.seq}"
        record = self._mirror.records.get(community)
        reply: Mapping[str, Any] | None = None
        if record is None or record.reach not in ("offline", "stopped"):
            reply = await self._send(community, "ack", {"incident": box_id, "actor": actor,
                                                        "name": name}, command_id)
        error = None if reply is None else reply.get("error")
        if reply is not None and (reply.get("ok") or error in _DONE):
            self.sent += 1
            log.info("district_whistle_box_ack", community=community, incident=box_id,
                     whistle=inc.id, actor=actor, id=command_id, ok=reply.get("ok"),
                     error=error)
            return
        # The box did not take it: the person must learn that its alarm is still open there.
        self.failed += 1
        log.warning("district_whistle_box_ack_failed", community=community, incident=box_id,
                    whistle=inc.id, actor=actor, id=command_id,
                    error=error or "unreachable")
        await self._unreached(inc, config, box_id, error, "whistle.box_unreached")

    async def _note(self, inc: Incident, event: IncidentEvent) -> None:
        """The street office's note on a whistle, on the box's alarm too: the people there
        read what the street office knows (its photo stays at the district)."""
        community, _, box_id = inc.target.partition("/")
        config = self._communities.get(community)
        if config is None:
            return
        actor, name = box_actor(event.actor, self._people)
        text = str(event.data["text"])
        if event.data.get("photo"):
            text += " " + t("whistle.note_photo", self._lang)
        command_id = f"whistle-note-{event.incident_id}-{event.seq}"
        record = self._mirror.records.get(community)
        reply: Mapping[str, Any] | None = None
        if record is None or record.reach not in ("offline", "stopped"):
            reply = await self._send(community, "note", {
                "incident": box_id, "actor": actor, "name": name, "text": text[:2000]},
                command_id)
        error = None if reply is None else reply.get("error")
        if reply is not None and (reply.get("ok") or error in _DONE):
            self.sent += 1
            log.info("district_whistle_box_note", community=community, incident=box_id,
                     whistle=inc.id, actor=actor, id=command_id, ok=reply.get("ok"))
            return
        self.failed += 1
        log.warning("district_whistle_box_note_failed", community=community,
                    incident=box_id, whistle=inc.id, actor=actor, id=command_id,
                    error=error or "unreachable")
        await self._unreached(inc, config, box_id, error, "whistle.note_unreached")

    async def _unreached(self, inc: Incident, config: Community, box_id: str,
                         error: str | None, key: str) -> None:
        text = t(key, self._lang, community=config.label,
                 incident=box_id, phone=config.phone or "-")
        await self._incidents.record([IncidentEvent(
            inc.id, "noted", self._clock.now(), "sentinel", inc.severity, inc.status,
            {"text": text, "box_error": error or "unreachable"})])
