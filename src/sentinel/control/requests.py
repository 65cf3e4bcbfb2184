"""Request parsing and JSON answers of the control API: every field a client sends is
checked here (type, length, control characters) before a handler acts on it."""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from sentinel.control.operations import WindowType
from sentinel.incidents.model import Outcome
from sentinel.incidents.windows import FOREVER, Recurrence, Window, split_scope

SESSION_ACTOR = "sentinel.session_actor"

MAX_BODY = 16 * 1024
MAX_ACTOR = 100
MAX_NOTE = 2000
# Outcomes a person may choose; the others are recorded by sentinel itself.
PERSON_OUTCOMES = (Outcome.HANDLED, Outcome.FALSE_ALARM, Outcome.REFERRED)


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        self.status = status
        self.error = error
        self.message = message
        super().__init__(message)


_dumps = functools.partial(json.dumps, ensure_ascii=False, default=str)


def json_response(data: Any, status: int = 200) -> web.Response:
    response = web.json_response(data, status=status, dumps=_dumps)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_response(exc: ApiError) -> web.Response:
    response = json_response({"error": exc.error, "message": exc.message}, exc.status)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="sentinel"'
    return response


async def read_object(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "payload_too_large",
                        f"the request body is over {MAX_BODY} bytes") from None
    if not raw.strip():
        raise ApiError(400, "bad_request", "a JSON object body is required")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return data


def check_keys(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(unknown)} "
                                            f"(allowed: {', '.join(allowed)})")


def _has_control_chars(text: str, allow_newlines: bool) -> bool:
    allowed = "\n\t" if allow_newlines else ""
    return any((ord(c) < 32 and c not in allowed) or ord(c) == 127 for c in text)


def actor_of(request: web.Request, data: dict[str, Any]) -> str:
    session_actor = request.get(SESSION_ACTOR)
    if isinstance(session_actor, str):
        return session_actor  # a board user acts as who they logged in as, whatever is sent
    actor = data.get("actor")
    if not isinstance(actor, str) or not actor.strip():
        raise ApiError(400, "bad_request", "actor is required: who acts (a non-empty string)")
    actor = actor.strip()
    if len(actor) > MAX_ACTOR:
        raise ApiError(400, "bad_request", f"actor is longer than {MAX_ACTOR} characters")
    if _has_control_chars(actor, allow_newlines=False):
        raise ApiError(400, "bad_request", "actor contains control characters")
    return actor


def note_of(data: dict[str, Any]) -> str | None:
    note = data.get("note")
    if note is None:
        return None
    if not isinstance(note, str):
        raise ApiError(400, "bad_request", "note must be a string or null")
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise ApiError(400, "bad_request", f"note is longer than {MAX_NOTE} characters")
    if _has_control_chars(note, allow_newlines=True):
        raise ApiError(400, "bad_request", "note contains control characters")
    return note or None


def outcome_of(data: dict[str, Any]) -> Outcome:
    choices = ", ".join(o.value for o in PERSON_OUTCOMES)
    value = data.get("outcome")
    if value is None:
        raise ApiError(400, "bad_request", f"outcome is required to close an incident "
                                            f"(one of: {choices})")
    if not isinstance(value, str) or value not in {o.value for o in PERSON_OUTCOMES}:
        raise ApiError(400, "bad_request", f"outcome must be one of: {choices}")
    return Outcome(value)


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be a whole number") from None
    if not low <= number <= high:
        raise ApiError(400, "bad_request", f"{name} must be between {low} and {high}")
    return number


def window_type(request: web.Request) -> WindowType:
    value = request.match_info["type"]
    if value == "silence":
        return "silence"
    if value == "drill":
        return "drill"
    raise ApiError(404, "not_found", "windows are /api/windows/silence or /api/windows/drill")


SCOPE_KEYS = ("community", "compound", "building", "grid", "device", "kind")
_MAX_NAMES = 50


def _names(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > _MAX_NAMES or not all(
            isinstance(v, str) and v.strip() and len(v) <= MAX_ACTOR for v in value):
        raise ApiError(400, "bad_request", f"{key} is a list of names")
    return tuple(dict.fromkeys(v.strip() for v in value))


def window_request(type_: WindowType, data: dict[str, Any], actor: str) -> Window:
    """A window from a request body; what it names is checked against the inventory later.

    {"scope": {"compound": …, "building": …}, "kinds": [...], "rules": [...],
     "life_safety": false, "every": {"days": "tue", "start": "09:00", "end": "11:00"},
     "start": epoch, "end": epoch (optional when recurring), "reason": "…"}
    """
    check_keys(data, ("scope", "kinds", "rules", "life_safety", "every", "start", "end",
                      "author", "reason", "actor"))
    scope = data.get("scope", {})
    if not isinstance(scope, dict):
        raise ApiError(400, "bad_request",
                       f"scope is an object with any of {', '.join(SCOPE_KEYS)}")
    unknown = sorted(set(scope) - set(SCOPE_KEYS))
    if unknown or not all(isinstance(v, str) and v.strip() and len(v) <= MAX_ACTOR
                          for v in scope.values()):
        raise ApiError(400, "bad_request", f"scope keys are {', '.join(SCOPE_KEYS)}, "
                                            "each with a non-empty string")
    place, kinds = split_scope({k: str(v).strip() for k, v in scope.items()},
                               _names(data, "kinds"))
    rules = _names(data, "rules")
    if not (place or kinds or rules):
        raise ApiError(400, "bad_request", "say what the window covers: a place (scope), "
                                            "kinds or rules")
    life_safety = data.get("life_safety", False)
    if not isinstance(life_safety, bool):
        raise ApiError(400, "bad_request", "life_safety is true or false")
    every = None
    if data.get("every") is not None:
        if not isinstance(data["every"], dict):
            raise ApiError(400, "bad_request", 'every is {"days": …, "start": "09:00", '
                                                '"end": "11:00"}')
        try:
            every = Recurrence.from_json(data["every"])
        except (ValueError, KeyError) as exc:
            raise ApiError(400, "bad_request", f"every: {exc}") from None
        if every.start == every.end:
            raise ApiError(400, "bad_request", "every: start and end are the same time")
    start, end = data.get("start"), data.get("end", FOREVER if every is not None else None)
    if not isinstance(start, int | float) or not isinstance(end, int | float) or end <= start:
        raise ApiError(400, "bad_request", "start and end are epoch seconds, end after start")
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_NOTE:
        raise ApiError(400, "bad_request", "reason is required (why this window)")
    return Window(0, type_, place, float(start), float(end), actor, reason.strip(), kinds,
                  rules, life_safety, every)
