"""The daemon's clock: steps of the system clock (NTP, `date -s`) never make it jump, so
timers measured against it neither fire early nor late by more than the slew."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sentinel.clock import SystemClock


class Machine:
    """A system clock and a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.wall = 1_796_000_000.0
        self.mono = 5_000.0

    def pass_time(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def step(self, seconds: float) -> None:
        self.wall += seconds  # only the system clock jumps


def clock_on(machine: Machine, **options: float) -> SystemClock:
    return SystemClock(lambda: machine.wall, lambda: machine.mono, **options)


events = st.lists(st.tuples(st.floats(0.0, 600.0), st.floats(-7200.0, 7200.0) | st.just(0.0)),
                  min_size=1, max_size=40)


@given(events)
def test_never_jumps_and_durations_stay_within_the_slew(steps: list[tuple[float, float]]
                                                        ) -> None:
    machine = Machine()
    clock = clock_on(machine)
    before = clock.now()
    for elapsed, jump in steps:
        machine.step(jump)
        machine.pass_time(elapsed)
        now = clock.now()
        assert elapsed * (1 - clock.slew) - 1e-6 <= now - before <= \
            elapsed * (1 + clock.slew) + 1e-6
        before = now


def test_a_step_forward_does_not_fire_a_three_minute_timer_early() -> None:
    machine = Machine()
    clock = clock_on(machine)
    due = clock.now() + 180  # the duty officer's tier, 3 minutes after the alarm
    machine.pass_time(30)
    machine.step(3600)  # NTP steps the system clock an hour forward
    machine.pass_time(60)
    assert clock.now() < due
    machine.pass_time(90)
    assert clock.now() >= due - 180 * clock.slew


def test_a_step_back_does_not_delay_a_timer() -> None:
    machine = Machine()
    clock = clock_on(machine)
    due = clock.now() + 180
    machine.step(-3600)
    machine.pass_time(180 / (1 - clock.slew) + 1e-6)  # late by the slew at most
    assert clock.now() >= due


def test_converges_to_the_system_clock_and_reports_the_step_once() -> None:
    machine = Machine()
    clock = clock_on(machine, slew=0.05)
    reports: list[float] = []
    clock.on_step = reports.append
    machine.step(30.0)
    for _ in range(20):
        machine.pass_time(60.0)  # 20 minutes at 5 %: up to 60 s absorbed
        clock.now()
    assert abs(clock.offset()) < 1e-6
    assert reports[0] > 29 and reports[-1] == 0.0 and len(reports) == 2


def test_small_differences_are_not_reported() -> None:
    machine = Machine()
    clock = clock_on(machine)
    reports: list[float] = []
    clock.on_step = reports.append
    machine.step(0.5)
    machine.pass_time(100)
    clock.now()
    assert reports == [] and abs(clock.offset()) < 1e-6
