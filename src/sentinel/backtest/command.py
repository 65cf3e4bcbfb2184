"""`sentinel backtest`: load, check the question, replay, compare, report.

Every mistake of the operator's (an unknown device, an empty period, a rules file with
errors, a source that cannot be read) is a `BacktestError` with a message key, shown by
`run` as one clear line with exit code 2: never a traceback. Nothing here writes to the
state directory or sends anything: the stores are opened read-only, and the replay has no
escalation or notification stage at all.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from sentinel import zone
from sentinel.backtest.compare import (
    Comparison,
    Diff,
    Summary,
    compare_recorded,
    diff_rule_sets,
    read_recorded,
    summarize,
)
from sentinel.backtest.replay import default_jobs, replay_parallel
from sentinel.backtest.report import Report, write_html, write_json, write_text
from sentinel.backtest.sources import ReadingSource, SourceError, SqliteReadings, VictoriaReadings
from sentinel.config.inventory import Device
from sentinel.errors import ConfigError
from sentinel.i18n import Language, t
from sentinel.loading import Loaded, load_all

__all__ = ["BacktestError", "Options", "run"]

EXIT_OK = 0
EXIT_INPUT = 2
# Without --from on a source that cannot say what it holds (VictoriaMetrics): the last day.
_DEFAULT_PERIOD = 86400.0


class BacktestError(Exception):
    """A problem with the question asked: `key` names the message (backtest.<key>)."""

    def __init__(self, key: str, **values: object) -> None:
        self.key = key
        self.values = values
        super().__init__(key)


@dataclass
class Options:
    """The command line, parsed (see cli.py)."""

    config: Path
    rules: list[Path] = field(default_factory=list)
    against: Path | None = None
    start: str | None = None
    end: str | None = None
    device: str | None = None
    kind: str | None = None
    compound: str | None = None
    grid: str | None = None
    source: str | None = None
    url: str | None = None
    json: bool = False
    html: Path | None = None
    jobs: int | None = None
    lang: Language = "zh"
    # Where the progress bar goes (a terminal only); the report goes to stdout.
    progress_to: TextIO | None = None


def _load(config: Path, rules: list[Path] | None) -> Loaded:
    """The configuration, with the rule files replaced when given (the loader's checks
    apply to them all the same: their messages are the ones `sentinel check` prints)."""
    environ = dict(os.environ)
    if rules:
        environ["SENTINEL_RULES__FILES"] = json.dumps([str(p.resolve()) for p in rules])
    return load_all(config, environ)


def _time(text: str, what: str) -> float:
    try:
        return zone.parse_local(text).timestamp()
    except ValueError:
        raise BacktestError("bad_time", what=what, value=text) from None


def _devices(loaded: Loaded, options: Options) -> set[str] | None:
    """The devices asked about (None: all), or BacktestError naming the unknown one."""
    inventory = loaded.inventory
    if options.device is not None:
        if options.device not in inventory:
            raise BacktestError("unknown_device", device=options.device)
        return {options.device}
    for attr, key in (("kind", "unknown_kind"), ("compound", "unknown_compound"),
                      ("grid", "unknown_grid")):
        wanted = getattr(options, attr)
        if wanted is None:
            continue
        if attr == "kind":
            # A kind asked for covers the kinds that extend it, as the rules do.
            names = set(loaded.kinds.expand([wanted])) if wanted in loaded.kinds else set()
            found = {d.id for d in inventory.values() if d.kind in names}
        else:
            found = {d.id for d in inventory.values() if getattr(d, attr) == wanted}
        if not found:
            known = sorted({str(getattr(d, attr)) for d in inventory.values()})
            raise BacktestError(key, value=wanted, known=", ".join(known[:12]))
        return found
    return None


def _source(loaded: Loaded, options: Options) -> ReadingSource:
    store = loaded.settings.store
    kind = options.source or ("sqlite" if store.backend == "sqlite" else "victoria")
    if kind == "sqlite":
        ingest = loaded.settings.ingest
        return SqliteReadings(store.sqlite.path, ingest.max_age, ingest.max_future_skew)
    if kind != "victoria":
        raise BacktestError("bad_source", value=kind)
    url = options.url or store.influxdb.url
    source = VictoriaReadings(url, loaded.inventory, loaded.kinds)
    try:
        source.check()
    except SourceError as exc:
        if exc.key == "no_export_api":
            # An InfluxDB server (no export API): its query path is not supported.
            raise BacktestError("influx_not_supported", url=url) from None
        raise
    return source


def _period(options: Options, source: ReadingSource, tick: float) -> tuple[float, float]:
    end = _time(options.end, "--to") if options.end else None
    start = _time(options.start, "--from") if options.start else None
    if end is None or start is None:
        span = source.span()
        if end is None:
            end = span[1] + tick if span is not None else time.time()
        if start is None:
            start = span[0] if span is not None else end - _DEFAULT_PERIOD
    if start >= end:
        raise BacktestError("bad_period", start=zone.stamp(start), end=zone.stamp(end))
    return start, end


class _Progress:
    """readings/s and an ETA on one terminal line, redrawn twice a second."""

    def __init__(self, out: TextIO, lang: Language, start: float, end: float,
                 total: int | None = None) -> None:
        self.out = out
        self.lang = lang
        self.total = total  # the source's estimate, for the ETA
        self.count = 0
        self.began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backtest-progress",
                                        daemon=True)
        self._thread.start()

    def update(self, count: int) -> None:
        self.count = count

    def _run(self) -> None:
        last = (time.monotonic(), 0)
        while not self._stop.wait(0.5):
            now = time.monotonic()
            rate = (self.count - last[1]) / (now - last[0]) if now > last[0] else 0.0
            last = (now, self.count)
            line = t("backtest.progress", self.lang, readings=self.count, rate=round(rate),
                     elapsed=round(now - self.began))
            if self.total and self.count:
                # From the average rate so far: steadier than the last half second's.
                average = self.count / (now - self.began)
                left = max(0, self.total - self.count) / average
                line += t("backtest.progress_eta", self.lang,
                          percent=min(100, round(100 * self.count / self.total)),
                          eta=round(left))
            self.out.write("\r" + line + "   ")
            self.out.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.out.write("\r\033[K")
        self.out.flush()


def run(options: Options, out: TextIO) -> int:
    """Run one backtest; the report on `out`, problems on stderr. Returns the exit code."""
    lang = options.lang
    try:
        return _run(options, out)
    except ConfigError as exc:
        print(t("backtest.config_failed", lang, count=len(exc.problems)), file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INPUT
    except (BacktestError, SourceError) as exc:
        print(t(f"backtest.{exc.key}", lang, **exc.values), file=sys.stderr)
        return EXIT_INPUT


def _run(options: Options, out: TextIO) -> int:
    lang = options.lang
    loaded = _load(options.config, options.rules)
    against = None
    if options.against is not None:
        # B is A with the file read last: its rules replace A's of the same name (as a
        # later [rules] file does), so it needs to hold only the rules that differ.
        base = options.rules or list(loaded.settings.rules.files)
        against = _load(options.config, [*base, options.against])
    devices = _devices(loaded, options)
    if options.jobs is not None and options.jobs < 1:
        raise BacktestError("bad_jobs", value=options.jobs)
    source = _source(loaded, options)
    rules_settings = loaded.settings.rules
    start, end = _period(options, source, rules_settings.tick_interval)
    if not source.any_readings(start, end, devices):
        raise BacktestError("no_readings", start=zone.stamp(start), end=zone.stamp(end))
    rule_sets = [loaded.rules] + ([against.rules] if against is not None else [])
    progress = (_Progress(options.progress_to, lang, start, end,
                          source.estimate(start, end, devices))
                if options.progress_to is not None else None)
    began = time.monotonic()
    make_source = _factory(loaded, options, source)
    try:
        results = replay_parallel(rule_sets, loaded.inventory, rules_settings, start, end,
                                  make_source, devices, options.jobs or default_jobs(),
                                  progress.update if progress is not None else None)
    finally:
        if progress is not None:
            progress.close()
    seconds = time.monotonic() - began
    main = results[0]
    if main.readings == 0:
        raise BacktestError("no_readings", start=zone.stamp(start), end=zone.stamp(end))
    incidents = summarize(main.events)
    comparison = _compare_recorded(loaded, incidents, start, end, devices)
    diff: Diff | None = None
    against_incidents = []
    if against is not None:
        against_incidents = summarize(results[1].events)
        diff = diff_rule_sets(incidents, against_incidents, end, rules_settings.tick_interval)
    rules_name = ", ".join(str(p) for p in (options.rules or loaded.settings.rules.files))
    report = Report(start, end, rules_name, _source_name(source), source.has_received_time,
                    main.readings, len(main.devices), seconds, main.events, incidents,
                    comparison, str(options.against) if options.against else None, diff,
                    against_incidents)
    if options.json:
        write_json(report, out)
    elif options.html is not None:
        try:
            with options.html.open("w", encoding="utf-8") as fh:
                write_html(report, fh, lang)
        except OSError as exc:
            raise BacktestError("html_failed", path=options.html, reason=exc.strerror) from None
        print(t("backtest.html_written", lang, path=options.html, incidents=len(incidents)),
              file=out)
    else:
        write_text(report, out, lang)
    return EXIT_OK


def _source_name(source: ReadingSource) -> str:
    if isinstance(source, VictoriaReadings):
        return f"VictoriaMetrics {source.url}"
    if isinstance(source, SqliteReadings):
        return str(source.path)
    return source.name


def _factory(loaded: Loaded, options: Options, source: ReadingSource) -> _MakeSource:
    if isinstance(source, SqliteReadings):
        ingest = loaded.settings.ingest
        return _MakeSource("sqlite", str(source.path), loaded.inventory, None,
                           (ingest.max_age, ingest.max_future_skew))
    assert isinstance(source, VictoriaReadings)
    return _MakeSource("victoria", source.url, loaded.inventory, loaded)


@dataclass(frozen=True)
class _MakeSource:
    """Builds the source again in a replay process (each reads its own devices)."""

    kind: str
    where: str
    inventory: Mapping[str, Device]
    loaded: Loaded | None
    # sqlite: the ingest bounds (max_age, max_future_skew) its reading order relies on.
    bounds: tuple[float, float] = (7 * 86400.0, 300.0)

    def __call__(self) -> ReadingSource:
        if self.kind == "sqlite":
            return SqliteReadings(Path(self.where), *self.bounds)
        assert self.loaded is not None
        return VictoriaReadings(self.where, self.loaded.inventory, self.loaded.kinds)


def _compare_recorded(loaded: Loaded, incidents: Sequence[Summary], start: float, end: float,
                      devices: Collection[str] | None) -> Comparison | None:
    """Against the incidents the daemon recorded, when its state database is there."""
    path = loaded.settings.incidents.path
    if not path.exists():
        return None
    try:
        recorded = read_recorded(path, start, end, sorted(devices) if devices else None)
    except (sqlite3.Error, OSError, KeyError, ValueError, TypeError):
        # An unreadable or older state file: the report goes on without the comparison.
        return None
    return compare_recorded(incidents, recorded, loaded.settings.rules.tick_interval)
