"""The apprise edge: deliver one message to one channel URL, report how it went.

apprise's plugins are synchronous and only return a bool, so `AppriseSender` runs each send
on a bounded thread pool (the event loop never blocks), bounds it with apprise's own socket
timeouts and an outer deadline, and recovers *why* a send failed from the records
apprise logs while it runs. The reason is reduced to a short, fixed phrase ("HTTP 503",
"timeout after 2.0 s", "connection refused") or, failing that, to a redacted log line: a
channel URL holds secrets (bot keys, passwords, webhook paths) and neither `DeliveryResult`
nor `channel_label` may repeat them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import types
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, Self

import apprise
from apprise import plugins as apprise_plugins

__all__ = [
    "AppriseSender",
    "Deliverer",
    "DeliveryResult",
    "Sender",
    "channel_label",
    "check_headers",
    "result_of",
    "retryable",
]

_NO_HEADERS: Mapping[str, str] = types.MappingProxyType({})

# apprise's plugins for generic webhooks turn `+Name=value` URL parameters into HTTP headers.
_HEADER_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})

# Schemes whose URL host is a server name (safe to show). Every other scheme is labelled by
# its scheme alone: for wecombot://KEY, tgram://TOKEN/... and the like the "host" is a secret.
_HOST_SCHEMES = frozenset({
    "json", "jsons", "form", "forms", "xml", "xmls", "mailto", "mailtos",
    "apprise", "apprises", "gotify", "gotifys", "mmost", "mmosts", "rocket", "rockets",
    "matrix", "matrixs", "mqtt", "mqtts",
})

# The outer deadline leaves apprise's own (connect, read) timeouts the first word, so the
# reason is the precise one it logs; the margin only catches what those do not bound.
_MARGIN = 1.0

# Channel URLs parsed and kept (they come from the on-call file: a handful per contact).
_PARSED_KEEP = 1024

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 header name
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How one delivery went: `error` is a short reason without any secret of the URL."""

    ok: bool
    error: str | None
    elapsed: float  # seconds from the call to the result, waiting for a free worker included
    # Whether sending the same message again may succeed: not for a URL apprise cannot
    # use or a receiver that refuses the request itself (HTTP 4xx but 408, 425 and 429).
    retryable: bool = True


class Sender(Protocol):
    """Deliver a message to one channel URL; never raises for a delivery problem."""

    async def send(self, url: str, title: str, body: str, *,
                   headers: Mapping[str, str] = ...) -> DeliveryResult: ...


_STATUS = re.compile(r"^(HTTP|SMTP) (\d{3})\b")
# HTTP client errors that say "not now" rather than "never".
_RETRYABLE_4XX = frozenset({408, 425, 429})


def retryable(error: str | None) -> bool:
    """Whether a failure with this reason may go away if the same message is sent again:
    not for a channel URL apprise cannot use, an HTTP 4xx other than 408/425/429, or an
    SMTP 5xx (permanent by RFC 5321); timeouts, refused connections, 5xx and the rest may."""
    if error is None:
        return True
    if error.startswith("invalid channel URL"):
        return False
    found = _STATUS.match(error)
    if found:
        status = int(found.group(2))
        if found.group(1) == "SMTP":
            return status < 500
        return not (400 <= status < 500) or status in _RETRYABLE_4XX
    return True


def channel_label(url: str) -> str:
    """Name a channel URL safely for logs and the audit trail: scheme, plus host where public.

    ``json://user:pw@127.0.0.1:8080/hook?x=1`` → ``json://127.0.0.1:8080``;
    ``wecombot://BOTKEY`` → ``wecombot``.
    """
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        return "invalid"
    if scheme not in _HOST_SCHEMES:
        return scheme
    host = _split(rest)[2]
    return f"{scheme}://{host.lower()}" if host else scheme


def _split(rest: str) -> tuple[str, str, str, str, str]:
    """(user, password, host[:port], path, query) of a URL without its ``scheme://``."""
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hostport = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return user, password, hostport, path, query


# ---------------------------------------------------------------------------------------
# Capturing apprise's log records per worker thread
# ---------------------------------------------------------------------------------------


class _Capture(logging.Filter):
    """Collect the apprise records of sends in progress, by the thread that logs them.

    A filter on the ``apprise`` logger rather than a handler, because a filter can also keep
    a record from going further: apprise logs channel URLs (``Unparseable URL …``, request
    URLs with their path) and what a send logs is reported through `DeliveryResult` instead,
    redacted. The logger is lowered to DEBUG so the low-level cause ("Connection refused",
    "Read timed out") is logged at all; records from other threads pass only if they would
    have passed before, so apprise used elsewhere in the process logs as it did.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger
        self._own_level = logger.level
        self._local = threading.local()

    @contextmanager
    def collect(self) -> Iterator[list[logging.LogRecord]]:
        """Within the block, the current thread's apprise records go to the yielded list."""
        records: list[logging.LogRecord] = []
        self._local.records = records
        try:
            yield records
        finally:
            self._local.records = None

    def filter(self, record: logging.LogRecord) -> bool:
        # apprise logs synchronously in the thread that sends, so the thread-local list
        # is exactly "this send": concurrent sends on other workers cannot mix in.
        records: list[logging.LogRecord] | None = getattr(self._local, "records", None)
        if records is not None:
            records.append(record)
            return False
        level = self._own_level
        if level == logging.NOTSET:
            level = self._logger.parent.getEffectiveLevel() if self._logger.parent else 0
        return record.levelno >= level


_capture_lock = threading.Lock()
_capture: _Capture | None = None


def _installed_capture() -> _Capture:
    global _capture
    with _capture_lock:
        if _capture is None:
            logger = logging.getLogger("apprise")
            capture = _Capture(logger)
            logger.addFilter(capture)
            if logger.getEffectiveLevel() > logging.DEBUG:
                logger.setLevel(logging.DEBUG)
            _capture = capture
        return _capture


# ---------------------------------------------------------------------------------------
# Reasons
# ---------------------------------------------------------------------------------------

# Checked in order over the messages of one send; the first match names the failure.
_REASONS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str], float], str]], ...] = (
    (re.compile(r"\berror=(\d{3})\b"), lambda m, _: f"HTTP {m.group(1)}"),
    (re.compile(r"recipient .* was refused: (\d{3})"), lambda m, _: f"SMTP {m.group(1)}"),
    # An SMTP reply tuple, (550, b'...'); not an errno tuple, (104, 'Connection reset...').
    (re.compile(r"\(([2-5]\d{2}), b?['\"]"), lambda m, _: f"SMTP {m.group(1)}"),
    (re.compile(r"timed out|timeout", re.I), lambda _, t: f"timeout after {t:.1f} s"),
    (re.compile(r"refused|Errno 111\b", re.I), lambda *_: "connection refused"),
    (re.compile(r"Name or service not known|nodename nor servname|getaddrinfo|"
                r"NameResolution|Temporary failure in name resolution", re.I),
     lambda *_: "name resolution failed"),
    (re.compile(r"SSL|CERTIFICATE_VERIFY|TLS"), lambda *_: "TLS error"),
    (re.compile(r"reset by peer|RemoteDisconnected|Connection aborted|closed connection|"
                r"disconnected", re.I), lambda *_: "connection closed by the receiver"),
    (re.compile(r"Unreachable|No route to host", re.I), lambda *_: "network unreachable"),
)

_URL_IN_TEXT = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://\S+")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9_\-]{20,}")


def _secrets(url: str) -> list[str]:
    """Every part of `url` that may be secret, longest first, raw and percent-decoded."""
    scheme, _, rest = url.partition("://")
    user, password, host, path, query = _split(rest)
    parts = [user, password, *path.split("/")]
    parts += [value for _, value in urllib.parse.parse_qsl(query, keep_blank_values=True)]
    parts += [item.partition("=")[2] for item in query.split("&")]
    if scheme.lower() not in _HOST_SCHEMES:
        parts.append(host)
    found = {p for part in parts for p in (part, urllib.parse.unquote(part)) if len(p) >= 3}
    return sorted(found, key=len, reverse=True)


def _redact(text: str, url: str) -> str:
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    text = _URL_IN_TEXT.sub(lambda m: f"{m.group(1)}://…", text)
    text = _LONG_TOKEN.sub("***", text)  # anything token-like apprise may have derived
    return " ".join(text.split())


# apprise plugins log the exception behind a failure at DEBUG as "Socket Exception: …"
# (or "JSON Exception: …" and the like). Other DEBUG records are skipped: they echo the
# payload, whose words must not be mistaken for a cause.
_CAUSE = re.compile(r"^[A-Za-z]+ Exception: ")


def _reason(records: list[logging.LogRecord], url: str, timeout: float) -> str:
    messages = []
    for record in records:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call in a plugin: the record says nothing
            continue
        if record.levelno >= logging.WARNING or _CAUSE.match(message):
            # Scrubbed first, so nothing of the URL can match a pattern or reach the result.
            messages.append(_redact(message, url))
    for pattern, describe in _REASONS:
        for message in messages:
            match = pattern.search(message)
            if match:
                return describe(match, timeout)
    # No known cause: apprise's first warning says most, cut to a short reason.
    return messages[0][:160] if messages else "delivery failed"


# ---------------------------------------------------------------------------------------
# The sender
# ---------------------------------------------------------------------------------------


def _with_params(url: str, params: list[tuple[str, str]]) -> str:
    # Appended rather than merged: apprise keeps the last value of a repeated parameter, and
    # re-encoding the caller's query could change a token that is not percent-encoded.
    query = "&".join(f"{urllib.parse.quote(k, safe='+')}={urllib.parse.quote(v, safe='')}"
                     for k, v in params)
    return f"{url}{'&' if '?' in url else '?'}{query}"


class Deliverer:
    """The synchronous part of a send, safe to call from several threads at once: apprise
    builds a fresh plugin instance for each send and its log records say why one failed.

    Each send gets its own plugin instance: apprise throttles repeated sends on one
    instance (5.5 s for e-mail and most push services), which would turn a burst of alarms
    into a queue of sleeps that the timeout then cuts off; instances are not meant to be
    shared across threads either.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._capture = _installed_capture()
        self._parsed_urls: dict[str, dict[str, Any]] = {}
        self._parsed_lock = threading.Lock()

    def deliver(self, url: str, headers: Mapping[str, str], title: str, body: str
                ) -> tuple[bool, str | None]:
        """Send one message now, in this thread: (ok, reason)."""
        timeout = f"{self.timeout:g}"
        target = _with_params(url.strip(), [("cto", timeout), ("rto", timeout)])
        with self._capture.collect() as records:
            try:
                parsed = self._parsed(target)
                plugin: Any = None
                if parsed is not None:
                    # instantiate() adds its own keys to the dict: give it a copy.
                    parts = dict(parsed)
                    if headers and parts["schema"] in _HEADER_SCHEMES:
                        parts["headers"] = {**(parts.get("headers") or {}), **headers}
                    plugin = apprise.Apprise.instantiate(parts)
                if plugin is None:
                    return False, "invalid channel URL"
                ok = bool(plugin.notify(body=body, title=title, body_format="text"))
            except Exception as exc:  # a plugin defect must cost this message, not the loop
                return False, f"apprise error: {type(exc).__name__}"
        if ok:
            return True, None
        return False, _reason(records, url, self.timeout)

    def warm(self, urls: Sequence[str]) -> None:
        """Load the plugins of these channels and parse them now (apprise loads a plugin
        module the first time it meets its scheme: about 300 ms here)."""
        for url in urls:
            timeout = f"{self.timeout:g}"
            target = _with_params(url.strip(), [("cto", timeout), ("rto", timeout)])
            with self._capture.collect():
                try:
                    parsed = self._parsed(target)
                    if parsed is not None:
                        apprise.Apprise.instantiate(dict(parsed))
                except Exception:  # a bad URL fails its sends later, with the reason
                    continue

    def _parsed(self, target: str) -> dict[str, Any] | None:
        # Parsing a URL is two thirds of apprise's set-up cost (0.9 of 1.1 ms measured):
        # parse each channel once, build a fresh plugin from the parts for every send.
        with self._parsed_lock:
            found = self._parsed_urls.get(target)
        if found is None:
            found = apprise_plugins.url_to_dict(  # type: ignore[no-untyped-call]
                target, secure_logging=True)
            if found is None:
                return None
            with self._parsed_lock:
                if len(self._parsed_urls) >= _PARSED_KEEP:
                    self._parsed_urls.pop(next(iter(self._parsed_urls)))
                self._parsed_urls[target] = found
        return found


def check_headers(headers: Mapping[str, str]) -> None:
    """ValueError for a header that is not printable ASCII (CR/LF would inject one)."""
    for name, value in headers.items():
        # HTTP carries header values as latin-1 at best; CR/LF would inject a header.
        if not _TOKEN.match(name) or not _HEADER_VALUE.match(value):
            raise ValueError(f"invalid HTTP header {name!r}: printable ASCII only")


def result_of(ok: bool, error: str | None, elapsed: float) -> DeliveryResult:
    return DeliveryResult(ok, error, elapsed, retryable=ok or retryable(error))


class AppriseSender:
    """Deliver through apprise on a bounded pool of worker threads of this process.

    Use as an async context manager, or call `aclose()` when done. (The daemon sends from
    a process of its own, `notify.sender_process.ProcessSender`, so that apprise's CPU
    never waits for the event loop's GIL.)
    """

    def __init__(self, timeout: float = 10.0, concurrency: int = 8) -> None:
        if timeout <= 0 or concurrency < 1:
            raise ValueError("timeout must be positive and concurrency at least 1")
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix="apprise-send")
        # Taken before a send enters the pool and given back only when its thread is free,
        # so the timeout counts from the moment a worker actually starts on it, and a send
        # abandoned at its deadline keeps its worker counted until apprise lets go.
        self._slots = asyncio.Semaphore(concurrency)
        self._deliverer = Deliverer(timeout)
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(self, url: str, title: str, body: str, *,
                   headers: Mapping[str, str] = _NO_HEADERS) -> DeliveryResult:
        """Deliver `title` and `body` to `url`; the result says whether and why not."""
        if self._closed:
            raise RuntimeError("AppriseSender is closed")
        check_headers(headers)
        started = time.monotonic()
        await self._slots.acquire()
        try:
            future = asyncio.get_running_loop().run_in_executor(
                self._pool, self._deliverer.deliver, url, dict(headers), title, body)
        except BaseException:
            self._slots.release()
            raise
        # Released when the thread is done, not when we stop waiting for it (see __init__).
        future.add_done_callback(lambda _: self._slots.release())
        try:
            # shield: on our deadline the worker cannot be interrupted anyway; the future
            # must stay uncancelled so its completion still frees the slot.
            async with asyncio.timeout(self._timeout + _MARGIN):
                ok, error = await asyncio.shield(future)
        except TimeoutError:
            ok, error = False, f"timeout after {self._timeout:.1f} s"
        return result_of(ok, error, time.monotonic() - started)

    async def aclose(self) -> None:
        """Stop the worker threads (waiting, bounded, for sends still running)."""
        if self._closed:
            return
        self._closed = True
        waiting = asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        # A worker stuck past apprise's own timeouts ends on its own; do not wait for it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout + _MARGIN):
                await waiting
