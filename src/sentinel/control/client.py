"""A small client of the daemon's control API, on the standard library (the CLI stays light)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any, Literal
from urllib.parse import quote

from sentinel.config.model import ControlSettings

ErrorKind = Literal["not_running", "unauthorized", "not_found", "bad_request", "failed"]

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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would carry the Authorization header to wherever a redirect points.
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


_STATUS_KINDS: dict[int, ErrorKind] = {401: "unauthorized", 403: "unauthorized",
                                       404: "not_found", 400: "bad_request",
                                       413: "bad_request"}


class ControlClient:
    """Talk to a running daemon: acknowledge, resolve, look up incidents."""

    def __init__(self, base_url: str, token: str, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        # No proxies: the daemon is reached directly, and the token must not go to a proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)

    def __repr__(self) -> str:
        return f"ControlClient({self.base_url!r})"

    def health(self) -> bool:
        """True when a daemon answers at base_url (no token needed)."""
        return self._request("GET", "/healthz", auth=False).get("status") == "ok"

    def list_open(self) -> list[dict[str, Any]]:
        """Every open incident, as JSON."""
        incidents: list[dict[str, Any]] = self._request("GET", "/api/incidents")["incidents"]
        return incidents

    def get(self, incident_id: str) -> dict[str, Any]:
        """{"incident": ..., "audit": [...]} of one incident."""
        return self._request("GET", f"/api/incidents/{quote(incident_id, safe='')}")

    def ack(self, incident_id: str, actor: str, note: str | None = None) -> dict[str, Any]:
        """Acknowledge an open incident; the incident after it, as JSON."""
        path = f"/api/incidents/{quote(incident_id, safe='')}/ack"
        answer = self._request("POST", path, {"actor": actor, "note": note})
        incident: dict[str, Any] = answer["incident"]
        return incident

    def resolve(self, incident_id: str, actor: str, outcome: str,
                note: str | None = None) -> dict[str, Any]:
        """Close an open incident with an outcome; the incident after it, as JSON."""
        path = f"/api/incidents/{quote(incident_id, safe='')}/resolve"
        answer = self._request("POST", path, {"actor": actor, "outcome": outcome, "note": note})
        incident: dict[str, Any] = answer["incident"]
        return incident

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 auth: bool = True) -> dict[str, Any]:
        url = self.base_url + path
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except urllib.error.URLError as exc:
            raise self._connection_error(exc.reason) from None
        except (TimeoutError, OSError) as exc:
            raise self._connection_error(exc) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise ControlError("failed", f"{self.base_url} answered with something other "
                                         "than JSON; is it the sentinel daemon?",
                               url=self.base_url) from None
        if not isinstance(answer, dict):
            raise ControlError("failed", "unexpected answer", url=self.base_url)
        return answer

    def _http_error(self, exc: urllib.error.HTTPError) -> ControlError:
        message = f"HTTP {exc.code}"
        try:
            detail = json.loads(exc.read())
            if isinstance(detail, dict) and isinstance(detail.get("message"), str):
                message = detail["message"]
        except (ValueError, OSError):
            pass
        finally:
            exc.close()
        kind = _STATUS_KINDS.get(exc.code, "failed")
        return ControlError(kind, message, url=self.base_url, status=exc.code)

    def _connection_error(self, reason: object) -> ControlError:
        if isinstance(reason, TimeoutError | socket.timeout):
            return ControlError("failed", f"no answer from {self.base_url} within "
                                          f"{self.timeout:g} s", url=self.base_url)
        if isinstance(reason, ConnectionRefusedError | socket.gaierror):
            why = ("connection refused" if isinstance(reason, ConnectionRefusedError)
                   else "no such host")
            return ControlError(
                "not_running",
                f"the sentinel daemon is not running at {self.base_url} ({why}); check that "
                "the service is up and that [control] host and port (or "
                "SENTINEL_CONTROL__HOST / SENTINEL_CONTROL__PORT) match the daemon's",
                url=self.base_url)
        detail = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        return ControlError("failed", f"cannot reach {self.base_url}: {detail}",
                            url=self.base_url)
