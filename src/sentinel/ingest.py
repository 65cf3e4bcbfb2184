"""Ingest stage: batches of raw messages → decode → rules gate → durable write → ack → fan out.

The order is the at-least-once contract: a message is acknowledged to the broker only after
its reading or its dead letter is committed, and after the rules gate (incidents) has
committed what the reading changed. A crash between commit and ack means a redelivery,
which the stores absorb (same device and timestamp → same row / point).

Alarms go first: the gate runs as soon as a batch is decoded, while the previous batches'
telemetry is still being written, so an alarm never waits behind a slow readings store.
At most `ahead` messages (default: the source's queue size, `[ingest] queue_max`) may have
passed the gate and wait for the store (bounded: backpressure); counted in messages, not
batches, because at a steady rate batches are small: a bound of a few batches filled in
tens of milliseconds whenever the store paused (a WAL checkpoint), and an alarm then
waited for the pause. Unacknowledged QoS 1 messages are bounded by the broker's flow
control (Receive Maximum) as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from sentinel.backoff import Backoff
from sentinel.clock import Clock, SystemClock
from sentinel.decode.decoder import Decoder, ItemsRejected, NoValue
from sentinel.errors import DecodeError
from sentinel.log import RejectLogger
from sentinel.stamps import ReceiveStamps
from sentinel.store import ReadingSink
from sentinel.store.reserve import DiskGuard, is_disk_full
from sentinel.types import DeadLetter, IngestStats, RawMessage, Reading, Receipt, RejectReason

log = structlog.get_logger("sentinel.ingest")

# A failing store step: 0.4 s after the first failure, doubling up to 30 s, shortened
# at random by up to half so that retries after a shared outage do not come in step.
_STORE_RETRY = Backoff(base=0.2, cap=30.0, jitter=0.5)


class MessageSource(Protocol):
    async def batch(self, max_items: int) -> list[RawMessage]: ...
    def ack(self, messages: Sequence[RawMessage]) -> int: ...
    def pending(self) -> int: ...
    def wake(self) -> None: ...


class ReadingListener(Protocol):
    """A downstream stage (rules, live view) that receives every stored reading."""

    async def put(self, readings: Sequence[Reading]) -> None: ...


class ReadingGate(Protocol):
    """A stage that must commit its view of readings before they are acknowledged."""

    async def process(self, readings: Sequence[Reading]) -> None: ...


_Decoded = tuple[list[RawMessage], list[Reading], list[DeadLetter], list[Receipt]]


class Ingestor:
    def __init__(self, source: MessageSource, decoder: Decoder, sink: ReadingSink,
                 batch_max: int, listeners: Sequence[ReadingListener] = (),
                 gate: ReadingGate | None = None, disk: DiskGuard | None = None,
                 ahead: int = 5000, clock: Clock | None = None,
                 stamps: ReceiveStamps | None = None) -> None:
        self._source = source
        self._decoder = decoder
        # Times for readings without a device time; load the sink's receipts into it.
        self._stamps = stamps if stamps is not None else ReceiveStamps()
        self._sink = sink
        self._batch_max = batch_max
        self._listeners = list(listeners)
        self._gate = gate
        self._rejects = RejectLogger(log)
        self._disk = disk
        self._dropping = False
        # Stamps the stats' busy_since / last_commit (readiness and the watchdog read them
        # against the same clock's monotonic time).
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.stats = IngestStats()
        self._stopping = False
        self._ahead_max = max(ahead, batch_max)
        # Messages written in one transaction at most when several batches wait.
        self._write_max = max(batch_max, 2000)
        self._ahead = 0  # messages past the gate, not yet written
        self._written = asyncio.Condition()

    def stop(self) -> None:
        """Finish what has been received, then return from run()."""
        self._stopping = True
        self._source.wake()

    async def run(self) -> None:
        # Unbounded as a queue, bounded by `_ahead` (messages) below.
        queue: asyncio.Queue[_Decoded | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._write_loop(queue), name="ingest-write")
            while not (self._stopping and self._source.pending() == 0):
                messages = await self._source.batch(self._batch_max)
                if messages:
                    readings, dead, receipts = self._decode(messages)
                    await self._pass_gate(readings)
                    await self._take_room(len(messages))
                    queue.put_nowait((messages, readings, dead, receipts))
            queue.put_nowait(None)

    async def _take_room(self, count: int) -> None:
        """Wait until `count` more messages may wait for the store (one batch always may)."""
        async with self._written:
            await self._written.wait_for(
                lambda: self._ahead == 0 or self._ahead + count <= self._ahead_max)
            self._ahead += count

    async def _write_loop(self, queue: asyncio.Queue[_Decoded | None]) -> None:
        stopping = False
        while not stopping and (item := await queue.get()) is not None:
            # Batches that passed the gate while the store was busy are written together,
            # in one transaction and one acknowledgement write: a store that pauses does
            # not leave a queue of small batches, each paying a commit of its own.
            messages, readings, dead, receipts = (list(item[0]), list(item[1]), list(item[2]),
                                                  list(item[3]))
            while len(messages) < self._write_max and not queue.empty():
                more = queue.get_nowait()
                if more is None:
                    stopping = True
                    break
                messages += more[0]
                readings += more[1]
                dead += more[2]
                receipts += more[3]
            await self._finish(messages, readings, dead, receipts)
            async with self._written:
                self._ahead -= len(messages)
                self._written.notify_all()

    async def process(self, messages: list[RawMessage]) -> None:
        """Take one batch through every step, in order (used by tests and tools)."""
        readings, dead, receipts = self._decode(messages)
        await self._pass_gate(readings)
        await self._finish(messages, readings, dead, receipts)

    async def _pass_gate(self, readings: list[Reading]) -> None:
        gate = self._gate
        if gate is not None and readings:
            await _retry_forever("rules_gate", lambda: gate.process(readings), len(readings),
                                 self.stats, self.clock)

    async def _finish(self, messages: list[RawMessage], readings: list[Reading],
                      dead: list[DeadLetter], receipts: list[Receipt]) -> None:
        await self._write(readings, dead, receipts)
        self._source.ack(messages)
        stats = self.stats
        stats.last_commit = self.clock.monotonic()
        stats.received += len(messages)
        stats.stored += len(readings)
        by_kind = stats.stored_by_kind
        for reading in readings:
            by_kind[reading.kind] = by_kind.get(reading.kind, 0) + 1
        if readings:
            for listener in self._listeners:
                await listener.put(readings)

    def _decode(self, messages: list[RawMessage]
                ) -> tuple[list[Reading], list[DeadLetter], list[Receipt]]:
        decode = self._decoder.decode
        stamp = self._stamps.stamp
        readings: list[Reading] = []
        dead: list[DeadLetter] = []
        receipts: list[Receipt] = []
        for msg in messages:
            try:
                found = decode(msg)
                if not found:  # a topic every matching profile excludes
                    self.stats.ignored_topic += 1
                    continue
            except NoValue:
                self.stats.no_value += 1
                continue
            except ItemsRejected as exc:  # a batch: the other items are kept
                found = exc.readings
                dead += [self._reject(msg, e.reason, e.detail, e.device_id) for e in exc.errors]
            except DecodeError as exc:
                dead.append(self._reject(msg, exc.reason, exc.detail, exc.device_id))
                continue
            except Exception as exc:  # a decoder defect must cost one message, not the daemon
                log.exception("decoder_defect", topic=msg.topic[:200])
                dead.append(self._reject(msg, RejectReason.DECODER_ERROR,
                                         f"{exc.__class__.__name__}: {exc}"[:300], None))
                continue
            if len(found) == 1 and found[0].timed:
                readings.append(found[0])
            elif found:
                stamped, given = stamp(msg, found)
                readings += stamped
                receipts += given
        return readings, dead, receipts

    def _reject(self, msg: RawMessage, reason: RejectReason, detail: str,
                device_id: str | None) -> DeadLetter:
        self.stats.reject(reason)
        self._rejects.reject(reason.value, detail, msg.topic, msg.payload, device_id)
        return DeadLetter(msg.topic, msg.payload, reason, detail, msg.received_at, device_id)

    async def _write(self, readings: list[Reading], dead: list[DeadLetter],
                     receipts: list[Receipt]) -> None:
        disk = self._disk
        write = self._sink.write
        if disk is None:
            await _retry_forever("store_write", lambda: write(readings, dead, receipts),
                                 len(readings), self.stats, self.clock)
            return
        # A full disk is not retried: holding the acknowledgements would stop the broker
        # from sending anything, alarms included. The gate has already committed what the
        # readings meant (using the reserve); their telemetry is dropped and counted.
        if disk.telemetry_allowed():
            try:
                await _retry_forever("store_write", lambda: write(readings, dead, receipts),
                                     len(readings), self.stats, self.clock,
                                     give_up=is_disk_full)
                if self._dropping:
                    self._dropping = False
                    log.info("telemetry_stored_again", dropped=self.stats.dropped)
                return
            except _GaveUp:
                disk.disk_full()
        self._drop(readings, dead)

    def _drop(self, readings: list[Reading], dead: list[DeadLetter]) -> None:
        dropped = self.stats.dropped
        if not self._dropping:
            self._dropping = True
            log.error("telemetry_dropped", reason="disk_full", dropped_before=dropped.get(
                "disk_full", 0), detail="the state disk is full: alarms and incidents are "
                                        "kept, readings are not stored until space returns")
        dropped["disk_full"] = dropped.get("disk_full", 0) + len(readings) + len(dead)


class _GaveUp(Exception):
    """A retry loop stopped on an error it was told not to retry."""


async def _retry_forever(what: str, attempt: Callable[[], Awaitable[None]], count: int,
                         stats: IngestStats, clock: Clock,
                         give_up: Callable[[BaseException], bool] | None = None) -> None:
    # A failing store (disk full, locked file) is retried for ever: the messages stay
    # unacknowledged meanwhile, so the broker keeps them and nothing is lost.
    # `stats` shows readiness checks a step failing now or stuck in one batch.
    failures = 0
    stats.busy_since[what] = clock.monotonic()
    try:
        while True:
            try:
                await attempt()
                stats.failing.pop(what, None)
                if failures:
                    log.info(f"{what}_recovered", attempts=failures + 1)
                return
            except Exception as exc:
                if give_up is not None and give_up(exc):
                    stats.failing.pop(what, None)
                    raise _GaveUp(what) from exc
                failures += 1
                error = f"{exc.__class__.__name__}: {exc}"
                stats.failing[what] = error[:300]
                delay = _STORE_RETRY.delay(failures)
                log.error(f"{what}_failed", error=error,
                          attempt=failures, retry_in=round(delay, 2), readings=count)
                await asyncio.sleep(delay)
    finally:
        stats.busy_since.pop(what, None)
