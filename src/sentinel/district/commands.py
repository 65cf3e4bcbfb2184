"""The district's command channel: signed commands down to a community's box, replies back.

`CommandChannel` implements `sentinel.district.view.CommandSender` for the board and the
link relay (sentinel.district.board). It signs a command with the community's command key
(`wire.sign_command`), publishes it at QoS 1 on `<prefix>/<community>/commands` through the
district daemon's one MQTT connection (`MqttSource.start_publish`), and waits for the reply
with the same id. The district daemon's consumer hands every message of
`<prefix>/<community>/replies` to `on_reply` (it never raises: a bad reply is counted).

Bounded: at most `max_waiting` commands wait for a reply at once; one more is refused at
once (`ChannelBusy`), since a person is waiting for every one of them and a box that does
not answer must not make the district hold an unbounded number of them. A reply that
arrives after its sender stopped waiting is counted as late and dropped; the box recorded
the act all the same (an `ack` it executes is done whether or not the district still waits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from sentinel.clock import Clock, SystemClock
from sentinel.district import wire

_log = structlog.get_logger("sentinel.district.commands")

# A person waits behind each of these (a board button, a relayed link); a street office of
# 100 communities does not have more people than this tapping at the same second.
MAX_WAITING = 256

# start_publish(topic, payload, qos=..., retain=...) of sentinel.source.mqtt.MqttSource:
# the future completes on PUBACK, or fails with ConnectionError.
Publish = Callable[..., "asyncio.Future[None]"]


class ChannelBusy(Exception):
    """Too many commands are waiting for replies; the caller shows "try again"."""


class UnknownCommunity(KeyError):
    """No command key for this community (not in district.toml)."""


class CommandChannel:
    """Send signed commands to boxes and match their replies (a `CommandSender`).

    `publish`: the district MqttSource's `start_publish`; `prefix`: [incidents]
    topic_prefix of the boxes (the topics' root); `keys`: each community's command key;
    `clock`: the district daemon's clock (a command's expiry is signed with it).
    """

    def __init__(self, publish: Publish, prefix: str, keys: Mapping[str, bytes],
                 clock: Clock | None = None, *, max_waiting: int = MAX_WAITING) -> None:
        if max_waiting < 1:
            raise ValueError("max_waiting must be at least 1")
        self._publish = publish
        self._prefix = prefix.rstrip("/")
        self._keys = dict(keys)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._max_waiting = max_waiting
        # command id -> (community, future of its reply)
        self._waiting: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        # What happened to commands and replies, for /metrics and the operator.
        self.counts: dict[str, int] = {
            "sent": 0, "replied": 0, "timeout": 0, "publish_failed": 0, "busy": 0,
            "reply_bad": 0, "reply_late": 0, "reply_wrong_community": 0, "key_mismatch": 0}
        self._logged: set[str] = set()
        # Communities whose box last refused a command as `forged`: the district's and the
        # box's command keys differ (a configuration error, not an attack: only the holder
        # of a key can sign, and the district signs with what district.toml gives it).
        self._mismatch: set[str] = set()

    def __repr__(self) -> str:
        # Never the keys.
        return f"CommandChannel(prefix={self._prefix!r}, communities={len(self._keys)})"

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def knows(self, community: str) -> bool:
        return community in self._keys

    async def send(self, community: str, type_: wire.CommandType, fields: Mapping[str, Any],
                   ttl: float, wait: float, command_id: str | None = None
                   ) -> dict[str, Any] | None:
        """Sign and publish a command; the box's reply (`wire.parse_reply`), or None when
        none came within `wait` seconds (or the district broker could not take it).
        `command_id`: the caller's, when a repeat must be recognised by the box as the same
        command (a whistle's acknowledgement, derived from the district's event); else new.

        UnknownCommunity: no key for `community`; ChannelBusy: too many waiting."""
        key = self._keys.get(community)
        if key is None:
            raise UnknownCommunity(community)
        if len(self._waiting) >= self._max_waiting:
            self.counts["busy"] += 1
            self._once("busy", "district_commands_busy", waiting=len(self._waiting))
            raise ChannelBusy()
        command_id, payload = wire.sign_command(key, community, type_, fields,
                                                self._clock.now(), ttl, command_id)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._waiting[command_id] = (community, future)
        try:
            async with asyncio.timeout(wait):
                try:
                    await self._publish(wire.topic(self._prefix, community, wire.COMMANDS),
                                        payload, qos=1, retain=False)
                except ConnectionError as exc:
                    # The district's own broker is down: no box will hear this one.
                    self.counts["publish_failed"] += 1
                    _log.warning("district_command_not_published", community=community,
                                 type=type_, id=command_id, error=str(exc))
                    return None
                self.counts["sent"] += 1
                _log.info("district_command_sent", community=community, type=type_,
                          id=command_id)
                return await future
        except TimeoutError:
            self.counts["timeout"] += 1
            _log.info("district_command_unanswered", community=community, type=type_,
                      id=command_id, wait_s=wait)
            return None
        finally:
            self._waiting.pop(command_id, None)

    def on_reply(self, community: str, payload: bytes) -> None:
        """A message of `<prefix>/<community>/replies`; never raises."""
        try:
            data = wire.parse_reply(payload)
        except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
            self.counts["reply_bad"] += 1
            self._once(f"bad:{community}", "district_reply_unreadable", community=community,
                       error=str(exc)[:200])
            return
        found = self._waiting.get(data["id"])
        if found is None:
            # Its sender gave up (or the district restarted): the box acted all the same.
            self.counts["reply_late"] += 1
            _log.info("district_reply_late", community=community, id=data["id"],
                      ok=data["ok"], error=data.get("error"))
            return
        owner, future = found
        if owner == community:
            self._note_key(community, data)
        if owner != community:
            # Only the box of the command's community may answer it: a reply on another
            # community's topic is another box's (or a forgery through its bridge).
            self.counts["reply_wrong_community"] += 1
            self._once(f"wrong:{community}", "district_reply_wrong_community",
                       community=community, expected=owner, id=data["id"])
            return
        if not future.done():
            self.counts["replied"] += 1
            future.set_result(data)

    def key_mismatch(self, community: str) -> bool:
        """Whether `community`'s box refused the district's last command as forged: its
        command key is not the district's (a configuration error; the board flags it)."""
        return community in self._mismatch

    @property
    def mismatched(self) -> frozenset[str]:
        return frozenset(self._mismatch)

    def _note_key(self, community: str, data: Mapping[str, Any]) -> None:
        if data.get("error") == "forged":
            self.counts["key_mismatch"] += 1
            if community not in self._mismatch:
                self._mismatch.add(community)
                # Once per community until it is fixed: every act of every person would
                # log it again otherwise.
                _log.error("district_command_key_mismatch", community=community,
                           hint="the box refused the district's command as forged: "
                                "[[community]] command_key_file in district.toml and the "
                                "box's [district] command_key_file hold different keys")
        elif community in self._mismatch:
            self._mismatch.discard(community)
            _log.info("district_command_key_matches_again", community=community)

    def metrics_lines(self) -> list[str]:
        """The channel's counters and the key-mismatch gauge, Prometheus text lines (the
        district daemon's /metrics appends them)."""
        lines = ["# TYPE sentinel_district_commands_total counter"]
        for name, value in self.counts.items():
            lines.append(f'sentinel_district_commands_total{{outcome="{name}"}} {value}')
        lines.append("# TYPE sentinel_district_command_key_mismatch gauge")
        for community in sorted(self._keys):
            flag = 1 if community in self._mismatch else 0
            lines.append(f'sentinel_district_command_key_mismatch{{community="{community}"}} '
                         f"{flag}")
        return lines

    def _once(self, key: str, event: str, **fields: Any) -> None:
        """Log a repeated condition once (counted every time), bounded."""
        if key in self._logged:
            return
        if len(self._logged) < 1024:
            self._logged.add(key)
        _log.warning(event, **fields)
