"""Incidents in words for people: status words, actors, areas, values, the timeline.

The control API and the event log speak the model's internal values (`firing`,
`with_group`, `notification_sent`, epoch seconds). Everything a person reads in a terminal
goes through here (or `sentinel.i18n` directly), so that in Chinese mode no internal English
word, event name, raw JSON or epoch time reaches them; the `--json` forms keep the machine
values. Times are shown in the community's zone (`sentinel.zone`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sentinel import zone
from sentinel.i18n import (
    Language,
    event_name,
    field_label,
    field_unit,
    incident_title,
    kind_name,
    role_name,
    t,
    value_text,
)
from sentinel.notify.channels import actor_name, channel_label

# Words of the model that have a catalogue entry under a prefix.
_STATUSES = frozenset({"firing", "acknowledged", "resolved"})
_OUTCOMES = frozenset({"handled", "false_alarm", "referred", "cleared", "cancelled",
                       "expired", "with_group"})
_NOTICES = frozenset({"alert", "escalated", "repeat", "raised", "ack_expired", "resolved",
                      "unmuted"})
_AREAS = frozenset({"grid", "compound", "building", "community", "device"})


def status_word(status: str, lang: Language) -> str:
    return t(f"status.{status}", lang) if status in _STATUSES else status


def outcome_word(outcome: str | None, lang: Language) -> str:
    if not outcome:
        return "-"
    return t(f"outcome.{outcome}", lang) if outcome in _OUTCOMES else outcome


def severity_word(severity: str, lang: Language) -> str:
    return t(f"severity.{severity}", lang)


def area_text(area: str, lang: Language) -> str:
    """An on-call area ("grid SB-G03", "compound 水贝花园", "community") in words."""
    head, _, rest = area.partition(" ")
    if head not in _AREAS:
        return area
    word = t(f"area.{head}", lang)
    return f"{word} {rest}" if rest else word


def actor_text(actor: str | None, lang: Language,
               names: Mapping[str, str] | None = None, name: object = None) -> str:
    """Who did it, as a person reads it: the same words as the board, the link pages and
    the notifications (a contact's name; the wall screen's and the CLI's user marked as
    such; `sentinel` in words), never the internal prefix (`cli:root`). `name`: the name
    an act from the district carried in its event (its people are not this box's
    contacts, and this process may not have seen the act)."""
    if not actor:
        return "-"
    if isinstance(name, str) and name and actor.startswith("district:"):
        return t("actor.district", lang, name=name)
    return actor_name(actor, names or {}, lang)


# Decimals a person reads per canonical unit (the kind's precision is what is stored:
# finer than a reading needs, 0.3901 MPa; a gauge is read as 0.39 MPa).
_SHOWN_DECIMALS: dict[str, int] = {
    "MPa": 2, "m": 2, "V": 2, "%": 0, "%LEL": 1, "ppm": 0, "degC": 1, "bpm": 0, "dBm": 0,
    "%/m": 2, "s": 0, "deg": 6,
}
_UNIT_SHOWN: dict[str, str] = {"degC": "°C", "1": "", "deg": "°"}


def quantity_text(field: str, value: Any, lang: Language) -> str:
    """A value with its unit at the precision a person reads (3.654 V → 3.65 V, 0.3901 MPa
    → 0.39 MPa); a flag as 是/否, text as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value_text(field, value, lang)
    unit = field_unit(field) or ""
    if isinstance(value, float) and unit in _SHOWN_DECIMALS:
        text = f"{value:.{_SHOWN_DECIMALS[unit]}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        text = "0" if text == "-0" else text
    else:
        text = value_text(field, value, lang)
    shown = _UNIT_SHOWN.get(unit, unit)
    if not shown:
        return text
    return f"{text}{shown}" if shown.startswith(("%", "°")) else f"{text} {shown}"


def values_text(values: Mapping[str, Any], lang: Language) -> str:
    """A reading's values, each under its display name, with its unit, at the precision a
    person reads."""
    return "  ".join(f"{field_label(k, lang) or k} {quantity_text(k, v, lang)}"
                     for k, v in sorted(values.items()))


def reading_value_text(field: str | None, value: Any, lang: Language) -> str | None:
    """An incident's reading as a line shows it: a measured number with its name and unit;
    None for a flag or a number without a field (an SOS is `true`, a fall still for 2
    minutes counts 0 steps: the title says what happened, "读数: 0" says nothing)."""
    if not field or value is None or isinstance(value, bool) or \
            not isinstance(value, int | float):
        return None
    label = field_label(field, lang)
    shown = quantity_text(field, value, lang)
    return f"{label} {shown}" if label else shown


def place_text(place: Mapping[str, Any] | None) -> str:
    place = place or {}
    return str(place.get("location") or " ".join(
        str(v) for v in (place.get("compound"), place.get("building")) if v))


def _roles(roles: Iterable[Any], lang: Language) -> str:
    return ", ".join(role_name(str(r), lang) for r in roles)


def _duration(seconds: float, lang: Language) -> str:
    s = round(seconds)
    if s < 120:
        return f"{s} 秒" if lang == "zh" else f"{s} s"
    return f"{s // 60} 分钟" if lang == "zh" else f"{s // 60} min"


def event_detail(e: Mapping[str, Any], lang: Language,
                 names: Mapping[str, str] | None = None) -> str:
    """What one audit entry adds to its event name, in words (never raw JSON)."""
    kind = str(e.get("type"))
    who = actor_text(e.get("actor"), lang, names, e.get("name"))
    parts: list[str] = []
    if kind == "opened":
        parts.append(f"[{severity_word(str(e.get('severity')), lang)}]")
        reading = reading_value_text(e.get("field"), e.get("value"), lang)
        if reading:
            parts.append(reading)
    elif kind == "severity_raised":
        parts.append(f"{severity_word(str(e.get('previous', 'info')), lang)} → "
                     f"{severity_word(str(e.get('severity')), lang)}")
    elif kind in ("grouped", "attached"):
        parts.append(f"{incident_title(str(e.get('group_name')), lang)} #{e.get('group')}")
    elif kind == "member_added":
        parts.append(f"#{e.get('member')}")
        if e.get("device"):
            parts.append(str(e["device"]))
    elif kind == "acknowledged":
        parts.append(t("timeline.by", lang, actor=who))
    elif kind == "acknowledgement_expired":
        parts.append(t("timeline.by", lang, actor=actor_text(e.get("acknowledged_by"), lang,
                                                             names)))
    elif kind == "resolved":
        parts.append(outcome_word(e.get("outcome"), lang))
        parts.append(t("timeline.by", lang, actor=who))
    elif kind == "assigned":
        parts.append(actor_text(e.get("person"), lang, names))
        parts.append(t("timeline.by", lang, actor=actor_text(e.get("by") or e.get("actor"),
                                                             lang, names)))
    elif kind == "noted":
        parts.append(t("timeline.by", lang, actor=who))
    elif kind in ("notification_sent", "notification_failed", "notification_unknown"):
        contact = e.get("contact_name") or actor_text(e.get("contact"), lang, names)
        parts.append(t("timeline.to", lang, who=contact,
                       channel=channel_label(e.get("channel"), lang)))
        notice = e.get("notice") or e.get("kind")
        if notice in _NOTICES:
            parts.append(t(f"notice.{notice}", lang))
    elif kind in ("escalation_step", "escalation_reminder", "nobody_on_duty"):
        if e.get("roles"):
            parts.append(t("timeline.roles", lang, roles=_roles(e["roles"], lang)))
    elif kind in ("notification_muted", "mute_ended"):
        if e.get("window") is not None:
            parts.append(str(e["window"]))
        if e.get("until") is not None:
            parts.append(f"→ {zone.short(float(e['until']))}")
    elif kind == "escalation_paused":
        parts.append(t("timeline.by", lang, actor=actor_text(e.get("by"), lang, names)))
    elif kind == "tier_unreachable":
        parts.append(", ".join(actor_text(str(c), lang, names) for c in e.get("contacts", ())))
    elif kind == "flapping":
        pass
    elif kind == "attempt":
        contact = actor_text(e.get("contact_id"), lang, names)
        parts.append(t("timeline.to", lang, who=contact,
                       channel=channel_label(e.get("channel_label") or e.get("channel"), lang)))
        if not e.get("ok") and e.get("error"):
            parts.append(t("timeline.error", lang, error=e["error"]))
    note = e.get("note") if kind != "noted" else e.get("text")
    if note and not (kind == "resolved" and e.get("outcome") == "with_group"):
        # (closed with its group: the model's note only names the group, shown already)
        parts.append(t("timeline.note", lang, text=note))
    return "  ".join(p for p in parts if p)


def event_word(e: Mapping[str, Any], lang: Language) -> str:
    kind = str(e.get("type"))
    if kind == "attempt":
        return t("event.attempt_ok" if e.get("ok") else "event.attempt_failed", lang)
    return event_name(kind, lang)


def timeline_lines(found: Mapping[str, Any], lang: Language,
                   record_text: Callable[[dict[str, float], dict[str, Any], Language],
                                         list[str]],
                   names: Mapping[str, str] | None = None) -> list[str]:
    """`sentinel incidents show`: the incident in a few lines, then every event in order."""
    inc = found["incident"]
    lines = [t("timeline.title", lang, id=inc["id"], severity=severity_word(inc["severity"],
                                                                             lang),
               title=incident_title(inc["name"], lang), status=status_word(inc["status"], lang))
             + (f"  [{t('drill', lang)}]" if inc.get("drill") else "")]
    where = place_text(inc.get("place"))
    if where:
        lines.append(t("timeline.place", lang, place=where))
    if inc.get("device_id"):
        lines.append(t("timeline.device", lang, device=inc["device_id"],
                       kind=kind_name(str(inc.get("kind")), lang)))
    reading = reading_value_text((inc.get("detail") or {}).get("field"), inc.get("value"),
                                 lang)
    if reading:
        lines.append(t("timeline.value", lang, value=reading))
    lines.append(t("timeline.opened", lang, at=zone.stamp(inc.get("opened_at"))))
    if inc.get("acknowledged_at") is not None:
        lines.append(t("timeline.acknowledged", lang, at=zone.stamp(inc["acknowledged_at"]),
                       by=actor_text(inc.get("acknowledged_by"), lang, names)))
    if inc.get("assigned_to"):
        lines.append(t("timeline.assigned", lang,
                       who=actor_text(inc["assigned_to"], lang, names),
                       at=zone.stamp(inc.get("assigned_at"))))
    if inc.get("resolved_at") is not None:
        lines.append(t("timeline.resolved", lang, at=zone.stamp(inc["resolved_at"]),
                       by=actor_text(inc.get("resolved_by"), lang, names),
                       outcome=outcome_word(inc.get("outcome"), lang)))
    if inc.get("note") and inc.get("outcome") != "with_group":
        lines.append(t("timeline.note", lang, text=inc["note"]))
    if inc.get("members"):
        lines.append(t("timeline.members", lang, count=len(inc["members"]),
                       ids=", ".join(inc["members"])))
    groups = list(inc.get("groups") or []) + ([inc["attached_to"]]
                                              if inc.get("attached_to") else [])
    if groups:
        lines.append(t("timeline.groups", lang, ids=", ".join(groups)))
    record = record_text(inc.get("timing") or {}, found.get("latency") or {}, lang)
    if record:
        lines.append(t("timeline.latency", lang))
        lines += ["  " + line.strip() for line in record if line.strip()]
    events = found.get("events") or found.get("audit") or []
    lines.append(t("timeline.events", lang, count=len(events)))
    day = zone.local(float(inc["opened_at"])).date() if inc.get("opened_at") else None
    for e in events:
        ts = float(e["ts"])
        when = zone.clock(ts) if zone.local(ts).date() == day else zone.short(ts)
        detail = event_detail(e, lang, names)
        lines.append(f"  {when}  {event_word(e, lang)}" + (f"  {detail}" if detail else ""))
    return lines


# -- dead letters -----------------------------------------------------------------------

# The decoder's details, in Chinese: (pattern, template with the pattern's groups). What no
# pattern reads is shown under its reason alone (the English detail stays in --json).
_DETAILS_ZH: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), z) for p, z in (
        (r"^zero-length payload$", "报文为空"),
        (r"^no device profile matches the topic$", "主题不属于任何设备协议"),
        (r"^payload is not a JSON object$", "报文不是 JSON 对象"),
        (r"^payload is not valid UTF-8(?: \(byte (?P<n>\d+)\))?$", "报文不是有效的 UTF-8"),
        (r"^.*line (?P<l>\d+) column (?P<c>\d+).*$", "JSON 第 {l} 行第 {c} 列有误"),
        (r"^number .*$", "数值超出可表示的范围"),
        (r"^key (?P<k>.+) appears twice in one object$", "键 {k} 在同一对象中出现两次"),
        (r"^topic names (?P<a>.+) but payload names (?P<b>.+)$",
         "主题中的设备为 {a}, 报文中的设备为 {b}"),
        (r"^device id in the payload is not text: (?P<v>.+)$", "报文中的设备编号不是文本: {v}"),
        (r"^device speaks profile (?P<a>.+), message matched (?P<b>.+)$",
         "设备的协议为 {a}, 报文匹配的协议为 {b}"),
        (r"^(?P<n>\d+) bytes > limit (?P<m>\d+)$", "报文 {n} 字节, 超过上限 {m}"),
        (r"^no items at (?P<v>.+)$", "报文中 {v} 处没有数据项"),
        (r"^no field maps quantity (?P<v>.+)$", "没有字段对应数量 {v}"),
        (r"^the topic has no quantity level$", "主题中没有数量层级"),
        (r"^(?P<f>\w+): (?P<v>.+) is text, not a number.*$", "{f}: {v} 是文本, 不是数值"),
        (r"^(?P<f>\w+): device has no (?P<s>\S+).*$", "{f}: 设备缺少设置 {s}"),
        (r"^(?P<f>\w+): unit (?P<u>\S+) .*$", "{f}: 无法换算的单位 {u}"),
        (r"^no device id in topic or payload$", "主题与报文中都没有设备编号"),
        (r"^(?P<f>\S+) is missing$", "缺少字段 {f}"),
        (r"^no (?P<k>\S+) field in the payload$", "报文中没有该类型的任何字段"),
        (r"^device (?P<d>.+) is not in the inventory.*$", "设备 {d} 不在设备清单中"),
        (r"^cannot read time (?P<v>.+)$", "无法识别的时间 {v}"),
        (r"^(?P<n>\d+) s ahead of the .*$", "设备时间超前 {n} 秒"),
        (r"^(?P<n>\d+) s old$", "设备时间已过去 {n} 秒"),
        (r"^(?P<f>\w+): expected a boolean, got (?P<v>.+)$", "{f}: 应为布尔值, 实为 {v}"),
        (r"^(?P<f>\w+): (?P<v>.+) is not a boolean$", "{f}: {v} 不是布尔值"),
        (r"^(?P<f>\w+): expected text, got (?P<v>.+)$", "{f}: 应为文本, 实为 {v}"),
        (r"^(?P<f>\w+): expected a number, got (?P<v>.+)$", "{f}: 应为数值, 实为 {v}"),
        (r"^(?P<f>\w+): (?P<v>\S+) is not an integer$", "{f}: {v} 不是整数"),
        (r"^(?P<f>\w+): (?P<v>\S+) outside (?P<r>\[.*\])$", "{f}: {v} 超出范围 {r}"),
        (r"^(?P<f>\w+): (?P<v>\S+) (below|above|beyond) .*$", "{f}: {v} 超出允许范围"),
        (r"^(?P<f>\w+): (?P<v>.+) is not one of .*$", "{f}: {v} 不是允许的取值"),
    ))


def deadletter_detail(reason: str, detail: str, lang: Language) -> str:
    """A dead letter's detail in `lang` (the decoder writes it in English); a detail no
    pattern reads says where the English text is, never a bare "-"."""
    if lang == "en" or not detail:
        return detail or "-"
    for pattern, template in _DETAILS_ZH:
        found = pattern.match(detail)
        if found:
            return template.format(**{k: (field_label(v, lang) or v) if k == "f" else v
                                      for k, v in found.groupdict().items() if v is not None})
    return t("deadletter.detail_in_english", lang)


def reason_word(reason: str, lang: Language) -> str:
    key = f"reason.{reason}"
    try:
        return t(key, lang)
    except KeyError:
        return reason
