"""Sending from a process of its own, so apprise's CPU never waits for the event loop.

apprise is synchronous and costs about 3.4 ms of Python per request on this project's
test machine (building the plugin, a `requests` session, reading the proxy environment),
all of it under a GIL. Run on threads of the daemon, it shared that GIL with the event
loop: under 5,000 readings/s an alarm's send took 14 ms at p50 instead of 9 ms idle, and
every send slowed the next alarm's decoding and commit. `ProcessSender` keeps apprise in
one child process with its own thread pool (`[notify] concurrency` threads); the daemon
only writes a request to a pipe and reads the answer.

The child (`sentinel.notify.sender_child`, a fresh interpreter: forking a threaded asyncio
process is unsafe, and multiprocessing's spawn would import the daemon's main module again)
is started at daemon start, warm before the first message is read. Requests and answers are
JSON lines on its stdin and stdout: channel URLs, which hold secrets, never appear in its
command line. If it dies, the requests in flight fail with a retryable reason (the outbox's
retry and crash rules apply) and the next send starts a new one. Its sends are bounded by
apprise's own timeouts; the daemon still gives each request `timeout` plus a margin and
then reports a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
import types
from collections.abc import Mapping, Sequence
from typing import Self

import structlog

from sentinel.config.model import NotifySettings
from sentinel.notify.sender import AppriseSender, DeliveryResult, check_headers, result_of

log = structlog.get_logger("sentinel.notify")

_MARGIN = 1.0
_NO_HEADERS: Mapping[str, str] = types.MappingProxyType({})
_CHILD_GONE = "sender process exited"
# An answer line is small; a request carries a rendered message (kept far below this).
_LINE_LIMIT = 4 * 1024 * 1024


class ProcessSender:
    """A `Sender` whose apprise work runs in a child process (see the module docstring)."""

    def __init__(self, timeout: float = 10.0, concurrency: int = 8,
                 warm: Sequence[str] = ()) -> None:
        if timeout <= 0 or concurrency < 1:
            raise ValueError("timeout must be positive and concurrency at least 1")
        self._timeout = timeout
        self._warm = list(warm)
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[bool, str | None]]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
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
        if self._process is None and (self._starting is None or self._starting.done()):
            self._starting = asyncio.get_running_loop().create_task(self._start())

    async def start(self) -> None:
        """Start the child (and wait until it is ready), unless it runs."""
        if self._process is not None:
            return
        self.start_soon()
        assert self._starting is not None
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sentinel.notify.sender_child", f"{self._timeout:g}",
            str(self._concurrency), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=_LINE_LIMIT)
        assert process.stdout is not None and process.stdin is not None
        process.stdin.write(json.dumps({"warm": self._warm}).encode() + b"\n")
        ready = await process.stdout.readline()
        if json.loads(ready or b"null") != {"ready": True}:
            process.kill()
            await process.wait()
            raise RuntimeError(f"the sender process did not start (it said {ready[:200]!r})")
        self._process = process
        self.started += 1
        self._reader = asyncio.get_running_loop().create_task(
            self._read(process), name="sender-answers")
        log.info("sender_process_started", pid=process.pid, threads=self._concurrency)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            async for line in process.stdout:
                answer = json.loads(line)
                waiter = self._waiting.pop(int(answer["id"]), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result((bool(answer["ok"]), answer["error"]))
        except (ValueError, KeyError, ConnectionError) as exc:
            log.error("sender_process_answer_unreadable", error=str(exc)[:200])
        await self._lost(process)

    async def _lost(self, process: asyncio.subprocess.Process) -> None:
        """The child is gone: what it held fails (retryable); the next send starts one."""
        if self._process is process:
            self._process = None
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_result((False, _CHILD_GONE))
        if process.returncode is None:
            process.kill()
        code = await process.wait()
        if not self._closed:
            log.error("sender_process_exited", in_flight=len(waiting), exitcode=code)

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
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            waiter.set_result((False, _CHILD_GONE))
        else:
            self._waiting[request_id] = waiter
            process.stdin.write(json.dumps({
                "id": request_id, "url": url, "headers": dict(headers), "title": title,
                "body": body}, ensure_ascii=False).encode() + b"\n")
        try:
            async with asyncio.timeout(self._timeout + _MARGIN):
                ok, error = await asyncio.shield(waiter)
        except TimeoutError:
            ok, error = False, f"timeout after {self._timeout:.1f} s"
        return result_of(ok, error, time.monotonic() - started)

    def kill(self) -> None:
        """Kill the child (tests of what happens when it dies)."""
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
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the child ends after the sends in flight
        try:
            async with asyncio.timeout(self._timeout + _MARGIN):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


__all__ = ["DeliveryResult", "ProcessSender"]


def start_sender(settings: NotifySettings, channels: Sequence[str]
                 ) -> AppriseSender | ProcessSender:
    """The apprise sender [notify] sender asks for. A child process is spawned at once, so
    it is warm (apprise imported, `channels`' plugins loaded) by the time messages are read;
    the caller starts it (`start`) before the first one and closes it (`aclose`) last."""
    if settings.sender == "process":
        sender = ProcessSender(settings.timeout, settings.concurrency, warm=list(channels))
        sender.start_soon()
        return sender
    return AppriseSender(settings.timeout, settings.concurrency)
