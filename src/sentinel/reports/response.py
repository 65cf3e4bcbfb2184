"""Who answered how fast: the closed loop's report (`sentinel report response`).

For the incidents opened in a period: how many, and the time from opening to the first
acknowledgement, to the first note of the person who handled it (their arrival on site),
and to resolution — p50, p90 and max — per worker, grid or kind; the false-alarm rate per
device, with the devices that raised two or more false alarms as maintenance candidates.

Counting rules, chosen so a fire is one case, not four:
* a member alarm closed with its group (outcome `with_group`) is counted through the
  group, not again on its own; for the device table it takes its group's outcome (a fire
  found false makes each of its detectors' alarms a false alarm);
* incidents of sentinel itself (kind `system`) are not a response of anyone's;
* the worker is the contact it was assigned to, else the contact who acknowledged it
  through a personal link or login, else whoever acknowledged it (a wall-screen user, a
  command-line user: who acknowledged is never lost); an incident nobody acknowledged or
  took is "unassigned";
* by kind, a row is a device kind and what happened to it (燃气 · 燃气泄漏 apart from
  燃气 · 设备离线, whose times are another matter), and a confirmed fire is its own row.

`build` is pure (incidents and their loop events in, JSON-ready dict out); `query` reads
the state database; `text`, `csv_text` and `html` render the dict in one language.
"""

from __future__ import annotations

import csv
import html as _html
import io
import json
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sentinel import zone
from sentinel.i18n import Language, incident_title, kind_name, t
from sentinel.incidents.model import Incident, Outcome
from sentinel.notify.channels import actor_name

By = Literal["worker", "grid", "kind"]
BY: tuple[By, ...] = ("worker", "grid", "kind")
SPANS = ("ack", "arrival", "resolve")
# Two false alarms from one device in a period are a pattern, not bad luck.
MAINTENANCE_AT = 2
_LOOP_EVENTS = ("acknowledged", "assigned", "noted")


@dataclass(frozen=True, slots=True)
class LoopEvent:
    """An acknowledgement, assignment or note of an incident (from the audit trail)."""

    incident_id: str
    type: str
    ts: float
    actor: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Case:
    inc: Incident
    worker: str | None
    outcome: str | None
    ack: float | None = None
    arrival: float | None = None
    resolve: float | None = None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of values sorted ascending."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(values: Iterable[float]) -> dict[str, float | int] | None:
    """count, p50, p90 and max of durations in seconds; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return {"count": len(ordered), "p50": round(percentile(ordered, 50), 3),
            "p90": round(percentile(ordered, 90), 3), "max": round(ordered[-1], 3)}


def _case(inc: Incident, events: Sequence[LoopEvent], contacts: Mapping[str, str],
          outcome: str | None) -> _Case:
    acks = [e for e in events if e.type == "acknowledged"]
    person = inc.assigned_to
    if person is None:
        person = next((e.actor for e in acks if e.actor in contacts), None)
    # Nobody of the on-call file: whoever acknowledged it (the wall screen, a CLI user).
    worker = person or next((e.actor for e in sorted(acks, key=lambda e: e.ts)
                             if e.actor != "sentinel"), None)
    case = _Case(inc, worker, outcome)
    if acks:
        case.ack = max(0.0, min(e.ts for e in acks) - inc.opened_at)
    notes = [e for e in events if e.type == "noted"]
    # Arrival is the handler's own first word from the site; a note typed in the office
    # by someone else is not an arrival, unless no person of the on-call file handled it.
    mine = [e for e in notes if e.actor == person] if person else notes
    if mine:
        case.arrival = max(0.0, min(e.ts for e in mine) - inc.opened_at)
    if inc.resolved_at is not None:
        case.resolve = max(0.0, inc.resolved_at - inc.opened_at)
    return case


def _key(case: _Case, by: By) -> str | None:
    if by == "worker":
        return case.worker
    if by == "grid":
        return case.inc.place.get("grid") or None
    if case.inc.kind == "group":
        return case.inc.name
    # What happened to which kind: a gas detector going offline is not a gas leak.
    return f"{case.inc.kind}/{case.inc.name}"


def _row(key: str | None, name: str | None, cases: Sequence[_Case]) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for c in cases:
        if c.outcome is not None:
            outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
    return {"key": key, "name": name, "incidents": len(cases),
            "acknowledged": sum(1 for c in cases if c.ack is not None),
            "noted": sum(1 for c in cases if c.arrival is not None),
            "resolved": sum(1 for c in cases if c.resolve is not None),
            "false_alarms": outcomes.get(Outcome.FALSE_ALARM.value, 0),
            "outcomes": dict(sorted(outcomes.items())),
            "ack": summary(c.ack for c in cases if c.ack is not None),
            "arrival": summary(c.arrival for c in cases if c.arrival is not None),
            "resolve": summary(c.resolve for c in cases if c.resolve is not None)}


def build(incidents: Iterable[Incident], events: Iterable[LoopEvent],
          contacts: Mapping[str, str], since: float, until: float, by: By = "worker",
          groups: Mapping[str, Incident] | None = None) -> dict[str, Any]:
    """The report (JSON-ready) of the incidents opened in [since, until].

    `contacts` maps contact ids to names; `groups` holds groups that opened before the
    period but whose members are in it (to find a member's effective outcome).
    """
    chosen = [i for i in incidents if since <= i.opened_at <= until and i.kind != "system"]
    known = {i.id: i for i in chosen}
    known.update({k: v for k, v in (groups or {}).items() if k not in known})
    per_incident: dict[str, list[LoopEvent]] = {}
    for event in events:
        per_incident.setdefault(event.incident_id, []).append(event)

    def effective(inc: Incident) -> str | None:
        if inc.outcome == Outcome.WITH_GROUP.value:
            for group_id in [*inc.groups, *([inc.attached_to] if inc.attached_to else [])]:
                group = known.get(group_id)
                if group is not None and group.outcome is not None:
                    return group.outcome
        return inc.outcome

    cases = [_case(i, per_incident.get(i.id, ()), contacts, effective(i)) for i in chosen]
    counted = [c for c in cases if c.inc.outcome != Outcome.WITH_GROUP.value]
    buckets: dict[str | None, list[_Case]] = {}
    for case in counted:
        buckets.setdefault(_key(case, by), []).append(case)
    rows = [_row(key, contacts.get(key) if by == "worker" and key else None, members)
            for key, members in buckets.items()]
    if by == "kind":
        for row, members in zip(rows, buckets.values(), strict=True):
            row["kind"], row["incident"] = members[0].inc.kind, members[0].inc.name
    # The busiest first; the unassigned bucket last, where an eye looks for gaps.
    rows.sort(key=lambda r: (r["key"] is None, -r["incidents"], r["key"] or ""))

    devices: dict[str, dict[str, Any]] = {}
    for case in cases:
        device = case.inc.device_id
        if device is None:
            continue
        entry = devices.setdefault(device, {
            "device": device, "kind": case.inc.kind,
            "place": case.inc.place.get("location") or " ".join(
                v for v in (case.inc.place.get("compound"), case.inc.place.get("building"))
                if v),
            "incidents": 0, "false_alarms": 0})
        entry["incidents"] += 1
        if case.outcome == Outcome.FALSE_ALARM.value:
            entry["false_alarms"] += 1
    device_rows = sorted(devices.values(),
                         key=lambda d: (-d["false_alarms"], -d["incidents"], d["device"]))
    for entry in device_rows:
        entry["false_alarm_rate"] = round(entry["false_alarms"] / entry["incidents"], 3)
    return {"since": since, "until": until, "by": by, "incidents": len(counted),
            "total": _row(None, None, counted), "rows": rows, "devices": device_rows,
            "maintenance": [d["device"] for d in device_rows
                            if d["false_alarms"] >= MAINTENANCE_AT]}


def query(conn: sqlite3.Connection, since: float, until: float
          ) -> tuple[list[Incident], list[LoopEvent], dict[str, Incident]]:
    """Incidents opened in [since, until], their loop events, and groups they refer to
    that opened earlier (read from the state database)."""
    low, high = math.floor(since * 1000), math.ceil(until * 1000)
    incidents = [Incident.from_json(json.loads(d)) for (d,) in conn.execute(
        "SELECT data FROM incidents WHERE opened_ms >= ? AND opened_ms <= ? ORDER BY number",
        (low, high))]
    marks = ",".join("?" * len(_LOOP_EVENTS))
    events = [LoopEvent(i, ty, ts / 1000, actor, json.loads(data))
              for i, ty, ts, actor, data in conn.execute(
                  "SELECT e.incident_id, e.type, e.ts_ms, e.actor, e.data FROM events e"
                  " JOIN incidents i ON i.id = e.incident_id"
                  f" WHERE i.opened_ms >= ? AND i.opened_ms <= ? AND e.type IN ({marks})"
                  " ORDER BY e.seq", (low, high, *_LOOP_EVENTS))]
    ids = {i.id for i in incidents}
    missing = sorted({g for i in incidents for g in [*i.groups, *(
        [i.attached_to] if i.attached_to else [])] if g not in ids})
    groups: dict[str, Incident] = {}
    for start in range(0, len(missing), 500):
        chunk = missing[start:start + 500]
        for (data,) in conn.execute(
                f"SELECT data FROM incidents WHERE id IN ({','.join('?' * len(chunk))})",
                chunk):
            group = Incident.from_json(json.loads(data))
            groups[group.id] = group
    return incidents, events, groups


# -- rendering ----------------------------------------------------------------------------

def _label(report: Mapping[str, Any], row: Mapping[str, Any], lang: Language) -> str:
    key = row["key"]
    if key is None:
        return t("response.unassigned" if report["by"] == "worker" else "response.none", lang)
    if report["by"] == "kind":
        incident = row.get("incident")
        if row.get("kind") == "group" or incident is None:
            return incident_title(str(incident or key), lang)
        return f"{kind_name(str(row['kind']), lang)} · {incident_title(str(incident), lang)}"
    if report["by"] == "worker":
        # A person by name; a wall-screen or CLI user with where they acted.
        return row.get("name") or actor_name(str(key), {}, lang)
    return str(key)


def duration(seconds: float | None) -> str:
    """A duration for people: 42 s, 3 min 05 s, 2 h 10 min."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _span_text(span: Mapping[str, Any] | None) -> str:
    if span is None:
        return "-"
    return f"{duration(span['p50'])} / {duration(span['p90'])} / {duration(span['max'])}"


def text(report: Mapping[str, Any], lang: Language) -> list[str]:
    """The report as lines for a terminal."""
    lines = [t("response.header", lang, since=zone.stamp(report["since"]),
               until=zone.stamp(report["until"]), incidents=report["incidents"])]
    if not report["incidents"]:
        lines.append(t("response.empty", lang))
        return lines
    lines.append(t("response.columns", lang, by=t(f"response.by.{report['by']}", lang)))
    for row in [*report["rows"], {**report["total"], "key": "*"}]:
        label = t("response.total", lang) if row["key"] == "*" else _label(report, row, lang)
        lines.append(f"{label} | {row['incidents']} | {row['acknowledged']} | "
                     f"{row['noted']} | {row['resolved']} | {row['false_alarms']} | "
                     f"{_span_text(row['ack'])} | {_span_text(row['arrival'])} | "
                     f"{_span_text(row['resolve'])}")
    lines.append(t("response.devices", lang))
    lines.append("  " + t("response.device_columns", lang))
    for dev in report["devices"][:20]:
        lines.append(f"  {dev['device']} | {kind_name(dev['kind'], lang)} | "
                     f"{dev['place'] or '-'} | {dev['incidents']} | {dev['false_alarms']} | "
                     f"{dev['false_alarm_rate'] * 100:.0f}%")
    if report["maintenance"]:
        lines.append(t("response.maintenance", lang, n=MAINTENANCE_AT,
                       devices=", ".join(report["maintenance"])))
    else:
        lines.append(t("response.no_maintenance", lang, n=MAINTENANCE_AT))
    return lines


CSV_COLUMNS = ("section", "key", "name", "incidents", "acknowledged", "noted", "resolved",
               "false_alarms", "false_alarm_rate", "ack_p50_s", "ack_p90_s", "ack_max_s",
               "arrival_p50_s", "arrival_p90_s", "arrival_max_s", "resolve_p50_s",
               "resolve_p90_s", "resolve_max_s")


def csv_text(report: Mapping[str, Any], lang: Language) -> str:
    """One table: a row per worker/grid/kind (section = the grouping), the total, and a
    row per device (section `device`). Column names stay machine names; values are
    seconds, so a spreadsheet can compute with them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for section, row in [*((report["by"], r) for r in report["rows"]),
                         ("total", report["total"])]:
        spans = []
        for name in SPANS:
            span = row[name]
            spans += [span[k] if span else "" for k in ("p50", "p90", "max")]
        label = _label(report, row, lang) if section != "total" else t("response.total", lang)
        rate = round(row["false_alarms"] / row["incidents"], 3) if row["incidents"] else ""
        writer.writerow([section, row["key"] or "", label, row["incidents"],
                         row["acknowledged"], row["noted"], row["resolved"],
                         row["false_alarms"], rate, *spans])
    for dev in report["devices"]:
        writer.writerow(["device", dev["device"], kind_name(dev["kind"], lang),
                         dev["incidents"], "", "", "", dev["false_alarms"],
                         dev["false_alarm_rate"], *[""] * 9])
    return out.getvalue()


# -- HTML with charts drawn as inline SVG (no script, nothing fetched) ---------------------

_STYLE = (
    "body{font-family:system-ui,'PingFang SC','Microsoft YaHei',sans-serif;margin:2rem;"
    "color:#18181b;background:#fafafa}h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}"
    "table{border-collapse:collapse;margin:.5rem 0;background:#fff}"
    "th,td{border:1px solid #d4d4d8;padding:.3rem .6rem;text-align:right}"
    "th:first-child,td:first-child{text-align:left}th{background:#f4f4f5}"
    ".charts{display:flex;flex-wrap:wrap;gap:1.5rem}"
    "figure{margin:0;background:#fff;border:1px solid #e4e4e7;padding:.5rem}"
    "figcaption{font-weight:600;margin-bottom:.3rem}.warn{color:#b91c1c}"
    ".legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem}"
)
_P50, _P90, _BAD = "#2563eb", "#93c5fd", "#dc2626"


def _e(value: object) -> str:
    return _html.escape(str(value), quote=True)


def bar_chart(title: str, rows: Sequence[tuple[str, Sequence[tuple[float, str]]]],
              unit: str, fmt: Any = duration) -> str:
    """A horizontal bar chart as an inline SVG: per label, one bar per (value, colour)."""
    bar_h, gap, label_w, plot_w = 14, 10, 190, 360
    top = max((v for _, bars in rows for v, _ in bars), default=0.0) or 1.0
    per_row = bar_h * max((len(bars) for _, bars in rows), default=1) + gap
    height = per_row * len(rows) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 90}" '
             f'height="{height}" role="img" aria-label="{_e(title)}">']
    y = 5
    for label, bars in rows:
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h}" text-anchor="end" '
                     f'font-size="12">{_e(label[:28])}</text>')
        for i, (value, colour) in enumerate(bars):
            width = max(1.0, value / top * plot_w)
            by = y + i * bar_h
            parts.append(f'<rect x="{label_w}" y="{by}" width="{width:.1f}" '
                         f'height="{bar_h - 2}" fill="{colour}"/>')
            parts.append(f'<text x="{label_w + width + 4:.1f}" y="{by + bar_h - 3}" '
                         f'font-size="11">{_e(fmt(value))}</text>')
        y += per_row
    parts.append("</svg>")
    return (f'<figure><figcaption>{_e(title)}{f" ({_e(unit)})" if unit else ""}'
            f'</figcaption>{"".join(parts)}</figure>')


def html(report: Mapping[str, Any], lang: Language) -> str:
    """A self-contained page: tables and bar charts, readable offline."""
    title = t("response.title", lang)
    head = t("response.header", lang, since=zone.stamp(report["since"]),
             until=zone.stamp(report["until"]), incidents=report["incidents"])
    legend = (f'<p class="legend"><span style="background:{_P50}"></span>'
              f'{_e(t("response.p50", lang))}<span style="background:{_P90}"></span>'
              f'{_e(t("response.p90", lang))}</p>')
    charts = []
    for name in SPANS:
        rows = [(_label(report, r, lang), [(r[name]["p50"], _P50), (r[name]["p90"], _P90)])
                for r in report["rows"] if r[name]]
        if rows:
            charts.append(bar_chart(t(f"response.span.{name}", lang), rows, ""))
    noisy = [d for d in report["devices"] if d["false_alarms"]][:15]
    if noisy:
        charts.append(bar_chart(t("response.chart.false_alarms", lang),
                                [(d["device"], [(float(d["false_alarms"]), _BAD)])
                                 for d in noisy], "", fmt=lambda v: f"{v:.0f}"))
    header = "".join(f"<th>{_e(h)}</th>" for h in (
        t(f"response.by.{report['by']}", lang), t("response.col.incidents", lang),
        t("response.col.acknowledged", lang), t("response.col.noted", lang),
        t("response.col.resolved", lang), t("response.col.false_alarms", lang),
        *(t(f"response.span.{s}", lang) + " " + t("response.spans", lang) for s in SPANS)))
    body_rows = []
    for row in [*report["rows"], {**report["total"], "key": "*"}]:
        label = t("response.total", lang) if row["key"] == "*" else _label(report, row, lang)
        cells = [label, row["incidents"], row["acknowledged"], row["noted"], row["resolved"],
                 row["false_alarms"], *(_span_text(row[s]) for s in SPANS)]
        body_rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    dev_head = "".join(f"<th>{_e(t(k, lang))}</th>" for k in (
        "response.col.device", "response.col.kind", "response.col.place",
        "response.col.incidents", "response.col.false_alarms", "response.col.rate"))
    dev_rows = "".join(
        f'<tr{" class=warn" if d["device"] in report["maintenance"] else ""}>'
        + "".join(f"<td>{_e(c)}</td>" for c in (
            d["device"], kind_name(d["kind"], lang), d["place"] or "-", d["incidents"],
            d["false_alarms"], f"{d['false_alarm_rate'] * 100:.0f}%")) + "</tr>"
        for d in report["devices"])
    if report["maintenance"]:
        listed = t("response.maintenance", lang, n=MAINTENANCE_AT,
                   devices=", ".join(report["maintenance"]))
        maintenance = f'<p class="warn">{_e(listed)}</p>'
    else:
        maintenance = f'<p>{_e(t("response.no_maintenance", lang, n=MAINTENANCE_AT))}</p>'
    html_lang = "zh-CN" if lang == "zh" else "en"
    return (f'<!doctype html><html lang="{html_lang}"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{_e(title)}</h1><p>{_e(head)}</p>{legend}"
            f'<div class="charts">{"".join(charts)}</div>'
            f"<h2>{_e(t('response.by.' + report['by'], lang))}</h2>"
            f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body_rows)}</tbody>"
            f"</table><h2>{_e(t('response.devices', lang))}</h2>{maintenance}"
            f"<table><thead><tr>{dev_head}</tr></thead><tbody>{dev_rows}</tbody></table>"
            "</body></html>")
