"""Live terminal view of ingestion for the dispatch room and the demo."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime
from typing import Protocol, TextIO
from zoneinfo import ZoneInfo

from sentinel.config.inventory import Inventory
from sentinel.i18n import Language, incident_title, kind_name, t
from sentinel.incidents.model import Incident, IncidentEvent
from sentinel.types import IngestStats, Severity

_TZ = ZoneInfo("Asia/Shanghai")
_RED = "\x1b[31;1m"
_RESET = "\x1b[0m"
_COLORS = {Severity.EMERGENCY: "\x1b[41;97;1m", Severity.CRITICAL: "\x1b[31;1m",
           Severity.WARNING: "\x1b[33;1m", Severity.INFO: "\x1b[36m",
           Severity.MAINTENANCE: "\x1b[2m"}
# Events the dispatch room needs to see; the rest stays in the audit trail.
_SHOWN = frozenset({"opened", "severity_raised", "condition_cleared", "condition_returned",
                    "acknowledged", "resolved", "grouped", "attached", "flapping",
                    "cancel_refused"})


class IncidentSource(Protocol):
    last_seq: int

    async def events_after(self, seq: int, limit: int = 500, wait: float | None = None
                           ) -> list[IncidentEvent]: ...

    def incident(self, incident_id: str) -> Incident | None: ...


def incident_line(event: IncidentEvent, inc: Incident | None, lang: Language) -> str:
    """One line about an incident event, for a terminal."""
    when = datetime.fromtimestamp(event.ts, _TZ).strftime("%H:%M:%S")
    severity = t(f"severity.{event.severity.label}", lang)
    verb = t(f"event.{event.type}", lang) if event.type in _SHOWN else event.type
    if inc is None:
        return f"{when} [{severity}] {verb} #{event.incident_id}"
    place = inc.place
    where = place.get("location") or " ".join(
        v for v in (place.get("compound"), place.get("building")) if v)
    text = f"{when} [{severity}] {verb} {incident_title(inc.name, lang)} #{inc.id}"
    if event.type in ("grouped", "attached"):
        group = event.data.get("group_name")
        text += f" → {incident_title(str(group), lang)} #{event.data.get('group')}"
    elif event.type == "resolved" and event.data.get("outcome"):
        text += f" ({event.data['outcome']})"
    if where:
        text += f"  {where}"
    if inc.device_id:
        text += f"  {inc.device_id}"
    if inc.drill:
        text += "  [演练]" if lang == "zh" else "  [drill]"
    if inc.members and event.type == "opened":
        text += f"  ×{len(inc.members)}"
    return text


class LiveView:
    """Prints incident events as they are committed, and a status line periodically."""

    def __init__(self, inventory: Inventory, lang: Language = "zh",
                 stream: TextIO | None = None, interval: float = 2.0) -> None:
        self._inventory = inventory
        self._lang = lang
        self._out = stream or sys.stdout
        self._color = self._out.isatty()
        self._interval = interval

    async def follow(self, source: IncidentSource) -> None:
        """Print incident events as they are committed, until cancelled."""
        seq = source.last_seq
        while True:
            for event in await source.events_after(seq, wait=5.0):
                seq = event.seq
                if event.type not in _SHOWN:
                    continue
                line = incident_line(event, source.incident(event.incident_id), self._lang)
                color = _COLORS.get(event.severity) if self._color else None
                self._write(f"{color}{line}{_RESET}" if color else line)

    def write(self, line: str) -> None:
        """Print one line of the live view (other parts of the demo use it too)."""
        self._write(line)

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    async def run(self, stats: IngestStats) -> None:
        """Print a status line every interval until cancelled."""
        last_received, last_time = stats.received, time.monotonic()
        while True:
            await asyncio.sleep(self._interval)
            now = time.monotonic()
            rate = (stats.received - last_received) / max(now - last_time, 1e-9)
            last_received, last_time = stats.received, now
            kinds = "  ".join(f"{kind_name(k, self._lang)} {n}"
                              for k, n in sorted(stats.stored_by_kind.items()))
            self._write(t("live.status", self._lang, received=stats.received,
                          stored=stats.stored, rejected=stats.rejected_total,
                          rate=round(rate), kinds=kinds))
            if stats.rejected:
                reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats.rejected.items()))
                self._write(t("live.rejects", self._lang, reasons=reasons))
