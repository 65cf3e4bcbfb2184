"""`sentinel district` as a whole, on a real mosquitto: a box's will opens box_offline and
pages the street office through the same escalation and apprise stages as a box (a real
delivery to a local receiver), whose link acknowledges the district's own incident; a
life-safety alarm reaching the street-office step whistles; kill -9 of the district during
a burst loses and repeats nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.district import wire
from sentinel.district.service import (
    District,
    district_settings,
    load_district,
    run_district,
)
from sentinel.district.watch import BOX_OFFLINE, WHISTLE
from sentinel.errors import ConfigError
from sentinel.incidents.model import Status

from helpers import ROOT, sentinel
from receivers import HttpReceiver
from servers import Mosquitto, VictoriaMetrics, free_port

PREFIX = "sentinel"
KEY = "shuibei-command-key-0123456789"


def write_config(dest: Path, broker_port: int, receiver_url: str, control_port: int,
                 extra: str = "") -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "shuibei.key").write_text(KEY + "\n")
    (dest / "tianbei.key").write_text("tianbei-command-key-0123456789\n")
    (dest / "oncall.toml").write_text(f"""
[[contact]]
id = "so-01"
name = "朱洁"
role = "street_office"
channels = ["{receiver_url}"]

[[roster]]
role = "street_office"
[[roster.shift]]
members = ["so-01"]
""")
    shipped = (ROOT / "config" / "district-escalation.toml").read_text()
    # Notices that are not life-safety are held for storm control; not in a test.
    (dest / "escalation.toml").write_text(shipped + '\n[storm]\nwindow = "0s"\n')
    (dest / "district.toml").write_text(f"""
state_dir = "state"
timezone = "Asia/Shanghai"

[mqtt]
port = {broker_port}
client_id = "sentinel-district-test"
[mqtt.reconnect]
max_delay = 1

[incidents]
publish = false
synchronous = "normal"

[escalation]
oncall = "oncall.toml"
policies = "escalation.toml"
tick_interval = 0.2

[notify]
sender = "thread"
timeout = 5

[control]
port = {control_port}

[log]
format = "json"

[district]
offline_after = 3
offline_grace = 0.6
check_interval = 0.2
resync_after = 0.5
resync_interval = 1

[[community]]
id = "shuibei"
name = "水贝社区"
phone = "0755-25500001"
command_key_file = "shuibei.key"

[[community]]
id = "tianbei"
name = "田贝社区"
phone = "0755-25500002"
command_key_file = "tianbei.key"
""" + extra)
    return dest / "district.toml"


class Box:
    """What a community box puts on the district broker (its bridge's side of it)."""

    def __init__(self, port: int, community: str = "shuibei") -> None:
        self.community = community
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"box-{community}")
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, leaf: str, payload: bytes | dict[str, Any], retain: bool = False
             ) -> mqtt.MQTTMessageInfo:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.client.publish(wire.topic(PREFIX, self.community, leaf), body, qos=1,
                                   retain=retain)

    def heartbeat(self, last_seq: int = 0) -> None:
        self.send(wire.HEARTBEAT, wire.Heartbeat("online", self.community, ts=time.time(),
                                                 last_seq=last_seq).payload(),
                  retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(predicate: Any, what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def receiver() -> Any:
    with HttpReceiver() as found:
        yield found


@contextlib.asynccontextmanager
async def started(config: Path) -> AsyncIterator[District]:
    """The district daemon in this process, until the block ends."""
    loaded = load_district(config, {})
    stop = asyncio.Event()
    ready: asyncio.Future[District] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_district(loaded, stop, on_ready=ready.set_result))
    await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield ready.result()
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await task


@pytest.fixture
async def district(tmp_path: Path, receiver: HttpReceiver
                   ) -> AsyncIterator[tuple[Mosquitto, District]]:
    with Mosquitto(tmp_path / "broker") as broker:
        config = write_config(tmp_path / "district", broker.port, receiver.url("json"),
                              free_port())
        async with started(config) as running:
            yield broker, running


def _text(request: Any) -> str:
    fields = request.fields
    return f"{fields.get('title', '')}\n{fields.get('message', '')}"


def _link(message: str) -> str:
    found = re.search(r"http://127\.0\.0\.1:\d+/a/[A-Za-z0-9_.\-]+", message)
    assert found, f"no link in {message!r}"
    return found.group(0)


async def test_box_offline_pages_the_street_office_and_its_link_acknowledges(
        district: tuple[Mosquitto, District], receiver: HttpReceiver, tmp_path: Path) -> None:
    broker, running = district
    box = Box(broker.port)
    try:
        box.heartbeat()
        await until(lambda: running.mirror.records["shuibei"].reach == "online", "online")
        # The box's daemon dies: its broker publishes the will.
        box.send(wire.HEARTBEAT, wire.offline("shuibei"), retain=True).wait_for_publish(5)
        await until(lambda: running.mirror.records["shuibei"].reach == "offline", "offline")
        book = running.incidents.book
        assert book is not None
        # Shown offline at once, paged only once it stayed unreachable for offline_grace.
        assert f"{BOX_OFFLINE}:shuibei" not in book.open
        await until(lambda: f"{BOX_OFFLINE}:shuibei" in book.open, "box offline")
        inc = book.open[f"{BOX_OFFLINE}:shuibei"]
        assert inc.id.startswith("D")
        # (tianbei, never heard, may page too once offline_after has passed.)
        await until(lambda: any("水贝社区" in _text(r) for r in receiver.requests), "a page")
        text = next(_text(r) for r in receiver.requests if "水贝社区" in _text(r))
        assert "社区主机离线" in text and "水贝社区 ☎ 0755-25500001" in text
        async with aiohttp.ClientSession() as http:
            async with http.post(_link(text), data={"action": "ack"}) as answer:
                assert answer.status == 200
            assert running.control is not None
            async with http.get(f"{running.control.url}/readyz") as answer:
                assert answer.status == 200
            async with http.get(f"{running.control.url}/metrics") as answer:
                metrics = await answer.text()
            assert 'sentinel_district_community_online{community="shuibei"} 0' in metrics
        found = running.incidents.incident(inc.id)
        assert found is not None and found.status == Status.ACKNOWLEDGED
        assert found.acknowledged_by == "so-01"
        # `sentinel status` on the district file: the communities, the dark one first with
        # its duty phone (not a fleet of 0 devices).
        config = tmp_path / "district" / "district.toml"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        done = await asyncio.to_thread(sentinel, "status", "-c", str(config), env=env)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith("街道 2 个社区") and "设备" not in done.stdout
        assert lines[1].startswith("  水贝社区 (shuibei): 离线"), done.stdout
        assert "值班电话 0755-25500001" in lines[2]
        assert "街道自身未关闭事件: 严重 1" in done.stdout
        # Back online: resolved.
        box.heartbeat()
        await until(lambda: f"{BOX_OFFLINE}:shuibei" not in book.open, "resolved")
    finally:
        box.close()


async def test_whistle_pages_and_resolves_when_the_box_acknowledges(
        district: tuple[Mosquitto, District], receiver: HttpReceiver) -> None:
    broker, running = district
    box = Box(broker.port)
    try:
        box.heartbeat(last_seq=2)
        box_id = "20260101-0003"
        state = {"id": box_id, "name": "smoke_alarm", "kind": "smoke", "status": "firing",
                 "severity": "critical", "life_safety": True, "opened_at": time.time(),
                 "updated_at": time.time(), "place": {"building": "5栋"}}
        box.send(f"{wire.INCIDENTS}/{box_id}", state, retain=True)
        box.send(wire.EVENTS, {"seq": 1, "incident": box_id, "type": "opened",
                               "ts": time.time(), "severity": "critical", "status": "firing"})
        box.send(wire.EVENTS, {"seq": 2, "incident": box_id, "type": "escalation_step",
                               "ts": time.time(), "severity": "critical", "status": "firing",
                               "roles": ["street_office"], "step": 2})
        book = running.incidents.book
        assert book is not None
        await until(lambda: f"{WHISTLE}:shuibei/{box_id}" in book.open, "the whistle")
        assert book.open[f"{WHISTLE}:shuibei/{box_id}"].life_safety
        await until(lambda: any("吹哨" in _text(r) for r in receiver.requests), "its page")
        text = next(_text(r) for r in receiver.requests if "吹哨" in _text(r))
        assert "水贝社区" in text and "5栋" in text
        state.update(status="acknowledged", updated_at=time.time() + 1)
        box.send(f"{wire.INCIDENTS}/{box_id}", state, retain=True)
        box.send(wire.EVENTS, {"seq": 3, "incident": box_id, "type": "acknowledged",
                               "ts": time.time(), "severity": "critical",
                               "status": "acknowledged", "actor": "gw-01"})
        await until(lambda: f"{WHISTLE}:shuibei/{box_id}" not in book.open, "resolved")
        assert running.mirror.records["shuibei"].in_order == 3
    finally:
        box.close()


class Commands:
    """The box's command topic, as its bridge brings it down; answers `ack` like a box."""

    def __init__(self, port: int, community: str = "shuibei", answer: bool = True) -> None:
        self.received: list[wire.Command] = []
        self.answer = answer
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cmd-{community}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(wire.topic(PREFIX, community, wire.COMMANDS), qos=1)
        self.client.loop_start()
        self.community = community

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        command = wire.verify_command(KEY.encode(), self.community, msg.payload, time.time())
        self.received.append(command)
        if self.answer:
            client.publish(wire.topic(PREFIX, self.community, wire.REPLIES),
                           wire.reply(command.id, True, incident=command.fields["incident"],
                                      acknowledged_by=command.fields["actor"]), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _whistle_state(box: Box, box_id: str, status: str, seq: int) -> dict[str, Any]:
    state = {"id": box_id, "name": "smoke_alarm", "kind": "smoke", "status": status,
             "severity": "critical", "life_safety": True, "opened_at": time.time(),
             "updated_at": time.time() + seq, "place": {"building": "5栋"}}
    if status == "acknowledged":
        state.update(acknowledged_by="district:so-01", acknowledged_at=time.time())
    box.send(f"{wire.INCIDENTS}/{box_id}", state, retain=True)
    return state


async def test_closing_a_whistle_acknowledges_the_box_alarm_once_and_never_rewhistles(
        district: tuple[Mosquitto, District], receiver: HttpReceiver) -> None:
    broker, running = district
    box = Box(broker.port)
    commands = Commands(broker.port)
    try:
        box.heartbeat(last_seq=2)
        box_id = "20260101-0003"
        _whistle_state(box, box_id, "firing", 0)
        box.send(wire.EVENTS, {"seq": 1, "incident": box_id, "type": "opened",
                               "ts": time.time(), "severity": "critical", "status": "firing"})
        box.send(wire.EVENTS, {"seq": 2, "incident": box_id, "type": "escalation_step",
                               "ts": time.time(), "severity": "critical", "status": "firing",
                               "roles": ["street_office"], "step": 2})
        book = running.incidents.book
        assert book is not None
        key = f"{WHISTLE}:shuibei/{box_id}"
        await until(lambda: key in book.open, "the whistle")
        whistle = book.open[key]
        assert whistle.id.startswith("D")
        # Which community, what alarm, its id on the box: in the place and the page.
        assert whistle.place["compound"] == "水贝社区"
        assert "烟感报警" in whistle.place["location"] and box_id in whistle.place["location"]
        await until(lambda: any("吹哨" in _text(r) for r in receiver.requests), "its page")
        text = next(_text(r) for r in receiver.requests if "吹哨" in _text(r))
        assert "吹哨: 烟感报警无人确认" in text and "水贝社区" in text and box_id in text
        # The street officer takes the whistle by its link (我去处理)...
        async with aiohttp.ClientSession() as http:
            async with http.post(_link(text), data={"action": "take"}) as answer:
                assert answer.status == 200
            # ...which acknowledges the box's alarm on the box, as that person: one
            # command for the take (its acknowledgement and assignment are one act).
            await until(lambda: commands.received, "the ack command")
            await asyncio.sleep(0.3)
            assert len(commands.received) == 1
            command = commands.received[0]
            assert command.type == "ack" and command.fields["incident"] == box_id
            assert command.fields["actor"] == "district:so-01"
            assert command.fields["name"] == "朱洁"
            assert command.id.startswith(f"whistle-{whistle.id}-")
            # ...then closes it.
            async with http.post(_link(text), data={"action": "resolve",
                                                    "outcome": "handled"}) as answer:
                assert answer.status == 200
        assert key not in book.open
        # The box's alarm is still firing in the mirror for a moment: no new whistle.
        await asyncio.sleep(1.0)
        assert key not in book.open
        assert len({c.id for c in commands.received}) == len(commands.received) <= 2
        # The box's acknowledgement arrives; it expires later and the climb reaches the
        # street office anew: that is a new whistle.
        _whistle_state(box, box_id, "acknowledged", 3)
        box.send(wire.EVENTS, {"seq": 3, "incident": box_id, "type": "acknowledged",
                               "ts": time.time(), "severity": "critical",
                               "status": "acknowledged", "actor": "district:so-01"})
        await asyncio.sleep(0.5)
        assert key not in book.open
        _whistle_state(box, box_id, "firing", 4)
        box.send(wire.EVENTS, {"seq": 4, "incident": box_id, "type": "escalation_step",
                               "ts": time.time(), "severity": "critical", "status": "firing",
                               "roles": ["street_office"], "step": 2})
        await until(lambda: key in book.open, "a new whistle for the new climb")
        assert book.open[key].id != whistle.id
    finally:
        commands.close()
        box.close()


async def test_a_whistle_ended_on_the_box_names_who_acknowledged_it(
        district: tuple[Mosquitto, District], receiver: HttpReceiver) -> None:
    broker, running = district
    box = Box(broker.port)
    try:
        box.heartbeat(last_seq=2)
        box_id = "20260101-0004"
        _whistle_state(box, box_id, "firing", 0)
        box.send(wire.EVENTS, {"seq": 1, "incident": box_id, "type": "opened",
                               "ts": time.time(), "severity": "critical", "status": "firing"})
        box.send(wire.EVENTS, {"seq": 2, "incident": box_id, "type": "escalation_step",
                               "ts": time.time(), "severity": "critical", "status": "firing",
                               "roles": ["street_office"], "step": 2})
        book = running.incidents.book
        assert book is not None
        key = f"{WHISTLE}:shuibei/{box_id}"
        await until(lambda: key in book.open, "the whistle")
        _whistle_state(box, box_id, "acknowledged", 3)
        box.send(wire.EVENTS, {"seq": 3, "incident": box_id, "type": "acknowledged",
                               "ts": time.time(), "severity": "critical",
                               "status": "acknowledged", "actor": "district:so-01"})
        await until(lambda: key not in book.open, "resolved")
        await until(lambda: any("已解决" in _text(r) for r in receiver.requests), "notice")
        text = next(_text(r) for r in receiver.requests if "已解决" in _text(r))
        assert "社区告警已由 朱洁 (街道)" in text and "确认" in text, text
        assert "系统" not in text and "已恢复正常" not in text, text
    finally:
        box.close()


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sentinel", "district", "-c",
                                 str(config)], env=env, stdout=out, stderr=out, cwd=ROOT)
    deadline = time.monotonic() + 20
    while b'"district_ready"' not in log.read_bytes()[offset:]:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    return proc


def _mirrored(db: Path) -> list[int]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=5)
    try:
        return [s for (s,) in conn.execute(
            "SELECT seq FROM mirror_events WHERE community = 'shuibei' ORDER BY seq")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_kill_9_during_a_burst_then_every_event_once(tmp_path: Path,
                                                     receiver: HttpReceiver) -> None:
    total = 3000
    # The district broker keeps every queued message of the daemon's session.
    with Mosquitto(tmp_path / "broker", extra_config=["max_queued_messages 0"]) as broker:
        config = write_config(tmp_path / "district", broker.port, receiver.url("json"),
                              free_port())
        log = tmp_path / "district.log"
        db = tmp_path / "district" / "state" / "mirror.sqlite3"
        proc = _start(config, log)
        box = Box(broker.port)
        try:
            done = threading.Event()

            def burst() -> None:
                infos = [box.send(wire.EVENTS, {"seq": seq, "incident": "20260101-0009",
                                                "type": "repeated", "ts": 1.0 + seq,
                                                "severity": "warning", "status": "firing"})
                         for seq in range(1, total + 1)]
                for info in infos:
                    info.wait_for_publish(30)
                done.set()

            sender = threading.Thread(target=burst)
            sender.start()
            deadline = time.monotonic() + 20
            while len(_mirrored(db)) < 200:
                assert time.monotonic() < deadline, "nothing mirrored"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert len(_mirrored(db)) < total, "the burst ended before the kill"
            sender.join(30)
            assert done.is_set()
            proc = _start(config, log)
            deadline = time.monotonic() + 30
            while len(_mirrored(db)) < total:
                assert time.monotonic() < deadline, f"{len(_mirrored(db))} of {total}"
                time.sleep(0.05)
            assert _mirrored(db) == list(range(1, total + 1))
            conn = sqlite3.connect(db)
            try:
                in_order = conn.execute("SELECT in_order FROM mirror_communities WHERE"
                                        " community = 'shuibei'").fetchone()
            finally:
                conn.close()
            assert in_order is not None
            # Committed with its batch; the position of the last batch follows it.
            deadline = time.monotonic() + 5
            while in_order[0] != total and time.monotonic() < deadline:
                time.sleep(0.05)
                conn = sqlite3.connect(db)
                in_order = conn.execute("SELECT in_order FROM mirror_communities WHERE"
                                        " community = 'shuibei'").fetchone()
                conn.close()
            assert in_order[0] == total
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            box.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


async def test_aggregates_reach_the_tsdb_and_the_shipped_example_loads(
        tmp_path: Path, receiver: HttpReceiver, victoria: VictoriaMetrics) -> None:
    shipped = load_district(ROOT / "config" / "district.toml", {})
    assert [c.id for c in district_settings(shipped).community] == ["shuibei", "tianbei"]
    with Mosquitto(tmp_path / "broker") as broker:
        config = write_config(tmp_path / "district", broker.port, receiver.url("json"),
                              free_port(), extra=f"""
[store.influxdb]
url = "{victoria.url}"
""")
        async with started(config):
            box = Box(broker.port)
            try:
                now_ms = int(time.time() * 1000)
                lines = "\n".join(
                    f"smoke,community=shuibei,device=s{n},kind=smoke battery_min=8{n}i,"
                    f"battery_mean=8{n}.5 {now_ms}" for n in range(3))
                box.send(wire.AGGREGATES, lines.encode()).wait_for_publish(5)
                points = await asyncio.to_thread(victoria.wait_for_points, "smoke", 3,
                                                 timeout=15, key_label="device")
                assert {device for device, _ in points} == {"s0", "s1", "s2"}
            finally:
                box.close()


def test_district_toml_refuses_box_keys_and_a_community_without_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "d", 1883, "json://127.0.0.1:9/x", 8740)
    text = config.read_text()
    config.write_text(text.replace("offline_after = 3", "offline_after = 3\ncommunity = \"x\""))
    with pytest.raises(ConfigError) as found:
        load_district(config, {})
    assert "a box's [district] setting" in str(found.value.problems)
    config.write_text(text.replace('command_key_file = "tianbei.key"', ""))
    with pytest.raises(ConfigError) as found:
        load_district(config, {})
    assert [p.entry for p in found.value.problems] == ["community tianbei"]
    # Or the key in the environment.
    loaded = load_district(config, {
        "SENTINEL_COMMUNITY_TIANBEI_COMMAND_KEY": "tianbei-command-key-0123456789"})
    assert loaded.settings.state_dir == (tmp_path / "d" / "state").resolve()


def test_sentinel_district_check_reads_the_shipped_example_and_reports_problems(
        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    done = sentinel("district", "-c", str(ROOT / "config" / "district.toml"), "--check",
                    env=env)
    assert done.returncode == 0, done.stderr
    assert "值班: 3 名联系人" in done.stdout
    broken = write_config(tmp_path / "d", 1883, "json://127.0.0.1:9/x", 8740)
    (tmp_path / "d" / "tianbei.key").write_text("short\n")
    done = sentinel("district", "-c", str(broken), "--check", env=env)
    assert done.returncode == 2
    assert "community tianbei" in done.stderr and "16 bytes" in done.stderr


def test_box_commands_read_a_district_file_as_the_district(tmp_path: Path) -> None:
    """`sentinel run` refuses a district file (it would start a box without devices), and
    the read-only commands read it with the district's loader instead of failing on
    [[community]]."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env["SENTINEL_STATE_DIR"] = str(tmp_path / "state")
    config = str(ROOT / "config" / "district.toml")
    done = sentinel("run", "-c", config, env=env)
    assert done.returncode == 2
    assert "sentinel district -c" in done.stderr
    done = sentinel("check", "-c", config, env=env)
    assert done.returncode == 0, done.stderr
    assert "值班: 3 名联系人" in done.stdout
