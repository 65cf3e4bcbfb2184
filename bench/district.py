#!/usr/bin/env python3
"""District benchmark (issue 18): 100 communities into one district broker, the district
daemon as a process; its lag (a box's event published → in the district's mirror) and peak
RSS.

One private Mosquitto is the district broker; `sentinel district` runs against it with 100
`[[community]]` entries (tests/district_rig.district_config). Publisher processes stand in
for the 100 boxes' bridges, one MQTT connection per community (client id
`bridge-<community>`, the bridge's "1"/"0" on `<prefix>/<c>/bridge`, a will): each
community publishes

  * its incident stream in the box's own format (sentinel.incidents.publish: every event
    on `events`, the incident's state on `incidents/<id>`, retained while open), as whole
    incident lifecycles (opened, escalation_started, escalation_step, notification_sent ×2,
    acknowledged, resolved), at `--events` events/s over all communities;
  * a retained heartbeat (sentinel.district.wire.Heartbeat) every `--heartbeat` s;
  * one-minute aggregates for its share of `--devices` devices (line protocol on
    `aggregates`, 500 lines a message), the communities' minutes staggered over the minute.

Lag: every event's publish time is kept; a watcher polls the district's state database
every `--poll` s for each community's newest mirrored seq (the mirror commits in seq order)
and takes the first poll that shows an event as the time the district had it. So the
figures include up to one poll interval. Peak RSS is the daemon's VmHWM (/proc).
Aggregates go on to a VictoriaMetrics through the InfluxDB v2 API ([store.influxdb]) unless
`--no-tsdb`.

    python bench/district.py [--communities 100] [--devices 100000] [--events 200]
                             [--duration 75] [--json out.json]

Target (issue 18): lag p99 <= 1 s, peak RSS <= 300 MB on the 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import random
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import common  # first: it puts src/ and tests/ on sys.path
from sentinel.district import wire
from sentinel.incidents.model import Incident, IncidentEvent, Status
from sentinel.incidents.publish import event_payload, incident_payload
from sentinel.types import Severity

from district_rig import DistrictProcess, district_config
from receivers import HttpReceiver
from servers import Mosquitto, VictoriaMetrics, free_port

log, peak_rss_mib, proc_cpu, write_json = (common.log, common.peak_rss_mib, common.proc_cpu,
                                           common.write_json)

PREFIX = "sentinel"
LIFECYCLE = ("opened", "escalation_started", "escalation_step", "notification_sent",
             "notification_sent", "acknowledged", "resolved")
AGG_LINES_PER_MESSAGE = 500  # as sentinel.uplink.aggregates


def community_ids(n: int) -> list[str]:
    return [f"c{i:03d}" for i in range(n)]


# ---------------------------------------------------------------------------------------
# The boxes (publisher processes)
# ---------------------------------------------------------------------------------------


class _Community:
    """One community's stream: its connection, its event seq, its open incident."""

    def __init__(self, cid: str, port: int, devices: int) -> None:
        self.id = cid
        self.seq = 0
        self.devices = devices
        self.incidents = 0
        self.step = 0
        self.incident: Incident | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bridge-{cid}",
                                  clean_session=False)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.will_set(wire.topic(PREFIX, cid, wire.BRIDGE), b"0", qos=1, retain=True)
        self.client.connect(common.HOST, port, keepalive=30)
        self.client.loop_start()
        self.publish(wire.BRIDGE, b"1", retain=True)

    def publish(self, leaf: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(wire.topic(PREFIX, self.id, leaf), payload, qos=1, retain=retain)

    def next_event(self, now: float) -> tuple[int, float]:
        """Publish the next event of the current incident's lifecycle; (seq, publish time)."""
        if self.incident is None or self.step >= len(LIFECYCLE):
            self.incidents += 1
            device = f"{self.id}-SMK-{random.randrange(self.devices):05d}"
            self.incident = Incident(
                id=f"{self.id}-inc-{self.incidents}", key=f"smoke_alarm:{device}",
                name="smoke_alarm", target=device, kind="smoke",
                severity=Severity.CRITICAL, opened_at=now,
                place={"community": self.id, "compound": "花园", "building": "1栋",
                       "grid": "G01", "location": "1栋3楼306室"},
                device_id=device, life_safety=True, updated_at=now)
            self.step = 0
        inc = self.incident
        kind = LIFECYCLE[self.step]
        self.step += 1
        inc.updated_at = now
        if kind == "acknowledged":
            inc.status, inc.acknowledged_at, inc.acknowledged_by = (
                Status.ACKNOWLEDGED, now, "gw-01")
        elif kind == "resolved":
            inc.status, inc.resolved_at, inc.resolved_by, inc.active = (
                Status.RESOLVED, now, "gw-01", False)
        self.seq += 1
        data: dict[str, Any] = {"place": inc.place}
        if kind == "notification_sent":
            data.update(contact="gw-01", channel="wecombot")
        elif kind == "escalation_step":
            data.update(step=0, roles=["grid_worker", "property"])
        event = IncidentEvent(inc.id, kind, now, "sentinel", inc.severity, inc.status,
                              data, self.seq)
        sent = time.time()
        self.publish(wire.EVENTS, event_payload(event))
        state = wire.topic(PREFIX, self.id, f"{wire.INCIDENTS}/{inc.id}")
        if inc.open:
            self.client.publish(state, incident_payload(inc), qos=1, retain=True)
        else:
            self.client.publish(state, incident_payload(inc), qos=1)
            self.client.publish(state, b"", qos=1, retain=True)
        return self.seq, sent

    def heartbeat(self, now: float, interval: float) -> None:
        open_ = 1 if self.incident is not None and self.incident.open else 0
        beat = wire.Heartbeat("online", self.id, ts=now, version="bench", name=self.id,
                              interval=interval, last_seq=self.seq, open=open_,
                              devices=self.devices)
        self.publish(wire.HEARTBEAT, beat.payload(), retain=True)

    def aggregates(self, now: float) -> int:
        """The minute that just ended, in the box's format (sentinel.uplink.aggregates:
        measurement = kind, tags community/device/kind, <field>_min/_max/_mean/_count,
        the minute's start in ms)."""
        minute_ms = int(now // 60 * 60 - 60) * 1000
        lines = [
            f"smoke,community={self.id},device={self.id}-SMK-{d:05d},kind=smoke "
            f"battery_min={80 + d % 7},battery_max={81 + d % 7},"
            f"battery_mean={80.5 + d % 7},battery_count=12i {minute_ms}"
            for d in range(self.devices)]
        for i in range(0, len(lines), AGG_LINES_PER_MESSAGE):
            self.publish(wire.AGGREGATES, "\n".join(lines[i:i + AGG_LINES_PER_MESSAGE]).encode())
        return len(lines)


def _boxes(worker: int, cids: list[str], port: int, devices: int, rate: float,
           heartbeat: float, duration: float, aggregates: bool, start_at: float,
           out: Any) -> None:
    """One publisher process: its share of the communities, `rate` events/s among them."""
    random.seed(worker)
    communities = [_Community(c, port, devices) for c in cids]
    ledger: list[tuple[str, int, float]] = []
    counts = {"events": 0, "heartbeats": 0, "aggregate_lines": 0}
    # Staggered: each community's heartbeat and aggregate minute at its own offset.
    offsets = {c.id: random.random() for c in communities}
    next_beat = {c.id: start_at + offsets[c.id] * heartbeat for c in communities}
    next_agg = {c.id: start_at + offsets[c.id] * 60.0 for c in communities}
    time.sleep(max(0.0, start_at - time.time()))
    for c in communities:
        c.heartbeat(time.time(), heartbeat)
    end = start_at + duration
    interval = 1.0 / rate if rate > 0 else float("inf")
    due = start_at
    n = 0
    while (now := time.time()) < end:
        while due <= now:
            c = communities[n % len(communities)]
            n += 1
            seq, sent = c.next_event(now)
            ledger.append((c.id, seq, sent))
            counts["events"] += 1
            due += interval
        for c in communities:
            if next_beat[c.id] <= now:
                c.heartbeat(now, heartbeat)
                counts["heartbeats"] += 1
                next_beat[c.id] += heartbeat
            if aggregates and next_agg[c.id] <= now:
                counts["aggregate_lines"] += c.aggregates(next_agg[c.id])
                next_agg[c.id] += 60.0
        time.sleep(max(0.0, min(due, min(next_beat.values())) - time.time()))
    for c in communities:
        c.heartbeat(time.time(), heartbeat)
    time.sleep(1.0)  # let the last publishes leave (QoS 1)
    for c in communities:
        c.client.disconnect()
        c.client.loop_stop()
    out.put((ledger, counts))


# ---------------------------------------------------------------------------------------
# The watcher: when did the district have each event
# ---------------------------------------------------------------------------------------


class Watcher:
    """Polls the district's state database for each community's newest mirrored seq."""

    def __init__(self, district: DistrictProcess, poll: float) -> None:
        self.district = district
        self.poll = poll
        self.seen: dict[str, list[tuple[int, float]]] = {}   # community -> (max seq, when)
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="watcher")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        where: tuple[Path, str] | None = None
        conn: sqlite3.Connection | None = None
        last: dict[str, int] = {}
        while not self._stop.is_set():
            if where is None:
                tables = self.district._event_tables()  # the rig's shape-based lookup
                if tables:
                    where = tables[0]
                    conn = sqlite3.connect(f"file:{where[0]}?mode=ro", uri=True, timeout=5)
            if conn is not None and where is not None:
                with contextlib.suppress(sqlite3.OperationalError):
                    rows = conn.execute(f'SELECT community, max(seq) FROM "{where[1]}" '
                                        "GROUP BY community").fetchall()
                    now = time.time()
                    self.polls += 1
                    for community, top in rows:
                        if top is not None and top > last.get(community, 0):
                            last[community] = int(top)
                            self.seen.setdefault(community, []).append((int(top), now))
            self._stop.wait(self.poll)
        if conn is not None:
            conn.close()

    def arrival(self, community: str, seq: int) -> float | None:
        for top, when in self.seen.get(community, []):
            if top >= seq:
                return when
        return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# ---------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="sentinel-bench-district-"))
    cids = community_ids(args.communities)
    per_community = max(1, args.devices // args.communities)
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(HttpReceiver())
        broker = stack.enter_context(Mosquitto(base / "mosquitto",
                                               extra_config=common.BROKER_EXTRA))
        extra: list[str] = []
        vm: VictoriaMetrics | None = None
        if args.tsdb:
            vm = stack.enter_context(VictoriaMetrics(base / "victoria"))
            extra = ["[store.influxdb]", f'url = "{vm.url}"', 'org = "district"',
                     'bucket = "district"']
        keys = {c: secrets.token_urlsafe(32).encode() for c in cids}
        http_port = free_port()
        config = district_config(base / "district", broker.port, http_port, receiver,
                                 [(c, f"社区{c}", "0755-0000-0000") for c in cids], keys,
                                 offline_after=60.0, extra=extra)
        district = DistrictProcess(config, base / "district" / "state", http_port)
        stack.callback(district.close)
        started = time.monotonic()
        district.start(timeout=60)
        assert district.proc is not None
        pid = district.proc.pid
        log(f"district up in {time.monotonic() - started:.1f} s (pid {pid}); "
            f"{args.communities} communities, {args.events} events/s, "
            f"{per_community * args.communities} devices' aggregates, {args.duration:g} s")
        common.wait_for_quiet(args.quiet_wait)
        watcher = Watcher(district, args.poll)
        watcher.start()
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        workers = args.workers
        start_at = time.time() + 3.0
        procs = []
        for w in range(workers):
            share = cids[w::workers]
            procs.append(ctx.Process(target=_boxes, args=(
                w, share, broker.port, per_community, args.events / workers, args.heartbeat,
                args.duration, not args.no_aggregates, start_at, out)))
        for p in procs:
            p.start()
        cpu0 = proc_cpu(pid)
        t0 = time.monotonic()
        rss_samples: list[float] = []
        ledger: list[tuple[str, int, float]] = []
        counts: dict[str, int] = {}
        got = 0
        while got < workers:
            with contextlib.suppress(Exception):
                part, c = out.get(timeout=1.0)
                ledger += part
                for k, v in c.items():
                    counts[k] = counts.get(k, 0) + v
                got += 1
            if district.alive:
                rss_samples.append(peak_rss_mib(pid))
            if time.monotonic() - t0 > args.duration + 120:
                problems.append("publishers did not finish")
                break
        for p in procs:
            p.join(10)
        # Drain: until the district has every event, or --drain s.
        tops: dict[str, int] = {}
        for c, seq, _ in ledger:
            tops[c] = max(tops.get(c, 0), seq)
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and any(
                watcher.arrival(c, s) is None for c, s in tops.items()):
            time.sleep(0.2)
        watcher.stop()
        cpu = proc_cpu(pid) - cpu0 if district.alive else float("nan")
        elapsed = time.monotonic() - t0
        rss = peak_rss_mib(pid) if district.alive else max(rss_samples, default=float("nan"))
        if not district.alive:
            problems.append("the district daemon died during the run")
        lags = []
        missing = 0
        for c, seq, sent in ledger:
            arrived = watcher.arrival(c, seq)
            if arrived is None:
                missing += 1
            else:
                lags.append(arrived - sent)
        if missing:
            problems.append(f"{missing} events never reached the district's mirror")
        aggregate_points = None
        if vm is not None and counts.get("aggregate_lines"):
            aggregate_points = len(vm.wait_for_points("smoke", counts["aggregate_lines"],
                                                      timeout=30, key_label="device"))
            if aggregate_points < counts["aggregate_lines"]:
                problems.append(f"{counts['aggregate_lines'] - aggregate_points} aggregate "
                                "lines did not reach the TSDB")
        result = {
            "communities": args.communities, "devices": per_community * args.communities,
            "events_per_s": args.events, "duration_s": args.duration, **counts,
            "events_mirrored": len(lags), "events_missing": missing,
            "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
            "lag_p99_s": round(_percentile(lags, 0.99), 3) if lags else None,
            "lag_max_s": round(max(lags), 3) if lags else None,
            "poll_s": args.poll, "peak_rss_mib": round(rss, 1),
            "cpu_pct_of_core": round(100 * cpu / elapsed, 1),
            "aggregate_points_in_tsdb": aggregate_points,
            "pages_to_street_office": len(receiver.requests),
            "problems": problems,
            "target_met": bool(lags) and _percentile(lags, 0.99) <= 1.0 and rss <= 300
            and not problems,
        }
        district.stop()
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        log(f"kept {base}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--communities", type=int, default=100)
    parser.add_argument("--devices", type=int, default=100_000,
                        help="devices whose one-minute aggregates are published (in all)")
    parser.add_argument("--events", type=float, default=200.0,
                        help="incident events per second over all communities")
    parser.add_argument("--heartbeat", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=75.0)
    parser.add_argument("--drain", type=float, default=30.0,
                        help="seconds to wait after publishing for the mirror to catch up")
    parser.add_argument("--poll", type=float, default=0.02)
    parser.add_argument("--workers", type=int, default=2, help="publisher processes")
    parser.add_argument("--no-aggregates", action="store_true")
    parser.add_argument("--no-tsdb", dest="tsdb", action="store_false",
                        help="no [store.influxdb]: aggregates are received, not stored")
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    result = run(args)
    for key, value in result.items():
        print(f"{key:<26} {value}")
    if args.json:
        write_json(args.json, result)
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
