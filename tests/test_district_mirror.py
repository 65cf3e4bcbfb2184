"""The district's mirror against a real mosquitto: every box's events once and in seq order,
gaps asked for with a signed resync command that a small in-test box answers, incident
states where the newest wins, unknown communities left out, bad payloads dead-lettered."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.clock import SystemClock
from sentinel.config.model import MqttSettings
from sentinel.district import wire
from sentinel.district.commands import CommandChannel
from sentinel.district.config import Community
from sentinel.district.mirror import Mirror, mirror_db
from sentinel.source import MqttSource

from servers import Mosquitto

PREFIX = "sentinel"
KEY = b"shuibei-command-key-0123456789"
COMMUNITIES = {"shuibei": Community(id="shuibei", name="水贝社区", phone="0755-1")}


def event(seq: int, incident: str = "20260101-0001", type_: str = "opened") -> bytes:
    return json.dumps({"seq": seq, "incident": incident, "type": type_, "ts": 1_000 + seq,
                       "actor": "sentinel", "severity": "critical",
                       "status": "firing"}).encode()


class Client:
    """A paho client on its own thread: publishes at QoS 1, optionally answers commands."""

    def __init__(self, port: int, name: str,
                 on_message: Callable[[mqtt.Client, str, bytes], None] | None = None,
                 subscribe: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
        self._subscribed = threading.Event()
        if on_message is not None:
            self.client.on_message = lambda c, _u, m: on_message(c, m.topic, m.payload)
        if subscribe is not None:
            self.client.on_connect = lambda c, *_: c.subscribe(subscribe, qos=1)
            self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if subscribe is not None:
            assert self._subscribed.wait(5)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Running:
    def __init__(self, mirror: Mirror, source: MqttSource, db_path: Path) -> None:
        self.mirror, self.source, self.db_path = mirror, source, db_path
        self.replies: list[tuple[str, bytes]] = []

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db_path)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()


async def until(predicate: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Mosquitto, Running]]:
    with Mosquitto(tmp_path / "broker") as broker:
        clock = SystemClock()
        db = mirror_db(tmp_path / "mirror.sqlite3")
        await db.open()
        settings = MqttSettings(host="127.0.0.1", port=broker.port, client_id="district-test")
        mirror = Mirror(db, COMMUNITIES, PREFIX, clock, resync_after=0.2,
                        resync_interval=0.5, aggregates=True)
        await mirror.start()
        async with MqttSource(settings, mirror.topics(), None, 1000, clock.now) as source:
            rig = Running(mirror, source, tmp_path / "mirror.sqlite3")
            # The daemon's channel (sentinel.district.service.wire_district); replies are
            # kept by the test as well as handed to it.
            channel = CommandChannel(source.start_publish, PREFIX, {"shuibei": KEY}, clock)

            async def resync(community: str, after: int) -> None:
                await channel.send(community, "resync", {"after": after}, 30.0, 5.0)

            def on_reply(community: str, payload: bytes) -> None:
                rig.replies.append((community, payload))
                channel.on_reply(community, payload)

            mirror.resync = resync
            mirror.on_reply = on_reply

            async def gaps() -> None:
                while True:
                    await asyncio.sleep(0.05)
                    mirror.check_gaps()

            tasks = [asyncio.create_task(source.run()), asyncio.create_task(mirror.run(source)),
                     asyncio.create_task(gaps())]
            await source.wait_connected()
            await asyncio.sleep(0.1)  # subscriptions in place
            try:
                yield broker, rig
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        await db.close()


async def test_events_once_in_order_and_a_gap_is_resynced(
        running: tuple[Mosquitto, Running]) -> None:
    broker, rig = running
    events_topic = wire.topic(PREFIX, "shuibei", wire.EVENTS)
    commands: list[wire.Command] = []

    # The box: verifies the district's command and republishes what it asks for.
    def answer(client: mqtt.Client, topic: str, payload: bytes) -> None:
        command = wire.verify_command(KEY, "shuibei", payload, time.time())
        commands.append(command)
        after = int(command.fields["after"])
        for seq in range(after + 1, 10):
            client.publish(events_topic, event(seq), qos=1)
        client.publish(wire.topic(PREFIX, "shuibei", wire.REPLIES),
                       wire.reply(command.id, True), qos=1)

    box = Client(broker.port, "box", answer, wire.topic(PREFIX, "shuibei", wire.COMMANDS))
    try:
        started = time.monotonic()
        for seq in (1, 2, 3, 4, 5, 3, 8):
            box.publish(events_topic, event(seq))
        box.publish(wire.topic(PREFIX, "shuibei", wire.HEARTBEAT),
                    wire.Heartbeat("online", "shuibei", ts=time.time(), last_seq=9).payload(),
                    retain=True)
        record = rig.mirror.records["shuibei"]
        await until(lambda: record.in_order == 9, "the gap filled by a resync")
        assert time.monotonic() - started < 5
        # The first resync asked from the last event in order; the box's answer repeated
        # 8 (already here): stored once.
        assert commands[0].type == "resync" and commands[0].fields == {"after": 5}
        assert record.missing == 0 and not record.ahead
        seqs = [r[0] for r in rig.rows("SELECT seq FROM mirror_events WHERE community = ?"
                                       " ORDER BY seq", "shuibei")]
        assert seqs == list(range(1, 10))
        timeline = await rig.mirror.timeline("shuibei", "20260101-0001")
        assert [e["seq"] for e in timeline] == list(range(1, 10))
        assert rig.mirror.stats.duplicates >= 2
        await until(lambda: len(rig.replies) >= 1, "the box's reply handed on")
        assert rig.replies[0][0] == "shuibei"
        assert wire.parse_reply(rig.replies[0][1])["id"] == commands[0].id
        assert rig.rows("SELECT in_order FROM mirror_communities")[0][0] == 9
        state = await rig.mirror.community("shuibei")
        assert state is not None and state.last_seq == 9 and state.missing == 0
    finally:
        box.close()


async def test_incident_states_unknown_communities_and_dead_letters(
        running: tuple[Mosquitto, Running]) -> None:
    broker, rig = running
    box = Client(broker.port, "box")
    topic = wire.topic(PREFIX, "shuibei", f"{wire.INCIDENTS}/20260101-0002")

    def state(status: str, updated: float) -> bytes:
        return json.dumps({"id": "20260101-0002", "name": "gas_leak", "status": status,
                           "severity": "critical", "life_safety": True,
                           "opened_at": 100.0, "updated_at": updated}).encode()

    try:
        box.publish(topic, state("acknowledged", 200.0), retain=True)
        box.publish(topic, state("firing", 150.0))  # older, late: loses
        box.publish(wire.topic(PREFIX, "elsewhere", wire.EVENTS), event(1))
        box.publish(wire.topic(PREFIX, "elsewhere", wire.EVENTS), event(2))
        box.publish(wire.topic(PREFIX, "shuibei", wire.EVENTS), b"{not json")
        box.publish(wire.topic(PREFIX, "shuibei", wire.EVENTS), b'{"seq": "x"}')
        box.publish(wire.topic(PREFIX, "shuibei", wire.HEARTBEAT), b'{"state": "dancing"}')
        box.publish(wire.topic(PREFIX, "shuibei", wire.BRIDGE), b"maybe")
        box.publish(wire.topic(PREFIX, "shuibei", wire.AGGREGATES),
                    b"smoke,community=shuibei,device=s1 battery_min=80 1700000000000\n")
        box.publish(topic, state("resolved", 300.0))
        box.publish(topic, b"", retain=True)  # the retained state cleared: not an error
        await until(lambda: rig.mirror.stats.messages >= 11, "every message consumed")
        await until(lambda: not rig.mirror.aggregates.empty(), "aggregates queued")
        assert rig.mirror.aggregates.get_nowait() == [
            "smoke,community=shuibei,device=s1 battery_min=80 1700000000000"]
        found = await rig.mirror.incident("shuibei", "20260101-0002")
        assert found is not None and found["status"] == "resolved"
        assert await rig.mirror.incidents("shuibei") == []
        assert len(await rig.mirror.incidents("shuibei", open_only=False)) == 1
        assert rig.mirror.stats.unknown_community == 2
        assert rig.rows("SELECT count(*) FROM mirror_events WHERE community = 'elsewhere'"
                        ) == [(0,)]
        assert "elsewhere" not in [c.id for c in await rig.mirror.communities()]
        dead = rig.rows("SELECT topic, reason FROM deadletter ORDER BY id")
        assert [r[1] for r in dead] == ["invalid_json", "missing_field", "invalid_json",
                                        "invalid_json"]
        assert dead[0][0] == "sentinel/shuibei/events"
        assert rig.mirror.stats.dead == 4
    finally:
        box.close()


def boxed(seq: int, box: str, incident: str = "20260101-0001") -> bytes:
    return json.dumps({**json.loads(event(seq, incident)), "box": box}).encode()


async def test_a_box_whose_database_was_replaced_is_mirrored_anew(
        running: tuple[Mosquitto, Running]) -> None:
    """A reinstalled box (a new state database: its seqs start again at 1) is not taken for
    a stream of duplicates: the old database's events and incidents are archived and
    closed, the new one's are mirrored from 1, and late messages of the old one are
    dropped."""
    broker, rig = running
    events_topic = wire.topic(PREFIX, "shuibei", wire.EVENTS)
    incident_topic = wire.topic(PREFIX, "shuibei", f"{wire.INCIDENTS}/20260101-0001")
    box = Client(broker.port, "box")
    record = rig.mirror.records["shuibei"]

    def incident(box_id: str, status: str) -> bytes:
        return json.dumps({"id": "20260101-0001", "name": "smoke_alarm", "status": status,
                           "severity": "critical", "life_safety": True, "opened_at": 1.0,
                           "updated_at": 2.0, "box": box_id}).encode()

    try:
        for seq in range(1, 6):
            box.publish(events_topic, boxed(seq, "old"))
        box.publish(incident_topic, incident("old", "firing"))
        await until(lambda: record.in_order == 5, "the old database's events")
        # The box comes back with a new database: seq 1 again, a new incident of that id.
        box.publish(wire.topic(PREFIX, "shuibei", wire.HEARTBEAT),
                    wire.Heartbeat("online", "shuibei", ts=time.time(), last_seq=2,
                                   extra={"box": "new"}).payload())
        box.publish(events_topic, boxed(1, "new", "20260101-0001"))
        box.publish(events_topic, boxed(6, "old"))  # late, from before the reinstall
        box.publish(events_topic, boxed(2, "new", "20260101-0001"))
        box.publish(incident_topic, incident("new", "acknowledged"))
        await until(lambda: record.box == "new" and record.in_order == 2,
                    "the new database's events mirrored from 1")
        assert rig.mirror.stats.replaced == 1 and rig.mirror.stats.retired >= 1
        assert record.missing == 0
        current = rig.rows("SELECT seq, data FROM mirror_events WHERE community = ?"
                           " ORDER BY seq", "shuibei")
        assert [(seq, json.loads(data)["box"]) for seq, data in current] == \
            [(1, "new"), (2, "new")]
        archived = rig.rows("SELECT seq FROM mirror_events WHERE community = ? ORDER BY seq",
                            "shuibei~old")
        assert [seq for (seq,) in archived] == [1, 2, 3, 4, 5]
        await until(lambda: bool(rig.rows(
            "SELECT 1 FROM mirror_incidents WHERE community = 'shuibei'"
            " AND status = 'acknowledged'")), "the new database's incident")
        assert rig.rows("SELECT open, status FROM mirror_incidents WHERE community = ?",
                        "shuibei~old") == [(0, "firing")]
        assert rig.rows("SELECT box FROM mirror_communities") == [("new",)]
    finally:
        box.close()
