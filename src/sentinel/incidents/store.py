"""The state database: incidents, their audit trail, rule state, last-seen times, windows.

A SQLite file of its own under `state_dir` (not the readings store), so an alarm's commit
never queues behind a batch of telemetry, and `synchronous=FULL` by default: an incident
that was opened survives a power cut. Events are appended and never updated.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sentinel.incidents.model import Incident, IncidentEvent, Status
from sentinel.incidents.windows import Recurrence, Window, split_scope
from sentinel.rules.engine import CondState
from sentinel.store.db import SqliteDb, open_readonly, transaction
from sentinel.store.reserve import DiskGuard, is_disk_full
from sentinel.types import Severity

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    severity INTEGER NOT NULL,
    opened_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    number INTEGER NOT NULL,
    data TEXT NOT NULL
);
-- At most one open incident per key: a duplicate would be a bug, and this makes it loud.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_open_key ON incidents(key)
    WHERE status != 'resolved';
CREATE INDEX IF NOT EXISTS incidents_status ON incidents(status, opened_ms);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    incident_id TEXT NOT NULL,
    type TEXT NOT NULL,
    actor TEXT NOT NULL,
    severity INTEGER NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_incident ON events(incident_id, seq);
CREATE TABLE IF NOT EXISTS rule_state (
    rule TEXT NOT NULL,
    device_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (rule, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS last_seen (
    device_id TEXT PRIMARY KEY,
    ts REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flaps (
    key TEXT PRIMARY KEY,
    times TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    scope TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    created REAL NOT NULL,
    removed REAL,
    removed_by TEXT,
    -- What a silence mutes beyond its place (JSON lists), whether it may mute life-safety
    -- incidents, and its weekly recurrence (JSON, NULL: one period from start to end).
    kinds TEXT NOT NULL DEFAULT '[]',
    rules TEXT NOT NULL DEFAULT '[]',
    life_safety INTEGER NOT NULL DEFAULT 0,
    every TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class Changes:
    """One atomic commit of the rules and incidents stages."""

    incidents: Sequence[Incident] = ()
    events: Sequence[IncidentEvent] = ()
    states: Mapping[tuple[str, str], CondState] | None = None
    last_seen: Mapping[str, float] | None = None
    flaps: Mapping[str, list[float]] | None = None
    meta: Mapping[str, str] | None = None
    # Writes of a later stage (escalation, outbox) that must commit atomically with events.
    extra: Callable[[sqlite3.Connection], None] | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything needed to resume after a restart."""

    incidents: list[Incident]
    states: dict[tuple[str, str], dict[str, Any]]
    last_seen: dict[str, float]
    flaps: dict[str, list[float]]
    meta: dict[str, str]
    next_number: int
    last_seq: int


def _number(incident_id: str) -> int:
    try:
        return int(incident_id.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


class StateStore:
    """Async access to the state database (one connection on its own thread)."""

    def __init__(self, path: Path, synchronous: str = "full",
                 disk: DiskGuard | None = None) -> None:
        self.path = path
        self._db = SqliteDb(path, SCHEMA, synchronous=synchronous)
        self._disk = disk
        # Transactions of the rules and incident stages (each one a durable write).
        self.commits = 0

    async def __aenter__(self) -> StateStore:
        await self._db.open()
        await self._db.call(migrate)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.close()

    async def load(self) -> Snapshot:
        def load(conn: sqlite3.Connection) -> Snapshot:
            incidents = [Incident.from_json(json.loads(d)) for (d,) in conn.execute(
                "SELECT data FROM incidents WHERE status != 'resolved' ORDER BY number")]
            states = {(r, d): json.loads(x) for r, d, x in
                      conn.execute("SELECT rule, device_id, data FROM rule_state")}
            seen = dict(conn.execute("SELECT device_id, ts FROM last_seen"))
            flaps = {k: json.loads(t) for k, t in conn.execute("SELECT key, times FROM flaps")}
            meta = dict(conn.execute("SELECT key, value FROM meta"))
            top = conn.execute("SELECT max(number) FROM incidents").fetchone()[0] or 0
            seq = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            return Snapshot(incidents, states, seen, flaps, meta, top + 1, seq)
        return await self._db.call(load)

    async def commit(self, changes: Changes) -> list[IncidentEvent]:
        """Write everything in one transaction; return the events with their seq."""
        def commit(conn: sqlite3.Connection) -> list[IncidentEvent]:
            stored: list[IncidentEvent] = []
            with transaction(conn):
                if changes.incidents:
                    conn.executemany(
                        "INSERT INTO incidents (id, key, status, severity, opened_ms,"
                        " updated_ms, number, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT(id) DO UPDATE SET status=excluded.status,"
                        " severity=excluded.severity, updated_ms=excluded.updated_ms,"
                        " data=excluded.data",
                        [(i.id, i.key, i.status.value, int(i.severity), round(i.opened_at * 1000),
                          round(i.updated_at * 1000), _number(i.id), _dumps(i.to_json()))
                         for i in changes.incidents])
                for ev in changes.events:
                    cur = conn.execute(
                        "INSERT INTO events (ts_ms, incident_id, type, actor, severity, status,"
                        " data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (round(ev.ts * 1000), ev.incident_id, ev.type, ev.actor,
                         int(ev.severity), ev.status.value, _dumps(dict(ev.data))))
                    stored.append(IncidentEvent(ev.incident_id, ev.type, ev.ts, ev.actor,
                                                ev.severity, ev.status, ev.data,
                                                cur.lastrowid or 0))
                if changes.states:
                    conn.executemany(
                        "INSERT OR REPLACE INTO rule_state (rule, device_id, data)"
                        " VALUES (?, ?, ?)",
                        [(r, d, _dumps(s.to_json())) for (r, d), s in changes.states.items()])
                if changes.last_seen:
                    conn.executemany("INSERT OR REPLACE INTO last_seen (device_id, ts)"
                                     " VALUES (?, ?)", list(changes.last_seen.items()))
                if changes.flaps:
                    conn.executemany("DELETE FROM flaps WHERE key = ?",
                                     [(k,) for k, v in changes.flaps.items() if not v])
                    conn.executemany("INSERT OR REPLACE INTO flaps (key, times) VALUES (?, ?)",
                                     [(k, _dumps(v)) for k, v in changes.flaps.items() if v])
                if changes.meta:
                    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                     list(changes.meta.items()))
                if changes.extra is not None:
                    changes.extra(conn)
            return stored
        stored = await self.call(commit)
        self.commits += 1
        return stored

    async def events_after(self, seq: int, limit: int) -> list[IncidentEvent]:
        return await self._db.call(lambda conn: query_events(conn, after=seq, limit=limit))

    async def incident(self, incident_id: str) -> Incident | None:
        return await self._db.call(lambda conn: query_incident(conn, incident_id))

    async def windows(self, now: float) -> list[Window]:
        return await self._db.call(lambda conn: query_windows(conn, now))

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(connection) on the database thread (later stages' tables)."""
        try:
            return await self._db.call(fn)
        except Exception as exc:
            # Incidents come before telemetry: a full disk gives up its reserve for them.
            if self._disk is None or not is_disk_full(exc):
                raise
            self._disk.disk_full()
            return await self._db.call(fn)

    async def data_version(self) -> int:
        return await self._db.call(
            lambda conn: int(conn.execute("PRAGMA data_version").fetchone()[0]))


def _event_row(row: Sequence[Any]) -> IncidentEvent:
    seq, ts_ms, incident_id, type_, actor, severity, status, data = row
    return IncidentEvent(incident_id, type_, ts_ms / 1000, actor, Severity(severity),
                         Status(status), json.loads(data), seq)


def query_events(conn: sqlite3.Connection, after: int = 0, limit: int = 1000,
                 incident_id: str | None = None) -> list[IncidentEvent]:
    sql = ("SELECT seq, ts_ms, incident_id, type, actor, severity, status, data FROM events"
           " WHERE seq > ?")
    args: list[Any] = [after]
    if incident_id is not None:
        sql += " AND incident_id = ?"
        args.append(incident_id)
    sql += " ORDER BY seq LIMIT ?"
    args.append(limit)
    return [_event_row(r) for r in conn.execute(sql, args)]


def query_incident(conn: sqlite3.Connection, incident_id: str) -> Incident | None:
    row = conn.execute("SELECT data FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return Incident.from_json(json.loads(row[0])) if row else None


def query_incidents(conn: sqlite3.Connection, open_only: bool = False, limit: int = 10_000
                    ) -> list[Incident]:
    sql = "SELECT data FROM incidents"
    if open_only:
        sql += " WHERE status != 'resolved'"
    sql += " ORDER BY number DESC LIMIT ?"
    return [Incident.from_json(json.loads(d)) for (d,) in conn.execute(sql, (limit,))]


_WINDOW_COLUMNS = "id, type, scope, start, end, author, reason, kinds, rules, life_safety, every"


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a state database written by an older version up to this schema."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(windows)")}
    for column, ddl in (("kinds", "TEXT NOT NULL DEFAULT '[]'"),
                        ("rules", "TEXT NOT NULL DEFAULT '[]'"),
                        ("life_safety", "INTEGER NOT NULL DEFAULT 0"), ("every", "TEXT")):
        if column not in have:
            conn.execute(f"ALTER TABLE windows ADD COLUMN {column} {ddl}")


def _window_row(row: Sequence[Any]) -> Window:
    id_, type_, scope, start, end, author, reason, kinds, rules, life_safety, every = row
    place, kind_list = split_scope(json.loads(scope), json.loads(kinds))
    return Window(id_, type_, place, start, end, author, reason, kind_list,
                  tuple(json.loads(rules)), bool(life_safety),
                  Recurrence.from_json(json.loads(every)) if every else None)


def query_windows(conn: sqlite3.Connection, now: float | None = None,
                  include_removed: bool = False) -> list[Window]:
    sql = f"SELECT {_WINDOW_COLUMNS} FROM windows WHERE 1=1"
    args: list[Any] = []
    if not include_removed:
        sql += " AND removed IS NULL"
    if now is not None:
        sql += " AND end > ?"
        args.append(now)
    return [_window_row(r) for r in conn.execute(sql + " ORDER BY id", args)]


def insert_window(conn: sqlite3.Connection, window: Window, now: float) -> int:
    """Add a silence or drill window; ValueError when it is not one."""
    if window.type not in ("silence", "drill"):
        raise ValueError("a window is a silence or a drill")
    if window.end <= window.start:
        raise ValueError("a window must end after it starts")
    if window.life_safety and not (window.kinds or window.rules):
        raise ValueError("a silence of life-safety incidents must name the kinds or rules "
                         "it mutes")
    cur = conn.execute(
        "INSERT INTO windows (type, scope, start, end, author, reason, created, kinds, rules,"
        " life_safety, every) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (window.type, _dumps(dict(window.scope)), window.start, window.end, window.author,
         window.reason, now, _dumps(list(window.kinds)), _dumps(list(window.rules)),
         int(window.life_safety),
         _dumps(window.every.to_json()) if window.every is not None else None))
    return cur.lastrowid or 0


def end_window(conn: sqlite3.Connection, window_id: int, author: str, now: float,
               type_: str | None = None) -> bool:
    """Remove a window now (kept, marked removed); False when there is no such window."""
    sql = "UPDATE windows SET removed = ?, removed_by = ? WHERE id = ? AND removed IS NULL"
    args: list[Any] = [now, author, window_id]
    if type_ is not None:
        sql += " AND type = ?"
        args.append(type_)
    return conn.execute(sql, args).rowcount > 0


def add_window(path: Path, window: Window, now: float) -> int:
    """Add a window to a state file no daemon holds (it picks the file up within a tick)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(SCHEMA)
        migrate(conn)
        return insert_window(conn, window, now)
    finally:
        conn.close()


def read_incidents(path: Path, open_only: bool = False) -> list[Incident]:
    conn = open_readonly(path)
    try:
        return query_incidents(conn, open_only)
    finally:
        conn.close()


def read_events(path: Path, after: int = 0, limit: int = 100_000,
                incident_id: str | None = None) -> list[IncidentEvent]:
    conn = open_readonly(path)
    try:
        return query_events(conn, after, limit, incident_id)
    finally:
        conn.close()

