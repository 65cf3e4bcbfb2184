"""Backtest fidelity: what `sentinel backtest` reports equals what the real daemon opened.

One scripted story (the simulator, with --inject: a smoke alarm, a hydrant pressure drop
held below 0.10 MPa — a `for` duration rule — and a detector that goes offline) is published
to a real mosquitto, where two real daemons (`sentinel run` subprocesses) listen: one with
the embedded store, one writing to a real VictoriaMetrics. Each period is then backtested
from that daemon's store with the same rules, and the incidents must match those the daemon
recorded: same rule, target and severity, opened within one tick.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

import pytest

from sentinel.backtest.command import Options, run
from sentinel.loading import load_all
from sentinel.sim.publisher import SimOptions, parse_inject, run_simulation

from daemon import DaemonProcess
from helpers import ROOT, SHIPPED_CONFIG
from servers import Mosquitto, VictoriaMetrics

# The four devices of the story (two compounds, so --jobs 2 splits them); the rest of the
# shipped inventory stays silent, which no offline rule notices within the test's seconds.
STORY = {"SB-SMK-0001": "smoke alarm", "SB-SMK-0039": "goes offline",
         "SB-HYD-0001": "pressure drop", "SB-HYD-0006": "normal"}


def _inventory(dest: Path) -> None:
    """The shipped inventory, with 2-s heartbeats (report_interval_s) for the story's devices."""
    lines = (ROOT / "devices" / "shuibei.csv").read_text(encoding="utf-8").splitlines()
    out = [lines[0] + ",report_interval_s"]
    out += [line + (",2" if line.split(",", 1)[0] in STORY else ",") for line in lines[1:]]
    dest.write_text("\n".join(out) + "\n", encoding="utf-8")


# The shipped rules, with the critical pressure level held for 3 s instead of 60 s on one
# hydrant (an override, as a site would write it), so the duration rule decides in seconds.
OVERRIDE = """\
[[override]]
rule = "hydrant_pressure_low"
match = { device = "SB-HYD-0001" }
set = { levels = [{ severity = "warning", below = 0.14 },
                  { severity = "critical", below = 0.10, for = "3s" }] }
"""

SPEED = 4.0          # the sim's clock: the 20 s pressure ramp takes 5 s
SIM_SECONDS = 11.0   # offline after 2 missed 2-s heartbeats, critical after a 3-s hold


def _env(tmp: Path, name: str) -> dict[str, str]:
    return {
        "SENTINEL_DEVICES__INVENTORY": json.dumps([str(tmp / "inventory.csv")]),
        "SENTINEL_RULES__FILES": json.dumps([str(ROOT / "config" / "rules.toml"),
                                             str(tmp / "override.toml")]),
        "SENTINEL_RULES__STARTUP_GRACE": "2",
        "SENTINEL_STATE_DIR": str(tmp / name),
    }


def test_backtest_matches_what_the_daemon_opened(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The incidents a backtest reports equal the daemon's, from sqlite and VictoriaMetrics."""
    _inventory(tmp_path / "inventory.csv")
    (tmp_path / "override.toml").write_text(OVERRIDE, encoding="utf-8")
    with Mosquitto() as broker, VictoriaMetrics() as vm:
        env_sql = _env(tmp_path, "sql")
        env_vm = {**_env(tmp_path, "vm"), "SENTINEL_STORE__BACKEND": "influxdb",
                  "SENTINEL_STORE__INFLUXDB__URL": vm.url,
                  "SENTINEL_STORE__INFLUXDB__FLUSH_INTERVAL": "0.2"}
        daemons = [
            DaemonProcess(tmp_path / "sql", broker.port,
                          **{k.removeprefix("SENTINEL_"): v for k, v in env_sql.items()},
                          MQTT__CLIENT_ID="bt-sql"),
            DaemonProcess(tmp_path / "vm", broker.port,
                          **{k.removeprefix("SENTINEL_"): v for k, v in env_vm.items()},
                          MQTT__CLIENT_ID="bt-vm"),
        ]
        started = time.time()
        try:
            starting = [threading.Thread(target=d.start) for d in daemons]
            for th in starting:
                th.start()
            for th in starting:
                th.join()
            assert all(d.alive for d in daemons)
            for key, value in env_sql.items():
                monkeypatch.setenv(key, value)
            loaded = load_all(SHIPPED_CONFIG)
            loaded = dataclasses.replace(loaded, inventory={
                k: d for k, d in loaded.inventory.items() if k in STORY})
            story = ("smoke-alarm:SB-SMK-0001@1", "hydrant-drop:SB-HYD-0001@1",
                     "offline:SB-SMK-0039@1")
            injects = [parse_inject(text, loaded.inventory) for text in story]
            run_simulation(loaded, SimOptions(port=broker.port, speed=SPEED,
                                              duration=SIM_SECONDS, inject=injects,
                                              client_id="bt-sim"))
            time.sleep(1.5)  # the last readings through both daemons; less than the offline limit
            ended = time.time()
        finally:
            for d in daemons:
                if d.alive:
                    d.stop()
        vm.wait_for_points("smoke", 1)
        vm.force_flush()

        def backtest(**extra: object) -> dict[str, object]:
            options = Options(config=SHIPPED_CONFIG, start=_iso(started), end=_iso(ended),
                              json=True, jobs=2, **extra)  # type: ignore[arg-type]
            capsys.readouterr()
            assert run(options, sys.stdout) == 0, capsys.readouterr().err
            lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            return lines[-1]

        summary = backtest()
        recorded = summary["recorded"]
        assert isinstance(recorded, dict)
        _assert_same(recorded, summary, "sqlite")
        # Readings written to VictoriaMetrics reach it a moment later; poll until visible.
        for key, value in env_vm.items():
            monkeypatch.setenv(key, value)
        deadline = time.monotonic() + 10
        while True:
            vm.force_flush()
            summary = backtest(source="victoria", url=vm.url)
            recorded = summary["recorded"]
            assert isinstance(recorded, dict)
            if (not recorded["missed"] and not recorded["extra"]) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        _assert_same(recorded, summary, "victoria")


def _iso(ts: float) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _assert_same(recorded: dict[str, object], summary: dict[str, object], what: str) -> None:
    matched = recorded["matched"]
    assert isinstance(matched, list)
    assert recorded["missed"] == [] and recorded["extra"] == [], (what, summary)
    # The story's three alarms, at least: smoke, the hydrant (raised to critical after its
    # hold), the offline detector.
    by_rule = summary["by_rule"]
    assert isinstance(by_rule, dict)
    for rule in ("smoke_alarm", "hydrant_pressure_low", "detector_offline"):
        assert by_rule.get(rule, {}).get("opened", 0) >= 1, (what, rule, by_rule)
    assert by_rule["hydrant_pressure_low"].get("severity_raised", 0) >= 1, (what, by_rule)
    assert len(matched) >= 3
    assert all(abs(m["shift"]) <= 1.0 + 0.002 for m in matched), matched
