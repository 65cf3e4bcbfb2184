"""Store stage: the only writers of readings and dead letters.

Every sink makes a batch durable before `write()` returns; the ingest stage acknowledges
MQTT messages only after that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sentinel.types import DeadLetter, Reading, Receipt


class ReadingSink(Protocol):
    """Where accepted readings and rejected messages go."""

    async def write(self, readings: Sequence[Reading], dead: Sequence[DeadLetter],
                    receipts: Sequence[Receipt] = ()) -> None:
        """Make readings, dead letters and the receipts of untimed readings durable, in one
        transaction; return only once they are."""
        ...

    async def receipts(self) -> list[Receipt]:
        """The receipts kept (sentinel.stamps), oldest first."""
        ...

    async def run(self) -> None:
        """Background work (retention, forwarding) until cancelled."""
        ...

    def health(self) -> dict[str, object]:
        """Figures for status views: lag, spool depth, last error."""
        ...
