"""Capped exponential backoff: the one formula every retry loop in the daemon uses.

Bottom layer (standard library only), so any stage may import it.

The n-th delay (n = 0, 1, 2, ...) before jitter is

    ceiling(n) = min(cap, base * factor ** n)

computed without overflow for any n. With `jitter` j (a fraction in [0, 1]) the delay is
drawn uniformly from [max(floor, ceiling(n) * (1 - j)), ceiling(n)]: jitter only shortens
a wait, never lengthens it, so `cap` is a hard upper bound. Jitter exists so that a fleet
of daemons (or the many writers of one) that lost the same server do not come back in
step and knock it over again. `floor` keeps a jittered wait from dropping below a
configured minimum (the TSDB writer's retry_min_delay).

Each site keeps its own counting: a loop that counts failures from 1 passes `failures - 1`
if its first wait should be `base`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol


class Uniform(Protocol):
    """What jitter needs from a random source (random.Random, or the `random` module)."""

    def uniform(self, a: float, b: float) -> float: ...


# The process-wide generator of the `random` module: seeding it (random.seed) seeds the
# jitter of every site that does not pass its own generator.
_SHARED: Uniform = random


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays for consecutive retries: `base` first, times `factor` each time, at most `cap`.

    `jitter` is the fraction by which a delay may be shortened at random (0: none, 0.5:
    anywhere between half and all of it); `floor` is the shortest jittered delay.
    """

    base: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.base) and self.base >= 0):
            raise ValueError(f"backoff base must be a finite number >= 0, not {self.base!r}")
        if not (math.isfinite(self.cap) and self.cap >= 0):
            raise ValueError(f"backoff cap must be a finite number >= 0, not {self.cap!r}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"backoff factor must be a finite number >= 1, not {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff jitter is a fraction in [0, 1], not {self.jitter!r}")
        if not (math.isfinite(self.floor) and self.floor >= 0):
            raise ValueError(f"backoff floor must be a finite number >= 0, not {self.floor!r}")

    def ceiling(self, attempt: int) -> float:
        """The n-th delay without jitter: min(cap, base * factor ** n); n < 0 counts as 0."""
        n = max(attempt, 0)
        if self.base == 0 or self.cap <= self.base:
            return min(self.base, self.cap)
        if self.factor == 1:
            return self.base
        # The cap is reached at n >= log_factor(cap / base): from there on, do not compute
        # the power at all (factor ** n overflows a float for n in the thousands).
        log_factor = math.log(self.factor)
        if n * log_factor >= math.log(self.cap) - math.log(self.base):
            return self.cap
        try:
            return min(self.cap, self.base * self.factor ** n)
        except OverflowError:
            # Below the cap only with a vanishingly small base: take the logarithm's way.
            return min(self.cap, math.exp(math.log(self.base) + n * log_factor))

    def delay(self, attempt: int, rng: Uniform | None = None) -> float:
        """The n-th delay with jitter drawn from `rng` (default: the `random` module)."""
        high = self.ceiling(attempt)
        if self.jitter == 0:
            return high
        low = min(high, max(self.floor, high * (1 - self.jitter)))
        return (rng if rng is not None else _SHARED).uniform(low, high)
