"""The box's uplink to its district: heartbeat, last will and the district's commands, on
the daemon's one MQTT connection. The daemon runs in this process against a real
mosquitto; a small in-test "district" signs commands (sentinel.district.wire) and reads
the box's replies, as the district daemon would through its own broker.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.app import run_daemon
from sentinel.decode.encode import encode
from sentinel.district import wire
from sentinel.incidents.store import read_events, read_incidents
from sentinel.loading import Loaded
from sentinel.metrics import DaemonMetrics
from sentinel.notify.channels import actor_name
from sentinel.runtime import Daemon
from test_clock_steps import smoke_alarm, wait_for, write_policies

from daemon import LOADED, DaemonProcess, Publisher, write_oncall
from receivers import HttpReceiver
from servers import Mosquitto
from test_metrics import load

KEY = "district-command-key-0123456789"
COMMUNITY = "sb"
PUBLIC = "https://district.example"
OFFICER_AFTER = 4.0


class District:
    """The district's side of one community's topics, on the box's own broker."""

    def __init__(self, port: int, community: str = COMMUNITY) -> None:
        self.community = community
        self.messages: dict[str, list[tuple[bytes, bool]]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="district-test")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"sentinel/{community}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        leaf = msg.topic.split("/", 2)[2]
        with self._lock:
            self.messages.setdefault(leaf, []).append((bytes(msg.payload), bool(msg.retain)))

    def of(self, leaf: str) -> list[bytes]:
        with self._lock:
            return [p for p, _ in self.messages.get(leaf, [])]

    def heartbeats(self) -> list[wire.Heartbeat]:
        return [wire.Heartbeat.parse(p) for p in self.of("heartbeat") if p]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.of("events")]

    def send(self, type_: wire.CommandType, fields: dict[str, Any], *, ttl: float = 60.0,
             community: str | None = None, key: str = KEY, now: float | None = None,
             command_id: str | None = None) -> str:
        command_id, payload = wire.sign_command(
            key.encode(), community or self.community, type_, fields,
            time.time() if now is None else now, ttl, command_id)
        topic = f"sentinel/{self.community}/commands"
        self.client.publish(topic, payload, qos=1).wait_for_publish()
        return command_id

    def send_raw(self, payload: bytes) -> None:
        self.client.publish(f"sentinel/{self.community}/commands", payload, qos=1)

    def replies(self, command_id: str) -> list[dict[str, Any]]:
        found = [wire.parse_reply(p) for p in self.of("replies")]
        return [r for r in found if r["id"] == command_id]

    async def reply(self, command_id: str, within: float = 10.0, count: int = 1
                    ) -> dict[str, Any]:
        await wait_for(lambda: len(self.replies(command_id)) >= count, within)
        return self.replies(command_id)[count - 1]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def district_overrides(**more: str) -> dict[str, str]:
    return {"district__community": COMMUNITY, "district__command_key": KEY,
            "district__heartbeat_interval": "1", "district__public_url": PUBLIC,
            "control__enabled": "true", "control__http": "false", **more}


@asynccontextmanager
async def box(loaded: Loaded) -> AsyncIterator[Daemon]:
    stop = asyncio.Event()
    ready: asyncio.Future[Daemon] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_daemon(loaded, stop, on_ready=ready.set_result))
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=20,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        yield await ready
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def oncall_on(tmp_path: Path, hooks: HttpReceiver) -> Path:
    return write_oncall(tmp_path / "contacts.yaml", {
        c.id: [hooks.url("json", f"/{c.id}")] for c in LOADED.oncall.contact})


async def test_heartbeat_counts_and_clean_stop(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A retained heartbeat every interval with the open/unacknowledged counts and the
    oldest unacknowledged life-safety incident; events under the configured community;
    `stopped` (retained) on a clean stop."""
    district = District(mosquitto.port)
    device = LOADED.inventory["SB-SMK-0001"]
    with HttpReceiver() as hooks:
        loaded = load(tmp_path, mosquitto.port, hooks.url("json", "/unused"),
                      escalation__policies=str(write_policies(tmp_path / "steps.toml")),
                      escalation__oncall=str(oncall_on(tmp_path, hooks)),
                      **district_overrides())
        async with box(loaded):
            await wait_for(lambda: any(h.state == "online" for h in district.heartbeats()), 5)
            first = district.heartbeats()[0]
            assert first.community == COMMUNITY and first.devices == len(LOADED.inventory)
            assert first.version and first.interval == 1.0 and first.name
            publisher = Publisher(mosquitto.port)
            for topic, payload in smoke_alarm(device, time.time()):
                publisher.publish(topic, payload)
            publisher.close()
            await wait_for(lambda: any(h.life_safety_unacknowledged
                                       for h in district.heartbeats()), 5)
            beat = next(h for h in district.heartbeats() if h.life_safety_unacknowledged)
            assert beat.open >= 1 and beat.unacknowledged >= 1
            assert beat.oldest_unacknowledged is not None
            assert beat.oldest_unacknowledged["name"] == "smoke_alarm"
            # The events went out under the box's community id, not the place's name.
            await wait_for(lambda: any(h.last_seq > 0 for h in district.heartbeats()), 5)
            events = district.events()
            assert events and events == sorted(events, key=lambda e: e["seq"])
            assert max(h.last_seq for h in district.heartbeats()) <= events[-1]["seq"]
            # The state database's id on events and heartbeats alike: the district tells a
            # reinstalled box (seqs from 1 again) by it.
            instance = first.extra["box"]
            assert re.fullmatch(r"[0-9a-f]{16}", instance)
            assert {e["box"] for e in events} == {instance}
            beats = len(district.heartbeats())
            await asyncio.sleep(2.2)
            assert len(district.heartbeats()) >= beats + 2  # one a second
        # A clean stop: the last retained state is `stopped`, not the will.
        await wait_for(lambda: district.heartbeats()[-1].state == "stopped", 5)
    district.close()
    late = District(mosquitto.port)  # a district that connects later sees the retained one
    await wait_for(lambda: bool(late.heartbeats()), 5)
    assert late.heartbeats()[0].state == "stopped"
    late.close()


def test_a_killed_daemon_leaves_its_will(mosquitto: Mosquitto, tmp_path: Path,
                                         daemons: list[DaemonProcess]) -> None:
    """kill -9: the broker publishes the daemon's last will, `offline`, retained."""
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port,
                           DISTRICT__COMMUNITY=COMMUNITY, DISTRICT__HEARTBEAT_INTERVAL="1",
                           DISTRICT__COMMAND_KEY=KEY, MQTT__KEEPALIVE="5").start()
    daemons.append(daemon)
    district = District(mosquitto.port)
    deadline = time.monotonic() + 5
    while not any(h.state == "online" for h in district.heartbeats()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    daemon.kill()
    deadline = time.monotonic() + 5
    while district.heartbeats()[-1].state != "offline":
        assert time.monotonic() < deadline, district.heartbeats()[-1]
        time.sleep(0.05)
    district.close()
    late = District(mosquitto.port)
    deadline = time.monotonic() + 5
    while not late.heartbeats():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert late.heartbeats()[0].state == "offline"
    late.close()


def officer_pages(hooks: HttpReceiver) -> list[Any]:
    return [r for r in hooks.requests if r.path.startswith("/do-") and b"SB-SMK-0001" in r.body]


async def test_district_commands_act_once_and_relay_links(mosquitto: Mosquitto,
                                                          tmp_path: Path) -> None:
    """Forged, foreign and expired commands are refused with a reply; an ack from the
    district acknowledges through the person's path (the climb stops), named; the same id
    again is answered, not executed, also after a restart; a note; a resync; and a link
    from a page (pointing at the district) relayed to the box's control socket."""
    district = District(mosquitto.port)
    device = LOADED.inventory["SB-SMK-0001"]
    with HttpReceiver() as hooks:
        loaded = load(tmp_path, mosquitto.port, hooks.url("json", "/unused"),
                      escalation__policies=str(write_policies(tmp_path / "steps.toml")),
                      escalation__oncall=str(oncall_on(tmp_path, hooks)),
                      **district_overrides())
        db = loaded.settings.incidents.path
        async with box(loaded) as daemon:
            await wait_for(lambda: bool(district.heartbeats()), 5)
            # Refusals, each answered with its reason.
            forged = district.send("ack", {"incident": "x"}, key="another-key-0123456789abcdef")
            foreign = district.send("ack", {"incident": "x"}, community="elsewhere")
            old = district.send("ack", {"incident": "x"}, now=time.time() - 120, ttl=60)
            district.send_raw(b"not a command at all")
            for command_id, reason in ((forged, "forged"), (foreign, "community"),
                                       (old, "expired")):
                refused = await district.reply(command_id)
                assert refused["ok"] is False and refused["error"] == reason, refused
            # ... and counted where an operator looks.
            text = DaemonMetrics(daemon).render()[0].decode()
            for reason in ("forged", "community", "expired"):
                assert f'sentinel_district_commands_refused_total{{reason="{reason}"}} 1.0' \
                    in text, text

            alarm_at = time.time()
            publisher = Publisher(mosquitto.port)
            for topic, payload in smoke_alarm(device, alarm_at):
                publisher.publish(topic, payload)
            publisher.close()
            await wait_for(lambda: bool(hooks.requests), 10)
            [incident] = [i for i in read_incidents(db) if i.name == "smoke_alarm"]
            # The page's one-tap link points at the district, which relays it here.
            found = re.search(rb"https://district\.example/c/sb/a/([A-Za-z0-9_.\-]+)",
                              hooks.requests[0].body)
            assert found is not None, hooks.requests[0].body[:2000]
            token = found.group(1).decode()

            fields = {"incident": incident.id, "actor": "district:p7", "name": "王五"}
            acked = district.send("ack", fields)
            answer = await district.reply(acked)
            assert answer["ok"] is True and answer["already"] is False, answer
            assert answer["acknowledged_by"] == "district:p7"
            [event] = [e for e in read_events(db, incident_id=incident.id)
                       if e.type == "acknowledged"]
            assert event.actor == "district:p7" and event.data["name"] == "王五"
            assert actor_name("district:p7", {}, "zh") == "街道·王五"
            assert actor_name("district:p7", {}, "en") == "street office: 王五"
            # The district sends the same command again (it did not hear the reply).
            district.send("ack", fields, command_id=acked)
            again = await district.reply(acked, count=2)
            assert again["replayed"] is True and again["ok"] is True
            assert len([e for e in read_events(db, incident_id=incident.id)
                        if e.type == "acknowledged"]) == 1

            noted = district.send("note", {**fields, "text": "已电话联系住户"})
            assert (await district.reply(noted))["ok"] is True
            [note] = [e for e in read_events(db, incident_id=incident.id) if e.type == "noted"]
            assert note.actor == "district:p7" and note.data["text"] == "已电话联系住户"

            # The relayed link: the box's own page, headers and all.
            shown = await district.reply(district.send(
                "http", {"method": "GET", "path": f"/a/{token}", "body": ""}, ttl=10))
            assert shown["ok"] and shown["status"] == 200, shown
            assert shown["content_type"].startswith("text/html")
            assert "Content-Security-Policy" in shown["headers"]
            assert incident.id.encode() in shown["body"] or b"<html" in shown["body"]
            form = base64.b64encode(b"action=ack").decode()
            post = {"method": "POST", "path": f"/a/{token}",
                    "content_type": "application/x-www-form-urlencoded", "body": form}
            tapped = await district.reply(district.send("http", post, ttl=10))
            assert tapped["status"] == 200, tapped["body"][:500]
            used = await district.reply(district.send("http", post, ttl=10))
            assert used["status"] == 410  # the box's "already used" page
            bad = await district.reply(district.send(
                "http", {"method": "GET", "path": f"/a/{token[:-4]}AAAA", "body": ""}, ttl=10))
            assert bad["status"] == 403  # the box's refusal: the district holds no link key
            elsewhere = await district.reply(district.send(
                "http", {"method": "GET", "path": "/api/incidents", "body": ""}, ttl=10))
            assert elsewhere["ok"] is False and elsewhere["error"] == "bad_request"

            # A gap at the district: the events after 0 again, in order.
            before = len(district.events())
            resync = await district.reply(district.send("resync", {"after": 0}))
            assert resync["ok"] and resync["count"] >= 3, resync
            await wait_for(lambda: len(district.events()) >= before + resync["count"], 5)
            again_seqs = [e["seq"] for e in district.events()[before:]]
            assert again_seqs == sorted(again_seqs) and again_seqs[0] == 1

            # The district's acknowledgement stopped the climb: no duty officer page.
            await asyncio.sleep(max(0.0, alarm_at + OFFICER_AFTER + 1.0 - time.time()))
            assert not officer_pages(hooks)
        # Seen ids are durable: after a restart the same command is answered, not redone.
        async with box(loaded):
            district.send("ack", fields, command_id=acked)
            third = await district.reply(acked, count=3)
            assert third["replayed"] is True
    district.close()


async def test_one_minute_aggregates_per_device(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """[district] aggregates: a finished minute's readings of each device, as min, max,
    mean and count per numeric field in line protocol, tagged community, device, kind."""
    district = District(mosquitto.port)
    devices = [d for d in LOADED.inventory.values()
               if d.kind == "hydrant_pressure" and d.profile == "sentinel-json"][:2]
    assert len(devices) == 2
    with HttpReceiver() as hooks:
        loaded = load(tmp_path, mosquitto.port, hooks.url("json", "/unused"),
                      **district_overrides(district__aggregates="true"))
        async with box(loaded):
            # A minute that is over: its aggregates go out within seconds.
            minute = (time.time() // 60 - 3) * 60
            publisher = Publisher(mosquitto.port)
            for device, pressures in zip(devices, ([0.30, 0.34, 0.38], [0.5]), strict=True):
                for n, pressure in enumerate(pressures):
                    for topic, payload in encode(
                            LOADED.profiles[device.profile], device,
                            {"pressure": pressure, "battery_voltage": 3.6, "fault": False},
                            minute + 10 * n + 1, LOADED.kinds):
                        publisher.publish(topic, payload)
            publisher.close()
            await wait_for(lambda: len(b"\n".join(district.of("aggregates")).splitlines())
                           >= 2, 10)
        lines = b"\n".join(district.of("aggregates")).decode().splitlines()
    district.close()
    by_device = {}
    for line in lines:
        head, fields, ts = line.split(" ")
        tags = dict(part.split("=", 1) for part in head.split(",")[1:])
        assert head.split(",")[0] == "hydrant_pressure" and tags["community"] == COMMUNITY
        assert tags["kind"] == "hydrant_pressure" and int(ts) == int(minute * 1000)
        by_device[tags["device"]] = dict(f.split("=", 1) for f in fields.split(","))
    first = by_device[devices[0].id]
    assert float(first["pressure_min"]) == 0.30 and float(first["pressure_max"]) == 0.38
    assert abs(float(first["pressure_mean"]) - 0.34) < 1e-9
    assert first["pressure_count"] == "3i" and "fault_min" not in first  # numbers only
    assert by_device[devices[1].id]["pressure_count"] == "1i"
