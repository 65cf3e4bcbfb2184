"""The one-command demo: a broker, the daemon with the Shuibei inventory, the simulator with
scripted alarms, and the live view in the terminal. Ctrl-C stops everything cleanly."""

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
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from aiohttp import web

from sentinel import zone
from sentinel.app import run_daemon
from sentinel.console import LiveView
from sentinel.escalation.model import OncallConfig
from sentinel.i18n import Language, role_name, t
from sentinel.loading import Loaded
from sentinel.log import configure_logging
from sentinel.runtime import Daemon

# Scripted incidents of the demo: (event, device selector, seconds after start).
DEMO_SCRIPT: tuple[tuple[str, str, float], ...] = (
    # A fire in one building (its 4 detectors), and the hydrant beside it opened.
    ("smoke-alarm", "building:水贝花园/1栋", 15.0),
    ("hydrant-drop", "SB-HYD-0001", 30.0),
    ("gas-leak", "random", 45.0),
    ("fall", "random", 60.0),
    ("sos", "random", 75.0),
    ("offline", "random", 90.0),
)


@dataclass(frozen=True)
class DemoOptions:
    state_dir: Path
    broker: str | None = None
    speed: float = 60.0
    duration: float | None = None
    lang: Language = "zh"


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


@contextlib.contextmanager
def local_broker(state_dir: Path) -> Iterator[tuple[str, int]]:
    """Start a private Mosquitto on a free loopback port for as long as the block runs."""
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None)
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
    settings = loaded.settings
    state_dir = state_dir.resolve()
    store = settings.store.model_copy(update={
        "backend": "sqlite",
        "sqlite": settings.store.sqlite.model_copy(update={"path": state_dir / "readings.sqlite3"}),
        "spool": settings.store.spool.model_copy(update={"path": state_dir / "spool.sqlite3"}),
    })
    mqtt = settings.mqtt.model_copy(update={"host": host, "port": port,
                                            "client_id": "sentinel-demo"})
    # The demo's own socket, where `SENTINEL_STATE_DIR=<demo dir> sentinel ...` looks.
    control = settings.control.model_copy(update={"socket": state_dir / "control.sock"})
    new = settings.model_copy(update={"state_dir": state_dir, "mqtt": mqtt, "store": store,
                                      "control": control})
    return replace(loaded, settings=new)


def run_demo(loaded: Loaded, options: DemoOptions) -> int:
    state_dir = options.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    # The terminal belongs to the live view; the daemon's log goes to a file.
    log_file = (state_dir / "sentinel.log").open("a", encoding="utf-8")
    configure_logging("info", "json", log_file)
    with contextlib.ExitStack() as stack:
        if options.broker:
            host, _, port_text = options.broker.rpartition(":")
            host, port = host or "127.0.0.1", int(port_text)
            print(t("demo.broker_found", options.lang, host=host, port=port))
        elif reachable(loaded.settings.mqtt.host, loaded.settings.mqtt.port):
            host, port = loaded.settings.mqtt.host, loaded.settings.mqtt.port
            print(t("demo.broker_found", options.lang, host=host, port=port))
        else:
            host, port = stack.enter_context(local_broker(state_dir))
            print(t("demo.broker_started", options.lang, host=host, port=port))
        demo_loaded = _with_broker(loaded, state_dir, host, port)
        daemon = asyncio.run(_demo_main(demo_loaded, options))
    stats = daemon.ingestor.stats
    print(t("demo.stopped", options.lang, stored=stats.stored, rejected=stats.rejected_total))
    log_file.close()
    return 0


class LocalInbox:
    """A loopback webhook standing in for WeCom, DingTalk, e-mail...: every contact's
    channel points here, so the demo notifies people without leaving the machine. Each
    message is shown in the live view and appended to `inbox.jsonl`."""

    def __init__(self, oncall: OncallConfig, path: Path, view: LiveView, lang: Language
                 ) -> None:
        self._contacts = oncall.contacts()
        self._path = path
        self._view = view
        self._lang = lang
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.received = 0

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
        self.received += 1
        with self._path.open("a", encoding="utf-8") as inbox:
            inbox.write(json.dumps({"ts": time.time(), "contact": contact.id if contact else None,
                                    "title": title, "body": message.get("message")},
                                   ensure_ascii=False) + "\n")
        who = f"{role_name(contact.role.value, self._lang)} {contact.name}" if contact else "?"
        when = zone.now().strftime("%H:%M:%S")
        self._view.write(t("demo.inbox", self._lang, time=when, who=who, title=title))
        return web.Response(status=200)


async def _demo_main(loaded: Loaded, options: DemoOptions) -> Daemon:
    async with contextlib.AsyncExitStack() as stack:
        view = LiveView(loaded.inventory, options.lang, sys.stdout)
        inbox = await stack.enter_async_context(LocalInbox(
            loaded.oncall, loaded.settings.state_dir / "inbox.jsonl", view, options.lang))
        # A free control port: a real daemon on this box keeps its own.
        control = loaded.settings.control.model_copy(update={"port": _free_port()})
        loaded = replace(loaded, oncall=inbox.oncall(loaded.oncall),
                         settings=loaded.settings.model_copy(update={"control": control}))
        print(t("demo.inbox_ready", options.lang, url=f"http://127.0.0.1:{inbox.port}",
                path=loaded.settings.state_dir / "inbox.jsonl"))
        return await _run_demo(loaded, options, view)


async def _run_demo(loaded: Loaded, options: DemoOptions, view: LiveView) -> Daemon:
    from sentinel.sim.publisher import SimOptions, run_simulation

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()
    tasks: list[asyncio.Task[object]] = []
    sim_stop = threading.Event()

    def on_ready(daemon: Daemon) -> None:
        ready.set()
        control = daemon.control
        if control is not None:
            view.write(t("demo.board", options.lang,
                         url=control.login_link(t("demo.board_user", options.lang))))
            view.write(t("demo.observe", options.lang, url=control.url))
            view.write(t("demo.tail", options.lang,
                         state=loaded.settings.state_dir))
        tasks.append(loop.create_task(view.run(daemon.ingestor.stats)))
        tasks.append(loop.create_task(view.follow(daemon.incidents)))

    daemon_task = asyncio.create_task(run_daemon(loaded, stop, [], on_ready))
    await asyncio.wait([asyncio.ensure_future(ready.wait()), daemon_task],
                       return_when=asyncio.FIRST_COMPLETED)
    mqtt = loaded.settings.mqtt
    print(t("live.header", options.lang, devices=len(loaded.inventory),
            store=str(loaded.settings.store.sqlite.path)))
    print(t("demo.stop_hint", options.lang), flush=True)
    sim_options = SimOptions(host=mqtt.host, port=mqtt.port, qos=1, speed=options.speed,
                             inject=list(DEMO_SCRIPT), seed=1,
                             client_id="sentinel-demo-simulator", protocol=mqtt.protocol)
    sim = asyncio.create_task(asyncio.to_thread(run_simulation, loaded, sim_options, sim_stop))
    if options.duration is not None:
        loop.call_later(options.duration, stop.set)
    await stop.wait()
    sim_stop.set()
    with contextlib.suppress(Exception):
        await sim
    daemon = await daemon_task
    for task in tasks:
        task.cancel()
    return daemon
