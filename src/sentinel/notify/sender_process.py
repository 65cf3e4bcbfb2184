"""Sending from a process of its own, so apprise's CPU never waits for the event loop.

apprise is synchronous and costs about 3.4 ms of Python per request on this project's
test machine (building the plugin, a `requests` session, reading the proxy environment),
all of it under a GIL. Run on threads of the daemon, it shared that GIL with the event
loop: under 5,000 readings/s an alarm's send took 14 ms at p50 instead of 9 ms idle, and
every send slowed the next alarm's decoding and commit. `ProcessSender` keeps apprise in
one child process with its own thread pool (`[notify] concurrency` threads); the daemon
only writes a request to a pipe and reads the answer.

The child is started at daemon start (warm: apprise imported, plugins registered) with the
`spawn` method (forking a threaded asyncio process is unsafe). If it dies, the requests in
flight fail with a retryable reason (the outbox's retry and crash rules apply) and the next
send starts a new one. Its sends are bounded by apprise's own timeouts; the daemon still
gives each request `timeout` plus a margin and then reports a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import threading
import time
import types
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import structlog

from sentinel.notify.sender import DeliveryResult, check_headers, result_of

log = structlog.get_logger("sentinel.notify")

_MARGIN = 1.0
_NO_HEADERS: Mapping[str, str] = types.MappingProxyType({})
_CHILD_GONE = "sender process exited"


def _child_main(conn: multiprocessing.connection.Connection, timeout: float,
                concurrency: int) -> None:
    """The child: read requests, deliver each on a worker thread, write back results."""
    from sentinel.notify.sender import Deliverer

    deliverer = Deliverer(timeout)
    write_lock = threading.Lock()

    def run(request_id: int, url: str, headers: dict[str, str], title: str,
            body: str) -> None:
        try:
            ok, error = deliverer.deliver(url, headers, title, body)
        except Exception as exc:  # a defect costs this message, not the child
            ok, error = False, f"sender error: {type(exc).__name__}"
        with write_lock, contextlib.suppress(OSError):
            conn.send((request_id, ok, error))

    with ThreadPoolExecutor(max_workers=concurrency,
                            thread_name_prefix="apprise-send") as pool:
        with write_lock:
            conn.send(("ready",))
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return  # the daemon went away: finish nothing more
            if request is None:
                return
            pool.submit(run, *request)


class ProcessSender:
    """A `Sender` whose apprise work runs in a child process (see the module docstring)."""

    def __init__(self, timeout: float = 10.0, concurrency: int = 8) -> None:
        if timeout <= 0 or concurrency < 1:
            raise ValueError("timeout must be positive and concurrency at least 1")
        self._timeout = timeout
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[bool, str | None]]] = {}
        self._process: Any = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self.started = 0  # child processes started (1 unless one died)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start_soon(self) -> None:
        """Start the child in the background (the first send waits for it if need be)."""
        if self._conn is None and (self._starting is None or self._starting.done()):
            self._starting = asyncio.get_running_loop().create_task(self._start())

    async def start(self) -> None:
        """Start the child (and wait until it is ready), unless it runs."""
        if self._conn is not None:
            return
        if self._starting is None or self._starting.done():
            self._starting = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(target=_child_main, name="sentinel-sender",
                                  args=(theirs, self._timeout, self._concurrency),
                                  daemon=True)
        # Spawning imports the package anew (~0.5 s): not on the event loop.
        await asyncio.to_thread(process.start)
        theirs.close()
        ready = await asyncio.to_thread(ours.recv)
        if ready != ("ready",):
            raise RuntimeError(f"sender process said {ready!r}")
        self._process, self._conn = process, ours
        self.started += 1
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)
        log.info("sender_process_started", pid=process.pid, threads=self._concurrency)

    def _on_readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            while conn.poll():
                request_id, ok, error = conn.recv()
                waiter = self._waiting.pop(request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result((ok, error))
        except (EOFError, OSError):
            self._lost()

    def _lost(self) -> None:
        """The child is gone: what it held fails (retryable); the next send starts one."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            conn.close()
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_result((False, _CHILD_GONE))
        if not self._closed:
            log.error("sender_process_exited", in_flight=len(waiting),
                      exitcode=process.exitcode if process is not None else None)

    async def send(self, url: str, title: str, body: str, *,
                   headers: Mapping[str, str] = _NO_HEADERS) -> DeliveryResult:
        """Deliver `title` and `body` to `url`; the result says whether and why not."""
        if self._closed:
            raise RuntimeError("ProcessSender is closed")
        check_headers(headers)
        started = time.monotonic()
        await self.start()
        await self._slots.acquire()
        request_id = next(self._ids)
        waiter: asyncio.Future[tuple[bool, str | None]] = \
            asyncio.get_running_loop().create_future()
        # The slot is freed when the child answers (or dies), not when we stop waiting:
        # a send abandoned at its deadline still occupies one of the child's threads.
        waiter.add_done_callback(lambda _: self._slots.release())
        self._waiting[request_id] = waiter
        conn = self._conn
        try:
            if conn is None:
                raise OSError("no sender process")
            conn.send((request_id, url, dict(headers), title, body))
        except (OSError, ValueError):
            self._lost()
            waiter = asyncio.get_running_loop().create_future()
            waiter.set_result((False, _CHILD_GONE))
        try:
            async with asyncio.timeout(self._timeout + _MARGIN):
                ok, error = await asyncio.shield(waiter)
        except TimeoutError:
            ok, error = False, f"timeout after {self._timeout:.1f} s"
        return result_of(ok, error, time.monotonic() - started)

    def kill(self) -> None:
        """Kill the child (tests of the daemon's behaviour when it dies)."""
        if self._process is not None:
            self._process.kill()

    async def aclose(self) -> None:
        """Let the child finish what it holds (bounded), then stop it."""
        if self._closed:
            return
        self._closed = True
        if self._starting is not None and not self._starting.done():
            with contextlib.suppress(Exception):
                await self._starting
        conn, process = self._conn, self._process
        if self._waiting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout + _MARGIN):
                    await asyncio.gather(*self._waiting.values(), return_exceptions=True)
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        if process is not None:
            await asyncio.to_thread(process.join, 5.0)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 1.0)
        if conn is not None:
            conn.close()
        self._conn = self._process = None


__all__ = ["DeliveryResult", "ProcessSender"]
