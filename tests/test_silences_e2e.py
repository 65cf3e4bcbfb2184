"""Silences end to end: the daemon as a process, a real broker, real apprise deliveries to a
local HTTP receiver, silences added and removed with the CLI as an operator would."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sentinel.config.inventory import Device
from sentinel.decode.encode import encode
from sentinel.escalation.model import Role
from sentinel.incidents.store import read_events, read_incidents

from daemon import LOADED, DaemonProcess, Publisher, wait_until, write_oncall
from helpers import sentinel
from receivers import HttpReceiver, ReceivedRequest
from servers import Mosquitto
from test_escalation_e2e import alarm, message, on_duty, start_daemon, write_policies

FIRE_AND_DEFAULT = """
[[policy]]
name = "fire"
match = { incidents = ["fire_confirmed"] }
[[policy.step]]
after = 0
notify = ["grid_worker", "duty_officer"]

[[policy]]
name = "default"
match = { min_severity = "warning" }
[[policy.step]]
after = 0
notify = ["grid_worker"]
"""

SMOKE_1 = LOADED.inventory["SB-SMK-0001"]   # 水贝花园 1栋
SMOKE_2 = LOADED.inventory["SB-SMK-0002"]   # 水贝花园 1栋
HYDRANT = LOADED.inventory["SB-HYD-0014"]   # 水贝新村


def _start(mosquitto: Mosquitto, tmp_path: Path, hooks: HttpReceiver,
           daemons: list[DaemonProcess]) -> DaemonProcess:
    channels = {c.id: [hooks.url("json", f"/{c.id}")] for c in LOADED.oncall.contact}
    oncall = write_oncall(tmp_path / "oncall.yaml", channels)
    policies = write_policies(tmp_path / "policies.toml", [(0, ["grid_worker", "property"])],
                              extra=FIRE_AND_DEFAULT)
    daemon = start_daemon(tmp_path / "state", mosquitto.port, oncall, policies)
    daemons.append(daemon)
    return daemon


def _silence(daemon: DaemonProcess, *args: str) -> str:
    done = sentinel("silence", "add", *args, env=daemon.env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _to(requests: list[ReceivedRequest], contacts: list[str]) -> list[ReceivedRequest]:
    paths = {f"/{c}" for c in contacts}
    return [r for r in requests if r.path in paths]


def _hydrant_low(pub: Publisher, device: Device, ts: float) -> None:
    for topic, payload in encode(LOADED.profiles[device.profile], device,
                                 {"pressure": 0.12, "battery": 90.0}, ts, LOADED.kinds):
        pub.publish(topic, payload)
    pub.flush()


def test_a_place_silence_does_not_hide_a_fire_and_unknown_places_are_refused(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """With a place-only silence on 水贝花园 1栋 (hydrant flushing), smoke alarms from two of
    its detectors page within 1 s and form a confirmed fire; a silence naming a building
    that does not exist is refused."""
    with HttpReceiver() as hooks:
        daemon = _start(mosquitto, tmp_path, hooks, daemons)
        refused = sentinel("silence", "add", "--compound", "水贝花园", "--building",
                           "不存在/1栋", "--for", "2h", "--reason",
                           "消火栓冲洗", env=daemon.env)
        assert refused.returncode != 0 and "不存在/1栋" in refused.stderr, refused
        out = _silence(daemon, "--compound", "水贝花园", "--building", "1栋", "--for", "2h",
                       "--reason", "消火栓冲洗")
        assert "不屏蔽火警" in out, out
        pub = Publisher(mosquitto.port)
        grid = [c.id for c in on_duty(Role.GRID_WORKER, SMOKE_1)]
        t0 = time.time()
        alarm(pub, SMOKE_1, t0)
        alarm(pub, SMOKE_2, t0 + 0.5)
        db = tmp_path / "state" / "incidents.sqlite3"
        assert wait_until(lambda: any(i.name == "fire_confirmed"
                                      for i in read_incidents(db, open_only=True)), 10)
        first = hooks.wait_for(len(grid), 10)
        assert _to(first, grid) and first[0].received_at - t0 < 1.0, \
            "the first smoke page left within 1 s despite the silence"
        fire = next(i for i in read_incidents(db, open_only=True) if i.name == "fire_confirmed")
        officers = [c.id for c in on_duty(Role.DUTY_OFFICER, SMOKE_1)]
        assert wait_until(lambda: len([r for r in _to(hooks.requests, officers)
                                       if "确认火情" in message(r)[0]]) == len(officers), 10), \
            [message(r)[0] for r in hooks.requests]
        assert all(fire.id in message(r)[1] for r in _to(hooks.requests, officers))
        types = {e.type for e in read_events(db)}
        assert "notification_muted" not in types
        pub.close()


def test_an_explicit_life_safety_silence_pages_the_duty_officer_with_its_label(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """Muting smoke alarms on purpose: the grid worker is not paged, the duty officer is,
    and the message names the maintenance window."""
    with HttpReceiver() as hooks:
        daemon = _start(mosquitto, tmp_path, hooks, daemons)
        _silence(daemon, "--compound", "水贝花园", "--building", "1栋", "--kind", "smoke",
                 "--life-safety", "--for", "1h", "--reason", "探测器年检")
        officers = [c.id for c in on_duty(Role.DUTY_OFFICER, SMOKE_1)]
        grid = [c.id for c in on_duty(Role.GRID_WORKER, SMOKE_1)]
        pub = Publisher(mosquitto.port)
        alarm(pub, SMOKE_1, time.time())
        pages = hooks.wait_for(len(officers), 10)
        assert sorted(r.path for r in pages) == sorted(f"/{o}" for o in officers)
        title, body = message(pages[0])
        assert title.startswith("【维护中】") and "探测器年检" in body, (title, body)
        time.sleep(1.0)
        assert not _to(hooks.requests, grid), "only the duty officer is paged"
        pub.close()


def test_a_hydrant_silence_mutes_until_it_is_removed_then_escalates(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """A low-pressure hydrant under a hydrant silence pages nobody; when the silence is
    removed while the incident is still active, its escalation starts."""
    with HttpReceiver() as hooks:
        daemon = _start(mosquitto, tmp_path, hooks, daemons)
        out = _silence(daemon, "--compound", HYDRANT.compound, "--kind", "hydrant_pressure",
                       "--for", "2h", "--reason", "消火栓冲洗")
        window_id = out.split("#", 1)[1].split(":", 1)[0].strip()
        pub = Publisher(mosquitto.port)
        _hydrant_low(pub, HYDRANT, time.time())
        db = tmp_path / "state" / "incidents.sqlite3"
        assert wait_until(lambda: any(e.type == "notification_muted"
                                      for e in read_events(db)), 10)
        time.sleep(1.5)  # longer than the storm hold: nothing was queued
        assert hooks.requests == []
        listed = sentinel("incidents", "list", "--json", env=daemon.env)
        assert listed.returncode == 0 and '"silenced_by": "#' in listed.stdout, listed.stdout
        removed = sentinel("silence", "remove", window_id,
                           env=daemon.env)
        assert removed.returncode == 0, removed.stderr
        grid = [c.id for c in on_duty(Role.GRID_WORKER, HYDRANT)]
        pages = hooks.wait_for(len(grid), 10)
        assert sorted(r.path for r in pages) == sorted(f"/{g}" for g in grid)
        assert "屏蔽结束" in message(pages[0])[0], message(pages[0])
        types = [e.type for e in read_events(db)]
        assert types.index("notification_muted") < types.index("mute_ended")
        pub.close()


def test_a_silence_naming_a_kind_covers_the_kinds_that_extend_it(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """`--kind gas` mutes septic-tank gas monitors too (septic_gas extends gas), as a kind in
    the policy file does; the stored window says so."""
    with HttpReceiver() as hooks:
        daemon = _start(mosquitto, tmp_path, hooks, daemons)
        _silence(daemon, "--compound", HYDRANT.compound, "--kind", "gas", "--for", "1h",
                 "--reason", "燃气管道检修")
        listed = sentinel("silence", "list", "--json", env=daemon.env)
        assert listed.returncode == 0, listed.stderr
        windows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [w["kinds"] for w in windows] == [["gas", "septic_gas"]], windows
