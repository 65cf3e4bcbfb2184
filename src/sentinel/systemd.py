"""systemd integration: sd_notify(3) over $NOTIFY_SOCKET, and when the watchdog is fed.

The protocol is small enough for the standard library: one datagram of newline-separated
`KEY=value` assignments to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an
abstract name written with a leading '@'). Outside systemd the variable is unset and every
call here does nothing.

`Notifier.run` is the heartbeat task. Until READY=1 it extends the start-up timeout while the
daemon is healthy (a broker that is down at boot must not become a restart loop); after it,
it sends WATCHDOG=1 every half watchdog interval — only while `pipeline_stuck` finds nothing
wrong; once STOPPING=1 is sent it keeps pinging while the loop lives, as shutdown winds the
stages down on purpose.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import structlog

from sentinel.store.spool import SpoolingSink

if TYPE_CHECKING:
    from sentinel.runtime import Daemon

__all__ = ["Notifier", "encode", "notify_address", "parse", "pipeline_stuck",
           "watchdog_interval"]

log = structlog.get_logger("sentinel.systemd")

# Without a watchdog (WatchdogSec=0): how often start-up is extended, and the stall bound.
_TICK_WITHOUT_WATCHDOG = 5.0
_STUCK_WITHOUT_WATCHDOG = 30.0


def notify_address(value: str) -> str:
    """The socket address of a $NOTIFY_SOCKET value; ValueError for what we cannot use."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    raise ValueError(f"unsupported NOTIFY_SOCKET {value!r} (neither a path nor '@name')")


def encode(fields: Mapping[str, object]) -> bytes:
    """One notification: `KEY=value` lines. A newline inside a value would start a forged
    assignment (STATUS carries error texts), so it becomes a space."""
    lines = []
    for key, value in fields.items():
        if not key or not all(c.isupper() or c.isdigit() or c == "_" for c in key):
            raise ValueError(f"not a notification field name: {key!r}")
        text = str(value).replace("\r", " ").replace("\n", " ")
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode("utf-8")


def parse(message: bytes) -> dict[str, str]:
    """The assignments of one notification (the service manager's reading of it)."""
    fields: dict[str, str] = {}
    for line in message.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """WatchdogSec= in seconds when the watchdog is meant for process `pid`, else None.

    systemd sets $WATCHDOG_USEC, and $WATCHDOG_PID to the main process: a child that
    inherited the variables must not answer for it.
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = environ.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner.strip() != str(pid)):
        return None
    return usec / 1_000_000


def pipeline_stuck(daemon: Daemon, stages: Iterable[asyncio.Task[None]], bound: float,
                   now: float | None = None) -> str | None:
    """Why the watchdog must not be fed now, or None when the pipeline makes progress.

    The watchdog asks one question: would a restart help? Yes when
      * a stage task ended: nothing reads, writes or raises incidents any more;
      * a durable write — the readings store (or spool) write, or the incident state
        commit the rules gate waits for — has been in one batch for more than `bound`
        without an error to show: the call hangs (a wedged SQLite worker thread, a hung
        file system). Alarms stop reaching the operators, and a restart reopens the files
        while the broker keeps the unacknowledged messages.
    No in every case a restart cannot fix, and where the daemon already waits correctly:
      * broker down: the source reconnects by itself (READY stays sent, /readyz says so);
      * time-series database down: readings go to the spool; when the spool is full,
        writes wait for room on purpose (and the broker holds the rest);
      * a write failing with an error (disk full, permissions, a locked file): it is
        retried with backoff, logged, and /readyz reports it. A restart would not free the
        disk; it would only turn one clear error into a restart loop. (So a retry that
        hangs after an error goes unseen here: the step still shows its error.)
    A loop too busy or blocked to run this check stops the pings by itself.
    """
    for task in stages:
        if task.done():
            return f"stage {task.get_name()} has ended"
    stats = daemon.ingestor.stats
    sink = daemon.sink
    # busy_since was stamped with the ingest stage's clock: compare on the same one.
    now = daemon.ingestor.clock.monotonic() if now is None else now
    for what, since in stats.busy_since.items():
        if what in stats.failing:
            continue
        if what == "store_write" and isinstance(sink, SpoolingSink) and sink.full:
            continue
        if now - since > bound:
            name = "readings store write" if what == "store_write" else "incident state commit"
            return f"{name} pending for {now - since:.0f} s"
    return None


class Notifier:
    """Notifications to the service manager; every method is a no-op outside systemd."""

    def __init__(self, address: str | None, watchdog: float | None = None) -> None:
        self._address = address
        self.watchdog = watchdog if address is not None else None
        self._phase = "starting"
        self._send_failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        environ = os.environ if environ is None else environ
        value = environ.get("NOTIFY_SOCKET", "")
        if not value:
            return cls(None)
        try:
            address = notify_address(value)
        except ValueError as exc:
            log.warning("sd_notify_disabled", error=str(exc))
            return cls(None)
        return cls(address, watchdog_interval(environ, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def stuck_after(self) -> float:
        """How long a durable write may hang before the pings stop: one watchdog interval,
        so WatchdogSec= alone sets how long a stalled pipeline is tolerated."""
        return self.watchdog or _STUCK_WITHOUT_WATCHDOG

    def send(self, **fields: object) -> bool:
        """Send one notification; False (logged once) when it cannot be delivered.

        Never blocks and never raises: a full or vanished notify socket must not stop the
        daemon (a missed WATCHDOG=1 is followed by the next one)."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(encode(fields), self._address)
        except OSError as exc:
            if not self._send_failed:
                log.warning("sd_notify_failed", error=f"{exc.__class__.__name__}: {exc}")
            self._send_failed = True
            return False
        if self._send_failed:
            log.info("sd_notify_recovered")
        self._send_failed = False
        return True

    def ready(self, status: str) -> None:
        self._phase = "running"
        self.send(READY=1, STATUS=status)

    def stopping(self, status: str = "stopping: committing what was received") -> None:
        self._phase = "stopping"
        self.send(STOPPING=1, STATUS=status)

    async def run(self, stuck: Callable[[], str | None]) -> None:
        """The heartbeat (see the module docstring), until cancelled."""
        if self._address is None:
            return
        period = self.watchdog / 2 if self.watchdog else _TICK_WITHOUT_WATCHDOG
        withheld: str | None = None
        self.send(STATUS="starting: waiting for the broker")
        while True:
            if self._phase == "stopping":
                if self.watchdog:
                    self.send(WATCHDOG=1)
            else:
                reason = stuck()
                if reason != withheld:
                    if reason is not None:
                        log.error("watchdog_withheld", reason=reason)
                        self.send(STATUS=f"stuck, watchdog withheld: {reason}")
                    else:
                        log.info("watchdog_resumed")
                        self.send(STATUS="running" if self._phase == "running"
                                  else "starting: waiting for the broker")
                    withheld = reason
                if reason is None and self._phase == "running":
                    if self.watchdog:
                        self.send(WATCHDOG=1)
                elif reason is None:
                    # Start-up lasts until the broker answers; keep it alive while healthy.
                    self.send(EXTEND_TIMEOUT_USEC=int(3 * period * 1_000_000))
            await asyncio.sleep(period)
