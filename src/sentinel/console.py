"""Live terminal view of ingestion for the dispatch room and the demo."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from sentinel import zone
from sentinel.config.inventory import Inventory
from sentinel.control.feed import event_json
from sentinel.i18n import Language, event_name, incident_title, kind_name, role_name, t
from sentinel.incidents.model import Incident, IncidentEvent
from sentinel.notify.channels import channel_label
from sentinel.timeline import actor_text, outcome_word, place_text
from sentinel.types import IngestStats, Severity

_RED = "\x1b[31;1m"
_RESET = "\x1b[0m"
_COLORS = {Severity.EMERGENCY: "\x1b[41;97;1m", Severity.CRITICAL: "\x1b[31;1m",
           Severity.WARNING: "\x1b[33;1m", Severity.INFO: "\x1b[36m",
           Severity.MAINTENANCE: "\x1b[2m"}
# Events the dispatch room needs to see; the rest stays in the audit trail.
_SHOWN = frozenset({"opened", "severity_raised", "condition_cleared", "condition_returned",
                    "acknowledged", "resolved", "grouped", "attached", "flapping",
                    "cancel_refused", "escalation_step", "notification_failed",
                    "nobody_on_duty", "tier_unreachable"})


class IncidentSource(Protocol):
    last_seq: int

    async def events_after(self, seq: int, limit: int = 500, wait: float | None = None
                           ) -> list[IncidentEvent]: ...

    def incident(self, incident_id: str) -> Incident | None: ...


def event_line(data: Mapping[str, Any], lang: Language,
               names: Mapping[str, str] | None = None) -> str:
    """One line about an incident event (as sentinel.control.feed.event_json makes it);
    `names` shows contact ids as their names."""
    when = zone.clock(float(data["ts"]))
    severity = t(f"severity.{data['severity']}", lang)
    kind = data["type"]
    verb = event_name(kind, lang)
    text = f"{when} #{data['seq']} [{severity}] {verb}"
    name = data.get("name")
    if name is None:
        return f"{text} #{data['incident']}"
    text += f" {incident_title(str(name), lang)} #{data['incident']}"
    if kind in ("grouped", "attached"):
        text += f" → {incident_title(str(data.get('group_name')), lang)} #{data.get('group')}"
    elif kind == "resolved" and data.get("outcome"):
        text += f" ({outcome_word(str(data['outcome']), lang)})"
    elif kind in ("notification_sent", "notification_failed") and data.get("contact"):
        text += (f" → {data.get('contact_name') or data['contact']}"
                 f" ({channel_label(data.get('channel'), lang)})")
    elif kind in ("escalation_step", "escalation_reminder") and data.get("roles"):
        text += " → " + ", ".join(role_name(str(r), lang) for r in data["roles"])
    where = place_text(data.get("place"))
    if where:
        text += f"  {where}"
    if data.get("device"):
        text += f"  {data['device']}"
    if data.get("actor") and kind in ("acknowledged", "resolved", "assigned", "noted"):
        text += f"  ({actor_text(str(data['actor']), lang, names)})"
    if data.get("drill"):
        text += f"  [{t('drill', lang)}]"
    return text


def colored(line: str, severity: str, enabled: bool) -> str:
    color = _COLORS.get(Severity.parse(severity)) if enabled else None
    return f"{color}{line}{_RESET}" if color else line


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
                data = event_json(event, source.incident(event.incident_id))
                self._write(colored(event_line(data, self._lang), data["severity"],
                                    self._color))

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
