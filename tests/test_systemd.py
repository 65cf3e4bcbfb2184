"""systemd: the unit file (offline security review and verification by Debian's own
systemd-analyze), the sd_notify protocol, and the daemon's READY / WATCHDOG / STOPPING
notifications to a real datagram socket — as a process on the private Mosquitto, and in
this process with a durable write made to hang (fault injection) or a TSDB that is down.

Nothing is skipped: without systemd-analyze the tests fail and say how to install it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sentinel.config.load import read_secret
from sentinel.control.secrets import control_token, link_key
from sentinel.decode.encode import encode as encode_reading
from sentinel.incidents.store import StateStore
from sentinel.loading import Loaded, load_all
from sentinel.store.spool import SpoolingSink
from sentinel.systemd import (
    Notifier,
    encode,
    notify_address,
    parse,
    pipeline_stuck,
    watchdog_interval,
)
from sentinel.types import IngestStats

from daemon import (
    LOADED,
    TYPICAL,
    DaemonProcess,
    accepting_sink_url,
    eventually,
    publish_in_thread,
    running,
    write_oncall,
)
from helpers import ROOT, SHIPPED_CONFIG
from servers import Mosquitto, StubInfluxServer, StubResponse

UNIT = ROOT / "systemd" / "sentinel.service"
_INSTALL = ("systemd-analyze is missing: run the test command from the README (it installs "
            "Debian's `systemd` package), or `apt-get install systemd`")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail(_INSTALL)
    return found


def unit_lines(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order (keys repeat in units)."""
    found, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def service(key: str) -> list[str]:
    return [v for s, k, v in unit_lines(UNIT.read_text()) if s == "Service" and k == key]


# ---------------------------------------------------------------------------------------
# The unit file
# ---------------------------------------------------------------------------------------


def test_unit_exposure_is_at_most_2() -> None:
    # --threshold is on the 0-100 scale behind the printed 0.0-10.0: exit status 1 above 2.0.
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", "--threshold=20",
                             "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for sentinel\.service: (\d+\.\d+)",
                      result.stdout)
    assert match, f"no exposure line:\n{result.stdout}\n{result.stderr}"
    assert float(match.group(1)) <= 2.0, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def _verify(tmp: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of the unit in a scratch root: the host's own units (for the
    targets it depends on) and a stub at every Exec path, since /opt/sentinel is not
    installed here; every warning counts (--recursive-errors=yes)."""
    root = tmp / "root"
    host_units = next((Path(d) for d in ("/usr/lib/systemd/system", "/lib/systemd/system")
                       if (Path(d) / "sysinit.target").exists()), None)
    assert host_units is not None, _INSTALL
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/sentinel.service").write_text(unit_text)
    for section, key, value in unit_lines(unit_text):
        if section == "Service" and key.startswith("Exec"):
            binary = root / value.split()[0].lstrip("-@:+!").lstrip("/")
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_text("#!/bin/sh\n")
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return subprocess.run([systemd_analyze(), "verify", "--man=no", f"--root={root}",
                           "--recursive-errors=yes", "sentinel.service"],
                          capture_output=True, text=True, timeout=60)


def test_unit_verifies_offline(tmp_path: Path) -> None:
    result = _verify(tmp_path / "ok", UNIT.read_text())
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr
    # The harness really checks: a misspelt key (or an unknown specifier) fails it.
    broken = UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs=")
    result = _verify(tmp_path / "typo", broken)
    assert result.returncode != 0 and "WatchdogSecs" in result.stderr
    broken = UNIT.read_text().replace("=%d/mqtt-password", "=%Q/mqtt-password")
    result = _verify(tmp_path / "specifier", broken)
    assert result.returncode != 0 and "Failed to resolve specifiers" in result.stderr


def test_unit_asks_for_what_the_issue_lists() -> None:
    def one(key: str) -> str:
        values = service(key)
        assert len(values) == 1, f"{key}: {values}"
        return values[0]

    assert one("Type") == "notify" and one("NotifyAccess") == "main"
    assert float(one("WatchdogSec")) > 0
    assert one("Restart") == "on-failure"
    assert one("User") == one("Group") == "sentinel"
    assert one("StateDirectory") == "sentinel"
    assert one("ProtectSystem") == "strict"
    assert one("NoNewPrivileges") == one("PrivateTmp") == "yes"
    assert one("CapabilityBoundingSet") == ""
    assert set(one("RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert any(v.startswith("/opt/sentinel/.venv/bin/sentinel run")
               for v in service("ExecStart"))


def _unit_secrets(text: str, optional: bool) -> tuple[set[str], dict[str, str]]:
    """Credential names and SENTINEL_* variables of the unit (with `optional`, also the
    commented lines the unit offers for a drop-in)."""
    if optional:
        text = re.sub(r"(?m)^#\s+((?:LoadCredential|Environment)\S*=)", r"\1", text)
    lines = [(k, v) for s, k, v in unit_lines(text) if s == "Service"]
    names = {v for k, v in lines if k in ("LoadCredential", "LoadCredentialEncrypted")}
    env = dict(v.split("=", 1) for k, v in lines if k == "Environment")
    return names, {k: v for k, v in env.items() if k.startswith("SENTINEL_")}


@pytest.mark.parametrize("optional", [False, True])
def test_unit_secrets_reach_the_settings(tmp_path: Path, optional: bool) -> None:
    # Every credential the unit loads is handed to the daemon as %d/<name> under a variable
    # the configuration loader accepts (a misspelt SENTINEL_* variable is an error there).
    names, env = _unit_secrets(UNIT.read_text(), optional)
    pointed = {v.removeprefix("%d/") for v in env.values() if v.startswith("%d/")}
    assert names == pointed, f"loaded {names}, pointed at {pointed}"
    assert {"mqtt-password", "influx-token"} <= names
    creds = tmp_path / "credentials"  # what %d becomes: $CREDENTIALS_DIRECTORY
    creds.mkdir()
    for name in names:
        (creds / name).write_text(f"secret-of-{name}\n")
    environ = {k: v.replace("%d", str(creds)) for k, v in env.items()}
    environ["SENTINEL_STATE_DIR"] = str(tmp_path / "state")
    settings = load_all(SHIPPED_CONFIG, environ).settings
    assert read_secret(settings.mqtt.password, settings.mqtt.password_file,
                       "mqtt.password_file") == "secret-of-mqtt-password"
    influx = settings.store.influxdb
    assert read_secret(influx.token, influx.token_file,
                       "store.influxdb.token_file") == "secret-of-influx-token"
    if optional:
        assert control_token(settings) == "secret-of-control-token"
        assert link_key(settings) == b"secret-of-link-key"


# ---------------------------------------------------------------------------------------
# The sd_notify protocol
# ---------------------------------------------------------------------------------------


class NotifyReceiver:
    """The service manager's end of $NOTIFY_SOCKET: a bound datagram socket read by a thread,
    keeping every notification with its arrival time (time.monotonic)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + name[1:] if name.startswith("@") else name)
        self._sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._received: list[tuple[float, dict[str, str]]] = []
        self.malformed: list[bytes] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            lines = data.decode("utf-8").split("\n")
            if not all("=" in line for line in lines):
                self.malformed.append(data)
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            with self._lock:
                self._received.append((time.monotonic(), fields))

    @property
    def received(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self._received)

    def times(self, key: str, after: float = 0.0, before: float = float("inf")) -> list[float]:
        return [t for t, f in self.received if key in f and after <= t < before]

    def first(self, key: str, after: float = 0.0) -> tuple[float, dict[str, str]] | None:
        return next(((t, f) for t, f in self.received if key in f and t >= after), None)

    def statuses(self, after: float = 0.0) -> list[str]:
        return [f["STATUS"] for t, f in self.received if "STATUS" in f and t >= after]

    def wait_for(self, key: str, timeout: float, after: float = 0.0,
                 value: Callable[[str], bool] = lambda v: True) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, f in self.received:
                if t >= after and key in f and value(f[key]):
                    return t
            time.sleep(0.02)
        raise AssertionError(f"no {key} notification within {timeout} s: {self.received}")

    async def await_for(self, key: str, within: float, after: float = 0.0,
                        value: Callable[[str], bool] = lambda v: True) -> float:
        return await asyncio.to_thread(self.wait_for, key, within, after, value)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[NotifyReceiver]:
    r = NotifyReceiver(str(tmp_path / "notify.sock"))
    yield r
    r.close()
    assert not r.malformed


def abstract_name() -> str:
    return f"@sentinel-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def test_notify_socket_addresses() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@sd-notify/x") == "\0sd-notify/x"
    for bad in ("", "@", "run/notify", "vsock:2:1234"):
        with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
            notify_address(bad)


def test_messages_encode_and_parse() -> None:
    message = encode({"READY": 1, "STATUS": "running: 1005 devices"})
    assert message == b"READY=1\nSTATUS=running: 1005 devices"
    assert parse(message) == {"READY": "1", "STATUS": "running: 1005 devices"}
    # An error text with a newline must not forge a second assignment.
    forged = encode({"STATUS": "store failing: boom\nREADY=1"})
    assert parse(forged) == {"STATUS": "store failing: boom READY=1"}
    assert parse(b"WATCHDOG=1\n\nnot an assignment\nSTATUS=a=b\n") == {
        "WATCHDOG": "1", "STATUS": "a=b"}
    for bad in ("ready", "", "WATCH DOG", "STATUS\n"):
        with pytest.raises(ValueError, match="field name"):
            encode({bad: 1})


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "42"}, 42) == 0.5
    # Meant for another process (we inherited it), unset, zero or garbage: no watchdog.
    assert watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "41"}, 42) is None
    for environ in ({}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "-5"},
                    {"WATCHDOG_USEC": "1s"}, {"WATCHDOG_USEC": ""}):
        assert watchdog_interval(environ, 42) is None


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notifier_sends_datagrams(tmp_path: Path, kind: str) -> None:
    name = str(tmp_path / "n.sock") if kind == "path" else abstract_name()
    r = NotifyReceiver(name)
    try:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "2000000",
                                          "WATCHDOG_PID": str(os.getpid())})
        assert notifier.enabled and notifier.watchdog == 2.0 and notifier.stuck_after == 2.0
        notifier.ready("running")
        assert notifier.send(WATCHDOG=1)
        notifier.stopping()
        r.wait_for("STOPPING", 5)
        assert [f for _, f in r.received] == [
            {"READY": "1", "STATUS": "running"}, {"WATCHDOG": "1"},
            {"STOPPING": "1", "STATUS": "stopping: committing what was received"}]
    finally:
        r.close()
    assert not r.malformed
    # The manager went away: a failed send is reported, never raised.
    assert notifier.send(WATCHDOG=1) is False


def test_notifier_outside_systemd_does_nothing(tmp_path: Path) -> None:
    for environ in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:1:2"}):
        notifier = Notifier.from_environ(environ)
        assert not notifier.enabled and notifier.watchdog is None
        assert notifier.send(READY=1) is False
        notifier.ready("x")
        notifier.stopping()
        asyncio.run(notifier.run(lambda: None))  # returns at once
    # A watchdog without a socket is no watchdog.
    assert Notifier.from_environ({"WATCHDOG_USEC": "1000000"}).watchdog is None


def test_heartbeat_phases(receiver: NotifyReceiver) -> None:
    # Starting: start-up is extended while healthy. Running: WATCHDOG=1, withheld (with a
    # STATUS) while stuck. Stopping: pings regardless, as the stages end on purpose.
    reason: list[str | None] = [None]

    async def scenario() -> list[str]:
        notifier = Notifier(receiver.name, watchdog=0.2)
        task = asyncio.create_task(notifier.run(lambda: reason[0]))
        await asyncio.sleep(0.35)
        notifier.ready("running: test")
        await asyncio.sleep(0.35)
        reason[0] = "incident state commit pending for 9 s"
        await asyncio.sleep(0.45)
        reason[0] = None
        await asyncio.sleep(0.35)
        reason[0] = "stage ingest has ended"
        notifier.stopping()
        await asyncio.sleep(0.35)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)
        return [next(iter(f)) for _, f in receiver.received]

    kinds = asyncio.run(scenario())
    received = receiver.received
    ready = next(t for t, f in received if "READY" in f)
    stuck = next(t for t, f in received if "stuck" in f.get("STATUS", ""))
    resumed = next(t for t, f in received if f.get("STATUS") == "running")
    stopping = next(t for t, f in received if "STOPPING" in f)
    extends = [(t, f) for t, f in received if "EXTEND_TIMEOUT_USEC" in f]
    assert extends and all(t < ready for t, _ in extends)
    assert all(int(f["EXTEND_TIMEOUT_USEC"]) == 300_000 for _, f in extends)
    assert not receiver.times("WATCHDOG", before=ready)
    assert receiver.times("WATCHDOG", ready, stuck)
    assert not receiver.times("WATCHDOG", stuck, resumed)
    assert receiver.times("WATCHDOG", resumed, stopping)
    assert len(receiver.times("WATCHDOG", stopping)) >= 2
    assert kinds[0] == "STATUS" and "waiting for the broker" in received[0][1]["STATUS"]


def test_pipeline_stuck_reasons() -> None:
    stats = IngestStats()
    daemon: Any = SimpleNamespace(ingestor=SimpleNamespace(stats=stats), sink=object())

    async def ended_stage() -> asyncio.Task[None]:
        task = asyncio.create_task(asyncio.sleep(0), name="ingest")
        await task
        return task

    ended = asyncio.run(ended_stage())
    assert pipeline_stuck(daemon, [], 5.0, now=100.0) is None
    assert pipeline_stuck(daemon, [ended], 5.0, now=100.0) == "stage ingest has ended"
    stats.busy_since["rules_gate"] = 96.0
    assert pipeline_stuck(daemon, [], 5.0, now=100.0) is None  # within the bound
    assert pipeline_stuck(daemon, [], 5.0, now=101.5) == "incident state commit pending for 6 s"
    stats.busy_since["store_write"] = 80.0
    stats.failing["rules_gate"] = "OperationalError: disk I/O error"
    # A write failing with an error is retried and reported by /readyz; no restart for it.
    assert pipeline_stuck(daemon, [], 5.0, now=100.0) == "readings store write pending for 20 s"
    stats.failing["store_write"] = "OperationalError: database or disk is full"
    assert pipeline_stuck(daemon, [], 5.0, now=100.0) is None


# ---------------------------------------------------------------------------------------
# The daemon as a process: READY after the broker, pings, broker outage, STOPPING
# ---------------------------------------------------------------------------------------


def test_daemon_process_notifies_systemd(mosquitto: Mosquitto, tmp_path: Path) -> None:
    r = NotifyReceiver(abstract_name())
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port)
    daemon.env.update(NOTIFY_SOCKET=r.name, WATCHDOG_USEC="2000000")
    daemon.env.pop("WATCHDOG_PID", None)  # a CI runner's own, if it runs under systemd
    errors: list[BaseException] = []

    def start() -> None:
        try:
            daemon.start(timeout=60)
        except BaseException as exc:
            errors.append(exc)

    mosquitto.stop()  # the broker is down when the daemon starts
    starter = threading.Thread(target=start)
    starter.start()
    try:
        r.wait_for("EXTEND_TIMEOUT_USEC", 30)
        time.sleep(3)  # a few reconnect attempts (max delay 1 s)
        assert daemon.alive, daemon.log_text()[-3000:]
        assert r.first("READY") is None, "READY=1 before the broker was reachable"
        assert not r.times("WATCHDOG"), "watchdog pings before READY=1"
        assert any("waiting for the broker" in s for s in r.statuses())
        # Start-up keeps being extended while waiting (3 x half of WatchdogSec).
        assert len(r.times("EXTEND_TIMEOUT_USEC")) >= 3
        assert {f["EXTEND_TIMEOUT_USEC"] for _, f in r.received
                if "EXTEND_TIMEOUT_USEC" in f} == {"3000000"}

        broker_back = time.monotonic()
        mosquitto.start()
        ready = r.wait_for("READY", 30)
        assert ready > broker_back
        starter.join(30)
        assert not errors, errors
        assert '"mqtt_connected"' in daemon.log_text()

        time.sleep(5)
        pings = r.times("WATCHDOG", after=ready)
        assert len(pings) >= 4, pings
        gaps = [b - a for a, b in zip([ready, *pings], pings, strict=False)]
        assert max(gaps) < 2.0, f"a gap reached WatchdogSec: {gaps}"

        # The broker goes away: pings go on (reconnecting is the daemon's job, not systemd's).
        outage = time.monotonic()
        mosquitto.stop()
        time.sleep(5)
        during = r.times("WATCHDOG", after=outage)
        assert len(during) >= 4, during
        assert max(b - a for a, b in zip([outage, *during], during, strict=False)) < 2.0
        mosquitto.start()

        asked = time.monotonic()
        assert daemon.stop() == 0
        stopping = r.wait_for("STOPPING", 5, after=asked)
        assert r.first("READY", after=ready + 0.001) is None  # READY exactly once
        assert stopping > asked
    finally:
        daemon.close()
        starter.join(30)
        r.close()
    assert not r.malformed


# ---------------------------------------------------------------------------------------
# The daemon in this process: a hung commit withholds the pings, a full spool does not
# ---------------------------------------------------------------------------------------


def load(tmp: Path, broker_port: int, **overrides: str) -> Loaded:
    env = {
        "SENTINEL_MQTT__PORT": str(broker_port),
        "SENTINEL_STATE_DIR": str(tmp / "state"),
        "SENTINEL_MQTT__RECONNECT__MAX_DELAY": "1",
        "SENTINEL_CONTROL__ENABLED": "false",
        "SENTINEL_ESCALATION__ONCALL": str(write_oncall(tmp / "oncall.yaml",
                                                        default=[accepting_sink_url()])),
    }
    env.update({f"SENTINEL_{k.upper()}": v for k, v in overrides.items()})
    return load_all(SHIPPED_CONFIG, env)


def smoke_alarm(n: int = 1) -> list[tuple[str, bytes]]:
    devices = [d for d in LOADED.inventory.values()
               if d.kind == "smoke" and d.profile == "sentinel-json"][:n]
    messages: list[tuple[str, bytes]] = []
    for device in devices:
        values = {**TYPICAL["smoke"], "alarm": True}
        messages += encode_reading(LOADED.profiles[device.profile], device, values,
                                   time.time(), LOADED.kinds)
    return messages


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    await publish_in_thread(port, messages, "systemd-test")


@contextlib.asynccontextmanager
async def fault_lifted_at_exit(lift: Callable[[], object]) -> AsyncIterator[None]:
    """Whatever the test asserts, lift the fault before the daemon is stopped (a shutdown
    waits for the hung write; the failure shown must be the assertion, not that wait)."""
    try:
        yield
    finally:
        lift()


async def test_watchdog_withheld_while_the_incident_commit_hangs(
        mosquitto: Mosquitto, tmp_path: Path, receiver: NotifyReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.name)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every 0.5 s; stuck after 1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    # Fault injection: once `hang` is set, the incident state commit does not return until
    # `release` — as a wedged SQLite call or file system would behave.
    hang, release = asyncio.Event(), asyncio.Event()
    original = StateStore.commit

    async def commit(self: StateStore, changes: Any) -> Any:
        if hang.is_set():
            await release.wait()
        return await original(self, changes)

    monkeypatch.setattr(StateStore, "commit", commit)
    async with running(load(tmp_path, mosquitto.port)) as daemon, \
            fault_lifted_at_exit(release.set):
        ready = await receiver.await_for("READY", 10)
        await asyncio.sleep(2)
        assert len(receiver.times("WATCHDOG", after=ready)) >= 3

        hang.set()
        await publish(mosquitto.port, smoke_alarm())
        stats = daemon.ingestor.stats
        await eventually(lambda: "rules_gate" in stats.busy_since, "the alarm at the gate")
        stuck = await receiver.await_for("STATUS", 5,
                                         value=lambda s: "incident state commit" in s)
        assert "watchdog withheld" in receiver.statuses(stuck)[0]
        await asyncio.sleep(3)  # three watchdog intervals: systemd would have restarted us
        assert not receiver.times("WATCHDOG", after=stuck)
        assert "rules_gate" in stats.busy_since and "rules_gate" not in stats.failing

        release.set()  # the commit returns: the pipeline moves, the pings come back
        resumed = await receiver.await_for("STATUS", 5, after=stuck,
                                           value=lambda s: s == "running")
        await receiver.await_for("WATCHDOG", 2, after=resumed)
        await eventually(lambda: stats.received >= 1, "the alarm committed and acked")
        before_stop = time.monotonic()
    await receiver.await_for("STOPPING", 2, after=before_stop)


async def test_watchdog_fed_while_the_tsdb_is_down_and_the_spool_full(
        mosquitto: Mosquitto, tmp_path: Path, receiver: NotifyReceiver,
        stub_influx: StubInfluxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.name)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    stub_influx.default = StubResponse(503, {}, b'{"code":"unavailable"}')  # TSDB down
    loaded = load(tmp_path, mosquitto.port, store__backend="influxdb",
                  store__influxdb__url=f"http://127.0.0.1:{stub_influx.port}",
                  store__influxdb__token="test-token",
                  store__influxdb__retry_max_delay="0.5",
                  store__spool__max_bytes="1024")
    async with running(loaded) as daemon, fault_lifted_at_exit(
            lambda: setattr(stub_influx, "default", StubResponse(204))):
        ready = await receiver.await_for("READY", 10)
        sink = daemon.sink
        assert isinstance(sink, SpoolingSink)
        stats = daemon.ingestor.stats
        devices = [d for d in LOADED.inventory.values() if d.profile == "sentinel-json"]
        messages: list[tuple[str, bytes]] = []
        for i, device in enumerate(devices[:60]):
            messages += encode_reading(LOADED.profiles[device.profile], device,
                                       dict(TYPICAL[device.kind]), time.time() - 60 + i,
                                       LOADED.kinds)
        await publish(mosquitto.port, messages[:30])  # fills the 1 KiB spool
        await eventually(lambda: sink.full, "the spool full")
        await publish(mosquitto.port, messages[30:])  # waits for room
        await eventually(lambda: "store_write" in stats.busy_since,
                         "a write waiting for room in the full spool")
        waiting = time.monotonic()
        await asyncio.sleep(3)
        assert sink.full and time.monotonic() - stats.busy_since["store_write"] > 2.5
        pings = receiver.times("WATCHDOG", after=waiting)
        assert len(pings) >= 4, pings
        assert not any("stuck" in s for s in receiver.statuses(ready))

        stub_influx.default = StubResponse(204)  # the TSDB is back: the spool drains
        await eventually(lambda: stats.received >= len(messages), "every message acked")
    assert receiver.first("STOPPING", after=ready) is not None
