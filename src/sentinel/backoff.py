"""Capped exponential backoff: the one formula every retry loop of sentinel uses."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """The n-th delay (n = 0, 1, ...): `base` × `factor`ⁿ, at most `cap`, then shortened
    by a random fraction of up to `jitter` (0.5: between half and all of it), so that
    many clients retrying at once spread out."""

    base: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("backoff needs 0 < base <= cap, factor >= 1, 0 <= jitter <= 1")

    def delay(self, n: int) -> float:
        """The delay before retry number n + 1 (never above `cap`, never negative)."""
        steps = max(0, n)
        # Compared in logarithms: base × factorⁿ overflows a float long before n is huge.
        if self.factor > 1 and steps >= math.log(self.cap / self.base, self.factor):
            full = self.cap
        else:
            full = min(self.cap, self.base * self.factor ** steps)
        if self.jitter:
            full *= 1.0 - self.jitter * self.rng()
        return full
