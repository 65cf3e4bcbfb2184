"""What a community box and its district (street office) say to each other over MQTT.

Both ends import this module; it is the whole contract, pure (no I/O, no clock: `now` is
passed in). Topics, under `<prefix>/<community>/` (prefix: [incidents] topic_prefix):

  events            box -> district  every audit-trail event, in order, QoS 1 (existing;
                                     sentinel.incidents.publish). `seq` is the box's event
                                     id: the district deduplicates and orders on it.
  incidents/<id>    box -> district  an incident's state, retained while open (existing).
  heartbeat         box -> district  retained: `heartbeat()` every [district]
                                     heartbeat_interval; the daemon's last will is
                                     `offline()`, and a clean stop publishes `stopped()`.
  bridge            broker -> district  Mosquitto's bridge notification: "1" while the
                                     box's bridge is connected, "0" (its will) when lost.
  commands          district -> box  a signed command (`sign_command`), QoS 1.
  replies           box -> district  `reply()` to a command, QoS 1.
  aggregates        box -> district  one-minute aggregates of readings, InfluxDB line
                                     protocol (optional, [district] aggregates).

Events, incident states and heartbeats carry `box`, the id of the box's state database
(sentinel.incidents.publish.box_instance): it changes only when that database is replaced,
which is when `seq` starts again at 1; the district archives what it held of the old one.

A command is a token of sentinel.control.tokens, signed with the community's command key
(shared by that box and the district only; it is not the box's link key) in its own
context, so no other token of sentinel ever verifies as a command. The box refuses a
command that is forged, for another community, expired, or whose id it has seen.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sentinel.control import tokens

_CONTEXT = b"sentinel-command-v1."

CommandType = Literal["ack", "note", "http", "resync"]
COMMAND_TYPES: tuple[str, ...] = ("ack", "note", "http", "resync")
# The longest a command may stay valid: the box keeps seen ids at least this long, so an
# old command can never be replayed after its id was forgotten.
MAX_COMMAND_TTL = 3600.0
# A relayed link request: a person is waiting for the page.
HTTP_TTL = 10.0
# An acknowledgement or note from the district board.
ACT_TTL = 600.0
# Largest relayed request body (a note with a photo from a phone is bigger: refused with a
# page that says to use the box's own address or the phone number).
MAX_HTTP_BODY = 96 * 1024

HEARTBEAT = "heartbeat"
EVENTS = "events"
INCIDENTS = "incidents"
BRIDGE = "bridge"
COMMANDS = "commands"
REPLIES = "replies"
AGGREGATES = "aggregates"


def topic(prefix: str, community: str, leaf: str) -> str:
    return f"{prefix.rstrip('/')}/{community}/{leaf}"


def community_of(prefix: str, topic_name: str) -> tuple[str, str] | None:
    """(community, rest) of a topic under `prefix`, or None."""
    head = prefix.rstrip("/") + "/"
    if not topic_name.startswith(head):
        return None
    community, slash, rest = topic_name[len(head):].partition("/")
    if not community or not slash or not rest:
        return None
    return community, rest


# -- heartbeat ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A box's retained state line. `state`: online, offline (its will), stopped."""

    state: Literal["online", "offline", "stopped"]
    community: str
    ts: float | None = None
    version: str = ""
    name: str = ""                      # the community's name, for people
    interval: float = 15.0
    last_seq: int = 0                   # the newest event the box has published
    open: int = 0                       # open incidents
    unacknowledged: int = 0
    life_safety_unacknowledged: int = 0
    # The oldest unacknowledged life-safety incident: id, name, kind, severity, opened_at,
    # place; None when there is none.
    oldest_unacknowledged: Mapping[str, Any] | None = None
    devices: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> bytes:
        data: dict[str, Any] = {
            "state": self.state, "community": self.community, "ts": self.ts,
            "version": self.version, "name": self.name, "interval": self.interval,
            "last_seq": self.last_seq, "open": self.open,
            "unacknowledged": self.unacknowledged,
            "life_safety_unacknowledged": self.life_safety_unacknowledged,
            "oldest_unacknowledged": (dict(self.oldest_unacknowledged)
                                      if self.oldest_unacknowledged is not None else None),
            "devices": self.devices, **self.extra}
        return _dump(data)

    @classmethod
    def parse(cls, payload: bytes) -> Heartbeat:
        """ValueError when the payload is not a heartbeat."""
        data = _load(payload)
        state = data.get("state")
        community = data.get("community")
        if state not in ("online", "offline", "stopped") or not isinstance(community, str):
            raise ValueError("not a heartbeat")
        known = {"state", "community", "ts", "version", "name", "interval", "last_seq", "open",
                 "unacknowledged", "life_safety_unacknowledged", "oldest_unacknowledged",
                 "devices"}
        oldest = data.get("oldest_unacknowledged")
        return cls(state=state, community=community,
                   ts=_number(data.get("ts")), version=str(data.get("version") or ""),
                   name=str(data.get("name") or ""),
                   interval=_number(data.get("interval")) or 15.0,
                   last_seq=int(data.get("last_seq") or 0), open=int(data.get("open") or 0),
                   unacknowledged=int(data.get("unacknowledged") or 0),
                   life_safety_unacknowledged=int(data.get("life_safety_unacknowledged") or 0),
                   oldest_unacknowledged=oldest if isinstance(oldest, dict) else None,
                   devices=int(data.get("devices") or 0),
                   extra={k: v for k, v in data.items() if k not in known})


def offline(community: str) -> bytes:
    """The daemon's last will: published by its broker when the connection dies."""
    return Heartbeat("offline", community).payload()


def stopped(community: str, now: float) -> bytes:
    return Heartbeat("stopped", community, ts=now).payload()


# -- commands -------------------------------------------------------------------------------


class CommandError(Exception):
    """A command the box refuses: `reason` is forged, malformed, community, expired, seen."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    type: CommandType
    community: str
    expires: float
    fields: Mapping[str, Any]


def sign_command(key: bytes, community: str, type_: CommandType, fields: Mapping[str, Any],
                 now: float, ttl: float, command_id: str | None = None) -> tuple[str, bytes]:
    """(command id, payload to publish on the community's command topic)."""
    if type_ not in COMMAND_TYPES:
        raise ValueError(f"unknown command type {type_!r}")
    if not 0 < ttl <= MAX_COMMAND_TTL:
        raise ValueError("a command's ttl must be within (0, MAX_COMMAND_TTL]")
    tokens.check_key(key, "command")
    command_id = command_id or secrets.token_urlsafe(12)
    claims = {"id": command_id, "t": type_, "c": community, "e": round(now + ttl, 3),
              "f": dict(fields)}
    # tokens.MAX_TOKEN bounds links in URLs; a command may carry a relayed form.
    return command_id, _sign_long(key, claims).encode("ascii")


def verify_command(key: bytes, community: str, payload: bytes, now: float) -> Command:
    """The command if it is authentic, for `community` and unexpired; CommandError otherwise.

    Whether its id was seen before is the box's to check (it keeps them durably)."""
    try:
        text = payload.decode("ascii")
        claims = _verify_long(key, text)
    except (UnicodeDecodeError, tokens.TokenError) as exc:
        reason = exc.reason if isinstance(exc, tokens.TokenError) else "malformed"
        raise CommandError(reason) from None
    try:
        command = Command(id=str(claims["id"]), type=claims["t"], community=str(claims["c"]),
                          expires=float(claims["e"]), fields=dict(claims["f"]))
    except (KeyError, TypeError, ValueError):
        raise CommandError("malformed") from None
    if command.type not in COMMAND_TYPES or not command.id:
        raise CommandError("malformed")
    if command.community != community:
        raise CommandError("community")
    if now >= command.expires:
        raise CommandError("expired")
    if command.expires - now > MAX_COMMAND_TTL + 60:
        raise CommandError("malformed")
    return command


def _sign_long(key: bytes, claims: dict[str, Any]) -> str:
    payload = tokens.b64encode(json.dumps(claims, separators=(",", ":"),
                                          ensure_ascii=False).encode("utf-8"))
    return f"{payload}.{tokens.mac(key, _CONTEXT, payload)}"


def _verify_long(key: bytes, token: str) -> dict[str, Any]:
    # A command carries up to MAX_HTTP_BODY of relayed form, base64 twice over.
    return tokens.verify(key, _CONTEXT, token, max_len=2 * MAX_HTTP_BODY + 4096)


# -- replies --------------------------------------------------------------------------------


def reply(command_id: str, ok: bool, *, error: str | None = None, replayed: bool = False,
          status: int | None = None, content_type: str | None = None,
          body: bytes | None = None, headers: Mapping[str, str] | None = None,
          **extra: Any) -> bytes:
    """A box's answer to a command. `error`: a reason code (forged, expired, seen,
    unknown_incident, offline...). For an `http` command: the box's HTTP answer."""
    data: dict[str, Any] = {"id": command_id, "ok": ok, "error": error, "replayed": replayed}
    if status is not None:
        data["status"] = status
    if content_type is not None:
        data["content_type"] = content_type
    if body is not None:
        data["body"] = base64.b64encode(body).decode("ascii")
    if headers:
        data["headers"] = dict(headers)
    data.update(extra)
    return _dump(data)


def parse_reply(payload: bytes) -> dict[str, Any]:
    """A reply as a dict with `body` decoded to bytes; ValueError when unreadable."""
    data = _load(payload)
    if not isinstance(data.get("id"), str) or not isinstance(data.get("ok"), bool):
        raise ValueError("not a reply")
    if isinstance(data.get("body"), str):
        data["body"] = base64.b64decode(data["body"])
    return data


def _dump(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _load(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
