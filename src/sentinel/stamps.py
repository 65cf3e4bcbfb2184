"""Receive times for readings that carry no device time.

Storage keys a reading on (device, timestamp in ms), so that a redelivered message rewrites
its own row instead of adding one. That only works when the device sends its time. For the
others (ESPHome, Zigbee2MQTT without `last_seen`) the timestamp is the receive time, and two
things follow, both handled here:

* Two distinct readings of one device must never share a millisecond, or the second
  overwrites the first (20 values queued while the daemon was down arrive in one socket read
  and used to become one row). Each untimed reading of a device gets a time at least 1 ms
  after that device's previous one.
* A message redelivered after a crash (the broker resends it with DUP set and its original
  packet identifier, because our PUBACK never reached it) must get the time its first copy
  was stored with, or it becomes a second row. Every untimed QoS 1 message's time is
  recorded as a receipt, written in the same transaction as its readings; a DUP message
  whose (topic, packet id, payload) fingerprint has a receipt takes the recorded times.

Only unacknowledged messages can come back, and those are the most recent ones (the source
holds at most `[ingest] queue_max` of them, the broker a few more in flight), so the receipts
kept are bounded: the newest `keep` fingerprints.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from sentinel.types import RECEIPTS_KEPT, Fingerprint, RawMessage, Reading, Receipt


def fingerprint(msg: RawMessage) -> Fingerprint:
    return (msg.topic, msg.mid, hashlib.blake2b(msg.payload, digest_size=16).digest())


class ReceiveStamps:
    """Gives untimed readings distinct, increasing times per device, stable across a
    redelivery; remembers the receipts to be written with the batch."""

    def __init__(self, receipts: Iterable[Receipt] = (), keep: int = RECEIPTS_KEPT) -> None:
        self._keep = keep
        self._known: OrderedDict[Fingerprint, dict[str, int]] = OrderedDict()
        self._last_ms: dict[str, int] = {}
        for receipt in receipts:
            self._remember(receipt)

    def _remember(self, receipt: Receipt) -> None:
        known = self._known
        key = receipt.fingerprint
        times = known.get(key)
        if times is None:
            times = known[key] = {}
            if len(known) > self._keep:
                known.popitem(last=False)
        times[receipt.device_id] = receipt.ts_ms

    def stamp(self, msg: RawMessage, readings: Sequence[Reading]) -> tuple[list[Reading],
                                                                           list[Receipt]]:
        """The message's readings with their final times, and the receipts to store."""
        if all(r.timed for r in readings):
            return list(readings), []
        key = fingerprint(msg) if msg.qos else None
        recorded = self._known.get(key) if key is not None and msg.dup else None
        out: list[Reading] = []
        receipts: list[Receipt] = []
        last_ms = self._last_ms
        for reading in readings:
            if reading.timed:
                out.append(reading)
                continue
            device = reading.device_id
            ts_ms = recorded.get(device) if recorded is not None else None
            if ts_ms is None:
                ts_ms = max(round(reading.ts * 1000), last_ms.get(device, 0) + 1)
                last_ms[device] = ts_ms
            out.append(replace(reading, ts=ts_ms / 1000))
            if key is not None:
                receipt = Receipt(key[0], key[1], key[2], device, ts_ms)
                receipts.append(receipt)
                self._remember(receipt)
        return out, receipts
