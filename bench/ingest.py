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
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import common  # first: it puts src/ and tests/ on sys.path

CONFIG = common.ROOT / "config" / "sentinel.toml"
CLIENT_ID = "sentinel-shuibei"  # [mqtt] client_id of config/sentinel.toml
BARE_CLIENT_ID = "bench-bare-paho"
RECEIVE_MAXIMUM = 1000  # [mqtt] receive_maximum of config/sentinel.toml; the bare client too


# ---------------------------------------------------------------------------------------
# The backlog: every device whose profile carries a timestamp, round-robin, one reading
# per message, each with a unique (device, ms timestamp).
# ---------------------------------------------------------------------------------------


def _values(device: Any, i: int) -> dict[str, Any]:
    """Plausible canonical values for reading number i of a device (all within range)."""
    v: dict[str, Any] = {
        "battery": float(60 + i % 40),
        "battery_voltage": round(2.9 + (i % 30) * 0.01, 2),
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
        v.update(pressure=round(0.30 + (i % 10) * 0.01, 2))
    elif kind == "water_level":
        tank = device.settings.tank_height_m or 3.0
        share = 0.70 + (i % 10) * 0.02
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


def build_backlog(n: int, publishers: int) -> Backlog:
    from sentinel.config.check import load_all
    from sentinel.decode import Decoder
    from sentinel.decode.encode import encode
    from sentinel.types import RawMessage

    loaded = load_all(CONFIG)
    decoder = Decoder(loaded.profiles, loaded.inventory, loaded.kinds, loaded.settings.ingest)
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
            reading = decoder.decode(RawMessage(topic, payload, 1, False, now, None))
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
# Bare paho consumer (a fresh interpreter: `ingest.py --bare-consumer ...`)
# ---------------------------------------------------------------------------------------


def bare_consumer_main(port: int, mode: str, count: int, topics: list[str],
                       timeout: float) -> int:
    """`setup`: create the persistent session and its subscriptions, then disconnect.
    `drain`: reconnect to the session, receive `count` messages (paho acks each on
    receipt), print one JSON line. Same MQTT 5 session settings as the daemon; the socket
    is read in bursts of up to 256 packets per readable event, as the daemon does."""
    state: dict[str, Any] = {"received": 0, "connack": None, "subscribed": False}

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
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    client.connect(common.HOST, port, keepalive=30, clean_start=False, properties=props)
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
    if mode == "setup":
        print(json.dumps({"subscribed": state["subscribed"]}), flush=True)
        return 0 if state["subscribed"] else 1
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    result = {"received": state["received"], "connack": state["connack"], "done": done_at,
              "session_present": state.get("session_present")}
    if done_at is not None and state["connack"] is not None:
        drain = done_at - state["connack"]
        result.update(drain_s=drain, rate=count / drain,
                      cpu_pct=100 * (cpu1 - state["cpu0"]) / drain, rss_mib=hwm / 1024)
    print(json.dumps(result), flush=True)
    return 0 if done_at is not None else 1


def run_bare(port: int, mode: str, count: int, topics: list[str], timeout: float,
             procs: list[Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-consumer", str(port), mode,
           str(count), json.dumps(topics), str(timeout)]
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
        raise RuntimeError(f"bare consumer ({mode}) printed nothing, exit {proc.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    if proc.returncode != 0:
        raise RuntimeError(f"bare consumer ({mode}) failed: {result}")
    return result


# ---------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------


def _stop_popen(proc: subprocess.Popen[Any], timeout: float = 30.0) -> int | None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _proc_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


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
        `foreign` = system - this process - watched pids - `known` CPU seconds."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return {}
        (a_t, a_sys, a_self, a_p), (b_t, b_sys, b_self, b_p) = inside[0], inside[-1]
        dt = b_t - a_t
        out = {name: 100 * (b_p[name] - a_p[name]) / dt for name in b_p if name in a_p}
        sys_pct = 100 * (b_sys - a_sys) / dt
        ours = 100 * (b_self - a_self) / dt + sum(out.values()) + 100 * known / (t1 - t0)
        out.update(system=sys_pct, bench=100 * (b_self - a_self) / dt,
                   foreign=max(0.0, sys_pct - ours))
        return {k: round(v, 1) for k, v in out.items()}


class Daemon:
    def __init__(self, run_dir: Path, backend: str, port: int, vm_url: str | None,
                 name: str) -> None:
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
            run_dir / f"{name}-oncall.yaml", default=[accepting_sink_url()]))
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


def _prepare_broker(run_dir: Path, name: str, backlog: Backlog, daemon_factory: Any,
                    stack: contextlib.ExitStack, procs: list[Any], timeout: float
                    ) -> tuple[Any, dict[str, Any]]:
    """A fresh broker with exactly one persistent session holding the whole backlog."""
    from servers import Mosquitto

    broker = stack.enter_context(Mosquitto(run_dir / f"mosquitto-{name}",
                                           extra_config=common.BROKER_EXTRA))
    if name == "bare":
        run_bare(broker.port, "setup", 0, backlog.topics, 30, procs)
    else:
        setup = daemon_factory(broker.port, "daemon-setup")
        try:
            setup.start()
            setup.wait_ready()
        finally:
            code = setup.stop()
        if code != 0:
            raise RuntimeError(f"setup daemon exited with {code} (log {setup.log_path})")
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


def run_once(backend: str, repeat: int, backlog: Backlog, args: argparse.Namespace,
             base_dir: Path, procs: list[Any]) -> RunResult:
    from servers import VictoriaMetrics

    run_dir = base_dir / f"{backend}-{repeat}"
    run_dir.mkdir(parents=True)
    n = backlog.readings
    timeout = args.drain_timeout or max(120.0, n / 400)
    problems: list[str] = []
    warnings: list[str] = []
    load = {"loadavg_start": os.getloadavg()[0]}
    with contextlib.ExitStack() as stack:
        sampler = stack.enter_context(CpuSampler())
        # -- ceiling: bare paho on its own broker with the same backlog ----------------
        common.log(f"run {repeat} [{backend}]: bare paho")
        broker, _ = _prepare_broker(run_dir, "bare", backlog, None, stack, procs, timeout)
        sampler.pids = {"broker": broker.pid}
        load["idle_before_bare_pct"] = round(common.wait_for_quiet(args.quiet_wait), 1)
        bare = run_bare(broker.port, "drain", n, backlog.topics, timeout, procs)
        if bare.get("done"):
            bare["cpu_window"] = sampler.window(bare["connack"], bare["done"],
                                                known=bare["cpu_pct"] * bare["drain_s"] / 100)
        broker.close()
        common.log(f"  bare paho drained {n} in {bare['drain_s']:.2f}s ({bare['rate']:.0f}/s), "
                   f"CPU {bare['cpu_pct']:.0f}%; {bare.get('cpu_window')}")

        # -- sentinel ------------------------------------------------------------------
        vm = None
        if backend == "influxdb":
            vm = stack.enter_context(VictoriaMetrics(run_dir / "victoria-metrics"))
        vm_url = vm.url if vm is not None else None

        def factory(port: int, name: str) -> Daemon:
            return Daemon(run_dir, backend, port, vm_url, name)

        common.log(f"run {repeat} [{backend}]: sentinel")
        broker, pub = _prepare_broker(run_dir, "sentinel", backlog, factory, stack, procs,
                                      timeout)
        daemon = factory(broker.port, "daemon")
        sampler.pids = {"broker": broker.pid}
        if vm is not None and vm.pid is not None:
            sampler.pids["tsdb"] = vm.pid
        counter: Any = (VmCounter(vm, backlog.kinds) if vm is not None
                        else SqliteCounter(daemon.state_dir / "readings.sqlite3"))
        spy = None
        load["idle_before_sentinel_pct"] = round(common.wait_for_quiet(args.quiet_wait), 1)
        try:
            daemon.start()
            sampler.pids["daemon"] = daemon.pid
            ready = daemon.wait_ready()
            t_ready = common.event_time(ready)
            cpu0, t_cpu0 = common.proc_cpu(daemon.pid), time.time()
            if args.py_spy and repeat == 1:
                out = Path(args.py_spy)
                fmt = {".txt": "raw", ".json": "speedscope"}.get(out.suffix, "flamegraph")
                spy = subprocess.Popen(
                    [args.py_spy_bin, "record", "--pid", str(daemon.pid), "--rate", "200",
                     "--threads", "--idle", "--format", fmt,
                     "-o", str(out.with_name(f"{out.stem}.{backend}{out.suffix}"))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                    start_new_session=True)
                procs.append(spy)
            deadline = time.monotonic() + timeout
            stored, t_done, samples = 0, None, []
            while time.monotonic() < deadline:
                daemon.check_alive()
                stored = counter.count()
                now = time.time()
                samples.append((round(now - t_ready, 3), stored))
                if stored >= n:
                    # Cheap count says done: confirm with the exact distinct count.
                    t_candidate, cpu1 = now, common.proc_cpu(daemon.pid)
                    keys = counter.keys()
                    missing = len(backlog.expected - keys)
                    if missing == 0:
                        t_done = t_candidate
                        break
                    note = "sample count reached N before all distinct readings were stored"
                    if note not in warnings:
                        warnings.append(note)
                time.sleep(args.poll)
            else:
                cpu1 = common.proc_cpu(daemon.pid)
            daemon.tail.poll()
            hwm = _proc_hwm_mib(daemon.pid)
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
        if t_done is None:
            problems.append(f"timed out after {timeout:.0f}s with {stored} of {n} stored")
        keys = counter.keys()
        missing = backlog.expected - keys
        extra = keys - backlog.expected
        if missing:
            problems.append(f"{len(missing)} readings missing after stop")
        if extra:
            problems.append(f"{len(extra)} unexpected points stored")
        if code != 0:
            problems.append(f"daemon exit code {code}")
        sentinel: dict[str, Any] = {
            "startup_s": round(t_ready - daemon.spawned_at, 3),
            "stored": len(keys & backlog.expected),
            "stop_s": round(stop_s, 3),
            "exit_code": code,
            "rss_mib": round(hwm, 1),
            "progress": samples,
            "log": str(daemon.log_path),
        }
        if t_done is not None:
            drain = t_done - t_ready
            sentinel.update(drain_s=round(drain, 3), rate=n / drain,
                            cpu_pct=100 * (cpu1 - cpu0) / (t_candidate - t_cpu0),
                            cpu_window=sampler.window(t_ready, t_done),
                            rate_10_90=_middle_rate(samples, n))
        stopped = daemon.tail.find("daemon_stopped")
        if stopped is not None:
            sentinel["daemon_stopped"] = {k: stopped.get(k)
                                          for k in ("received", "stored", "rejected")}
        sentinel["log_warnings"] = common.daemon_log_findings(daemon.tail.events, problems,
                                                              warnings)
        if spy is not None:
            warnings.append("py-spy was attached: these figures include its overhead")
    load["loadavg_end"] = os.getloadavg()[0]
    foreign = max(bare.get("cpu_window", {}).get("foreign", 0.0),
                  sentinel.get("cpu_window", {}).get("foreign", 0.0))
    if foreign > args.foreign_warn:
        warnings.append(f"other processes on this machine used up to {foreign:.0f}% CPU "
                        "during a drain: figures of this run are disturbed")
    result = RunResult(backend, repeat, n, pub, bare, sentinel, not problems, problems,
                       warnings, load)
    if "rate" in sentinel:
        common.log(f"  sentinel stored {n} in {sentinel['drain_s']:.2f}s "
                   f"({sentinel['rate']:.0f}/s, ratio {sentinel['rate'] / bare['rate']:.2f}), "
                   f"CPU {sentinel['cpu_pct']:.0f}%, RSS {sentinel['rss_mib']:.0f} MiB; "
                   f"{sentinel.get('cpu_window')}")
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


def _kill_all(procs: list[Any]) -> None:
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
        return bare_consumer_main(int(port), mode, int(count), json.loads(topics),
                                  float(timeout))
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
        _kill_all(procs)
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
