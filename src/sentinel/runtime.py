"""The running daemon's stages, as one value: what status views, metrics and the watchdog
read. Built by `sentinel.app`; kept apart from it so that those readers never import the
wiring."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from sentinel.control.http import ControlServer
from sentinel.escalation.service import EscalationService
from sentinel.incidents.service import IncidentService
from sentinel.ingest import Ingestor
from sentinel.source import MqttSource
from sentinel.store import ReadingSink


class DistrictCommands(Protocol):
    """The district's command handler's counters (sentinel.uplink.commands.CommandHandler;
    not imported: the uplink's wire contract imports the district's package)."""

    executed: dict[str, int]
    refused: dict[str, int]
    replayed: int
    overflow: int


@dataclass
class Daemon:
    """Handles on the running stages, for status views and tests."""

    ingestor: Ingestor
    source: MqttSource
    sink: ReadingSink
    incidents: IncidentService
    escalation: EscalationService
    control: ControlServer | None = None
    started_at: float = field(default_factory=time.time)
    # The district's commands to this box ([district] community set), for /metrics.
    district: DistrictCommands | None = None
