"""The MQTT wire format on the receive hot path: packets out of a byte stream, PUBLISH read.

paho parses each incoming packet with several small socket reads and, under MQTT 5, builds
a `Properties` object per message: measured 68 µs per PUBLISH in process on the reference
box, more than the rest of sentinel's pipeline together. The source therefore reads the
socket itself in large chunks, splits them here into packets, reads QoS 0/1 PUBLISH
packets directly, and hands every other packet (CONNACK, SUBACK, PUBACK of our own
publishes, PINGRESP, DISCONNECT, QoS 2 flows, anything unusual) to paho unchanged, so paho
still owns the protocol's state machine.

Everything here follows MQTT 3.1.1 §2 and 5.0 §2-3 (fixed header, Variable Byte Integer,
PUBLISH variable header); see tests/test_wire.py.
"""

from __future__ import annotations

from dataclasses import dataclass

PUBLISH = 3
PUBACK = 4

# MQTT caps the Remaining Length at four Variable Byte Integer bytes (268,435,455).
_MAX_LENGTH_BYTES = 4


class ProtocolError(ValueError):
    """The byte stream is not MQTT: the connection must be dropped."""


@dataclass(frozen=True, slots=True)
class Publish:
    """An incoming PUBLISH packet of QoS 0 or 1, as it came off the wire."""

    topic: bytes
    payload: bytes
    qos: int
    retain: bool
    mid: int  # packet identifier; 0 for QoS 0
    dup: bool = False  # a redelivery of a message whose ack the broker never got


class PacketReader:
    """Reassemble whole MQTT control packets from chunks of a byte stream.

    `feed()` a chunk, then `packets()` yields each complete packet as (first byte, whole
    packet bytes, offset of its body). An incomplete packet stays buffered until the rest
    arrives.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk

    def packets(self) -> list[tuple[int, bytes, int]]:
        buf = self._buffer
        end = len(buf)
        out: list[tuple[int, bytes, int]] = []
        pos = 0
        while end - pos >= 2:
            # Remaining Length: 1-4 bytes, 7 bits each, least significant first.
            length = 0
            shift = 0
            i = pos + 1
            complete = False
            while i < end:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    complete = True
                    break
                shift += 7
                if shift >= 7 * _MAX_LENGTH_BYTES:
                    raise ProtocolError("Remaining Length longer than four bytes")
            if not complete:
                break  # the length itself is still incomplete
            if end - i < length:
                break  # the body is still incomplete
            out.append((buf[pos], bytes(buf[pos:i + length]), i - pos))
            pos = i + length
        if pos:
            del buf[:pos]
        return out


def read_publish(packet: bytes, body: int, v5: bool) -> Publish | None:
    """Read a QoS 0/1 PUBLISH; None for one paho should handle (QoS 2, an empty topic).

    `body` is the offset of the variable header in `packet` (from PacketReader.packets).
    Raises ProtocolError for a packet that cannot be a PUBLISH.
    """
    first = packet[0]
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    if qos == 2:
        return None
    end = len(packet)
    if end - body < 2:
        raise ProtocolError("PUBLISH too short for its topic length")
    topic_end = body + 2 + ((packet[body] << 8) | packet[body + 1])
    if topic_end > end:
        raise ProtocolError("PUBLISH topic runs past the packet")
    if topic_end == body + 2:
        return None  # a topic alias (MQTT 5): paho knows the mapping
    pos = topic_end
    mid = 0
    if qos:
        if end - pos < 2:
            raise ProtocolError("PUBLISH too short for its packet identifier")
        mid = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
    if v5:
        # Properties: a Variable Byte Integer length, then that many bytes. None of them
        # (expiry, content type, user properties...) changes what sentinel stores.
        length = 0
        shift = 0
        while True:
            if pos >= end or shift > 21:
                raise ProtocolError("PUBLISH properties length malformed")
            byte = packet[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        pos += length
        if pos > end:
            raise ProtocolError("PUBLISH properties run past the packet")
    return Publish(packet[body + 2:topic_end], packet[pos:], qos, bool(first & 0x01), mid,
                   bool(first & 0x08))


def puback(mid: int) -> bytes:
    """A PUBACK for packet identifier `mid` (MQTT 5: success is the short form)."""
    return bytes((PUBACK << 4, 2, mid >> 8, mid & 0xFF))
