"""The web board's sessions, login, CSRF and page, over real HTTP on loopback.

`FakeBoardApi` serves the JSON API shapes the board's script reads (status, incidents,
events, the event stream, ack and resolve) behind the rules the daemon's middleware applies
to board sessions: a session cookie for GETs, and the session's CSRF token from the same
origin for POSTs, acting as "board:<name>". The browser tests use it too, with the closed
loop's shapes (assign, note, the timeline, contacts) and the site plan drawn by the real
`sentinel.control.siteplan` route.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sentinel import i18n
from sentinel.clock import FakeClock
from sentinel.config.inventory import Device, DeviceSettings
from sentinel.control.board import BoardSessions, add_board_routes, render_board
from sentinel.control.sessions import COOKIE, CSRF_HEADER
from sentinel.control.siteplan import SitePlan, WatchPositions
from sentinel.incidents.model import Incident, Status
from sentinel.notify.channels import channel_type
from sentinel.types import Severity

KEY = b"board-key-for-tests-0123456789"
TOKEN = "control-token-0123456789"
NOW = 1_700_000_000.0
PLACE = {"community": "水贝社区", "compound": "水贝花园", "building": "1栋", "floor": "3",
         "unit": "306", "grid": "SB-G01", "location": "水贝花园1栋3楼306室卧室",
         "kind": "smoke", "device": "SB-SMK-0001"}


# -- a stand-in for the daemon's JSON API -----------------------------------------------

def incident_json(incident_id: str, name: str = "smoke_alarm", severity: str = "critical",
                  opened_at: float | None = None, place: dict[str, str] | None = None,
                  **fields: Any) -> dict[str, Any]:
    place = dict(place or PLACE)
    data: dict[str, Any] = {
        "id": incident_id, "key": f"{name}:{place['device']}", "name": name,
        "target": place["device"], "kind": place["kind"], "severity": severity,
        "opened_at": opened_at if opened_at is not None else time.time(), "place": place,
        "device_id": place["device"], "status": "firing", "active": True,
        "acknowledged_by": None, "acknowledged_at": None, "resolved_at": None,
        "resolved_by": None, "outcome": None, "note": None, "members": [], "groups": [],
        "drill": False, "silenced_by": None,
        # As the shipped rules have it: the alarms that page at once are life-safety ones.
        "life_safety": severity in ("critical", "emergency")}
    data.update(fields)
    return data


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTACTS = [{"id": "zhang_wei", "name": "张伟", "roles": ["grid_worker"], "grids": ["SB-G01"]},
            {"id": "li_na", "name": "李娜", "roles": ["property"], "grids": []}]


def plan_device(device_id: str, compound: str, building: str, x: float, y: float,
                kind: str = "smoke", **settings: Any) -> Device:
    """A device of a site-plan inventory, at plan metres (x, y)."""
    return Device(id=device_id, kind=kind, community="水贝社区", compound=compound,
                  grid="SB-G01", profile="sentinel-json", building=building,
                  settings=DeviceSettings(x=x, y=y, **settings))


# The stand-in's site plan: the buildings of status() at plan metres, two of them also in
# degrees, so the watches' degrees land on the plan.
PLAN_DEVICES = [
    plan_device("P-1", "水贝花园", "1栋", 0, 0, lat=22.5700, lon=114.1200),
    plan_device("P-2", "水贝花园", "2栋", 60, 0, lat=22.5700, lon=114.1200 + 60 / 102_800),
    plan_device("P-10", "水贝花园", "10栋", 120, 0),
    plan_device("P-3", "水贝新村", "1栋", 0, 100),
    plan_device("P-4", "水贝新村", "2栋", 60, 100),
]


def incident_object(data: dict[str, Any]) -> Incident:
    """The model incident of a stand-in incident (what the site plan draws from)."""
    return Incident(id=data["id"], key=data["key"], name=data["name"], target=data["target"],
                    kind=data["kind"], severity=Severity.parse(data["severity"]),
                    opened_at=data["opened_at"], place=dict(data["place"]),
                    device_id=data["device_id"], status=Status(data["status"]))


@dataclass
class FakeBoardApi:
    """The API shapes of the contract, in memory, behind board-session rules."""

    sessions: BoardSessions
    token: str = TOKEN
    community: str = "水贝社区"
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    watches: WatchPositions = field(default_factory=WatchPositions)
    # Delivery attempts by incident, as the audit lists them.
    attempts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _streams: list[asyncio.Queue[dict[str, Any]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])

        async def open_incidents() -> list[Incident]:
            return [incident_object(i) for i in self.incidents.values()
                    if i["status"] != "resolved"]

        plan = SitePlan.of({d.id: d for d in PLAN_DEVICES}, open_incidents, self.watches)
        add_board_routes(app, self.sessions, self.token.encode(), plan)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/incidents", self._incidents)
        app.router.add_get("/api/incidents/{id}", self._show)
        app.router.add_get("/api/contacts", self._contacts)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_post("/api/incidents/{id}/ack", self._ack)
        app.router.add_post("/api/incidents/{id}/resolve", self._resolve)
        app.router.add_post("/api/incidents/{id}/assign", self._assign)
        app.router.add_post("/api/incidents/{id}/note", self._note)
        # The page as a viewer gets it (a viewer's login is H5's sessions; the page's
        # part, no buttons, is the board's).
        app.router.add_get("/board-viewer", self._viewer_board)
        return app

    async def _viewer_board(self, request: web.Request) -> web.StreamResponse:
        name = self.sessions.session_name(request)
        csrf = self.sessions.csrf_token(request)
        assert name is not None and csrf is not None
        return render_board("zh", csrf, f"board:{name}", name, "viewer")

    # The rules the daemon's middleware applies to a board session.
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            actor = self.sessions.session_actor(request)
            if actor is None:
                self.refused.append(f"401 {request.method} {request.path}")
                return web.json_response({"error": "unauthorized", "message": "log in"},
                                         status=401)
            if request.method == "POST" and not self.sessions.csrf_ok(request):
                self.refused.append(f"403 {request.method} {request.path}")
                return web.json_response({"error": "forbidden", "message": "bad CSRF token"},
                                         status=403)
        return await handler(request)

    def emit(self, type_: str, incident_id: str, actor: str = "sentinel",
             **data: Any) -> dict[str, Any]:
        inc = self.incidents[incident_id]
        event = {"seq": len(self.events) + 1, "incident": incident_id, "type": type_,
                 "ts": time.time(), "actor": actor, "severity": inc["severity"],
                 "status": inc["status"], "name": inc["name"], "place": inc["place"], **data}
        if "channel" in data:  # as the daemon's feed (control/feed.py) adds it
            event["channel_type"] = channel_type(data["channel"])
        self.events.append(event)
        for queue in self._streams:
            queue.put_nowait(event)
        return event

    def open(self, inc: dict[str, Any]) -> None:
        self.incidents[inc["id"]] = inc
        self.emit("opened", inc["id"])

    def status(self) -> dict[str, Any]:
        rank = ["ok", "offline", "maintenance", "info", "warning", "critical", "emergency"]
        buildings: dict[str, dict[str, str]] = {
            "水贝花园": {"1栋": "ok", "2栋": "ok", "10栋": "offline"},
            "水贝新村": {"1栋": "ok", "2栋": "ok"}}
        for inc in self.incidents.values():
            if inc["status"] != "resolved":
                place = inc["place"]
                current = buildings[place["compound"]][place["building"]]
                if rank.index(inc["severity"]) > rank.index(current):
                    buildings[place["compound"]][place["building"]] = inc["severity"]
        compounds = [{"id": c, "worst": max(bs.values(), key=rank.index),
                      "buildings": [{"id": b, "worst": w, "online": 4 if w != "offline" else 3,
                                     "offline": 0 if w != "offline" else 1, "total": 4}
                                    for b, w in bs.items()]}
                     for c, bs in buildings.items()]
        open_by: dict[str, int] = {}
        for inc in self.incidents.values():
            if inc["status"] != "resolved":
                open_by[inc["severity"]] = open_by.get(inc["severity"], 0) + 1
        return {"community": self.community, "now": time.time(),
                "devices": {"total": 20, "online": 18, "offline": 1, "unseen": 1, "by_kind": {
                    "smoke": {"online": 14, "offline": 1, "unseen": 1, "total": 16},
                    "gas": {"online": 4, "offline": 0, "unseen": 0, "total": 4}}},
                "compounds": compounds, "incidents_open": open_by,
                "low_battery": [{"device": "SB-SMK-0002", "incident": "x", "since": 0,
                                 "value": 9.0, "place": PLACE}],
                "broker": {"connected": True}, "store": {"backend": "sqlite"},
                "outbox_depth": 0}

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _incidents(self, request: web.Request) -> web.Response:
        return web.json_response({"incidents": [i for i in self.incidents.values()
                                                if i["status"] != "resolved"]})

    async def _events(self, request: web.Request) -> web.Response:
        last = int(request.query.get("last", "50"))
        return web.json_response({"seq": len(self.events), "events": self.events[-last:]})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        after = int(request.headers.get("Last-Event-ID") or request.query.get("after") or 0)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._streams.append(queue)
        try:
            for event in [e for e in self.events if e["seq"] > after]:
                queue.put_nowait(event)
            await response.write(b": ping\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), 15)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                data = json.dumps(event, ensure_ascii=False)
                await response.write(f"id: {event['seq']}\nevent: incident\n"
                                     f"data: {data}\n\n".encode())
        finally:
            self._streams.remove(queue)

    async def _contacts(self, request: web.Request) -> web.Response:
        return web.json_response({"contacts": CONTACTS})

    async def _show(self, request: web.Request) -> web.Response:
        inc = self.incidents.get(request.match_info["id"])
        if inc is None:
            return web.json_response({"error": "not_found"}, status=404)
        # The contract's shape: events with their data nested, the audit flat.
        mine = [e for e in self.events if e["incident"] == inc["id"]]
        events = [{k: e[k] for k in ("seq", "type", "ts", "actor", "severity", "status")}
                  | {"data": {k: v for k, v in e.items() if k not in (
                      "seq", "type", "ts", "actor", "severity", "status", "incident", "name",
                      "place")}} for e in mine]
        audit = sorted([*mine, *self.attempts.get(inc["id"], [])], key=lambda e: e["ts"])
        return web.json_response({"incident": inc, "audit": audit, "events": events,
                                  "latency": {"first_notification": 1.2,
                                              "first_notification_limit": 10.0,
                                              "forward": 0.4, "forward_limit": 3.0}})

    def _group_of(self, inc: dict[str, Any]) -> list[dict[str, Any]]:
        """The incident and, for a group, its open members: acting on a group acts on them."""
        members = [self.incidents[m] for m in inc.get("members", []) if m in self.incidents]
        return [inc, *(m for m in members if m["status"] != "resolved")]

    async def _act(self, request: web.Request, kind: str) -> web.Response:
        inc = self.incidents.get(request.match_info["id"])
        body = await request.json()
        if inc is None or inc["status"] == "resolved":
            return web.json_response({"error": "not_found", "message": "no open incident"},
                                     status=404)
        actor = self.sessions.session_actor(request)
        if kind in ("ack", "resolve"):
            assert isinstance(body.get("actor"), str) and body["actor"], "actor is required"
        for one in self._group_of(inc):
            if kind == "ack":
                if one["status"] == "firing":
                    one.update(status="acknowledged", acknowledged_by=actor,
                               acknowledged_at=time.time())
                    self.emit("acknowledged", one["id"], actor=actor, note=body.get("note"))
            elif kind == "assign":
                assert set(body) == {"person"} and body["person"] in {c["id"] for c in CONTACTS}
                one.update(assigned_to=body["person"], assigned_at=time.time())
                self.emit("assigned", one["id"], actor=actor, person=body["person"], by=actor)
            elif kind == "note":
                assert set(body) == {"text"} and body["text"]
                if one is inc:  # a note belongs to the incident it was written on
                    self.emit("noted", one["id"], actor=actor, text=body["text"])
            else:
                assert body["outcome"] in ("handled", "false_alarm", "referred")
                mine = body["outcome"] if one is inc else "with_group"
                one.update(status="resolved", resolved_by=actor, resolved_at=time.time(),
                           outcome=mine, note=body.get("note") if one is inc else None)
                self.emit("resolved", one["id"], actor=actor, outcome=mine)
        return web.json_response({"incident": inc})

    async def _assign(self, request: web.Request) -> web.Response:
        return await self._act(request, "assign")

    async def _note(self, request: web.Request) -> web.Response:
        return await self._act(request, "note")

    async def _ack(self, request: web.Request) -> web.Response:
        return await self._act(request, "ack")

    async def _resolve(self, request: web.Request) -> web.Response:
        return await self._act(request, "resolve")


# -- harness ----------------------------------------------------------------------------

@dataclass
class Harness:
    url: str
    sessions: BoardSessions
    api: FakeBoardApi
    clock: FakeClock
    http: aiohttp.ClientSession

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.url + path, allow_redirects=False, **kwargs) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.post(self.url + path, allow_redirects=False, **kwargs) as r:
            return r.status, await r.text(), r

    async def login(self, name: str = "王网格员") -> str:
        """Log in through a one-time link; the session's CSRF token."""
        status, _, r = await self.get(self.sessions.login_path(name))
        assert status == 303 and r.headers["Location"] == "/board"
        status, text, _ = await self.get("/board")
        assert status == 200, text
        return csrf_of(text)


def csrf_of(page: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert found, page[:500]
    return found.group(1)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    clock = FakeClock(NOW)
    sessions = BoardSessions(KEY, clock=clock)
    api = FakeBoardApi(sessions)
    api.open(incident_json("20240101-0001", opened_at=NOW - 60))
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        # unsafe: keep cookies for an IP address host (loopback).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            yield Harness(f"http://127.0.0.1:{port}", sessions, api, clock, http)
    finally:
        await runner.cleanup()


def cookie_header(r: aiohttp.ClientResponse) -> str:
    values = r.headers.getall("Set-Cookie", [])
    assert len(values) == 1, values
    return values[0]


# -- one-time login links ---------------------------------------------------------------

async def test_login_link_sets_a_strict_httponly_cookie_and_works_once(h: Harness) -> None:
    """The link logs in once: HttpOnly, SameSite=Strict, Path=/, not Secure over http."""
    path = h.sessions.login_path("王网格员")
    assert re.fullmatch(r"/board/login/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", path)
    status, _, r = await h.get(path)
    assert status == 303 and r.headers["Location"] == "/board"
    cookie = cookie_header(r)
    assert cookie.startswith(f"{COOKIE}=")
    attrs = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
    assert "httponly" in attrs and "secure" not in attrs
    assert attrs["samesite"].strip() == "SameSite=Strict" and attrs["path"].strip() == "Path=/"
    status, page, _ = await h.get("/board")
    assert status == 200 and csrf_of(page)
    h.http.cookie_jar.clear()
    status, page, r = await h.get(path)
    assert status == 403 and "Set-Cookie" not in r.headers
    assert "登录链接无效" in page


async def test_login_link_expires_after_ten_minutes(h: Harness) -> None:
    path = h.sessions.login_path("王网格员")
    h.clock.advance(601)
    status, _, r = await h.get(path)
    assert status == 403 and "Set-Cookie" not in r.headers


@pytest.mark.parametrize("mangle", [
    lambda p: p[:-2] + ("AA" if not p.endswith("AA") else "BB"),   # forged MAC
    lambda p: p.replace("/board/login/", "/board/login/x"),           # altered payload
    lambda p: p + "=",                                               # another spelling
    lambda p: "/board/login/" + "A" * 2000,                          # oversized
])
async def test_forged_login_links_are_refused(h: Harness, mangle: Callable[[str], str]) -> None:
    status, _, r = await h.get(mangle(h.sessions.login_path("王网格员")))
    assert status in (403, 404) and "Set-Cookie" not in r.headers


# -- sessions and CSRF, request by request ----------------------------------------------

def mocked(method: str = "GET", cookie: str | None = None,
           headers: dict[str, str] | None = None) -> web.Request:
    all_headers = {"Host": "127.0.0.1:8080", **(headers or {})}
    if cookie is not None:
        all_headers["Cookie"] = f"{COOKIE}={cookie}"
    return make_mocked_request(method, "/api/incidents/X/ack", headers=all_headers)


# -- the login form ---------------------------------------------------------------------

async def test_board_redirects_to_login_without_a_session(h: Harness) -> None:
    status, _, r = await h.get("/board")
    assert status == 303 and r.headers["Location"] == "/board/login"
    status, _, r = await h.get("/board?lang=en")
    assert status == 303 and r.headers["Location"] == "/board/login?lang=en"
    status, page, r = await h.get("/board/login")
    assert status == 200 and 'name="token"' in page and 'type="password"' in page
    assert r.headers["X-Frame-Options"] == "DENY"
    status, page, _ = await h.get("/board/login?lang=en")
    assert "Control token" in page


async def test_form_login(h: Harness) -> None:
    """The right control token logs in as the given name; a wrong one is a 401."""
    status, page, r = await h.post("/board/login", data={"name": "李物业", "token": "nope"})
    assert status == 401 and "Set-Cookie" not in r.headers and "不正确" in page
    assert 'value="李物业"' in page, "the name is kept in the form"
    status, _, r = await h.post("/board/login", data={"name": " ", "token": TOKEN})
    assert status == 401 and "Set-Cookie" not in r.headers
    status, _, r = await h.post("/board/login?lang=en", data={"name": "李物业", "token": TOKEN},
                                headers={"Origin": h.url})
    assert status == 303 and r.headers["Location"] == "/board?lang=en"
    status, page, _ = await h.get("/board")
    assert status == 200 and "board:李物业" in page


async def test_form_login_refuses_other_sites(h: Harness) -> None:
    status, _, r = await h.post("/board/login", data={"name": "x", "token": TOKEN},
                                headers={"Origin": "http://evil.example"})
    assert status == 403 and "Set-Cookie" not in r.headers


async def test_secrets_stay_out_of_the_log(h: Harness) -> None:
    """Neither the control token, a login link nor a cookie is ever logged."""
    path = h.sessions.login_path("王网格员")
    with structlog.testing.capture_logs() as logs:
        await h.post("/board/login", data={"name": "a", "token": TOKEN + "x"})
        await h.post("/board/login", data={"name": "a", "token": TOKEN})
        await h.get(path)
        await h.get(path)
        await h.get("/board")
    cookie = next(c.value for c in h.http.cookie_jar if c.key == COOKIE)
    text = repr(logs)
    assert logs, "logins are logged"
    for secret in (TOKEN, path.rsplit("/", 1)[1], cookie, KEY.decode()):
        assert secret not in text


# -- the page ---------------------------------------------------------------------------

async def test_board_page_headers_and_content(h: Harness) -> None:
    csrf = await h.login("<b>王</b>")
    status, page, r = await h.get("/board")
    assert status == 200
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert f'<meta name="csrf-token" content="{csrf}">' in page
    assert "<b>王</b>" not in page and "&lt;b&gt;王&lt;/b&gt;" in page
    # No inline script: only the served file and a JSON data block.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert [attrs for attrs, body in scripts if body.strip()] == \
        [' id="board-i18n" type="application/json"']
    assert any('src="/board/static/board.js"' in attrs for attrs, _ in scripts)
    assert 'lang="zh-CN"' in page and "一屏可视" in page
    assert "http://" not in page and "https://" not in page, "nothing from elsewhere"


async def test_catalog_is_rendered_from_i18n(h: Harness) -> None:
    await h.login()
    _, page, _ = await h.get("/board?lang=en")
    assert 'lang="en"' in page and "Open incidents" in page
    found = re.search(r'<script id="board-i18n" type="application/json">(.*?)</script>',
                      page, re.S)
    assert found
    catalog = json.loads(found.group(1))
    for lang in ("zh", "en"):
        assert catalog[lang]["incident.smoke_alarm"] == i18n.incident_title("smoke_alarm", lang)
        assert catalog[lang]["severity.critical"] == i18n.t("severity.critical", lang)
        assert catalog[lang]["kind.hydrant_pressure"] == i18n.kind_name("hydrant_pressure", lang)
        assert catalog[lang]["outcome.false_alarm"] == i18n.t("outcome.false_alarm", lang)
        assert catalog[lang]["btn.ack"]


async def test_static_assets(h: Harness) -> None:
    for name, ctype in (("board.js", "text/javascript"), ("board.css", "text/css"),
                        ("icon.svg", "image/svg+xml")):
        status, body, r = await h.get(f"/board/static/{name}")
        assert status == 200 and body and r.content_type == ctype
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    for bad in ("nope.js", "..%2Fboard.py", "%2E%2E/board.py"):
        status, _, _ = await h.get(f"/board/static/{bad}")
        assert status == 404


async def test_logout_needs_the_csrf_token(h: Harness) -> None:
    """Logout without the token only drops this browser's cookie; with it, the session ends
    (its cookie stops working, even if replayed)."""
    csrf = await h.login()
    cookie = next(c.value for c in h.http.cookie_jar if c.key == COOKIE)
    status, _, r = await h.post("/board/logout", data={})
    assert status == 303 and r.headers["Location"] == "/board/login"
    assert h.sessions.session_actor(mocked(cookie=cookie)) == "board:王网格员"
    h.http.cookie_jar.update_cookies({COOKIE: cookie})
    status, _, r = await h.post("/board/logout", data={"csrf": csrf})
    assert status == 303
    assert h.sessions.session_actor(mocked(cookie=cookie)) is None
    h.http.cookie_jar.update_cookies({COOKIE: cookie})
    status, _, r = await h.get("/board")
    assert status == 303 and r.headers["Location"] == "/board/login"


# -- the contract with the API middleware -----------------------------------------------

async def test_api_accepts_the_session_and_its_csrf_token(h: Harness) -> None:
    """What the daemon's middleware does with a board session, shown on the stand-in."""
    async with h.http.get(h.url + "/api/incidents") as r:
        assert r.status == 401
    csrf = await h.login()
    async with h.http.get(h.url + "/api/incidents") as r:
        assert r.status == 200 and len((await r.json())["incidents"]) == 1
    url = h.url + "/api/incidents/20240101-0001/ack"
    body = {"actor": "someone else", "note": None}
    async with h.http.post(url, json=body) as r:
        assert r.status == 403
    async with h.http.post(url, json=body, headers={CSRF_HEADER: csrf,
                                                    "Origin": "http://evil.example"}) as r:
        assert r.status == 403
    async with h.http.post(url, json=body, headers={CSRF_HEADER: csrf, "Origin": h.url}) as r:
        assert r.status == 200
        assert (await r.json())["incident"]["acknowledged_by"] == "board:王网格员"


# -- the alarm sound --------------------------------------------------------------------

def test_alarm_sound_is_what_the_committed_script_makes(tmp_path: Any) -> None:
    """The shipped siren is exactly the script's output: a 1.6 s mono 16-bit WAV."""
    import importlib.util
    import wave
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_alarm_sound",
                                                  root / "scripts/make_alarm_sound.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    made = tmp_path / "alarm.wav"
    script.write(made)
    shipped = root / "src/sentinel/control/board_assets/alarm.wav"
    assert made.read_bytes() == shipped.read_bytes()
    with wave.open(str(shipped)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        assert abs(wav.getnframes() / wav.getframerate() - 1.6) < 0.01


async def test_alarm_sound_is_served_to_a_session(h: Harness) -> None:
    async with h.http.get(h.url + "/board/static/alarm.wav") as r:
        assert r.status == 200 and r.content_type == "audio/wav"
        assert (await r.read())[:4] == b"RIFF"
    await h.login()
    _, page, r = await h.get("/board")
    assert "media-src 'self'" in r.headers["Content-Security-Policy"]
    assert 'src="/board/static/alarm.wav"' in page and " loop" in page


# -- inventory positions and the site plan ----------------------------------------------

def test_inventory_reads_positions_in_pairs(tmp_path: Any) -> None:
    """x/y and lat/lon are optional columns, read alike by the CSV fast path and the
    models (negative numbers, YAML), and each pair is given whole or not at all."""
    from sentinel.config.inventory import load_inventory

    head = "id,kind,community,compound,building,grid,profile,x,y,lat,lon\n"
    (tmp_path / "a.csv").write_text(
        head + "A1,smoke,c,k,1栋,g,p,10.5,20,,\n"
               "A2,smoke,c,k,1栋,g,p,-10,20,,\n"
               "A3,smoke,c,k,2栋,g,p,,,22.57,114.12\n"
               "A4,smoke,c,k,2栋,g,p,5,,,\n"
               "A5,smoke,c,k,2栋,g,p,,,91,114\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text(
        "- {id: B1, kind: smoke, community: c, compound: k, grid: g, profile: p,\n"
        "   settings: {lat: -33.9, lon: 151.2}}\n", encoding="utf-8")
    inventory, problems = load_inventory([tmp_path / "a.csv", tmp_path / "b.yaml"])
    assert (inventory["A1"].settings.x, inventory["A1"].settings.y) == (10.5, 20.0)
    assert inventory["A2"].settings.x == -10.0
    assert (inventory["A3"].settings.lat, inventory["A3"].settings.lon) == (22.57, 114.12)
    assert inventory["B1"].settings.lat == -33.9
    assert sorted(p.entry for p in problems) == ["line 5 (id A4)", "line 6 (id A5)"]
    assert "x and y go together" in " ".join(p.reason for p in problems)


def parse_svg(text: str) -> Any:
    import xml.etree.ElementTree as ET
    return ET.fromstring(text)


SVG = "{http://www.w3.org/2000/svg}"


def test_site_plan_from_plan_metres_marks_alarmed_buildings() -> None:
    """Buildings stand where the inventory puts them (north up); an open critical incident
    makes its building an alarm, a warning colours it; texts are escaped."""
    from sentinel.control.siteplan import layout, render

    devices = [plan_device("A", "<b>&园", "1栋", 0, 0), plan_device("B", "<b>&园", "1栋", 0, 20),
               plan_device("C", "<b>&园", "2栋", 100, 10), plan_device("D", "村", "9栋", 50, 200)]
    plan = layout(devices)
    assert [(b.building, b.x, b.y) for b in plan.buildings] == \
        [("1栋", 0.0, 10.0), ("2栋", 100.0, 10.0), ("9栋", 50.0, 200.0)]
    fire = incident_object(incident_json("F", place={**PLACE, "compound": "<b>&园",
                                                      "building": "2栋"}))
    tank = incident_object(incident_json("T", "tank_level_falling", "warning",
                                         place={**PLACE, "compound": "村", "building": "9栋"}))
    svg = parse_svg(render(plan, [fire, tank], [], "zh", str))
    groups = {g.get("data-building"): g for g in svg.iter(f"{SVG}g")
              if "building" in (g.get("class") or "").split()}
    assert groups["2栋"].get("class") == "building w-critical alarm"
    assert groups["9栋"].get("class") == "building w-warning"
    assert groups["1栋"].get("class") == "building w-ok"
    assert groups["2栋"].get("data-compound") == "<b>&园"
    # North up: the building at y = 200 is drawn above (smaller SVG y) those at y = 10.
    def top(g: Any) -> float:
        return float(g.find(f"{SVG}rect").get("y"))
    assert top(groups["9栋"]) < top(groups["1栋"])
    assert svg.get("data-buildings") == "3"


def test_site_plan_from_degrees_shows_watches() -> None:
    """Degrees only: a local projection in metres; a watch's last position is drawn, in
    alarm while its SOS or fall is open; an older reading never moves it back."""
    from sentinel.control.siteplan import layout, render
    from sentinel.types import Reading

    def geo(device_id: str, building: str, lat: float, lon: float) -> Device:
        return Device(id=device_id, kind="smoke", community="c", compound="园", grid="g",
                      profile="p", building=building,
                      settings=DeviceSettings(lat=lat, lon=lon))

    plan = layout([geo("A", "1栋", 22.5700, 114.1200), geo("B", "2栋", 22.5710, 114.1200)])
    a, b = plan.buildings
    assert abs(math.dist((a.x, a.y), (b.x, b.y)) - 110.6) < 0.5, "0.001° of latitude"
    watches = WatchPositions()

    def reading(ts: float, lat: float) -> Reading:
        return Reading("W-1", "elderly_watch", ts, ts, {"latitude": lat, "longitude": 114.12,
                                                         "heart_rate": 70.0})
    asyncio.run(watches.put([reading(NOW, 22.5705), reading(NOW - 60, 22.5)]))
    assert watches.last["W-1"].lat == 22.5705
    sos = incident_object(incident_json("S", "sos", place={**PLACE, "kind": "elderly_watch",
                                                            "device": "W-1"}))
    sos.kind = "elderly_watch"
    text = render(plan, [sos], watches.last.values(), "zh", lambda ts: "08:00:00")
    watch = next(g for g in parse_svg(text).iter(f"{SVG}g") if g.get("data-device") == "W-1")
    assert watch.get("class") == "watch alarm"
    assert "长者手表 W-1" in (watch.find(f"{SVG}title").text or "")


def test_site_plan_fits_degrees_onto_plan_metres() -> None:
    """Two or more buildings in both: degrees map onto the (rotated) plan within a metre."""
    from sentinel.control.siteplan import Projection, layout

    angle = math.radians(30)
    base = Projection(22.57, 114.12)

    def plan_of(lat: float, lon: float) -> tuple[float, float]:
        z = base.local(lat, lon) * complex(math.cos(angle), math.sin(angle)) + complex(500, -20)
        return z.real, z.imag

    points = [(22.5700, 114.1200), (22.5712, 114.1203), (22.5705, 114.1221)]
    devices = [plan_device(f"D{i}", "园", f"{i}栋", *plan_of(*g), lat=g[0], lon=g[1])
               for i, g in enumerate(points)]
    plan = layout(devices)
    assert plan.projection is not None
    x, y = plan.projection(22.5709, 114.1210)
    ex, ey = plan_of(22.5709, 114.1210)
    assert math.dist((x, y), (ex, ey)) < 1.0
    assert layout([plan_device("X", "园", "1栋", 0, 0)]).projection is None


async def test_site_plan_route_needs_a_session_and_draws_the_plan(h: Harness) -> None:
    async with h.http.get(h.url + "/api/siteplan") as r:
        assert r.status == 401
    await h.login()
    status, text, r = await h.get("/api/siteplan")
    assert status == 200 and r.content_type == "image/svg+xml"
    svg = parse_svg(text)
    assert svg.get("data-buildings") == str(len(PLAN_DEVICES))
    alarmed = [g.get("data-building") for g in svg.iter(f"{SVG}g")
               if "alarm" in (g.get("class") or "").split()]
    assert alarmed == ["1栋"], "the open smoke alarm in 水贝花园 1栋"


async def test_viewer_page_says_view_only(h: Harness) -> None:
    await h.login()
    _, page, _ = await h.get("/board-viewer")
    pill = '<span data-i18n="board.viewer">只读</span>'
    assert '<meta name="board-role" content="viewer">' in page and pill in page
    _, page, _ = await h.get("/board")
    assert '<meta name="board-role" content="operator">' in page and pill not in page
    assert '<meta name="board-zone" content="Asia/Shanghai">' in page
