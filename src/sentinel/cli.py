"""The `sentinel` command: run the daemon, check configuration, simulate, inspect.

Signal handling lives here; everything else is imported from the stages.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentinel import __version__, zone
from sentinel.config.inventory import collector_paused
from sentinel.control.client import ControlError
from sentinel.district.config import is_district_file
from sentinel.errors import ConfigError
from sentinel.i18n import Language, t
from sentinel.loading import Loaded, load_all
from sentinel.log import configure_logging, truncate
from sentinel.timeline import (
    area_text,
    deadletter_detail,
    place_text,
    reason_word,
    status_word,
    timeline_lines,
    values_text,
)

if TYPE_CHECKING:
    from sentinel.config.discovery import Broker
    from sentinel.control.client import ControlClient
    from sentinel.control.feed import Filter
    from sentinel.stored import StoredState

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_CONFIG = 2


def _default_config() -> str:
    if "SENTINEL_CONFIG" in os.environ:
        return os.environ["SENTINEL_CONFIG"]
    local = Path("config/sentinel.toml")
    return str(local) if local.exists() else "/etc/sentinel/sentinel.toml"


def _lang(args: argparse.Namespace) -> Language:
    lang = args.lang or os.environ.get("SENTINEL_LANG") or "zh"
    return "en" if lang.startswith("en") else "zh"


def _load(args: argparse.Namespace) -> Loaded:
    path = Path(args.config)
    # The district daemon's file (its [[community]] list) is read by its own loader, so
    # `sentinel ack/incidents/status -c district.toml` act on the district's own incidents.
    if is_district_file(path):
        from sentinel.district.service import load_district

        return load_district(path)
    return load_all(path)


def _load_or_report(args: argparse.Namespace, lang: Language) -> Loaded | None:
    """Load everything, or print every problem found and return None."""
    try:
        return _load(args)
    except ConfigError as exc:
        print(t("check.failed", lang, count=len(exc.problems)), file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


# -- commands ---------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    lang = _lang(args)
    loaded = _load_or_report(args, lang)
    if loaded is None:
        return EXIT_CONFIG
    print(t("check.ok", lang, devices=len(loaded.inventory), profiles=len(loaded.profiles),
            kinds=len(loaded.kinds.names())))
    print(t("check.oncall", lang, contacts=len(loaded.oncall.contact),
            rosters=len(loaded.oncall.roster), policies=len(loaded.policies.policy)))
    if loaded.warnings:
        print(t("check.warnings", lang, count=len(loaded.warnings)))
        for line in _warning_lines(loaded, lang):
            print(f"  {line}")
    # The rules' own examples (rules/examples.py), after the configuration is known good.
    from sentinel.incidents.model import IncidentBook
    from sentinel.rules.examples import report, run_examples
    fields = {kind: tuple(loaded.kinds[kind].fields) for kind in loaded.kinds.names()}
    held, lines = report(*run_examples(loaded.rules, loaded.inventory, IncidentBook, fields),
                         lang=lang)
    for line in lines:
        print(line)
    return EXIT_PROBLEMS if not held or (loaded.warnings and args.strict) else EXIT_OK


def _warning_lines(loaded: Loaded, lang: Language) -> list[str]:
    """`check`'s warnings; on-call coverage gaps in words (role, area, local weekday and
    time), the rest as the loader wrote them."""
    from sentinel.escalation.roster import coverage_gaps
    from sentinel.i18n import role_name
    if lang == "en" or not any(w.reason.startswith("nobody on duty") for w in loaded.warnings):
        return [str(w) for w in loaded.warnings]
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

    def at(ts: float) -> str:
        local = zone.local(ts)
        return f"{t('weekday.' + days[local.weekday()], lang)} {local:%H:%M}"

    gaps = [g for g in coverage_gaps(loaded.oncall, loaded.policies, loaded.inventory)
            if g.role.value != "elder_contact"]
    entries = {f"{g.role.value} {g.area}" for g in gaps}
    lines = [str(w) for w in loaded.warnings if w.entry not in entries]
    lines += [t("check.gap", lang, role=role_name(g.role.value, lang),
                area=area_text(g.area, lang), start=at(g.start_at), end=at(g.end_at))
              for g in gaps]
    return lines


def cmd_oncall(args: argparse.Namespace) -> int:
    from sentinel.escalation.roster import Rosters
    from sentinel.i18n import role_name

    lang = _lang(args)
    loaded = _load_or_report(args, lang)
    if loaded is None:
        return EXIT_CONFIG
    try:
        at = _parse_time(args.at)
    except ValueError:
        print(t("oncall.bad_time", lang, value=args.at), file=sys.stderr)
        return EXIT_PROBLEMS
    rows = Rosters(loaded.oncall).table(at, loaded.inventory)
    if args.all:
        return _oncall_everyone(args, loaded, rows, at, lang)
    if args.json:
        for row in rows:
            print(json.dumps({"role": row.role.value, "area": row.area,
                              "contacts": [{"id": c.id, "name": c.name, "phone": c.phone}
                                           for c in row.contacts],
                              "until": row.until}, ensure_ascii=False))
        return EXIT_OK
    print(t("oncall.header", lang, at=_when(at)))
    nobody = t("oncall.nobody", lang)
    for row in rows:
        # The contact id too: `assign`, `board --person` and `--actor` take it.
        people = ", ".join(f"{c.name} ({c.id}, {c.phone})" if c.phone else
                           f"{c.name} ({c.id})" for c in row.contacts) or nobody
        until = f"  → {_when(row.until)}" if row.until is not None else ""
        print(f"{role_name(row.role.value, lang)} | {area_text(row.area, lang)} | "
              f"{people}{until}")
    return EXIT_OK


def _oncall_everyone(args: argparse.Namespace, loaded: Loaded, rows: Sequence[Any],
                     at: float, lang: Language) -> int:
    """`oncall --all`: every contact of the on-call file, on duty at `at` or not, with the
    roles and areas their rosters give them."""
    from sentinel.i18n import role_name
    on_duty = {c.id for row in rows for c in row.contacts}
    if not args.json:
        print(t("oncall.all_header", lang, at=_when(at), count=len(loaded.oncall.contact)))
    for contact, roles, areas in _contact_areas(loaded):
        if args.json:
            print(json.dumps({"id": contact.id, "name": contact.name, "phone": contact.phone,
                              "roles": roles, "areas": areas,
                              "on_duty": contact.id in on_duty}, ensure_ascii=False))
            continue
        duty = t("oncall.on_duty" if contact.id in on_duty else "oncall.off_duty", lang)
        print(f"{contact.id} | {contact.name} | "
              f"{', '.join(role_name(r, lang) for r in roles)} | "
              f"{', '.join(area_text(a, lang) for a in areas) or '-'} | "
              f"{contact.phone or '-'} | {duty}")
    return EXIT_OK


def _contact_areas(loaded: Loaded) -> list[tuple[Any, list[str], list[str]]]:
    """(contact, roles, areas) of every contact: its own role and the rosters it is in,
    their grids and compounds ("grid SB-G03", "compound 水贝花园"; none: "community")."""
    out = []
    for contact in loaded.oncall.contact:
        roles = [contact.role.value]
        areas: list[str] = []
        for roster in loaded.oncall.roster:
            members = {m for shift in roster.shift for m in shift.members}
            members |= {o.contact for o in roster.override}
            if contact.id not in members:
                continue
            if roster.role.value not in roles:
                roles.append(roster.role.value)
            found = [f"grid {g}" for g in roster.grids] + \
                [f"compound {c}" for c in roster.compounds] or ["community"]
            areas += [a for a in found if a not in areas]
        out.append((contact, roles, areas))
    return out


def _person(args: argparse.Namespace, text: str, lang: Language) -> str | None:
    """A contact of the on-call file by id, or by exact name when one contact has it;
    None (and why, printed) otherwise."""
    loaded: Loaded = args.loaded
    contacts = loaded.oncall.contact
    if any(c.id == text for c in contacts):
        return text
    named: list[str] = [c.id for c in contacts if c.name == text]
    if len(named) == 1:
        return named[0]
    if named:
        print(t("person.ambiguous", lang, name=text, ids=", ".join(named)), file=sys.stderr)
    else:
        print(t("assign.unknown_person", lang, person=text), file=sys.stderr)
        print(t("person.see_oncall", lang), file=sys.stderr)
    return None


def _acting_client(args: argparse.Namespace, lang: Language) -> ControlClient | int:
    """The daemon's client for a command that acts on an incident, with `args.actor`
    settled (a contact id, or cli:<user>); an exit code when either cannot be had."""
    client = _control_client(args, lang)
    if isinstance(client, int):
        return client
    args.actor = _actor(args, lang, args.actor)
    return EXIT_PROBLEMS if args.actor is None else client


def _actor(args: argparse.Namespace, lang: Language, value: str | None,
           option: str = "--actor") -> str | None:
    """Who acts from the command line, as the audit trail records it: a contact id of the
    on-call file, or (omitted) the OS account as cli:<user>. A name typed here would be
    recorded as if that person had acted: refused, with the ids to choose from."""
    if value is None:
        return f"cli:{getpass.getuser()}"
    loaded: Loaded = args.loaded
    ids = [c.id for c in loaded.oncall.contact]
    if value in ids:
        return value
    print(t("actor.refused", lang, option=option, value=value, ids=", ".join(ids),
            user=getpass.getuser()), file=sys.stderr)
    return None


def _install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def cmd_run(args: argparse.Namespace) -> int:
    lang = _lang(args)
    if is_district_file(Path(args.config)):
        print(t("run.district_file", lang, config=args.config), file=sys.stderr)
        return EXIT_CONFIG
    with collector_paused():
        loaded = _load_or_report(args, lang)
        # The configuration lives as long as the daemon: out of the cyclic collector's way
        # before it runs again, so that no collection walks the whole inventory (0.1 to
        # 0.15 s each with 100,000 devices, containers it tracks). run_daemon does the same
        # with the rest.
        gc.freeze()
    if loaded is None:
        return EXIT_CONFIG
    log_settings = loaded.settings.log
    configure_logging(log_settings.level, log_settings.format)
    from sentinel.app import run_daemon

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop_signals(stop)
        await run_daemon(loaded, stop)

    asyncio.run(main())
    return EXIT_OK


def cmd_district(args: argparse.Namespace) -> int:
    """The street office's daemon: every community box's stream on the district broker."""
    lang = _lang(args)
    from sentinel.district.service import load_district, run_district

    try:
        loaded = load_district(Path(args.config))
    except ConfigError as exc:
        print(t("check.failed", lang, count=len(exc.problems)), file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        # As `sentinel check` words it: the street office's people and policies, and the
        # gaps in their rosters.
        print(t("check.oncall", lang, contacts=len(loaded.oncall.contact),
                rosters=len(loaded.oncall.roster), policies=len(loaded.policies.policy)))
        if loaded.warnings:
            print(t("check.warnings", lang, count=len(loaded.warnings)))
            for line in _warning_lines(loaded, lang):
                print(f"  {line}")
        return EXIT_OK
    log_settings = loaded.settings.log
    configure_logging(log_settings.level, log_settings.format)

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop_signals(stop)
        await run_district(loaded, stop)

    asyncio.run(main())
    return EXIT_OK


def cmd_deadletter(args: argparse.Namespace) -> int:
    lang = _lang(args)
    client = _reader(args, lang)
    if isinstance(client, int):
        return client
    try:
        rows = client.deadletters(args.limit, args.reason)
    except ControlError as exc:
        return _report_control_error(exc, lang)
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return EXIT_OK
    if not rows:
        print(t("deadletter.none", lang))
        return EXIT_OK
    print(t("deadletter.header", lang))
    for row in rows:
        when = zone.short(row["received_ms"] / 1000)
        reason = str(row["reason"])
        print(f"{when} | {reason_word(reason, lang)} | {row['device_id'] or '-'} | "
              f"{row['topic']} | {deadletter_detail(reason, str(row['detail']), lang)} | "
              f"{truncate(row['payload'].encode(), 80)}")
    return EXIT_OK


def _when(ts: float | None) -> str:
    return zone.short(ts)


def cmd_incidents(args: argparse.Namespace) -> int:
    from sentinel.i18n import incident_title

    lang = _lang(args)
    client = _reader(args, lang)
    if isinstance(client, int):
        return client
    if args.action == "show":
        try:
            found = client.get(args.id)
        except ControlError as exc:
            if exc.kind == "not_found":
                print(t("incidents.not_found", lang, id=args.id), file=sys.stderr)
                return EXIT_PROBLEMS
            return _report_control_error(exc, lang, args.id)
        if args.json:
            print(json.dumps({"incident": found["incident"], "events": found["audit"],
                              "latency": found.get("latency")},
                             ensure_ascii=False, default=str))
            return EXIT_OK
        # A readable timeline; the machine form (epoch times, event names) is --json.
        names = getattr(args, "contact_names", {})
        for line in timeline_lines({**found, "events": found["audit"]}, lang, _record_text,
                                   names):
            print(line)
        return EXIT_OK
    try:
        incidents = client.incidents(include_closed=args.all, limit=args.limit)["incidents"]
    except ControlError as exc:
        return _report_control_error(exc, lang)
    if args.json:
        for inc in incidents:
            print(json.dumps(inc, ensure_ascii=False, default=str))
        return EXIT_OK
    if not incidents:
        print(t("incidents.none", lang))
        return EXIT_OK
    print(t("incidents.header", lang))
    for inc, depth in _board_order(incidents):
        place = place_text(inc["place"]) if depth else " ".join(
            v for v in (inc["place"].get("compound"), inc["place"].get("building")) if v)
        flags = "".join([f" [{t('drill', lang)}]" if inc["drill"] else "",
                         f" [{t('silenced', lang)}]" if inc.get("silenced_by") else ""])
        members = len(inc.get("members") or ())
        folded = f" ({t('incidents.members', lang, n=members)})" if members and not depth \
            else ""
        print(f"{'  └ ' if depth else ''}{inc['id']} | "
              f"{t('severity.' + inc['severity'], lang)} | "
              f"{status_word(inc['status'], lang)} | "
              f"{incident_title(inc['name'], lang)}{flags}{folded} | {place or '-'} | "
              f"{inc['device_id'] or '-'} | {_when(inc['opened_at'])}")
    return EXIT_OK


_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2, "emergency": 3}


def _floor_key(inc: dict[str, Any]) -> tuple[int, str]:
    floor = str((inc.get("place") or {}).get("floor") or "")
    return (int(floor), "") if re.fullmatch(r"-?\d+", floor) else (10_000, floor)


def _board_order(incidents: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Incidents in the board's order, each group's listed members folded under it.

    As the board's cards: open before closed; then the worst severity, what nobody has
    acknowledged, a group before a single alarm, the newest. A member follows its group
    (depth 1), by floor, instead of standing between other incidents."""
    def urgency(inc: dict[str, Any]) -> tuple[int, int, int, int, float]:
        return (0 if inc["status"] != "resolved" else 1,
                -_SEVERITY_RANK.get(inc["severity"], 0),
                0 if inc["status"] == "firing" else 1,
                0 if inc.get("members") else 1,
                -float(inc.get("opened_at") or 0))
    by_id = {inc["id"]: inc for inc in incidents}
    folded = {m for inc in incidents for m in inc.get("members") or () if m in by_id and
              m != inc["id"]}
    out: list[tuple[dict[str, Any], int]] = []
    for inc in sorted((i for i in incidents if i["id"] not in folded), key=urgency):
        out.append((inc, 0))
        members = [by_id[m] for m in inc.get("members") or () if m in by_id and m != inc["id"]]
        out += [(m, 1) for m in sorted(members, key=lambda m: (_floor_key(m), urgency(m)))]
    return out


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _record_text(timing: dict[str, float], record: dict[str, Any], lang: Language
                 ) -> list[str]:
    """The per-alert record of `incidents show`: the two GB 50440 spans, then each stage."""
    if not timing:
        return []
    parts: list[str] = []
    first, first_limit = record.get("first_notification"), record.get(
        "first_notification_limit")
    if first is not None:
        over = t("latency.over", lang) if first_limit is not None and first > first_limit else ""
        parts.append(t("latency.first_notification", lang, s=_seconds(first),
                       limit=_seconds(first_limit or 0).rstrip("0").rstrip(".")) + over)
    elif first_limit is not None:
        parts.append(t("latency.first_pending", lang,
                       limit=_seconds(first_limit).rstrip("0").rstrip(".")))
    forward, forward_limit = record.get("forward"), record.get("forward_limit")
    if forward is not None:
        over = t("latency.over", lang) if forward_limit is not None and \
            forward > forward_limit else ""
        parts.append(t("latency.forward", lang, s=_seconds(forward),
                       limit=_seconds(forward_limit or 0).rstrip("0").rstrip(".")) + over)
    lines = ["  ".join(parts)] if parts else []
    start = timing.get("device", timing.get("received"))
    for stage in ("device", "received", "committed", "handed", "accepted", "acknowledged"):
        at = timing.get(stage)
        if at is None:
            continue
        since = f" (+{at - start:.3f} s)" if start is not None else ""
        lines.append(f"  {t('latency.stage.' + stage, lang)}: {_when(at)}"
                     f".{int(at * 1000) % 1000:03d}{since}")
    return lines


def _since_and_client(args: argparse.Namespace, lang: Language
                      ) -> tuple[float, ControlClient | StoredState] | int:
    """`--since` as epoch seconds and a reader of the daemon's state (the daemon, else its
    files), or an exit code (printed)."""
    try:
        since = _since(args.since)
    except ValueError:
        print(t("oncall.bad_time", lang, value=args.since), file=sys.stderr)
        return EXIT_PROBLEMS
    client = _reader(args, lang)
    return client if isinstance(client, int) else (since, client)


def cmd_report(args: argparse.Namespace) -> int:
    lang = _lang(args)
    found = _since_and_client(args, lang)
    if isinstance(found, int):
        return found
    since, client = found
    try:
        report = client.latency_report(since)
    except ControlError as exc:
        return _report_control_error(exc, lang)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return EXIT_OK
    print(t("report.header", lang, since=_when(report["since"]), until=_when(report["until"]),
            incidents=report["incidents"], alarms=report["alarms"]))
    if not report["incidents"]:
        print(t("report.none", lang))
        return EXIT_OK
    for budget, span in (("accepted", "first_notification"), ("handed", "forward")):
        kept = report["limits"][budget]
        print(t("report.limit", lang, what=t("latency.span." + span, lang),
                limit=f"{kept['limit']:g}", kept=kept["kept"], exceeded=kept["exceeded"],
                unknown=kept["unknown"]))

    def table(spans: dict[str, dict[str, float]], indent: str) -> None:
        print(indent + t("report.columns", lang))
        for name, row in spans.items():
            print(f"{indent}{t('latency.span.' + name, lang)} | {row['count']} | "
                  f"{row['p50']:.3f} | {row['p90']:.3f} | {row['p99']:.3f} | {row['max']:.3f}")

    table(report["spans"], "")
    for kind, entry in report["kinds"].items():
        from sentinel.i18n import kind_name
        print(t("report.kind", lang, kind=kind_name(kind, lang), n=entry["incidents"]))
        table(entry["spans"], "  ")
    return EXIT_OK


def _parse_time(text: str) -> float:
    import time as _time
    if text == "now":
        return _time.time()
    return zone.parse_local(text).timestamp()


def cmd_window(args: argparse.Namespace) -> int:
    from sentinel.rules.model import parse_duration

    lang = _lang(args)
    kind = args.window_type
    body: dict[str, Any] = {}
    if args.action == "add":
        scope = {k: v for k in ("device", "building", "compound", "grid", "community")
                 if (v := getattr(args, k))}
        kinds, rules = args.kind or [], args.rule or []
        if not (scope or kinds or rules):
            print(t("window.scope_required", lang), file=sys.stderr)
            return EXIT_PROBLEMS
        every = None
        try:
            start = _parse_time(args.start)
            if args.every:
                if not (args.at_from and args.at_to):
                    raise ValueError("--every needs --from HH:MM and --to HH:MM")
                every = {"days": args.every, "start": args.at_from, "end": args.at_to}
            if args.end:
                end: float | None = _parse_time(args.end)
            elif args.duration:
                end = start + parse_duration(args.duration)
            elif every is not None:
                end = None  # until removed
            else:
                raise ValueError("give --end or --for (or --every for a recurring window)")
        except ValueError as exc:
            print(t("control.bad_request", lang, detail=exc), file=sys.stderr)
            return EXIT_PROBLEMS
        body = {"scope": scope, "kinds": kinds, "rules": rules,
                "life_safety": bool(getattr(args, "life_safety", False)), "every": every,
                "start": start, "reason": args.reason}
        if end is not None:
            body["end"] = end
    client = _control_client(args, lang)
    if isinstance(client, int):
        return client
    if args.action in ("add", "remove"):
        # Who asks for it: a contact id, or the OS account (as --actor elsewhere).
        args.author = _actor(args, lang, args.author, "--author")
        if args.author is None:
            return EXIT_PROBLEMS
        body["author"] = args.author
    try:
        if args.action == "add":
            window = client.add_window(kind, body)
            print(t("window.added", lang, type=t(f"window.{kind}", lang), id=window["id"],
                    scope=_window_scope(window, lang), start=_when(window["start"]),
                    end=_window_end(window, lang)))
            if window.get("life_safety"):
                print(t("window.life_safety_warning", lang), file=sys.stderr)
            return EXIT_OK
        if args.action == "remove":
            client.remove_window(kind, args.id, args.author)
            print(t("window.removed", lang, id=args.id))
            return EXIT_OK
        windows = client.windows(kind)
    except ControlError as exc:
        if exc.kind == "not_found" and args.action == "remove":
            print(t("window.not_found", lang, id=args.id), file=sys.stderr)
            return EXIT_PROBLEMS
        return _report_control_error(exc, lang)
    if args.json:
        for w in windows:
            print(json.dumps(w, ensure_ascii=False))
        return EXIT_OK
    if not windows:
        print(t("window.none", lang))
    for w in windows:
        print(f"{w.get('label') or '#' + str(w['id'])} | {_window_scope(w, lang)} | "
              f"{_when(w['start'])} → {_window_end(w, lang)} | "
              f"{_who(args, str(w['author']), lang)} | {w['reason']}")
    return EXIT_OK


def _window_end(window: dict[str, Any], lang: Language) -> str:
    """When a window ends; a recurring one without an end runs until removed (its stored
    end is the year 2100, which means nothing to a person)."""
    from sentinel.incidents.windows import FOREVER
    end = window.get("end")
    if end is None or float(end) >= FOREVER:
        return t("window.until_removed", lang)
    return _when(float(end))


def _window_scope(window: dict[str, Any], lang: Language) -> str:
    """What a window covers, in one line: place, kinds, rules, recurrence, life-safety."""
    from sentinel.i18n import incident_title, kind_name
    parts = [f"{t('scope.' + k, lang)}={v}" for k, v in window.get("scope", {}).items()]
    if window.get("kinds"):
        parts.append(t("window.kinds", lang,
                       kinds=",".join(kind_name(k, lang) for k in window["kinds"])))
    if window.get("rules"):
        parts.append(t("window.rules", lang,
                       rules=",".join(incident_title(r, lang) for r in window["rules"])))
    every = window.get("every")
    if every:
        days = ",".join(t(f"weekday.{d}", lang) for d in every["days"])
        parts.append(t("window.every", lang, days=days,
                       start=every["start"], end=every["end"]))
    if window.get("life_safety"):
        parts.append(t("window.life_safety", lang))
    elif window.get("type") == "silence":
        parts.append(t("window.not_life_safety", lang))
    return " ".join(parts) or t("window.everywhere", lang)


def _connect(args: argparse.Namespace, lang: Language) -> ControlClient | str | int:
    """A client of the daemon of this configuration; the address tried when no daemon
    answers and there is no token to try another; or an exit code (message printed).

    The Unix socket when it exists (its permissions decide; no token); else HTTP with the
    token, when the daemon serves HTTP.
    """
    loaded = _load_or_report(args, lang)
    if loaded is None:
        return EXIT_CONFIG
    from sentinel.control.client import ControlClient, local_url
    from sentinel.control.secrets import control_token
    args.loaded = loaded
    # People are shown by name, not by contact id (the on-call file is at hand here).
    args.contact_names = {c.id: c.name for c in loaded.oncall.contact}
    control = loaded.settings.control
    socket_path = control.socket_path
    _WHERE.update(state_dir=loaded.settings.state_dir, socket=socket_path)
    if socket_path.exists() or not control.http:
        return ControlClient(socket_path=socket_path, language=lang)
    url = local_url(control)
    try:
        # Read only: a token file this command created could be unreadable for the daemon.
        token = control_token(loaded.settings, create=False)
    except ConfigError as exc:
        # No token yet mostly means no daemon ever ran here: if none answers, say that.
        try:
            ControlClient(url, "", timeout=3).health()
        except ControlError as err:
            if err.kind == "not_running":
                return url
        print(t("control.no_token", lang), file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_PROBLEMS
    return ControlClient(url, token, language=lang)


def _control_client(args: argparse.Namespace, lang: Language) -> ControlClient | int:
    """A client of the running daemon (a command that changes something needs one), or an
    exit code (message printed)."""
    found = _connect(args, lang)
    if isinstance(found, str):
        return _report_control_error(ControlError("not_running", "", url=found), lang)
    return found


def _reader(args: argparse.Namespace, lang: Language) -> ControlClient | StoredState | int:
    """What a read-only command asks: the daemon when it answers, else the files it keeps
    in its state directory (stopped, or a demo that has ended), saying so in one line."""
    from sentinel.stored import StoredState
    found = _connect(args, lang)
    if isinstance(found, int):
        return found
    if not isinstance(found, str):
        try:
            found.health()
            return found
        except ControlError as exc:
            if exc.kind != "not_running":
                return found  # the command's own call reports it
            found = exc.url
    stored = StoredState(args.loaded, found)
    if not stored.available():
        return _report_control_error(ControlError("not_running", "", url=found), lang)
    print(t("stored.reading", lang, url=found, state=stored.state_dir), file=sys.stderr)
    return stored


# Where this command looked for the daemon (set by _connect), for the not-running advice.
_WHERE: dict[str, Path] = {}


def _not_running_text(url: str, lang: Language) -> list[str]:
    """No daemon answered at `url`: the address tried (and the socket looked for), then
    advice that fits — a demo's state directory is not a service to start."""
    socket_path, state_dir = _WHERE.get("socket"), _WHERE.get("state_dir")
    why = t("control.cannot_connect", lang)
    if socket_path is not None and not url.startswith("unix:") and not socket_path.exists():
        why = t("control.also_no_socket", lang, socket=socket_path)
    lines = [t("control.not_running_at", lang, url=url, why=why)]
    demo = state_dir is not None and ((state_dir / "inbox.jsonl").exists() or
                                      (state_dir / "broker").is_dir())
    if demo:
        lines.append(t("control.advice_demo", lang, state=state_dir))
        return lines
    lines.append(t("control.advice_service", lang))
    nearby = Path("state/demo")
    if state_dir is not None and (nearby / "incidents.sqlite3").exists() and \
            nearby.resolve() != state_dir.resolve():
        lines.append(t("control.advice_nearby_demo", lang, state=nearby.resolve()))
    return lines


def _report_control_error(exc: ControlError, lang: Language, incident_id: str = "") -> int:
    if exc.kind == "not_running":
        for line in _not_running_text(exc.url, lang):
            print(line, file=sys.stderr)
        return EXIT_PROBLEMS
    print(t(f"control.{exc.kind}", lang, url=exc.url, id=incident_id, detail=exc.message),
          file=sys.stderr)
    return EXIT_PROBLEMS


def _who(args: argparse.Namespace, actor: str, lang: Language) -> str:
    """An actor as a person reads it: a contact's name for a contact id."""
    from sentinel.timeline import actor_text
    return actor_text(actor, lang, getattr(args, "contact_names", {}))


def cmd_ack(args: argparse.Namespace) -> int:
    from sentinel.i18n import incident_title

    lang = _lang(args)
    client = _acting_client(args, lang)
    if isinstance(client, int):
        return client
    try:
        inc = client.ack(args.id, args.actor, args.note)
    except ControlError as exc:
        return _report_control_error(exc, lang, args.id)
    title = incident_title(inc["name"], lang)
    if inc.get("acknowledged_by") not in (None, args.actor):
        print(t("ack.already", lang, id=inc["id"], title=title,
                by=_who(args, inc["acknowledged_by"], lang),
                when=_when(inc.get("acknowledged_at"))))
    else:
        print(t("ack.done", lang, id=inc["id"], title=title, actor=_who(args, args.actor,
                                                                           lang)))
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace) -> int:
    from sentinel.i18n import incident_title

    lang = _lang(args)
    client = _acting_client(args, lang)
    if isinstance(client, int):
        return client
    try:
        inc = client.resolve(args.id, args.actor, args.outcome, args.note)
    except ControlError as exc:
        return _report_control_error(exc, lang, args.id)
    print(t("resolve.done", lang, id=inc["id"], title=incident_title(inc["name"], lang),
            outcome=t(f"outcome.{args.outcome}", lang), actor=_who(args, args.actor, lang)))
    return EXIT_OK


def cmd_assign(args: argparse.Namespace) -> int:
    from sentinel.i18n import incident_title

    lang = _lang(args)
    client = _acting_client(args, lang)
    if isinstance(client, int):
        return client
    person_id = _person(args, args.person, lang)
    if person_id is None:
        return EXIT_PROBLEMS
    try:
        inc = client.assign(args.id, person_id, args.actor)
    except ControlError as exc:
        if exc.kind == "bad_request" and "on-call" in exc.message:
            print(t("assign.unknown_person", lang, person=args.person), file=sys.stderr)
            return EXIT_PROBLEMS
        return _report_control_error(exc, lang, args.id)
    names = getattr(args, "contact_names", {})
    person = f"{names[person_id]} ({person_id})" if person_id in names else person_id
    print(t("assign.done", lang, id=inc["id"], title=incident_title(inc["name"], lang),
            person=person, actor=_who(args, args.actor, lang)))
    return EXIT_OK


def cmd_note(args: argparse.Namespace) -> int:
    from sentinel.i18n import incident_title

    lang = _lang(args)
    photo = None
    if args.photo:
        try:
            photo = Path(args.photo).read_bytes()
        except OSError as exc:
            print(t("note.bad_photo", lang, path=args.photo, reason=exc.strerror or exc),
                  file=sys.stderr)
            return EXIT_PROBLEMS
    client = _acting_client(args, lang)
    if isinstance(client, int):
        return client
    try:
        inc = client.note(args.id, args.actor, args.text, photo)
    except ControlError as exc:
        if exc.kind == "bad_request" and exc.message.startswith("photo"):
            print(t("note.bad_photo", lang, path=args.photo, reason=exc.message),
                  file=sys.stderr)
            return EXIT_PROBLEMS
        return _report_control_error(exc, lang, args.id)
    print(t("note.done", lang, id=inc["id"], title=incident_title(inc["name"], lang),
            actor=_who(args, args.actor, lang),
            photo=t("note.with_photo", lang) if photo else ""))
    return EXIT_OK


def cmd_report_response(args: argparse.Namespace) -> int:
    from sentinel.reports import response

    lang = _lang(args)
    found = _since_and_client(args, lang)
    if isinstance(found, int):
        return found
    since, client = found
    try:
        report = client.response_report(since, args.by)
    except ControlError as exc:
        return _report_control_error(exc, lang)
    outputs: list[tuple[str | None, str]] = [
        (args.json, "json"), (args.csv, "csv"), (args.html, "html")]
    wrote = False
    for target, form in outputs:
        if target is None:
            continue
        wrote = True
        rendered = (json.dumps(report, ensure_ascii=False, indent=1) + "\n" if form == "json"
                    else response.csv_text(report, lang) if form == "csv"
                    else response.html(report, lang))
        if target == "-":
            sys.stdout.write(rendered)
        else:
            Path(target).write_text(rendered, encoding="utf-8")
            print(t("response.wrote", lang, path=target), file=sys.stderr)
    if not wrote:
        for line in response.text(report, lang):
            print(line)
    return EXIT_OK


def _filter_args(args: argparse.Namespace, lang: Language) -> Filter | None:
    from sentinel.control.feed import Filter
    query: dict[str, str] = {k: ",".join(v) for k in ("kind", "compound", "building", "grid",
                                                     "device") if (v := getattr(args, k))}
    if args.severity:
        query["severity"] = args.severity
    try:
        return Filter.from_query(query)
    except ValueError as exc:
        print(t("control.bad_request", lang, detail=exc), file=sys.stderr)
        return None


def cmd_tail(args: argparse.Namespace) -> int:
    from sentinel.tail import Tail, TailOptions

    lang = _lang(args)
    filter_ = _filter_args(args, lang)
    if filter_ is None:
        return EXIT_PROBLEMS
    client = _control_client(args, lang)
    if isinstance(client, int):
        return client
    color = not args.json and not args.no_color and sys.stdout.isatty() and \
        "NO_COLOR" not in os.environ
    options = TailOptions(filter=filter_, readings=args.readings, as_json=args.json,
                          color=color, lang=lang, after=args.after,
                          names=getattr(args, "contact_names", {}))
    stop = threading.Event()

    def terminate(*_: object) -> None:
        stop.set()
        raise KeyboardInterrupt  # wakes the read that waits for the next event

    signal.signal(signal.SIGTERM, terminate)
    try:
        Tail(client, options, stop=stop).run()
    except ControlError as exc:
        return _report_control_error(exc, lang)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops following
    return EXIT_OK


def _status_text(status: dict[str, Any], lang: Language) -> list[str]:
    from sentinel.i18n import kind_name
    lines = [t("status.header", lang, community=status.get("community") or "sentinel",
               now=_when(status["now"]))]
    devices = status["devices"]
    lines.append(t("status.devices", lang, **{k: devices[k] for k in
                                               ("total", "online", "offline", "unseen")}))
    lines.append(t("status.by_kind", lang))
    for kind, counts in devices["by_kind"].items():
        lines.append(t("status.row", lang, name=kind_name(kind, lang), **counts))
    lines.append(t("status.by_grid", lang))
    for grid, counts in devices["by_grid"].items():
        lines.append(t("status.row", lang, name=grid, **counts))
    open_counts = ", ".join(f"{t('severity.' + s, lang)} {n}"
                            for s, n in status["incidents_open"].items() if n) or "0"
    lines.append(t("status.incidents", lang, counts=open_counts))
    if status["offline"]:
        lines.append(t("status.offline", lang, count=len(status["offline"]),
                       devices=", ".join(status["offline"][:20]) +
                       (" …" if len(status["offline"]) > 20 else "")))
    battery = status["low_battery"]
    lines.append(t("status.low_battery", lang, count=len(battery),
                   devices=", ".join(str(b["device"]) for b in battery[:20]) or "-"))
    lines.append(t("status.last_reading", lang, when=_when(status.get("last_reading_at"))))
    broker = status["broker"]
    key = "status.broker_ok" if broker["connected"] else "status.broker_down"
    lines.append(t(key, lang, host=broker["host"], port=broker["port"],
                   error=broker.get("error") or "-"))
    store = status["store"]
    lines.append(t("status.store", lang, backend=store.get("backend"),
                   stored=store.get("stored", store.get("forwarded", "-")),
                   ms=round(float(store.get("last_commit_ms") or 0), 1)))
    if "spool_rows" in store:
        warn = " ⚠" if store.get("spool_nearly_full") else ""
        lines.append(t("status.spool", lang, rows=store["spool_rows"],
                       bytes=store["spool_bytes"], warn=warn))
    lines.append(t("status.outbox", lang, depth=status["outbox_depth"]))
    return lines


def _district_status_text(status: dict[str, Any], lang: Language) -> list[str]:
    communities = status["communities"]
    lines = [t("status.district_header", lang, now=_when(status["now"]),
               n=len(communities),
               offline=sum(c["reach"] in ("offline", "stopped") for c in communities),
               whistled=sum(bool(c["whistled"]) for c in communities))]
    for c in communities:
        marks = []
        if c["whistled"]:
            marks.append(t("status.district_whistled", lang))
        if c["life_safety_unacknowledged"]:
            marks.append(t("status.district_ls", lang, n=c["life_safety_unacknowledged"]))
        if c["missing"]:
            marks.append(t("status.district_missing", lang, n=c["missing"]))
        lines.append(t("status.district_row", lang, name=c["name"] or c["id"], id=c["id"],
                       reach=t(f"status.reach.{c['reach']}", lang),
                       heard=_when(c.get("last_heard")), open=c["open"],
                       unack=c["unacknowledged"], marks="  ".join(marks)).rstrip())
        if c["reach"] in ("offline", "stopped") and c.get("phone"):
            lines.append(t("status.district_phone", lang, phone=c["phone"]))
    open_counts = ", ".join(f"{t('severity.' + s, lang)} {n}"
                            for s, n in status["incidents_open"].items() if n) or "0"
    lines.append(t("status.district_own", lang, counts=open_counts))
    broker = status["broker"]
    key = "status.broker_ok" if broker["connected"] else "status.broker_down"
    lines.append(t(key, lang, host=broker["host"], port=broker["port"],
                   error=broker.get("error") or "-"))
    lines.append(t("status.outbox", lang, depth=status["outbox_depth"]))
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    lang = _lang(args)
    client = _control_client(args, lang)
    if isinstance(client, int):
        return client
    district = is_district_file(Path(args.config))
    try:
        status = client.status()
        if district:
            # The street office's view: its communities, not a fleet of devices.
            status["communities"] = client.communities()
    except ControlError as exc:
        return _report_control_error(exc, lang)
    if args.json:
        print(json.dumps(status, ensure_ascii=False, default=str))
    elif district:
        print("\n".join(_district_status_text(status, lang)))
    else:
        print("\n".join(_status_text(status, lang)))
    # Exit 1 when the daemon cannot reach its broker: scripts and checks can rely on it.
    return EXIT_OK if status["broker"]["connected"] else EXIT_PROBLEMS


def _since(text: str) -> float:
    import time as _time

    from sentinel.rules.model import parse_duration
    try:
        return _time.time() - parse_duration(text)
    except ValueError:
        return _parse_time(text)


_HISTORY_PAGE = 5000


def cmd_history(args: argparse.Namespace) -> int:
    """Readings of one device since --since: the newest --limit of them. The table shows
    the newest first (what a person looks for); CSV and JSON keep time order (exports)."""
    from collections import deque

    lang = _lang(args)
    found = _since_and_client(args, lang)
    if isinstance(found, int):
        return found
    since, client = found
    # The store answers oldest first from a time: page through and keep the newest.
    kept: deque[dict[str, Any]] = deque(maxlen=max(args.limit, 0))
    read = 0
    cursor = since
    while args.limit > 0:
        try:
            page = client.history(args.device, cursor, _HISTORY_PAGE)
        except ControlError as exc:
            if exc.kind == "not_found":
                print(t("control.no_device", lang, id=args.device), file=sys.stderr)
                return EXIT_PROBLEMS
            return _report_control_error(exc, lang)
        kept.extend(page)
        read += len(page)
        if len(page) < _HISTORY_PAGE:
            break
        cursor = page[-1]["ts_ms"] / 1000 + 0.0005
        # Long reads show how far they are, on stderr so the data stays clean.
        print(t("history.progress", lang, count=read), file=sys.stderr, flush=True)
    if args.format == "json":
        for row in kept:
            print(json.dumps({"device": args.device, "ts": row["ts_ms"] / 1000,
                              "kind": row["kind"], "values": row["values"]},
                             ensure_ascii=False))
    elif args.format == "csv":
        import csv
        writer = csv.writer(sys.stdout)
        writer.writerow(["time", "device", "kind", "values"])
        for row in kept:
            writer.writerow([zone.local(row["ts_ms"] / 1000).isoformat(), args.device,
                             row["kind"], json.dumps(row["values"], ensure_ascii=False)])
    elif not kept:
        print(t("history.none", lang, device=args.device))
    else:
        for row in reversed(kept):
            print(f"{_when(row['ts_ms'] / 1000)} | {values_text(row['values'], lang)}")
        if read > len(kept):
            print(t("history.newest", lang, shown=len(kept), count=read), file=sys.stderr)
    return EXIT_OK


def cmd_board(args: argparse.Namespace) -> int:
    lang = _lang(args)
    if args.send and not args.person:
        print(t("board.send_needs_person", lang), file=sys.stderr)
        return EXIT_CONFIG  # argparse's code for a usage error
    client = _control_client(args, lang)
    if isinstance(client, int):
        return client
    if args.person:
        person = _person(args, args.person, lang)
        if person is None:
            return EXIT_PROBLEMS
        args.person = person
    body: dict[str, Any] = {"person": args.person, "send": args.send} if args.person else \
        {"name": args.name, "viewer": args.viewer}
    try:
        answer = client.board_link(body)
    except ControlError as exc:
        if exc.kind == "not_found" and args.person:
            print(t("board.no_person", lang, id=args.person), file=sys.stderr)
            return EXIT_PROBLEMS
        if exc.status == 502 and args.send:
            print(t("board.send_failed", lang, detail=exc.message), file=sys.stderr)
            return EXIT_PROBLEMS
        return _report_control_error(exc, lang)
    minutes = round(float(answer["expires_in"]) / 60)
    role = t(f"board.role.{answer['role']}", lang)
    if answer.get("sent"):
        print(t("board.sent", lang, name=answer["name"], channel=answer["channel"],
                minutes=minutes, role=role))
    elif args.person:
        print(t("board.person_link", lang, name=answer["name"], minutes=minutes, role=role,
                url=answer["url"]))
    elif args.viewer:
        print(t("board.viewer_link", lang, minutes=minutes, url=answer["url"]))
    else:
        print(t("board.link", lang, minutes=minutes, url=answer["url"]))
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    lang = _lang(args)
    loaded = _load_or_report(args, lang)
    if loaded is None:
        return EXIT_CONFIG
    from sentinel.config.load import read_secret
    from sentinel.sim.publisher import SimOptions, SimulationError, parse_inject, run_simulation
    mqtt = loaded.settings.mqtt
    try:
        injects = [parse_inject(text, loaded.inventory) for text in args.inject]
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_PROBLEMS
    options = SimOptions(
        host=args.host or mqtt.host, port=args.port or mqtt.port, qos=args.qos,
        speed=args.speed, rate=args.rate, duration=args.duration, count=args.count,
        burst=args.burst, inject=injects, seed=args.seed,
        client_id=args.client_id, username=mqtt.username,
        password=read_secret(mqtt.password, mqtt.password_file, "mqtt.password_file"),
        protocol=mqtt.protocol, ledger_path=Path(args.ledger) if args.ledger else None,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def progress(p: Any) -> None:
        if not args.quiet:
            print(t("sim.progress", lang, readings=p.readings, rate=round(p.rate)),
                  file=sys.stderr, flush=True)

    try:
        result = run_simulation(loaded, options, stop=stop, progress=progress)
    except KeyboardInterrupt:
        stop.set()
        return EXIT_OK
    except (ValueError, SimulationError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_PROBLEMS
    print(t("sim.done", lang, readings=result.readings, messages=result.messages,
            elapsed=result.elapsed), flush=True)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    lang = _lang(args)
    loaded = _load_or_report(args, lang)
    if loaded is None:
        return EXIT_CONFIG
    from sentinel.demo import DemoOptions, run_demo
    options = DemoOptions(state_dir=Path(args.state_dir), broker=args.broker,
                          speed=args.speed, duration=args.duration, lang=lang,
                          pace=args.pace)
    try:
        return run_demo(loaded, options)
    except RuntimeError as exc:  # no broker can be had: say what to install
        print(t("demo.cannot_start", lang, reason=str(exc)), file=sys.stderr)
        return EXIT_PROBLEMS


def cmd_backtest(args: argparse.Namespace) -> int:
    from sentinel.backtest.command import Options, run
    options = Options(
        config=Path(args.config), rules=[Path(p) for p in args.rules],
        against=Path(args.against) if args.against else None, start=args.start,
        end=args.end, device=args.device, kind=args.kind, compound=args.compound,
        grid=args.grid, source=args.source, url=args.url, json=args.json,
        html=Path(args.html) if args.html else None, jobs=args.jobs, lang=_lang(args),
        progress_to=sys.stderr if sys.stderr.isatty() and not args.json else None)
    return run(options, sys.stdout)


def cmd_devices_import(args: argparse.Namespace) -> int:
    from sentinel.config import discovery
    from sentinel.i18n import kind_name
    from sentinel.rules.model import parse_duration

    lang = _lang(args)
    try:
        # Plain seconds too ("5"), not only text with a unit ("5s").
        plain = re.fullmatch(r"[0-9]+(\.[0-9]+)?", args.timeout)
        timeout = parse_duration(float(args.timeout) if plain else args.timeout)
    except ValueError:
        timeout = 0
    if not timeout > 0:
        print(t("import.bad_timeout", lang, value=args.timeout), file=sys.stderr)
        return EXIT_PROBLEMS
    broker = _import_broker(args, lang)
    if isinstance(broker, int):
        return broker
    z2m = args.source == "zigbee2mqtt"
    base = (args.base or ("zigbee2mqtt" if z2m else "homeassistant")).rstrip("/")
    topics = [f"{base}/bridge/devices"] if z2m else [f"{base}/+/+/config",
                                                      f"{base}/+/+/+/config"]
    try:
        messages = discovery.read_retained(broker, topics, timeout)
    except discovery.RetainedReadError as exc:
        print(t(f"import.{exc.key}", lang, **exc.values), file=sys.stderr)
        return EXIT_PROBLEMS
    if not messages:
        print(t("import.nothing", lang, topic=" ".join(topics), broker=broker.url,
                timeout=f"{timeout:g}"), file=sys.stderr)
        return EXIT_PROBLEMS
    if z2m:
        try:
            found = discovery.zigbee2mqtt_candidates(messages[topics[0]])
        except ValueError as exc:
            print(t("import.bad_payload", lang, topic=topics[0], reason=exc), file=sys.stderr)
            return EXIT_PROBLEMS
    else:
        found = discovery.homeassistant_candidates(sorted(messages.items()), base)
    place = discovery.Place(args.community, args.compound, args.building, args.grid)
    sys.stdout.write(discovery.inventory_csv(found.candidates, place))
    sys.stdout.flush()
    for note in [c.why for c in found.candidates] + found.notes:
        values = dict(note.values)
        if "kind" in values:
            values["kind"] = kind_name(values["kind"], lang)
        print(t(f"import.note.{note.key}", lang, **values), file=sys.stderr)
    print(t("import.summary", lang, rows=len(found.candidates), notes=len(found.notes)),
          file=sys.stderr)
    return EXIT_OK


def _import_broker(args: argparse.Namespace, lang: Language) -> Broker | int:
    """The broker to read from, or an exit code (message printed).

    The address: --broker, else [mqtt] host, port and TLS of the configuration when the file
    exists, else the local default; mqtts:// trusts [mqtt.tls] ca_file when there is one.
    The account: --user and --password-file (or the URL's), never the daemon's: on a broker
    that takes the user name as client id (the shipped one does) a second connection with
    the daemon's account would throw the daemon off and could end its session.
    """
    import ssl

    from sentinel.config.discovery import Broker, parse_broker, tls_context
    from sentinel.config.load import load_settings

    try:
        broker = parse_broker(args.broker or "mqtt://127.0.0.1:1883")
    except ValueError:
        print(t("import.bad_broker", lang, value=args.broker), file=sys.stderr)
        return EXIT_PROBLEMS
    config = Path(args.config)
    if config.exists() and (not args.broker or broker.tls is not None):
        try:
            mqtt = load_settings(config).mqtt
            tls = tls_context(mqtt.tls) if mqtt.tls.enabled or broker.tls else None
        except ConfigError as exc:
            print(t("check.failed", lang, count=len(exc.problems)), file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return EXIT_CONFIG
        except (OSError, ssl.SSLError) as exc:
            print(t("import.tls_failed", lang, reason=exc), file=sys.stderr)
            return EXIT_CONFIG
        broker = replace(broker, tls=tls) if args.broker else Broker(
            mqtt.host, mqtt.port, tls=tls, protocol=mqtt.protocol)
    password = broker.password
    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(t("import.no_password", lang, path=args.password_file,
                    reason=exc.strerror), file=sys.stderr)
            return EXIT_PROBLEMS
    return replace(broker, username=args.user or broker.username, password=password)


# -- argument parsing -------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentinel", description=(
        "Community safety daemon: MQTT sensors → readings → store, rules and alerts."))
    parser.add_argument("--version", action="version", version=f"sentinel {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=_default_config(),
                        help="configuration file (default: $SENTINEL_CONFIG, "
                             "config/sentinel.toml or /etc/sentinel/sentinel.toml)")
    common.add_argument("--lang", choices=["zh", "en"], default=None,
                        help="language of messages (default zh, or $SENTINEL_LANG)")
    sub = parser.add_subparsers(dest="command", required=True)
    actor = os.environ.get("USER") or "operator"
    # Who acts from the command line, as the audit trail records it: the OS account,
    # marked as such (a contact id is a person of the on-call file; this is not one).
    cli_actor = f"cli:{getpass.getuser()}"

    p = sub.add_parser("run", parents=[common], help="run the daemon")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("district", help="run the district (street office) daemon")
    district_config = os.environ.get("SENTINEL_CONFIG") or (
        "config/district.toml" if Path("config/district.toml").exists()
        else "/etc/sentinel/district.toml")
    p.add_argument("-c", "--config", default=district_config,
                   help="district.toml (default: $SENTINEL_CONFIG, config/district.toml or "
                        "/etc/sentinel/district.toml)")
    p.add_argument("--lang", choices=["zh", "en"], default=None,
                   help="language of messages (default zh, or $SENTINEL_LANG)")
    p.add_argument("--check", action="store_true",
                   help="only check district.toml and its on-call and policy files")
    p.set_defaults(func=cmd_district)

    p = sub.add_parser("check", parents=[common],
                       help="validate configuration, inventory and profiles together")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 1) on warnings too, such as roster coverage gaps")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("simulate", parents=[common],
                       help="publish realistic telemetry for the whole inventory")
    p.add_argument("--host", help="broker host (default: [mqtt] host)")
    p.add_argument("--port", type=int, help="broker port (default: [mqtt] port)")
    p.add_argument("--qos", type=int, choices=[0, 1], default=1)
    p.add_argument("--speed", type=float, default=1.0,
                   help="time compression: 60 makes an hour pass in a minute")
    p.add_argument("--rate", type=float, help="fixed total readings per second")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--count", type=int, help="stop after this many readings")
    p.add_argument("--burst", action="store_true", help="no pacing: publish as fast as possible")
    p.add_argument("--inject", action="append", default=[], metavar="EVENT[:TARGET][@SECONDS]",
                   help="smoke-alarm, gas-leak, hydrant-drop, tank-low, sos, fall, offline; "
                        "TARGET: a device id, random, kind:K, compound:X, building:X/B, grid:G")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--client-id", default="sentinel-simulator")
    p.add_argument("--ledger", help="append one JSON line per published reading to this file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("tail", parents=[common],
                       help="follow incident events live (and readings with --readings)")
    p.add_argument("--readings", action="store_true", help="readings too, not only incidents")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--no-color", action="store_true", help="no colours (also: NO_COLOR)")
    p.add_argument("--after", type=int, metavar="SEQ",
                   help="replay the events after this number instead of listing what is open")
    for key in ("kind", "compound", "building", "grid", "device"):
        p.add_argument(f"--{key}", action="append", help=f"only this {key} (repeatable)")
    p.add_argument("--severity", help="only this severity and above (e.g. critical)")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("status", parents=[common],
                       help="fleet health: devices online/offline, incidents, broker, store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("history", parents=[common], help="readings of one device from the store")
    p.add_argument("device", help="device id, e.g. SB-SMK-0001")
    p.add_argument("--since", default="24h", help="a duration back (2h, 7d) or an ISO time")
    p.add_argument("--limit", type=int, default=100_000,
                   help="at most this many, the newest (the table shows them newest first)")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("board", parents=[common],
                       help="print a one-time login link to the web board")
    p.add_argument("--name", default=actor, help="who logs in (default: $USER); actions on "
                                                 "the board are recorded as board:NAME")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--viewer", action="store_true",
                     help="a view-only login: the board is shown, nothing can be changed")
    who.add_argument("--person", metavar="ID",
                     help="a personal login for a contact of the on-call file: actions are "
                          "recorded under the contact id, with the contact's board_role")
    p.add_argument("--send", action="store_true",
                   help="with --person: send the link to the person's channel instead of "
                        "printing it (valid 60 minutes)")
    p.set_defaults(func=cmd_board)

    p = sub.add_parser("deadletter", help="rejected messages")
    dl = p.add_subparsers(dest="action", required=True)
    q = dl.add_parser("list", parents=[common], help="newest rejected messages first")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--reason", help="only this reason (e.g. invalid_json)")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=cmd_deadletter)

    p = sub.add_parser("incidents", help="incidents and their audit trail")
    inc = p.add_subparsers(dest="action", required=True)
    q = inc.add_parser("list", parents=[common],
                       help="open incidents in the board's order, a group's alarms under it")
    q.add_argument("--all", action="store_true", help="resolved ones too")
    q.add_argument("--limit", type=int, default=200, help="with --all: how many")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=cmd_incidents)
    q = inc.add_parser("show", parents=[common], help="one incident with every event")
    q.add_argument("id")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_incidents)

    p = sub.add_parser("report", help="reports from the stored incidents")
    rep = p.add_subparsers(dest="action", required=True)
    q = rep.add_parser("latency", parents=[common],
                       help="alarm-path times per stage and kind against GB 50440 (10 s / 3 s)")
    q.add_argument("--since", default="7d", help="a duration back (24h, 7d) or an ISO time")
    q.add_argument("--json", action="store_true", help="one JSON object")
    q.set_defaults(func=cmd_report)
    q = rep.add_parser("response", parents=[common],
                       help="who answered how fast: times to acknowledge, arrive (first "
                            "note) and resolve per worker, grid or kind; false alarms per "
                            "device")
    q.add_argument("--since", default="7d", help="a duration back (24h, 7d) or an ISO time")
    q.add_argument("--by", choices=["worker", "grid", "kind"], default="worker")
    q.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the report as JSON (to FILE, or stdout)")
    q.add_argument("--csv", nargs="?", const="-", metavar="FILE",
                   help="one CSV table (to FILE, or stdout)")
    q.add_argument("--html", metavar="FILE", help="a page with charts, readable offline")
    q.set_defaults(func=cmd_report_response)

    p = sub.add_parser("oncall", parents=[common], help="who is on duty, per role and area")
    p.add_argument("--at", default="now", help="'now' or ISO time (in the community's time zone)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--all", action="store_true",
                   help="every contact, on duty or not, with id, roles and areas")
    p.set_defaults(func=cmd_oncall)

    p = sub.add_parser("ack", parents=[common],
                       help="acknowledge an open incident (through the running daemon)")
    p.add_argument("id", help="incident id, e.g. 20240501-0007")
    p.add_argument("--actor", default=None, metavar="CONTACT_ID",
                   help=f"who takes it on: a contact id of the on-call file (sentinel oncall "
                        f"--all); default {cli_actor}, the OS account")
    p.add_argument("--note", help="free text recorded in the audit trail")
    p.set_defaults(func=cmd_ack)

    p = sub.add_parser("resolve", parents=[common],
                       help="close an open incident with its outcome (through the daemon)")
    p.add_argument("id", help="incident id")
    p.add_argument("--outcome", required=True, choices=["handled", "false_alarm", "referred"],
                   help="how it ended: handled, false_alarm, or referred (to the fire "
                        "brigade, utility, family...)")
    p.add_argument("--note", help="free text recorded in the audit trail")
    p.add_argument("--actor", default=None, metavar="CONTACT_ID",
                   help=f"who closes it: a contact id of the on-call file (sentinel oncall "
                        f"--all); default {cli_actor}, the OS account")
    p.set_defaults(func=cmd_resolve)

    p = sub.add_parser("assign", parents=[common],
                       help="give an open incident to a person of the on-call file")
    p.add_argument("id", help="incident id (a confirmed fire: its alarms follow it)")
    p.add_argument("person", help="contact id from the on-call file (sentinel oncall "
                                  "--all), or a contact's exact name when no other has it")
    p.add_argument("--actor", default=None, metavar="CONTACT_ID",
                   help=f"who assigns it: a contact id of the on-call file (sentinel oncall "
                        f"--all); default {cli_actor}, the OS account")
    p.set_defaults(func=cmd_assign)

    p = sub.add_parser("note", parents=[common],
                       help="add a note (on-site feedback) to an open incident")
    p.add_argument("id", help="incident id")
    p.add_argument("text", help="what was found or done")
    p.add_argument("--photo", metavar="FILE", help="a JPEG, PNG, WebP or GIF (at most 5 MB)")
    p.add_argument("--actor", default=None, metavar="CONTACT_ID",
                   help=f"who writes it: a contact id of the on-call file (sentinel oncall "
                        f"--all); default {cli_actor}, the OS account")
    p.set_defaults(func=cmd_note)

    for window_type, text in (("silence", "silences (recorded, not notified)"),
                              ("drill", "drills (incidents marked as drills)")):
        p = sub.add_parser(window_type, help=text)
        win = p.add_subparsers(dest="action", required=True)
        q = win.add_parser("add", parents=[common], help=f"add a {window_type} window")
        for key in ("device", "building", "compound", "grid", "community"):
            q.add_argument(f"--{key}", help=f"only this {key}")
        q.add_argument("--kind", action="append",
                       help="only incidents of this device kind (repeatable)")
        q.add_argument("--rule", action="append",
                       help="only incidents of this rule or incident name (repeatable)")
        if window_type == "silence":
            q.add_argument("--life-safety", action="store_true",
                           help="also mute life-safety incidents of the named --kind/--rule "
                                "(the duty officer is still paged, labelled with this window)")
        q.add_argument("--start", default="now",
                       help="'now' or ISO time (in the community's time zone)")
        when = q.add_mutually_exclusive_group()
        when.add_argument("--end", help="ISO time (in the community's time zone)")
        when.add_argument("--for", dest="duration", help="duration, e.g. 2h")
        q.add_argument("--every", help="recurring weekly on these days: tue, mon-fri, daily, "
                                       "weekend or mon,thu (with --from/--to)")
        q.add_argument("--from", dest="at_from", help="recurring: local start time, e.g. 09:00")
        q.add_argument("--to", dest="at_to", help="recurring: local end time, e.g. 11:00 "
                                                  "(before --from: runs past midnight)")
        q.add_argument("--author", metavar="CONTACT_ID",
                       help=f"who asks for it: a contact id (default {cli_actor})")
        q.add_argument("--reason", required=True, help="why (e.g. hydrant flushing)")
        q.set_defaults(func=cmd_window, window_type=window_type)
        q = win.add_parser("list", parents=[common], help=f"active {window_type} windows")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=cmd_window, window_type=window_type)
        q = win.add_parser("remove", parents=[common], help=f"end a {window_type} window now")
        q.add_argument("id", type=int)
        q.add_argument("--author", metavar="CONTACT_ID",
                       help=f"who ends it: a contact id (default {cli_actor})")
        q.set_defaults(func=cmd_window, window_type=window_type)

    p = sub.add_parser("devices", help="bring devices in from a bridge on the broker")
    dev = p.add_subparsers(dest="action", required=True)
    q = dev.add_parser("import", help="print inventory rows (CSV) for the devices a bridge "
                                      "announces, for a person to review")
    imp = q.add_subparsers(dest="source", required=True)
    for source, base, what in (
            ("zigbee2mqtt", "zigbee2mqtt", "the retained <base>/bridge/devices message"),
            ("homeassistant", "homeassistant", "retained Home Assistant discovery messages "
                                               "(<base>/+/+/config, <base>/+/+/+/config)")):
        r = imp.add_parser(source, parents=[common], help=f"from {what}")
        r.add_argument("--broker", help="mqtt://host[:port] or mqtts://… (default: [mqtt] "
                                        "host and port of the configuration if it exists, "
                                        "else mqtt://127.0.0.1:1883)")
        r.add_argument("--user", help="an MQTT account of its own allowed to read the topic "
                                      "(not the daemon's nor the bridge's: a broker that "
                                      "takes the user name as client id would disconnect "
                                      "them)")
        r.add_argument("--password-file", help="file holding that account's password")
        r.add_argument("--base", default=base, help=f"base topic (default {base})")
        r.add_argument("--timeout", default="5s",
                       help="give up when nothing arrived by then (default 5s)")
        for key in ("community", "compound", "building", "grid"):
            r.add_argument(f"--{key}", default="", help=f"{key} of every row (default empty: "
                                                          "fill in by hand)")
        r.set_defaults(func=cmd_devices_import)

    p = sub.add_parser("backtest", parents=[common],
                       help="what rules would have raised on stored readings (sends nothing)")
    p.add_argument("--rules", action="append", default=[], metavar="FILE",
                   help="rule file(s) to test instead of [rules] files")
    p.add_argument("--against", metavar="FILE", help="a second rule file to compare with")
    p.add_argument("--from", dest="start", metavar="ISO",
                   help="start (local time; default: the oldest stored reading)")
    p.add_argument("--to", dest="end", metavar="ISO", help="end (default: the newest)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--device", metavar="ID")
    who.add_argument("--kind", metavar="KIND")
    who.add_argument("--compound", metavar="NAME")
    who.add_argument("--grid", metavar="ID")
    p.add_argument("--source", choices=["sqlite", "victoria"],
                   help="default: the configured store")
    p.add_argument("--url", help="VictoriaMetrics base URL (default: [store.influxdb] url)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON line per incident")
    out.add_argument("--html", metavar="FILE", help="write a timeline page")
    p.add_argument("--jobs", type=int, help="processes (default: cores, at most 2)")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("demo", parents=[common],
                       help="broker + daemon + simulated community with a live view")
    p.add_argument("--state-dir", default="state/demo", help="where the demo keeps its data")
    p.add_argument("--broker", help="HOST:PORT of a broker to use instead of finding or "
                                    "starting one")
    p.add_argument("--speed", type=float, default=60.0, help="simulated time compression")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--pace", type=float, default=1.0,
                   help="scale the story's times (0.2: the whole story in about 16 s)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Warnings raised before a command sets up logging (while loading the configuration)
    # go to stderr: stdout carries the command's output (CSV, JSON lines). `run` and `demo`
    # set up their own logging once the configuration is loaded.
    configure_logging("warning")
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`sentinel oncall | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return result
