"""The state disk fills up: the daemon keeps alarming (incidents and notifications use the
reserve it kept back), drops and counts telemetry instead of stalling the broker, raises a
disk_full incident, and stores readings again once space returns.

The state directory is a small tmpfs this test mounts (root, as the test command runs);
the daemon's log lives outside it, as it does under systemd (the journal).
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.incidents.store import read_incidents

from daemon import DaemonProcess, Publisher, alarm, readings, stored_keys, wait_until
from receivers import HttpReceiver
from servers import Mosquitto

RESERVE = 4 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "state"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs",
                             str(mount)], capture_output=True, text=True)
    assert result.returncode == 0, (
        f"cannot mount a tmpfs for the disk-full test (run the tests as root): "
        f"{result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; return it."""
    filler = folder / "filler.bin"
    block = b"\0" * (256 * 1024)
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(block)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    # Fill the last few blocks too, one small write at a time.
    with contextlib.suppress(OSError), filler.open("ab") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
    return filler


def metric(port: int, name: str, **labels: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_alarms_go_through_a_full_disk_and_telemetry_resumes(
        small_disk: Path, tmp_path: Path, mosquitto: Mosquitto) -> None:
    with HttpReceiver() as hooks:
        daemon = DaemonProcess(small_disk, mosquitto.port,
                               notify_url=hooks.url("json", "/page"),
                               store__reserve_bytes=str(RESERVE))
        daemon.log_path = tmp_path / "daemon.log"
        daemon.start()
        try:
            assert (small_disk / "reserve.bin").stat().st_size == RESERVE
            publisher = Publisher(mosquitto.port)
            publisher.publish_readings(readings(1, time.time() - 120))
            db = small_disk / "readings.sqlite3"
            assert wait_until(lambda: len(stored_keys(db)) >= len(publisher.ledger), 20)

            filler = fill(small_disk)
            # Telemetry and then a fire alarm arrive on the full disk.
            before_full = set(publisher.ledger)
            publisher.publish_readings(readings(2, time.time() - 60))
            publisher.publish_readings(alarm("SB-SMK-0001"))
            incidents = small_disk / "incidents.sqlite3"

            def names() -> set[str]:
                return {i.name for i in read_incidents(incidents) if i.open}
            assert wait_until(lambda: {"smoke_alarm", "disk_full"} <= names(), 30), names()
            assert wait_until(lambda: any(b"SB-SMK-0001" in r.body for r in hooks.requests),
                              20)
            assert daemon.alive
            dropped = metric(daemon.control_port, "sentinel_readings_dropped_total",
                             reason="disk_full")
            assert dropped > 0
            assert not (small_disk / "reserve.bin").exists()

            # Space returns: the reserve is put back and readings are stored again.
            filler.unlink()
            while_full = set(publisher.ledger) - before_full
            publisher.publish_readings(readings(1, time.time() - 10))
            latest = set(publisher.ledger) - before_full - while_full
            assert wait_until(lambda: (small_disk / "reserve.bin").exists(), 30)
            assert wait_until(lambda: latest <= stored_keys(db), 30)
            # What arrived while the disk was full was dropped, and counted as such.
            assert not while_full & stored_keys(db)
            assert wait_until(lambda: "disk_full" not in {
                i.name for i in read_incidents(incidents)
                if i.open and i.status.value == "firing" and i.active}, 90)
            publisher.close()
            assert daemon.stop() == 0
        finally:
            daemon.close()
    log = daemon.log_text()
    assert '"reserve_released"' in log and '"telemetry_dropped"' in log
    assert '"disk_space_returned"' in log
