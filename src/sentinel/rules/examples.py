"""Rule examples: run the readings a rule file gives with a rule through the real engine.

Like `promtool test rules`: a rule may carry `[[rule.example]]` entries — readings with
times relative to a start, and the incident events they must produce (or none) — and
`sentinel check` runs them all. The driver here is pure: a fresh `RuleEngine` and
`IncidentBook` on a simulated clock that ticks every second, the same calls per reading
and per tick as `IncidentService._evaluate` and `tick` make. No I/O, no writes.

The incident book is handed in (`Book`, which `IncidentBook` is): `incidents` imports
`rules`, so `rules` may not import `incidents` back (tests/test_import_graph.py). The
caller above both — `sentinel check` in cli.py, a test, the backtest — passes
`IncidentBook`.

`simulate()` is the part a backtest can share (`sentinel.backtest.replay` may switch to it):
readings in, the incident book's events out, ticks in the gaps between readings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from sentinel import zone
from sentinel.config.inventory import Device, DeviceSettings, SettingsRecord
from sentinel.i18n import Language, event_name, t
from sentinel.rules.engine import RuleEngine, Signal
from sentinel.rules.model import (
    EVENT_SHORT_NAMES,
    ExampleDevice,
    ExpectedEvent,
    RuleExample,
    RulesConfig,
    RuleSpec,
    short_errors,
)
from sentinel.types import Reading, Severity

# Simulated seconds between ticks: the daemon's default `[rules] tick_interval`, and fine
# enough that a `for` or a clear hold ends on the second the rule file names.
TICK = 1.0
# How far past its last time a failed example is run on, to show what happened late.
LOOK_AHEAD = 600.0


class BookIncident(Protocol):
    """What the driver reads of an incident (sentinel.incidents.model.Incident)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...


class BookEvent(Protocol):
    """What the driver reads of an incident event (sentinel.incidents.model.IncidentEvent)."""

    @property
    def incident_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def severity(self) -> Severity: ...
    @property
    def data(self) -> Mapping[str, Any]: ...


class Book(Protocol):
    """The incident book's pure part: signals and ticks in, incidents and events out."""

    def apply(self, signals: Iterable[Signal], now: float) -> None: ...
    def tick(self, now: float) -> None: ...
    def take_changes(self) -> tuple[Sequence[BookIncident], Sequence[BookEvent],
                                    Mapping[str, list[float]]]: ...


# How to make a fresh book for a rule set and devices: `IncidentBook` itself.
NewBook = Callable[[RulesConfig, Mapping[str, Device]], Book]


def simulate(rules: RulesConfig, devices: Mapping[str, Device], readings: Iterable[Reading],
             start: float, until: float, book: Book, tick: float = TICK
             ) -> Iterator[tuple[BookEvent, BookIncident]]:
    """Feed readings (in received order) and ticks to a fresh engine and to `book` (fresh,
    made for the same rules and devices); yield each incident event with its incident.

    Ticks fall every `tick` seconds from `start` through `until`, in the gaps between
    readings; a tick at the same instant as a reading comes after it. Offline checks start
    at `start` (no start-up grace: an example describes the rule, not a restart).
    """
    engine = RuleEngine(rules, devices, start, startup_grace=0.0)
    known: dict[str, BookIncident] = {}
    ticks = 0

    # The engine's dirty set is never taken: nothing persists here, and it is bounded by
    # (rule, device) pairs, while take_dirty() walks every device's last-seen time.
    def changes() -> Iterator[tuple[BookEvent, BookIncident]]:
        incidents, events, _ = book.take_changes()
        known.update((inc.id, inc) for inc in incidents)
        for event in events:
            yield event, known[event.incident_id]
        for event in events:
            if event.type == "resolved":  # final: memory stays bounded over a long replay
                known.pop(event.incident_id, None)

    def tick_at(now: float) -> None:
        signals = engine.tick(now)
        if signals:
            book.apply(signals, now)
        book.tick(now)

    # Tick times are computed from their index, not summed, so none drifts off its second.
    for r in readings:
        while (now := start + ticks * tick) < r.received_at and now <= until:
            tick_at(now)
            ticks += 1
            yield from changes()
        signals = engine.on_readings([r])
        if signals:
            book.apply(signals, r.received_at)
        yield from changes()
    while (now := start + ticks * tick) <= until:
        tick_at(now)
        ticks += 1
        yield from changes()


@dataclass(frozen=True, slots=True)
class Happened:
    """An incident event as an example states it: seconds after the start, short name."""

    at: float
    event: str
    severity: Severity
    rule: str | None = None
    outcome: str | None = None

    def matches(self, want: ExpectedEvent) -> bool:
        return (math.isclose(self.at, want.at, abs_tol=1e-6) and self.event == want.event
                and (want.severity is None or want.severity == self.severity)
                and (want.rule is None or want.rule == self.rule)
                and (want.outcome is None or want.outcome == self.outcome))


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """One example run: what it expected, what happened, or why it could not run."""

    rule: str
    example: RuleExample
    got: tuple[Happened, ...] = ()
    # A catalogue key and its values: the example cannot run as written.
    problem: tuple[str, Mapping[str, object]] | None = None
    # Index of the first expected/got pair that differs (None: the example holds).
    differs_at: int | None = None
    # For a failed example: what happens after its last time (within LOOK_AHEAD).
    later: tuple[Happened, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None and self.differs_at is None


def run_examples(rules: RulesConfig, inventory: Mapping[str, Device], new_book: NewBook,
                 fields: Mapping[str, Collection[str]] | None = None
                 ) -> tuple[list[ExampleResult], int]:
    """Run every example of every enabled rule: (results, examples of disabled rules).

    `fields` (kind → its field names) lets a misspelt field fail the example instead of
    being ignored by the rule (which would make an `expect_none` example pass vacuously).
    """
    results: list[ExampleResult] = []
    skipped = 0
    for rule in rules.rule:
        if not rule.enabled:
            skipped += len(rule.example)
            continue
        results += [run_example(rules, rule, ex, inventory, new_book, fields)
                    for ex in rule.example]
    return results, skipped


def run_example(rules: RulesConfig, rule: RuleSpec, example: RuleExample,
                inventory: Mapping[str, Device], new_book: NewBook,
                fields: Mapping[str, Collection[str]] | None = None) -> ExampleResult:
    """Run one example of `rule` against the whole rule set (rules that feed the same
    incident, or that a `still` rule follows, act as they do live); compare the events of
    the rule's incident with what the example expects."""
    device = _device(rule, example.device, inventory)
    if not isinstance(device, Device):  # (a Device is a NamedTuple: test for it, not tuple)
        return ExampleResult(rule.name, example, problem=device)
    if fields is not None and device.kind in fields:
        for reading in example.readings:
            unknown = sorted(set(reading.values) - set(fields[device.kind]))
            if unknown:
                return ExampleResult(rule.name, example, problem=(
                    "examples.unknown_field", {"field": ", ".join(unknown),
                                               "kind": device.kind}))
    start = zone.parse_local(example.start).timestamp()
    readings = [Reading(device.id, device.kind, start + r.at, start + r.at, dict(r.values))
                for r in sorted(example.readings, key=lambda r: r.at)]
    until = max([example.ticks_until or 0.0, *(r.at for r in example.readings),
                 *(e.at for e in example.expect)])
    devices = {device.id: device}

    def happened(until: float) -> tuple[Happened, ...]:
        return tuple(
            Happened(round(event.ts - start, 3), EVENT_SHORT_NAMES.get(event.type, event.type),
                     event.severity, event.data.get("rule"), event.data.get("outcome"))
            for event, incident in simulate(rules, devices, readings, start, start + until,
                                            new_book(rules, devices))
            if incident.name == rule.incident_name)

    got = happened(until)
    want = example.expect
    differs = next((i for i in range(max(len(want), len(got)))
                    if i >= len(want) or i >= len(got) or not got[i].matches(want[i])), None)
    # A failed example runs on for a while: an event expected too early is then shown where
    # it does happen, rather than only as missing. (The clock is simulated: this is cheap.)
    later = happened(until + LOOK_AHEAD)[len(got):] if differs is not None else ()
    return ExampleResult(rule.name, example, got, differs_at=differs, later=later)


def _device(rule: RuleSpec, spec: str | ExampleDevice, inventory: Mapping[str, Device]
            ) -> Device | tuple[str, Mapping[str, object]]:
    if isinstance(spec, str):
        device = inventory.get(spec)
        if device is None:
            return "examples.unknown_device", {"device": spec}
    else:
        try:
            settings = DeviceSettings(**SettingsRecord.model_validate(spec.settings).model_dump())
        except ValidationError as exc:
            text = "; ".join(f"{loc}: {msg}" for loc, msg in short_errors(exc))
            return "examples.bad_settings", {"errors": text}
        device = Device(spec.id, spec.kind or rule.kinds[0], spec.community, spec.compound,
                        spec.grid, "example", building=spec.building, settings=settings)
    if device.kind not in rule.kinds:
        return "examples.wrong_kind", {"device": device.id, "kind": device.kind}
    return device


# -- for people ---------------------------------------------------------------------------

def report(results: list[ExampleResult], skipped: int, lang: Language = "zh"
           ) -> tuple[bool, list[str]]:
    """(all held, lines for `sentinel check`): a summary line, then each failed example
    with its rule, its name, and the expected and actual events with their times."""
    failed = [r for r in results if not r.ok]
    if not results and not skipped:
        return True, []
    lines = [t("examples.failed", lang, failed=len(failed), total=len(results)) if failed
             else t("examples.ok", lang, total=len(results))]
    if skipped:
        lines[0] += t("examples.skipped", lang, count=skipped)
    for res in failed:
        lines.append("  " + t("examples.which", lang, rule=res.rule, example=res.example.name))
        if res.problem is not None:
            key, values = res.problem
            lines.append("      " + t(key, lang, **values))
            continue
        want = [_expected_text(e, lang) for e in res.example.expect]
        got = [_happened_text(h, res.rule, lang) for h in res.got]
        nothing = t("examples.nothing", lang)
        lines.append("      " + t("examples.expected", lang, events="; ".join(want) or nothing))
        lines.append("      " + t("examples.got", lang, events="; ".join(got) or nothing))
        i = res.differs_at
        assert i is not None
        lines.append("      " + t("examples.first_difference", lang, number=i + 1,
                                  expected=want[i] if i < len(want) else nothing,
                                  got=got[i] if i < len(got) else nothing))
        if res.later:
            lines.append("      " + t("examples.later", lang, events="; ".join(
                _happened_text(h, res.rule, lang) for h in res.later)))
    return not failed, lines


def _event_text(at: float, event: str, severity: Severity | None, rule: str | None,
                outcome: str | None, lang: Language) -> str:
    long_name = next((k for k, v in EVENT_SHORT_NAMES.items() if v == event), event)
    parts = [relative(at), event_name(long_name, lang)]
    if severity is not None:
        parts.append(t(f"severity.{severity.label}", lang))
    if outcome is not None:
        parts.append(f"({t(f'outcome.{outcome}', lang)})")
    if rule is not None:
        parts.append(t("examples.by_rule", lang, rule=rule))
    return " ".join(parts)


def _expected_text(e: ExpectedEvent, lang: Language) -> str:
    return _event_text(e.at, e.event, e.severity, e.rule, e.outcome, lang)


def _happened_text(h: Happened, rule: str, lang: Language) -> str:
    # The severity always (the most common difference); the rule when another rule of the
    # same incident acted (fall_still raising the fall).
    return _event_text(h.at, h.event, h.severity, h.rule if h.rule != rule else None,
                       h.outcome, lang)


def relative(seconds: float) -> str:
    """Seconds after an example's start as a rule file writes them: 45s, 1m30s, 2h."""
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    return text or "0s"
