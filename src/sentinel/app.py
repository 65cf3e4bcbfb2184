"""The only wiring: build every stage from the loaded configuration and run them together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator, Callable, Sequence

import structlog

from sentinel.clock import Clock, SystemClock
from sentinel.config.load import read_secret
from sentinel.control.board import add_board_routes
from sentinel.control.feed import ReadingFeed
from sentinel.control.http import ControlServer
from sentinel.control.links import LinkSigner
from sentinel.control.operations import Operations
from sentinel.control.secrets import control_token, link_key
from sentinel.control.sessions import BoardSessions, StateBook
from sentinel.control.siteplan import SitePlan, WatchPositions
from sentinel.decode import Decoder
from sentinel.district import wire
from sentinel.escalation.service import EscalationService
from sentinel.incidents.publish import IncidentPublisher, box_instance
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore
from sentinel.incidents.windows import Windows
from sentinel.ingest import Ingestor, ReadingListener
from sentinel.loading import Loaded
from sentinel.metrics import DaemonMetrics
from sentinel.notify.sender_process import ProcessSender, start_sender
from sentinel.runtime import Daemon
from sentinel.source import MqttSource
from sentinel.source.mqtt import Will
from sentinel.stamps import ReceiveStamps
from sentinel.store import ReadingSink
from sentinel.store.reserve import DiskGuard, Reserve
from sentinel.store.spool import SpoolingSink
from sentinel.store.sqlite import SqliteReadingStore
from sentinel.systemd import Notifier, pipeline_stuck
from sentinel.types import Severity, Value
from sentinel.uplink import Aggregator, CommandHandler, HeartbeatTask

log = structlog.get_logger("sentinel.app")

_SWITCH_INTERVAL = 0.0005
# On shutdown, how long the spool may keep forwarding to a reachable TSDB.
_FLUSH_GRACE = 5.0
# On shutdown, how long received messages may take to be committed and acknowledged.
_INGEST_GRACE = 10.0



@contextlib.asynccontextmanager
async def _sink(loaded: Loaded, on_event: Callable[[str, dict[str, object]], None]
                ) -> AsyncIterator[ReadingSink]:
    settings = loaded.settings
    if settings.store.backend == "sqlite":
        async with SqliteReadingStore(settings.store.sqlite,
                                      settings.ingest.deadletter_keep_days) as store:
            yield store
        return
    # Imported here: influxdb-client costs 0.2 s of start-up that the embedded store
    # (the default) does not need.
    from sentinel.store.influx import InfluxWriter

    influx = settings.store.influxdb
    token = read_secret(influx.token, influx.token_file, "store.influxdb.token_file")
    tags = {device_id: device.tags() for device_id, device in loaded.inventory.items()}
    async with InfluxWriter(influx, token) as writer, \
            SpoolingSink(settings.store.spool, influx, tags, writer, on_event) as spool:
        yield spool


async def run_daemon(loaded: Loaded, stop: asyncio.Event,
                     listeners: Sequence[ReadingListener] = (),
                     on_ready: Callable[[Daemon], None] | None = None,
                     clock: Clock | None = None) -> Daemon:
    """Run until `stop` is set; then finish received messages, flush and disconnect."""
    settings = loaded.settings
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # The state database and the notification senders run on threads. When the event loop
    # is busy with telemetry, a thread whose commit or HTTP response has arrived waits for
    # the GIL up to the switch interval, at every step: 5 ms by default, the whole budget
    # of an alarm. 0.5 ms bounds that wait (switching costs stay negligible: those threads
    # mostly sleep in I/O).
    sys.setswitchinterval(_SWITCH_INTERVAL)
    decoder = Decoder(loaded.profiles, loaded.inventory, loaded.kinds, settings.ingest)
    topics = settings.mqtt.topics or decoder.topic_filters()
    password = read_secret(settings.mqtt.password, settings.mqtt.password_file,
                           "mqtt.password_file")
    clock = clock or SystemClock()
    pending_system: set[asyncio.Task[None]] = set()

    sender = start_sender(settings.notify, [u for c in loaded.oncall.contact for u in c.channels])
    # Stopped last, also when start-up fails half way (a child process is not left behind).
    async with contextlib.AsyncExitStack() as closing:
        closing.push_async_callback(sender.aclose)
        disk = DiskGuard(Reserve(settings.state_dir, settings.store.reserve_bytes))
        await asyncio.to_thread(disk.reserve.ensure)
        async with StateStore(settings.incidents.path, settings.incidents.synchronous,
                              disk) as state:
            # Silences people add (stored) and maintenance windows from the policy file: the
            # incident stage marks drills with them, escalation asks them at every step.
            windows = Windows(configured=loaded.policies.maintenance_windows(
                loaded.oncall.timezone))
            incidents = IncidentService(loaded.rules, loaded.inventory, state, clock,
                                        settings.rules, settings.incidents.latency, windows)
            await incidents.start()
            # The inventory, profiles and rules live as long as the process: move them out of
            # the collector's way, so full collections stay short (measured: ~70 ms pauses).
            # No collection first: start-up leaves next to no cyclic garbage (29 objects with
            # the example inventory, none with 100,000 devices), and collecting it walked every
            # device (0.2 s with 100,000).
            gc.freeze()

            def raise_system(name: str, active: bool, severity: Severity, **detail: Value) -> None:
                # Called from inside other stages (a store's commit): the incident is committed
                # by a task of its own, not under the caller's feet.
                task = asyncio.get_running_loop().create_task(incidents.system(
                    name, active, severity, **detail))
                pending_system.add(task)
                task.add_done_callback(pending_system.discard)

            def on_store_event(event: str, data: dict[str, object]) -> None:
                # The spool crossing its warning mark is an incident for the operators.
                if event in ("spool_nearly_full", "spool_below_mark"):
                    detail = {k: v for k, v in data.items() if isinstance(v, int | float | str)}
                    raise_system("spool_nearly_full", event == "spool_nearly_full",
                                 Severity.WARNING, **detail)

            # A full state disk: alarms keep the reserve, telemetry is dropped (see ingest).
            disk.on_change = lambda full: raise_system(
                "disk_full", full, Severity.CRITICAL, path=str(settings.state_dir))
            if isinstance(clock, SystemClock):
                # The daemon's clock slews into a step of the system clock instead of jumping;
                # operators should still know that the box's time moved.
                loop = asyncio.get_running_loop()

                def on_step(offset: float) -> None:
                    loop.call_soon_threadsafe(lambda: raise_system(
                        "clock_stepped", offset != 0.0, Severity.WARNING,
                        offset_s=round(offset, 1)))

                clock.on_step = on_step

            signer = LinkSigner(link_key(settings), settings.control.link_ttl)
            escalation = EscalationService(incidents, state, loaded.oncall, loaded.policies, sender,
                                           settings.escalation, settings.notify, clock, signer,
                                           _link_base(loaded))
            await escalation.start()
            # An alarm's first escalation step commits with the alarm itself (one fsync).
            incidents.same_commit = escalation.same_commit
            readings = ReadingFeed(loaded.inventory)
            positions = WatchPositions()  # the site plan's watches
            async with contextlib.AsyncExitStack() as stack:
                sink = await stack.enter_async_context(_sink(loaded, on_store_event))
                source = await stack.enter_async_context(
                    MqttSource(settings.mqtt, topics, password, settings.ingest.queue_max,
                               clock.now, will=_will(loaded)))
                control = None
                if settings.control.enabled:
                    # Links, board sessions and status are judged by the daemon's clock.
                    operations = Operations(loaded, incidents, escalation, state, sink, source,
                                            readings, clock)
                    token = control_token(settings)
                    # Used login links and logouts are kept in the state database: a
                    # restart does not make a used link good again.
                    book = StateBook(state)
                    await book.start()
                    sessions = BoardSessions(
                        link_key(settings), clock=clock, book=book,
                        people=escalation.contacts, sender=sender,
                        public_url=settings.control.public_url,
                        login_delay_max=settings.control.login_delay_max)
                    await sessions.start()
                    control = await stack.enter_async_context(ControlServer(
                        settings.control.host if settings.control.http else None,
                        settings.control.port, token, signer, operations, clock,
                        socket_path=settings.control.socket_path, sessions=sessions,
                        routes=lambda app: add_board_routes(
                            app, sessions, token.encode(), SitePlan.of(
                                loaded.inventory, operations.list_open, positions))))
                if isinstance(sender, ProcessSender):
                    await sender.start()  # before the first message is read
                return await _run(loaded, stop, [*listeners, readings, positions], on_ready,
                                  sink, source, incidents, state, decoder, topics, escalation,
                                  control, disk, clock)


def _link_base(loaded: Loaded) -> str:
    """Where one-tap links point: with a district's public address, at the district, which
    relays them to this box (a phone on the street cannot reach the community's LAN)."""
    settings = loaded.settings
    district = settings.district
    if district.enabled and district.public_url:
        return f"{district.public_url.rstrip('/')}/c/{district.community}"
    return settings.control.base_url


def _will(loaded: Loaded) -> Will | None:
    """The district's sign of this box dying: the broker publishes it when we vanish."""
    settings = loaded.settings
    community = settings.district.community
    if not community:
        return None
    return Will(wire.topic(settings.incidents.topic_prefix, community, wire.HEARTBEAT),
                wire.offline(community), qos=1, retain=True)


def _community_name(loaded: Loaded) -> str:
    """The community's name for people: the one most of the inventory's devices name."""
    counts: dict[str, int] = {}
    for device in loaded.inventory.values():
        if device.community:
            counts[device.community] = counts.get(device.community, 0) + 1
    return max(counts, key=lambda c: counts[c]) if counts else ""


def _uplink(loaded: Loaded, source: MqttSource, incidents: IncidentService,
            state: StateStore, control: ControlServer | None, clock: Clock, instance: str
            ) -> CommandHandler | None:
    """The district's command handler, routed off the one MQTT connection (the box's
    broker makes the client id the user name: a second connection would kick the first)."""
    settings = loaded.settings
    district = settings.district
    if not district.enabled:
        return None
    key = read_secret(district.command_key, district.command_key_file,
                      "district.command_key_file")
    handler = CommandHandler(district.community, key.encode("utf-8") if key else None,
                             settings.incidents.topic_prefix, incidents, state, source,
                             source.ack, clock,
                             control.socket_path if control is not None else None,
                             instance=instance)
    source.route(handler.topic, handler.put)
    return handler


async def _run(loaded: Loaded, stop: asyncio.Event, listeners: Sequence[ReadingListener],
               on_ready: Callable[[Daemon], None] | None, sink: ReadingSink,
               source: MqttSource, incidents: IncidentService, state: StateStore,
               decoder: Decoder, topics: list[str], escalation: EscalationService,
               control: ControlServer | None, disk: DiskGuard, clock: Clock) -> Daemon:
    settings = loaded.settings
    aggregator: Aggregator | None = None
    if settings.district.enabled and settings.district.aggregates:
        # A listener: it sees readings after their commit and ack, never before an alarm.
        aggregator = Aggregator(source, settings.incidents.topic_prefix,
                                settings.district.community, clock)
        listeners = [*listeners, aggregator]
    ingestor = Ingestor(source, decoder, sink, settings.ingest.batch_max, listeners,
                        gate=incidents, disk=disk, ahead=settings.ingest.queue_max,
                        clock=clock, stamps=ReceiveStamps(await sink.receipts()))
    daemon = Daemon(ingestor, source, sink, incidents, escalation, control,
                    started_at=clock.now())
    # The state database's id rides on published events and heartbeats: the district keeps
    # events by seq, which starts again at 1 when this database is replaced.
    instance = await box_instance(state) if settings.district.enabled else ""
    commands = _uplink(loaded, source, incidents, state, control, clock, instance)
    if commands is not None:
        await commands.start()
        daemon.district = commands
    if control is not None:
        # Before the broker connects: /readyz then says what it waits for.
        control.observe(DaemonMetrics(daemon, clock))
    async with asyncio.TaskGroup() as tg:
        source_task = tg.create_task(source.run(), name="mqtt-source")
        sink_task = tg.create_task(sink.run(), name="store")
        ingest_task = tg.create_task(ingestor.run(), name="ingest")
        timers_task = tg.create_task(incidents.run(), name="incident-timers")
        escalation_task = tg.create_task(escalation.run(), name="escalation")
        publish_task = None
        publisher: IncidentPublisher | None = None
        if settings.incidents.publish:
            publisher = IncidentPublisher(incidents, state, source,
                                          settings.incidents.topic_prefix, clock,
                                          community=settings.district.community,
                                          instance=instance)
            publish_task = tg.create_task(publisher.run(), name="incident-publish")
        heartbeat: HeartbeatTask | None = None
        uplink_tasks: list[asyncio.Task[None]] = []
        if commands is not None:
            published = publisher
            heartbeat = HeartbeatTask(
                source, settings.incidents.topic_prefix, settings.district.community,
                _community_name(loaded), settings.district.heartbeat_interval,
                incidents.open_incidents,
                lambda: published.last_seq if published is not None else 0,
                len(loaded.inventory), clock, connects=lambda: source.connects,
                instance=instance)
            uplink_tasks = [tg.create_task(heartbeat.run(), name="district-heartbeat"),
                            tg.create_task(commands.run(), name="district-commands")]
        if aggregator is not None:
            uplink_tasks.append(tg.create_task(aggregator.run(), name="district-aggregates"))
        # systemd (Type=notify): READY once the broker is connected, WATCHDOG=1 while the
        # pipeline makes progress (see sentinel.systemd.pipeline_stuck), STOPPING at stop.
        notifier = Notifier.from_environ()
        stages = [t for t in (source_task, sink_task, ingest_task, timers_task,
                              escalation_task, publish_task) if t is not None]
        watchdog_task = tg.create_task(notifier.run(
            lambda: pipeline_stuck(daemon, stages, notifier.stuck_after)), name="watchdog")

        async def announce_ready() -> None:
            await source.wait_connected()
            log.info("daemon_ready", devices=len(loaded.inventory), topics=topics,
                     store=settings.store.backend, state_dir=str(settings.state_dir),
                     control=control.url if control is not None and control.host else None,
                     socket=str(control.socket_path) if control is not None else None,
                     contacts=len(loaded.oncall.contact))
            notifier.ready(f"running: {len(loaded.inventory)} devices")
            if on_ready is not None:
                on_ready(daemon)

        ready_task = tg.create_task(announce_ready(), name="ready")
        await stop.wait()
        log.info("daemon_stopping", pending=source.pending())
        notifier.stopping()
        ready_task.cancel()
        # Commit and acknowledge what was received, then disconnect: the broker keeps
        # whatever arrives later for our persistent session.
        ingestor.stop()
        # A write that cannot finish (the spool full and the TSDB away) must not keep the
        # daemon from stopping: what it holds is not acknowledged, so the broker keeps it.
        done, _ = await asyncio.wait({ingest_task}, timeout=_INGEST_GRACE)
        if not done:
            log.warning("ingest_stop_timeout", seconds=_INGEST_GRACE, pending=source.pending(),
                        detail="unacknowledged messages stay with the broker")
            ingest_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ingest_task
        timers_task.cancel()
        await incidents.close()
        # Deliveries in flight get a moment to finish, so their results are recorded
        # (one not recorded is sent once more after the restart, marked as a repeat).
        await escalation.close()
        escalation_task.cancel()
        if publish_task is not None:
            publish_task.cancel()
        for task in uplink_tasks:
            task.cancel()
        if heartbeat is not None:
            # Before the clean disconnect (which sends no will): the district sees a
            # planned stop, not a box gone dark.
            await heartbeat.stop()
        source_task.cancel()
        await source.close()
        if isinstance(sink, SpoolingSink):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FLUSH_GRACE):
                    await sink.flush()
        sink_task.cancel()
        watchdog_task.cancel()
    log.info("daemon_stopped", received=ingestor.stats.received,
             stored=ingestor.stats.stored, rejected=ingestor.stats.rejected_total)
    return daemon
