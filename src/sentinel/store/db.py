"""A SQLite connection confined to one thread, so commits never block the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sentinel.types import RECEIPTS_KEPT, DeadLetter, Receipt

T = TypeVar("T")

DEADLETTER_SCHEMA = """
CREATE TABLE IF NOT EXISTS deadletter (
    id INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_size INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    device_id TEXT
);
CREATE INDEX IF NOT EXISTS deadletter_received ON deadletter(received_ms);
"""

# The times given to untimed readings of QoS 1 messages (sentinel.stamps), so that a message
# redelivered after a crash is stored under its first copy's time.
RECEIPTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    mid INTEGER NOT NULL,
    digest BLOB NOT NULL,
    device_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL
);
"""

# Dead letters keep at most this much of a payload; the original size is recorded beside it.
DEADLETTER_PAYLOAD_MAX = 4096


class SqliteDb:
    """One WAL-mode connection used only from its own worker thread."""

    def __init__(self, path: Path, schema: str, *, synchronous: str = "normal") -> None:
        self.path = path
        self._schema = schema
        self._synchronous = synchronous.upper()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{path.stem}")
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(self._schema)
        self._conn = conn

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(connection) on the database thread."""
        def run() -> T:
            assert self._conn is not None, "database is not open"
            return fn(self._conn)
        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN … COMMIT, or ROLLBACK if the block raises (autocommit connections)."""
    conn.execute("BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def insert_deadletters(conn: sqlite3.Connection, dead: Sequence[DeadLetter]) -> None:
    """Insert dead letters (inside the caller's transaction)."""
    conn.executemany(
        "INSERT INTO deadletter (received_ms, topic, payload, payload_size, reason, detail,"
        " device_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(round(d.received_at * 1000), d.topic, d.payload[:DEADLETTER_PAYLOAD_MAX],
          len(d.payload), d.reason.value, d.detail, d.device_id) for d in dead])


def insert_receipts(conn: sqlite3.Connection, receipts: Sequence[Receipt],
                    keep: int = RECEIPTS_KEPT) -> None:
    """Record receipts and forget all but the newest `keep` (inside the caller's
    transaction)."""
    conn.executemany(
        "INSERT INTO receipts (topic, mid, digest, device_id, ts_ms) VALUES (?, ?, ?, ?, ?)",
        [(r.topic, r.mid, r.digest, r.device_id, r.ts_ms) for r in receipts])
    last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    conn.execute("DELETE FROM receipts WHERE seq <= ?", (last - keep,))


def load_receipts(conn: sqlite3.Connection) -> list[Receipt]:
    """Every kept receipt, oldest first."""
    return [Receipt(topic, mid, bytes(digest), device_id, ts_ms) for topic, mid, digest,
            device_id, ts_ms in conn.execute(
                "SELECT topic, mid, digest, device_id, ts_ms FROM receipts ORDER BY seq")]


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection for operator queries beside the running daemon (WAL allows it)."""
    if not path.exists():
        raise FileNotFoundError(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def list_deadletters(path: Path, limit: int = 50, reason: str | None = None
                     ) -> list[dict[str, object]]:
    """Newest dead letters first."""
    conn = open_readonly(path)
    try:
        sql = ("SELECT id, received_ms, topic, payload, payload_size, reason, detail, device_id"
               " FROM deadletter")
        args: list[object] = []
        if reason:
            sql += " WHERE reason = ?"
            args.append(reason)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        keys = ("id", "received_ms", "topic", "payload", "payload_size", "reason", "detail",
                "device_id")
        return [dict(zip(keys, row, strict=True)) for row in conn.execute(sql, args)]
    finally:
        conn.close()


def count_deadletters(path: Path) -> dict[str, int]:
    conn = open_readonly(path)
    try:
        return dict(conn.execute("SELECT reason, count(*) FROM deadletter GROUP BY reason"))
    finally:
        conn.close()
