"""No secret in logs or error messages: a daemon is given a broker password, a TSDB token,
a control token and notification URLs with keys in them, is driven through the paths that
log or answer errors (refused tokens, failing deliveries, a TSDB that goes away, refused
board logins, forged links), and everything it wrote, and every command's output, is
scanned for each secret."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

from daemon import DaemonProcess, Publisher, alarm, readings, wait_until, write_oncall
from helpers import SHIPPED_CONFIG, sentinel
from receivers import HttpReceiver
from servers import Mosquitto, VictoriaMetrics

MQTT_PASSWORD = "mqtt-Pa55-Zq8vX1"
INFLUX_TOKEN = "influx-Tok3n-Wm4Lr9"
CONTROL_TOKEN = "control-Tok3n-Hb7Ns2"
CHANNEL_KEY = "hook-K3y-Pp5Td8"


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_no_configured_secret_reaches_a_log_or_an_answer(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, tmp_path: Path) -> None:
    secrets = [MQTT_PASSWORD, INFLUX_TOKEN, CONTROL_TOKEN, CHANNEL_KEY]
    with HttpReceiver() as hooks:
        # The key sits where real webhook keys do: in the URL's path and as a password.
        channel = hooks.url("json", f"/hook/{CHANNEL_KEY}").replace(
            "json://", f"json://bot:{CHANNEL_KEY}@")
        oncall = write_oncall(tmp_path / "oncall.yaml", default=[channel])
        daemon = DaemonProcess(
            tmp_path / "state", mosquitto.port, oncall=oncall,
            mqtt__username="sentinel", mqtt__password=MQTT_PASSWORD,
            store__backend="influxdb", store__influxdb__url=victoria.url,
            store__influxdb__token=INFLUX_TOKEN, store__influxdb__retry_max_delay="1",
            control__token=CONTROL_TOKEN, log__level="debug", notify__attempts="1")
        daemon.start()
        outputs: list[str] = []
        try:
            port = daemon.control_port
            # Refused and accepted API calls, a refused board login, forged links.
            for token in ("wrong", CONTROL_TOKEN[:-1], CONTROL_TOKEN):
                _, body = request(port, "GET", "/api/incidents",
                                       {"Authorization": f"Bearer {token}"})
                outputs.append(body.decode())
            form = f"name=x&token={CONTROL_TOKEN}x".encode()
            _, body = request(port, "POST", "/board/login", {
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": f"http://127.0.0.1:{port}"}, form)
            outputs.append(body.decode())
            _, body = request(port, "GET", f"/a/{CONTROL_TOKEN}.{'A' * 43}")
            outputs.append(body.decode())
            # A failing delivery (503), then readings while the TSDB is down.
            hooks.fail_next(5)
            publisher = Publisher(mosquitto.port)
            publisher.publish_readings(readings(1, time.time() - 60))
            publisher.publish_readings(alarm("SB-SMK-0001"))
            assert wait_until(lambda: '"notification_failed"' in daemon.log_text(), 30)
            victoria.stop()
            publisher.publish_readings(readings(1, time.time() - 30))
            assert wait_until(lambda: '"influx_write_retry"' in daemon.log_text(), 30)
            victoria.start()
            publisher.close()
            # The commands an operator runs, including their error paths.
            for args in (("status",), ("incidents", "list"), ("incidents", "show", "nope"),
                         ("ack", "nope"), ("board", "--name", "x")):
                result = sentinel(*args, "-c", str(SHIPPED_CONFIG), env=daemon.env)
                outputs += [result.stdout, result.stderr]
            wrong = {**daemon.env, "SENTINEL_CONTROL__TOKEN": "wrong",
                     "SENTINEL_CONTROL__SOCKET": str(tmp_path / "none.sock")}
            result = sentinel("incidents", "list", "-c", str(SHIPPED_CONFIG), env=wrong)
            assert result.returncode == 1
            outputs += [result.stdout, result.stderr]
            assert daemon.stop() == 0
        finally:
            daemon.close()
    log = daemon.log_text()
    assert '"daemon_ready"' in log and '"control_unauthorized"' in log
    for secret in secrets:
        assert secret not in log, f"{secret} in the daemon's log"
        for text in outputs:
            assert secret not in text, f"{secret} in an answer: {text[:300]}"
    # The delivery failures were logged (so the scan looked at real error text).
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "notification_failed" for e in events)
