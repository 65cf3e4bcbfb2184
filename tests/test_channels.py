"""Channels and actors as people read them (sentinel.notify.channels): a delivery shows
its channel's type, never its address; who acted shows as a name, never as an id."""

from __future__ import annotations

import pytest

from sentinel.control import api_text
from sentinel.notify.channels import actor_name, channel_label, channel_type
from sentinel.notify.sender import channel_label as stored_label

PEOPLE = {"gw-02": "李建国", "gw-09": "吴敏"}


@pytest.mark.parametrize(("url", "zh", "en"), [
    ("wecombot://SECRETKEY", "企业微信", "WeCom"),
    ("dingtalk://TOKEN/SECRET", "钉钉", "DingTalk"),
    ("feishu://hook-id", "飞书", "Feishu"),
    ("mailtos://user:pass@mail.example.com", "邮件", "e-mail"),
    ("ntfys://ntfy.example.com/topic", "ntfy 推送", "ntfy"),
    ("bark://key@api.day.app", "Bark 推送", "Bark"),
    ("twilio://sid:token@15551234567", "短信", "SMS"),
    ("json://127.0.0.1:43873/gw-02", "网络回调", "webhook"),
    ("JSONS://user:pw@hooks.example.com/x?token=1", "网络回调", "webhook"),
    ("zzz://whatever", "其他渠道", "other channel"),
    ("no scheme at all", "未知渠道", "unknown channel"),
    (None, "未知渠道", "unknown channel"),
    (3, "未知渠道", "unknown channel"),
])
def test_channel_label_names_the_type_never_the_address(url: object, zh: str,
                                                          en: str) -> None:
    assert channel_label(url, "zh") == zh
    assert channel_label(url, "en") == en


def test_channel_label_reads_the_stored_labels_too() -> None:
    """The audit trail stores `scheme://host` labels; they read as the same type, and no
    part of the address (host, port, key, password) is shown."""
    for url in ("json://u:secret@127.0.0.1:43873/hook?x=1", "wecombot://BOTKEY",
                "mailtos://me:pw@smtp.example.com"):
        shown = channel_label(stored_label(url), "zh")
        assert shown == channel_label(url, "zh")
        assert not any(part in shown for part in ("127.0.0.1", "43873", "BOTKEY", "pw",
                                                   "example", "://"))
    assert channel_type(stored_label("json://127.0.0.1:43873/x")) == "webhook"
    assert channel_label("webhook", "zh") == "网络回调", "a type passes through"


@pytest.mark.parametrize(("actor", "zh", "en"), [
    ("gw-02", "李建国", "李建国"),
    ("link:gw-09", "吴敏", "吴敏"),
    ("board:gw-02", "李建国 (值班屏)", "李建国 (board)"),
    ("board:小李", "小李 (值班屏)", "小李 (board)"),
    ("board:operator", "值班屏", "the board"),
    ("cli:root", "root (命令行)", "root (command line)"),
    ("sentinel", "系统", "sentinel"),
    ("device", "设备", "the device"),
    (None, "未知", "unknown"),
])
def test_actor_name_never_shows_a_raw_id(actor: str | None, zh: str, en: str) -> None:
    assert actor_name(actor, PEOPLE, "zh") == zh
    assert actor_name(actor, PEOPLE, "en") == en


def test_api_refusals_in_the_callers_language() -> None:
    """Refusals are worded in English once and reworded for a Chinese caller, part by
    part; English callers and callers that do not say get them unchanged."""
    problem = "unknown compound '不存在小区'; unknown kind 'smokey'"
    assert api_text.localize(problem, "zh") == \
        "没有这个小区: 「不存在小区」; 没有这个设备类型: 「smokey」"
    assert api_text.localize(problem, "en") == problem
    assert api_text.localize(problem, None) == problem
    assert api_text.localize("unknown building '9栋' in compound '水贝花园'", "zh") == \
        "小区「水贝花园」中没有这个楼栋: 「9栋」"
    assert api_text.localize("no open incident 20261208-0001", "zh") == \
        "没有未关闭的事件 20261208-0001"
    assert api_text.localize("no contact '李建国' in the on-call file (GET /api/contacts)",
                             "zh").startswith("值班名单中没有联系人「李建国」")
    assert api_text.request_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert api_text.request_language("en-US") == "en"
    assert api_text.request_language("fr") is None


def test_a_district_act_is_named_by_the_name_its_event_carries() -> None:
    """`sentinel incidents show` runs in another process than the daemon that recorded the
    act: the name comes from the event, not from the daemon's memory."""
    from sentinel.timeline import event_detail

    event = {"type": "acknowledged", "actor": "district:wang5", "name": "王五"}
    assert "街道·王五" in event_detail(event, "zh")
    assert "street office: 王五" in event_detail(event, "en")
    assert "district:" not in event_detail({"type": "noted", "actor": "district:wang5"}, "zh")
