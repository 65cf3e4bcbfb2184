"""The incident stage over its real state database: commit before ack, resume after a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sentinel.clock import FakeClock
from sentinel.config.model import RulesSettings
from sentinel.incidents.model import Outcome
from sentinel.incidents.photos import PhotoRefused, PhotoStore, content_type
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore, add_window, read_events, read_incidents
from sentinel.incidents.windows import Window
from sentinel.loading import Loaded, load_all
from sentinel.types import Reading, Value

from helpers import SHIPPED_CONFIG

LOADED: Loaded = load_all(SHIPPED_CONFIG, {})
T0 = 1_780_030_000.0
HYDRANT = next(d for d in LOADED.inventory.values() if d.kind == "hydrant_pressure")
SMOKE = next(d for d in LOADED.inventory.values() if d.kind == "smoke")
SETTINGS = RulesSettings(startup_grace=3600)


def reading(device_id: str, kind: str, ts: float, **values: Value) -> Reading:
    return Reading(device_id, kind, ts, ts, values)


async def started(path: Path, clock: FakeClock) -> tuple[StateStore, IncidentService]:
    store = StateStore(path)
    await store.__aenter__()
    service = IncidentService(LOADED.rules, LOADED.inventory, store, clock, SETTINGS)
    await service.start()
    return store, service


async def test_process_returns_only_after_the_incident_is_stored(tmp_path: Path) -> None:
    """When process() returns, another connection already sees the incident."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    await service.process([reading(SMOKE.id, "smoke", T0, alarm=True)])
    stored = read_incidents(db, open_only=True)
    assert [(i.name, i.device_id) for i in stored] == [("smoke_alarm", SMOKE.id)]
    await store.__aexit__()


async def test_state_survives_a_crash_and_pending_durations_continue(tmp_path: Path) -> None:
    """Without a clean close: same open incidents after restart, the 60 s hold completes once,
    and replayed readings open nothing new."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    batch = [reading(HYDRANT.id, "hydrant_pressure", T0, pressure=0.08),
             reading(SMOKE.id, "smoke", T0, alarm=True)]
    await service.process(batch)
    before = {i.id: i.severity for i in read_incidents(db, open_only=True)}
    # "kill -9": drop the service without close(); only what was committed remains.
    await store.__aexit__()
    clock.advance(30)
    store, again = await started(db, clock)
    assert {i.id: i.severity for i in again.open_incidents()} == before
    await again.process(batch)          # QoS 1 redelivery of the same readings
    clock.advance(29)
    await again.tick()
    hydrant = next(i for i in again.open_incidents() if i.device_id == HYDRANT.id)
    assert hydrant.severity.label == "warning"
    clock.advance(1)
    await again.tick()
    assert hydrant.severity.label == "critical"
    await again.tick()
    events = read_events(db)
    assert [e.type for e in events if e.incident_id == hydrant.id] == ["opened",
                                                                      "severity_raised"]
    assert len([e for e in events if e.type == "opened"]) == 2
    # New incidents continue the numbering rather than reusing an id.
    elsewhere = next(d for d in LOADED.inventory.values()
                     if d.kind == "smoke" and d.compound != SMOKE.compound)
    await again.process([reading(elsewhere.id, "smoke", T0 + 61, alarm=True)])
    ids = sorted(i.id for i in read_incidents(db))
    assert len(ids) == len(set(ids)) == 3 and ids[-1].endswith("-0003")
    await store.__aexit__()


async def test_commands_and_event_stream(tmp_path: Path) -> None:
    """Acknowledge and resolve are committed and streamed in order to subscribers."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    waiter = asyncio.create_task(service.events_after(0, wait=5.0))
    await asyncio.sleep(0)
    await service.process([reading(SMOKE.id, "smoke", T0, alarm=True)])
    first = await waiter
    assert [e.type for e in first] == ["opened"]
    inc_id = first[0].incident_id
    await service.acknowledge(inc_id, "grid worker", "on my way")
    await service.resolve(inc_id, "duty officer", Outcome.HANDLED, "kitchen smoke")
    events = await service.events_after(first[-1].seq)
    assert [(e.type, e.actor) for e in events] == [("acknowledged", "grid worker"),
                                                   ("resolved", "duty officer")]
    assert [e.seq for e in read_events(db)] == [1, 2, 3]
    assert read_incidents(db, open_only=True) == []
    await store.__aexit__()


async def test_silence_added_from_outside_applies_on_next_tick(tmp_path: Path) -> None:
    """A silence written to the state database by an operator is in force after a tick."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    window = add_window(db, Window(0, "silence", {"device": SMOKE.id}, T0 - 1, T0 + 600,
                                   "物业", "detector cleaning", kinds=("smoke",),
                                   life_safety=True), T0)
    await service.tick()
    await service.process([reading(SMOKE.id, "smoke", T0 + 1, alarm=True)])
    muted = service.windows.muted_by(service.open_incidents()[0], T0 + 1)
    assert muted is not None and muted.id == window and muted.life_safety
    await store.__aexit__()


async def test_system_incident_is_persisted(tmp_path: Path) -> None:
    """sentinel's own conditions (spool nearly full) are incidents like any other."""
    db = tmp_path / "incidents.sqlite3"
    store, service = await started(db, FakeClock(T0))
    await service.system("spool_nearly_full", True, used_bytes=1000)
    assert [i.name for i in read_incidents(db, open_only=True)] == ["spool_nearly_full"]
    await service.system("spool_nearly_full", False)
    assert read_incidents(db, open_only=True) == []
    await store.__aexit__()


async def test_a_follower_cancelled_as_an_event_arrives_stops(tmp_path: Path) -> None:
    """A loop following the event stream stops when cancelled in the same loop iteration
    as a commit wakes it (Python 3.11's wait_for lost that cancel: the daemon hung on
    SIGTERM because its MQTT publisher kept running)."""
    clock = FakeClock(T0)
    store, service = await started(tmp_path / "incidents.sqlite3", clock)
    woke = 0

    async def follow() -> None:
        nonlocal woke
        seq = service.last_seq
        while True:
            for event in await service.events_after(seq, wait=5.0):
                seq = event.seq
            woke += 1

    for i in range(20):
        task = asyncio.get_running_loop().create_task(follow())
        await asyncio.sleep(0.01)  # the follower is waiting for an event
        seq = service.last_seq
        await service.system("spool_nearly_full", i % 2 == 0)  # opens or clears: commits
        assert service.last_seq > seq
        task.cancel()
        await asyncio.sleep(0.05)
        assert task.done(), "the cancelled follower is still running"
        assert task.cancelled()
    await store.__aexit__()


async def test_an_alarm_commits_before_the_telemetry_of_its_batch_is_evaluated(
        tmp_path: Path) -> None:
    """In a batch of 300 telemetry readings and one smoke alarm, the alarm's incident
    commits after one reading was evaluated, not 301; its device's readings stay in order."""
    db = tmp_path / "incidents.sqlite3"
    store, service = await started(db, FakeClock(T0))
    evaluated_at_commit: list[int] = []

    def record(events: object, changed: object, now: float) -> None:
        evaluated_at_commit.append(service.evaluated)

    service.same_commit = record  # type: ignore[assignment]
    hydrants = [d for d in LOADED.inventory.values() if d.kind == "hydrant_pressure"]
    telemetry = [reading(h.id, "hydrant_pressure", T0 + i, pressure=0.35)
                 for i in range(4) for h in hydrants][:300]
    batch = [*telemetry[:150], reading(SMOKE.id, "smoke", T0, alarm=False),
             reading(SMOKE.id, "smoke", T0 + 1, alarm=True), *telemetry[150:]]
    await service.process(batch)
    assert evaluated_at_commit[0] == 2, evaluated_at_commit
    assert service.evaluated == len(batch)
    assert [i.name for i in read_incidents(db, open_only=True)] == ["smoke_alarm"]
    await store.__aexit__()


async def test_take_is_one_commit_and_survives_a_restart(tmp_path: Path) -> None:
    """"我去处理" (acknowledge + assign) is committed at once; the assignee, the first note
    and the audit events read back after a restart."""
    db = tmp_path / "incidents.sqlite3"
    clock = FakeClock(T0)
    store, service = await started(db, clock)
    await service.process([reading(SMOKE.id, "smoke", T0, alarm=True)])
    [inc] = service.open_incidents()
    commits = store.commits
    clock.advance(40)
    await service.assign(inc.id, "zhang_wei", "zhang_wei", acknowledge=True)
    assert store.commits == commits + 1
    clock.advance(260)
    await service.note(inc.id, "zhang_wei", "已到场", photo="ab.jpg")
    await store.__aexit__()
    store, again = await started(db, clock)
    [back] = again.open_incidents()
    assert (back.status.value, back.acknowledged_by, back.assigned_to) == (
        "acknowledged", "zhang_wei", "zhang_wei")
    assert (back.assigned_at, back.first_note_at) == (T0 + 40, T0 + 300)
    events = [e for e in read_events(db) if e.incident_id == inc.id]
    assert [e.type for e in events] == ["opened", "acknowledged", "assigned", "noted"]
    assert events[3].data == {"text": "已到场", "photo": "ab.jpg"}
    await store.__aexit__()


def test_photo_store_keeps_images_only_within_the_limit(tmp_path: Path) -> None:
    """Photos are recognised by their bytes, stored once under their hash, size-limited;
    anything else (or an id from outside) is refused."""
    store = PhotoStore(tmp_path / "photos", max_bytes=1000)
    jpeg = b"\xff\xd8\xff\xe0" + b"\x01" * 100
    photo_id = store.save(jpeg)
    assert photo_id.endswith(".jpg") and store.save(jpeg) == photo_id
    assert store.read(photo_id) == jpeg and content_type(photo_id) == "image/jpeg"
    assert [p.name for p in (tmp_path / "photos").iterdir()] == [photo_id]
    for bad, why in ((b"", "empty"), (b"\xff\xd8\xff" + b"0" * 1000, "over the limit"),
                     (b"<svg onload=alert(1)>", "not a JPEG")):
        with pytest.raises(PhotoRefused, match=why):
            store.save(bad)
    assert store.read("../incidents.sqlite3") is None and store.read("0" * 64 + ".png") is None
