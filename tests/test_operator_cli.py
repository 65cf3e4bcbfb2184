"""Every operator command against a running daemon on a real broker, through the control
API's Unix socket (and HTTP), with the errors an operator meets: no daemon, no broker, a
bad configuration."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.incidents.store import read_events, read_incidents

from daemon import DaemonProcess, wait_until
from helpers import ROOT, SHIPPED_CONFIG, sentinel
from servers import Mosquitto, free_port

SMOKE = "SB-SMK-0001"
CONFIG = ("-c", str(SHIPPED_CONFIG))


def run(daemon: DaemonProcess, *args: str, lang: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    extra = ("--lang", lang) if lang else ()
    return sentinel(*args, *CONFIG, *extra, env=daemon.env, timeout=60)


def simulate(daemon: DaemonProcess, port: int, *injects: str, seconds: float = 1.5) -> None:
    args = ["simulate", "--port", str(port), "--duration", str(seconds), "--quiet"]
    for inject in injects:
        args += ["--inject", inject]
    result = run(daemon, *args)
    assert result.returncode == 0, result.stderr


def publish_raw(port: int, topic: str, payload: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-raw")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


@pytest.fixture
def daemon(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path / "state", mosquitto.port).start()
    yield proc
    proc.close()


def open_incidents(daemon: DaemonProcess) -> list[dict[str, object]]:
    result = run(daemon, "incidents", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_command_against_a_running_daemon(daemon: DaemonProcess,
                                                mosquitto: Mosquitto) -> None:
    """status, incidents, ack, resolve, silence, drill, history, deadletter, oncall."""
    socket_path = daemon.state_dir / "control.sock"
    assert socket_path.is_socket() and (socket_path.stat().st_mode & 0o777) == 0o660

    status = json.loads(run(daemon, "status", "--json").stdout)
    assert status["broker"]["connected"] is True
    assert status["devices"]["total"] == 1005 and status["devices"]["unseen"] == 1005
    assert status["devices"]["by_kind"]["smoke"]["total"] == 747
    text = run(daemon, "status")
    assert text.returncode == 0 and "设备: 共 1005 台" in text.stdout and "已连接" in text.stdout
    assert "devices: 1005" in run(daemon, "status", lang="en").stdout

    simulate(daemon, mosquitto.port, f"smoke-alarm:{SMOKE}@0")
    assert wait_until(lambda: open_incidents(daemon), 15)
    (inc,) = open_incidents(daemon)
    incident_id = str(inc["id"])
    assert inc["device_id"] == SMOKE and inc["name"] == "smoke_alarm"

    listed = run(daemon, "incidents", "list")
    assert incident_id in listed.stdout and "烟感报警" in listed.stdout and "严重" in listed.stdout
    assert "smoke alarm" in run(daemon, "incidents", "list", lang="en").stdout
    shown = json.loads(run(daemon, "incidents", "show", incident_id, "--json").stdout)
    assert shown["incident"]["id"] == incident_id and shown["events"][0]["type"] == "opened"
    missing = run(daemon, "incidents", "show", "20000101-9999")
    assert missing.returncode == 1 and "找不到事件 20000101-9999" in missing.stderr

    # The fleet view now knows the devices that reported and the incident.
    status = json.loads(run(daemon, "status", "--json").stdout)
    assert status["incidents_open"]["critical"] == 1
    assert status["devices"]["online"] >= 1
    compound = next(c for c in status["compounds"] if c["id"] == inc["place"]["compound"])
    building = next(b for b in compound["buildings"] if b["id"] == inc["place"]["building"])
    assert compound["worst"] == building["worst"] == "critical"

    # A name typed as --actor would be recorded as if that person had acted: refused,
    # with the ids to choose from; a contact id is recorded and shown by name.
    named = run(daemon, "ack", incident_id, "--actor", "网格员张", "--note", "到场")
    assert named.returncode == 1 and "不是值班名单中的联系人编号" in named.stderr
    assert "gw-03" in named.stderr and open_incidents(daemon)[0]["status"] == "firing"
    acked = run(daemon, "ack", incident_id, "--actor", "gw-03", "--note", "到场")
    assert acked.returncode == 0, acked.stderr
    assert "张丽华" in acked.stdout and "gw-03" not in acked.stdout

    history = run(daemon, "history", SMOKE, "--since", "1h", "--format", "json")
    rows = [json.loads(line) for line in history.stdout.splitlines()]
    assert any(row["values"].get("alarm") is True for row in rows), history.stdout
    csv_out = run(daemon, "history", SMOKE, "--since", "1h", "--format", "csv").stdout
    assert csv_out.splitlines()[0] == "time,device,kind,values"
    assert run(daemon, "history", "NO-SUCH-DEVICE").returncode == 1

    publish_raw(mosquitto.port, f"sentinel/v1/{SMOKE}/telemetry", b"{not json")
    assert wait_until(lambda: "JSON 格式错误" in run(daemon, "deadletter", "list").stdout, 10)
    dead = [json.loads(line) for line in run(daemon, "deadletter", "list", "--json").stdout
            .splitlines()]
    assert dead[0]["payload"] == "{not json" and dead[0]["reason"] == "invalid_json"

    added = run(daemon, "silence", "add", "--compound", "水贝花园", "--building", "1栋",
                "--for", "2h", "--author", "pm-01", "--reason", "消火栓冲洗")
    assert added.returncode == 0, added.stderr
    (window,) = [json.loads(line) for line in
                 run(daemon, "silence", "list", "--json").stdout.splitlines()]
    assert window["scope"] == {"building": "1栋", "compound": "水贝花园"}
    assert window["author"] == "pm-01" and window["end"] - window["start"] == 7200
    assert "水贝花园物业消控室" in run(daemon, "silence", "list").stdout
    assert run(daemon, "drill", "list", "--json").stdout == ""
    # --author defaults like --actor: the OS account, marked as the command line.
    drill = run(daemon, "drill", "add", "--grid", "SB-G03", "--for", "30m",
                "--reason", "消防演练", "--lang", "en")
    assert drill.returncode == 0 and "added drill #" in drill.stdout, drill.stderr
    (drill_window,) = [json.loads(line) for line in
                       run(daemon, "drill", "list", "--json").stdout.splitlines()]
    assert drill_window["scope"] == {"grid": "SB-G03"}
    assert drill_window["author"].startswith("cli:")
    assert run(daemon, "drill", "remove", str(drill_window["id"]), "--author", "街道办"
               ).returncode == 1
    assert run(daemon, "drill", "remove", str(drill_window["id"])).returncode == 0
    assert run(daemon, "silence", "remove", "999").returncode == 1
    removed = run(daemon, "silence", "remove", str(window["id"]), "--author", "pm-01")
    assert removed.returncode == 0, removed.stderr
    assert run(daemon, "silence", "list", "--json").stdout == ""

    oncall = run(daemon, "oncall", "--json")
    assert oncall.returncode == 0 and json.loads(oncall.stdout.splitlines()[0])["contacts"]

    resolved = run(daemon, "resolve", incident_id, "--outcome", "handled", "--actor", "gw-03")
    assert resolved.returncode == 0, resolved.stderr
    assert open_incidents(daemon) == []
    everything = run(daemon, "incidents", "list", "--all", "--json").stdout
    assert json.loads(everything.splitlines()[0])["outcome"] == "handled"

    table = run(daemon, "history", SMOKE, "--since", "1h").stdout.splitlines()
    assert table

    # The daemon stopped: what it stored can still be read, from the state directory,
    # saying so in one line; what changes things says where it looked and what to check.
    assert daemon.stop() == 0
    for command in (("incidents", "list", "--all"), ("incidents", "show", incident_id),
                    ("report", "latency"), ("report", "response"), ("deadletter", "list"),
                    ("history", SMOKE, "--since", "1h")):
        result = run(daemon, *command)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stderr.count("以下为数据目录") == 1, (command, result.stderr)
        assert str(daemon.state_dir) in result.stderr
    assert incident_id in run(daemon, "incidents", "list", "--all").stdout
    assert "张丽华" in run(daemon, "incidents", "show", incident_id).stdout
    assert "JSON 格式错误" in run(daemon, "deadletter", "list").stdout
    assert run(daemon, "history", SMOKE, "--since", "1h").stdout.splitlines() == table
    refused = run(daemon, "ack", incident_id)
    assert refused.returncode == 1 and "守护进程未在" in refused.stderr
    assert "systemctl status sentinel" in refused.stderr


def test_history_newest_first_with_units_from_the_stored_file(tmp_path: Path) -> None:
    """No daemon: `history` reads the embedded store itself; --limit keeps the newest
    readings, the table shows them newest first, each value with its unit at the
    precision a person reads (0.3901 MPa reads 0.39 MPa)."""
    import asyncio
    import sqlite3

    from sentinel.config.model import SqliteSettings
    from sentinel.store.sqlite import SqliteReadingStore
    from sentinel.types import Reading

    state = tmp_path / "state"
    state.mkdir()
    now = time.time()
    readings = [Reading("SB-HYD-0001", "hydrant_pressure", now - age, now - age,
                        {"pressure": pressure, "battery_voltage": 3.654, "battery": 87.3})
                for age, pressure in ((300, 0.3901), (200, 0.3802), (100, 0.3703))]

    async def write() -> None:
        async with SqliteReadingStore(SqliteSettings(path=state / "readings.sqlite3"),
                                      7) as store:
            await store.write(readings, [])
    asyncio.run(write())
    with sqlite3.connect(state / "readings.sqlite3") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update(SENTINEL_STATE_DIR=str(state), SENTINEL_CONTROL__PORT=str(free_port()))
    shown = sentinel("history", "SB-HYD-0001", "--since", "10m", "--limit", "2", *CONFIG,
                     env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 and "0.37 MPa" in lines[0] and "0.38 MPa" in lines[1], lines
    assert "3.65 V" in lines[0] and "87%" in lines[0] and "水压" in lines[0]
    assert "以下为数据目录" in shown.stderr and "显示最新的 2 条" in shown.stderr
    exported = sentinel("history", "SB-HYD-0001", "--since", "10m", "--limit", "2",
                        "--format", "json", *CONFIG, env=env)
    assert [json.loads(line)["values"]["pressure"] for line in exported.stdout.splitlines()
            ] == [0.3802, 0.3703]


def test_http_with_token_when_there_is_no_socket(daemon: DaemonProcess) -> None:
    """Over HTTP (another host, or a socket that is not there) the token is required."""
    env = {**daemon.env, "SENTINEL_CONTROL__SOCKET": str(daemon.state_dir / "elsewhere.sock")}
    listed = sentinel("incidents", "list", *CONFIG, env=env)
    assert listed.returncode == 0 and "没有未解决的事件" in listed.stdout
    wrong = {**env, "SENTINEL_CONTROL__TOKEN": "wrong"}
    refused = sentinel("incidents", "list", *CONFIG, env=wrong)
    assert refused.returncode == 1 and "拒绝了控制令牌" in refused.stderr


def test_clear_errors_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update(SENTINEL_STATE_DIR=str(tmp_path / "state"),
               SENTINEL_CONTROL__PORT=str(free_port()))
    commands = [("status",), ("tail",), ("incidents", "list"), ("incidents", "show", "x"),
                ("ack", "x"), ("resolve", "x", "--outcome", "handled"),
                ("silence", "list"), ("drill", "list"), ("deadletter", "list"),
                ("history", SMOKE), ("board",), ("drill", "add", "--grid", "SB-G03", "--for",
                                                   "1h", "--author", "a", "--reason", "r"),
                ("silence", "add", "--device", SMOKE, "--for", "1h", "--author", "a",
                 "--reason", "r")]
    for command in commands:
        result = sentinel(*command, *CONFIG, env=env)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "守护进程未在" in result.stderr and "运行" in result.stderr, command
        assert str(tmp_path / "state" / "control.sock") in result.stderr
    english = sentinel("status", *CONFIG, "--lang", "en", env=env)
    assert "the sentinel daemon is not running" in english.stderr


def test_clear_errors_when_the_broker_cannot_be_reached(daemon: DaemonProcess,
                                                        mosquitto: Mosquitto) -> None:
    """`status` names the broker, the reason and what to check, and exits 1."""
    mosquitto.stop()
    assert wait_until(lambda: run(daemon, "status").returncode == 1, 15)
    result = run(daemon, "status")
    assert f"无法连接 127.0.0.1:{mosquitto.port}" in result.stdout
    assert "[mqtt] host/port" in result.stdout
    english = run(daemon, "status", lang="en").stdout
    assert f"cannot connect to 127.0.0.1:{mosquitto.port}" in english
    assert "refused" in english.lower()
    simulated = run(daemon, "simulate", "--port", str(mosquitto.port), "--count", "1")
    assert simulated.returncode == 1
    assert f"127.0.0.1:{mosquitto.port}" in simulated.stderr
    assert "Connection refused" in simulated.stderr and "--host/--port" in simulated.stderr


def test_config_error_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[control]\nport = "many"\n', encoding="utf-8")
    result = sentinel("status", "-c", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "control.port" in result.stderr


class Follower:
    """`sentinel tail --json` in a subprocess, its lines collected by a thread."""

    def __init__(self, daemon: DaemonProcess, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "tail", "--json", *args, *CONFIG],
            env=daemon.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.lines: list[dict[str, object]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def events(self) -> list[dict[str, object]]:
        return [line for line in self.lines if line["stream"] == "event"]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self._reader.join(5)
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def test_tail_prints_every_event_in_order_across_a_restart(daemon: DaemonProcess,
                                                           mosquitto: Mosquitto) -> None:
    """The scripted incidents, a kill -9 and a restart in the middle: no gap, no repeat."""
    simulate(daemon, mosquitto.port, f"smoke-alarm:{SMOKE}@0")
    db = daemon.state_dir / "incidents.sqlite3"
    assert wait_until(lambda: read_incidents(db, open_only=True), 15)
    follower = Follower(daemon)
    try:
        assert wait_until(lambda: any(line["stream"] == "open" for line in follower.lines), 10)
        opened = [line for line in follower.lines if line["stream"] == "open"]
        assert [line["device_id"] for line in opened] == [SMOKE]
        start_seq = max(e.seq for e in read_events(db))

        simulate(daemon, mosquitto.port, "smoke-alarm:building:水贝花园/2栋@0",
                 "gas-leak:random@0", "fall:random@0")
        daemon.kill()
        daemon.start()
        simulate(daemon, mosquitto.port, "hydrant-drop:SB-HYD-0001@0", "sos:random@0")
        incident_id = str(opened[0]["id"])
        assert run(daemon, "ack", incident_id).returncode == 0

        def caught_up() -> bool:
            expected = [e.seq for e in read_events(db) if e.seq > start_seq]
            return [e["seq"] for e in follower.events()] == expected and len(expected) > 10
        assert wait_until(caught_up, 30), (follower.events()[-3:], start_seq)
    finally:
        stderr = follower.stop()
    seqs = [e["seq"] for e in follower.events()]
    assert seqs == list(range(start_seq + 1, start_seq + 1 + len(seqs)))
    stored = {e.seq: e for e in read_events(db)}
    for event in follower.events():
        assert event["type"] == stored[int(str(event["seq"]))].type
    types = {e["type"] for e in follower.events()}
    assert {"opened", "acknowledged", "notification_sent"} <= types
    names = {e.get("name") for e in follower.events() if e["type"] == "opened"}
    assert {"fire_confirmed", "gas_leak", "fall", "sos"} <= names, names
    assert "重连" in stderr  # it said it lost the daemon and came back


def test_tail_filters_and_readings(daemon: DaemonProcess, mosquitto: Mosquitto) -> None:
    follower = Follower(daemon, "--readings", "--kind", "smoke", "--device", SMOKE)
    try:
        time.sleep(1.0)
        simulate(daemon, mosquitto.port, f"smoke-alarm:{SMOKE}@0", "gas-leak:random@0")
        assert wait_until(lambda: any(e["type"] == "opened" for e in follower.events()), 15)
        assert wait_until(lambda: any(line["stream"] == "reading" for line in follower.lines),
                          10)
    finally:
        follower.stop()
    assert {e.get("device") for e in follower.events()} == {SMOKE}
    readings = [line for line in follower.lines if line["stream"] == "reading"]
    assert {r["device"] for r in readings} == {SMOKE}


def http_get(url: str, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                     headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_metrics_readiness_and_board_link_over_http(daemon: DaemonProcess,
                                                    mosquitto: Mosquitto) -> None:
    """/metrics of the running daemon parses and counts what was published; /readyz is
    ready; `sentinel board` prints a one-time link that signs a browser in once."""
    base = f"http://127.0.0.1:{daemon.control_port}"
    status, _, body = http_get(base + "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True

    result = run(daemon, "simulate", "--port", str(mosquitto.port), "--count", "40",
                 "--burst")
    assert result.returncode == 0, result.stderr
    readings, messages = (int(n) for n in
                          re.search(r"发布 (\d+) 条读数, (\d+) 条消息", result.stdout).groups())
    publish_raw(mosquitto.port, f"sentinel/v1/{SMOKE}/telemetry", b"{not json")

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        code, headers, text = http_get(base + "/metrics")
        assert code == 200 and headers["Content-Type"].startswith("text/plain")
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text.decode())
                for s in family.samples}

    def received() -> float:
        return scrape().get(("sentinel_messages_received_total", frozenset()), -1)

    assert wait_until(lambda: received() == messages + 1, 15), (received(), messages)
    samples = scrape()
    rejected = frozenset({("reason", "invalid_json")})
    assert samples[("sentinel_messages_rejected_total", rejected)] == 1
    stored = samples[("sentinel_readings_stored_total", frozenset({("sink", "sqlite")}))]
    assert stored == readings

    link = run(daemon, "board", "--name", "值班员")
    assert link.returncode == 0, link.stderr
    url = re.search(r"(http://\S+/board/login/\S+)", link.stdout).group(1)
    code, headers, _ = http_get(url)
    assert code in (302, 303) and "sentinel_board" in headers.get("Set-Cookie", "")
    again, _, _ = http_get(url)
    assert again != code  # used once
