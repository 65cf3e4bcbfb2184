"""The test-server fixtures themselves work: real broker, real store, scripted stub."""

from __future__ import annotations

import gzip
import json
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest

from servers import LOOPBACK, Mosquitto, StubInfluxServer, StubResponse, VictoriaMetrics

TIMEOUT = 10.0


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


class _Client:
    """A minimal synchronous paho 2.x client wrapper (network loop in paho's thread)."""

    def __init__(self, broker: Mosquitto, client_id: str, *, clean_session: bool = True) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.session_present: bool | None = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(TIMEOUT), "no CONNACK from the fixture broker"

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        assert not rc.is_failure, rc
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(msg)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=qos)
        assert self._subscribed.wait(TIMEOUT), "no SUBACK"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _lines(now_ms: int) -> str:
    return (
        f"env,device_id=d1 temperature=21.5,humidity=40i {now_ms}\n"
        f"env,device_id=d2 temperature=19.25 {now_ms}\n"
        f"env,device_id=d1 temperature=21.75,humidity=41i {now_ms + 1000}\n"
    )


# ---------------------------------------------------------------------------------------
# Mosquitto
# ---------------------------------------------------------------------------------------


def test_mosquitto_round_trips_a_qos1_message(mosquitto: Mosquitto) -> None:
    """A QoS 1 message published to the fixture broker reaches a QoS 1 subscriber."""
    assert mosquitto.host == LOOPBACK
    assert mosquitto.port != 1883
    sub = _Client(mosquitto, f"sub-{uuid.uuid4().hex[:8]}")
    pub = _Client(mosquitto, f"pub-{uuid.uuid4().hex[:8]}")
    try:
        sub.subscribe("sentinel/test/#", qos=1)
        pub.publish("sentinel/test/a", b'{"v": 1}', qos=1)
        msg = sub.messages.get(timeout=TIMEOUT)
        assert (msg.topic, msg.payload, msg.qos) == ("sentinel/test/a", b'{"v": 1}', 1)
    finally:
        sub.close()
        pub.close()
    assert f"listener {mosquitto.port} 127.0.0.1" in mosquitto.config_path.read_text()


def test_mosquitto_persistent_session_survives_restart(mosquitto: Mosquitto) -> None:
    """A QoS 1 message queued for an offline persistent session is delivered after restart()."""
    port, data_dir = mosquitto.port, mosquitto.data_dir
    sub = _Client(mosquitto, "persistent-sub", clean_session=False)
    sub.subscribe("sentinel/queued", qos=1)
    sub.close()
    pub = _Client(mosquitto, "pub")
    pub.publish("sentinel/queued", b"kept across restart", qos=1)
    pub.close()

    mosquitto.restart()
    assert (mosquitto.port, mosquitto.data_dir) == (port, data_dir)
    assert any(data_dir.iterdir()), "mosquitto wrote no persistence file"

    sub = _Client(mosquitto, "persistent-sub", clean_session=False)
    try:
        assert sub.session_present is True
        msg = sub.messages.get(timeout=TIMEOUT)
        assert (msg.topic, msg.payload) == ("sentinel/queued", b"kept across restart")
    finally:
        sub.close()


def test_mosquitto_missing_binary_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a mosquitto binary the helper raises RuntimeError with install advice."""
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(RuntimeError, match="apt-get install mosquitto"):
        Mosquitto()


# ---------------------------------------------------------------------------------------
# VictoriaMetrics
# ---------------------------------------------------------------------------------------


def test_victoria_stores_line_protocol_plain_and_gzip(victoria: VictoriaMetrics) -> None:
    """Line protocol written with precision=ms (plain, then gzip) reads back as distinct points."""
    now_ms = int(time.time() * 1000)
    assert victoria.write(_lines(now_ms)) == 204
    assert victoria.write(_lines(now_ms), gzip_body=True) == 204
    expected = {("d1", now_ms), ("d2", now_ms), ("d1", now_ms + 1000)}

    assert victoria.wait_for_points("env", len(expected)) == expected

    series = {
        (s["metric"]["__name__"], s["metric"]["device_id"]): s
        for s in victoria.export_measurement("env")
    }
    assert set(series) == {
        ("env_temperature", "d1"),
        ("env_temperature", "d2"),
        ("env_humidity", "d1"),
    }
    # duplicates are stored twice: every point of the plain write is repeated by the gzip one
    assert sorted(series[("env_temperature", "d1")]["timestamps"]) == [
        now_ms,
        now_ms,
        now_ms + 1000,
        now_ms + 1000,
    ]
    assert sorted(series[("env_humidity", "d1")]["values"]) == [40, 40, 41, 41]


def test_victoria_data_survives_restart(victoria: VictoriaMetrics) -> None:
    """Points written before a graceful restart() are still there afterwards."""
    now_ms = int(time.time() * 1000)
    victoria.write(_lines(now_ms))
    assert len(victoria.wait_for_points("env", 3)) == 3
    port = victoria.port
    victoria.restart()
    assert victoria.port == port
    assert victoria.wait_for_points("env", 3) == {
        ("d1", now_ms),
        ("d2", now_ms),
        ("d1", now_ms + 1000),
    }


# ---------------------------------------------------------------------------------------
# Stub InfluxDB
# ---------------------------------------------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_stub_answers_script_in_order_and_decodes_gzip(stub_influx: StubInfluxServer) -> None:
    """Scripted statuses come back in order, then 204; gzip bodies are recorded decoded."""
    stub_influx.script((429, {"Retry-After": "1"}, ""), (503, {}, ""), (204, {}, ""))
    url = f"{stub_influx.write_url}?org=o&bucket=b&precision=ms"
    payload = b"env,device_id=d1 temperature=1 1700000000000\n"
    plain = {"Content-Type": "text/plain"}
    gz = {"Content-Type": "text/plain", "Content-Encoding": "gzip"}

    first = _post(url, payload, plain)
    assert (first[0], first[1]["Retry-After"]) == (429, "1")
    assert _post(url, gzip.compress(payload), gz)[0] == 503
    assert _post(url, payload, plain)[0] == 204
    assert _post(url, gzip.compress(payload), gz)[0] == 204  # script exhausted: default

    reqs = stub_influx.requests
    assert [r.status for r in reqs] == [429, 503, 204, 204]
    assert all(r.body == payload for r in reqs)
    assert reqs[1].headers["content-encoding"] == "gzip"
    assert reqs[1].raw_body != payload
    assert reqs[0].param("precision") == "ms"
    assert reqs[0].param("bucket") == "b"
    assert reqs[0].path == "/api/v2/write"
    assert stub_influx.accepted_lines == [payload.decode().strip()] * 2


async def test_stub_rejects_marked_lines_from_asyncio() -> None:
    """With a reject marker, writes containing it get 400 + InfluxDB JSON; others 204 (asyncio)."""
    with StubInfluxServer(reject_marker="BAD", script=[StubResponse(500)]) as stub:
        async with aiohttp.ClientSession() as session:
            url = f"{stub.write_url}?org=o&bucket=b&precision=ms"
            good = b"m,device_id=d1 v=1 1\nm,device_id=d2 v=2 2\n"
            bad = b"m,device_id=d1 v=1 1\nm,device_id=BAD v=2 2\n"
            async with session.post(
                url, data=gzip.compress(bad), headers={"Content-Encoding": "gzip"}
            ) as resp:
                assert resp.status == 400
                error = json.loads(await resp.read())
            assert error["code"] == "invalid"
            assert "device_id=BAD" in error["message"]
            async with session.post(url, data=good) as resp:
                assert resp.status == 500  # marker check happens before the script
            async with session.post(url, data=good) as resp:
                assert resp.status == 204
        assert [r.status for r in stub.requests] == [400, 500, 204]
        assert stub.requests[0].lines == bad.decode().split("\n")[:2]
        assert stub.accepted_lines == good.decode().split("\n")[:2]
