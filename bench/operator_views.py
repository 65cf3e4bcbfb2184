#!/usr/bin/env python3
"""Operator views benchmark: what `sentinel tail` and the control API cost and how fast they are.

For each phase a fresh private Mosquitto and a fresh daemon (shipped configuration and
inventory, SQLite backend, empty state dir, notifications to a local webhook) are started.
Phase `idle` has no other traffic; phase `telemetry` runs with normal readings from the
rest of the inventory at a fixed rate (5,000/s by default, `incident_latency.Background`).
Each phase measures:

* alarm → tail line: `sentinel tail --json` runs as a subprocess (the Unix socket
  `<state_dir>/control.sock`); smoke alarms are published one at a time (distinct
  detectors, ~100 ms apart) and, per alarm, the time from the publish to the moment the
  benchmark reads the tail's `"type":"opened"` line from its stdout;
* `GET /metrics`, `/api/status` and `/api/incidents` over HTTP (bearer token from
  `<state_dir>/control.token`, one keep-alive connection, round-robin, 10 ms apart):
  latency and body size;
* (telemetry only) the daemon's CPU over a window without and a window with a
  `sentinel tail --readings --json` follower attached, the store's rate in each window,
  and whether the follower was told of `readings_dropped`.

See bench/README.md ("Operator views").

    python bench/operator_views.py [--samples N] [--requests N] [--background RATE]
                                   [--repeat K] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import common  # first: it puts src/ and tests/ on sys.path
from incident_latency import (
    Background,
    Probe,
    alarm_messages,
    probe_devices,
    publish_alarms,
    stats_ms,
)
from sentinel.config.inventory import Device

from daemon import DaemonProcess, timestamped_devices
from helpers import ROOT, SHIPPED_CONFIG
from servers import Mosquitto

ENDPOINTS = ("/metrics", "/api/status", "/api/incidents")
WARMUPS = 2  # untimed alarms per phase, before the timed ones (see run_phase)
# Settings the benchmark (or DaemonProcess) sets; the same variables in the environment
# are ignored.
_OWN_SETTINGS = ("SENTINEL_MQTT__PORT", "SENTINEL_STATE_DIR", "SENTINEL_LOG__FORMAT",
                 "SENTINEL_CONTROL__PORT", "SENTINEL_ESCALATION__ONCALL")
_DROPPED = re.compile(r"too many readings: (\d+) skipped")


def settings_from_env() -> dict[str, str]:
    """SENTINEL_* variables of our environment, as DaemonProcess overrides."""
    return {k.removeprefix("SENTINEL_").lower(): v for k, v in os.environ.items()
            if k.startswith("SENTINEL_") and k not in _OWN_SETTINGS}


def stored_count(db: Path) -> int:
    """Rows in the daemon's readings table (read-only connection; 0 before it exists)."""
    if not db.exists():
        return 0
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
        finally:
            conn.close()
    return 0


# ---------------------------------------------------------------------------------------
# `sentinel tail --json` as a subprocess, its stdout read (and timestamped) by a thread
# ---------------------------------------------------------------------------------------


class TailProcess:
    """`sentinel tail --json [--readings]` against the daemon (through its Unix socket, as
    an operator on the box would run it). Each stdout line is stamped with time.time() as
    soon as the benchmark has read it; readings are only counted."""

    def __init__(self, daemon: DaemonProcess, err_path: Path, readings: bool = False) -> None:
        command = [sys.executable, "-m", "sentinel", "tail", "--json", "--lang", "en",
                   "-c", str(SHIPPED_CONFIG)] + (["--readings"] if readings else [])
        self.err_path = err_path
        self._err: IO[bytes] = err_path.open("wb")
        self.proc = subprocess.Popen(command, env=daemon.env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=self._err)
        self.opened: dict[str, float] = {}  # device -> its `opened` line was read
        self.listed: set[str] = set()  # devices of incidents open when the tail started
        self.events = 0  # `"stream":"event"` lines
        self.readings = 0
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="tail-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            now = time.time()
            if raw.startswith(b'{"stream":"reading"'):
                self.readings += 1  # one writer (this thread); readers tolerate a stale value
                if self.readings == 1:
                    with self._changed:
                        self._changed.notify_all()
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                data = {}
            stream, device = data.get("stream"), str(data.get("device_id")
                                                     or data.get("device") or "")
            with self._changed:
                if stream == "open":
                    self.listed.add(device)
                elif stream == "event":
                    self.events += 1
                    if data.get("type") == "opened" and device:
                        self.opened.setdefault(device, now)
                self._changed.notify_all()

    def wait(self, predicate: Any, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def cpu(self) -> float:
        return common.proc_cpu(self.proc.pid)

    def dropped(self) -> int:
        """Readings the daemon said it skipped for this follower (its last report)."""
        text = self.err_path.read_text(errors="replace") if self.err_path.exists() else ""
        return max((int(n) for n in _DROPPED.findall(text)), default=0)

    def stderr_text(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._thread.join(10)
        self._err.close()
        return self.proc.returncode


# ---------------------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    phase: str  # "idle" or "telemetry"
    repeat: int
    background_rate: float
    samples: int
    tail: dict[str, Any] = field(default_factory=dict)  # publish -> tail line read
    committed: dict[str, Any] = field(default_factory=dict)  # publish -> incident_opened log
    mqtt_state: dict[str, Any] = field(default_factory=dict)  # publish -> retained state
    http: dict[str, dict[str, Any]] = field(default_factory=dict)  # per endpoint
    follower: dict[str, dict[str, Any]] = field(default_factory=dict)  # "off" / "on" windows
    cpu_pct: dict[str, float] = field(default_factory=dict)  # over the alarms and requests
    daemon: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)  # per alarm


def time_alarms(probes: list[Device], probe: Probe, tail: TailProcess, interval: float,
                timeout: float, seed: int) -> dict[str, float]:
    """Publish one alarm per probe, `interval` s apart on average (jittered ±1/3); wait
    until the tail printed every `opened`; return device -> publish time."""
    sent = publish_alarms(probe, probes, interval, seed)
    tail.wait(lambda t: all(d in t.opened for d in sent), timeout)
    return sent


def time_requests(port: int, token: str, count: int, spacing: float) -> dict[str, Any]:
    """`count` GETs of each endpoint, round-robin, over one keep-alive connection."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    seconds: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
    sizes: dict[str, list[int]] = {path: [] for path in ENDPOINTS}
    failures: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
    conn = http.client.HTTPConnection(common.HOST, port, timeout=10)
    try:
        for _ in range(count):
            for path in ENDPOINTS:
                t0 = time.perf_counter()
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                seconds[path].append(time.perf_counter() - t0)
                sizes[path].append(len(body))
                if response.status != 200:
                    failures[path] += 1
                time.sleep(spacing)
    finally:
        conn.close()
    return {path: {**stats_ms(seconds[path]),
                   "bytes": int(common.median(sizes[path]) or 0),
                   "failures": failures[path]} for path in ENDPOINTS}


class CpuMeter:
    """CPU % (100 = one core) of named processes (`daemon` first: also its main thread, the
    event loop), the benchmark and all other processes (`foreign`), from creation to
    `read()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._cpu = {name: common.proc_cpu(pid) for name, pid in pids.items()}
        self._main = common.main_thread_cpu(pids["daemon"])
        self._own, self._busy = time.process_time(), common.system_busy()
        self._t0 = time.time()

    def read(self) -> dict[str, float]:
        dt = time.time() - self._t0
        cpu = {name: round(100 * (common.proc_cpu(pid) - self._cpu[name]) / dt, 1)
               for name, pid in self.pids.items()}
        cpu["bench"] = round(100 * (time.process_time() - self._own) / dt, 1)
        system = 100 * (common.system_busy() - self._busy) / dt
        cpu["foreign"] = round(max(0.0, system - sum(cpu.values())), 1)
        cpu["daemon_main_thread"] = round(
            100 * (common.main_thread_cpu(self.pids["daemon"]) - self._main) / dt, 1)
        return cpu


def cpu_window(seconds: float, pids: dict[str, int], db: Path, background: Background,
               tail: TailProcess | None) -> dict[str, Any]:
    """CPU over `seconds`, the store's rate, and the backlog (readings acknowledged by the
    broker, not yet stored) at both ends; with a follower, what it received."""
    def lag() -> int:
        return max(0, background.acked() - stored_count(db))

    lag0 = lag()
    stored0, readings0 = stored_count(db), tail.readings if tail else 0
    meter, t0 = CpuMeter(pids), time.monotonic()
    time.sleep(seconds)
    cpu, dt = meter.read(), time.monotonic() - t0
    out: dict[str, Any] = {
        "seconds": round(dt, 2), "cpu_pct": cpu,
        "stored_per_s": round((stored_count(db) - stored0) / dt, 1),
        "lag_start": lag0, "lag_end": lag()}
    if tail is not None:
        out["readings_to_follower_per_s"] = round((tail.readings - readings0) / dt, 1)
        out["dropped"] = tail.dropped()
    return out


def run_phase(phase: str, repeat: int, rate: float, probes: list[Device],
              background_ids: list[str], args: argparse.Namespace, base_dir: Path,
              cleanup: contextlib.ExitStack) -> PhaseResult:
    run_dir = base_dir / f"{repeat}-{phase}"
    run_dir.mkdir(parents=True)
    warmups, timed = probes[:WARMUPS], probes[WARMUPS:]
    result = PhaseResult(phase, repeat, rate, len(timed))
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(Mosquitto(run_dir / "mosquitto",
                                               extra_config=common.BROKER_EXTRA))
        background = None
        if rate > 0:
            background = Background(broker.port, rate, background_ids)
            stack.callback(background.close)
            cleanup.callback(background.close)
        webhook = stack.enter_context(common.Webhook())
        daemon = DaemonProcess(run_dir / "state", broker.port,
                               notify_url=webhook.url("json", "/notify"), **settings_from_env())
        stack.callback(daemon.close)
        cleanup.callback(daemon.close)
        daemon.start(timeout=60)
        assert daemon.proc is not None
        token = (daemon.state_dir / "control.token").read_text().strip()
        db = daemon.state_dir / "readings.sqlite3"
        pids = {"daemon": daemon.proc.pid, "broker": broker.pid}
        probe = Probe(broker.port, {d.id for d in probes})
        stack.callback(probe.close)
        if background is not None:
            background.wait_ready()
            pids["publisher"] = background.pid
            background.go.set()
            common.log(f"  background {rate:,.0f}/s from {len(background_ids)} devices; "
                       f"warm-up {args.warmup:.0f}s")
            time.sleep(args.warmup)

        # -- a: alarm -> `sentinel tail --json` line ---------------------------------------
        # The tail prints nothing until there is an incident, and lists the incidents open
        # when it starts before it follows the stream: two untimed alarms, the first shown
        # either way (listed or streamed), then the second on the stream.
        tail = TailProcess(daemon, run_dir / "tail-events.stderr")
        stack.callback(tail.close)
        for device in warmups:
            probe.publish(alarm_messages(device, time.time()))
            if not tail.wait(lambda t, d=device.id: d in t.opened or d in t.listed, 30):
                raise RuntimeError(f"tail printed nothing about the warm-up alarm of "
                                   f"{device.id}:\n{tail.stderr_text()[-2000:]}")
        if warmups[-1].id not in tail.opened:
            raise RuntimeError("tail did not stream the second warm-up alarm")
        meter = CpuMeter(pids)
        sent = time_alarms(timed, probe, tail, args.interval, args.timeout, repeat)
        code = tail.close()
        if code not in (0, -15, 130, 143):
            result.warnings.append(f"tail --json exited {code}: {tail.stderr_text()[-300:]}")
        common.log(f"  tail: {sum(d.id in tail.opened for d in timed)}/{len(timed)} alarms "
                   f"seen")

        # -- b: the control API over HTTP (the alarms' incidents are open) ----------------
        result.http = time_requests(daemon.control_port, token, args.requests, args.spacing)
        result.cpu_pct = meter.read()
        for path, figures in result.http.items():
            if figures["failures"]:
                result.problems.append(f"GET {path}: {figures['failures']} answers not 200")

        # -- c: CPU without and with a readings follower ----------------------------------
        if background is not None:
            order = ("off", "on") if repeat % 2 else ("on", "off")  # drift cancels out
            for state in order:
                follower = None
                if state == "on":
                    follower = TailProcess(daemon, run_dir / "tail-readings.stderr",
                                           readings=True)
                    stack.callback(follower.close)
                    if not follower.wait(lambda t: t.readings > 0, 30):
                        result.problems.append("tail --readings printed no reading")
                    time.sleep(args.settle)
                    window_pids = {**pids, "tail": follower.proc.pid}
                else:
                    time.sleep(args.settle)
                    window_pids = pids
                window = result.follower[state] = cpu_window(args.window, window_pids, db,
                                                             background, follower)
                if follower is not None:
                    follower.close()
                common.log(f"  follower {state}: {window}")

            # Stop the background; every acknowledged reading must be stored.
            bg = background.finish()
            deadline = time.monotonic() + args.drain_timeout
            expected = bg["acked"] + len(probes)
            while stored_count(db) < expected and time.monotonic() < deadline:
                time.sleep(0.2)
            if stored_count(db) < expected:
                result.problems.append(f"store did not catch up: {stored_count(db)} of "
                                       f"{expected} readings stored")
            result.daemon["background"] = {k: bg[k] for k in ("readings", "acked",
                                                              "max_behind")}
            span = bg["finished"] - bg["started"]
            result.daemon["background"]["rate_achieved"] = round(bg["readings"] / span, 1)

        probe.close()
        try:
            result.daemon["exit_code"] = daemon.stop(60)
        except subprocess.TimeoutExpired:
            daemon.close()
            result.problems.append("daemon still running 60s after SIGTERM: killed")
        if result.daemon.get("exit_code") not in (0, None):
            result.problems.append(f"daemon exit code {result.daemon['exit_code']}")

        # -- latencies --------------------------------------------------------------------
        log = common.LogTail(daemon.log_path)
        log.poll()
        committed_at: dict[str, float] = {}
        for e in log.events:
            if e.get("event") == "incident_opened" and e.get("device") in sent:
                committed_at.setdefault(str(e["device"]), common.event_time(e))
        result.daemon["log_warnings"] = common.daemon_log_findings(
            log.events, result.problems, result.warnings)
        tails, commits, states = [], [], []
        for device, t_pub in sent.items():
            row: dict[str, Any] = {"device": device, "t_publish": round(t_pub, 6)}
            for key, at, values in (("tail_s", tail.opened.get(device), tails),
                                    ("committed_s", committed_at.get(device), commits),
                                    ("mqtt_state_s", probe.state_at.get(device), states)):
                if at is not None:
                    row[key] = round(at - t_pub, 6)
                    values.append(row[key])
            result.raw.append(row)
        result.tail, result.committed = stats_ms(tails), stats_ms(commits)
        result.mqtt_state = stats_ms(states)
        for what, cpu in [("the alarms and requests", result.cpu_pct)] + [
                (f"the window with the follower {state}", w["cpu_pct"])
                for state, w in result.follower.items()]:
            if cpu["foreign"] > args.foreign_warn:
                result.warnings.append(f"other processes used {cpu['foreign']:.0f}% CPU "
                                       f"during {what}: figures disturbed")
        if len(tails) < len(sent):
            result.problems.append(f"{len(sent) - len(tails)} alarms without an `opened` "
                                   f"line from tail within {args.timeout:.0f}s")
        if min(tails, default=0) < 0:
            result.problems.append("negative latency: clocks of daemon and bench differ?")
    return result


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def summarise(results: list[PhaseResult]) -> dict[str, Any]:
    """Per phase, the median over runs of each per-run figure."""
    out: dict[str, Any] = {}
    for phase in dict.fromkeys(r.phase for r in results):
        runs = [r for r in results if r.phase == phase]
        s: dict[str, Any] = {"runs": len(runs), "ok_runs": sum(not r.problems for r in runs),
                             "background_rate": runs[0].background_rate}
        for metric in ("tail", "committed", "mqtt_state"):
            s[metric] = {k: common.median([getattr(r, metric).get(k) for r in runs])
                         for k in ("p50", "p99", "max", "mean")}
        s["http"] = {path: {k: common.median([r.http[path].get(k) for r in runs])
                            for k in ("p50", "p99", "max", "bytes")} for path in ENDPOINTS}
        windows = [r.follower for r in runs if r.follower]
        if windows:
            s["follower"] = {}
            for state in ("off", "on"):
                ws = [w[state] for w in windows]
                s["follower"][state] = {
                    "daemon_cpu_pct": common.median([w["cpu_pct"]["daemon"] for w in ws]),
                    "daemon_main_thread_pct": common.median(
                        [w["cpu_pct"]["daemon_main_thread"] for w in ws]),
                    "tail_cpu_pct": common.median([w["cpu_pct"].get("tail") for w in ws]),
                    "foreign_cpu_pct": common.median([w["cpu_pct"]["foreign"] for w in ws]),
                    "stored_per_s": common.median([w["stored_per_s"] for w in ws]),
                    "lag_end": common.median([w["lag_end"] for w in ws]),
                    "readings_to_follower_per_s": common.median(
                        [w.get("readings_to_follower_per_s") for w in ws]),
                    "dropped_max": max((w.get("dropped", 0) for w in ws), default=0)}
        out[phase] = s
    return out


def print_table(summary: dict[str, Any], samples: int, requests: int, repeat: int) -> None:
    def f(value: float | None, fmt: str = ".1f") -> str:
        return "-" if value is None else format(value, fmt)

    print()
    print(f"sentinel operator views: {samples} alarms and {requests} requests per endpoint "
          f"per phase, median of {repeat} run(s)")
    head = f"{'phase':<18}{'measure':<36}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'bytes':>9}"
    print(head)
    print("-" * len(head))
    for s in summary.values():
        label = f"{s['background_rate']:,.0f} readings/s" if s["background_rate"] else "idle"
        for metric, text in (("tail", "alarm → tail --json `opened` line"),
                             ("committed", "  (alarm → incident committed, log)"),
                             ("mqtt_state", "  (alarm → MQTT incident state)")):
            m = s[metric]
            print(f"{label:<18}{text:<36}{f(m['p50']):>9}{f(m['p99']):>9}{f(m['max']):>9}")
        for path, m in s["http"].items():
            print(f"{label:<18}{'GET ' + path:<36}{f(m['p50'], '.2f'):>9}"
                  f"{f(m['p99'], '.2f'):>9}{f(m['max'], '.2f'):>9}{f(m['bytes'], ',.0f'):>9}")
    for s in summary.values():
        fo = s.get("follower")
        if not fo:
            continue
        print()
        print(f"at {s['background_rate']:,.0f} readings/s (CPU %: 100 = one core)")
        head = (f"{'tail --readings --json':<24}{'daemon':>8}{'loop':>7}{'tail':>7}"
                f"{'stored/s':>10}{'to tail/s':>11}{'dropped':>9}{'backlog':>9}")
        print(head)
        print("-" * len(head))
        for state, text in (("off", "not attached"), ("on", "attached")):
            w = fo[state]
            print(f"{text:<24}{f(w['daemon_cpu_pct'], '.0f'):>8}"
                  f"{f(w['daemon_main_thread_pct'], '.0f'):>7}{f(w['tail_cpu_pct'], '.0f'):>7}"
                  f"{f(w['stored_per_s'], ',.0f'):>10}"
                  f"{f(w['readings_to_follower_per_s'], ',.0f'):>11}"
                  f"{w['dropped_max'] if state == 'on' else '-':>9}"
                  f"{f(w['lag_end'], ',.0f'):>9}")
    print()
    for phase, s in summary.items():
        print(f"[{phase}] {s['ok_runs']}/{s['runs']} runs correct")


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100,
                        help="timed alarms per phase, each from its own smoke detector (100)")
    parser.add_argument("--interval", type=float, default=0.1,
                        help="mean seconds between alarms, jittered ±1/3 (0.1)")
    parser.add_argument("--requests", type=int, default=200,
                        help="GETs of each endpoint per phase (200)")
    parser.add_argument("--spacing", type=float, default=0.01,
                        help="seconds between two requests (0.01)")
    parser.add_argument("--background", type=float, default=5000.0,
                        help="background readings/s of the telemetry phase; 0: idle only "
                             "(5000)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of background before the first alarm (3)")
    parser.add_argument("--window", type=float, default=10.0,
                        help="seconds of each CPU window, with and without a readings "
                             "follower (10)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds before a CPU window starts (2)")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds to wait for the last alarm's tail line (15)")
    common.add_shared_options(
        parser, unit="phase", window="while it was measured",
        repeat_help="runs of both phases (median)",
        json_help="write every alarm, run and the medians to this file (default: "
                  "bench/results/operator_views-<time>.json)",
        drain_timeout=60.0,
        drain_timeout_help="seconds the store may take to catch up after the background "
                           "stops (60)",
        quiet_wait=30.0, default_fmt="({:g})")
    args = parser.parse_args(argv)
    if args.json is None:
        results_dir = ROOT / "bench" / "results"
        results_dir.mkdir(parents=True, exist_ok=True)
        args.json = str(results_dir / f"operator_views-{time.strftime('%Y%m%d-%H%M%S')}.json")

    probes = probe_devices(args.samples + WARMUPS)  # the first ones: untimed
    probe_ids = {d.id for d in probes}
    background_ids = [d.id for d in timestamped_devices() if d.id not in probe_ids]
    base_dir = Path(tempfile.mkdtemp(prefix="sentinel-bench-operator-"))
    phases = [("idle", 0.0)] + ([("telemetry", args.background)] if args.background > 0 else [])
    common.log(f"{args.samples} alarms (+{WARMUPS} warm-up) per phase; background devices "
               f"{len(background_ids)}; runs in {base_dir}")
    def describe(r: PhaseResult) -> list[str]:
        return [f"tail {r.tail}; http " + ", ".join(
            f"{p} p50 {m['p50']} ms" for p, m in r.http.items()) + f"; cpu {r.cpu_pct}"]

    def report(results: list[PhaseResult]) -> None:
        summary = summarise(results)
        print_table(summary, args.samples, args.requests, args.repeat)
        common.write_json(args.json, {
            "samples": args.samples, "requests": args.requests,
            "repeat": args.repeat, "background": args.background,
            "interval": args.interval, "window": args.window, "cpus": os.cpu_count(),
            "summary": summary, "runs": [asdict(r) for r in results]})
        common.log(f"results in {args.json}")

    return common.run_repetitions(
        base_dir, args.keep, args.repeat, phases, args.quiet_wait,
        lambda phase, repeat, rate, cleanup: run_phase(
            phase, repeat, rate, probes, background_ids, args, base_dir, cleanup),
        describe, report)


if __name__ == "__main__":
    sys.exit(main())
