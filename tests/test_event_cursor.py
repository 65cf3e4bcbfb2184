"""The event-log cursor both followers share: saved at most every few seconds, never back."""

from __future__ import annotations

import sqlite3

from sentinel.clock import FakeClock
from sentinel.incidents.cursor import EventCursor
from sentinel.incidents.store import SCHEMA


def test_a_cursor_is_saved_when_due_and_never_goes_back() -> None:
    """Advancing marks a save due after `every` s; a smaller position never overwrites a
    larger saved one (two paths of one follower advance it)."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    clock = FakeClock()
    cursor = EventCursor("follower_seq", clock, every=5.0)
    assert cursor.read(conn) is None
    cursor.start_at(10)
    cursor.advance(12)
    assert not cursor.save_due
    clock.advance(5.0)
    assert cursor.save_due
    cursor.written(cursor.write(conn))
    assert cursor.read(conn) == 12 and not cursor.save_due
    cursor.write(conn, 30)
    cursor.write(conn, 20)  # the slower path, later
    assert cursor.read(conn) == 30
    cursor.advance(5)
    assert cursor.position == 12, "advancing never moves back"
