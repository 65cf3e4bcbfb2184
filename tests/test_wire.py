"""The source's MQTT packet splitter and PUBLISH reader, against paho's own encoder."""

from __future__ import annotations

import itertools
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sentinel.source.wire import PacketReader, ProtocolError, Publish, puback, read_publish


class _Capture:
    """Stands in for paho's socket and keeps every byte paho writes."""

    def __init__(self) -> None:
        self.data = bytearray()

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def paho_publish(topic: str, payload: bytes, qos: int, retain: bool, v5: bool,
                 mid: int, user: list[tuple[str, str]] | None = None) -> bytes:
    """The PUBLISH packet paho itself puts on the wire for these fields."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wire-test",
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    capture = _Capture()
    client._sock = capture  # type: ignore[assignment]
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    client._last_mid = mid - 1
    props = None
    if v5 and user:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = user
        props.MessageExpiryInterval = 60
    info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
    assert info.rc == mqtt.MQTT_ERR_SUCCESS
    if qos:
        assert info.mid == mid
    return bytes(capture.data)


topics = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="+#\0"),
                 min_size=1, max_size=80)
payloads = st.one_of(st.binary(max_size=300),
                     st.integers(126, 70_000).map(lambda n: bytes(range(256)) * (n // 256)))
messages = st.tuples(topics, payloads, st.sampled_from([0, 1]), st.booleans(),
                     st.integers(1, 65535),
                     st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)),
                              max_size=3))


def _read_all(stream: bytes, cuts: list[int], v5: bool) -> tuple[list[Publish], list[bytes]]:
    reader = PacketReader()
    publishes: list[Publish] = []
    others: list[bytes] = []
    edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    for start, end in itertools.pairwise(edges):
        reader.feed(stream[start:end])
        for first, packet, body in reader.packets():
            if first >> 4 == 3:
                publish = read_publish(packet, body, v5)
                assert publish is not None
                publishes.append(publish)
            else:
                others.append(packet)
    assert reader.buffered == 0
    return publishes, others


@settings(max_examples=150, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6), st.booleans(),
       st.lists(st.integers(0, 10**6), max_size=12))
def test_publishes_written_by_paho_are_read_back_across_any_chunking(
        batch: list[Any], v5: bool, cuts: list[int]) -> None:
    ping_response = b"\xd0\x00"
    stream = b""
    for topic, payload, qos, retain, mid, user in batch:
        stream += paho_publish(topic, payload, qos, retain, v5, mid, user) + ping_response
    publishes, others = _read_all(stream, cuts, v5)
    assert others == [ping_response] * len(batch)
    assert [(p.topic.decode(), p.payload, p.qos, p.retain, p.mid) for p in publishes] == [
        (topic, payload, qos, retain, mid if qos else 0)
        for topic, payload, qos, retain, mid, _ in batch]


def test_other_packets_are_passed_whole_for_paho() -> None:
    suback = bytes([0x90, 3, 0, 7, 1])
    connack = bytes([0x20, 2, 0, 0])
    reader = PacketReader()
    reader.feed(connack + suback[:2])
    assert [(f, p) for f, p, _ in reader.packets()] == [(0x20, connack)]
    reader.feed(suback[2:])
    assert [(f, p) for f, p, _ in reader.packets()] == [(0x90, suback)]


def test_a_remaining_length_of_five_bytes_is_not_mqtt() -> None:
    reader = PacketReader()
    reader.feed(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(ProtocolError):
        reader.packets()


def test_a_length_split_inside_its_bytes_waits_for_the_rest() -> None:
    packet = paho_publish("a/b", b"x" * 200, 1, False, False, 9)
    reader = PacketReader()
    reader.feed(packet[:2])  # first byte and the first of two length bytes
    assert reader.packets() == []
    reader.feed(packet[2:])
    ((_, whole, body),) = reader.packets()
    assert read_publish(whole, body, False) == Publish(b"a/b", b"x" * 200, 1, False, 9)


@pytest.mark.parametrize(("packet", "why"), [
    (bytes([0x36, 5, 0, 1, ord("t"), 0, 1]), "QoS 3"),
    (bytes([0x32, 4, 0, 9, ord("t"), 0]), "topic past the end"),
    (bytes([0x32, 3, 0, 1, ord("t")]), "no packet identifier"),
    (bytes([0x30, 4, 0, 1, ord("t"), 0x80]), "properties length cut"),
    (bytes([0x30, 4, 0, 1, ord("t"), 0x05]), "properties past the end"),
])
def test_malformed_publishes_are_protocol_errors(packet: bytes, why: str) -> None:
    v5 = "properties" in why
    with pytest.raises(ProtocolError):
        read_publish(packet, 2, v5)


def test_qos2_and_topic_aliases_are_left_to_paho() -> None:
    qos2 = paho_publish("a", b"x", 2, False, False, 3)
    assert read_publish(qos2, 2, False) is None
    alias = bytes([0x30, 6, 0, 0, 3, 0x23, 0, 1])  # empty topic, Topic Alias 1
    assert read_publish(alias, 2, True) is None


def test_puback_is_the_packet_paho_would_send() -> None:
    assert puback(0x1234) == bytes([0x40, 2, 0x12, 0x34])
