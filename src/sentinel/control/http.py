"""The daemon's control server: the API, the board and the pages behind one-tap links.

Doors to the same `Controller`, each with its own credential:

* `/api/...` over the Unix socket: the `sentinel` command on the box; the socket's file
  permissions decide who may act.
* `/api/...` over HTTP: a bearer token (tools), or a board session cookie with a CSRF token
  for anything that changes state (sentinel.control.board).
* `/a/{token}`: a signed link sent in a notification; the link is its own credential, for
  one contact and one incident, until it expires, once.
* `/healthz`, `/readyz`, `/metrics`: open; they carry no secrets.

Neither the bearer token nor a link token is ever logged or echoed: aiohttp's access log is
off (it would write link tokens, which sit in the path), and our own log lines name the
route pattern, never the path.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hmac
import json
import math
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import structlog
from aiohttp import web

from sentinel.clock import Clock, SystemClock
from sentinel.config.model import LatencySettings
from sentinel.control import api_text, pages
from sentinel.control.feed import Filter, ReadingFeed
from sentinel.control.links import LinkClaims, LinkError, LinkSigner
from sentinel.control.operations import (
    HistoryUnavailable,
    UnknownPerson,
    WindowRefused,
    WindowType,
)
from sentinel.control.requests import (
    MAX_BODY,
    SESSION_ACTOR,
    ApiError,
    actor_of,
    check_keys,
    error_response,
    int_query,
    json_response,
    note_of,
    outcome_of,
    read_object,
    window_request,
    window_type,
)
from sentinel.control.stream import start_after, stream
from sentinel.errors import ConfigError, Problem
from sentinel.i18n import Language
from sentinel.incidents import latency, photos
from sentinel.incidents.model import Incident, Outcome, Status
from sentinel.incidents.photos import PhotoRefused
from sentinel.incidents.windows import Window
from sentinel.notify.channels import channel_label
from sentinel.reports.response import BY, By

_log = structlog.get_logger("sentinel.control")
# Unix socket paths are limited to 108 bytes with the terminating NUL (sockaddr_un).
_MAX_SOCKET_PATH = 107
# A note may carry one photo: its request may be that large (base64 in JSON: 4/3 of it).
_PHOTO_BODY = photos.MAX_PHOTO_BYTES * 4 // 3 + 64 * 1024
# At most this many photos per incident: a link is a credential until it expires, and
# whoever holds it must not be able to fill the state disk.
_MAX_PHOTOS = 20


class Controller(Protocol):
    """What the control API drives (sentinel.control.operations.Operations)."""

    async def acknowledge(self, incident_id: str, actor: str, note: str | None) -> Incident:
        """Acknowledge an open incident; KeyError when there is no open incident by that id."""
        ...

    async def resolve(self, incident_id: str, actor: str, outcome: Outcome,
                      note: str | None) -> Incident:
        """Close an open incident with an outcome; KeyError like `acknowledge`."""
        ...

    async def assign(self, incident_id: str, person: str, actor: str,
                     acknowledge: bool = False) -> Incident:
        """Assign an open incident (a group: its open members too) to a contact; with
        `acknowledge` also acknowledge it if nobody has. KeyError: no such open incident;
        UnknownPerson: no such contact."""
        ...

    async def note(self, incident_id: str, actor: str, text: str,
                   photo: bytes | None = None) -> Incident:
        """Add a note with an optional photo; KeyError like `assign`, PhotoRefused."""
        ...

    async def events_of(self, incident_id: str) -> list[dict[str, Any]]:
        """The incident's own audit trail, oldest first: {seq, type, ts, actor, severity,
        status, data}."""
        ...

    async def photo(self, incident_id: str, photo_id: str) -> bytes | None:
        """A photo of one of the incident's notes; None when it has no such photo."""
        ...

    def contacts(self) -> list[dict[str, Any]]:
        """The on-call file's people: id, name, roles, grids, compounds (no phones)."""
        ...

    async def response_report(self, since: float, by: By) -> dict[str, Any]:
        """The closed loop's report (sentinel.reports.response) since `since`."""
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

    async def list_recent(self, limit: int) -> list[Incident]:
        """Open and closed incidents, newest first."""
        ...

    def latency_limits(self) -> LatencySettings:
        """The GB 50440 limits the per-alert record is checked against."""
        ...

    async def latency_report(self, since: float) -> dict[str, Any]:
        """Stage-time percentiles and limits kept, for incidents opened since `since`."""
        ...

    @property
    def last_seq(self) -> int:
        """The newest committed event's number."""
        ...

    readings: ReadingFeed

    async def events_after(self, seq: int, limit: int = 500, wait: float | None = None
                           ) -> list[dict[str, Any]]:
        """Committed events after `seq`, oldest first, ready for JSON."""
        ...

    async def status(self) -> dict[str, Any]:
        """Fleet health (see sentinel.control.fleet) with broker, store and outbox."""
        ...

    async def history(self, device_id: str, since: float, limit: int) -> list[dict[str, Any]]:
        """Readings of one device since a time; HistoryUnavailable when the store can't."""
        ...

    async def deadletters(self, limit: int, reason: str | None) -> list[dict[str, Any]]:
        """Newest rejected messages first."""
        ...

    def known_device(self, device_id: str) -> bool:
        ...

    def windows(self, type_: WindowType) -> list[dict[str, Any]]:
        """Active and future silence or drill windows."""
        ...

    async def add_window(self, window: Window) -> dict[str, Any]:
        ...

    async def remove_window(self, type_: WindowType, window_id: int, author: str) -> bool:
        ...

    def incident_json(self, incident: Incident) -> dict[str, Any]:
        """An incident for answers, with the silence muting it now (`silenced_by`)."""
        ...


class Observer(Protocol):
    """Metrics and readiness of the running daemon."""

    def render(self) -> tuple[bytes, str]:
        """The Prometheus exposition: (body, content type)."""
        ...

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """(ready, checks), each check {"ok": bool, "detail": str}."""
        ...


class Sessions(Protocol):
    """Signed browser sessions of the board (sentinel.control.sessions)."""

    def session_actor(self, request: web.Request) -> str | None: ...

    def session_role(self, request: web.Request) -> str | None: ...

    def csrf_ok(self, request: web.Request) -> bool: ...

    def login_path(self, name: str) -> str: ...

    async def issue_link(self, data: dict[str, Any], local_url: str) -> dict[str, Any]: ...


# -- the server -------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_unix(request: web.Request) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by a daemon that died; refuse if a live one answers on it."""
    if path.exists() or path.is_symlink():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()
            else:
                raise ConfigError([Problem(str(path), "control.socket",
                                           "another sentinel daemon is listening on this "
                                           "socket; stop it, or give this one its own "
                                           "state_dir")])
    path.parent.mkdir(parents=True, exist_ok=True)


class ControlServer:
    """The control API, the board and the link pages; an async context manager.

    Listens on a Unix socket (`socket_path`; commands on the box, whose file permissions
    decide who may act) and on HTTP (host, port; token, board session or signed link).
    Port 0 picks a free port; `.port` and `.url` tell which after start.
    """

    def __init__(self, host: str | None, port: int, token: str, signer: LinkSigner,
                 controller: Controller, clock: Clock | None = None, *,
                 socket_path: Path | None = None, sessions: Sessions | None = None,
                 routes: Callable[[web.Application], None] | None = None) -> None:
        if not token:
            raise ValueError("the control token must not be empty")
        if host is None and socket_path is None:
            raise ValueError("the control server needs HTTP, a Unix socket, or both")
        if socket_path is not None and len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
            raise ConfigError([Problem("", "control.socket",
                                       f"{socket_path} is longer than {_MAX_SOCKET_PATH} "
                                       "bytes, too long for a Unix socket; set a shorter "
                                       "control.socket")])
        self.host = host
        self._port = port
        self.socket_path = socket_path
        self._token = token.encode("utf-8")
        self._signer = signer
        self._controller = controller
        # The daemon's clock (it slews into NTP steps): a link's or session's expiry is
        # judged by the same time that stamped the incident and the link.
        self._clock = clock if clock is not None else SystemClock()
        self._sessions = sessions
        self._observer: Observer | None = None
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.app = self._build_app(routes)

    def __repr__(self) -> str:
        return f"ControlServer(host={self.host!r}, port={self._port}, socket={self.socket_path})"

    def observe(self, observer: Observer) -> None:
        """Serve /metrics and /readyz from `observer` (the daemon attaches it once running)."""
        self._observer = observer

    def _build_app(self, routes: Callable[[web.Application], None] | None) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        add = app.router
        add.add_get("/healthz", self._healthz)
        add.add_get("/readyz", self._readyz)
        add.add_get("/metrics", self._metrics)
        add.add_get("/api/incidents", self._list)
        add.add_get("/api/incidents/{id}", self._show)
        add.add_post("/api/incidents/{id}/ack", self._ack)
        add.add_post("/api/incidents/{id}/resolve", self._resolve)
        add.add_post("/api/incidents/{id}/assign", self._assign)
        add.add_post("/api/incidents/{id}/note", self._note)
        add.add_get("/api/incidents/{id}/photo/{photo}", self._photo)
        add.add_get("/api/contacts", self._contacts)
        add.add_get("/api/report/response", self._response_report)
        add.add_get("/api/events", self._events)
        add.add_get("/api/stream", self._stream)
        add.add_get("/api/status", self._status)
        add.add_get("/api/history/{device}", self._history)
        add.add_get("/api/deadletters", self._deadletters)
        add.add_get("/api/report/latency", self._latency_report)
        add.add_get("/api/windows/{type}", self._windows)
        add.add_post("/api/windows/{type}", self._add_window)
        add.add_post("/api/windows/{type}/{id}/remove", self._remove_window)
        add.add_post("/api/board/login-link", self._board_login_link)
        add.add_get("/a/{token}", self._link_get)
        add.add_post("/a/{token}", self._link_post)
        if routes is not None:
            routes(app)
        return app

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> ControlServer:
        if self._runner is not None:
            raise RuntimeError("ControlServer is already running")
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               shutdown_timeout=5.0)
        await runner.setup()
        try:
            if self.socket_path is not None:
                await self._listen_unix(runner, self.socket_path)
            if self.host is not None:
                site = web.TCPSite(runner, self.host, self._port)
                await site.start()
                self._port = int(next(a for a in runner.addresses if isinstance(a, tuple))[1])
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        _log.info("control_listening", host=self.host, port=self._port,
                  socket=str(self.socket_path) if self.socket_path else None)
        return self

    async def _listen_unix(self, runner: web.AppRunner, path: Path) -> None:
        _clear_stale_socket(path)
        site = web.UnixSite(runner, str(path))
        # Created without group/other access, then opened to the group: the socket's mode
        # is the access control of the commands that use it.
        previous = os.umask(0o077)
        try:
            await site.start()
        finally:
            os.umask(previous)
        os.chmod(path, 0o660)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        runner, self._runner = self._runner, None
        self._closing = True
        if runner is not None:
            await runner.cleanup()
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Where a local client reaches the HTTP server (a wildcard host becomes loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            self.host or "", self.host or "127.0.0.1")
        return f"http://[{host}]:{self._port}" if ":" in host else f"http://{host}:{self._port}"

    def login_link(self, name: str) -> str:
        """A one-time board login URL for `name` on this server's HTTP address."""
        if self._sessions is None or self.host is None:
            raise RuntimeError("the board needs HTTP and sessions")
        return self.url + self._sessions.login_path(name)

    # -- plumbing -------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The route pattern ("/a/{token}"), never the path: the path may hold a link token.
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "(unmatched)"
        started = self._clock.monotonic()
        try:
            if route.startswith("/api/"):
                self._authorize(request, route)
            response = await handler(request)
        except ApiError as exc:
            # In the caller's language when it says which (the sentinel command does).
            lang = api_text.request_language(request.headers.get("Accept-Language"))
            response = error_response(ApiError(exc.status, exc.error,
                                               api_text.localize(exc.message, lang)))
        except web.HTTPException:
            raise
        except Exception:
            _log.exception("control_handler_failed", route=route, method=request.method)
            if route.startswith("/api/"):
                response = error_response(ApiError(500, "failed", "internal error; see the log"))
            else:
                response = pages.page("错误 / Error", "<h1>内部错误 / Internal error</h1>", 500)
        _log.debug("control_request", method=request.method, route=route,
                   status=response.status, ms=round((self._clock.monotonic() - started) * 1000, 1))
        return response

    def _authorize(self, request: web.Request, route: str) -> None:
        if _is_unix(request) or self._bearer_ok(request):
            return
        actor = self._sessions.session_actor(request) if self._sessions is not None else None
        if actor is not None:
            if request.method not in ("GET", "HEAD") and \
                    (self._sessions is None or not self._sessions.csrf_ok(request)):
                _log.warning("control_csrf_refused", route=route, remote=request.remote)
                raise ApiError(403, "forbidden", "missing or wrong X-CSRF-Token; reload "
                                                  "the board")
            if request.method not in ("GET", "HEAD") and self._sessions is not None and \
                    self._sessions.session_role(request) == "viewer":
                raise ApiError(403, "forbidden", "a view-only board login cannot act")
            request[SESSION_ACTOR] = actor
            return
        _log.warning("control_unauthorized", route=route, remote=request.remote)
        raise ApiError(401, "unauthorized",
                        "a valid 'Authorization: Bearer <token>' header is required")

    def _bearer_ok(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = value.strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._token)

    # -- health ---------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._observer is None:
            return json_response({"ready": False, "checks": {"daemon": {
                "ok": False, "detail": "starting"}}}, 503)
        ready, checks = self._observer.readiness()
        return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._observer is None:
            return web.Response(status=503, text="starting\n")
        body, content_type = self._observer.render()
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- incidents ------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        # The event number is read with the list, with no await between: a follower that
        # streams from it sees every change after this list, and nothing twice.
        seq = self._controller.last_seq
        if request.query.get("all") in ("1", "true"):
            limit = int_query(request, "limit", 200, 1, 10_000)
            incidents = await self._controller.list_recent(limit)
        else:
            incidents = await self._controller.list_open()
        return json_response({"seq": seq, "incidents": [
            self._controller.incident_json(inc) for inc in incidents]})

    async def _show(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        inc = await self._controller.get_incident(incident_id)
        if inc is None:
            raise ApiError(404, "not_found", f"no incident {incident_id}")
        audit = await self._controller.audit(incident_id)
        events = await self._controller.events_of(incident_id)
        record = latency.summary_line(inc.timing, self._controller.latency_limits())
        return json_response({"incident": self._controller.incident_json(inc),
                              "audit": audit, "latency": record, "events": events})

    async def _ack(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        data = await read_object(request)
        check_keys(data, ("actor", "note"))
        actor, note = actor_of(request, data), note_of(data)
        try:
            inc = await self._controller.acknowledge(incident_id, actor, note)
        except KeyError:
            raise ApiError(404, "not_found", f"no open incident {incident_id}") from None
        _log.info("incident_acknowledged", incident_id=incident_id, actor=actor, via="api")
        return json_response({"incident": inc.to_json()})

    async def _resolve(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        data = await read_object(request)
        check_keys(data, ("actor", "outcome", "note"))
        actor, outcome, note = actor_of(request, data), outcome_of(data), note_of(data)
        try:
            inc = await self._controller.resolve(incident_id, actor, outcome, note)
        except KeyError:
            raise ApiError(404, "not_found", f"no open incident {incident_id}") from None
        _log.info("incident_resolved", incident_id=incident_id, actor=actor,
                  outcome=outcome.value, via="api")
        return json_response({"incident": inc.to_json()})

    async def _assign(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        data = await read_object(request)
        check_keys(data, ("actor", "person"))
        actor = actor_of(request, data)
        person = data.get("person")
        if not isinstance(person, str) or not person.strip():
            raise ApiError(400, "bad_request", "person is required: a contact id of the "
                                                "on-call file (GET /api/contacts)")
        try:
            inc = await self._controller.assign(incident_id, person.strip(), actor)
        except UnknownPerson:
            raise ApiError(400, "bad_request", f"no contact {person!r} in the on-call "
                                                "file (GET /api/contacts)") from None
        except KeyError:
            raise ApiError(404, "not_found", f"no open incident {incident_id}") from None
        _log.info("incident_assigned", incident_id=incident_id, person=person, actor=actor,
                  via="api")
        return json_response({"incident": inc.to_json()})

    async def _note(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        try:
            raw = await request.clone(client_max_size=_PHOTO_BODY).read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "payload_too_large", "a note with its photo is at most "
                                                      f"{_PHOTO_BODY} bytes") from None
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            raise ApiError(400, "bad_request", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        check_keys(data, ("actor", "text", "photo"))
        actor = actor_of(request, data)
        text = note_of({"note": data.get("text")}) or ""
        photo = None
        if data.get("photo") is not None:
            if not isinstance(data["photo"], str):
                raise ApiError(400, "bad_request", "photo is the image's bytes in base64")
            try:
                photo = base64.b64decode(data["photo"], validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "bad_request", "photo is not valid base64") from None
        if not text and not photo:
            raise ApiError(400, "bad_request", "a note needs text, a photo, or both")
        inc = await self._add_note(incident_id, actor, text, photo)
        _log.info("incident_noted", incident_id=incident_id, actor=actor,
                  photo=photo is not None, via="api")
        return json_response({"incident": inc.to_json()})

    async def _add_note(self, incident_id: str, actor: str, text: str,
                        photo: bytes | None) -> Incident:
        if photo:
            events = await self._controller.events_of(incident_id)
            if sum(1 for e in events if e["type"] == "noted" and e["data"].get("photo")) \
                    >= _MAX_PHOTOS:
                raise ApiError(409, "unavailable", f"this incident has {_MAX_PHOTOS} photos "
                                                    "already")
        try:
            return await self._controller.note(incident_id, actor, text, photo)
        except PhotoRefused as exc:
            raise ApiError(400, "bad_request", f"photo: {exc}") from None
        except KeyError:
            raise ApiError(404, "not_found", f"no open incident {incident_id}") from None

    async def _photo(self, request: web.Request) -> web.Response:
        incident_id, photo_id = request.match_info["id"], request.match_info["photo"]
        data = None
        if photos.valid_id(photo_id):
            data = await self._controller.photo(incident_id, photo_id)
        if data is None:
            raise ApiError(404, "not_found", f"no photo {photo_id} of incident {incident_id}")
        response = web.Response(body=data, content_type=photos.content_type(photo_id))
        # Private: never kept by a shared cache; the type is ours, never sniffed.
        response.headers.update({"Cache-Control": "private, max-age=3600",
                                 "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "default-src 'none'"})
        return response

    async def _contacts(self, request: web.Request) -> web.Response:
        return json_response({"contacts": self._controller.contacts()})

    async def _response_report(self, request: web.Request) -> web.Response:
        since = _since(request)
        by = request.query.get("by", "worker")
        if by not in BY:
            raise ApiError(400, "bad_request", f"by is one of: {', '.join(BY)}")
        chosen: By = "grid" if by == "grid" else "kind" if by == "kind" else "worker"
        return json_response(await self._controller.response_report(since, chosen))

    # -- the event stream -----------------------------------------------------------

    async def _events(self, request: web.Request) -> web.Response:
        limit = int_query(request, "limit", 500, 1, 5000)
        last = int_query(request, "last", 0, 0, 5000)
        if last:
            after = max(0, self._controller.last_seq - last)
        else:
            after = int_query(request, "after", 0, 0, 2**62)
        events = await self._controller.events_after(after, limit)
        return json_response({"seq": self._controller.last_seq, "events": events})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        try:
            filter_ = Filter.from_query(request.query)
            start_after(request, 0)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        readings = request.query.get("readings") in ("1", "true")
        return await stream(request, self._controller, filter_, readings,
                            lambda: self._closing)

    # -- fleet, stores, windows ------------------------------------------------------

    async def _status(self, request: web.Request) -> web.Response:
        return json_response(await self._controller.status())

    async def _history(self, request: web.Request) -> web.Response:
        device = request.match_info["device"]
        if not self._controller.known_device(device):
            raise ApiError(404, "not_found", f"no device {device} in the inventory")
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            raise ApiError(400, "bad_request", "since must be epoch seconds") from None
        limit = int_query(request, "limit", 1000, 1, 100_000)
        try:
            readings = await self._controller.history(device, since, limit)
        except HistoryUnavailable as exc:
            raise ApiError(409, "unavailable", str(exc)) from None
        return json_response({"device": device, "readings": readings})

    async def _deadletters(self, request: web.Request) -> web.Response:
        limit = int_query(request, "limit", 50, 1, 10_000)
        reason = request.query.get("reason") or None
        return json_response({"deadletters": await self._controller.deadletters(limit, reason)})

    async def _latency_report(self, request: web.Request) -> web.Response:
        since = _since(request)
        return json_response(await self._controller.latency_report(since))

    async def _windows(self, request: web.Request) -> web.Response:
        return json_response({"windows": self._controller.windows(window_type(request))})

    async def _add_window(self, request: web.Request) -> web.Response:
        type_ = window_type(request)
        data = await read_object(request)
        author = actor_of(request, {"actor": data.get("author") or data.get("actor")})
        try:
            window = await self._controller.add_window(window_request(type_, data, author))
        except WindowRefused as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        return json_response({"window": window}, 201)

    async def _board_login_link(self, request: web.Request) -> web.Response:
        if request.get(SESSION_ACTOR) is not None:
            raise ApiError(403, "forbidden", "a board session cannot issue login links")
        if self._sessions is None or self.host is None:
            raise ApiError(409, "unavailable", "the board needs [control] http = true")
        # Shared, view-only or personal (printed or sent): sentinel.control.sessions.
        answer = await self._sessions.issue_link(await read_object(request), self.url)
        if answer.get("channel"):
            # The channel's type in words, never its address (which may hold a secret).
            lang = api_text.request_language(request.headers.get("Accept-Language")) or "zh"
            answer["channel"] = channel_label(str(answer["channel"]), lang)
        return json_response(answer)

    async def _remove_window(self, request: web.Request) -> web.Response:
        type_ = window_type(request)
        try:
            window_id = int(request.match_info["id"])
        except ValueError:
            raise ApiError(404, "not_found", "window ids are numbers") from None
        data = await read_object(request)
        check_keys(data, ("author", "actor"))
        author = actor_of(request, {"actor": data.get("author") or data.get("actor")})
        if not await self._controller.remove_window(type_, window_id, author):
            raise ApiError(404, "not_found", f"no active {type_} #{window_id}")
        return json_response({"removed": window_id})

    # -- one-tap links --------------------------------------------------------------

    def _claims(self, request: web.Request) -> tuple[LinkClaims, str, Language] | web.Response:
        try:
            claims = self._signer.verify(request.match_info["token"], self._clock.now())
        except LinkError as exc:
            _log.info("link_refused", reason=exc.reason, method=request.method)
            return pages.refusal(exc.reason)
        who = self._controller.contact(claims.contact_id)
        if who is None:
            _log.info("link_refused", reason="unknown_contact", contact=claims.contact_id,
                      incident_id=claims.incident_id)
            return pages.refusal("unknown_contact")
        return claims, who[0], who[1]

    async def _link_view(self, claims: LinkClaims, name: str, lang: Language,
                         inc: Incident, done: str | None = None) -> pages.LinkView:
        events = await self._controller.events_of(inc.id)
        notes = [{"ts": e["ts"], "actor": e["actor"], **e["data"]} for e in events
                 if e["type"] == "noted"]
        people = {c["id"]: c["name"] for c in self._controller.contacts()}
        return pages.LinkView(inc, claims.contact_id, name, lang, people, notes, done,
                              await self._open_group(inc))

    async def _open_group(self, inc: Incident) -> Incident | None:
        """The open group (confirmed fire) an alarm belongs to: what acting on it acts on."""
        for group_id in [*inc.groups, *([inc.attached_to] if inc.attached_to else [])]:
            group = await self._controller.get_incident(group_id)
            if group is not None and group.open:
                return group
        return None

    async def _link_get(self, request: web.Request) -> web.Response:
        # GET only shows the incident and buttons; it never acts. Chat apps (WeChat,
        # DingTalk), mail scanners and link previews fetch links before a person sees them:
        # if GET acknowledged, a prefetch would silently stop an escalation that nobody
        # has taken on. Only a POST, from a tap on a button, acts.
        found = self._claims(request)
        if isinstance(found, web.Response):
            return found
        claims, name, lang = found
        inc = await self._controller.get_incident(claims.incident_id)
        if inc is None or (not inc.open and inc.resolved_by != claims.contact_id):
            return pages.refusal("closed")
        return pages.link_page(await self._link_view(claims, name, lang, inc))

    async def _link_post(self, request: web.Request) -> web.Response:
        # The link acts as its contact (their contact id is the actor): "ack" once per
        # link; "take" (ack + assign to the contact) once per link; "note" and "resolve"
        # while the incident is assigned to the contact, each form once.
        found = self._claims(request)
        if isinstance(found, web.Response):
            return found
        claims, name, lang = found
        try:
            form = await request.clone(client_max_size=_PHOTO_BODY).post()
        except web.HTTPRequestEntityTooLarge:
            return pages.refusal("bad_form")
        action = form.get("action") or "ack"
        if action == "ack":
            return await self._link_ack(claims, name, lang)
        inc = await self._controller.get_incident(claims.incident_id)
        if inc is None:
            return pages.refusal("closed")
        if not inc.open:
            if inc.resolved_by == claims.contact_id:  # a double tap on "close"
                return pages.link_page(await self._link_view(claims, name, lang, inc))
            return pages.refusal("closed")
        contact = claims.contact_id
        if action == "take":
            taken = dataclasses.replace(claims, nonce=f"{claims.nonce}:take")
            # An alarm of a fire is taken with its fire, unless someone handles the fire.
            group = await self._open_group(inc)
            free = inc.assigned_to is None and (group is None or group.assigned_to is None)
            if free and await self._controller.claim_link(taken, self._clock.now()):
                try:
                    inc = await self._controller.assign(inc.id, contact, contact,
                                                        acknowledge=True)
                except (KeyError, UnknownPerson):
                    return pages.refusal("closed")
                _log.info("incident_taken", incident_id=inc.id, actor=contact, via="link")
                return pages.link_page(await self._link_view(claims, name, lang, inc,
                                                             "taken"))
            return pages.link_page(await self._link_view(claims, name, lang, inc))
        if action not in ("note", "resolve"):
            return pages.refusal("bad_form")
        if inc.assigned_to != contact:
            return pages.refusal("not_assigned")
        if action == "resolve":
            outcome = form.get("outcome")
            if not isinstance(outcome, str) or outcome not in pages.OUTCOMES:
                return pages.refusal("bad_form")
            try:
                note = note_of({"note": form.get("note")})
                inc = await self._controller.resolve(inc.id, contact, Outcome(outcome), note)
            except ApiError:
                return pages.refusal("bad_form")
            except KeyError:
                return pages.refusal("closed")
            _log.info("incident_resolved", incident_id=inc.id, actor=contact,
                      outcome=outcome, via="link")
            return pages.link_page(await self._link_view(claims, name, lang, inc))
        once, photo_field = form.get("once"), form.get("photo")
        if not isinstance(once, str) or not 0 < len(once) <= 64:
            return pages.refusal("bad_form")
        photo = None
        if isinstance(photo_field, web.FileField):
            photo = photo_field.file.read(_PHOTO_BODY) or None
        try:
            text = note_of({"note": form.get("text")}) or ""
        except ApiError:
            return pages.refusal("bad_form")
        if not text and not photo:
            return pages.link_page(await self._link_view(claims, name, lang, inc))
        once_claims = dataclasses.replace(claims, nonce=f"{claims.nonce}:note:{once}")
        if not await self._controller.claim_link(once_claims, self._clock.now()):
            # The same form twice (a double tap, a reload): recorded once.
            return pages.link_page(await self._link_view(claims, name, lang, inc, "noted"))
        try:
            inc = await self._add_note(inc.id, contact, text, photo)
        except ApiError:
            return pages.refusal("bad_form")
        _log.info("incident_noted", incident_id=inc.id, actor=contact,
                  photo=photo is not None, via="link")
        return pages.link_page(await self._link_view(claims, name, lang, inc, "noted"))

    async def _link_ack(self, claims: LinkClaims, name: str, lang: Language
                        ) -> web.Response:
        actor = claims.contact_id
        if not await self._controller.claim_link(claims, self._clock.now()):
            _log.info("link_refused", reason="used", contact=claims.contact_id,
                      incident_id=claims.incident_id)
            # A double tap or a reload lands here: say that it did work, if it did.
            inc = await self._controller.get_incident(claims.incident_id)
            extra = ""
            if inc is not None and inc.acknowledged_by == actor:
                when = pages.when(inc.acknowledged_at)
                extra = f'<p class="ok">{pages.tx("you_did", lang, when=when)}</p>'
            return pages.refusal("used", extra)
        inc = await self._controller.get_incident(claims.incident_id)
        if inc is None or not inc.open:
            return pages.refusal("closed")
        if inc.status == Status.ACKNOWLEDGED:
            return pages.link_page(await self._link_view(claims, name, lang, inc))
        try:
            inc = await self._controller.acknowledge(claims.incident_id, actor, "one-tap link")
        except KeyError:
            return pages.refusal("closed")
        if inc.acknowledged_by != actor:  # someone else was a moment faster
            return pages.link_page(await self._link_view(claims, name, lang, inc))
        _log.info("incident_acknowledged", incident_id=inc.id, actor=actor, via="link")
        return pages.link_page(await self._link_view(claims, name, lang, inc, "acknowledged"))


def _since(request: web.Request) -> float:
    """The `since` query of a report: epoch seconds, 0 (everything) when absent."""
    try:
        since = float(request.query.get("since", "0"))
    except ValueError:
        since = float("nan")
    if not math.isfinite(since):
        raise ApiError(400, "bad_request", "since must be epoch seconds")
    return since
