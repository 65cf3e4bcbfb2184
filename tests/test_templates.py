"""Notification text: notices, summaries and the daily digest, in Chinese and English."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from sentinel.config.inventory import Device
from sentinel.i18n import Language
from sentinel.incidents.model import Incident, IncidentBook, Outcome, Status
from sentinel.notify.templates import (
    Rendered,
    mark_resent,
    render_digest,
    render_notice,
    render_summary,
)
from sentinel.rules.engine import RuleEngine
from sentinel.rules.model import load_rules_file, merge_rule_files
from sentinel.types import Reading, Severity, Value

from helpers import SHIPPED_CONFIG

T0 = datetime(2026, 5, 1, 8, 0, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
NOW = T0 + 12 * 60 + 5

ROOM_306 = {"community": "水贝社区", "compound": "水贝花园", "building": "1栋", "floor": "3",
            "unit": "306", "grid": "SB-G01", "location": "水贝花园1栋3楼306室卧室",
            "kind": "smoke", "device": "SB-SMK-0001"}
PUMP_ROOM = {"community": "水贝社区", "compound": "水贝花园", "building": "2栋", "floor": "1",
             "unit": "", "grid": "SB-G01", "location": "消防泵房", "kind": "hydrant_pressure",
             "device": "SB-HYD-0001"}


def smoke(**changes: object) -> Incident:
    inc = Incident(id="20260501-0001", key="smoke_alarm:SB-SMK-0001", name="smoke_alarm",
                   target="SB-SMK-0001", kind="smoke", severity=Severity.CRITICAL,
                   opened_at=T0, place=dict(ROOM_306), device_id="SB-SMK-0001",
                   life_safety=True, resolve_mode="manual", value=True,
                   detail={"field": "alarm"}, conditions={"smoke_alarm": 3})
    return dataclasses.replace(inc, **changes)  # type: ignore[arg-type]


def hydrant() -> Incident:
    return Incident(id="20260501-0002", key="hydrant_pressure_low:SB-HYD-0001",
                    name="hydrant_pressure_low", target="SB-HYD-0001", kind="hydrant_pressure",
                    severity=Severity.WARNING, opened_at=T0, place=dict(PUMP_ROOM),
                    device_id="SB-HYD-0001", value=0.08,
                    detail={"field": "pressure", "op": "<", "limit": 0.14})


def offline(number: int, opened_at: float, device: str = "SB-SMK-0002") -> Incident:
    return Incident(id=f"20260501-{number:04d}", key=f"monitor_offline:{device}",
                    name="monitor_offline", target=device, kind="smoke",
                    severity=Severity.MAINTENANCE, opened_at=opened_at,
                    place={**ROOM_306, "floor": "11", "unit": "走廊",
                           "location": "水贝花园1栋11楼走廊", "device": device},
                    device_id=device, detail={"silent_for": 900, "limit": 900,
                                              "last_seen": opened_at - 900})


def lines(rendered: Rendered) -> list[str]:
    return rendered.body.splitlines()


# -- alerts ------------------------------------------------------------------------------


def test_alert_in_chinese() -> None:
    """A smoke alarm notice in Chinese says what, where, since when, which device and how to ack."""
    notice = render_notice("alert", smoke(), "zh", now=NOW, ack_url="https://sb.example/a/1")
    assert notice.title == "【严重】烟感报警 · 水贝花园1栋"
    assert lines(notice) == [
        "事件: 烟感报警 (严重)",
        "状态: 新发生, 请尽快确认",
        "地点: 水贝花园1栋3楼306室卧室",
        "读数: 报警",
        "发生时间: 2026-05-01 08:00:00 (已持续 12 分钟)",
        "设备: SB-SMK-0001",
        "事件编号: 20260501-0001",
        "点击确认: https://sb.example/a/1",
        "或执行命令: sentinel ack 20260501-0001",
    ]


def test_alert_in_english() -> None:
    """The same alert in English keeps the place names and translates every label."""
    notice = render_notice("alert", smoke(), "en", now=NOW, ack_url="https://sb.example/a/1")
    assert notice.title == "[CRITICAL] smoke alarm · 水贝花园 1栋"
    assert lines(notice) == [
        "Incident: smoke alarm (critical)",
        "Status: new, please acknowledge",
        "Place: 水贝花园 1栋, 3F, 306 (水贝花园1栋3楼306室卧室)",
        "Reading: alarm",
        "Since: 2026-05-01 08:00:00 (for 12 min)",
        "Device: SB-SMK-0001",
        "Incident ID: 20260501-0001",
        "Acknowledge: https://sb.example/a/1",
        "or run: sentinel ack 20260501-0001",
    ]


def test_ack_command_is_given_without_a_link() -> None:
    """Without an ack link the notice still says how to acknowledge from the command line."""
    zh = render_notice("alert", smoke(), "zh", now=NOW)
    en = render_notice("alert", smoke(), "en", now=NOW)
    assert lines(zh)[-1] == "确认方法: 执行命令 sentinel ack 20260501-0001"
    assert lines(en)[-1] == "To acknowledge, run: sentinel ack 20260501-0001"
    assert "http" not in zh.body + en.body


def test_place_without_a_full_location_text_is_spelled_out() -> None:
    """A location that does not repeat compound, building and floor is shown after them."""
    notice = render_notice("alert", hydrant(), "zh", now=NOW)
    assert "地点: 水贝花园2栋1楼 (消防泵房)" in lines(notice)


def test_threshold_reading_shows_value_against_limit() -> None:
    """A threshold incident shows the value, the comparison and the limit with units."""
    zh = render_notice("alert", hydrant(), "zh", now=NOW)
    en = render_notice("alert", hydrant(), "en", now=NOW)
    assert "读数: 水压 0.08 MPa (阈值 < 0.14 MPa)" in lines(zh)
    assert "Reading: pressure 0.08 MPa (threshold < 0.14 MPa)" in lines(en)
    assert zh.title == "【警告】消火栓水压低 · 水贝花园2栋"


def test_offline_reading_says_how_long_it_was_silent() -> None:
    """An offline incident reads as the time without data and the last report."""
    notice = render_notice("alert", offline(3, T0), "zh", now=NOW)
    assert "读数: 已 15 分钟未收到数据 (最后一次 2026-05-01 07:45:00)" in lines(notice)


def test_long_durations_read_in_hours() -> None:
    """An incident open for hours says hours and minutes, not hundreds of minutes."""
    notice = render_notice("repeat", smoke(), "en", now=T0 + 2 * 3600 + 5 * 60)
    assert "Since: 2026-05-01 08:00:00 (for 2 h 5 min)" in lines(notice)


# -- follow-ups --------------------------------------------------------------------------


def test_escalated_says_unacknowledged_and_the_level() -> None:
    """An escalation notice says nobody acknowledged and names the level (step + 1)."""
    zh = render_notice("escalated", smoke(), "zh", now=NOW, step=1)
    en = render_notice("escalated", smoke(), "en", now=NOW, step=1)
    assert zh.title == "【严重】升级: 烟感报警 · 水贝花园1栋"
    assert lines(zh)[1] == "状态: 无人确认, 已升级到第 2 级"
    assert en.title == "[CRITICAL] escalated: smoke alarm · 水贝花园 1栋"
    assert lines(en)[1] == "Status: not acknowledged, escalated to level 2"


def test_repeat_is_a_reminder() -> None:
    """A repeat notice is a reminder that the incident is still unacknowledged."""
    zh = render_notice("repeat", smoke(), "zh", now=NOW)
    en = render_notice("repeat", smoke(), "en", now=NOW)
    assert zh.title.startswith("【严重】提醒: ") and "状态: 提醒, 仍无人确认" in lines(zh)
    assert en.title.startswith("[CRITICAL] reminder: ")
    assert "Status: reminder, still not acknowledged" in lines(en)


def test_raised_names_the_new_severity() -> None:
    """A severity raise names the severity the incident now has."""
    inc = smoke(severity=Severity.EMERGENCY)
    zh = render_notice("raised", inc, "zh", now=NOW)
    en = render_notice("raised", inc, "en", now=NOW)
    assert zh.title == "【紧急】级别提高: 烟感报警 · 水贝花园1栋"
    assert "状态: 级别已提高为「紧急」" in lines(zh)
    assert "Status: severity raised to emergency" in lines(en)


class ShippedRules:
    """One device under the shipped rules.toml: readings go through rules into incidents."""

    def __init__(self, device_id: str, kind: str) -> None:
        config = merge_rule_files([load_rules_file(SHIPPED_CONFIG.parent / "rules.toml")])
        place = {k: v for k, v in ROOM_306.items() if k in ("community", "compound",
                                                             "building", "floor", "unit",
                                                             "grid", "location")}
        self.device = Device(id=device_id, kind=kind, profile="sentinel-json", **place)
        inventory = {device_id: self.device}
        self.engine = RuleEngine(config, inventory, T0 - 3600, 0.0)
        self.book = IncidentBook(config, inventory)

    def send(self, ts: float, **values: Value) -> None:
        reading = Reading(self.device.id, self.device.kind, ts, ts, values)
        self.book.apply(self.engine.on_readings([reading]), ts)

    def tick(self, now: float) -> None:
        self.book.apply(self.engine.tick(now), now)

    def incident(self) -> Incident:
        (inc,) = self.book.open.values()
        return inc


def reading_line(inc: Incident, lang: Language, kind: str = "raised") -> str:
    body = lines(render_notice(kind, inc, lang, now=NOW))  # type: ignore[arg-type]
    (line,) = [x for x in body if x.startswith(("读数: ", "Reading: "))]
    return line


def test_a_fall_raised_for_lying_still_pages_the_stillness() -> None:
    """Fall → no step for 2 min: the raised page reads "2 分钟内无活动", not the step count."""
    world = ShippedRules("SB-WCH-0001", "elderly_watch")
    world.send(T0 - 10, steps=112, fall=False)
    world.send(T0, fall=True, steps=112)
    assert reading_line(world.incident(), "zh", "alert") == "读数: 检测到跌倒"
    world.tick(T0 + 120)
    inc = world.incident()
    assert inc.severity == Severity.EMERGENCY
    assert reading_line(inc, "zh") == "读数: 2 分钟内无活动"
    assert reading_line(inc, "en") == "Reading: no movement for 2 min"
    # Later notices (reminders, escalations) read the same current condition.
    assert reading_line(inc, "zh", "repeat") == "读数: 2 分钟内无活动"
    assert render_notice("raised", inc, "zh", now=NOW).title.startswith("【紧急】级别提高: 跌倒")


def test_a_gas_leak_raised_to_critical_pages_the_critical_level() -> None:
    """10 → 30 %LEL: the raised page reads 30 %LEL against ≥ 25 %LEL, not the old ≥ 10."""
    world = ShippedRules("SB-GAS-0001", "gas")
    world.send(T0, concentration_lel=10.0)
    assert reading_line(world.incident(), "zh", "alert") == \
        "读数: 燃气浓度 10%LEL (阈值 ≥ 10%LEL)"
    world.send(T0 + 10, concentration_lel=30.0)
    inc = world.incident()
    assert inc.severity == Severity.CRITICAL
    assert reading_line(inc, "zh") == "读数: 燃气浓度 30%LEL (阈值 ≥ 25%LEL)"
    assert reading_line(inc, "en") == "Reading: gas concentration 30%LEL (threshold ≥ 25%LEL)"
    assert reading_line(inc, "en", "escalated") == \
        "Reading: gas concentration 30%LEL (threshold ≥ 25%LEL)"


def test_a_gas_leak_at_the_alarm_point_reads_at_or_above() -> None:
    """Exactly 25 %LEL opens a critical leak whose page says "25%LEL (阈值 ≥ 25%LEL)"."""
    world = ShippedRules("SB-GAS-0001", "gas")
    world.send(T0, concentration_lel=25.0)
    inc = world.incident()
    assert inc.severity == Severity.CRITICAL
    assert reading_line(inc, "zh", "alert") == "读数: 燃气浓度 25%LEL (阈值 ≥ 25%LEL)"


def test_a_held_level_says_how_long_it_must_hold() -> None:
    """A hydrant critical after 60 s below 0.10 MPa says the hold, in zh and en."""
    world = ShippedRules("SB-HYD-0001", "hydrant_pressure")
    world.send(T0, pressure=0.09)
    world.send(T0 + 60, pressure=0.09)
    inc = world.incident()
    assert inc.severity == Severity.CRITICAL
    assert reading_line(inc, "zh") == "读数: 水压 0.09 MPa (阈值 < 0.1 MPa, 持续 1 分钟)"
    assert reading_line(inc, "en") == "Reading: pressure 0.09 MPa (threshold < 0.1 MPa for 1 min)"


def test_ack_expired_says_who_acknowledged_and_that_escalation_restarted() -> None:
    """An expired acknowledgement names who acknowledged when, and asks again to acknowledge."""
    inc = smoke(status=Status.FIRING, acknowledged_at=T0 + 120, acknowledged_by="王工")
    zh = render_notice("ack_expired", inc, "zh", now=NOW)
    en = render_notice("ack_expired", inc, "en", now=NOW)
    assert zh.title.startswith("【严重】确认超时: ")
    assert "状态: 王工 已于 2026-05-01 08:02:00 确认, 但至今未解决, 已重新开始升级通知" in lines(zh)
    assert ("Status: acknowledged by 王工 at 2026-05-01 08:02:00 but not resolved; "
            "escalation restarted") in lines(en)
    assert "sentinel ack 20260501-0001" in zh.body


@pytest.mark.parametrize(("outcome", "zh", "en"), [
    (Outcome.HANDLED, "已处置", "handled"),
    (Outcome.FALSE_ALARM, "误报", "false alarm"),
    (Outcome.REFERRED, "已转交 (消防/物业/家属等)", "referred (fire brigade, utility, family)"),
    (Outcome.CLEARED, "已恢复正常", "cleared"),
    (Outcome.CANCELLED, "佩戴者已取消", "cancelled by the wearer"),
    (Outcome.EXPIRED, "已过期", "expired"),
    (Outcome.WITH_GROUP, "随所属事件组一并解决", "resolved with its group"),
])
def test_resolved_outcomes_are_translated(outcome: Outcome, zh: str, en: str) -> None:
    """Every outcome reads in the contact's language."""
    inc = smoke(status=Status.RESOLVED, resolved_at=T0 + 1800, resolved_by="li",
                outcome=outcome.value)
    assert f"结果: {zh}" in render_notice("resolved", inc, "zh", now=NOW).body
    assert f"outcome: {en}" in render_notice("resolved", inc, "en", now=NOW).body


def test_resolved_says_by_whom_how_and_the_note() -> None:
    """A resolution notice names who resolved it, the outcome and the note; no ack asked."""
    inc = smoke(status=Status.RESOLVED, resolved_at=T0 + 1800, resolved_by="王工",
                outcome="false_alarm", note="厨房油烟, 已通风")
    zh = render_notice("resolved", inc, "zh", now=T0 + 1900)
    en = render_notice("resolved", inc, "en", now=T0 + 1900)
    assert zh.title == "【已解决】烟感报警 · 水贝花园1栋"
    assert lines(zh)[1:3] == ["状态: 已由 王工 于 2026-05-01 08:30:00 解决, 结果: 误报",
                              "备注: 厨房油烟, 已通风"]
    assert "发生时间: 2026-05-01 08:00:00 (历时 30 分钟)" in lines(zh)
    assert en.title == "[RESOLVED] smoke alarm · 水贝花园 1栋"
    assert "Status: resolved by 王工 at 2026-05-01 08:30:00, outcome: false alarm" in lines(en)
    assert "Note: 厨房油烟, 已通风" in lines(en)
    assert "sentinel ack" not in zh.body + en.body


def test_automatic_resolution_names_the_system() -> None:
    """A resolution by sentinel itself reads as automatic."""
    inc = smoke(status=Status.RESOLVED, resolved_at=T0 + 60, resolved_by="sentinel",
                outcome="cleared")
    assert "状态: 已由 系统自动 于" in render_notice("resolved", inc, "zh", now=NOW).body


# -- drills and groups -------------------------------------------------------------------


@pytest.mark.parametrize(("inc", "drill"), [(smoke(drill=True), None), (smoke(), True)])
def test_drill_is_marked_in_title_and_body(inc: Incident, drill: bool | None) -> None:
    """A drill incident, or a notice sent as a drill, is marked in title and first line."""
    zh = render_notice("alert", inc, "zh", now=NOW, drill=drill)
    en = render_notice("alert", inc, "en", now=NOW, drill=drill)
    assert zh.title == "【演练】【严重】烟感报警 · 水贝花园1栋"
    assert lines(zh)[0] == "【演练】本条为演练通知, 不是真实事件"
    assert en.title == "[DRILL] [CRITICAL] smoke alarm · 水贝花园 1栋"
    assert lines(en)[0] == "[DRILL] This is an exercise, not a real incident"


def test_real_incident_has_no_drill_marker() -> None:
    """An incident outside any drill carries no drill marker."""
    notice = render_notice("alert", smoke(), "zh", now=NOW, drill=False)
    assert "演练" not in notice.title + notice.body


def _group() -> tuple[Incident, list[Incident]]:
    first = smoke()
    second = smoke(id="20260501-0003", key="smoke_alarm:SB-SMK-0002", target="SB-SMK-0002",
                   device_id="SB-SMK-0002", opened_at=T0 + 65,
                   place={**ROOM_306, "floor": "11", "unit": "走廊",
                          "location": "水贝花园1栋11楼走廊", "device": "SB-SMK-0002"})
    group = Incident(id="20260501-0004", key="fire_confirmed:水贝花园/1栋", name="fire_confirmed",
                     target="水贝花园/1栋", kind="group", severity=Severity.EMERGENCY,
                     opened_at=T0, place={"community": "水贝社区", "compound": "水贝花园",
                                          "building": "1栋", "grid": "SB-G01", "kind": "group"},
                     detail={"scope": "building", "window": 300},
                     members=[first.id, second.id])
    return group, [second, first]


def test_group_lists_its_member_devices() -> None:
    """A group notice lists each member device with what, where and when, oldest first."""
    group, members = _group()
    zh = render_notice("alert", group, "zh", now=NOW, members=members)
    assert zh.title == "【紧急】确认火情 · 水贝花园1栋"
    body = lines(zh)
    start = body.index("关联设备 (2):")
    assert body[start + 1:start + 3] == [
        "  - SB-SMK-0001 烟感报警 水贝花园1栋3楼306室卧室 08:00:00",
        "  - SB-SMK-0002 烟感报警 水贝花园1栋11楼走廊 08:01:05",
    ]
    assert not any(line.startswith("设备:") for line in body)  # a group has no one device
    en = render_notice("alert", group, "en", now=NOW, members=members)
    assert "Member devices (2):" in lines(en)
    assert "  - SB-SMK-0002 smoke alarm 水贝花园 1栋, 11F, 走廊 (水贝花园1栋11楼走廊) 08:01:05" \
        in lines(en)


def test_group_without_member_incidents_lists_their_ids() -> None:
    """Without the member incidents at hand, the group notice lists the member ids."""
    group, _ = _group()
    body = lines(render_notice("escalated", group, "en", now=NOW, step=0))
    start = body.index("Member devices (2):")
    assert body[start + 1:start + 3] == ["  - 20260501-0001", "  - 20260501-0003"]


# -- summaries ---------------------------------------------------------------------------


def test_summary_counts_by_type_and_lists_oldest_first() -> None:
    """Held notices merge into one message titled with counts per type, oldest first."""
    first = render_notice("alert", smoke(), "zh", now=NOW)
    second = render_notice("alert", offline(5, T0 + 30), "zh", now=NOW)
    third = render_notice("repeat", smoke(drill=True), "zh", now=NOW + 300)
    summary = render_summary([first, second, third], "zh")
    assert summary.title == "3 条通知: 烟感报警 ×2, 设备离线 ×1"
    body = lines(summary)
    assert body[0] == "以下 3 条通知合并发送 (按时间先后):"
    titles = [line for line in body if line[:2] in ("1.", "2.", "3.")]
    assert titles == [f"1. {first.title}", f"2. {second.title}", f"3. {third.title}"]
    assert "   地点: 水贝花园1栋3楼306室卧室" in body
    assert "   确认方法: 执行命令 sentinel ack 20260501-0005" in body


def test_summary_from_stored_text_in_english() -> None:
    """A summary rebuilt from stored titles and bodies (as the dispatcher does) in English."""
    stored = [Rendered(r.title, r.body) for r in (
        render_notice("alert", offline(5, T0), "en", now=NOW),
        render_notice("escalated", offline(6, T0, "SB-SMK-0003"), "en", now=NOW, step=2),
        render_notice("alert", hydrant(), "en", now=NOW),
    )]
    summary = render_summary(stored, "en")
    assert summary.title == "3 notices: device offline ×2, hydrant pressure low ×1"
    assert lines(summary)[0] == "3 notices sent together (oldest first):"
    assert "   Status: not acknowledged, escalated to level 3" in lines(summary)


def test_summary_title_names_at_most_three_types() -> None:
    """A summary of many types names the three most frequent and marks the rest."""
    items = [Rendered(f"[WARNING] type {i} · here", "Status: new") for i in range(5)]
    items.append(Rendered("[WARNING] type 0 · there", "Status: new"))
    title = render_summary(items, "en").title
    assert title.startswith("6 notices: type 0 ×2, type 1 ×1, type 2 ×1")
    assert title.endswith(" …")


# -- digest ------------------------------------------------------------------------------


def test_digest_counts_types_and_lists_devices() -> None:
    """The daily digest counts per type and lists device, place, type and since, oldest first."""
    battery = Incident(id="20260428-0007", key="battery_low:SB-SMK-0001", name="battery_low",
                       target="SB-SMK-0001", kind="smoke", severity=Severity.MAINTENANCE,
                       opened_at=T0 - 3 * 86400, place=dict(ROOM_306),
                       device_id="SB-SMK-0001", value=8.0,
                       detail={"field": "battery", "op": "<", "limit": 10})
    items = [offline(5, T0, "SB-SMK-0002"), battery, offline(6, T0 + 60, "SB-SMK-0003")]
    zh = render_digest(items, "zh", day=date(2026, 5, 2), area="水贝社区")
    assert zh.title == "【维护日报】水贝社区 2026-05-02: 3 项待处理"
    assert lines(zh) == [
        "待处理 3 项, 按类型:",
        "  设备离线 2",
        "  电量低 1",
        "",
        "明细 (设备 | 地点 | 事件 | 开始时间):",
        "  SB-SMK-0001 | 水贝花园1栋3楼306室卧室 | 电量低 | 2026-04-28 08:00 (已 4 天)",
        "  SB-SMK-0002 | 水贝花园1栋11楼走廊 | 设备离线 | 2026-05-01 08:00 (已 1 天)",
        "  SB-SMK-0003 | 水贝花园1栋11楼走廊 | 设备离线 | 2026-05-01 08:01 (已 1 天)",
    ]
    en = render_digest(items, "en", day=date(2026, 5, 2), area="水贝社区")
    assert en.title == "[maintenance digest] 水贝社区 2026-05-02: 3 open"
    assert "  device offline 2" in lines(en)
    assert "  SB-SMK-0001 | 水贝花园 1栋, 3F, 306 (水贝花园1栋3楼306室卧室) | battery low | " \
           "2026-04-28 08:00 (4 d ago)" in lines(en)


def test_digest_is_capped_with_a_count_of_the_rest() -> None:
    """A long digest lists 50 incidents and counts the others."""
    items = [offline(n, T0 + n, f"SB-SMK-{n:04d}") for n in range(1, 61)]
    zh = lines(render_digest(items, "zh", day=date(2026, 5, 1), area="水贝社区"))
    en = lines(render_digest(items, "en", day=date(2026, 5, 1), area="水贝社区"))
    assert sum(line.startswith("  SB-SMK-") for line in zh) == 50
    assert zh[-1] == "  … 另有 10 项"
    assert en[-1] == "  … and 10 more"
    assert len(zh) <= 60


def test_two_digests_sent_together_keep_every_line() -> None:
    """Two digests for one person at 09:00 (maintenance, offline) may leave as one
    message: the summary keeps each digest whole and names them as digests."""
    first = render_digest([offline(5, T0, "SB-SMK-0002")], "zh", day=date(2026, 5, 2),
                          area="水贝花园")
    second = render_digest([offline(6, T0, "SB-SMK-0003")], "zh", day=date(2026, 5, 2),
                           area="翠竹苑")
    merged = render_summary([first, second], "zh")
    assert merged.title == "2 条通知: 维护日报 ×2"
    for digest in (first, second):
        assert digest.title in merged.body
        for line in lines(digest):
            assert f"   {line}" in merged.body.splitlines(), line


def test_empty_digest_says_so() -> None:
    """A day with nothing to maintain still sends a digest that says so."""
    digest = render_digest([], "zh", day=date(2026, 5, 1), area="水贝社区")
    assert digest.title == "【维护日报】水贝社区 2026-05-01: 0 项待处理"
    assert digest.body == "今日无待处理的维护事项"


def test_titles_stay_short() -> None:
    """Notice titles fit a push notification title."""
    group, members = _group()
    limits: dict[Language, int] = {"zh": 32, "en": 64}  # worst: drill, status, long name
    for lang, limit in limits.items():
        titles = [render_notice(kind, inc, lang, now=NOW, step=3, drill=True,
                                members=members).title
                  for kind in ("alert", "escalated", "repeat", "raised", "ack_expired",
                               "resolved")
                  for inc in (smoke(), hydrant(), group, offline(9, T0))]
        assert max(len(title) for title in titles) <= limit
        assert all("\n" not in title for title in titles)


@pytest.mark.parametrize(("lang", "mark"), [("zh", "【重发】"), ("en", "[RESENT] ")])
def test_a_resent_notice_says_so_first_and_keeps_its_text(lang: Language, mark: str) -> None:
    """A resend after a crash starts title and body with the repeat mark in the contact's
    language and keeps the whole original notice below; summaries still count it by type."""
    notice = render_notice("alert", smoke(), lang, now=NOW)
    resent = mark_resent(notice, lang)
    assert resent.title == mark + notice.title
    first, rest = resent.body.split("\n", 1)
    assert first.startswith(mark.strip()) and rest == notice.body
    summary = render_summary([resent, notice], lang)
    assert "×2" in summary.title


@pytest.mark.parametrize(("actor", "zh", "en"), [
    ("cli:root", "root (命令行)", "root (command line)"),
    ("board:operator", "值班屏", "the board"),
    ("gw-08", "王网格员", "王网格员"),
])
def test_close_notice_names_who_closed_it_and_who_handled_it(actor: str, zh: str,
                                                             en: str) -> None:
    """A close notice names people, never `cli:root`, `board:operator` or a contact id:
    who closed it, who handled it, and the note given with it."""
    people = {"gw-08": "王网格员", "gw-02": "李建国"}
    inc = smoke(status=Status.RESOLVED, resolved_at=T0 + 1800, resolved_by=actor,
                outcome="handled", note="已到场处置", assigned_to="gw-02")
    body = render_notice("resolved", inc, "zh", now=NOW, people=people).body
    assert f"状态: 已由 {zh} 于 2026-05-01 08:30:00 解决, 结果: 已处置" in body
    assert "处理人: 李建国" in body and "备注: 已到场处置" in body
    assert actor not in body and "gw-02" not in body
    en_body = render_notice("resolved", inc, "en", now=NOW, people=people).body
    assert f"Status: resolved by {en} at" in en_body and "Handled by: 李建国" in en_body


def test_a_member_closed_with_its_group_shows_no_internal_note() -> None:
    """The model's note of a member closed with its fire ("group 2026…") is not shown."""
    inc = smoke(status=Status.RESOLVED, resolved_at=T0 + 60, resolved_by="gw-08",
                outcome="with_group", note="group 20260501-0009")
    body = render_notice("resolved", inc, "zh", now=NOW, people={"gw-08": "王网格员"}).body
    assert "group" not in body and "随所属事件组一并解决" in body
