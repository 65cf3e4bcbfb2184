"""Reach of each community box, and the district's own incidents about them.

Reach (sentinel.district.view.Reach) is judged from what the mirror holds: the box's
retained heartbeat (its will says `offline`, a clean stop `stopped`), Mosquitto's bridge
notification ("0": the box's uplink is lost) and staleness (no heartbeat for [district]
offline_after).

The district's own incidents go through the same stages as a box's (IncidentService ->
EscalationService -> outbox -> apprise), on the district's own state database:

  box_offline  target: the community. Critical while the box is offline; warning when it
               stopped cleanly (a planned restart: not paged as critical). Resolves once the
               box is back online.
  whistle      吹哨. target: <community>/<box incident id>, life-safety, the box incident's
               severity. Open while a life-safety incident of the box is unacknowledged after
               its climb reached the street office; resolves when the box's incident is
               acknowledged or resolved.

Every decision compares what should be open with what is open, so it is idempotent: after a
restart (or a crash between two commits) the next check puts things right.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from sentinel.clock import Clock
from sentinel.district.config import Community
from sentinel.district.mirror import Mirror, Record
from sentinel.district.view import Reach
from sentinel.incidents.service import IncidentService
from sentinel.types import Severity, Value

log = structlog.get_logger("sentinel.district.watch")

BOX_OFFLINE = "box_offline"
WHISTLE = "whistle"
DISTRICT_INCIDENTS = (BOX_OFFLINE, WHISTLE)
# How often the mirror's retention runs (seconds).
_PRUNE_EVERY = 3600.0
# Place keys of a box's incident carried over to the district's whistle.
_PLACE_KEYS = ("compound", "building", "floor", "unit", "grid", "location")


def judge(record: Record, now: float, offline_after: float, started_at: float) -> Reach:
    """A community's reach now. Staleness counts from the district's own start at the
    earliest, so a restarted district gives every box offline_after to be heard."""
    beat = record.heartbeat
    if record.bridge == "0" and (record.heartbeat_at is None or record.bridge_at is None
                                 or record.bridge_at >= record.heartbeat_at):
        return "offline"
    if beat is not None and beat.state == "offline":
        return "offline"
    if beat is not None and beat.state == "stopped":
        return "stopped"
    heard = max(record.last_heard or -1.0, record.heartbeat_at or -1.0)
    if heard < 0:
        return "unknown" if now - started_at < offline_after else "offline"
    return "online" if now - max(heard, started_at) <= offline_after else "offline"


def _why(record: Record, reach: Reach) -> str:
    if reach != "offline":
        return reach
    if record.bridge == "0":
        return "bridge"
    if record.heartbeat is not None and record.heartbeat.state == "offline":
        return "will"
    return "silent"


class Watch:
    """Judges reach on every mirror commit and every check_interval; raises and clears the
    district's own incidents."""

    def __init__(self, mirror: Mirror, incidents: IncidentService,
                 communities: Mapping[str, Community], clock: Clock, offline_after: float,
                 check_interval: float = 1.0, keep_days: float = 90.0) -> None:
        self._mirror = mirror
        self._incidents = incidents
        self._communities = dict(communities)
        self._clock = clock
        self._offline_after = offline_after
        self._check_interval = check_interval
        self._keep_days = keep_days
        self._pruned_at = clock.monotonic()
        self.started_at = clock.now()
        self._lock = asyncio.Lock()
        self.changes = 0

    async def run(self) -> None:
        """Check staleness and gaps until cancelled."""
        while True:
            await asyncio.sleep(self._check_interval)
            try:
                await self.check()
                self._mirror.check_gaps()
                if self._clock.monotonic() - self._pruned_at >= _PRUNE_EVERY:
                    self._pruned_at = self._clock.monotonic()
                    await self._mirror.prune(self._keep_days)
            except Exception:  # one failed check must not end the watch
                log.exception("district_check_failed")

    async def on_commit(self, touched: set[str]) -> None:
        await self.check(touched)

    async def check(self, communities: Iterable[str] | None = None) -> None:
        async with self._lock:
            now = self._clock.now()
            records = self._mirror.records
            names = list(communities) if communities is not None else list(records)
            changed = []
            for community in names:
                record = records[community]
                reach = judge(record, now, self._offline_after, self.started_at)
                if reach != record.reach:
                    log.info("district_reach", community=community, reach=reach,
                             previous=record.reach, why=_why(record, reach),
                             last_heard=record.last_heard)
                    record.reach, record.since = reach, now
                    changed.append(community)
                    self.changes += 1
            skipped, self._mirror.skipped = self._mirror.skipped, set()
            await self._mirror.save_records({*changed, *skipped})
            for community in names:
                await self._box_offline(records[community])
            await self._whistles()

    async def _box_offline(self, record: Record) -> None:
        community = record.id
        book = self._incidents.book
        current = book.open.get(f"{BOX_OFFLINE}:{community}") if book is not None else None
        if record.reach in ("offline", "stopped"):
            severity = Severity.CRITICAL if record.reach == "offline" else Severity.WARNING
            if current is not None and current.active and current.severity >= severity:
                return
            config = self._communities[community]
            await self._incidents.raised(
                BOX_OFFLINE, community, True, severity, self._place(community),
                kind="district", reach=record.reach, why=_why(record, record.reach),
                community_name=config.label, phone=config.phone,
                last_heard=record.last_heard if record.last_heard is not None else 0.0)
        elif record.reach == "online" and current is not None and current.active:
            await self._incidents.raised(BOX_OFFLINE, community, False, current.severity,
                                         self._place(community), kind="district",
                                         reach=record.reach)

    async def _whistles(self) -> None:
        wanted = {(c, i): sev for c, i, sev in await self._mirror.whistles()}
        book = self._incidents.book
        current = {inc.target: inc for inc in (book.open.values() if book else ())
                   if inc.name == WHISTLE and inc.active}
        new = [pair for pair in wanted if f"{pair[0]}/{pair[1]}" not in current]
        rows = await self._mirror.incident_rows(new) if new else {}
        for community, incident_id in new:
            box = rows.get((community, incident_id), {})
            config = self._communities[community]
            place = self._place(community, box.get("place"))
            place["device"] = f"{community}/{incident_id}"
            detail: dict[str, Value] = {
                "incident": incident_id, "box_incident": str(box.get("name") or ""),
                "box_kind": str(box.get("kind") or ""), "community_name": config.label,
                "phone": config.phone}
            log.warning("district_whistle", community=community, incident=incident_id)
            await self._incidents.raised(
                WHISTLE, f"{community}/{incident_id}", True,
                Severity.parse(wanted[(community, incident_id)]), place, life_safety=True,
                kind="whistle", **detail)
        for target, inc in current.items():
            community, _, incident_id = target.partition("/")
            if (community, incident_id) not in wanted:
                await self._incidents.raised(WHISTLE, target, False, inc.severity,
                                             dict(inc.place), life_safety=True,
                                             kind="whistle")

    def _place(self, community: str, box_place: Any = None) -> dict[str, str]:
        config = self._communities[community]
        place = {"community": community, "kind": "district", "device": community}
        where = config.label
        if isinstance(box_place, Mapping):
            place.update({k: str(v) for k in _PLACE_KEYS if (v := box_place.get(k))})
            if box_place.get("location"):
                where = f"{config.label} {box_place['location']}"
        # The page's place line carries the community's duty phone: the first thing the
        # street office does about either incident is to call it.
        place["location"] = f"{where} ☎ {config.phone}" if config.phone else where
        return place
