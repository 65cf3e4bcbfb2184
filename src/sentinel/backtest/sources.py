"""Stored readings, read back in the order the daemon evaluated them.

Two sources: the embedded store (`SqliteReadings`), which keeps each reading's receive time,
and VictoriaMetrics' export API (`VictoriaReadings`), which keeps only the device time. Both
stream: the sqlite cursor is read in chunks, VictoriaMetrics is asked one time slice at a
time, so memory does not grow with the period.

Only reads: the sqlite file is opened with `mode=ro` (safe beside the running daemon, WAL
lets readers in), VictoriaMetrics is only sent GET requests.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import orjson

from sentinel.config.inventory import Device
from sentinel.errors import SentinelError
from sentinel.kinds import KindRegistry
from sentinel.store.db import open_readonly
from sentinel.types import Reading, Value

__all__ = ["ReadingSource", "SourceError", "SqliteReadings", "VictoriaReadings", "merge_series"]

# SqliteReadings reads slices of device time holding this many readings of all devices
# (a job of --jobs 2 gets about half): a few MB in memory, and few queries.
_SLICE_ENTRIES = 20_000
# Devices named in the SQL itself; more than this are filtered in Python (sqlite's limit on
# bound parameters is far above, but a long IN list is slower than a set lookup).
_SQL_DEVICES = 500
# VictoriaMetrics is read one slice of the period at a time (memory stays bounded).
_SLICE = 3600.0
_TIMEOUT = 30.0


class SourceError(SentinelError):
    """The readings cannot be read: no such store, server unreachable, not supported.

    `key` and `values` name the user-facing message (`sentinel.i18n`, `backtest.<key>`).
    """

    def __init__(self, key: str, **values: object) -> None:
        self.key = key
        self.values = values
        super().__init__(f"{key}: {values}")


class ReadingSource(Protocol):
    """Where stored readings come from, in replay order."""

    # Whether readings carry their receive time (a TSDB keeps only the device time).
    has_received_time: bool
    name: str

    def readings(self, start: float, end: float, devices: Collection[str] | None
                 ) -> Iterator[Reading]:
        """Readings received in [start, end) of `devices` (None: all), in replay order."""
        ...

    def any_readings(self, start: float, end: float, devices: Collection[str] | None) -> bool:
        """Whether the period holds at least one reading (cheap: for a clear error)."""
        ...

    def span(self) -> tuple[float, float] | None:
        """Oldest and newest stored reading time (None: nothing stored or not known)."""
        ...

    def estimate(self, start: float, end: float, devices: Collection[str] | None
                 ) -> int | None:
        """About how many readings `readings` will yield (for an ETA; None: not known)."""
        ...


class SqliteReadings:
    """The embedded store (`store/sqlite.py`), by receive time then device time.

    Read without sorting the period in SQL: `received_ms` has no index (the daemon would
    pay for one on every write) and the readings_ts index costs a table lookup per row, so
    an `ORDER BY received_ms` over a week sorted millions of rows in sqlite's temp store
    (minutes). Instead the rows are read in the table's own order, the primary key
    (device, device time), one slice of device time at a time for every device (sqlite
    sorts a slice's ~10,000 rows), and merged in receive order in memory. That is exact
    because the daemon refuses a reading stamped more than `[ingest] max_future_skew`
    after it arrives or older than `max_age` (so
    `received - max_age <= ts <= received + skew`): once every row of device time before
    B is read, no unread row was received before B - skew, and those rows can go. Rows
    received in the period but measured before it (a backlog) are found by starting the
    slices `max_age` early; those slices cost little as sqlite filters them.
    """

    has_received_time = True
    name = "sqlite"

    def __init__(self, path: Path, max_age: float = 7 * 86400.0,
                 max_future_skew: float = 300.0) -> None:
        self.path = path
        # The ingest bounds, each with a minute to spare (the daemon's clock read at the
        # check and at the receipt are not the same instant).
        self.max_age_ms = math.ceil((max_age + 60.0) * 1000)
        self.skew_ms = math.ceil((max_future_skew + 60.0) * 1000)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = open_readonly(self.path)
            conn.execute("SELECT 1 FROM readings LIMIT 1").fetchall()
        except FileNotFoundError:
            raise SourceError("no_store", path=self.path) from None
        except sqlite3.Error as exc:
            raise SourceError("store_unreadable", path=self.path, reason=exc) from None
        return conn

    def _where(self, start: float, end: float, devices: Collection[str] | None
               ) -> tuple[str, list[object]]:
        sql = " WHERE received_ms >= ? AND received_ms < ?"
        params: list[object] = [math.floor(start * 1000), math.ceil(end * 1000)]
        if devices is not None and len(devices) <= _SQL_DEVICES:
            sql += f" AND device_id IN ({','.join('?' * len(devices))})"
            params += sorted(devices)
        return sql, params

    def readings(self, start: float, end: float, devices: Collection[str] | None
                 ) -> Iterator[Reading]:
        # The daemon evaluated readings as they arrived: receive time first; the device time
        # breaks ties (one batch of one device's backlog, received in the same millisecond),
        # then the device. Rows are selected as (received_ms, ts_ms, device_id, ...) tuples,
        # so that plain tuple order is that order.
        lo, hi = math.floor(start * 1000), math.ceil(end * 1000)
        conn = self._connect()
        try:
            ids = sorted(devices) if devices is not None else _device_ids(conn)
            if not ids:
                return
            wanted = orjson.dumps(ids).decode()
            loads = orjson.loads
            pending: list[tuple[int, int, str, str, str]] = []
            sent = -math.inf  # every row received before this has been yielded
            at, stop = lo - self.max_age_ms, hi + self.skew_ms
            while at < stop:
                # The slice ends _SLICE_ENTRIES readings (of every device) on: the ts index
                # finds that point without touching the table, however dense the data.
                row = conn.execute(
                    "SELECT ts_ms FROM readings WHERE ts_ms >= ? ORDER BY ts_ms"
                    " LIMIT 1 OFFSET ?", (at, _SLICE_ENTRIES)).fetchone()
                upto = stop if row is None else min(stop, max(row[0], at + 1))
                # CROSS JOIN: for each device in turn, a range of the primary key. Sorted
                # by sqlite (cheaper than comparing tuples in Python), so that the sort
                # below only merges them with the rows left from the slice before. The
                # primary key makes the order total: the same as the tuples'.
                rows = conn.execute(
                    "SELECT r.received_ms, r.ts_ms, r.device_id, r.kind, r.fields"
                    " FROM json_each(?) AS d CROSS JOIN readings AS r"
                    " WHERE r.device_id = d.value AND r.ts_ms >= ? AND r.ts_ms < ?"
                    " AND r.received_ms >= ? AND r.received_ms < ?"
                    " ORDER BY r.received_ms, r.ts_ms, r.device_id",
                    (wanted, at, upto, lo, hi)).fetchall()
                at = upto
                if rows:
                    pending += rows
                    pending.sort()
                    if pending[0][0] < sent:
                        raise SourceError("store_unreadable", path=self.path, reason=(
                            f"{pending[0][2]} has a reading stamped more than "
                            f"{self.skew_ms / 1000:.0f} s after its receipt"))
                if at < stop:
                    boundary = upto - self.skew_ms
                    ready = bisect.bisect_left(pending, (boundary,))
                    sent = max(sent, boundary)
                else:
                    ready = len(pending)
                for received_ms, ts_ms, device_id, kind, fields in pending[:ready]:
                    yield _reading(device_id, kind, ts_ms / 1000, received_ms / 1000,
                                   loads(fields))
                del pending[:ready]
        finally:
            conn.close()

    def any_readings(self, start: float, end: float, devices: Collection[str] | None) -> bool:
        where, params = self._where(start, end, devices)
        conn = self._connect()
        try:
            if devices is not None and len(devices) > _SQL_DEVICES:
                wanted = set(devices)
                cursor = conn.execute("SELECT device_id FROM readings" + where, params)
                return any(row[0] in wanted for row in cursor)
            return conn.execute("SELECT 1 FROM readings" + where + " LIMIT 1",
                                params).fetchone() is not None
        finally:
            conn.close()

    def estimate(self, start: float, end: float, devices: Collection[str] | None
                 ) -> int | None:
        # Readings measured in the period (counted on the ts index alone, no table reads),
        # times the share of the devices asked for: close enough for an ETA.
        conn = self._connect()
        try:
            total = int(conn.execute(
                "SELECT count(*) FROM readings WHERE ts_ms >= ? AND ts_ms < ?",
                (math.floor(start * 1000), math.ceil(end * 1000))).fetchone()[0])
            if devices is None or not total:
                return total
            return round(total * len(devices) / max(1, len(_device_ids(conn))))
        finally:
            conn.close()

    def span(self) -> tuple[float, float] | None:
        conn = self._connect()
        try:
            # min/max of the indexed ts_ms are two index lookups; received_ms has no index.
            low, high = conn.execute("SELECT min(ts_ms), max(ts_ms) FROM readings").fetchone()
        finally:
            conn.close()
        return None if low is None else (low / 1000, high / 1000)


# Reading(...) of stored rows, at half the cost: a frozen dataclass's __init__ sets each
# field through object.__setattr__ (about 0.3 us of a reading's replay); the slots' own
# setters do the same without it. The result is a Reading like any other (timed: stored
# readings are stamped).
_FIELDS = ("device_id", "kind", "ts", "received_at", "values", "timed")
if tuple(f.name for f in dataclasses.fields(Reading)) != _FIELDS:  # pragma: no cover
    raise ImportError("sentinel.types.Reading has changed: update backtest.sources._reading")
_new = object.__new__
_set_device, _set_kind, _set_ts, _set_received, _set_values, _set_timed = (
    getattr(Reading, name).__set__ for name in _FIELDS)


def _reading(device_id: str, kind: str, ts: float, received_at: float,
             values: dict[str, Value]) -> Reading:
    r: Reading = _new(Reading)
    _set_device(r, device_id)
    _set_kind(r, kind)
    _set_ts(r, ts)
    _set_received(r, received_at)
    _set_values(r, values)
    _set_timed(r, True)
    return r


def _device_ids(conn: sqlite3.Connection) -> list[str]:
    """Every device with stored readings: one primary-key seek per device, not a scan."""
    return [row[0] for row in conn.execute(
        "WITH RECURSIVE d(id) AS (SELECT min(device_id) FROM readings UNION ALL"
        " SELECT (SELECT min(device_id) FROM readings WHERE device_id > d.id) FROM d"
        " WHERE d.id IS NOT NULL) SELECT id FROM d WHERE id IS NOT NULL")]


def merge_series(series: Iterator[Mapping[str, object]], inventory: Mapping[str, Device],
                 kinds: KindRegistry, devices: Collection[str] | None = None
                 ) -> list[Reading]:
    """Export lines (one series per `<kind>_<field>` and device) → Readings by time.

    Fields of one device at one timestamp become one Reading again, as they were written
    (one line-protocol point). Booleans come back as 1/0 and are turned back into bools
    by the kind's field types; string fields are not stored by VictoriaMetrics at all.
    Exact duplicates (VictoriaMetrics keeps both) collapse.
    """
    points: dict[tuple[str, int], dict[str, Value]] = {}
    for item in series:
        metric = item.get("metric")
        if not isinstance(metric, Mapping):
            continue
        device_id = metric.get("device_id")
        name = metric.get("__name__")
        if not isinstance(device_id, str) or not isinstance(name, str):
            continue
        device = inventory.get(device_id)
        if device is None or (devices is not None and device_id not in devices):
            continue
        prefix = device.kind + "_"
        if not name.startswith(prefix):
            continue
        field = name[len(prefix):]
        spec = kinds.compiled(device.kind).get(field) if device.kind in kinds else None
        values = item.get("values")
        stamps = item.get("timestamps")
        if not isinstance(values, list) or not isinstance(stamps, list):
            continue
        for ts_ms, raw in zip(stamps, values, strict=False):
            if not isinstance(raw, int | float) or not isinstance(ts_ms, int):
                continue
            value: Value = bool(raw) if spec is not None and spec.type == "bool" else float(raw)
            points.setdefault((device_id, ts_ms), {})[field] = value
    out = [Reading(device_id, inventory[device_id].kind, ts_ms / 1000, ts_ms / 1000, values)
           for (device_id, ts_ms), values in points.items()]
    out.sort(key=lambda r: (r.ts, r.device_id))
    return out


class VictoriaReadings:
    """VictoriaMetrics' `/api/v1/export`, ordered by device time.

    A TSDB does not keep the receive time: each reading's `received_at` is its device time,
    so offline rules see a device as heard from when it measured, not when it arrived.
    """

    has_received_time = False
    name = "victoria"

    def __init__(self, url: str, inventory: Mapping[str, Device], kinds: KindRegistry,
                 slice_seconds: float = _SLICE) -> None:
        self.url = url.rstrip("/")
        self.inventory = inventory
        self.kinds = kinds
        self.slice = slice_seconds

    def _selector(self, devices: Collection[str] | None) -> str:
        names = sorted({d.kind for d in self.inventory.values()
                        if devices is None or d.id in devices})
        name_re = "(" + "|".join(re.escape(n) for n in names) + ")_.+"
        selector = f'__name__=~{json.dumps(name_re)}'
        if devices is not None and len(devices) <= _SQL_DEVICES:
            ids = "|".join(re.escape(d) for d in sorted(devices))
            selector += f',device_id=~{json.dumps(ids)}'
        else:
            selector += ',device_id!=""'
        return "{" + selector + "}"

    def _get(self, path: str, params: list[tuple[str, str]]) -> bytes:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT) as resp:
                body: bytes = resp.read()
                return body
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 405):
                raise SourceError("no_export_api", url=self.url) from None
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise SourceError("source_failed", url=self.url,
                              reason=f"HTTP {exc.code} {detail}".strip()) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceError("unreachable", url=self.url, reason=reason) from None

    def check(self) -> None:
        """Raise SourceError unless the server answers the export API (VictoriaMetrics)."""
        self._get("/api/v1/export", [("match[]", '{__name__="sentinel_backtest_probe"}'),
                                     ("start", "0"), ("end", "1")])

    def _export(self, start: float, end: float, devices: Collection[str] | None
                ) -> Iterator[Mapping[str, object]]:
        # The export API's bounds are inclusive; `end` is made exclusive by one millisecond.
        body = self._get("/api/v1/export", [
            ("match[]", self._selector(devices)), ("start", f"{start:.3f}"),
            ("end", f"{end - 0.001:.3f}")])
        for line in body.splitlines():
            if line.strip():
                yield orjson.loads(line)

    def readings(self, start: float, end: float, devices: Collection[str] | None
                 ) -> Iterator[Reading]:
        at = start
        while at < end:
            upto = min(end, at + self.slice)
            yield from merge_series(self._export(at, upto, devices), self.inventory,
                                    self.kinds, devices)
            at = upto

    def any_readings(self, start: float, end: float, devices: Collection[str] | None) -> bool:
        body = self._get("/api/v1/series", [
            ("match[]", self._selector(devices)), ("start", f"{start:.3f}"),
            ("end", f"{end - 0.001:.3f}")])
        try:
            data = orjson.loads(body).get("data")
        except (orjson.JSONDecodeError, AttributeError):
            raise SourceError("source_failed", url=self.url, reason="not JSON") from None
        return bool(data)

    def span(self) -> tuple[float, float] | None:
        return None

    def estimate(self, start: float, end: float, devices: Collection[str] | None
                 ) -> int | None:
        return None  # counting would read the series: no ETA from VictoriaMetrics
