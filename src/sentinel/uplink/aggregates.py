"""One-minute aggregates of readings per device for the district ([district] aggregates).

A reading listener (it runs after a batch is committed and acknowledged, so it never sits
in front of an alarm): each reading's numeric fields go into its device's bucket for the
minute of the reading's own timestamp (min, max, sum, count; O(1) per field, no I/O). A
task publishes each minute's buckets once the minute is over (plus a grace for late
readings), as InfluxDB line protocol on `<prefix>/<community>/aggregates`:

    <kind>,community=<c>,device=<id>,kind=<kind> \
        <f>_min=..,<f>_max=..,<f>_mean=..,<f>_count=..i <minute start, ms>

(one line; a line per device and kind, every numeric field of the minute in it).

Best effort: a reading older than a minute already published is counted (`late`) and
left out, so a minute is never published twice with different figures; what cannot be
published (no connection) is counted and dropped: the box keeps every reading itself.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import structlog

from sentinel.clock import Clock
from sentinel.district import wire
from sentinel.incidents.publish import Publisher
from sentinel.store.lineproto import escape_key, escape_measurement, tag_string
from sentinel.types import Reading

log = structlog.get_logger("sentinel.uplink")

MINUTE = 60.0
# A minute is published this long after it ended: readings arrive a little after their
# timestamps (batching, a device's clock slightly behind).
GRACE = 5.0
# How often the task looks for finished minutes.
CHECK_EVERY = 1.0
# Buckets (device × minute) held at most: a storm of readings stamped far apart (a device
# with a broken clock) must not grow memory without bound.
MAX_BUCKETS = 500_000
# Lines per message: 100,000 devices make 100,000 lines a minute; in messages far below
# the brokers' packet limits.
LINES_PER_MESSAGE = 500
_PUBLISH_TIMEOUT = 10.0

# field -> [min, max, sum, count]
_Fields = dict[str, list[float]]


class Aggregator:
    def __init__(self, client: Publisher, prefix: str, community: str, clock: Clock) -> None:
        self._client = client
        self._topic = wire.topic(prefix, community, wire.AGGREGATES)
        self._community = community
        self._clock = clock
        # minute start -> (device, kind) -> fields
        self._buckets: dict[float, dict[tuple[str, str], _Fields]] = {}
        self._size = 0
        self._published_until = 0.0  # minutes before this one are out
        self._tags: dict[tuple[str, str], str] = {}
        self.lines = 0
        self.messages = 0
        self.late = 0
        self.overflow = 0
        self.failed = 0

    async def put(self, readings: Sequence[Reading]) -> None:
        """ReadingListener: fold committed readings into their minutes (no I/O)."""
        buckets = self._buckets
        until = self._published_until
        for reading in readings:
            minute = reading.ts - reading.ts % MINUTE
            if minute < until:
                self.late += 1
                continue
            per_minute = buckets.get(minute)
            if per_minute is None:
                per_minute = buckets[minute] = {}
            key = (reading.device_id, reading.kind)
            fields = per_minute.get(key)
            if fields is None:
                if self._size >= MAX_BUCKETS:
                    self.overflow += 1
                    continue
                fields = per_minute[key] = {}
                self._size += 1
            for name, value in reading.values.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                number = float(value)
                if not math.isfinite(number):
                    continue
                found = fields.get(name)
                if found is None:
                    fields[name] = [number, number, number, 1.0]
                else:
                    if number < found[0]:
                        found[0] = number
                    if number > found[1]:
                        found[1] = number
                    found[2] += number
                    found[3] += 1.0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            await self.flush(self._clock.now())

    async def flush(self, now: float) -> int:
        """Publish every minute that ended more than GRACE ago; the lines published."""
        done = sorted(m for m in self._buckets if m + MINUTE + GRACE <= now)
        if not done:
            return 0
        lines: list[str] = []
        for minute in done:
            per_minute = self._buckets.pop(minute)
            self._size -= len(per_minute)
            lines += [line for (device, kind), fields in per_minute.items()
                      if (line := self._line(device, kind, fields, minute))]
        self._published_until = max(self._published_until, done[-1] + MINUTE)
        if not lines:
            return 0
        sends = [self._client.start_publish(
                     self._topic, "\n".join(lines[i:i + LINES_PER_MESSAGE]).encode(), qos=1)
                 for i in range(0, len(lines), LINES_PER_MESSAGE)]
        done_sends, pending = await asyncio.wait(sends, timeout=_PUBLISH_TIMEOUT)
        for future in pending:
            future.cancel()
        failed = len(pending) + sum(1 for f in done_sends if f.exception() is not None)
        if failed:
            self.failed += failed
            log.warning("aggregates_not_published", messages=failed, minutes=len(done),
                        detail="dropped: the box keeps its readings; the district's "
                               "aggregates have a gap for these minutes")
        self.lines += len(lines)
        self.messages += len(sends) - failed
        return len(lines)

    def _line(self, device: str, kind: str, fields: _Fields, minute: float) -> str:
        if not fields:
            return ""
        tags = self._tags.get((device, kind))
        if tags is None:
            tags = tag_string({"community": self._community, "device": device, "kind": kind})
            if len(self._tags) < MAX_BUCKETS:
                self._tags[(device, kind)] = tags
        parts = []
        for name, (low, high, total, count) in fields.items():
            key = escape_key(name)
            parts.append(f"{key}_min={low!r},{key}_max={high!r},"
                         f"{key}_mean={total / count!r},{key}_count={int(count)}i")
        return f"{escape_measurement(kind)}{tags} {','.join(parts)} {int(minute * 1000)}"
