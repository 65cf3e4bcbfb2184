"""The district's mirror of its community boxes: what they published, in the district's own
database, committed before the district broker gets its acknowledgement.

One MQTT connection (sentinel.source.MqttSource: persistent session, manual acks) reads
every community's `events`, `incidents/<id>`, `heartbeat`, `bridge`, `replies` and
`aggregates` (sentinel.district.wire). A batch is parsed, committed in one transaction of
mirror.sqlite3 (events deduplicated by (community, seq), incident states where the newest
`updated_at` wins, each community's heartbeat and bridge state), and only then
acknowledged: a kill -9 at any point leaves every event once after the restart.

Events are kept in `seq` order per community; `in_order` is the last seq up to which
nothing is missing. A gap (an event beyond the next, or a heartbeat's `last_seq` beyond
what arrived) still open after [district] resync_after is asked for with a `resync`
command, at most once per resync_interval per community.

This module implements sentinel.district.view.DistrictView for the board and the relay.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from sentinel.backoff import Backoff
from sentinel.clock import Clock
from sentinel.district import wire
from sentinel.district.config import Community
from sentinel.district.view import CommunityState, Reach
from sentinel.store.db import DEADLETTER_SCHEMA, SqliteDb, insert_deadletters, transaction
from sentinel.types import DeadLetter, RawMessage, RejectReason

log = structlog.get_logger("sentinel.district.mirror")

SCHEMA = """
CREATE TABLE IF NOT EXISTS mirror_events (
    community TEXT NOT NULL,
    seq INTEGER NOT NULL,
    incident TEXT NOT NULL,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    received REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (community, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mirror_events_incident ON mirror_events(community, incident, seq);
CREATE TABLE IF NOT EXISTS mirror_incidents (
    community TEXT NOT NULL,
    id TEXT NOT NULL,
    updated_at REAL NOT NULL,
    opened_at REAL NOT NULL,
    open INTEGER NOT NULL,
    status TEXT NOT NULL,
    life_safety INTEGER NOT NULL,
    data TEXT NOT NULL,
    -- The seq of the last event by which the box's climb reached the street office (an
    -- escalation_step, reminder or nobody_on_duty naming street_office), and of the last
    -- acknowledgement or resolution: reached and not acknowledged since while the first
    -- is the larger (by seq, so events filled in late by a resync count where they belong).
    street_seq INTEGER NOT NULL DEFAULT 0,
    ack_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (community, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mirror_communities (
    community TEXT PRIMARY KEY,
    in_order INTEGER NOT NULL DEFAULT 0,
    top INTEGER NOT NULL DEFAULT 0,
    heartbeat TEXT,
    heartbeat_at REAL,
    bridge TEXT,
    bridge_at REAL,
    last_heard REAL,
    reach TEXT NOT NULL DEFAULT 'unknown',
    since REAL,
    -- The box's state database id (its events' and heartbeats' `box`): when it changes, the
    -- box's database was replaced and its seqs start again at 1 (see Mirror._replaced).
    box TEXT
);
""" + DEADLETTER_SCHEMA

# Event types after which the box's climb reaches a role: their `roles` name it.
_STEP_TYPES = frozenset({"escalation_step", "escalation_reminder", "nobody_on_duty"})
STREET_OFFICE = "street_office"
# Largest payload kept from a box (an incident state with its detail is a few kB).
_MAX_PAYLOAD = 256 * 1024
# Between a community and a replaced database's id in the archive's community key.
_ARCHIVED = "~"
# Resyncs asked from one position before what they ask for is given up as lost.
RESYNC_TRIES = 3

# A resync request: (community, after seq).
Resync = Callable[[str, int], Awaitable[None]]
# The command channel's reply handler (sentinel.district.commands.CommandChannel.on_reply).
ReplyHandler = Callable[[str, bytes], None]


class Source(Protocol):
    """What the mirror needs of sentinel.source.MqttSource."""

    async def batch(self, max_items: int) -> list[RawMessage]: ...

    def ack(self, messages: Sequence[RawMessage]) -> int: ...


@dataclass(slots=True)
class Record:
    """One community as the mirror knows it (persisted in mirror_communities)."""

    id: str
    in_order: int = 0
    top: int = 0
    heartbeat: wire.Heartbeat | None = None
    heartbeat_at: float | None = None
    bridge: str | None = None
    bridge_at: float | None = None
    last_heard: float | None = None
    reach: Reach = "unknown"
    since: float | None = None
    # Seqs received beyond in_order (a gap lies below them).
    ahead: set[int] = field(default_factory=set)
    gap_since: float | None = None
    resync_at: float = -math.inf
    resyncs: int = 0
    # The position the last resyncs asked from, and how many asked from it in a row.
    asked_from: int = -1
    asked: int = 0
    # The box's state database id, and those it had before (their events are archived).
    box: str | None = None
    retired: set[str] = field(default_factory=set)

    @property
    def missing(self) -> int:
        return max(0, self.top - self.in_order - len(self.ahead))

    def row(self) -> tuple[Any, ...]:
        heartbeat = self.heartbeat.payload().decode() if self.heartbeat is not None else None
        return (self.id, self.in_order, self.top, heartbeat, self.heartbeat_at, self.bridge,
                self.bridge_at, self.last_heard, self.reach, self.since, self.box)


@dataclass(slots=True)
class _Plan:
    """What one batch writes."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    incidents: list[tuple[Any, ...]] = field(default_factory=list)
    street: list[tuple[str, str, str, int]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    replies: list[tuple[str, bytes]] = field(default_factory=list)
    aggregates: list[str] = field(default_factory=list)
    # A box whose state database was replaced: community -> (old id, new id), and the
    # highest seq its new database reported in this batch.
    replaced: dict[str, tuple[str, str]] = field(default_factory=dict)
    boxes: dict[str, str] = field(default_factory=dict)
    tops: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class MirrorStats:
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    incidents: int = 0
    heartbeats: int = 0
    dead: int = 0
    unknown_community: int = 0
    resyncs: int = 0
    lost: int = 0
    aggregates_dropped: int = 0
    replaced: int = 0
    retired: int = 0


class Mirror:
    """Consume the district broker into mirror.sqlite3; serve the DistrictView reads."""

    def __init__(self, db: SqliteDb, communities: Mapping[str, Community], prefix: str,
                 clock: Clock, *, resync: Resync | None = None,
                 on_reply: ReplyHandler | None = None, resync_after: float = 5.0,
                 resync_interval: float = 10.0, batch_max: int = 500,
                 aggregates: bool = False) -> None:
        self._db = db
        self._communities = dict(communities)
        self._prefix = prefix.rstrip("/")
        self._clock = clock
        self.resync = resync
        self.on_reply = on_reply
        self._resync_after = resync_after
        self._resync_interval = resync_interval
        self._batch_max = batch_max
        self.records: dict[str, Record] = {c: Record(c) for c in communities}
        self.stats = MirrorStats()
        self._unknown_seen: set[str] = set()
        self._dead_logged: set[tuple[str, str]] = set()
        # Called after each commit with the communities it touched (sentinel.district.watch).
        self.on_commit: Callable[[set[str]], Awaitable[None]] | None = None
        # The boxes' aggregates for the TSDB writer (only when one is configured).
        self.aggregates: asyncio.Queue[list[str]] = asyncio.Queue(maxsize=1000)
        self._keep_aggregates = aggregates
        # Communities whose position moved past lost events: saved by the next check.
        self.skipped: set[str] = set()
        self._resyncing: set[asyncio.Task[None]] = set()

    # -- topics -----------------------------------------------------------------------

    def topics(self) -> list[str]:
        p = self._prefix
        return [f"{p}/+/{wire.EVENTS}", f"{p}/+/{wire.INCIDENTS}/+", f"{p}/+/{wire.HEARTBEAT}",
                f"{p}/+/{wire.BRIDGE}", f"{p}/+/{wire.REPLIES}", f"{p}/+/{wire.AGGREGATES}"]

    # -- start-up ---------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every community's position and reach from the database."""
        def load(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]],
                                                    dict[str, list[int]],
                                                    dict[str, list[str]]]:
            columns = {r[1] for r in conn.execute("PRAGMA table_info(mirror_communities)")}
            if "box" not in columns:  # a mirror made before boxes sent their database id
                with transaction(conn):
                    conn.execute("ALTER TABLE mirror_communities ADD COLUMN box TEXT")
            rows = conn.execute(
                "SELECT community, in_order, top, heartbeat, heartbeat_at, bridge, bridge_at,"
                " last_heard, reach, since, box FROM mirror_communities").fetchall()
            retired: dict[str, list[str]] = {}
            for (archived,) in conn.execute(
                    "SELECT DISTINCT community FROM mirror_events WHERE instr(community, ?)",
                    (_ARCHIVED,)):
                community, _, old = archived.partition(_ARCHIVED)
                retired.setdefault(community, []).append(old)
            ahead: dict[str, list[int]] = {}
            for community, in_order in conn.execute(
                    "SELECT community, in_order FROM mirror_communities"):
                ahead[community] = [s for (s,) in conn.execute(
                    "SELECT seq FROM mirror_events WHERE community = ? AND seq > ?",
                    (community, in_order))]
            return rows, ahead, retired
        rows, ahead, retired = await self._db.call(load)
        for row in rows:
            community = row[0]
            if community not in self.records:
                continue
            record = self.records[community]
            record.in_order, record.top = int(row[1]), int(row[2])
            if row[3]:
                try:
                    record.heartbeat = wire.Heartbeat.parse(row[3].encode())
                except ValueError:
                    record.heartbeat = None
            record.heartbeat_at, record.bridge, record.bridge_at = row[4], row[5], row[6]
            record.last_heard, record.reach, record.since = row[7], row[8], row[9]
            record.ahead = set(ahead.get(community, ()))
            record.box = row[10]
            record.retired = set(retired.get(community, ()))
        log.info("mirror_resumed", communities=len(self.records),
                 events_in_order=sum(r.in_order for r in self.records.values()),
                 missing=sum(r.missing for r in self.records.values()))

    # -- the consumer -----------------------------------------------------------------

    async def run(self, source: Source) -> None:
        """Commit, then acknowledge, every batch until cancelled. A failing commit (a full
        disk) is retried with backoff; its messages stay unacknowledged meanwhile."""
        backoff = Backoff(base=0.5, cap=30.0, jitter=0.5)
        while True:
            batch = await source.batch(self._batch_max)
            if not batch:
                continue
            failures = 0
            while True:
                try:
                    await self.consume(batch)
                    break
                except sqlite3.Error as exc:
                    failures += 1
                    if failures == 1 or failures % 20 == 0:
                        log.error("mirror_commit_failed", error=str(exc), attempts=failures,
                                  messages=len(batch))
                    await asyncio.sleep(backoff.delay(failures - 1))
            source.ack(batch)

    async def consume(self, batch: Sequence[RawMessage]) -> None:
        """Commit what the batch says (returns once it is durable)."""
        self.stats.messages += len(batch)
        plan = _Plan()
        records = self.records
        for msg in batch:
            place = wire.community_of(self._prefix, msg.topic)
            if place is None:
                self._dead(plan, msg, RejectReason.NO_PROFILE, "not a district topic")
                continue
            community, leaf = place
            record = records.get(community)
            if record is None:
                self.stats.unknown_community += 1
                if community not in self._unknown_seen and len(self._unknown_seen) < 1000:
                    self._unknown_seen.add(community)
                    log.warning("district_unknown_community", community=community,
                                topic=msg.topic, fix="add it as a [[community]] of "
                                                     "district.toml, or remove its bridge")
                continue
            if len(msg.payload) > _MAX_PAYLOAD:
                self._dead(plan, msg, RejectReason.PAYLOAD_TOO_LARGE,
                           f"{len(msg.payload)} bytes")
                continue
            try:
                self._read(plan, record, leaf, msg)
            except (ValueError, KeyError, TypeError) as exc:
                self._dead(plan, msg, RejectReason.INVALID_JSON
                           if isinstance(exc, ValueError) else RejectReason.MISSING_FIELD,
                           str(exc)[:200])
        fresh = await self._db.call(lambda conn: _commit(conn, plan, records))
        self._after_commit(plan, fresh)
        if plan.touched and self.on_commit is not None:
            try:
                await self.on_commit(plan.touched)
            except Exception:  # the watch's own timer decides again in a moment
                log.exception("district_decision_failed", communities=sorted(plan.touched))

    def _read(self, plan: _Plan, record: Record, leaf: str, msg: RawMessage) -> None:
        now = msg.received_at
        community = record.id
        if leaf == wire.BRIDGE:
            text = msg.payload.strip()
            if text not in (b"0", b"1"):
                raise ValueError("a bridge notification is 0 or 1")
            record.bridge, record.bridge_at = text.decode(), now
            plan.touched.add(community)
            return
        if leaf == wire.REPLIES:
            record.last_heard = now
            plan.replies.append((community, msg.payload))
            return
        if leaf == wire.AGGREGATES:
            if self._keep_aggregates:
                plan.aggregates += [line for line in msg.payload.decode("utf-8").splitlines()
                                    if line.strip()]
            return
        if leaf == wire.HEARTBEAT:
            if not msg.payload:
                return  # its retained message cleared
            beat = wire.Heartbeat.parse(msg.payload)
            self.stats.heartbeats += 1
            heard = now
            if msg.retain and beat.ts is not None:
                # Retained: it may be old (the district restarted); judge it by its own time.
                heard = min(now, beat.ts)
            box = beat.extra.get("box")
            if not self._same_box(plan, record, box if isinstance(box, str) else None):
                return
            record.heartbeat, record.heartbeat_at = beat, heard
            if beat.state == "online":
                record.last_heard = max(record.last_heard or heard, heard)
                if community in plan.replaced:
                    # The new database's position: the old one's top means nothing now.
                    plan.tops[community] = max(plan.tops.get(community, 0), beat.last_seq)
                else:
                    record.top = max(record.top, beat.last_seq)
            plan.touched.add(community)
            return
        if leaf == wire.EVENTS:
            data = json.loads(msg.payload)
            if not isinstance(data, dict):
                raise ValueError("an event is a JSON object")
            seq, incident, type_ = data["seq"], data["incident"], data["type"]
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 \
                    or not isinstance(incident, str) or not isinstance(type_, str):
                raise TypeError("seq (a positive integer), incident and type are required")
            box = data.get("box")
            if not self._same_box(plan, record, box if isinstance(box, str) else None):
                return
            ts = data.get("ts")
            ts = float(ts) if isinstance(ts, int | float) else now
            record.last_heard = max(record.last_heard or now, now)
            plan.events.append((community, seq, incident, type_, ts, now,
                                msg.payload.decode("utf-8"),
                                box if isinstance(box, str) else None))
            if type_ in _STEP_TYPES and STREET_OFFICE in (data.get("roles") or ()):
                plan.street.append(("street_seq", community, incident, seq))
            elif type_ in ("acknowledged", "resolved"):
                plan.street.append(("ack_seq", community, incident, seq))
            plan.touched.add(community)
            return
        if leaf.startswith(wire.INCIDENTS + "/"):
            if not msg.payload:
                return  # the retained state of a resolved incident cleared
            data = json.loads(msg.payload)
            if not isinstance(data, dict):
                raise ValueError("an incident is a JSON object")
            box = data.pop("box", None)
            if not self._same_box(plan, record, box if isinstance(box, str) else None):
                return
            incident_id, updated, status = data["id"], data["updated_at"], data["status"]
            if not isinstance(incident_id, str) or not isinstance(updated, int | float):
                raise TypeError("id and updated_at are required")
            opened = data.get("opened_at")
            plan.incidents.append((
                community, incident_id, float(updated),
                float(opened) if isinstance(opened, int | float) else float(updated),
                int(status != "resolved"), str(status), int(bool(data.get("life_safety"))),
                msg.payload.decode("utf-8"), box if isinstance(box, str) else None))
            record.last_heard = max(record.last_heard or now, now)
            plan.touched.add(community)
            return
        raise KeyError(f"unknown topic leaf {leaf!r}")

    def _same_box(self, plan: _Plan, record: Record, box: str | None) -> bool:
        """Whether a message of this box's current database should be mirrored. A new id
        means the box's database was replaced (a new SD card, a reinstall: its seqs start
        again at 1): what the mirror holds of the old one is archived in this batch's
        commit (`_replaced`), so the new events are not taken for duplicates. Messages of a
        database replaced before are dropped (counted); boxes of older versions send no
        id and are taken as they come."""
        if not box:
            return True
        community = record.id
        if box in record.retired:
            self.stats.retired += 1
            return False
        current = plan.boxes.get(community, record.box)
        if current is None:
            plan.boxes[community] = box
            return True
        if box == current:
            return True
        if community in plan.replaced and box == plan.replaced[community][0]:
            self.stats.retired += 1  # a late message of the database replaced in this batch
            return False
        old = plan.replaced[community][0] if community in plan.replaced else current
        plan.replaced[community] = (old, box)
        plan.boxes[community] = box
        # Events of the old database read earlier in this batch: archived with the rest
        # (they are inserted before the archive moves them).
        return True

    def _dead(self, plan: _Plan, msg: RawMessage, reason: RejectReason, detail: str) -> None:
        self.stats.dead += 1
        plan.dead.append(DeadLetter(msg.topic, msg.payload[:4096], reason, detail,
                                    msg.received_at))
        place = wire.community_of(self._prefix, msg.topic)
        # Once per kind of topic (events, incidents, heartbeat...) and reason.
        key = (place[1].split("/", 1)[0] if place else "?", reason.value)
        if key not in self._dead_logged:
            # Once per kind of topic and reason: a box sending garbage must not flood the log.
            self._dead_logged.add(key)
            log.warning("district_dead_letter", topic=msg.topic, reason=reason.value,
                        detail=detail, read_with="GET /api/deadletters (district control API)")

    def _after_commit(self, plan: _Plan, fresh: Mapping[str, list[int]]) -> None:
        for community, box in plan.boxes.items():
            record = self.records[community]
            if community in plan.replaced:
                old, _ = plan.replaced[community]
                record.retired.add(old)
                record.in_order, record.top = 0, plan.tops.get(community, 0)
                record.ahead = set()
                record.gap_since, record.asked, record.asked_from = None, 0, -1
                record.resync_at = -math.inf
                self.stats.replaced += 1
                log.warning("district_box_replaced", community=community, old=old, new=box,
                            detail="the box's state database is new (its events start again "
                                   "at 1); the mirror's earlier events and incidents of it are "
                                   f"kept under {community}{_ARCHIVED}{old}")
            record.box = box
        for community, seqs in fresh.items():
            record = self.records[community]
            self.stats.events += len(seqs)
            record.ahead.update(s for s in seqs if s > record.in_order)
            record.top = max(record.top, max(seqs, default=0))
            _advance(record)
        self.stats.duplicates += len(plan.events) - sum(len(s) for s in fresh.values())
        self.stats.incidents += len(plan.incidents)
        handler = self.on_reply
        for community, payload in plan.replies:
            if handler is not None:
                try:
                    handler(community, payload)
                except Exception:  # a defect of the channel must not stop the mirror
                    log.exception("district_reply_failed", community=community)
        if plan.aggregates:
            try:
                self.aggregates.put_nowait(plan.aggregates)
            except asyncio.QueueFull:
                self.stats.aggregates_dropped += len(plan.aggregates)
        self.check_gaps()

    # -- gaps -------------------------------------------------------------------------

    def check_gaps(self) -> None:
        """Ask for what is missing (called after each commit and by the watch's timer)."""
        now = self._clock.now()
        for record in self.records.values():
            if record.top <= record.in_order:
                record.gap_since = None
                continue
            if record.gap_since is None:
                record.gap_since = now
                continue
            # The last resync moved the position (a long gap filling batch by batch, as
            # after a district's first start beside a box with history): ask on sooner.
            progress = record.asked_from >= 0 and record.in_order > record.asked_from
            interval = self._resync_after if progress else self._resync_interval
            if now - record.gap_since < self._resync_after \
                    or now - record.resync_at < interval \
                    or self.resync is None or record.reach in ("offline", "stopped"):
                continue
            if record.asked_from == record.in_order and record.asked >= RESYNC_TRIES:
                # Asked this often from here and nothing came: the box no longer has them
                # (or never published them). Go on from the next event here, so the gap
                # neither holds the position nor grows in memory.
                self._skip(record)
                continue
            record.asked = record.asked + 1 if record.asked_from == record.in_order else 1
            record.asked_from = record.in_order
            record.resync_at = now
            record.resyncs += 1
            self.stats.resyncs += 1
            log.info("district_resync", community=record.id, after=record.in_order,
                     top=record.top, missing=record.missing)
            task = asyncio.get_running_loop().create_task(
                self._send_resync(record.id, record.in_order))
            self._resyncing.add(task)
            task.add_done_callback(self._resyncing.discard)

    def _skip(self, record: Record) -> None:
        lost_to = min(record.ahead) - 1 if record.ahead else record.top
        self.stats.lost += lost_to - record.in_order
        log.error("district_events_lost", community=record.id, first=record.in_order + 1,
                  last=lost_to, resyncs=record.asked,
                  detail="the box did not republish them; the mirror goes on without")
        record.in_order = lost_to
        record.asked, record.asked_from, record.gap_since = 0, -1, None
        _advance(record)
        self.skipped.add(record.id)

    async def _send_resync(self, community: str, after: int) -> None:
        assert self.resync is not None
        try:
            await self.resync(community, after)
        except Exception as exc:  # the next check asks again
            log.warning("district_resync_failed", community=community, error=str(exc))

    async def prune(self, keep_days: float) -> int:
        """Delete events older than `keep_days` and incidents resolved before then; the
        positions stay (a late copy of a deleted event is stored again, harmlessly)."""
        horizon = self._clock.now() - keep_days * 86400

        def prune(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                events = conn.execute("DELETE FROM mirror_events WHERE received < ?",
                                      (horizon,)).rowcount
                incidents = conn.execute(
                    "DELETE FROM mirror_incidents WHERE open = 0 AND updated_at < ?",
                    (horizon,)).rowcount
            return int(events) + int(incidents)
        removed = await self._db.call(prune)
        if removed:
            log.info("mirror_pruned", rows=removed, keep_days=keep_days)
        return removed

    async def save_records(self, communities: Iterable[str]) -> None:
        """Persist reach changes (the watch decides them)."""
        rows = [self.records[c].row() for c in communities if c in self.records]
        if not rows:
            return

        def save(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                _upsert_communities(conn, rows)
        await self._db.call(save)

    # -- DistrictView -----------------------------------------------------------------

    async def communities(self) -> list[CommunityState]:
        counts = await self._db.call(_counts)
        whistled = await self._db.call(_whistled)
        states = [self._state(c, counts.get(c), c in whistled) for c in self.records]
        return sorted(states, key=board_order)

    async def community(self, community: str) -> CommunityState | None:
        if community not in self.records:
            return None
        counts = await self._db.call(lambda conn: _counts(conn, community))
        whistled = await self._db.call(lambda conn: _whistled(conn, community))
        return self._state(community, counts.get(community), community in whistled)

    async def incidents(self, community: str, open_only: bool = True) -> list[dict[str, Any]]:
        sql = "SELECT data FROM mirror_incidents WHERE community = ? AND updated_at > 0"
        if open_only:
            sql += " AND open = 1"
        sql += " ORDER BY opened_at, id"
        rows = await self._db.call(lambda conn: conn.execute(sql, (community,)).fetchall())
        return [json.loads(d) for (d,) in rows]

    async def incident(self, community: str, incident_id: str) -> dict[str, Any] | None:
        row = await self._db.call(lambda conn: conn.execute(
            "SELECT data FROM mirror_incidents WHERE community = ? AND id = ?"
            " AND updated_at > 0", (community, incident_id)).fetchone())
        return json.loads(row[0]) if row else None

    async def timeline(self, community: str, incident_id: str) -> list[dict[str, Any]]:
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT data FROM mirror_events WHERE community = ? AND incident = ?"
            " ORDER BY seq", (community, incident_id)).fetchall())
        return [json.loads(d) for (d,) in rows]

    async def events(self, community: str, after: int = 0, limit: int = 1000
                     ) -> list[dict[str, Any]]:
        """A community's mirrored events after `after`, in seq order."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT data FROM mirror_events WHERE community = ? AND seq > ? ORDER BY seq"
            " LIMIT ?", (community, after, limit)).fetchall())
        return [json.loads(d) for (d,) in rows]

    async def whistles(self) -> set[tuple[str, str, str]]:
        """(community, box incident id, severity) of every incident to whistle now."""
        rows = await self._db.call(lambda conn: conn.execute(
            "SELECT community, id, data FROM mirror_incidents WHERE street_seq > ack_seq"
            " AND open = 1"
            " AND life_safety = 1 AND status = 'firing'").fetchall())
        return {(c, i, str(json.loads(d).get("severity", "critical"))) for c, i, d in rows
                if c in self.records}

    async def incident_rows(self, pairs: Iterable[tuple[str, str]]
                            ) -> dict[tuple[str, str], dict[str, Any]]:
        wanted = list(pairs)

        def read(conn: sqlite3.Connection) -> dict[tuple[str, str], dict[str, Any]]:
            out = {}
            for community, incident_id in wanted:
                row = conn.execute("SELECT data FROM mirror_incidents WHERE community = ?"
                                   " AND id = ?", (community, incident_id)).fetchone()
                if row:
                    out[(community, incident_id)] = json.loads(row[0])
            return out
        return await self._db.call(read)

    def _state(self, community: str, counts: tuple[int, int, int, dict[str, Any] | None] | None,
               whistled: bool) -> CommunityState:
        record = self.records[community]
        config = self._communities[community]
        beat = record.heartbeat
        open_, unack, ls_unack, oldest = counts or (0, 0, 0, None)
        return CommunityState(
            id=community, name=config.name or (beat.name if beat else "") or community,
            reach=record.reach, since=record.since, last_heard=record.last_heard,
            phone=config.phone, version=beat.version if beat else "", open=open_,
            unacknowledged=unack, life_safety_unacknowledged=ls_unack,
            oldest_unacknowledged=oldest, whistled=whistled, last_seq=record.in_order,
            missing=record.missing,
            extra={"bridge": record.bridge, "top": record.top,
                   "devices": beat.devices if beat else 0})


def board_order(state: CommunityState) -> tuple[int, int, str]:
    """Offline and whistled first, then unacknowledged life-safety, then the rest."""
    first = 0 if state.reach == "offline" or state.whistled else \
        1 if state.life_safety_unacknowledged else 2
    return (first, -state.life_safety_unacknowledged, state.name)


def _advance(record: Record) -> None:
    ahead = record.ahead
    while record.in_order + 1 in ahead:
        record.in_order += 1
        ahead.discard(record.in_order)
    if record.in_order >= record.top:
        record.gap_since = None


def _upsert_communities(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO mirror_communities (community, in_order, top, heartbeat, heartbeat_at,"
        " bridge, bridge_at, last_heard, reach, since, box)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(community) DO UPDATE SET in_order = excluded.in_order,"
        " top = excluded.top, heartbeat = excluded.heartbeat,"
        " heartbeat_at = excluded.heartbeat_at, bridge = excluded.bridge,"
        " bridge_at = excluded.bridge_at, last_heard = excluded.last_heard,"
        " reach = excluded.reach, since = excluded.since, box = excluded.box", rows)


def _commit(conn: sqlite3.Connection, plan: _Plan, records: Mapping[str, Record]
            ) -> dict[str, list[int]]:
    """Write the batch in one transaction; the seqs that were new, per community."""
    fresh: dict[str, list[int]] = {}
    with transaction(conn):
        for community, (old, new) in plan.replaced.items():
            # The old database's events of this very batch are archived too: insert them
            # first (they carry its id), then move everything of the old database aside.
            for row in plan.events:
                if row[0] == community and row[7] != new:
                    conn.execute(
                        "INSERT OR IGNORE INTO mirror_events (community, seq, incident, type,"
                        " ts, received, data) VALUES (?, ?, ?, ?, ?, ?, ?)", row[:7])
            archived = f"{community}{_ARCHIVED}{old}"
            conn.execute("UPDATE OR IGNORE mirror_events SET community = ? WHERE community = ?",
                         (archived, community))
            # Closed in the archive: a replaced database's incidents cannot be acted on,
            # counted or whistled any more (the box's board shows what the new one holds).
            conn.execute("UPDATE OR IGNORE mirror_incidents SET community = ?, open = 0"
                         " WHERE community = ?", (archived, community))
        for row in plan.events:
            if row[0] in plan.replaced and row[7] != plan.replaced[row[0]][1]:
                continue
            row = row[:7]
            cursor = conn.execute(
                "INSERT OR IGNORE INTO mirror_events (community, seq, incident, type, ts,"
                " received, data) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            if cursor.rowcount:
                fresh.setdefault(row[0], []).append(row[1])
        if plan.incidents:
            # The newest state wins; an older one arriving late (a resync, a redelivery)
            # does not overwrite it.
            conn.executemany(
                "INSERT INTO mirror_incidents (community, id, updated_at, opened_at, open,"
                " status, life_safety, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(community, id) DO UPDATE SET updated_at = excluded.updated_at,"
                " opened_at = excluded.opened_at, open = excluded.open,"
                " status = excluded.status, life_safety = excluded.life_safety,"
                " data = excluded.data WHERE excluded.updated_at >= updated_at",
                [row[:8] for row in plan.incidents
                 if row[0] not in plan.replaced or row[8] == plan.replaced[row[0]][1]])
        for column, community, incident, seq in plan.street:
            # A placeholder (updated_at 0) until the incident's state arrives.
            conn.execute(
                "INSERT INTO mirror_incidents (community, id, updated_at, opened_at, open,"
                f" status, life_safety, data, {column}) VALUES (?, ?, 0, 0, 1, 'firing', 0,"
                f" '{{}}', ?) ON CONFLICT(community, id) DO UPDATE SET {column} ="
                f" max({column}, excluded.{column})", (community, incident, seq))
        if plan.dead:
            insert_deadletters(conn, plan.dead)
        touched = plan.touched | set(fresh)
        if touched:
            # Positions as they will be once these events count (computed like _advance).
            rows = []
            for community in touched:
                record = records[community]
                seqs = fresh.get(community, [])
                if community in plan.replaced:
                    probe = Record(record.id, 0, max(plan.tops.get(community, 0), *seqs, 0),
                                   ahead=set(seqs))
                else:
                    probe = Record(record.id, record.in_order, max(record.top, *seqs, 0),
                                   ahead=record.ahead | set(seqs))
                _advance(probe)
                row = record.row()
                rows.append((row[0], probe.in_order, probe.top, *row[3:10],
                             plan.boxes.get(community, record.box)))
            _upsert_communities(conn, rows)
    return fresh


def _counts(conn: sqlite3.Connection, community: str | None = None
            ) -> dict[str, tuple[int, int, int, dict[str, Any] | None]]:
    where = "WHERE open = 1 AND updated_at > 0" + (" AND community = ?" if community else "")
    args: tuple[Any, ...] = (community,) if community else ()
    out: dict[str, tuple[int, int, int, dict[str, Any] | None]] = {}
    for c, open_, unack, ls_unack in conn.execute(
            "SELECT community, count(*), sum(status = 'firing'),"
            " sum(status = 'firing' AND life_safety = 1) FROM mirror_incidents "
            + where + " GROUP BY community", args):
        out[c] = (int(open_), int(unack or 0), int(ls_unack or 0), None)
    for c, data in conn.execute(
            "SELECT community, data FROM mirror_incidents " + where
            + " AND status = 'firing' AND life_safety = 1 ORDER BY opened_at DESC", args):
        inc = json.loads(data)
        # Ordered newest first: the last one written per community is the oldest.
        oldest = {k: inc.get(k) for k in ("id", "name", "kind", "severity", "opened_at")}
        oldest["place"] = inc.get("place")
        o, u, s, _ = out[c]
        out[c] = (o, u, s, oldest)
    return out


def _whistled(conn: sqlite3.Connection, community: str | None = None) -> set[str]:
    sql = ("SELECT DISTINCT community FROM mirror_incidents WHERE street_seq > ack_seq"
           " AND open = 1"
           " AND life_safety = 1 AND status = 'firing'")
    args: tuple[Any, ...] = ()
    if community:
        sql += " AND community = ?"
        args = (community,)
    return {c for (c,) in conn.execute(sql, args)}


def mirror_db(path: Any, synchronous: str = "normal") -> SqliteDb:
    return SqliteDb(path, SCHEMA, synchronous=synchronous)
