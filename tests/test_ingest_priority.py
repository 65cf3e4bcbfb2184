"""The priority path: an alarm reaches the incident gate while telemetry is still being
written, and nothing is acknowledged before both commits."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence

from sentinel.decode import Decoder
from sentinel.decode.encode import encode
from sentinel.ingest import Ingestor
from sentinel.loading import load_all
from sentinel.types import DeadLetter, RawMessage, Reading, Receipt

from helpers import SHIPPED_CONFIG

LOADED = load_all(SHIPPED_CONFIG, {})


class ListSource:
    """An in-memory message source (the real one needs a broker; this test is about order)."""

    def __init__(self) -> None:
        self.queue: deque[RawMessage] = deque()
        self.acked: list[RawMessage] = []
        self._arrived = asyncio.Event()

    def push(self, messages: Sequence[RawMessage]) -> None:
        self.queue.extend(messages)
        self._arrived.set()

    async def batch(self, max_items: int) -> list[RawMessage]:
        if not self.queue:
            self._arrived.clear()
            await self._arrived.wait()  # wake() ends the wait with nothing, like the real one
        return [self.queue.popleft() for _ in range(min(max_items, len(self.queue)))]

    def ack(self, messages: Sequence[RawMessage]) -> int:
        self.acked.extend(messages)
        return len(messages)

    def pending(self) -> int:
        return len(self.queue)

    def wake(self) -> None:
        self._arrived.set()


class StalledSink:
    """A readings store that hangs until released: a fault a real SQLite cannot show on cue."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.written: list[Reading] = []

    async def write(self, readings: Sequence[Reading], dead: Sequence[DeadLetter],
                    receipts: Sequence[Receipt] = ()) -> None:
        await self.release.wait()
        self.written.extend(readings)

    async def receipts(self) -> list[Receipt]:
        return []

    async def run(self) -> None:
        await asyncio.Event().wait()

    def health(self) -> dict[str, object]:
        return {}


class RecordingGate:
    def __init__(self) -> None:
        self.seen: list[Reading] = []
        self.alarm_seen = asyncio.Event()

    async def process(self, readings: Sequence[Reading]) -> None:
        self.seen.extend(readings)
        if any(r.values.get("alarm") is True for r in readings):
            self.alarm_seen.set()


def messages(device_kind: str, count: int, **values: object) -> list[RawMessage]:
    devices = [d for d in LOADED.inventory.values()
               if d.kind == device_kind and d.profile == "sentinel-json"][:count]
    now = time.time()
    out = []
    for d in devices:
        for topic, payload in encode(LOADED.profiles[d.profile], d, dict(values), now,
                                     LOADED.kinds):
            out.append(RawMessage(topic, payload, 1, False, now))
    return out


async def test_alarm_passes_the_gate_while_telemetry_write_is_stuck() -> None:
    """Telemetry stuck in the store does not delay the alarm behind it; acks wait for both."""
    source, sink, gate = ListSource(), StalledSink(), RecordingGate()
    decoder = Decoder(LOADED.profiles, LOADED.inventory, LOADED.kinds, LOADED.settings.ingest)
    ingestor = Ingestor(source, decoder, sink, 100, gate=gate)
    task = asyncio.create_task(ingestor.run())
    source.push(messages("hydrant_pressure", 20, pressure=0.35))
    await asyncio.sleep(0.05)
    source.push(messages("smoke", 1, alarm=True))
    await asyncio.wait_for(gate.alarm_seen.wait(), 2.0)
    assert source.acked == [], "nothing is acknowledged before the store commits"
    sink.release.set()
    for _ in range(100):
        if len(source.acked) == 21:
            break
        await asyncio.sleep(0.01)
    assert len(source.acked) == 21 and len(sink.written) == 21
    ingestor.stop()
    await asyncio.wait_for(task, 2.0)


async def test_failing_gate_is_retried_and_blocks_acks() -> None:
    """If the incident commit fails (disk full), the batch is retried and never acked early."""
    class FlakyGate:
        def __init__(self) -> None:
            self.calls = 0

        async def process(self, readings: Sequence[Reading]) -> None:
            self.calls += 1
            if self.calls < 3:
                raise OSError("database or disk is full")

    source, sink, gate = ListSource(), StalledSink(), FlakyGate()
    sink.release.set()
    decoder = Decoder(LOADED.profiles, LOADED.inventory, LOADED.kinds, LOADED.settings.ingest)
    ingestor = Ingestor(source, decoder, sink, 100, gate=gate)
    source.push(messages("smoke", 1, alarm=True))
    batch = await source.batch(100)
    await ingestor.process(batch)
    assert gate.calls == 3 and len(source.acked) == 1
