"""The one-command demo: a broker, the daemon with the Shuibei inventory, the simulator with
scripted alarms, and the live view in the terminal. Ctrl-C stops everything cleanly."""

from __future__ import annotations

import asyncio
import contextlib
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

from sentinel.app import Daemon, run_daemon
from sentinel.config.check import Loaded
from sentinel.console import LiveView
from sentinel.i18n import Language, t
from sentinel.log import configure_logging

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
    new = settings.model_copy(update={"state_dir": state_dir, "mqtt": mqtt, "store": store})
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


async def _demo_main(loaded: Loaded, options: DemoOptions) -> Daemon:
    from sentinel.sim.publisher import SimOptions, run_simulation

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    view = LiveView(loaded.inventory, options.lang, sys.stdout)
    ready = asyncio.Event()
    tasks: list[asyncio.Task[object]] = []
    sim_stop = threading.Event()

    def on_ready(daemon: Daemon) -> None:
        ready.set()
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
