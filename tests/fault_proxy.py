"""A TCP proxy on loopback that puts network faults between a client and a server on demand.

The daemon connects to the proxy instead of the broker (or the TSDB); the test then adds
latency, stalls the connections without closing them (what a dead peer behind a NAT or a
pulled cable looks like: a half-open connection only keepalive can detect), cuts them, or
refuses new ones. It runs its own event loop in a thread, so tests drive it from plain code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

T = TypeVar("T")

_CHUNK = 65536


class _Link:
    """One proxied connection: two pumps, client→server and server→client."""

    def __init__(self, proxy: FaultProxy, client: tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter],
                 server: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.flowing = asyncio.Event()
        self.flowing.set()
        # Client → server only: what a lost acknowledgement looks like to the sender.
        self.upstream = asyncio.Event()
        self.upstream.set()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for reader, writer, gate in ((self.client[0], self.server[1], self.upstream),
                                     (self.server[0], self.client[1], None)):
            queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
            self.tasks.append(asyncio.create_task(self._read(reader, queue)))
            self.tasks.append(asyncio.create_task(self._write(writer, queue, gate)))

    async def _read(self, reader: asyncio.StreamReader,
                    queue: asyncio.Queue[tuple[float, bytes] | None]) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                queue.put_nowait((time.monotonic(), data))
        queue.put_nowait(None)

    async def _write(self, writer: asyncio.StreamWriter,
                     queue: asyncio.Queue[tuple[float, bytes] | None],
                     gate: asyncio.Event | None) -> None:
        try:
            while (item := await queue.get()) is not None:
                read_at, data = item
                # Latency is added per chunk from when it was read, so it does not pile up.
                delay = read_at + self.proxy.latency - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.flowing.wait()  # a stall holds bytes; the sockets stay open
                if gate is not None:
                    await gate.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        for _, writer in (self.client, self.server):
            writer.transport.abort()  # RST, like a dropped connection, not a clean close


class FaultProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port>; faults on demand."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.latency = 0.0
        self.refusing = False
        self.accepted = 0
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="fault-proxy")
        self._server: asyncio.Server | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> Self:
        self._thread.start()

        async def listen() -> int:
            self._server = await asyncio.start_server(self._accept, self.host, 0)
            return int(self._server.sockets[0].getsockname()[1])

        self.port = self._call(listen())
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            server = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        link = _Link(self, (reader, writer), server)
        self._links.add(link)
        link.start()
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.discard(link)

    # -- faults -------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        return len(self._links)

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk by `seconds`, both ways."""
        self.latency = seconds

    def stall(self) -> None:
        """Stop forwarding on the open connections, keeping them open (half-open)."""
        async def stall() -> None:
            for link in self._links:
                link.flowing.clear()
        self._call(stall())

    def hold_upstream(self) -> None:
        """Hold what clients send (their acknowledgements, pings) on the open connections,
        while the server's packets still reach them; cut() drops what was held."""
        async def hold() -> None:
            for link in self._links:
                link.upstream.clear()
        self._call(hold())

    def cut(self) -> None:
        """Drop every open connection (RST); new connections still go through."""
        async def cut() -> None:
            for link in list(self._links):
                link.abort()
        self._call(cut())

    def refuse(self, refusing: bool = True) -> None:
        """Refuse (reset) new connections while set."""
        self.refusing = refusing

    def close(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for link in list(self._links):
                link.abort()
                for task in link.tasks:
                    task.cancel()
        with contextlib.suppress(Exception):
            self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
