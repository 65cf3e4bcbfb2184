"""Run the real daemon as a subprocess, and publish ledgered readings to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.app import run_daemon
from sentinel.config.inventory import Device
from sentinel.decode.encode import encode
from sentinel.loading import Loaded, load_all
from sentinel.runtime import Daemon

from helpers import ROOT, SHIPPED_CONFIG
from servers import free_port

LOADED: Loaded = load_all(SHIPPED_CONFIG, {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops connections in a burst


_SINK: ThreadingHTTPServer | None = None


class _Accept(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def accepting_sink_url() -> str:
    """A loopback webhook that accepts every notification (for tests not about them)."""
    global _SINK
    if _SINK is None:
        _SINK = _Server(("127.0.0.1", 0), _Accept)
        threading.Thread(target=_SINK.serve_forever, daemon=True).start()
    return f"json://127.0.0.1:{_SINK.server_address[1]}/"


def write_oncall(dest: Path, channels: dict[str, list[str]] | None = None,
                 default: list[str] | None = None,
                 languages: dict[str, str] | None = None) -> Path:
    """The shipped on-call file with every contact's channels replaced (loopback receivers):
    `channels` by contact id, else `default`. Written as YAML, which the loader accepts."""
    import yaml

    data = json.loads(json.dumps(LOADED.oncall.model_dump(mode="json")))
    for contact in data["contact"]:
        chosen = (channels or {}).get(contact["id"]) or default
        assert chosen, f"no test channel for contact {contact['id']}"
        contact["channels"] = chosen
        contact["language"] = (languages or {}).get(contact["id"], contact["language"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return dest


class DaemonProcess:
    """`sentinel run` in a subprocess with settings overridden through the environment.

    Unless `oncall` is given, notifications go to `notify_url` (a receiver of the test's),
    or, for tests that are not about notifications, to a loopback sink that accepts them —
    never to the invented vendor channels of the shipped on-call file.
    """

    def __init__(self, state_dir: Path, broker_port: int, oncall: Path | None = None,
                 notify_url: str | None = None, **overrides: str) -> None:
        self.state_dir = state_dir
        self.log_path = state_dir / "daemon.log"
        if oncall is None:
            oncall = write_oncall(state_dir.parent / f"{state_dir.name}-oncall.yaml",
                                  default=[notify_url or accepting_sink_url()])
        self.control_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        self.env.update({
            "SENTINEL_MQTT__PORT": str(broker_port),
            "SENTINEL_STATE_DIR": str(state_dir),
            "SENTINEL_LOG__FORMAT": "json",
            "SENTINEL_MQTT__RECONNECT__MAX_DELAY": "1",
            "SENTINEL_ESCALATION__ONCALL": str(oncall),
            "SENTINEL_CONTROL__PORT": str(self.control_port),
        })
        self.env.update({f"SENTINEL_{k.upper()}": v for k, v in overrides.items()})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> DaemonProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "run", "-c", str(SHIPPED_CONFIG)],
            env=self.env, stdout=log, stderr=log, cwd=ROOT)
        log.close()
        deadline = time.monotonic() + timeout
        while '"daemon_ready"' not in self.log_text(offset):
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.proc.returncode}):\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon not ready in {timeout} s:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def log_text(self, offset: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")

    def log_events(self) -> list[dict[str, object]]:
        events = []
        for line in self.log_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def stored_keys(db: Path) -> set[tuple[str, int]]:
    """Distinct (device_id, ts_ms) stored by the embedded store."""
    if not db.exists():
        return set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return set(conn.execute("SELECT device_id, ts_ms FROM readings"))
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


def deadletter_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT reason, count(*) FROM deadletter GROUP BY reason"))
    finally:
        conn.close()


def wait_until(predicate: object, timeout: float, interval: float = 0.2) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


TYPICAL: dict[str, dict[str, object]] = {
    "smoke": {"alarm": False, "battery": 86.0, "tamper": False, "signal": -88.0},
    "gas": {"alarm": False, "concentration_lel": 1.5, "gas_type": "CH4", "battery": 91.0},
    "hydrant_pressure": {"pressure": 0.352, "battery_voltage": 3.61, "signal": -95.0},
    "water_level": {"level": 2.25, "battery_voltage": 3.58},
    "elderly_watch": {"heart_rate": 72.0, "steps": 1200, "worn": True, "battery": 64.0,
                      "latitude": 22.566, "longitude": 114.127},
}


def timestamped_devices() -> list[Device]:
    """Devices whose profile carries a device timestamp (each reading has a unique key)."""
    return [d for d in LOADED.inventory.values() if LOADED.profiles[d.profile].timestamp]


def readings(rounds: int, start: float, devices: list[Device] | None = None
             ) -> Iterator[tuple[Device, float, list[tuple[str, bytes]]]]:
    """`rounds` readings per device, 1 ms apart per device, in their vendor formats."""
    devices = devices if devices is not None else timestamped_devices()
    for r in range(rounds):
        for i, device in enumerate(devices):
            ts = round(start + r + i * 1e-4, 3)
            values = dict(TYPICAL[device.kind])
            if device.kind == "water_level" and device.settings.tank_height_m:
                values["level"] = round(device.settings.tank_height_m * 0.9, 3)
            yield device, ts, encode(LOADED.profiles[device.profile], device, values, ts,
                                     LOADED.kinds)


def alarm(device_id: str, ts: float | None = None
          ) -> Iterator[tuple[Device, float, list[tuple[str, bytes]]]]:
    """One alarm reading of a smoke or gas detector, in its vendor format."""
    device = LOADED.inventory[device_id]
    ts = round(ts if ts is not None else time.time(), 3)
    values = {**TYPICAL[device.kind], "alarm": True}
    yield device, ts, encode(LOADED.profiles[device.profile], device, values, ts, LOADED.kinds)


class Publisher:
    """A QoS 1 publisher that keeps a ledger of the (device, ts_ms) it published."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.ledger: set[tuple[str, int]] = set()
        self._infos: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        self._infos.append(info)
        if len(self._infos) >= 2000:
            self.flush()

    def publish_readings(self, items: Iterator[tuple[Device, float, list[tuple[str, bytes]]]],
                         rate: float | None = None, stop: threading.Event | None = None) -> None:
        started = time.monotonic()
        for n, (device, ts, messages) in enumerate(items):
            if stop is not None and stop.is_set():
                break
            for topic, payload in messages:
                self.publish(topic, payload)
            self.ledger.add((device.id, round(ts * 1000)))
            if rate is not None:
                ahead = (n + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        self.flush()

    def flush(self) -> None:
        for info in self._infos:
            info.wait_for_publish(timeout=60)
            assert info.is_published(), "broker did not acknowledge a QoS 1 publish"
        self._infos.clear()

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()


_READY_WITHIN = 30.0


@contextlib.asynccontextmanager
async def running(loaded: Loaded) -> AsyncIterator[Daemon]:
    """The daemon in this process (for tests that need its handles), until the block ends."""
    stop = asyncio.Event()
    ready: asyncio.Future[Daemon] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_daemon(loaded, stop, on_ready=ready.set_result))
    try:
        await asyncio.wait({task, ready}, timeout=_READY_WITHIN,
                           return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # its exception, if it failed to start
            raise AssertionError("the daemon returned before it was ready")
        assert ready.done(), f"the daemon was not ready within {_READY_WITHIN:g} s"
        yield ready.result()
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


async def eventually(predicate: Callable[[], bool], what: str, within: float = 20.0) -> None:
    """Wait (without blocking the loop) until `predicate()` holds; fail naming `what`."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


async def publish_in_thread(port: int, messages: list[tuple[str, bytes]], name: str) -> None:
    """Publish at QoS 1 from a worker thread (for tests whose daemon runs in the loop)."""
    def run() -> None:
        pub = Publisher(port, client_id=f"{name}-{time.monotonic_ns()}")
        try:
            for topic, payload in messages:
                pub.publish(topic, payload)
        finally:
            pub.close()
    await asyncio.to_thread(run)
