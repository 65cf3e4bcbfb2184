"""The durable spool in front of a remote time-series database.

Every accepted reading is committed here as a line of line protocol before its MQTT message
is acknowledged; a forwarder sends the oldest lines to the TSDB in batches and deletes them
once the TSDB has them. One row holds the lines of one ingest batch (a row per line was a
sixth of the daemon's CPU at full rate, inserting and deleting).

While the TSDB is unreachable the spool grows; at its configured bound writes wait (the MQTT
source then stops reading, and the broker holds the rest), so nothing is dropped. Crossing
the warning mark is reported loudly.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from sentinel.config.model import InfluxSettings, SpoolSettings
from sentinel.stats import LatencyHistogram
from sentinel.store.db import (
    DEADLETTER_SCHEMA,
    RECEIPTS_SCHEMA,
    SqliteDb,
    insert_deadletters,
    insert_receipts,
    load_receipts,
    transaction,
)
from sentinel.store.lineproto import tag_string, to_line
from sentinel.types import DeadLetter, Reading, Receipt, RejectReason

log = structlog.get_logger("sentinel.store")

SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL,  -- lines of line protocol, joined by newlines
    lines INTEGER NOT NULL DEFAULT 1
);
""" + DEADLETTER_SCHEMA + RECEIPTS_SCHEMA


def _add_lines_column(conn: sqlite3.Connection) -> None:
    # Spools written before rows held batches have one line per row: `lines` defaults to 1.
    columns = {row[1] for row in conn.execute("PRAGMA table_info(spool)")}
    if "lines" not in columns:
        conn.execute("ALTER TABLE spool ADD COLUMN lines INTEGER NOT NULL DEFAULT 1")


# A backlog above this many lines is a replay worth reporting, every _PROGRESS_EVERY s.
_REPLAY_BACKLOG = 10_000
_PROGRESS_EVERY = 5.0

class LineWriter(Protocol):
    """What the forwarder needs of a TSDB writer (InfluxWriter implements it)."""

    async def write(self, lines: Sequence[str]) -> Any: ...


# Told when the spool crosses its warning mark and when it falls back below it.
SpoolEvent = Callable[[str, dict[str, object]], None]


class SpoolingSink:
    """ReadingSink that spools line protocol durably and forwards it to the TSDB in order."""

    def __init__(self, spool: SpoolSettings, influx: InfluxSettings,
                 device_tags: Mapping[str, Mapping[str, str]], writer: LineWriter,
                 on_event: SpoolEvent | None = None) -> None:
        self._settings = spool
        self._influx = influx
        self._db = SqliteDb(spool.path, SPOOL_SCHEMA, synchronous="normal")
        self._tag_cache = {device_id: tag_string(tags) for device_id, tags in device_tags.items()}
        self._writer = writer
        self._on_event = on_event
        self._bytes = 0
        self._rows = 0
        self._has_rows = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._warned = False
        self._forward_lock = asyncio.Lock()
        self.forwarded = 0
        # [started, last progress line, lines forwarded] while a backlog drains.
        self._replay: list[float] | None = None
        self.oldest_ms: int | None = None
        self.last_forward_error: str | None = None
        # Statistics for /metrics: lines committed here, readings and lines dead-lettered
        # as store_rejected, commit and TSDB write durations per batch.
        self.spooled = 0
        self.rejected = 0
        self.write_seconds = LatencyHistogram()
        self.forward_seconds = LatencyHistogram()
        # (last seq of a spooled batch, earliest receive time in it), oldest first: the
        # store lag is the age of the first entry.
        self._ages: collections.deque[tuple[int, float]] = collections.deque()

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> SpoolingSink:
        await self._db.open()

        def measure(conn: sqlite3.Connection) -> tuple[int, int, int, str]:
            _add_lines_column(conn)
            row = conn.execute("SELECT coalesce(sum(lines), 0),"
                               " coalesce(sum(length(line) - lines + 1), 0),"
                               " coalesce(max(seq), 0) FROM spool")
            count, size, last = row.fetchone()
            first = conn.execute("SELECT line FROM spool ORDER BY seq LIMIT 1").fetchone()
            return int(count), int(size), int(last), first[0].split("\n", 1)[0] if first else ""

        self._rows, self._bytes, last_seq, first_line = await self._db.call(measure)
        if self._rows:
            log.info("spool_resumed", rows=self._rows, bytes=self._bytes)
            # Receive times died with the last process: the oldest line's own timestamp.
            self._ages.append((last_seq, _line_time(first_line)))
            self._has_rows.set()
        self._update_marks()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.close()

    # -- writing ------------------------------------------------------------------------

    async def write(self, readings: Sequence[Reading], dead: Sequence[DeadLetter],
                    receipts: Sequence[Receipt] = ()) -> None:
        # Full: wait for the forwarder. The caller holds its messages unacknowledged, so the
        # broker keeps everything else; memory does not grow.
        while not self._has_room.is_set():
            await self._has_room.wait()
        tags = self._tag_cache
        lines: list[str] = []
        dead = list(dead)
        for r in readings:
            try:
                lines.append(to_line(r, tags.get(r.device_id)
                                     or tag_string({"device_id": r.device_id})))
            except ValueError as exc:  # cannot be line protocol (no fields, not finite)
                dead.append(DeadLetter(topic="", payload=repr(r).encode(),
                                       reason=RejectReason.STORE_REJECTED, detail=str(exc),
                                       received_at=r.received_at, device_id=r.device_id))
        # A row holds at most a TSDB batch, so the forwarder never has to split one.
        step = self._influx.batch_size
        rows = [("\n".join(lines[i:i + step]), len(lines[i:i + step]))
                for i in range(0, len(lines), step)]
        size = sum(len(line) for line in lines)
        refused = len(readings) - len(lines)

        def commit(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                last_seq = 0
                if rows:
                    conn.executemany("INSERT INTO spool (line, lines) VALUES (?, ?)", rows)
                    last_seq = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                if dead:
                    insert_deadletters(conn, dead)
                if receipts:
                    insert_receipts(conn, receipts)
            return int(last_seq)

        started = time.perf_counter()
        last_seq = await self._db.call(commit)
        self.write_seconds.observe(time.perf_counter() - started)
        self.rejected += refused
        if lines:
            self.spooled += len(lines)
            self._ages.append((last_seq, min(r.received_at for r in readings)))
            self._rows += len(lines)
            self._bytes += size
            self._has_rows.set()
            self._update_marks()

    async def receipts(self) -> list[Receipt]:
        return await self._db.call(load_receipts)

    def _update_marks(self) -> None:
        limit = self._settings.max_bytes
        warn_at = limit * self._settings.warn_ratio
        if self._bytes >= limit:
            if self._has_room.is_set():
                log.error("spool_full", bytes=self._bytes, max_bytes=limit,
                          action="not acknowledging new messages until the TSDB catches up")
            self._has_room.clear()
        else:
            self._has_room.set()
        if self._bytes >= warn_at and not self._warned:
            self._warned = True
            log.error("spool_nearly_full", bytes=self._bytes, max_bytes=limit, rows=self._rows,
                      last_error=self.last_forward_error)
            self._emit("spool_nearly_full", {"bytes": self._bytes, "max_bytes": limit})
        elif self._warned and self._bytes < warn_at * 0.9:
            self._warned = False
            log.info("spool_below_mark", bytes=self._bytes, max_bytes=limit)
            self._emit("spool_below_mark", {"bytes": self._bytes, "max_bytes": limit})

    def _emit(self, event: str, data: dict[str, object]) -> None:
        if self._on_event is not None:
            self._on_event(event, data)

    # -- forwarding ---------------------------------------------------------------------

    async def run(self) -> None:
        """Forward spooled lines to the TSDB, oldest first, forever."""
        batch_size = self._influx.batch_size
        interval = self._influx.flush_interval
        while True:
            await self._has_rows.wait()
            # Batch by size and time: wait for a full batch or the flush interval.
            if self._rows < batch_size:
                await asyncio.sleep(interval)
            if not await self._forward_oldest():
                self._has_rows.clear()

    async def flush(self) -> None:
        """Forward everything spooled now (used at shutdown, under a time limit)."""
        while self._rows and await self._forward_oldest():
            pass

    async def _forward_oldest(self) -> bool:
        # One forwarder at a time: flush() at shutdown must not race run() over the same
        # rows, or lines would reach the TSDB twice and out of order.
        async with self._forward_lock:
            batch_size = self._influx.batch_size

            def oldest(conn: sqlite3.Connection) -> tuple[int, list[str]]:
                # Whole rows up to about a batch: a row is never split between two writes.
                last_seq, lines = 0, []
                for seq, text in conn.execute("SELECT seq, line FROM spool ORDER BY seq"):
                    last_seq = seq
                    lines += text.split("\n")
                    if len(lines) >= batch_size:
                        break
                return last_seq, lines

            last_seq, lines = await self._db.call(oldest)
            if not lines:
                return False
            await self._forward(last_seq, lines)
            return True

    async def _forward(self, last_seq: int, lines: list[str]) -> None:
        started = time.perf_counter()
        result = await self._writer.write(lines)  # retries until the TSDB takes it
        self.forward_seconds.observe(time.perf_counter() - started)
        rejected: list[tuple[str, str]] = list(getattr(result, "rejected", []))
        size = sum(len(line) for line in lines)
        now = time.time()
        dead = [DeadLetter(topic="", payload=line.encode(), reason=RejectReason.STORE_REJECTED,
                           detail=f"time-series database refused the line: {reason}",
                           received_at=now) for line, reason in rejected]

        def done(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("DELETE FROM spool WHERE seq <= ?", (last_seq,))
                if dead:
                    insert_deadletters(conn, dead)

        await self._db.call(done)
        for line, reason in rejected:
            log.error("store_rejected_line", reason=reason, line=line[:200])
        self._rows -= len(lines)
        self._bytes -= size
        self.forwarded += len(lines) - len(rejected)
        self.rejected += len(rejected)
        ages = self._ages
        while ages and ages[0][0] <= last_seq:
            ages.popleft()
        if self._rows <= 0:
            self._rows = 0
            self._bytes = 0
            self._has_rows.clear()
            ages.clear()
        self._update_marks()
        log.debug("spool_forwarded", lines=len(lines), rejected=len(rejected),
                  ms=round((time.perf_counter() - started) * 1000, 1), remaining=self._rows)
        self._replay_progress(len(lines))

    def _replay_progress(self, forwarded: int) -> None:
        # A backlog (after a TSDB outage) can take minutes to drain: say how far it is.
        now = time.monotonic()
        replay = self._replay
        if replay is None:
            if self._rows > _REPLAY_BACKLOG:
                self._replay = [now, now, forwarded]
                log.info("spool_replay_started", remaining=self._rows)
            return
        replay[2] += forwarded
        if self._rows <= 0:
            log.info("spool_replay_done", forwarded=replay[2],
                     seconds=round(now - replay[0], 1))
            self._replay = None
        elif now - replay[1] >= _PROGRESS_EVERY:
            replay[1] = now
            log.info("spool_replay_progress", forwarded=replay[2], remaining=self._rows,
                     rate=round(replay[2] / max(now - replay[0], 1e-3)))

    # -- figures for status views and /metrics -----------------------------------------

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def max_bytes(self) -> int:
        return self._settings.max_bytes

    @property
    def nearly_full(self) -> bool:
        """Above the warning mark (until back below 90 % of it, as the incident)."""
        return self._warned

    @property
    def full(self) -> bool:
        """At max_bytes: writes wait for the forwarder."""
        return not self._has_room.is_set()

    def lag(self, now: float) -> float:
        """Seconds since the oldest reading not yet in the TSDB was received (0 if none)."""
        return max(0.0, now - self._ages[0][1]) if self._ages else 0.0

    def health(self) -> dict[str, object]:
        return {"backend": "influxdb", "spool_rows": self._rows, "spool_bytes": self._bytes,
                "spool_max_bytes": self._settings.max_bytes, "forwarded": self.forwarded,
                "spool_nearly_full": self._warned}


def _line_time(line: str) -> float:
    """The timestamp (ms precision) that ends a line of line protocol, in epoch seconds."""
    try:
        return int(line.rsplit(" ", 1)[1]) / 1000
    except (IndexError, ValueError):
        return time.time()
