"""The district's commands to this box: verify, execute once, reply.

Commands arrive on `<prefix>/<community>/commands` on the daemon's one MQTT connection
(MqttSource.route: they never reach the decoder). Each is verified with the community's
command key (wire.verify_command); a forged one, one for another community or an expired
one is refused. Its id is kept in the state database (`district_commands`, at least
wire.MAX_COMMAND_TTL) with the reply it got: the same id again is not executed again, it
gets that first reply once more, marked `replayed`. The message is acknowledged to the
broker after that row is committed, so a crash before it means a redelivery, and the
district's own retries are answered, not repeated.

Commands are handled one at a time on a bounded queue, in a task of their own: nothing
here waits in the path of an alarm.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from sentinel.clock import Clock
from sentinel.control import tokens
from sentinel.district import wire
from sentinel.incidents.model import Status
from sentinel.incidents.publish import Publisher, event_payload
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore
from sentinel.notify.channels import name_district_person
from sentinel.store.db import transaction
from sentinel.types import RawMessage

log = structlog.get_logger("sentinel.uplink")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS district_commands (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    received_at REAL NOT NULL,
    reply BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS district_people (
    person TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    seen_at REAL NOT NULL
);
"""
# Commands waiting to be handled at most; more are left unacknowledged (the broker sends
# them again on the next connection) and counted.
_QUEUE_MAX = 256
# A command's whole handling; a relayed page is awaited by a person (wire.HTTP_TTL).
_EXECUTE_TIMEOUT = 8.0
_REPLY_TIMEOUT = 5.0
# Events republished per resync command; the district asks again for the rest.
RESYNC_BATCH = 500
# Seen ids are kept this long (and pruned this often).
_KEEP = wire.MAX_COMMAND_TTL + 600.0
_PRUNE_EVERY = 600.0
_TOKEN_PATH = re.compile(r"/a/[A-Za-z0-9_\-.]{1,2048}")
_PERSON = re.compile(r"district:([^\s:]{1,100})")
_TEXT_MAX = 2000
# Headers of the box's answer that the relay must pass on: the page's own security policy
# and caching rules are what makes it safe to show.
_PASS_HEADERS = ("Content-Security-Policy", "Cache-Control", "X-Frame-Options",
                 "X-Content-Type-Options", "Referrer-Policy", "Content-Language")


class Refused(Exception):
    """A command that was verified but cannot be carried out; `reason` goes in the reply."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class CommandHandler:
    def __init__(self, community: str, key: bytes | None, prefix: str,
                 incidents: IncidentService, state: StateStore, client: Publisher,
                 ack: Callable[[Sequence[RawMessage]], int], clock: Clock,
                 control_socket: Path | None, instance: str = "") -> None:
        self.community = community
        # The state database's id, on republished events as on live ones.
        self.instance = instance
        self._key = key
        self._prefix = prefix
        self.topic = wire.topic(prefix, community, wire.COMMANDS)
        self._replies = wire.topic(prefix, community, wire.REPLIES)
        self._events = wire.topic(prefix, community, wire.EVENTS)
        self._incidents = incidents
        self._state = state
        self._client = client
        self._ack = ack
        self._clock = clock
        self._socket = control_socket
        self._queue: asyncio.Queue[RawMessage] = asyncio.Queue(_QUEUE_MAX)
        self._http: aiohttp.ClientSession | None = None
        # Counters (metrics, tests): executed by type, refused by reason.
        self.executed: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.replayed = 0
        self.overflow = 0
        self._logged: set[str] = set()

    # -- the source's side ------------------------------------------------------------

    def put(self, message: RawMessage) -> None:
        """MqttSource.route's handler: on the event loop, as the message is read."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflow += 1
            if self.overflow == 1 or self.overflow % 100 == 0:
                log.warning("district_commands_overflow", dropped=self.overflow,
                            detail="left unacknowledged: the broker sends them again")

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        def setup(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            conn.executescript(_SCHEMA)
            return conn.execute("SELECT person, name FROM district_people").fetchall()

        for person, name in await self._state.call(setup):
            name_district_person(person, name)
        if self._key is None:
            log.warning("district_command_key_missing", community=self.community,
                        detail="[district] command_key_file is not set: every command from "
                               "the district is refused")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        prune_at = 0.0
        try:
            while True:
                if loop.time() >= prune_at:
                    await self._prune()
                    prune_at = loop.time() + _PRUNE_EVERY
                message = await self._queue.get()
                try:
                    await self.handle(message)
                except Exception:  # one bad command must not end the uplink
                    log.exception("district_command_failed", topic=message.topic)
        finally:
            if self._http is not None:
                await self._http.close()
                self._http = None

    async def _prune(self) -> None:
        before = self._clock.now() - _KEEP

        def prune(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                return conn.execute("DELETE FROM district_commands WHERE received_at < ?",
                                    (before,)).rowcount

        pruned = await self._state.call(prune)
        if pruned:
            log.info("district_commands_pruned", rows=pruned)

    # -- one command ------------------------------------------------------------------

    async def handle(self, message: RawMessage) -> None:
        now = self._clock.now()
        try:
            if self._key is None:
                raise wire.CommandError("no_key")
            command = wire.verify_command(self._key, self.community, message.payload, now)
        except wire.CommandError as exc:
            await self._refuse(message, exc.reason)
            return
        first = await self._state.call(lambda conn: conn.execute(
            "SELECT reply FROM district_commands WHERE id = ?", (command.id,)).fetchone())
        if first is not None:
            self.replayed += 1
            log.info("district_command_replayed", id=command.id, type=command.type)
            self._ack([message])
            data = json.loads(first[0])
            data["replayed"] = True
            await self._reply(json.dumps(data, ensure_ascii=False,
                                         separators=(",", ":")).encode())
            return
        try:
            async with asyncio.timeout(_EXECUTE_TIMEOUT):
                answer = await self._execute(command)
            self.executed[command.type] = self.executed.get(command.type, 0) + 1
        except Refused as exc:
            self._count_refusal(exc.reason, command.id, command.type)
            answer = wire.reply(command.id, False, error=exc.reason)
        except TimeoutError:
            self._count_refusal("timeout", command.id, command.type)
            answer = wire.reply(command.id, False, error="timeout")
        # Committed before the broker hears of it: a redelivery finds the id seen.
        await self._state.call(lambda conn: _record(conn, command, now, answer))
        self._ack([message])
        await self._reply(answer)

    async def _refuse(self, message: RawMessage, reason: str) -> None:
        command_id = _claimed_id(message.payload)
        self._count_refusal(reason, command_id, None)
        self._ack([message])
        if command_id is not None:
            await self._reply(wire.reply(command_id, False, error=reason))

    def _count_refusal(self, reason: str, command_id: str | None, type_: str | None) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        # Logged once per reason (at info later): a flood of forged commands must not
        # flood the log; the counters say how many.
        level = log.warning if reason not in self._logged else log.debug
        self._logged.add(reason)
        level("district_command_refused", reason=reason, id=command_id, type=type_,
              refused=self.refused[reason])

    async def _reply(self, payload: bytes) -> None:
        future = self._client.start_publish(self._replies, payload, qos=1)
        try:
            async with asyncio.timeout(_REPLY_TIMEOUT):
                await future
        except (ConnectionError, TimeoutError) as exc:
            # The district asks again with the same id and gets this reply (replayed).
            log.warning("district_reply_not_sent", error=str(exc))

    async def _execute(self, command: wire.Command) -> bytes:
        fields = command.fields
        if command.type == "ack":
            return await self._ack_incident(command.id, fields)
        if command.type == "note":
            return await self._note(command.id, fields)
        if command.type == "http":
            return await self._relay(command.id, fields)
        return await self._resync(command.id, fields)

    # -- ack and note -----------------------------------------------------------------

    def _person(self, fields: Mapping[str, Any]) -> tuple[str, str]:
        actor, name = fields.get("actor"), fields.get("name")
        if not isinstance(actor, str) or (match := _PERSON.fullmatch(actor)) is None:
            raise Refused("bad_actor")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            name = match.group(1)
        return actor, name.strip()

    async def _remember(self, actor: str, name: str) -> None:
        person = actor.partition(":")[2]
        name_district_person(person, name)
        now = self._clock.now()

        def save(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("INSERT INTO district_people (person, name, seen_at) "
                             "VALUES (?, ?, ?) ON CONFLICT (person) DO UPDATE SET "
                             "name = excluded.name, seen_at = excluded.seen_at",
                             (person, name, now))

        await self._state.call(save)

    def _open_incident(self, fields: Mapping[str, Any]) -> str:
        incident_id = fields.get("incident")
        if not isinstance(incident_id, str) or not incident_id:
            raise Refused("malformed")
        inc = self._incidents.incident(incident_id)
        if inc is None:
            raise Refused("unknown_incident")
        if not inc.open:
            raise Refused("closed")
        return incident_id

    async def _ack_incident(self, command_id: str, fields: Mapping[str, Any]) -> bytes:
        actor, name = self._person(fields)
        incident_id = self._open_incident(fields)
        note = fields.get("note")
        note = note[:_TEXT_MAX] if isinstance(note, str) and note.strip() else None
        before = self._incidents.incident(incident_id)
        if before is not None and before.status == Status.ACKNOWLEDGED:
            # Someone on the box was first: the district person sees who.
            return wire.reply(command_id, True, already=True, incident=incident_id,
                              acknowledged_by=before.acknowledged_by,
                              acknowledged_at=before.acknowledged_at)
        await self._remember(actor, name)
        try:
            # The same path as a person's acknowledgement: the climb stops with it.
            inc = await self._incidents.acknowledge(incident_id, actor, note, name=name)
        except KeyError:
            raise Refused("closed") from None
        log.info("incident_acknowledged", incident_id=incident_id, actor=actor, via="district")
        return wire.reply(command_id, True, already=inc.acknowledged_by != actor,
                          incident=incident_id, acknowledged_by=inc.acknowledged_by,
                          acknowledged_at=inc.acknowledged_at)

    async def _note(self, command_id: str, fields: Mapping[str, Any]) -> bytes:
        actor, name = self._person(fields)
        incident_id = self._open_incident(fields)
        text = fields.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > _TEXT_MAX:
            raise Refused("malformed")
        await self._remember(actor, name)
        try:
            await self._incidents.note(incident_id, actor, text.strip(), name=name)
        except KeyError:
            raise Refused("closed") from None
        log.info("incident_noted", incident_id=incident_id, actor=actor, via="district")
        return wire.reply(command_id, True, incident=incident_id)

    # -- the link relay ---------------------------------------------------------------

    async def _relay(self, command_id: str, fields: Mapping[str, Any]) -> bytes:
        """A one-tap link opened at the district: the same request to this box's own
        control server (its Unix socket, so it works with HTTP off), which verifies the
        link token itself; its answer goes back as it is."""
        method, path = fields.get("method"), fields.get("path")
        if method not in ("GET", "POST") or not isinstance(path, str) \
                or not _TOKEN_PATH.fullmatch(path):
            raise Refused("bad_request")
        if self._socket is None:
            raise Refused("no_control")
        try:
            body = base64.b64decode(fields.get("body") or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise Refused("bad_request") from None
        if len(body) > wire.MAX_HTTP_BODY:
            raise Refused("too_large")
        headers: dict[str, str] = {}
        content_type = fields.get("content_type")
        if isinstance(content_type, str) and content_type and method == "POST":
            headers["Content-Type"] = content_type[:200]
        language = fields.get("accept_language")
        if isinstance(language, str) and language:
            headers["Accept-Language"] = language[:100]
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self._socket)),
                timeout=aiohttp.ClientTimeout(total=_EXECUTE_TIMEOUT - 1))
        try:
            async with self._http.request(method, f"http://box{path}", data=body or None,
                                          headers=headers, allow_redirects=False) as response:
                answer = await response.content.read(wire.MAX_HTTP_BODY + 1)
                if len(answer) > wire.MAX_HTTP_BODY:
                    raise Refused("too_large")
                passed = {h: response.headers[h] for h in _PASS_HEADERS
                          if h in response.headers}
                return wire.reply(command_id, True, status=response.status,
                                  content_type=response.headers.get("Content-Type", ""),
                                  headers=passed, body=answer)
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("district_relay_failed", error=f"{exc.__class__.__name__}: {exc}")
            raise Refused("control_unreachable") from None

    # -- resync -----------------------------------------------------------------------

    async def _resync(self, command_id: str, fields: Mapping[str, Any]) -> bytes:
        after = fields.get("after")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise Refused("malformed")
        events = await self._incidents.events_after(after, RESYNC_BATCH)
        sends = [self._client.start_publish(self._events,
                                              event_payload(e, self.instance), qos=1)
                 for e in events]
        if sends:
            done, pending = await asyncio.wait(sends, timeout=_EXECUTE_TIMEOUT - 1)
            for future in pending:
                future.cancel()
            if pending or any(f.exception() is not None for f in done):
                raise Refused("publish_failed")
        last = events[-1].seq if events else after
        log.info("district_resync", after=after, events=len(events), last=last)
        return wire.reply(command_id, True, count=len(events), last=last,
                          more=len(events) == RESYNC_BATCH)


def _record(conn: sqlite3.Connection, command: wire.Command, now: float, answer: bytes
            ) -> None:
    with transaction(conn):
        conn.execute("INSERT OR IGNORE INTO district_commands (id, type, received_at, reply) "
                     "VALUES (?, ?, ?, ?)", (command.id, command.type, now, answer))


def _claimed_id(payload: bytes) -> str | None:
    """The id a refused command claims (unverified), to address the refusal to it."""
    try:
        claims = json.loads(tokens.b64decode(payload.split(b".", 1)[0].decode("ascii")))
    except (UnicodeDecodeError, ValueError, binascii.Error):
        return None
    found = claims.get("id") if isinstance(claims, dict) else None
    return found[:100] if isinstance(found, str) and found else None
