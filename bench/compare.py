#!/usr/bin/env python3
"""sentinel side by side with the Node-RED peer and the bare limit of a Python MQTT consumer,
on this machine, in one run (issue 7). See bench/README.md.

Phases, one after another, each contender on a fresh private Mosquitto (`set_tcp_nodelay
true`) and, where readings are stored, a fresh VictoriaMetrics:

* ingest: a QoS 1 backlog of N readings queued in a persistent session, drained by a bare
  paho and a bare aiomqtt consumer (received), by Node-RED and by sentinel (stored: distinct
  points in VictoriaMetrics);
* latency: smoke alarm published → sentinel's first notification request at a local webhook,
  and → the Node-RED flow's alarm message, under background telemetry at each rate;
* storm: all 747 smoke detectors alarm within 10 s while telemetry continues (sentinel);
* startup: start to ready and RSS with the example inventory and with 100,000 devices.

    python bench/compare.py [--readings N] [--rates 1000,5000] [--alarms N] [--repeat K]
                            [--only ingest,latency,storm,startup] [--no-nodered]
                            [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import common  # first: it puts src/ and tests/ on sys.path
import incident_latency as latency
import ingest
from sentinel.config.inventory import Device

from daemon import LOADED, timestamped_devices
from servers import Mosquitto, VictoriaMetrics

PHASES = ("ingest", "latency", "storm", "startup")
SENTINEL, NODERED, PAHO, AIOMQTT = "sentinel", "Node-RED", "bare paho", "bare aiomqtt"
CONTENDERS = (SENTINEL, NODERED, PAHO, AIOMQTT)
GROUP_RULES = ("fire_confirmed", "fire_with_gas")  # config/rules.toml: group correlations
MB = 1e6 / 2**20  # MiB per MB: the targets are in MB
# Per-run numbers that are not figures: no medians of them.
NOT_FIGURES = frozenset({"connack", "done", "exit_code", "idle_before_pct", "received",
                         "stored", "n", "detectors", "groups_expected"})
# Figures logged after each run (all of them go to --json).
KEY_FIGURES = ("rate", "drain_s", "vs_nodered", "vs_paho", "p50", "p99", "max", "open_s",
               "notified_s", "covered_s", "example_ready_s", "example_rss_mib",
               "large_ready_s", "large_rss_mib", "cpu_pct", "rss_mib")


# ---------------------------------------------------------------------------------------
# One run of a phase: figures per contender
# ---------------------------------------------------------------------------------------


@dataclass
class CompareRun:
    phase: str  # ingest, latency, storm, startup
    repeat: int
    rate: float  # background readings/s (latency, storm)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # contender -> figures
    problems: list[str] = field(default_factory=list)  # the run is wrong: exit status 1
    warnings: list[str] = field(default_factory=list)  # the figures may be off

    @property
    def key(self) -> str:
        return f"{self.phase}@{self.rate:g}" if self.phase in ("latency", "storm") else self.phase

    def merge(self, contender: str, figures: dict[str, Any], problems: list[str],
              warnings: list[str]) -> None:
        self.figures[contender] = figures
        self.problems += [f"{contender}: {p}" for p in problems]
        self.warnings += [f"{contender}: {w}" for w in warnings]


def _nodered() -> Any:
    import nodered  # bench/nodered.py: the peer (installs pinned Node-RED with npm)

    return nodered


# ---------------------------------------------------------------------------------------
# 1. Ingest: draining a QoS 1 backlog
# ---------------------------------------------------------------------------------------


class NodeRedStore:
    """What the Node-RED flow stored in VictoriaMetrics (ingest.StoreCounter)."""

    def __init__(self, vm_url: str) -> None:
        self.vm_url = vm_url

    def count(self) -> int:
        return int(_nodered().count_stored(self.vm_url))

    def keys(self) -> set[tuple[str, int]]:
        return set(_nodered().stored_keys(self.vm_url))


def drain_nodered(run_dir: Path, backlog: ingest.Backlog, args: argparse.Namespace,
                  timeout: float, sampler: ingest.CpuSampler, procs: list[Any]
                  ) -> tuple[dict[str, Any], list[str], list[str]]:
    """As ingest.py's sentinel run: Node-RED is started once to create its persistent
    session and stopped, the backlog is published, Node-RED is started again and timed
    from its CONNACK until VictoriaMetrics holds every reading (distinct points)."""
    nodered = _nodered()
    problems: list[str] = []
    warnings: list[str] = []
    common.log("  Node-RED")
    with contextlib.ExitStack() as stack:
        vm = stack.enter_context(VictoriaMetrics(run_dir / "victoria-metrics-nodered"))
        peers: list[Any] = []

        def setup(port: int) -> None:  # creates the persistent session
            peer = stack.enter_context(nodered.NodeRedPeer(
                run_dir / "node-red", port, vm.url, backlog.topics,
                tcp_nodelay=not args.nodered_nagle))
            peers.append(peer)
            peer.start(timeout=60)
            peer.stop()

        broker, pub = ingest.prepare_broker(run_dir, "nodered", backlog, setup, stack, procs)
        peer = peers[0]
        sampler.pids = {"broker": broker.pid}
        if vm.pid is not None:
            sampler.pids["tsdb"] = vm.pid
        idle = common.wait_for_quiet(args.quiet_wait)
        peer.start(timeout=60)
        sampler.pids["nodered"] = peer.pid

        def check_alive() -> None:
            if not peer.running:
                raise RuntimeError(f"Node-RED exited; log {peer.log_path}")

        store = NodeRedStore(vm.url)
        drain = ingest.wait_stored(store, backlog, peer.connected_at, peer.cpu_seconds,
                                   timeout, args.poll, check_alive)
        rss = peer.peak_rss_mib()
        code = peer.stop()
        stored = ingest.check_stored(store, backlog, drain, timeout, problems)
        if not peer.session_present:
            problems.append("its second start found no session: the backlog was not queued")
        if code not in (0, None):
            problems.append(f"Node-RED exit code {code}")
        log_problems = peer.log_problems()
        if log_problems["error"]:
            warnings.append(f"{log_problems['error']} [error] lines in {peer.log_path}")
    warnings += drain.warnings
    figures = {"stored": stored, "rss_mib": round(rss, 1), "publish": pub,
               "idle_before_pct": round(idle, 1), "exit_code": code, "log": log_problems,
               "progress": drain.samples, **drain.figures(backlog.readings, sampler)}
    if "rate" in figures:
        common.log(f"  Node-RED stored {backlog.readings} in {figures['drain_s']:.2f}s "
                   f"({figures['rate']:.0f}/s), CPU {figures['cpu_pct']:.0f}%, RSS "
                   f"{rss:.0f} MiB; {figures.get('cpu_window')}")
    return figures, problems, warnings


def run_ingest(repeat: int, backlog: ingest.Backlog, args: argparse.Namespace,
               base_dir: Path) -> CompareRun:
    run = CompareRun("ingest", repeat, 0.0)
    run_dir = base_dir / f"{repeat}-ingest"
    run_dir.mkdir(parents=True)
    timeout = args.drain_timeout or max(120.0, backlog.readings / 400)
    procs: list[Any] = []
    try:
        with ingest.CpuSampler() as sampler:
            for client, name in (("paho", PAHO), ("aiomqtt", AIOMQTT)):
                with contextlib.ExitStack() as stack:
                    bare = ingest.drain_bare(client, run_dir, backlog, timeout,
                                             args.quiet_wait, sampler, stack, procs)
                run.merge(name, bare, [], [])
            if args.nodered:
                run.merge(NODERED, *drain_nodered(run_dir, backlog, args, timeout, sampler,
                                                  procs))
            with contextlib.ExitStack() as stack:
                receiver = stack.enter_context(common.Webhook())
                sentinel, pub, problems, warnings = ingest.drain_sentinel(
                    "influxdb", repeat, run_dir, backlog, args, timeout, sampler, stack,
                    procs, notify_url=receiver.url("json", "/notify"))
                sentinel.update(publish=pub, notifications=len(receiver.requests))
            if sentinel["notifications"]:
                warnings.append(f"{sentinel['notifications']} notification requests during "
                                "the drain: the backlog's normal readings opened incidents")
            run.merge(SENTINEL, sentinel, problems, warnings)
    finally:
        ingest.kill_all(procs)
    rate = run.figures[SENTINEL].get("rate")
    for other, key in ((NODERED, "vs_nodered"), (PAHO, "vs_paho")):
        if rate and run.figures.get(other, {}).get("rate"):
            run.figures[SENTINEL][key] = rate / run.figures[other]["rate"]
    note = ingest.disturbed(list(run.figures.values()), args.foreign_warn)
    if note:
        run.warnings.append(note)
    return run


# ---------------------------------------------------------------------------------------
# 2. Alarm latency under background telemetry
# ---------------------------------------------------------------------------------------


def latency_sentinel(repeat: int, rate: float, probes: list[Device], background_ids: list[str],
                     args: argparse.Namespace, base_dir: Path, cleanup: contextlib.ExitStack
                     ) -> tuple[dict[str, Any], list[str], list[str]]:
    """incident_latency.py's telemetry phase: alarm published → first notification request
    at the webhook (the incident and its outbox rows committed before)."""
    r = latency.run_phase(f"latency-{rate:g}-sentinel", repeat, rate, probes, background_ids,
                          args, base_dir, cleanup)
    figures = {**r.notified, "cpu_pct": r.cpu_pct.get("daemon"),
               "rss_mib": r.daemon.get("rss_mib"), "committed": r.committed,
               "mqtt_state": r.mqtt_state, "cpu": r.cpu_pct, "background": r.background,
               "notifications": r.notifications, "raw": r.raw}
    common.log(f"  sentinel: first notification {r.notified}; CPU {r.cpu_pct}; "
               f"RSS {r.daemon.get('rss_mib')} MiB")
    return figures, r.problems, r.warnings


def latency_nodered(repeat: int, rate: float, probes: list[Device], background_ids: list[str],
                    args: argparse.Namespace, base_dir: Path, cleanup: contextlib.ExitStack
                    ) -> tuple[dict[str, Any], list[str], list[str]]:
    """The same alarms and background against Node-RED: alarm published → the flow's
    message on its alarm topic, received by a subscriber in this process."""
    nodered = _nodered()
    problems: list[str] = []
    warnings: list[str] = []
    run_dir = base_dir / f"{repeat}-latency-{rate:g}-nodered"
    run_dir.mkdir(parents=True)
    probe_ids = {d.id for d in probes}
    with contextlib.ExitStack() as stack:
        broker, background = latency.start_broker(run_dir, rate, background_ids, stack, cleanup)
        vm = stack.enter_context(VictoriaMetrics(run_dir / "victoria-metrics"))
        peer = stack.enter_context(nodered.NodeRedPeer(
            run_dir / "node-red", broker.port, vm.url, args.topics,
            tcp_nodelay=not args.nodered_nagle))
        cleanup.callback(peer.stop)  # again at the end (a 2nd Ctrl-C)
        peer.start(timeout=60)
        # bench/nodered.py's subscriber on the alarm topic: (arrival time, payload) each.
        listener = nodered._AlarmListener(broker.port, peer.alarm_topic)
        stack.callback(listener.close)
        probe = latency.Probe(broker.port, probe_ids)  # publishes the alarms
        stack.callback(probe.close)
        pids: dict[str, int | None] = {"nodered": peer.pid, "broker": broker.pid}
        latency.start_background(background, args.warmup, pids, len(background_ids))

        def first_alarms() -> dict[str, float]:
            first: dict[str, float] = {}
            for at, doc in list(listener.received):
                device = doc.get("device") if isinstance(doc, dict) else None
                first.setdefault(str(device), at)
            return first

        window = common.CpuWindow(pids)
        sent = latency.publish_alarms(probe, probes, args.interval, repeat)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and len(probe_ids & first_alarms().keys()) < len(
                probes):
            time.sleep(0.05)
        cpu = window.stop()
        rss = peer.peak_rss_mib()
        stored: dict[str, Any] = {}
        if background is not None:
            bg = background.finish()
            stored = _nodered_caught_up(vm.url, bg["acked"] + len(probes), args.drain_timeout)
            stored["background_rate_achieved"] = round(
                bg["readings"] / max(1e-9, bg["finished"] - bg["started"]), 1)
            if stored["stored"] < stored["expected"]:
                warnings.append(f"Node-RED stored {stored['stored']} of {stored['expected']} "
                                f"readings {args.drain_timeout:.0f}s after the background "
                                "stopped")
        code = peer.stop()
        log_problems = peer.log_problems()
    first = first_alarms()
    delays = [first[d.id] - sent[d.id] for d in probes if d.id in first]
    stats = latency.stats_ms(delays)
    if len(delays) < len(probes):
        problems.append(f"{len(probes) - len(delays)} alarms without a message on "
                        f"{peer.alarm_topic} within {args.timeout:.0f}s")
    others = sorted(set(first) - probe_ids)
    if others:
        problems.append(f"alarm messages for {len(others)} devices that did not alarm, "
                        f"e.g. {others[:3]}")
    if code not in (0, None):
        problems.append(f"Node-RED exit code {code}")
    if cpu["foreign"] > args.foreign_warn:
        warnings.append(f"other processes used {cpu['foreign']:.0f}% CPU while the alarms "
                        "were measured: figures disturbed")
    figures = {**stats, "cpu_pct": cpu.get("nodered"), "rss_mib": round(rss, 1), "cpu": cpu,
               "store": stored, "log": log_problems,
               "raw": [{"device": d.id, "t_publish": sent[d.id],
                        "alarm_s": round(first[d.id] - sent[d.id], 6) if d.id in first
                        else None} for d in probes]}
    common.log(f"  Node-RED: alarm message {stats}; CPU {cpu}; RSS {rss:.0f} MiB")
    return figures, problems, warnings


def _nodered_caught_up(vm_url: str, expected: int, timeout: float) -> dict[str, Any]:
    """Wait (up to `timeout` s) until the flow stored `expected` readings."""
    t0 = time.monotonic()
    stored = NodeRedStore(vm_url).count()
    while stored < expected and time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        stored = NodeRedStore(vm_url).count()
    return {"expected": expected, "stored": stored,
            "caught_up_s": round(time.monotonic() - t0, 2) if stored >= expected else None}


def run_latency(repeat: int, rate: float, args: argparse.Namespace, base_dir: Path,
                cleanup: contextlib.ExitStack) -> CompareRun:
    run = CompareRun("latency", repeat, rate)
    probes = latency.probe_devices(args.alarms)
    probe_ids = {d.id for d in probes}
    background_ids = [d.id for d in timestamped_devices() if d.id not in probe_ids]
    contenders = [(SENTINEL, latency_sentinel)]
    if args.nodered:
        contenders.append((NODERED, latency_nodered))
    for n, (name, measure) in enumerate(contenders):
        if n:
            common.wait_for_quiet(args.quiet_wait)
        common.log(f"  {name}, {args.alarms} alarms, background {rate:,.0f}/s")
        run.merge(name, *measure(repeat, rate, probes, background_ids, args, base_dir,
                                 cleanup))
    return run


# ---------------------------------------------------------------------------------------
# 3. Alarm storm: every smoke detector within 10 s, telemetry going on
# ---------------------------------------------------------------------------------------


def storm_detectors() -> tuple[list[Device], int]:
    """Every smoke detector of the example inventory (in incident_latency's round-robin
    order over the buildings) and the confirmed fires they make: buildings with ≥ 2."""
    smoke = [d for d in LOADED.inventory.values() if d.kind == "smoke"]
    detectors = latency.probe_devices(len(smoke))  # only those with a device timestamp
    if len(detectors) != len(smoke):
        raise SystemExit(f"storm: {len(smoke) - len(detectors)} smoke detectors carry no "
                         "device timestamp")
    per_building = Counter((d.compound, d.building) for d in detectors)
    return detectors, sum(1 for n in per_building.values() if n >= 2)


def _query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the daemon's state database ([] until it exists)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # a table not created yet
        return []
    finally:
        conn.close()


class StormWatch:
    """Follows the storm: incidents opened (the daemon's `incident_opened` log lines, each
    written right after the incident's commit), escalations started and notices sent
    (incidents.sqlite3: events, outbox) and what reached the webhook (Idempotency-Key)."""

    def __init__(self, tail: common.LogTail, db: Path, receiver: common.Webhook,
                 detector_ids: set[str], groups_expected: int) -> None:
        self.tail, self.db, self.receiver = tail, db, receiver
        self.detector_ids = detector_ids
        self.groups_expected = groups_expected
        self.opened: dict[str, dict[str, Any]] = {}  # incident id -> its incident_opened

    def poll(self) -> None:
        for e in self.tail.poll():
            if e.get("event") == "incident_opened":
                self.opened.setdefault(str(e.get("incident")), e)

    def detectors_opened(self) -> int:
        return len({e.get("device") for e in self.opened.values()
                    if e.get("rule") == latency.RULE} & self.detector_ids)

    def groups_opened(self) -> int:
        return sum(1 for e in self.opened.values() if e.get("rule") in GROUP_RULES)

    def first_requests(self) -> dict[str, float]:
        """Incident id (of the Idempotency-Key) -> when its first request was read."""
        first: dict[str, float] = {}
        for request in self.receiver.requests:
            incident = request.headers.get("idempotency-key", "").split("/", 1)[0]
            first.setdefault(incident, request.received_at)
        return first

    def done(self) -> bool:
        """Every incident open, its escalation started (its first notices are committed
        then), no notice due and not finished, every sent one seen at the webhook."""
        self.poll()
        if self.detectors_opened() < len(self.detector_ids) or \
                self.groups_opened() < self.groups_expected:
            return False
        started = {i for (i,) in _query(self.db, "SELECT DISTINCT incident_id FROM events "
                                                 "WHERE type = 'escalation_started'")}
        if not self.opened.keys() <= started:
            return False
        due = _query(self.db, "SELECT count(*) FROM outbox WHERE status = 'pending' AND "
                              "due <= ?", time.time() + 5)
        if not due or due[0][0]:
            return False
        sent = {i for (i,) in _query(self.db, "SELECT DISTINCT incident_id FROM outbox "
                                              "WHERE status = 'sent'")}
        return sent <= self.first_requests().keys()


def run_storm(repeat: int, rate: float, args: argparse.Namespace, base_dir: Path,
              cleanup: contextlib.ExitStack) -> CompareRun:
    run = CompareRun("storm", repeat, rate)
    problems: list[str] = []
    warnings: list[str] = []
    run_dir = base_dir / f"{repeat}-storm"
    run_dir.mkdir(parents=True)
    detectors, groups_expected = storm_detectors()
    ids = {d.id for d in detectors}
    background_ids = [d.id for d in timestamped_devices() if d.id not in ids]
    figures: dict[str, Any] = {"detectors": len(detectors), "groups_expected": groups_expected}
    with contextlib.ExitStack() as stack:
        broker, background = latency.start_broker(run_dir, rate, background_ids, stack, cleanup)
        daemon, receiver, figures["startup_s"] = latency.start_daemon(run_dir, broker, stack,
                                                                      cleanup)
        assert daemon.proc is not None
        db = daemon.state_dir / "incidents.sqlite3"
        watch = StormWatch(common.LogTail(daemon.log_path), db, receiver, ids, groups_expected)
        probe = latency.Probe(broker.port, ids)
        stack.callback(probe.close)
        pids: dict[str, int | None] = {"daemon": daemon.proc.pid, "broker": broker.pid}
        sent: dict[str, float] = {}
        progress = latency.StoreProgress(daemon.state_dir / "readings.sqlite3", background,
                                         sent)
        stack.callback(progress.stop)
        latency.start_background(background, args.warmup, pids, len(background_ids))
        common.log(f"  {len(detectors)} smoke alarms within {args.storm_seconds:g}s")
        window = common.CpuWindow(pids, main_thread="daemon")
        latency.publish_alarms(probe, detectors, args.storm_seconds / len(detectors), repeat,
                               sent)
        t_last = max(sent.values())
        deadline = time.monotonic() + args.storm_timeout
        while not watch.done() and time.monotonic() < deadline:
            time.sleep(0.1)
        figures["cpu"] = cpu = window.stop()
        figures["cpu_pct"] = cpu.get("daemon")
        figures["rss_mib"] = round(common.peak_rss_mib(daemon.proc.pid), 1)
        if cpu["foreign"] > args.foreign_warn:
            warnings.append(f"other processes used {cpu['foreign']:.0f}% CPU during the "
                            "storm: figures disturbed")
        if background is not None:
            figures["background"], bg_problems = latency.stop_background(
                background, progress, len(detectors), window, args.drain_timeout)
            problems += bg_problems
        progress.stop()
        probe.close()
        figures["exit_code"] = latency.stop_daemon(daemon, problems)
    watch.poll()
    figures.update(_storm_figures(watch, db, detectors, sent, t_last, problems))
    common.daemon_log_findings(watch.tail.events, problems, warnings)
    common.log(f"  storm: all open {figures.get('open_s')} s, all first notifications "
               f"{figures.get('notified_s')} s after the last alarm; CPU {cpu}; RSS "
               f"{figures['rss_mib']} MiB")
    run.merge(SENTINEL, figures, problems, warnings)
    return run


def _storm_figures(watch: StormWatch, db: Path, detectors: list[Device],
                   sent: dict[str, float], t_last: float, problems: list[str]
                   ) -> dict[str, Any]:
    """After the storm: when every incident was open and every paged incident's first
    request had arrived, counted from the last alarm's publish; what paged and what was
    covered by a confirmed fire instead."""
    opened = watch.opened
    own = {str(e.get("device")): i for i, e in opened.items()
           if e.get("rule") == latency.RULE and e.get("device") in watch.detector_ids}
    groups = {i for i, e in opened.items() if e.get("rule") in GROUP_RULES}
    strays = {i: e.get("rule") for i, e in opened.items() if i not in groups
              and i not in own.values()}
    status: dict[str, set[str]] = {}
    for incident, state in _query(db, "SELECT incident_id, status FROM outbox"):
        status.setdefault(incident, set()).add(state)
    paged = {i for i, states in status.items() if "sent" in states}
    first = watch.first_requests()
    member_of: dict[str, list[str]] = {}
    for incident, data in _query(db, "SELECT id, data FROM incidents"):
        member_of[incident] = list(json.loads(data).get("groups") or [])
    covered_at: dict[str, float] = {}  # detector -> first request of its incident or fire
    for device, incident in own.items():
        times = [first[i] for i in (incident, *member_of.get(incident, ())) if i in first]
        if times:
            covered_at[device] = min(times)
    missing = [d.id for d in detectors if d.id not in own]
    if missing:
        problems.append(f"{len(missing)} detectors without an incident_opened "
                        f"({latency.RULE}), e.g. {missing[:3]}")
    if len(groups) != watch.groups_expected:
        problems.append(f"{len(groups)} confirmed fires opened, {watch.groups_expected} "
                        "buildings have ≥ 2 detectors")
    if strays:
        problems.append(f"other incidents opened: {dict(Counter(strays.values()))}")
    if paged - first.keys():
        problems.append(f"{len(paged - first.keys())} incidents marked sent in the outbox "
                        "never reached the webhook")
    if any("failed" in s or "pending" in s for s in status.values()):
        problems.append(f"notices failed or still pending: "
                        f"{sum('failed' in s or 'pending' in s for s in status.values())} "
                        "incidents")
    uncovered = [d.id for d in detectors if d.id not in covered_at]
    if uncovered:
        problems.append(f"{len(uncovered)} detectors whose alarm paged nobody, neither on "
                        f"its own nor as a confirmed fire, e.g. {uncovered[:3]}")
    opened_at = [common.event_time(opened[i]) for i in (*own.values(), *groups)]
    committed = [common.event_time(opened[own[d.id]]) - sent[d.id] for d in detectors
                 if d.id in own]
    return {
        "open_s": round(max(opened_at) - t_last, 3) if opened_at and not missing else None,
        "notified_s": round(max(first[i] for i in paged) - t_last, 3)
        if paged and paged <= first.keys() else None,
        "covered_s": round(max(covered_at.values()) - t_last, 3)
        if covered_at and not uncovered else None,
        "alarm_seconds": round(t_last - min(sent.values()), 3),
        "incidents_opened": len(own) + len(groups), "fires": len(groups),
        "paged_incidents": len(paged),
        "paged_detector_incidents": len(paged & set(own.values())),
        "detectors_covered_by_fire_only": sum(1 for d, i in own.items()
                                              if i not in paged and d in covered_at),
        "withdrawn_only": sum(1 for s in status.values() if s == {"withdrawn"}),
        "requests": len(watch.receiver.requests),
        "committed": latency.stats_ms(committed),
    }


# ---------------------------------------------------------------------------------------
# 4. Start-up (bench/startup.py)
# ---------------------------------------------------------------------------------------


def run_startup(args: argparse.Namespace) -> CompareRun:
    import startup  # bench/startup.py

    run = CompareRun("startup", 1, 0.0)
    figures: dict[str, Any] = {}
    for label, devices in (("example", startup.example_devices()), ("large", args.devices)):
        common.log(f"  start-up with {devices:,} devices, {args.repeat} run(s)")
        result = startup.measure_startup(devices, args.repeat, quiet_wait=args.quiet_wait)
        figures[f"{label}_devices"] = devices
        figures[f"{label}_ready_s"] = result.get("ready_s")
        figures[f"{label}_rss_mib"] = result.get("peak_rss_mib")
        figures[f"{label}_result"] = result
        run.problems += [f"start-up, {devices} devices: {p}"
                         for p in result.get("problems", [])]
        busy = max((r.get("busy_before_pct") or 0.0 for r in result.get("runs", [])),
                   default=0.0)
        if busy > args.foreign_warn:
            run.warnings.append(f"start-up, {devices} devices: other processes used "
                                f"{busy:.0f}% CPU just before a start: figures disturbed")
    run.figures[SENTINEL] = figures
    return run


# ---------------------------------------------------------------------------------------
# Report: medians, the short table with the targets
# ---------------------------------------------------------------------------------------


def summarise(runs: list[CompareRun]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Medians over the runs of every numeric figure: phase key -> contender -> figure."""
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        for contender, figures in run.figures.items():
            for name, value in figures.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and \
                        name not in NOT_FIGURES:
                    (values.setdefault(run.key, {}).setdefault(contender, {})
                     .setdefault(name, []).append(float(value)))
    return {key: {c: {n: common.median(v) for n, v in figs.items()}
                  for c, figs in by_contender.items()}
            for key, by_contender in values.items()}


@dataclass
class Row:
    measure: str
    values: dict[str, float | None]  # contender -> median
    fmt: str = ",.0f"
    target: str = ""
    holds: bool | None = None  # None: no target, or not measured


def _verdict(holds: bool | None) -> str:
    return {True: "holds", False: "MISSED", None: "n/a"}[holds]


def _all(*checks: bool | None) -> bool | None:
    return None if any(c is None for c in checks) else all(checks)


def _le(value: float | None, limit: float | None) -> bool | None:
    return None if value is None or limit is None else value <= limit


def _ge(value: float | None, limit: float | None) -> bool | None:
    return None if value is None or limit is None else value >= limit


def table_rows(summary: dict[str, dict[str, dict[str, float | None]]],
               rates: list[float], storm_rate: float) -> list[Row]:
    def get(key: str, contender: str, name: str) -> float | None:
        return summary.get(key, {}).get(contender, {}).get(name)

    def row(key: str, label: str, name: str, fmt: str = ",.0f",
            contenders: tuple[str, ...] = CONTENDERS) -> Row:
        return Row(label, {c: get(key, c, name) for c in contenders}, fmt)

    rows: list[Row] = []
    if "ingest" in summary:
        rows.append(row("ingest", "ingest: readings/s stored (bare: received)", "rate"))
        vs_red = row("ingest", "ingest: sentinel ÷ Node-RED (per run)", "vs_nodered", ".2f",
                     (SENTINEL,))
        vs_red.target, vs_red.holds = "≥ 1.5", _ge(vs_red.values[SENTINEL], 1.5)
        vs_paho = row("ingest", "ingest: sentinel ÷ bare paho (per run)", "vs_paho", ".2f",
                      (SENTINEL,))
        vs_paho.target, vs_paho.holds = "≥ 0.6", _ge(vs_paho.values[SENTINEL], 0.6)
        rows += [vs_red, vs_paho, row("ingest", "ingest: CPU %", "cpu_pct"),
                 row("ingest", "ingest: peak RSS MiB", "rss_mib")]
    for rate in rates:
        key = f"latency@{rate:g}"
        if key not in summary:
            continue
        at = f"alarm @ {rate:,.0f}/s"
        p99 = row(key, f"{at}: p99 ms", "p99", ".1f", (SENTINEL, NODERED))
        rss = row(key, f"{at}: peak RSS MiB", "rss_mib", ".0f", (SENTINEL, NODERED))
        if rate == 5000:
            mine, peer = p99.values[SENTINEL], p99.values.get(NODERED)
            p99.target = "≤ 5 ms and ≤ Node-RED"
            p99.holds = _all(_le(mine, 5.0), _le(mine, peer))
            rss.target = "≤ 150 MB (143 MiB)"
            rss.holds = _le(rss.values[SENTINEL], 150 * MB)
        rows += [row(key, f"{at}: p50 ms", "p50", ".1f", (SENTINEL, NODERED)), p99,
                 row(key, f"{at}: max ms", "max", ".1f", (SENTINEL, NODERED)),
                 row(key, f"{at}: CPU %", "cpu_pct", ".0f", (SENTINEL, NODERED)), rss]
    key = f"storm@{storm_rate:g}"
    if key in summary:
        at = f"storm @ {storm_rate:,.0f}/s"
        for name, label in (("open_s", "every incident open, s after last alarm"),
                            ("notified_s", "every first notification, s after last")):
            r = row(key, f"{at}: {label}", name, ".2f", (SENTINEL,))
            r.target, r.holds = "≤ 1 s", _le(r.values[SENTINEL], 1.0)
            rows.append(r)
        rows += [row(key, f"{at}: CPU %", "cpu_pct", ".0f", (SENTINEL,)),
                 row(key, f"{at}: peak RSS MiB", "rss_mib", ".0f", (SENTINEL,))]
    if "startup" in summary:
        for label in ("example", "large"):
            devices = get("startup", SENTINEL, f"{label}_devices") or 0
            ready = row("startup", f"start-up, {devices:,.0f} devices: s to ready",
                        f"{label}_ready_s", ".2f", (SENTINEL,))
            rss = row("startup", f"start-up, {devices:,.0f} devices: peak RSS MiB",
                      f"{label}_rss_mib", ".0f", (SENTINEL,))
            if devices >= 100_000:
                ready.target, ready.holds = "≤ 2 s", _le(ready.values[SENTINEL], 2.0)
                rss.target = "≤ 250 MB (238 MiB)"
                rss.holds = _le(rss.values[SENTINEL], 250 * MB)
            rows += [ready, rss]
    return rows


def print_table(rows: list[Row], contenders: list[str], runs: list[CompareRun],
                args: argparse.Namespace, seconds: float) -> None:
    width = max(len(r.measure) for r in rows) + 2
    head = f"{'measure':<{width}}" + "".join(f"{c:>14}" for c in contenders) + "  target"
    print()
    print(f"sentinel vs Node-RED vs bare consumers, same machine ({os.cpu_count()} CPUs), "
          f"medians of {args.repeat} run(s); {time.strftime('%Y-%m-%d %H:%M')}, "
          f"took {seconds / 60:.1f} min")
    print(head)
    print("-" * len(head))
    def cell(r: Row, contender: str) -> str:
        if contender not in r.values:
            return ""
        value = r.values[contender]
        return "-" if value is None else format(value, r.fmt)

    for r in rows:
        cells = "".join(f"{cell(r, c):>14}" for c in contenders)
        target = f"  {r.target}: {_verdict(r.holds)}" if r.target else ""
        print(f"{r.measure:<{width}}{cells}{target}")
    disturbed = [f"{r.key} run {r.repeat}" for r in runs
                 if any("disturbed" in w for w in r.warnings)]
    failed = [f"{r.key} run {r.repeat}" for r in runs if r.problems]
    print()
    print(f"readings: ingest backlog {args.readings:,} (QoS 1); {args.alarms} alarms per rate; "
          f"runs disturbed by other processes: {', '.join(disturbed) or 'none'}; "
          f"failed: {', '.join(failed) or 'none'}")


def _versions(with_nodered: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(),
                           "machine": platform.machine(), "cpus": os.cpu_count()}
    if with_nodered:
        out["node-red"] = _nodered().pinned_versions()
    return out


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=_csv, default=list(PHASES),
                        help=f"phases to run, comma-separated (default {','.join(PHASES)})")
    parser.add_argument("--readings", type=int, default=100_000,
                        help="ingest: backlog size, readings = messages (100000)")
    parser.add_argument("--publishers", type=int, default=2,
                        help="ingest: backlog publisher processes (2)")
    parser.add_argument("--poll", type=float, default=0.2,
                        help="ingest: seconds between store polls, the timing resolution (0.2)")
    parser.add_argument("--rates", type=lambda t: [float(x) for x in _csv(t)],
                        default=[1000.0, 5000.0],
                        help="latency: background readings/s, comma-separated (1000,5000)")
    parser.add_argument("--alarms", type=int, default=100,
                        help="latency: alarms per rate, each from its own detector (100)")
    parser.add_argument("--interval", type=float, default=0.075,
                        help="latency: mean seconds between alarms, jittered ±1/3 (0.075)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="latency, storm: seconds of background before the alarms (3)")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="latency: seconds to wait for the last alarm's result (15)")
    parser.add_argument("--storm-background", type=float, default=1000.0,
                        help="storm: background readings/s (1000)")
    parser.add_argument("--storm-seconds", type=float, default=10.0,
                        help="storm: all 747 alarms are published within this (10)")
    parser.add_argument("--storm-timeout", type=float, default=120.0,
                        help="storm: seconds to wait for every incident and notification "
                             "after the last alarm (120)")
    parser.add_argument("--devices", type=int, default=100_000,
                        help="startup: the large inventory's devices (100000)")
    parser.add_argument("--no-nodered", dest="nodered", action="store_false",
                        help="leave Node-RED out (it needs Node.js and npm)")
    parser.add_argument("--nodered-nagle", action="store_true",
                        help="leave Nagle's algorithm on Node-RED's MQTT socket (stock "
                             "Node-RED); default: TCP_NODELAY, as sentinel sets it")
    common.add_shared_options(
        parser, unit="run", window="while it was measured",
        repeat_help="runs of every phase; the table shows medians (3)",
        json_help="write every run's raw figures and the medians to this file",
        drain_timeout=0.0,
        drain_timeout_help="ingest: give up a drain after this many seconds (default N/400, "
                           "≥ 120); latency, storm: seconds the store may take to catch up "
                           "after the background stops (60)",
        quiet_wait=60.0, default_fmt="({:g})")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(PHASES)
    if unknown:
        parser.error(f"--only: unknown phase(s) {', '.join(sorted(unknown))}")
    args.py_spy = None  # ingest.drain_sentinel's profiling: not here
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    base_dir = Path(tempfile.mkdtemp(prefix="sentinel-compare-"))
    check = Mosquitto(base_dir / "config-check").config_text()
    if "set_tcp_nodelay true" not in check:
        raise SystemExit("tests/servers.py's Mosquitto no longer sets set_tcp_nodelay true")
    if "startup" in args.only and importlib.util.find_spec("startup") is None:
        common.log("bench/startup.py not found: the startup phase is left out")
        args.only.remove("startup")
    if args.nodered and {"ingest", "latency"} & set(args.only):
        try:
            common.log(f"Node-RED: {_nodered().ensure_installed()}")
        except (ImportError, RuntimeError) as exc:
            raise SystemExit(f"Node-RED peer not available ({exc}); --no-nodered leaves "
                             "it out") from exc
    args.topics = ingest.daemon_topics()
    backlog = None
    if "ingest" in args.only:
        t = time.monotonic()
        backlog = ingest.build_backlog(args.readings, args.publishers)
        common.log(f"backlog: {backlog.readings} readings from {backlog.devices} devices, "
                   f"built in {time.monotonic() - t:.1f}s; runs in {base_dir}")
    # --drain-timeout: for ingest a drain's limit (0: N/400), for latency and storm how long
    # the store may take to catch up after the background stops (60 s unless given).
    catch_up = argparse.Namespace(**{**vars(args), "drain_timeout": args.drain_timeout or 60.0})
    phases = [(p, 0.0) for p in args.only if p == "ingest"]
    phases += [("latency", r) for r in args.rates if "latency" in args.only]
    phases += [(p, args.storm_background) for p in args.only if p == "storm"]
    phases += [(p, 0.0) for p in args.only if p == "startup"]

    def run(phase: str, repeat: int, rate: float, cleanup: contextlib.ExitStack
            ) -> CompareRun:
        if phase == "ingest":
            assert backlog is not None
            return run_ingest(repeat, backlog, args, base_dir)
        if phase == "startup":
            return run_startup(args)
        measure = run_latency if phase == "latency" else run_storm
        return measure(repeat, rate, catch_up, base_dir, cleanup)

    def describe(r: CompareRun) -> list[str]:
        return [f"{c}: " + ", ".join(f"{k} {f[k]:,.4g}" for k in KEY_FIGURES
                                      if isinstance(f.get(k), int | float))
                for c, f in r.figures.items()]

    def report(runs: list[CompareRun]) -> None:
        summary = summarise(runs)
        rows = table_rows(summary, args.rates, args.storm_background)
        contenders = [c for c in CONTENDERS if any(c in r.figures for r in runs)]
        if rows:
            print_table(rows, contenders, runs, args, time.monotonic() - started)
        if args.json:
            doc = {"command": [sys.argv[0], *(sys.argv[1:] if argv is None else argv)],
                   "options": {k: v for k, v in vars(args).items() if k != "topics"},
                   "versions": _versions(args.nodered and NODERED in contenders),
                   "seconds": round(time.monotonic() - started, 1),
                   "medians": summary,
                   "targets": [{"measure": r.measure, "target": r.target,
                                "sentinel": r.values.get(SENTINEL), "holds": r.holds}
                               for r in rows if r.target],
                   "runs": [asdict(r) for r in runs]}
            common.write_json(args.json, doc)
            common.log(f"results written to {args.json}")

    return common.run_repetitions(base_dir, args.keep, args.repeat, phases, args.quiet_wait,
                                  run, describe, report, once={"startup"})


if __name__ == "__main__":
    sys.exit(main())
