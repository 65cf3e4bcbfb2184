"""The README's main job, `sentinel demo`: every run tells the whole scripted story from the
start, pages only through its local inbox, opens no incident outside the script, and says
what it did; while it runs, the commands it suggests work against it."""

from __future__ import annotations

import http.client
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from sentinel.rules.engine import RuleEngine
from sentinel.sim.model import FleetModel
from sentinel.sim.story import demo_config, story
from sentinel.types import Reading

from daemon import LOADED
from helpers import ROOT, sentinel
from servers import Mosquitto

# The story at a fifth of its pace: told within about 16 s of the simulator's start.
PACE = 0.2
STORY = story(LOADED.inventory, PACE)
SUMMARY = re.compile(r"演示结束: 读数 (\d+) 条 \(拒收 (\d+)\), 事件 (\d+) 起 .*通知送达 (\d+) 条, "
                     r"确认 (\d+) 次")


def _run_demo(state: Path, broker: Mosquitto, while_running: bool) -> str:
    """One demo run with its output piped; returns its stdout."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel", "demo", "--pace", str(PACE), "--duration",
         str(STORY.ends_at), "--state-dir", str(state), "--broker",
         f"127.0.0.1:{broker.port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        if while_running:
            _use_while_running(state, proc, lines)
        proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    assert proc.returncode == 0, (proc.stderr.read() if proc.stderr else "")[-3000:]
    return "".join(lines)


def _use_while_running(state: Path, proc: subprocess.Popen[str], lines: list[str]) -> None:
    """What the demo tells the operator to run works against it; its board link signs in."""
    deadline = time.monotonic() + 30
    while not any("/board/login/" in line for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env["SENTINEL_STATE_DIR"] = str(state)
    status = sentinel("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["devices"]["total"] == 1005
    link = next(re.search(r"(http://127\.0\.0\.1:\d+/board/login/\S+)", line)
                for line in lines if "/board/login/" in line)
    assert link is not None
    parts = urlsplit(link.group(1))
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.request("GET", parts.path)
    answer = conn.getresponse()
    assert answer.status in (302, 303) and "sentinel_board" in answer.headers["Set-Cookie"]
    conn.close()


def _incidents(state: Path, since: float) -> list[tuple[str, str, str | None, str]]:
    """The run's incidents; none opened from a reading older than the run."""
    with sqlite3.connect(state / "incidents.sqlite3") as db:
        rows = db.execute(
            "SELECT id, json_extract(data, '$.name'), json_extract(data, '$.device_id'),"
            " json_extract(data, '$.severity'), opened_ms FROM incidents ORDER BY number"
        ).fetchall()
    assert all(opened_ms >= since * 1000 for *_, opened_ms in rows), \
        "an earlier run's readings reached this run"
    return [(i, name, device, severity) for i, name, device, severity, _ in rows]


def _assert_whole_story(state: Path, out: str, since: float) -> None:
    incidents = _incidents(state, since)
    allowed = STORY.allowed()
    # Nothing outside the script: every incident is a beat of it, or the fire they make.
    for _, name, device, _ in incidents:
        assert (device is None and name == "fire_confirmed") or \
            name in allowed.get(device or "", ()), (name, device)
    # Numbered from 1: a fresh incidents database under the demo's own state directory.
    assert incidents[0][0].endswith("-0001"), incidents[0]
    opened = {(name, device): severity for _, name, device, severity in incidents}
    beats = {b.event: b.devices for b in STORY.beats}
    assert ("fire_confirmed", None) in opened
    assert all(("smoke_alarm", d) in opened for d in beats["smoke-alarm"])
    assert ("hydrant_pressure_drop", beats["hydrant-drop"][0]) in opened
    assert ("gas_leak", beats["gas-leak"][0]) in opened
    assert opened[("fall", beats["fall"][0])] == "emergency", "the fall raised to emergency"
    assert ("sos", beats["sos"][0]) in opened
    assert ("detector_offline", STORY.offline_device) in opened, "offline within the run"
    # Every tier paged for the fire: grid worker, property, duty officer, street office,
    # fire liaison (who reads English); only through the local inbox, every page shown.
    inbox = [json.loads(line) for line in (state / "inbox.jsonl").read_text().splitlines()]
    fire = [m for m in inbox if "确认火情" in m["title"] or "confirmed fire" in m["title"]]
    assert {m["contact"].split("-")[0] for m in fire} == {"gw", "pm", "do", "so", "fl"}
    shown = [line for line in out.splitlines() if line.startswith("📨")]
    assert len(shown) == len(inbox)
    # No paging line for what was not sent: pages are shown as the inbox receives them.
    assert "升级通知" not in out
    # The summary, although the output is a pipe, with what it says matching the files.
    summary = SUMMARY.search(out)
    assert summary is not None, out[-2000:]
    readings, _, count, pages, _ = (int(g) for g in summary.groups())
    assert readings > 1000 and count == len(incidents) and pages == len(inbox)
    # Piped, the status line is a line of its own every 30 s: none in a run this short.
    assert "⏱" not in out


def test_the_demo_tells_the_whole_story_twice_in_a_row(mosquitto: Mosquitto,
                                                       tmp_path: Path) -> None:
    """Two runs on one state directory: each shows the fire confirmed and every tier
    paged, the hydrant, gas, a fall raised to emergency, SOS and a detector offline,
    numbered from 1, nothing else, and a summary; the second says it started afresh."""
    state = tmp_path / "demo"
    started = time.time()
    first = _run_demo(state, mosquitto, while_running=True)
    assert "已清除上次演示" not in first
    _assert_whole_story(state, first, started)
    started = time.time()
    second = _run_demo(state, mosquitto, while_running=False)
    assert "已清除上次演示" in second
    _assert_whole_story(state, second, started)


def test_fifteen_minutes_of_the_demo_open_only_the_scripted_incidents() -> None:
    """The demo's fleet at 60x, stamped with the wall clock as the publisher stamps it,
    through the rule engine with the demo's configuration, for 15 minutes of demo time
    (15 simulated hours): every condition raised belongs to a beat of the story (before,
    36 of 41 tanks opened the tank-rate incident about 5 minutes in)."""
    told = story(LOADED.inventory)
    demo = demo_config(LOADED, told)
    wall0 = 1_796_000_000.0
    fleet = FleetModel(LOADED.inventory, LOADED.kinds, LOADED.profiles, seed=1, start=wall0)
    for event, device, at in told.injections():
        fleet.inject(event, device, wall0 + at * told.speed)
    engine = RuleEngine(demo.rules, demo.inventory, wall0, demo.settings.rules.startup_grace)
    allowed = told.allowed()
    raised: set[tuple[str, str]] = set()
    for second in range(1, 15 * 60 + 1):
        now = wall0 + second
        batch = []
        while (item := fleet.pop_due(wall0 + second * told.speed)) is not None:
            t, model = item
            sample = model.sample(t, now)
            if sample is not None:
                batch.append(Reading(model.device.id, model.device.kind, sample.ts, now,
                                     sample.values))
        for signal in [*engine.on_readings(batch), *engine.tick(now)]:
            if signal.change != "clear":
                raised.add((signal.incident, signal.device_id))
    outside = {(name, device) for name, device in raised
               if name not in allowed.get(device, ())}
    assert outside == set()
    assert ("detector_offline", told.offline_device) in raised
    assert any(name == "fall" for name, _ in raised)


def test_the_summary_counts_each_incident_at_its_severity_now() -> None:
    """A fall opened as critical and raised to emergency is counted as the emergency it
    is (at its opening severity the summary left the one 紧急 incident out), worst first;
    who acted is shown by name in the live view, never as "(gw-02)" or "(root)"."""
    import asyncio
    import contextlib
    import io

    from sentinel.demo import DemoScreen, Tally
    from sentinel.incidents.model import Incident, IncidentEvent, Status
    from sentinel.types import IngestStats, Severity

    tally = Tally(stats=IngestStats())
    for incident_id, type_, severity in (("1", "opened", "critical"),
                                         ("2", "opened", "warning"),
                                         ("3", "opened", "critical"),
                                         ("3", "severity_raised", "emergency"),
                                         ("3", "acknowledged", "emergency")):
        tally.count(type_, severity, incident_id)
    assert tally.incidents == 3 and tally.acks == 1
    assert "事件 3 起 (紧急 1, 严重 1, 警告 1)" in tally.summary("zh")

    class Source:
        last_seq = 0

        def __init__(self) -> None:
            self.sent = False

        async def events_after(self, seq: int, limit: int = 500,
                               wait: float | None = None) -> list[IncidentEvent]:
            if self.sent:
                raise asyncio.CancelledError
            self.sent = True
            return [IncidentEvent("3", "acknowledged", 1.7e9, actor, Severity.EMERGENCY,
                                  Status.ACKNOWLEDGED, seq=n)
                    for n, actor in enumerate(("gw-02", "cli:root"), start=1)]

        def incident(self, incident_id: str) -> Incident:
            return Incident(id=incident_id, key="fall:W1", name="fall", target="W1",
                            kind="elderly_watch", severity=Severity.EMERGENCY,
                            opened_at=1.7e9, place={"location": "水贝花园1栋"})

    out = io.StringIO()
    screen = DemoScreen(out, "zh", tally, tty=False)
    screen.people = {"gw-02": "李建国"}
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(screen.follow(Source()))
    shown = out.getvalue()
    assert "(李建国)" in shown and "(root (命令行))" in shown and "gw-02" not in shown
