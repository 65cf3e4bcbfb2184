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
    incident_title,
    kind_name,
    role_name,
    t,
    value_text,
)
from sentinel.notify.channels import channel_label

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
               names: Mapping[str, str] | None = None) -> str:
    """Who did it, as a person reads it: a contact's name, the wall screen's typed name,
    the CLI user; `sentinel` (the system itself) in words."""
    if not actor:
        return "-"
    names = names or {}
    if actor == "sentinel":
        return t("actor.sentinel", lang)
    prefix, sep, rest = actor.partition(":")
    if sep and prefix in ("board", "cli", "link"):
        return names.get(rest, rest)
    return names.get(actor, actor)


def values_text(values: Mapping[str, Any], lang: Language) -> str:
    """A reading's values, each under its display name and at its field's precision."""
    return "  ".join(f"{field_label(k, lang) or k}={value_text(k, v, lang)}"
                     for k, v in sorted(values.items()))


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
    who = actor_text(e.get("actor"), lang, names)
    parts: list[str] = []
    if kind == "opened":
        parts.append(f"[{severity_word(str(e.get('severity')), lang)}]")
        if e.get("value") is not None and e.get("field"):
            parts.append(value_text(str(e["field"]), e["value"], lang))
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
    field = (inc.get("detail") or {}).get("field")
    if inc.get("value") is not None:
        shown = value_text(str(field), inc["value"], lang) if field else \
            value_text("", inc["value"], lang)
        label = field_label(str(field), lang) if field else None
        lines.append(t("timeline.value", lang, value=f"{label} {shown}" if label else shown))
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
        (r"^payload is not valid UTF-8$", "报文不是有效的 UTF-8"),
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
    """A dead letter's detail in `lang` (the decoder writes it in English)."""
    if lang == "en":
        return detail
    for pattern, template in _DETAILS_ZH:
        found = pattern.match(detail)
        if found:
            return template.format(**{k: (field_label(v, lang) or v) if k == "f" else v
                                      for k, v in found.groupdict().items()})
    return "-"


def reason_word(reason: str, lang: Language) -> str:
    key = f"reason.{reason}"
    try:
        return t(key, lang)
    except KeyError:
        return reason
