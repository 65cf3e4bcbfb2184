"""What the district board and relay read of the mirror, and how they send commands.

The mirror (sentinel.district.mirror) implements `DistrictView`; the command channel
(sentinel.district.commands) implements `CommandSender`. The board and the link relay
(sentinel.district.board) depend only on these two protocols.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# Why a community is (not) reachable, as the board and the relay judge it:
#   online   its heartbeat is fresh and its bridge (when reported) is up;
#   offline  its daemon's will arrived, its bridge reported "0", or its heartbeat is older
#            than [district] offline_after;
#   stopped  its daemon stopped cleanly (a planned restart or maintenance);
#   unknown  nothing heard since the district started.
Reach = Literal["online", "offline", "stopped", "unknown"]


@dataclass(frozen=True, slots=True)
class CommunityState:
    id: str
    name: str                           # from district.toml, else the heartbeat's name
    reach: Reach
    since: float | None                 # when `reach` last changed (epoch seconds)
    last_heard: float | None            # the newest message of any kind from the box
    phone: str = ""                     # the community's duty phone (district.toml)
    version: str = ""
    open: int = 0
    unacknowledged: int = 0
    life_safety_unacknowledged: int = 0
    oldest_unacknowledged: Mapping[str, Any] | None = None
    # True when an open incident of this community has reached the street-office step
    # unacknowledged ("whistled", 吹哨).
    whistled: bool = False
    last_seq: int = 0                   # the newest event mirrored, in order
    missing: int = 0                    # events known to exist but not yet received
    extra: Mapping[str, Any] = field(default_factory=dict)


class DistrictView(Protocol):
    async def communities(self) -> list[CommunityState]:
        """Every configured community (and any unknown one heard from), in board order:
        offline and whistled first, then unacknowledged life-safety, then the rest."""
        ...

    async def community(self, community: str) -> CommunityState | None: ...

    async def incidents(self, community: str, open_only: bool = True
                        ) -> list[dict[str, Any]]:
        """The community's incidents as its box published them (Incident.to_json())."""
        ...

    async def incident(self, community: str, incident_id: str) -> dict[str, Any] | None: ...

    async def timeline(self, community: str, incident_id: str) -> list[dict[str, Any]]:
        """The incident's events as the box published them, ordered by `seq`."""
        ...


class CommandSender(Protocol):
    async def send(self, community: str, type_: Literal["ack", "note", "http", "resync"],
                   fields: Mapping[str, Any], ttl: float, wait: float,
                   command_id: str | None = None) -> dict[str, Any] | None:
        """Sign and publish a command; the box's reply (sentinel.district.wire.parse_reply),
        or None when none came within `wait` seconds. `command_id`: the caller's, so that a
        repeat is the same command to the box (it executes an id once)."""
        ...
