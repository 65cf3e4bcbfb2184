#!/usr/bin/env python3
"""Incident latency benchmark: smoke alarm reading published → incident opened → people paged.

For each phase a fresh private Mosquitto and a fresh daemon (SQLite backend, empty state
dir, every on-call contact's only channel a local webhook) are started, then smoke alarms
are published one at a time, each from a detector that has not alarmed yet. Per alarm three
latencies are measured from the moment it is published: until the daemon logs
`incident_opened` (written right after the incident is committed to its state database),
until an MQTT subscriber receives the incident's retained state, and until the first
notification request for the incident (apprise's `json://` POST) arrives at the webhook.
Phase `idle` has no other traffic; phase `telemetry` runs with normal readings from every
other device at a fixed rate (5,000/s by default) published from a separate process.
See bench/README.md.

    python bench/incident_latency.py [--samples N] [--background RATE] [--repeat K]
                                     [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import common  # first: it puts src/ and tests/ on sys.path
from sentinel.config.inventory import Device
from sentinel.decode.encode import encode

from daemon import LOADED, TYPICAL, DaemonProcess, timestamped_devices
from servers import Mosquitto

PREFIX = "sentinel"  # [incidents] topic_prefix of config/sentinel.toml
RULE = "smoke_alarm"  # config/rules.toml: a smoke detector's alarm opens it at once
MAX_INFLIGHT = 1000  # background publisher: unacknowledged QoS 1 publishes at most
# Settings the benchmark sets itself; the same variables in the environment are ignored.
_OWN_SETTINGS = ("SENTINEL_MQTT__PORT", "SENTINEL_STATE_DIR", "SENTINEL_LOG__FORMAT")


# ---------------------------------------------------------------------------------------
# Devices: probes (smoke detectors, one alarm each) and the background (everything else)
# ---------------------------------------------------------------------------------------


def probe_devices(count: int) -> list[Device]:
    """`count` smoke detectors that carry a device timestamp, taken round-robin over the
    buildings so that consecutive alarms come from different buildings (two detectors of
    one building within 2 minutes also open a `fire_confirmed` group incident)."""
    by_building: dict[tuple[str, str], list[Device]] = {}
    for device in timestamped_devices():
        if device.kind == "smoke":
            by_building.setdefault((device.compound, device.building), []).append(device)
    groups = [sorted(ds, key=lambda d: d.id) for _, ds in sorted(by_building.items())]
    ordered = [g[i] for i in range(max(map(len, groups))) for g in groups if i < len(g)]
    if count > len(ordered):
        raise SystemExit(f"--samples {count}: only {len(ordered)} smoke detectors available")
    return ordered[:count]


def _typical(device: Device) -> dict[str, Any]:
    values = dict(TYPICAL[device.kind])
    if device.kind == "water_level" and device.settings.tank_height_m:
        values["level"] = round(device.settings.tank_height_m * 0.9, 3)
    return values


def alarm_messages(device: Device, ts: float) -> list[tuple[str, bytes]]:
    values = {**_typical(device), "alarm": True}
    return encode(LOADED.profiles[device.profile], device, values, round(ts, 3), LOADED.kinds)


# ---------------------------------------------------------------------------------------
# Background telemetry: a separate process (spawned), paced, QoS 1
# ---------------------------------------------------------------------------------------

# Shared counters of the background process (multiprocessing Array of doubles).
_SENT, _ACKED, _BEHIND = 0, 1, 2


def background_main(port: int, rate: float, device_ids: list[str], ready: Any, go: Any,
                    stop: Any, counters: Any, out: Any) -> None:
    """Publish normal readings round-robin over `device_ids` at `rate` readings/s (one
    message each, device timestamp = now, unique per device) from `go` until `stop`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    devices = [LOADED.inventory[i] for i in device_ids]
    profiles = [LOADED.profiles[d.profile] for d in devices]
    values = [_typical(d) for d in devices]
    last_ms = [0] * len(devices)
    acked = 0

    def on_publish(c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        nonlocal acked
        acked += 1

    client = common.connect_publisher("bench-background", port, MAX_INFLIGHT, on_publish,
                                      "background publisher")
    ready.set()
    while not go.wait(0.5):  # keep the connection alive while waiting
        client.loop(0.01)
    # Single-threaded (no loop_start, as in bench/ingest.py): publish what is due, then
    # read PUBACKs for up to 2 ms. Bursts are at most 2 ms (10 readings at 5,000/s) apart.
    t0, started = time.monotonic(), time.time()
    sent = behind = messages = 0
    k, n = 0, len(devices)
    while not stop.is_set():
        due = int((time.monotonic() - t0) * rate)
        behind = max(behind, due - sent)
        room = min(due - sent, MAX_INFLIGHT - (sent - acked))
        if room > 0:
            now_ms = int(time.time() * 1000)
            for _ in range(room):
                ts_ms = max(now_ms, last_ms[k] + 1)
                last_ms[k] = ts_ms
                for topic, payload in encode(profiles[k], devices[k], values[k], ts_ms / 1000,
                                             LOADED.kinds):
                    client.publish(topic, payload, qos=1)
                    messages += 1
                k = (k + 1) % n
            sent += room
        counters[_SENT], counters[_ACKED], counters[_BEHIND] = sent, acked, behind
        if client.loop(0.002) != mqtt.MQTT_ERR_SUCCESS:
            break
    finished = time.time()
    deadline = time.monotonic() + 30
    while acked < messages and time.monotonic() < deadline:
        if client.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
            break
    counters[_SENT], counters[_ACKED] = sent, acked
    client.disconnect()
    client.loop(0.1)
    out.put({"readings": sent, "messages": messages, "acked": acked, "started": started,
             "finished": finished, "max_behind": behind})


class Background:
    """The background publisher process, started (connected, idle) before the daemon."""

    def __init__(self, port: int, rate: float, device_ids: list[str]) -> None:
        ctx = mp.get_context("spawn")  # the parent has paho threads: no fork
        self.ready, self.go, self.stop_event = ctx.Event(), ctx.Event(), ctx.Event()
        self.counters = ctx.Array("d", 3, lock=False)
        self.out = ctx.Queue()
        self.rate = rate
        self.proc = ctx.Process(
            target=background_main, name="bench-background", daemon=True,
            args=(port, rate, device_ids, self.ready, self.go, self.stop_event,
                  self.counters, self.out))
        self.proc.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self.ready.wait(timeout):
            raise RuntimeError("background publisher did not connect")

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def sent(self) -> int:
        return int(self.counters[_SENT])

    def acked(self) -> int:
        return int(self.counters[_ACKED])

    def finish(self) -> dict[str, Any]:
        self.stop_event.set()
        result: dict[str, Any] = self.out.get(timeout=60)
        self.proc.join(10)
        return result

    def close(self) -> None:
        self.stop_event.set()
        self.go.set()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# ---------------------------------------------------------------------------------------
# The probe: publishes the alarms, subscribes to the incident stream
# ---------------------------------------------------------------------------------------


class Probe:
    def __init__(self, port: int, probe_ids: set[str]) -> None:
        self.probe_ids = probe_ids
        self.state_at: dict[str, float] = {}  # device -> first retained incident state
        self.event_at: dict[str, float] = {}  # incident id -> first `opened` event
        self.incident_device: dict[str, str] = {}  # incident id -> device (from the state)
        self.device_incident: dict[str, str] = {}  # probe device -> its incident id
        self.other_states: Counter[str] = Counter()  # incident name -> count, non-probe ones
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = self._on_connect
        self.client.connect(common.HOST, port, keepalive=60)
        common.nodelay(self.client)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError("probe: no SUBACK")

    def _on_connect(self, client: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe([(f"{PREFIX}/+/incidents/+", 1), (f"{PREFIX}/+/events", 1)])

    def _on_message(self, client: Any, u: Any, msg: Any) -> None:
        now = time.time()
        if not msg.payload:
            return  # a cleared retained state
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            if msg.topic.endswith("/events"):
                if data.get("type") == "opened":
                    self.event_at.setdefault(str(data.get("incident")), now)
                return
            device = data.get("device_id")
            if device in self.probe_ids and data.get("name") == RULE:
                self.state_at.setdefault(device, now)
                self.incident_device[str(data.get("id"))] = device
                self.device_incident.setdefault(device, str(data.get("id")))
            elif data.get("id") not in self.incident_device:
                self.incident_device[str(data.get("id"))] = str(device)
                self.other_states[str(data.get("name"))] += 1

    def publish(self, messages: list[tuple[str, bytes]]) -> float:
        t = time.time()
        for topic, payload in messages:
            self.client.publish(topic, payload, qos=1)
        return t

    def seen(self) -> int:
        with self._lock:
            return len(self.state_at)

    def incidents(self) -> dict[str, str]:
        """Probe device -> incident id, for the incidents seen so far."""
        with self._lock:
            return dict(self.device_incident)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------------------------
# The webhook: where every contact's notifications arrive
# ---------------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z0-9_-]+")
_INCIDENT_ID = re.compile(r"\d{8}-\d{4,}")  # e.g. 20261201-0007


class Notifications:
    """Index what arrived at the webhook (`common.Webhook`, its own threads in this
    process): per incident id and per probe device named in a request's title or message,
    the time the first such request was read (`received_at`)."""

    def __init__(self, receiver: common.Webhook, probe_ids: set[str]) -> None:
        self.receiver = receiver
        self.probe_ids = probe_ids
        self.first_by_incident: dict[str, float] = {}  # incident id in the text -> first
        self.first_by_device: dict[str, float] = {}  # probe device in the text -> first
        self.per_key_incident: Counter[str] = Counter()  # Idempotency-Key's incident -> n
        self.keys: Counter[str] = Counter()
        self.not_json = 0
        self.key_not_in_text = 0
        self._done = 0

    @property
    def total(self) -> int:
        return self._done

    def update(self) -> None:
        """Index the requests that arrived since the last call."""
        requests = self.receiver.requests
        for request in requests[self._done:]:
            self._index(request)
        self._done = len(requests)

    def _index(self, request: common.WebhookRequest) -> None:
        body = request.json if isinstance(request.json, dict) else None
        if body is None:
            self.not_json += 1
            return
        words = set(_WORD.findall(f"{body.get('title', '')}\n{body.get('message', '')}"))
        at = request.received_at
        for word in words:
            if _INCIDENT_ID.fullmatch(word):
                self.first_by_incident.setdefault(word, at)
            elif word in self.probe_ids:
                self.first_by_device.setdefault(word, at)
        # The outbox key: incident/round.step[.tag]/contact/channel (+n when merged).
        key = request.headers.get("idempotency-key", "")
        self.keys[key] += 1
        incident = key.split("/", 1)[0]
        self.per_key_incident[incident] += 1
        if incident not in words:
            self.key_not_in_text += 1

    def notified(self, incidents: dict[str, str]) -> int:
        """How many of the (device -> incident) have been paged: a request carrying the
        incident id, or (an alarm grouped into a confirmed fire as it opened, which pages
        only as the fire) a request naming the device."""
        self.update()
        return sum(i in self.first_by_incident or d in self.first_by_device
                   for d, i in incidents.items())


# ---------------------------------------------------------------------------------------
# One phase: fresh broker + daemon, optional background, N alarms
# ---------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def stats_ms(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50": round(percentile(ms, 50), 2),
            "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2),
            "mean": round(statistics.fmean(ms), 2)}


def _stored(db: Path) -> int | None:
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def _stored_by_group(db: Path, probe_ids: set[str]) -> tuple[int, int, dict[str, float]]:
    """(rows of probe devices, rows of other devices, probe device -> received_ms / 1000:
    when the daemon read the alarm from its socket)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT device_id, count(*), min(received_ms) FROM readings "
                            "GROUP BY device_id").fetchall()
    finally:
        conn.close()
    probe = sum(n for d, n, _ in rows if d in probe_ids)
    other = sum(n for d, n, _ in rows if d not in probe_ids)
    return probe, other, {d: r / 1000 for d, _, r in rows if d in probe_ids}


@dataclass
class PhaseResult:
    phase: str  # "idle" or "telemetry"
    repeat: int
    background_rate: float
    samples: int
    received: dict[str, Any] = field(default_factory=dict)  # daemon read it (received_ms)
    committed: dict[str, Any] = field(default_factory=dict)  # incident_opened log line
    mqtt_state: dict[str, Any] = field(default_factory=dict)  # retained incident state
    mqtt_event: dict[str, Any] = field(default_factory=dict)  # `opened` on .../events
    queued: dict[str, Any] = field(default_factory=dict)  # escalation step committed (log)
    notified: dict[str, Any] = field(default_factory=dict)  # first webhook request
    notifications: dict[str, Any] = field(default_factory=dict)  # counts, send times
    background: dict[str, Any] = field(default_factory=dict)
    cpu_pct: dict[str, float] = field(default_factory=dict)  # 100 = one core, probe window
    incidents: dict[str, Any] = field(default_factory=dict)
    daemon: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)  # per alarm


def _settings_from_env() -> dict[str, Any]:  # Any: mypy would match `oncall`
    """SENTINEL_* variables of our environment, as DaemonProcess overrides."""
    return {k.removeprefix("SENTINEL_").lower(): v for k, v in os.environ.items()
            if k.startswith("SENTINEL_") and k not in _OWN_SETTINGS}


def start_broker(run_dir: Path, rate: float, background_ids: list[str],
                 stack: contextlib.ExitStack, cleanup: contextlib.ExitStack
                 ) -> tuple[Mosquitto, Background | None]:
    """A fresh broker (set_tcp_nodelay, no autosave) and, for `rate` > 0, the background
    publisher, connected and idle until `start_background`."""
    broker = stack.enter_context(Mosquitto(run_dir / "mosquitto",
                                           extra_config=common.BROKER_EXTRA))
    background = None
    if rate > 0:
        background = Background(broker.port, rate, background_ids)
        stack.callback(background.close)
        cleanup.callback(background.close)  # again at the end (a 2nd Ctrl-C above)
    return broker, background


def start_daemon(run_dir: Path, broker: Mosquitto, stack: contextlib.ExitStack,
                 cleanup: contextlib.ExitStack) -> tuple[DaemonProcess, common.Webhook, float]:
    """The daemon (shipped config, SQLite, empty state dir, JSON log, every contact's
    channel the returned webhook), started until `daemon_ready`; also its start-up s."""
    receiver = stack.enter_context(common.Webhook())
    daemon = DaemonProcess(run_dir / "state", broker.port,
                           notify_url=receiver.url("json", "/notify"), **_settings_from_env())
    stack.callback(daemon.close)
    cleanup.callback(daemon.close)
    t_spawn = time.time()
    daemon.start(timeout=60)
    return daemon, receiver, round(time.time() - t_spawn, 2)


def start_background(background: Background | None, warmup: float,
                     pids: dict[str, int | None], devices: int) -> None:
    """Let the background publisher go and give it `warmup` seconds (nothing if None)."""
    if background is None:
        return
    background.wait_ready()
    pids["publisher"] = background.pid
    background.go.set()
    common.log(f"  background {background.rate:,.0f}/s from {devices} devices; "
               f"warm-up {warmup:.0f}s")
    time.sleep(warmup)


def publish_alarms(probe: Probe, probes: list[Device], interval: float, seed: int,
                   sent: dict[str, float] | None = None) -> dict[str, float]:
    """Publish each probe's alarm, one every `interval` s on average (jittered ±⅓); record
    device -> time.time() just before its publish in `sent` (as it goes) and return it."""
    sent = {} if sent is None else sent
    rng = random.Random(seed)
    next_at = time.monotonic()
    for device in probes:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[device.id] = probe.publish(alarm_messages(device, time.time()))
        next_at += rng.uniform(interval * 2 / 3, interval * 4 / 3)
    return sent


class StoreProgress:
    """Every 0.5 s (a thread): (time, readings the broker acknowledged to the background
    publisher + alarms published so far, rows in the readings store): is the daemon
    keeping up?"""

    def __init__(self, db: Path, background: Background | None, alarms: dict[str, float]
                 ) -> None:
        self.db = db
        self.samples: list[tuple[float, int, int]] = []
        self._background = background
        self._alarms = alarms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            published = len(self._alarms) + (self._background.acked()
                                             if self._background is not None else 0)
            stored = _stored(self.db)
            if stored is not None:
                self.samples.append((round(time.time(), 3), published, stored))

    def stop(self) -> None:
        self._stop.set()


def stop_background(background: Background, progress: StoreProgress, alarms: int,
                    window: common.CpuWindow, drain_timeout: float
                    ) -> tuple[dict[str, Any], list[str]]:
    """Stop the background publisher, wait (up to `drain_timeout` s) until the store holds
    everything the broker acknowledged (+ the `alarms`); return the background's figures
    (rate achieved, the store's backlog during the warm-up and the `window`) and problems."""
    problems: list[str] = []
    db = progress.db
    t_stop = time.time()
    published_at_stop = background.acked() + alarms
    stored_at_stop = _stored(db) or 0
    bg = background.finish()
    expected = bg["acked"] + alarms
    deadline = time.monotonic() + drain_timeout
    stored = stored_at_stop
    while stored < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        stored = _stored(db) or 0
    caught_up = time.time()
    progress.stop()
    span = bg["finished"] - bg["started"]
    t0, t1 = window.t0, window.t1
    warmup_lags = [max(0, p - s) for t, p, s in progress.samples if t < t0]
    lags = [max(0, p - s) for t, p, s in progress.samples if t0 <= t <= t1]
    figures = {
        "rate_target": background.rate,
        "rate_achieved": round(bg["readings"] / span, 1) if span > 0 else None,
        "published": bg["readings"], "acked": bg["acked"],
        "publisher_max_behind": int(bg["max_behind"]),
        "seconds": round(span, 1),
        # The counters are read one after the other: clamp the skew at 0.
        "lag_at_stop": max(0, published_at_stop - stored_at_stop),
        "lag_max": max(lags, default=None),
        "lag_median": statistics.median(lags) if lags else None,
        "lag_first": lags[0] if lags else None,
        "lag_last": lags[-1] if lags else None,
        "lag_warmup_median": statistics.median(warmup_lags) if warmup_lags else None,
        "progress": [(round(t - t0, 2), p, s) for t, p, s in progress.samples],
        "drain_after_stop_s": round(caught_up - t_stop, 2) if stored >= expected else None,
    }
    if bg["acked"] < bg["messages"]:
        problems.append(f"background: {bg['messages'] - bg['acked']} publishes not "
                        "acknowledged by the broker")
    if stored < expected:
        problems.append(f"store did not catch up: {stored} of {expected} readings stored "
                        f"{drain_timeout:.0f}s after the background stopped")
    return figures, problems


def stop_daemon(daemon: DaemonProcess, problems: list[str]) -> int | None:
    """SIGTERM; killed (a problem) if still running after 60 s. Returns the exit code."""
    try:
        code: int | None = daemon.stop(60)
    except subprocess.TimeoutExpired:
        code = None
        daemon.close()  # kills it
        problems.append("daemon still running 60s after SIGTERM: killed")
    if code not in (0, None):
        problems.append(f"daemon exit code {code}")
    return code


def run_phase(phase: str, repeat: int, rate: float, probes: list[Device],
              background_ids: list[str], args: argparse.Namespace, base_dir: Path,
              cleanup: contextlib.ExitStack) -> PhaseResult:
    run_dir = base_dir / f"{repeat}-{phase}"
    run_dir.mkdir(parents=True)
    result = PhaseResult(phase, repeat, rate, len(probes))
    probe_ids = {d.id for d in probes}
    with contextlib.ExitStack() as stack:
        broker, background = start_broker(run_dir, rate, background_ids, stack, cleanup)
        daemon, receiver, result.daemon["startup_s"] = start_daemon(run_dir, broker, stack,
                                                                    cleanup)
        assert daemon.proc is not None
        notifications = Notifications(receiver, probe_ids)
        tail = common.LogTail(daemon.log_path)
        probe = Probe(broker.port, probe_ids)
        stack.callback(probe.close)
        db = daemon.state_dir / "readings.sqlite3"
        pids: dict[str, int | None] = {"daemon": daemon.proc.pid, "broker": broker.pid}
        sent: dict[str, float] = {}
        progress = StoreProgress(db, background, sent)
        stack.callback(progress.stop)
        start_background(background, args.warmup, pids, len(background_ids))

        # -- the alarms ------------------------------------------------------------------
        window = common.CpuWindow(pids, main_thread="daemon")
        publish_alarms(probe, probes, args.interval, repeat, sent)
        # Until every incident is on MQTT and has had a notification request.
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and (
                probe.seen() < len(probes)
                or notifications.notified(probe.incidents()) < len(probes)):
            time.sleep(0.05)
        result.cpu_pct = window.stop()
        result.daemon["rss_mib"] = round(common.peak_rss_mib(daemon.proc.pid), 1)
        if result.cpu_pct["foreign"] > args.foreign_warn:
            result.warnings.append(f"other processes used {result.cpu_pct['foreign']:.0f}% "
                                   "CPU while the alarms were measured: figures disturbed")

        # -- stop the background, wait for the store to catch up ------------------------
        if background is not None:
            result.background, problems = stop_background(background, progress, len(probes),
                                                          window, args.drain_timeout)
            result.background["devices"] = len(background_ids)
            result.problems += problems
        progress.stop()
        probe.close()
        result.daemon["exit_code"] = stop_daemon(daemon, result.problems)

        # -- what the daemon logged -----------------------------------------------------
        tail.poll()
        opened: dict[str, list[dict[str, Any]]] = {}
        others: Counter[str] = Counter()
        steps: dict[str, dict[str, Any]] = {}  # incident -> its first escalation step
        notify_events: Counter[str] = Counter()  # delivery and escalation log events
        sends: list[dict[str, Any]] = []  # notification_sent / _failed (elapsed: send time)
        for e in tail.events:
            name = str(e.get("event"))
            if name == "daemon_stopped":
                result.daemon.update({k: e.get(k) for k in ("received", "stored", "rejected")})
            if name in _NOTIFY_EVENTS:
                notify_events[name] += 1
                if name in ("notification_sent", "notification_failed"):
                    sends.append(e)
            if name == "incident_escalation_step":
                steps.setdefault(str(e.get("incident")), e)
            if name != "incident_opened":
                continue
            if e.get("rule") == RULE and e.get("device") in probe_ids:
                opened.setdefault(str(e["device"]), []).append(e)
            else:
                dev = e.get("device")
                where = "probe" if dev in probe_ids else "background" if dev else "group"
                others[f"{e.get('rule')}@{where}"] += 1
        result.daemon["log_warnings"] = common.daemon_log_findings(tail.events, result.problems,
                                                                   result.warnings)

        probe_rows, other_rows, received_at = _stored_by_group(db, probe_ids)
        result.daemon["stored_rows"] = {"probe": probe_rows, "background": other_rows}
        if probe_rows != len(probes) or len(received_at) != len(probes):
            result.problems.append(f"{probe_rows} alarm readings stored for {len(probes)} "
                                   "alarms")
        if background is not None and other_rows != result.background["acked"]:
            result.problems.append(f"background: {other_rows} readings stored, "
                                   f"{result.background['acked']} acknowledged by the broker")

        # -- latencies --------------------------------------------------------------------
        notifications.update()
        received, committed, state, event, queued, notified = [], [], [], [], [], []
        missing_log = missing_state = missing_notified = 0
        duplicates = 0
        requests_per_alarm: Counter[int] = Counter()
        device_incident = {d: i for i, d in probe.incident_device.items()}
        for device in probes:
            t_pub = sent[device.id]
            row: dict[str, Any] = {"device": device.id, "t_publish": round(t_pub, 6)}
            if device.id in received_at:  # ms resolution
                row["received_s"] = round(received_at[device.id] - t_pub, 6)
                received.append(row["received_s"])
            events = opened.get(device.id, [])
            if len(events) > 1:
                duplicates += 1
            if events:
                row["incident"] = events[0].get("incident")
                row["committed_s"] = round(common.event_time(events[0]) - t_pub, 6)
                committed.append(row["committed_s"])
            else:
                missing_log += 1
            if device.id in probe.state_at:
                row["mqtt_state_s"] = round(probe.state_at[device.id] - t_pub, 6)
                state.append(row["mqtt_state_s"])
            else:
                missing_state += 1
            incident = row.get("incident") or device_incident.get(device.id)
            if incident in probe.event_at:
                row["mqtt_event_s"] = round(probe.event_at[incident] - t_pub, 6)
                event.append(row["mqtt_event_s"])
            if incident in steps:
                row["queued_s"] = round(common.event_time(steps[incident]) - t_pub, 6)
                queued.append(row["queued_s"])
            # Paged about this alarm: its own incident, or the confirmed fire it joined as
            # it opened (that pages only as the fire, whose message names its detector).
            paged = [t for t in (notifications.first_by_incident.get(str(incident)),
                                 notifications.first_by_device.get(device.id)) if t is not None]
            if paged:
                row["notified_s"] = round(min(paged) - t_pub, 6)
                notified.append(row["notified_s"])
            else:
                missing_notified += 1
            if device.id in notifications.first_by_device:
                row["device_named_s"] = round(notifications.first_by_device[device.id] - t_pub,
                                              6)
            row["requests"] = notifications.per_key_incident.get(str(incident), 0)
            requests_per_alarm[row["requests"]] += 1
            result.raw.append(row)
        result.received = stats_ms(received)
        result.committed = stats_ms(committed)
        result.mqtt_state = stats_ms(state)
        result.mqtt_event = stats_ms(event)
        result.queued = stats_ms(queued)
        result.notified = stats_ms(notified)
        probe_incidents = {str(r["incident"]) for r in result.raw if r.get("incident")}
        failed_sends = [e for e in sends if e.get("event") == "notification_failed"]
        result.notifications = {
            "requests": notifications.total,
            "requests_for_alarms": sum(n for i, n in notifications.per_key_incident.items()
                                       if i in probe_incidents),
            "requests_for_other_incidents": sum(
                n for i, n in notifications.per_key_incident.items()
                if i not in probe_incidents),
            "requests_per_alarm": {str(k): v for k, v in sorted(requests_per_alarm.items())},
            "repeated_keys": sum(n - 1 for n in notifications.keys.values() if n > 1),
            "not_json": notifications.not_json,
            "key_incident_not_in_text": notifications.key_not_in_text,
            "log_events": dict(sorted(notify_events.items())),
            # Daemon side: from the send's call until apprise returned (a free worker
            # thread, plugin set-up, the HTTP exchange), per delivery.
            "send_elapsed": stats_ms([float(e.get("elapsed") or 0.0) for e in sends]),
        }
        if missing_notified:
            result.problems.append(f"{missing_notified} alarms without a notification "
                                   f"request about them within "
                                   f"{args.timeout:.0f}s")
        if failed_sends:
            errors = Counter(str(e.get("error")) for e in failed_sends)
            result.problems.append(f"daemon log: {len(failed_sends)}x notification_failed "
                                   f"({dict(errors)})")
        if notifications.not_json or notifications.key_not_in_text:
            result.warnings.append(
                f"webhook: {notifications.not_json} requests without a JSON body, "
                f"{notifications.key_not_in_text} whose Idempotency-Key names an incident "
                "their text does not")
        result.incidents = {"probe_alarms": len(probes), "opened_for_probes": len(opened),
                            "duplicates": duplicates, "other_opened": dict(others)}
        if missing_log:
            result.problems.append(f"{missing_log} alarms without an `incident_opened` "
                                   f"({RULE}) log line")
        if duplicates:
            result.problems.append(f"{duplicates} alarms with more than one `incident_opened`")
        if missing_state:
            result.problems.append(f"{missing_state} alarms without a retained incident "
                                   f"state on MQTT within {args.timeout:.0f}s")
        if any(k.endswith("@background") for k in others):
            result.problems.append(f"incidents opened for background devices: {dict(others)}")
        if min(committed, default=0) < 0:
            result.problems.append("negative latency: clocks of daemon and bench differ?")
    return result


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

_METRICS = (("received", "read by daemon (1 ms res.)"),
            ("committed", "incident committed (log)"),
            ("mqtt_state", "seen by MQTT subscriber"),
            ("queued", "notices queued (log)"),
            ("notified", "first notification request"))
# Delivery and escalation events of the daemon's log counted per phase.
_NOTIFY_EVENTS = ("incident_escalation_step", "incident_nobody_on_duty",
                  "notification_sent", "notification_failed", "notify_rate_limited",
                  "notify_dispatch_failed", "notify_result_commit_failed")


def summarise(results: list[PhaseResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase in dict.fromkeys(r.phase for r in results):
        runs = [r for r in results if r.phase == phase]
        s: dict[str, Any] = {"runs": len(runs), "ok_runs": sum(not r.problems for r in runs),
                             "background_rate": runs[0].background_rate}
        for metric in ("received", "committed", "mqtt_state", "mqtt_event", "queued",
                       "notified"):
            per_run = [getattr(r, metric) for r in runs]
            pooled = [row[f"{metric}_s"] for r in runs for row in r.raw if f"{metric}_s" in row]
            s[metric] = {k: common.median([p.get(k) for p in per_run])
                         for k in ("p50", "p99", "max", "mean")}
            s[metric]["pooled"] = stats_ms(pooled)
        s["cpu_pct"] = {k: common.median([r.cpu_pct.get(k) for r in runs])
                        for k in ("daemon", "daemon_main_thread", "broker", "publisher",
                                  "bench", "foreign")
                        if any(k in r.cpu_pct for r in runs)}
        if any(r.background for r in runs):
            s["background"] = {k: common.median([r.background.get(k) for r in runs])
                               for k in ("rate_achieved", "lag_warmup_median", "lag_median",
                                         "lag_first", "lag_last", "lag_max", "lag_at_stop",
                                         "drain_after_stop_s", "publisher_max_behind")}
        s["other_incidents"] = dict(sum((Counter(r.incidents.get("other_opened", {}))
                                         for r in runs), Counter()))
        notes = [r.notifications for r in runs if r.notifications]
        if notes:
            s["notifications"] = {
                k: common.median([n.get(k) for n in notes])
                for k in ("requests", "requests_for_alarms", "requests_for_other_incidents",
                          "repeated_keys")}
            s["notifications"]["requests_per_alarm"] = dict(sum(
                (Counter(n.get("requests_per_alarm", {})) for n in notes), Counter()))
            s["notifications"]["log_events"] = {
                k: common.median([n.get("log_events", {}).get(k, 0) for n in notes])
                for k in sorted({k for n in notes for k in n.get("log_events", {})})}
            s["notifications"]["send_elapsed"] = {
                k: common.median([n.get("send_elapsed", {}).get(k) for n in notes])
                for k in ("p50", "p99", "max")}
        out[phase] = s
    return out


def print_table(summary: dict[str, Any], samples: int, repeat: int) -> None:
    def f(value: float | None, fmt: str = ".1f") -> str:
        return "-" if value is None else format(value, fmt)

    print()
    print(f"sentinel incident latency: smoke alarm published → incident opened → first "
          f"notification; {samples} alarms per phase, median of {repeat} run(s)")
    head = f"{'phase':<22}{'latency until':<28}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    print(head)
    print("-" * len(head))
    for s in summary.values():
        label = (f"telemetry {s['background_rate']:,.0f}/s" if s["background_rate"]
                 else "idle")
        for metric, text in _METRICS:
            m = s[metric]
            print(f"{label:<22}{text:<28}{f(m['p50']):>9}{f(m['p99']):>9}{f(m['max']):>9}")
    print()
    for phase, s in summary.items():
        cpu = ", ".join(f"{k} {v:.0f}%" for k, v in s["cpu_pct"].items() if v is not None)
        line = f"[{phase}] CPU (100% = 1 core): {cpu}"
        bg = s.get("background")
        if bg:
            line += (f"\n  background achieved {f(bg['rate_achieved'], ',.0f')}/s; readings "
                     f"acknowledged by the broker but not yet stored: median "
                     f"{f(bg['lag_warmup_median'], ',.0f')} in the warm-up, "
                     f"{f(bg['lag_median'], ',.0f')} during the alarms (first "
                     f"{f(bg['lag_first'], ',.0f')}, last {f(bg['lag_last'], ',.0f')}, max "
                     f"{f(bg['lag_max'], ',.0f')}), {f(bg['lag_at_stop'], ',.0f')} when the "
                     f"background stopped, all stored "
                     f"{f(bg['drain_after_stop_s'], '.1f')}s later")
        if s["other_incidents"]:
            line += f"; other incidents opened: {s['other_incidents']}"
        n = s.get("notifications")
        if n:
            per_alarm = ", ".join(f"{v}x {k}" for k, v in n["requests_per_alarm"].items())
            sent = n["log_events"].get("notification_sent", 0)
            failed = n["log_events"].get("notification_failed", 0)
            el = n["send_elapsed"]
            line += (f"\n  notification requests at the webhook: {f(n['requests'], '.0f')} "
                     f"({f(n['requests_for_alarms'], '.0f')} for the alarms' incidents, "
                     f"{f(n['requests_for_other_incidents'], '.0f')} for others; requests per "
                     f"alarm over all runs: {per_alarm}); daemon log: notification_sent "
                     f"{f(sent, '.0f')}, notification_failed {f(failed, '.0f')}; apprise "
                     f"send time p50 {f(el['p50'])} / p99 {f(el['p99'])} / max "
                     f"{f(el['max'])} ms")
        print(line + f"; {s['ok_runs']}/{s['runs']} runs correct")


def _filesystem(path: Path) -> str:
    """Filesystem type of the mount holding `path` (the state dirs: fsync cost)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            mount = parts[1]
            if str(path).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200,
                        help="alarms per phase, each from its own smoke detector (200)")
    parser.add_argument("--background", type=float, default=5000.0,
                        help="background readings/s of the telemetry phase; 0: idle only "
                             "(5000)")
    parser.add_argument("--interval", type=float, default=0.075,
                        help="mean seconds between alarms, jittered ±1/3 (0.075)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of background before the first alarm (3)")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds to wait for the last alarm's incident and its first "
                             "notification (15)")
    common.add_shared_options(
        parser, unit="phase", window="while its alarms were measured",
        repeat_help="runs of both phases (median)",
        json_help="write every alarm, run and the medians to this file",
        drain_timeout=60.0,
        drain_timeout_help="seconds the store may take to catch up after the background "
                           "stops (60)",
        quiet_wait=30.0, default_fmt="({:g})")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where run directories go (default: $TMPDIR); its filesystem "
                             "sets the cost of the incident store's fsync")
    args = parser.parse_args(argv)

    probes = probe_devices(args.samples)
    probe_ids = {d.id for d in probes}
    background_ids = [d.id for d in timestamped_devices() if d.id not in probe_ids]
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    base_dir = Path(tempfile.mkdtemp(prefix="sentinel-bench-incidents-", dir=args.dir))
    fs = _filesystem(base_dir)
    phases = [("idle", 0.0)] + ([("telemetry", args.background)] if args.background > 0 else [])
    buildings = len({(d.compound, d.building) for d in probes})
    common.log(f"{len(probes)} alarms per phase from {len(probes)} smoke detectors in "
               f"{buildings} buildings; background devices {len(background_ids)}; runs in "
               f"{base_dir} ({fs})")
    def describe(r: PhaseResult) -> list[str]:
        lines = [f"received {r.received}; committed {r.committed}; mqtt {r.mqtt_state}; "
                 f"queued {r.queued}; notified {r.notified}; cpu {r.cpu_pct}",
                 "notifications " + ", ".join(f"{k} {v}" for k, v in r.notifications.items())]
        if r.background:
            lines.append("background " + ", ".join(
                f"{k} {v}" for k, v in r.background.items() if k != "progress"))
        return lines

    def report(results: list[PhaseResult]) -> None:
        summary = summarise(results)
        print_table(summary, args.samples, args.repeat)
        if args.json:
            doc = {"samples": args.samples, "repeat": args.repeat,
                   "background": args.background, "interval": args.interval,
                   "warmup": args.warmup, "cpus": os.cpu_count(),
                   "filesystem": fs, "probe_buildings": buildings,
                   "background_devices": len(background_ids),
                   "summary": summary, "runs": [asdict(r) for r in results]}
            common.write_json(args.json, doc)

    return common.run_repetitions(
        base_dir, args.keep, args.repeat, phases, args.quiet_wait,
        lambda phase, repeat, rate, cleanup: run_phase(
            phase, repeat, rate, probes, background_ids, args, base_dir, cleanup),
        describe, report)


if __name__ == "__main__":
    sys.exit(main())
