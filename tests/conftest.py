"""Shared pytest fixtures. Keep each group in its own section; helpers live in other modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import DaemonProcess
from servers import Mosquitto, StubInfluxServer, VictoriaMetrics

# ---------------------------------------------------------------------------------------
# Test servers (see tests/servers.py). Each test gets its own process on a free loopback
# port with its data dir under tmp_path (kept by pytest for post-mortem of failures).
# Never skipped: a missing binary fails the test with installation instructions.
# ---------------------------------------------------------------------------------------


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private, started mosquitto broker; stopped (SIGTERM) after the test."""
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A private, started VictoriaMetrics; stopped (SIGTERM) after the test."""
    with VictoriaMetrics(tmp_path / "victoria") as vm:
        yield vm


@pytest.fixture
def stub_influx() -> Iterator[StubInfluxServer]:
    """A started stub InfluxDB v2 write API answering 204; script it via ``.script(...)``."""
    with StubInfluxServer() as stub:
        yield stub


# ---------------------------------------------------------------------------------------
# Daemon processes (see tests/daemon.py)
# ---------------------------------------------------------------------------------------


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts (append them); each is closed (killed if need be) after it."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.close()
