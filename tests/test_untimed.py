"""Readings without a device time: each gets its own increasing receive time per device, and
a message redelivered after a crash keeps the time its first copy was stored with."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config.model import SqliteSettings
from sentinel.stamps import ReceiveStamps
from sentinel.store.sqlite import SqliteReadingStore
from sentinel.types import RawMessage, Reading

from daemon import DaemonProcess, Publisher, wait_until
from fault_proxy import FaultProxy
from servers import Mosquitto, VictoriaMetrics

HYDRANT = "SB-HYD-0053"  # an esphome device of the shipped inventory: plain values, no time
TOPIC = f"esphome/{HYDRANT}/sensor/pipe_pressure/state"


def _message(payload: bytes, at: float, *, mid: int = 1, dup: bool = False, qos: int = 1,
             topic: str = TOPIC) -> RawMessage:
    return RawMessage(topic, payload, qos, False, at, None, dup, mid)


def _untimed(device: str, at: float) -> Reading:
    return Reading(device, "hydrant_pressure", at, at, {"pressure": 0.3}, False)


def test_readings_of_one_read_get_distinct_increasing_times() -> None:
    stamps = ReceiveStamps()
    at = 1_800_000_000.0004
    times = []
    for i in range(20):
        msg = _message(f"3.{i:02d}".encode(), at, mid=i + 1)
        stamped, receipts = stamps.stamp(msg, [_untimed(HYDRANT, at)])
        times.append(stamped[0].ts_ms)
        assert [r.ts_ms for r in receipts] == [stamped[0].ts_ms]
    assert times == list(range(times[0], times[0] + 20))
    assert times[0] == round(at * 1000)
    # Another device in the same read keeps the receive time itself.
    other, _ = stamps.stamp(_message(b"3.5", at, mid=99, topic="esphome/SB-HYD-0054/x"),
                            [_untimed("SB-HYD-0054", at)])
    assert other[0].ts_ms == round(at * 1000)


def test_timed_readings_pass_untouched() -> None:
    stamps = ReceiveStamps()
    timed = Reading(HYDRANT, "hydrant_pressure", 1_700_000_000.0, 1_800_000_000.0,
                    {"pressure": 0.3})
    out, receipts = stamps.stamp(_message(b"x", 1_800_000_000.0), [timed])
    assert out == [timed] and receipts == []


def test_a_redelivery_takes_the_first_copys_time_and_nothing_else_does() -> None:
    stamps = ReceiveStamps()
    first, receipts = stamps.stamp(_message(b"3.52", 100.0, mid=7), [_untimed(HYDRANT, 100.0)])
    assert len(receipts) == 1
    # The broker resends it (DUP, same packet id) after a crash, much later.
    again, _ = stamps.stamp(_message(b"3.52", 500.0, mid=7, dup=True),
                            [_untimed(HYDRANT, 500.0)])
    assert again[0].ts == first[0].ts
    # The same words under the same packet id without DUP are a new message (ids are
    # reused once acknowledged): a new time.
    new, _ = stamps.stamp(_message(b"3.52", 600.0, mid=7), [_untimed(HYDRANT, 600.0)])
    assert new[0].ts_ms == 600_000
    # DUP with another payload is another message.
    other, _ = stamps.stamp(_message(b"3.53", 700.0, mid=7, dup=True),
                            [_untimed(HYDRANT, 700.0)])
    assert other[0].ts_ms == 700_000


def test_qos0_messages_leave_no_receipt() -> None:
    stamps = ReceiveStamps()
    _, receipts = stamps.stamp(_message(b"3.52", 100.0, qos=0, mid=0),
                               [_untimed(HYDRANT, 100.0)])
    assert receipts == []


def test_receipts_are_bounded() -> None:
    stamps = ReceiveStamps(keep=3)
    for mid in range(1, 6):
        stamps.stamp(_message(b"v", 100.0 + mid, mid=mid), [_untimed(HYDRANT, 100.0 + mid)])
    # The oldest two are forgotten: their redelivery is a new reading.
    forgotten, _ = stamps.stamp(_message(b"v", 900.0, mid=1, dup=True),
                                [_untimed(HYDRANT, 900.0)])
    kept, _ = stamps.stamp(_message(b"v", 900.0, mid=5, dup=True), [_untimed(HYDRANT, 900.0)])
    assert forgotten[0].ts_ms == 900_000
    assert kept[0].ts_ms == 105_000


# (device index, payload index, redelivery of the n-th message before or None)
_EVENTS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.none() | st.integers(0, 30)),
                   min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(_EVENTS, st.floats(1e9, 2e9))
def test_times_are_distinct_per_device_and_stable_across_redelivery(
        events: list[tuple[int, int, int | None]], start: float) -> None:
    stamps = ReceiveStamps()
    sent: list[tuple[RawMessage, str, int]] = []  # first copies: message, device, ts_ms
    seen: dict[str, set[int]] = {}
    at = start
    for device_index, payload_index, redeliver in events:
        at += 0.0001  # many messages per millisecond, as in one socket read
        if redeliver is not None and redeliver < len(sent):
            original, device, ts_ms = sent[redeliver]
            copy = RawMessage(original.topic, original.payload, 1, False, at, None, True,
                              original.mid)
            out, _ = stamps.stamp(copy, [_untimed(device, at)])
            assert out[0].ts_ms == ts_ms, "a redelivery got a new time"
            continue
        device = f"D{device_index}"
        msg = _message(b"%d" % payload_index, at, mid=len(sent) + 1, topic=f"t/{device}")
        out, _ = stamps.stamp(msg, [_untimed(device, at)])
        ts_ms = out[0].ts_ms
        assert ts_ms not in seen.setdefault(device, set()), "two readings share a time"
        assert ts_ms >= round(at * 1000)
        assert all(ts_ms > earlier for earlier in seen[device])
        seen[device].add(ts_ms)
        sent.append((msg, device, ts_ms))


def test_receipts_survive_a_restart_of_the_store(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings_ = SqliteSettings(path=tmp_path / "readings.sqlite3")
        async with SqliteReadingStore(settings_, 7) as store:
            stamps = ReceiveStamps(await store.receipts())
            readings, receipts = stamps.stamp(_message(b"3.52", 100.0, mid=9),
                                              [_untimed(HYDRANT, 100.0)])
            await store.write(readings, [], receipts)
        async with SqliteReadingStore(settings_, 7) as store:
            stamps = ReceiveStamps(await store.receipts())
            again, receipts = stamps.stamp(_message(b"3.52", 400.0, mid=9, dup=True),
                                           [_untimed(HYDRANT, 400.0)])
            assert again[0].ts_ms == 100_000
    asyncio.run(scenario())


# -- end to end: real broker, the daemon as a process ---------------------------------------

def _rows(db: Path) -> list[tuple[int, int, str]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT ts_ms, received_ms, fields FROM readings"
                                 " WHERE device_id = ? ORDER BY ts_ms", (HYDRANT,)))
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


@pytest.mark.parametrize("backend", ["sqlite", "influxdb"])
def test_twenty_values_queued_while_down_are_twenty_readings(
        backend: str, mosquitto: Mosquitto, victoria: VictoriaMetrics, tmp_path: Path,
        daemons: list[DaemonProcess]) -> None:
    """The daemon's session holds 20 plain values of one hydrant monitor while it is down;
    they arrive in one socket read after the restart and become 20 stored readings."""
    overrides = {} if backend == "sqlite" else {
        "store__backend": "influxdb", "store__influxdb__url": victoria.url}
    daemon = DaemonProcess(tmp_path / "state", mosquitto.port, **overrides).start()
    daemons.append(daemon)
    assert daemon.stop() == 0
    publisher = Publisher(mosquitto.port)
    values = [f"{3 + i / 100:.2f}" for i in range(20)]  # bar
    for value in values:
        publisher.publish(TOPIC, value.encode())
    publisher.close()
    daemon.start()
    want = sorted(round(float(v) / 10, 4) for v in values)  # MPa
    if backend == "sqlite":
        db = tmp_path / "state" / "readings.sqlite3"
        assert wait_until(lambda: len(_rows(db)) >= 20, 20), _rows(db)
        rows = _rows(db)
        stored = sorted(round(float(f.split(":")[1].rstrip("}")), 4) for _, _, f in rows)
    else:
        def points() -> list[tuple[int, float]]:
            victoria.force_flush()
            return [(int(ts), float(v)) for series in victoria.export(
                        f'{{__name__="hydrant_pressure_pressure",device_id="{HYDRANT}"}}')
                    for ts, v in zip(series["timestamps"], series["values"], strict=True)]
        assert wait_until(lambda: len(points()) >= 20, 20), points()
        # VictoriaMetrics keeps two samples of one instant; InfluxDB keeps the last: the
        # times must differ for all 20 to survive there.
        assert len({ts for ts, _ in points()}) == 20, points()
        stored = sorted(round(v, 4) for _, v in points())
    assert stored == want


def test_a_message_redelivered_after_kill_9_stays_one_row(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """The reading is committed, its PUBACK never reaches the broker, the daemon is killed:
    the broker redelivers the message (DUP) to the next run, which rewrites the same row."""
    db = tmp_path / "state" / "readings.sqlite3"
    with FaultProxy(mosquitto.port) as proxy:
        daemon = DaemonProcess(tmp_path / "state", proxy.port).start()
        daemons.append(daemon)
        proxy.hold_upstream()  # the daemon's acknowledgements stay in the proxy
        publisher = Publisher(mosquitto.port)
        publisher.publish(TOPIC, b"3.52")
        assert wait_until(lambda: len(_rows(db)) == 1, 20), _rows(db)
        (ts_ms, first_received, _), = _rows(db)
        time.sleep(0.05)
        daemon.kill()
        killed_ms = time.time() * 1000
        proxy.cut()  # what the proxy held (the PUBACK) is gone with the connection
        daemon.start()
        # Published after the restart, so it arrives after the redelivery.
        publisher.publish(TOPIC, b"3.60")
        publisher.close()
        assert wait_until(lambda: len(_rows(db)) >= 2, 20), _rows(db)
        time.sleep(0.5)
        rows = _rows(db)
    assert len(rows) == 2, rows
    assert rows[0][0] == ts_ms, "the redelivered copy moved to another time"
    assert '0.352' in rows[0][2] and '0.36' in rows[1][2]
    # The first row was written again by the redelivered copy after the restart: the
    # broker did resend it, and it landed on the same row.
    assert rows[0][1] > killed_ms > first_received, (rows, killed_ms, first_received)
