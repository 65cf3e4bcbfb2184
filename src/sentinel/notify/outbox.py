"""The persistent outbox: a notification is written before it is sent.

Rows live in the state database beside the incidents, so the escalation step that made a
notice and the notice itself commit together. Each row is one message to one contact on
one channel, keyed `incident/round.step[.tag]/contact/channel`; inserting a key twice does
nothing, so replaying events after a crash never queues a message twice.

Every attempt is *claimed* before it is sent: the row records the run of the daemon that
sends it (`claimed_run`, a counter in the `meta` table raised at each start). A row due at
once is inserted already claimed, in the escalation commit that made it, so an alarm's
first page costs no commit of its own; a row sent later is claimed by one UPDATE before it
leaves. The result clears the claim. What a crash can leave behind is therefore known: a
pending row claimed by an earlier run was handed to a channel and its outcome is unknown.

At start (`recover`), such a row is sent once more, marked as a repeat (【重发】 /
[RESENT], see `notify.templates.mark_resent`) with the same Idempotency-Key, so a person
sees it is the same alarm. If that resend's outcome is unknown too (a second crash), the
row is not sent a third time: it ends as `unknown`, an audit event says so, and escalation
counts it as a delivery that may have reached them (the climb goes on until someone
acknowledges). So a crash at any moment delivers a message at most twice, the second
copy marked; over HTTP and SMTP, "exactly once" is not a promise anyone can keep.

Every attempt is recorded (incident, step, contact, channel, time, result, error).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sentinel.store.db import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    incident_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    round INTEGER NOT NULL,
    step INTEGER NOT NULL,
    contact_id TEXT NOT NULL,
    channel INTEGER NOT NULL,
    life_safety INTEGER NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    done_at REAL,
    last_error TEXT,
    claimed_run INTEGER,
    unknown INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(due) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox(incident_id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    outbox_id INTEGER NOT NULL,
    incident_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    contact_id TEXT NOT NULL,
    channel INTEGER NOT NULL,
    channel_label TEXT NOT NULL,
    ts REAL NOT NULL,
    ok INTEGER NOT NULL,
    error TEXT,
    elapsed REAL NOT NULL,
    life_safety INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_incident ON attempts(incident_id, id);
CREATE INDEX IF NOT EXISTS attempts_contact ON attempts(contact_id, ts);
"""

_COLUMNS = ("id", "key", "incident_id", "kind", "round", "step", "contact_id", "channel",
            "life_safety", "title", "body", "created", "due", "attempts", "status", "unknown")
# Columns added after the first release: (name, definition) for databases made before.
_ADDED = (("claimed_run", "INTEGER"), ("unknown", "INTEGER NOT NULL DEFAULT 0"))
RUN_KEY = "daemon_run"
# Statuses of a finished row.
FINISHED = ("sent", "failed", "withdrawn", "unknown")
_UNKNOWN_ERROR = "outcome unknown: the daemon stopped before the result was recorded"


@dataclass(frozen=True, slots=True)
class NewRow:
    """One message to one contact on one channel, to be queued."""

    key: str
    incident_id: str
    kind: str
    round: int
    step: int
    contact_id: str
    channel: int
    life_safety: bool
    title: str
    body: str
    created: float
    due: float


@dataclass(frozen=True, slots=True)
class OutboxRow(NewRow):
    """A queued row, as stored: with its id and how far its delivery has got."""

    id: int = 0
    attempts: int = 0
    status: str = "pending"
    # How many of its attempts ended in a crash before their result was recorded.
    unknown: int = 0

    @property
    def resent(self) -> bool:
        """An earlier copy may have reached the person: this one is marked as a repeat."""
        return self.unknown > 0

    @property
    def base_key(self) -> str:
        """The key without its channel: the same notice on every channel of a contact."""
        return self.key.rsplit("/", 1)[0]


def migrate(conn: sqlite3.Connection) -> None:
    """Add the columns a state database made by an older release lacks."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    for name, definition in _ADDED:
        if name not in present:
            conn.execute(f"ALTER TABLE outbox ADD COLUMN {name} {definition}")


def next_run(conn: sqlite3.Connection) -> int:
    """Raise and return this daemon run's id (committed before anything is claimed)."""
    with transaction(conn):
        found = conn.execute("SELECT value FROM meta WHERE key = ?", (RUN_KEY,)).fetchone()
        run = int(found[0]) + 1 if found else 1
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     (RUN_KEY, str(run)))
    return run


def insert(conn: sqlite3.Connection, rows: Sequence[NewRow], claimed_by: int | None = None
           ) -> None:
    """Queue rows; a key already present is left as it is (idempotent replay).

    `claimed_by` inserts them claimed by that run: rows sent right after this transaction
    commits (the first page of an alarm), so their claim costs no commit of its own.
    """
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (key, incident_id, kind, round, step, contact_id,"
        " channel, life_safety, title, body, created, due, claimed_run) VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r.key, r.incident_id, r.kind, r.round, r.step, r.contact_id, r.channel,
          int(r.life_safety), r.title, r.body, r.created, r.due, claimed_by) for r in rows])


def claim(conn: sqlite3.Connection, row_ids: Sequence[int], run: int) -> set[int]:
    """Claim rows for sending by `run`, in one statement; return the ids claimed (rows
    finished meanwhile, e.g. withdrawn, are not)."""
    if not row_ids:
        return set()
    marks = ", ".join("?" * len(row_ids))
    with transaction(conn):
        return {int(i) for (i,) in conn.execute(
            f"UPDATE outbox SET claimed_run = ? WHERE id IN ({marks}) AND status = 'pending'"
            " RETURNING id", (run, *row_ids)).fetchall()}


def claimed_before(conn: sqlite3.Connection, run: int) -> list[OutboxRow]:
    """Pending rows claimed by an earlier run: handed to a channel, outcome unknown."""
    return [_row(r) for r in conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM outbox WHERE status = 'pending'"
        " AND claimed_run IS NOT NULL AND claimed_run != ? ORDER BY id", (run,))]


def recover(conn: sqlite3.Connection, rows: Sequence[OutboxRow], now: float) -> None:
    """Settle rows of `claimed_before` (inside the caller's transaction): a first unknown
    outcome is due again at once, to be sent marked as a repeat; a second one ends the row
    as `unknown` — it is never sent a third time."""
    conn.executemany(
        "UPDATE outbox SET claimed_run = NULL, unknown = unknown + 1,"
        " attempts = attempts + 1, last_error = ?,"
        " status = CASE WHEN unknown >= 1 THEN 'unknown' ELSE status END,"
        " done_at = CASE WHEN unknown >= 1 THEN ? ELSE done_at END,"
        " due = CASE WHEN unknown >= 1 THEN due ELSE ? END"
        " WHERE id = ? AND status = 'pending'",
        [(_UNKNOWN_ERROR, now, now, r.id) for r in rows])


def _row(values: Sequence[Any]) -> OutboxRow:
    data = dict(zip(_COLUMNS, values, strict=True))
    data["life_safety"] = bool(data["life_safety"])
    return OutboxRow(**data)


def due(conn: sqlite3.Connection, now: float, limit: int = 200,
        skip: Collection[int] = ()) -> list[OutboxRow]:
    """Pending rows whose time has come, life-safety first, then oldest first; rows whose
    id is in `skip` (being sent) are left out."""
    marks = ", ".join("?" * len(skip))
    return [_row(r) for r in conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM outbox WHERE status = 'pending' AND due <= ?"
        f" AND id NOT IN ({marks}) ORDER BY life_safety DESC, due, id LIMIT ?",
        (now, *skip, limit))]


def held_for(conn: sqlite3.Connection, contact_id: str, channel: int, until: float,
             skip: Collection[int] = ()) -> list[OutboxRow]:
    """Pending, unclaimed notices of non-life-safety incidents for one contact on one
    channel that fall due by `until` (still in their storm hold), oldest first; rows whose
    id is in `skip` are left out. What joins a summary leaving now (`stages.Hold`)."""
    marks = ", ".join("?" * len(skip))
    return [_row(r) for r in conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM outbox WHERE status = 'pending'"
        " AND life_safety = 0 AND claimed_run IS NULL AND contact_id = ? AND channel = ?"
        f" AND due <= ? AND id NOT IN ({marks}) ORDER BY due, id",
        (contact_id, channel, until, *skip))]


def pending_by_key(conn: sqlite3.Connection, keys: Sequence[str], claimed_by: int
                   ) -> list[OutboxRow]:
    """The rows with these keys that still wait to be sent, claimed by run `claimed_by`."""
    if not keys:
        return []
    marks = ", ".join("?" * len(keys))
    return [_row(r) for r in conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM outbox WHERE key IN ({marks})"
        " AND status = 'pending' AND claimed_run = ? ORDER BY id", (*keys, claimed_by))]


def next_due(conn: sqlite3.Connection) -> float | None:
    found = conn.execute("SELECT min(due) FROM outbox WHERE status = 'pending'").fetchone()
    return float(found[0]) if found and found[0] is not None else None


def pending_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'")
               .fetchone()[0])


def record_attempt(conn: sqlite3.Connection, row: OutboxRow, label: str, now: float, ok: bool,
                   error: str | None, elapsed: float) -> None:
    conn.execute(
        "INSERT INTO attempts (outbox_id, incident_id, step, contact_id, channel,"
        " channel_label, ts, ok, error, elapsed, life_safety)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row.id, row.incident_id, row.step, row.contact_id, row.channel, label, now, int(ok),
         error, elapsed, int(row.life_safety)))


def mark(conn: sqlite3.Connection, row_id: int, status: str, now: float,
         error: str | None = None) -> None:
    """Finish a row: sent, failed (every attempt on this channel), or withdrawn."""
    conn.execute("UPDATE outbox SET status = ?, done_at = ?, attempts = attempts + ?,"
                 " last_error = ?, claimed_run = NULL WHERE id = ?",
                 (status, now, 1 if status in ("sent", "failed") else 0, error, row_id))


def retry_later(conn: sqlite3.Connection, row_id: int, due_at: float, error: str | None
                ) -> None:
    """A failed attempt (known result): due again later, no longer claimed."""
    conn.execute("UPDATE outbox SET attempts = attempts + 1, due = ?, last_error = ?,"
                 " claimed_run = NULL WHERE id = ?", (due_at, error, row_id))


def postpone(conn: sqlite3.Connection, row_ids: Sequence[int], due_at: float) -> None:
    """Hold rows (rate limit) without counting an attempt."""
    conn.executemany("UPDATE outbox SET due = ? WHERE id = ?", [(due_at, i) for i in row_ids])


def withdraw(conn: sqlite3.Connection, incident_id: str, now: float) -> int:
    """Drop the incident's notices not sent yet (it resolved or joined a group), except
    resolution messages."""
    cur = conn.execute("UPDATE outbox SET status = 'withdrawn', done_at = ? WHERE"
                       " incident_id = ? AND status = 'pending' AND kind != 'resolved'",
                       (now, incident_id))
    return cur.rowcount


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Delete finished rows (their rendered text) done before `before`; the attempts stay,
    they are the audit record."""
    cur = conn.execute("DELETE FROM outbox WHERE status != 'pending' AND done_at < ?",
                       (before,))
    return cur.rowcount


def sent_since(conn: sqlite3.Connection, contact_id: str, since: float) -> list[float]:
    """Times of messages delivered to a contact for non-life-safety incidents since then."""
    return [float(ts) for (ts,) in conn.execute(
        "SELECT DISTINCT ts FROM attempts WHERE contact_id = ? AND ok = 1 AND life_safety = 0"
        " AND ts >= ? ORDER BY ts", (contact_id, since))]


def attempts_of(conn: sqlite3.Connection, incident_id: str) -> list[dict[str, Any]]:
    keys = ("id", "outbox_id", "step", "contact_id", "channel", "channel_label", "ts", "ok",
            "error", "elapsed")
    rows = conn.execute(
        "SELECT id, outbox_id, step, contact_id, channel, channel_label, ts, ok, error,"
        " elapsed FROM attempts WHERE incident_id = ? ORDER BY id", (incident_id,))
    return [dict(zip(keys, r, strict=True)) for r in rows]


def rows_of(conn: sqlite3.Connection, incident_id: str) -> list[OutboxRow]:
    return [_row(r) for r in conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM outbox WHERE incident_id = ? ORDER BY id",
        (incident_id,))]
