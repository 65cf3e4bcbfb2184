"""The one backoff formula: grows by its factor up to the cap, jitter stays in bounds, and it
reproduces what each retry loop of the daemon waited before it was shared."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.backoff import Backoff

bases = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
caps = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
factors = st.floats(min_value=1.0, max_value=100.0, allow_nan=False, allow_infinity=False)
jitters = st.floats(min_value=0.0, max_value=1.0)
attempts = st.integers(min_value=-5, max_value=10**9)


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    """Any valid backoff, floor included."""
    return Backoff(base=draw(bases), cap=draw(caps), factor=draw(factors),
                   jitter=draw(jitters), floor=draw(st.floats(0.0, 1e6)))


@given(backoffs(), attempts, attempts)
def test_ceiling_is_monotone_up_to_the_cap(backoff: Backoff, a: int, b: int) -> None:
    """A later attempt never waits less than an earlier one (before jitter)."""
    first, second = sorted((a, b))
    assert backoff.ceiling(first) <= backoff.ceiling(second)


@given(backoffs(), attempts, st.integers(0, 2**32))
def test_delay_never_exceeds_the_cap(backoff: Backoff, attempt: int, seed: int) -> None:
    """No delay, jittered or not, is longer than the cap."""
    assert backoff.ceiling(attempt) <= backoff.cap
    assert backoff.delay(attempt, random.Random(seed)) <= backoff.cap


@given(backoffs(), attempts, st.integers(0, 2**32))
def test_jitter_stays_within_its_fraction(backoff: Backoff, attempt: int, seed: int) -> None:
    """Jitter only shortens a delay, by at most its fraction, and not below the floor."""
    high = backoff.ceiling(attempt)
    delay = backoff.delay(attempt, random.Random(seed))
    low = min(high, max(backoff.floor, high * (1 - backoff.jitter)))
    assert low <= delay <= high


@given(st.floats(1e-9, 1e3), st.floats(1e-9, 1e6), st.floats(1.5, 100.0),
       st.integers(10**3, 10**18))
def test_huge_attempts_do_not_overflow(base: float, cap: float, factor: float,
                                       attempt: int) -> None:
    """A retry loop that has failed for years still gets the cap, not an OverflowError."""
    backoff = Backoff(base=base, cap=cap, factor=factor, jitter=0.5)
    # From 1,000 attempts on even a factor of 1.5 has passed any cap (1e6 / 1e-9 < 1.5**90).
    assert backoff.ceiling(attempt) == cap
    assert backoff.delay(attempt, random.Random(1)) <= cap


@given(st.floats(1e-6, 10.0), st.floats(1e-6, 1e4), st.integers(0, 40))
def test_ceiling_is_the_capped_power(base: float, cap: float, attempt: int) -> None:
    """Below the cap the n-th delay is base * 2**n, as the loops computed it before."""
    assert Backoff(base=base, cap=cap).ceiling(attempt) == pytest.approx(
        min(cap, base * 2**attempt), rel=1e-12)


def test_delays_double_from_base_until_the_cap() -> None:
    """0.2 s, 0.4 s, 0.8 s ... and then 5 s for ever (the tail's reconnect)."""
    backoff = Backoff(base=0.2, cap=5.0)
    assert [backoff.delay(n) for n in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_the_store_writers_jitter_matches_its_old_formula() -> None:
    """The TSDB writer's delays are the same draws from the same generator as before."""
    backoff = Backoff(base=0.5, cap=2.0, jitter=0.5, floor=0.5)
    ours, theirs = random.Random(7), random.Random(7)
    for failures in range(1, 12):
        base = min(2.0, 0.5 * 2.0 ** min(failures - 1, 60))
        assert backoff.delay(failures - 1, ours) == theirs.uniform(max(0.5, base / 2), base)


def test_jitter_takes_its_randomness_from_the_random_module_by_default() -> None:
    """Seeding `random` makes the default jitter repeatable (tests rely on that)."""
    backoff = Backoff(base=0.2, cap=30.0, jitter=0.5)
    random.seed(3)
    first = [backoff.delay(n) for n in range(10)]
    random.seed(3)
    assert [backoff.delay(n) for n in range(10)] == first
    assert len(set(first)) > 1


@pytest.mark.parametrize("fields", [
    {"base": -1.0, "cap": 1.0}, {"base": 1.0, "cap": float("inf")},
    {"base": 1.0, "cap": 2.0, "factor": 0.5}, {"base": 1.0, "cap": 2.0, "jitter": 1.5},
    {"base": float("nan"), "cap": 2.0}, {"base": 1.0, "cap": 2.0, "floor": -0.1},
])
def test_nonsense_parameters_are_refused(fields: dict[str, float]) -> None:
    """A negative, infinite or NaN delay, a shrinking factor or jitter above 1 is an error."""
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**fields)


@given(st.integers(0, 60))
def test_the_result_commit_retry_is_reproduced(attempt: int) -> None:
    """Backoff(0.1, 5.0).delay(n) is notify's old result-commit wait min(5, 0.1 * 2**n)."""
    assert Backoff(base=0.1, cap=5.0).delay(attempt) == pytest.approx(
        min(5.0, 0.1 * 2**attempt), rel=1e-12)


@given(st.floats(0.01, 60.0), st.floats(0.01, 3600.0), st.integers(1, 60))
def test_the_delivery_retry_is_reproduced(low: float, high: float, attempt: int) -> None:
    """Backoff(retry_min, retry_max).delay(attempt - 1) is escalation's old delivery wait."""
    assert Backoff(base=low, cap=high).delay(attempt - 1) == pytest.approx(
        min(high, low * 2 ** (attempt - 1)), rel=1e-12)
