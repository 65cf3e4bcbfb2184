"""A follower's durable position in the incident event log.

The escalation stage and the MQTT incident publisher follow the committed event log from
a cursor: the seq of the last event each has dealt with. The cursor lives in the state
database's `meta` table, is saved at most every `every` seconds (each save is a commit),
and never goes back, even when two paths of one follower advance it (the escalation's
follower and its decisions inside a rules commit). After a crash a follower resumes from
the saved position and sees again what came after it: every event at least once.
"""

from __future__ import annotations

import sqlite3

from sentinel.clock import Clock


class EventCursor:
    """Where one follower stands in the event log, and what of that is saved."""

    def __init__(self, key: str, clock: Clock, every: float) -> None:
        self.key = key
        self._clock = clock
        self._every = every
        self.position = 0
        self.saved = 0
        self._saved_at = clock.monotonic()

    def read(self, conn: sqlite3.Connection) -> int | None:
        """The saved position (None: this follower never saved one)."""
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (self.key,)).fetchone()
        return int(row[0]) if row else None

    def start_at(self, position: int) -> None:
        """Resume from `position` (the saved one, or where a first start begins)."""
        self.position = self.saved = position
        self._saved_at = self._clock.monotonic()

    def advance(self, seq: int) -> None:
        self.position = max(self.position, seq)

    @property
    def save_due(self) -> bool:
        """Moved since the last save, and the last save is `every` seconds old."""
        return self.position != self.saved and \
            self._clock.monotonic() - self._saved_at >= self._every

    def write(self, conn: sqlite3.Connection, position: int | None = None) -> int:
        """Save `position` (default: the current one) inside the caller's transaction,
        unless a larger one is saved already; call `written` once it is committed."""
        value = self.position if position is None else position
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET"
            " value = CASE WHEN CAST(excluded.value AS INTEGER) > CAST(value AS INTEGER)"
            " THEN excluded.value ELSE value END", (self.key, str(value)))
        return value

    def written(self, value: int) -> None:
        self.saved = max(self.saved, value)
        self._saved_at = self._clock.monotonic()
