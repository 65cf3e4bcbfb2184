"""Who is at the board: logins, sessions, roles, and the one-time login links.

A person gets a board session (a signed cookie) in one of three ways:

* the login form with the control token: the wall screen's shared login, recorded as
  `board:<typed name>`, role operator;
* a one-time login link printed by `sentinel board` (`--name`: as the form; `--viewer`: a
  view-only session; `--person ID`: a personal login for a contact of the on-call file);
* a personal link the daemon sends to that contact's channel (`POST /api/board/login-link
  {"person": ID, "send": true}`).

A personal session acts as the contact id itself ("zhang_wei"), so what the person does
is recorded under the same name as their acknowledgements from one-tap links; its role is
the contact's `board_role` (operator unless the on-call file says viewer). A viewer sees the
board and may not change anything: the API refuses a viewer's POST with 403.

Tokens are `base64url(payload) "." base64url(HMAC-SHA256(key, context payload))`, like the
acknowledgement links, with their own context strings so that no kind of token ever verifies
as another. A used login link and a logged-out session are recorded in the state database
(`board_tokens`), so neither works again after a restart. Nothing secret is logged: not the
control token, not a cookie, not a login link (it sits in the path; log lines name the route
pattern only).

Wrong logins are slowed, never refused: a client's wrong tries are answered after a delay
that grows with its recent failures (capped), and the right token is accepted at once,
whatever came before. Behind a reverse proxy every browser shares the proxy's address, so a
lockout per address would let anyone lock the wall screen out during a fire.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from sentinel import i18n
from sentinel.clock import Clock, SystemClock
from sentinel.control import tokens
from sentinel.control.requests import ApiError, check_keys
from sentinel.i18n import Language

if TYPE_CHECKING:
    from sentinel.escalation.model import Contact
    from sentinel.notify.sender import Sender

_log = structlog.get_logger("sentinel.control.sessions")

T = TypeVar("T")
Role = Literal["operator", "viewer"]
ROLES: tuple[Role, ...] = ("operator", "viewer")

COOKIE = "sentinel_board"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
# A printed link is handed over at once; a link sent to a person's phone may wait in a chat
# until they look: an hour, still one use.
LOGIN_TTL = 600.0
SENT_LOGIN_TTL = 3600.0
MAX_NAME = 64
# Failures a client may make within LOGIN_WINDOW before its wrong tries are slowed (typos
# happen); then each wrong answer waits LOGIN_DELAY, doubling, up to the configured cap.
LOGIN_FREE = 3
LOGIN_WINDOW = 300.0
LOGIN_DELAY = 0.25
LOGIN_DELAY_MAX = 5.0

_SESSION_CONTEXT = b"sentinel-board-session-v1."
_LOGIN_CONTEXT = b"sentinel-board-login-v1."
_CSRF_CONTEXT = b"sentinel-board-csrf-v1."
_MAX_TRACKED = 10_000  # revoked sessions and throttled clients kept in memory
_MAX_FAILURES = 64     # per client: enough to reach the cap, bounded whatever a client does

SCHEMA = """
CREATE TABLE IF NOT EXISTS board_tokens (
    nonce TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    expires REAL NOT NULL
);
"""


def valid_name(name: object) -> str | None:
    """The trimmed display name of a board user, or None when it is not acceptable."""
    if not isinstance(name, str):
        return None
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return None
    return name


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site.

    `Sec-Fetch-Site`, when present, must be `same-origin` (or `none`: typed by the person).
    `Origin`, when present, must name this host (host and port; the scheme is not compared,
    so a TLS-terminating proxy that keeps the Host header works). `Origin: null` is what a
    browser sends for a form posted from a page with `Referrer-Policy: no-referrer` (ours),
    and also from sandboxed frames: it passes only with `Sec-Fetch-Site: same-origin`.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin == "null":
        return site == "same-origin"
    if origin is not None:
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        if parts.netloc.lower() != (request.host or "").lower():
            return False
    return True


@dataclass(frozen=True, slots=True)
class Session:
    """Who a board request comes from: `actor` is recorded on what they do."""

    actor: str   # a contact id (personal login) or "board:<name>" (shared token, --name)
    name: str    # shown on the board
    role: Role
    id: str      # the session's nonce (its CSRF token and logout are bound to it)
    expires: float

    @property
    def person(self) -> str | None:
        """The contact id of a personal login; None for a shared one."""
        return None if self.actor.startswith("board:") else self.actor


# -- used tokens, durably -------------------------------------------------------------------

class Database(Protocol):
    """The state database's worker (sentinel.incidents.store.StateStore)."""

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class TokenBook(Protocol):
    """Where used login nonces ("login") and logged-out sessions ("logout") are kept."""

    async def claim(self, nonce: str, kind: str, expires: float, now: float) -> bool:
        """Record `nonce` as used; False when it was recorded before."""
        ...

    async def active(self, kind: str, now: float) -> dict[str, float]:
        """Unexpired nonces of `kind`, with their expiry."""
        ...


class MemoryBook:
    """A TokenBook in this process only (tests; a board without a state database)."""

    def __init__(self) -> None:
        self._used: dict[str, tuple[str, float]] = {}

    async def claim(self, nonce: str, kind: str, expires: float, now: float) -> bool:
        for key in [k for k, (_, e) in self._used.items() if e <= now]:
            del self._used[key]
        if nonce in self._used:
            return False
        while len(self._used) >= _MAX_TRACKED:  # bounded memory, whatever a client does
            del self._used[next(iter(self._used))]
        self._used[nonce] = (kind, expires)
        return True

    async def active(self, kind: str, now: float) -> dict[str, float]:
        return {k: e for k, (kd, e) in self._used.items() if kd == kind and e > now}


class StateBook:
    """A TokenBook in the state database: a used link stays used after a restart."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def start(self) -> None:
        await self._db.call(lambda conn: conn.executescript(SCHEMA))

    async def claim(self, nonce: str, kind: str, expires: float, now: float) -> bool:
        def claim(conn: sqlite3.Connection) -> bool:
            # The table holds at most the tokens of the last LOGIN_TTL or session ttl:
            # expired ones can never be replayed (their expiry is signed), so they go.
            conn.execute("DELETE FROM board_tokens WHERE expires <= ?", (now,))
            cur = conn.execute("INSERT OR IGNORE INTO board_tokens (nonce, kind, expires)"
                               " VALUES (?, ?, ?)", (nonce, kind, expires))
            return cur.rowcount == 1
        return await self._db.call(claim)

    async def active(self, kind: str, now: float) -> dict[str, float]:
        def read(conn: sqlite3.Connection) -> dict[str, float]:
            rows = conn.execute("SELECT nonce, expires FROM board_tokens WHERE kind = ?"
                                " AND expires > ? ORDER BY expires DESC LIMIT ?",
                                (kind, now, _MAX_TRACKED))
            return {str(n): float(e) for n, e in rows}
        return await self._db.call(read)


# -- sessions -------------------------------------------------------------------------------

class BoardSessions:
    """Signed session cookies and login links for the board; HMAC with the daemon's key.

    `people` (the on-call file's contacts) makes personal logins possible; `sender` (the
    daemon's apprise sender) lets the API send a personal link to the person's channel;
    `book` keeps used links and logged-out sessions (in memory unless given). Rotating the
    key ends every session.
    """

    def __init__(self, key: bytes, ttl: float = 12 * 3600, clock: Clock | None = None, *,
                 book: TokenBook | None = None, people: Mapping[str, Contact] | None = None,
                 sender: Sender | None = None, public_url: str = "",
                 login_delay_max: float = LOGIN_DELAY_MAX) -> None:
        tokens.check_key(key, "board")
        if ttl <= 0:
            raise ValueError("the session ttl must be positive")
        self._key = key
        self.ttl = ttl
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._clock = self.clock.now
        self._book: TokenBook = book if book is not None else MemoryBook()
        self._people: Mapping[str, Contact] = people if people is not None else {}
        self._sender = sender
        self._public_url = public_url.rstrip("/")
        # The longest a wrong login is held before its answer (see Throttle).
        self.login_delay_max = login_delay_max
        # Logged-out sessions, checked on every request without a database read; loaded
        # from the book at start and written through to it.
        self._revoked: dict[str, float] = {}

    def __repr__(self) -> str:
        # Never the key, not even in a traceback's locals.
        return f"BoardSessions(ttl={self.ttl})"

    async def start(self) -> None:
        """Load the sessions logged out before a restart (they stay ended)."""
        self._revoked = await self._book.active("logout", self._clock())

    # -- tokens -------------------------------------------------------------------------

    def _sign(self, context: bytes, claims: dict[str, Any]) -> str:
        return tokens.sign(self._key, context, claims)

    def _verify(self, context: bytes, token: str | None) -> Session | None:
        """The session (or login grant) of an authentic, unexpired token; None otherwise."""
        try:
            claims = tokens.verify(self._key, context, token)
        except tokens.TokenError:
            return None
        try:
            expires = float(claims["e"])
            nonce = claims["j"]
        except (ValueError, KeyError, TypeError):
            return None
        name = claims.get("n")
        if valid_name(name) != name or not isinstance(name, str):
            return None
        if not isinstance(nonce, str) or not nonce or self._clock() >= expires:
            return None
        # Tokens from before personal logins carry neither: a shared login, an operator.
        person, role = claims.get("a"), claims.get("r", "operator")
        if role not in ROLES or not (person is None or (isinstance(person, str) and person)):
            return None
        actor = person if isinstance(person, str) else f"board:{name}"
        return Session(actor, name, "viewer" if role == "viewer" else "operator", nonce,
                       expires)

    def _claims(self, name: str, person: str | None, role: Role, ttl: float,
                nbytes: int) -> dict[str, Any]:
        checked = valid_name(name)
        if checked is None:
            raise ValueError(f"a board user name is 1 to {MAX_NAME} characters, "
                             "without control characters")
        if role not in ROLES:
            raise ValueError(f"a board role is one of {', '.join(ROLES)}")
        claims: dict[str, Any] = {"n": checked, "e": round(self._clock() + ttl, 3),
                                  "j": secrets.token_urlsafe(nbytes)}
        if person is not None:
            claims["a"] = person
        if role != "operator":
            claims["r"] = role
        return claims

    # -- one-time login links -----------------------------------------------------------

    def login_path(self, name: str, *, person: str | None = None, role: Role = "operator",
                   ttl: float = LOGIN_TTL) -> str:
        """A one-time login path, "/board/login/<token>", valid for `ttl` seconds.

        Without `person` the session acts as "board:<name>"; with it, as the contact id.
        """
        claims = self._claims(name, person, role, ttl, 12)
        return f"/board/login/{self._sign(_LOGIN_CONTEXT, claims)}"

    def person_path(self, person: str, *, ttl: float = LOGIN_TTL) -> tuple[str, Contact]:
        """A personal one-time login path for a contact of the on-call file; KeyError if
        there is no such contact."""
        contact = self._people[person]
        name = valid_name(contact.name) or person
        return self.login_path(name[:MAX_NAME], person=contact.id, role=contact.board_role,
                               ttl=ttl), contact

    async def redeem_login(self, token: str) -> Session | None:
        """The grant of a valid, unused login token, now durably marked used; else None."""
        grant = self._verify(_LOGIN_CONTEXT, token)
        if grant is None:
            return None
        if grant.person is not None and grant.person not in self._people:
            return None  # a personal link of someone not (or no longer) in the on-call file
        if not await self._book.claim(grant.id, "login", grant.expires, self._clock()):
            return None
        return grant

    # -- sessions -----------------------------------------------------------------------

    def new_session(self, name: str, *, person: str | None = None,
                    role: Role = "operator") -> str:
        """The cookie value of a new session for `name` (acting as `person` if given)."""
        return self._sign(_SESSION_CONTEXT, self._claims(name, person, role, self.ttl, 16))

    def session(self, request: web.Request) -> Session | None:
        """The request's valid, not logged-out session, or None."""
        found = self._verify(_SESSION_CONTEXT, request.cookies.get(COOKIE))
        if found is None or found.id in self._revoked:
            return None
        return found

    def session_name(self, request: web.Request) -> str | None:
        found = self.session(request)
        return None if found is None else found.name

    def session_actor(self, request: web.Request) -> str | None:
        """Who acts: a contact id or "board:<name>"; None without a valid session."""
        found = self.session(request)
        return None if found is None else found.actor

    def session_role(self, request: web.Request) -> Role | None:
        found = self.session(request)
        return None if found is None else found.role

    def _csrf_for(self, session_id: str) -> str:
        return tokens.mac(self._key, _CSRF_CONTEXT, tokens.b64encode(session_id.encode()))

    def csrf_token(self, request: web.Request) -> str | None:
        """The CSRF token of the request's session (None without a session)."""
        found = self.session(request)
        return None if found is None else self._csrf_for(found.id)

    def csrf_value_ok(self, request: web.Request, given: str | None) -> bool:
        """`given` is the session's CSRF token, and the request is from this origin."""
        expected = self.csrf_token(request)
        if expected is None or not given:
            return False
        if not hmac.compare_digest(expected.encode("ascii"),
                                   given.encode("utf-8", "surrogateescape")):
            return False
        return same_origin(request)

    def csrf_ok(self, request: web.Request) -> bool:
        """X-CSRF-Token matches the session's CSRF token, and Origin (if any) is this host."""
        return self.csrf_value_ok(request, request.headers.get(CSRF_HEADER))

    async def revoke(self, request: web.Request) -> None:
        """End the request's session (logout) until its own expiry, also after a restart."""
        found = self.session(request)
        if found is None:
            return
        now = self._clock()
        for key in [k for k, expiry in self._revoked.items() if expiry <= now]:
            del self._revoked[key]
        while len(self._revoked) >= _MAX_TRACKED:  # bounded memory, whatever happens
            del self._revoked[next(iter(self._revoked))]
        self._revoked[found.id] = found.expires
        await self._book.claim(found.id, "logout", found.expires, now)

    def set_cookie(self, response: web.StreamResponse, request: web.Request,
                   value: str) -> None:
        response.set_cookie(COOKIE, value, max_age=int(self.ttl), path="/", httponly=True,
                            samesite="Strict", secure=request.secure)

    @staticmethod
    def clear_cookie(response: web.StreamResponse, request: web.Request) -> None:
        response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict",
                            secure=request.secure)

    # -- links issued through the API ---------------------------------------------------

    async def issue_link(self, data: dict[str, Any], local_url: str) -> dict[str, Any]:
        """Answer `POST /api/board/login-link` (a bearer token or the socket: an admin).

        {"name": N}: a shared login as board:N; {"name": N, "viewer": true}: view only;
        {"person": ID}: a personal login; {"person": ID, "send": true}: sent to that
        person's channels (first that accepts it) and not returned, since it is theirs.
        """
        check_keys(data, ("name", "person", "viewer", "send"))
        person, send, viewer = data.get("person"), data.get("send", False), \
            data.get("viewer", False)
        if not isinstance(send, bool) or not isinstance(viewer, bool):
            raise ApiError(400, "bad_request", "send and viewer are true or false")
        base = self._public_url or local_url
        if person is None:
            if send:
                raise ApiError(400, "bad_request", "send needs a person to send to")
            name = data.get("name")
            if not isinstance(name, str):
                raise ApiError(400, "bad_request", "name (who logs in) or person is required")
            try:
                path = self.login_path(name, role="viewer" if viewer else "operator")
            except ValueError as exc:
                raise ApiError(400, "bad_request", str(exc)) from None
            role = "viewer" if viewer else "operator"
            _log.info("board_login_link_issued", name=name.strip(), role=role)
            return {"path": path, "url": base + path, "role": role, "expires_in": LOGIN_TTL}
        if not isinstance(person, str) or person not in self._people:
            raise ApiError(404, "not_found", f"no contact {person!r} in the on-call file")
        if viewer or data.get("name") is not None:
            raise ApiError(400, "bad_request", "a personal link takes its name and role "
                                                "from the on-call file")
        ttl = SENT_LOGIN_TTL if send else LOGIN_TTL
        path, contact = self.person_path(person, ttl=ttl)
        answer: dict[str, Any] = {"person": contact.id, "name": contact.name,
                                  "role": contact.board_role, "expires_in": ttl}
        if not send:
            _log.info("board_login_link_issued", person=contact.id, role=contact.board_role)
            return {**answer, "path": path, "url": base + path}
        channel = await self._send(contact, base + path, ttl)
        return {**answer, "sent": True, "channel": channel}

    async def _send(self, contact: Contact, url: str, ttl: float) -> str:
        """Deliver a personal link through apprise, channel by channel as pages go; the
        label of the channel that took it. The link is not queued in the outbox: it is a
        credential, and the outbox keeps message bodies on disk for weeks."""
        if self._sender is None:
            raise ApiError(409, "unavailable", "this daemon has no notification sender")
        # The channel's type only ("webhook", "wecom"...): its URL may hold a secret, and
        # its address is not what a person needs to hear (the control API words the type
        # in the caller's language: sentinel.notify.channels).
        from sentinel.notify.channels import channel_type as channel_label

        lang: Language = contact.language
        title = i18n.t("board.sent_title", lang)
        body = i18n.t("board.sent_body", lang, name=contact.name, url=url,
                      minutes=round(ttl / 60))
        errors: list[str] = []
        for channel in contact.channels:
            label = channel_label(channel)
            result = await self._sender.send(channel, title, body)
            if result.ok:
                _log.info("board_login_link_sent", person=contact.id, channel=label)
                return label
            errors.append(f"{label}: {result.error}")
            _log.warning("board_login_link_send_failed", person=contact.id, channel=label,
                         error=result.error)
        # The reasons only (the error code says what failed): the CLI words it per language.
        raise ApiError(502, "send_failed", "; ".join(errors))


# -- throttling -----------------------------------------------------------------------------

class Throttle:
    """How long to hold a client's wrong login before answering it; never a refusal.

    A pure decision on the daemon's clock: failures within LOGIN_WINDOW count, the first
    LOGIN_FREE are answered at once, then LOGIN_DELAY doubling up to `cap`. Success resets
    nothing: behind a proxy the wall screen shares its address with whoever is guessing.
    """

    def __init__(self, clock: Callable[[], float], cap: float = LOGIN_DELAY_MAX) -> None:
        self._clock = clock
        self.cap = cap
        self._failures: dict[str, list[float]] = {}

    def failed(self, client: str) -> float:
        """Record a wrong try; the seconds to wait before answering it."""
        now = self._clock()
        kept = [ts for ts in self._failures.pop(client, []) if ts > now - LOGIN_WINDOW]
        kept = [*kept[-(_MAX_FAILURES - 1):], now]
        while len(self._failures) >= _MAX_TRACKED:  # oldest client first
            del self._failures[next(iter(self._failures))]
        self._failures[client] = kept  # re-inserted: most recent last
        return self.delay(len(kept))

    def delay(self, failures: int) -> float:
        if failures <= LOGIN_FREE:
            return 0.0
        return min(self.cap, LOGIN_DELAY * 2.0 ** (failures - LOGIN_FREE - 1))


# -- the login pages --------------------------------------------------------------------------

RenderLogin = Callable[..., web.Response]


def _lang(request: web.Request) -> Language:
    return "en" if request.query.get("lang") == "en" else "zh"


def _lang_query(lang: Language) -> str:
    return "?lang=en" if lang == "en" else ""


def add_login_routes(app: web.Application, sessions: BoardSessions, api_token: bytes,
                     render_login: RenderLogin,
                     redirect: Callable[[str], web.Response]) -> None:
    """/board/login (form), /board/login/<token> (link), /board/logout on `app`.

    `render_login(lang, error, status, name)` and `redirect(location)` are the board's own
    pages (sentinel.control.board), so every page shares its headers.
    """
    if not api_token:
        raise ValueError("the control token must not be empty")
    # Failed logins are counted on the sessions' (the daemon's) clock.
    throttle = Throttle(sessions.clock.monotonic, sessions.login_delay_max)

    def logged_in(request: web.Request, session: Session | str, via: str) -> web.Response:
        lang = _lang(request)
        if isinstance(session, Session):
            cookie = sessions.new_session(session.name, role=session.role,
                                          person=session.person)
            actor, role = session.actor, session.role
        else:
            cookie, actor, role = sessions.new_session(session), f"board:{session}", "operator"
        _log.info("board_login", actor=actor, role=role, via=via, remote=request.remote)
        response = redirect(f"/board{_lang_query(lang)}")
        sessions.set_cookie(response, request, cookie)
        return response

    async def login_form(request: web.Request) -> web.StreamResponse:
        lang = _lang(request)
        if sessions.session(request) is not None:
            return redirect(f"/board{_lang_query(lang)}")
        return render_login(lang)

    async def login_post(request: web.Request) -> web.StreamResponse:
        lang = _lang(request)
        remote = request.remote or "-"
        if not same_origin(request):
            _log.warning("board_login_refused", reason="cross_site", remote=remote)
            return render_login(lang, "login.refused", 403)
        form = await request.post()
        raw_name, raw_token = form.get("name"), form.get("token")
        name = valid_name(raw_name)
        token = raw_token.encode("utf-8", "surrogateescape") \
            if isinstance(raw_token, str) else b""
        # Compared whatever the name, so a bad name takes as long as a bad token. The right
        # token is let in at once, whatever this client (or its proxy) did before.
        token_ok = hmac.compare_digest(token, api_token)
        if name is not None and token_ok:
            return logged_in(request, name, "form")
        wait = throttle.failed(remote)
        _log.warning("board_login_failed", remote=remote, name_ok=name is not None,
                     delay_s=wait)
        if wait > 0:
            await asyncio.sleep(wait)
        shown = raw_name if isinstance(raw_name, str) else ""
        return render_login(lang, "login.failed", 401, shown[:MAX_NAME])

    async def login_link(request: web.Request) -> web.StreamResponse:
        lang = _lang(request)
        grant = await sessions.redeem_login(request.match_info["token"])
        if grant is None:
            _log.info("board_login_refused", reason="bad_link", remote=request.remote)
            return render_login(lang, "login.link_invalid", 403)
        return logged_in(request, grant, "link")

    async def logout(request: web.Request) -> web.StreamResponse:
        given = request.headers.get(CSRF_HEADER)
        if given is None:
            form = await request.post()
            field = form.get(CSRF_FIELD)
            given = field if isinstance(field, str) else None
        if not sessions.csrf_value_ok(request, given):
            # Whatever went wrong, the person wanted out: drop the cookie on this browser,
            # but a forged request cannot end a session (nothing is revoked).
            response = redirect("/board/login")
            sessions.clear_cookie(response, request)
            return response
        _log.info("board_logout", actor=sessions.session_actor(request))
        await sessions.revoke(request)
        response = redirect("/board/login")
        sessions.clear_cookie(response, request)
        return response

    app.router.add_get("/board/login", login_form)
    app.router.add_post("/board/login", login_post)
    app.router.add_get("/board/login/{token}", login_link)
    app.router.add_post("/board/logout", logout)
