"""Steps of the system clock (an NTP step, `date -s`) while an escalation is running: the
next tier comes on time, neither at once (a step forward) nor an hour late (a step back),
and the step is reported as a clock_stepped incident.

The system clock of this machine must not be touched by a test, so the daemon runs in
process with its SystemClock reading a system clock the test steps (the one fault a real
clock cannot produce on demand); the broker, the stores and the deliveries are real.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from sentinel.app import run_daemon
from sentinel.clock import SystemClock
from sentinel.config.inventory import Device
from sentinel.control.links import LinkSigner
from sentinel.control.secrets import link_key
from sentinel.decode.encode import encode
from sentinel.incidents.store import read_incidents
from sentinel.runtime import Daemon

from daemon import LOADED, Publisher, write_oncall
from receivers import HttpReceiver, ReceivedRequest
from servers import Mosquitto
from test_metrics import load

OFFICER_AFTER = 4.0


def write_policies(path: Path) -> Path:
    path.write_text("\n".join([
        'ack_timeout = "30m"', "[storm]", 'window = "1s"',
        "[[policy]]", 'name = "smoke"', 'match = { incidents = ["smoke_alarm"] }',
        "[[policy.step]]", "after = 0", 'notify = ["grid_worker"]',
        "[[policy.step]]", f"after = {OFFICER_AFTER}", 'notify = ["duty_officer"]',
        "[[policy]]", 'name = "system"', 'match = { kinds = ["system"] }',
        "[[policy.step]]", "after = 0", 'notify = ["duty_officer"]']) + "\n", encoding="utf-8")
    return path


class SteppedWall:
    """time.time() plus an offset the test changes at once, as a step would."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def smoke_alarm(device: Device, ts: float) -> list[tuple[str, bytes]]:
    return encode(LOADED.profiles[device.profile], device,
                  {"alarm": True, "battery": 90.0}, round(ts, 3), LOADED.kinds)


@pytest.mark.parametrize("step", [3600.0, -3600.0], ids=["forward", "back"])
async def test_a_clock_step_neither_hurries_nor_delays_the_next_tier(
        mosquitto: Mosquitto, tmp_path: Path, step: float) -> None:
    wall = SteppedWall()
    clock = SystemClock(wall)
    device = LOADED.inventory["SB-SMK-0001"]
    with HttpReceiver() as hooks:
        oncall = write_oncall(tmp_path / "contacts.yaml", {
            c.id: [hooks.url("json", f"/{c.id}")] for c in LOADED.oncall.contact})
        loaded = load(tmp_path, mosquitto.port, hooks.url("json", "/unused"),
                      escalation__policies=str(write_policies(tmp_path / "steps.toml")),
                      escalation__oncall=str(oncall))
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(run_daemon(loaded, stop, on_ready=lambda _: ready.set(),
                                              clock=clock))
        try:
            await asyncio.wait_for(ready.wait(), 20)
            publisher = Publisher(mosquitto.port)
            alarm_at = time.time()
            for topic, payload in smoke_alarm(device, clock.now()):
                publisher.publish(topic, payload)
            await wait_for(lambda: len(hooks.requests) >= 1, 10)
            wall.offset = step  # the system clock jumps an hour
            await wait_for(lambda: officer_pages(hooks), OFFICER_AFTER + 4)
            first = min(r.received_at for r in officer_pages(hooks)) - alarm_at
            assert OFFICER_AFTER * 0.95 <= first <= OFFICER_AFTER * 1.1 + 1.0, first
            db = loaded.settings.incidents.path
            await wait_for(lambda: any(i.name == "clock_stepped"
                                       for i in read_incidents(db)), 10)
            publisher.close()
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


def officer_pages(hooks: HttpReceiver) -> list[ReceivedRequest]:
    """The duty officer's pages about the smoke alarm (not about the clock step)."""
    return [r for r in hooks.requests
            if r.path.startswith("/do-") and b"SB-SMK-0001" in r.body]


async def wait_for(predicate: object, within: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_links_are_judged_by_the_daemons_clock(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A link the daemon signed opens and acknowledges by the daemon's clock, not time.time()."""
    wall = SteppedWall()
    # The daemon's time source reads 2 h behind this process's time.time(): a 10-minute link
    # it signs is long expired by time.time(), and must still work.
    wall.offset = -7200.0
    clock = SystemClock(wall)
    device = LOADED.inventory["SB-SMK-0001"]
    with HttpReceiver() as hooks:
        oncall = write_oncall(tmp_path / "contacts.yaml", {
            c.id: [hooks.url("json", f"/{c.id}")] for c in LOADED.oncall.contact})
        loaded = load(tmp_path, mosquitto.port, hooks.url("json", "/unused"),
                      escalation__policies=str(write_policies(tmp_path / "steps.toml")),
                      escalation__oncall=str(oncall), control__enabled="true",
                      control__port="0", control__link_ttl="600")
        stop = asyncio.Event()
        ready: asyncio.Future[Daemon] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(run_daemon(loaded, stop, on_ready=ready.set_result,
                                              clock=clock))
        try:
            daemon = await asyncio.wait_for(ready, 20)
            assert daemon.control is not None
            publisher = Publisher(mosquitto.port)
            for topic, payload in smoke_alarm(device, clock.now()):
                publisher.publish(topic, payload)
            db = loaded.settings.incidents.path
            await wait_for(lambda: any(i.name == "smoke_alarm" for i in read_incidents(db)), 10)
            [incident] = [i for i in read_incidents(db) if i.name == "smoke_alarm"]
            contact = LOADED.oncall.contact[0].id
            token = LinkSigner(link_key(loaded.settings), 600).sign(incident.id, contact,
                                                                    clock.now())
            url = f"{daemon.control.url}/a/{token}"
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as shown:
                    assert shown.status == 200, await shown.text()
                async with http.post(url) as tapped:
                    assert tapped.status == 200, await tapped.text()
            await wait_for(lambda: any(i.id == incident.id and i.acknowledged_by
                                       == contact for i in read_incidents(db)), 10)
            publisher.close()
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
