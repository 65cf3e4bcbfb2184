"""The durable spool: loud before it fills, waits (never drops) when full, drains in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from sentinel.config.model import InfluxSettings, SpoolSettings
from sentinel.store.spool import SpoolingSink
from sentinel.types import Reading


class UnreachableTsdb:
    """Fault injection: a TSDB writer that cannot deliver until `reachable` is set."""

    def __init__(self) -> None:
        self.reachable = asyncio.Event()
        self.delivered: list[str] = []

    async def write(self, lines: Sequence[str]) -> object:
        await self.reachable.wait()
        self.delivered.extend(lines)
        return None


def _reading(i: int) -> Reading:
    return Reading("SB-HYD-0001", "hydrant_pressure", 1_795_000_000 + i, 1_795_000_000 + i,
                   {"pressure": 0.35})


async def test_spool_warns_then_holds_writes_until_the_tsdb_returns(tmp_path: Path) -> None:
    """Crossing the mark is reported; at the bound writes wait; recovery drains all in order."""
    events: list[str] = []
    tsdb = UnreachableTsdb()
    spool_settings = SpoolSettings(path=tmp_path / "spool.sqlite3", max_bytes=4096,
                                   warn_ratio=0.5)
    influx = InfluxSettings(batch_size=10, flush_interval=0.01)
    sink = SpoolingSink(spool_settings, influx, {"SB-HYD-0001": {"device_id": "SB-HYD-0001"}},
                        tsdb, on_event=lambda name, _: events.append(name))
    async with sink:
        forwarder = asyncio.create_task(sink.run())
        written = 0
        while "spool_nearly_full" not in events:
            await sink.write([_reading(written)], [])
            written += 1
        assert sink.health()["spool_nearly_full"] is True
        # Fill to the bound: the next write must wait rather than drop or grow.
        while int(str(sink.health()["spool_bytes"])) < spool_settings.max_bytes:
            await sink.write([_reading(written)], [])
            written += 1
        blocked = asyncio.create_task(sink.write([_reading(written)], []))
        await asyncio.sleep(0.2)
        assert not blocked.done()
        tsdb.reachable.set()
        await asyncio.wait_for(blocked, 10)
        written += 1
        await asyncio.wait_for(sink.flush(), 10)
        forwarder.cancel()
    assert "spool_below_mark" in events
    stamps = [int(line.rsplit(" ", 1)[1]) for line in tsdb.delivered]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == written


async def test_spool_survives_a_restart(tmp_path: Path) -> None:
    """Lines spooled before a restart are still there and are forwarded after it."""
    spool_settings = SpoolSettings(path=tmp_path / "spool.sqlite3")
    influx = InfluxSettings(batch_size=100, flush_interval=0.01)
    first = UnreachableTsdb()
    async with SpoolingSink(spool_settings, influx, {}, first) as sink:
        await sink.write([_reading(i) for i in range(25)], [])
    second = UnreachableTsdb()
    second.reachable.set()
    async with SpoolingSink(spool_settings, influx, {}, second) as sink:
        assert sink.health()["spool_rows"] == 25
        await sink.flush()
    assert len(second.delivered) == 25


async def test_a_long_replay_reports_its_progress(tmp_path: Path) -> None:
    """Draining a backlog after an outage logs start, progress and the end."""
    from structlog.testing import capture_logs

    import sentinel.store.spool as spool_module

    spool_settings = SpoolSettings(path=tmp_path / "spool.sqlite3")
    influx = InfluxSettings(batch_size=1000, flush_interval=0.01)
    tsdb = UnreachableTsdb()
    tsdb.reachable.set()
    backlog = spool_module._REPLAY_BACKLOG + 2000
    async with SpoolingSink(spool_settings, influx, {}, tsdb) as sink:
        await sink.write([_reading(i) for i in range(backlog)], [])
        with capture_logs() as logs:
            spool_module._PROGRESS_EVERY = 0.0  # every batch, so the test sees one
            try:
                await sink.flush()
            finally:
                spool_module._PROGRESS_EVERY = 5.0
    replay = [entry for entry in logs if entry["event"].startswith("spool_replay")]
    events = [entry["event"] for entry in replay]
    assert events[0] == "spool_replay_started" and events[-1] == "spool_replay_done"
    assert "spool_replay_progress" in events
    done = replay[-1]
    assert done["forwarded"] == backlog and len(tsdb.delivered) == backlog


async def test_a_spool_from_before_batched_rows_is_forwarded_whole(tmp_path: Path) -> None:
    """A spool file of the one-line-per-row format (no `lines` column) left by an older
    version is read after an upgrade: counted right, forwarded in order, then emptied."""
    import sqlite3

    path = tmp_path / "spool.sqlite3"
    old = [f"hydrant_pressure,device_id=SB-HYD-0001 pressure=0.35 {1_795_000_000_000 + i}"
           for i in range(7)]
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL)")
    conn.executemany("INSERT INTO spool (line) VALUES (?)", [(line,) for line in old])
    conn.commit()
    conn.close()
    tsdb = UnreachableTsdb()
    tsdb.reachable.set()
    influx = InfluxSettings(batch_size=4, flush_interval=0.01)
    async with SpoolingSink(SpoolSettings(path=path), influx, {}, tsdb) as sink:
        assert sink.health()["spool_rows"] == 7
        assert sink.size_bytes == sum(len(line) for line in old)
        await sink.write([_reading(i) for i in range(10)], [])  # new rows beside the old
        assert sink.health()["spool_rows"] == 17
        await sink.flush()
        assert sink.health()["spool_rows"] == 0 and sink.size_bytes == 0
    assert tsdb.delivered[:7] == old and len(tsdb.delivered) == 17
