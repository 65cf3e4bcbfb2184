"""The daemon's sender: apprise in a child process, against real local receivers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from sentinel.notify.sender import Sender
from sentinel.notify.sender_process import ProcessSender

from receivers import HttpReceiver, SmtpReceiver
from servers import free_port


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
async def sender() -> AsyncIterator[ProcessSender]:
    """A started child with a short timeout, stopped after the test."""
    async with ProcessSender(timeout=1.0, concurrency=4) as s:
        yield s


async def test_a_page_is_delivered_from_the_child_with_its_headers(
        sender: ProcessSender, http: HttpReceiver) -> None:
    """Title, body and the Idempotency-Key reach the webhook; the result says ok."""
    concrete: Sender = sender  # the dispatcher's protocol (checked by mypy)
    result = await concrete.send(http.url("json", "/gw"), "【严重】烟感报警", "事件编号: 1",
                                 headers={"Idempotency-Key": "20261207-0001/0.0/gw/0"})
    assert result.ok and result.error is None and result.retryable
    (request,) = http.wait_for(1, 5)
    assert request.json["title"] == "【严重】烟感报警"
    assert request.headers["idempotency-key"] == "20261207-0001/0.0/gw/0"


async def test_failures_keep_their_reasons_and_say_whether_to_retry(
        sender: ProcessSender, http: HttpReceiver) -> None:
    """A 404 is not worth retrying, a 503 and a refused connection are; an SMTP server
    works from the child too."""
    http.fail_next(1, 404)
    refused = await sender.send(http.url("json", "/x"), "t", "b")
    assert (refused.ok, refused.error, refused.retryable) == (False, "HTTP 404", False)
    http.fail_next(1, 503)
    down = await sender.send(http.url("json", "/x"), "t", "b")
    assert (down.error, down.retryable) == ("HTTP 503", True)
    nobody = await sender.send(f"json://127.0.0.1:{free_port()}/x", "t", "b")
    assert (nobody.ok, nobody.error) == (False, "connection refused")
    with SmtpReceiver() as smtp:
        mail = await sender.send(smtp.url(to="gw@example.org"), "烟感", "正文")
        assert mail.ok, mail.error
        assert smtp.wait_for(1, 5)[0].rcpt_tos == ["gw@example.org"]


async def test_sends_run_in_parallel_in_the_child(sender: ProcessSender,
                                                  http: HttpReceiver) -> None:
    """Four sends to a receiver that holds each answer 0.5 s finish together, not in turn."""
    http.hang(0.5)
    started = time.monotonic()
    results = await asyncio.gather(*(sender.send(http.url("json", f"/{i}"), "t", "b")
                                     for i in range(4)))
    assert all(r.ok for r in results)
    assert time.monotonic() - started < 1.5


async def test_a_child_that_dies_fails_what_it_held_and_is_replaced(
        sender: ProcessSender, http: HttpReceiver) -> None:
    """kill -9 of the child during a send: that send fails with a retryable reason; the
    next one starts a new child and is delivered."""
    http.hang(2.0)
    pending = asyncio.create_task(sender.send(http.url("json", "/a"), "t", "b"))
    await asyncio.to_thread(http.wait_for, 1, 5)
    sender.kill()
    result = await asyncio.wait_for(pending, 5)
    assert (result.ok, result.error, result.retryable) == (False, "sender process exited",
                                                           True)
    http.hang(0.0)
    again = await sender.send(http.url("json", "/b"), "t", "b")
    assert again.ok and sender.started == 2


async def test_a_receiver_slower_than_the_timeout_is_reported_as_a_timeout(
        sender: ProcessSender, http: HttpReceiver) -> None:
    """The daemon does not wait past timeout + margin for the child's answer."""
    http.hang(5.0)
    started = time.monotonic()
    result = await sender.send(http.url("json", "/slow"), "t", "b")
    assert not result.ok and result.error is not None and "timeout" in result.error
    assert time.monotonic() - started < 3.0
