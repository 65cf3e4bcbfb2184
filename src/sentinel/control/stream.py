"""`GET /api/stream`: incident events (and readings) as server-sent events.

Each incident event carries its `seq` as the SSE id, so a follower that loses the connection
(or whose daemon restarts) resumes with `Last-Event-ID` or `?after=` and misses nothing:
events come from the committed log, not from memory. Readings are live only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from aiohttp import web

from sentinel.control.feed import Filter, ReadingFeed

_log = structlog.get_logger("sentinel.control")

HEARTBEAT = 15.0
_BATCH = 200


class EventSource(Protocol):
    @property
    def last_seq(self) -> int: ...

    readings: ReadingFeed

    async def events_after(self, seq: int, limit: int = 500, wait: float | None = None
                           ) -> list[dict[str, Any]]: ...


def _frame(data: dict[str, Any], event: str, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


def start_after(request: web.Request, last_seq: int) -> int:
    """Where a follower starts: Last-Event-ID, then ?after=, else from now on."""
    for value in (request.headers.get("Last-Event-ID"), request.query.get("after")):
        if value is not None and value.strip():
            try:
                return max(0, int(value))
            except ValueError:
                raise ValueError(f"after must be an event number, not {value!r}") from None
    return last_seq


async def stream(request: web.Request, source: EventSource, filter_: Filter,
                 readings: bool, closing: Callable[[], bool]) -> web.StreamResponse:
    cursor = start_after(request, source.last_seq)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
        # A reverse proxy must pass events on as they come, not buffer them.
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n" +
                         _frame({"seq": source.last_seq, "after": cursor}, "hello"))
    sent = 0
    following = source.readings.follow(filter_) if readings else contextlib.nullcontext(None)
    with following as follower:
        reported_drops = 0
        last_write = time.monotonic()
        try:
            while not closing():
                wait = 0.25 if readings else 1.0
                events = await source.events_after(cursor, _BATCH, wait=wait)
                chunks: list[bytes] = []
                for event in events:
                    cursor = event["seq"]
                    if filter_.event(event):
                        chunks.append(_frame(event, "incident", cursor))
                if follower is not None:
                    queue = follower.queue
                    while not queue.empty():
                        chunks.append(_frame(queue.get_nowait(), "reading"))
                    if follower.dropped != reported_drops:
                        chunks.append(_frame({"dropped": follower.dropped}, "readings_dropped"))
                        reported_drops = follower.dropped
                now = time.monotonic()
                if not chunks and now - last_write >= HEARTBEAT:
                    chunks.append(b": ping\n\n")
                if chunks:
                    await response.write(b"".join(chunks))
                    sent += len(chunks)
                    last_write = now
        except (ConnectionResetError, ConnectionError):
            pass  # the follower went away
        except asyncio.CancelledError:
            raise
    _log.debug("stream_closed", cursor=cursor, sent=sent)
    return response
