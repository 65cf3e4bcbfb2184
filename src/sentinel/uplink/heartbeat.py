"""The box's retained heartbeat on `<prefix>/<community>/heartbeat`.

The district judges a box by it: a fresh heartbeat is a box online; the daemon's last will
(`wire.offline`, published by the broker when the connection dies) a box gone dark; a
`stopped` one a planned stop. It carries what the street office reads first: how many
incidents are open and unacknowledged, and the oldest unacknowledged life-safety one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from sentinel import __version__
from sentinel.clock import Clock
from sentinel.district import wire
from sentinel.incidents.model import Incident, Status
from sentinel.incidents.publish import Publisher

log = structlog.get_logger("sentinel.uplink")

# How often the loop looks whether the connection came back: a reconnect must replace the
# broker's "offline" will at once, not up to an interval later.
_CHECK_EVERY = 0.5
# On a clean stop, how long the `stopped` state may take to reach the broker.
_STOP_WAIT = 2.0


class HeartbeatTask:
    def __init__(self, client: Publisher, prefix: str, community: str, name: str,
                 interval: float, open_incidents: Callable[[], list[Incident]],
                 last_seq: Callable[[], int], devices: int, clock: Clock,
                 connects: Callable[[], int] = lambda: 0, instance: str = "") -> None:
        self._client = client
        self._topic = wire.topic(prefix, community, wire.HEARTBEAT)
        self._community = community
        self._name = name
        self._interval = interval
        self._open = open_incidents
        self._last_seq = last_seq
        self._devices = devices
        self._clock = clock
        self._connects = connects
        self._instance = instance
        self.published = 0

    def heartbeat(self) -> wire.Heartbeat:
        incidents = self._open()
        waiting = [i for i in incidents if i.status == Status.FIRING]
        life = [i for i in waiting if i.life_safety]
        oldest: dict[str, Any] | None = None
        if life:
            first = min(life, key=lambda i: i.opened_at)
            oldest = {"id": first.id, "name": first.name, "kind": first.kind,
                      "severity": first.severity.label, "opened_at": first.opened_at,
                      "place": dict(first.place)}
        return wire.Heartbeat(
            "online", self._community, ts=round(self._clock.now(), 3), version=__version__,
            name=self._name, interval=self._interval, last_seq=self._last_seq(),
            open=len(incidents), unacknowledged=len(waiting),
            life_safety_unacknowledged=len(life), oldest_unacknowledged=oldest,
            devices=self._devices, extra={"box": self._instance} if self._instance else {})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sent_on = -1  # the connection (its number) the last heartbeat went out on
        due = 0.0
        while True:
            await self._client.wait_connected()
            connection = self._connects()
            if connection != sent_on or loop.time() >= due:
                # Not awaited for its PUBACK: a slow broker must not stretch the interval.
                future = self._client.start_publish(self._topic, self.heartbeat().payload(),
                                                    qos=1, retain=True)
                future.add_done_callback(_quiet)
                self.published += 1
                sent_on = connection
                due = loop.time() + self._interval
            await asyncio.sleep(min(_CHECK_EVERY, max(0.0, due - loop.time())))

    async def stop(self) -> None:
        """Say `stopped` (retained) before the daemon disconnects: a planned stop is not a
        box gone dark (the will is not sent on a clean disconnect)."""
        if not self._client.connected:
            return
        future = self._client.start_publish(
            self._topic, wire.stopped(self._community, round(self._clock.now(), 3)),
            qos=1, retain=True)
        try:
            async with asyncio.timeout(_STOP_WAIT):
                await future
        except (ConnectionError, TimeoutError) as exc:
            log.warning("heartbeat_stopped_not_sent", error=str(exc))
        else:
            log.info("heartbeat_stopped_sent", topic=self._topic)


def _quiet(future: asyncio.Future[None]) -> None:
    # A heartbeat lost with its connection is replaced by the next one.
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        future.exception()
