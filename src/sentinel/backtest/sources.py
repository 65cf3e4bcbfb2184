"""Stored readings, read back in the order the daemon evaluated them.

Two sources: the embedded store (`SqliteReadings`), which keeps each reading's receive time,
and VictoriaMetrics' export API (`VictoriaReadings`), which keeps only the device time. Both
stream: the sqlite cursor is read in chunks, VictoriaMetrics is asked one time slice at a
time, so memory does not grow with the period.

Only reads: the sqlite file is opened with `mode=ro` (safe beside the running daemon, WAL
lets readers in), VictoriaMetrics is only sent GET requests.
"""

from __future__ import annotations

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

# Rows fetched from sqlite at once: large enough that the per-call cost vanishes, small
# enough that a chunk is a few MB at most.
_CHUNK = 5000
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


class SqliteReadings:
    """The embedded store (`store/sqlite.py`), by receive time then device time."""

    has_received_time = True
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

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
        # breaks ties (one batch of one device's backlog, received in the same millisecond).
        where, params = self._where(start, end, devices)
        wanted = set(devices) if devices is not None and len(devices) > _SQL_DEVICES else None
        conn = self._connect()
        try:
            cursor = conn.execute(
                "SELECT device_id, kind, ts_ms, received_ms, fields FROM readings" + where
                + " ORDER BY received_ms, ts_ms, device_id", params)
            loads = orjson.loads
            while rows := cursor.fetchmany(_CHUNK):
                for device_id, kind, ts_ms, received_ms, fields in rows:
                    if wanted is not None and device_id not in wanted:
                        continue
                    yield Reading(device_id, kind, ts_ms / 1000, received_ms / 1000,
                                  loads(fields))
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

    def span(self) -> tuple[float, float] | None:
        conn = self._connect()
        try:
            # min/max of the indexed ts_ms are two index lookups; received_ms has no index.
            low, high = conn.execute("SELECT min(ts_ms), max(ts_ms) FROM readings").fetchone()
        finally:
            conn.close()
        return None if low is None else (low / 1000, high / 1000)


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
