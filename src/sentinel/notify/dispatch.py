"""The outbox dispatcher: runs what is due through the notification stages.

Life-safety notices go out one by one the moment they are due, never held or merged.
Others were queued with a short hold (`[storm] window`); when due, every held notice for one
contact on one channel leaves as a single summary message, and a contact who has had
`max_messages` such messages within `per` waits for the window to free up (the waiting
notices then leave together). The stages (`notify.stages`) do each of these steps; this
module only looks at the outbox and starts one delivery task per message.

Every send is claimed first by this daemon run (see `notify.outbox`): rows handed over by
`send_now` were inserted claimed; rows found due here are claimed by one UPDATE before they
leave. A row whose earlier copy's outcome is unknown (a crash) leaves marked as a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence

import structlog

from sentinel.clock import Clock
from sentinel.notify import outbox
from sentinel.notify.outbox import OutboxRow
from sentinel.notify.sender import Sender
from sentinel.notify.stages import (
    Database,
    Delivery,
    OutcomeSink,
    Recipient,
    RetryPolicy,
    StormLimits,
    build,
)

log = structlog.get_logger("sentinel.notify")

_IDLE_WAIT = 1.0
# Due rows started per look at the outbox.
_DUE_BATCH = 200


class Dispatcher:
    """Sends what the outbox holds, as soon as it is due."""

    def __init__(self, state: Database, sender: Sender, contacts: Mapping[str, Recipient],
                 storm: StormLimits, policy: RetryPolicy, concurrency: int,
                 sink: OutcomeSink, clock: Clock,
                 on_handed: Callable[[Sequence[OutboxRow], float], None] | None = None
                 ) -> None:
        self._state = state
        self._clock = clock
        self._inflight: set[int] = set()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # This daemon run's id (set at start, see outbox.next_run): what sends are
        # claimed by.
        self.run_id = 0
        self._stages = build(state, sender, contacts, storm, policy, concurrency, clock,
                             sink, lambda: self.run_id, self._recorded, on_handed)
        self.sent = 0
        self.failed = 0

    @property
    def sent_by_channel(self) -> dict[str, int]:
        """Messages accepted per channel label (scheme, plus host where public)."""
        return self._stages.send.sent_by_channel

    @property
    def failed_by_channel(self) -> dict[str, int]:
        return self._stages.send.failed_by_channel

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
                self._start(Delivery([row]))

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
        more = len(rows) >= _DUE_BATCH
        # Rows may have been started (send_now) while the query ran. Life-safety rows go
        # through admission (claimed, started) before the held ones' budgets are looked up.
        rows = [r for r in rows if r.id not in self._inflight]
        for part in ([r for r in rows if r.life_safety], [r for r in rows if not r.life_safety]):
            ids = {r.id for r in part}
            # In flight from before their claim: send_now cannot start one meanwhile.
            self._inflight.update(ids)
            try:
                admitted = await self._stages.admission.exec([Delivery(part)], now) \
                    if part else []
            finally:
                self._inflight.difference_update(ids)
            for delivery in admitted:
                self._start(delivery)
        if more:
            return 0.0  # a storm: the next batch of due rows at once
        upcoming = await self._state.call(outbox.next_due)
        if upcoming is None or upcoming <= now:
            return _IDLE_WAIT
        return min(_IDLE_WAIT, upcoming - now)

    def _start(self, delivery: Delivery) -> None:
        for row in delivery.rows:
            self._inflight.add(row.id)
        task = asyncio.get_running_loop().create_task(self._deliver(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            await self._stages.delivery.exec([delivery], self._clock.now())
            if delivery.result is not None and delivery.result.ok:
                self.sent += 1
            else:
                self.failed += 1
        finally:
            for row in delivery.rows:
                self._inflight.discard(row.id)

    def _recorded(self, due_again: bool) -> None:
        # A retry or a fallback is due again: look. A sent message changes nothing that
        # is due, and waking for every delivery re-read the outbox hundreds of times a
        # second in an alarm storm.
        if due_again:
            self._wake.set()
