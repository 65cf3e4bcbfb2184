"""Notification text: Simplified Chinese by default, English for contacts who ask for it.

Pure functions from incidents to a (title, body) pair. A title becomes a push title or an
e-mail subject, so it stays short: drill marker, severity, what, and where in one line
(``【严重】烟感报警 · 水贝花园1栋``). The body answers, one line each, what happened and
what state it is in, where, the reading against its threshold, since when, which device,
the incident id, and how to acknowledge. Times are shown in the community's time zone
(`sentinel.zone`, the top-level `timezone` setting).

Summaries (storm control) are built from stored titles and bodies, not from incidents, so
they read back the title format written here (see `_topic`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from sentinel import zone
from sentinel.i18n import Language, field_label, field_unit, incident_title, t, value_text
from sentinel.incidents.model import Incident
from sentinel.incidents.windows import Window
from sentinel.notify.channels import actor_name
from sentinel.types import Value

__all__ = ["NoticeKind", "Rendered", "mark_resent", "render_digest", "render_notice",
           "render_summary"]

NoticeKind = Literal["alert", "escalated", "repeat", "raised", "ack_expired", "resolved",
                     "assigned",
                     "unmuted"]

_MEMBER_LINES = 20   # members listed in one notice; the rest are counted
_DIGEST_LINES = 50   # incidents listed in one digest; the rest are counted
_SUMMARY_TOPICS = 3  # incident types named in a summary title
_SEP = " · "         # between what and where in a title; `_topic` splits on it


@dataclass(frozen=True, slots=True)
class Rendered:
    """A message ready to send: a short title and a plain-text body."""

    title: str
    body: str


# ---------------------------------------------------------------------------------------
# Text tables
# ---------------------------------------------------------------------------------------

_TEXT: dict[str, dict[Language, str]] = {
    "drill.prefix": {"zh": "【演练】", "en": "[DRILL] "},
    "drill.line": {"zh": "【演练】本条为演练通知, 不是真实事件",
                   "en": "[DRILL] This is an exercise, not a real incident"},
    "resolved.bracket": {"zh": "【已解决】", "en": "[RESOLVED] "},
    "maintenance.prefix": {"zh": "【维护中】", "en": "[MAINTENANCE] "},
    "maintenance.line": {"zh": "【维护中】屏蔽窗口 {window} ({reason}, {author}, 至 {until}) "
                               "期间报警: 维护中的探测器报火警仍按火警处理, 请立即核实",
                         "en": "[MAINTENANCE] Raised during silence {window} ({reason}, "
                               "{author}, until {until}): a detector under maintenance that "
                               "reports a fire is a fire until someone checks; verify now"},
    "title.unmuted": {"zh": "屏蔽结束: ", "en": "silence ended: "},
    "status.unmuted": {"zh": "状态: 屏蔽期间发生, 屏蔽已结束仍未处理, 请尽快确认",
                       "en": "Status: raised while silenced; the silence is over and it is "
                             "still not handled, please acknowledge"},
    "resent.prefix": {"zh": "【重发】", "en": "[RESENT] "},
    "resent.line": {"zh": "【重发】系统重启前本条通知可能已送达, 这是同一事件的再次发送",
                    "en": "[RESENT] This notice may have reached you before a restart; "
                          "it is the same alarm, sent again"},
    "title.escalated": {"zh": "升级: ", "en": "escalated: "},
    "title.repeat": {"zh": "提醒: ", "en": "reminder: "},
    "title.raised": {"zh": "级别提高: ", "en": "raised: "},
    "title.ack_expired": {"zh": "确认超时: ", "en": "ack expired: "},
    "title.assigned": {"zh": "指派给你: ", "en": "assigned to you: "},
    "status.assigned": {"zh": "状态: 此事件已指派给你处理。到场后请在链接页面添加反馈, "
                              "处理完毕后在该页面关闭事件",
                        "en": "Status: this incident is assigned to you. On site, add "
                              "your notes on the link page, and close it there when done"},
    "line.what": {"zh": "事件: {what} ({severity})", "en": "Incident: {what} ({severity})"},
    "status.alert": {"zh": "状态: 新发生, 请尽快确认", "en": "Status: new, please acknowledge"},
    "status.escalated": {"zh": "状态: 无人确认, 已升级到第 {level} 级",
                         "en": "Status: not acknowledged, escalated to level {level}"},
    "status.repeat": {"zh": "状态: 提醒, 仍无人确认",
                      "en": "Status: reminder, still not acknowledged"},
    "status.raised": {"zh": "状态: 级别已提高为「{severity}」",
                      "en": "Status: severity raised to {severity}"},
    "status.ack_expired": {"zh": "状态: {by} 已于 {at} 确认, 但至今未解决, 已重新开始升级通知",
                           "en": "Status: acknowledged by {by} at {at} but not resolved; "
                                 "escalation restarted"},
    "status.resolved": {"zh": "状态: 已由 {by} 于 {at} 解决, 结果: {outcome}",
                        "en": "Status: resolved by {by} at {at}, outcome: {outcome}"},
    "line.note": {"zh": "备注: {note}", "en": "Note: {note}"},
    "line.handler": {"zh": "处理人: {name}", "en": "Handled by: {name}"},
    "line.place": {"zh": "地点: {place}", "en": "Place: {place}"},
    "line.reading": {"zh": "读数: {reading}", "en": "Reading: {reading}"},
    "line.since": {"zh": "发生时间: {at} (已持续 {duration})",
                   "en": "Since: {at} (for {duration})"},
    "line.lasted": {"zh": "发生时间: {at} (历时 {duration})",
                    "en": "Since: {at} (lasted {duration})"},
    "line.device": {"zh": "设备: {device}", "en": "Device: {device}"},
    "line.members": {"zh": "关联设备 ({count}):", "en": "Member devices ({count}):"},
    "line.more": {"zh": "… 另有 {count} 项", "en": "… and {count} more"},
    "line.id": {"zh": "事件编号: {id}", "en": "Incident ID: {id}"},
    "line.ack_url": {"zh": "点击确认: {url}", "en": "Acknowledge: {url}"},
    "line.own_url": {"zh": "处理页面 (反馈、照片、关闭): {url}",
                     "en": "Your page for it (notes, photo, closing): {url}"},
    "line.ack_or": {"zh": "或执行命令: sentinel ack {id}", "en": "or run: sentinel ack {id}"},
    "line.ack_cmd": {"zh": "确认方法: 执行命令 sentinel ack {id}",
                     "en": "To acknowledge, run: sentinel ack {id}"},
    "reading.threshold": {"zh": "{field} {value} (阈值 {op} {limit})",
                          "en": "{field} {value} (threshold {op} {limit})"},
    "reading.threshold_held": {"zh": "{field} {value} (阈值 {op} {limit}, 持续 {duration})",
                               "en": "{field} {value} (threshold {op} {limit} for {duration})"},
    "reading.drop": {"zh": "{field} {window}内下降 {measured} (阈值 {limit}), 当前 {value}",
                     "en": "{field} dropped {measured} within {window} (limit {limit}), "
                           "now {value}"},
    "reading.rise": {"zh": "{field} {window}内上升 {measured} (阈值 {limit}), 当前 {value}",
                     "en": "{field} rose {measured} within {window} (limit {limit}), "
                           "now {value}"},
    "reading.falling_per_hour": {"zh": "{field} 每小时下降 {measured} (阈值 {limit}), 当前 {value}",
                                 "en": "{field} falling {measured}/h (limit {limit}), "
                                       "now {value}"},
    "reading.rising_per_hour": {"zh": "{field} 每小时上升 {measured} (阈值 {limit}), 当前 {value}",
                                "en": "{field} rising {measured}/h (limit {limit}), now {value}"},
    "reading.silent": {"zh": "已 {duration}未收到数据 (最后一次 {at})",
                       "en": "no data for {duration} (last seen {at})"},
    "reading.still": {"zh": "{duration}内无活动", "en": "no movement for {duration}"},
    "reading.idle": {"zh": "白天累计 {duration}无活动",
                     "en": "no activity for {duration} in the daytime"},
    "reading.yes": {"zh": "{field}: 是", "en": "{field}: yes"},
    "reading.no": {"zh": "{field}: 否", "en": "{field}: no"},
    "duration.seconds": {"zh": "{s} 秒", "en": "{s} s"},
    "duration.minutes": {"zh": "{m} 分钟", "en": "{m} min"},
    "duration.hours": {"zh": "{h} 小时 {m} 分钟", "en": "{h} h {m} min"},
    "duration.days": {"zh": "{d} 天", "en": "{d} d"},
    "summary.title": {"zh": "{count} 条通知: {topics}", "en": "{count} notices: {topics}"},
    "summary.header": {"zh": "以下 {count} 条通知合并发送 (按时间先后):",
                       "en": "{count} notices sent together (oldest first):"},
    "digest.title": {"zh": "【维护日报】{area} {day}: {count} 项待处理",
                     "en": "[maintenance digest] {area} {day}: {count} open"},
    "digest.none": {"zh": "今日无待处理的维护事项", "en": "No open maintenance items."},
    "digest.by_type": {"zh": "待处理 {count} 项, 按类型:", "en": "{count} open, by type:"},
    "digest.list": {"zh": "明细 (设备 | 地点 | 事件 | 开始时间):",
                    "en": "Items (device | place | incident | since):"},
    "digest.since": {"zh": "{at} (已 {days} 天)", "en": "{at} ({days} d ago)"},
    "actor.sentinel": {"zh": "系统自动", "en": "sentinel (automatic)"},
    "actor.device": {"zh": "设备", "en": "the device"},
    "unknown": {"zh": "未知", "en": "unknown"},
}

_OUTCOMES: dict[str, dict[Language, str]] = {
    "handled": {"zh": "已处置", "en": "handled"},
    "false_alarm": {"zh": "误报", "en": "false alarm"},
    "referred": {"zh": "已转交 (消防/物业/家属等)",
                 "en": "referred (fire brigade, utility, family)"},
    "cleared": {"zh": "已恢复正常", "en": "cleared"},
    "cancelled": {"zh": "佩戴者已取消", "en": "cancelled by the wearer"},
    "expired": {"zh": "已过期", "en": "expired"},
    "with_group": {"zh": "随所属事件组一并解决", "en": "resolved with its group"},
    "box_acknowledged": {"zh": "社区告警已确认", "en": "acknowledged in the community"},
    "box_resolved": {"zh": "社区告警已关闭", "en": "closed in the community"},
}

# Canonical fields of the built-in kinds (see sentinel.kinds): label and the unit a person
# reads. Fields of kind files show their `label` and canonical unit (i18n.field_label).
_FIELDS: dict[str, tuple[str, str, str]] = {
    "pressure": ("水压", "pressure", "MPa"),
    "level": ("液位", "level", "m"),
    "level_percent": ("液位", "level", "%"),
    "concentration_lel": ("燃气浓度", "gas concentration", "%LEL"),
    "concentration_ppm": ("气体浓度", "gas concentration", "ppm"),
    "obscuration": ("烟雾浓度", "smoke obscuration", "%/m"),
    "temperature": ("温度", "temperature", "°C"),
    "heart_rate": ("心率", "heart rate", "次/分"),
    "steps": ("步数", "steps", ""),
    "battery": ("电量", "battery", "%"),
    "battery_low": ("低电量", "low battery", ""),
    "battery_voltage": ("电池电压", "battery voltage", "V"),
    "signal": ("信号强度", "signal", "dBm"),
    "snr": ("信噪比", "SNR", "dB"),
    "alarm": ("报警", "alarm", ""),
    "tamper": ("防拆", "tamper", ""),
    "fault": ("故障", "fault", ""),
    "self_test": ("自检", "self-test", ""),
    "sos": ("SOS", "SOS", ""),
    "sos_cancel": ("取消 SOS", "SOS cancel", ""),
    "fall": ("跌倒", "fall", ""),
    "worn": ("佩戴", "worn", ""),
    "valve_closed": ("阀门关闭", "valve closed", ""),
}

# How a flag reads when it is true / false; flags not listed read "<field>: 是/否".
_FLAGS: dict[str, dict[bool, tuple[str, str]]] = {
    "alarm": {True: ("报警", "alarm"), False: ("正常", "normal")},
    "tamper": {True: ("设备被拆", "tampered"), False: ("已复位", "restored")},
    "fault": {True: ("故障", "fault"), False: ("正常", "normal")},
    "self_test": {True: ("自检中", "self-test")},
    "sos": {True: ("SOS 求助", "SOS pressed")},
    "sos_cancel": {True: ("已取消 SOS", "SOS cancelled")},
    "fall": {True: ("检测到跌倒", "fall detected")},
    "worn": {True: ("已佩戴", "worn"), False: ("未佩戴", "not worn")},
    "valve_closed": {True: ("阀门已关闭", "valve closed"), False: ("阀门未关闭", "valve open")},
    "battery_low": {True: ("设备报低电量", "device reports low battery")},
    # Fields of the shipped kind files (devices/kinds).
    "occupied": {True: ("消防通道被占用", "fire lane blocked"),
                 False: ("消防通道已畅通", "fire lane clear")},
    "help": {True: ("一键呼救已按下", "help button pressed")},
    "help_cancel": {True: ("呼救已取消", "help cancelled")},
}

# Canonical units as people read them.
_UNITS = {"degC": "°C", "1": ""}

# Lines of a notice kept in a summary (the "what" line repeats the title, so it is left out).
_SUMMARY_KEYS = ("status.", "line.note", "line.place", "line.since", "line.lasted", "line.ack_url",
                 "line.ack_cmd", "line.ack_or", "line.own_url")


def _(key: str, lang: Language, **values: object) -> str:
    return _TEXT[key][lang].format(**values)


def _prefix(key: str, lang: Language) -> str:
    """The constant text a line of `key` starts with (up to its first placeholder)."""
    return _TEXT[key][lang].split("{", 1)[0]


# ---------------------------------------------------------------------------------------
# Small formatters
# ---------------------------------------------------------------------------------------


def _time(ts: float) -> str:
    return zone.stamp(ts)


def _duration(seconds: float, lang: Language) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return _("duration.seconds", lang, s=s)
    if s < 3600:
        return _("duration.minutes", lang, m=s // 60)
    h, m = divmod(s // 60, 60)
    return _("duration.hours", lang, h=h, m=m)


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{round(value, 3):g}"


def _quantity(value: Value | None, unit: str, field: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    # At the field's precision (its kind's), like everywhere else a value is shown.
    text = value_text(field, float(value)) if field else _number(float(value))
    if not unit:
        return text
    return f"{text}{unit}" if unit.startswith("%") else f"{text} {unit}"


def _field(name: str, lang: Language) -> tuple[str, str]:
    """(label, unit) of a canonical field; a field of a kind file shows its configured
    label (else its name) and canonical unit."""
    entry = _FIELDS.get(name)
    if entry is None:
        unit = field_unit(name) or ""
        return (field_label(name, lang) or name.replace("_", " ")), _UNITS.get(unit, unit)
    return (entry[0] if lang == "zh" else entry[1]), entry[2]


def _actor(actor: str | None, lang: Language, people: Mapping[str, str]) -> str:
    """Who acted, by name: never a raw contact id, `cli:root` or `board:operator`."""
    if not actor:
        return _("unknown", lang)
    key = f"actor.{actor}"
    return _(key, lang) if key in _TEXT else actor_name(actor, people, lang)


def _outcome(outcome: str | None, lang: Language) -> str:
    if not outcome:
        return _("unknown", lang)
    entry = _OUTCOMES.get(outcome)
    return entry[lang] if entry else outcome


def _floor(floor: str, lang: Language) -> str:
    if re.fullmatch(r"-?\d+", floor):
        return f"{floor}楼" if lang == "zh" else f"{floor}F"
    return floor


def _where_short(inc: Incident, lang: Language) -> str:
    """Compound and building, for a title; else the grid or the device."""
    place = inc.place
    parts = [p for p in (place.get("compound"), place.get("building")) if p]
    if parts:
        return ("" if lang == "zh" else " ").join(parts)
    if place.get("grid"):
        return place["grid"]
    if inc.kind != "system" and inc.device_id:
        return inc.device_id
    return ""


def _place(place: Mapping[str, str], lang: Language) -> str:
    """Compound, building, floor, unit and the location text, without repeating itself."""
    compound, building = place.get("compound", ""), place.get("building", "")
    floor, unit = place.get("floor", ""), place.get("unit", "")
    location = place.get("location", "")
    if lang == "zh":
        raw = [p for p in (compound, building, floor, unit) if p]
        structured = "".join(p for p in (compound, building, floor and _floor(floor, lang),
                                         unit) if p)
        # Inventories often spell the whole address in `location` (水贝花园1栋3楼306室卧室).
        if location and all(p in location for p in raw):
            return location
    else:
        head = " ".join(p for p in (compound, building) if p)
        structured = ", ".join(p for p in (head, floor and _floor(floor, lang), unit) if p)
    if location and structured:
        return f"{structured} ({location})"
    return structured or location or place.get("grid", "")


def _reading(inc: Incident, lang: Language) -> str | None:
    """The value against its threshold, in the words of the rule type that fired."""
    d = inc.detail
    name = str(d.get("field", ""))
    label, unit = _field(name, lang) if name else ("", "")
    value = inc.value

    def q(v: Value | None) -> str:
        return _quantity(v, unit, name)

    if "op" in d and "limit" in d:
        # The condition that set the incident's severity (IncidentBook keeps value, detail
        # and rule together), with the operator the rule used: > ≥ < ≤.
        held = d.get("held_for")
        if isinstance(held, int | float) and not isinstance(held, bool) and held > 0:
            return _("reading.threshold_held", lang, field=label, value=q(value), op=d["op"],
                     limit=q(d["limit"]), duration=_duration(held, lang)).strip()
        return _("reading.threshold", lang, field=label, value=q(value), op=d["op"],
                 limit=q(d["limit"])).strip()
    measure = d.get("measure")
    if isinstance(measure, str) and f"reading.{measure}" in _TEXT:
        window = d.get("window")
        span = _duration(window, lang) if isinstance(window, int | float) else ""
        return _(f"reading.{measure}", lang, field=label, measured=q(d.get("measured")),
                 limit=q(d.get("limit")), window=span, value=q(value)).strip()
    if isinstance(d.get("silent_for"), int | float):
        last = d.get("last_seen")
        at = _time(last) if isinstance(last, int | float) and last > 0 else _("unknown", lang)
        return _("reading.silent", lang, duration=_duration(float(d["silent_for"]), lang), at=at)
    if isinstance(d.get("still_for"), int | float):
        return _("reading.still", lang, duration=_duration(float(d["still_for"]), lang))
    if isinstance(d.get("idle_daytime"), int | float):
        return _("reading.idle", lang, duration=_duration(float(d["idle_daytime"]), lang))
    if isinstance(value, bool):
        flag = _FLAGS.get(name, {}).get(value)
        if flag is not None:
            return flag[0] if lang == "zh" else flag[1]
        return _("reading.yes" if value else "reading.no", lang, field=label or "—")
    if value is not None:
        return f"{label} {q(value)}".strip()
    return None


def _member_line(member: Incident, lang: Language) -> str:
    device = member.device_id or member.target
    what = incident_title(member.name, lang)
    where = _place(member.place, lang)
    at = zone.clock(member.opened_at)
    return "  - " + " ".join(p for p in (device, what, where, at) if p)


# ---------------------------------------------------------------------------------------
# Notices
# ---------------------------------------------------------------------------------------


def _title(kind: NoticeKind, inc: Incident, lang: Language, drilling: bool,
           maintenance: bool = False) -> str:
    severity = t("severity." + inc.severity.label, lang)
    if kind == "resolved":
        bracket = _("resolved.bracket", lang)
    else:
        bracket = f"【{severity}】" if lang == "zh" else f"[{severity.upper()}] "
    status = _(f"title.{kind}", lang) if f"title.{kind}" in _TEXT else ""
    where = _where_short(inc, lang)
    drill = _("drill.prefix", lang) if drilling else ""
    if maintenance:
        drill += _("maintenance.prefix", lang)
    what = _what(inc, lang)
    return f"{drill}{bracket}{status}{what}" + (f"{_SEP}{where}" if where else "")


def _what(inc: Incident, lang: Language) -> str:
    """What the incident is: a district's whistle says which alarm it mirrors (烟感报警), a
    box's clean stop that it was planned."""
    if inc.name == "whistle" and inc.detail.get("box_incident"):
        return t("whistle.title", lang,
                 alarm=incident_title(str(inc.detail["box_incident"]), lang))
    if _planned_stop(inc):
        return t("box_stopped.title", lang)
    return incident_title(inc.name, lang)


def incident_what(inc: Incident, lang: Language) -> str:
    """What an incident is, as its notices name it (a whistle: which alarm; a box's clean
    stop: planned), for other views of it (the district board)."""
    return _what(inc, lang)


def _district(inc: Incident) -> bool:
    """One of a district daemon's own incidents: its CLI needs the district's file."""
    return inc.kind in ("district", "whistle") and inc.name in ("box_offline", "whistle")


def _planned_stop(inc: Incident) -> bool:
    return inc.name == "box_offline" and inc.detail.get("reach") == "stopped" \
        and inc.severity.label == "warning"


def _box_actor(inc: Incident, lang: Language, people: Mapping[str, str]) -> str:
    """Who ended a whistle on the box: a street-office person by name, else a person of
    the community, with the community's name."""
    actor = inc.resolved_by or ""
    where, sep, who = actor.partition(":")
    if sep and where == "district":
        name = people.get(who) or actor_name(actor, people, lang).split("·")[-1]
        return t("actor.street_office", lang, name=name)
    return t("actor.community", lang, name=actor_name(actor, people, lang),
             community=str(inc.detail.get("community_name") or inc.place.get("community")
                           or ""))


def _status(kind: NoticeKind, inc: Incident, lang: Language, now: float, step: int,
            people: Mapping[str, str]) -> str:
    severity = t("severity." + inc.severity.label, lang)
    if kind == "resolved" and inc.outcome in ("box_acknowledged", "box_resolved"):
        return t(f"whistle.status.{inc.outcome}", lang, by=_box_actor(inc, lang, people),
                 at=_time(inc.resolved_at if inc.resolved_at is not None else now))
    if kind == "alert" and _planned_stop(inc):
        return t("box_stopped.status", lang)
    if kind == "escalated":
        return _("status.escalated", lang, level=step + 1)
    if kind == "ack_expired":
        at = _time(inc.acknowledged_at) if inc.acknowledged_at else _("unknown", lang)
        return _("status.ack_expired", lang, by=_actor(inc.acknowledged_by, lang, people),
                 at=at)
    if kind == "resolved":
        return _("status.resolved", lang, by=_actor(inc.resolved_by, lang, people),
                 at=_time(inc.resolved_at if inc.resolved_at is not None else now),
                 outcome=_outcome(inc.outcome, lang))
    if kind == "raised":
        return _("status.raised", lang, severity=severity)
    return _(f"status.{kind}", lang)


def render_notice(kind: NoticeKind, inc: Incident, lang: Language, *, now: float,
                  step: int = 0, ack_url: str | None = None, drill: bool | None = None,
                  members: Sequence[Incident] = (), maintenance: Window | None = None,
                  people: Mapping[str, str] | None = None) -> Rendered:
    """Render one notice about `inc` for a person reading `lang`.

    `step` is the escalation step just reached (shown as level step+1), `ack_url` a link
    that acknowledges, `drill=True` marks a drill even if the incident is not flagged as
    one, `members` the member incidents of a group (else only their ids are listed), and
    `maintenance` the silence window that covers a life-safety incident paged all the same,
    and `people` the on-call file's names by contact id (who acted is named, never an id).
    """
    people = people or {}
    drilling = inc.drill or drill is True
    lines: list[str] = []
    if drilling:
        lines.append(_("drill.line", lang))
    if maintenance is not None:
        lines.append(_("maintenance.line", lang, window=maintenance.label,
                       reason=maintenance.reason, author=maintenance.author,
                       until=_time(maintenance.in_force_until(now) or maintenance.end)))
    lines.append(_("line.what", lang, what=_what(inc, lang),
                   severity=t("severity." + inc.severity.label, lang)))
    lines.append(_status(kind, inc, lang, now, step, people))
    if kind == "resolved" and inc.assigned_to and inc.assigned_to != inc.resolved_by:
        lines.append(_("line.handler", lang, name=_actor(inc.assigned_to, lang, people)))
    if kind == "resolved" and inc.note and inc.outcome != "with_group":
        # (closed with its group: the model's note only names the group, in English)
        lines.append(_("line.note", lang, note=inc.note))
    place = _place(inc.place, lang)
    if inc.name == "whistle" and inc.detail.get("box_incident"):
        # The district wrote the alarm's name into the place in its own language.
        box = str(inc.detail["box_incident"])
        other: Language = "en" if lang == "zh" else "zh"
        place = place.replace(incident_title(box, other), incident_title(box, lang))
    if place:
        lines.append(_("line.place", lang, place=place))
    reading = _reading(inc, lang)
    if reading:
        lines.append(_("line.reading", lang, reading=reading))
    if kind == "resolved":
        end = inc.resolved_at if inc.resolved_at is not None else now
        lines.append(_("line.lasted", lang, at=_time(inc.opened_at),
                       duration=_duration(end - inc.opened_at, lang)))
    else:
        lines.append(_("line.since", lang, at=_time(inc.opened_at),
                       duration=_duration(now - inc.opened_at, lang)))
    if inc.device_id and inc.kind != "system":
        lines.append(_("line.device", lang, device=inc.device_id))
    lines += _members(inc, lang, members)
    lines.append(_("line.id", lang, id=inc.id))
    if kind != "resolved":  # nothing left to acknowledge once resolved
        if ack_url and kind == "assigned":
            lines.append(_("line.own_url", lang, url=ack_url))
        elif ack_url:
            lines.append(_("line.ack_url", lang, url=ack_url))
            lines.append(t("district.ack_or", lang, id=inc.id) if _district(inc)
                         else _("line.ack_or", lang, id=inc.id))
        else:
            lines.append(t("district.ack_cmd", lang, id=inc.id) if _district(inc)
                         else _("line.ack_cmd", lang, id=inc.id))
    return Rendered(_title(kind, inc, lang, drilling, maintenance is not None),
                    "\n".join(lines))


def _members(inc: Incident, lang: Language, members: Sequence[Incident]) -> list[str]:
    if members:
        entries = [_member_line(m, lang) for m in sorted(members, key=lambda m: m.opened_at)]
    else:
        entries = [f"  - {member_id}" for member_id in inc.members]
    if not entries:
        return []
    lines = [_("line.members", lang, count=len(entries)), *entries[:_MEMBER_LINES]]
    if len(entries) > _MEMBER_LINES:
        lines.append("  " + _("line.more", lang, count=len(entries) - _MEMBER_LINES))
    return lines


def mark_resent(message: Rendered, lang: Language) -> Rendered:
    """The same notice, marked as a repeat: its first copy may have arrived before a crash
    (see `notify.outbox`), so the person sees it is the same alarm, not a new one."""
    return Rendered(_("resent.prefix", lang) + message.title,
                    _("resent.line", lang) + "\n" + message.body)


# ---------------------------------------------------------------------------------------
# Summaries (storm control) and the daily digest
# ---------------------------------------------------------------------------------------

_LEADING_BRACKETS = re.compile(r"^(?:【[^】]*】|\[[^\]]*\]\s*)+")
_STATUS_PREFIXES = tuple(text for key, by_lang in _TEXT.items() if key.startswith("title.")
                         for text in by_lang.values())


def _digest_bracket(title: str) -> str | None:
    """The bracket of a daily digest's title ("maintenance digest"), or None."""
    for code in ("zh", "en"):
        head = _prefix("digest.title", code)
        if title.startswith(head):
            return head.strip().strip("【】[]")
    return None


def _topic(title: str) -> str:
    """What a title of `_title` is about: the incident type, without marks and place."""
    digest = _digest_bracket(title)
    if digest is not None:
        return digest
    rest = _LEADING_BRACKETS.sub("", title)
    for prefix in _STATUS_PREFIXES:
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            break
    topic = rest.split(_SEP, 1)[0].strip()
    return topic or title


def _summary_lines(body: str, lang: Language) -> list[str]:
    keep = tuple(_prefix(key, code) for key in _TEXT if key.startswith(_SUMMARY_KEYS)
                 for code in ("zh", "en"))
    lines = [line for line in body.splitlines() if line.startswith(keep)]
    # A body not written here: its first lines are the best guess at what matters.
    return lines or [line for line in body.splitlines() if line.strip()][:3]


def render_summary(items: Sequence[Rendered], lang: Language) -> Rendered:
    """Merge notices held for one person into one message, oldest first.

    The title counts them by incident type (``3 条通知: 烟感报警 ×2, 设备离线 ×1``); the
    body lists each title with its status, place, time and how to acknowledge.
    """
    counts = Counter(_topic(item.title) for item in items)
    named = [f"{topic} ×{n}" for topic, n in counts.most_common(_SUMMARY_TOPICS)]
    topics = ", ".join(named) + (" …" if len(counts) > _SUMMARY_TOPICS else "")
    title = _("summary.title", lang, count=len(items), topics=topics)
    lines = [_("summary.header", lang, count=len(items))]
    for number, item in enumerate(items, start=1):
        lines.append("")
        lines.append(f"{number}. {item.title}")
        # A digest is already a list made to be read whole (two digests for one person
        # at 09:00 are sent together): it keeps every line.
        kept = (item.body.splitlines() if _digest_bracket(item.title) is not None
                else _summary_lines(item.body, lang))
        lines += [f"   {line}" for line in kept]
    return Rendered(title, "\n".join(lines))


def render_digest(incidents: Sequence[Incident], lang: Language, *, day: date,
                  area: str) -> Rendered:
    """The daily maintenance digest of `area` for property management.

    Counts per incident type, then one line per incident (device, place, type, since),
    oldest first, at most `_DIGEST_LINES` of them and a count of the rest.
    """
    title = _("digest.title", lang, area=area, day=day.isoformat(), count=len(incidents))
    if not incidents:
        return Rendered(title, _("digest.none", lang))
    counts = Counter(incident_title(inc.name, lang) for inc in incidents)
    lines = [_("digest.by_type", lang, count=len(incidents))]
    lines += [f"  {what} {n}" for what, n in counts.most_common()]
    lines += ["", _("digest.list", lang)]
    ordered = sorted(incidents, key=lambda inc: (inc.opened_at, inc.id))
    for inc in ordered[:_DIGEST_LINES]:
        opened = zone.local(inc.opened_at)
        since = opened.strftime("%Y-%m-%d %H:%M")
        days = (day - opened.date()).days
        if days >= 1:
            since = _("digest.since", lang, at=since, days=days)
        where = _place(inc.place, lang) or "—"
        lines.append(f"  {inc.device_id or inc.target} | {where} | "
                     f"{incident_title(inc.name, lang)} | {since}")
    if len(ordered) > _DIGEST_LINES:
        lines.append("  " + _("line.more", lang, count=len(ordered) - _DIGEST_LINES))
    return Rendered(title, "\n".join(lines))
