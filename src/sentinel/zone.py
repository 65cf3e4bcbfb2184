"""The community's time zone: one setting, used for every time shown to a person.

Configured once when the configuration is loaded (`configure`); every CLI line, board
field, notification, link page and report formats times through this module, so a
community outside UTC+8 changes one setting and nothing else. Decisions never depend on
it: rules and incidents work in epoch seconds; only daytime rules and on-call periods
read local time, and they take the zone from the same setting.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT = "Asia/Shanghai"

_zone: ZoneInfo = ZoneInfo(DEFAULT)


def validate(name: str) -> str:
    """Return `name` if it is a known IANA zone, else raise ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Asia/Shanghai)"
                         ) from None
    return name


def configure(name: str) -> None:
    """Use `name` for every time shown from now on."""
    global _zone
    _zone = ZoneInfo(validate(name))


def current() -> ZoneInfo:
    return _zone


def local(ts: float) -> datetime:
    """Epoch seconds as an aware datetime in the community's zone."""
    return datetime.fromtimestamp(ts, _zone)


def now() -> datetime:
    return datetime.now(_zone)


def clock(ts: float | None) -> str:
    """`HH:MM:SS`, or `-` for no time."""
    return "-" if ts is None else local(ts).strftime("%H:%M:%S")


def short(ts: float | None) -> str:
    """`MM-DD HH:MM:SS`, or `-` for no time."""
    return "-" if ts is None else local(ts).strftime("%m-%d %H:%M:%S")


def stamp(ts: float | None) -> str:
    """`YYYY-MM-DD HH:MM:SS`, or `-` for no time."""
    return "-" if ts is None else local(ts).strftime("%Y-%m-%d %H:%M:%S")


def parse_local(text: str) -> datetime:
    """An ISO time as typed by a person; without an offset it is local to the community."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_zone)
    return value
