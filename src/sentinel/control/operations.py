"""The running daemon as the control API sees it: one object behind every command.

Each call goes to the stage that owns the answer (incidents, escalation, the stores); this
module only composes them, so the HTTP layer never reaches into a stage directly.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Literal, Protocol

from sentinel.clock import Clock, SystemClock
from sentinel.config.model import LatencySettings
from sentinel.control.feed import ReadingFeed, event_json
from sentinel.control.fleet import fleet_status, offline_incident_names
from sentinel.control.links import LinkClaims
from sentinel.escalation.service import EscalationService
from sentinel.incidents import latency
from sentinel.incidents.model import Incident, Outcome
from sentinel.incidents.photos import PhotoStore
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore, query_events, query_incidents
from sentinel.incidents.windows import Window
from sentinel.loading import Loaded, window_vocabulary
from sentinel.reports import response
from sentinel.store import ReadingSink
from sentinel.store.db import list_deadletters
from sentinel.store.sqlite import query_history

WindowType = Literal["silence", "drill"]


class HistoryUnavailable(Exception):
    """The configured store cannot answer history queries from the daemon."""


class BrokerView(Protocol):
    @property
    def connected(self) -> bool: ...

    last_error: str | None


def window_json(window: Window) -> dict[str, Any]:
    return window.to_json()


class WindowRefused(ValueError):
    """A window names places, devices, kinds or rules that do not exist."""


class UnknownPerson(ValueError):
    """An assignment names nobody of the on-call file."""


class Operations:
    """Everything an operator can ask of or tell the running daemon."""

    def __init__(self, loaded: Loaded, incidents: IncidentService,
                 escalation: EscalationService, state: StateStore, sink: ReadingSink,
                 broker: BrokerView, readings: ReadingFeed, clock: Clock | None = None
                 ) -> None:
        self._loaded = loaded
        self._incidents = incidents
        self._state = state
        self._escalation = escalation
        self._sink = sink
        self._broker = broker
        self.readings = readings
        self._offline_names = offline_incident_names(loaded.rules)
        self._vocabulary = window_vocabulary(loaded)
        # A window naming a kind mutes the kinds that extend it, as in the policy file.
        self._expand_kinds = loaded.kinds.expand
        self._zone = loaded.oncall.timezone
        self._clock = clock if clock is not None else SystemClock()
        self.started_at = self._clock.now()
        self.photos = PhotoStore(loaded.settings.state_dir / "photos")

    # -- incidents --------------------------------------------------------------------

    async def acknowledge(self, incident_id: str, actor: str, note: str | None) -> Incident:
        return await self._escalation.acknowledge(incident_id, actor, note)

    async def resolve(self, incident_id: str, actor: str, outcome: Outcome,
                      note: str | None) -> Incident:
        return await self._escalation.resolve(incident_id, actor, outcome, note)

    async def assign(self, incident_id: str, person: str, actor: str,
                     acknowledge: bool = False) -> Incident:
        """Assign to a contact of the on-call file (UnknownPerson if none); with
        `acknowledge`, acknowledge too if nobody has ("我去处理")."""
        if person not in self._escalation.contacts:
            raise UnknownPerson(person)
        return await self._incidents.assign(incident_id, person, actor, acknowledge)

    async def note(self, incident_id: str, actor: str, text: str,
                   photo: bytes | None = None) -> Incident:
        """Add a note; a photo is stored first (PhotoRefused if it is not one we keep)."""
        found = self._incidents.incident(incident_id)
        if found is None or not found.open:
            raise KeyError(incident_id)  # before a photo of a closed incident is stored
        photo_id = await asyncio.to_thread(self.photos.save, photo) if photo else None
        return await self._incidents.note(incident_id, actor, text, photo_id)

    async def events_of(self, incident_id: str) -> list[dict[str, Any]]:
        """The incident's own audit trail, oldest first, each event as the API gives it."""
        events = await self._state.call(
            lambda conn: query_events(conn, incident_id=incident_id, limit=100_000))
        return [{"seq": e.seq, "type": e.type, "ts": e.ts, "actor": e.actor,
                 "severity": e.severity.label, "status": e.status.value, "data": dict(e.data)}
                for e in events]

    async def photo(self, incident_id: str, photo_id: str) -> bytes | None:
        """A photo of one of this incident's notes; None when it has no such photo."""
        named = any(e["type"] == "noted" and e["data"].get("photo") == photo_id
                    for e in await self.events_of(incident_id))
        return await asyncio.to_thread(self.photos.read, photo_id) if named else None

    def contacts(self) -> list[dict[str, Any]]:
        """The people of the on-call file for an assign menu: roles and areas, no phones."""
        out = []
        for contact in self._loaded.oncall.contact:
            roles = {contact.role.value}
            grids: set[str] = set()
            compounds: set[str] = set()
            for roster in self._loaded.oncall.roster:
                members = {m for shift in roster.shift for m in shift.members}
                members |= {o.contact for o in roster.override}
                if contact.id in members:
                    roles.add(roster.role.value)
                    grids.update(roster.grids)
                    compounds.update(roster.compounds)
            out.append({"id": contact.id, "name": contact.name, "roles": sorted(roles),
                        "grids": sorted(grids), "compounds": sorted(compounds)})
        return out

    async def response_report(self, since: float, by: response.By) -> dict[str, Any]:
        """The closed loop's report of incidents opened since `since` (reports.response)."""
        until = self._clock.now()
        incidents, events, groups = await self._state.call(
            lambda conn: response.query(conn, since, until))
        names = {c.id: c.name for c in self._loaded.oncall.contact}
        return response.build(incidents, events, names, since, until, by, groups)

    async def get_incident(self, incident_id: str) -> Incident | None:
        return await self._escalation.get_incident(incident_id)

    async def list_open(self) -> list[Incident]:
        return await self._escalation.list_open()

    async def list_recent(self, limit: int) -> list[Incident]:
        """Open and closed incidents, newest first."""
        return await self._state.call(
            lambda conn: query_incidents(conn, open_only=False, limit=limit))

    async def claim_link(self, claims: LinkClaims, now: float) -> bool:
        return await self._escalation.claim_link(claims, now)

    # -- the per-alert record (GB 50440) ----------------------------------------------

    def latency_limits(self) -> LatencySettings:
        return self._loaded.settings.incidents.latency

    async def latency_report(self, since: float) -> dict[str, Any]:
        """Stage-time percentiles and limits kept, for incidents opened since `since`."""
        until = self._clock.now()
        incidents = await self._state.call(
            lambda conn: latency.query_recorded(conn, since, until))
        return latency.report(incidents, self.latency_limits(), since, until)

    def contact(self, contact_id: str) -> tuple[str, Literal["zh", "en"]] | None:
        return self._escalation.contact(contact_id)

    async def audit(self, incident_id: str) -> list[dict[str, Any]]:
        return await self._escalation.audit(incident_id)

    # -- the event stream -------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._incidents.last_seq

    async def events_after(self, seq: int, limit: int = 500, wait: float | None = None
                           ) -> list[dict[str, Any]]:
        """Committed events after `seq`, oldest first, each with its incident's place."""
        events = await self._incidents.events_after(seq, limit, wait)
        cache: dict[str, Incident | None] = {}
        out = []
        for event in events:
            if event.incident_id not in cache:
                cache[event.incident_id] = await self.get_incident(event.incident_id)
            out.append(event_json(event, cache[event.incident_id]))
        return out

    # -- silences and drills ----------------------------------------------------------

    async def add_window(self, window: Window) -> dict[str, Any]:
        """Store a window; WindowRefused names what in it does not exist."""
        problems = self._vocabulary.problems(window)
        if problems:
            raise WindowRefused("; ".join(problems))
        if window.kinds:
            window = replace(window, kinds=self._expand_kinds(window.kinds))
        if window.every is not None and window.every.zone != self._zone:
            window = replace(window, every=replace(window.every, zone=self._zone))
        return window_json(await self._incidents.add_window(window))

    async def remove_window(self, type_: WindowType, window_id: int, author: str) -> bool:
        return await self._incidents.remove_window(type_, window_id, author)

    def windows(self, type_: WindowType) -> list[dict[str, Any]]:
        return [window_json(w) for w in self._incidents.upcoming_windows()
                if w.type == type_]

    def muted_by(self, incident: Incident) -> Window | None:
        """The silence that holds back notifications about `incident` now, if any."""
        return self._incidents.windows.muted_by(incident, self._incidents.now())

    # -- fleet, stores ----------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        engine = self._incidents.engine
        last_seen = engine.last_seen if engine is not None else {}
        now = self._clock.now()
        status = fleet_status(self._loaded.inventory, last_seen,
                              self._incidents.open_incidents(), self._offline_names, now)
        settings = self._loaded.settings
        status.update({
            "community": _community(self._loaded),
            "started_at": self.started_at,
            "broker": {"connected": self._broker.connected, "host": settings.mqtt.host,
                       "port": settings.mqtt.port, "error": self._broker.last_error},
            "store": self._sink.health(),
            "outbox_depth": await self._escalation.outbox_depth(),
            "event_seq": self._incidents.last_seq,
            "silences": [window_json(w) for w in self._incidents.windows.all()
                         if w.type == "silence" and w.active(self._incidents.now())],
            "latency_limits": self.latency_limits().model_dump(),
        })
        return status

    def incident_json(self, incident: Incident) -> dict[str, Any]:
        """An incident for API answers, with the silence that mutes it now (if any)."""
        data = incident.to_json()
        muted = self.muted_by(incident)
        data["silenced_by"] = muted.label if muted is not None else None
        return data

    async def history(self, device_id: str, since: float, limit: int
                      ) -> list[dict[str, Any]]:
        """Readings of a device since `since`, oldest first."""
        store = self._loaded.settings.store
        if store.backend != "sqlite":
            raise HistoryUnavailable(
                "history reads the embedded store; with [store] backend = "
                f"{store.backend!r}, query the time-series database instead")
        path = store.sqlite.path
        return await asyncio.to_thread(query_history, path, device_id,
                                       round(since * 1000), limit)

    async def deadletters(self, limit: int, reason: str | None) -> list[dict[str, Any]]:
        store = self._loaded.settings.store
        path = store.sqlite.path if store.backend == "sqlite" else store.spool.path
        rows = await asyncio.to_thread(list_deadletters, path, limit, reason)
        out = []
        for row in rows:
            payload = row["payload"]
            assert isinstance(payload, bytes)
            out.append({**row, "payload": payload.decode("utf-8", "backslashreplace")})
        return out

    def known_device(self, device_id: str) -> bool:
        return device_id in self._loaded.inventory


def _community(loaded: Loaded) -> str:
    return next((d.community for d in loaded.inventory.values()), "")
