"""Publish the incident stream to MQTT for other systems (the district platform, a wall board).

`<prefix>/<community>/incidents/<id>`: the incident's current state, retained while it is
open; when it resolves, its final state is published once and the retained message is
cleared. `<prefix>/<community>/events`: every audit-trail event, in order (not retained).

Works from a durable cursor over the event log: after a crash or a broker outage it
resumes from the last cursor saved (at most a second behind what the broker acknowledged),
so a subscriber sees every event at least once.

This stage is for onlookers, not for paging: it waits a moment after an event so that the
escalation pass and the first notification go first, and publishes what came meanwhile
in one batch (an alarm brings about seven events within milliseconds).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sqlite3
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from sentinel.clock import Clock, SystemClock
from sentinel.incidents.cursor import EventCursor
from sentinel.incidents.model import Incident, IncidentEvent
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore
from sentinel.store.db import transaction

log = structlog.get_logger("sentinel.incidents.publish")

CURSOR_KEY = "mqtt_published_seq"
_PUBLISH_TIMEOUT = 10.0
# Wait after the first new event before publishing (see the module docstring).
_COALESCE = 0.02
# The cursor is saved at most this often: each save is a commit of the state database.
_CURSOR_EVERY = 1.0


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    async def wait_connected(self) -> None: ...

    def start_publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> asyncio.Future[None]: ...


def topic_level(text: str) -> str:
    """A safe single topic level (no separators or wildcards)."""
    cleaned = re.sub(r"[/#+\x00]", "_", text).strip() or "_"
    return cleaned[:100]


def incident_payload(inc: Incident, instance: str = "") -> bytes:
    data = inc.to_json()
    if instance:
        data["box"] = instance  # as on events (event_payload)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def event_payload(event: IncidentEvent, instance: str = "") -> bytes:
    """`instance`: the state database's id (`box_instance`): a subscriber that keeps events
    by `seq` tells a box whose database was replaced (its seq starts again at 1) by it."""
    data: dict[str, Any] = {"seq": event.seq, "incident": event.incident_id,
                            "type": event.type, "ts": event.ts, "actor": event.actor,
                            "severity": event.severity.label, "status": event.status.value,
                            **{k: v for k, v in event.data.items() if k != "place"}}
    if instance:
        data["box"] = instance
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode()


INSTANCE_KEY = "box_instance"


async def box_instance(store: StateStore) -> str:
    """This state database's id, made once: it changes only when the database is replaced
    (a new SD card, a reinstall), which is when the event seqs start again at 1."""
    def read_or_make(conn: sqlite3.Connection) -> str:
        with transaction(conn):
            row = conn.execute("SELECT value FROM meta WHERE key = ?",
                               (INSTANCE_KEY,)).fetchone()
            if row is not None:
                return str(row[0])
            made = secrets.token_hex(8)
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (INSTANCE_KEY, made))
            return made
    return await store.call(read_or_make)


class IncidentPublisher:
    def __init__(self, service: IncidentService, store: StateStore, client: Publisher,
                 prefix: str, clock: Clock | None = None, community: str = "",
                 instance: str = "") -> None:
        self._service = service
        self._clock = clock if clock is not None else SystemClock()
        self._store = store
        self._client = client
        self._prefix = prefix.rstrip("/")
        # With a district ([district] community), every incident goes under the box's one
        # community id: the district's bridge and ACL confine a box to that subtree, and
        # a place's community name (Chinese, free text) is not an id the district knows.
        self._community = topic_level(community) if community else ""
        self._instance = instance
        self.published = 0
        # The newest event seq the broker has acknowledged (the heartbeat reports it, so
        # the district can tell a gap from a quiet box).
        self.last_seq = 0

    def _community_of(self, inc: Incident) -> str:
        return self._community or topic_level(inc.place.get("community", "sentinel"))

    async def _incident(self, incident_id: str) -> Incident | None:
        book = self._service.book
        found = book.get(incident_id) if book is not None else None
        return found if found is not None else await self._store.incident(incident_id)

    async def run(self) -> None:
        cursor = EventCursor(CURSOR_KEY, self._clock, _CURSOR_EVERY)
        saved = await self._store.call(cursor.read)
        cursor.start_at(saved if saved is not None else 0)
        self.last_seq = cursor.position
        failures = 0
        while True:
            if cursor.save_due:
                def save(conn: sqlite3.Connection) -> int:
                    with transaction(conn):
                        return cursor.write(conn)
                cursor.written(await self._store.call(save))
            events = await self._service.events_after(
                cursor.position, 200,
                wait=5.0 if cursor.position == cursor.saved else _CURSOR_EVERY)
            if not events:
                continue
            await asyncio.sleep(_COALESCE)
            events += await self._service.events_after(events[-1].seq, 500)
            try:
                await self._publish(events)
            except (ConnectionError, TimeoutError) as exc:
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning("incident_publish_failed", error=str(exc), cursor=cursor,
                                attempts=failures)
                await asyncio.sleep(min(5.0, 0.2 * failures))
                continue
            failures = 0
            cursor.advance(events[-1].seq)
            self.last_seq = events[-1].seq

    async def _publish(self, events: list[IncidentEvent]) -> None:
        async with asyncio.timeout(_PUBLISH_TIMEOUT):
            await self._client.wait_connected()
        latest: dict[str, Incident] = {}
        for event in events:
            if event.incident_id not in latest:
                found = await self._incident(event.incident_id)
                if found is not None:
                    latest[found.id] = found
        # Handed to the connection in order, acknowledged together: one round trip per
        # batch instead of one per message.
        publish: Callable[..., asyncio.Future[None]] = self._client.start_publish
        sends: list[asyncio.Future[None]] = []
        for event in events:
            inc = latest.get(event.incident_id)
            if inc is None:
                continue
            community = self._community_of(inc)
            sends.append(publish(f"{self._prefix}/{community}/events",
                                 event_payload(event, self._instance)))
        for inc in latest.values():
            community = self._community_of(inc)
            topic = f"{self._prefix}/{community}/incidents/{topic_level(inc.id)}"
            if inc.open:
                sends.append(publish(topic, incident_payload(inc, self._instance), retain=True))
            else:
                sends.append(publish(topic, incident_payload(inc, self._instance)))
                sends.append(publish(topic, b"", retain=True))
        if not sends:
            return
        try:
            done, pending = await asyncio.wait(sends, timeout=_PUBLISH_TIMEOUT)
        except asyncio.CancelledError:
            # Shutdown: nobody will look at these any more. Cancelled, they are skipped
            # when the connection closes, instead of failing as "never retrieved".
            for future in sends:
                future.cancel()
            raise
        for future in pending:
            future.cancel()
        results = [f.exception() if not f.cancelled() else TimeoutError("no PUBACK")
                   for f in [*done, *pending]]
        failed = [r for r in results if r is not None]
        if failed:
            raise ConnectionError(f"{len(failed)} of {len(sends)} publishes failed: {failed[0]}")
        self.published += len(sends)
