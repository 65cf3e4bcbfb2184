"""Escalation end to end: the daemon as a process, a real broker, real apprise deliveries to a
local HTTP receiver and a local SMTP server, second-scale delays."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from sentinel.config.inventory import Device
from sentinel.decode.encode import encode
from sentinel.escalation.model import Contact, Role
from sentinel.escalation.roster import Rosters
from sentinel.incidents.model import Incident, place_of
from sentinel.incidents.store import read_events, read_incidents

from daemon import LOADED, DaemonProcess, Publisher, wait_until, write_oncall
from helpers import sentinel
from receivers import HttpReceiver, ReceivedRequest, SmtpReceiver
from servers import Mosquitto

ROSTERS = Rosters(LOADED.oncall)
SHIPPED_RULES = str(Path(LOADED.config_path).parent / "rules.toml")


def smoke_detector(index: int = 0) -> Device:
    """A smoke detector of the sentinel-json profile (device timestamps)."""
    found = [d for d in LOADED.inventory.values()
             if d.kind == "smoke" and d.profile == "sentinel-json"]
    return found[index]


def on_duty(role: Role, device: Device) -> list[Contact]:
    people = ROSTERS.on_duty(role, place_of(device), time.time())
    assert people, f"the shipped roster has nobody for {role} at {device.id}"
    return people


def write_policies(path: Path, steps: list[tuple[float, list[str]]], repeat: float | None = None,
                   extra: str = "") -> Path:
    lines = ['ack_timeout = "30m"', "", "[storm]", 'window = "1s"', "", "[[policy]]",
             'name = "smoke_gas"', 'match = { incidents = ["smoke_alarm", "gas_leak"] }']
    if repeat is not None:
        lines.append(f"repeat = {repeat}")
    for after, roles in steps:
        lines += ["[[policy.step]]", f"after = {after}", f"notify = {json.dumps(roles)}"]
    lines += ["", "[[policy]]", 'name = "system"', 'match = { kinds = ["system"] }',
              "[[policy.step]]", "after = 0", 'notify = ["duty_officer"]', extra]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_daemon(state: Path, port: int, oncall: Path, policies: Path,
                 **overrides: str) -> DaemonProcess:
    settings = {"escalation__policies": str(policies), "rules__startup_grace": "0",
                "rules__tick_interval": "0.2", "escalation__tick_interval": "0.2",
                "rules__files": json.dumps([SHIPPED_RULES])}
    settings.update(overrides)
    return DaemonProcess(state, port, oncall=oncall, **settings).start()


def alarm(pub: Publisher, device: Device, ts: float) -> None:
    for topic, payload in encode(LOADED.profiles[device.profile], device,
                                 {"alarm": True, "battery": 90.0}, ts, LOADED.kinds):
        pub.publish(topic, payload)
    pub.flush()


def open_incident(db: Path, device: Device) -> Incident:
    found: list[Incident] = []

    def opened() -> bool:
        found[:] = [i for i in read_incidents(db, open_only=True) if i.device_id == device.id]
        return bool(found)

    assert wait_until(opened, 10), "no incident opened"
    return found[0]


def paths(requests: list[ReceivedRequest]) -> list[str]:
    return [r.path for r in requests]


def message(request: ReceivedRequest) -> tuple[str, str]:
    body = request.json
    assert isinstance(body, dict), request.body[:200]
    return str(body["title"]), str(body["message"])


def link_in(text: str) -> str:
    found = re.search(r"http://127\.0\.0\.1:\d+/a/[A-Za-z0-9_.=-]+", text)
    assert found, f"no acknowledgement link in:\n{text}"
    return found.group(0)


def http(method: str, url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_smoke_alarm_climbs_is_acknowledged_by_link_and_resolution_reaches_everyone(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """Smoke alarm → grid worker (webhook) and property (email) at once; no ack → duty
    officer (English) after 4 s; one-tap link acknowledges and stops the climb; resolve →
    resolution messages to all three; the audit trail shows every step in order."""
    smoke = smoke_detector()
    grid_workers, property_ = on_duty(Role.GRID_WORKER, smoke), on_duty(Role.PROPERTY, smoke)
    officers = on_duty(Role.DUTY_OFFICER, smoke)
    streets = on_duty(Role.STREET_OFFICE, smoke)
    with HttpReceiver() as hooks, SmtpReceiver() as smtp:
        channels = {c.id: [hooks.url("json", f"/{c.id}")] for c in LOADED.oncall.contact}
        for p in property_:
            channels[p.id] = [smtp.url(to=f"{p.id}@example.org")]
        oncall = write_oncall(tmp_path / "oncall.yaml", channels,
                              languages={o.id: "en" for o in officers})
        policies = write_policies(tmp_path / "policies.toml", [
            (0, ["grid_worker", "property"]), (4, ["duty_officer"]), (10, ["street_office"])])
        daemon = start_daemon(tmp_path / "state", mosquitto.port, oncall, policies)
        daemons.append(daemon)
        db = tmp_path / "state" / "incidents.sqlite3"
        pub = Publisher(mosquitto.port)
        t0 = time.time()
        alarm(pub, smoke, t0)
        inc = open_incident(db, smoke)

        first = hooks.wait_for(len(grid_workers), 10)
        assert sorted(paths(first)) == sorted(f"/{c.id}" for c in grid_workers)
        title, body = message(first[0])
        assert "烟感报警" in title and "严重" in title
        for text in (smoke.id, inc.id, smoke.location, "sentinel ack"):
            assert text in body, (text, body)
        mails = smtp.wait_for(len(property_), 10)
        assert sorted(m.rcpt_tos[0] for m in mails) == sorted(f"{p.id}@example.org"
                                                              for p in property_)
        assert "烟感报警" in mails[0].subject and inc.id in mails[0].body
        assert first[0].received_at - t0 < 3.0, "the first notice left within seconds"

        # Nobody acknowledged: the duty officer, in English, not before 4 s.
        assert wait_until(lambda: len(hooks.requests) == len(grid_workers) + len(officers), 10)
        escalated = hooks.requests[len(grid_workers):]
        assert sorted(paths(escalated)) == sorted(f"/{o.id}" for o in officers)
        assert escalated[0].received_at - t0 >= 3.9
        title, body = message(escalated[0])
        assert "smoke alarm" in title.lower() and "烟感" not in title

        # The one-tap link: GET only shows a confirmation; POST acknowledges, once.
        link = link_in(body)
        status, page = http("GET", link)
        assert status == 200 and "<form" in page
        assert read_incidents(db, open_only=True)[0].status.value == "firing"
        status, page = http("POST", link)
        assert status == 200
        acked = next(i for i in read_incidents(db) if i.id == inc.id)
        assert acked.status.value == "acknowledged"
        assert acked.acknowledged_by == officers[0].id
        assert http("POST", link)[0] == 410, "a used link is refused"

        # The climb stopped: no street office at 10 s.
        time.sleep(max(0.0, t0 + 11.5 - time.time()))
        assert not any(r.path in {f"/{s.id}" for s in streets} for r in hooks.requests)

        # Resolve from the CLI: everyone who was reached hears of it.
        before_hooks, before_mail = len(hooks.requests), len(smtp.mails)
        done = sentinel("resolve", inc.id, "--outcome", "handled", "--note", "误报已排查",
                        env=daemon.env)
        assert done.returncode == 0, done.stderr
        expected = len(grid_workers) + len(officers)
        assert wait_until(lambda: len(hooks.requests) == before_hooks + expected, 10)
        assert len(smtp.wait_for(before_mail + len(property_), 10)) == before_mail + len(
            property_)
        resolved = hooks.requests[before_hooks:]
        assert sorted(paths(resolved)) == sorted(f"/{c.id}" for c in [*grid_workers,
                                                                     *officers])
        assert all("已解决" in message(r)[0] or "resolved" in message(r)[0].lower()
                   for r in resolved)
        assert "误报已排查" in message(resolved[0])[1]
        assert "已解决" in smtp.mails[-1].subject

        # No message twice: every Idempotency-Key arrived once.
        keys = Counter(r.headers.get("idempotency-key") for r in hooks.requests)
        assert all(n == 1 for n in keys.values()), keys

    # The audit trail: every step, in order.
    types = [e.type for e in read_events(db, incident_id=inc.id)]
    order = ["opened", "escalation_started", "escalation_step", "notification_sent",
             "escalation_step", "notification_sent", "acknowledged", "escalation_paused",
             "resolved", "escalation_stopped", "notification_sent"]
    position = 0
    for wanted in order:
        position = types.index(wanted, position) + 1
    counts = Counter(types)
    assert counts["notification_sent"] == 2 * (len(grid_workers) + len(property_)
                                               ) + 2 * len(officers)
    assert counts["escalation_step"] == 2 and counts["notification_failed"] == 0
    pub.close()
    assert daemon.stop() == 0


def test_kill_9_during_an_escalation_resumes_at_the_right_step_exactly_once(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """kill -9 after the first tier was paged: after the restart the next tiers come on
    time, and the receivers count every message exactly once."""
    smoke = smoke_detector(1)
    tiers = [on_duty(Role.GRID_WORKER, smoke) + on_duty(Role.PROPERTY, smoke),
             on_duty(Role.DUTY_OFFICER, smoke), on_duty(Role.STREET_OFFICE, smoke)]
    with HttpReceiver() as hooks:
        oncall = write_oncall(tmp_path / "oncall.yaml",
                              {c.id: [hooks.url("json", f"/{c.id}")]
                               for c in LOADED.oncall.contact})
        policies = write_policies(tmp_path / "policies.toml", [
            (0, ["grid_worker", "property"]), (6, ["duty_officer"]), (10, ["street_office"])])
        state = tmp_path / "state"
        daemon = start_daemon(state, mosquitto.port, oncall, policies)
        daemons.append(daemon)
        pub = Publisher(mosquitto.port)
        t0 = time.time()
        alarm(pub, smoke, t0)
        inc = open_incident(state / "incidents.sqlite3", smoke)
        hooks.wait_for(len(tiers[0]), 10)
        time.sleep(0.5)  # let the results commit
        daemon.kill()
        killed_at = time.time()
        assert killed_at - t0 < 5.5, "killed before the second tier was due"
        # The alarm arrives again while the daemon is down (a device retry).
        alarm(pub, smoke, t0)
        restarted = start_daemon(state, mosquitto.port, oncall, policies)
        daemons.append(restarted)
        total = sum(len(t) for t in tiers)
        assert wait_until(lambda: len(hooks.requests) >= total, 20)
        time.sleep(2.0)  # anything extra would show now
        got = hooks.requests
        assert len(got) == total, paths(got)
        assert [sorted(paths(got[:len(tiers[0])])), sorted(paths(got[len(tiers[0]):-1])),
                paths(got[-1:])] == [sorted(f"/{c.id}" for c in tier) for tier in tiers]
        officer_at = got[len(tiers[0])].received_at
        assert officer_at - t0 >= 5.9 and got[-1].received_at - t0 >= 9.9
        keys = Counter(r.headers.get("idempotency-key") for r in got)
        assert len(keys) == total and set(keys.values()) == {1}
        # One incident, not two, for the redelivered alarm.
        assert [i.id for i in read_incidents(state / "incidents.sqlite3")] == [inc.id]
    pub.close()
    assert restarted.stop() == 0


def test_receiver_down_retries_then_fallback_channel(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """The grid worker's webhook answers 503: two attempts, then the fallback channel
    (a form post to another receiver) delivers; every attempt is recorded."""
    smoke = smoke_detector(2)
    workers = on_duty(Role.GRID_WORKER, smoke)
    with HttpReceiver() as down, HttpReceiver() as up:
        down.set_down(True)
        channels = {c.id: [up.url("json", f"/{c.id}")] for c in LOADED.oncall.contact}
        for w in workers:
            channels[w.id] = [down.url("json", f"/{w.id}"), up.url("form", f"/{w.id}-fallback")]
        oncall = write_oncall(tmp_path / "oncall.yaml", channels)
        policies = write_policies(tmp_path / "policies.toml", [
            (0, ["grid_worker"]), (30, ["duty_officer"])])
        state = tmp_path / "state"
        daemon = start_daemon(state, mosquitto.port, oncall, policies, notify__attempts="2",
                              notify__retry_min_delay="0.3", notify__timeout="3")
        daemons.append(daemon)
        pub = Publisher(mosquitto.port)
        alarm(pub, smoke, time.time())
        inc = open_incident(state / "incidents.sqlite3", smoke)
        fallback = up.wait_for(len(workers), 15)
        assert sorted(paths(fallback)) == sorted(f"/{w.id}-fallback" for w in workers)
        assert fallback[0].form is not None and inc.id in str(fallback[0].form)
        assert len(down.requests) == 2 * len(workers)
        assert all(r.status == 503 for r in down.requests)
        time.sleep(1.0)
        assert len(up.requests) == len(workers), "no early escalation: the worker was reached"
        audit = daemon_audit(daemon, inc.id)
    attempts = [a for a in audit if a["type"] == "attempt"]
    for worker in workers:
        mine = [(a["channel"], bool(a["ok"])) for a in attempts if a["contact_id"] == worker.id]
        assert mine == [(0, False), (0, False), (1, True)]
    failed = [a for a in attempts if not a["ok"]]
    assert all("503" in str(a["error"]) for a in failed)
    assert all(a["contact_id"] in {w.id for w in workers} for a in attempts)
    pub.close()
    assert daemon.stop() == 0


def test_nobody_reachable_in_a_tier_goes_to_the_next_at_once_and_raises_an_incident(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """Every channel of the first tier fails: the duty officer is paged at once (not after
    the 60 s step delay) and an operator-visible `notification_failed` incident opens."""
    smoke = smoke_detector(3)
    first_tier = on_duty(Role.GRID_WORKER, smoke) + on_duty(Role.PROPERTY, smoke)
    officers = on_duty(Role.DUTY_OFFICER, smoke)
    with HttpReceiver() as down, HttpReceiver() as up:
        down.set_down(True)
        channels = {c.id: [up.url("json", f"/{c.id}")] for c in LOADED.oncall.contact}
        for c in first_tier:
            channels[c.id] = [down.url("json", f"/{c.id}"), down.url("form", f"/{c.id}-2")]
        oncall = write_oncall(tmp_path / "oncall.yaml", channels)
        policies = write_policies(tmp_path / "policies.toml", [
            (0, ["grid_worker", "property"]), (60, ["duty_officer"])])
        state = tmp_path / "state"
        daemon = start_daemon(state, mosquitto.port, oncall, policies, notify__attempts="2",
                              notify__retry_min_delay="0.2", notify__timeout="3")
        daemons.append(daemon)
        pub = Publisher(mosquitto.port)
        t0 = time.time()
        alarm(pub, smoke, t0)
        db = state / "incidents.sqlite3"
        inc = open_incident(db, smoke)
        officer_paths = {f"/{o.id}" for o in officers}
        assert wait_until(lambda: any(r.path in officer_paths for r in up.requests), 20)
        paged = next(r for r in up.requests if r.path in officer_paths)
        assert paged.received_at - t0 < 15, "the next tier came at once, not after 60 s"
        assert len(down.requests) == 2 * 2 * len(first_tier)

        def system_incident() -> list[Incident]:
            return [i for i in read_incidents(db) if i.name == "notification_failed"]

        assert wait_until(lambda: bool(system_incident()), 10)
        failed = system_incident()[0]
        assert failed.detail["incident"] == inc.id and failed.kind == "system"
    types = [e.type for e in read_events(db, incident_id=inc.id)]
    assert "tier_unreachable" in types
    assert types.count("notification_failed") == 2 * 2 * len(first_tier)
    pub.close()
    assert daemon.stop() == 0


def daemon_audit(daemon: DaemonProcess, incident_id: str) -> list[dict[str, Any]]:
    """The incident's audit trail from the control API (events and delivery attempts)."""
    token = (daemon.state_dir / "control.token").read_text().strip()
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.control_port}/api/incidents/{incident_id}",
        headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        data = json.loads(response.read())
    audit = data["audit"]
    assert isinstance(audit, list)
    return audit
