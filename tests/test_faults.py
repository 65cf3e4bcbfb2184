"""The fault battery, short versions (the long ones: `make faults`).

Each test keeps a ledger of what went in (the simulator's `--ledger`: every reading it
published, acknowledged by the broker) and checks what came out (the readings store, the
incidents, the receivers' Idempotency-Keys): lost, duplicated and unexpected must all be 0.
Faults are real: the daemon killed with SIGKILL, the broker stopped and killed, connections
cut, stalled and slowed by a TCP proxy between the daemon and the broker.

`FAULTS_SCALE=long` stretches the kill loop to 2 minutes of 1005 devices (`make faults`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from sentinel.incidents.store import read_incidents

from daemon import DaemonProcess, Publisher, alarm, readings, stored_keys, wait_until
from fault_proxy import FaultProxy
from helpers import ROOT, SHIPPED_CONFIG
from receivers import HttpReceiver
from servers import Mosquitto, VictoriaMetrics

LONG = os.environ.get("FAULTS_SCALE") == "long"


class Simulation:
    """`sentinel simulate` publishing to the broker directly, with a ledger."""

    def __init__(self, port: int, ledger: Path, *args: str) -> None:
        self.ledger = ledger
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "simulate", "-c", str(SHIPPED_CONFIG),
             "--port", str(port), "--quiet", "--ledger", str(ledger),
             "--client-id", f"sim-{ledger.stem}", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 300) -> None:
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err[-2000:]

    def keys(self) -> set[tuple[str, int]]:
        """(device, ts_ms) of every published reading that carries its own timestamp."""
        rows = [json.loads(line) for line in self.ledger.read_text().splitlines()]
        return {(r["device_id"], r["ts_ms"]) for r in rows if r["ts_ms"] is not None}


def assert_nothing_lost(sim: Simulation, daemon: DaemonProcess, within: float = 30) -> None:
    expected = sim.keys()
    assert expected, "the simulation published nothing"
    db = daemon.state_dir / "readings.sqlite3"
    wait_until(lambda: expected <= stored_keys(db), within)
    lost = expected - stored_keys(db)
    report(sim.ledger.stem, published=len(expected), lost=len(lost))
    assert not lost, f"{len(lost)} of {len(expected)} readings lost, e.g. {sorted(lost)[:3]}"


def connected_at(daemon: DaemonProcess) -> list[float]:
    return [datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00")).timestamp()
            for e in daemon.log_events() if e.get("event") == "mqtt_connected"]


def reconnected_within(daemon: DaemonProcess, since: float, seconds: float) -> bool:
    return any(since <= t <= since + seconds for t in connected_at(daemon))


def test_cut_connections_between_daemon_and_broker(mosquitto: Mosquitto, tmp_path: Path,
                                                   daemons: list[DaemonProcess]) -> None:
    """Connections reset twice under load: reconnect within 5 s each time, nothing lost."""
    with FaultProxy(mosquitto.port) as proxy:
        daemon = DaemonProcess(tmp_path / "state", proxy.port).start()
        daemons.append(daemon)
        sim = Simulation(mosquitto.port, tmp_path / "ledger.jsonl", "--rate", "300",
                         "--duration", "8")
        cuts = []
        for pause in (2.0, 3.0):
            time.sleep(pause)
            cuts.append(time.time())
            proxy.cut()
        sim.wait()
        assert_nothing_lost(sim, daemon)
        for cut in cuts:
            assert reconnected_within(daemon, cut, 5.0), (cut, connected_at(daemon))
        assert proxy.accepted >= 3


def test_half_open_connection_is_detected_by_keepalive(mosquitto: Mosquitto, tmp_path: Path,
                                                       daemons: list[DaemonProcess]) -> None:
    """The link goes silent without closing (a dead NAT, a pulled cable): the daemon's
    keepalive notices, it reconnects, and what was published meanwhile arrives."""
    keepalive = 5
    with FaultProxy(mosquitto.port) as proxy:
        daemon = DaemonProcess(tmp_path / "state", proxy.port,
                               mqtt__keepalive=str(keepalive)).start()
        daemons.append(daemon)
        stalled_at = time.time()
        proxy.stall()
        sim = Simulation(mosquitto.port, tmp_path / "ledger.jsonl", "--rate", "200",
                         "--duration", "3")
        sim.wait()
        # Detected after at most 1.5 keepalive periods without an answer to its ping.
        assert wait_until(lambda: reconnected_within(daemon, stalled_at, 3 * keepalive),
                          3 * keepalive + 5), connected_at(daemon)
        detected = min(t for t in connected_at(daemon) if t >= stalled_at) - stalled_at
        assert detected >= keepalive * 0.9, f"reconnected after {detected:.1f} s: too early?"
        assert_nothing_lost(sim, daemon)


def test_slow_link_delays_but_loses_nothing(mosquitto: Mosquitto, tmp_path: Path,
                                            daemons: list[DaemonProcess]) -> None:
    with FaultProxy(mosquitto.port) as proxy:
        proxy.set_latency(0.3)
        daemon = DaemonProcess(tmp_path / "state", proxy.port).start()
        daemons.append(daemon)
        sim = Simulation(mosquitto.port, tmp_path / "ledger.jsonl", "--rate", "300",
                         "--duration", "4", "--inject", "smoke-alarm:SB-SMK-0001@1")
        sim.wait()
        assert_nothing_lost(sim, daemon)
        db = daemon.state_dir / "incidents.sqlite3"
        assert wait_until(lambda: any(i.device_id == "SB-SMK-0001"
                                      for i in read_incidents(db)), 10)


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "kill-9"])
def test_broker_restart(mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess],
                        hard: bool) -> None:
    """Broker stopped (or killed) and started again with its persistence: the daemon is
    back within 5 s, resubscribed, and every reading before and after is stored."""
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port).start()
    daemons.append(daemon)
    before = Simulation(mosquitto.port, tmp_path / "before.jsonl", "--rate", "300",
                        "--duration", "2")
    before.wait()
    assert_nothing_lost(before, daemon)
    mosquitto.restart(hard=hard)
    back_at = time.time()
    assert wait_until(lambda: reconnected_within(daemon, back_at - 1, 6), 10), \
        connected_at(daemon)
    after = Simulation(mosquitto.port, tmp_path / "after.jsonl", "--rate", "300",
                       "--duration", "2")
    after.wait()
    assert_nothing_lost(after, daemon)


def test_kill_9_loop_loses_and_duplicates_nothing(mosquitto: Mosquitto, tmp_path: Path,
                                                  daemons: list[DaemonProcess]) -> None:
    """SIGKILL every 5 s while the whole community publishes at QoS 1 and alarms come in:
    every reading stored, every incident opened once, every notification sent once (or
    twice, the second copy marked as a repeat, if a kill hit between answer and record)."""
    seconds, rate = (120, 1000) if LONG else (25, 300)
    alarms = [("smoke-alarm", "SB-SMK-0010"), ("gas-leak", "SB-GAS-0003"),
              ("fall", "SB-WCH-0005"), ("sos", "SB-WCH-0007"), ("smoke-alarm", "SB-SMK-0200")]
    injects = [f"--inject={event}:{device}@{3 + i * (seconds - 8) / len(alarms):.0f}"
               for i, (event, device) in enumerate(alarms)]
    with HttpReceiver() as hooks:
        daemon = DaemonProcess(tmp_path / "state", mosquitto.port,
                               notify_url=hooks.url("json", "/page")).start()
        daemons.append(daemon)
        sim = Simulation(mosquitto.port, tmp_path / "ledger.jsonl", "--rate", str(rate),
                         "--duration", str(seconds), *injects)
        kills = 0
        started = time.monotonic()
        # A kill every 5 s on the clock, whatever the restart took.
        while (next_kill := started + 5 * (kills + 1)) < started + seconds - 3:
            time.sleep(max(0.0, next_kill - time.monotonic()))
            daemon.kill()
            kills += 1
            daemon.start()
        sim.wait()
        assert_nothing_lost(sim, daemon, within=60)
        db = daemon.state_dir / "incidents.sqlite3"
        names = {"smoke-alarm": "smoke_alarm", "gas-leak": "gas_leak", "fall": "fall",
                 "sos": "sos"}

        def opened() -> Counter[tuple[str, str | None]]:
            return Counter((i.name, i.device_id) for i in read_incidents(db)
                           if i.device_id in {d for _, d in alarms})
        wanted = {(names[event], device) for event, device in alarms}
        assert wait_until(lambda: wanted <= set(opened()), 30), opened()
        counts = opened()
        duplicated = {k: n for k, n in counts.items() if n > 1}
        assert not duplicated, duplicated
        # Every notification key arrived once, or (a kill between the receiver's answer
        # and its record) twice with the second copy marked as a repeat; each is a message
        # the outbox holds (nothing unexpected). A request cut off by a kill brought nothing.
        time.sleep(2)
        arrived = [r for r in hooks.requests if isinstance(r.json, dict)]
        keys = Counter(r.headers.get("idempotency-key") for r in arrived)
        queued = outbox_keys(db)
        sent_twice = {k: n for k, n in keys.items() if n > 2 or (n == 2 and not str(
            [r for r in arrived if r.headers.get("idempotency-key") == k][1].json["title"]
        ).startswith(("【重发】", "[RESENT] ")))}
        unexpected = [k for k in keys if k is None or k.split("+")[0] not in queued]
        for event, device in alarms:
            assert any(device.encode() in r.body for r in arrived), (event, device)
        report("kill-9 loop", published=len(sim.keys()), lost=0, kills=kills,
               incidents=sum(counts.values()), incidents_duplicated=len(duplicated),
               notifications=sum(keys.values()), notifications_duplicated=len(sent_twice),
               unexpected=len(unexpected))
        assert sent_twice == {} and unexpected == []
        assert kills >= (22 if LONG else 4)


def outbox_keys(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {key for (key,) in conn.execute("SELECT key FROM outbox")}
    finally:
        conn.close()


def report(test: str, **figures: int) -> None:
    """The ledger of a run, one line (shown by `make faults`, which runs pytest -s)."""
    print(f"\nLEDGER {test}: " + " ".join(f"{k}={v}" for k, v in figures.items()))


def test_tsdb_down_spools_alerts_at_the_mark_and_replays_in_full(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, tmp_path: Path,
        daemons: list[DaemonProcess]) -> None:
    """The TSDB is down while readings keep coming: they spool; crossing the spool's mark
    opens the spool_nearly_full incident (and pages); when the TSDB is back, everything
    is replayed, nothing lost, and the incident clears."""
    victoria.stop()
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port,
                           store__backend="influxdb", store__influxdb__url=victoria.url,
                           store__influxdb__flush_interval="0.2",
                           store__influxdb__retry_max_delay="1",
                           store__spool__max_bytes=str(400_000),
                           store__spool__warn_ratio="0.5").start()
    daemons.append(daemon)
    db = daemon.state_dir / "incidents.sqlite3"

    def spool_alert() -> list[str]:
        return [i.status.value for i in read_incidents(db) if i.name == "spool_nearly_full"]

    publisher = Publisher(mosquitto.port)
    publisher.publish_readings(readings(4, time.time() - 3600))
    assert wait_until(lambda: spool_alert() == ["firing"], 30), spool_alert()
    if LONG:  # ten minutes of outage under load (800 timestamped devices, one round/s)
        stop = threading.Event()
        load = threading.Thread(target=publisher.publish_readings,
                                args=(readings(600, time.time() - 1800),),
                                kwargs={"rate": 800, "stop": stop})
        load.start()
        load.join(660)
        stop.set()
    victoria.start()
    expected = publisher.ledger
    publisher.close()

    def in_tsdb() -> set[tuple[str, int]]:
        victoria.force_flush()
        keys: set[tuple[str, int]] = set()
        for kind in ("smoke", "gas", "hydrant_pressure", "water_level", "elderly_watch"):
            keys |= victoria.distinct_points(kind)
        return keys

    assert wait_until(lambda: in_tsdb() >= expected, 900 if LONG else 90, interval=2.0)
    lost = expected - in_tsdb()
    report("tsdb down", published=len(expected), lost=len(lost),
           unexpected=len(in_tsdb() - expected))
    assert not lost and in_tsdb() == expected
    # The condition clears with the spool below its mark (auto-resolving system incident).
    assert wait_until(lambda: spool_alert() and spool_alert()[0] != "firing", 90), \
        spool_alert()


def test_receivers_down_everything_is_delivered_or_visibly_failed(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """Every channel answers 503 for a while: retries, then the next tier at once, then
    a notification_failed incident; nothing stays queued unseen. When the receivers are
    back, the next alarm is delivered."""
    with HttpReceiver() as hooks:
        hooks.set_down(True)
        daemon = DaemonProcess(tmp_path / "state", mosquitto.port,
                               notify_url=hooks.url("json", "/page"), notify__attempts="2",
                               notify__retry_min_delay="0.5",
                               notify__retry_max_delay="1").start()
        daemons.append(daemon)
        publisher = Publisher(mosquitto.port)
        publisher.publish_readings(alarm("SB-SMK-0001"))
        db = daemon.state_dir / "incidents.sqlite3"

        def failed_incident() -> bool:
            return any(i.name == "notification_failed" for i in read_incidents(db))
        assert wait_until(failed_incident, 30)
        down_for = float(os.environ.get("FAULTS_DOWN_S", 300 if LONG else 5))
        time.sleep(down_for)
        down_requests = len(hooks.requests)
        hooks.set_down(False)
        publisher.publish_readings(alarm("SB-SMK-0002"))
        assert wait_until(lambda: any(r.status == 200 and b"SB-SMK-0002" in r.body
                                      for r in hooks.requests), 30)
        # Whatever was still queued (storm control holds the non-life-safety
        # notification_failed pages 30 s) now leaves; nothing stays pending.
        assert wait_until(lambda: outbox_status(db).get("pending", 0) == 0, 90), \
            outbox_status(db)
        publisher.close()
        status = outbox_status(db)
        attempts = attempt_results(db)
        assert set(status) <= {"sent", "failed", "withdrawn"}
        # Every failure is visible: attempts recorded, each on the audit trail.
        assert status.get("failed", 0) >= 4 and attempts["failed"] >= 2 * status["failed"]
        report("receivers down", down_s=down_for, notifications_failed=status["failed"],
               notifications_sent=status.get("sent", 0), attempts_failed=attempts["failed"],
               requests_while_down=down_requests, lost=status.get("pending", 0))


def outbox_status(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status"))
    finally:
        conn.close()


def attempt_results(db: Path) -> Counter[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return Counter("sent" if ok else "failed"
                       for (ok,) in conn.execute("SELECT ok FROM attempts"))
    finally:
        conn.close()


def test_stops_promptly_with_the_spool_full_and_loses_nothing(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, tmp_path: Path,
        daemons: list[DaemonProcess]) -> None:
    """SIGTERM while a write waits on a full spool (the TSDB away): the daemon stops
    within its grace instead of hanging; what it had not acknowledged comes back from the
    broker after the restart, and everything reaches the TSDB."""
    victoria.stop()
    overrides = {"store__backend": "influxdb", "store__influxdb__url": victoria.url,
                 "store__influxdb__retry_max_delay": "1",
                 "store__influxdb__flush_interval": "0.2",
                 "store__spool__max_bytes": "20000"}
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port, **overrides).start()
    daemons.append(daemon)
    publisher = Publisher(mosquitto.port)
    publisher.publish_readings(readings(3, time.time() - 600))
    expected = set(publisher.ledger)
    publisher.close()
    assert wait_until(lambda: '"spool_nearly_full"' in daemon.log_text(), 20)
    time.sleep(2)  # a write is now waiting for room in the spool
    asked = time.monotonic()
    assert daemon.stop(timeout=40) == 0
    stopped_in = time.monotonic() - asked
    assert stopped_in < 20, stopped_in
    assert '"ingest_stop_timeout"' in daemon.log_text()
    victoria.start()
    daemon.start()

    def in_tsdb() -> set[tuple[str, int]]:
        victoria.force_flush()
        keys: set[tuple[str, int]] = set()
        for kind in ("smoke", "gas", "hydrant_pressure", "water_level", "elderly_watch"):
            keys |= victoria.distinct_points(kind)
        return keys

    assert wait_until(lambda: in_tsdb() >= expected, 90, interval=2.0)
    report("stop with the spool full", published=len(expected),
           lost=len(expected - in_tsdb()), stopped_in_s=round(stopped_in))
