"""Exceptions shared by every stage; each carries its data as attributes."""

from __future__ import annotations

from sentinel.types import RejectReason


class SentinelError(Exception):
    """Base of every error sentinel raises on purpose."""


class ConfigError(SentinelError):
    """Configuration, inventory or profiles are invalid; `problems` lists every finding."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Problem:
    """One finding of `sentinel check`: where it is and what is wrong."""

    __slots__ = ("entry", "file", "reason")

    def __init__(self, file: str, entry: str, reason: str) -> None:
        self.file = file
        self.entry = entry
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.file}: {self.entry}" if self.entry else self.file
        return f"{where}: {self.reason}"

    def __repr__(self) -> str:
        return f"Problem({self.file!r}, {self.entry!r}, {self.reason!r})"


class DecodeError(SentinelError):
    """A message could not become a reading; `reason` is the counted category."""

    def __init__(self, reason: RejectReason, detail: str, device_id: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.device_id = device_id
        super().__init__(f"{reason.value}: {detail}")


class StoreError(SentinelError):
    """A sink failed; `retryable` says whether the same write may succeed later."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        self.retryable = retryable
        self.status = status
        super().__init__(message)
