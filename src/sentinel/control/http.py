"""The daemon's HTTP control API and the pages behind one-tap acknowledgement links.

Two doors to the same `Controller`:

* `/api/...`: JSON for the `sentinel` command and other tools, behind a bearer token.
* `/a/{token}`: a signed link sent in a notification; the link is its own credential, for
  one contact and one incident, until it expires, once.

Neither the bearer token nor a link token is ever logged or echoed: aiohttp's access log is
off (it would write link tokens, which sit in the path), and our own log lines name the
route pattern, never the path.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import html
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from sentinel.control.links import LinkClaims, LinkError, LinkSigner
from sentinel.i18n import Language, incident_title, t
from sentinel.incidents.model import Incident, Outcome, Status

_log = structlog.get_logger("sentinel.control")
_TZ = ZoneInfo("Asia/Shanghai")

MAX_BODY = 16 * 1024
MAX_ACTOR = 100
MAX_NOTE = 2000
# Outcomes a person may choose; the others are recorded by sentinel itself.
PERSON_OUTCOMES = (Outcome.HANDLED, Outcome.FALSE_ALARM, Outcome.REFERRED)


class Controller(Protocol):
    """What the control API drives; the daemon's escalation service implements it."""

    async def acknowledge(self, incident_id: str, actor: str, note: str | None) -> Incident:
        """Acknowledge an open incident; KeyError when there is no open incident by that id."""
        ...

    async def resolve(self, incident_id: str, actor: str, outcome: Outcome,
                      note: str | None) -> Incident:
        """Close an open incident with an outcome; KeyError like `acknowledge`."""
        ...

    async def get_incident(self, incident_id: str) -> Incident | None:
        """The incident by id, open or recently closed; None when unknown."""
        ...

    async def list_open(self) -> list[Incident]:
        """Every open incident."""
        ...

    async def claim_link(self, claims: LinkClaims, now: float) -> bool:
        """Record the link's nonce as used, durably; False when it was used before."""
        ...

    def contact(self, contact_id: str) -> tuple[str, Language] | None:
        """(name, language) of a contact; None when not (or no longer) on the roster."""
        ...

    async def audit(self, incident_id: str) -> list[dict[str, Any]]:
        """The incident's events and delivery attempts, ready for JSON."""
        ...


# -- JSON API ---------------------------------------------------------------------------

class _ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        self.status = status
        self.error = error
        self.message = message
        super().__init__(message)


_dumps = functools.partial(json.dumps, ensure_ascii=False, default=str)


def _json(data: Any, status: int = 200) -> web.Response:
    response = web.json_response(data, status=status, dumps=_dumps)
    response.headers["Cache-Control"] = "no-store"
    return response


def _api_error(exc: _ApiError) -> web.Response:
    response = _json({"error": exc.error, "message": exc.message}, exc.status)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="sentinel"'
    return response


async def _read_object(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _ApiError(413, "payload_too_large",
                        f"the request body is over {MAX_BODY} bytes") from None
    if not raw.strip():
        raise _ApiError(400, "bad_request", "a JSON object body is required")
    try:
        data = json.loads(raw)
    except ValueError:
        raise _ApiError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _ApiError(400, "bad_request", "the body must be a JSON object")
    return data


def _check_keys(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _ApiError(400, "bad_request", f"unknown field(s): {', '.join(unknown)} "
                                            f"(allowed: {', '.join(allowed)})")


def _has_control_chars(text: str, allow_newlines: bool) -> bool:
    allowed = "\n\t" if allow_newlines else ""
    return any((ord(c) < 32 and c not in allowed) or ord(c) == 127 for c in text)


def _actor(data: dict[str, Any]) -> str:
    actor = data.get("actor")
    if not isinstance(actor, str) or not actor.strip():
        raise _ApiError(400, "bad_request", "actor is required: who acts (a non-empty string)")
    actor = actor.strip()
    if len(actor) > MAX_ACTOR:
        raise _ApiError(400, "bad_request", f"actor is longer than {MAX_ACTOR} characters")
    if _has_control_chars(actor, allow_newlines=False):
        raise _ApiError(400, "bad_request", "actor contains control characters")
    return actor


def _note(data: dict[str, Any]) -> str | None:
    note = data.get("note")
    if note is None:
        return None
    if not isinstance(note, str):
        raise _ApiError(400, "bad_request", "note must be a string or null")
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise _ApiError(400, "bad_request", f"note is longer than {MAX_NOTE} characters")
    if _has_control_chars(note, allow_newlines=True):
        raise _ApiError(400, "bad_request", "note contains control characters")
    return note or None


def _outcome(data: dict[str, Any]) -> Outcome:
    choices = ", ".join(o.value for o in PERSON_OUTCOMES)
    value = data.get("outcome")
    if value is None:
        raise _ApiError(400, "bad_request", f"outcome is required to close an incident "
                                            f"(one of: {choices})")
    if not isinstance(value, str) or value not in {o.value for o in PERSON_OUTCOMES}:
        raise _ApiError(400, "bad_request", f"outcome must be one of: {choices}")
    return Outcome(value)


# -- link pages -------------------------------------------------------------------------

# Page text lives here rather than in sentinel.i18n: it is markup-adjacent and only the
# pages use it. Refusals are shown in both languages (we may not know whose link it is).
_REFUSALS: dict[str, tuple[int, str, str, str, str]] = {
    # reason: status, zh title, zh advice, en title, en advice
    "malformed": (403, "链接无效", "请使用通知中的完整链接, 或联系值班室。",
                  "This link is not valid",
                  "Open the complete link from the notification, or call the duty office."),
    "forged": (403, "链接无效", "请使用通知中的完整链接, 或联系值班室。",
               "This link is not valid",
               "Open the complete link from the notification, or call the duty office."),
    "expired": (410, "链接已过期", "请用 sentinel 命令或联系值班室确认。",
                "This link has expired",
                "Acknowledge with the sentinel command, or call the duty office."),
    "used": (410, "链接已使用过", "每个链接只能使用一次。",
             "This link has already been used", "Each link works once."),
    "unknown_contact": (403, "链接无效", "此链接的接收人已不在值班名单中。",
                        "This link is not valid",
                        "The person it was sent to is no longer on the roster."),
    "closed": (410, "事件已关闭", "此事件已经关闭, 无需确认。",
               "This incident is closed", "Nothing left to acknowledge."),
}

_TEXT: dict[str, dict[Language, str]] = {
    "greeting": {"zh": "{name}, 请确认接警", "en": "{name}, please acknowledge"},
    "severity": {"zh": "级别", "en": "Severity"},
    "place": {"zh": "地点", "en": "Place"},
    "opened": {"zh": "发生时间", "en": "Opened"},
    "device": {"zh": "设备", "en": "Device"},
    "incident": {"zh": "事件编号", "en": "Incident"},
    "drill": {"zh": "演练", "en": "Drill"},
    "button": {"zh": "确认接警", "en": "Acknowledge"},
    "hint": {"zh": "确认表示你已接手处理此事件, 值班同事会看到。",
             "en": "Acknowledging tells the team that you are taking this on."},
    "done": {"zh": "已确认", "en": "Acknowledged"},
    "done_by": {"zh": "确认人: {name}", "en": "Acknowledged by {name}"},
    "already": {"zh": "此事件已被确认", "en": "Already acknowledged"},
    "already_by": {"zh": "确认人: {by}, 时间: {when}", "en": "by {by} at {when}"},
    "you_did": {"zh": "你已于 {when} 确认此事件。", "en": "You acknowledged it at {when}."},
}

_STYLE = (
    "body{margin:0;font-family:system-ui,-apple-system,'PingFang SC','Microsoft YaHei',"
    "sans-serif;background:#f4f4f5;color:#18181b}"
    "main{max-width:32rem;margin:0 auto;padding:1.25rem}"
    "h1{font-size:1.5rem;margin:.5rem 0 1rem}h2{font-size:1.1rem;font-weight:normal}"
    ".card{background:#fff;border-radius:.75rem;padding:1rem 1.25rem;margin:1rem 0}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.4rem 1rem;margin:0}"
    "dt{color:#52525b}dd{margin:0;font-weight:600}"
    ".sev-critical,.sev-emergency{color:#b91c1c}.badge{background:#fde68a;padding:0 .4rem;"
    "border-radius:.3rem}"
    "button{display:block;width:100%;min-height:4.5rem;font-size:1.5rem;font-weight:700;"
    "border:0;border-radius:.75rem;background:#dc2626;color:#fff;margin:1.5rem 0 .75rem}"
    "button:disabled{background:#a1a1aa}"
    ".ok{color:#15803d}.no{color:#b91c1c}p{line-height:1.5}"
)
# One tap, one POST: the button greys out so a double tap does not post twice.
_SCRIPT = ('document.querySelector("form").addEventListener("submit",function(){'
           'var b=this.querySelector("button");setTimeout(function(){b.disabled=true},0)});')


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


_CSP = (f"default-src 'none'; style-src {_csp_hash(_STYLE)}; script-src {_csp_hash(_SCRIPT)}; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str, status: int, lang: str = "zh-CN",
          script: bool = False) -> web.Response:
    text = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main>{f'<script>{_SCRIPT}</script>' if script else ''}"
        "</body></html>"
    )
    response = web.Response(text=text, status=status, content_type="text/html",
                            charset="utf-8")
    response.headers.update({
        "Content-Security-Policy": _CSP,
        "Cache-Control": "no-store",
        # The link token is in the URL: never hand it to another site in a Referer.
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    })
    return response


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, _TZ).strftime("%Y-%m-%d %H:%M:%S")


def _place(inc: Incident) -> str:
    place = inc.place
    return place.get("location") or " ".join(
        v for v in (place.get("compound"), place.get("building")) if v) or "-"


def _refusal(reason: str, extra: str = "") -> web.Response:
    status, zh_title, zh_advice, en_title, en_advice = _REFUSALS[reason]
    body = (f'<h1 class="no">{_e(zh_title)}</h1><p>{_e(zh_advice)}</p>'
            f'<h1 class="no" lang="en">{_e(en_title)}</h1><p lang="en">{_e(en_advice)}</p>'
            f"{extra}")
    return _page(f"{zh_title} / {en_title}", body, status)


def _tx(key: str, lang: Language, **values: object) -> str:
    """Page text `key`, formatted with HTML-escaped `values`."""
    return _e(_TEXT[key][lang]).format(**{k: _e(v) for k, v in values.items()})


def _incident_card(inc: Incident, lang: Language) -> str:
    rows = [(_tx("severity", lang), f'<span class="sev-{_e(inc.severity.label)}">'
                                    f'{_e(t("severity." + inc.severity.label, lang))}</span>'),
            (_tx("place", lang), _e(_place(inc))),
            (_tx("opened", lang), _e(_when(inc.opened_at)))]
    if inc.device_id:
        rows.append((_tx("device", lang), _e(inc.device_id)))
    rows.append((_tx("incident", lang), _e(inc.id)))
    drill = f' <span class="badge">{_tx("drill", lang)}</span>' if inc.drill else ""
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return (f'<div class="card"><h1>{_e(incident_title(inc.name, lang))}{drill}</h1>'
            f"<dl>{items}</dl></div>")


def _html_lang(lang: Language) -> str:
    return "zh-CN" if lang == "zh" else "en"


def _confirm_page(inc: Incident, name: str, lang: Language) -> web.Response:
    body = (f"<h2>{_tx('greeting', lang, name=name)}</h2>{_incident_card(inc, lang)}"
            # No action attribute: the form posts back to this very URL, whatever prefix a
            # reverse proxy puts in front of it.
            f'<form method="post"><button type="submit">{_tx("button", lang)}</button></form>'
            f"<p>{_tx('hint', lang)}</p>")
    return _page(incident_title(inc.name, lang), body, 200, _html_lang(lang), script=True)


def _already_page(inc: Incident, lang: Language) -> web.Response:
    by = _tx("already_by", lang, by=inc.acknowledged_by or "-", when=_when(inc.acknowledged_at))
    body = (f'<h1 class="ok">{_tx("already", lang)}</h1><p>{by}</p>'
            f"{_incident_card(inc, lang)}")
    return _page(_TEXT["already"][lang], body, 200, _html_lang(lang))


def _done_page(inc: Incident, name: str, lang: Language) -> web.Response:
    body = (f'<h1 class="ok">✓ {_tx("done", lang)}</h1><p>{_tx("done_by", lang, name=name)}</p>'
            f"{_incident_card(inc, lang)}")
    return _page(_TEXT["done"][lang], body, 200, _html_lang(lang))


# -- the server -------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlServer:
    """The control API and link pages on (host, port); an async context manager.

    Port 0 picks a free port; `.port` and `.url` tell which after start.
    """

    def __init__(self, host: str, port: int, token: str, signer: LinkSigner,
                 controller: Controller, clock: Callable[[], float] = time.time) -> None:
        if not token:
            raise ValueError("the control token must not be empty")
        self.host = host
        self._port = port
        self._token = token.encode("utf-8")
        self._signer = signer
        self._controller = controller
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    def __repr__(self) -> str:
        return f"ControlServer(host={self.host!r}, port={self._port})"

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/api/incidents", self._list)
        app.router.add_get("/api/incidents/{id}", self._show)
        app.router.add_post("/api/incidents/{id}/ack", self._ack)
        app.router.add_post("/api/incidents/{id}/resolve", self._resolve)
        app.router.add_get("/a/{token}", self._link_get)
        app.router.add_post("/a/{token}", self._link_post)
        return app

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> ControlServer:
        if self._runner is not None:
            raise RuntimeError("ControlServer is already running")
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               shutdown_timeout=5.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        _log.info("control_listening", host=self.host, port=self._port)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Where a local client reaches the server (a wildcard host becomes loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self._port}" if ":" in host else f"http://{host}:{self._port}"

    # -- plumbing -------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The route pattern ("/a/{token}"), never the path: the path may hold a link token.
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "(unmatched)"
        started = time.monotonic()
        try:
            if route.startswith("/api/") and not self._authorized(request):
                _log.warning("control_unauthorized", route=route, remote=request.remote)
                raise _ApiError(401, "unauthorized",
                                "a valid 'Authorization: Bearer <token>' header is required")
            response = await handler(request)
        except _ApiError as exc:
            response = _api_error(exc)
        except web.HTTPException:
            raise
        except Exception:
            _log.exception("control_handler_failed", route=route, method=request.method)
            if route.startswith("/api/"):
                response = _api_error(_ApiError(500, "failed", "internal error; see the log"))
            else:
                response = _page("错误 / Error", "<h1>内部错误 / Internal error</h1>", 500)
        _log.debug("control_request", method=request.method, route=route,
                   status=response.status, ms=round((time.monotonic() - started) * 1000, 1))
        return response

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = value.strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._token)

    # -- API ------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _list(self, request: web.Request) -> web.Response:
        incidents = await self._controller.list_open()
        return _json({"incidents": [inc.to_json() for inc in incidents]})

    async def _show(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        inc = await self._controller.get_incident(incident_id)
        if inc is None:
            raise _ApiError(404, "not_found", f"no incident {incident_id}")
        audit = await self._controller.audit(incident_id)
        return _json({"incident": inc.to_json(), "audit": audit})

    async def _ack(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        data = await _read_object(request)
        _check_keys(data, ("actor", "note"))
        actor, note = _actor(data), _note(data)
        try:
            inc = await self._controller.acknowledge(incident_id, actor, note)
        except KeyError:
            raise _ApiError(404, "not_found", f"no open incident {incident_id}") from None
        _log.info("incident_acknowledged", incident_id=incident_id, actor=actor, via="api")
        return _json({"incident": inc.to_json()})

    async def _resolve(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        data = await _read_object(request)
        _check_keys(data, ("actor", "outcome", "note"))
        actor, outcome, note = _actor(data), _outcome(data), _note(data)
        try:
            inc = await self._controller.resolve(incident_id, actor, outcome, note)
        except KeyError:
            raise _ApiError(404, "not_found", f"no open incident {incident_id}") from None
        _log.info("incident_resolved", incident_id=incident_id, actor=actor,
                  outcome=outcome.value, via="api")
        return _json({"incident": inc.to_json()})

    # -- one-tap links --------------------------------------------------------------

    def _claims(self, request: web.Request) -> tuple[LinkClaims, str, Language] | web.Response:
        try:
            claims = self._signer.verify(request.match_info["token"], self._clock())
        except LinkError as exc:
            _log.info("link_refused", reason=exc.reason, method=request.method)
            return _refusal(exc.reason)
        who = self._controller.contact(claims.contact_id)
        if who is None:
            _log.info("link_refused", reason="unknown_contact", contact=claims.contact_id,
                      incident_id=claims.incident_id)
            return _refusal("unknown_contact")
        return claims, who[0], who[1]

    async def _link_get(self, request: web.Request) -> web.Response:
        # GET only shows the incident and a button; it never acknowledges. Chat apps (WeChat,
        # DingTalk), mail scanners and link previews fetch links before a person sees them:
        # if GET acknowledged, a prefetch would silently stop an escalation that nobody
        # has taken on. Only a POST, from a tap on the button, acknowledges.
        found = self._claims(request)
        if isinstance(found, web.Response):
            return found
        claims, name, lang = found
        inc = await self._controller.get_incident(claims.incident_id)
        if inc is None or not inc.open:
            return _refusal("closed")
        if inc.status == Status.ACKNOWLEDGED:
            return _already_page(inc, lang)
        return _confirm_page(inc, name, lang)

    async def _link_post(self, request: web.Request) -> web.Response:
        found = self._claims(request)
        if isinstance(found, web.Response):
            return found
        claims, name, lang = found
        actor = f"link:{claims.contact_id}"
        if not await self._controller.claim_link(claims, self._clock()):
            _log.info("link_refused", reason="used", contact=claims.contact_id,
                      incident_id=claims.incident_id)
            # A double tap or a reload lands here: say that it did work, if it did.
            inc = await self._controller.get_incident(claims.incident_id)
            extra = ""
            if inc is not None and inc.acknowledged_by == actor:
                when = _when(inc.acknowledged_at)
                extra = f'<p class="ok">{_tx("you_did", lang, when=when)}</p>'
            return _refusal("used", extra)
        inc = await self._controller.get_incident(claims.incident_id)
        if inc is None or not inc.open:
            return _refusal("closed")
        if inc.status == Status.ACKNOWLEDGED:
            return _already_page(inc, lang)
        try:
            inc = await self._controller.acknowledge(claims.incident_id, actor, "one-tap link")
        except KeyError:
            return _refusal("closed")
        if inc.acknowledged_by != actor:  # someone else was a moment faster
            return _already_page(inc, lang)
        _log.info("incident_acknowledged", incident_id=inc.id, actor=actor, via="link")
        return _done_page(inc, name, lang)
