"""The district rig: community boxes bridged to a street office's district, as real processes.

    box daemon ─▶ box mosquitto ══bridge══▶ FaultProxy ─▶ district mosquitto ◀─ district daemon
     (sentinel run)   (one per community)   (the uplink:      (one)            (sentinel district)
                                             cut on demand)

Every community box is a `sentinel run` process with its own mosquitto; that broker bridges
`sentinel/<community>/…` to the district broker (tests/servers.bridge_lines, the test-sized
twin of config/mosquitto/bridge.conf) through a tests/fault_proxy.FaultProxy, so a test can
cut one box's uplink while the box keeps working. The district daemon runs as
`python -m sentinel district -c district.toml`. Pages of every box and of the district go to
one tests/receivers.HttpReceiver, at `/<community>/<contact>` and `/district/<contact>`.

Everything starts in parallel (brokers, then daemons) so the whole rig is up in a few
seconds; timers are test-sized (heartbeat 1 s, offline_after 3 s, offline_grace 2 s).

Standalone: `PYTHONPATH=src python tests/district_rig.py` brings up three communities and the
district and prints their addresses until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.config.inventory import Device
from sentinel.decode.encode import encode
from sentinel.district import wire
from sentinel.incidents.model import Incident
from sentinel.incidents.store import read_events, read_incidents

from daemon import LOADED, DaemonProcess, Publisher, wait_until, write_oncall
from fault_proxy import FaultProxy
from helpers import ROOT
from receivers import HttpReceiver, ReceivedRequest
from servers import Mosquitto, bridge_lines, free_port

T = TypeVar("T")

PREFIX = "sentinel"
TIMEZONE = "Asia/Shanghai"

# Three communities of one street office (Cuizhu, Luohu district, Shenzhen). Each box runs
# the shipped Shuibei deployment under its own community id: the devices are the same, the
# boxes, brokers and databases are not.
COMMUNITIES: tuple[tuple[str, str, str], ...] = (
    ("shuibei", "水贝社区", "0755-2556-0001"),
    ("cuizhu", "翠竹社区", "0755-2556-0002"),
    ("tianbei", "田贝社区", "0755-2556-0003"),
)

# The street office's own roster (the district's oncall file): who is paged for a box gone
# dark or a whistled alarm.
STREET_OFFICE: tuple[tuple[str, str, str], ...] = (
    ("so-a", "朱洁", "13712340001"),
    ("so-b", "胡勇", "13712340002"),
)


def _parallel(calls: Iterable[Callable[[], T]]) -> list[T]:
    """Run blocking starts side by side (each waits on its own process being ready)."""
    calls = list(calls)
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def smoke_detectors() -> list[Device]:
    """Smoke detectors with device timestamps, one per building first (two alarms in one
    building make a confirmed fire, which is not what most tests are about)."""
    found = [d for d in LOADED.inventory.values()
             if d.kind == "smoke" and d.profile == "sentinel-json"]
    seen: set[tuple[str, str]] = set()
    first, rest = [], []
    for device in found:
        building = (device.compound, device.building)
        (rest if building in seen else first).append(device)
        seen.add(building)
    return first + rest


def box_policies(path: Path, duty_after: float, street_after: float) -> Path:
    """The box's escalation: grid worker and property at once, the duty officer after
    `duty_after`, the street office after `street_after` (test-sized; the shipped file
    says 3 and 10 minutes). Other incidents: the duty officer at once."""
    lines = ['ack_timeout = "30m"', "", "[storm]", 'window = "1s"', "",
             "[[policy]]", 'name = "smoke_gas"',
             'match = { incidents = ["smoke_alarm", "gas_leak", "fire_confirmed"] }',
             "[[policy.step]]", "after = 0", 'notify = ["grid_worker", "property"]',
             "[[policy.step]]", f"after = {duty_after}", 'notify = ["duty_officer"]',
             "[[policy.step]]", f"after = {street_after}", 'notify = ["street_office"]',
             "", "[[policy]]", 'name = "other"',
             "[[policy.step]]", "after = 0", 'notify = ["duty_officer"]']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def district_oncall(path: Path, receiver: HttpReceiver) -> Path:
    lines: list[str] = []
    for person, name, phone in STREET_OFFICE:
        lines += ["[[contact]]", f'id = "{person}"', f'name = "{name}"',
                  'role = "street_office"', f'phone = "{phone}"',
                  f'channels = ["{receiver.url("json", f"/district/{person}")}"]', ""]
    members = ", ".join(f'"{p[0]}"' for p in STREET_OFFICE)
    lines += ["[[roster]]", 'name = "street office"', 'role = "street_office"',
              "[[roster.shift]]", f"members = [{members}]", 'rotation = "weekly"',
              'rotation_start = "2026-01-05"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def district_policies(path: Path) -> Path:
    """The shipped config/district-escalation.toml (box_offline and whistle page the street
    office at once; a clean stop is a warning) with no storm window, so a box_offline notice
    is not held 30 s in a test; before that file exists, one policy paging the street office
    for everything the district raises."""
    shipped = ROOT / "config" / "district-escalation.toml"
    if shipped.exists():
        text = shipped.read_text(encoding="utf-8")
    else:
        text = "\n".join(['ack_timeout = "30m"', "", "[[policy]]", 'name = "street_office"',
                          "[[policy.step]]", "after = 0", 'notify = ["street_office"]'])
    path.write_text(text + '\n\n[storm]\nwindow = "0s"\n', encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------
# A community box
# ---------------------------------------------------------------------------------------


@dataclass
class Box:
    """One community: its broker, its uplink (a proxy in front of the district broker),
    its daemon. `cut()`/`restore()` take the uplink down and back."""

    id: str
    name: str
    phone: str
    key: bytes
    base: Path
    broker: Mosquitto
    proxy: FaultProxy
    daemon: DaemonProcess | None = None
    _publisher: Publisher | None = field(default=None, repr=False)

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def db(self) -> Path:
        return self.state_dir / "incidents.sqlite3"

    @property
    def control_url(self) -> str:
        assert self.daemon is not None
        return f"http://127.0.0.1:{self.daemon.control_port}"

    # -- the uplink -------------------------------------------------------------------
    def cut(self) -> None:
        """The uplink goes down: open connections reset, new ones refused (what a dead
        4G router or a cut fibre looks like to the bridge)."""
        self.proxy.refuse(True)
        self.proxy.cut()

    def restore(self) -> None:
        """The uplink is back: the bridge reconnects at its next restart_timeout."""
        self.proxy.refuse(False)

    # -- the box's own view -----------------------------------------------------------
    def seqs(self) -> list[int]:
        """Every event of the box's audit trail (each is published to the district)."""
        if not self.db.exists():
            return []
        return [e.seq for e in read_events(self.db)]

    def incidents(self, open_only: bool = False) -> list[Incident]:
        return read_incidents(self.db, open_only=open_only) if self.db.exists() else []

    def events_of(self, incident_id: str) -> list[Any]:
        return read_events(self.db, incident_id=incident_id)

    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.broker.port, client_id=f"rig-{self.id}")
        return self._publisher

    def alarm(self, device: Device, ts: float | None = None) -> float:
        """A detector's alarm reading into the box's broker; returns its publish time."""
        ts = round(ts if ts is not None else time.time(), 3)
        pub = self.publisher()
        for topic_name, payload in encode(LOADED.profiles[device.profile], device,
                                          {"alarm": True, "battery": 90.0}, ts, LOADED.kinds):
            pub.publish(topic_name, payload)
        pub.flush()
        return ts

    def wait_incident(self, device: Device, timeout: float = 10.0) -> Incident:
        found: list[Incident] = []

        def opened() -> bool:
            found[:] = [i for i in self.incidents(open_only=True) if i.device_id == device.id]
            return bool(found)

        assert wait_until(opened, timeout, 0.05), f"{self.id}: no incident for {device.id}"
        return found[0]

    def close(self) -> None:
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                self._publisher.close()
            self._publisher = None
        if self.daemon is not None:
            self.daemon.close()
        self.proxy.close()
        self.broker.close()


# ---------------------------------------------------------------------------------------
# The district daemon
# ---------------------------------------------------------------------------------------


class DistrictProcess:
    """`python -m sentinel district -c district.toml` in a subprocess."""

    def __init__(self, config: Path, state_dir: Path, http_port: int) -> None:
        self.config = config
        self.state_dir = state_dir
        self.http_port = http_port
        self.log_path = config.parent / "district.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        self.env["SENTINEL_LOG__FORMAT"] = "json"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> DistrictProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sentinel", "district", "-c", str(self.config)],
                env=self.env, stdout=log, stderr=log, cwd=ROOT)
        deadline = time.monotonic() + timeout
        # Ready: it logged its *_ready event (the box logs daemon_ready) and serves HTTP.
        while not (re.search(r'"event": ?"[a-z_]*ready"', self.log_text(offset))
                   and _accepts(self.http_port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"district exited ({self.proc.returncode}):\n"
                                   f"{self.log_text(offset)[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"district not ready in {timeout} s:\n"
                                   f"{self.log_text(offset)[-4000:]}")
            time.sleep(0.05)
        return self

    def log_text(self, offset: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.alive:
            self.kill()

    def incidents(self) -> list[Incident]:
        """The district's own incidents (box_offline, whistle), from its state database."""
        db = self.state_dir / "incidents.sqlite3"
        return read_incidents(db) if db.exists() else []

    # -- the district board, as a street-office person uses it -------------------------------
    def board_login(self, person: str) -> BoardSession:
        """A board session of `person` (a contact of the district's oncall file), logged in
        through a personal one-time link issued by the control API, as an administrator
        would send it."""
        token = (self.state_dir / "control.token").read_text(encoding="utf-8").strip()
        request = urllib.request.Request(
            f"{self.url}/api/board/login-link", method="POST",
            data=json.dumps({"person": person}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            path = json.loads(response.read())["path"]
        session = BoardSession(self.url)
        status, _, body = session.request("GET", path)  # 303 to /board, followed
        found = re.search(r'name="csrf" value="([^"]+)"', body)
        assert status == 200 and found, (status, body[:500])
        session.csrf = found.group(1)
        return session

    # -- what the district holds (its state database) -------------------------------------
    def _event_tables(self) -> list[tuple[Path, str]]:
        """(database, table) of the mirror's events: a table with `community` and `seq`.

        Found by shape rather than by name so the rig does not pin the mirror's schema."""
        found: list[tuple[Path, str]] = []
        for db in sorted(self.state_dir.glob("*.sqlite3")):
            with contextlib.closing(_readonly(db)) as conn:
                try:
                    tables = [r[0] for r in conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'")]
                    for table in tables:
                        columns = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
                        if {"community", "seq"} <= columns and "event" in table:
                            found.append((db, table))
                except sqlite3.OperationalError:
                    continue
        return found

    def mirrored(self, community: str, *, arrival: bool = False) -> list[int]:
        """The seqs of `community`'s events the district holds: in seq order, or in the
        order they were committed (`arrival`). Duplicates, if any, included."""
        tables = self._event_tables()
        if not tables:
            return []
        assert len(tables) == 1, f"more than one event table in the district: {tables}"
        db, table = tables[0]
        order = "seq"
        with contextlib.closing(_readonly(db)) as conn:
            if arrival:
                # When each was committed: a `received` time (batches share one; seq
                # orders within a batch), else the rowid.
                columns = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
                order = "received, seq" if "received" in columns else "rowid"
            try:
                return [int(r[0]) for r in conn.execute(
                    f'SELECT seq FROM "{table}" WHERE community = ? ORDER BY {order}',
                    (community,))]
            except sqlite3.OperationalError:
                return []

    def mirrored_event(self, community: str, seq: int) -> dict[str, Any] | None:
        """One mirrored event as a dict of its row (for timing and payload checks)."""
        tables = self._event_tables()
        if not tables:
            return None
        db, table = tables[0]
        with contextlib.closing(_readonly(db)) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute(f'SELECT * FROM "{table}" WHERE community = ? AND seq = ?',
                               (community, seq)).fetchone()
            return dict(row) if row is not None else None


class BoardSession:
    """A browser's worth of the district board: cookies kept, redirects followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.csrf = ""
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(CookieJar()))

    def request(self, method: str, path: str, fields: Mapping[str, str] | None = None,
                timeout: float = 15.0) -> tuple[int, dict[str, str], str]:
        data = urllib.parse.urlencode(fields).encode() if fields is not None else None
        request = urllib.request.Request(self.base + path, method=method, data=data)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def act(self, community: str, incident_id: str, action: str = "ack",
            **fields: str) -> tuple[int, str]:
        """Press a board button on a community's incident ("ack" or "note")."""
        status, _, body = self.request(
            "POST", f"/board/c/{community}/i/{urllib.parse.quote(incident_id)}/{action}",
            {"csrf": self.csrf, **fields})
        return status, body


def _readonly(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Commands from the district, as the district board sends them (for the tests' own use)
# ---------------------------------------------------------------------------------------


class DistrictClient:
    """A paho client on the district broker: sends signed commands to a community and
    collects every reply, and watches the communities' topics as the district sees them."""

    def __init__(self, port: int, keys: Mapping[str, bytes]) -> None:
        self.keys = dict(keys)
        self._cond = threading.Condition()
        self.replies: list[dict[str, Any]] = []
        self.messages: list[tuple[float, str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"rig-district-{secrets.token_hex(3)}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/+/#", qos=1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((time.time(), message.topic, message.payload))
            if message.topic.endswith(f"/{wire.REPLIES}"):
                with contextlib.suppress(ValueError):
                    self.replies.append(wire.parse_reply(message.payload))
            self._cond.notify_all()

    def sign(self, community: str, type_: wire.CommandType, fields: Mapping[str, Any],
             ttl: float = wire.ACT_TTL, key: bytes | None = None) -> tuple[str, bytes]:
        return wire.sign_command(key or self.keys[community], community, type_, fields,
                                 time.time(), ttl)

    def publish(self, community: str, payload: bytes) -> None:
        info = self.client.publish(wire.topic(PREFIX, community, wire.COMMANDS), payload,
                                   qos=1)
        info.wait_for_publish(10)

    def reply_to(self, command_id: str, timeout: float = 10.0, nth: int = 1
                 ) -> dict[str, Any]:
        """The `nth` reply with this id (the box answers a replayed command again)."""
        with self._cond:
            def enough() -> bool:
                return len([r for r in self.replies if r["id"] == command_id]) >= nth
            if not self._cond.wait_for(enough, timeout):
                raise TimeoutError(f"no reply #{nth} to command {command_id} in {timeout} s")
            return [r for r in self.replies if r["id"] == command_id][nth - 1]

    def seen(self, topic_name: str) -> list[tuple[float, bytes]]:
        with self._cond:
            return [(t, p) for t, name, p in self.messages if name == topic_name]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------------------------
# The rig
# ---------------------------------------------------------------------------------------


@dataclass
class DistrictRig:
    base: Path
    receiver: HttpReceiver
    broker: Mosquitto
    district: DistrictProcess
    boxes: dict[str, Box]
    client: DistrictClient

    def box(self, community: str) -> Box:
        return self.boxes[community]

    def pages(self, prefix: str) -> list[ReceivedRequest]:
        """Pages whose receiver path starts with `prefix` ('/<community>/' or '/district/')."""
        return [r for r in self.receiver.requests if r.path.startswith(prefix)]

    def caught_up(self, community: str, *, allow_empty: bool = False) -> bool:
        """The district holds exactly the box's events, each once (and the box has some,
        unless `allow_empty`)."""
        want = self.box(community).seqs()
        return (bool(want) or allow_empty) and self.district.mirrored(community) == want

    def restart_box(self, community: str) -> None:
        box = self.box(community)
        assert box.daemon is not None
        box.daemon.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        self.district.close()
        _parallel([b.close for b in self.boxes.values()])
        self.broker.close()
        self.receiver.stop()

    def describe(self) -> str:
        lines = [f"district board   {self.district.url}/board  (sign in: sentinel board -c "
                 f"{self.district.config} --person so-a)",
                 f"district broker  mqtt://127.0.0.1:{self.broker.port}",
                 f"district log     {self.district.log_path}"]
        for box in self.boxes.values():
            assert box.daemon is not None
            lines += [f"{box.id:<9}        board {box.control_url}/  broker "
                      f"mqtt://127.0.0.1:{box.broker.port}  uplink proxy :{box.proxy.port}"
                      f"  log {box.daemon.log_path}"]
        lines.append(f"pages            {self.receiver.url('json', '/')} (printed below "
                     "as they arrive when run standalone)")
        return "\n".join(lines)


def start_rig(base: Path, communities: Sequence[tuple[str, str, str]] = COMMUNITIES, *,
              offline_after: float = 3.0, offline_grace: float = 2.0, heartbeat: float = 1.0,
              duty_after: float = 8.0, street_after: float = 30.0,
              box_settings: Mapping[str, str] | None = None,
              start_district: bool = True, save_every_change: bool = False) -> DistrictRig:
    """Bring the district and `communities` up; the caller closes the rig.

    `start_district=False` leaves the district daemon to the caller (`rig.district.start()`),
    e.g. to watch the boxes and brokers alone. The district broker saves its persistence
    every second, as config/mosquitto/district.conf does on a timer; `save_every_change`
    rewrites it after every message instead (a backlog then crosses it at ~200 messages/s:
    bench/district_outage.py --rig-autosave shows the difference)."""
    base.mkdir(parents=True, exist_ok=True)
    receiver = HttpReceiver().start()
    keys = {c[0]: secrets.token_urlsafe(32).encode() for c in communities}
    district_base = base / "district"
    (district_base / "keys").mkdir(parents=True, exist_ok=True)
    saves = ["autosave_interval 1"] if save_every_change else \
        ["autosave_on_changes false", "autosave_interval 1"]
    broker = Mosquitto(district_base / "mosquitto", extra_config=saves)
    box_brokers: dict[str, Mosquitto] = {}
    boxes: dict[str, Box] = {}
    district: DistrictProcess | None = None
    try:
        broker.start()
        # Every box broker needs its proxy's port, and each proxy the district broker's.
        proxies = {c[0]: FaultProxy(broker.port).start() for c in communities}
        for cid, _, _ in communities:
            box_brokers[cid] = Mosquitto(base / cid / "mosquitto",
                                         extra_config=bridge_lines(cid, proxies[cid].port,
                                                                   prefix=PREFIX))
        _parallel([b.start for b in box_brokers.values()])
        for cid, name, phone in communities:
            boxes[cid] = Box(cid, name, phone, keys[cid], base / cid, box_brokers[cid],
                             proxies[cid])

        http_port = free_port()
        public_url = f"http://127.0.0.1:{http_port}"
        district = DistrictProcess(
            district_config(district_base, broker.port, http_port, receiver, communities,
                            keys, offline_after=offline_after,
                            offline_grace=offline_grace),
            district_base / "state", http_port)

        def start_box(box: Box) -> None:
            oncall = write_oncall(
                box.base / "oncall.yaml",
                {c.id: [receiver.url("json", f"/{box.id}/{c.id}")]
                 for c in LOADED.oncall.contact})
            settings = {
                "escalation__policies": str(box_policies(box.base / "policies.toml",
                                                         duty_after, street_after)),
                "rules__startup_grace": "0", "rules__tick_interval": "0.2",
                "escalation__tick_interval": "0.2", "mqtt__keepalive": "5",
                "district__community": box.id,
                "district__command_key": box.key.decode(),
                "district__heartbeat_interval": str(heartbeat),
                "district__public_url": public_url,
                "incidents__topic_prefix": PREFIX,
                "timezone": TIMEZONE,
                **(box_settings or {})}
            box.daemon = DaemonProcess(box.state_dir, box.broker.port, oncall=oncall,
                                       **settings)
            box.daemon.start(timeout=40)

        _parallel([*([district.start] if start_district else []),
                   *[(lambda b=b: start_box(b)) for b in boxes.values()]])
        client = DistrictClient(broker.port, keys)
    except BaseException:
        if district is not None:
            district.close()
        for box in boxes.values():
            box.close()
        for cid, b in box_brokers.items():
            if cid not in boxes:
                b.close()
        broker.close()
        receiver.stop()
        raise
    return DistrictRig(base, receiver, broker, district, boxes, client)


def district_config(base: Path, broker_port: int, http_port: int, receiver: HttpReceiver,
                    communities: Sequence[tuple[str, str, str]], keys: Mapping[str, bytes],
                    *, offline_after: float = 3.0, offline_grace: float = 2.0,
                    extra: Sequence[str] = ()) -> Path:
    """Write district.toml (and its oncall, policies and key files) under `base`.

    `extra`: more top-level TOML (sections) appended, e.g. a [store.influxdb]."""
    (base / "keys").mkdir(parents=True, exist_ok=True)
    oncall = district_oncall(base / "district-oncall.toml", receiver)
    policies = district_policies(base / "district-escalation.toml")
    lines = [
        f'state_dir = "{base / "state"}"',
        'language = "zh"',
        f'timezone = "{TIMEZONE}"',
        "", "[mqtt]", 'host = "127.0.0.1"', f"port = {broker_port}",
        'client_id = "sentinel-district"', "keepalive = 5",
        "[mqtt.reconnect]", "max_delay = 1",
        "", "[control]", 'host = "127.0.0.1"', f"port = {http_port}",
        f'public_url = "http://127.0.0.1:{http_port}"',
        # The district's own incidents are not published on the district broker (they
        # would land under a community's topics).
        "", "[incidents]", f'topic_prefix = "{PREFIX}"', "publish = false",
        "", "[escalation]", f'oncall = "{oncall}"', f'policies = "{policies}"',
        "tick_interval = 0.2",
        # Pages from a thread: no sender process to start, lighter on a 2-core machine.
        "", "[notify]", 'sender = "thread"', "timeout = 5",
        "", "[log]", 'format = "json"',
        "", "[district]", f"offline_after = {offline_after}",
        f"offline_grace = {offline_grace}", "check_interval = 0.2",
        "resync_after = 1", "resync_interval = 2",
    ]
    for cid, name, phone in communities:
        key_file = base / "keys" / f"{cid}.key"
        key_file.write_bytes(keys[cid])
        key_file.chmod(0o600)
        lines += ["", "[[community]]", f'id = "{cid}"', f'name = "{name}"',
                  f'phone = "{phone}"', f'command_key_file = "{key_file}"']
    lines += ["", *extra]
    path = base / "district.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------
# Small helpers for tests
# ---------------------------------------------------------------------------------------


def http(method: str, url: str, data: bytes | None = None, timeout: float = 15.0
         ) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one request; HTTP errors are answers, not exceptions."""
    if method == "POST" and data is None:
        data = b""
    request = urllib.request.Request(url, method=method, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def page_text(request: ReceivedRequest) -> str:
    body = request.json
    assert isinstance(body, dict), request.body[:200]
    return f"{body.get('title', '')}\n{body.get('message', '')}"


def links_in(text: str) -> list[str]:
    return re.findall(r"http://127\.0\.0\.1:\d+/c/[A-Za-z0-9_-]+/a/[A-Za-z0-9_.=-]+", text)


def heartbeat_of(client: DistrictClient, community: str) -> wire.Heartbeat | None:
    seen = client.seen(wire.topic(PREFIX, community, wire.HEARTBEAT))
    for _, payload in reversed(seen):
        with contextlib.suppress(ValueError):
            return wire.Heartbeat.parse(payload)
    return None


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="sentinel-district-rig-"))
    print(f"starting 3 communities and the district under {base} ...", flush=True)
    started = time.monotonic()
    # Short timers, to see a whistle and a dark box within a minute or two (the shipped
    # ones: heartbeat 15 s, offline_after 60 s, grace 30 s, climb 3 and 10 minutes).
    rig = start_rig(base, offline_after=20.0, offline_grace=10.0, heartbeat=5.0,
                    duty_after=30.0, street_after=60.0)
    try:
        print(f"up in {time.monotonic() - started:.1f} s\n{rig.describe()}")
        print(f"\nCtrl-C (or `kill {os.getpid()}`) stops everything; "
              f"`kill -USR1 {os.getpid()}` cuts or restores {COMMUNITIES[0][0]}'s uplink; "
              f"`kill -USR2 {os.getpid()}` raises a smoke alarm in {COMMUNITIES[1][0]} "
              "(unacknowledged, it climbs to the street office in a minute: a whistle).",
              flush=True)
        cut = {"on": False}

        def toggle(signum: int, frame: object) -> None:
            box = rig.box(COMMUNITIES[0][0])
            if cut["on"]:
                box.restore()
            else:
                box.cut()
            cut["on"] = not cut["on"]
            print(f"{box.id} uplink {'cut' if cut['on'] else 'restored'}", flush=True)

        signal.signal(signal.SIGUSR1, toggle)
        detectors = iter(smoke_detectors())

        def alarm(signum: int, frame: object) -> None:
            box = rig.box(COMMUNITIES[1][0])
            device = next(detectors)
            box.alarm(device)
            print(f"{box.id}: smoke alarm from {device.id}", flush=True)

        signal.signal(signal.SIGUSR2, alarm)

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # `kill <pid>` cleans up like Ctrl-C

        signal.signal(signal.SIGTERM, interrupt)
        shown = 0
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                # Every page as it arrives: who got it, and its first line.
                pages = rig.receiver.requests
                for page in pages[shown:]:
                    body = page.json if isinstance(page.json, dict) else {}
                    first = str(body.get("title") or body.get("body") or "")[:100]
                    print(f"page → {page.path}: {first}", flush=True)
                shown = len(pages)
                time.sleep(0.5)
    finally:
        rig.close()
        shutil.rmtree(base, ignore_errors=True)
        print(json.dumps({"stopped": True}))


if __name__ == "__main__":
    main()
