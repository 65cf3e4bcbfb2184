"""The one-command demo: a broker, the daemon with the Shuibei inventory, the simulator with
the scripted story (`sim.story`), and the live view in the terminal. Ctrl-C stops everything
cleanly and prints a summary.

Every run tells the whole story from the start: the demo's state directory is its own, and
the previous run's databases, inbox and broker queue are cleared first (a second run used
to continue the old numbering, revive old incidents, and its fire no longer confirmed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from aiohttp import web

from sentinel import zone
from sentinel.app import run_daemon
from sentinel.console import IncidentSource, colored, event_line
from sentinel.control.feed import event_json
from sentinel.escalation.model import OncallConfig
from sentinel.i18n import Language, role_name, t
from sentinel.loading import Loaded
from sentinel.log import configure_logging
from sentinel.notify.channels import actor_name
from sentinel.runtime import Daemon
from sentinel.sim.story import Story, demo_config, story
from sentinel.types import IngestStats, Severity

# What a previous run left in the demo's state directory (databases with their WAL files,
# the inbox, the private broker's queue): cleared so that this run tells the story afresh.
_PREVIOUS_RUN = ("readings.sqlite3", "incidents.sqlite3", "spool.sqlite3", "inbox.jsonl",
                 "broker/mosquitto.db")
# Incident events the demo shows. Pages are shown as the inbox receives them (📨), not as
# escalation steps: a step of an alarm merged into a fire the same moment is recorded,
# but nothing is sent for it, and the demo printed "升级通知 … → 网格员, 物业" all the same.
_SHOWN = frozenset({"opened", "severity_raised", "condition_cleared", "condition_returned",
                    "acknowledged", "resolved", "grouped", "attached", "flapping",
                    "cancel_refused", "notification_failed", "nobody_on_duty",
                    "tier_unreachable"})
# Status line: redrawn in place every STATUS_EVERY s on a terminal; when the output is
# piped (a file, `tee`), a line of its own every PIPED_EVERY s so alerts stay readable.
STATUS_EVERY = 2.0
PIPED_EVERY = 30.0


@dataclass(frozen=True)
class DemoOptions:
    state_dir: Path
    broker: str | None = None
    speed: float = 60.0
    duration: float | None = None
    lang: Language = "zh"
    # Scales the story's times (tests: 0.2 tells it in about 16 s).
    pace: float = 1.0


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None)


@contextlib.contextmanager
def local_broker(state_dir: Path) -> Iterator[tuple[str, int]]:
    """Start a private Mosquitto on a free loopback port for as long as the block runs."""
    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError("mosquitto is not installed: run scripts/demo.sh (it installs it) "
                           "or `apt-get install mosquitto`")
    folder = state_dir / "broker"
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = folder / "mosquitto.conf"
    config.write_text("\n".join([
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {folder}/",
        "autosave_on_changes true",
        "autosave_interval 100",
        "set_tcp_nodelay true",
        "max_queued_messages 1000000",
        f"log_dest file {folder}/mosquitto.log",
        # As root, mosquitto would switch to its own user, who cannot write our folder.
        "user root" if os.geteuid() == 0 else "",
    ]) + "\n")
    proc = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start; see {folder}/mosquitto.log")
            time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _with_broker(loaded: Loaded, state_dir: Path, host: str, port: int) -> Loaded:
    """Every file of the demo under its state directory, its store embedded."""
    settings = loaded.settings
    state_dir = state_dir.resolve()
    store = settings.store.model_copy(update={
        "backend": "sqlite",
        "sqlite": settings.store.sqlite.model_copy(update={"path": state_dir / "readings.sqlite3"}),
        "spool": settings.store.spool.model_copy(update={"path": state_dir / "spool.sqlite3"}),
    })
    # The incidents database too: it went to the configured /var/lib/sentinel.
    incidents = settings.incidents.model_copy(update={"path": state_dir / "incidents.sqlite3"})
    # No session kept after the demo stops: messages the daemon had not yet received
    # when it stopped were delivered to the next run, whose fresh incident database then
    # opened the old run's fall and fire again. (A new client id, so that a session kept
    # by an earlier release of the demo is not picked up either.)
    mqtt = settings.mqtt.model_copy(update={"host": host, "port": port,
                                            "client_id": "sentinel-demo-run",
                                            "session_expiry": 0})
    # The demo's own socket, where `SENTINEL_STATE_DIR=<demo dir> sentinel ...` looks.
    control = settings.control.model_copy(update={"socket": state_dir / "control.sock"})
    new = settings.model_copy(update={"state_dir": state_dir, "mqtt": mqtt, "store": store,
                                      "incidents": incidents, "control": control})
    return replace(loaded, settings=new)


def clear_previous_run(state_dir: Path) -> list[str]:
    """Remove what a previous run left (see `_PREVIOUS_RUN`); the names removed."""
    removed = []
    for name in _PREVIOUS_RUN:
        for path in (state_dir / name, state_dir / f"{name}-wal", state_dir / f"{name}-shm"):
            if path.exists():
                path.unlink()
                removed.append(path.name)
    return removed


def run_demo(loaded: Loaded, options: DemoOptions) -> int:
    state_dir = options.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    lang = options.lang
    told = story(loaded.inventory, options.pace, options.speed)
    if clear_previous_run(state_dir):
        print(t("demo.fresh", lang, state=state_dir), flush=True)
    # The terminal belongs to the live view; the daemon's log goes to a file.
    log_file = (state_dir / "sentinel.log").open("a", encoding="utf-8")
    configure_logging("info", "json", log_file)
    tally = Tally()
    with contextlib.ExitStack() as stack:
        if options.broker:
            host, _, port_text = options.broker.rpartition(":")
            host, port = host or "127.0.0.1", int(port_text)
            print(t("demo.broker_found", lang, host=host, port=port))
        elif mosquitto_binary() is not None:
            # A private broker even when one answers on 1883: another demo, a simulator or
            # real devices publishing there would mix their readings into the story (two
            # fleets on the same topics make every alarm flap).
            print(t("demo.broker_starting", lang), flush=True)
            host, port = stack.enter_context(local_broker(state_dir))
            print(t("demo.broker_started", lang, host=host, port=port))
        elif reachable(loaded.settings.mqtt.host, loaded.settings.mqtt.port):
            host, port = loaded.settings.mqtt.host, loaded.settings.mqtt.port
            print(t("demo.broker_shared", lang, host=host, port=port))
        else:
            raise RuntimeError("mosquitto is not installed: run scripts/demo.sh (it installs "
                               "it) or `apt-get install mosquitto`")
        shipped = _with_broker(loaded, state_dir, host, port)
        asyncio.run(_demo_main(shipped, demo_config(shipped, told), told, options, tally))
    log_file.close()
    _print_summary(tally, lang)
    return 0


def _print_summary(tally: Tally, lang: Language) -> None:
    """The summary, on stdout also when it is piped; if the reader of the pipe has gone
    (Ctrl-C reaches `tee` too), on stderr instead of being lost."""
    text = tally.summary(lang)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(text, file=sys.stderr, flush=True)


@dataclass
class Tally:
    """What the demo did, for the status line and the summary."""

    stats: IngestStats | None = None
    # Incident id -> its severity now: a fall raised to emergency counts as an emergency
    # (counted at its opening severity, the summary left the one 紧急 incident out).
    severity_of: dict[str, Severity] = field(default_factory=dict)
    pages: int = 0
    acks: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def incidents(self) -> int:
        return len(self.severity_of)

    @property
    def by_severity(self) -> dict[str, int]:
        counts = Counter(self.severity_of.values())
        return {s.label: counts[s] for s in sorted(counts, reverse=True)}

    def count(self, event_type: str, severity: str, incident_id: str = "") -> None:
        if event_type == "opened" or incident_id in self.severity_of:
            self.severity_of[incident_id or f"#{len(self.severity_of)}"] = \
                Severity.parse(severity)
        if event_type == "acknowledged":
            self.acks += 1

    def status(self, lang: Language, rate: float) -> str:
        stats = self.stats or IngestStats()
        elapsed = int(time.monotonic() - self.started)
        return t("demo.status", lang, elapsed=f"{elapsed // 60:02d}:{elapsed % 60:02d}",
                 stored=stats.stored, rate=round(rate), rejected=stats.rejected_total,
                 incidents=self.incidents, pages=self.pages, acks=self.acks)

    def summary(self, lang: Language) -> str:
        stats = self.stats or IngestStats()
        # Worst first, each incident at the severity it has now.
        severities = ", ".join(f"{t('severity.' + k, lang)} {v}"
                               for k, v in self.by_severity.items())
        return t("demo.summary", lang, stored=stats.stored, rejected=stats.rejected_total,
                 incidents=self.incidents, severities=severities or "-", pages=self.pages,
                 acks=self.acks)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fit(text: str, columns: int) -> str:
    """`text` cut to fit `columns` terminal cells (a Chinese character takes two)."""
    out, used = [], 0
    for char in text:
        used += 2 if unicodedata.east_asian_width(char) in "WF" else 1
        if used > columns:
            break
        out.append(char)
    return "".join(out)


class DemoScreen:
    """The demo's terminal: incident events and deliveries line by line, and one status
    line. On a terminal the status line stays at the bottom, redrawn in place (`\r`): a
    status line every 2 s pushed the alerts off the screen. Piped, it is a line of its
    own every 30 s."""

    def __init__(self, out: TextIO, lang: Language, tally: Tally,
                 tty: bool | None = None) -> None:
        self._out = out
        self._lang = lang
        self._tally = tally
        self._tty = out.isatty() if tty is None else tty
        self._status = ""
        # Contact id -> name: who acted is shown by name, never as "(gw-02)" or "(root)".
        self.people: dict[str, str] = {}

    def write(self, line: str) -> None:
        """One line above the status line."""
        if self._tty and self._status:
            self._out.write("\r\x1b[K" + line + "\n" + self._status)
        else:
            self._out.write(line + "\n")
        self._out.flush()

    def status(self, text: str) -> None:
        if self._tty:
            columns = shutil.get_terminal_size((100, 24)).columns - 1
            self._status = _fit(text, columns)
            self._out.write("\r\x1b[K" + self._status)
        else:
            self._out.write(text + "\n")
        self._out.flush()

    def close(self) -> None:
        """Leave the status line as the last line of the terminal."""
        if self._tty and self._status:
            self._out.write("\n")
            self._out.flush()
            self._status = ""

    async def run_status(self, stats: IngestStats) -> None:
        """Update the status line until cancelled."""
        every = STATUS_EVERY if self._tty else PIPED_EVERY
        last_stored, last_time = stats.stored, time.monotonic()
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            rate = (stats.stored - last_stored) / max(now - last_time, 1e-9)
            last_stored, last_time = stats.stored, now
            self.status(self._tally.status(self._lang, rate))

    async def follow(self, source: IncidentSource) -> None:
        """Print incident events as they are committed, until cancelled."""
        seq = source.last_seq
        color = self._tty
        while True:
            for event in await source.events_after(seq, wait=5.0):
                seq = event.seq
                self._tally.count(event.type, event.severity.label, event.incident_id)
                if event.type not in _SHOWN:
                    continue
                data = event_json(event, source.incident(event.incident_id))
                if data.get("actor"):
                    data["actor"] = actor_name(str(data["actor"]), self.people, self._lang)
                self.write(colored(event_line(data, self._lang, self.people), data["severity"],
                                   color))


class LocalInbox:
    """A loopback webhook standing in for WeCom, DingTalk, e-mail...: every contact's
    channel points here, so the demo notifies people without leaving the machine. Each
    message is shown in the live view and appended to `inbox.jsonl`."""

    def __init__(self, oncall: OncallConfig, path: Path, screen: DemoScreen, tally: Tally,
                 lang: Language) -> None:
        self._contacts = oncall.contacts()
        self._path = path
        self._screen = screen
        self._tally = tally
        self._lang = lang
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> LocalInbox:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_post("/{contact}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def oncall(self, oncall: OncallConfig) -> OncallConfig:
        """The same people and rosters, every channel replaced by this inbox."""
        contacts = tuple(c.model_copy(update={
            "channels": (f"json://127.0.0.1:{self.port}/{c.id}",)}) for c in oncall.contact)
        return oncall.model_copy(update={"contact": contacts})

    async def _receive(self, request: web.Request) -> web.Response:
        contact = self._contacts.get(request.match_info["contact"])
        try:
            message = await request.json()
        except ValueError:
            return web.Response(status=400)
        title = str(message.get("title", ""))
        self._tally.pages += 1
        now = time.time()
        with self._path.open("a", encoding="utf-8") as inbox:
            inbox.write(json.dumps({"ts": now, "contact": contact.id if contact else None,
                                    "title": title, "body": message.get("message")},
                                   ensure_ascii=False) + "\n")
        who = f"{role_name(contact.role.value, self._lang)} {contact.name}" if contact else "?"
        self._screen.write(t("demo.inbox", self._lang, time=zone.clock(now), who=who,
                             title=title))
        return web.Response(status=200)


async def _demo_main(shipped: Loaded, loaded: Loaded, told: Story, options: DemoOptions,
                     tally: Tally) -> None:
    screen = DemoScreen(sys.stdout, options.lang, tally)
    screen.people = {c.id: c.name for c in loaded.oncall.contact}
    try:
        async with contextlib.AsyncExitStack() as stack:
            inbox = await stack.enter_async_context(LocalInbox(
                loaded.oncall, loaded.settings.state_dir / "inbox.jsonl", screen, tally,
                options.lang))
            # A free control port: a real daemon on this box keeps its own.
            control = loaded.settings.control.model_copy(update={"port": _free_port()})
            loaded = replace(loaded, oncall=inbox.oncall(loaded.oncall),
                             settings=loaded.settings.model_copy(update={"control": control}))
            print(t("demo.inbox_ready", options.lang, url=f"http://127.0.0.1:{inbox.port}",
                    path=loaded.settings.state_dir / "inbox.jsonl"))
            await _run_demo(shipped, loaded, told, options, screen, tally)
    finally:
        screen.close()


async def _run_demo(shipped: Loaded, loaded: Loaded, told: Story, options: DemoOptions,
                    screen: DemoScreen, tally: Tally) -> None:
    from sentinel.sim.publisher import SimOptions, run_simulation

    lang = options.lang
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()
    tasks: list[asyncio.Task[object]] = []
    sim_stop = threading.Event()

    def on_ready(daemon: Daemon) -> None:
        ready.set()
        tally.stats = daemon.ingestor.stats
        control = daemon.control
        if control is not None:
            screen.write(t("demo.board", lang, url=control.login_link(
                t("demo.board_user", lang))))
            screen.write(t("demo.observe", lang, url=control.url))
            screen.write(t("demo.tail", lang, state=loaded.settings.state_dir))
        tasks.append(loop.create_task(screen.follow(daemon.incidents)))

    print(t("demo.daemon_starting", lang, devices=len(loaded.inventory)), flush=True)
    daemon_task = asyncio.create_task(run_daemon(loaded, stop, [], on_ready))
    await asyncio.wait([asyncio.ensure_future(ready.wait()), daemon_task],
                       return_when=asyncio.FIRST_COMPLETED)
    if daemon_task.done():
        await daemon_task  # it failed to start: its exception, not a silent demo
        return
    mqtt = loaded.settings.mqtt
    screen.write(t("live.header", lang, devices=len(loaded.inventory),
                   store=str(loaded.settings.store.sqlite.path)))
    screen.write(t("demo.story", lang, **_story_times(told)))
    screen.write(t("demo.stop_hint", lang))
    # The simulator runs the shipped inventory: the demo-only report interval is what the
    # daemon is told about the story's offline detector, not a change of the device.
    sim_options = SimOptions(host=mqtt.host, port=mqtt.port, qos=1, speed=options.speed,
                             inject=told.injections(), seed=1,
                             client_id="sentinel-demo-simulator", protocol=mqtt.protocol)
    sim = asyncio.create_task(asyncio.to_thread(run_simulation, shipped, sim_options,
                                                sim_stop))
    assert tally.stats is not None, "set when the daemon is ready"
    tasks.append(loop.create_task(screen.run_status(tally.stats)))
    if options.duration is not None:
        loop.call_later(options.duration, stop.set)
    await stop.wait()
    sim_stop.set()
    with contextlib.suppress(Exception):
        await sim
    await daemon_task
    for task in tasks:
        task.cancel()


def _story_times(told: Story) -> dict[str, str]:
    return {b.event.replace("-", "_"): f"{b.at:g}" for b in told.beats}
