"""The per-alert record end to end: a real daemon, broker and HTTP receiver; a receiver that
answers after 11 s breaks GB 50440's 10 s limit, and sentinel says so while it waits."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from sentinel.incidents import latency
from sentinel.incidents.store import read_events, read_incidents

from daemon import LOADED, DaemonProcess, Publisher, wait_until, write_oncall
from helpers import sentinel
from receivers import HttpReceiver
from servers import Mosquitto
from test_escalation_e2e import alarm, open_incident, smoke_detector, start_daemon, write_policies


def metric_samples(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_a_receiver_answering_after_11_s_opens_latency_budget_exceeded(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """Smoke alarm, receiver hangs 11 s: latency_budget_exceeded opens about 10 s after the
    device time, before the delivery is accepted, naming the alarm and the stage; the record
    is in `incidents show --json`, in the human show, in `report latency --json` and in the
    /metrics histograms with a 10 s edge."""
    smoke = smoke_detector(2)
    with HttpReceiver() as hooks:
        oncall = write_oncall(tmp_path / "oncall.yaml",
                              {c.id: [hooks.url("json", f"/{c.id}")]
                               for c in LOADED.oncall.contact})
        policies = write_policies(tmp_path / "policies.toml", [(0, ["grid_worker"])])
        state = tmp_path / "state"
        daemon = start_daemon(state, mosquitto.port, oncall, policies,
                              notify__timeout="20")
        daemons.append(daemon)
        db = state / "incidents.sqlite3"
        hooks.hang(11)
        pub = Publisher(mosquitto.port)
        t0 = time.time()
        alarm(pub, smoke, t0)
        inc = open_incident(db, smoke)

        def breach_open() -> bool:
            return any(i.name == latency.BREACH_INCIDENT for i in read_incidents(db))

        assert wait_until(breach_open, 15), "no latency_budget_exceeded"
        noticed = time.time()
        assert noticed - t0 < 10.9, "reported while the delivery was still waiting"
        assert not hooks.requests or all(r.received_at >= t0 for r in hooks.requests)
        system = next(i for i in read_incidents(db) if i.name == latency.BREACH_INCIDENT)
        assert system.detail["alarm"] == inc.id and system.detail["budget"] == "accepted"
        assert system.detail["stage"] == "accepted" and system.detail["pending"] is True
        assert system.detail["stage_from"] == "handed"

        # The delivery is accepted after 11 s: the record shows it.
        hooks.hang(0)

        def accepted() -> bool:
            record = next(i for i in read_incidents(db) if i.id == inc.id).timing
            return "accepted" in record

        assert wait_until(accepted, 20)
        record = next(i for i in read_incidents(db) if i.id == inc.id).timing
        assert set(record) >= {"device", "received", "committed", "handed", "accepted"}
        # A device's clock is its own (here the publisher's, rounded to the millisecond):
        # near the receipt, not necessarily before it.
        assert abs(record["device"] - record["received"]) < 1.0
        assert record["received"] <= record["committed"] <= record["handed"] \
            <= record["accepted"]
        assert record["handed"] - record["received"] < 3.0
        assert record["accepted"] - record["device"] > 10.5
        trail = [e.data for e in read_events(db, incident_id=inc.id)
                 if e.type == latency.BREACH_INCIDENT]
        assert [d["budget"] for d in trail] == ["accepted"]

        shown = sentinel("incidents", "show", inc.id, "--json", env=daemon.env)
        assert shown.returncode == 0, shown.stderr
        answer = json.loads(shown.stdout)
        assert answer["incident"]["timing"]["accepted"] == record["accepted"]
        assert answer["latency"]["first_notification"] > 10.5
        assert answer["latency"]["first_notification_limit"] == 10.0
        human = sentinel("incidents", "show", inc.id, env=daemon.env)
        assert human.returncode == 0, human.stderr
        assert "首条通知" in human.stdout and "（限 10 s）" in human.stdout
        assert "超时" in human.stdout
        english = sentinel("incidents", "show", inc.id, "--lang", "en", env=daemon.env)
        assert "first notification" in english.stdout and "(limit 10 s)" in english.stdout

        report = sentinel("report", "latency", "--since", "1h", "--json", env=daemon.env)
        assert report.returncode == 0, report.stderr
        data = json.loads(report.stdout)
        assert data["limits"]["accepted"]["exceeded"] == 1
        assert data["limits"]["handed"]["kept"] == 1
        assert data["kinds"]["smoke"]["spans"]["first_notification"]["max"] > 10.5
        table = sentinel("report", "latency", env=daemon.env)
        assert table.returncode == 0 and "超时 1" in table.stdout, table.stdout

        samples = metric_samples(daemon.control_port)
        bucket = 'sentinel_alarm_accepted_seconds_bucket{le="%s",life_safety="true"}'
        assert samples[bucket % "10.0"] == 0 and samples[bucket % "+Inf"] == 1
        forward = 'sentinel_alarm_forward_seconds_bucket{le="3.0",life_safety="true"}'
        assert samples[forward] == 1
        pub.close()
        assert daemon.stop() == 0
