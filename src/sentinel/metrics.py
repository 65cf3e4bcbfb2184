"""`/metrics` and `/readyz` for the daemon: the only module that imports prometheus_client.

The stages keep plain counters and `LatencyHistogram`s where things happen (see
`sentinel.stats`); a collector on a registry of our own (never the global one) reads them
when Prometheus scrapes, so the hot paths never touch a Prometheus object. Everything is
read on the event loop, where the stages write it: a scrape sees one consistent moment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sentinel.clock import Clock
from sentinel.notify.sender import channel_label
from sentinel.stats import ALARM_BUCKETS, NOTIFY_BUCKETS, LatencyHistogram
from sentinel.store.spool import SpoolingSink
from sentinel.store.sqlite import SqliteReadingStore
from sentinel.types import RejectReason, Severity

if TYPE_CHECKING:
    from sentinel.runtime import Daemon

__all__ = ["CONTENT_TYPE", "DaemonMetrics"]

# Kinds of escalation step a policy can take (resolution messages are not steps).
_STEP_KINDS = ("alert", "escalated", "repeat", "raised", "ack_expired")
# A store write or rules commit in one batch for longer than this is stuck: not ready.
_STALLED = 10.0
_EMPTY_NOTIFY = LatencyHistogram(NOTIFY_BUCKETS)
_EMPTY_ALARM = LatencyHistogram(ALARM_BUCKETS)
# The classic text format: every Prometheus (and VictoriaMetrics, Telegraf...) reads it, and
# our names need none of the newer format's escaping, so the body is the same.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DaemonMetrics:
    """Prometheus exposition and readiness checks of one running daemon."""

    def __init__(self, daemon: Daemon, clock: Clock | None = None) -> None:
        self._daemon = daemon
        # By default the clock the ingest stage stamps its progress with (the daemon's).
        self._clock = clock if clock is not None else daemon.ingestor.clock
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(daemon, self._clock))

    @property
    def registry(self) -> CollectorRegistry:
        return self._registry

    def render(self) -> tuple[bytes, str]:
        """The body and content type of a `GET /metrics` answer (text format 0.0.4)."""
        return generate_latest(self._registry), CONTENT_TYPE

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """(ready, checks) for `GET /readyz`; each check is {"ok": bool, "detail": str}."""
        broker, store, spool = self._broker(), self._store(), self._spool()
        ready = all(c["ok"] is True for c in (broker, store, spool))
        return ready, {"broker": broker, "store": store, "spool": spool}

    def _broker(self) -> dict[str, object]:
        source = self._daemon.source
        if source.connected:
            return _check(True, "connected and subscribed")
        return _check(False, f"not connected: {source.last_error or 'connecting'}")

    def _store(self) -> dict[str, object]:
        # The ingest stage retries failing writes for ever: what it sees is the honest
        # answer, for the readings store and for the state database the rules commit to.
        stats = self._daemon.ingestor.stats
        if "store_write" in stats.failing:
            return _check(False, f"readings store write failing: {stats.failing['store_write']}")
        if "rules_gate" in stats.failing:
            return _check(False, f"incident state commit failing: {stats.failing['rules_gate']}")
        sink = self._daemon.sink
        if isinstance(sink, SpoolingSink) and sink.full:
            return _check(False, f"spool full ({sink.size_bytes} of {sink.max_bytes} bytes):"
                                 " writes wait for the time-series database")
        now = self._clock.monotonic()
        for what, since in stats.busy_since.items():
            if now - since > _STALLED:
                name = "readings store write" if what == "store_write" else "incident commit"
                return _check(False, f"{name} pending for {now - since:.0f} s")
        if stats.last_commit is None:
            return _check(True, "no batch written yet")
        return _check(True, f"last batch committed {now - stats.last_commit:.1f} s ago")

    def _spool(self) -> dict[str, object]:
        sink = self._daemon.sink
        if not isinstance(sink, SpoolingSink):
            return _check(True, "no spool (embedded store)")
        detail = f"{sink.rows} lines, {sink.size_bytes} of {sink.max_bytes} bytes"
        if sink.nearly_full:
            return _check(False, f"above the warning mark: {detail}")
        return _check(True, detail)


def _check(ok: bool, detail: str) -> dict[str, object]:
    return {"ok": ok, "detail": detail}


class _Collector:
    """Reads the stages' statistics at scrape time."""

    def __init__(self, daemon: Daemon, clock: Clock) -> None:
        self._daemon = daemon
        self._clock = clock
        # Every configured channel is shown from the start (at 0), by its label only.
        self._channels = sorted({channel_label(url) for contact in
                                 daemon.escalation.contacts.values()
                                 for url in contact.channels})

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._store()
        yield from self._rules()
        yield from self._notify()
        yield from _district(self._daemon)
        started = GaugeMetricFamily("sentinel_start_time_seconds",
                                    "When the daemon started, in epoch seconds.")
        started.add_metric([], self._daemon.started_at)
        yield started

    def _ingest(self) -> Iterator[Metric]:
        daemon = self._daemon
        stats = daemon.ingestor.stats
        yield CounterMetricFamily(
            "sentinel_messages_received_total",
            "MQTT messages taken through the pipeline and acknowledged (accepted or "
            "dead-lettered).", value=stats.received)
        rejected = dict.fromkeys((r.value for r in RejectReason), 0)
        for reason, n in stats.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
        sink = daemon.sink
        if isinstance(sink, SpoolingSink):
            rejected[RejectReason.STORE_REJECTED.value] += sink.rejected
        yield _counter("sentinel_messages_rejected_total",
                       "Messages and readings dead-lettered, by reason.", "reason", rejected)
        yield _counter("sentinel_messages_ignored_total",
                       "Messages acknowledged without a reading or a dead letter, by cause "
                       "(excluded_topic: a topic every matching profile excludes; no_value: "
                       "every field an `absent` word).", "cause",
                       {"excluded_topic": stats.ignored_topic, "no_value": stats.no_value})
        yield _counter("sentinel_readings_accepted_total",
                       "Readings decoded, committed and acknowledged, by device kind.",
                       "kind", stats.stored_by_kind)
        yield _counter("sentinel_readings_dropped_total",
                       "Readings and dead letters not stored, by cause (disk_full: the "
                       "state disk was full; alarms were kept).", "reason",
                       {"disk_full": 0, **stats.dropped})
        queued = GaugeMetricFamily("sentinel_ingest_queue_messages",
                                   "Messages received from the broker, not yet committed.")
        queued.add_metric([], daemon.source.pending())
        yield queued
        connected = GaugeMetricFamily("sentinel_mqtt_connected",
                                      "1 while connected and subscribed to the broker.")
        connected.add_metric([], 1.0 if daemon.source.connected else 0.0)
        yield connected
        yield CounterMetricFamily("sentinel_mqtt_connects_total",
                                  "Connections made to the broker.", value=daemon.source.connects)

    def _store(self) -> Iterator[Metric]:
        sink = self._daemon.sink
        stored: dict[str, int] = {}
        writes: dict[str, LatencyHistogram] = {}
        lag = 0.0
        if isinstance(sink, SqliteReadingStore):
            stored["sqlite"] = sink.stored
            writes["sqlite"] = sink.write_seconds
        elif isinstance(sink, SpoolingSink):
            stored["spool"] = sink.spooled
            stored["influxdb"] = sink.forwarded
            writes["spool"] = sink.write_seconds
            writes["influxdb"] = sink.forward_seconds
            lag = sink.lag(self._clock.now())
        yield _counter("sentinel_readings_stored_total",
                       "Readings written, by sink: sqlite (embedded store), spool (durable "
                       "queue), influxdb (forwarded from the spool and accepted).",
                       "sink", stored)
        yield _histogram("sentinel_store_write_seconds",
                         "Duration of one batch write, by sink (influxdb: retries included).",
                         "sink", writes)
        gauge = GaugeMetricFamily(
            "sentinel_store_lag_seconds",
            "Age of the oldest reading not yet in the time-series database (0 without a "
            "spool or when it is empty).")
        gauge.add_metric([], lag)
        yield gauge
        if isinstance(sink, SpoolingSink):
            for name, text, value in (
                    ("sentinel_spool_lines", "Lines waiting in the spool.", sink.rows),
                    ("sentinel_spool_bytes", "Bytes of line protocol waiting in the spool.",
                     sink.size_bytes),
                    ("sentinel_spool_max_bytes", "Spool size at which writes wait.",
                     sink.max_bytes)):
                gauge = GaugeMetricFamily(name, text)
                gauge.add_metric([], value)
                yield gauge

    def _rules(self) -> Iterator[Metric]:
        incidents = self._daemon.incidents
        yield _histogram("sentinel_rule_evaluation_seconds",
                         "Time the ingest gate waited per batch for rule evaluation and the "
                         "incident commit.", None, {"": incidents.eval_seconds})
        yield CounterMetricFamily("sentinel_rule_readings_evaluated_total",
                                  "Readings evaluated by the rules.", value=incidents.evaluated)
        open_by = dict.fromkeys((s.label for s in Severity), 0)
        if incidents.book is not None:
            for inc in incidents.book.open.values():
                open_by[inc.severity.label] += 1
        gauge = GaugeMetricFamily("sentinel_incidents_open",
                                  "Incidents not resolved, by severity.", labels=["severity"])
        for severity, n in open_by.items():
            gauge.add_metric([severity], n)
        yield gauge

    def _notify(self) -> Iterator[Metric]:
        escalation = self._daemon.escalation
        dispatcher = escalation.dispatcher
        for name, text, counts in (
                ("sentinel_notifications_sent_total",
                 "Messages a receiver accepted, by channel (scheme, and host where public).",
                 dispatcher.sent_by_channel),
                ("sentinel_notifications_failed_total",
                 "Delivery attempts that failed (each retry counts), by channel.",
                 dispatcher.failed_by_channel)):
            yield _counter(name, text, "channel", {**dict.fromkeys(self._channels, 0), **counts})
        yield _counter("sentinel_escalation_steps_total",
                       "Escalation steps and reminders taken, by the kind of notice they sent.",
                       "kind", {**dict.fromkeys(_STEP_KINDS, 0), **escalation.steps_taken})
        firsts = {s.label: escalation.first_notification.get(s.label, _EMPTY_NOTIFY)
                  for s in Severity}
        yield _histogram("sentinel_first_notification_seconds",
                         "From an incident's opening (its alarm reading's time) to the first "
                         "delivery that reached anyone for it, by severity.", "severity", firsts)
        # The per-alert record against GB 50440, with bucket edges at its 3 s and 10 s.
        incidents = self._daemon.incidents
        for name, text, table in (
                ("sentinel_alarm_forward_seconds",
                 "From receiving an alarm's message to handing its first notification to a "
                 "channel (GB 50440: within 3 s), by life_safety.", incidents.forward_seconds),
                ("sentinel_alarm_accepted_seconds",
                 "From an alarm's device time (its receipt when the device sends no time) to "
                 "the first delivery a receiver accepted (GB 50440: within 10 s), by "
                 "life_safety.", incidents.alarm_seconds)):
            yield _histogram(name, text, "life_safety",
                             {label: table.get(label, _EMPTY_ALARM)
                              for label in ("true", "false")})


def _district(daemon: Daemon) -> Iterator[Metric]:
    commands = daemon.district
    if commands is None:
        return
    yield _counter("sentinel_district_commands_total",
                   "Commands from the district executed, by type.", "type",
                   {**dict.fromkeys(("ack", "note", "http", "resync"), 0), **commands.executed})
    yield _counter("sentinel_district_commands_refused_total",
                   "Commands from the district refused, by reason (forged, community, "
                   "expired, malformed...).", "reason", commands.refused)
    for name, text, value in (
            ("sentinel_district_commands_replayed_total",
             "Commands seen before, answered again without acting.", commands.replayed),
            ("sentinel_district_commands_overflow_total",
             "Commands left unacknowledged because the command queue was full (the broker "
             "sends them again).", commands.overflow)):
        family = CounterMetricFamily(name, text)
        family.add_metric([], value)
        yield family


def _counter(name: str, text: str, label: str, values: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, text, labels=[label])
    for key in sorted(values):
        family.add_metric([key], values[key])
    return family


def _histogram(name: str, text: str, label: str | None,
               values: Mapping[str, LatencyHistogram]) -> Metric:
    family = HistogramMetricFamily(name, text, labels=[label] if label else [])
    for key in sorted(values):
        hist = values[key]
        family.add_metric([key] if label else [], _buckets(hist.cumulative()), hist.sum)
    return family


def _buckets(cumulative: Iterable[tuple[float, int]]) -> list[tuple[str, float]]:
    # `le` spelled as prometheus_client spells it ("0.5", "10.0", "+Inf").
    return [("+Inf" if math.isinf(bound) else repr(float(bound)), float(n))
            for bound, n in cumulative]
