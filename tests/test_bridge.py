"""The shipped bridge, end to end with real brokers: a box's Mosquitto (the bridge lines of
config/mosquitto/bridge.conf) bridged over TLS, through a fault proxy, to a district
Mosquitto run from config/mosquitto/district.conf and district.acl, with the box daemon
as a real process. Proven: heartbeats and events go up, commands come down and are
answered; while the district is unreachable the box queues, then delivers in order; the
daemon's death (kill -9) reaches the district as its will.
"""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.district import wire
from test_broker_security import make_certs, password_file

from daemon import DaemonProcess, Publisher
from fault_proxy import FaultProxy
from helpers import ROOT
from servers import Mosquitto

BROKER_DIR = ROOT / "config" / "mosquitto"
COMMUNITY = "shuibei"  # the shipped bridge.conf's and district.acl's example community
KEY = "district-command-key-0123456789"
PASSWORDS = {"box-shuibei": "box-secret-1", "sentinel-district": "district-secret-2"}


def bridge_lines(district_port: int, ca: Path) -> list[str]:
    """The shipped bridge.conf's directives, with this test's address, CA and password.
    The reconnect delay is shortened (same mechanics, seconds instead of a minute)."""
    lines = []
    for raw in (BROKER_DIR / "bridge.conf").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key = line.split(None, 1)[0]
        if key == "address":
            line = f"address 127.0.0.1:{district_port}"
        elif key == "bridge_cafile":
            line = f"bridge_cafile {ca}"
        elif key == "remote_password":
            line = f"remote_password {PASSWORDS['box-shuibei']}"
        elif key == "restart_timeout":
            line = "restart_timeout 1 1"
        lines.append(line)
    return lines


class DistrictClient:
    """The district daemon's view of the district broker (its user, over TLS)."""

    def __init__(self, port: int, ca: Path) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.seen: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sentinel-district")
        self.client.username_pw_set("sentinel-district", PASSWORDS["sentinel-district"])
        self.client.tls_set(ca_certs=str(ca))
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, bytes(m.payload), bool(m.retain)))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(f"sentinel/+/{leaf}", 1) for leaf in (
            "events", "heartbeat", "bridge", "replies", "incidents/+")])
        self.client.loop_start()

    def wait(self, predicate: Any, within: float, what: str) -> tuple[str, bytes, bool]:
        deadline = time.monotonic() + within
        while True:
            try:
                found = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out after {within} s waiting for {what}; "
                                     f"seen {[(t, p[:80]) for t, p, _ in self.seen[-8:]]}"
                                     ) from None
            self.seen.append(found)
            if predicate(*found):
                return found

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def is_heartbeat(state: str) -> Any:
    return lambda topic, payload, retain: (
        topic == f"sentinel/{COMMUNITY}/heartbeat" and bool(payload)
        and wire.Heartbeat.parse(payload).state == state)


def is_bridge(state: bytes) -> Any:
    return lambda topic, payload, retain: (
        topic == f"sentinel/{COMMUNITY}/bridge" and payload == state)


def test_box_bridged_to_district(tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    pki = tmp_path / "pki"
    make_certs(pki, "127.0.0.1", "localhost")
    ca = pki / "ca.crt"
    passwd = password_file(tmp_path / "district.passwd", PASSWORDS)
    district_broker = Mosquitto(
        tmp_path / "district", base_config=(BROKER_DIR / "district.conf").read_text(),
        paths={"certfile": pki / "server.crt", "keyfile": pki / "server.key",
               "password_file": passwd, "acl_file": BROKER_DIR / "district.acl"})
    with district_broker, FaultProxy(district_broker.port) as uplink:
        district = DistrictClient(district_broker.port, ca)
        with Mosquitto(tmp_path / "box",
                       extra_config=bridge_lines(uplink.port, ca)) as box_broker:
            district.wait(is_bridge(b"1"), 10, "the bridge's notification '1'")
            daemon = DaemonProcess(tmp_path / "state", box_broker.port,
                                   DISTRICT__COMMUNITY=COMMUNITY, DISTRICT__COMMAND_KEY=KEY,
                                   DISTRICT__HEARTBEAT_INTERVAL="1").start()
            daemons.append(daemon)
            district.wait(is_heartbeat("online"), 10, "the box's heartbeat at the district")

            # A command comes down the bridge and its reply goes up.
            command_id, payload = wire.sign_command(KEY.encode(), COMMUNITY, "resync",
                                                    {"after": 0}, time.time(), 60)
            district.client.publish(f"sentinel/{COMMUNITY}/commands", payload, qos=1)
            _, answer, _ = district.wait(
                lambda t, p, r: t.endswith("/replies") and wire.parse_reply(p)["id"]
                == command_id, 10, "the box's reply")
            assert wire.parse_reply(answer)["ok"] is True

            # The uplink is cut: the district sees the bridge's will; the box queues.
            uplink.refuse(True)
            uplink.cut()
            district.wait(is_bridge(b"0"), 10, "the bridge's will '0'")
            local = Publisher(box_broker.port, client_id="box-side-publisher")
            for n in range(50):
                local.publish(f"sentinel/{COMMUNITY}/events",
                              json.dumps({"seq": 10_000 + n, "probe": True}).encode())
            local.close()
            time.sleep(0.5)
            uplink.refuse(False)
            district.wait(is_bridge(b"1"), 10, "the bridge back")
            probes: list[int] = []

            def probe(topic: str, payload: bytes, retain: bool) -> bool:
                if topic.endswith("/events") and b'"probe"' in payload:
                    probes.append(json.loads(payload)["seq"])
                return len(probes) == 50

            district.wait(probe, 15, "the 50 queued events")
            assert probes == list(range(10_000, 10_050)), probes

            # kill -9: the box broker publishes the daemon's will, the bridge carries it up.
            daemon.kill()
            district.wait(is_heartbeat("offline"), 10, "the daemon's will at the district")
        district.close()
