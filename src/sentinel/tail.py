"""`sentinel tail`: what is open now, then every incident event as it is committed.

The follower keeps the number of the last event it printed. When the connection drops (the
daemon restarts, the socket goes away) it reconnects with backoff and asks for the events
after that number, which come from the daemon's durable log: nothing is missed and nothing
is printed twice.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from sentinel import zone
from sentinel.backoff import Backoff
from sentinel.console import colored, event_line
from sentinel.control.client import ControlClient, ControlError
from sentinel.control.feed import Filter
from sentinel.i18n import Language, incident_title, kind_name, t
from sentinel.timeline import actor_text, place_text, severity_word, status_word, values_text

# Reconnecting to the daemon: 0.2 s, doubling up to 5 s (one client: no jitter needed).
_RECONNECT = Backoff(base=0.2, cap=5.0)


@dataclass
class TailOptions:
    filter: Filter = field(default_factory=Filter)
    readings: bool = False
    as_json: bool = False
    color: bool = False
    lang: Language = "zh"
    after: int | None = None  # replay from this event number instead of "now"
    # Contact id -> name (from the on-call file): people are shown by name.
    names: Mapping[str, str] = field(default_factory=dict)


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def _incident_as_event(inc: dict[str, Any]) -> dict[str, Any]:
    """An incident in the shape the filter reads events in."""
    return {"severity": inc["severity"], "kind": inc.get("kind"), "place": inc.get("place"),
            "device": inc.get("device_id")}


def open_line(inc: dict[str, Any], lang: Language,
              names: Mapping[str, str] | None = None) -> str:
    where = place_text(inc.get("place"))
    parts = [f"#{inc['id']}", f"[{severity_word(inc['severity'], lang)}]",
             incident_title(inc["name"], lang), status_word(inc["status"], lang)]
    if where:
        parts.append(where)
    if inc.get("device_id"):
        parts.append(str(inc["device_id"]))
    if inc.get("acknowledged_by"):
        parts.append(f"({actor_text(inc['acknowledged_by'], lang, names)})")
    return "  ".join(parts)


def reading_line(data: dict[str, Any], lang: Language) -> str:
    """A reading: the community's local time (like the events), values at their precision."""
    when = zone.clock(float(data["ts"]))
    return (f"{when} · {kind_name(data['kind'], lang)} {data['device']} "
            f"{values_text(data['values'], lang)}")


class Tail:
    """Print open incidents, then follow the stream until `stop` is set."""

    def __init__(self, client: ControlClient, options: TailOptions,
                 out: TextIO | None = None, err: TextIO | None = None,
                 stop: threading.Event | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self._options = options
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._stop = stop or threading.Event()
        self._sleep = sleep
        self.last_seq: int | None = options.after

    def run(self) -> None:
        """Raises ControlError if the daemon cannot be reached the first time."""
        options = self._options
        if self.last_seq is None:
            listing = self._client.incidents()
            self._print_open(listing["incidents"])
            self.last_seq = int(listing["seq"])
        if not options.as_json:
            self._say(t("tail.following", options.lang))
        failures = 0
        while not self._stop.is_set():
            try:
                for item in self._client.stream(self.last_seq, options.filter.query(),
                                                options.readings):
                    if failures:
                        self._note(t("tail.back", options.lang, seq=self.last_seq))
                        failures = 0
                    self._show(item.event, item.data, item.id)
                    if self._stop.is_set():
                        return
                detail = "connection closed"
            except ControlError as exc:
                detail = exc.message
            except (OSError, ValueError) as exc:
                detail = str(exc) or type(exc).__name__
            if self._stop.is_set():
                return
            failures += 1
            if failures == 1:
                self._note(t("tail.lost", options.lang, detail=detail, seq=self.last_seq))
            self._stop.wait(_RECONNECT.delay(failures - 1))

    def _print_open(self, incidents: Sequence[dict[str, Any]]) -> None:
        options = self._options
        shown = [inc for inc in incidents if options.filter.event(_incident_as_event(inc))]
        if options.as_json:
            for inc in shown:
                self._say(_dumps({"stream": "open", **inc}))
            return
        self._say(t("tail.open", options.lang, count=len(shown)))
        for inc in shown:
            line = "  " + open_line(inc, options.lang, options.names)
            self._say(colored(line, inc["severity"], options.color))

    def _show(self, event: str, data: dict[str, Any], event_id: int | None) -> None:
        options = self._options
        if event == "incident":
            if event_id is not None:
                if self.last_seq is not None and event_id <= self.last_seq:
                    return  # already printed before a reconnect
                self.last_seq = event_id
            if options.as_json:
                self._say(_dumps({"stream": "event", **data}))
            else:
                line = event_line(data, options.lang, options.names)
                self._say(colored(line, data["severity"], options.color))
        elif event == "reading":
            self._say(_dumps({"stream": "reading", **data}) if options.as_json
                      else reading_line(data, options.lang))
        elif event == "readings_dropped":
            self._note(t("tail.dropped", options.lang, count=data["dropped"]))

    def _say(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    def _note(self, line: str) -> None:
        self._err.write(line + "\n")
        self._err.flush()
