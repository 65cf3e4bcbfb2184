"""`sentinel backtest` on stores written here: --against, bad input, sources and the diff.

The stores are real files in the embedded store's own schema (store/sqlite.py), read back
through the command (`sentinel.cli.main`), so every path is the one an operator takes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
import structlog

from sentinel.backtest.compare import Recorded, Summary, compare_recorded, diff_rule_sets
from sentinel.backtest.replay import split_by_compound
from sentinel.backtest.sources import SqliteReadings, merge_series
from sentinel.cli import main
from sentinel.loading import load_all
from sentinel.store.sqlite import READINGS_SCHEMA

from helpers import SHIPPED_CONFIG
from servers import free_port

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()
# The demo's false tank incidents: levels drawn 0.7-0.8 m/h (a compressed clock); a real
# fast drop: a tank losing 80 % of its height in 10 minutes (the simulator's tank-low).
FALSE_DRAW = {"SB-TNK-0001": 0.8, "SB-TNK-0002": 0.7}
REAL_DROP = "SB-TNK-0003"
STRICT = """\
[[rule]]
name = "tank_level_falling"
kind = "water_level"
type = "rate"
field = "level"
falling_per_hour = 3.0   # stricter: a real leak or an unplanned draw, not a refill cycle
window = "10m"
min_span = "5m"
severity = "warning"
clear_for = "10m"
"""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _write_store(path: Path, rows: list[tuple[str, str, float, float, dict[str, object]]]
                 ) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(READINGS_SCHEMA)
    conn.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?)",
                     [(d, round(ts * 1000), k, round(rx * 1000), orjson.dumps(v).decode())
                      for d, k, ts, rx, v in rows])
    conn.commit()
    conn.close()


def _tank_rows() -> list[tuple[str, str, float, float, dict[str, object]]]:
    rows = []
    heights = {"SB-TNK-0001": 5.5, "SB-TNK-0002": 3.5, REAL_DROP: 3.0}
    for i in range(80):  # 40 minutes, a reading every 30 s
        ts = T0 + i * 30
        for device, per_hour in FALSE_DRAW.items():
            level = heights[device] * 0.9 - per_hour * i * 30 / 3600
            rows.append((device, "water_level", ts, ts + 0.2, {"level": round(level, 4)}))
        full = heights[REAL_DROP] * 0.9
        drop = max(0.0, (i - 20) * 30) * full * 0.8 / 600  # after 10 min: 80 % in 10 min
        level = max(heights[REAL_DROP] * 0.2, full - drop)
        rows.append((REAL_DROP, "water_level", ts, ts + 0.2, {"level": round(level, 4)}))
    return rows


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state dir whose embedded store holds 40 minutes of three tanks."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    _write_store(state_dir / "readings.sqlite3", _tank_rows())
    monkeypatch.setenv("SENTINEL_STATE_DIR", str(state_dir))
    # The rest of the inventory is silent here: no offline incidents in the way.
    monkeypatch.setenv("SENTINEL_RULES__STARTUP_GRACE", "86400")
    monkeypatch.setenv("SENTINEL_LANG", "en")
    return state_dir


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """`main` configures logging onto the stream capsys lends it, which is closed after the
    test: later tests in this process would log into a closed file (HTTP 500s in a server
    thread's handler). Put back the configuration the process had."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _backtest(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["backtest", "-c", str(SHIPPED_CONFIG), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_against_a_stricter_tank_rule_keeps_only_the_real_drop(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--against: the stricter rate rule drops the slow-draw incidents, keeps the fast drop."""
    strict = tmp_path / "strict.toml"
    strict.write_text(STRICT, encoding="utf-8")
    code, out, err = _backtest(capsys, "--against", str(strict), "--from", _iso(T0),
                               "--to", _iso(T0 + 2400), "--json", "--jobs", "1")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    summary = lines[-1]
    by_id = {(line["rule_set"], line["id"]): line for line in lines[:-1]}

    def falling(ids: list[str], rule_set: str) -> set[str]:
        return {by_id[(rule_set, i)]["target"] for i in ids
                if by_id[(rule_set, i)]["incident"] == "tank_level_falling"}

    diff = summary["against"]
    assert falling(diff["only_a"], "a") == set(FALSE_DRAW)
    assert falling(diff["only_b"], "b") == set()
    both = [p for p in diff["both"] if by_id[("a", p["a"])]["incident"] == "tank_level_falling"]
    assert [by_id[("a", p["a"])]["target"] for p in both] == [REAL_DROP]
    # The stricter rule sees the drop a little later, and says how much.
    assert both[0]["shift"] >= 0
    # The same in words, for people.
    code, text, _ = _backtest(capsys, "--against", str(strict), "--from", _iso(T0),
                              "--to", _iso(T0 + 2400), "--jobs", "1")
    assert code == 0
    assert "only in A 2" in text
    assert "tank level falling" in text


def test_html_timeline_is_self_contained(state: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """--html writes one page with an inline SVG timeline per rule, nothing fetched."""
    page = tmp_path / "bt.html"
    code, _out, err = _backtest(capsys, "--from", _iso(T0), "--to", _iso(T0 + 2400),
                               "--html", str(page), "--lang", "zh")
    assert code == 0, err
    text = page.read_text(encoding="utf-8")
    assert text.count("<svg") >= 2 and "tank_level_falling" in text
    assert "<script" not in text and "http://" not in text.replace(
        "http://www.w3.org/2000/svg", "")
    assert "规则回测" in text


def _files(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in folder.iterdir()}


class _NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def influx_like() -> Iterator[str]:
    """A server without VictoriaMetrics' export API (what an InfluxDB answers: 404)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bad_input_is_one_clear_line_and_exit_2(
        state: Path, tmp_path: Path, influx_like: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Every bad question: a clear message on stderr, exit 2, no traceback, nothing written."""
    before = _files(state)
    broken = tmp_path / "broken.toml"
    broken.write_text('[[rule]]\nname = "x"\nkind = "smoke"\ntype = "threshold"\n'
                      'field = "no_such_field"\nlevels = [{ severity = "warning", above = 1 }]\n',
                      encoding="utf-8")
    period = ["--from", _iso(T0), "--to", _iso(T0 + 2400)]
    cases = [
        (["--device", "SB-NOPE-1"], "no device SB-NOPE-1"),
        (["--kind", "toaster"], "no device of kind toaster"),
        (["--compound", "不存在小区"], "no compound 不存在小区"),
        (["--grid", "SB-G99"], "no grid SB-G99"),
        (["--from", _iso(T0 - 86400 * 30), "--to", _iso(T0 - 86400 * 29)], "no readings"),
        (["--device", "SB-SMK-0001", *period], "no readings"),
        (["--from", _iso(T0 + 60), "--to", _iso(T0)], "is not before the end"),
        (["--from", "yesterday-ish"], "--from is not a time"),
        (["--rules", str(broken)], "no_such_field"),
        (["--rules", str(tmp_path / "missing.toml")], "rules file not found"),
        (["--source", "victoria", "--url", f"http://127.0.0.1:{free_port()}"],
         "cannot reach the source"),
        (["--source", "victoria", "--url", influx_like], "reading back from InfluxDB is not "
                                                         "supported"),
        (["--jobs", "0", *period], "--jobs must be 1 or more"),
    ]
    for args, expected in cases:
        code, out, err = _backtest(capsys, *args)
        assert code == 2, (args, out, err)
        assert expected in err, (args, err)
        assert "Traceback" not in err + out, args
    (state / "readings.sqlite3").unlink()
    code, _, err = _backtest(capsys, *period)
    assert code == 2 and "no readings store" in err
    assert _files(state) == {k: v for k, v in before.items() if k != "readings.sqlite3"}


# -- units ---------------------------------------------------------------------------------

def test_sqlite_source_orders_by_receive_time_and_filters(tmp_path: Path) -> None:
    """Readings come back as the daemon evaluated them: by receive time, then device time,
    only the period's [start, end) and the devices asked for; the file is not changed."""
    path = tmp_path / "readings.sqlite3"
    _write_store(path, [
        ("B", "smoke", 10.0, 13.0, {"alarm": False}),
        ("A", "smoke", 12.0, 12.5, {"alarm": True}),   # measured later, received earlier
        ("A", "smoke", 11.0, 13.0, {"alarm": False}),  # same receipt: device time decides
        ("C", "smoke", 9.0, 20.0, {"alarm": False}),   # received at the end: excluded
    ])
    mtime = path.stat().st_mtime_ns
    source = SqliteReadings(path)
    got = [(r.device_id, r.ts, r.received_at) for r in source.readings(0, 20, None)]
    assert got == [("A", 12.0, 12.5), ("B", 10.0, 13.0), ("A", 11.0, 13.0)]
    assert [r.device_id for r in source.readings(0, 21, {"C", "B"})] == ["B", "C"]
    assert source.any_readings(0, 21, {"C"}) and not source.any_readings(0, 19, {"C"})
    assert source.span() == (9.0, 12.0)
    assert path.stat().st_mtime_ns == mtime and not (tmp_path / "readings.sqlite3-wal").exists()


def test_victoria_series_merge_back_into_readings() -> None:
    """Export lines (one per <kind>_<field>) become one Reading per device and time, bools
    restored, duplicates collapsed, unknown devices skipped, in time order."""
    loaded = load_all(SHIPPED_CONFIG, {})
    series = [
        {"metric": {"__name__": "smoke_alarm", "device_id": "SB-SMK-0001"},
         "values": [0, 1, 1], "timestamps": [2000, 1000, 1000]},
        {"metric": {"__name__": "smoke_battery", "device_id": "SB-SMK-0001"},
         "values": [80.5], "timestamps": [1000]},
        {"metric": {"__name__": "smoke_alarm", "device_id": "NOT-THERE"},
         "values": [1], "timestamps": [500]},
        {"metric": {"__name__": "hydrant_pressure_pressure", "device_id": "SB-HYD-0001"},
         "values": [0.31], "timestamps": [1500]},
    ]
    got = merge_series(iter(series), loaded.inventory, loaded.kinds)
    assert [(r.device_id, r.ts, dict(r.values)) for r in got] == [
        ("SB-SMK-0001", 1.0, {"alarm": True, "battery": 80.5}),
        ("SB-HYD-0001", 1.5, {"pressure": 0.31}),
        ("SB-SMK-0001", 2.0, {"alarm": False}),
    ]
    assert all(r.received_at == r.ts for r in got)


def _summary(id_: str, name: str, target: str, opened: float, resolved: float | None = None,
             severity: str = "warning") -> Summary:
    return Summary(id_, name, name, target, target, "water_level", severity, opened, {},
                   severity, resolved_at=resolved)


def test_diff_pairs_overlapping_episodes_with_their_shift() -> None:
    """Two rule sets: the same episode (same incident and target, spans overlap) is in
    both with B's shift; others are only in A or only in B."""
    a = [_summary("a1", "tank", "T1", 100, 400), _summary("a2", "tank", "T2", 100, 200),
         _summary("a3", "tank", "T1", 1000)]
    b = [_summary("b1", "tank", "T1", 160, 300), _summary("b2", "tank", "T3", 100)]
    diff = diff_rule_sets(a, b, end=2000, tick=1)
    assert [(p.a.id, p.b.id, p.shift) for p in diff.both] == [("a1", "b1", 60)]
    assert [s.id for s in diff.only_a] == ["a2", "a3"]
    assert [s.id for s in diff.only_b] == ["b2"]


def test_compare_with_the_record_within_one_tick() -> None:
    """Matched: same incident, target and severity, opened within one tick; the rest is
    missed (recorded only) or extra (backtest only)."""
    backtest = [_summary("x1", "smoke_alarm", "S1", 100.4, severity="critical"),
                _summary("x2", "smoke_alarm", "S2", 100.0, severity="critical"),
                _summary("x3", "tank", "T1", 50.0)]
    recorded = [Recorded("r1", "smoke_alarm", "S1", "critical", 100.0, "S1", "smoke"),
                Recorded("r2", "smoke_alarm", "S2", "critical", 102.0, "S2", "smoke"),
                Recorded("r3", "tank", "T1", "critical", 50.0, "T1", "water_level")]
    result = compare_recorded(backtest, recorded, tolerance=1.0)
    assert [(m.backtest.id, m.recorded.id) for m in result.matched] == [("x1", "r1")]
    assert [r.id for r in result.missed] == ["r2", "r3"]
    assert [s.id for s in result.extra] == ["x2", "x3"]


def test_split_by_compound_keeps_compounds_whole() -> None:
    """Shares for --jobs hold whole compounds (correlation never crosses one), balanced."""
    loaded = load_all(SHIPPED_CONFIG, {})
    shares = split_by_compound(loaded.inventory, 2)
    assert len(shares) == 2 and set().union(*shares) == set(loaded.inventory)
    compound_of = {d.id: d.compound for d in loaded.inventory.values()}
    assert not {compound_of[i] for i in shares[0]} & {compound_of[i] for i in shares[1]}
    assert abs(len(shares[0]) - len(shares[1])) < len(loaded.inventory) / 4
    assert os.cpu_count() is not None
