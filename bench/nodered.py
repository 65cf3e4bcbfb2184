#!/usr/bin/env python3
"""The Node-RED peer of the ingest benchmark: Node-RED doing sentinel's job.

Flow (written by :class:`NodeRedPeer` into its work directory)::

    mqtt in (one per topic filter, QoS 1, persistent session)
      -> json -> function "threshold" (bench/nodered/threshold.js)
           output 1 -> join (500 messages or 1 s) -> influxdb batch (InfluxDB v2 API,
                       precision ms) -> VictoriaMetrics /api/v2/write
           output 2 -> mqtt out (alarm topic, QoS 1, retain false)

Every reading becomes one point of measurement ``nodered``: tag ``device``, the numeric and
boolean fields of the payload (nested objects flattened with ``_``; booleans are written as
booleans, which VictoriaMetrics stores as 1/0), the device's own time in ms, and a constant
field ``reading=1``, so VictoriaMetrics has one metric per field, ``nodered_<field>``, and
``nodered_reading`` counts the readings.

Node-RED and node-red-contrib-influxdb are pinned in ``bench/nodered/package.json`` and
``package-lock.json`` and installed with ``npm ci`` into a cache directory outside the
repository (``$SENTINEL_BENCH_CACHE/node-red-<hash>``, default ``~/.cache/sentinel-bench``).

Use from another script::

    import nodered                                   # bench/ on sys.path
    peer = nodered.NodeRedPeer(workdir, broker.port, vm.url, backlog.topics)
    with peer:                                       # __exit__ stops it; __enter__ doesn't start
        peer.start()                                 # connected and subscribed: session exists
        peer.stop()
        ...publish the backlog...
        peer.start()                                 # drains the backlog from here
        t0 = peer.connected_at                       # time.time() of its CONNACK
        while nodered.count_stored(vm.url) < n: ...
        assert nodered.stored_keys(vm.url) == backlog.expected

Self-test (a private Mosquitto and VictoriaMetrics, a small backlog, alarms)::

    .venv/bin/python bench/nodered.py --selftest [--readings 5000] [--keep]

Rates from small backlogs are dominated by fixed tails: the last partial batch waits up to
1 s for the join timeout, and VictoriaMetrics makes samples searchable up to ~1 s after
``/internal/force_flush``. Use 50,000 readings or more for a drain rate worth quoting.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import common  # bench/: shared helpers (and src/, tests/ on sys.path)

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = HERE / "nodered"  # package.json, package-lock.json, flow parts
HOST = "127.0.0.1"
MEASUREMENT = "nodered"
COUNT_FIELD = "reading"  # a constant field every point has
DEFAULT_ALARM_TOPIC = "bench/nodered/alarms"
DEFAULT_CLIENT_ID = "bench-node-red"
# Topic filters whose messages are plain values, not JSON (wired around the json node).
PLAIN_VALUE_PREFIXES = ("esphome/",)
MIN_NODE = (18, 5)  # node-red 4.x: engines.node ">=18.5"


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] nodered: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where the pinned Node-RED installs go (``SENTINEL_BENCH_CACHE`` overrides)."""
    base = os.environ.get("SENTINEL_BENCH_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "sentinel-bench"


def _node_binary() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        missing = [name for name, path in (("node", node), ("npm", npm)) if path is None]
        raise RuntimeError(f"the Node-RED peer needs Node.js and npm, but {' and '.join(missing)}"
                           f" {'is' if len(missing) == 1 else 'are'} not on PATH: install them "
                           "with `apt-get install nodejs npm`")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    match = re.match(r"v(\d+)\.(\d+)", out.stdout.strip())
    if match is None or (int(match[1]), int(match[2])) < MIN_NODE:
        raise RuntimeError(f"Node-RED 4 needs Node.js >= {MIN_NODE[0]}.{MIN_NODE[1]}, "
                           f"`node --version` says {out.stdout.strip() or out.stderr.strip()!r}")
    return node


def _install_key() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((PACKAGE_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


def install_dir() -> Path:
    """The install directory for the current package.json + package-lock.json."""
    return cache_dir() / f"node-red-{_install_key()}"


def _red_js(root: Path) -> Path:
    return root / "node_modules" / "node-red" / "red.js"


def ensure_installed() -> Path:
    """Install the pinned node-red and node-red-contrib-influxdb (``npm ci``) into the cache
    unless already there; return the path of node-red's ``red.js`` (run it with ``node``).

    Raises RuntimeError when node/npm are missing or too old, or when npm fails."""
    _node_binary()
    target = install_dir()
    marker = target / ".installed"
    if marker.exists() and _red_js(target).exists():
        return _red_js(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".node-red.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another benchmark may be installing right now
        if marker.exists() and _red_js(target).exists():
            return _red_js(target)
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copy2(PACKAGE_DIR / name, staging / name)
            _log(f"installing pinned Node-RED ({', '.join(pinned_versions().values())}) into "
                 f"{target} with npm ci ...")
            started = time.monotonic()
            # --ignore-scripts: no install script may download anything (bcrypt is optional;
            # Node-RED falls back to bcryptjs, and there are no credentials anyway).
            cmd = ["npm", "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund",
                   "--no-update-notifier", "--loglevel=warn"]
            proc = subprocess.run(cmd, cwd=staging, stdin=subprocess.DEVNULL,
                                  stdout=sys.stderr, stderr=sys.stderr, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode} "
                                   f"in {staging}")
            if not _red_js(staging).exists():
                raise RuntimeError(f"npm ci finished but {_red_js(staging)} is missing")
            (staging / ".installed").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
            if target.exists():  # a broken earlier attempt
                shutil.rmtree(target)
            staging.rename(target)
            _log(f"installed in {time.monotonic() - started:.0f}s")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return _red_js(target)


def pinned_versions() -> dict[str, str]:
    """The versions package.json pins, e.g. {"node-red": "4.1.8", ...}."""
    doc = json.loads((PACKAGE_DIR / "package.json").read_text())
    deps: dict[str, str] = doc["dependencies"]
    return {name: f"{name}@{version}" for name, version in deps.items()}


# ---------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------


def flow(broker_port: int, vm_url: str, topics: list[str], alarm_topic: str, client_id: str,
         *, mqtt_version: int = 5, session_expiry: int = 86400, batch_count: int = 500,
         batch_timeout: float = 1.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """flows.json and flows_cred.json (plain: credentialSecret is false) of the peer."""
    tab = "nr-tab"
    broker: dict[str, Any] = {
        "id": "nr-broker", "type": "mqtt-broker", "name": "bench broker",
        "broker": HOST, "port": str(broker_port), "clientid": client_id,
        "autoConnect": True, "usetls": False, "protocolVersion": str(mqtt_version),
        "keepalive": "60",
        # Persistent session: clean start false (+ session expiry for MQTT 5), and no
        # UNSUBSCRIBE when Node-RED stops, so a backlog queues while it is down.
        "cleansession": False, "autoUnsubscribe": False,
        "sessionExpiry": str(session_expiry) if mqtt_version == 5 else "",
        "birthTopic": "", "birthQos": "0", "birthPayload": "", "birthMsg": {},
        "closeTopic": "", "closeQos": "0", "closePayload": "", "closeMsg": {},
        "willTopic": "", "willQos": "0", "willPayload": "", "willMsg": {},
        "userProps": "",
    }
    influx: dict[str, Any] = {
        "id": "nr-influx", "type": "influxdb", "name": "victoria-metrics",
        "hostname": HOST, "port": "8086", "protocol": "http", "database": "",
        "usetls": False, "tls": "", "influxdbVersion": "2.0", "url": vm_url.rstrip("/"),
        "timeout": "10", "rejectUnauthorized": True,
    }
    nodes: list[dict[str, Any]] = [
        {"id": tab, "type": "tab", "label": "sentinel peer", "disabled": False, "info": ""},
        broker,
        influx,
    ]
    for i, topic in enumerate(topics):
        plain = topic.startswith(PLAIN_VALUE_PREFIXES)
        nodes.append({
            "id": f"nr-in-{i}", "type": "mqtt in", "z": tab, "name": "", "topic": topic,
            "qos": "1", "datatype": "utf8", "broker": broker["id"], "nl": False,
            "rap": True, "rh": 0, "inputs": 0, "x": 150, "y": 60 + 60 * i,
            "wires": [["nr-threshold" if plain else "nr-json"]],
        })
    nodes += [
        {"id": "nr-json", "type": "json", "z": tab, "name": "", "property": "payload",
         "action": "obj", "pretty": False, "x": 350, "y": 60, "wires": [["nr-threshold"]]},
        {"id": "nr-threshold", "type": "function", "z": tab, "name": "threshold",
         "func": (PACKAGE_DIR / "threshold.js").read_text(), "outputs": 2, "timeout": 0,
         "noerr": 0, "initialize": "", "finalize": "", "libs": [], "x": 520, "y": 60,
         "wires": [["nr-join"], ["nr-alarm"]]},
        {"id": "nr-join", "type": "join", "z": tab, "name": "batch", "mode": "custom",
         "build": "array", "property": "payload", "propertyType": "msg", "key": "topic",
         "joiner": "\\n", "joinerType": "str", "useparts": False, "accumulate": False,
         "timeout": f"{batch_timeout:g}", "count": str(batch_count), "reduceRight": False,
         "reduceExp": "", "reduceInit": "", "reduceInitType": "", "reduceFixup": "",
         "x": 700, "y": 40, "wires": [["nr-write"]]},
        {"id": "nr-write", "type": "influxdb batch", "z": tab, "name": "",
         "influxdb": influx["id"], "precision": "", "retentionPolicy": "", "database": "",
         "precisionV18FluxV20": "ms", "retentionPolicyV18Flux": "", "org": "sentinel",
         "bucket": "bench", "x": 880, "y": 40, "wires": []},
        {"id": "nr-alarm", "type": "mqtt out", "z": tab, "name": "alarms",
         "topic": alarm_topic, "qos": "1", "retain": "false", "respTopic": "",
         "contentType": "", "userProps": "", "correl": "", "expiry": "",
         "broker": broker["id"], "x": 700, "y": 100, "wires": []},
    ]
    # No token: VictoriaMetrics ignores it, and a stored credential only makes Node-RED warn
    # ("Using unencrypted credentials"). The write URL still carries org, bucket, precision.
    return nodes, {}


# ---------------------------------------------------------------------------------------
# The peer process
# ---------------------------------------------------------------------------------------

_LIVE: weakref.WeakSet[NodeRedPeer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for peer in list(_LIVE):
        with contextlib.suppress(Exception):
            peer.kill()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"<no log at {path}>"


# Printed at every start as [warn] although nothing is wrong.
_BENIGN_WARNINGS = ("Projects disabled",)


class NodeRedPeer:
    """Node-RED running the peer flow, with everything it writes under ``workdir``
    (``userdir/`` with settings.js and flows.json; ``node-red.log``;
    ``mqtt-events.jsonl``: CONNACK/SUBACK notes).

    A context manager: ``__enter__`` returns the peer *without* starting it (the benchmark
    starts it twice), ``__exit__`` stops it. ``start()`` returns once the MQTT client is
    connected and every topic filter is acknowledged at QoS 1; ``connected_at`` is then the
    ``time.time()`` of that CONNACK and ``session_present`` what the broker said.
    """

    def __init__(self, workdir: Path, broker_port: int, vm_url: str, topics: list[str],
                 alarm_topic: str = DEFAULT_ALARM_TOPIC, client_id: str = DEFAULT_CLIENT_ID,
                 *, mqtt_version: int = 5, session_expiry: int = 86400,
                 batch_count: int = 500, batch_timeout: float = 1.0,
                 tcp_nodelay: bool = False, node_args: list[str] | None = None) -> None:
        if mqtt_version not in (4, 5):
            raise ValueError("mqtt_version must be 4 (3.1.1) or 5")
        self.workdir = Path(workdir).resolve()
        self.user_dir = self.workdir / "userdir"
        self.log_path = self.workdir / "node-red.log"
        self.events_path = self.workdir / "mqtt-events.jsonl"
        self.settings_path = self.user_dir / "settings.js"
        self.broker_port = broker_port
        self.vm_url = vm_url.rstrip("/")
        self.topics = list(topics)
        self.alarm_topic = alarm_topic
        self.client_id = client_id
        self.mqtt_version = mqtt_version
        self.session_expiry = session_expiry
        self.batch_count = batch_count
        self.batch_timeout = batch_timeout
        self.tcp_nodelay = tcp_nodelay
        self.node_args = list(node_args or [])  # e.g. ["--cpu-prof"], before red.js
        self.ui_port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.spawned_at: float | None = None
        self.connected_at: float | None = None
        self.session_present: bool | None = None
        self._events_offset = 0

    # -- info -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.ui_port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_problems(self) -> dict[str, int]:
        """Counts of Node-RED's ``[warn]`` and ``[error]`` log lines so far."""
        lines = [line for line in self.log_text().splitlines()
                 if not any(benign in line for benign in _BENIGN_WARNINGS)]
        return {level: sum(f"[{level}]" in line for line in lines) for level in ("warn", "error")}

    def peak_rss_mib(self) -> float:
        """VmHWM of the running Node-RED process, in MiB."""
        assert self.pid is not None
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def cpu_seconds(self) -> float:
        """utime + stime of the Node-RED process (all threads)."""
        assert self.pid is not None
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- files ----------------------------------------------------------------------------
    def _write_files(self, red_js: Path) -> None:
        self.user_dir.mkdir(parents=True, exist_ok=True)
        nodes, creds = flow(self.broker_port, self.vm_url, self.topics, self.alarm_topic,
                            self.client_id, mqtt_version=self.mqtt_version,
                            session_expiry=self.session_expiry, batch_count=self.batch_count,
                            batch_timeout=self.batch_timeout)
        (self.user_dir / "flows.json").write_text(json.dumps(nodes, indent=2) + "\n")
        cred_file = self.user_dir / "flows_cred.json"
        if creds:
            cred_file.write_text(json.dumps(creds, indent=2) + "\n")
        else:
            cred_file.unlink(missing_ok=True)
        bench = {
            "uiPort": self.ui_port,
            "userDir": str(self.user_dir),
            "eventsFile": str(self.events_path),
            "nodesDir": str(red_js.parents[1] / "@node-red" / "nodes"),
            "tcpNoDelay": self.tcp_nodelay,
        }
        template = (PACKAGE_DIR / "settings.template.js").read_text()
        placeholder = "const bench = __BENCH__;"
        if placeholder not in template:
            raise RuntimeError(f"{placeholder!r} not found in settings.template.js")
        settings = template.replace(placeholder, f"const bench = {json.dumps(bench, indent=4)};")
        self.settings_path.write_text(settings)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Self:
        """Start Node-RED; return once its client is connected and subscribed."""
        if self.running:
            raise RuntimeError(f"Node-RED is already running (pid {self.pid})")
        red_js = ensure_installed()
        node = _node_binary()
        for attempt in range(3):
            if self.ui_port is None or attempt > 0:
                self.ui_port = _free_port()
            self._write_files(red_js)
            try:
                self._start_once(node, red_js, timeout)
                return self
            except _PortBusy:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, node: str, red_js: Path, timeout: float) -> None:
        self.connected_at = self.session_present = None
        self._events_offset = self.events_path.stat().st_size if self.events_path.exists() else 0
        env = dict(os.environ)
        env.update({"NODE_RED_DISABLE_TELEMETRY": "1", "NO_UPDATE_NOTIFIER": "1",
                    "NODE_ENV": "production"})
        cmd = [node, *self.node_args, str(red_js), "--settings", str(self.settings_path),
               "--userDir", str(self.user_dir), "--no-telemetry"]
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self.spawned_at = time.time()
            self.process = subprocess.Popen(cmd, cwd=self.workdir, env=env,
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        acked: set[str] = set()
        while True:
            for event in self._new_events():
                if event.get("event") == "patch_failed":
                    self.kill()
                    raise RuntimeError(f"settings.js could not patch MQTT.js: {event}")
                if event.get("client") != self.client_id:
                    continue
                if event.get("event") == "connack":  # a (re)connection: subscribe anew
                    self.connected_at = float(event["t"]) / 1000
                    self.session_present = bool(event.get("session_present"))
                    acked.clear()
                elif event.get("event") == "suback":
                    if event.get("error"):
                        self.kill()
                        raise RuntimeError(f"Node-RED's subscription failed: {event}")
                    for topic, qos in event.get("granted", []):
                        if qos not in (1, 2):
                            self.kill()
                            raise RuntimeError(f"broker granted QoS {qos} for {topic!r}")
                        acked.add(topic)
            if self.connected_at is not None and acked >= set(self.topics):
                return
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                _LIVE.discard(self)
                with self.log_path.open("rb") as f:
                    f.seek(log_start)
                    text = f.read().decode(errors="replace")
                if "port in use" in text or "EADDRINUSE" in text:
                    raise _PortBusy(f"port {self.ui_port} taken")
                raise RuntimeError(f"Node-RED exited with code {code} while starting; log "
                                   f"tail:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"Node-RED not connected and subscribed within {timeout:.0f}s "
                    f"(connected: {self.connected_at is not None}, acked: {sorted(acked)}); "
                    f"log tail:\n{_tail(self.log_path)}")
            time.sleep(0.02)

    def _new_events(self) -> list[dict[str, Any]]:
        try:
            with self.events_path.open("rb") as f:
                f.seek(self._events_offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1  # complete lines only
        self._events_offset += end
        events = []
        for line in chunk[:end].splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (Node-RED closes its nodes and disconnects), SIGKILL after ``timeout``.
        Returns the exit code (None if it was not running). Idempotent."""
        proc = self.process
        if proc is None:
            return None
        code = common.stop_process(proc, timeout)
        self.process = None
        _LIVE.discard(self)
        return code

    def kill(self) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self.process = None
        _LIVE.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<NodeRedPeer pid={self.pid} ui={self.ui_port} {self.workdir}>"


class _PortBusy(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------
# Reading back what the flow stored
# ---------------------------------------------------------------------------------------


def _vm_get(vm_url: str, path: str, params: list[tuple[str, str]] | None = None) -> bytes:
    query = urllib.parse.urlencode(params or [])
    url = f"{vm_url.rstrip('/')}{path}" + (f"?{query}" if query else "")
    with urllib.request.urlopen(url, timeout=60) as resp:
        body: bytes = resp.read()
        return body


def count_stored(vm_url: str, measurement: str = MEASUREMENT) -> int:
    """Samples of ``<measurement>_reading`` in VictoriaMetrics (one per point written; a
    point written twice counts twice). Cheap: one force_flush and one PromQL query."""
    _vm_get(vm_url, "/internal/force_flush")
    query = f"sum(count_over_time({measurement}_{COUNT_FIELD}[3650d]))"
    doc = json.loads(_vm_get(vm_url, "/api/v1/query", [("query", query)]))
    result = doc["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def stored_keys(vm_url: str, measurement: str = MEASUREMENT) -> set[tuple[str, int]]:
    """Distinct (device, timestamp ms) over all ``<measurement>_*`` series."""
    _vm_get(vm_url, "/internal/force_flush")
    raw = _vm_get(vm_url, "/api/v1/export",
                  [("match[]", '{__name__=~"' + re.escape(measurement) + '_.*"}')])
    keys: set[tuple[str, int]] = set()
    for line in raw.splitlines():
        if line.strip():
            series = json.loads(line)
            device = str(series["metric"].get("device", ""))
            keys.update((device, int(ts)) for ts in series["timestamps"])
    return keys


# ---------------------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------------------


def _alarm_cases(now_ms: int) -> list[tuple[str, bytes, str, int]]:
    """(topic, payload, device, ts_ms) of one alarm reading per (profile, kind) that can
    carry one, made with sentinel's own encoder from the shipped inventory."""
    import ingest
    from sentinel.decode.encode import encode
    from sentinel.loading import load_all

    loaded = load_all(ingest.CONFIG)
    alarm_values: dict[str, dict[str, Any]] = {
        "smoke": {"alarm": True},
        "gas": {"alarm": True, "concentration_lel": 30.0},
        "hydrant_pressure": {"pressure": 0.05},
        "elderly_watch": {"sos": True},
    }
    cases: list[tuple[str, bytes, str, int]] = []
    seen: set[tuple[str, str]] = set()
    for device in loaded.inventory.values():
        profile = loaded.profiles[device.profile]
        key = (device.profile, device.kind)
        if key in seen or device.kind not in alarm_values or profile.timestamp is None:
            continue
        seen.add(key)
        ts_ms = now_ms + len(cases)
        values = ingest._values(device, 0) | alarm_values[device.kind]
        [(topic, payload)] = encode(profile, device, values, ts_ms / 1000, loaded.kinds)
        cases.append((topic, payload, device.id, ts_ms))
    return cases


class _AlarmListener:
    """A paho subscriber on the alarm topic recording (arrival time, decoded payload)."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.received: list[tuple[float, Any]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-nodered-alarms",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, m, r, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("alarm listener: not subscribed within 10 s")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        at = time.time()
        try:
            doc = json.loads(message.payload)
        except ValueError:
            doc = message.payload
        with self._cond:
            self.received.append((at, doc))
            self._cond.notify_all()

    def wait(self, count: int, timeout: float) -> list[tuple[float, Any]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def selftest(readings: int, keep: bool, mqtt_version: int, tcp_nodelay: bool) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    import ingest

    from servers import Mosquitto, VictoriaMetrics

    problems: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="sentinel-nodered-selftest-"))
    procs: list[Any] = []
    red_js = ensure_installed()
    _log(f"node-red at {red_js}")
    _log(f"building a backlog of {readings} readings ...")
    backlog = ingest.build_backlog(readings, 2)
    n = backlog.readings
    try:
        with Mosquitto(base / "mosquitto", extra_config=common.BROKER_EXTRA) as broker, \
                VictoriaMetrics(base / "victoria-metrics") as vm, \
                NodeRedPeer(base / "node-red", broker.port, vm.url, backlog.topics,
                            mqtt_version=mqtt_version, tcp_nodelay=tcp_nodelay) as peer:
            t = time.time()
            peer.start()
            assert peer.spawned_at is not None and peer.connected_at is not None
            _log(f"first start (creates the session): connected and subscribed "
                 f"{time.time() - t:.1f}s after spawn, session_present={peer.session_present}")
            peer.stop()
            _log(f"publishing {n} readings at QoS 1 to the offline session ...")
            pub = ingest.publish_backlog(broker.port, backlog, procs)
            _log(f"published in {pub['seconds']:.1f}s ({pub['rate']}/s)")
            busy = common.wait_for_quiet(30.0)  # other jobs on the machine skew the rate
            listener = _AlarmListener(broker.port, peer.alarm_topic)
            try:
                peer.start()
                t0 = peer.connected_at
                assert t0 is not None and peer.spawned_at is not None
                cpu0 = peer.cpu_seconds()
                _log(f"second start: CONNACK {t0 - peer.spawned_at:.2f}s after spawn, "
                     f"session_present={peer.session_present}, ready "
                     f"{time.time() - t0:.3f}s after CONNACK; draining ...")
                deadline = time.monotonic() + max(60.0, n / 500)
                stored, t_done, keys = 0, None, set()
                samples: list[tuple[float, int]] = []
                while time.monotonic() < deadline:
                    if not peer.running:
                        raise RuntimeError(f"Node-RED died:\n{_tail(peer.log_path)}")
                    stored = count_stored(vm.url)
                    now = time.time()
                    samples.append((now - t0, stored))
                    if stored >= n:
                        keys = stored_keys(vm.url)
                        if backlog.expected <= keys:
                            t_done = now
                            break
                    time.sleep(0.2)
                cpu = peer.cpu_seconds() - cpu0
                keys = stored_keys(vm.url)
                missing, extra = backlog.expected - keys, keys - backlog.expected
                if t_done is None:
                    problems.append(f"drain timed out: {stored} samples, {len(keys)} keys of {n}")
                if missing:
                    problems.append(f"{len(missing)} readings missing, e.g. {sorted(missing)[:3]}")
                if extra:
                    problems.append(f"{len(extra)} unexpected points, e.g. {sorted(extra)[:3]}")
                if stored != n:
                    problems.append(f"count_stored = {stored} (duplicates?), expected {n}")
                if listener.received:
                    problems.append(f"{len(listener.received)} alarms from normal readings, "
                                    f"e.g. {listener.received[0][1]}")
                # -- alarms: one per (profile, kind), published one at a time ----------------
                cases = _alarm_cases(int(time.time() * 1000))
                pub_client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                         client_id="bench-nodered-alarm-pub",
                                         protocol=mqtt.MQTTv311, clean_session=True)
                pub_client.connect(HOST, broker.port, keepalive=30)
                pub_client.loop_start()
                latencies: list[float] = []
                base_count = len(listener.received)
                try:
                    for i, (topic, payload, device, ts_ms) in enumerate(cases):
                        sent = time.time()
                        pub_client.publish(topic, payload, qos=1)
                        got = listener.wait(base_count + i + 1, 10.0)
                        if len(got) < base_count + i + 1:
                            problems.append(f"no alarm for {device} ({topic}) within 10 s")
                            break
                        at, doc = got[base_count + i]
                        if (not isinstance(doc, dict) or doc.get("device") != device
                                or doc.get("ts") != ts_ms or not doc.get("reason")):
                            problems.append(f"alarm for {device}@{ts_ms} reads {doc!r}")
                        latencies.append(at - sent)
                        _log(f"  alarm {doc} in {1000 * (at - sent):.1f} ms")
                finally:
                    pub_client.disconnect()
                    pub_client.loop_stop()
                rss = peer.peak_rss_mib()
                log_problems = peer.log_problems()
            finally:
                listener.close()
            code = peer.stop()
            if code not in (0, None):
                problems.append(f"Node-RED exit code {code}")
            if log_problems["error"]:
                problems.append(f"{log_problems['error']} [error] lines in {peer.log_path}")
        print(f"Node-RED peer self-test: {n} readings (QoS 1 backlog, {backlog.devices} devices)"
              f", MQTT v{'5' if mqtt_version == 5 else '3.1.1'}, TCP_NODELAY "
              f"{'on' if tcp_nodelay else 'off (stock)'}; other processes used {busy:.0f}% CPU "
              "just before the drain")
        if t_done is not None:
            drain = t_done - t0
            print(f"  drain: {drain:.2f}s from CONNACK to all stored = {n / drain:,.0f} readings/s"
                  f" (CPU {100 * cpu / drain:.0f}% of one core)")
            _log(f"progress (s after CONNACK, stored): {[(round(t, 2), c) for t, c in samples]}")
            first = next((t for t, c in samples if c > 0), None)
            half = next((t for t, c in samples if c >= n / 2), None)
            if first is not None and half is not None:
                # Node-RED takes the backlog into memory faster than it writes it out.
                print(f"  first point searchable {first:.2f}s, half of them {half:.2f}s "
                      "after CONNACK")
        print(f"  stored: {len(keys & backlog.expected)}/{n} expected keys, {len(extra)} extra, "
              f"{stored} samples of {MEASUREMENT}_{COUNT_FIELD}")
        if latencies:
            lat = sorted(1000 * x for x in latencies)
            print(f"  alarm latency (publish -> alarm received, {len(lat)} alarms): "
                  f"median {lat[len(lat) // 2]:.1f} ms, max {lat[-1]:.1f} ms")
        print(f"  Node-RED peak RSS (VmHWM): {rss:.1f} MiB; log: {log_problems['warn']} warn, "
              f"{log_problems['error']} error lines")
        for p in problems:
            print(f"  FAILED: {p}")
        print("  OK" if not problems else "  self-test FAILED")
        return 1 if problems else 0
    finally:
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.kill()
        if keep or problems:
            _log(f"run directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--selftest", action="store_true",
                        help="drain a backlog through Node-RED into a private VictoriaMetrics")
    parser.add_argument("--install", action="store_true",
                        help="only install the pinned Node-RED (if needed) and print red.js")
    parser.add_argument("--readings", type=int, default=5000, help="backlog size (5000)")
    parser.add_argument("--mqtt-version", type=int, choices=(4, 5), default=5,
                        help="MQTT protocol of Node-RED's client: 5 (default) or 4 = 3.1.1")
    parser.add_argument("--tcp-nodelay", action="store_true",
                        help="turn off Nagle on Node-RED's MQTT socket (stock Node-RED: on)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    if args.install:
        print(ensure_installed())
        return 0
    if args.selftest:
        return selftest(args.readings, args.keep, args.mqtt_version, args.tcp_nodelay)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
