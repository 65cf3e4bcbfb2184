"""The link relay: a one-tap link opened at the district reaches the box's own link pages
through the command topic of a real mosquitto, and the box's answer is what the person sees.

The box side is the real sentinel.control ControlServer (its `/a/{token}` handler verifies
the link with the box's link key; the district never holds it) over the in-memory incident
book of tests/test_control_http.py, behind tests/test_district_commands.py's `Box`, which
turns each verified `http` command into a request to that server and replies with its
answer. The district side is the board's routes on the district's own ControlServer.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from sentinel.clock import FakeClock
from sentinel.control.http import ControlServer
from sentinel.control.sessions import CSRF_FIELD
from sentinel.district import wire
from test_district_board import Harness, MemoryView, sample_view, served

from servers import Mosquitto
from test_control_http import SIGNER, FakeController, make_incident
from test_district_commands import KEYS, Box, district

NOW = 1_700_000_000.0


def relay_handler(box_url: str, http: aiohttp.ClientSession) -> Any:
    """What a box does with an `http` command: the request to its own control server."""
    async def handle(command: wire.Command) -> dict[str, Any]:
        f = command.fields
        assert f["path"].startswith("/a/") and f["method"] in ("GET", "POST")
        headers = {"Content-Type": f["content_type"]} if f["content_type"] else {}
        async with http.request(f["method"], box_url + f["path"], headers=headers,
                                data=base64.b64decode(f["body"])) as r:
            body = await r.read()
            return {"ok": True, "status": r.status,
                    "content_type": r.headers.get("Content-Type"), "body": body,
                    "headers": {k: v for k, v in r.headers.items()
                                if k in ("Content-Security-Policy", "Cache-Control",
                                         "Referrer-Policy", "X-Frame-Options")}}
    return handle


@dataclass
class Rig:
    box: Box
    box_server: ControlServer
    controller: FakeController
    district: Harness
    channel: Any

    def link(self, incident_id: str = "A", contact: str = "wang") -> str:
        return f"/c/shuibei/a/{SIGNER.sign(incident_id, contact, NOW)}"


@contextlib.asynccontextmanager
async def rig(mosquitto: Mosquitto, view: MemoryView | None = None,
              relay_wait: float = 5.0) -> AsyncIterator[Rig]:
    controller = FakeController([make_incident("A"), make_incident("B", "gas_leak")])
    async with ControlServer("127.0.0.1", 0, "box-token-0123456789", SIGNER, controller,
                             FakeClock(NOW)) as box_server, aiohttp.ClientSession() as http:
        box = Box("shuibei", KEYS["shuibei"], relay_handler(box_server.url, http))
        async with box.run(mosquitto.port), district(mosquitto.port) as d, \
                served(view or sample_view(), d.channel, relay_wait=relay_wait) as h:
            yield Rig(box, box_server, controller, h, d.channel)


async def direct(r: Rig, method: str, path: str, data: Any = None
                 ) -> tuple[int, bytes, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as http, \
            http.request(method, r.box_server.url + path, data=data) as resp:
        return resp.status, await resp.read(), resp


async def test_a_link_opened_at_the_district_acknowledges_on_the_box_once(
        mosquitto: Mosquitto) -> None:
    """GET shows the box's page exactly (status, type, CSP, body) and acts on nothing; a
    POST acknowledges as the link's contact; the same link again is the box's "used"."""
    async with rig(mosquitto) as r:
        path = r.link()
        status, text, resp = await r.district.get(path)
        assert status == 200 and r.controller.calls == []
        box_status, box_body, box_resp = await direct(r, "GET", path.removeprefix(
            "/c/shuibei"))
        assert (status, text.encode()) == (box_status, box_body)
        assert resp.headers["Content-Type"] == box_resp.headers["Content-Type"]
        assert resp.headers["Content-Security-Policy"] == \
            box_resp.headers["Content-Security-Policy"]
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert r.controller.calls == [], "a GET never acts"
        r.controller.calls.clear()

        status, text, _ = await r.district.post(path, {"action": "ack"})
        assert status == 200 and "已确认" in text
        assert [c for c in r.controller.calls if c[0] == "acknowledge"] == [
            ("acknowledge", "A", "wang", "one-tap link")]
        status, text, _ = await r.district.post(path, {"action": "ack"})
        assert status == 410 and "链接已使用过" in text
        assert len([c for c in r.controller.calls if c[0] == "acknowledge"]) == 1
        assert [c.fields["method"] for c in r.box.commands] == ["GET", "POST", "POST"]


async def test_a_forged_link_is_refused_by_the_box(mosquitto: Mosquitto) -> None:
    async with rig(mosquitto) as r:
        path = r.link()
        forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
        status, text, _ = await r.district.post(forged, {"action": "ack"})
        assert status == 403 and "链接无效" in text
        # An expired link: the box's own answer, as the box judges it.
        status, _, _ = await r.district.get("/c/shuibei/a/" + SIGNER.sign("A", "wang", NOW - 7200))
        assert status == 410
    assert not [c for c in r.controller.calls if c[0] == "acknowledge"]
    assert [c.type for c in r.box.commands] == ["http", "http"]


async def test_an_offline_box_gives_the_phone_at_once(mosquitto: Mosquitto) -> None:
    view = sample_view()
    view.set("shuibei", reach="offline")
    async with rig(mosquitto, view) as r:
        started = time.monotonic()
        status, text, _ = await r.district.get(r.link(), headers={"Accept-Language": "en-US"})
        assert status == 503 and time.monotonic() - started < 1.0
        # The person's language only, never both stacked (the rest of sentinel's rule).
        assert "cannot be reached" in text and "无法连接" not in text
        assert "The community box of " in text
        assert 'href="tel:0755-1234"' in text
        view.set("shuibei", phone="")
        status, text, _ = await r.district.get(r.link())
        assert status == 503 and "(未配置)" in text and "(not configured)" not in text
        assert "暂时无法连接社区主机" in text and "cannot" not in text
    assert r.box.commands == []


async def test_a_box_that_does_not_answer_gives_the_phone_within_the_wait(
        mosquitto: Mosquitto) -> None:
    view = sample_view()
    async with rig(mosquitto, view, relay_wait=0.5) as r:
        r.box.silent = True
        started = time.monotonic()
        status, text, _ = await r.district.get(r.link())
        elapsed = time.monotonic() - started
        assert status == 504 and 0.5 <= elapsed < 2.0
        assert "暂时无法连接社区主机" in text and "0755-1234" in text


async def test_large_bodies_and_unknown_communities_get_a_page(mosquitto: Mosquitto) -> None:
    async with rig(mosquitto) as r:
        big = {"action": "note", "once": "x", "text": "字" * (wire.MAX_HTTP_BODY // 2)}
        status, text, _ = await r.district.post(r.link(), big)
        assert status == 413 and "内容太大" in text and "0755-1234" in text
        status, text, _ = await r.district.get("/c/nowhere/a/" + SIGNER.sign("A", "wang", NOW))
        assert status == 404 and "没有这个社区" in text
    assert r.box.commands == []


async def test_a_link_preview_is_a_get_and_no_token_is_logged(mosquitto: Mosquitto) -> None:
    """A HEAD (a chat app's preview) is asked as a GET and acts on nothing; neither the
    district nor the box logs the token (it is the link's credential)."""
    with structlog.testing.capture_logs() as logs:
        async with rig(mosquitto) as r:
            path = r.link()
            async with r.district.http.head(r.district.url + path) as resp:
                assert resp.status == 200
            await r.district.post(path, {"action": "ack"})
    assert [c.fields["method"] for c in r.box.commands] == ["GET", "POST"]
    token = path.rsplit("/", 1)[1]
    assert logs and not [e for e in logs if token in repr(e) or token[:20] in repr(e)]


async def test_a_box_with_another_command_key_says_call_the_phone(mosquitto: Mosquitto
                                                                   ) -> None:
    """The box answers `forged` when the district's command key is not its own: the relay
    page says plainly to call the duty phone (no "try again": it would never work), in the
    person's language; the board flags the community with what to check; an act from the
    board says the same."""
    box = Box("shuibei", b"not-the-district-key-0123456", answer_refusals=True)
    view = sample_view()
    async with box.run(mosquitto.port), district(mosquitto.port) as d, \
            served(view, d.channel) as h:
        status, text, _ = await h.get("/c/shuibei/a/some-token")
        assert status == 502 and box.refused == ["forged"]
        assert "请直接拨打值班电话" in text and 'href="tel:0755-1234"' in text
        assert "重试" not in text and "English" not in text and "Call" not in text
        status, text, _ = await h.get("/c/shuibei/a/some-token",
                                      headers={"Accept-Language": "en"})
        assert "Call the duty phone" in text and "again" not in text and "拨打" not in text
        csrf = await h.login()
        status, text, _ = await h.get("/board")
        flagged = re.search(r'data-community="shuibei".*?</li>', text, re.S)
        assert flagged and "指令密钥不一致" in flagged.group(0)
        assert "command_key_file" in flagged.group(0)
        others = re.search(r'data-community="huangbei".*?</li>', text, re.S)
        assert others and "指令密钥不一致" not in others.group(0)
        status, text, _ = await h.post("/board/c/shuibei/i/SB-1/ack", {CSRF_FIELD: csrf})
        assert status == 502 and "指令密钥不一致" in text and "0755-1234" in text
