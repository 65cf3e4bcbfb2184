"""The control API and the one-tap link pages, over real HTTP on loopback."""

from __future__ import annotations

import base64
import json
import re
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from sentinel.clock import FakeClock
from sentinel.config.model import LatencySettings
from sentinel.control.http import ControlServer
from sentinel.control.links import LinkClaims, LinkSigner
from sentinel.control.operations import UnknownPerson
from sentinel.i18n import Language
from sentinel.incidents import latency
from sentinel.incidents.model import Incident, Outcome, Status
from sentinel.incidents.photos import PhotoStore
from sentinel.reports import response
from sentinel.reports.response import By
from sentinel.types import Severity

TOKEN = "test-token-0123456789"
NOW = 1_700_000_000.0
SIGNER = LinkSigner(b"link-key-for-tests-0123456789", ttl=3600)
PLACE = {"community": "水贝社区", "compound": "水贝花园", "building": "1栋",
         "location": "水贝花园1栋3楼306室卧室", "kind": "smoke"}


def make_incident(incident_id: str, name: str = "smoke_alarm", **fields: Any) -> Incident:
    """An open, firing incident as the incident book would hold it."""
    values: dict[str, Any] = {"key": f"{name}:{incident_id}", "target": "SB-SMK-0001",
                              "kind": "smoke", "severity": Severity.CRITICAL,
                              "opened_at": NOW - 60, "place": dict(PLACE),
                              "device_id": "SB-SMK-0001", **fields}
    return Incident(id=incident_id, name=name, **values)


class FakeController:
    """The daemon's side of the control API, in memory (implements `Controller`)."""

    def __init__(self, incidents: Iterable[Incident] = (),
                 contacts: dict[str, tuple[str, Language]] | None = None) -> None:
        self.incidents = {inc.id: inc for inc in incidents}
        default: dict[str, tuple[str, Language]] = {"wang": ("王网格员", "zh"),
                                                    "lee": ("Lee", "en")}
        self.people = contacts if contacts is not None else default
        self.trail: dict[str, list[dict[str, Any]]] = {}
        # The real photo store, in a folder of its own (removed with the process's tmp).
        self.store = PhotoStore(Path(tempfile.mkdtemp(prefix="sentinel-photos-")))
        self.used: set[str] = set()
        self.calls: list[tuple[Any, ...]] = []
        self.now = NOW
        self.last_seq = 0  # the event log is the real daemon's (tests/test_operator_cli.py)

    def _open(self, incident_id: str) -> Incident:
        inc = self.incidents.get(incident_id)
        if inc is None or not inc.open:
            raise KeyError(incident_id)
        return inc

    async def acknowledge(self, incident_id: str, actor: str, note: str | None) -> Incident:
        inc = self._open(incident_id)
        self.calls.append(("acknowledge", incident_id, actor, note))
        if inc.status != Status.ACKNOWLEDGED:
            inc.status = Status.ACKNOWLEDGED
            inc.acknowledged_by = actor
            inc.acknowledged_at = self.now
        return inc

    async def resolve(self, incident_id: str, actor: str, outcome: Outcome,
                      note: str | None) -> Incident:
        inc = self._open(incident_id)
        self.calls.append(("resolve", incident_id, actor, outcome, note))
        inc.status = Status.RESOLVED
        inc.resolved_by = actor
        inc.resolved_at = self.now
        inc.outcome = outcome.value
        inc.note = note
        return inc

    async def get_incident(self, incident_id: str) -> Incident | None:
        return self.incidents.get(incident_id)

    def latency_limits(self) -> LatencySettings:
        return LatencySettings()

    async def latency_report(self, since: float) -> dict[str, Any]:
        return latency.report(self.incidents.values(), LatencySettings(), since, self.now)

    async def list_open(self) -> list[Incident]:
        return [inc for inc in self.incidents.values() if inc.open]

    async def claim_link(self, claims: LinkClaims, now: float) -> bool:
        self.calls.append(("claim_link", claims.nonce))
        if claims.nonce in self.used:
            return False
        self.used.add(claims.nonce)
        return True

    def contact(self, contact_id: str) -> tuple[str, Language] | None:
        return self.people.get(contact_id)

    def contacts(self) -> list[dict[str, Any]]:
        return [{"id": k, "name": v[0], "roles": ["grid_worker"], "grids": ["SB-G01"],
                 "compounds": []} for k, v in self.people.items()]

    def _record(self, incident_id: str, type_: str, actor: str, **data: Any) -> None:
        trail = self.trail.setdefault(incident_id, [])
        trail.append({"seq": len(trail) + 1, "type": type_, "ts": self.now, "actor": actor,
                      "severity": "critical", "status": "firing", "data": data})

    async def assign(self, incident_id: str, person: str, actor: str,
                     acknowledge: bool = False) -> Incident:
        if person not in self.people:
            raise UnknownPerson(person)
        inc = self._open(incident_id)
        self.calls.append(("assign", incident_id, person, actor, acknowledge))
        if acknowledge and inc.status != Status.ACKNOWLEDGED:
            await self.acknowledge(incident_id, actor, None)
        inc.assigned_to, inc.assigned_at = person, self.now
        self._record(incident_id, "assigned", actor, person=person, by=actor)
        return inc

    async def note(self, incident_id: str, actor: str, text: str,
                   photo: bytes | None = None) -> Incident:
        inc = self._open(incident_id)
        photo_id = self.store.save(photo) if photo is not None else None
        self.calls.append(("note", incident_id, actor, text, photo_id))
        if inc.first_note_at is None:
            inc.first_note_at = self.now
        self._record(incident_id, "noted", actor, text=text,
                     **({"photo": photo_id} if photo_id else {}))
        return inc

    async def events_of(self, incident_id: str) -> list[dict[str, Any]]:
        return list(self.trail.get(incident_id, []))

    async def photo(self, incident_id: str, photo_id: str) -> bytes | None:
        named = any(e["data"].get("photo") == photo_id for e in self.trail.get(incident_id, []))
        return self.store.read(photo_id) if named else None

    async def response_report(self, since: float, by: By) -> dict[str, Any]:
        return response.build(self.incidents.values(), [], {}, since, self.now, by)

    async def audit(self, incident_id: str) -> list[dict[str, Any]]:
        return [{"type": "opened", "ts": NOW - 60, "actor": "sentinel"}]

    def incident_json(self, incident: Incident) -> dict[str, Any]:
        return {**incident.to_json(), "silenced_by": None}


@dataclass
class Harness:
    server: ControlServer
    controller: FakeController
    clock: FakeClock
    http: aiohttp.ClientSession

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def link(self, incident_id: str = "A", contact_id: str = "wang") -> str:
        return f"{self.server.url}/a/{SIGNER.sign(incident_id, contact_id, self.clock.now())}"


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    """A ControlServer on a free loopback port with incidents A and B, and a client session."""
    controller = FakeController([make_incident("A"), make_incident("B", "gas_leak")])
    clock = FakeClock(NOW)  # the daemon's clock, moved by hand
    async with ControlServer("127.0.0.1", 0, TOKEN, SIGNER, controller, clock) as server, \
            aiohttp.ClientSession() as http:
        yield Harness(server, controller, clock, http)


async def call(h: Harness, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None, raw: bytes | None = None
               ) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = h.auth if headers is None else headers
    data = raw if raw is not None else (None if body is None else json.dumps(body))
    async with h.http.request(method, h.server.url + path, data=data, headers=headers) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else None, r


# -- API ------------------------------------------------------------------------------

async def test_healthz_needs_no_token(h: Harness) -> None:
    """/healthz answers without a token, and the server picked a real port."""
    assert h.server.port > 0
    status, body, _ = await call(h, "GET", "/healthz", headers={})
    assert (status, body) == (200, {"status": "ok"})


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer " + "x" * len(TOKEN)},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer " + "令" * 5},
    {"Authorization": f"Bearer {TOKEN}x"},
])
async def test_api_refuses_without_valid_token(h: Harness, headers: dict[str, str]) -> None:
    """Missing, wrong (even of the same length) or non-Bearer credentials get 401."""
    for method, path in (("GET", "/api/incidents"), ("POST", "/api/incidents/A/ack")):
        status, body, response = await call(h, method, path, {"actor": "x"}, headers=headers)
        assert status == 401 and body["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert h.controller.calls == []


async def test_list_and_show(h: Harness) -> None:
    """The list has the open incidents; one incident comes with its audit trail."""
    status, body, _ = await call(h, "GET", "/api/incidents")
    assert status == 200 and [i["id"] for i in body["incidents"]] == ["A", "B"]
    status, body, _ = await call(h, "GET", "/api/incidents/A")
    assert status == 200 and body["incident"]["name"] == "smoke_alarm"
    assert body["audit"][0]["type"] == "opened"
    status, body, _ = await call(h, "GET", "/api/incidents/nope")
    assert status == 404 and body["error"] == "not_found"


async def test_ack(h: Harness) -> None:
    """An acknowledgement reaches the controller with actor and note; the answer is the incident."""
    status, body, _ = await call(h, "POST", "/api/incidents/A/ack",
                                 {"actor": " 物业王 ", "note": "on my way"})
    assert status == 200
    assert body["incident"]["status"] == "acknowledged"
    assert body["incident"]["acknowledged_by"] == "物业王"
    assert h.controller.calls == [("acknowledge", "A", "物业王", "on my way")]


async def test_resolve(h: Harness) -> None:
    """Resolving records the outcome a person chose."""
    status, body, _ = await call(h, "POST", "/api/incidents/A/resolve",
                                 {"actor": "物业王", "outcome": "false_alarm", "note": None})
    assert status == 200 and body["incident"]["outcome"] == "false_alarm"
    assert h.controller.calls == [("resolve", "A", "物业王", Outcome.FALSE_ALARM, None)]
    status, body, _ = await call(h, "POST", "/api/incidents/A/ack", {"actor": "x"})
    assert status == 404, "a closed incident cannot be acknowledged"


async def test_resolve_requires_outcome(h: Harness) -> None:
    """Closing without an outcome, or with one only sentinel may record, is a 400."""
    status, body, _ = await call(h, "POST", "/api/incidents/A/resolve", {"actor": "物业王"})
    assert status == 400 and "outcome is required" in body["message"]
    assert "handled" in body["message"]
    status, body, _ = await call(h, "POST", "/api/incidents/A/resolve",
                                 {"actor": "物业王", "outcome": "cleared"})
    assert status == 400 and "outcome must be one of" in body["message"]
    assert h.controller.calls == []


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "JSON object body is required"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"{}", "actor is required"),
    (b'{"actor": "   "}', "actor is required"),
    (b'{"actor": 7}', "actor is required"),
    (json.dumps({"actor": "x" * 101}).encode(), "longer than 100"),
    (b'{"actor": "a\\u0000b"}', "control characters"),
    (b'{"actor": "a", "note": 5}', "note must be a string"),
    (b'{"actor": "a", "notes": "typo"}', "unknown field(s): notes"),
])
async def test_ack_bad_request(h: Harness, raw: bytes, message: str) -> None:
    """A bad body is a 400 that says what is wrong, and nothing reaches the controller."""
    status, body, _ = await call(h, "POST", "/api/incidents/A/ack", raw=raw)
    assert status == 400 and body["error"] == "bad_request"
    assert message in body["message"]
    assert h.controller.calls == []


async def test_body_size_is_limited(h: Harness) -> None:
    """A body over 16 KiB is refused with 413 before it is parsed."""
    raw = json.dumps({"actor": "x", "note": "y" * 20_000}).encode()
    status, body, _ = await call(h, "POST", "/api/incidents/A/ack", raw=raw)
    assert status == 413 and body["error"] == "payload_too_large"


async def test_unknown_incident_is_404(h: Harness) -> None:
    """Acknowledging or resolving an incident that is not open is a 404."""
    for action, body in (("ack", {"actor": "x"}),
                         ("resolve", {"actor": "x", "outcome": "handled"})):
        status, answer, _ = await call(h, "POST", f"/api/incidents/nope/{action}", body)
        assert status == 404 and "nope" in answer["message"]


# -- one-tap links ------------------------------------------------------------------

async def page(h: Harness, method: str, url: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with h.http.request(method, url) as response:
        return response.status, await response.text(), response


async def test_link_get_shows_confirmation_and_does_not_acknowledge(h: Harness) -> None:
    """GET shows the incident in the contact's language and a button; nothing is acknowledged."""
    status, text, response = await page(h, "GET", h.link("A", "wang"))
    assert status == 200 and response.content_type == "text/html"
    assert '<html lang="zh-CN">' in text and 'name="viewport"' in text
    assert "王网格员" in text and "烟感报警" in text and "水贝花园1栋3楼306室卧室" in text
    assert "2023-11-15 06:12:20" in text  # opened, Asia/Shanghai
    assert re.search(r'<form method="post"><input type="hidden" name="action" value="take">'
                     r'<button type="submit">我去处理</button>', text)
    assert re.search(r'value="ack"><button type="submit" class="second">确认接警</button>', text)
    assert text.count("<button") == 2
    assert h.controller.incidents["A"].status == Status.FIRING
    assert h.controller.calls == [], "a GET (prefetch) must neither claim nor acknowledge"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


async def test_link_page_in_english(h: Harness) -> None:
    """A contact who reads English gets the page in English."""
    status, text, _ = await page(h, "GET", h.link("A", "lee"))
    assert status == 200 and '<html lang="en">' in text
    assert "smoke alarm" in text and ">Acknowledge</button>" in text and "烟感报警" not in text


async def test_link_post_acknowledges_as_the_contact(h: Harness) -> None:
    """A plain POST claims the link and acknowledges under the contact's id, with a note."""
    status, text, _ = await page(h, "POST", h.link("A", "wang"))
    assert status == 200 and "✓ 已确认" in text and "确认人: 王网格员" in text
    assert "我去处理" in text, "acknowledged but nobody assigned: it can still be taken"
    inc = h.controller.incidents["A"]
    assert inc.status == Status.ACKNOWLEDGED and inc.acknowledged_by == "wang"
    assert ("acknowledge", "A", "wang", "one-tap link") in h.controller.calls
    assert h.controller.incidents["B"].status == Status.FIRING


async def test_link_post_in_english(h: Harness) -> None:
    """The confirmation after the tap is in the contact's language."""
    status, text, _ = await page(h, "POST", h.link("A", "lee"))
    assert status == 200 and "✓ Acknowledged" in text and "by Lee at" in text


async def test_reused_link_is_410(h: Harness) -> None:
    """A link works once; a second POST (double tap, reload, replay) is 410."""
    url = h.link("A", "wang")
    assert (await page(h, "POST", url))[0] == 200
    status, text, _ = await page(h, "POST", url)
    assert status == 410 and "已使用" in text and "already been used" in text
    assert "你已于" in text, "the person who tapped twice learns that it worked"
    assert [c for c in h.controller.calls if c[0] == "acknowledge"] == [
        ("acknowledge", "A", "wang", "one-tap link")]


async def test_expired_link_is_410(h: Harness) -> None:
    """After the ttl, GET and POST both answer 410 and nothing is acknowledged."""
    url = h.link("A", "wang")
    h.clock.advance(3600)
    for method in ("GET", "POST"):
        status, text, _ = await page(h, method, url)
        assert status == 410 and "链接已过期" in text and "expired" in text
    assert h.controller.calls == []


@pytest.mark.parametrize("suffix", ["x", "garbage", "abc.def"])
async def test_invalid_link_is_403(h: Harness, suffix: str) -> None:
    """A malformed or forged link gets 403 in both languages."""
    for method in ("GET", "POST"):
        status, text, _ = await page(h, method, f"{h.server.url}/a/{suffix}")
        assert status == 403 and "链接无效" in text and "not valid" in text
    assert h.controller.calls == []


async def test_link_for_a_cannot_acknowledge_b(h: Harness) -> None:
    """Rewriting a link's incident id breaks its signature: B stays firing."""
    payload, mac = SIGNER.sign("A", "wang", NOW).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["i"] = "B"
    forged_payload = base64.urlsafe_b64encode(
        json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    status, text, _ = await page(h, "POST", f"{h.server.url}/a/{forged_payload}.{mac}")
    assert status == 403 and "链接无效" in text
    assert h.controller.incidents["B"].status == Status.FIRING
    assert h.controller.calls == []


async def test_link_of_closed_incident_is_410(h: Harness) -> None:
    """A link to an incident closed meanwhile says so, on GET and POST."""
    await h.controller.resolve("A", "物业王", Outcome.HANDLED, None)
    for method in ("GET", "POST"):
        status, text, _ = await page(h, method, h.link("A", "wang"))
        assert status == 410 and "事件已关闭" in text and "closed" in text


async def test_link_of_acknowledged_incident_says_by_whom(h: Harness) -> None:
    """When someone else acknowledged first, the page says who, with 200, and changes nothing;
    only "我去处理" is offered (nobody is assigned yet)."""
    await h.controller.acknowledge("A", "board:物业王", None)
    status, text, _ = await page(h, "GET", h.link("A", "wang"))
    assert status == 200 and "此事件已被确认" in text and "物业王 (值班屏)" in text
    assert text.count("<button") == 1 and ">我去处理</button>" in text
    status, text, _ = await page(h, "POST", h.link("A", "lee"))
    assert status == 200 and "Already acknowledged" in text and "物业王 (board)" in text
    assert h.controller.incidents["A"].acknowledged_by == "board:物业王"


async def test_link_of_removed_contact_is_403(h: Harness) -> None:
    """A link of someone no longer on the roster is refused."""
    status, text, _ = await page(h, "POST", h.link("A", "gone"))
    assert status == 403 and "no longer on the roster" in text
    assert h.controller.incidents["A"].status == Status.FIRING


async def test_pages_escape_html(h: Harness) -> None:
    """Incident name, place, device and contact name are HTML-escaped on every page."""
    evil = "<script>alert(1)</script>"
    h.controller.incidents["X"] = make_incident(
        "X", name=evil, device_id='"><img src=x onerror=alert(2)>',
        place={"location": "<b onmouseover=alert(3)>1栋</b>"})
    h.controller.people["evil"] = ("<i>王</i>", "zh")
    for method in ("GET", "POST"):
        status, text, _ = await page(h, method, h.link("X", "evil"))
        assert status == 200
        assert "<script>alert" not in text and "<img" not in text and "<b " not in text
        assert "<i>" not in text and "&lt;i&gt;王&lt;/i&gt;" in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in text


async def test_tokens_never_logged(h: Harness) -> None:
    """Neither a link token nor the bearer token (right or wrong) reaches the log."""
    url = h.link("A", "wang")
    link_token = url.rsplit("/", 1)[1]
    with structlog.testing.capture_logs() as logs:
        await page(h, "GET", url)
        await page(h, "POST", url)
        await page(h, "POST", url)
        await page(h, "GET", f"{h.server.url}/a/{link_token}x")
        await call(h, "GET", "/api/incidents", headers={"Authorization": "Bearer guess-123"})
        await call(h, "POST", "/api/incidents/B/ack", {"actor": "x"})
    text = repr(logs)
    assert logs, "the requests were logged"
    for secret in (link_token, link_token.split(".")[1], TOKEN, "guess-123"):
        assert secret not in text


# -- the closed loop: assignment, notes, photos, contacts -----------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # the magic bytes are what the store checks


async def test_assign_and_note_through_the_api(h: Harness) -> None:
    """assign names a contact; a note carries text and a base64 photo; show has both events."""
    status, body, _ = await call(h, "POST", "/api/incidents/A/assign",
                                 {"person": "wang", "actor": "cli:root"})
    assert status == 200 and body["incident"]["assigned_to"] == "wang"
    status, body, _ = await call(h, "POST", "/api/incidents/A/note", {
        "text": "已到场, 厨房油烟", "actor": "wang",
        "photo": base64.b64encode(PNG).decode()})
    assert status == 200 and body["incident"]["first_note_at"] == NOW
    status, body, _ = await call(h, "GET", "/api/incidents/A")
    assert [e["type"] for e in body["events"]] == ["assigned", "noted"]
    assigned, noted = body["events"]
    assert assigned["data"] == {"person": "wang", "by": "cli:root"}
    assert set(assigned) == {"seq", "type", "ts", "actor", "severity", "status", "data"}
    photo = noted["data"]["photo"]
    assert noted["data"]["text"] == "已到场, 厨房油烟" and photo.endswith(".png")
    async with h.http.get(f"{h.server.url}/api/incidents/A/photo/{photo}",
                          headers=h.auth) as r:
        assert r.status == 200 and r.content_type == "image/png" and await r.read() == PNG
    async with h.http.get(f"{h.server.url}/api/incidents/A/photo/{photo}") as r:
        assert r.status == 401, "photos are behind the API's credential"
    status, _, _ = await call(h, "GET", f"/api/incidents/B/photo/{photo}")
    assert status == 404, "a photo is only served with the incident it belongs to"


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/api/incidents/A/assign", {"person": "nobody", "actor": "x"}, 400, "no contact"),
    ("/api/incidents/A/assign", {"actor": "x"}, 400, "person is required"),
    ("/api/incidents/nope/assign", {"person": "wang", "actor": "x"}, 404, "nope"),
    ("/api/incidents/A/note", {"actor": "x"}, 400, "needs text, a photo"),
    ("/api/incidents/A/note", {"actor": "x", "text": "t", "photo": "@@"}, 400, "base64"),
    ("/api/incidents/A/note", {"actor": "x", "photo": base64.b64encode(b"GIF00a").decode()},
     400, "not a JPEG"),
    ("/api/incidents/nope/note", {"actor": "x", "text": "t"}, 404, "nope"),
])
async def test_loop_bad_requests(h: Harness, path: str, body: dict[str, Any], status: int,
                                 message: str) -> None:
    """Unknown people and incidents, empty notes and non-images are refused, saying why."""
    got, answer, _ = await call(h, "POST", path, body)
    assert got == status and message in answer["message"]
    assert not [c for c in h.controller.calls if c[0] in ("assign", "note")]


async def test_contacts_for_the_assign_menu(h: Harness) -> None:
    """/api/contacts lists id, name, roles and areas, and never a phone number."""
    status, body, _ = await call(h, "GET", "/api/contacts")
    assert status == 200 and body["contacts"][0] == {
        "id": "wang", "name": "王网格员", "roles": ["grid_worker"], "grids": ["SB-G01"],
        "compounds": []}
    status, body, _ = await call(h, "GET", "/api/report/response?since=0&by=kind")
    assert status == 200 and body["by"] == "kind" and body["incidents"] == 2
    status, body, _ = await call(h, "GET", "/api/report/response?by=floor")
    assert status == 400 and "worker, grid, kind" in body["message"]


async def form(h: Harness, url: str, fields: dict[str, Any]) -> tuple[int, str]:
    data = aiohttp.FormData()
    for key, value in fields.items():
        if isinstance(value, bytes):
            data.add_field(key, value, filename="site.png", content_type="image/png")
        else:
            data.add_field(key, value)
    async with h.http.post(url, data=data) as response:
        return response.status, await response.text()


async def test_link_take_note_and_resolve(h: Harness) -> None:
    """我去处理 acknowledges and assigns to the link's contact; the page then offers a note
    with a photo and closing with an outcome, which are recorded under the contact id."""
    url = h.link("A", "wang")
    status, text = await form(h, url, {"action": "take"})
    assert status == 200 and "✓ 已确认, 由你处理" in text and "王网格员, 此事件由你处理" in text
    assert 'name="photo" accept="image/*"' in text and 'value="false_alarm"' in text
    inc = h.controller.incidents["A"]
    assert (inc.status, inc.acknowledged_by, inc.assigned_to) == (
        Status.ACKNOWLEDGED, "wang", "wang")
    once = re.search(r'name="once" value="([^"]+)"', text)
    assert once is not None
    fields = {"action": "note", "once": once[1], "text": "已到场, 无明火", "photo": PNG}
    for _ in range(2):  # a double tap: recorded once
        status, text = await form(h, url, fields)
        assert status == 200 and "✓ 反馈已记录" in text and "已到场, 无明火" in text
    notes = [c for c in h.controller.calls if c[0] == "note"]
    assert len(notes) == 1 and notes[0][2] == "wang" and notes[0][4].endswith(".png")
    status, text = await form(h, url, {"action": "resolve", "outcome": "false_alarm",
                                       "note": "厨房油烟"})
    assert status == 200 and "事件已关闭" in text and "关闭人: 王网格员" in text
    assert ("resolve", "A", "wang", Outcome.FALSE_ALARM, "厨房油烟") in h.controller.calls
    status, text, _ = await page(h, "GET", url)
    assert status == 200 and "事件已关闭" in text, "the closer can still read what happened"
    status, text, _ = await page(h, "GET", h.link("A", "lee"))
    assert status == 410


async def test_link_of_someone_elses_incident(h: Harness) -> None:
    """Taken by another: the page says who, offers nothing, and refuses notes and closing."""
    await h.controller.assign("A", "lee", "lee", acknowledge=True)
    url = h.link("A", "wang")
    status, text, _ = await page(h, "GET", url)
    assert status == 200 and "Lee 正在处理" in text and "<button" not in text
    status, text = await form(h, url, {"action": "take"})
    assert status == 200 and h.controller.incidents["A"].assigned_to == "lee"
    for fields in ({"action": "note", "once": "x1", "text": "t"},
                   {"action": "resolve", "outcome": "handled"}):
        status, text = await form(h, url, fields)
        assert status == 403 and "此事件不由你处理" in text
    assert h.controller.incidents["A"].open


async def test_link_page_in_english_offers_take(h: Harness) -> None:
    """The English page has the same two choices."""
    status, text, _ = await page(h, "GET", h.link("A", "lee"))
    assert status == 200 and ">I&#x27;ll handle it</button>" in text


async def test_a_member_alarms_link_names_its_fire_and_is_not_taken_from_its_handler(
        h: Harness) -> None:
    """The link of an alarm that is now part of a fire says so and how the fire stands;
    while someone handles the fire, 我去处理 on one of its alarms takes nothing."""
    fire = make_incident("F", "fire_confirmed", kind="group", device_id=None,
                         members=["A"], assigned_to="lee", assigned_at=NOW - 30,
                         status=Status.ACKNOWLEDGED, acknowledged_by="lee")
    h.controller.incidents["F"] = fire
    h.controller.incidents["A"].groups.append("F")
    url = h.link("A", "wang")
    status, text, _ = await page(h, "GET", url)
    assert status == 200 and "确认火情 #F" in text and "整起事件: 由 Lee 处理" in text
    status, text = await form(h, url, {"action": "take"})
    assert status == 200 and h.controller.incidents["A"].assigned_to is None
    assert not any(c[0] == "assign" for c in h.controller.calls)


async def test_api_refusals_in_the_callers_language(h: Harness) -> None:
    """The sentinel command says its language; a refusal comes back in it (tools that do
    not say get the API's English)."""
    for lang, expected in (("zh", "没有未关闭的事件 nope"), ("en", "no open incident nope"),
                           (None, "no open incident nope")):
        headers = {**h.auth, **({"Accept-Language": lang} if lang else {})}
        status, answer, _ = await call(h, "POST", "/api/incidents/nope/ack", {"actor": "x"},
                                       headers=headers)
        assert (status, answer["message"]) == (404, expected)
