"""The response report's maths and renderings (sentinel.reports.response), on hand-made
incidents: percentiles, who counts as the worker, groups counted once, false alarms."""

from __future__ import annotations

import csv
import io
from typing import Any

from sentinel.incidents.model import Incident, Status
from sentinel.reports import response
from sentinel.reports.response import LoopEvent, build, percentile, summary
from sentinel.types import Severity

T0 = 1_780_030_000.0
NAMES = {"zhang_wei": "张伟", "li_na": "李娜"}


def incident(number: int, *, kind: str = "smoke", grid: str = "SB-G01",
             device: str | None = "SB-SMK-0001", outcome: str | None = "handled",
             resolved_after: float | None = 1800.0, **fields: Any) -> Incident:
    opened = T0 + number * 3600
    return Incident(
        id=f"20260101-{number:04d}", key=f"k{number}", name="smoke_alarm", target="t",
        kind=kind, severity=Severity.CRITICAL, opened_at=opened,
        place={"grid": grid, "compound": "水贝花园", "building": "1栋"}, device_id=device,
        status=Status.RESOLVED if outcome else Status.FIRING, outcome=outcome,
        resolved_at=opened + resolved_after if outcome and resolved_after else None,
        **fields)


def event(inc: Incident, type_: str, after: float, actor: str, **data: Any) -> LoopEvent:
    return LoopEvent(inc.id, type_, inc.opened_at + after, actor, data)


def test_percentiles_are_nearest_rank() -> None:
    """p50 and p90 are values that occurred (nearest rank), never interpolated."""
    values = [float(v) for v in range(1, 11)]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 100)) == (
        5.0, 9.0, 10.0)
    assert summary([30.0]) == {"count": 1, "p50": 30.0, "p90": 30.0, "max": 30.0}
    assert summary([]) is None


def test_times_per_worker() -> None:
    """Ack, arrival (the worker's own first note) and resolve times, per assigned worker;
    a note by someone else is not an arrival; without an assignee a contact who
    acknowledged is the worker."""
    a, b, c, d = (incident(n, assigned_to="zhang_wei") for n in range(1, 5))
    e = incident(5)
    events = [event(a, "acknowledged", 60, "zhang_wei"), event(a, "noted", 300, "board:值班"),
              event(a, "noted", 600, "zhang_wei"), event(a, "noted", 700, "zhang_wei"),
              event(b, "acknowledged", 120, "board:值班"), event(b, "noted", 900, "zhang_wei"),
              event(c, "acknowledged", 30, "zhang_wei"),
              event(d, "acknowledged", 240, "zhang_wei"), event(d, "noted", 1200, "zhang_wei"),
              event(e, "acknowledged", 45, "li_na"), event(e, "acknowledged", 50, "cli:root")]
    report = build([a, b, c, d, e], events, NAMES, T0, T0 + 86400)
    rows = {r["key"]: r for r in report["rows"]}
    zhang = rows["zhang_wei"]
    assert (zhang["name"], zhang["incidents"], zhang["acknowledged"], zhang["noted"]) == (
        "张伟", 4, 4, 3)
    assert zhang["ack"] == {"count": 4, "p50": 60.0, "p90": 240.0, "max": 240.0}
    assert zhang["arrival"] == {"count": 3, "p50": 900.0, "p90": 1200.0, "max": 1200.0}
    assert zhang["resolve"] == {"count": 4, "p50": 1800.0, "p90": 1800.0, "max": 1800.0}
    assert rows["li_na"]["ack"]["max"] == 45.0 and rows["li_na"]["arrival"] is None
    assert report["total"]["incidents"] == 5 == report["incidents"]


def test_unassigned_last_and_by_grid_and_kind() -> None:
    """Incidents nobody took sit in one bucket at the end; grid and kind group likewise."""
    taken = incident(1, assigned_to="li_na", grid="SB-G02")
    nobody = [incident(2, kind="gas"), incident(3, kind="gas", outcome=None)]
    report = build([taken, *nobody], [], NAMES, T0, T0 + 86400)
    assert [r["key"] for r in report["rows"]] == ["li_na", None]
    assert report["rows"][1]["resolved"] == 1
    by_grid = build([taken, *nobody], [], NAMES, T0, T0 + 86400, by="grid")
    assert [(r["key"], r["incidents"]) for r in by_grid["rows"]] == [("SB-G01", 2),
                                                                     ("SB-G02", 1)]
    by_kind = build([taken, *nobody], [], NAMES, T0, T0 + 86400, by="kind")
    assert [(r["key"], r["incidents"]) for r in by_kind["rows"]] == [
        ("gas/smoke_alarm", 2), ("smoke/smoke_alarm", 1)]
    assert "设备类型 |" in response.text(by_kind, "zh")[1]


def test_by_kind_keeps_a_fire_and_an_offline_detector_apart_and_screen_acks_are_kept(
        ) -> None:
    """By kind, a confirmed fire is its own row (not "关联事件") and a gas detector going
    offline is not a gas leak; acknowledged on the wall screen only, the incident is
    filed under who acknowledged it, not "未指派"."""
    fire = incident(1, kind="group", device=None)
    fire.name = "fire_confirmed"
    leak = incident(2, kind="gas")
    leak.name = "gas_leak"
    offline = incident(3, kind="gas", resolved_after=86400.0)
    offline.name = "detector_offline"
    report = build([fire, leak, offline], [event(leak, "acknowledged", 30, "board:小李")],
                   NAMES, T0, T0 + 3 * 86400, by="kind")
    labels = [response.text(report, "zh")[i].split(" | ")[0] for i in (2, 3, 4)]
    assert sorted(labels) == ["燃气 · 探测器离线", "燃气 · 燃气泄漏", "确认火情"]
    leak_row = next(r for r in report["rows"] if r["key"] == "gas/gas_leak")
    assert leak_row["ack"]["max"] == 30.0 and leak_row["resolve"]["max"] == 1800.0
    by_worker = build([leak, offline], [event(leak, "acknowledged", 30, "board:小李")],
                      NAMES, T0, T0 + 3 * 86400)
    assert [r["key"] for r in by_worker["rows"]] == ["board:小李", None]
    text = "\n".join(response.text(by_worker, "zh"))
    assert "小李 (值班屏) | 1 | 1" in text and "未指派 | 1 | 0" in text
    assert "board:" not in text


def test_a_fire_is_one_case_and_its_false_alarm_counts_per_detector() -> None:
    """Members closed with their group are counted through it; a fire found false makes
    each detector's alarm a false alarm; two of them make a maintenance candidate."""
    fire = incident(1, kind="group", device=None, outcome="false_alarm",
                    assigned_to="zhang_wei", members=["20260101-0002", "20260101-0003"])
    members = [incident(n, device=f"SB-SMK-000{n}", outcome="with_group",
                        groups=[fire.id]) for n in (2, 3)]
    again = incident(4, device="SB-SMK-0002", outcome="false_alarm")
    system = incident(5, kind="system", device="sentinel", outcome="cleared")
    outside = incident(-30, device="SB-SMK-0002", outcome="false_alarm")
    report = build([fire, *members, again, system, outside], [], NAMES, T0, T0 + 86400)
    assert report["incidents"] == 2
    assert report["total"]["false_alarms"] == 2
    devices = {d["device"]: d for d in report["devices"]}
    assert devices["SB-SMK-0002"] == {"device": "SB-SMK-0002", "kind": "smoke",
                                      "place": "水贝花园 1栋", "incidents": 2,
                                      "false_alarms": 2, "false_alarm_rate": 1.0}
    assert devices["SB-SMK-0003"]["false_alarms"] == 1 and "sentinel" not in devices
    assert report["maintenance"] == ["SB-SMK-0002"]
    # A group that opened before the period still lends its outcome to its members.
    late = build(members, [], NAMES, T0, T0 + 86400, groups={fire.id: fire})
    assert late["maintenance"] == [] and late["devices"][0]["false_alarms"] == 1


def test_renderings_in_each_language() -> None:
    """Text, CSV and HTML (with inline SVG charts, no script) in Chinese or English only."""
    inc = incident(1, assigned_to="zhang_wei")
    report = build([inc, incident(2, outcome="false_alarm"),
                    incident(3, outcome="false_alarm")],
                   [event(inc, "acknowledged", 75, "zhang_wei"),
                    event(inc, "noted", 610, "zhang_wei")], NAMES, T0, T0 + 86400)
    zh = "\n".join(response.text(report, "zh"))
    assert "张伟 | 1 | 1 | 1 | 1 | 0 | 1 min 15 s" in zh and "zhang_wei" not in zh
    # The device table has its header row.
    assert "  设备 | 类型 | 位置 | 事件 | 误报 | 误报率" in zh
    assert "10 min 10 s" in zh and "建议检修" in zh and "SB-SMK-0001" in zh
    en = "\n".join(response.text(report, "en"))
    assert "maintenance candidates" in en and "建议" not in en
    rows = list(csv.DictReader(io.StringIO(response.csv_text(report, "zh"))))
    assert rows[0]["section"] == "worker" and rows[0]["ack_p50_s"] == "75.0"
    assert [r["section"] for r in rows] == ["worker", "worker", "total", "device"]
    page = response.html(report, "zh")
    assert page.count("<svg") == 4 and "<script" not in page and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert '<html lang="zh-CN">' in page and "处置响应报告" in page
    assert "response." not in page and "response." not in zh, "no catalogue key leaks"
    # The page's headers say what the terminal says, in the reader's language.
    assert "中位/90%/最长" in page and "p50" not in page and "max" not in page
    assert "p50/p90/max" in response.html(report, "en")
