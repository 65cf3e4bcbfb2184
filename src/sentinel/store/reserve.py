"""Room kept back on the state disk, so alarms can still be written when it fills up.

The daemon allocates a ballast file in `state_dir` at start. When a write fails because
the disk is full, the ballast is released: the incident and outbox commits (small, and
what keeps people safe) have room again, while telemetry is dropped and counted until
space returns. When the disk has room for the ballast and a margin again, it is put back.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("sentinel.store")

FILE = "reserve.bin"
# Free space, beyond the ballast, before telemetry is written again.
_MIN_FREE = 1024 * 1024


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors a full disk gives (SQLite's and the OS's), wherever wrapped."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and (
                "disk is full" in str(exc) or "database or disk is full" in str(exc)):
            return True
        if getattr(exc, "sqlite_errorname", None) == "SQLITE_FULL":
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


class Reserve:
    """The ballast file; `release()` frees its room, `restore()` takes it back."""

    def __init__(self, folder: Path, size: int) -> None:
        self.path = folder / FILE
        self.size = size
        self.released = False

    def _free(self) -> int:
        stat = os.statvfs(self.path.parent)
        return stat.f_bavail * stat.f_frsize

    def ensure(self) -> bool:
        """Allocate the ballast if it is missing (True when it is in place)."""
        if self.size <= 0:
            return True
        try:
            if self.path.exists() and self.path.stat().st_size >= self.size:
                self.released = False
                return True
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                # Real blocks, not a sparse file: the room must exist to be given back.
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            log.warning("reserve_unavailable", path=str(self.path), size=self.size,
                        error=exc.strerror or str(exc))
            return False
        self.released = False
        return True

    def release(self) -> bool:
        """Free the ballast's room; True if there was any to free."""
        if self.released or self.size <= 0:
            return False
        self.released = True
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.error("reserve_released", path=str(self.path), size=self.size,
                  reason="the state disk is full: alarms use the reserve, telemetry is "
                         "dropped until space returns")
        return True

    def restore(self) -> bool:
        """Put the ballast back when the disk has room for it and as much again."""
        if self.size <= 0:
            return self._free() >= _MIN_FREE
        if not self.released:
            return True
        if self._free() < 2 * self.size + _MIN_FREE:
            return False
        if self.ensure():
            log.info("reserve_restored", path=str(self.path), size=self.size)
            return True
        return False


class DiskGuard:
    """Telemetry's side of a full disk: while it is full, readings are dropped (and counted)
    so the broker can be acknowledged and alarms keep flowing; `on_change(full)` tells the
    daemon to raise or clear its disk_full incident."""

    def __init__(self, reserve: Reserve,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.reserve = reserve
        self.on_change = on_change
        self.full = False

    def disk_full(self) -> None:
        """A write failed for lack of space."""
        self.reserve.release()
        if not self.full:
            self.full = True
            if self.on_change is not None:
                self.on_change(True)

    def telemetry_allowed(self) -> bool:
        """False while the disk is full and the reserve is not back in place."""
        if not self.full:
            return True
        if not self.reserve.restore():
            return False
        self.full = False
        log.info("disk_space_returned", path=str(self.reserve.path.parent))
        if self.on_change is not None:
            self.on_change(False)
        return True
