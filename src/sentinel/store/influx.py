"""Write batches of line protocol to InfluxDB (or anything speaking its /api/v2/write).

`InfluxWriter.write` never drops data on its own: transient failures (429, 5xx, 408,
timeouts, refused or broken connections) are retried with capped, jittered exponential
backoff, honouring `Retry-After`, until the batch is stored, the writer is closed or the
calling task is cancelled. A 400/413/422 answer is narrowed down by bisection so the good
lines are stored and only the lines the server refuses come back in `WriteResult.rejected`
for the caller to dead-letter. Resending lines is harmless: a point with the same series
and timestamp overwrites itself with the same values. 401/403/404 (and any other 4xx) are
configuration problems, raised as `StoreError(retryable=False)` with nothing dead-lettered.

How influxdb-client reports failures (1.50, async API): a non-2xx answer raises
`influxdb_client.rest.ApiException` (an `InfluxDBError`) carrying `.status`, `.reason`,
`.headers` (the aiohttp response headers), `.body` (raw bytes), `.retry_after` (the raw
header) and `.message` (the JSON `message` when there is one). Transport failures are
aiohttp's own exceptions (`ClientConnectorError` for a refused connection,
`ServerDisconnectedError`, `ClientPayloadError`, ...) and the total-request timeout is a
bare `TimeoutError`. The async client has no retry of its own and swallows nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import math
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, cast

import aiohttp
import orjson
import structlog
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from sentinel.backoff import Backoff
from sentinel.config.model import InfluxSettings
from sentinel.errors import StoreError

__all__ = ["RETRY_AFTER_CAP", "InfluxWriter", "SleepFn", "WriteResult", "parse_retry_after"]

SleepFn = Callable[[float], Awaitable[None]]

# Statuses for which the same request may succeed later.
_RETRY_STATUSES: Final = frozenset({408, 429})
# Statuses that blame the content of the batch: bisect to find the lines at fault.
_BISECT_STATUSES: Final = frozenset({400, 413, 422})
# A Retry-After is honoured up to this many seconds (or retry_max_delay if that is larger),
# so a server asking for an hour's pause is still probed now and then.
RETRY_AFTER_CAP: Final = 300.0
_REASON_MAX = 500
_MS: Final = cast(WritePrecision, WritePrecision.MS)  # the class declares its members as str

_log = structlog.get_logger(__name__)

# aiohttp errors that no retry can cure: the url (or its redirects) is wrong.
_UNUSABLE_URL: Final[tuple[type[BaseException], ...]] = tuple(
    error
    for error in (
        getattr(aiohttp, name, None)
        for name in ("InvalidURL", "NonHttpUrlClientError", "TooManyRedirects")
    )
    if isinstance(error, type) and issubclass(error, BaseException)
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of one `InfluxWriter.write`.

    `written`: lines the server accepted; `rejected`: (line, server's reason) for each line
    it refused on its own; `attempts`: HTTP requests made, retries and bisection included.
    """

    written: int
    rejected: list[tuple[str, str]]
    attempts: int


@dataclass(slots=True)
class _Progress:
    written: int = 0
    attempts: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


class _Refused(Exception):
    """The server refused the content of a request (400/413/422)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"HTTP {status}: {reason}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), or None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _server_reason(exc: ApiException) -> str:
    """The server's own words: the JSON `message`, else the body text, else the status."""
    body: Any = exc.body
    if isinstance(body, (bytes, bytearray)) and body:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("message"), str) and doc["message"]:
            return str(doc["message"])[:_REASON_MAX]
        text = bytes(body).decode("utf-8", "replace").strip()
        if text:
            return text[:_REASON_MAX]
    return f"HTTP {exc.status} {exc.reason or ''}".strip()


class InfluxWriter:
    """Async context manager that writes line-protocol batches with precision ms.

    `token` is the resolved secret (None for servers without authentication, such as
    VictoriaMetrics); it is sent only as the Authorization header and never logged.
    `sleep` (default `asyncio.sleep`) is awaited for every backoff pause and `rng` draws
    the jitter; both exist so tests can run without waiting.
    """

    def __init__(
        self,
        settings: InfluxSettings,
        token: str | None,
        *,
        sleep: SleepFn = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._token = token
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        max_delay = max(settings.retry_max_delay, settings.retry_min_delay)
        # retry_min_delay first, doubling up to retry_max_delay; jitter takes off up to
        # half, but never below retry_min_delay.
        self._backoff = Backoff(base=settings.retry_min_delay, cap=max_delay, jitter=0.5,
                                floor=settings.retry_min_delay)
        self._retry_after_cap = max(RETRY_AFTER_CAP, max_delay)
        self._client: InfluxDBClientAsync | None = None
        self._write_api: WriteApiAsync | None = None
        self._closed = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Create the HTTP client (needs a running event loop); idempotent."""
        if self._closed.is_set():
            raise StoreError("InfluxDB writer is closed", retryable=False)
        if self._client is not None:
            return
        s = self._settings
        try:
            parts = urllib.parse.urlsplit(s.url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            usable = False
        if not usable:
            raise StoreError(
                "InfluxDB url must be http:// or https:// with a host", retryable=False
            )
        self._client = InfluxDBClientAsync(
            url=s.url,
            token=self._token or "",  # empty: no Authorization header
            org=s.org,
            timeout=math.ceil(s.timeout * 1000),
            enable_gzip=s.gzip,
        )
        self._write_api = self._client.write_api()

    async def close(self) -> None:
        """Stop retrying (pending `write` calls raise a retryable StoreError) and disconnect."""
        self._closed.set()
        client, self._client, self._write_api = self._client, None, None
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def write(self, lines: Sequence[str]) -> WriteResult:
        """Store one batch; retry transient failures until done, closed or cancelled.

        Returns how many lines were written and which were refused by the server (with its
        reason). Raises StoreError(retryable=False, status=...) when the server refuses the
        writer itself (401, 403, 404, other 4xx), StoreError(retryable=True) when the
        writer is closed before the batch is stored.
        """
        progress = _Progress()
        batch = []
        for line in lines:
            if line and not line.isspace():
                batch.append(line)
            else:  # the client cannot even send a body without content
                progress.rejected.append((line, "empty line"))
        if batch:
            await self._write_bisecting(batch, progress)
        return WriteResult(progress.written, progress.rejected, progress.attempts)

    async def _write_bisecting(self, lines: list[str], progress: _Progress) -> None:
        try:
            await self._send_retrying(lines, progress)
        except _Refused as refused:
            if len(lines) == 1:
                progress.rejected.append((lines[0], refused.reason))
                _log.warning("influx_line_rejected", status=refused.status, reason=refused.reason)
                return
            mid = len(lines) // 2
            await self._write_bisecting(lines[:mid], progress)
            await self._write_bisecting(lines[mid:], progress)
            return
        progress.written += len(lines)

    async def _send_retrying(self, lines: list[str], progress: _Progress) -> None:
        body = "\n".join(lines)
        failures = 0
        while True:
            write_api = self._live_api()
            progress.attempts += 1
            retry_after: float | None = None
            try:
                await write_api.write(
                    bucket=self._settings.bucket,
                    org=self._settings.org,
                    record=body,
                    write_precision=_MS,
                )
                # write() returns False for a 2xx other than 201/204: still accepted.
                return
            except ApiException as exc:
                status = exc.status if isinstance(exc.status, int) else 0
                if status in _BISECT_STATUSES:
                    raise _Refused(status, _server_reason(exc)) from None
                if not (status in _RETRY_STATUSES or 500 <= status <= 599):
                    if self._closed.is_set():
                        raise self._closed_error() from None
                    raise StoreError(
                        f"InfluxDB refused the writer: HTTP {status}: {_server_reason(exc)}",
                        retryable=False,
                        status=status,
                    ) from None
                retry_after = parse_retry_after(getattr(exc, "retry_after", None))
                error = f"HTTP {status}"
            except _UNUSABLE_URL as exc:
                raise StoreError(
                    f"InfluxDB url is unusable: {type(exc).__name__}", retryable=False
                ) from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status = None
                error = f"{type(exc).__name__}: {exc}"[:_REASON_MAX]
            except RuntimeError:
                # The session was closed under a request in flight.
                if self._closed.is_set():
                    raise self._closed_error() from None
                raise
            if self._closed.is_set():
                raise self._closed_error()
            failures += 1
            delay = self._delay(failures, retry_after)
            _log.warning(
                "influx_write_retry",
                status=status,
                error=error,
                attempt=failures,
                delay=round(delay, 3),
                retry_after=retry_after,
                lines=len(lines),
            )
            await self._pause(delay)

    def _delay(self, failures: int, retry_after: float | None) -> float:
        """Backoff after the n-th consecutive failure, within [min_delay, max_delay]."""
        delay = self._backoff.delay(failures - 1, self._rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._retry_after_cap))
        return delay

    async def _pause(self, delay: float) -> None:
        """Sleep `delay` seconds, waking early (with StoreError) if the writer is closed."""
        sleeper = asyncio.ensure_future(self._sleep(delay))
        closer = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({sleeper, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Not awaited: awaiting here could swallow a cancellation of the caller.
            sleeper.cancel()
            closer.cancel()
        if self._closed.is_set():
            raise self._closed_error()
        sleeper.result()  # re-raise a failure of the injected sleep

    def _live_api(self) -> WriteApiAsync:
        if self._closed.is_set():
            raise self._closed_error()
        if self._write_api is None:
            raise StoreError("InfluxDB writer is not open", retryable=False)
        return self._write_api

    @staticmethod
    def _closed_error() -> StoreError:
        return StoreError("InfluxDB writer closed before the batch was stored", retryable=True)
