"""The real-format examples of devices/examples/, end to end, in both stores.

Every example file holds a vendor message written from public documentation or decoder
source (its `source`), the profile that decodes it and the canonical values it must give.
All of them are published at QoS 1 through a real mosquitto to two real daemons at once: one
with the embedded SQLite store, one writing to VictoriaMetrics through the InfluxDB
backend. Each example is then checked in both: no message of it dead-lettered, and exactly
the expected fields stored with the expected values (the latest one when several messages
set a field).

The examples carry their own (past) device times, so the daemons accept old readings here
(`[ingest] max_age` and the SQLite retention are raised); nothing else is changed.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel.config.profiles import load_profiles
from sentinel.decode.decoder import topic_matches

from daemon import DaemonProcess, Publisher, wait_until
from helpers import ROOT
from servers import Mosquitto, VictoriaMetrics

EXAMPLES = ROOT / "devices" / "examples"
INVENTORY = EXAMPLES / "inventory.csv"
PROFILE_DIR = ROOT / "devices" / "profiles"
_FILE = re.compile(r"^\d\d-[a-z0-9-]+\.yaml$")
_TWENTY_YEARS_S = 20 * 365 * 86400


@dataclass(frozen=True)
class Example:
    name: str
    profile: str
    kind: str
    needs: tuple[str, ...]
    messages: tuple[tuple[str, bytes], ...]
    expect: dict[str, dict[str, Any]]


def _load(path: Path) -> Example:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "messages" in data:
        messages = tuple((m["topic"], m["payload"].encode()) for m in data["messages"])
    else:
        messages = ((data["topic"], data["payload"].encode()),)
    # YAML reads a hex id such as 0x9C21 as an integer; ids are text.
    expect = {str(k) if not isinstance(k, int) else _hex_key(path, k): v
              for k, v in data["expect"].items()}
    for key in ("source", "description", "format"):
        assert data.get(key), f"{path.name}: `{key}` is required"
    return Example(path.stem, data["profile"], data["kind"], tuple(data.get("needs", ())),
                   messages, expect)


def _hex_key(path: Path, value: int) -> str:
    # The raw text decides the spelling (0x9C21, not 0x9c21): find it in the file.
    text = path.read_text(encoding="utf-8")
    for match in re.finditer(r"^  (0x[0-9A-Fa-f]+):", text, re.MULTILINE):
        if int(match[1], 16) == value:
            return match[1]
    raise AssertionError(f"{path.name}: cannot find the id spelling of {value}")


ALL = [_load(p) for p in sorted(EXAMPLES.glob("*.yaml")) if _FILE.match(p.name)]


def test_examples_cover_the_five_kinds_with_enough_formats() -> None:
    kinds = {e.kind for e in ALL}
    assert {"smoke", "gas", "hydrant_pressure", "water_level", "elderly_watch"} <= kinds
    assert len(ALL) >= 22
    assert len({e.profile for e in ALL}) >= 15


def test_readme_lists_every_example_and_the_count() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for example in ALL:
        assert f"{example.name}.yaml" in readme, f"README does not list {example.name}"
    assert f"{len(ALL)} examples" in readme


# ---------------------------------------------------------------------------------------
# One broker, one VictoriaMetrics, two daemons, every example published once.
# ---------------------------------------------------------------------------------------


@dataclass
class Ingested:
    sqlite_db: Path
    victoria: VictoriaMetrics
    profiles: frozenset[str]
    dead: list[dict[str, Any]]


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _deadletters(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT topic, payload, reason, detail, device_id FROM deadletter")
        return [{"topic": t, "payload": bytes(p), "reason": r, "detail": d, "device_id": i}
                for t, p, r, d, i in rows]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingested]:
    base = tmp_path_factory.mktemp("examples")
    profiles, problems = load_profiles([PROFILE_DIR])
    assert not problems, problems
    common = {
        # With the pilot's own inventory: the shipped on-call rosters name its compounds.
        "devices__inventory": json.dumps([str(ROOT / "devices" / "shuibei.csv"),
                                          str(INVENTORY)]),
        "ingest__max_age": str(_TWENTY_YEARS_S),
        "store__sqlite__retention_days": "36500",
    }
    with Mosquitto(base / "mosquitto") as broker, VictoriaMetrics(base / "victoria") as vm:
        embedded = DaemonProcess(base / "sqlite", broker.port, mqtt__client_id="examples-sqlite",
                                 **common)
        influx = DaemonProcess(base / "influx", broker.port, mqtt__client_id="examples-influx",
                               store__backend="influxdb", store__influxdb__url=vm.url,
                               store__influxdb__flush_interval="0.2", **common)
        try:
            embedded.start()
            influx.start()
            filters = [f.split("/") for p in profiles.values() for f in p.match]
            publisher = Publisher(broker.port, client_id="examples-publisher")
            subscribed = 0  # messages of examples whose profile is not shipped reach nobody
            for example in ALL:
                for topic, payload in example.messages:
                    publisher.publish(topic, payload)
                    levels = topic.split("/")
                    subscribed += any(topic_matches(f, levels) for f in filters)
            publisher.close()
            for daemon in (embedded, influx):
                assert wait_until(lambda d=daemon: _metric(
                    d.control_port, "sentinel_messages_received_total") >= subscribed, 30), \
                    f"{daemon.state_dir.name}: not every example message was taken"
            assert wait_until(lambda: _metric(influx.control_port,
                                              "sentinel_spool_lines") == 0, 30)
            vm.force_flush()
            db = base / "sqlite" / "readings.sqlite3"
            yield Ingested(db, vm, frozenset(profiles), _deadletters(db))
        finally:
            embedded.close()
            influx.close()


def _stored_sqlite(db: Path, device_id: str) -> dict[str, Any]:
    """The device's fields merged over its rows, the latest time winning."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT fields FROM readings WHERE device_id = ? "
                            "ORDER BY ts_ms, received_ms", (device_id,)).fetchall()
    finally:
        conn.close()
    merged: dict[str, Any] = {}
    for (fields,) in rows:
        merged.update(json.loads(fields))
    return merged


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _stored_victoria(vm: VictoriaMetrics, kind: str, device_id: str) -> dict[str, float]:
    """The latest value of every <kind>_<field> series of the device."""
    selector = ("{__name__=~" + _promql_string(re.escape(kind) + "_.*")
                + ",device_id=" + _promql_string(device_id) + "}")
    latest: dict[str, float] = {}
    for series in vm.export(selector):
        field = series["metric"]["__name__"][len(kind) + 1:]
        pairs = sorted(zip(series["timestamps"], series["values"], strict=True))
        latest[field] = pairs[-1][1]
    return latest


def _same(stored: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(stored, bool):
        return stored == expected
    if isinstance(expected, int | float) and isinstance(stored, int | float):
        return math.isclose(stored, expected, rel_tol=1e-9, abs_tol=1e-9)
    return bool(stored == expected)


@pytest.mark.parametrize("example", ALL, ids=[e.name for e in ALL])
def test_example_is_stored_in_both_stores(example: Example, ingested: Ingested) -> None:
    waits = f" (this example needs {', '.join(example.needs)})" if example.needs else ""
    assert example.profile in ingested.profiles, \
        f"profile {example.profile!r} is not shipped in devices/profiles{waits}"
    sent = set(example.messages)
    dead = [d for d in ingested.dead if (d["topic"], d["payload"]) in sent]
    assert not dead, f"dead-lettered{waits}: " + "; ".join(
        f"{d['reason']}: {d['detail']}" for d in dead)

    for device_id, expected in example.expect.items():
        stored = _stored_sqlite(ingested.sqlite_db, device_id)
        assert stored.keys() == expected.keys(), \
            f"SQLite fields of {device_id}: {sorted(stored)} != {sorted(expected)}{waits}"
        wrong = {k: (stored[k], v) for k, v in expected.items() if not _same(stored[k], v)}
        assert not wrong, f"SQLite values of {device_id} (stored, expected): {wrong}"

        # Line protocol carries numbers and booleans to VictoriaMetrics; it keeps no strings.
        numeric = {k: float(v) for k, v in expected.items() if not isinstance(v, str)}

        def arrived(d: str = device_id, n: dict[str, float] = numeric) -> bool:
            return _stored_victoria(ingested.victoria, example.kind, d).keys() >= n.keys()

        assert wait_until(arrived, 10, interval=0.3), \
            f"VictoriaMetrics lacks fields of {device_id}"
        in_vm = _stored_victoria(ingested.victoria, example.kind, device_id)
        assert in_vm.keys() == numeric.keys(), \
            f"VictoriaMetrics fields of {device_id}: {sorted(in_vm)} != {sorted(numeric)}"
        wrong = {k: (in_vm[k], v) for k, v in numeric.items() if not _same(in_vm[k], v)}
        assert not wrong, f"VictoriaMetrics values of {device_id} (stored, expected): {wrong}"


def test_examples_leave_no_unexplained_dead_letters(ingested: Ingested) -> None:
    """Every dead letter belongs to an example (so a failure above names it)."""
    sent = {m for e in ALL for m in e.messages}
    strays = [d for d in ingested.dead if (d["topic"], d["payload"]) not in sent]
    assert not strays, strays
