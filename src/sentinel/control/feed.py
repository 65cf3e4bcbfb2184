"""What `sentinel tail` and the board follow: incident events and, on request, readings.

Incident events come from the committed, gapless event log (a follower resumes after the
last `seq` it saw, across daemon restarts). Readings are a live view only: each follower has
a bounded queue, and a follower too slow to keep up loses readings (counted and reported to
it), never slows down ingestion.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sentinel.config.inventory import Device
from sentinel.incidents.model import Incident, IncidentEvent
from sentinel.notify.channels import channel_type
from sentinel.types import Reading, Severity

# Readings a follower may fall behind by before it loses some.
READING_QUEUE = 2000
PLACE_KEYS = ("kind", "compound", "building", "grid", "device")


def event_json(event: IncidentEvent, incident: Incident | None) -> dict[str, Any]:
    """One event for followers: the event's own fields plus the incident's name and place."""
    data: dict[str, Any] = {"seq": event.seq, "incident": event.incident_id, "type": event.type,
                            "ts": event.ts, "actor": event.actor,
                            "severity": event.severity.label, "status": event.status.value}
    data.update((k, v) for k, v in event.data.items() if k not in data)
    if "kind" in event.data:  # a delivery's notice kind (page, resolved...), not the device's
        data["notice"] = data.pop("kind")
    if "channel" in event.data:
        # What a person is shown of a delivery's channel: its type (sentinel.notify.channels).
        data["channel_type"] = channel_type(event.data["channel"])
    if incident is not None:
        data["name"] = incident.name
        data["kind"] = incident.kind
        data["place"] = dict(incident.place)
        data["device"] = incident.device_id
        data["drill"] = incident.drill
    return data


def reading_json(reading: Reading) -> dict[str, Any]:
    return {"device": reading.device_id, "kind": reading.kind, "ts": reading.ts,
            "received_at": reading.received_at, "values": dict(reading.values)}


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events and readings a follower wants; an empty filter lets everything through.

    Each field holds accepted values (any of them matches); `severity` is a floor.
    """

    kind: frozenset[str] = frozenset()
    compound: frozenset[str] = frozenset()
    building: frozenset[str] = frozenset()
    grid: frozenset[str] = frozenset()
    device: frozenset[str] = frozenset()
    severity: Severity | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str] | Any) -> Filter:
        """From query parameters; a key may repeat or hold comma-separated values.

        ValueError names a bad severity.
        """
        def values(key: str) -> frozenset[str]:
            found = query.getall(key, []) if hasattr(query, "getall") else \
                [query[key]] if key in query else []
            return frozenset(v.strip() for item in found for v in item.split(",") if v.strip())

        severity = query.get("severity") or None
        return cls(kind=values("kind"), compound=values("compound"),
                   building=values("building"), grid=values("grid"), device=values("device"),
                   severity=Severity.parse(severity) if severity else None)

    def query(self) -> list[tuple[str, str]]:
        """The query parameters that make this filter again (for reconnects)."""
        out = [(key, value) for key in PLACE_KEYS for value in sorted(getattr(self, key))]
        if self.severity is not None:
            out.append(("severity", self.severity.label))
        return out

    def _place_ok(self, place: Mapping[str, Any], kind: str | None,
                  device: str | None) -> bool:
        if self.kind and kind not in self.kind:
            return False
        if self.compound and place.get("compound") not in self.compound:
            return False
        if self.building and not self._building_ok(place):
            return False
        if self.grid and place.get("grid") not in self.grid:
            return False
        return not (self.device and device not in self.device)

    def _building_ok(self, place: Mapping[str, Any]) -> bool:
        # A building is named within its compound: "水贝花园/1栋" or just "1栋".
        building = place.get("building")
        return building in self.building or \
            f"{place.get('compound')}/{building}" in self.building

    def event(self, data: Mapping[str, Any]) -> bool:
        if self.severity is not None and Severity.parse(data["severity"]) < self.severity:
            return False
        place = data.get("place") or {}
        return self._place_ok(place, data.get("kind"), data.get("device") or place.get("device"))

    def reading(self, reading: Reading, device: Device | None) -> bool:
        if self.severity is not None:
            return False  # readings have no severity: a severity filter asks for incidents
        place: dict[str, str] = {}
        if device is not None:
            place = {"compound": device.compound, "building": device.building,
                     "grid": device.grid}
        return self._place_ok(place, reading.kind, reading.device_id)


@dataclass
class ReadingFollower:
    """One follower's bounded queue of readings, and how many it lost."""

    filter: Filter
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(READING_QUEUE))
    dropped: int = 0


class ReadingFeed:
    """A reading listener of the ingest stage that fans readings out to live followers."""

    def __init__(self, inventory: Mapping[str, Device]) -> None:
        self._inventory = inventory
        self._followers: list[ReadingFollower] = []

    @property
    def followers(self) -> int:
        return len(self._followers)

    async def put(self, readings: Sequence[Reading]) -> None:
        # Never waits: ingestion must not slow down for a terminal someone is reading.
        for follower in self._followers:
            queue = follower.queue
            for reading in readings:
                if not follower.filter.reading(reading, self._inventory.get(reading.device_id)):
                    continue
                try:
                    queue.put_nowait(reading_json(reading))
                except asyncio.QueueFull:
                    follower.dropped += 1

    @contextlib.contextmanager
    def follow(self, filter_: Filter) -> Iterator[ReadingFollower]:
        follower = ReadingFollower(filter_)
        self._followers.append(follower)
        try:
            yield follower
        finally:
            self._followers.remove(follower)
