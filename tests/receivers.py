"""Real local notification receivers for tests: an HTTP webhook receiver and an SMTP server.

Both listen on 127.0.0.1 only, on a free port, from a background thread, so they serve sync
tests, asyncio tests and daemon end-to-end tests alike (from a coroutine, wait with
``await asyncio.to_thread(receiver.wait_for, n)``). Each records everything it receives in a
thread-safe list and can be scripted to fail, so delivery errors are produced by a real peer
on a real socket rather than by a mock.

``HttpReceiver`` accepts what apprise's ``json://``, ``form://`` and ``xml://`` plugins send
(any method, any path) and ``SmtpReceiver`` accepts plain SMTP without TLS or login; its
``url()`` is an apprise ``mailto://`` URL that really delivers to it.

Only the standard library and aiosmtpd are used.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from servers import LOOPBACK, free_port

__all__ = ["HttpReceiver", "ReceivedMail", "ReceivedRequest", "SmtpReceiver"]

T = TypeVar("T")


class _Arrivals(Generic[T]):
    """What a receiver got, in arrival order, safe to read from the test's thread.

    `cond` also guards the receiver's own scripted-fault state.
    """

    def __init__(self, receiver: str, noun: str) -> None:
        self.cond = threading.Condition()
        self._items: list[T] = []
        self._receiver = receiver
        self._noun = noun

    def __len__(self) -> int:
        with self.cond:
            return len(self._items)

    def record(self, item: T) -> None:
        with self.cond:
            self._items.append(item)
            self.cond.notify_all()

    def snapshot(self) -> list[T]:
        with self.cond:
            return list(self._items)

    def wait_for(self, count: int, timeout: float) -> list[T]:
        """Block until at least `count` arrived; TimeoutError otherwise."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self._items) >= count, timeout):
                raise TimeoutError(f"{self._receiver} got {len(self._items)} {self._noun}, "
                                   f"expected {count} within {timeout} s")
            return list(self._items)


# ---------------------------------------------------------------------------------------
# HTTP (webhook) receiver
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One HTTP request as the receiver saw it, and what it answered."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # the parsed JSON body, or None when the body is not JSON
    form: dict[str, str] | None  # urlencoded or multipart fields, or None
    received_at: float  # time.time() once the body was read (before any hang)
    status: int  # the status the receiver answered (or will answer, while hanging)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def fields(self) -> dict[str, Any]:
        """The JSON object or form fields, whichever the request carried ({} for neither)."""
        if isinstance(self.json, dict):
            return self.json
        return dict(self.form or {})


def _parse_form(content_type: str, body: bytes) -> dict[str, str] | None:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        return dict(pairs)
    if kind == "multipart/form-data":
        # The email parser understands MIME multipart; give it the header it needs.
        raw = f"Content-Type: {content_type}\r\n\r\n".encode() + body
        message = email.message_from_bytes(raw, policy=email.policy.HTTP)
        fields: dict[str, str] = {}
        for part in message.iter_parts() if isinstance(message, EmailMessage) else ():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str) and part.get_filename() is None:
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    fields[name] = payload.decode("utf-8", "replace")
        return fields
    return None


def _parse_json(content_type: str, body: bytes) -> Any:
    if "json" not in content_type.lower() and not body.lstrip().startswith((b"{", b"[")):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parsed = urllib.parse.urlsplit(self.path)
        content_type = self.headers.get("Content-Type", "")
        receiver = self.server.receiver
        status, delay = receiver._next_answer()
        # Recorded before any hang: a test can see that a request arrived while its answer
        # is still held back (that is what a receiver that accepted but never answered does).
        receiver._record(ReceivedRequest(
            method=self.command,
            path=parsed.path,
            query=urllib.parse.parse_qs(parsed.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            json=_parse_json(content_type, body),
            form=_parse_form(content_type, body),
            received_at=time.time(),
            status=status,
        ))
        if delay > 0 and receiver._stopping.wait(delay):
            self.close_connection = True  # stopped while hanging: drop it unanswered
            return
        payload = json.dumps({"ok": 200 <= status < 300}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hanging handler must not block stop()
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections in a burst of deliveries, and
    # the client's SYN retry then adds a second to the test's timings.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: HttpReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _HttpHandler)


class HttpReceiver:
    """A webhook endpoint on 127.0.0.1 that records every request; scriptable faults.

    Answers 200 unless told otherwise: ``fail_next(n, status)`` answers the next `n` requests
    with `status`, ``set_down(True)`` answers 503 to everything until ``set_down(False)``,
    and ``hang(seconds)`` holds every answer back that long (``hang(0)`` ends it).
    """

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = 0
        self._arrivals: _Arrivals[ReceivedRequest] = _Arrivals("HTTP receiver", "requests")
        self._cond = self._arrivals.cond
        self._fail: list[int] = []
        self._down = False
        self._hang = 0.0
        self._stopping = threading.Event()
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- faults -----------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """Answer the next `n` requests with `status`."""
        with self._cond:
            self._fail.extend([status] * n)

    def set_down(self, down: bool = True) -> None:
        """Answer 503 to every request while `down`."""
        with self._cond:
            self._down = down

    def hang(self, seconds: float) -> None:
        """Hold every answer back `seconds` (0 answers at once again)."""
        with self._cond:
            self._hang = seconds

    def _next_answer(self) -> tuple[int, float]:
        with self._cond:
            if self._down:
                status = 503
            elif self._fail:
                status = self._fail.pop(0)
            else:
                status = 200
            return status, self._hang

    def _record(self, request: ReceivedRequest) -> None:
        self._arrivals.record(request)

    # -- what arrived -----------------------------------------------------------------
    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        return self._arrivals.snapshot()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least `count` requests arrived; TimeoutError otherwise."""
        return self._arrivals.wait_for(count, timeout)

    def url(self, scheme: str = "json", path: str = "/x") -> str:
        """An apprise URL that posts to this receiver, e.g. ``json://127.0.0.1:PORT/x``."""
        return f"{scheme}://{self.host}:{self.port}{path}"

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("HTTP receiver already started")
        self._stopping.clear()
        self._server = _HttpServer((self.host, 0), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"http-receiver-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self._stopping.set()  # wakes hanging handlers
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<HttpReceiver {self.host}:{self.port} requests={len(self._arrivals)}>"


# ---------------------------------------------------------------------------------------
# SMTP receiver
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One message as the SMTP receiver accepted (or refused) it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    subject: str  # decoded (RFC 2047 words undone)
    body: str  # the text/plain part (else text/html), decoded to str, "\n" line endings
    received_at: float
    reply: str  # the SMTP reply the receiver gave to DATA


class _SmtpHandler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        part = message.get_body(preferencelist=("plain", "html"))
        body = part.get_content() if isinstance(part, EmailMessage) else ""
        body = body.replace("\r\n", "\n")  # SMTP line endings are transport, not content
        reply = self._receiver._next_reply()
        self._receiver._record(ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            message=message,
            subject=str(message.get("subject", "")),
            body=body,
            received_at=time.time(),
            reply=reply,
        ))
        return reply


class SmtpReceiver:
    """A plain SMTP server (no TLS, no login) on 127.0.0.1 recording every message.

    ``fail_next(n, reply)`` answers DATA of the next `n` messages with `reply` (e.g.
    ``"451 4.3.0 try again later"``) instead of accepting them.
    """

    OK = "250 Message accepted for delivery"

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = 0
        self._arrivals: _Arrivals[ReceivedMail] = _Arrivals("SMTP receiver", "messages")
        self._cond = self._arrivals.cond
        self._fail: list[str] = []
        self._controller: Controller | None = None

    def fail_next(self, n: int = 1, reply: str = "451 4.3.0 try again later") -> None:
        """Refuse the next `n` messages with the SMTP `reply`."""
        with self._cond:
            self._fail.extend([reply] * n)

    def _next_reply(self) -> str:
        with self._cond:
            return self._fail.pop(0) if self._fail else self.OK

    def _record(self, mail: ReceivedMail) -> None:
        self._arrivals.record(mail)

    @property
    def mails(self) -> list[ReceivedMail]:
        """A snapshot of every message received so far, in arrival order."""
        return self._arrivals.snapshot()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least `count` messages arrived; TimeoutError otherwise."""
        return self._arrivals.wait_for(count, timeout)

    def url(self, to: str = "a@example.org", sender: str = "sentinel@example.org") -> str:
        """An apprise URL that delivers to this server over plain SMTP.

        ``mailto://`` (not ``mailtos://``) means no TLS; no user or password means no login;
        the SMTP server is the URL's host and port, so `from` must be given explicitly
        (apprise would otherwise build the sender from the user and the host).
        """
        query = urllib.parse.urlencode({"from": sender, "to": to})
        return f"mailto://{self.host}:{self.port}/?{query}"

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> Self:
        if self._controller is not None:
            raise RuntimeError("SMTP receiver already started")
        self.port = free_port()
        # aiosmtpd needs a concrete port (it connects to it to know it is ready).
        self._controller = Controller(_SmtpHandler(self), hostname=self.host, port=self.port,
                                      ready_timeout=5.0)
        self._controller.start()
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SmtpReceiver {self.host}:{self.port} mails={len(self._arrivals)}>"
