"""/metrics and /readyz data: the histogram type, and `DaemonMetrics` of a real daemon run in
this process (real Mosquitto, real apprise deliveries to a loopback receiver, the embedded
store or a real VictoriaMetrics behind the spool), parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from sentinel.config.inventory import Device
from sentinel.decode.encode import encode
from sentinel.escalation.model import Contact, Role
from sentinel.escalation.roster import Rosters
from sentinel.incidents.model import place_of
from sentinel.loading import Loaded, load_all
from sentinel.metrics import DaemonMetrics
from sentinel.stats import LATENCY_BUCKETS, NOTIFY_BUCKETS, LatencyHistogram
from sentinel.types import RejectReason, Severity

from daemon import LOADED, TYPICAL, eventually, publish_in_thread, running, write_oncall
from helpers import SHIPPED_CONFIG
from receivers import HttpReceiver
from servers import Mosquitto, VictoriaMetrics, free_port

SHIPPED_RULES = str(Path(LOADED.config_path).parent / "rules.toml")

# ---------------------------------------------------------------------------------------
# LatencyHistogram
# ---------------------------------------------------------------------------------------

bounds_st = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20,
                     unique=True).map(lambda xs: tuple(sorted(xs)))
values_st = st.lists(st.one_of(st.floats(-1e9, 1e9), st.sampled_from(
    [math.nan, math.inf, -math.inf])), max_size=200)


@given(bounds=bounds_st, values=values_st)
def test_histogram_counts_every_finite_value_in_its_bucket(
        bounds: tuple[float, ...], values: list[float]) -> None:
    hist = LatencyHistogram(bounds)
    for v in values:
        hist.observe(v)
    finite = [v for v in values if math.isfinite(v)]
    cumulative = hist.cumulative()
    assert [b for b, _ in cumulative] == [*bounds, math.inf]
    # Prometheus semantics: the bucket `le` counts every value ≤ le.
    for bound, n in cumulative:
        assert n == sum(1 for v in finite if v <= bound)
    assert hist.count == len(finite) == cumulative[-1][1]
    assert hist.sum == pytest.approx(math.fsum(finite), rel=1e-9, abs=1e-6)
    assert sum(hist.counts) == hist.count


def test_histogram_edges_and_bad_bounds() -> None:
    hist = LatencyHistogram((0.1, 1.0))
    for v in (0.1, 0.1000001, 1.0, 7.0, -3.0):
        hist.observe(v)
    assert hist.cumulative() == [(0.1, 2), (1.0, 4), (math.inf, 5)]
    assert LatencyHistogram().bounds == LATENCY_BUCKETS
    with pytest.raises(ValueError, match="strictly increasing"):
        LatencyHistogram((1.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        LatencyHistogram((1.0, math.inf))
    with pytest.raises(ValueError, match="one count per bound"):
        LatencyHistogram((1.0,), [0])


# ---------------------------------------------------------------------------------------
# The daemon in this process
# ---------------------------------------------------------------------------------------


def write_policies(path: Path) -> Path:
    """Smoke: grid workers at once, duty officers after 1.5 s; system incidents: officers."""
    path.write_text("\n".join([
        'ack_timeout = "30m"', "[storm]", 'window = "1s"',
        "[[policy]]", 'name = "smoke_gas"',
        'match = { incidents = ["smoke_alarm", "gas_leak"] }',
        "[[policy.step]]", "after = 0", 'notify = ["grid_worker"]',
        "[[policy.step]]", "after = 1.5", 'notify = ["duty_officer"]',
        "[[policy]]", 'name = "system"', 'match = { kinds = ["system"] }',
        "[[policy.step]]", "after = 0", 'notify = ["duty_officer"]']) + "\n", encoding="utf-8")
    return path


def load(tmp: Path, broker_port: int, notify_url: str, **overrides: str) -> Loaded:
    env = {
        "SENTINEL_MQTT__PORT": str(broker_port),
        "SENTINEL_STATE_DIR": str(tmp / "state"),
        "SENTINEL_MQTT__RECONNECT__MAX_DELAY": "1",
        "SENTINEL_CONTROL__ENABLED": "false",
        "SENTINEL_ESCALATION__ONCALL": str(write_oncall(tmp / "oncall.yaml",
                                                        default=[notify_url])),
        "SENTINEL_ESCALATION__POLICIES": str(write_policies(tmp / "policies.toml")),
        "SENTINEL_ESCALATION__TICK_INTERVAL": "0.2",
        "SENTINEL_RULES__TICK_INTERVAL": "0.2",
        "SENTINEL_RULES__FILES": json.dumps([SHIPPED_RULES]),
    }
    env.update({f"SENTINEL_{k.upper()}": v for k, v in overrides.items()})
    return load_all(SHIPPED_CONFIG, env)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: DaemonMetrics) -> Samples:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        assert family.name.startswith("sentinel_"), family.name
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k[1])[label]: v for k, v in samples.items() if k[0] == name}


def check(checks: dict[str, object], name: str) -> dict[str, object]:
    found = checks[name]
    assert isinstance(found, dict) and set(found) == {"ok", "detail"}, found
    return found


def devices(kind: str, n: int) -> list[Device]:
    found = [d for d in LOADED.inventory.values()
             if d.kind == kind and d.profile == "sentinel-json"][:n]
    assert len(found) == n, f"the inventory has fewer than {n} JSON {kind} devices"
    return found


def messages_of(device: Device, ts: float, **values: object) -> list[tuple[str, bytes]]:
    fields = {**TYPICAL[device.kind], **values}
    return encode(LOADED.profiles[device.profile], device, fields, ts, LOADED.kinds)


def on_duty(role: Role, device: Device) -> list[Contact]:
    people = Rosters(LOADED.oncall).on_duty(role, place_of(device), time.time())
    assert people, f"the shipped roster has nobody for {role} at {device.id}"
    return people


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    await publish_in_thread(port, messages, "metrics-test")


async def test_metrics_count_exactly_what_the_scenario_did(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Readings, rejects and a smoke alarm that climbs two tiers, delivered by apprise."""
    smoke = devices("smoke", 6)
    background = [*smoke, *devices("gas", 4), *devices("hydrant_pressure", 3)]
    alarmed = smoke[0]
    grid, officers = on_duty(Role.GRID_WORKER, alarmed), on_duty(Role.DUTY_OFFICER, alarmed)
    start = time.time() - 30
    normal: list[tuple[str, bytes]] = []
    accepted: dict[str, int] = {}
    for r in range(2):
        for i, device in enumerate(background):
            found = messages_of(device, round(start + r + i * 1e-3, 3))
            normal += found
            accepted[device.kind] = accepted.get(device.kind, 0) + len(found)
    smoke_topic = normal[0][0]
    rejects = [(smoke_topic, b"{not json"), (smoke_topic, b"[1, 2"), (smoke_topic, b"")]
    alarm_ts = round(time.time(), 3)
    alarm = messages_of(alarmed, alarm_ts, alarm=True)
    accepted["smoke"] += len(alarm)

    with HttpReceiver() as hooks:
        loaded = load(tmp_path, mosquitto.port, hooks.url("json", "/page"))
        async with running(loaded) as daemon:
            metrics = DaemonMetrics(daemon)
            before = scrape(metrics)
            assert value(before, "sentinel_messages_received_total") == 0
            assert value(before, "sentinel_mqtt_connected") == 1
            channel = f"json://127.0.0.1:{hooks.port}"
            assert value(before, "sentinel_notifications_sent_total", channel=channel) == 0

            await publish(mosquitto.port, [*normal, *rejects, *alarm])
            total = len(normal) + len(rejects) + len(alarm)
            stats = daemon.ingestor.stats
            await eventually(lambda: stats.received == total, f"{total} messages")
            expected_sent = len(grid) + len(officers)
            escalation = daemon.escalation
            await eventually(lambda: sum(escalation.steps_taken.values()) == 2
                             and sum(escalation.dispatcher.sent_by_channel.values())
                             == expected_sent and "critical" in escalation.first_notification,
                             "two escalation steps delivered")
            requests = await asyncio.to_thread(hooks.wait_for, expected_sent)
            await asyncio.sleep(0.5)  # nothing more may arrive
            samples = scrape(metrics)
            ready, checks = metrics.readiness()

    assert len(hooks.requests) == expected_sent
    assert value(samples, "sentinel_messages_received_total") == total
    rejected = labelled(samples, "sentinel_messages_rejected_total", "reason")
    assert set(rejected) == {r.value for r in RejectReason}
    assert {k: v for k, v in rejected.items() if v} == {"invalid_json": 2, "empty_payload": 1}
    assert labelled(samples, "sentinel_readings_accepted_total", "kind") == accepted
    assert labelled(samples, "sentinel_readings_stored_total", "sink") == {
        "sqlite": sum(accepted.values())}
    assert value(samples, "sentinel_store_write_seconds_count", sink="sqlite") >= 1
    assert value(samples, "sentinel_store_write_seconds_bucket", sink="sqlite", le="+Inf") \
        == value(samples, "sentinel_store_write_seconds_count", sink="sqlite")
    assert value(samples, "sentinel_store_lag_seconds") == 0
    assert not any(k[0].startswith("sentinel_spool_") for k in samples)
    assert value(samples, "sentinel_rule_readings_evaluated_total") == sum(accepted.values())
    assert value(samples, "sentinel_rule_evaluation_seconds_count") >= 1
    assert labelled(samples, "sentinel_incidents_open", "severity") == {
        s.label: (1 if s == Severity.CRITICAL else 0) for s in Severity}
    assert labelled(samples, "sentinel_notifications_sent_total", "channel") == {
        channel: expected_sent}
    assert labelled(samples, "sentinel_notifications_failed_total", "channel") == {channel: 0}
    steps = labelled(samples, "sentinel_escalation_steps_total", "kind")
    assert {k: v for k, v in steps.items() if v} == {"alert": 1, "escalated": 1}
    # One incident reached someone for the first time: between the alarm's own time and the
    # moment its first message had arrived at the receiver (plus the result's commit).
    assert value(samples, "sentinel_first_notification_seconds_count",
                 severity="critical") == 1
    first = value(samples, "sentinel_first_notification_seconds_sum", severity="critical")
    assert 0 <= first <= requests[0].received_at - alarm_ts + 1.0
    buckets = {dict(labels)["le"]: n for (name, labels), n in samples.items()
               if name == "sentinel_first_notification_seconds_bucket"
               and dict(labels)["severity"] == "critical"}
    assert len(buckets) == len(NOTIFY_BUCKETS) + 1 and buckets["+Inf"] == 1
    for severity in ("maintenance", "info", "warning", "emergency"):
        assert value(samples, "sentinel_first_notification_seconds_count",
                     severity=severity) == 0
    assert ready, checks
    assert checks["broker"] == {"ok": True, "detail": "connected and subscribed"}


async def test_readiness_follows_the_broker(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with HttpReceiver() as hooks:
        loaded = load(tmp_path, mosquitto.port, hooks.url())
        async with running(loaded) as daemon:
            metrics = DaemonMetrics(daemon)
            ready, checks = metrics.readiness()
            assert ready, checks
            assert set(checks) == {"broker", "store", "spool"}
            assert checks["store"] == {"ok": True, "detail": "no batch written yet"}
            assert checks["spool"] == {"ok": True, "detail": "no spool (embedded store)"}

            await asyncio.to_thread(mosquitto.stop)
            await eventually(lambda: not metrics.readiness()[0], "not ready without a broker")
            ready, checks = metrics.readiness()
            assert check(checks, "broker")["ok"] is False
            assert str(check(checks, "broker")["detail"]).startswith("not connected")
            assert check(checks, "store")["ok"] is True
            assert value(scrape(metrics), "sentinel_mqtt_connected") == 0

            await asyncio.to_thread(mosquitto.start)
            await eventually(lambda: metrics.readiness()[0], "ready again after reconnecting")
            samples = scrape(metrics)
            assert value(samples, "sentinel_mqtt_connected") == 1
            assert value(samples, "sentinel_mqtt_connects_total") == 2


async def test_spool_and_tsdb_figures(mosquitto: Mosquitto, victoria: VictoriaMetrics,
                                      tmp_path: Path) -> None:
    hydrants = devices("hydrant_pressure", 5)
    start = time.time() - 10
    messages = [m for r in range(3) for i, d in enumerate(hydrants)
                for m in messages_of(d, round(start + r + i * 1e-3, 3))]
    with HttpReceiver() as hooks:
        loaded = load(tmp_path, mosquitto.port, hooks.url(), store__backend="influxdb",
                      store__influxdb__url=victoria.url, store__influxdb__flush_interval="0.2")
        async with running(loaded) as daemon:
            metrics = DaemonMetrics(daemon)
            await publish(mosquitto.port, messages)
            await eventually(lambda: daemon.ingestor.stats.received == len(messages),
                             "every message committed")
            await eventually(lambda: scrape(metrics)[
                ("sentinel_readings_stored_total", frozenset({("sink", "influxdb")}))]
                == len(messages), "every line forwarded")
            samples = scrape(metrics)
            ready, checks = metrics.readiness()
    assert labelled(samples, "sentinel_readings_stored_total", "sink") == {
        "spool": len(messages), "influxdb": len(messages)}
    assert value(samples, "sentinel_spool_lines") == 0
    assert value(samples, "sentinel_spool_bytes") == 0
    assert value(samples, "sentinel_spool_max_bytes") == loaded.settings.store.spool.max_bytes
    assert value(samples, "sentinel_store_lag_seconds") == 0
    for name in ("spool", "influxdb"):
        assert value(samples, "sentinel_store_write_seconds_count", sink=name) >= 1
    assert ready, checks
    assert check(checks, "spool")["ok"] is True


async def test_spool_full_without_a_tsdb_is_not_ready_until_the_tsdb_appears(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """No TSDB yet: lines stay in the spool, past its warning mark and its bound; the store
    lag grows. Then VictoriaMetrics starts on the configured port and everything drains."""
    hydrants = devices("hydrant_pressure", 4)
    start = time.time() - 5
    messages = [m for r in range(3) for i, d in enumerate(hydrants)
                for m in messages_of(d, round(start + r + i * 1e-3, 3))]
    tsdb_port = free_port()
    with HttpReceiver() as hooks:
        loaded = load(tmp_path, mosquitto.port, hooks.url(), store__backend="influxdb",
                      store__influxdb__url=f"http://127.0.0.1:{tsdb_port}",
                      store__influxdb__flush_interval="0.2",
                      store__influxdb__retry_min_delay="0.1",
                      store__influxdb__retry_max_delay="0.5",
                      store__spool__max_bytes="1024", store__spool__warn_ratio="0.2")
        async with running(loaded) as daemon:
            metrics = DaemonMetrics(daemon)
            assert metrics.readiness()[0]
            published = time.time()
            await publish(mosquitto.port, messages)
            await eventually(lambda: not check(metrics.readiness()[1], "store")["ok"],
                             "the store not writable with the spool full")
            await asyncio.sleep(0.5)
            ready, full = metrics.readiness()
            stuck = scrape(metrics)
            lag_bound = time.time() - published + 1.0
            # The spool's warning raises a system incident (the daemon's own wiring).
            await eventually(lambda: labelled(scrape(metrics), "sentinel_incidents_open",
                                              "severity")["warning"] == 1,
                             "the spool_nearly_full incident")

            with VictoriaMetrics(tmp_path / "late-victoria", port=tsdb_port):
                await eventually(lambda: daemon.ingestor.stats.received == len(messages)
                                 and daemon.sink.health()["spool_rows"] == 0
                                 and metrics.readiness()[0], "everything forwarded")
                drained = scrape(metrics)
                ready_again, checks = metrics.readiness()

    assert not ready
    assert str(check(full, "store")["detail"]).startswith("spool full")
    assert check(full, "spool")["ok"] is False
    assert str(check(full, "spool")["detail"]).startswith("above the warning mark")
    assert check(full, "broker")["ok"] is True
    spooled = value(stuck, "sentinel_readings_stored_total", sink="spool")
    assert 0 < spooled <= len(messages)
    assert value(stuck, "sentinel_spool_lines") == spooled
    assert value(stuck, "sentinel_spool_bytes") >= 1024
    assert value(stuck, "sentinel_readings_stored_total", sink="influxdb") == 0
    assert 0.5 <= value(stuck, "sentinel_store_lag_seconds") <= lag_bound

    assert ready_again, checks
    assert labelled(drained, "sentinel_readings_stored_total", "sink") == {
        "spool": len(messages), "influxdb": len(messages)}
    assert value(drained, "sentinel_spool_lines") == 0
    assert value(drained, "sentinel_store_lag_seconds") == 0
    assert value(drained, "sentinel_messages_received_total") == len(messages)
