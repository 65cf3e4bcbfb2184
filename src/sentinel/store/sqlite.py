"""The embedded store: readings and dead letters in one SQLite database under state_dir."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from sentinel.config.model import SqliteSettings
from sentinel.stats import LatencyHistogram
from sentinel.store.db import (
    DEADLETTER_SCHEMA,
    RECEIPTS_SCHEMA,
    SqliteDb,
    insert_deadletters,
    insert_receipts,
    load_receipts,
    open_readonly,
    transaction,
)
from sentinel.types import DeadLetter, Reading, Receipt

log = structlog.get_logger("sentinel.store")

READINGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (device_id, ts_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_ts ON readings(ts_ms);
""" + DEADLETTER_SCHEMA + RECEIPTS_SCHEMA

# A redelivered message rewrites the same row; two messages of one device at one instant
# (one quantity per topic) merge their fields, as InfluxDB merges fields of one point.
_UPSERT = (
    "INSERT INTO readings (device_id, ts_ms, kind, received_ms, fields) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, ts_ms) DO UPDATE SET"
    " fields = json_patch(readings.fields, excluded.fields), received_ms = excluded.received_ms"
)

_RETENTION_EVERY = 3600.0


class SqliteReadingStore:
    """ReadingSink keeping readings locally, with retention and operator queries."""

    def __init__(self, settings: SqliteSettings, deadletter_keep_days: float) -> None:
        self._settings = settings
        self._deadletter_keep = deadletter_keep_days * 86400
        self._db = SqliteDb(settings.path, READINGS_SCHEMA, synchronous=settings.synchronous)
        self.stored = 0
        self.last_write_ms = 0.0
        self.write_seconds = LatencyHistogram()  # per committed batch

    @property
    def path(self) -> Path:
        return self._settings.path

    async def __aenter__(self) -> SqliteReadingStore:
        await self._db.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.close()

    async def write(self, readings: Sequence[Reading], dead: Sequence[DeadLetter],
                    receipts: Sequence[Receipt] = ()) -> None:
        rows = [(r.device_id, round(r.ts * 1000), r.kind, round(r.received_at * 1000),
                 orjson.dumps(r.values).decode()) for r in readings]

        def commit(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if rows:
                    conn.executemany(_UPSERT, rows)
                if dead:
                    insert_deadletters(conn, dead)
                if receipts:
                    insert_receipts(conn, receipts)

        started = time.perf_counter()
        await self._db.call(commit)
        elapsed = time.perf_counter() - started
        self.last_write_ms = elapsed * 1000
        self.write_seconds.observe(elapsed)
        self.stored += len(rows)

    async def receipts(self) -> list[Receipt]:
        return await self._db.call(load_receipts)

    async def run(self) -> None:
        while True:
            await self.apply_retention(time.time())
            await asyncio.sleep(_RETENTION_EVERY)

    async def apply_retention(self, now: float) -> int:
        """Delete readings and dead letters past their keep time; return readings deleted."""
        cutoff_ms = round((now - self._settings.retention_days * 86400) * 1000)
        dead_cutoff_ms = round((now - self._deadletter_keep) * 1000)

        def prune(conn: sqlite3.Connection) -> int:
            deleted = conn.execute("DELETE FROM readings WHERE ts_ms < ?", (cutoff_ms,)).rowcount
            conn.execute("DELETE FROM deadletter WHERE received_ms < ?", (dead_cutoff_ms,))
            return deleted

        deleted = await self._db.call(prune)
        if deleted:
            log.info("retention_applied", readings_deleted=deleted)
        return deleted

    def health(self) -> dict[str, object]:
        return {"backend": "sqlite", "stored": self.stored, "last_commit_ms": self.last_write_ms}


def query_history(path: Path, device_id: str, since_ms: int, limit: int = 1000
                  ) -> list[dict[str, Any]]:
    """Readings of one device since a time, oldest first (for `sentinel history`)."""
    conn = open_readonly(path)
    try:
        rows = conn.execute(
            "SELECT ts_ms, kind, fields FROM readings WHERE device_id = ? AND ts_ms >= ?"
            " ORDER BY ts_ms LIMIT ?", (device_id, since_ms, limit))
        return [{"ts_ms": ts, "kind": kind, "values": orjson.loads(fields)}
                for ts, kind, fields in rows]
    finally:
        conn.close()


def count_readings(path: Path) -> int:
    conn = open_readonly(path)
    try:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    finally:
        conn.close()
