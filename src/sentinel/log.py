"""structlog set-up: console lines on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None
                      ) -> None:
    """Configure structlog once for the process."""
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=stream.isatty()) if use_console
                     else structlog.processors.JSONRenderer(serializer=_orjson_dumps))
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


def truncate(payload: bytes, limit: int = 200) -> str:
    """A payload made safe and short for a log line."""
    text = payload[:limit].decode("utf-8", "backslashreplace")
    return text + f"…(+{len(payload) - limit} bytes)" if len(payload) > limit else text


class RejectLogger:
    """Log each rejected message once, but at most `per_minute` lines per reason.

    A device stuck sending garbage must not drown the log; what is not logged is counted
    and reported in one summary line per minute (every message is dead-lettered anyway).
    """

    def __init__(self, logger: Any, per_minute: int = 30) -> None:
        self._log = logger
        self._limit = per_minute
        self._window_start = time.monotonic()
        self._counts: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}

    def reject(self, reason: str, detail: str, topic: str, payload: bytes,
               device_id: str | None) -> None:
        now = time.monotonic()
        if now - self._window_start >= 60:
            if self._suppressed:
                self._log.warning("messages_rejected_unlogged", counts=dict(self._suppressed))
            self._window_start = now
            self._counts.clear()
            self._suppressed.clear()
        count = self._counts.get(reason, 0)
        if count < self._limit:
            self._counts[reason] = count + 1
            self._log.warning("message_rejected", reason=reason, detail=detail, topic=topic[:200],
                              payload=truncate(payload), device_id=device_id)
        else:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
