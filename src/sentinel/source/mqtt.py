"""MQTT source: paho-mqtt 2.x driven directly by the asyncio event loop.

Why paho and not aiomqtt: a QoS 1 message must be acknowledged to the broker only after its
reading is durably written (at-least-once into storage). aiomqtt 2.x acknowledges on receipt,
and its per-message overhead is 2-3x paho's. paho's manual-ack mode, switched on before
connecting, leaves every PUBACK to us.

One paho client per connection: a message's ack token carries the connection's generation,
so an ack for a message received on a connection that has since dropped is never sent on
the new one (its packet id could name a different message there). The broker redelivers
such messages, and storage deduplicates them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from sentinel.backoff import Backoff
from sentinel.config.model import MqttSettings
from sentinel.source.wire import PUBLISH, PacketReader, ProtocolError, puback, read_publish
from sentinel.types import RawMessage

log = structlog.get_logger("sentinel.source")

# Bytes read from the socket per readable event before other tasks get a turn.
_READ_BURST = 256 * 1024
_RECV_SIZE = 64 * 1024
# Received payloads waiting in memory at most (besides [ingest] queue_max messages): the
# in-flight window times the largest accepted payload could otherwise reach 300 MB.
_QUEUE_MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _AckToken:
    generation: int
    mid: int


class _Transport:
    """The connection's socket as paho sees it: packets we hand over, and an ordered writer.

    The source reads the real socket itself (sentinel.source.wire) and gives paho only the
    packets paho must handle; paho reads those from `recv`. Writes of paho and of our own
    PUBACKs go through one buffer, whole packets at a time, so neither can split the
    other's packet on the wire however the socket accepts them.
    """

    def __init__(self, sock: Any, want_write: Callable[[], None]) -> None:
        self.sock = sock
        self._for_paho = bytearray()
        self._unsent = bytearray()
        self._want_write = want_write
        self._closed_by_peer = False
        self._error: OSError | None = None

    # -- paho's side (it believes this is its socket) --

    def recv(self, size: int) -> bytes:
        if self._for_paho:
            out = bytes(self._for_paho[:size])
            del self._for_paho[:size]
            return out
        if self._error is not None:
            raise self._error
        if self._closed_by_peer:
            return b""
        raise BlockingIOError

    def send(self, data: bytes) -> int:
        self.write(bytes(data))
        return len(data)

    def pending(self) -> int:
        return len(self._for_paho)

    def __getattr__(self, name: str) -> Any:  # fileno, close, setblocking...
        return getattr(self.sock, name)

    # -- the source's side --

    def hand_to_paho(self, packet: bytes) -> None:
        self._for_paho += packet

    @property
    def has_for_paho(self) -> bool:
        return bool(self._for_paho)

    def lost(self, error: OSError | None) -> None:
        """The socket failed (`error`) or the peer closed it (None): paho will see it next."""
        if error is None:
            self._closed_by_peer = True
        else:
            self._error = error

    def write(self, data: bytes) -> None:
        if self._unsent:
            self._unsent += data
            return
        sent = self._send(data)
        if sent < len(data):
            self._unsent += data[sent:]
            self._want_write()

    def flush(self) -> bool:
        """Send what the socket would not take before; True once nothing is left."""
        if self._unsent:
            del self._unsent[:self._send(self._unsent)]
        return not self._unsent

    def _send(self, data: bytes | bytearray) -> int:
        try:
            return int(self.sock.send(data))
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes for us when our connection dies uncleanly."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttConnectError(ConnectionError):
    """The broker could not be reached or refused us; `reason` says why."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"cannot connect to MQTT broker {host}:{port}: {reason}")


class MqttSource:
    """Subscribe to the device topics and deliver raw messages in batches.

    Use as an async context manager, run `run()` as a task, take messages with `batch()`
    and acknowledge them with `ack()` once they are durably stored.
    """

    def __init__(self, settings: MqttSettings, topics: Sequence[str], password: str | None,
                 queue_max: int, clock: Callable[[], float] = time.time,
                 will: Will | None = None) -> None:
        # Receive times come from the daemon's clock, so rules compare like with like.
        self._now = clock
        self._settings = settings
        self._topics = list(topics)
        self._will = will
        # Exact topics whose messages go to a handler of their own instead of the batch
        # queue (the district's commands): they never reach the decoder, and the handler
        # acknowledges them (ack()) once their result is committed.
        self._routes: dict[str, Callable[[RawMessage], None]] = {}
        self._password = password
        self._queue: collections.deque[RawMessage] = collections.deque()
        self._queue_max = queue_max
        self._resume_at = max(1, queue_max // 2)
        self._queued_bytes = 0
        self._has_messages = asyncio.Event()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._client: mqtt.Client | None = None
        self._sock: Any = None
        self._transport: _Transport | None = None
        self._reader = PacketReader()
        self._generation = 0
        self._paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.connects = 0
        # Reconnects that found no session although the client had one (queued messages
        # may be lost; logged as mqtt_session_lost).
        self.sessions_lost = 0
        self.last_error: str | None = None
        self._published: dict[int, asyncio.Future[None]] = {}

    # -- public API -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def pending(self) -> int:
        return len(self._queue)

    def route(self, topic: str, handler: Callable[[RawMessage], None]) -> None:
        """Subscribe to `topic` too and give its messages to `handler` (on the event loop,
        as they are read) instead of batch(). Call before run()."""
        if topic not in self._topics:
            self._topics.append(topic)
        self._routes[topic] = handler

    def wake(self) -> None:
        """Make a waiting batch() return, empty if nothing arrived (used at shutdown)."""
        self._has_messages.set()

    async def batch(self, max_items: int) -> list[RawMessage]:
        """Wait for messages (or wake()); return up to max_items in arrival order."""
        if not self._queue:
            self._has_messages.clear()
            await self._has_messages.wait()
        queue = self._queue
        n = min(max_items, len(queue))
        out = [queue.popleft() for _ in range(n)]
        self._queued_bytes -= sum(len(m.payload) for m in out)
        if self._paused and len(queue) <= self._resume_at \
                and self._queued_bytes <= _QUEUE_MAX_BYTES // 2:
            self._resume_reading()
        return out

    def ack(self, messages: Sequence[RawMessage]) -> int:
        """Acknowledge QoS 1 messages of the current connection; return how many were sent."""
        client, transport = self._client, self._transport
        if client is None or transport is None:
            return 0
        generation = self._generation
        acks: list[bytes] = []
        for msg in messages:
            token = msg.token
            if msg.qos and isinstance(token, _AckToken) and token.generation == generation:
                if msg.qos == 1:
                    acks.append(puback(token.mid))
                else:  # QoS 2 takes paho's PUBREC/PUBREL/PUBCOMP exchange
                    client.ack(token.mid, msg.qos)
        if acks:
            # One write for the batch: a PUBACK per message each in its own send() was a
            # tenth of the daemon's time at 5,000 messages/s.
            transport.write(b"".join(acks))
        return len(acks)

    def start_publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> asyncio.Future[None]:
        """Hand a message to the shared connection now (calls keep their order on the wire).

        The future completes on PUBACK (at once for QoS 0), or fails with ConnectionError
        when there is no connection or it drops first; the caller retries.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        client = self._client
        if client is None or not self.connected:
            future.set_exception(ConnectionError("not connected to the broker"))
            return future
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            future.set_exception(ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}"))
        elif qos == 0:
            future.set_result(None)
        else:
            # PUBACK is read by _on_readable later on this same loop, so registering now is
            # safe; a dropped connection fails every pending future (_client_closed).
            self._published[info.mid] = future
        return future

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        future = self._published.pop(mid, None)
        if future is not None and not future.done():
            if getattr(reason, "is_failure", False):
                future.set_exception(ConnectionError(f"broker refused publish: {reason}"))
            else:
                future.set_result(None)

    async def __aenter__(self) -> MqttSource:
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect cleanly; unacknowledged messages stay queued at the broker."""
        self._closing = True
        client = self._client
        if client is not None and self.connected:
            client.disconnect()
            # Let the DISCONNECT packet leave before the socket goes away.
            transport = self._transport
            for _ in range(20):
                if not client.want_write() and (transport is None or transport.flush()):
                    break
                client.loop_write()
                await asyncio.sleep(0.005)
        self._teardown()

    async def run(self) -> None:
        """Keep a connection up: connect, and reconnect with capped jittered backoff."""
        attempt = 0
        cfg = self._settings
        # Jitter: a fleet of daemons that lost the same broker must not stampede it.
        backoff = Backoff(base=cfg.reconnect.min_delay, cap=cfg.reconnect.max_delay,
                          jitter=0.5)
        while not self._closing:
            try:
                await self._connect_once()
                attempt = 0
                await self._disconnected.wait()
            except MqttConnectError as exc:
                self.last_error = exc.reason
                log.warning("mqtt_connect_failed", host=cfg.host, port=cfg.port,
                            reason=exc.reason, attempt=attempt + 1,
                            check="that the broker runs, and that [mqtt] host, port, TLS "
                                  "and credentials match it; retrying with backoff")
            finally:
                self._teardown()
            if self._closing:
                return
            delay = backoff.delay(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    # -- connection -------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        cfg = self._settings
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            # Must be on before connecting, or queued session messages are acked unseen.
            manual_ack=True,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, self._password)
        if cfg.tls.enabled:
            client.tls_set_context(_tls_context(cfg))
        if self._will is not None:
            will = self._will
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        return client

    async def _connect_once(self) -> None:
        cfg = self._settings
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._generation += 1
        self._connected.clear()
        self._disconnected.clear()
        # Reads the TLS files on every attempt: a certificate put in place (or fixed) while
        # the daemon retries is picked up without a restart.
        client = self._new_client()
        self._client = client
        properties = None
        if cfg.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = cfg.session_expiry
            properties.ReceiveMaximum = cfg.receive_maximum
            # Without a limit the broker forwards messages up to 256 MB, held whole in
            # memory before the decoder refuses them. Far above max_payload_bytes, so what
            # the decoder refuses is still seen (and dead-lettered); the broker drops the rest.
            properties.MaximumPacketSize = cfg.maximum_packet_size
        self._connack: asyncio.Future[tuple[bool, str | None]] = loop.create_future()
        try:
            # connect() resolves, opens TCP and does the TLS handshake: blocking work, so it
            # runs in a thread; no socket callbacks are registered yet, so paho writes the
            # CONNECT packet itself within that call.
            await loop.run_in_executor(None, lambda: client.connect(
                cfg.host, cfg.port, keepalive=cfg.keepalive,
                clean_start=False if cfg.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=properties))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise MqttConnectError(cfg.host, cfg.port, _describe(exc, cfg)) from None
        sock: Any = client.socket()
        if sock is None:
            raise MqttConnectError(cfg.host, cfg.port, "no socket after connect")
        # Alarms are small packets: never let Nagle hold an ack or a publish back.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        # paho keeps the protocol's state machine but reads through our packet splitter and
        # writes through our ordered buffer (see _Transport). paho 2.x keeps its socket in
        # `_sock`; the tests against a real broker cover every packet type it reads.
        transport = _Transport(sock, lambda: loop.add_writer(sock, self._on_writable))
        self._transport = transport
        self._reader = PacketReader()
        client._sock = transport  # type: ignore[assignment]
        client.on_socket_register_write = lambda c, u, s: loop.add_writer(sock, self._on_writable)
        client.on_socket_unregister_write = lambda c, u, s: self._remove_writer(sock)
        client.on_socket_close = lambda c, u, s: self._drop_socket(sock)
        loop.add_reader(sock, self._on_readable)
        if client.want_write():
            loop.add_writer(sock, self._on_writable)
        misc = loop.create_task(self._misc_loop(client), name="mqtt-keepalive")
        try:
            async with asyncio.timeout(max(10.0, cfg.keepalive)):
                session_present, error = await asyncio.shield(self._connack)
        except TimeoutError:
            misc.cancel()
            raise MqttConnectError(cfg.host, cfg.port, "no CONNACK from the broker") from None
        if error is not None:
            misc.cancel()
            raise MqttConnectError(cfg.host, cfg.port, error)
        self._misc_task: asyncio.Task[None] | None = misc
        had_session = self.connects > 0 and _keeps_session(cfg)
        self.connects += 1
        self.last_error = None
        log.info("mqtt_connected", host=cfg.host, port=cfg.port, client_id=cfg.client_id,
                 session_present=session_present, protocol=cfg.protocol)
        if had_session and not session_present:
            self.sessions_lost += 1
            log.warning("mqtt_session_lost", host=cfg.host, port=cfg.port,
                        client_id=cfg.client_id, username=cfg.username,
                        hint="the broker kept no session for this client although it had "
                             "one before this reconnect: messages queued for it meanwhile "
                             "may be lost. Likely another client connected with the same "
                             "client id (or, where the broker uses user names as client "
                             "ids, the same user: e.g. a mosquitto_sub with the daemon's "
                             "credentials), or the broker lost its persistence (restarted "
                             "without persistence, or its session expired)")
        self._subscribe(client, session_present)

    def _subscribe(self, client: mqtt.Client, session_present: bool) -> None:
        cfg = self._settings
        if cfg.protocol == "5":
            # Retained messages only for new subscriptions: a reconnect with a kept session
            # must not replay every retained state.
            options = SubscribeOptions(qos=cfg.qos,
                                       retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
            client.subscribe([(t, options) for t in self._topics])
        elif not session_present:
            client.subscribe([(t, int(cfg.qos)) for t in self._topics])
        elif self._routes:
            # A session kept from before the routed topics were configured lacks them;
            # subscribing to them again sends nothing back (they are never retained).
            client.subscribe([(t, int(cfg.qos)) for t in self._routes])
        else:
            self._connected.set()

    async def _misc_loop(self, client: mqtt.Client) -> None:
        while True:
            await asyncio.sleep(1.0)
            if client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                return

    def _teardown(self) -> None:
        task = getattr(self, "_misc_task", None)
        if task is not None:
            task.cancel()
            self._misc_task = None
        if self._sock is not None:
            self._drop_socket(self._sock)
        self._connected.clear()
        self._client_closed()

    def _client_closed(self) -> None:
        # Messages of a dead connection can no longer be acknowledged on it.
        self._generation += 1
        published, self._published = self._published, {}
        for future in published.values():
            if not future.done():
                future.set_exception(ConnectionError("connection to the broker closed"))

    def _remove_writer(self, sock: Any) -> None:
        transport = self._transport
        if transport is not None and transport.sock is sock and not transport.flush():
            return  # our own PUBACKs still wait for the socket
        if self._loop is not None:
            self._loop.remove_writer(sock)

    def _drop_socket(self, sock: Any) -> None:
        loop = self._loop
        if loop is not None and sock is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock)
            with contextlib.suppress(ValueError, OSError):
                loop.remove_writer(sock)
        if sock is self._sock:
            self._sock = None
            self._transport = None

    # -- socket events ----------------------------------------------------------------

    def _on_readable(self) -> None:
        client, transport = self._client, self._transport
        if client is None or transport is None:
            return
        sock = transport.sock
        taken = 0
        while taken < _READ_BURST and not self._paused:
            try:
                chunk = sock.recv(_RECV_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as exc:
                transport.lost(exc)
                self._paho_reads(client, transport)
                return
            if not chunk:
                transport.lost(None)
                self._paho_reads(client, transport)
                return
            taken += len(chunk)
            self._reader.feed(chunk)
            if not self._take_packets(client, transport):
                return
        else:
            if not self._paused and self._loop is not None:
                # Burst spent with more to read, maybe inside TLS where epoll cannot see it.
                self._loop.call_soon(self._on_readable)
        if self._queue:
            self._has_messages.set()

    def _take_packets(self, client: mqtt.Client, transport: _Transport) -> bool:
        """Queue the PUBLISH packets read so far, give paho the rest; False if the stream
        was not MQTT (the connection is then dropped)."""
        queue = self._queue
        v5 = self._settings.protocol == "5"
        generation = self._generation
        received_at = self._now()  # one clock reading per socket read, not per message
        try:
            for first, packet, body in self._reader.packets():
                publish = read_publish(packet, body, v5) if first >> 4 == PUBLISH else None
                if publish is None:
                    transport.hand_to_paho(packet)
                    self._paho_reads(client, transport)
                    if self._transport is not transport:
                        return False
                    continue
                try:
                    topic = publish.topic.decode()
                except UnicodeDecodeError:
                    topic = publish.topic.decode("utf-8", "replace")
                message = RawMessage(topic, publish.payload, publish.qos, publish.retain,
                                     received_at, _AckToken(generation, publish.mid),
                                     publish.dup, publish.mid)
                routed = self._routes.get(topic) if self._routes else None
                if routed is not None:
                    routed(message)
                    continue
                queue.append(message)
                self._queued_bytes += len(publish.payload)
        except ProtocolError as exc:
            log.error("mqtt_protocol_error", error=str(exc),
                      detail="the broker sent bytes that are not MQTT; reconnecting")
            transport.lost(ConnectionResetError(f"MQTT protocol error: {exc}"))
            self._paho_reads(client, transport)
            return False
        if len(queue) >= self._queue_max or self._queued_bytes >= _QUEUE_MAX_BYTES:
            self._pause_reading()
        return True

    def _paho_reads(self, client: mqtt.Client, transport: _Transport) -> None:
        # loop_read() reads one packet (or notices the loss) per call.
        while True:
            rc = client.loop_read()
            if rc != mqtt.MQTT_ERR_SUCCESS or not transport.has_for_paho:
                return

    def _on_writable(self) -> None:
        transport = self._transport
        if transport is not None and not transport.flush():
            return
        client = self._client
        if client is not None:
            client.loop_write()
            if not client.want_write() and transport is not None:
                self._remove_writer(transport.sock)

    def _pause_reading(self) -> None:
        # Backpressure: stop reading the socket; TCP and the broker then hold further
        # messages instead of our memory. This is the bound that matters: Mosquitto 2.0.11
        # does not keep to Receive Maximum for a resumed session (measured in bench/).
        if not self._paused and self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._paused = True
            log.debug("mqtt_reading_paused", queued=len(self._queue))

    def _resume_reading(self) -> None:
        self._paused = False
        if self._sock is not None and self._loop is not None:
            self._loop.add_reader(self._sock, self._on_readable)
            # Bytes may already sit in paho's or the TLS layer's buffer.
            self._loop.call_soon(self._on_readable)

    # -- paho callbacks (run inside loop_read, on the event loop thread) ---------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_result((False, f"broker refused the connection: {reason}"))
        else:
            self._connack.set_result((bool(flags.session_present), None))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        failed = [str(r) for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            log.error("mqtt_subscribe_refused", topics=self._topics, reasons=failed)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if client is not self._client:
            return
        if not self._connack.done():
            self._connack.set_result((False, f"connection closed before CONNACK: {reason}"))
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._client_closed()
        if was_connected and not self._closing:
            log.warning("mqtt_disconnected", reason=str(reason))
        self._disconnected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = bytes(message._topic).decode("utf-8", "replace")
        # Only what read_publish leaves to paho arrives here (QoS 2, topic aliases).
        raw = RawMessage(topic, bytes(message.payload), message.qos, message.retain,
                         self._now(), _AckToken(self._generation, message.mid),
                         bool(message.dup), message.mid)
        routed = self._routes.get(topic) if self._routes else None
        if routed is not None:
            routed(raw)
            return
        self._queue.append(raw)
        self._queued_bytes += len(message.payload)


def _tls_context(cfg: MqttSettings) -> ssl.SSLContext:
    """The client TLS context: the broker's certificate must chain to [mqtt.tls] ca_file (or,
    without one, to a CA this system trusts) and name [mqtt] host; TLS 1.2 at least.

    A file that cannot be used raises MqttConnectError naming the setting and the file.
    """
    tls = cfg.tls
    try:
        # With a cafile only that CA is trusted (a private CA); the system CAs otherwise.
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise MqttConnectError(cfg.host, cfg.port, _file_problem("ca_file", tls.ca_file, exc)
                               ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file),
                                    str(tls.key_file) if tls.key_file is not None else None)
        except (OSError, ssl.SSLError) as exc:
            what = "cert_file/key_file" if tls.key_file is not None else "cert_file"
            raise MqttConnectError(cfg.host, cfg.port,
                                   _file_problem(what, tls.cert_file, exc)) from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _file_problem(setting: str, path: object, exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        detail = exc.reason or str(exc)
        return (f"cannot use [mqtt.tls] {setting} {path}: {detail} (expected PEM: a CA "
                "certificate for ca_file, a certificate and its private key for "
                "cert_file/key_file)")
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read [mqtt.tls] {setting} {exc.filename or path}: {exc.strerror}"
    return f"cannot use [mqtt.tls] {setting} {path}: {exc}"


# OpenSSL X509_V_ERR_* codes of SSLCertVerificationError.verify_code that need their own hint.
_CERT_NOT_YET_VALID, _CERT_EXPIRED = 9, 10
_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH = 62, 64


def _describe(exc: BaseException, cfg: MqttSettings) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _describe_verify_failure(exc, cfg)
    if isinstance(exc, ConnectionResetError) and cfg.tls.enabled:
        return ("connection reset during the TLS handshake: is this port the broker's TLS "
                "listener (a plain MQTT port resets TLS clients)?")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        hint = "is this port a TLS listener of the broker?"
        if reason in ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING",
                      "RECORD_LAYER_FAILURE"):
            hint = "the port does not speak TLS: is it the broker's TLS listener?"
        elif "CERTIFICATE_REQUIRED" in reason or "UNKNOWN_CA" in reason \
                or "BAD_CERTIFICATE" in reason:
            hint = ("the broker refused our client certificate: check [mqtt.tls] cert_file "
                    "and key_file")
        elif "VERSION" in reason or "PROTOCOL" in reason or "HANDSHAKE_FAILURE" in reason:
            hint = "no TLS version or cipher in common (sentinel needs TLS 1.2 or later)"
        return f"TLS handshake failed ({reason}): {hint}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{exc.__class__.__name__}: {exc}"


def _describe_verify_failure(exc: ssl.SSLCertVerificationError, cfg: MqttSettings) -> str:
    detail = (exc.verify_message or str(exc)).rstrip(".")
    text = f"TLS certificate verify failed: {detail}"
    code = exc.verify_code
    if code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH):
        return (f"{text}; the broker's certificate does not name the host sentinel connects "
                f"to ([mqtt] host = {cfg.host!r}): set host to a name or address in its "
                "subjectAltName, or reissue the certificate with that name "
                "(config/mosquitto/make-certs.sh)")
    if code in (_CERT_NOT_YET_VALID, _CERT_EXPIRED):
        return (f"{text}; check the certificate's validity dates and this machine's clock "
                "(renew with config/mosquitto/make-certs.sh)")
    if cfg.tls.ca_file is not None:
        return (f"{text}; the broker's certificate is not signed by the CA in [mqtt.tls] "
                f"ca_file = {str(cfg.tls.ca_file)!r}: is that the CA that issued it, and is "
                f"{cfg.host}:{cfg.port} the broker you mean?")
    return (f"{text}; the broker's certificate is not signed by a CA this system trusts: set "
            "[mqtt.tls] ca_file to the CA that issued it")


def _keeps_session(cfg: MqttSettings) -> bool:
    """Whether a reconnect of this client should find its session on the broker: MQTT 5
    with a session expiry (clean start off), or 3.1.1 after its first connect (clean start
    on the first connect only)."""
    return cfg.session_expiry > 0 if cfg.protocol == "5" else True
