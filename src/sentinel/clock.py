"""Time sources. Decisions take `now` from a Clock so tests can drive time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, epoch seconds (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never jumps (timers use this)."""
        ...


class SystemClock:
    """Wall-clock time that advances with the monotonic clock and never jumps.

    An NTP step, or someone's `date -s`, moves the system clock at once. Timers measured
    against it would then fire wrongly: a step forward pages every escalation tier at once
    and makes every device look offline; a step back delays a fire's escalation by the size
    of the step. This clock advances exactly with CLOCK_MONOTONIC and takes in a difference
    from the system clock gradually, by at most `slew` of the time that passes (2 %: a
    3-minute escalation step is off by 3.6 s at worst), so it converges to the system clock
    without a jump. A difference above `step` seconds is reported once through `on_step`
    (offset in seconds), and again with 0.0 once it has been absorbed.

    Start the daemon after the clock is synchronised (the systemd unit waits for
    time-sync.target): at boot an edge box without a battery-backed clock may be far off.
    """

    def __init__(self, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic, *, slew: float = 0.02,
                 step: float = 2.0) -> None:
        if not 0 < slew < 1:
            raise ValueError("slew is a fraction of elapsed time, between 0 and 1")
        self._wall = wall
        self._mono = mono
        self.slew = slew
        self.step = step
        self.on_step: Callable[[float], None] | None = None
        self._lock = threading.Lock()
        self._last_mono = mono()
        self._last_now = wall()
        self._stepped = False

    def now(self) -> float:
        with self._lock:
            mono = self._mono()
            elapsed = mono - self._last_mono
            steady = self._last_now + elapsed
            offset = self._wall() - steady
            most = elapsed * self.slew
            steady += min(max(offset, -most), most)
            self._last_mono, self._last_now = mono, steady
            report = None
            if not self._stepped and abs(offset) > self.step:
                self._stepped, report = True, offset
            elif self._stepped and abs(offset) <= self.step / 2:
                self._stepped, report = False, 0.0
        if report is not None and self.on_step is not None:
            self.on_step(report)
        return steady

    def offset(self) -> float:
        """System clock minus this clock, seconds (what is still being absorbed)."""
        return self._wall() - self.now()

    def monotonic(self) -> float:
        return self._mono()


class FakeClock:
    """A clock that moves only when told to; for tests of time-based decisions."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds
