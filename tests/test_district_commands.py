"""The district's command channel against a real mosquitto: signed commands go down to a
community's topic, the box's replies come back and are matched by id.

`Box` is a small stand-in for a community box's command handler (the real one is
sentinel.uplink's): it verifies each command with `wire.verify_command` and answers with
`wire.reply` through its own MQTT connection. `District` is the district daemon's side: one
MqttSource that publishes the commands and hands every reply to `CommandChannel.on_reply`.
The relay's tests (tests/test_district_relay.py) use both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog.testing

from sentinel.clock import SystemClock
from sentinel.config.model import MqttSettings
from sentinel.district import wire
from sentinel.district.commands import ChannelBusy, CommandChannel, UnknownCommunity
from sentinel.source.mqtt import MqttSource
from sentinel.uplink.commands import _claimed_id

from servers import Mosquitto

PREFIX = "sentinel"
KEYS = {"shuibei": b"shuibei-command-key-0123456789", "huangbei": b"huangbei-command-key-012345"}
TIMEOUT = 10.0
_ids = itertools.count(1)

# What the box does with a verified command: its reply's fields (wire.reply's keywords).
Handler = Callable[[wire.Command], Awaitable[dict[str, Any] | None]]


async def accept(command: wire.Command) -> dict[str, Any] | None:
    return {"ok": True}


def settings(port: int, name: str) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=port, client_id=f"{name}-{next(_ids)}",
                        session_expiry=0)


@contextlib.asynccontextmanager
async def running(source: MqttSource, consume: Callable[[MqttSource], Awaitable[None]]
                  ) -> AsyncIterator[MqttSource]:
    """`source` connected and subscribed, with `consume` reading its messages."""
    async with source:
        tasks = [asyncio.create_task(source.run()), asyncio.create_task(consume(source))]
        try:
            async with asyncio.timeout(TIMEOUT):
                await source.wait_connected()
                await asyncio.sleep(0.05)  # the SUBACK: nothing published before is missed
            yield source
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@dataclass
class Box:
    """A community box's command handler, as the contract has it (verify, act, reply)."""

    community: str
    key: bytes
    handler: Handler = accept
    commands: list[wire.Command] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    # Published instead of the reply (a test's own reply, e.g. on another topic).
    silent: bool = False
    # Answer a refused command with its reason, addressed to the id it claims, as the real
    # box does (sentinel.uplink.commands.CommandHandler._refuse).
    answer_refusals: bool = False

    @contextlib.asynccontextmanager
    async def run(self, port: int) -> AsyncIterator[Box]:
        source = MqttSource(settings(port, f"box-{self.community}"),
                            [wire.topic(PREFIX, self.community, wire.COMMANDS)], None, 100)

        async def consume(source: MqttSource) -> None:
            while True:
                for message in await source.batch(10):
                    await self._handle(source, message.payload)
                    source.ack([message])

        async with running(source, consume):
            yield self

    async def _handle(self, source: MqttSource, payload: bytes) -> None:
        try:
            command = wire.verify_command(self.key, self.community, payload,
                                          SystemClock().now())
        except wire.CommandError as exc:
            self.refused.append(exc.reason)
            claimed = _claimed_id(payload)
            if self.answer_refusals and claimed is not None:
                await source.start_publish(wire.topic(PREFIX, self.community, wire.REPLIES),
                                           wire.reply(claimed, False, error=exc.reason))
            return
        self.commands.append(command)
        answer = await self.handler(command)
        if answer is None or self.silent:
            return
        await source.start_publish(wire.topic(PREFIX, self.community, wire.REPLIES),
                                   wire.reply(command.id, **answer))


@dataclass
class District:
    """The district daemon's MQTT side: commands out, every reply to the channel."""

    channel: CommandChannel
    source: MqttSource


@contextlib.asynccontextmanager
async def district(port: int, keys: dict[str, bytes] | None = None, max_waiting: int = 256
                   ) -> AsyncIterator[District]:
    source = MqttSource(settings(port, "district"),
                        [wire.topic(PREFIX, "+", wire.REPLIES)], None, 100)
    channel = CommandChannel(source.start_publish, PREFIX, keys or KEYS, SystemClock(),
                             max_waiting=max_waiting)

    async def consume(source: MqttSource) -> None:
        while True:
            for message in await source.batch(10):
                found = wire.community_of(PREFIX, message.topic)
                if found is not None and found[1] == wire.REPLIES:
                    channel.on_reply(found[0], message.payload)
                source.ack([message])

    async with running(source, consume):
        yield District(channel, source)


# -- tests ------------------------------------------------------------------------------


async def test_ack_goes_down_signed_and_its_reply_comes_back(mosquitto: Mosquitto) -> None:
    """An ack is signed for its community, verified by that box, and answered by id."""
    async def acked(command: wire.Command) -> dict[str, Any]:
        return {"ok": True, "status": None, "acknowledged_by": command.fields["actor"]}

    box = Box("shuibei", KEYS["shuibei"], acked)
    async with box.run(mosquitto.port), district(mosquitto.port) as d:
        fields = {"incident": "20261207-0001", "actor": "district:wang_wu", "name": "王五"}
        reply = await d.channel.send("shuibei", "ack", fields, wire.ACT_TTL, TIMEOUT)
    assert reply is not None and reply["ok"] is True
    assert reply["acknowledged_by"] == "district:wang_wu"
    [command] = box.commands
    assert (command.type, command.community, dict(command.fields)) == ("ack", "shuibei",
                                                                        fields)
    assert reply["id"] == command.id and not box.refused
    assert d.channel.counts["sent"] == 1 and d.channel.counts["replied"] == 1
    assert d.channel.waiting == 0


async def test_a_box_that_does_not_answer_gives_none_in_time(mosquitto: Mosquitto) -> None:
    """No reply within `wait`: None, counted, and nothing left waiting."""
    box = Box("shuibei", KEYS["shuibei"], silent=True)
    async with box.run(mosquitto.port), district(mosquitto.port) as d:
        started = asyncio.get_running_loop().time()
        reply = await d.channel.send("shuibei", "note", {"incident": "x", "text": "t"},
                                     wire.ACT_TTL, 0.3)
        elapsed = asyncio.get_running_loop().time() - started
        assert reply is None and 0.3 <= elapsed < 2.0
        assert d.channel.counts["timeout"] == 1 and d.channel.waiting == 0
        # The box did get it (it acts all the same); its late answer is only counted.
        await asyncio.sleep(0.1)
        assert len(box.commands) == 1
        await d.source.start_publish(wire.topic(PREFIX, "shuibei", wire.REPLIES),
                                     wire.reply(box.commands[0].id, True))
        for _ in range(100):
            if d.channel.counts["reply_late"]:
                break
            await asyncio.sleep(0.02)
        assert d.channel.counts["reply_late"] == 1


async def test_a_reply_on_another_communitys_topic_is_ignored(mosquitto: Mosquitto) -> None:
    """Only the command's own community may answer it; bad replies never break the channel."""
    seen: asyncio.Queue[wire.Command] = asyncio.Queue()

    async def hold(command: wire.Command) -> None:
        await seen.put(command)
        return None

    box = Box("shuibei", KEYS["shuibei"], hold)
    async with box.run(mosquitto.port), district(mosquitto.port) as d:
        task = asyncio.create_task(d.channel.send("shuibei", "ack", {"incident": "x"},
                                                  wire.ACT_TTL, TIMEOUT))
        command = await asyncio.wait_for(seen.get(), TIMEOUT)
        publish = d.source.start_publish
        # Another box answers (its bridge may only write its own topics: a forgery).
        await publish(wire.topic(PREFIX, "huangbei", wire.REPLIES),
                      wire.reply(command.id, False, error="forged"))
        await publish(wire.topic(PREFIX, "shuibei", wire.REPLIES), b"not json")
        await publish(wire.topic(PREFIX, "shuibei", wire.REPLIES), b'{"id": 1, "ok": "x"}')
        await publish(wire.topic(PREFIX, "shuibei", wire.REPLIES),
                      wire.reply(command.id, True, replayed=True))
        reply = await asyncio.wait_for(task, TIMEOUT)
    assert reply is not None and reply["ok"] is True and reply["replayed"] is True
    assert d.channel.counts["reply_wrong_community"] == 1
    assert d.channel.counts["reply_bad"] == 2


async def test_commands_are_signed_for_their_community_only(mosquitto: Mosquitto) -> None:
    """A box with another community's key refuses the command as forged; an unknown
    community has no key and nothing is published."""
    stranger = Box("shuibei", KEYS["huangbei"])
    async with stranger.run(mosquitto.port), district(mosquitto.port) as d:
        assert await d.channel.send("shuibei", "resync", {"after": 3}, 60, 0.3) is None
        with pytest.raises(UnknownCommunity):
            await d.channel.send("nowhere", "ack", {}, 60, 0.3)
    assert stranger.refused == ["forged"] and not stranger.commands


async def test_waiting_commands_are_bounded(mosquitto: Mosquitto) -> None:
    """At most max_waiting commands wait; one more is refused at once, and room returns."""
    release = asyncio.Event()

    async def slow(command: wire.Command) -> dict[str, Any]:
        await release.wait()
        return {"ok": True}

    box = Box("shuibei", KEYS["shuibei"], slow)
    async with box.run(mosquitto.port), district(mosquitto.port, max_waiting=2) as d:
        send = d.channel.send
        first = asyncio.create_task(send("shuibei", "ack", {"n": 1}, 60, 1.0))
        second = asyncio.create_task(send("shuibei", "ack", {"n": 2}, 60, 1.0))
        await asyncio.sleep(0.05)
        assert d.channel.waiting == 2
        with pytest.raises(ChannelBusy):
            await send("shuibei", "ack", {"n": 3}, 60, 1.0)
        assert d.channel.counts["busy"] == 1
        # Released: both are answered, and nothing stays waiting.
        release.set()
        results = await asyncio.gather(first, second)
        assert all(r is not None and r["ok"] for r in results)
        assert d.channel.waiting == 0
        assert await send("shuibei", "ack", {"n": 4}, 60, TIMEOUT) is not None


async def test_broker_down_gives_none_at_once() -> None:
    """Without the district broker the command cannot go: None at once, counted."""
    source = MqttSource(settings(1, "district"), [], None, 10)  # never connected
    channel = CommandChannel(source.start_publish, PREFIX, KEYS)
    async with asyncio.timeout(1.0):
        assert await channel.send("shuibei", "ack", {}, 60, 5.0) is None
    assert channel.counts["publish_failed"] == 1 and channel.waiting == 0
    assert "0123456789" not in repr(channel)


async def test_a_box_refusing_commands_as_forged_is_a_key_mismatch(mosquitto: Mosquitto
                                                                     ) -> None:
    """The box answers `forged` when the district signs with another key than its own: a
    configuration error, flagged per community (logged once), counted for /metrics, and
    cleared by the next command it accepts."""
    wrong = Box("shuibei", b"another-key-for-shuibei-01234", answer_refusals=True)
    async with wrong.run(mosquitto.port), district(mosquitto.port) as d:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                reply = await d.channel.send("shuibei", "ack", {"incident": "I1"}, 30, 5)
                assert reply is not None and reply["error"] == "forged"
        errors = [e for e in logs if e["event"] == "district_command_key_mismatch"]
        assert len(errors) == 1 and errors[0]["log_level"] == "error"
        assert "command_key_file" in errors[0]["hint"]
        assert d.channel.key_mismatch("shuibei") and not d.channel.key_mismatch("huangbei")
        assert d.channel.counts["key_mismatch"] == 3
        lines = d.channel.metrics_lines()
        assert 'sentinel_district_command_key_mismatch{community="shuibei"} 1' in lines
        assert 'sentinel_district_command_key_mismatch{community="huangbei"} 0' in lines
        assert 'sentinel_district_commands_total{outcome="key_mismatch"} 3' in lines
    right = Box("shuibei", KEYS["shuibei"])
    async with right.run(mosquitto.port), district(mosquitto.port) as d:
        d.channel._mismatch.add("shuibei")  # as left by the refusals above
        reply = await d.channel.send("shuibei", "ack", {"incident": "I1"}, 30, 5)
        assert reply is not None and reply["ok"] and not d.channel.key_mismatch("shuibei")


async def test_a_reconnect_that_finds_no_session_is_warned_about(mosquitto: Mosquitto
                                                                  ) -> None:
    """docs/district.md's old check step: a mosquitto_sub with the daemon's client id (the
    broker's user name as client id) takes the connection over with a clean session; the
    daemon comes back to no session, and its queued messages are gone. It says so."""
    import paho.mqtt.client as paho

    cfg = MqttSettings(host="127.0.0.1", port=mosquitto.port,
                       client_id=f"session-{next(_ids)}", session_expiry=3600)
    source = MqttSource(cfg, [wire.topic(PREFIX, "+", wire.REPLIES)], None, 100)

    async def consume(source: MqttSource) -> None:
        while True:
            source.ack(await source.batch(10))

    with structlog.testing.capture_logs() as logs:
        async with running(source, consume):
            assert source.sessions_lost == 0
            intruder = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
                                   protocol=paho.MQTTv311, clean_session=True)
            await asyncio.to_thread(intruder.connect, "127.0.0.1", mosquitto.port)
            intruder.loop_start()
            await asyncio.sleep(0.3)
            intruder.disconnect()
            intruder.loop_stop()
            for _ in range(int(TIMEOUT / 0.05)):  # the daemon's reconnect
                if source.connects >= 2 and source.connected:
                    break
                await asyncio.sleep(0.05)
            assert source.connects >= 2 and source.sessions_lost == 1
    lost = [e for e in logs if e["event"] == "mqtt_session_lost"]
    assert len(lost) == 1 and lost[0]["log_level"] == "warning"
    assert "same client id" in lost[0]["hint"] and "persistence" in lost[0]["hint"]
    assert lost[0]["client_id"] == cfg.client_id
