#!/usr/bin/env python3
"""Ingest benchmark: the whole Shuibei inventory, broker → sentinel → store, QoS 1.

A backlog of N readings is queued at a private Mosquitto for the daemon's persistent
session while it is down; then the daemon is started and timed until every reading is
durably stored (SQLite readings table, or VictoriaMetrics behind the durable spool). The
same backlog drained by a bare paho consumer gives the ceiling. See bench/README.md.

    python bench/ingest.py [--readings N] [--backend influxdb|sqlite|both] [--repeat K]
                           [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import common  # first: it puts src/ and tests/ on sys.path

CONFIG = common.ROOT / "config" / "sentinel.toml"
CLIENT_ID = "sentinel-shuibei"  # [mqtt] client_id of config/sentinel.toml
BARE_CLIENT_ID = "bench-bare-paho"
BARE_AIOMQTT_CLIENT_ID = "bench-bare-aiomqtt"
RECEIVE_MAXIMUM = 5000  # [mqtt] receive_maximum of config/sentinel.toml; the bare client too


# ---------------------------------------------------------------------------------------
# The backlog: every device whose profile carries a timestamp, round-robin, one reading
# per message, each with a unique (device, ms timestamp).
# ---------------------------------------------------------------------------------------


def _values(device: Any, i: int) -> dict[str, Any]:
    """Normal canonical values for reading number i of a device: no rule opens an incident."""
    v: dict[str, Any] = {
        "battery": float(60 + i % 40),
        "battery_voltage": round(3.4 + (i % 30) * 0.01, 2),  # above battery_voltage_low
        "signal": float(-60 - i % 40),
        "snr": round(2.0 + (i % 16) * 0.5, 1),
        "fault": False,
        "tamper": False,
    }
    kind = device.kind
    if kind == "smoke":
        v.update(alarm=False, obscuration=round((i % 5) * 0.1, 1), self_test=False,
                 temperature=round(18 + (i % 20) * 0.5, 1))
    elif kind == "gas":
        v.update(alarm=False, concentration_lel=round((i % 5) * 0.5, 1),
                 concentration_ppm=float(i % 30), gas_type="CH4", valve_closed=False)
    elif kind == "hydrant_pressure":
        # Small jitter only: a drop of 0.05 MPa within 30 s is the hydrant_pressure_drop rule.
        v.update(pressure=round(0.35 + (i % 3) * 0.005, 3))
    elif kind == "water_level":
        tank = device.settings.tank_height_m or 3.0
        share = 0.80 + (i % 3) * 0.002  # steady: the tank rules must stay quiet
        v.update(level=round(tank * share, 3), level_percent=round(share * 100, 3))
    elif kind == "elderly_watch":
        v.update(sos=False, sos_cancel=False, fall=False, heart_rate=float(60 + i % 40),
                 steps=i * 7, worn=True, latitude=22.5530 + (i % 50) * 1e-4,
                 longitude=114.1200 + (i % 50) * 1e-4)
        del v["fault"], v["tamper"]
    return v


@dataclass
class Backlog:
    readings: int
    devices: int
    skipped: dict[str, int]  # profile -> devices left out (no timestamp in their messages)
    kinds: list[str]
    topics: list[str]  # the daemon's subscriptions (all profile filters)
    payload_bytes: int
    t0_ms: int
    # per publisher: [(topic, payload)], disjoint device sets
    parts: list[list[tuple[str, bytes]]] = field(repr=False, default_factory=list)
    expected: set[tuple[str, int]] = field(repr=False, default_factory=set)


def _decoder() -> tuple[Any, Any]:
    """The shipped configuration and the daemon's decoder for it."""
    from sentinel.decode import Decoder
    from sentinel.loading import load_all

    loaded = load_all(CONFIG)
    return loaded, Decoder(loaded.profiles, loaded.inventory, loaded.kinds,
                           loaded.settings.ingest)


def daemon_topics() -> list[str]:
    """The daemon's subscriptions (every profile's topic filters)."""
    return list(_decoder()[1].topic_filters())


def build_backlog(n: int, publishers: int) -> Backlog:
    from sentinel.decode.encode import encode
    from sentinel.types import RawMessage

    loaded, decoder = _decoder()
    devices = []
    skipped: dict[str, int] = {}
    for device in loaded.inventory.values():
        if loaded.profiles[device.profile].timestamp is None:
            skipped[device.profile] = skipped.get(device.profile, 0) + 1
        else:
            devices.append(device)
    d = len(devices)
    # Device timestamps: one reading per second per device, the newest ~now - 10 min, so
    # all lie inside the daemon's accepted window (max_age 7 days, no future skew).
    per_device = -(-n // d)
    t0_ms = (int(time.time()) - 600 - per_device) * 1000
    parts: list[list[tuple[str, bytes]]] = [[] for _ in range(publishers)]
    expected: set[tuple[str, int]] = set()
    size = 0
    now = time.time()
    checked: set[str] = set()
    for j in range(n):
        i, k = divmod(j, d)
        device = devices[k]
        ts_ms = t0_ms + i * 1000 + (k % 997)  # ms offset: not all devices on one instant
        msgs = encode(loaded.profiles[device.profile], device, _values(device, i),
                      ts_ms / 1000, loaded.kinds)
        if len(msgs) != 1:
            raise RuntimeError(f"{device.id}: expected one message per reading, got {len(msgs)}")
        topic, payload = msgs[0]
        if device.id not in checked:  # every device's messages must decode cleanly
            reading, = decoder.decode(RawMessage(topic, payload, 1, False, now, None))
            if reading.device_id != device.id or round(reading.ts * 1000) != ts_ms:
                raise RuntimeError(f"{device.id}: round trip mismatch: {reading}")
            checked.add(device.id)
        parts[k % publishers].append((topic, payload))
        expected.add((device.id, ts_ms))
        size += len(payload)
    if len(expected) != n:
        raise RuntimeError("backlog keys are not unique")
    return Backlog(n, min(d, n), skipped, sorted({dv.kind for dv in devices}),
                   decoder.topic_filters(), size, t0_ms, parts, expected)


# ---------------------------------------------------------------------------------------
# Publisher processes (forked; each has its own paho client and a disjoint device set)
# ---------------------------------------------------------------------------------------

_BACKLOG: Backlog | None = None  # set before forking publishers


def _publisher_main(index: int, port: int, out: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    assert _BACKLOG is not None
    msgs = _BACKLOG.parts[index]
    total = len(msgs)
    acked = 0

    def on_publish(c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        nonlocal acked
        acked += 1

    client = common.connect_publisher(f"bench-pub-{index}", port, 1000, on_publish,
                                      "publisher")
    # Single-threaded (no loop_start): keep up to 1000 publishes unacknowledged, read the
    # PUBACKs in bursts. Threaded paho spends most of its time handing over the GIL.
    started = time.time()
    sent = 0
    deadline = time.monotonic() + 600
    while acked < total and time.monotonic() < deadline:
        room = min(total, acked + 1000) - sent
        for topic, payload in msgs[sent:sent + room]:
            client.publish(topic, payload, qos=1)
        sent += max(room, 0)
        if client.loop(1.0) != mqtt.MQTT_ERR_SUCCESS:
            break
    finished = time.time()
    client.disconnect()
    client.loop(0.1)
    out.put({"index": index, "messages": total, "acked": acked,
             "started": started, "finished": finished})


def publish_backlog(port: int, backlog: Backlog, procs: list[Any]) -> dict[str, Any]:
    global _BACKLOG
    _BACKLOG = backlog
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_publisher_main, args=(i, port, out), daemon=True)
               for i in range(len(backlog.parts))]
    procs.extend(workers)
    for w in workers:
        w.start()
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + 900
    while len(results) < len(workers):
        try:
            results.append(out.get(timeout=1.0))
        except Exception:  # queue.Empty
            if any(w.exitcode not in (None, 0) for w in workers):
                raise RuntimeError("a publisher process failed") from None
            if time.monotonic() > deadline:
                raise RuntimeError("publishers did not finish in 15 min") from None
    for w in workers:
        w.join(10)
        procs.remove(w)
    acked = sum(r["acked"] for r in results)
    if acked != backlog.readings:
        raise RuntimeError(f"broker acknowledged {acked} of {backlog.readings} publishes")
    span = max(r["finished"] for r in results) - min(r["started"] for r in results)
    return {"messages": acked, "seconds": round(span, 3), "rate": round(acked / span)}


# ---------------------------------------------------------------------------------------
# Bare consumers, paho and aiomqtt (a fresh interpreter: `ingest.py --bare-consumer ...`)
# ---------------------------------------------------------------------------------------

BARE_CLIENTS = ("paho", "aiomqtt")


def _session_properties() -> Properties:
    """CONNECT properties of a bare consumer's persistent MQTT 5 session (as the daemon's)."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    return props


def _print_outcome(mode: str, subscribed: bool, received: int, count: int,
                   connack: float | None, cpu0: float, done_at: float | None, cpu1: float,
                   session_present: bool | None) -> int:
    """Print a bare consumer's result as one JSON line; return its exit code."""
    if mode == "setup":
        print(json.dumps({"subscribed": subscribed}), flush=True)
        return 0 if subscribed else 1
    result: dict[str, Any] = {"received": received, "connack": connack, "done": done_at,
                              "session_present": session_present}
    if done_at is not None and connack is not None:
        drain = done_at - connack
        result.update(drain_s=drain, rate=count / drain, cpu_pct=100 * (cpu1 - cpu0) / drain,
                      rss_mib=common.peak_rss_mib(os.getpid()))
    print(json.dumps(result), flush=True)
    return 0 if done_at is not None else 1


def bare_consumer_main(port: int, mode: str, count: int, topics: list[str],
                       timeout: float) -> int:
    """`setup`: create the persistent session and its subscriptions, then disconnect.
    `drain`: reconnect to the session, receive `count` messages (paho acks each on
    receipt), print one JSON line. Same MQTT 5 session settings as the daemon; the socket
    is read in bursts of up to 256 packets per readable event, as the daemon does."""
    state: dict[str, Any] = {"received": 0, "connack": None, "subscribed": False, "cpu0": 0.0}

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        state["connack"] = time.time()
        state["cpu0"] = common.cpu_self()
        state["session_present"] = bool(flags.session_present)
        if mode == "setup":
            c.subscribe([(t, 1) for t in topics])

    def on_subscribe(c: Any, u: Any, mid: int, reasons: Any, props: Any) -> None:
        state["subscribed"] = True

    def on_message(c: Any, u: Any, msg: Any) -> None:
        state["received"] += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=BARE_CLIENT_ID,
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(common.HOST, port, keepalive=30, clean_start=False,
                   properties=_session_properties())
    sock = common.nodelay(client)
    assert sock is not None
    deadline = time.monotonic() + timeout
    last_misc = time.monotonic()
    done_at = None
    while time.monotonic() < deadline:
        wlist = [sock] if client.want_write() else []
        readable, _, _ = select.select([sock], wlist, [], 0.5)
        if readable and client.loop_read(256) != mqtt.MQTT_ERR_SUCCESS:
            break
        if client.want_write():
            client.loop_write()
        now = time.monotonic()
        if now - last_misc >= 1.0:
            client.loop_misc()
            last_misc = now
        if mode == "setup" and state["subscribed"]:
            break
        if mode == "drain" and state["received"] >= count:
            done_at = time.time()
            break
    cpu1 = common.cpu_self()
    client.disconnect()
    for _ in range(50):
        if not client.want_write():
            break
        client.loop_write()
        time.sleep(0.01)
    return _print_outcome(mode, state["subscribed"], state["received"], count,
                          state["connack"], state["cpu0"], done_at, cpu1,
                          state.get("session_present"))


def aiomqtt_consumer_main(port: int, mode: str, count: int, topics: list[str],
                          timeout: float) -> int:
    """`bare_consumer_main` with an aiomqtt 2.x client (asyncio's default event loop): the
    same persistent session settings, QoS 1, TCP_NODELAY, acks by paho on receipt, and
    `async for message in client.messages` counting. aiomqtt returns from `__aenter__` on
    the CONNACK: the drain is timed from there."""
    import asyncio

    import aiomqtt

    async def run() -> int:
        client = aiomqtt.Client(
            common.HOST, port, identifier=BARE_AIOMQTT_CLIENT_ID,
            protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, keepalive=30,
            properties=_session_properties(),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        received, subscribed, done_at = 0, False, None
        async with client:
            connack, cpu0 = time.time(), common.cpu_self()
            try:
                async with asyncio.timeout(timeout):
                    if mode == "setup":
                        await client.subscribe([(t, 1) for t in topics])
                        subscribed = True
                    else:
                        async for _ in client.messages:
                            received += 1
                            if received >= count:
                                done_at = time.time()
                                break
            except TimeoutError:
                pass
            cpu1 = common.cpu_self()
        return _print_outcome(mode, subscribed, received, count, connack, cpu0, done_at,
                              cpu1, None)

    return asyncio.run(run())


def run_bare(port: int, mode: str, count: int, topics: list[str], timeout: float,
             procs: list[Any], client: str = "paho") -> dict[str, Any]:
    """Run a bare consumer (`client`: paho or aiomqtt) in a fresh interpreter."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-consumer", str(port), mode,
           str(count), json.dumps(topics), str(timeout), client]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True, text=True)
    procs.append(proc)
    try:
        out, _ = proc.communicate(timeout=timeout + 30)
    finally:
        _stop_popen(proc)
        procs.remove(proc)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"bare {client} consumer ({mode}) printed nothing, exit "
                           f"{proc.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    if proc.returncode != 0:
        raise RuntimeError(f"bare {client} consumer ({mode}) failed: {result}")
    return result


# ---------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------


_stop_popen = common.stop_process


class CpuSampler:
    """Samples, every 0.1 s, system-wide busy CPU, this process's CPU and that of given
    pids, so that over any window the CPU of the broker, the TSDB and *foreign* processes
    (anything not started by this run, e.g. another job on the machine) can be reported."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.samples: list[tuple[float, float, float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def _sample(self) -> None:
        cpus = {}
        for name, pid in list(self.pids.items()):
            with contextlib.suppress(OSError, IndexError, ValueError):
                cpus[name] = common.proc_cpu(pid)
        self.samples.append((time.time(), common.system_busy(), common.cpu_self(), cpus))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.1)

    def window(self, t0: float, t1: float, known: float = 0.0) -> dict[str, float]:
        """Mean CPU % (100 = one core) over [t0, t1]: each watched pid, `system`, and
        `foreign` = system - this process - watched pids - `known` CPU seconds. A pid
        watched only from inside the window (e.g. Node-RED, whose pid is known once its
        start returns) counts from its first sample."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return {}
        (a_t, a_sys, a_self, _), (b_t, b_sys, b_self, b_p) = inside[0], inside[-1]
        dt = b_t - a_t
        first = {name: next(s[3][name] for s in inside if name in s[3]) for name in b_p}
        out = {name: 100 * (b_p[name] - first[name]) / dt for name in b_p}
        sys_pct = 100 * (b_sys - a_sys) / dt
        ours = 100 * (b_self - a_self) / dt + sum(out.values()) + 100 * known / (t1 - t0)
        out.update(system=sys_pct, bench=100 * (b_self - a_self) / dt,
                   foreign=max(0.0, sys_pct - ours))
        return {k: round(v, 1) for k, v in out.items()}


class Daemon:
    """`sentinel run` with the shipped config (rules, incidents, escalation on): the given
    port, backend and state dir; notifications to `notify_url` (an apprise URL of a local
    receiver), else to a loopback sink that accepts everything."""

    def __init__(self, run_dir: Path, backend: str, port: int, vm_url: str | None,
                 name: str, notify_url: str | None = None) -> None:
        self.state_dir = run_dir / "state"
        self.log_path = run_dir / f"{name}.log"
        env = dict(os.environ)
        env.update({
            "SENTINEL_MQTT__HOST": common.HOST,
            "SENTINEL_MQTT__PORT": str(port),
            "SENTINEL_STATE_DIR": str(self.state_dir),
            "SENTINEL_STORE__BACKEND": backend,
            "SENTINEL_LOG__FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(common.ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
        })
        if vm_url is not None:
            env["SENTINEL_STORE__INFLUXDB__URL"] = vm_url
        # Never the invented vendor channels of the shipped on-call file: a loopback sink.
        from daemon import accepting_sink_url, write_oncall
        from servers import free_port
        env["SENTINEL_ESCALATION__ONCALL"] = str(write_oncall(
            run_dir / f"{name}-oncall.yaml", default=[notify_url or accepting_sink_url()]))
        env["SENTINEL_CONTROL__PORT"] = str(free_port())
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.tail = common.LogTail(self.log_path)
        self.spawned_at = 0.0

    def start(self) -> None:
        self.spawned_at = time.time()
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sentinel", "run", "-c", str(CONFIG)],
                cwd=common.ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            self.tail.poll()
            tail = "\n".join(json.dumps(e, ensure_ascii=False) for e in self.tail.events[-15:])
            raise RuntimeError(f"daemon exited with code {self.proc.returncode}; log tail:\n"
                               f"{tail}")

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.tail.poll()
            ready = self.tail.find("daemon_ready")
            if ready is not None:
                return ready
            self.check_alive()
            time.sleep(0.02)
        raise RuntimeError(f"daemon not ready within {timeout:.0f}s (log {self.log_path})")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = _stop_popen(self.proc, 60.0)
        self.tail.poll()
        return code


# ---------------------------------------------------------------------------------------
# Counting what is durably stored
# ---------------------------------------------------------------------------------------


class SqliteCounter:
    def __init__(self, path: Path) -> None:
        self.path = path

    def count(self) -> int:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
        finally:
            conn.close()

    def keys(self) -> set[tuple[str, int]]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            return {(d, int(t)) for d, t in conn.execute("SELECT device_id, ts_ms FROM readings")}
        finally:
            conn.close()


class VmCounter:
    """Cheap progress: samples of `<kind>_battery_voltage` (every generated reading has that
    field, in every profile) counted inside VictoriaMetrics; exact: distinct
    (device_id, timestamp) over all `<kind>_*` metrics via the export API."""

    def __init__(self, vm: Any, kinds: list[str]) -> None:
        self.vm = vm
        self.kinds = kinds
        names = "|".join(kinds)
        self._query = ('sum(count_over_time({__name__=~"(' + names + ')_battery_voltage"}'
                       "[30d]))")

    def count(self) -> int:
        self.vm.force_flush()
        params = urllib.parse.urlencode({"query": self._query})
        with urllib.request.urlopen(f"{self.vm.url}/api/v1/query?{params}", timeout=30) as r:
            doc = json.loads(r.read())
        result = doc["data"]["result"]
        return int(float(result[0]["value"][1])) if result else 0

    def keys(self) -> set[tuple[str, int]]:
        self.vm.force_flush()
        points: set[tuple[str, int]] = set()
        for kind in self.kinds:
            points |= self.vm.distinct_points(kind)
        return points


# ---------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    backend: str
    repeat: int
    readings: int
    publish: dict[str, Any]
    bare: dict[str, Any]
    sentinel: dict[str, Any]
    ok: bool = True
    problems: list[str] = field(default_factory=list)  # the run is wrong: exit status 1
    warnings: list[str] = field(default_factory=list)  # the figures may be off
    load: dict[str, float] = field(default_factory=dict)


def prepare_broker(run_dir: Path, name: str, backlog: Backlog, setup: Callable[[int], object],
                   stack: contextlib.ExitStack, procs: list[Any]) -> tuple[Any, dict[str, Any]]:
    """A fresh broker (tests/servers.py's Mosquitto: set_tcp_nodelay, here without autosave)
    with exactly one persistent session, made by `setup(port)`, holding the whole backlog.
    Returns the broker and the publishers' figures."""
    from servers import Mosquitto

    broker = stack.enter_context(Mosquitto(run_dir / f"mosquitto-{name}",
                                           extra_config=common.BROKER_EXTRA))
    setup(broker.port)
    common.log(f"  publishing {backlog.readings} readings for the {name} session ...")
    pub = publish_backlog(broker.port, backlog, procs)
    common.log(f"  published in {pub['seconds']:.1f}s ({pub['rate']}/s)")
    return broker, pub


def _middle_rate(samples: list[tuple[float, int]], n: int) -> float | None:
    """Storage rate between 10 % and 90 % of the backlog (no start-up/flush edges)."""
    def crossing(level: float) -> float | None:
        prev = (0.0, 0)
        for t, count in samples:
            if count >= level:
                t0, c0 = prev
                return t0 + (t - t0) * (level - c0) / max(1, count - c0)
            prev = (t, count)
        return None

    lo, hi = crossing(0.1 * n), crossing(0.9 * n)
    return 0.8 * n / (hi - lo) if lo is not None and hi is not None and hi > lo else None


def drain_bare(client: str, run_dir: Path, backlog: Backlog, timeout: float,
               quiet_wait: float, sampler: CpuSampler, stack: contextlib.ExitStack,
               procs: list[Any]) -> dict[str, Any]:
    """The ceiling: a bare consumer (`client`: paho or aiomqtt) drains the backlog from its
    persistent session on a broker of its own. Returns its figures (rate, drain_s, cpu_pct,
    rss_mib, cpu_window, publish, idle_before_pct)."""
    common.log(f"  bare {client}")
    broker, pub = prepare_broker(
        run_dir, f"bare-{client}", backlog,
        lambda port: run_bare(port, "setup", 0, backlog.topics, 30, procs, client), stack,
        procs)
    sampler.pids = {"broker": broker.pid}
    idle = common.wait_for_quiet(quiet_wait)
    bare = run_bare(broker.port, "drain", backlog.readings, backlog.topics, timeout, procs,
                    client)
    if bare.get("done"):
        bare["cpu_window"] = sampler.window(bare["connack"], bare["done"],
                                            known=bare["cpu_pct"] * bare["drain_s"] / 100)
    broker.close()
    bare.update(publish=pub, idle_before_pct=round(idle, 1))
    common.log(f"  bare {client} drained {backlog.readings} in {bare['drain_s']:.2f}s "
               f"({bare['rate']:.0f}/s), CPU {bare['cpu_pct']:.0f}%; {bare.get('cpu_window')}")
    return bare


class StoreCounter(Protocol):
    """What is durably stored: `count()` cheaply (may count a point twice), `keys()`
    exactly (distinct (device, ms timestamp))."""

    def count(self) -> int: ...

    def keys(self) -> set[tuple[str, int]]: ...


@dataclass
class Drain:
    """How a timed drain into a store went (`wait_stored`)."""

    t0: float  # time.time() the drain is timed from
    cpu0: float  # the consumer's CPU seconds at t_cpu0
    t_cpu0: float
    t_done: float | None = None  # the poll that first saw every reading stored
    cpu1: float = 0.0  # the consumer's CPU seconds at that poll (or at the timeout)
    stored: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (s since t0, count)
    warnings: list[str] = field(default_factory=list)

    def figures(self, n: int, sampler: CpuSampler) -> dict[str, Any]:
        """drain_s, rate, cpu_pct, cpu_window and rate_10_90 of a complete drain ({} else)."""
        if self.t_done is None:
            return {}
        drain = self.t_done - self.t0
        return {"drain_s": round(drain, 3), "rate": n / drain,
                "cpu_pct": 100 * (self.cpu1 - self.cpu0) / (self.t_done - self.t_cpu0),
                "cpu_window": sampler.window(self.t0, self.t_done),
                "rate_10_90": _middle_rate(self.samples, n)}


def wait_stored(counter: StoreCounter, backlog: Backlog, t0: float, cpu: Callable[[], float],
                timeout: float, poll: float, check_alive: Callable[[], None]) -> Drain:
    """Poll the store every `poll` s until it holds the whole backlog: the cheap count first,
    then the exact distinct keys. `cpu()` is the consumer's CPU seconds; timed from t0."""
    drain = Drain(t0, cpu(), time.time())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive()
        drain.stored = counter.count()
        now = time.time()
        drain.samples.append((round(now - t0, 3), drain.stored))
        if drain.stored >= backlog.readings:
            # Cheap count says done: confirm with the exact distinct count.
            drain.cpu1 = cpu()
            if not backlog.expected - counter.keys():
                drain.t_done = now
                return drain
            note = "sample count reached N before all distinct readings were stored"
            if note not in drain.warnings:
                drain.warnings.append(note)
        time.sleep(poll)
    drain.cpu1 = cpu()
    return drain


def check_stored(counter: StoreCounter, backlog: Backlog, drain: Drain, timeout: float,
                 problems: list[str]) -> int:
    """After a drain: add a problem for a timeout, missing or unexpected points; return how
    many of the backlog's readings are stored."""
    if drain.t_done is None:
        problems.append(f"timed out after {timeout:.0f}s with {drain.stored} of "
                        f"{backlog.readings} stored")
    keys = counter.keys()
    missing = backlog.expected - keys
    extra = keys - backlog.expected
    if missing:
        problems.append(f"{len(missing)} readings missing after stop")
    if extra:
        problems.append(f"{len(extra)} unexpected points stored")
    return len(keys & backlog.expected)


def drain_sentinel(backend: str, repeat: int, run_dir: Path, backlog: Backlog,
                   args: argparse.Namespace, timeout: float, sampler: CpuSampler,
                   stack: contextlib.ExitStack, procs: list[Any],
                   notify_url: str | None = None
                   ) -> tuple[dict[str, Any], dict[str, Any], list[str], list[str]]:
    """The daemon drains the backlog from its persistent session into `backend` (a fresh
    VictoriaMetrics behind the durable spool for `influxdb`), timed from `daemon_ready`.
    Uses args.quiet_wait, args.poll and args.py_spy (+ py_spy_bin; run 1 only). Returns
    (its figures, the publishers' figures, problems, warnings)."""
    from servers import VictoriaMetrics

    problems: list[str] = []
    warnings: list[str] = []
    vm = None
    if backend == "influxdb":
        vm = stack.enter_context(VictoriaMetrics(run_dir / "victoria-metrics"))
    vm_url = vm.url if vm is not None else None

    def setup(port: int) -> None:
        daemon = Daemon(run_dir, backend, port, vm_url, "daemon-setup", notify_url)
        try:
            daemon.start()
            daemon.wait_ready()
        finally:
            code = daemon.stop()
        if code != 0:
            raise RuntimeError(f"setup daemon exited with {code} (log {daemon.log_path})")

    common.log(f"  sentinel → {backend}")
    broker, pub = prepare_broker(run_dir, "sentinel", backlog, setup, stack, procs)
    daemon = Daemon(run_dir, backend, broker.port, vm_url, "daemon", notify_url)
    sampler.pids = {"broker": broker.pid}
    if vm is not None and vm.pid is not None:
        sampler.pids["tsdb"] = vm.pid
    counter: StoreCounter = (VmCounter(vm, backlog.kinds) if vm is not None
                        else SqliteCounter(daemon.state_dir / "readings.sqlite3"))
    spy = None
    idle = common.wait_for_quiet(args.quiet_wait)
    try:
        daemon.start()
        sampler.pids["daemon"] = daemon.pid
        ready = daemon.wait_ready()
        t_ready = common.event_time(ready)
        pid = daemon.pid
        if args.py_spy and repeat == 1:
            out = Path(args.py_spy)
            fmt = {".txt": "raw", ".json": "speedscope"}.get(out.suffix, "flamegraph")
            spy = subprocess.Popen(
                [args.py_spy_bin, "record", "--pid", str(pid), "--rate", "200",
                 "--threads", "--idle", "--format", fmt,
                 "-o", str(out.with_name(f"{out.stem}.{backend}{out.suffix}"))],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                start_new_session=True)
            procs.append(spy)
        drain = wait_stored(counter, backlog, t_ready, lambda: common.proc_cpu(pid), timeout,
                            args.poll, daemon.check_alive)
        daemon.tail.poll()
        hwm = common.peak_rss_mib(pid)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(60)
            _stop_popen(spy)
            procs.remove(spy)
        t_stop = time.time()
        code = daemon.stop()
        stop_s = time.time() - t_stop
    warnings += drain.warnings
    stored = check_stored(counter, backlog, drain, timeout, problems)
    if code != 0:
        problems.append(f"daemon exit code {code}")
    sentinel: dict[str, Any] = {
        "startup_s": round(t_ready - daemon.spawned_at, 3),
        "stored": stored,
        "stop_s": round(stop_s, 3),
        "exit_code": code,
        "rss_mib": round(hwm, 1),
        "progress": drain.samples,
        "log": str(daemon.log_path),
        "idle_before_pct": round(idle, 1),
        **drain.figures(backlog.readings, sampler),
    }
    stopped = daemon.tail.find("daemon_stopped")
    if stopped is not None:
        sentinel["daemon_stopped"] = {k: stopped.get(k)
                                      for k in ("received", "stored", "rejected")}
    sentinel["log_warnings"] = common.daemon_log_findings(daemon.tail.events, problems,
                                                          warnings)
    if spy is not None:
        warnings.append("py-spy was attached: these figures include its overhead")
    if "rate" in sentinel:
        common.log(f"  sentinel stored {backlog.readings} in {sentinel['drain_s']:.2f}s "
                   f"({sentinel['rate']:.0f}/s), CPU {sentinel['cpu_pct']:.0f}%, "
                   f"RSS {sentinel['rss_mib']:.0f} MiB; {sentinel.get('cpu_window')}")
    return sentinel, pub, problems, warnings


def disturbed(figures: list[dict[str, Any]], limit: float) -> str | None:
    """A warning when foreign processes used more than `limit` % CPU during any of these
    drains (their `cpu_window`), else None."""
    foreign = max((f.get("cpu_window", {}).get("foreign", 0.0) for f in figures), default=0.0)
    if foreign > limit:
        return (f"other processes on this machine used up to {foreign:.0f}% CPU during a "
                "drain: figures of this run are disturbed")
    return None


def run_once(backend: str, repeat: int, backlog: Backlog, args: argparse.Namespace,
             base_dir: Path, procs: list[Any]) -> RunResult:
    run_dir = base_dir / f"{backend}-{repeat}"
    run_dir.mkdir(parents=True)
    timeout = args.drain_timeout or max(120.0, backlog.readings / 400)
    load = {"loadavg_start": os.getloadavg()[0]}
    with contextlib.ExitStack() as stack:
        sampler = stack.enter_context(CpuSampler())
        common.log(f"run {repeat} [{backend}]:")
        bare = drain_bare("paho", run_dir, backlog, timeout, args.quiet_wait, sampler, stack,
                          procs)
        sentinel, pub, problems, warnings = drain_sentinel(
            backend, repeat, run_dir, backlog, args, timeout, sampler, stack, procs)
    load.update(idle_before_bare_pct=bare["idle_before_pct"],
                idle_before_sentinel_pct=sentinel["idle_before_pct"],
                loadavg_end=os.getloadavg()[0])
    note = disturbed([bare, sentinel], args.foreign_warn)
    if note:
        warnings.append(note)
    result = RunResult(backend, repeat, backlog.readings, pub, bare, sentinel, not problems,
                       problems, warnings, load)
    if "rate" in sentinel:
        common.log(f"  ratio sentinel / bare paho {sentinel['rate'] / bare['rate']:.2f}")
    common.log_findings(problems, warnings)
    return result


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def summarise(results: list[RunResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend in dict.fromkeys(r.backend for r in results):
        runs = [r for r in results if r.backend == backend]
        good = [r for r in runs if "rate" in r.sentinel]
        out[backend] = {
            "runs": len(runs),
            "complete_runs": len(good),
            "sentinel_rate": common.median([r.sentinel["rate"] for r in good]),
            "sentinel_drain_s": common.median([r.sentinel["drain_s"] for r in good]),
            "sentinel_cpu_pct": common.median([r.sentinel["cpu_pct"] for r in good]),
            "sentinel_rss_mib": common.median([r.sentinel["rss_mib"] for r in runs]),
            "sentinel_startup_s": common.median([r.sentinel["startup_s"] for r in runs]),
            "bare_rate": common.median([r.bare["rate"] for r in runs]),
            "bare_drain_s": common.median([r.bare["drain_s"] for r in runs]),
            "bare_cpu_pct": common.median([r.bare["cpu_pct"] for r in runs]),
            "ratio": common.median([r.sentinel["rate"] / r.bare["rate"] for r in good]),
            "publish_rate": common.median([r.publish["rate"] for r in runs]),
        }
    return out


def print_table(summary: dict[str, Any], backlog: Backlog, repeat: int) -> None:
    def f(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    print()
    print(f"sentinel ingest benchmark: {backlog.readings} readings (= messages, QoS 1) from "
          f"{backlog.devices} devices, backlog drained from a persistent session; "
          f"median of {repeat} run(s)")
    head = (f"{'consumer':<22}{'drain s':>9}{'readings/s':>12}{'CPU %':>8}"
            f"{'peak RSS MiB':>14}{'vs bare':>9}")
    print(head)
    print("-" * len(head))
    for backend, s in summary.items():
        print(f"{'bare paho (ceiling)':<22}{f(s['bare_drain_s'], '.2f'):>9}"
              f"{f(s['bare_rate'], ',.0f'):>12}{f(s['bare_cpu_pct'], '.0f'):>8}"
              f"{'':>14}{'1.00':>9}")
        print(f"{'sentinel → ' + backend:<22}{f(s['sentinel_drain_s'], '.2f'):>9}"
              f"{f(s['sentinel_rate'], ',.0f'):>12}{f(s['sentinel_cpu_pct'], '.0f'):>8}"
              f"{f(s['sentinel_rss_mib'], '.0f'):>14}{f(s['ratio'], '.2f'):>9}")
    print()
    for backend, s in summary.items():
        print(f"[{backend}] daemon start-up {f(s['sentinel_startup_s'], '.2f')} s (excluded); "
              f"backlog published at {f(s['publish_rate'], ',.0f')} msg/s; "
              f"{s['complete_runs']}/{s['runs']} runs complete")


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------


def kill_all(procs: list[Any]) -> None:
    """Stop every process (publishers, bare consumers, py-spy) still in `procs`."""
    for proc in list(procs):
        with contextlib.suppress(Exception):
            if isinstance(proc, subprocess.Popen):
                _stop_popen(proc, 10)
            else:
                proc.terminate()
                proc.join(5)
                if proc.exitcode is None:
                    proc.kill()
                    proc.join(5)
        procs.remove(proc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--bare-consumer"]:
        port, mode, count, topics, timeout = argv[1:6]
        consumer = aiomqtt_consumer_main if argv[6:7] == ["aiomqtt"] else bare_consumer_main
        return consumer(int(port), mode, int(count), json.loads(topics), float(timeout))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=200_000,
                        help="backlog size, readings = messages (default 200000)")
    parser.add_argument("--backend", choices=["influxdb", "sqlite", "both"], default="influxdb")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--poll", type=float, default=0.2,
                        help="seconds between store polls (the timing resolution)")
    common.add_shared_options(
        parser, unit="run", window="during a drain",
        repeat_help="runs per backend (median)",
        json_help="write every run and the medians to this file",
        drain_timeout=0.0,
        drain_timeout_help="give up a drain after this many seconds (default: N/400, ≥120)",
        quiet_wait=60.0)
    parser.add_argument("--py-spy", metavar="OUT.svg",
                        help="record the daemon's drain in run 1 with py-spy (skews that "
                             "run); .svg flame graph, .txt collapsed stacks, .json speedscope;"
                             " the backend is added to the name")
    parser.add_argument("--py-spy-bin", default=shutil.which("py-spy") or
                        str(Path(sys.executable).parent / "py-spy"))
    args = parser.parse_args(argv)
    backends = ["influxdb", "sqlite"] if args.backend == "both" else [args.backend]

    base_dir = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    procs: list[Any] = []
    results: list[RunResult] = []
    failed = False
    try:
        with common.sigterm_as_interrupt():
            t = time.monotonic()
            backlog = build_backlog(args.readings, args.publishers)
            skipped = ", ".join(f"{v} {k}" for k, v in backlog.skipped.items())
            common.log(f"backlog: {backlog.readings} readings from {backlog.devices} devices "
                       f"({backlog.payload_bytes / 1e6:.1f} MB payload; left out, no device "
                       f"timestamp: {skipped}); built in {time.monotonic() - t:.1f}s; "
                       f"runs in {base_dir}")
            for repeat in range(1, args.repeat + 1):
                for backend in backends:
                    results.append(run_once(backend, repeat, backlog, args, base_dir, procs))
    except KeyboardInterrupt:
        common.log("interrupted: stopping everything")
        failed = True
        return 130
    except Exception:
        failed = True
        raise
    finally:
        kill_all(procs)
        failed = failed or any(not r.ok for r in results)
        common.keep_or_remove(base_dir, args.keep or failed)
        if results:
            summary = summarise(results)
            print_table(summary, backlog, args.repeat)
            for r in results:
                common.print_findings(f"run {r.repeat} [{r.backend}]", r.problems, r.warnings)
            if args.json:
                doc = {
                    "readings": backlog.readings, "devices": backlog.devices,
                    "left_out_devices": backlog.skipped, "payload_bytes": backlog.payload_bytes,
                    "repeat": args.repeat, "cpus": os.cpu_count(),
                    "summary": summary, "runs": [asdict(r) for r in results],
                }
                common.write_json(args.json, doc)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
