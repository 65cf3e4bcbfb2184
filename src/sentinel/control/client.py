"""A small client of the daemon's control API, on the standard library (the CLI stays light).

It reaches the daemon through its Unix socket when there is one (the socket's permissions
decide who may act; no token), else over HTTP with the bearer token.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from sentinel.config.model import ControlSettings

ErrorKind = Literal["not_running", "unauthorized", "not_found", "bad_request", "failed",
                    "forbidden", "unavailable"]

STREAM_TIMEOUT = 45.0
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "127.0.0.1", "": "127.0.0.1"}


class ControlError(Exception):
    """A control request failed; `kind` says how, `message` says it in English."""

    def __init__(self, kind: ErrorKind, message: str, *, url: str = "",
                 status: int | None = None) -> None:
        self.kind: ErrorKind = kind
        self.message = message
        self.url = url
        self.status = status
        super().__init__(message)


def local_url(control: ControlSettings) -> str:
    """The daemon's own address for a command on the same host (not the public link URL)."""
    host = _WILDCARDS.get(control.host, control.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{control.port}"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


_STATUS_KINDS: dict[int, ErrorKind] = {401: "unauthorized", 403: "forbidden",
                                       404: "not_found", 400: "bad_request",
                                       413: "bad_request", 409: "unavailable"}


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One server-sent event: `event` is incident, reading, readings_dropped or hello."""

    event: str
    data: dict[str, Any]
    id: int | None


class ControlClient:
    """Talk to a running daemon: incidents, events, status, history, windows."""

    def __init__(self, base_url: str = "", token: str = "", timeout: float = 10, *,
                 socket_path: Path | None = None, language: str | None = None) -> None:
        if not base_url and socket_path is None:
            raise ValueError("a ControlClient needs a URL or a socket path")
        self.base_url = base_url.rstrip("/")
        self.socket_path = socket_path
        self._token = token
        self.timeout = timeout
        # The language refusals are worded in (Accept-Language); None: the API's English.
        self.language = language

    def __repr__(self) -> str:
        return f"ControlClient({self.where!r})"

    @property
    def where(self) -> str:
        """The address, for messages."""
        return f"unix:{self.socket_path}" if self.socket_path is not None else self.base_url

    # -- calls ------------------------------------------------------------------------

    def health(self) -> bool:
        """True when a daemon answers (no token needed)."""
        return self._request("GET", "/healthz", auth=False).get("status") == "ok"

    def list_open(self) -> list[dict[str, Any]]:
        """Every open incident, as JSON."""
        incidents: list[dict[str, Any]] = self._request("GET", "/api/incidents")["incidents"]
        return incidents

    def incidents(self, include_closed: bool = False, limit: int = 200) -> dict[str, Any]:
        """{"seq": newest event number, "incidents": [...]} (open ones, or recent ones)."""
        query = {"all": "1", "limit": str(limit)} if include_closed else {}
        return self._request("GET", "/api/incidents" + _query(query))

    def get(self, incident_id: str) -> dict[str, Any]:
        """{"incident", "audit", "latency", "events"} of one incident."""
        return self._request("GET", f"/api/incidents/{quote(incident_id, safe='')}")

    def _act(self, incident_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one act on an incident; the incident after it, as JSON."""
        path = f"/api/incidents/{quote(incident_id, safe='')}/{action}"
        incident: dict[str, Any] = self._request("POST", path, body)["incident"]
        return incident

    def ack(self, incident_id: str, actor: str, note: str | None = None) -> dict[str, Any]:
        """Acknowledge an open incident; the incident after it, as JSON."""
        return self._act(incident_id, "ack", {"actor": actor, "note": note})

    def resolve(self, incident_id: str, actor: str, outcome: str,
                note: str | None = None) -> dict[str, Any]:
        """Close an open incident with an outcome; the incident after it, as JSON."""
        return self._act(incident_id, "resolve",
                         {"actor": actor, "outcome": outcome, "note": note})

    def assign(self, incident_id: str, person: str, actor: str) -> dict[str, Any]:
        """Assign an open incident to a contact; the incident after it, as JSON."""
        return self._act(incident_id, "assign", {"person": person, "actor": actor})

    def note(self, incident_id: str, actor: str, text: str,
             photo: bytes | None = None) -> dict[str, Any]:
        """Add a note (and a photo) to an open incident; the incident after it, as JSON."""
        body: dict[str, Any] = {"text": text, "actor": actor}
        if photo is not None:
            body["photo"] = base64.b64encode(photo).decode("ascii")
        return self._act(incident_id, "note", body)

    def contacts(self) -> list[dict[str, Any]]:
        """The on-call file's people (id, name, roles, grids, compounds)."""
        contacts: list[dict[str, Any]] = self._request("GET", "/api/contacts")["contacts"]
        return contacts

    def response_report(self, since: float, by: str) -> dict[str, Any]:
        """Who answered how fast since `since`, per worker, grid or kind."""
        return self._request("GET", "/api/report/response" + _query(
            {"since": repr(since), "by": by}))

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/api/status")

    def communities(self) -> list[dict[str, Any]]:
        """A district daemon's communities, most urgent first (sentinel.district.board)."""
        found: list[dict[str, Any]] = self._request("GET", "/api/communities")["communities"]
        return found

    def history(self, device_id: str, since: float, limit: int) -> list[dict[str, Any]]:
        path = f"/api/history/{quote(device_id, safe='')}" + _query(
            {"since": repr(since), "limit": str(limit)})
        readings: list[dict[str, Any]] = self._request("GET", path)["readings"]
        return readings

    def deadletters(self, limit: int, reason: str | None) -> list[dict[str, Any]]:
        query = {"limit": str(limit)}
        if reason:
            query["reason"] = reason
        rows: list[dict[str, Any]] = self._request(
            "GET", "/api/deadletters" + _query(query))["deadletters"]
        return rows

    def latency_report(self, since: float) -> dict[str, Any]:
        """Stage-time percentiles and limits kept since `since` (see incidents.latency)."""
        return self._request("GET", "/api/report/latency" + _query({"since": repr(since)}))

    def windows(self, type_: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._request("GET", f"/api/windows/{type_}")["windows"]
        return rows

    def add_window(self, type_: str, body: dict[str, Any]) -> dict[str, Any]:
        """Add a window: `body` as /api/windows/{type} takes it (scope, kinds, rules,
        life_safety, every, start, end, author, reason)."""
        window: dict[str, Any] = self._request("POST", f"/api/windows/{type_}",
                                               body)["window"]
        return window

    def remove_window(self, type_: str, window_id: int, author: str) -> None:
        self._request("POST", f"/api/windows/{type_}/{window_id}/remove", {"author": author})

    def board_login_link(self, name: str) -> str:
        """A one-time login URL for the board (the daemon's own HTTP address)."""
        return str(self._request("POST", "/api/board/login-link", {"name": name})["url"])

    def board_link(self, body: dict[str, Any]) -> dict[str, Any]:
        """A board login link as the API answers it: shared, view-only or personal, printed
        or sent (see sentinel.control.sessions.BoardSessions.issue_link)."""
        return self._request("POST", "/api/board/login-link", body)

    def stream(self, after: int | None, filters: Sequence[tuple[str, str]] = (),
               readings: bool = False) -> Iterator[StreamItem]:
        """Server-sent events until the connection ends (ControlError if it cannot start)."""
        query = list(filters)
        if after is not None:
            query.append(("after", str(after)))
        if readings:
            query.append(("readings", "1"))
        path = "/api/stream" + (f"?{urlencode(query)}" if query else "")
        # Events may be minutes apart, but the server sends a heartbeat every 15 s: three
        # missed heartbeats mean a dead connection (a host gone without closing it).
        conn, response = self._open("GET", path, None, auth=True, timeout=STREAM_TIMEOUT)
        try:
            event, event_id = "message", None
            data_lines: list[str] = []
            while True:
                raw = response.readline()
                if not raw:
                    return
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if data_lines:
                        yield StreamItem(event, json.loads("\n".join(data_lines)), event_id)
                    event, data_lines, event_id = "message", [], None
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        event = value
                    elif name == "data":
                        data_lines.append(value)
                    elif name == "id":
                        event_id = int(value) if value.isdigit() else None
        finally:
            conn.close()

    # -- transport ----------------------------------------------------------------------

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return _UnixConnection(str(self.socket_path), timeout)
        parts = urlsplit(self.base_url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                               timeout=timeout)
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)

    def _open(self, method: str, path: str, body: dict[str, Any] | None, auth: bool,
              timeout: float | None) -> tuple[http.client.HTTPConnection,
                                              http.client.HTTPResponse]:
        headers = {"Accept": "application/json", "Connection": "close"}
        if self.language:
            headers["Accept-Language"] = self.language
        if auth and self.socket_path is None:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = self._connection(timeout)
        try:
            conn.request(method, urlsplit(self.base_url).path.rstrip("/") + path
                         if self.socket_path is None else path, body=data, headers=headers)
            response = conn.getresponse()
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._connection_error(exc) from None
        if response.status >= 400:
            try:
                raise self._http_error(response)
            finally:
                conn.close()
        return conn, response

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 auth: bool = True) -> dict[str, Any]:
        conn, response = self._open(method, path, body, auth, self.timeout)
        try:
            raw = response.read()
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise self._connection_error(exc) from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            raise ControlError("failed", f"{self.where} answered with something other than "
                                         "JSON; is it the sentinel daemon?",
                               url=self.where) from None
        if not isinstance(answer, dict):
            raise ControlError("failed", "unexpected answer", url=self.where)
        return answer

    def _http_error(self, response: http.client.HTTPResponse) -> ControlError:
        message = f"HTTP {response.status}"
        try:
            detail = json.loads(response.read())
            if isinstance(detail, dict) and isinstance(detail.get("message"), str):
                message = detail["message"]
        except (ValueError, OSError, http.client.HTTPException):
            pass
        kind = _STATUS_KINDS.get(response.status, "failed")
        return ControlError(kind, message, url=self.where, status=response.status)

    def _connection_error(self, reason: BaseException) -> ControlError:
        where = self.where
        if isinstance(reason, TimeoutError | socket.timeout):
            return ControlError("failed", f"no answer from {where} within "
                                          f"{self.timeout:g} s", url=where)
        if isinstance(reason, ConnectionRefusedError | FileNotFoundError | socket.gaierror):
            why = {ConnectionRefusedError: "connection refused",
                   FileNotFoundError: "no socket file"}.get(type(reason), "no such host")
            return ControlError(
                "not_running",
                f"the sentinel daemon is not running at {where} ({why}); check that the "
                "service is up (systemctl status sentinel) and that this command reads the "
                "daemon's configuration (-c, state_dir, [control])", url=where)
        if isinstance(reason, PermissionError):
            return ControlError(
                "forbidden", f"no permission to use {where}; the socket is for the daemon's "
                             "user and group: run as that user or join its group", url=where)
        detail = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        return ControlError("failed", f"cannot reach {where}: {detail}", url=where)


def _query(values: dict[str, str]) -> str:
    return f"?{urlencode(values)}" if values else ""


def wait_until_up(client: ControlClient, timeout: float) -> bool:
    """Poll /healthz until the daemon answers or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.health():
                return True
        except ControlError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
