"""The outbox dispatcher: due rows → storm control → apprise → results to the sink.

Life-safety notices go out one by one the moment they are due, never held or merged.
Others were queued with a short hold (`[storm] window`); when due, every held notice for one
contact on one channel leaves as a single summary message, and a contact who has had
`max_messages` such messages within `per` waits for the window to free up (the waiting
notices then leave together). Results go to a `ResultSink`, which records the attempt and
decides on retries, fallback channels and the next tier.

Every send is claimed first by this daemon run (see `notify.outbox`): rows handed over by
`send_now` were inserted claimed; rows found due here are claimed by one UPDATE before they
leave. A row whose earlier copy's outcome is unknown (a crash) leaves marked as a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import structlog

from sentinel.clock import Clock
from sentinel.i18n import Language
from sentinel.notify import outbox
from sentinel.notify.outbox import OutboxRow
from sentinel.notify.sender import DeliveryResult, Sender, channel_label
from sentinel.notify.templates import Rendered, mark_resent, render_summary

log = structlog.get_logger("sentinel.notify")

_IDLE_WAIT = 1.0
# Due rows started per look at the outbox.
_DUE_BATCH = 200


T = TypeVar("T")


class Database(Protocol):
    """Runs a function on the state database's connection (the outbox lives there)."""

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class Recipient(Protocol):
    """A person as notify sees them: their channels (primary first) and language."""

    @property
    def channels(self) -> Sequence[str]: ...
    @property
    def language(self) -> Language: ...


class StormLimits(Protocol):
    """At most `max_messages` held-notice messages per contact within `per` seconds."""

    @property
    def max_messages(self) -> int: ...
    @property
    def per(self) -> float: ...


class ResultSink(Protocol):
    async def delivered(self, rows: Sequence[OutboxRow], label: str, result: DeliveryResult,
                        now: float) -> None: ...


class Dispatcher:
    """Sends what the outbox holds, as soon as it is due."""

    def __init__(self, state: Database, sender: Sender, contacts: Mapping[str, Recipient],
                 storm: StormLimits, concurrency: int, sink: ResultSink, clock: Clock,
                 on_send: Callable[[OutboxRow], None] | None = None,
                 on_handed: Callable[[Sequence[OutboxRow], float], None] | None = None
                 ) -> None:
        self._state = state
        self._sender = sender
        self._contacts = contacts
        self._storm = storm
        self._slots = asyncio.Semaphore(concurrency)
        self._sink = sink
        self._clock = clock
        self._on_send = on_send
        # Told when a send starts: the "handed" stage of the incidents' latency record.
        self._on_handed = on_handed
        # This daemon run's id (set at start, see outbox.next_run): what sends are
        # claimed by.
        self.run_id = 0
        self._inflight: set[int] = set()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0
        # Messages per channel label (scheme, plus host where public: never the URL).
        self.sent_by_channel: dict[str, int] = {}
        self.failed_by_channel: dict[str, int] = {}

    def wake(self) -> None:
        """New rows were queued: look now rather than at the next timer."""
        self._wake.set()

    def send_now(self, rows: Sequence[OutboxRow]) -> None:
        """Start life-safety rows just committed, without reading them back first.

        The escalation pass hands over what it queued in the same commit, already claimed
        by this run (so the page costs no commit of its own before it leaves); a row
        already in flight is not started twice (both paths run on the event loop and check
        `_inflight` before starting).
        """
        for row in rows:
            if row.life_safety and row.id not in self._inflight:
                self._start([row])

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                try:
                    wait = await self._dispatch_due()
                except Exception:  # a defect here must not stop the next alarm's delivery
                    log.exception("notify_dispatch_failed")
                    wait = _IDLE_WAIT
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancel() that arrives as the event is set, and the loop would outlive
                # shutdown.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            for task in self._tasks:
                task.cancel()

    async def drain(self, limit: float) -> None:
        """Wait (bounded) for deliveries in flight, e.g. at shutdown."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=limit)

    async def _dispatch_due(self) -> float:
        now = self._clock.now()
        skip = tuple(self._inflight)
        rows = await self._state.call(
            lambda conn: outbox.due(conn, now, _DUE_BATCH, skip))
        # Rows may have been started (send_now) while the query ran.
        rows = [r for r in rows if r.id not in self._inflight]
        more = len(rows) >= _DUE_BATCH
        urgent = [r for r in rows if r.life_safety]
        held: dict[tuple[str, int], list[OutboxRow]] = {}
        for row in rows:
            if not row.life_safety:
                held.setdefault((row.contact_id, row.channel), []).append(row)
        # Life-safety rows are claimed and started before the rate limits of the others
        # are looked up.
        await self._claim_and_start([[row] for row in urgent])
        leaving: list[list[OutboxRow]] = []
        for (contact_id, _), group in held.items():
            wait_until = await self._rate_limited(contact_id, now)
            if wait_until is not None:
                ids = [r.id for r in group]
                await self._state.call(lambda conn, ids=ids, at=wait_until:  # type: ignore[misc]
                                       outbox.postpone(conn, ids, at))
                log.info("notify_rate_limited", contact=contact_id, held=len(group),
                         until=round(wait_until, 1))
                continue
            leaving.append(group)
        await self._claim_and_start(leaving)
        if more:
            return 0.0  # a storm: the next batch of due rows at once
        upcoming = await self._state.call(outbox.next_due)
        if upcoming is None or upcoming <= now:
            return _IDLE_WAIT
        return min(_IDLE_WAIT, upcoming - now)

    async def _rate_limited(self, contact_id: str, now: float) -> float | None:
        storm = self._storm
        times = await self._state.call(
            lambda conn: outbox.sent_since(conn, contact_id, now - storm.per))
        if len(times) < storm.max_messages:
            return None
        return times[len(times) - storm.max_messages] + storm.per

    async def _claim_and_start(self, groups: list[list[OutboxRow]]) -> None:
        """Claim the rows of `groups` for this run (one UPDATE, committed) and start them.

        They count as in flight from before the claim, so `send_now` cannot start one of
        them meanwhile; a row finished meanwhile (withdrawn) is not claimed nor sent.
        """
        groups = [[r for r in g if r.id not in self._inflight] for g in groups]
        groups = [g for g in groups if g]
        ids = [r.id for g in groups for r in g]
        if not ids:
            return
        self._inflight.update(ids)
        run = self.run_id
        try:
            claimed = await self._state.call(lambda conn: outbox.claim(conn, ids, run))
        finally:
            # _start puts them back for the rows that leave.
            self._inflight.difference_update(ids)
        for group in groups:
            leaving = [r for r in group if r.id in claimed]
            if leaving:
                self._start(leaving)

    def _start(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            self._inflight.add(row.id)
        task = asyncio.get_running_loop().create_task(self._deliver(rows))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, rows: list[OutboxRow]) -> None:
        first = rows[0]
        result_ok = False
        try:
            contact = self._contacts.get(first.contact_id)
            if contact is None or first.channel >= len(contact.channels):
                # The contact left the on-call file since this was queued.
                result = DeliveryResult(False, "contact or channel no longer configured", 0.0)
                label = "-"
            else:
                url = contact.channels[first.channel]
                label = channel_label(url)
                message = self._message(rows, contact)
                key = first.key if len(rows) == 1 else f"{first.key}+{len(rows) - 1}"
                async with self._slots:
                    if self._on_send is not None:
                        self._on_send(first)
                    if self._on_handed is not None:
                        self._on_handed(rows, self._clock.now())
                    result = await self._sender.send(url, message.title, message.body,
                                                     headers={"Idempotency-Key": key})
            if result.ok:
                self.sent += 1
                self.sent_by_channel[label] = self.sent_by_channel.get(label, 0) + 1
            else:
                self.failed += 1
                self.failed_by_channel[label] = self.failed_by_channel.get(label, 0) + 1
            await _retrying(lambda: self._sink.delivered(rows, label, result,
                                                         self._clock.now()))
            result_ok = result.ok
        finally:
            for row in rows:
                self._inflight.discard(row.id)
            if not result_ok:
                # A failed send is due again later (or went to the next channel): look.
                # A sent one changes nothing that is due, and waking for every delivery
                # re-read the outbox hundreds of times a second in an alarm storm.
                self._wake.set()

    @staticmethod
    def _message(rows: list[OutboxRow], contact: Recipient) -> Rendered:
        texts = [Rendered(r.title, r.body) for r in rows]
        # A row whose earlier copy may have arrived says that it is a repeat.
        texts = [mark_resent(text, contact.language) if row.resent else text
                 for row, text in zip(rows, texts, strict=True)]
        if len(texts) == 1:
            return texts[0]
        return render_summary(texts, contact.language)


async def _retrying(commit: Callable[[], Awaitable[None]]) -> None:
    # The result must be recorded, or the row is sent again: keep trying for a while.
    for attempt in range(20):
        try:
            await commit()
            return
        except Exception:
            log.exception("notify_result_commit_failed", attempt=attempt + 1)
            await asyncio.sleep(min(5.0, 0.1 * 2 ** attempt))
