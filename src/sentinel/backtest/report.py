"""What a backtest found, for people (text, HTML) and for programs (JSON lines).

Text: the events in time order with the reading behind each opening, counts per rule and
per kind, then the comparisons. JSON: one line per incident, then one summary line, and
nothing else on stdout. HTML: one self-contained page with a timeline per rule drawn as
inline SVG (no script, nothing fetched from the internet).
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from sentinel import zone
from sentinel.backtest.compare import Comparison, Diff, Summary, severity_rank
from sentinel.backtest.replay import BacktestEvent, Trigger
from sentinel.i18n import Language, event_name, incident_label, incident_title, kind_name, t
from sentinel.timeline import place_text, severity_word, values_text

__all__ = ["Report", "write_html", "write_json", "write_text"]

# Counted per rule and per kind (the rest are details of these).
_COUNTED = ("opened", "severity_raised", "condition_cleared", "resolved")


@dataclass
class Report:
    """Everything a report shows; built by the command, written by one of the writers."""

    start: float
    end: float
    rules: str
    source: str
    received_time: bool
    readings: int
    devices: int
    seconds: float
    events: Sequence[BacktestEvent]
    incidents: Sequence[Summary]
    comparison: Comparison | None = None
    against: str | None = None
    diff: Diff | None = None
    against_incidents: Sequence[Summary] = ()


def _trigger_text(trigger: Trigger | None, lang: Language) -> str:
    if trigger is None:
        return ""
    key = "backtest.trigger_timer" if trigger.by_timer else "backtest.trigger"
    return t(key, lang, device=trigger.device_id, time=zone.stamp(trigger.ts),
             values=values_text(trigger.values, lang))


def _counts(events: Sequence[BacktestEvent], attr: str) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for ev in events:
        if ev.type in _COUNTED:
            out.setdefault(getattr(ev, attr), Counter())[ev.type] += 1
    return out


def _shift(seconds: float, lang: Language) -> str:
    if abs(seconds) < 0.0005:
        return t("backtest.same_time", lang)
    key = "backtest.later" if seconds > 0 else "backtest.earlier"
    return t(key, lang, seconds=f"{abs(seconds):.3f}".rstrip("0").rstrip("."))


def _line(s: Summary, lang: Language) -> str:
    return (f"{zone.stamp(s.opened_at)}  {severity_word(s.severity, lang)}  "
            f"{incident_title(s.name, lang)}  {s.target}  {place_text(s.place)}")


def write_text(report: Report, out: TextIO, lang: Language) -> None:
    """The human report (stdout)."""
    w = out.write
    w(t("backtest.header", lang, start=zone.stamp(report.start), end=zone.stamp(report.end),
        rules=report.rules, source=report.source) + "\n")
    rate = round(report.readings / report.seconds) if report.seconds > 0 else 0
    w(t("backtest.read", lang, readings=report.readings, devices=report.devices,
        seconds=f"{report.seconds:.1f}", rate=rate) + "\n")
    if not report.received_time:
        w(t("backtest.no_received_time", lang) + "\n")
    w("\n")
    if not report.events:
        w(t("backtest.nothing", lang) + "\n")
    else:
        w(t("backtest.events", lang, count=len(report.incidents)) + "\n")
        for ev in report.events:
            word = event_name(ev.type, lang)
            w(f"  {zone.stamp(ev.ts)}  {ev.incident_id}  {word}  "
              f"{severity_word(ev.severity, lang)}  {incident_title(ev.name, lang)}"
              f"{_by_rule(ev.rule, ev.name, lang)}  {place_text(ev.place) or ev.target}\n")
            trigger = _trigger_text(ev.trigger, lang)
            if trigger:
                w(f"      {trigger}\n")
        raises = {ev.rule: ev.name for ev in report.events}
        titles = Counter(rule_title(r, raises, lang) for r in raises)

        def rule_name(rule: str, lang: Language) -> str:
            # Rules that raise the same incident (fall, then fall_still) would read alike:
            # their ids, the names the rules file gives them, tell them apart.
            title = rule_title(rule, raises, lang)
            return f"{title} [{rule}]" if titles[title] > 1 else title

        for title, attr, name in (("backtest.by_rule", "rule", rule_name),
                                  ("backtest.by_kind", "kind", kind_name)):
            w("\n" + t(title, lang) + "\n")
            for key, counts in sorted(_counts(report.events, attr).items()):
                label = name(key, lang)
                w("  " + t("backtest.count_line", lang, name=label,
                           opened=counts["opened"], raised=counts["severity_raised"],
                           cleared=counts["condition_cleared"],
                           resolved=counts["resolved"]) + "\n")
    if report.comparison is not None:
        c = report.comparison
        w("\n" + t("backtest.compare", lang, matched=len(c.matched), missed=len(c.missed),
                   extra=len(c.extra)) + "\n")
        for rec in c.missed:
            w("  " + t("backtest.missed_line", lang, time=zone.stamp(rec.opened_at),
                       severity=severity_word(rec.severity, lang),
                       title=incident_title(rec.name, lang), target=rec.target,
                       id=rec.id) + "\n")
        for inc in c.extra:
            w("  " + t("backtest.extra_line", lang, line=_line(inc, lang)) + "\n")
    if report.diff is not None:
        d = report.diff
        w("\n" + t("backtest.diff", lang, a=report.rules, b=report.against or "",
                   only_a=len(d.only_a), only_b=len(d.only_b), both=len(d.both)) + "\n")
        for inc in d.only_a:
            w("  " + t("backtest.only_a_line", lang, line=_line(inc, lang)) + "\n")
        for inc in d.only_b:
            w("  " + t("backtest.only_b_line", lang, line=_line(inc, lang)) + "\n")
        for pair in d.both:
            w("  " + t("backtest.both_line", lang, line=_line(pair.a, lang),
                       shift=_shift(pair.shift, lang)) + "\n")


def _trigger_json(trigger: Trigger | None) -> dict[str, Any] | None:
    if trigger is None:
        return None
    return {"device_id": trigger.device_id, "ts": trigger.ts,
            "received_at": trigger.received_at, "values": dict(trigger.values),
            "by_timer": trigger.by_timer}


def rule_title(rule: str, raises: Mapping[str, str], lang: Language) -> str:
    """A rule as people read it: the incident it raises (`raises`: rule -> incident
    name), with the rule's own label when it has one."""
    incident = raises.get(rule, rule)
    return incident_title(incident, lang) + _by_rule(rule, incident, lang)


def _by_rule(rule: str, incident: str, lang: Language) -> str:
    """The rule behind an event when it is not the incident's own (fall_still raising a
    fall), by its display name: ids stay in --json, people read names."""
    label = incident_label(rule, lang)
    return "" if rule == incident or label is None else f" ({label})"


def incident_json(s: Summary, events: Sequence[BacktestEvent], rule_set: str
                  ) -> dict[str, Any]:
    """One incident as a JSON object (the --json line)."""
    return {
        "id": s.id, "rule_set": rule_set, "rule": s.rule, "incident": s.name,
        "target": s.target, "device_id": s.device_id, "kind": s.kind,
        "severity": s.severity, "opening_severity": s.opening_severity,
        "opened_at": s.opened_at, "cleared_at": s.cleared_at, "resolved_at": s.resolved_at,
        "outcome": s.outcome, "group": s.group, "place": dict(s.place),
        "trigger": _trigger_json(s.trigger),
        "events": [{"type": e.type, "ts": e.ts, "severity": e.severity, "rule": e.rule}
                   for e in events if e.incident_id == s.id],
    }


def write_json(report: Report, out: TextIO) -> None:
    """One line per incident (of the --against set too), then one summary line."""
    by_id: dict[str, list[BacktestEvent]] = {}
    for ev in report.events:
        by_id.setdefault(ev.incident_id, []).append(ev)
    for s in report.incidents:
        out.write(json.dumps(incident_json(s, by_id.get(s.id, []), "a"),
                             ensure_ascii=False) + "\n")
    for s in report.against_incidents:
        out.write(json.dumps(incident_json(s, [], "b"), ensure_ascii=False) + "\n")
    summary: dict[str, Any] = {
        "summary": True, "start": report.start, "end": report.end, "rules": report.rules,
        "source": report.source, "received_time": report.received_time,
        "readings": report.readings, "devices": report.devices,
        "seconds": round(report.seconds, 3), "incidents": len(report.incidents),
        "by_rule": {k: dict(v) for k, v in sorted(_counts(report.events, "rule").items())},
        "by_kind": {k: dict(v) for k, v in sorted(_counts(report.events, "kind").items())},
    }
    if report.comparison is not None:
        c = report.comparison
        summary["recorded"] = {
            "matched": [{"backtest": m.backtest.id, "recorded": m.recorded.id,
                         "shift": round(m.shift, 3)} for m in c.matched],
            "missed": [r.id for r in c.missed], "extra": [s.id for s in c.extra]}
    if report.diff is not None:
        d = report.diff
        summary["against"] = {
            "file": report.against, "only_a": [s.id for s in d.only_a],
            "only_b": [s.id for s in d.only_b],
            "both": [{"a": p.a.id, "b": p.b.id, "shift": round(p.shift, 3)} for p in d.both]}
    out.write(json.dumps(summary, ensure_ascii=False) + "\n")


# -- HTML --------------------------------------------------------------------------------

_COLOURS = {"maintenance": "#8a8f98", "info": "#3b82f6", "warning": "#d97706",
            "critical": "#dc2626", "emergency": "#7f1d1d"}
_WIDTH = 960
_LABEL = 220
_ROW = 18


def _timeline(incidents: Sequence[Summary], start: float, end: float, lang: Language,
              dashed: bool = False) -> str:
    """One SVG: a row per target, a bar per incident from opening to resolution."""
    targets = sorted({s.target for s in incidents})
    span = max(end - start, 1e-9)
    plot = _WIDTH - _LABEL - 10
    height = _ROW * len(targets) + 24
    e = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
             f'role="img">']
    for i, target in enumerate(targets):
        y = i * _ROW + 4
        parts.append(f'<text x="4" y="{y + 12}" font-size="12">{e(target)}</text>')
        parts.append(f'<line x1="{_LABEL}" x2="{_WIDTH - 10}" y1="{y + 8}" y2="{y + 8}" '
                     f'stroke="#e5e7eb"/>')
    row = {target: i for i, target in enumerate(targets)}
    for s in incidents:
        close = s.resolved_at if s.resolved_at is not None else end
        x = _LABEL + plot * max(0.0, (s.opened_at - start) / span)
        w = max(3.0, plot * (min(close, end) - max(s.opened_at, start)) / span)
        y = row[s.target] * _ROW + 4
        colour = _COLOURS.get(s.severity, "#6b7280")
        title = (f"{zone.stamp(s.opened_at)} → {zone.stamp(s.resolved_at)} "
                 f"{severity_word(s.severity, lang)} {incident_title(s.name, lang)} {s.target}")
        dash = ' stroke="#111" stroke-dasharray="3 2"' if dashed else ""
        parts.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="12" rx="2" '
                     f'fill="{colour}"{dash}><title>{e(title)}</title></rect>')
    axis_y = len(targets) * _ROW + 18
    parts.append(f'<text x="{_LABEL}" y="{axis_y}" font-size="11">{e(zone.stamp(start))}</text>')
    parts.append(f'<text x="{_WIDTH - 10}" y="{axis_y}" font-size="11" text-anchor="end">'
                 f'{e(zone.stamp(end))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_html(report: Report, out: TextIO, lang: Language) -> None:
    """A self-contained page: summary, counts, a timeline per rule, the comparisons."""
    e = html.escape
    w = out.write
    title = t("backtest.html_title", lang)
    w(f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head>'
      f'<meta charset="utf-8"><title>{e(title)}</title><style>'
      "body{font-family:system-ui,'Noto Sans CJK SC',sans-serif;margin:24px;color:#111}"
      "h2{margin-top:28px;font-size:18px}table{border-collapse:collapse}"
      "td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:left}"
      ".note{color:#555}</style></head><body>")
    header = t("backtest.header", lang, start=zone.stamp(report.start),
               end=zone.stamp(report.end), rules=report.rules, source=report.source)
    rate = round(report.readings / report.seconds) if report.seconds > 0 else 0
    read = t("backtest.read", lang, readings=report.readings, devices=report.devices,
             seconds=f"{report.seconds:.1f}", rate=rate)
    w(f"<h1>{e(title)}</h1><p>{e(header)}</p><p>{e(read)}</p>")
    if not report.received_time:
        w(f'<p class="note">{e(t("backtest.no_received_time", lang))}</p>')
    counts = _counts(report.events, "rule")
    w(f"<h2>{e(t('backtest.by_rule', lang))}</h2><table><tr><th></th>")
    for word in _COUNTED:
        w(f"<th>{e(event_name(word, lang))}</th>")
    w("</tr>")
    raises = {ev.rule: ev.name for ev in report.events}
    raises.update({s.rule: s.name for s in report.against_incidents})
    for rule, per in sorted(counts.items()):
        cells = "".join(f"<td>{per[k]}</td>" for k in _COUNTED)
        w(f'<tr><td title="{e(rule)}">{e(rule_title(rule, raises, lang))}</td>{cells}</tr>')
    w("</table>")
    by_rule: dict[str, list[Summary]] = {}
    for s in report.incidents:
        by_rule.setdefault(s.rule, []).append(s)
    against: dict[str, list[Summary]] = {}
    for s in report.against_incidents:
        against.setdefault(s.rule, []).append(s)
    if not by_rule and not against:
        w(f"<p>{e(t('backtest.nothing', lang))}</p>")
    for rule in sorted(set(by_rule) | set(against)):
        found = sorted(by_rule.get(rule, []), key=lambda s: -severity_rank(s.severity))
        # The rule's id stays in a tooltip: it is what an --against file names.
        w(f'<h2 title="{e(rule)}">{e(rule_title(rule, raises, lang))} ({len(found)})</h2>')
        if found:
            w(_timeline(found, report.start, report.end, lang))
        if rule in against:
            w(f'<p class="note">{e(t("backtest.html_against", lang, file=report.against or ""))}'
              f" ({len(against[rule])})</p>")
            w(_timeline(against[rule], report.start, report.end, lang, dashed=True))
    if report.comparison is not None:
        c = report.comparison
        heading = t("backtest.compare", lang, matched=len(c.matched), missed=len(c.missed),
                    extra=len(c.extra))
        w(f"<h2>{e(heading)}</h2><ul>")
        for rec in c.missed:
            w("<li>" + e(t("backtest.missed_line", lang, time=zone.stamp(rec.opened_at),
                             severity=severity_word(rec.severity, lang),
                             title=incident_title(rec.name, lang), target=rec.target,
                             id=rec.id)) + "</li>")
        for inc in c.extra:
            w("<li>" + e(t("backtest.extra_line", lang, line=_line(inc, lang))) + "</li>")
        w("</ul>")
    if report.diff is not None:
        d = report.diff
        heading = t("backtest.diff", lang, a=report.rules, b=report.against or "",
                    only_a=len(d.only_a), only_b=len(d.only_b), both=len(d.both))
        w(f"<h2>{e(heading)}</h2><ul>")
        for inc in d.only_a:
            w("<li>" + e(t("backtest.only_a_line", lang, line=_line(inc, lang))) + "</li>")
        for inc in d.only_b:
            w("<li>" + e(t("backtest.only_b_line", lang, line=_line(inc, lang))) + "</li>")
        for pair in d.both:
            w("<li>" + e(t("backtest.both_line", lang, line=_line(pair.a, lang),
                           shift=_shift(pair.shift, lang))) + "</li>")
        w("</ul>")
    w("</body></html>\n")
