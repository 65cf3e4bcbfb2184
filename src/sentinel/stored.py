"""What the read-only commands ask the daemon, read from the state directory instead.

`incidents list/show`, `report latency/response`, `deadletter list` and `history` (the
embedded store) only read what the daemon committed. When no daemon answers — it is
stopped, or a demo has ended — the same answers come from its files, opened read-only
(a running daemon is never written to from here). The methods mirror
`sentinel.control.client.ControlClient`'s, answers included, so a command does not care
which one it holds; a file that is not there is a `ControlError("not_running")`, as if
nothing had been asked.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sentinel.control.client import ControlError
from sentinel.incidents import latency
from sentinel.incidents.store import query_events, query_incident, query_incidents
from sentinel.loading import Loaded
from sentinel.notify import outbox
from sentinel.reports import response
from sentinel.store.db import list_deadletters, open_readonly
from sentinel.store.sqlite import query_history

T = TypeVar("T")


class StoredState:
    """The daemon's committed state, from its files (see the module docstring)."""

    def __init__(self, loaded: Loaded, where: str, now: Callable[[], float] = time.time
                 ) -> None:
        self._loaded = loaded
        self._now = now
        # The address no daemon answered at, for the message when a file is missing too.
        self.where = where
        self.state_dir = loaded.settings.state_dir

    def available(self) -> bool:
        """Whether the daemon has kept anything here (an incidents or readings file)."""
        settings = self._loaded.settings
        return settings.incidents.path.exists() or (
            settings.store.backend == "sqlite" and settings.store.sqlite.path.exists())

    def _read(self, path: Path, read: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = open_readonly(path)
        except (FileNotFoundError, sqlite3.Error):
            raise ControlError("not_running", f"no daemon at {self.where} and no {path}",
                               url=self.where) from None
        try:
            return read(conn)
        finally:
            conn.close()

    def _incidents_file(self, read: Callable[[sqlite3.Connection], T]) -> T:
        return self._read(self._loaded.settings.incidents.path, read)

    # -- as ControlClient -------------------------------------------------------------

    def incidents(self, include_closed: bool = False, limit: int = 200) -> dict[str, Any]:
        found = self._incidents_file(lambda conn: query_incidents(
            conn, open_only=not include_closed, limit=limit if include_closed else 10_000))
        # No silence is "now" without the daemon's clock and windows: none is claimed.
        return {"seq": 0, "incidents": [{**inc.to_json(), "silenced_by": None}
                                         for inc in found]}

    def get(self, incident_id: str) -> dict[str, Any]:
        def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
            inc = query_incident(conn, incident_id)
            if inc is None:
                return None
            events = query_events(conn, incident_id=incident_id, limit=100_000)
            audit = [{"seq": e.seq, "ts": e.ts, "type": e.type, "actor": e.actor,
                      "severity": e.severity.label, "status": e.status.value, **dict(e.data)}
                     for e in events]
            try:
                attempts = [{"type": "attempt", **a}
                            for a in outbox.attempts_of(conn, incident_id)]
            except sqlite3.OperationalError:  # a state file from before delivery records
                attempts = []
            limits = self._loaded.settings.incidents.latency
            return {"incident": {**inc.to_json(), "silenced_by": None},
                    "audit": sorted([*audit, *attempts], key=lambda d: float(d["ts"])),
                    "latency": latency.summary_line(inc.timing, limits),
                    "events": [{"seq": e.seq, "type": e.type, "ts": e.ts, "actor": e.actor,
                                "severity": e.severity.label, "status": e.status.value,
                                "data": dict(e.data)} for e in events]}
        found = self._incidents_file(read)
        if found is None:
            raise ControlError("not_found", f"no incident {incident_id}", url=self.where,
                               status=404)
        return found

    def latency_report(self, since: float) -> dict[str, Any]:
        until = self._now()
        found = self._incidents_file(lambda conn: latency.query_recorded(conn, since, until))
        return latency.report(found, self._loaded.settings.incidents.latency, since, until)

    def response_report(self, since: float, by: str) -> dict[str, Any]:
        until = self._now()
        incidents, events, groups = self._incidents_file(
            lambda conn: response.query(conn, since, until))
        names = {c.id: c.name for c in self._loaded.oncall.contact}
        chosen: response.By = "grid" if by == "grid" else "kind" if by == "kind" else "worker"
        return response.build(incidents, events, names, since, until, chosen, groups)

    def deadletters(self, limit: int, reason: str | None) -> list[dict[str, Any]]:
        store = self._loaded.settings.store
        path = store.sqlite.path if store.backend == "sqlite" else store.spool.path
        try:
            found = list_deadletters(path, limit, reason)
        except FileNotFoundError:
            raise ControlError("not_running", f"no daemon at {self.where} and no {path}",
                               url=self.where) from None
        return [{**row, "payload": bytes(row["payload"]).decode("utf-8", "backslashreplace")}
                if isinstance(row["payload"], bytes) else row for row in found]

    def history(self, device_id: str, since: float, limit: int) -> list[dict[str, Any]]:
        if device_id not in self._loaded.inventory:
            raise ControlError("not_found", f"no device {device_id} in the inventory",
                               url=self.where, status=404)
        store = self._loaded.settings.store
        if store.backend != "sqlite":
            raise ControlError("unavailable", "history reads the embedded store; with "
                               f"[store] backend = {store.backend!r}, query the time-series "
                               "database instead", url=self.where, status=409)
        path = store.sqlite.path
        try:
            return query_history(path, device_id, round(since * 1000), limit)
        except FileNotFoundError:
            raise ControlError("not_running", f"no daemon at {self.where} and no {path}",
                               url=self.where) from None
