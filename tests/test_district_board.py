"""The district board over real HTTP: every community on one screen, drill-down, and acts
that travel to the box as signed commands through a real mosquitto.

`MemoryView` holds the mirror's data for the view layer (sentinel.district.view: the board
depends only on that protocol; the mirror itself is tests/test_district_mirror.py's). The
routes are mounted on a real district ControlServer through its `routes=` hook, as the
district daemon mounts them; the box is tests/test_district_commands.py's `Box`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from sentinel import zone
from sentinel.clock import SystemClock
from sentinel.control.http import ControlServer
from sentinel.control.links import LinkSigner
from sentinel.control.requests import MAX_NOTE
from sentinel.control.sessions import CSRF_FIELD, BoardSessions
from sentinel.district import wire
from sentinel.district.board import add_district_routes, board_rank
from sentinel.district.view import CommunityState
from sentinel.escalation.model import Contact
from sentinel.incidents.model import Incident, Status
from sentinel.types import Severity

from servers import Mosquitto
from test_control_http import FakeController
from test_district_commands import KEYS, Box, district

TOKEN = "district-control-token-0123"
SESSION_KEY = b"district-board-key-0123456789"
PEOPLE = {
    "wang_wu": Contact(id="wang_wu", name="王五", role="street_office",
                       channels=("json://127.0.0.1:1/",)),
    "zhao_liu": Contact(id="zhao_liu", name="赵六", role="street_office",
                        channels=("json://127.0.0.1:1/",), board_role="viewer"),
}
NOW = time.time()


def incident(incident_id: str, name: str = "smoke_alarm", severity: str = "critical",
             status: str = "firing", opened_at: float | None = None,
             location: str = "水贝花园1栋3楼306室", **extra: Any) -> dict[str, Any]:
    """An incident as a box publishes it (Incident.to_json(), the fields the board reads)."""
    return {"id": incident_id, "name": name, "severity": severity, "status": status,
            "opened_at": opened_at if opened_at is not None else NOW - 600,
            "place": {"community": "水贝社区", "location": location},
            "life_safety": severity in ("critical", "emergency"), "acknowledged_by": None,
            "acknowledged_at": None, **extra}


@dataclass
class MemoryView:
    """The mirror's data for the view layer, in memory (implements DistrictView)."""

    states: dict[str, CommunityState] = field(default_factory=dict)
    incidents_of: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    async def communities(self) -> list[CommunityState]:
        return list(self.states.values())  # configured order: the board ranks them itself

    async def community(self, community: str) -> CommunityState | None:
        return self.states.get(community)

    async def incidents(self, community: str, open_only: bool = True) -> list[dict[str, Any]]:
        found = self.incidents_of.get(community, [])
        return [i for i in found if not open_only or i["status"] != "resolved"]

    async def incident(self, community: str, incident_id: str) -> dict[str, Any] | None:
        return next((i for i in self.incidents_of.get(community, [])
                     if i["id"] == incident_id), None)

    async def timeline(self, community: str, incident_id: str) -> list[dict[str, Any]]:
        return self.events.get((community, incident_id), [])

    def set(self, community: str, **changes: Any) -> None:
        self.states[community] = dataclasses.replace(self.states[community], **changes)


def state(community: str, name: str, reach: str = "online", **fields: Any) -> CommunityState:
    values: dict[str, Any] = {"since": time.time() - 3600, "last_heard": time.time() - 5,
                              "phone": "0755-1234", **fields}
    return CommunityState(id=community, name=name, reach=reach,  # type: ignore[arg-type]
                          **values)


def sample_view() -> MemoryView:
    # Ages are shown against the board's clock (the system's): taken now, not when the
    # module was imported (the tests before this one may have taken minutes).
    now = time.time()
    oldest = {"id": "SB-1", "name": "smoke_alarm", "kind": "smoke", "severity": "critical",
              "opened_at": now - 754, "place": {"location": "水贝花园1栋3楼306室"}}
    view = MemoryView(states={
        "tianbei": state("tianbei", "田贝社区", open=0),
        "huangbei": state("huangbei", "黄贝社区", open=1, unacknowledged=1),
        "shuibei": state("shuibei", "水贝社区", open=2, unacknowledged=1,
                         life_safety_unacknowledged=1, oldest_unacknowledged=oldest),
        "cuizhu": state("cuizhu", "翠竹社区", reach="offline", last_heard=now - 300,
                        since=now - 240, phone="0755-8888-0001"),
        "dongxiao": state("dongxiao", "东晓社区", whistled=True, open=1, unacknowledged=1,
                          life_safety_unacknowledged=1),
    })
    view.incidents_of["shuibei"] = [
        incident("SB-0", status="resolved", location="已关闭的地方"),
        incident("SB-2", "gas_leak", "warning", "acknowledged", acknowledged_by="zhang_wei",
                 acknowledged_at=now - 100, location="水贝新村2栋"),
        incident("SB-1"),
    ]
    # As the box publishes them (sentinel.incidents.publish.event_payload): the event's
    # data at the top level, beside seq, type, ts and actor.
    view.events[("shuibei", "SB-1")] = [
        {"seq": 41, "type": "opened", "ts": now - 600, "actor": "sentinel"},
        {"seq": 42, "type": "notification_sent", "ts": now - 590, "actor": "sentinel",
         "contact": "zhang_wei", "contact_name": "张伟", "channel": "json://127.0.0.1",
         "role": "grid_worker"},
        {"seq": 43, "type": "escalation_step", "ts": now - 300, "actor": "sentinel",
         "step": 2, "roles": ["street_office"]},
        {"seq": 44, "type": "noted", "ts": now - 60, "actor": "zhang_wei",
         "text": "正在前往现场"},
        {"seq": 45, "type": "acknowledged", "ts": now - 30, "actor": "district:wang_wu",
         "name": "王五"},
        {"seq": 46, "type": "noted", "ts": now - 20, "actor": "district:wang_wu",
         "name": "王五", "text": "街道已派人"},
        {"seq": 47, "type": "resolved", "ts": now - 10, "actor": "zhang_wei",
         "outcome": "false_alarm"},
    ]
    return view


@dataclass
class Harness:
    url: str
    view: MemoryView
    sessions: BoardSessions
    http: aiohttp.ClientSession
    own: FakeController

    async def get(self, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.url + path, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: Any = None, **kw: Any
                   ) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.post(self.url + path, data=data, allow_redirects=False,
                                  **kw) as r:
            return r.status, await r.text(), r

    async def login(self, person: str = "wang_wu") -> str:
        """Log in with a personal one-time link; the session's CSRF token."""
        path, _ = self.sessions.person_path(person)
        status, _, r = await self.get(path)
        assert status == 303 and r.headers["Location"] == "/board"
        status, text, _ = await self.get("/board")
        assert status == 200, text
        found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', text)
        assert found
        return found.group(1)


@contextlib.asynccontextmanager
async def served(view: MemoryView, channel: Any, act_wait: float = 1.0,
                 relay_wait: float = 1.0) -> AsyncIterator[Harness]:
    """The district's ControlServer with the board mounted through `routes=`."""
    sessions = BoardSessions(SESSION_KEY, people=PEOPLE)
    own = FakeController([
        Incident(id="D-1", key="box_offline:cuizhu", name="box_offline", target="cuizhu",
                 kind="community", severity=Severity.CRITICAL, opened_at=NOW - 200,
                 place={"community": "翠竹社区"}),
        Incident(id="D-2", key="whistle:dongxiao/DX-7", name="whistle",
                 target="dongxiao/DX-7", kind="community", severity=Severity.CRITICAL,
                 opened_at=NOW - 100, place={"community": "东晓社区"}, life_safety=True),
    ], contacts={})
    server = ControlServer(
        "127.0.0.1", 0, TOKEN, LinkSigner(b"district-link-key-0123456789", 3600), own,
        SystemClock(), sessions=sessions,
        routes=lambda app: add_district_routes(app, view, channel, sessions, TOKEN.encode(),
                                               own=own, act_wait=act_wait,
                                               relay_wait=relay_wait))
    async with server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Harness(server.url, view, sessions, http, own)


def tiles(text: str) -> list[str]:
    return re.findall(r'data-community="([^"]+)"', text)


# -- the overview -------------------------------------------------------------------------


async def test_every_community_on_one_screen_the_urgent_first(mosquitto: Mosquitto) -> None:
    """Offline and whistled first, then unacknowledged life-safety, then the rest; each
    tile with its reach, counts, oldest life-safety incident and age, the duty phone of an
    unreachable one; Chinese by default, times in the configured zone."""
    zone.configure("Asia/Shanghai")
    view = sample_view()
    async with district(mosquitto.port) as d, served(view, d.channel) as h:
        status, _, r = await h.get("/board")
        assert status == 303 and r.headers["Location"] == "/board/login"
        await h.login()
        status, text, r = await h.get("/board")
    assert status == 200 and r.headers["Content-Security-Policy"].startswith("default-src")
    assert tiles(text) == ["cuizhu", "dongxiao", "shuibei", "huangbei", "tianbei"]
    assert 'http-equiv="refresh"' in text and "<script" not in text
    assert "街道一屏可视" in text and "当前用户: 王五" in text
    assert "离线" in text and "已吹哨" in text and "值班电话 0755-8888-0001" in text
    assert "生命安全未确认 1" in text
    # The oldest unacknowledged life-safety incident, with its age (754 s: 12 minutes).
    assert "最早未确认: 烟感报警 · 水贝花园1栋3楼306室 · 已 12 分钟" in text
    heard = view.states["cuizhu"].last_heard
    assert heard is not None and zone.short(heard) in text  # last heard, in Asia/Shanghai
    assert "社区 5 个 · 离线 1 · 吹哨 1 · 生命安全未确认 2" in text
    # The district's own incidents, named in words and acknowledgeable.
    assert "街道自身事件" in text and "社区主机离线" in text and "翠竹社区" in text
    assert "吹哨: 生命安全事件无人确认" in text and 'href="/board/c/dongxiao/i/DX-7"' in text


async def test_english_on_request_and_ranking_rules() -> None:
    """?lang=en words the board in English; the rank is a pure function of the state."""
    view = sample_view()
    async with served(view, None) as h:
        await h.login()
        status, text, _ = await h.get("/board?lang=en")
    assert status == 200 and "District board" in text and "duty phone 0755-8888-0001" in text
    assert "oldest unacknowledged: smoke alarm" in text and "12 min ago" in text
    assert "离线" not in text
    ranks = {c: board_rank(s) for c, s in view.states.items()}
    assert ranks == {"cuizhu": 0, "dongxiao": 0, "shuibei": 1, "huangbei": 3, "tianbei": 4}
    assert board_rank(state("x", "x", reach="stopped")) == 2


async def test_drill_down_to_a_community_and_an_incidents_timeline() -> None:
    view = sample_view()
    async with served(view, None) as h:
        await h.login()
        status, text, _ = await h.get("/board/c/shuibei")
        assert status == 200 and "水贝新村2栋" in text and "已关闭的地方" not in text
        # Who acknowledged SB-2: a box contact the district has no name for, said so.
        assert "社区联系人 zhang_wei 于" in text
        status, text, _ = await h.get("/board/c/shuibei?all=1")
        assert "已关闭的地方" in text
        # Unacknowledged first, the closed last, whatever order the mirror keeps.
        assert re.findall(r'data-incident="([^"]+)"', text) == ["SB-1", "SB-2", "SB-0"]
        status, text, _ = await h.get("/board/c/shuibei/i/SB-1")
        assert status == 200
        seqs = re.findall(r'data-seq="(\d+)"', text)
        assert seqs == ["41", "42", "43", "44", "45", "46", "47"] and "正在前往现场" in text
        assert "街道·王五" in text and "误报" in text
        items = dict(re.findall(r'<li data-seq="(\d+)">(.*?)</li>', text))
        # People by name: the box named its contact in the notification it sent.
        assert "已通知" in items["42"] and "张伟" in items["42"] and "系统" not in items["42"]
        assert "张伟" in items["44"] and "现场反馈" in items["44"]
        # A street-office note is worded as one, with its text; not as site feedback.
        assert "街道备注" in items["46"] and "街道已派人" in items["46"]
        assert "现场反馈" not in items["46"] and "街道·王五" in items["46"]
        assert "zhang_wei" not in "".join(items.values())
        assert 'id="ack"' in text and 'name="text"' in text
        status, _, _ = await h.get("/board/c/nowhere")
        assert status == 404
        status, _, _ = await h.get("/board/c/shuibei/i/nope")
        assert status == 404


# -- acts: commands to the box ----------------------------------------------------------


async def test_acknowledge_from_the_board_reaches_the_box(mosquitto: Mosquitto) -> None:
    """An ack is a command signed for the community, acting as district:<person>, with the
    person's name; the box's answer is what the person reads."""
    acked: dict[str, str] = {}

    async def box_ack(command: wire.Command) -> dict[str, Any]:
        if command.type == "note":
            return {"ok": True}
        first = acked.setdefault(command.fields["incident"], command.fields["actor"])
        return {"ok": True, "incident": incident(command.fields["incident"],
                                                 status="acknowledged", acknowledged_by=first)}

    box = Box("shuibei", KEYS["shuibei"], box_ack)
    view = sample_view()
    async with box.run(mosquitto.port), district(mosquitto.port) as d, \
            served(view, d.channel) as h:
        csrf = await h.login()
        status, _, r = await h.post("/board/c/shuibei/i/SB-1/ack", {CSRF_FIELD: csrf})
        # Post, then redirect (like a note): reloading the answer does not ask to resubmit.
        assert status == 303 and r.headers["Location"] == "/board/c/shuibei/i/SB-1?done=acked"
        status, text, _ = await h.get(r.headers["Location"])
        assert status == 200 and "社区主机已确认" in text, text
        [command] = box.commands
        assert command.type == "ack" and dict(command.fields) == {
            "incident": "SB-1", "actor": "district:wang_wu", "name": "王五"}
        assert wire.ACT_TTL - 5 < command.expires - time.time() <= wire.ACT_TTL
        # Someone else was first: the second act says by whom.
        acked["SB-1"] = "zhang_wei"
        status, _, r = await h.post("/board/c/shuibei/i/SB-1/ack?lang=en",
                                    {CSRF_FIELD: csrf})
        assert status == 303 and "lang=en" in r.headers["Location"]
        status, text, _ = await h.get(r.headers["Location"])
        # By name: the box named zhang_wei in a notification of this incident.
        assert "Already acknowledged by 张伟" in text, text
        status, _, r = await h.post("/board/c/shuibei/i/SB-1/note",
                                    {CSRF_FIELD: csrf, "text": "街道已派人"})
        # Post, then redirect: reloading the answer does not send the note twice.
        assert status == 303 and r.headers["Location"] == "/board/c/shuibei/i/SB-1?done=noted"
        status, text, _ = await h.get(r.headers["Location"])
        assert status == 200 and "备注已记录" in text
        assert [c.type for c in box.commands] == ["ack", "ack", "note"]
        assert box.commands[-1].fields["text"] == "街道已派人"
        # The longest note there is, in Chinese, gets through; a longer one is refused.
        longest = "火" * MAX_NOTE
        status, _, r = await h.post("/board/c/shuibei/i/SB-1/note",
                                    {CSRF_FIELD: csrf, "text": longest})
        assert status == 303 and box.commands[-1].fields["text"] == longest
        status, text, _ = await h.post("/board/c/shuibei/i/SB-1/note",
                                       {CSRF_FIELD: csrf, "text": longest + "火"})
        assert status == 400 and len(box.commands) == 4


async def test_unreachable_box_says_call_the_phone(mosquitto: Mosquitto) -> None:
    """Offline: at once, nothing sent; online but silent: after the wait, with the phone."""
    view = sample_view()
    box = Box("cuizhu", KEYS["shuibei"])  # would refuse anything: must not even see it
    view.incidents_of["cuizhu"] = [incident("CZ-1")]
    view.incidents_of["huangbei"] = [incident("HB-1")]
    async with box.run(mosquitto.port), district(mosquitto.port) as d, \
            served(view, d.channel, act_wait=0.5) as h:
        csrf = await h.login()
        started = time.monotonic()
        status, text, _ = await h.post("/board/c/cuizhu/i/CZ-1/ack", {CSRF_FIELD: csrf})
        assert status == 503 and time.monotonic() - started < 0.4
        assert "无法连接社区主机" in text and "0755-8888-0001" in text
        assert not box.commands and not box.refused
        # huangbei has no box listening at all.
        status, text, _ = await h.post("/board/c/huangbei/i/HB-1/ack", {CSRF_FIELD: csrf})
        assert status == 504 and "0755-1234" in text and "没有回应" in text
        assert d.channel.counts["timeout"] == 1


async def test_viewers_and_forged_forms_cannot_act(mosquitto: Mosquitto) -> None:
    box = Box("shuibei", KEYS["shuibei"])
    view = sample_view()
    async with box.run(mosquitto.port), district(mosquitto.port) as d, \
            served(view, d.channel) as h:
        csrf = await h.login()
        status, text, _ = await h.post("/board/c/shuibei/i/SB-1/ack", {CSRF_FIELD: "x"})
        assert status == 403
        status, _, _ = await h.post("/board/c/shuibei/i/SB-1/ack", {CSRF_FIELD: csrf},
                                    headers={"Origin": "http://evil.example"})
        assert status == 403
        csrf = await h.login("zhao_liu")  # a view-only login
        status, text, _ = await h.get("/board/c/shuibei/i/SB-1")
        assert 'id="ack"' not in text
        status, text, _ = await h.post("/board/c/shuibei/i/SB-1/ack", {CSRF_FIELD: csrf})
        assert status == 403 and "只读登录不能操作" in text
    assert not box.commands


async def test_the_districts_own_incident_is_acknowledged_on_the_board() -> None:
    view = sample_view()
    async with served(view, None) as h:
        csrf = await h.login()
        status, _, _ = await h.post("/board/own/D-1/ack", {CSRF_FIELD: csrf})
        assert status == 303
        assert h.own.calls == [("acknowledge", "D-1", "wang_wu", "district board")]
        assert h.own.incidents["D-1"].status == Status.ACKNOWLEDGED
        status, text, _ = await h.get("/board")
        assert "社区主机离线" in text and 'action="/board/own/D-1/ack"' not in text


@pytest.mark.parametrize("path", ["/board/static/board.css", "/board/static/district.css",
                                  "/board/static/icon.svg"])
async def test_assets_are_served_offline(path: str) -> None:
    async with served(sample_view(), None) as h:
        status, text, r = await h.get(path)
    # Nothing from elsewhere: the street office's screen may have no internet either.
    assert status == 200 and text and "url(http" not in text and "@import" not in text
    assert r.headers["X-Content-Type-Options"] == "nosniff"


# -- on a wall screen and a phone (Chromium) ----------------------------------------------


def twenty_communities() -> MemoryView:
    view = sample_view()
    for i in range(15):
        cid = f"c{i:02d}"
        view.states[cid] = state(cid, f"第{i + 1}社区", open=i % 3, unacknowledged=i % 2)
    return view


def look(url: str, wall: str, phone: str) -> dict[str, Any]:
    """What Chromium shows of the overview at 1920x1080 and on a 390 px phone."""
    from selenium.webdriver.common.by import By

    from browser import chromium, console_errors, set_viewport

    seen: dict[str, Any] = {}
    with chromium(1920, 1080) as driver:
        set_viewport(driver, 1920, 1080)
        driver.get(url + wall)
        tiles = driver.find_elements(By.CSS_SELECTOR, "#tiles > li")
        seen["wall_tiles"] = len(tiles)
        seen["wall_bottom"] = max(t.rect["y"] + t.rect["height"] for t in tiles)
        seen["wall_page"] = driver.execute_script(
            "var e = document.documentElement;"
            "return [e.scrollHeight, e.clientHeight, e.scrollWidth, e.clientWidth];")
        seen["wall_errors"] = console_errors(driver)
        driver.get(url + "/board/c/shuibei/i/SB-1")
        seen["incident_title"] = driver.title
        seen["incident_errors"] = console_errors(driver)
    with chromium(390, 844, mobile=True) as driver:
        driver.get(url + phone)
        seen["phone_width"] = driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
    return seen


async def test_twenty_communities_fit_a_wall_screen_without_scrolling() -> None:
    """1920x1080: the page does not scroll and every tile is on the screen; no script or
    style is refused (CSP); on a phone nothing is wider than the screen."""
    async with served(twenty_communities(), None) as h:
        wall, _ = h.sessions.person_path("wang_wu")
        phone, _ = h.sessions.person_path("wang_wu")
        seen = await asyncio.to_thread(look, h.url, wall, phone)
    assert seen["wall_tiles"] == 20
    page = seen["wall_page"]
    assert page[0] <= page[1] and page[2] <= page[3], f"the page scrolls: {page}"
    assert seen["wall_bottom"] <= 1080, seen
    assert seen["wall_errors"] == [] and seen["incident_errors"] == []
    assert seen["incident_title"] == "烟感报警"
    width, screen = seen["phone_width"]
    assert width <= screen, f"the phone page is {width} px wide on a {screen} px screen"


def visible(page: str) -> str:
    """The text a person reads: tags, their attributes and the page's ids left out."""
    return re.sub(r"<[^>]+>", " ", page)


async def test_chinese_pages_show_no_internal_words_and_texts_match() -> None:
    """In Chinese, no status, severity, reach or event code is shown as the code; every
    text of the board's catalogue has both languages with the same placeholders."""
    from sentinel.district.board import UI

    view = sample_view()
    async with served(view, None) as h:
        await h.login()
        pages_ = [(await h.get(p))[1] for p in (
            "/board", "/board/c/shuibei?all=1", "/board/c/shuibei/i/SB-1",
            "/board/c/cuizhu")]
    internal = re.compile(r"\b(online|offline|stopped|unknown|firing|acknowledged|resolved|"
                          r"critical|warning|escalation_step|opened|noted|sentinel|"
                          r"smoke_alarm|gas_leak|box_offline|whistle|street_office|false_alarm|district)\b")
    for page in pages_:
        assert not internal.findall(visible(page)), internal.findall(visible(page))
    for key, texts in UI.items():
        assert set(texts) == {"zh", "en"}, key
        assert set(re.findall(r"{(\w+)}", texts["zh"])) == \
            set(re.findall(r"{(\w+)}", texts["en"])), key


async def test_the_shared_login_acts_as_district_board_name(mosquitto: Mosquitto) -> None:
    """The wall screen's login with the district's control token: its acts are recorded
    on the box as district:board:<typed name>."""
    box = Box("shuibei", KEYS["shuibei"])
    async with box.run(mosquitto.port), district(mosquitto.port) as d, \
            served(sample_view(), d.channel) as h:
        status, _, r = await h.post("/board/login", {"name": "值班员", "token": TOKEN})
        assert status == 303 and r.headers["Location"] == "/board"
        status, text, _ = await h.get("/board")
        csrf = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', text)
        assert status == 200 and csrf
        status, _, r = await h.post("/board/c/shuibei/i/SB-1/ack",
                                    {CSRF_FIELD: csrf.group(1)})
        assert status == 303
        status, text, _ = await h.get(r.headers["Location"])
        assert status == 200 and "社区主机已确认" in text
    assert [dict(c.fields) for c in box.commands] == [
        {"incident": "SB-1", "actor": "district:board:值班员", "name": "值班员"}]


def test_the_box_answer_to_an_ack_is_worded_for_the_person() -> None:
    """The replies as sentinel.uplink.commands sends them: someone on the box was first,
    the district person's own ack, a replay, an incident already closed."""
    from sentinel.district.board import _reply_text

    def worded(payload: bytes, actor: str = "district:wang") -> tuple[bool, str]:
        return _reply_text(wire.parse_reply(payload), "ack", actor, "en")

    first = worded(wire.reply("c1", True, already=True, incident="I1",
                              acknowledged_by="grid-li", acknowledged_at=1.0))
    assert first[0] and "grid-li" in first[1] and "already" in first[1].lower()
    mine = worded(wire.reply("c2", True, already=False, incident="I1",
                             acknowledged_by="district:wang", acknowledged_at=1.0))
    assert mine[0] and "already" not in mine[1].lower()
    assert "already reached" in worded(wire.reply("c3", True, replayed=True,
                                                  incident="I1"))[1]
    closed = worded(wire.reply("c4", False, error="closed"))
    assert not closed[0]


async def test_own_incidents_by_urgency_and_the_root_leads_to_the_board() -> None:
    """The street office's own incidents like the box board: unacknowledged first, then
    the most severe, then the newest; an acknowledged whistle below them all, however
    severe and new. `/` (what people type, what the rig prints) leads to /board."""
    async with served(sample_view(), None) as h:
        h.own.incidents["D-0"] = Incident(
            id="D-0", key="whistle:shuibei/SB-1", name="whistle", target="shuibei/SB-1",
            kind="community", severity=Severity.EMERGENCY, opened_at=NOW - 5,
            place={"community": "水贝社区"}, life_safety=True, status=Status.ACKNOWLEDGED,
            acknowledged_by="board:王五", acknowledged_at=NOW - 2)
        h.own.incidents["D-3"] = Incident(
            id="D-3", key="box_offline:tianbei", name="box_offline", target="tianbei",
            kind="community", severity=Severity.WARNING, opened_at=NOW - 900,
            place={"community": "田贝社区"})
        status, _, r = await h.get("/")
        assert status == 303 and r.headers["Location"] == "/board"
        status, _, r = await h.get("/?lang=en")
        assert status == 303 and r.headers["Location"] == "/board?lang=en"
        await h.login()
        status, text, _ = await h.get("/board")
    own = text[text.index('id="h-own"'):text.index('id="tiles"')]
    assert re.findall(r'data-incident="([^"]+)"', own) == ["D-2", "D-1", "D-3", "D-0"]


def test_no_district_page_is_wider_than_a_phone() -> None:
    """At 390 px (a phone), in Chinese and English: the overview, a community, an incident
    with its note box, and the login: nothing wider than the screen (Debian's Chromium)."""
    from browser import chromium

    started = threading.Event()
    stop = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            async with served(sample_view(), None) as h:
                box["url"], box["path"] = h.url, h.sessions.person_path("wang_wu")[0]
                started.set()
                await asyncio.to_thread(stop.wait)
        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(20)
    try:
        with chromium(390, 844, mobile=True) as driver:
            driver.get(box["url"] + box["path"])  # a personal link: logged in
            for path in ("/board", "/board/c/shuibei", "/board/c/shuibei/i/SB-1",
                         "/board/c/cuizhu"):
                for query in ("", "?lang=en"):
                    driver.get(box["url"] + path + query)
                    width = driver.execute_script(
                        "return document.documentElement.scrollWidth")
                    assert width <= 390, f"{path}{query} is {width}px wide at 390px"
                    if "/i/" in path:  # the note box (the reviewer's overflow)
                        right = driver.execute_script(
                            "return document.querySelector('textarea')"
                            ".getBoundingClientRect().right")
                        assert right <= 390, f"the note box ends at {right}px"
    finally:
        stop.set()
        thread.join(10)


def test_who_acted_is_a_name_or_says_it_is_an_id() -> None:
    """Never a bare id passed off as a name."""
    from sentinel.district.board import _who

    names = {"gw-02": "李建国", "district:so-b": "胡勇"}
    assert _who("gw-02", "zh", None, names) == "李建国"
    assert _who("link:gw-02", "zh", None, names) == "李建国"
    assert _who("gw-03", "zh", None, names) == "社区联系人 gw-03"
    assert _who("link:gw-03", "en", None, names) == "community contact gw-03"
    assert _who("district:so-b", "zh", None, names) == "街道·胡勇"
    assert _who("district:so-b", "zh", "胡勇二", names) == "街道·胡勇二"
    assert _who("district:board:值班员", "zh", None, names) == "街道·值班员"
    assert "gw-03" not in _who("sentinel", "zh", None, names)
