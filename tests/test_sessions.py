"""Board logins: tokens, throttling, durable one-time links, personal logins and roles.

The token and throttle rules are checked directly (the fake clock; no sleeping); what a
person meets is checked against one running daemon shared by the module (real mosquitto,
real apprise deliveries to a local json receiver): ten wrong logins then the right token,
a personal link sent to a contact's channel whose ack is recorded under the contact id, a
viewer's POST refused, and a used link still refused after a daemon restart.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sentinel.clock import FakeClock
from sentinel.control.sessions import (
    COOKIE,
    CSRF_HEADER,
    LOGIN_DELAY,
    LOGIN_FREE,
    LOGIN_WINDOW,
    BoardSessions,
    Throttle,
)
from sentinel.escalation.model import Contact

from daemon import LOADED, DaemonProcess, Publisher, alarm, write_oncall
from helpers import SHIPPED_CONFIG, sentinel
from receivers import HttpReceiver
from servers import Mosquitto

KEY = b"board-key-for-tests-0123456789"
NOW = 1_700_000_000.0
SMOKE = "SB-SMK-0001"
PERSON = "gw-01"        # a grid worker whose channel is the test's receiver
VIEWER = "ec-06"        # board_role: viewer in the test's on-call file
DELAY_MAX = 0.3         # the daemon's login_delay_max here: slowing seen, CI kept fast


def mocked(method: str = "GET", cookie: str | None = None,
           headers: dict[str, str] | None = None) -> web.Request:
    all_headers = {"Host": "127.0.0.1:8080", **(headers or {})}
    if cookie is not None:
        all_headers["Cookie"] = f"{COOKIE}={cookie}"
    return make_mocked_request(method, "/api/incidents/X/ack", headers=all_headers)


def token_of(path: str) -> str:
    return path.rsplit("/", 1)[1]


# -- tokens ---------------------------------------------------------------------------------

async def test_tokens_do_not_cross_domains() -> None:
    """A session cookie is not a login link, a login link is not a cookie, and a key's
    tokens mean nothing to another key."""
    clock = FakeClock(NOW)
    sessions = BoardSessions(KEY, clock=clock)
    link_token = token_of(sessions.login_path("a"))
    cookie = sessions.new_session("a")
    assert await sessions.redeem_login(cookie) is None
    assert sessions.session_actor(mocked(cookie=link_token)) is None
    other = BoardSessions(b"another-key-0123456789", clock=clock)
    assert other.session_actor(mocked(cookie=cookie)) is None
    assert await other.redeem_login(link_token) is None
    grant = await sessions.redeem_login(link_token)
    assert grant is not None and grant.actor == "board:a" and grant.role == "operator"
    assert await sessions.redeem_login(link_token) is None, "one use"


async def test_names_are_checked() -> None:
    sessions = BoardSessions(KEY)
    for bad in ("", "   ", "x" * 65, "a\nb", "a\x7fb"):
        with pytest.raises(ValueError, match="name"):
            sessions.login_path(bad)
    grant = await sessions.redeem_login(token_of(sessions.login_path("  王  ")))
    assert grant is not None and grant.name == "王"


def test_key_is_never_shown() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        BoardSessions(b"short")
    assert KEY.decode() not in repr(BoardSessions(KEY))


def test_session_actor_and_expiry() -> None:
    clock = FakeClock(NOW)
    sessions = BoardSessions(KEY, ttl=3600, clock=clock)
    cookie = sessions.new_session("王网格员")
    assert sessions.session_actor(mocked(cookie=cookie)) == "board:王网格员"
    assert sessions.session_actor(mocked()) is None
    payload, mac = cookie.split(".")
    assert sessions.session_actor(mocked(cookie=f"{payload}.{mac[::-1]}")) is None
    assert sessions.session_actor(mocked(cookie=f"{payload[:-2]}.{mac}")) is None
    clock.advance(3600)
    assert sessions.session_actor(mocked(cookie=cookie)) is None


async def test_personal_and_viewer_logins_carry_their_actor_and_role() -> None:
    """A personal login acts as the contact id with the contact's role; a viewer link gives
    a view-only session; a personal link for someone not in the on-call file is refused."""
    people = contacts_with_a_viewer()
    sessions = BoardSessions(KEY, clock=FakeClock(NOW), people=people)
    path, contact = sessions.person_path(VIEWER)
    grant = await sessions.redeem_login(token_of(path))
    assert grant is not None and (grant.actor, grant.role) == (VIEWER, "viewer")
    assert grant.name == contact.name
    cookie = sessions.new_session(grant.name, person=grant.person, role=grant.role)
    assert sessions.session_actor(mocked(cookie=cookie)) == VIEWER
    assert sessions.session_role(mocked(cookie=cookie)) == "viewer"
    grant = await sessions.redeem_login(token_of(sessions.login_path("墙", role="viewer")))
    assert grant is not None and (grant.actor, grant.role) == ("board:墙", "viewer")
    stranger = sessions.login_path("x", person="nobody")
    assert await sessions.redeem_login(token_of(stranger)) is None
    with pytest.raises(KeyError):
        sessions.person_path("nobody")


def test_csrf_token_belongs_to_its_session_and_origin() -> None:
    sessions = BoardSessions(KEY)
    cookie, other = sessions.new_session("a"), sessions.new_session("a")
    token = sessions.csrf_token(mocked(cookie=cookie))
    assert token and token != sessions.csrf_token(mocked(cookie=other))

    def ok(cookie_value: str | None, **headers: str) -> bool:
        return sessions.csrf_ok(mocked("POST", cookie_value, headers))

    assert ok(cookie, **{CSRF_HEADER: token})
    assert ok(cookie, **{CSRF_HEADER: token, "Origin": "http://127.0.0.1:8080",
                         "Sec-Fetch-Site": "same-origin"})
    assert not ok(cookie)
    assert not ok(None, **{CSRF_HEADER: token})
    assert not ok(other, **{CSRF_HEADER: token})
    assert not ok(cookie, **{CSRF_HEADER: token[:-1]})
    assert not ok(cookie, **{CSRF_HEADER: "令" * 43})
    assert not ok(cookie, **{CSRF_HEADER: token, "Origin": "http://evil.example"})
    assert not ok(cookie, **{CSRF_HEADER: token, "Origin": "http://127.0.0.1:8081"})
    assert not ok(cookie, **{CSRF_HEADER: token, "Origin": "null"})
    assert not ok(cookie, **{CSRF_HEADER: token, "Origin": "null", "Sec-Fetch-Site": "none"})
    assert ok(cookie, **{CSRF_HEADER: token, "Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert not ok(cookie, **{CSRF_HEADER: token, "Sec-Fetch-Site": "cross-site"})
    assert not ok(cookie, **{CSRF_HEADER: token, "Sec-Fetch-Site": "same-site"})


def test_cookie_is_secure_over_https() -> None:
    sessions = BoardSessions(KEY)
    response = web.Response()
    sessions.set_cookie(response, mocked().clone(scheme="https"), sessions.new_session("a"))
    morsel = response.cookies[COOKIE]
    assert morsel["secure"] and morsel["httponly"] and morsel["samesite"] == "Strict"


# -- throttling -----------------------------------------------------------------------------

def test_throttle_slows_wrong_tries_per_client_up_to_a_cap() -> None:
    """The first wrong tries are free, then each waits twice as long, capped; another
    client is not slowed, and failures older than the window stop counting."""
    clock = FakeClock(NOW)
    throttle = Throttle(clock.monotonic, cap=2.0)
    delays = [throttle.failed("10.0.0.1") for _ in range(10)]
    assert delays[:LOGIN_FREE] == [0.0] * LOGIN_FREE
    assert delays[LOGIN_FREE:LOGIN_FREE + 3] == [LOGIN_DELAY, 2 * LOGIN_DELAY, 4 * LOGIN_DELAY]
    assert delays == sorted(delays) and delays[-1] == 2.0
    assert throttle.failed("10.0.0.2") == 0.0
    clock.advance(LOGIN_WINDOW + 1)
    assert throttle.failed("10.0.0.1") == 0.0


# -- against a running daemon ---------------------------------------------------------------

def contacts_with_a_viewer() -> dict[str, Contact]:
    """The shipped on-call file's contacts, VIEWER made view-only."""
    contacts = {c.id: c for c in LOADED.oncall.contact}
    contacts[VIEWER] = contacts[VIEWER].model_copy(update={"board_role": "viewer"})
    return contacts


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as found:
        yield found


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("sessions-broker")) as found:
        yield found


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto,
           receiver: HttpReceiver) -> Iterator[DaemonProcess]:
    base = tmp_path_factory.mktemp("sessions")
    oncall = write_oncall(base / "oncall.yaml", channels={PERSON: [receiver.url()]},
                          default=[receiver.url(path="/others")])
    data = yaml.safe_load(oncall.read_text(encoding="utf-8"))
    for contact in data["contact"]:
        if contact["id"] == VIEWER:
            contact["board_role"] = "viewer"
    oncall.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    proc = DaemonProcess(base / "state", broker.port, oncall=oncall,
                         control__login_delay_max=str(DELAY_MAX))
    try:
        yield proc.start()
    finally:
        proc.close()


class Browser:
    """One person's cookie jar against the daemon's HTTP port."""

    def __init__(self, daemon: DaemonProcess, http: aiohttp.ClientSession) -> None:
        self.url = f"http://127.0.0.1:{daemon.control_port}"
        self.http = http

    async def get(self, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.url + path, allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.post(self.url + path, allow_redirects=False, **kwargs) as r:
            return r.status, await r.text(), r

    async def csrf(self) -> str:
        status, page, _ = await self.get("/board")
        assert status == 200, page[:300]
        found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
        assert found
        return found.group(1)


@pytest.fixture
async def browser(daemon: DaemonProcess) -> AsyncIterator[Browser]:
    # unsafe: keep cookies for an IP address host (loopback).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Browser(daemon, http)


async def admin(daemon: DaemonProcess, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /api/board/login-link with the control token, as a tool would."""
    token = (daemon.state_dir / "control.token").read_text().strip()
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{daemon.control_port}/api/board/login-link", json=body,
            headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


async def test_ten_wrong_logins_then_the_right_token_is_accepted(
        daemon: DaemonProcess, browser: Browser) -> None:
    """Behind a proxy everyone shares one address: wrong tries are slowed, the right token
    still gets in at once."""
    token = (daemon.state_dir / "control.token").read_text().strip()

    async def wrong() -> float:
        started = time.monotonic()
        status, page, r = await browser.post("/board/login",
                                             data={"name": "墙", "token": "guess"})
        assert status == 401 and "Set-Cookie" not in r.headers and "不正确" in page
        return time.monotonic() - started

    # At once, as a script would: the same address, so each try counts the others.
    took = await asyncio.gather(*(wrong() for _ in range(10)))
    assert max(took) >= DELAY_MAX * 0.9, f"wrong tries are slowed: {took}"
    status, _, r = await browser.post("/board/login", data={"name": "墙", "token": token})
    assert status == 303 and COOKIE in r.headers.get("Set-Cookie", "")
    status, page, _ = await browser.get("/board")
    assert status == 200 and "board:墙" in page


async def test_personal_link_is_sent_and_its_ack_is_recorded_under_the_contact_id(
        daemon: DaemonProcess, browser: Browser, receiver: HttpReceiver,
        broker: Mosquitto) -> None:
    """The API sends gw-01 a personal link on their own channel (apprise → json receiver);
    what they acknowledge through it is recorded as "gw-01"."""
    status, answer = await admin(daemon, {"person": PERSON, "send": True})
    assert status == 200, answer
    assert answer["sent"] is True and "url" not in answer, "a sent link is not echoed"
    # The channel by its type, never its address (a channel URL may hold a secret).
    assert answer["role"] == "operator" and answer["channel"] == "网络回调"

    def sent_link() -> str:
        """The login URL in the first message on gw-01's own channel."""
        seen = 1
        while True:
            for request in receiver.wait_for(seen, 10):
                found = re.search(r"http://\S+/board/login/\S+",
                                  str(request.fields.get("message")))
                if request.path == "/x" and found:
                    return found.group(0)
            seen += 1

    link = await asyncio.to_thread(sent_link)
    status, _, _ = await browser.get(link.removeprefix(browser.url))
    assert status == 303
    csrf = await browser.csrf()

    def publish() -> None:
        pub = Publisher(broker.port, client_id="sessions-alarm")
        pub.publish_readings(alarm(SMOKE))
        pub.close()
    await asyncio.to_thread(publish)
    incident = None
    deadline = time.monotonic() + 15
    while incident is None and time.monotonic() < deadline:
        status, text, _ = await browser.get("/api/incidents")
        assert status == 200, text
        incident = next((i for i in json.loads(text)["incidents"]
                         if i["device_id"] == SMOKE), None)
        await asyncio.sleep(0.1)
    assert incident is not None, "the alarm opened an incident"
    status, text, _ = await browser.post(f"/api/incidents/{incident['id']}/ack",
                                         json={"actor": "someone else"},
                                         headers={CSRF_HEADER: csrf})
    assert status == 200, text
    _, text, _ = await browser.get(f"/api/incidents/{incident['id']}")
    shown = json.loads(text)
    assert shown["incident"]["acknowledged_by"] == PERSON
    assert [e["actor"] for e in shown["audit"] if e["type"] == "acknowledged"] == [PERSON]


async def test_viewer_sees_the_board_and_its_posts_are_refused(
        daemon: DaemonProcess, browser: Browser) -> None:
    """`sentinel board --person` prints a personal link; for a contact whose board_role is
    viewer, the board shows but every POST is refused with 403 forbidden."""
    result = await asyncio.to_thread(sentinel, "board", "--person", VIEWER, "-c",
                                     str(SHIPPED_CONFIG), env=daemon.env)
    assert result.returncode == 0, result.stderr
    assert "只读" in result.stdout, result.stdout
    found = re.search(r"http://\S+(/board/login/\S+)", result.stdout)
    assert found, result.stdout
    status, _, _ = await browser.get(found.group(1))
    assert status == 303
    csrf = await browser.csrf()
    status, text, r = await browser.post("/api/incidents/none/ack", json={},
                                         headers={CSRF_HEADER: csrf})
    assert status == 403 and (await r.json())["error"] == "forbidden", text
    status, text, _ = await browser.get("/api/incidents")
    assert status == 200, text


async def test_used_link_and_logout_stay_used_after_a_restart(
        daemon: DaemonProcess, browser: Browser) -> None:
    """A used one-time link, and a logged-out session, are refused after the daemon
    restarts (recorded in the state database)."""
    status, answer = await admin(daemon, {"name": "值班员", "viewer": True})
    assert status == 200 and answer["role"] == "viewer", answer
    path = answer["path"]
    status, _, _ = await browser.get(path)
    assert status == 303
    csrf = await browser.csrf()
    cookie = next(c.value for c in browser.http.cookie_jar if c.key == COOKIE)
    status, _, _ = await browser.post("/board/logout", data={"csrf": csrf})
    assert status == 303
    await asyncio.to_thread(daemon.stop)
    await asyncio.to_thread(daemon.start)
    browser.http.cookie_jar.clear()
    status, page, r = await browser.get(path)
    assert status == 403 and "Set-Cookie" not in r.headers and "登录链接无效" in page
    browser.http.cookie_jar.update_cookies({COOKIE: cookie})
    status, _, r = await browser.get("/board")
    assert status == 303 and r.headers["Location"] == "/board/login"

