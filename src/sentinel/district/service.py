"""`sentinel district`: the street office's daemon, the box's stages composed another way.

What a box does with readings (source -> decode -> rules -> incidents -> escalation ->
notify), the district does with its boxes' streams:

  source      MqttSource on the district broker (persistent session, manual acks)
  mirror      sentinel.district.mirror: commit every box's events, incident states,
              heartbeats to mirror.sqlite3, then acknowledge
  watch       sentinel.district.watch: reach; the district's own incidents
              (box_offline, whistle) through IncidentService.raised
  escalation  EscalationService + outbox + apprise with the street office's own on-call
              and policy files, on the district's own incidents.sqlite3
  control     the standard ControlServer (API, links to the district's own incidents,
              board sessions) with the district board and the link relay mounted on it
              (sentinel.district.board, through `routes=`)

Life-safety alarms never pass through here: a box decides and pages locally, always.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from sentinel import zone
from sentinel.clock import Clock, SystemClock
from sentinel.config.inventory import Inventory
from sentinel.config.load import read_secret
from sentinel.control.feed import ReadingFeed
from sentinel.control.http import ControlServer
from sentinel.control.links import LinkSigner
from sentinel.control.operations import Operations
from sentinel.control.secrets import control_token, link_key
from sentinel.control.sessions import BoardSessions, StateBook
from sentinel.district import wire
from sentinel.district.board import add_district_routes
from sentinel.district.commands import CommandChannel
from sentinel.district.config import (
    DistrictConfig,
    command_keys,
    key_file_warnings,
    load_district_settings,
)
from sentinel.district.mirror import Mirror, ReplyHandler, Resync, mirror_db
from sentinel.district.view import CommandSender, DistrictView
from sentinel.district.watch import (
    BOX_OFFLINE,
    DISTRICT_INCIDENTS,
    ID_PREFIX,
    WHISTLE,
    Watch,
    WhistleAcks,
)
from sentinel.errors import ConfigError, Problem
from sentinel.escalation.service import EscalationService
from sentinel.i18n import Label, configure_labels
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore
from sentinel.incidents.windows import Windows
from sentinel.kinds import BUILTIN_KINDS, KindRegistry
from sentinel.loading import Loaded, load_escalation
from sentinel.notify.sender_process import ProcessSender, start_sender
from sentinel.rules.model import RulesConfig
from sentinel.source import MqttSource
from sentinel.store.reserve import DiskGuard, Reserve
from sentinel.store.sqlite import SqliteReadingStore
from sentinel.systemd import Notifier

log = structlog.get_logger("sentinel.district")

MIRROR_FILE = "mirror.sqlite3"
# A resync is worth little after a minute: the next check asks again.
RESYNC_TTL = 60.0
RESYNC_WAIT = 10.0
_SWITCH_INTERVAL = 0.0005
_LABELS = {
    f"incident.{BOX_OFFLINE}": Label(zh="社区主机离线", en="community box offline"),
    f"incident.{WHISTLE}": Label(zh="吹哨: 生命安全告警无人确认", en="whistle: life-safety "
                                                                 "alarm unacknowledged"),
    "kind.district": Label(zh="街道", en="district"),
    "kind.whistle": Label(zh="吹哨", en="whistle"),
}


# -- loading --------------------------------------------------------------------------------


def load_district(path: Path, environ: Mapping[str, str] | None = None) -> Loaded:
    """district.toml and the street office's on-call and policy files, checked together
    like the box's (sentinel.loading); ConfigError lists every problem."""
    settings = load_district_settings(path, environ)
    zone.configure(settings.timezone)
    # The district's store holds no readings: its database is the mirror, whose dead
    # letters GET /api/deadletters reads like a box's.
    settings.store.sqlite.path = settings.state_dir / MIRROR_FILE
    problems: list[Problem] = []
    warnings: list[Problem] = []
    inventory = Inventory()
    oncall, policies = load_escalation(settings, inventory, RulesConfig(), problems,
                                        warnings)
    # The box's loader knows its rules' incidents; the district raises its own.
    ours = {f"no rule raises incident {name!r}" for name in DISTRICT_INCIDENTS}
    problems = [p for p in problems if p.reason not in ours]
    if not settings.community:
        problems.append(Problem(str(path), "community", "no [[community]]: name the boxes "
                                                          "this district oversees"))
    # Key files others can read: a key lets anyone who has it command that box.
    warnings += key_file_warnings(settings)
    try:
        command_keys(settings, environ)
    except ConfigError as exc:
        problems += [Problem(str(path), p.entry, p.reason) for p in exc.problems]
    if problems:
        raise ConfigError(problems)
    configure_labels(_LABELS)
    return Loaded(settings, KindRegistry(BUILTIN_KINDS), inventory, {}, path, RulesConfig(),
                  oncall, policies, warnings)


def district_settings(loaded: Loaded) -> DistrictConfig:
    if not isinstance(loaded.settings, DistrictConfig):
        raise TypeError("not a district configuration (load it with load_district)")
    return loaded.settings


# -- the command channel and the board (helper C's modules) --------------------------------


@dataclass(frozen=True, slots=True)
class Wiring:
    """What the daemon takes from the command channel and the board."""

    commands: CommandSender | None
    on_reply: ReplyHandler | None
    resync: Resync
    routes: Callable[[web.Application], None] | None


Publish = Callable[..., "asyncio.Future[None]"]
# How long the district waits for a box's answer to a whistle's acknowledgement.
WHISTLE_ACK_WAIT = 10.0
_ACK_TTL = wire.ACT_TTL


def wire_district(publish: Publish, prefix: str, keys: Mapping[str, bytes], clock: Clock,
                  view: DistrictView, sessions: BoardSessions | None, api_token: bytes,
                  own: Operations | None, people: Mapping[str, str] | None = None) -> Wiring:
    """The command channel (resyncs, the board's acts, the link relay) and the board's
    routes on the district's control server. `sessions` None: no HTTP board."""
    channel = CommandChannel(publish, prefix, keys, clock)

    async def resync(community: str, after: int) -> None:
        await channel.send(community, "resync", {"after": after}, RESYNC_TTL, RESYNC_WAIT)

    routes = None
    if sessions is not None:
        def routes(app: web.Application) -> None:
            add_district_routes(app, view, channel, sessions, api_token, own=own, clock=clock,
                                people=people)

    return Wiring(channel, channel.on_reply, resync, routes)


# -- metrics --------------------------------------------------------------------------------


class _Observer:
    """/readyz and /metrics of the district daemon."""

    def __init__(self, source: MqttSource, mirror: Mirror, watch: Watch,
                 commands: CommandSender | None = None) -> None:
        self._source = source
        self._mirror = mirror
        self._watch = watch
        self._commands = commands

    def readiness(self) -> tuple[bool, dict[str, object]]:
        ok = self._source.connected
        return ok, {"broker": {"ok": ok, "detail": "connected" if ok else
                               (self._source.last_error or "connecting")}}

    def render(self) -> tuple[bytes, str]:
        stats = self._mirror.stats
        lines = []
        for name in ("messages", "events", "duplicates", "incidents", "heartbeats", "dead",
                     "unknown_community", "resyncs", "lost", "aggregates_dropped"):
            lines.append(f"# TYPE sentinel_district_{name}_total counter")
            lines.append(f"sentinel_district_{name}_total {getattr(stats, name)}")
        lines.append("# TYPE sentinel_district_community_online gauge")
        lines.append("# TYPE sentinel_district_community_missing_events gauge")
        for record in self._mirror.records.values():
            online = 1 if record.reach == "online" else 0
            lines.append(f'sentinel_district_community_online{{community="{record.id}"}} '
                         f"{online}")
            lines.append(f'sentinel_district_community_missing_events{{community='
                         f'"{record.id}"}} {record.missing}')
        if isinstance(self._commands, CommandChannel):
            # Commands by outcome, and communities whose box refuses the district's key.
            lines += self._commands.metrics_lines()
        return ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4"


# -- the daemon -----------------------------------------------------------------------------


@dataclass(slots=True)
class District:
    """The running district daemon's parts (for tests and the metrics)."""

    source: MqttSource
    mirror: Mirror
    watch: Watch
    incidents: IncidentService
    escalation: EscalationService
    control: ControlServer | None
    wiring: Wiring
    acks: WhistleAcks | None = None


async def run_district(loaded: Loaded, stop: asyncio.Event,
                       on_ready: Callable[[District], None] | None = None,
                       clock: Clock | None = None,
                       wire: Callable[..., Wiring] | None = None) -> District:
    """Run until `stop` is set; then let the current batch commit and disconnect."""
    settings = district_settings(loaded)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    sys.setswitchinterval(_SWITCH_INTERVAL)  # as the box: see sentinel.app
    clock = clock or SystemClock()
    password = read_secret(settings.mqtt.password, settings.mqtt.password_file,
                           "mqtt.password_file")
    keys = command_keys(settings)
    communities = settings.communities()
    prefix = settings.incidents.topic_prefix
    options = settings.district
    sender = start_sender(settings.notify, [u for c in loaded.oncall.contact for u in c.channels])
    async with contextlib.AsyncExitStack() as closing:
        closing.push_async_callback(sender.aclose)
        disk = DiskGuard(Reserve(settings.state_dir, settings.store.reserve_bytes))
        await asyncio.to_thread(disk.reserve.ensure)
        state = await closing.enter_async_context(StateStore(
            settings.incidents.path, settings.incidents.synchronous, disk))
        windows = Windows(configured=loaded.policies.maintenance_windows(
            loaded.oncall.timezone))
        incidents = IncidentService(loaded.rules, loaded.inventory, state, clock,
                                    settings.rules, settings.incidents.latency, windows,
                                    id_prefix=ID_PREFIX)
        await incidents.start()
        signer = LinkSigner(link_key(settings), settings.control.link_ttl)
        escalation = EscalationService(incidents, state, loaded.oncall, loaded.policies,
                                       sender, settings.escalation, settings.notify, clock,
                                       signer, settings.control.base_url)
        await escalation.start()
        incidents.same_commit = escalation.same_commit
        db = mirror_db(settings.store.sqlite.path)
        await db.open()
        closing.push_async_callback(db.close)
        mirror = Mirror(db, communities, prefix, clock, resync_after=options.resync_after,
                        resync_interval=options.resync_interval, batch_max=options.batch_max,
                        aggregates=_tsdb(settings))
        await mirror.start()
        # Dead letters' retention and the store's health, like the box's embedded store.
        sink = await closing.enter_async_context(SqliteReadingStore(
            settings.store.sqlite, settings.ingest.deadletter_keep_days))
        source = await closing.enter_async_context(MqttSource(
            settings.mqtt, mirror.topics(), password, options.queue_max, clock.now))
        watch = Watch(mirror, incidents, communities, clock, options.offline_after,
                      options.check_interval, options.keep_days, options.offline_grace,
                      state, settings.language)
        mirror.on_commit = watch.on_commit
        control: ControlServer | None = None
        sessions: BoardSessions | None = None
        operations: Operations | None = None
        token = ""
        if settings.control.enabled:
            token = control_token(settings)
            # Used login links and logouts are kept in the state database, as on a box.
            book = StateBook(state)
            await book.start()
            sessions = BoardSessions(
                link_key(settings), clock=clock, book=book, people=escalation.contacts,
                sender=sender, public_url=settings.control.public_url,
                login_delay_max=settings.control.login_delay_max)
            await sessions.start()
            # The district's own incidents: the API, links and the board act on them.
            operations = Operations(loaded, incidents, escalation, state, sink, source,
                                    ReadingFeed(loaded.inventory), clock)
        wiring = (wire or wire_district)(
            source.start_publish, prefix, keys, clock, mirror, sessions, token.encode(),
            operations, {c.id: c.name for c in escalation.contacts.values()})
        mirror.resync, mirror.on_reply = wiring.resync, wiring.on_reply
        acks: WhistleAcks | None = None
        channel = wiring.commands
        if channel is not None:
            commands = channel

            def send_ack(community: str, type_: str, fields: Mapping[str, Any],
                         command_id: str) -> Any:
                return commands.send(community, "note" if type_ == "note" else "ack", fields,
                                     _ACK_TTL, WHISTLE_ACK_WAIT, command_id=command_id)
            people = {c.id: c.name for c in escalation.contacts.values()}
            acks = WhistleAcks(incidents, state, mirror, communities, send_ack, people, clock,
                               settings.language)
        if operations is not None:
            control = await closing.enter_async_context(ControlServer(
                settings.control.host if settings.control.http else None,
                settings.control.port, token, signer, operations, clock,
                socket_path=settings.control.socket_path, sessions=sessions,
                routes=wiring.routes))
        if isinstance(sender, ProcessSender):
            await sender.start()
        district = District(source, mirror, watch, incidents, escalation, control, wiring,
                            acks)
        if control is not None:
            control.observe(_Observer(source, mirror, watch, wiring.commands))
        await _run(settings, district, sink, stop, on_ready, loaded)
        return district


async def _run(settings: DistrictConfig, district: District, sink: SqliteReadingStore,
               stop: asyncio.Event, on_ready: Callable[[District], None] | None,
               loaded: Loaded) -> None:
    source, mirror, watch = district.source, district.mirror, district.watch
    incidents, escalation = district.incidents, district.escalation
    async with asyncio.TaskGroup() as tg:
        source_task = tg.create_task(source.run(), name="mqtt-source")
        sink_task = tg.create_task(sink.run(), name="store")
        followers = [tg.create_task(mirror.run(source), name="mirror"),
                     tg.create_task(watch.run(), name="watch"),
                     tg.create_task(incidents.run(), name="incident-timers")]
        if district.acks is not None:
            followers.append(tg.create_task(district.acks.run(), name="whistle-acks"))
        if _tsdb(settings):
            followers.append(tg.create_task(_forward_aggregates(settings, mirror),
                                            name="aggregates"))
        escalation_task = tg.create_task(escalation.run(), name="escalation")
        # systemd (Type=notify): READY once the broker is connected; the watchdog's pings
        # stop if a stage has ended.
        notifier = Notifier.from_environ()
        stages = [source_task, sink_task, escalation_task, *followers]

        def stuck() -> str | None:
            ended = [t.get_name() for t in stages if t.done()]
            return f"stage ended: {', '.join(ended)}" if ended else None

        watchdog_task = tg.create_task(notifier.run(stuck), name="watchdog")

        async def announce_ready() -> None:
            await source.wait_connected()
            control = district.control
            log.info("district_ready", communities=len(mirror.records),
                     state_dir=str(settings.state_dir),
                     control=control.url if control is not None and control.host else None,
                     contacts=len(loaded.oncall.contact))
            notifier.ready(f"running: {len(mirror.records)} communities")
            if on_ready is not None:
                on_ready(district)

        ready = tg.create_task(announce_ready(), name="ready")
        await stop.wait()
        log.info("district_stopping", pending=source.pending())
        notifier.stopping()
        ready.cancel()
        # What was received and not committed stays unacknowledged with the broker (the
        # persistent session): redelivered at the next start, and deduplicated.
        for task in followers:
            task.cancel()
        await incidents.close()
        # Deliveries in flight get a moment to finish, so their results are recorded.
        await escalation.close()
        escalation_task.cancel()
        source_task.cancel()
        await source.close()
        sink_task.cancel()
        watchdog_task.cancel()
    log.info("district_stopped", **{k: getattr(mirror.stats, k) for k in
                                    ("messages", "events", "duplicates", "dead", "lost")})


def _tsdb(settings: DistrictConfig) -> bool:
    """A [store.influxdb] table in district.toml: the boxes' aggregates go there."""
    return "influxdb" in settings.store.model_fields_set


async def _forward_aggregates(settings: DistrictConfig, mirror: Mirror) -> None:
    """The boxes' one-minute aggregates to the TSDB (InfluxDB v2 write API)."""
    from sentinel.store.influx import InfluxWriter  # 0.2 s of import, only when used

    influx = settings.store.influxdb
    token = read_secret(influx.token, influx.token_file, "store.influxdb.token_file")
    async with InfluxWriter(influx, token) as writer:
        while True:
            lines = await mirror.aggregates.get()
            result = await writer.write(lines)
            if result.rejected:
                log.warning("district_aggregates_rejected", lines=len(result.rejected),
                            first=result.rejected[0][1])


def run_from_file(path: Path, stop_on: Callable[[asyncio.Event], None]) -> None:
    """`sentinel district -c district.toml` (the CLI's entry)."""
    loaded = load_district(path)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on(stop)
        await run_district(loaded, stop)

    asyncio.run(main())


