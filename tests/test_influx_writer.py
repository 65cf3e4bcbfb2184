"""Line protocol (sentinel.store.lineproto) and the InfluxDB writer (sentinel.store.influx)."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config.model import InfluxSettings
from sentinel.errors import StoreError
from sentinel.store.influx import InfluxWriter, WriteResult, parse_retry_after
from sentinel.store.lineproto import tag_string, to_line
from sentinel.types import Reading, Value

from servers import StubInfluxServer, StubResponse, VictoriaMetrics, free_port

# ---------------------------------------------------------------------------------------
# A small reference parser of line protocol, written from the specification: a backslash
# escapes the characters special at that place (and itself); before anything else it is
# a literal backslash.


def _unescape(text: str, special: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in special + "\\":
            out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _scan(line: str, i: int, stops: str) -> int:
    """Index of the first unescaped character of `stops` at or after i (or len(line))."""
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            i += 2
            continue
        if ch in stops:
            return i
        i += 1
    return i


def parse_line(line: str) -> tuple[str, list[tuple[str, str]], list[tuple[str, Value]], int]:
    assert "\n" not in line
    assert "\r" not in line
    end = _scan(line, 0, ", ")
    measurement = _unescape(line[:end], ", ")
    i = end
    tags: list[tuple[str, str]] = []
    while line[i] == ",":
        eq = _scan(line, i + 1, "=")
        key = _unescape(line[i + 1 : eq], ",= ")
        end = _scan(line, eq + 1, ", ")
        tags.append((key, _unescape(line[eq + 1 : end], ",= ")))
        i = end
    assert line[i] == " "
    fields: list[tuple[str, Value]] = []
    while True:
        eq = _scan(line, i + 1, "=")
        key = _unescape(line[i + 1 : eq], ",= ")
        j = eq + 1
        value: Value
        if line[j] == '"':
            k = j + 1
            while line[k] != '"':
                k += 2 if line[k] == "\\" else 1
            value = _unescape(line[j + 1 : k], '"')
            end = k + 1
        else:
            end = _scan(line, j, ", ")
            value = _scalar(line[j:end])
        fields.append((key, value))
        i = end
        if line[i] == " ":
            return measurement, tags, fields, int(line[i + 1 :])
        assert line[i] == ","


def _scalar(raw: str) -> Value:
    if raw in ("true", "false"):
        return raw == "true"
    if raw.endswith("i"):
        return int(raw[:-1])
    return float(raw)


def _norm(text: str) -> str:
    """What a value reads back as: line breaks become the two characters backslash-n/-r."""
    return text.replace("\n", "\\n").replace("\r", "\\r")


def _reading(
    values: dict[str, Value],
    *,
    kind: str = "smoke",
    ts: float = 1_763_000_000.25,
    device: str = "SB-A3-0012",
) -> Reading:
    return Reading(device_id=device, kind=kind, ts=ts, received_at=ts, values=values)


_field_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@settings(max_examples=400, deadline=None)
@given(
    kind=st.text(min_size=1),
    tags=st.dictionaries(st.text(), st.text(), max_size=6),
    values=st.dictionaries(st.text(min_size=1), _field_values, min_size=1, max_size=6),
    ts=st.integers(min_value=0, max_value=4_102_444_800_000),
)
def test_to_line_round_trips_through_a_line_protocol_parser(
    kind: str, tags: dict[str, str], values: dict[str, Value], ts: int
) -> None:
    """Any measurement, tag and field text parses back to itself from one single line."""
    reading = _reading(values, kind=kind, ts=ts / 1000)
    line = to_line(reading, tag_string(tags))
    assert to_line(reading, tags) == line

    measurement, parsed_tags, fields, parsed_ts = parse_line(line)

    assert measurement == _norm(kind)
    assert parsed_tags == [(_norm(k), _norm(tags[k])) for k in sorted(tags) if k and tags[k]]
    expected = [
        (_norm(k), type(v), _norm(v) if isinstance(v, str) else v) for k, v in values.items()
    ]
    assert [(k, type(v), v) for k, v in fields] == expected
    assert parsed_ts == ts


def test_to_line_formats_types_and_canonical_tags() -> None:
    """Floats plain, ints with i, bools true/false, strings quoted; tags sorted, no empties."""
    tags = {
        "grid": "G-07",
        "device_id": "SB-A3-0012",
        "community": "水贝社区",
        "compound": "",
        "building": "3栋 B,座=东",
    }
    reading = _reading(
        {"smoke_density": 0.0125, "count": 3, "alarm": True, "status": 'say "hi"\\'},
        ts=1_763_000_000.2504,
    )
    assert to_line(reading, tag_string(tags)) == (
        "smoke,building=3栋\\ B\\,座\\=东,community=水贝社区,device_id=SB-A3-0012,grid=G-07 "
        'smoke_density=0.0125,count=3i,alarm=true,status="say \\"hi\\"\\\\" 1763000000250'
    )
    assert tag_string({}) == ""
    assert tag_string({"a": ""}) == ""


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "no fields"),
        ({"t": math.nan}, "NaN"),
        ({"t": math.inf}, "NaN or inf"),
        ({"n": 2**63}, "64-bit"),
        ({"": 1.0}, "name"),
    ],
)
def test_to_line_refuses_what_line_protocol_cannot_carry(
    values: dict[str, Value], message: str
) -> None:
    """No fields, NaN, infinity, oversized ints and empty field names raise ValueError."""
    with pytest.raises(ValueError, match=message):
        to_line(_reading(values), "")


# ---------------------------------------------------------------------------------------
# The writer. `RecordingSleep` replaces asyncio.sleep so backoff is observed, not waited.


class RecordingSleep:
    """Records each backoff delay and yields to the loop instead of sleeping."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None) -> None:
        self.delays: list[float] = []
        self._on_sleep = on_sleep

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self._on_sleep is not None:
            self._on_sleep(len(self.delays))
        await asyncio.sleep(0)


def _settings(url: str, **overrides: Any) -> InfluxSettings:
    values: dict[str, Any] = {
        "url": url,
        "org": "sentinel",
        "bucket": "readings",
        "timeout": 5.0,
        "retry_min_delay": 0.5,
        "retry_max_delay": 2.0,
    }
    values.update(overrides)
    return InfluxSettings(**values)


def _lines(n: int, *, marker_at: Sequence[int] = (), marker: str = "BAD") -> list[str]:
    now = time.time()
    tags = tag_string({"device_id": "SB-A3-0012", "community": "水贝社区"})
    out = []
    for i in range(n):
        values: dict[str, Value] = {"smoke_density": i / 100, "alarm": False}
        if i in marker_at:
            values["status"] = marker
        out.append(to_line(_reading(values, ts=now + i / 1000), tags))
    return out


async def test_readings_arrive_in_victoriametrics_with_tags_and_values(
    victoria: VictoriaMetrics,
) -> None:
    """Readings of many devices written in batches are all stored with their tags and values."""
    devices = 40
    per_device = 50
    start = round(time.time() * 1000) - 60_000
    tag_cache = {
        f"SB-{d:03d}": tag_string(
            {
                "device_id": f"SB-{d:03d}",
                "community": "水贝社区",
                "compound": "A区",
                "building": f"{d % 4}栋 B,座=东",
                "grid": "",
            }
        )
        for d in range(devices)
    }
    readings = [
        _reading(
            {"smoke_density": d + i / 1000, "temperature": 21.5, "alarm": i % 2 == 0},
            device=f"SB-{d:03d}",
            ts=(start + i * 1000) / 1000,
        )
        for d in range(devices)
        for i in range(per_device)
    ]
    lines = [to_line(r, tag_cache[r.device_id]) for r in readings]

    async with InfluxWriter(_settings(victoria.url, gzip=True), None) as writer:
        results = [await writer.write(lines[k : k + 500]) for k in range(0, len(lines), 500)]

    assert sum(r.written for r in results) == len(lines)
    assert all(r.rejected == [] and r.attempts == 1 for r in results)
    expected = {(r.device_id, r.ts_ms) for r in readings}
    points = await asyncio.to_thread(victoria.wait_for_points, "smoke", len(expected))
    assert points == expected

    series = await asyncio.to_thread(
        victoria.export, '{__name__="smoke_smoke_density",device_id="SB-007"}'
    )
    assert len(series) == 1
    metric = series[0]["metric"]
    assert metric["community"] == "水贝社区"
    assert metric["compound"] == "A区"
    assert metric["building"] == "3栋 B,座=东"
    assert "grid" not in metric
    assert series[0]["values"] == [7 + i / 1000 for i in range(per_device)]
    alarms = await asyncio.to_thread(victoria.export, '{__name__="smoke_alarm",device_id="SB-007"}')
    assert alarms[0]["values"] == [1 if i % 2 == 0 else 0 for i in range(per_device)]


async def test_request_carries_precision_bucket_org_gzip_and_token(
    stub_influx: StubInfluxServer,
) -> None:
    """A write is one gzip POST with precision=ms, the bucket, the org and the token header."""
    lines = _lines(10)
    settings_ = _settings(stub_influx.url, gzip=True)
    async with InfluxWriter(settings_, "s3cr3t-token") as writer:
        result = await writer.write(lines)

    assert result == WriteResult(written=10, rejected=[], attempts=1)
    (request,) = stub_influx.writes
    assert request.param("precision") == "ms"
    assert request.param("bucket") == "readings"
    assert request.param("org") == "sentinel"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["authorization"] == "Token s3cr3t-token"
    assert request.lines == lines


async def test_no_token_sends_no_authorization_and_empty_batch_sends_nothing(
    stub_influx: StubInfluxServer,
) -> None:
    """Without a token no Authorization header is sent; an empty batch makes no request."""
    async with InfluxWriter(_settings(stub_influx.url, gzip=False), None) as writer:
        assert await writer.write([]) == WriteResult(written=0, rejected=[], attempts=0)
        await writer.write(_lines(2))
    (request,) = stub_influx.writes
    assert "authorization" not in request.headers
    assert "content-encoding" not in request.headers


async def test_empty_lines_are_rejected_without_a_request(stub_influx: StubInfluxServer) -> None:
    """Empty or blank lines come back as rejected; the other lines are written."""
    lines = _lines(2)
    async with InfluxWriter(_settings(stub_influx.url), None) as writer:
        assert await writer.write(["", " "]) == WriteResult(
            written=0, rejected=[("", "empty line"), (" ", "empty line")], attempts=0
        )
        result = await writer.write([lines[0], "", lines[1]])
    assert result == WriteResult(written=2, rejected=[("", "empty line")], attempts=1)
    assert stub_influx.accepted_lines == lines


async def test_429_waits_at_least_retry_after_then_succeeds(
    stub_influx: StubInfluxServer,
) -> None:
    """A 429 with Retry-After: 1 is retried after waiting at least one second."""
    stub_influx.script((429, {"Retry-After": "1"}, ""), (204, {}, ""))
    sleep = RecordingSleep()
    lines = _lines(5)
    async with InfluxWriter(
        _settings(stub_influx.url, retry_min_delay=0.1), None, sleep=sleep
    ) as writer:
        result = await writer.write(lines)

    assert result == WriteResult(written=5, rejected=[], attempts=2)
    assert len(sleep.delays) == 1
    assert sleep.delays[0] >= 1.0
    assert [r.status for r in stub_influx.writes] == [429, 204]
    assert stub_influx.accepted_lines == lines


async def test_429_retry_after_http_date_is_honoured(stub_influx: StubInfluxServer) -> None:
    """A Retry-After given as an HTTP-date delays the retry until about that date."""
    at = email.utils.formatdate(time.time() + 5, usegmt=True)
    stub_influx.script((429, {"Retry-After": at}, ""))
    sleep = RecordingSleep()
    async with InfluxWriter(_settings(stub_influx.url), None, sleep=sleep) as writer:
        result = await writer.write(_lines(3))
    assert result.attempts == 2
    assert 3.0 <= sleep.delays[0] <= 5.0


def test_parse_retry_after_forms() -> None:
    """Retry-After parses as seconds or HTTP-date; garbage and past dates give None or 0."""
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


async def test_5xx_backoff_grows_is_capped_and_then_succeeds(
    stub_influx: StubInfluxServer,
) -> None:
    """503s and 500s are retried with jittered exponential backoff capped at retry_max_delay."""
    stub_influx.script(
        (503, {}, ""), (503, {}, ""), (500, {}, "oops"), (502, {}, ""), (503, {}, ""), (204, {}, "")
    )
    sleep = RecordingSleep()
    lines = _lines(7)
    async with InfluxWriter(
        _settings(stub_influx.url, retry_min_delay=0.5, retry_max_delay=2.0), None, sleep=sleep
    ) as writer:
        result = await writer.write(lines)

    assert result == WriteResult(written=7, rejected=[], attempts=6)
    assert len(sleep.delays) == 5
    assert sleep.delays[0] == 0.5
    assert 0.5 <= sleep.delays[1] <= 1.0
    assert all(1.0 <= d <= 2.0 for d in sleep.delays[2:])
    assert stub_influx.accepted_lines == lines


async def test_400_bisects_to_exactly_the_bad_lines(stub_influx: StubInfluxServer) -> None:
    """On 400 the batch is split until the refused lines are isolated; the rest is stored."""
    stub_influx.reject_marker = "POISON"
    lines = _lines(64, marker_at=(0, 17, 18, 63), marker="POISON")
    bad = [line for line in lines if "POISON" in line]
    good = [line for line in lines if "POISON" not in line]
    async with InfluxWriter(_settings(stub_influx.url), None, sleep=RecordingSleep()) as writer:
        result = await writer.write(lines)

    assert result.written == len(good) == 60
    assert [line for line, _ in result.rejected] == bad
    assert all(reason.startswith("unable to parse line: ") for _, reason in result.rejected)
    assert result.rejected[1][1] == f"unable to parse line: {bad[1]!r}"
    assert stub_influx.accepted_lines == good  # each good line stored once, in order
    assert result.attempts == len(stub_influx.writes)


async def test_413_splits_the_batch_until_it_fits(stub_influx: StubInfluxServer) -> None:
    """A 413 for the whole batch makes the writer send halves; nothing is rejected."""
    body = '{"code":"request too large","message":"request entity too large"}'
    stub_influx.script((413, {"Content-Type": "application/json"}, body))
    lines = _lines(10)
    async with InfluxWriter(_settings(stub_influx.url), None, sleep=RecordingSleep()) as writer:
        result = await writer.write(lines)
    assert result == WriteResult(written=10, rejected=[], attempts=3)
    assert [len(r.lines) for r in stub_influx.writes] == [10, 5, 5]
    assert stub_influx.accepted_lines == lines


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_auth_and_not_found_raise_non_retryable_store_error(
    stub_influx: StubInfluxServer, status: int
) -> None:
    """401/403/404 raise StoreError(retryable=False) at once, without retry or rejection."""
    body = '{"code":"unauthorized","message":"unauthorized access"}'
    stub_influx.script((status, {"Content-Type": "application/json"}, body))
    sleep = RecordingSleep()
    async with InfluxWriter(_settings(stub_influx.url), "wrong-token", sleep=sleep) as writer:
        with pytest.raises(StoreError) as caught:
            await writer.write(_lines(4))
    assert caught.value.retryable is False
    assert caught.value.status == status
    assert "unauthorized access" in str(caught.value)
    assert "wrong-token" not in str(caught.value)
    assert sleep.delays == []
    assert len(stub_influx.writes) == 1


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1", "http://", "not a url"])
async def test_unusable_url_raises_non_retryable_store_error(url: str) -> None:
    """A url that is not http(s) with a host is a configuration error, not retried."""
    with pytest.raises(StoreError) as caught:
        async with InfluxWriter(_settings(url), None, sleep=RecordingSleep()):
            pass
    assert caught.value.retryable is False


async def test_connection_refused_is_retried_until_the_server_comes_up() -> None:
    """With nothing listening the write keeps retrying, and succeeds once a server starts."""
    port = free_port()
    stub = StubInfluxServer()
    stub.port = port

    def start_server_on_third_pause(pauses: int) -> None:
        if pauses == 3:
            stub.start()

    sleep = RecordingSleep(start_server_on_third_pause)
    lines = _lines(6)
    try:
        async with InfluxWriter(_settings(f"http://127.0.0.1:{port}"), None, sleep=sleep) as writer:
            with structlog.testing.capture_logs() as logs:
                result = await writer.write(lines)
    finally:
        stub.stop()

    assert result == WriteResult(written=6, rejected=[], attempts=4)
    assert len(sleep.delays) == 3
    retries = [e for e in logs if e["event"] == "influx_write_retry"]
    assert [e["attempt"] for e in retries] == [1, 2, 3]
    assert all(e["status"] is None and "Connect" in e["error"] for e in retries)
    assert stub.accepted_lines == lines


async def test_timeout_is_retried(stub_influx: StubInfluxServer) -> None:
    """A server slower than the timeout is retried; the second, prompt answer succeeds."""
    stub_influx.script(StubResponse(204, delay=1.5))
    sleep = RecordingSleep()
    async with InfluxWriter(_settings(stub_influx.url, timeout=0.3), None, sleep=sleep) as writer:
        result = await writer.write(_lines(3))
    assert result.attempts == 2
    assert len(sleep.delays) == 1


async def test_retry_is_logged_without_the_token(stub_influx: StubInfluxServer) -> None:
    """Each failure logs influx_write_retry with status, attempt and delay, never the token."""
    stub_influx.script((503, {}, "busy"), (429, {"Retry-After": "1"}, ""))
    async with InfluxWriter(
        _settings(stub_influx.url), "s3cr3t-token", sleep=RecordingSleep()
    ) as writer:
        with structlog.testing.capture_logs() as logs:
            await writer.write(_lines(2))
    retries = [e for e in logs if e["event"] == "influx_write_retry"]
    assert [(e["status"], e["attempt"]) for e in retries] == [(503, 1), (429, 2)]
    assert all(isinstance(e["delay"], float) for e in retries)
    assert "s3cr3t-token" not in repr(logs)


async def test_close_stops_a_retrying_write_with_retryable_error(
    stub_influx: StubInfluxServer,
) -> None:
    """close() ends a write stuck in retries with StoreError(retryable=True)."""
    stub_influx.default = StubResponse(503)

    async def short_sleep(delay: float) -> None:
        await asyncio.sleep(0.01)

    writer = InfluxWriter(_settings(stub_influx.url), None, sleep=short_sleep)
    await writer.open()
    task = asyncio.create_task(writer.write(_lines(3)))
    await asyncio.to_thread(stub_influx.wait_for_requests, 3)
    await writer.close()
    with pytest.raises(StoreError) as caught:
        await task
    assert caught.value.retryable is True
    assert writer.closed


async def test_cancellation_stops_a_retrying_write(stub_influx: StubInfluxServer) -> None:
    """Cancelling the task of a write stuck in retries cancels it cleanly."""
    stub_influx.default = StubResponse(503)
    async with InfluxWriter(_settings(stub_influx.url), None, sleep=asyncio.sleep) as writer:
        task = asyncio.create_task(writer.write(_lines(3)))
        await asyncio.to_thread(stub_influx.wait_for_requests, 1)
        await asyncio.sleep(0.05)  # now in the 0.5 s backoff pause
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(stub_influx.writes) == 1
