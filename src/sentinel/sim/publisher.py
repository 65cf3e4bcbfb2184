"""Publish simulated telemetry of a whole inventory to an MQTT broker.

Every device speaks its own profile's format (`sentinel.decode.encode`). Three pacings:

* natural (default): each device reports at its kind's interval (shorter while an injected
  event lasts), on a simulated clock running `speed` times faster than the wall clock;
* `rate`: a fixed number of readings per second across the fleet, round-robin;
* `burst`: round-robin with no pacing at all, as fast as the broker acknowledges.

Readings are stamped with the wall-clock time they are sent (whole milliseconds, strictly
increasing per device), so a time-compressed run is still accepted by the daemon. With
QoS 1, `run_simulation` returns only once the broker acknowledged every message.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from sentinel.config.inventory import Device
from sentinel.config.profiles import ProfileSpec
from sentinel.decode.encode import encode
from sentinel.errors import SentinelError
from sentinel.loading import Loaded
from sentinel.sim.model import DeviceModel, FleetModel, SimEvent, parse_inject, resolve_injections

__all__ = [
    "SimOptions",
    "SimProgress",
    "SimResult",
    "SimulationError",
    "parse_inject",
    "run_simulation",
]

# Publishes not yet acknowledged before `run_simulation` waits (until half are). paho scans
# every pending message on each PUBACK, so a larger window costs CPU without adding
# throughput on a LAN.
PUBLISH_WINDOW = 256
# paho's own limits; the window above keeps us below both.
MAX_INFLIGHT = 1000
MAX_QUEUED = 2000
# Read acknowledgements after this many publishes (and whenever waiting).
SERVICE_EVERY = 32
# Longest single wait, so `stop`, progress and the duration are noticed promptly.
IDLE_SLICE = 0.25
CONNECT_TIMEOUT = 10.0
# Give up when the broker acknowledges nothing for this long while we wait for it.
STALL_TIMEOUT = 30.0
PROGRESS_EVERY = 1.0
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)


class SimulationError(SentinelError):
    """The simulation could not run or complete (broker unreachable, refused, stalled)."""


@dataclass
class SimOptions:
    """How to run a simulation (see the module docstring for the pacings)."""

    host: str = "127.0.0.1"
    port: int = 1883
    qos: int = 1
    # Time compression of the natural schedule: at 3600 an hourly heartbeat comes every second.
    speed: float = 1.0
    # Fixed total readings per second across the fleet (round-robin); overrides intervals.
    rate: float | None = None
    # Stop after this many seconds of wall time.
    duration: float | None = None
    # Stop after exactly this many readings (a reading is one encode() call: 1+ messages).
    count: int | None = None
    # No pacing at all: round-robin as fast as possible (backlog and throughput tests).
    burst: bool = False
    # (event, device id | "random" | "kind:KIND" | "building:COMPOUND/BUILDING" | ...,
    #  seconds of wall time after the start).
    inject: list[tuple[str, str, float]] = field(default_factory=list)
    seed: int = 0
    client_id: str | None = None  # default: sentinel-sim-<pid>
    username: str | None = None
    password: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    # Append one JSON line per reading: {"device_id", "ts_ms" (null: no timestamp), "kind"}.
    ledger_path: Path | None = None
    keepalive: int = 30

    def validate(self) -> None:
        """Raise ValueError for options that cannot work."""
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {self.qos}")
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError(f"speed must be a positive number, not {self.speed}")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of readings/s, not {self.rate}")
        if self.duration is not None and not self.duration >= 0:
            raise ValueError(f"duration must be 0 or more seconds, not {self.duration}")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must be 0 or more, not {self.count}")
        if self.protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', not {self.protocol!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1..65535, not {self.port}")


@dataclass(frozen=True, slots=True)
class SimProgress:
    """Reported about once a second while publishing (and while waiting for acks)."""

    readings: int
    messages: int
    acked: int  # messages the broker acknowledged (QoS 0: handed to the socket)
    elapsed: float  # wall seconds since the start
    rate: float  # readings/s since the previous report
    sim_time: float  # the simulated clock, epoch seconds


@dataclass
class SimResult:
    """What a simulation published."""

    readings: int
    messages: int
    by_kind: dict[str, int]
    events: list[SimEvent]
    elapsed: float
    # Messages the broker refused (PUBACK reason code >= 0x80, MQTT 5 only).
    refused: int = 0

    @property
    def rate(self) -> float:
        """Readings per second of wall time, acknowledgements included."""
        return self.readings / self.elapsed if self.elapsed > 0 else 0.0


class _Acks:
    """Counts what paho reports through its callbacks."""

    def __init__(self) -> None:
        self.sent = 0
        self.lost = 0  # QoS 0 messages paho dropped while disconnected (never acknowledged)
        self.done = 0
        self.refused = 0
        self.connected = False
        self.connect_error: str | None = None
        self.corked = False

    @property
    def pending(self) -> int:
        return self.sent - self.lost - self.done

    def on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                   reason_code: ReasonCode, properties: Any) -> None:
        if reason_code.is_failure:
            self.refused += 1
        self.done += 1

    def on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                   reason_code: ReasonCode, properties: Any) -> None:
        if reason_code.is_failure:
            self.connect_error = str(reason_code)
            return
        self.connected = True
        sock: Any = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.corked = False

    def on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                      reason_code: ReasonCode, properties: Any) -> None:
        self.connected = False


class _Link:
    """The MQTT connection, driven from the publishing thread.

    paho's network thread (`loop_start`) costs about twice the CPU per QoS 1 message of
    driving paho's documented `loop_read`/`loop_write`/`loop_misc` ourselves: every publish
    wakes the thread, and the two threads hand the GIL back and forth per message. Here a
    publish writes to the socket at once, acknowledgements are read between publishes and
    while waiting, and a lost connection is re-established (paho resends unacknowledged
    QoS 1 messages).

    paho sends every packet with its own send(); with TCP_NODELAY each would become its own
    TCP segment. Between two `service` calls the socket is corked (Linux TCP_CORK), so a
    burst of publishes leaves in full segments; `service` uncorks before it waits.
    """

    def __init__(self, options: SimOptions, stop: threading.Event | None = None) -> None:
        self.options = options
        self.stop = stop
        self.where = f"{options.host}:{options.port}"
        self.acks = _Acks()
        v5 = options.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=options.client_id or f"sentinel-sim-{os.getpid()}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
        )
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(MAX_QUEUED)
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        client.on_connect = self.acks.on_connect
        client.on_publish = self.acks.on_publish
        client.on_disconnect = self.acks.on_disconnect
        self.client = client

    def open(self) -> None:
        """Connect and wait for the CONNACK; SimulationError if impossible."""
        options = self.options
        try:
            if options.protocol == "5":
                self.client.connect(options.host, options.port, options.keepalive,
                                    clean_start=True)
            else:
                self.client.connect(options.host, options.port, options.keepalive)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise SimulationError(f"cannot connect to the MQTT broker at {self.where}: "
                                  f"{reason}; check that the broker is running, [mqtt] "
                                  "host/port (or --host/--port), and any firewall between"
                                  ) from None
        if not self._await_connack():
            raise SimulationError(f"the MQTT broker at {self.where} sent no CONNACK "
                                  f"within {CONNECT_TIMEOUT:g} s")

    def _await_connack(self) -> bool:
        """Pump the connection until CONNACK; False if it drops or does not come in time."""
        acks = self.acks
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while not acks.connected:
            if acks.connect_error is not None:
                raise SimulationError(f"the MQTT broker at {self.where} refused the "
                                      f"connection: {acks.connect_error}")
            if time.monotonic() >= deadline or not self._pump(0.05):
                return False
        return True

    def cork(self) -> None:
        """Hold small writes back until the next `service` (no-op where unsupported)."""
        if _TCP_CORK is None or self.acks.corked:
            return
        sock: Any = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
                self.acks.corked = True

    def _uncork(self, sock: Any) -> None:
        self.acks.corked = False
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 0)

    def _pump(self, timeout: float) -> bool:
        """One round of network I/O, waiting up to `timeout` s; False if disconnected."""
        client = self.client
        sock: Any = client.socket()
        if sock is None:
            return False
        if self.acks.corked:
            self._uncork(sock)
        if timeout > 0:
            # A socket closed under us raises here; loop_read then reports it.
            with contextlib.suppress(OSError, ValueError):
                select.select([sock], [sock] if client.want_write() else [], [], timeout)
        rc = client.loop_read()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.want_write():
            rc = client.loop_write()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        return rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def service(self, timeout: float) -> None:
        """Read acknowledgements, finish writes and send pings, waiting up to `timeout` s;
        re-establish the connection if it was lost."""
        if not self._pump(timeout):
            self._reconnect()

    def _reconnect(self) -> None:
        lost = time.monotonic()
        delay = 0.5
        while True:
            if self.stop is not None and self.stop.is_set():
                raise SimulationError(f"lost the connection to the MQTT broker at {self.where}"
                                      f"; stopped with {self.acks.pending} message(s) "
                                      "unconfirmed")
            if time.monotonic() - lost > STALL_TIMEOUT:
                raise SimulationError(f"lost the connection to the MQTT broker at {self.where}"
                                      f" and could not re-establish it in {STALL_TIMEOUT:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            self.acks.connected = False
            try:
                self.client.reconnect()
            except OSError:
                continue
            if self._await_connack():
                return

    def close(self) -> None:
        sock: Any = self.client.socket()
        if sock is not None and self.acks.corked:
            self._uncork(sock)
        with contextlib.suppress(Exception):
            self.client.disconnect()
            self.client.loop_write()
        with contextlib.suppress(Exception):
            sock = self.client.socket()
            if sock is not None:
                sock.close()


@dataclass(frozen=True, slots=True)
class _Route:
    profile: ProfileSpec
    carries_ts: bool


class _Run:
    """One simulation run: the fleet, the link and the counters."""

    def __init__(self, loaded: Loaded, options: SimOptions, stop: threading.Event | None,
                 progress: Callable[[SimProgress], None] | None) -> None:
        self.options = options
        self.kinds = loaded.kinds
        self.stop = stop
        self.progress = progress
        self.wall0 = time.time()
        self.mono0 = time.monotonic()
        self.speed = options.speed
        self.fleet = FleetModel(loaded.inventory, loaded.kinds, loaded.profiles,
                                seed=options.seed, start=self.wall0)
        self.events = resolve_injections(options.inject, loaded.inventory, options.seed)
        for ev in self.events:
            self.fleet.inject(ev.event, ev.device_id, self.sim_at(ev.offset))
        self.routes: dict[str, _Route] = {}
        for device in loaded.inventory.values():
            profile = loaded.profiles[device.profile]
            carries_ts = profile.format == "json" and profile.timestamp is not None
            self.routes[device.id] = _Route(profile, carries_ts)
        self.readings = 0
        self.messages = 0
        self.by_kind: dict[str, int] = {}
        self.link = _Link(options, stop)
        self.acks = self.link.acks
        self.ledger: IO[bytes] | None = None
        self.next_progress = self.mono0 + PROGRESS_EVERY
        self.last_progress = (self.mono0, 0)
        self.deadline = (math.inf if options.duration is None
                         else self.mono0 + options.duration)
        self.limit = math.inf if options.count is None else options.count

    # -- clocks ---------------------------------------------------------------------------
    def sim_at(self, offset: float) -> float:
        """Simulated time `offset` wall seconds after the start."""
        return self.wall0 + offset * self.speed

    def sim_now(self) -> float:
        return self.wall0 + (time.monotonic() - self.mono0) * self.speed

    # -- publishing -----------------------------------------------------------------------
    def emit(self, model: DeviceModel, t: float) -> bool:
        """Publish the reading of `model` at simulated time `t`; False if it is offline."""
        sample = model.sample(t, time.time())
        if sample is None:
            return False
        device: Device = sample.device
        route = self.routes[device.id]
        msgs = encode(route.profile, device, sample.values, sample.ts, self.kinds)
        if not msgs:
            return False
        for topic, payload in msgs:
            self.publish(topic, payload)
        self.readings += 1
        kind = device.kind
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if self.ledger is not None:
            self.ledger.write(orjson.dumps({
                "device_id": device.id,
                "ts_ms": sample.ts_ms if route.carries_ts else None,
                "kind": kind,
            }) + b"\n")
        return True

    def publish(self, topic: str, payload: bytes) -> None:
        acks = self.acks
        qos = self.options.qos
        while True:
            if acks.pending >= PUBLISH_WINDOW:
                self._wait_acks(PUBLISH_WINDOW // 2)
            elif acks.sent % SERVICE_EVERY == 0:
                self.link.service(0.0)
            self.link.cork()
            info = self.link.client.publish(topic, payload, qos)
            rc = info.rc
            if rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                self._wait_acks(1)  # paho's queue is full; cannot happen below the window
                continue
            acks.sent += 1
            self.messages += 1
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and qos == 0:
                acks.lost += 1  # QoS 0 while disconnected: gone (QoS 1 waits for reconnect)
            return

    def _wait_acks(self, limit: int) -> None:
        """Wait until fewer than `limit` messages are pending; fail if the broker stalls."""
        acks = self.acks
        last_done, since = acks.done, time.monotonic()
        while acks.pending >= limit:
            self.link.service(0.05)
            now = time.monotonic()
            if now >= self.next_progress:
                self.report(now)
            if acks.done != last_done:
                last_done, since = acks.done, now
            elif now - since > STALL_TIMEOUT:
                raise SimulationError(
                    f"the broker acknowledged nothing for {STALL_TIMEOUT:g} s; "
                    f"{acks.pending} message(s) unconfirmed")

    def report(self, now: float) -> None:
        self.next_progress = now + PROGRESS_EVERY
        if self.progress is None:
            return
        then, readings_then = self.last_progress
        rate = (self.readings - readings_then) / (now - then) if now > then else 0.0
        self.last_progress = (now, self.readings)
        self.progress(SimProgress(self.readings, self.messages, self.acks.done,
                                  now - self.mono0, rate, self.sim_now()))

    # -- loops ----------------------------------------------------------------------------
    def _stopping(self, now: float) -> bool:
        return (self.readings >= self.limit or now >= self.deadline
                or (self.stop is not None and self.stop.is_set()))

    def _idle(self, seconds: float) -> None:
        """Wait (serving the connection) for up to `seconds`."""
        self.link.service(max(0.0, seconds))

    def run_schedule(self) -> None:
        """Natural intervals on the simulated clock."""
        fleet = self.fleet
        speed = self.speed
        while True:
            now = time.monotonic()
            if self._stopping(now):
                return
            if now >= self.next_progress:
                self.report(now)
            sim = self.wall0 + (now - self.mono0) * speed
            item = fleet.pop_due(sim)
            if item is None:
                due = fleet.next_due()
                if due == math.inf:
                    return  # every device went offline
                wait = min((due - sim) / speed, self.next_progress - now, self.deadline - now)
                self._idle(min(wait, IDLE_SLICE))
                continue
            self.emit(item[1], item[0])

    def run_round_robin(self) -> None:
        """A fixed rate, or no pacing at all (burst), over the devices in turn."""
        order = self.fleet.order
        rate = None if self.options.burst else self.options.rate
        speed = self.speed
        wall0, mono0 = self.wall0, self.mono0
        i = 0
        idle = 0  # devices in a row that did not publish (offline)
        while True:
            now = time.monotonic()
            if self._stopping(now):
                return
            if now >= self.next_progress:
                self.report(now)
            if rate is not None:
                ahead = mono0 + self.readings / rate - now
                if ahead > 0.001:
                    self._idle(min(ahead, self.next_progress - now, IDLE_SLICE))
                    continue
            model = order[i]
            i = i + 1 if i + 1 < len(order) else 0
            if self.emit(model, wall0 + (now - mono0) * speed):
                idle = 0
            else:
                idle += 1
                if idle >= len(order):
                    return  # every device is offline

    def drain(self) -> None:
        """Wait until the broker has acknowledged every message."""
        self._wait_acks(1)


def run_simulation(loaded: Loaded, options: SimOptions, stop: threading.Event | None = None,
                   progress: Callable[[SimProgress], None] | None = None) -> SimResult:
    """Publish simulated telemetry of `loaded.inventory` until count, duration or `stop`.

    Synchronous: returns when done, after the broker acknowledged everything (QoS >= 1).
    Raises ValueError for bad options or injections (before connecting) and
    SimulationError when the broker cannot be reached, refuses us or stops acknowledging.
    """
    options.validate()
    run = _Run(loaded, options, stop, progress)
    run.link.open()
    try:
        if options.ledger_path is not None:
            run.ledger = options.ledger_path.open("ab")
        if options.burst or options.rate is not None:
            run.run_round_robin()
        else:
            run.run_schedule()
        run.drain()
    finally:
        if run.ledger is not None:
            run.ledger.close()
        run.link.close()
    elapsed = time.monotonic() - run.mono0
    if progress is not None:
        run.report(time.monotonic())
    return SimResult(run.readings, run.messages, dict(run.by_kind), list(run.events),
                     elapsed, run.acks.refused)
