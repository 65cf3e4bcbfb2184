"""Store stage: the only writers of readings and dead letters.

Every sink makes a batch durable before `write()` returns; the ingest stage acknowledges
MQTT messages only after that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sentinel.types import DeadLetter, Reading


class ReadingSink(Protocol):
    """Where accepted readings and rejected messages go."""

    async def write(self, readings: Sequence[Reading], dead: Sequence[DeadLetter]) -> None:
        """Make readings and dead letters durable; return only once they are."""
        ...

    async def run(self) -> None:
        """Background work (retention, forwarding) until cancelled."""
        ...

    def health(self) -> dict[str, object]:
        """Figures for status views: lag, spool depth, last error."""
        ...
