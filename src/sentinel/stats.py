"""Plain in-process statistics kept by the stages (bottom layer: stdlib only).

Stages count and time what they do with these; `sentinel.metrics` reads them when
Prometheus scrapes. Nothing here knows about Prometheus, and nothing here locks: every
writer and the reader run on the daemon's event loop.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

# Seconds; for work done per batch (a store commit, one rules pass).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Seconds from an alarm to the first message that reached someone: life-safety notices
# leave at once, others after the storm-control hold; beyond that, retries and tiers.
NOTIFY_BUCKETS: tuple[float, ...] = (
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


# Seconds along an alarm's path (receipt -> handed to a channel, device -> accepted), with
# edges at GB 50440's limits: forwarded within 3 s, at the monitoring centre within 10 s.
ALARM_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 300.0)


@dataclass(slots=True)
class LatencyHistogram:
    """A fixed-bucket histogram in Prometheus' sense (a value v counts in `le` ≥ v).

    `bounds` are the finite upper bounds, strictly increasing; `counts[i]` is how many
    observations fell in bucket i alone (the last one is +Inf). Non-finite values are
    ignored: one NaN would make the sum meaningless for ever.
    """

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if any(not math.isfinite(b) for b in self.bounds) or any(
                a >= b for a, b in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError("bucket bounds must be finite and strictly increasing")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        elif len(self.counts) != len(self.bounds) + 1:
            raise ValueError("one count per bound, plus the +Inf bucket")

    def observe(self, value: float) -> None:
        if not math.isfinite(value):
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations ≤ it) per bucket, ending with (inf, count)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out
