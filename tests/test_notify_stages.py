"""Notification stages one by one: explicit times, no sleeping."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sentinel.notify import outbox
from sentinel.notify.outbox import OutboxRow
from sentinel.notify.sender import DeliveryResult
from sentinel.notify.stages import Delivery, Hold, MultiStage, Retry, hold_until

T0 = 1_790_000_000.0
T = TypeVar("T")


class _Db:
    """An empty outbox in memory (Hold looks there for notices still in their hold)."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.conn.executescript(outbox.SCHEMA)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self.conn)


@dataclass(frozen=True)
class _Person:
    channels: tuple[str, ...]
    language: str = "zh"


@dataclass(frozen=True)
class _Policy:
    attempts: int = 3
    retry_min_delay: float = 2.0
    retry_max_delay: float = 60.0


@dataclass(frozen=True)
class _Storm:
    window: float = 30.0
    max_messages: int = 6
    per: float = 600.0


CONTACTS = {"gw": _Person(("json://127.0.0.1/a", "mailto://127.0.0.1/?to=gw@example.org")),
            "do": _Person(("json://127.0.0.1/do",))}


def row(id_: int, contact: str = "gw", *, life_safety: bool = True, channel: int = 0,
        attempts: int = 0) -> OutboxRow:
    return OutboxRow(f"20261207-0001/0.0/{contact}/{channel}", "20261207-0001", "alert", 0, 0,
                     contact, channel, life_safety, "t", "b", T0, T0, id_, attempts)


def decided(result: DeliveryResult, r: OutboxRow) -> tuple[str, float | None, int | None]:
    o = Retry(_Policy(), CONTACTS).decide(r, "json://127.0.0.1", result, T0)
    return o.status, o.retry_at, o.fallback.channel if o.fallback is not None else None


async def test_hold_sends_life_safety_alone_and_merges_the_rest_per_contact() -> None:
    """Life-safety rows are never merged; held rows of one contact and channel leave as
    one message."""
    rows = [row(1), row(2), row(3, life_safety=False), row(4, life_safety=False),
            row(5, "do", life_safety=False)]
    out = await MultiStage(Hold(_Db(), _Storm())).exec([Delivery(rows)], T0)
    assert [[r.id for r in d.rows] for d in out] == [[1], [2], [3, 4], [5]]


def test_the_storm_window_holds_only_what_is_not_life_safety() -> None:
    """A life-safety notice is due at once; others after the storm window."""
    assert hold_until(True, T0, _Storm()) == T0
    assert hold_until(False, T0, _Storm()) == T0 + 30


def test_retry_decides_sent_retry_fallback_and_final() -> None:
    """Sent; a retryable failure retried after 2 s, then 4 s; the last attempt fails over
    to the contact's next channel; a contact with no other channel is final."""
    ok = DeliveryResult(True, None, 0.01)
    down = DeliveryResult(False, "HTTP 503", 0.01)
    assert decided(ok, row(1)) == ("sent", None, None)
    assert decided(down, row(1)) == ("retry", T0 + 2, None)
    assert decided(down, row(1, attempts=1)) == ("retry", T0 + 4, None)
    assert decided(down, row(1, attempts=2)) == ("failed", None, 1)
    outcome = Retry(_Policy(), CONTACTS).decide(row(1, "do", attempts=2), "-", down, T0)
    assert outcome.status == "failed" and outcome.final


def test_a_refusal_not_worth_retrying_goes_to_the_next_channel_at_once() -> None:
    """An HTTP 404 is not retried on the same channel: the fallback is queued now."""
    refused = DeliveryResult(False, "HTTP 404", 0.01, retryable=False)
    status, _, fallback = decided(refused, row(1))
    assert (status, fallback) == ("failed", 1)
    outcome = Retry(_Policy(), CONTACTS).decide(row(1), "-", refused, T0)
    assert outcome.fallback is not None and outcome.fallback.due == T0
    assert outcome.fallback.key == "20261207-0001/0.0/gw/1"
