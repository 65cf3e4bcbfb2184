"""Notification as a pipeline of small stages (after Alertmanager's notify/notify.go).

A `Delivery` is one message on its way to one contact's channel: a single outbox row, or
a group of held rows that leave as one summary. Each stage has one async method,
`exec(deliveries, now) -> deliveries`, and passes on what goes further:

    admission (the dispatcher's look at the outbox)      delivery (one task per message)
    Hold → RateLimit → Claim                             Send → Retry → Record

`Hold` groups what is due (life-safety rows alone, others per contact and channel: the
storm window is the delay they were queued with, see `hold_until`); `RateLimit` postpones
contacts over their message budget; `Claim` marks the rows as being sent by this run
(crash safety, see `notify.outbox`); `Send` hands the message to a channel; `Retry`
decides from the result and the sender's word on whether it is worth retrying: sent, due
again after a backoff, or failed on this channel (the contact's next channel, if any);
`Record` commits attempts and decisions, group-committed, and hands the outcome to the
escalation stage, which decides only who is paged when. `build` composes them in one
place.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import structlog

from sentinel.backoff import Backoff
from sentinel.clock import Clock
from sentinel.i18n import Language
from sentinel.notify import outbox
from sentinel.notify.outbox import NewRow, OutboxRow
from sentinel.notify.sender import DeliveryResult, Sender, channel_label
from sentinel.notify.templates import Rendered, mark_resent, render_summary

log = structlog.get_logger("sentinel.notify")

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
    """Held notices wait `window`; at most `max_messages` per contact within `per`."""

    @property
    def window(self) -> float: ...
    @property
    def max_messages(self) -> int: ...
    @property
    def per(self) -> float: ...


class RetryPolicy(Protocol):
    """Attempts on one channel, and the delays between them."""

    @property
    def attempts(self) -> int: ...
    @property
    def retry_min_delay(self) -> float: ...
    @property
    def retry_max_delay(self) -> float: ...


def hold_until(life_safety: bool, now: float, storm: StormLimits) -> float:
    """When a notice queued now is due: life-safety at once, others after the storm window
    (so a burst of them reaches a person as one message)."""
    return now if life_safety else now + storm.window


@dataclass(slots=True)
class Delivery:
    """One message on its way to one contact's channel, and what became of it."""

    rows: list[OutboxRow]
    label: str = "-"
    result: DeliveryResult | None = None
    at: float = 0.0
    outcomes: list[DeliveryOutcome] = field(default_factory=list)

    @property
    def life_safety(self) -> bool:
        return self.rows[0].life_safety

    @property
    def contact_id(self) -> str:
        return self.rows[0].contact_id


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one row's attempt came to (decided by `Retry`).

    `sent`; `retry` at `retry_at` on the same channel; or `failed` on this channel, with
    the `fallback` row for the contact's next channel, or none: then every channel of the
    contact has failed (`final`), and escalation hears that the person was not reached.
    """

    row: OutboxRow
    label: str
    result: DeliveryResult
    at: float
    status: Literal["sent", "retry", "failed"]
    retry_at: float | None = None
    fallback: NewRow | None = None

    @property
    def attempt(self) -> int:
        return self.row.attempts + 1

    @property
    def final(self) -> bool:
        return self.status == "failed" and self.fallback is None


class Stage(Protocol):
    async def exec(self, deliveries: list[Delivery], now: float) -> list[Delivery]: ...


class MultiStage:
    """Stages in order; what one stage drops goes no further."""

    def __init__(self, *stages: Stage) -> None:
        self.stages = stages

    async def exec(self, deliveries: list[Delivery], now: float) -> list[Delivery]:
        for stage in self.stages:
            if not deliveries:
                break
            deliveries = await stage.exec(deliveries, now)
        return deliveries


# ---------------------------------------------------------------------------------------
# Admission: what is due leaves now, merged, within its budget, claimed
# ---------------------------------------------------------------------------------------


class Hold:
    """Group due rows into messages: each life-safety row alone (never held or merged),
    the rest per contact and channel (one summary per person per window).

    A summary leaving for a person takes with it every notice of theirs still in its
    hold, not only those due now. Each notice is held `window` from its own queueing, so
    a burst queued over three seconds fell due over three seconds, and the dispatcher,
    looking again as each came due, sent one grid worker four summaries in three seconds
    (the demo's 36 tank incidents). Taking the rest along means that whatever is queued
    after a summary is due a whole window later: one message per person per window.
    """

    def __init__(self, db: Database, storm: StormLimits) -> None:
        self._db = db
        self._storm = storm

    async def exec(self, deliveries: list[Delivery], now: float) -> list[Delivery]:
        out: list[Delivery] = []
        held: dict[tuple[str, int], Delivery] = {}
        for delivery in deliveries:
            for row in delivery.rows:
                if row.life_safety:
                    out.append(Delivery([row]))
                    continue
                group = held.get((row.contact_id, row.channel))
                if group is None:
                    held[(row.contact_id, row.channel)] = Delivery([row])
                else:
                    group.rows.append(row)
        until = now + self._storm.window
        for (contact_id, channel), group in held.items():
            ids = {r.id for r in group.rows}
            more = await self._db.call(
                lambda conn, c=contact_id, ch=channel, skip=ids:  # type: ignore[misc]
                outbox.held_for(conn, c, ch, until, skip))
            group.rows.extend(more)
        return [*out, *held.values()]


class RateLimit:
    """A contact who had `max_messages` held-notice messages within `per` waits: their
    rows are postponed until the oldest of those leaves the window. Life-safety passes."""

    def __init__(self, db: Database, storm: StormLimits) -> None:
        self._db = db
        self._storm = storm

    async def exec(self, deliveries: list[Delivery], now: float) -> list[Delivery]:
        out: list[Delivery] = []
        for delivery in deliveries:
            if delivery.life_safety:
                out.append(delivery)
                continue
            wait_until = await self._limited(delivery.contact_id, now)
            if wait_until is None:
                out.append(delivery)
                continue
            ids = [r.id for r in delivery.rows]
            await self._db.call(lambda conn, ids=ids, at=wait_until:  # type: ignore[misc]
                                outbox.postpone(conn, ids, at))
            log.info("notify_rate_limited", contact=delivery.contact_id,
                     held=len(delivery.rows), until=round(wait_until, 1))
        return out

    async def _limited(self, contact_id: str, now: float) -> float | None:
        storm = self._storm
        times = await self._db.call(
            lambda conn: outbox.sent_since(conn, contact_id, now - storm.per))
        if len(times) < storm.max_messages:
            return None
        return times[len(times) - storm.max_messages] + storm.per


class Claim:
    """Claim every row for this daemon run in one UPDATE (committed) before it is sent;
    a row finished meanwhile (withdrawn) is not claimed and does not leave."""

    def __init__(self, db: Database, run: Callable[[], int]) -> None:
        self._db = db
        self._run = run

    async def exec(self, deliveries: list[Delivery], now: float) -> list[Delivery]:
        ids = [r.id for d in deliveries for r in d.rows]
        run = self._run()
        claimed = await self._db.call(lambda conn: outbox.claim(conn, ids, run))
        out = []
        for delivery in deliveries:
            delivery.rows = [r for r in delivery.rows if r.id in claimed]
            if delivery.rows:
                out.append(delivery)
        return out


# ---------------------------------------------------------------------------------------
# Delivery: send, decide, record
# ---------------------------------------------------------------------------------------


class Send:
    """Hand each message to its channel through the sender (bounded concurrency)."""

    def __init__(self, sender: Sender, contacts: Mapping[str, Recipient], clock: Clock,
                 concurrency: int,
                 on_handed: Callable[[Sequence[OutboxRow], float], None] | None = None
                 ) -> None:
        self._sender = sender
        self._contacts = contacts
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._on_handed = on_handed
        # Messages per channel label (scheme, plus host where public: never the URL).
        self.sent_by_channel: dict[str, int] = {}
        self.failed_by_channel: dict[str, int] = {}

    async def exec(self, deliveries: list[Delivery], now: float) -> list[Delivery]:
        for delivery in deliveries:
            await self._send(delivery)
        return deliveries

    async def _send(self, delivery: Delivery) -> None:
        first = delivery.rows[0]
        contact = self._contacts.get(first.contact_id)
        if contact is None or first.channel >= len(contact.channels):
            # The contact left the on-call file since this was queued: no retry helps.
            delivery.result = DeliveryResult(False, "contact or channel no longer configured",
                                             0.0, retryable=False)
        else:
            url = contact.channels[first.channel]
            delivery.label = channel_label(url)
            message = _message(delivery.rows, contact.language)
            rows = delivery.rows
            key = first.key if len(rows) == 1 else f"{first.key}+{len(rows) - 1}"
            async with self._slots:
                if self._on_handed is not None:
                    self._on_handed(rows, self._clock.now())
                delivery.result = await self._sender.send(
                    url, message.title, message.body, headers={"Idempotency-Key": key})
        delivery.at = self._clock.now()
        counts = self.sent_by_channel if delivery.result.ok else self.failed_by_channel
        counts[delivery.label] = counts.get(delivery.label, 0) + 1


def _message(rows: Sequence[OutboxRow], language: Language) -> Rendered:
    texts = [Rendered(r.title, r.body) for r in rows]
    # A row whose earlier copy may have arrived says that it is a repeat.
    texts = [mark_resent(text, language) if row.resent else text
             for row, text in zip(rows, texts, strict=True)]
    if len(texts) == 1:
        return texts[0]
    return render_summary(texts, language)


class Retry:
    """Decide each row's outcome: sent; retried on the same channel after a backoff while
    attempts remain and the sender says retrying can help; else failed on this channel,
    with the contact's next channel queued at once (fallback)."""

    def __init__(self, policy: RetryPolicy, contacts: Mapping[str, Recipient]) -> None:
        self._policy = policy
        self._contacts = contacts
        self._backoff = Backoff(base=policy.retry_min_delay, cap=policy.retry_max_delay)

    async def exec(self, deliveries: list[Delivery], now: float) -> list[Delivery]:
        for delivery in deliveries:
            result = delivery.result
            assert result is not None, "Retry runs after Send"
            delivery.outcomes = [self.decide(row, delivery.label, result, delivery.at)
                                 for row in delivery.rows]
        return deliveries

    def decide(self, row: OutboxRow, label: str, result: DeliveryResult, at: float
               ) -> DeliveryOutcome:
        if result.ok:
            return DeliveryOutcome(row, label, result, at, "sent")
        attempt = row.attempts + 1
        if result.retryable and attempt < self._policy.attempts:
            return DeliveryOutcome(row, label, result, at, "retry",
                           retry_at=at + self._backoff.delay(attempt - 1))
        contact = self._contacts.get(row.contact_id)
        fallback = None
        if contact is not None and row.channel + 1 < len(contact.channels):
            fallback = NewRow(f"{row.base_key}/{row.channel + 1}", row.incident_id, row.kind,
                              row.round, row.step, row.contact_id, row.channel + 1,
                              row.life_safety, row.title, row.body, at, at)
        return DeliveryOutcome(row, label, result, at, "failed", fallback=fallback)


def write_outcomes(conn: sqlite3.Connection, outcomes: Sequence[DeliveryOutcome]) -> None:
    """The outbox's side of recording outcomes (inside the caller's transaction)."""
    for o in outcomes:
        outbox.record_attempt(conn, o.row, o.label, o.at, o.result.ok, o.result.error,
                              o.result.elapsed)
        if o.status == "sent":
            outbox.mark(conn, o.row.id, "sent", o.at)
        elif o.status == "retry":
            assert o.retry_at is not None
            outbox.retry_later(conn, o.row.id, o.retry_at, o.result.error)
        else:
            outbox.mark(conn, o.row.id, "failed", o.at, o.result.error)
    outbox.insert(conn, [o.fallback for o in outcomes if o.fallback is not None])


class OutcomeSink(Protocol):
    """The escalation stage: commits `write_outbox` with its own consequences of the
    outcomes (a contact reached, a tier unreachable, the audit trail), atomically."""

    async def recorded(self, outcomes: Sequence[DeliveryOutcome],
                       write_outbox: Callable[[sqlite3.Connection], None]) -> None: ...


class Record:
    """Commit outcomes: deliveries that finish while a commit runs are recorded together
    in the next one (group commit: in an alarm storm, a commit per delivery held the
    state database so often that new alarms waited seconds for their first step). A result
    that cannot be recorded is retried for a while: unrecorded, the row is sent again."""

    def __init__(self, sink: OutcomeSink, on_recorded: Callable[[bool], None]) -> None:
        self._sink = sink
        self._on_recorded = on_recorded
        self._waiting: list[tuple[list[DeliveryOutcome], asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        self._backoff = Backoff(base=0.1, cap=5.0, jitter=0.0)

    async def exec(self, deliveries: list[Delivery], now: float) -> list[Delivery]:
        outcomes = [o for d in deliveries for o in d.outcomes]
        for attempt in range(20):
            try:
                await self._commit(outcomes)
                break
            except Exception:
                log.exception("notify_result_commit_failed", attempt=attempt + 1)
                await asyncio.sleep(self._backoff.delay(attempt))
        # A retry or a fallback is due again: the dispatcher looks at once.
        self._on_recorded(any(o.status != "sent" for o in outcomes))
        return deliveries

    async def _commit(self, outcomes: list[DeliveryOutcome]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((outcomes, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.get_running_loop().create_task(
                self._record_waiting(), name="notify-record")
        await done

    async def _record_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            outcomes = [o for items, _ in batch for o in items]

            def write(conn: sqlite3.Connection, items: list[DeliveryOutcome] = outcomes
                      ) -> None:
                write_outcomes(conn, items)
            try:
                await self._sink.recorded(outcomes, write)
            except Exception as exc:  # each caller retries its own outcomes
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)


@dataclass(frozen=True, slots=True)
class Pipelines:
    """The two halves, built in one place (`build`)."""

    admission: MultiStage
    delivery: MultiStage
    send: Send


def build(db: Database, sender: Sender, contacts: Mapping[str, Recipient],
          storm: StormLimits, policy: RetryPolicy, concurrency: int, clock: Clock,
          sink: OutcomeSink, run: Callable[[], int], on_recorded: Callable[[bool], None],
          on_handed: Callable[[Sequence[OutboxRow], float], None] | None = None
          ) -> Pipelines:
    """Hold → RateLimit → Claim, and Send → Retry → Record."""
    send = Send(sender, contacts, clock, concurrency, on_handed)
    return Pipelines(
        admission=MultiStage(Hold(db, storm), RateLimit(db, storm), Claim(db, run)),
        delivery=MultiStage(send, Retry(policy, contacts), Record(sink, on_recorded)),
        send=send)

