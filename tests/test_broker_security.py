"""The shipped broker configuration (config/mosquitto/) holds, against a real Mosquitto.

The broker runs from config/mosquitto/mosquitto.conf itself, only its listener (a free
loopback port), user and file paths rewritten, with the shipped ACL file unchanged. The TLS
certificates are made at test time by the shipped config/mosquitto/make-certs.sh (openssl),
the password file by mosquitto_passwd. A missing binary fails the test; nothing is skipped.

Proven here: no anonymous or wrongly authenticated client gets in and nothing speaks plain
text; the daemon connects over TLS, verifies the broker (CA and host name) and says why when
it cannot; each device can publish only on its own topic -- a forged publish is acknowledged
under MQTT 3.1.1 yet never reaches sentinel -- and a payload naming another device than its
topic is dead-lettered; sentinel reads every profile's topics and writes its incident
stream, which a read-only consumer receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.config.inventory import Device
from sentinel.config.model import MqttSettings, TlsSettings
from sentinel.decode.encode import encode
from sentinel.source.mqtt import MqttSource

from daemon import LOADED, DaemonProcess, deadletter_counts, stored_keys, wait_until
from helpers import ROOT, SHIPPED_CONFIG
from servers import Mosquitto

BROKER_DIR = ROOT / "config" / "mosquitto"
SHIPPED_CONF = BROKER_DIR / "mosquitto.conf"
SHIPPED_ACL = BROKER_DIR / "acl"
MAKE_CERTS = BROKER_DIR / "make-certs.sh"

# The user names the shipped ACL file names (and its patterns expect for devices).
SENTINEL = "sentinel-shuibei"
ZIGBEE_BRIDGE = "zigbee2mqtt"
TTS_APP = "shuibei-fire@ttn"
READER = "district-platform"


def _device(profile: str, index: int = 0) -> Device:
    return [d for d in LOADED.inventory.values() if d.profile == profile][index]


A = _device("sentinel-json", 0)   # a smoke detector speaking sentinel-json
B = _device("sentinel-json", 1)
ESP = _device("esphome")
ZIGBEE = _device("zigbee2mqtt")
LORA, LORA_2 = _device("lorawan-tts", 0), _device("lorawan-tts", 1)

PASSWORDS = {name: secrets.token_urlsafe(12)
             for name in (SENTINEL, A.id, B.id, ESP.id, ZIGBEE_BRIDGE, TTS_APP, READER)}

# Under MQTT 5 Mosquitto answers a denied publish with PUBACK reason 0x87.
NOT_AUTHORIZED = 0x87
TIMEOUT = 15.0


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if Path(p).exists()), None)
    if found is None:
        raise RuntimeError(f"`{name}` not found: these tests need it and never skip "
                           "(apt-get install mosquitto mosquitto-clients openssl)")
    return found


# ---------------------------------------------------------------------------------------
# Certificates, passwords, brokers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    good: Path        # CA + server certificate for 127.0.0.1 / localhost
    other: Path       # another CA, whose server certificate names the same hosts
    wrong_host: Path  # the good CA, server certificate for another host name only

    @property
    def ca(self) -> Path:
        return self.good / "ca.crt"


def make_certs(out: Path, *names: str) -> None:
    _binary("openssl")
    done = subprocess.run(["bash", str(MAKE_CERTS), str(out), *names],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"make-certs.sh failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    make_certs(base / "good", "127.0.0.1", "localhost")
    make_certs(base / "other", "127.0.0.1", "localhost")
    # make-certs.sh reuses the CA it finds in its output folder: the same CA, another name.
    (base / "wrong-host").mkdir()
    for name in ("ca.crt", "ca.key"):
        shutil.copy2(base / "good" / name, base / "wrong-host" / name)
    make_certs(base / "wrong-host", "broker.elsewhere.invalid")
    return Pki(base / "good", base / "other", base / "wrong-host")


def password_file(path: Path, users: dict[str, str]) -> Path:
    tool = _binary("mosquitto_passwd")
    path.unlink(missing_ok=True)
    for n, (user, password) in enumerate(users.items()):
        flags = ["-c", "-b"] if n == 0 else ["-b"]
        done = subprocess.run([tool, *flags, str(path), user, password],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    return path


def shipped_broker(base: Path, certs: Path) -> Mosquitto:
    """Mosquitto from the shipped config, with `certs`' server certificate; not started."""
    passwd = password_file(base.parent / f"{base.name}.passwd", PASSWORDS)
    return Mosquitto(base, base_config=SHIPPED_CONF.read_text(), paths={
        "certfile": certs / "server.crt", "keyfile": certs / "server.key",
        "password_file": passwd, "acl_file": SHIPPED_ACL})


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    with shipped_broker(tmp_path / "broker", pki.good) as started:
        yield started


# ---------------------------------------------------------------------------------------
# A synchronous MQTT client (paho's network thread) that records what the broker answers
# ---------------------------------------------------------------------------------------


class Client:
    def __init__(self, port: int, user: str | None, password: str | None, *,
                 ca: Path | None, protocol: int = mqtt.MQTTv311,
                 client_id: str | None = None) -> None:
        self.connack: queue.Queue[Any] = queue.Queue()
        self.closed: queue.Queue[Any] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.acks: dict[int, Any] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"test-{user or 'anonymous'}",
                                  protocol=protocol)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, flags, rc, props: self.connack.put(rc)
        self.client.on_disconnect = lambda c, u, flags, rc, props: self.closed.put(rc)
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                    props: Any) -> None:
        self.acks[mid] = rc

    def result(self, timeout: float = TIMEOUT) -> Any:
        """The CONNACK's reason code, or None when the connection closed without one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                return self.connack.get(timeout=0.05)
            if not self.closed.empty():
                return None
        raise AssertionError("neither CONNACK nor close from the broker")

    def connected(self) -> Client:
        rc = self.result()
        assert rc is not None and not rc.is_failure, f"connect refused: {rc}"
        return self

    def publish(self, topic: str, payload: bytes) -> Any:
        """Publish with QoS 1; return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
        assert wait_until(lambda: info.mid in self.acks, TIMEOUT, 0.01), f"no PUBACK: {topic}"
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> None:
        done: queue.Queue[Any] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, rcs, props: done.put(rcs)
        self.client.subscribe(topic, qos=1)
        reasons = done.get(timeout=TIMEOUT)
        assert not any(r.is_failure for r in reasons), f"subscribe {topic} refused: {reasons}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def client(port: int, user: str, *, ca: Path, protocol: int = mqtt.MQTTv311,
           client_id: str | None = None) -> Iterator[Client]:
    c = Client(port, user, PASSWORDS[user], ca=ca, protocol=protocol, client_id=client_id)
    try:
        yield c.connected()
    finally:
        c.close()


# ---------------------------------------------------------------------------------------
# 1. Who may connect
# ---------------------------------------------------------------------------------------


def test_shipped_config_makes_the_choices_the_issue_asks_for() -> None:
    directives = [line.split(None, 1) for line in SHIPPED_CONF.read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    settings = {d[0]: d[1].strip() if len(d) > 1 else "" for d in directives}
    assert [d[0] for d in directives].count("listener") == 1, "exactly one explicit listener"
    expected = {"allow_anonymous": "false", "set_tcp_nodelay": "true", "persistence": "true",
                "autosave_on_changes": "true", "use_username_as_clientid": "true",
                "require_certificate": "false", "tls_version": "tlsv1.2"}
    assert {k: settings.get(k) for k in expected} == expected
    for needed in ("certfile", "keyfile", "password_file", "acl_file", "max_queued_messages",
                   "max_queued_bytes", "max_inflight_messages"):
        assert needed in settings, needed
    # Every directive is explained: the line before each block of directives is a comment.
    lines = SHIPPED_CONF.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#") and (i == 0 or not lines[i - 1].strip()):
            raise AssertionError(f"mosquitto.conf line {i + 1} has no comment: {line!r}")


def test_anonymous_wrong_passwords_and_plain_text_are_refused(broker: Mosquitto,
                                                              pki: Pki) -> None:
    refusals = {
        "anonymous": Client(broker.port, None, None, ca=pki.ca),
        "wrong password": Client(broker.port, A.id, "not-" + PASSWORDS[A.id], ca=pki.ca),
        "unknown user": Client(broker.port, "SB-SMK-9999", "whatever", ca=pki.ca),
        "wrong password, MQTT 5": Client(broker.port, A.id, "x", ca=pki.ca,
                                         protocol=mqtt.MQTTv5),
    }
    try:
        for what, refused in refusals.items():
            rc = refused.result()
            assert rc is not None and rc.is_failure, f"{what}: accepted ({rc})"
            assert rc.value in (4, 5, 0x86, 0x87), f"{what}: {rc}"
    finally:
        for refused in refusals.values():
            refused.close()
    # No TLS: the right password in plain text does not even get an answer.
    plain = Client(broker.port, A.id, PASSWORDS[A.id], ca=None)
    try:
        assert plain.result() is None
    finally:
        plain.close()
    # The control: the same device with its own password over TLS gets in.
    with client(broker.port, A.id, ca=pki.ca):
        pass
    log = broker.log_text()
    assert log.count("not authorised") >= 3, log


# ---------------------------------------------------------------------------------------
# 2. The daemon verifies the broker
# ---------------------------------------------------------------------------------------


def tls_env(ca: Path, password: str | None = None) -> dict[str, str]:
    return {"MQTT__TLS__ENABLED": "true", "MQTT__TLS__CA_FILE": str(ca),
            "MQTT__HOST": "127.0.0.1", "MQTT__USERNAME": SENTINEL,
            "MQTT__PASSWORD": password or PASSWORDS[SENTINEL]}


def launch(daemon: DaemonProcess) -> DaemonProcess:
    """Start the daemon without waiting for it to become ready (DaemonProcess.start waits)."""
    daemon.state_dir.mkdir(parents=True, exist_ok=True)
    with daemon.log_path.open("ab") as log:
        daemon.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "run", "-c", str(SHIPPED_CONFIG)],
            env=daemon.env, stdout=log, stderr=log, cwd=ROOT)
    return daemon


def readyz(daemon: DaemonProcess) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{daemon.control_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(("case", "expected"), [
    ("another CA", r"certificate verify failed: (self.signed|unable to get local issuer)"
                   r".*not signed by the CA in \[mqtt\.tls\] ca_file"),
    ("certificate for another host", r"certificate verify failed: IP address mismatch, "
                                     r"certificate is not valid for '127\.0\.0\.1'.*"
                                     r"\[mqtt\] host = '127\.0\.0\.1'"),
    ("wrong password", r"broker refused the connection: Not authorized"),
])
def test_daemon_that_cannot_verify_the_broker_never_becomes_ready_and_says_why(
        case: str, expected: str, tmp_path: Path, pki: Pki) -> None:
    certs = pki.wrong_host if case == "certificate for another host" else pki.good
    ca = pki.other / "ca.crt" if case == "another CA" else pki.ca
    password = "wrong" if case == "wrong password" else None
    with shipped_broker(tmp_path / "broker", certs) as broker:
        daemon = DaemonProcess(tmp_path / "state", broker.port, **tls_env(ca, password))
        try:
            launch(daemon)

            def failures() -> list[str]:
                return [str(e.get("reason")) for e in daemon.log_events()
                        if e.get("event") == "mqtt_connect_failed"]

            # Two attempts: it keeps retrying (backoff capped at 1 s here), never connects.
            assert wait_until(lambda: len(failures()) >= 2, 30), daemon.log_text()[-3000:]
            assert daemon.alive
            assert all(re.search(expected, reason) for reason in failures()), failures()
            assert '"daemon_ready"' not in daemon.log_text()
            status, body = readyz(daemon)
            assert status == 503 and not body["ready"]
            assert re.search(expected, body["checks"]["broker"]["detail"]), body
            if case != "wrong password":  # the broker saw a handshake fail, no MQTT at all
                assert f"as {SENTINEL}" not in broker.log_text()
        finally:
            daemon.close()


async def test_tls_connection_sets_tcp_nodelay_and_bad_ca_file_is_named(
        broker: Mosquitto, pki: Pki, tmp_path: Path) -> None:
    def settings(ca: Path) -> MqttSettings:
        return MqttSettings(host="127.0.0.1", port=broker.port, client_id=SENTINEL,
                            username=SENTINEL, tls=TlsSettings(enabled=True, ca_file=ca))

    source = MqttSource(settings(pki.ca), ["sentinel/v1/+/telemetry"], PASSWORDS[SENTINEL], 100)
    async with source:
        task = asyncio.create_task(source.run())
        try:
            async with asyncio.timeout(TIMEOUT):
                await source.wait_connected()
            sock = source._sock
            assert sock is not None and hasattr(sock, "cipher"), "not a TLS socket"
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    missing = tmp_path / "no-such-ca.crt"
    source = MqttSource(settings(missing), ["sentinel/v1/+/telemetry"], PASSWORDS[SENTINEL], 100)
    async with source:
        task = asyncio.create_task(source.run())
        try:
            for _ in range(int(TIMEOUT / 0.02)):
                if source.last_error is not None:
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert source.last_error == (f"cannot read [mqtt.tls] ca_file {missing}: "
                                 "No such file or directory")


# ---------------------------------------------------------------------------------------
# 3 and 4. Devices speak only for themselves (one broker and daemon for these tests)
# ---------------------------------------------------------------------------------------


@dataclass
class Stack:
    broker: Mosquitto
    daemon: DaemonProcess
    pki: Pki

    @property
    def db(self) -> Path:
        return self.daemon.state_dir / "readings.sqlite3"

    def received(self) -> int:
        return int(self.metric("sentinel_messages_received_total"))

    def client(self, user: str, protocol: int = mqtt.MQTTv311, client_id: str | None = None
               ) -> contextlib.AbstractContextManager[Client]:
        return client(self.broker.port, user, ca=self.pki.ca, protocol=protocol,
                      client_id=client_id)

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.daemon.control_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert found, f"{name} not in /metrics:\n{text}"
        return float(found.group(1))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("stack")
    with shipped_broker(base / "broker", pki.good) as broker:
        daemon = DaemonProcess(base / "state", broker.port, **tls_env(pki.ca))
        try:
            daemon.start()  # ready: connected over TLS, broker verified, subscribed
            yield Stack(broker, daemon, pki)
            assert daemon.alive
            assert "mqtt_subscribe_refused" not in daemon.log_text()
        finally:
            daemon.close()


_clock = [time.time() - 120.0]


def telemetry(device: Device, **changes: object) -> tuple[str, bytes, tuple[str, int]]:
    """One reading of `device` in its profile's format: (topic, payload, stored key)."""
    _clock[0] += 0.5  # a fresh device timestamp per message: a fresh store key
    ts = round(_clock[0], 3)
    values = {"smoke": {"alarm": False, "battery": 86.0}, "gas": {"alarm": False},
              "hydrant_pressure": {"pressure": 0.35},
              "water_level": {"level": 1.0}}[device.kind]
    values = {**values, **changes}
    messages = encode(LOADED.profiles[device.profile], device, values, ts, LOADED.kinds)
    assert len(messages) == 1, messages
    topic, payload = messages[0]
    return topic, payload, (device.id, round(ts * 1000))


def test_daemon_connects_over_tls_and_reads_every_profile(stack: Stack) -> None:
    before = stack.received()
    keys = set()
    for user, device in ((A.id, A), (ZIGBEE_BRIDGE, ZIGBEE), (TTS_APP, LORA)):
        topic, payload, key = telemetry(device)
        with stack.client(user) as c:
            assert not c.publish(topic, payload).is_failure
        keys.add(key)
    # ESPHome: one plain value per topic, no device timestamp (stored at the receive time).
    with stack.client(ESP.id) as c:
        assert not c.publish(f"esphome/{ESP.id}/sensor/pipe_pressure/state", b"3.5").is_failure
    assert wait_until(lambda: keys <= stored_keys(stack.db)
                      and ESP.id in {d for d, _ in stored_keys(stack.db)}, TIMEOUT)
    assert wait_until(lambda: stack.received() == before + 4, TIMEOUT)
    connected = [e for e in stack.daemon.log_events() if e.get("event") == "mqtt_connected"]
    assert connected and connected[0]["client_id"] == "sentinel-shuibei"


def test_device_cannot_publish_as_another_device(stack: Stack) -> None:
    """MQTT 3.1.1: the forged publish is acknowledged, then dropped: sentinel gets nothing."""
    before_received, before_dead = stack.received(), deadletter_counts(stack.db)
    forged_topic, forged_payload, forged_key = telemetry(B)  # B's topic, B's id: a perfect forgery
    with stack.client(A.id) as device_a:
        ack = device_a.publish(forged_topic, forged_payload)
        assert not ack.is_failure and ack.value == 0  # 3.1.1 cannot say "not authorised"
        time.sleep(1.0)  # ample time for a forwarded message to arrive
        # The positive control, on the same connection after the forgery: QoS 1 messages of
        # one publisher reach a subscriber in order, so once this one is stored, the
        # forgery would have been received before it.
        topic, payload, control_key = telemetry(A)
        assert not device_a.publish(topic, payload).is_failure
    assert wait_until(lambda: control_key in stored_keys(stack.db), TIMEOUT)
    assert wait_until(lambda: stack.received() == before_received + 1, TIMEOUT)
    assert forged_key not in stored_keys(stack.db)
    assert deadletter_counts(stack.db) == before_dead
    time.sleep(0.5)
    assert stack.received() == before_received + 1


def test_devices_are_refused_every_topic_but_their_own(stack: Stack) -> None:
    """MQTT 5 makes the broker's refusals visible: PUBACK 0x87 for each forged topic."""
    before = stack.received()
    lora_topic = telemetry(LORA)[0]
    forged = {
        A.id: [
            telemetry(B)[0],                                # another sentinel-json device
            f"esphome/{ESP.id}/sensor/pipe_pressure/state",  # an ESPHome node
            telemetry(ZIGBEE)[0],                           # a Zigbee device
            lora_topic,                                     # a LoRaWAN application
            # Its own name as a LoRaWAN "application": no pattern grants v3/%u/...
            f"v3/{A.id}/devices/{LORA.id.lower()}/up",
            "sentinel/水贝社区/incidents/forged",            # sentinel's incident stream
            "sentinel/水贝社区/events",
        ],
        ESP.id: [f"esphome/{A.id}/sensor/pipe_pressure/state", telemetry(A)[0]],
        ZIGBEE_BRIDGE: [telemetry(A)[0], lora_topic],
        TTS_APP: [lora_topic.replace(TTS_APP, "other-app@ttn"), telemetry(ZIGBEE)[0]],
        READER: [telemetry(A)[0], "sentinel/水贝社区/events"],
    }
    for user, topics in forged.items():
        with stack.client(user, protocol=mqtt.MQTTv5) as c:
            for topic in topics:
                rc = c.publish(topic, b'{"alarm": true}')
                assert rc.value == NOT_AUTHORIZED, f"{user} may publish on {topic}: {rc}"
    topic, payload, control_key = telemetry(A)
    with stack.client(A.id, protocol=mqtt.MQTTv5) as c:
        assert c.publish(topic, payload).value == 0
    assert wait_until(lambda: control_key in stored_keys(stack.db), TIMEOUT)
    assert wait_until(lambda: stack.received() == before + 1, TIMEOUT)


def test_payload_naming_another_device_is_dead_lettered(stack: Stack) -> None:
    """The broker lets A publish on A's topic; sentinel refuses a body that names B."""
    before = deadletter_counts(stack.db).get("device_mismatch", 0)
    topic, _, _ = telemetry(A)
    _, payload_b, key_b = telemetry(B)
    assert topic == f"sentinel/v1/{A.id}/telemetry"
    assert json.loads(payload_b)["id"] == B.id
    # The same for a LoRaWAN application: its uplink topic names one device, the body another.
    lora_topic, _, _ = telemetry(LORA)
    _, lora_payload, lora_key = telemetry(LORA_2)
    with stack.client(A.id) as device_a, stack.client(TTS_APP) as app:
        assert not device_a.publish(topic, payload_b).is_failure
        assert not app.publish(lora_topic, lora_payload).is_failure
    assert wait_until(
        lambda: deadletter_counts(stack.db).get("device_mismatch", 0) == before + 2, TIMEOUT)
    stored = stored_keys(stack.db)
    assert key_b not in stored and lora_key not in stored
    assert (A.id, key_b[1]) not in stored and (LORA.id, lora_key[1]) not in stored


def test_incident_stream_reaches_a_read_only_consumer(stack: Stack) -> None:
    """sentinel may write its incident topics; the consumer may read them (and only read)."""
    with stack.client(READER) as reader:
        reader.subscribe("sentinel/+/incidents/+")
        topic, payload, _ = telemetry(A, alarm=True)
        with stack.client(A.id) as device_a:
            assert not device_a.publish(topic, payload).is_failure
        deadline = time.monotonic() + TIMEOUT
        while True:  # retained states of incidents opened before come first
            message = reader.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            incident = json.loads(message.payload)
            if incident.get("target") == A.id:
                break
    assert message.topic == f"sentinel/{A.community}/incidents/{incident['id']}"
    assert incident["name"] == "smoke_alarm"
    # Retained while open: a consumer subscribing later gets it at once (check_retain_source:
    # its publisher, sentinel, may still write the topic).
    with stack.client(READER) as late:
        late.subscribe(message.topic)
        retained = late.messages.get(timeout=TIMEOUT)
    assert retained.retain and json.loads(retained.payload)["id"] == incident["id"]
    assert "incident_publish_failed" not in stack.daemon.log_text()


def test_device_cannot_take_over_sentinels_session(stack: Stack) -> None:
    """A device claiming sentinel's client id does not disconnect it (use_username_as_clientid):
    otherwise it could take over sentinel's persistent session and its queued alarms."""
    connects = stack.metric("sentinel_mqtt_connects_total")
    with stack.client(A.id, client_id=SENTINEL):
        time.sleep(1.0)
    assert stack.metric("sentinel_mqtt_connected") == 1
    assert stack.metric("sentinel_mqtt_connects_total") == connects
    assert "mqtt_disconnected" not in stack.daemon.log_text()
    topic, payload, key = telemetry(A)
    with stack.client(A.id) as device_a:
        assert not device_a.publish(topic, payload).is_failure
    assert wait_until(lambda: key in stored_keys(stack.db), TIMEOUT)
