"""Live terminal view of ingestion for the dispatch room and the demo."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO
from zoneinfo import ZoneInfo

from sentinel.config.inventory import Inventory
from sentinel.i18n import Language, kind_name, t
from sentinel.types import IngestStats, Reading

_TZ = ZoneInfo("Asia/Shanghai")
_RED = "\x1b[31;1m"
_RESET = "\x1b[0m"


def alarm_text(reading: Reading, lang: Language) -> str | None:
    """What about this reading needs a person's eyes, or None for routine telemetry."""
    values = reading.values
    if values.get("alarm") is True:
        extra = values.get("concentration_lel")
        base = t("what.alarm", lang)
        return base if extra is None else f"{base}, {t('what.concentration', lang, value=extra)}"
    if values.get("sos") is True:
        return t("what.sos", lang)
    if values.get("fall") is True:
        return t("what.fall", lang)
    return None


def _clears(reading: Reading) -> bool:
    values = reading.values
    return any(values.get(k) is False for k in ("alarm", "sos", "fall"))


class LiveView:
    """A ReadingListener that prints alarm readings at once and a status line periodically."""

    def __init__(self, inventory: Inventory, lang: Language = "zh",
                 stream: TextIO | None = None, interval: float = 2.0) -> None:
        self._inventory = inventory
        self._lang = lang
        self._out = stream or sys.stdout
        self._color = self._out.isatty()
        self._interval = interval
        # Devices currently in alarm: a detector repeats its alarm state while it lasts,
        # and the operator needs the start (and end), not every repetition.
        self._alarming: set[str] = set()

    async def put(self, readings: Sequence[Reading]) -> None:
        for reading in readings:
            what = alarm_text(reading, self._lang)
            if what is not None:
                if reading.device_id not in self._alarming:
                    self._alarming.add(reading.device_id)
                    self._print_alarm(reading, what)
            elif reading.device_id in self._alarming and _clears(reading):
                self._alarming.discard(reading.device_id)

    def _print_alarm(self, reading: Reading, what: str) -> None:
        device = self._inventory.get(reading.device_id)
        where = device.location if device is not None else ""
        line = t("live.alarm", self._lang,
                 time=datetime.fromtimestamp(reading.ts, _TZ).strftime("%H:%M:%S"),
                 kind=kind_name(reading.kind, self._lang), device=reading.device_id,
                 where=where, what=what)
        self._write(f"{_RED}{line}{_RESET}" if self._color else line)

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
