"""AppriseSender against real local receivers: deliveries, failures and their reasons."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from sentinel.notify.sender import AppriseSender, DeliveryResult, Sender, channel_label, retryable

from receivers import HttpReceiver, SmtpReceiver
from servers import free_port

TITLE = "【严重】烟感报警 · 水贝花园1栋"
BODY = "事件: 烟感报警 (严重)\n地点: 水贝花园1栋3楼306室卧室\n事件编号: 20260501-0001"
PASSWORD = "Pa55w0rdSecret"
TOKEN = "tok3nS3cretValue"


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    """A started webhook receiver on loopback."""
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    """A started plain SMTP receiver on loopback."""
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
async def sender() -> AsyncIterator[AppriseSender]:
    """A sender with a short timeout, closed after the test."""
    async with AppriseSender(timeout=1.0, concurrency=4) as s:
        yield s


def _secret_url(http: HttpReceiver, scheme: str = "json") -> str:
    return (f"{scheme}://sentinel:{PASSWORD}@{http.host}:{http.port}/hook/{TOKEN}"
            f"?key={TOKEN}x")


def _refused_port() -> int:
    return free_port()  # free right now: nothing listens there


async def test_apprise_sender_is_a_sender() -> None:
    """AppriseSender satisfies the Sender protocol the dispatcher depends on."""
    async with AppriseSender(timeout=1.0) as concrete:
        sender: Sender = concrete  # checked by mypy: the signatures match
        assert sender is concrete


# -- deliveries --------------------------------------------------------------------------


async def test_json_delivery_carries_title_body_and_idempotency_key(
        sender: AppriseSender, http: HttpReceiver) -> None:
    """A json:// send arrives with the Chinese title and body intact and the key header."""
    result = await sender.send(http.url("json", "/notify"), TITLE, BODY,
                               headers={"Idempotency-Key": "42:step-1+2"})
    assert result.ok and result.error is None and result.elapsed > 0
    [request] = http.wait_for(1)
    assert request.method == "POST" and request.path == "/notify"
    assert request.json["title"] == TITLE and request.json["message"] == BODY
    assert request.headers["idempotency-key"] == "42:step-1+2"


async def test_form_delivery_carries_title_body_and_idempotency_key(
        sender: AppriseSender, http: HttpReceiver) -> None:
    """A form:// send arrives as form fields with Chinese intact and the key header."""
    result = await sender.send(http.url("form"), TITLE, BODY,
                               headers={"Idempotency-Key": "key 7"})
    assert result.ok
    [request] = http.wait_for(1)
    assert request.form is not None
    assert request.form["title"] == TITLE and request.form["message"] == BODY
    assert request.headers["idempotency-key"] == "key 7"


async def test_headers_are_added_to_a_url_with_a_query(
        sender: AppriseSender, http: HttpReceiver) -> None:
    """Headers and timeouts are appended to a URL that already has parameters."""
    result = await sender.send(http.url("json", "/x?method=PUT"), TITLE, BODY,
                               headers={"Idempotency-Key": "k1", "X-Site": "shuibei"})
    assert result.ok
    [request] = http.wait_for(1)
    assert request.method == "PUT"
    assert request.headers["idempotency-key"] == "k1"
    assert request.headers["x-site"] == "shuibei"


async def test_mail_delivery_reaches_the_recipient_in_utf8(
        sender: AppriseSender, smtp: SmtpReceiver) -> None:
    """A mailto:// send arrives over plain SMTP with recipient, subject and UTF-8 body."""
    result = await sender.send(smtp.url(to="duty@example.org"), TITLE, BODY,
                               headers={"Idempotency-Key": "ignored for mail"})
    assert result.ok, result.error
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_tos == ["duty@example.org"]
    assert mail.mail_from == "sentinel@example.org"
    assert mail.subject == TITLE
    assert mail.body.strip() == BODY


# -- failures ----------------------------------------------------------------------------


async def test_http_503_is_reported(sender: AppriseSender, http: HttpReceiver) -> None:
    """A receiver answering 503 gives ok=False and an error naming the status."""
    http.fail_next(1, status=503)
    result = await sender.send(http.url(), TITLE, BODY)
    assert not result.ok
    assert result.error == "HTTP 503"


async def test_down_receiver_fails_every_send(sender: AppriseSender, http: HttpReceiver
                                              ) -> None:
    """A receiver that is down fails each send until it is up again."""
    http.set_down(True)
    first = await sender.send(http.url(), TITLE, BODY)
    http.set_down(False)
    second = await sender.send(http.url(), TITLE, BODY)
    assert (first.ok, first.error) == (False, "HTTP 503")
    assert second.ok
    assert [r.status for r in http.requests] == [503, 200]


async def test_hanging_receiver_times_out(sender: AppriseSender, http: HttpReceiver) -> None:
    """A receiver that never answers gives ok=False "timeout …" within timeout + 2 s."""
    http.hang(10)
    started = time.monotonic()
    result = await sender.send(http.url(), TITLE, BODY)
    elapsed = time.monotonic() - started
    assert not result.ok
    assert result.error is not None and result.error.startswith("timeout")
    assert 0.9 <= elapsed < 1.0 + 2.0
    assert len(http.requests) == 1  # it did arrive; only the answer never came


async def test_event_loop_runs_while_a_send_hangs(sender: AppriseSender, http: HttpReceiver
                                                  ) -> None:
    """A hanging send does not block the event loop: other tasks keep running."""
    http.hang(10)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await sender.send(http.url(), TITLE, BODY)
    finally:
        task.cancel()
    assert ticks >= 10


async def test_nothing_listening_is_connection_refused(sender: AppriseSender) -> None:
    """A port with nothing listening gives ok=False "connection refused" for HTTP and SMTP."""
    port = _refused_port()
    web = await sender.send(f"json://127.0.0.1:{port}/x", TITLE, BODY)
    mail = await sender.send(
        f"mailto://127.0.0.1:{port}/?from=sentinel@example.org&to=a@example.org", TITLE, BODY)
    assert (web.ok, web.error) == (False, "connection refused")
    assert (mail.ok, mail.error) == (False, "connection refused")


async def test_smtp_refusal_is_reported(sender: AppriseSender, smtp: SmtpReceiver) -> None:
    """An SMTP server refusing the message gives ok=False with the SMTP code."""
    smtp.fail_next(1, "451 4.3.0 try again later")
    result = await sender.send(smtp.url(), TITLE, BODY)
    assert (result.ok, result.error) == (False, "SMTP 451")


@pytest.mark.parametrize("url", [
    "nosuchscheme://abc",
    "json://",
    "not a url",
    "",
    "mailto://127.0.0.1/?to=not-an-address",
])
async def test_invalid_url_is_reported_not_raised(sender: AppriseSender, url: str) -> None:
    """An unknown or malformed channel URL gives ok=False "invalid channel URL"."""
    result = await sender.send(url, TITLE, BODY)
    assert result == DeliveryResult(False, "invalid channel URL", result.elapsed,
                                    retryable=False)


@pytest.mark.parametrize(("status", "again"), [(503, True), (500, True), (429, True),
                                               (408, True), (404, False), (400, False),
                                               (401, False)])
async def test_the_sender_says_whether_a_refusal_is_worth_retrying(
        sender: AppriseSender, http: HttpReceiver, status: int, again: bool) -> None:
    """A receiver's 5xx, 408 and 429 may pass; other 4xx refuse the request itself."""
    http.fail_next(1, status)
    result = await sender.send(http.url("json", "/hook"), TITLE, BODY)
    assert (result.ok, result.error, result.retryable) == (False, f"HTTP {status}", again)


def test_retryable_reasons() -> None:
    """Timeouts, refused connections and SMTP 4xx are transient; SMTP 5xx is permanent."""
    assert retryable("timeout after 2.0 s") and retryable("connection refused")
    assert retryable("SMTP 451") and not retryable("SMTP 550")
    assert not retryable("invalid channel URL") and retryable(None)


@pytest.mark.parametrize("headers", [{"X-A": "1\r\nX-B: 2"}, {"X-Site": "水贝"},
                                     {"Bad Name": "1"}])
async def test_invalid_header_is_a_programming_error(sender: AppriseSender, http: HttpReceiver,
                                                     headers: dict[str, str]) -> None:
    """A header HTTP cannot carry (or that would inject another) raises, nothing is sent."""
    with pytest.raises(ValueError, match="header"):
        await sender.send(http.url(), TITLE, BODY, headers=headers)
    assert http.requests == []


# -- secrets -----------------------------------------------------------------------------


async def test_errors_never_contain_url_secrets(sender: AppriseSender, http: HttpReceiver,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Failure reasons, labels and apprise's log never repeat a password, token or path."""
    caplog.set_level(logging.DEBUG)
    port = _refused_port()
    http.set_down(True)
    urls = [
        _secret_url(http, "json"),                                    # HTTP 503
        _secret_url(http, "form"),                                    # HTTP 503
        f"json://sentinel:{PASSWORD}@127.0.0.1:{port}/hook/{TOKEN}",  # refused
        f"mailto://sentinel:{PASSWORD}@127.0.0.1:{port}/?from=a@example.org"
        f"&to=b@example.org&key={TOKEN}",                            # refused
        f"nosuchscheme://{TOKEN}/{PASSWORD}",                         # invalid
        f"json://sentinel:{PASSWORD}@/{TOKEN}",                       # invalid
    ]
    results = [await sender.send(url, TITLE, BODY) for url in urls]
    assert not any(r.ok for r in results)
    for url, result in zip(urls, results, strict=True):
        assert result.error
        label = channel_label(url)
        for secret in (PASSWORD, TOKEN, "hook", "sentinel:"):
            assert secret not in result.error, (url, result.error)
            assert secret not in label, (url, label)
    # apprise logs URLs; what it logs during a send is reported redacted, never passed on.
    # (urllib3's own DEBUG lines, on only when asked for, are outside the sender's reach.)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("apprise")] == []


@pytest.mark.parametrize(("url", "label"), [
    ("json://user:pw@127.0.0.1:8080/hook/abc?token=x", "json://127.0.0.1:8080"),
    ("jsons://Hooks.Example.ORG/a", "jsons://hooks.example.org"),
    ("form://127.0.0.1:9000", "form://127.0.0.1:9000"),
    ("mailto://duty:secret@smtp.example.org:587?to=a@example.org", "mailto://smtp.example.org:587"),
    ("wecombot://BOTKEY0123456789", "wecombot"),
    ("dingtalk://SECRET@TOKEN/", "dingtalk"),
    ("tgram://123456:ABCDEF/987", "tgram"),
    ("no scheme at all", "invalid"),
])
def test_channel_label_shows_scheme_and_public_host_only(url: str, label: str) -> None:
    """channel_label keeps scheme and server host, never user, password, path or tokens."""
    assert channel_label(url) == label


# -- concurrency -------------------------------------------------------------------------


async def test_concurrent_sends_keep_their_own_reasons(sender: AppriseSender) -> None:
    """Sends running at once to a failing, a dead and a working receiver keep their reasons."""
    with HttpReceiver() as bad, HttpReceiver() as good:
        bad.set_down(True)
        dead = f"json://127.0.0.1:{_refused_port()}/x"
        targets = [bad.url(), good.url(), dead] * 6
        results = await asyncio.gather(*(sender.send(u, TITLE, BODY) for u in targets))
        for url, result in zip(targets, results, strict=True):
            if url == bad.url():
                assert (result.ok, result.error) == (False, "HTTP 503")
            elif url == good.url():
                assert (result.ok, result.error) == (True, None)
            else:
                assert (result.ok, result.error) == (False, "connection refused")
        assert len(good.requests) == 6 and len(bad.requests) == 6


async def test_timeout_counts_from_when_a_worker_starts(http: HttpReceiver) -> None:
    """Sends queued behind a full pool are not timed out for the time they waited."""
    http.hang(0.6)
    async with AppriseSender(timeout=1.0, concurrency=1) as sender:
        results = await asyncio.gather(*(sender.send(http.url(), TITLE, BODY)
                                         for _ in range(3)))
    assert [r.ok for r in results] == [True, True, True]
    assert max(r.elapsed for r in results) >= 1.7  # the last one waited for two others


async def test_closed_sender_refuses_to_send(http: HttpReceiver) -> None:
    """After aclose() a send is a programming error."""
    sender = AppriseSender(timeout=1.0)
    await sender.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await sender.send(http.url(), TITLE, BODY)


async def test_aclose_stops_the_worker_threads(http: HttpReceiver) -> None:
    """aclose() leaves no worker thread behind."""
    sender = AppriseSender(timeout=1.0, concurrency=3)
    await asyncio.gather(*(sender.send(http.url(), TITLE, BODY) for _ in range(3)))
    await sender.aclose()
    assert not [t for t in threading.enumerate() if t.name.startswith("apprise-send")]


async def test_apprise_logging_outside_sends_is_unchanged(
        caplog: pytest.LogCaptureFixture) -> None:
    """apprise records logged outside a send reach other handlers as they did before."""
    async with AppriseSender(timeout=1.0):  # installs the per-send capture
        caplog.set_level(logging.WARNING)
        apprise_log = logging.getLogger("apprise")
        apprise_log.debug("below the configured level")
        apprise_log.warning("heard")
    assert [r.getMessage() for r in caplog.records if r.name == "apprise"] == ["heard"]


async def test_a_reset_connection_is_named_as_such(sender: AppriseSender) -> None:
    """A receiver that accepts and resets the connection is "connection closed by the
    receiver" (errno 104), not an SMTP code."""
    import socket
    import struct
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]

    def reset_everyone() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            # SO_LINGER 0: close with RST, what a receiver that dropped the connection does.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=reset_everyone, daemon=True)
    thread.start()
    try:
        result = await sender.send(f"json://127.0.0.1:{port}/x", "title", "body")
    finally:
        server.close()
    assert (result.ok, result.error) == (False, "connection closed by the receiver")
