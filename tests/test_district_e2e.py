"""Issue 18's acceptance, end to end: three community boxes, each a `sentinel run` with its own
mosquitto bridged (through a cuttable TCP proxy) to a district mosquitto, and the district
daemon (`sentinel district`) as a real process; pages to a real receiver (tests/district_rig).

The uplink cut here is short (CUT seconds, same mechanics: the bridge's connection is reset
and new ones refused, so the box's broker queues); bench/district_outage.py holds it down
for the issue's 60 s and for 10 minutes under load, outside CI. Time is driven by the rig's
test-sized intervals (heartbeat 1 s, offline_after 3 s), never by long sleeps.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.district import wire
from sentinel.escalation.model import Role

from daemon import LOADED, wait_until
from district_rig import (
    PREFIX,
    DistrictRig,
    heartbeat_of,
    http,
    links_in,
    page_text,
    smoke_detectors,
    start_rig,
)
from fault_proxy import FaultProxy
from receivers import ReceivedRequest
from servers import Mosquitto, bridge_lines

# The 60 s (DISTRICT_CUT shortens it for a quick local run).
CUT = float(os.environ.get("DISTRICT_CUT", "60"))
DUTY_AFTER = 8.0           # the box's climb: duty officer after 8 s unacknowledged
DETECTORS = smoke_detectors()
DUTY_OFFICERS = {c.id for c in LOADED.oncall.contact if c.role == Role.DUTY_OFFICER}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistrictRig]:
    """One district and three boxes for the whole module (the tests use different
    communities, and each leaves the rig as it found it: links up, every daemon running)."""
    started = time.monotonic()
    district = start_rig(tmp_path_factory.mktemp("district-rig"), duty_after=DUTY_AFTER)
    print(f"rig up in {time.monotonic() - started:.1f} s\n{district.describe()}")
    try:
        for community in district.boxes:
            assert wait_until(lambda c=community: _online(district, c), 15), (
                f"{community}'s heartbeat never reached the district broker")
        yield district
    finally:
        district.close()


def _online(rig: DistrictRig, community: str) -> bool:
    beat = heartbeat_of(rig.client, community)
    return beat is not None and beat.state == "online"


def _bridge_state(rig: DistrictRig, community: str) -> bytes | None:
    seen = rig.client.seen(wire.topic(PREFIX, community, wire.BRIDGE))
    return seen[-1][1] if seen else None


def _mentions(rig: DistrictRig, community: str, pages: list[ReceivedRequest]) -> list[str]:
    box = rig.box(community)
    texts = [page_text(p) for p in pages]
    return [t for t in texts if box.id in t or box.name in t]


# ---------------------------------------------------------------------------------------
# The rig's own mechanics (no sentinel process): a cut holds messages on the box's broker
# ---------------------------------------------------------------------------------------


def test_rig_bridge_holds_messages_through_a_cut_and_delivers_them_in_order(
        tmp_path: Path) -> None:
    """What every acceptance test below relies on, on the real mosquitto: the bridge
    carries the box's topics up (retained stays retained) and commands down, reports its
    state on <prefix>/<community>/bridge ("0" as its will on the district when the link
    dies), and QoS 1 messages published during a cut reach the district once, in order."""
    with Mosquitto(tmp_path / "district") as district, \
            FaultProxy(district.port) as proxy, \
            Mosquitto(tmp_path / "box", extra_config=bridge_lines("c1", proxy.port)) as box:
        got: list[tuple[str, bytes, bool]] = []
        lock = threading.Lock()

        def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
            with lock:
                got.append((m.topic, m.payload, bool(m.retain)))

        def client(port: int, name: str, *topics: str) -> mqtt.Client:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
            c.on_message = on_message
            c.connect("127.0.0.1", port)
            for t in topics:
                c.subscribe(t, qos=1)
            c.loop_start()
            return c

        def events() -> list[int]:
            with lock:
                return [json.loads(p)["seq"] for t, p, _ in got if t == "sentinel/c1/events"]

        def bridge() -> list[bytes]:
            with lock:
                return [p for t, p, _ in got if t == "sentinel/c1/bridge"]

        def send(port: int, messages: list[tuple[str, bytes, bool]]) -> None:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{port}")
            c.connect("127.0.0.1", port)
            c.loop_start()
            for info in [c.publish(t, p, qos=1, retain=r) for t, p, r in messages]:
                info.wait_for_publish(10)
            c.disconnect()
            c.loop_stop()

        watcher = client(district.port, "district-watch", "sentinel/#")
        boxside = client(box.port, "box-watch", "sentinel/c1/commands")
        assert wait_until(lambda: b"1" in bridge(), 10, 0.02), "the bridge never came up"
        send(box.port, [("sentinel/c1/heartbeat", b'{"state":"online"}', True)])
        send(district.port, [("sentinel/c1/commands", b"cmd", False)])
        send(box.port, [("sentinel/c1/events", json.dumps({"seq": i}).encode(), False)
                        for i in range(1, 51)])
        assert wait_until(lambda: events() == list(range(1, 51)), 10, 0.02)
        with lock:
            assert ("sentinel/c1/commands", b"cmd", False) in got, "commands come down"
        late = client(district.port, "late", "sentinel/c1/heartbeat")
        assert wait_until(lambda: ("sentinel/c1/heartbeat", b'{"state":"online"}', True)
                          in got, 5, 0.02), "the heartbeat is retained on the district"

        box_side_cut = time.monotonic()
        proxy.refuse(True)
        proxy.cut()
        assert wait_until(lambda: bridge()[-1:] == [b"0"], 10, 0.02), "no bridge will"
        will_after = time.monotonic() - box_side_cut
        send(box.port, [("sentinel/c1/events", json.dumps({"seq": i}).encode(), False)
                        for i in range(51, 551)])
        time.sleep(1.0)
        assert events() == list(range(1, 51)), "nothing crosses a cut link"
        restored = time.monotonic()
        proxy.refuse(False)
        assert wait_until(lambda: len(events()) >= 550, 15, 0.02), len(events())
        print(f"bridge will after {will_after:.2f} s; 500 held messages delivered "
              f"{time.monotonic() - restored:.2f} s after the link returned")
        assert events() == list(range(1, 551)), "every message once, in order"
        assert bridge()[-1] == b"1"
        for c in (watcher, boxside, late):
            c.disconnect()
            c.loop_stop()


# ---------------------------------------------------------------------------------------
# Acceptance
# ---------------------------------------------------------------------------------------


def test_uplink_cut_pages_locally_then_the_district_holds_every_event_once_in_order(
        rig: DistrictRig) -> None:
    """Cut one box's uplink while it has alarms: its local pages still leave within 1 s;
    after the link returns the district holds every event of that box once, in order."""
    box = rig.box("shuibei")
    box.cut()
    assert wait_until(lambda: _bridge_state(rig, box.id) == b"0", 10, 0.05), (
        "the district broker never published the bridge's will")
    cut_at = time.monotonic()
    before = box.seqs()
    for n, device in enumerate(DETECTORS[:2]):
        seen = len(rig.pages(f"/{box.id}/"))
        t0 = box.alarm(device)
        box.wait_incident(device)
        assert wait_until(lambda s=seen: len(rig.pages(f"/{box.id}/")) > s, 10, 0.02)
        page = rig.pages(f"/{box.id}/")[seen]
        assert page.received_at - t0 < 1.0, (
            f"alarm {n}: the local page took {page.received_at - t0:.2f} s during the cut")
    new = [s for s in box.seqs() if s not in set(before)]
    assert new, "the alarms wrote no events"
    time.sleep(max(0.0, cut_at + CUT - time.monotonic()))
    assert not set(new) & set(rig.district.mirrored(box.id)), "events crossed a cut link"

    restored = time.monotonic()
    box.restore()
    assert wait_until(lambda: rig.caught_up(box.id), 30, 0.1), (
        f"after the cut the district has {rig.district.mirrored(box.id)}, "
        f"the box {box.seqs()}")
    print(f"{len(new)}+ events held {CUT:g} s; the district had them all "
          f"{time.monotonic() - restored:.2f} s after the link returned")
    arrival = rig.district.mirrored(box.id, arrival=True)
    assert arrival == sorted(set(arrival)), "committed in order, each once"
    assert wait_until(lambda: _online(rig, box.id), 10)


def test_a_district_acknowledgement_reaches_the_box_once_and_stops_its_climb(
        rig: DistrictRig) -> None:
    """Acknowledge from the district board: the box records it once, as district:<person>
    with the person's name, and its climb stops; pressing again, or the same signed
    command delivered twice, changes nothing (the box answers a replay as one); a command
    signed with another key is refused."""
    box = rig.box("cuizhu")
    device = DETECTORS[2]
    t0 = box.alarm(device)
    inc = box.wait_incident(device)
    opened = next(e.seq for e in box.events_of(inc.id) if e.type == "opened")
    assert wait_until(lambda: opened in rig.district.mirrored(box.id), 10, 0.05), (
        "the district never mirrored the incident")

    fields = {"incident": inc.id, "actor": "district:so-a", "name": "朱洁"}
    forged_id, forged = rig.client.sign(box.id, "ack", fields, key=b"k" * 32)
    rig.client.publish(box.id, forged)
    refused = rig.client.reply_to(forged_id, 10)
    assert refused["ok"] is False and refused["error"] == "forged", refused
    assert next(i for i in box.incidents() if i.id == inc.id).status.value == "firing"

    board = rig.district.board_login("so-a")
    status, body = board.act(box.id, inc.id)
    assert status == 200 and "社区主机已确认" in body, (status, body[:800])
    state = next(i for i in box.incidents() if i.id == inc.id)
    assert state.status.value == "acknowledged" and state.acknowledged_by == "district:so-a"
    status, body = board.act(box.id, inc.id)  # a second press
    assert status == 200, (status, body[:800])

    command_id, payload = rig.client.sign(box.id, "ack", fields)
    rig.client.publish(box.id, payload)
    first = rig.client.reply_to(command_id, 10)
    assert first["ok"] is True and not first["replayed"], first
    rig.client.publish(box.id, payload)  # a duplicate delivery of the same command
    again = rig.client.reply_to(command_id, 10, nth=2)
    assert again["ok"] is True and again["replayed"] is True, again

    acked = [e for e in box.events_of(inc.id) if e.type == "acknowledged"]
    assert len(acked) == 1, acked
    assert acked[0].actor == "district:so-a"
    assert "朱洁" in json.dumps(dict(acked[0].data), ensure_ascii=False)

    # The climb stopped: nobody past the first tier, after the duty officer's step.
    time.sleep(max(0.0, t0 + DUTY_AFTER + 1.5 - time.time()))
    paged = {r.path.rsplit("/", 1)[-1] for r in rig.pages(f"/{box.id}/")}
    assert not paged & DUTY_OFFICERS, f"the duty officer was paged after the ack: {paged}"
    assert wait_until(lambda: rig.caught_up(box.id), 10, 0.1), "the ack reached the mirror"


def test_a_link_opened_at_the_district_acknowledges_on_the_box_exactly_once(
        rig: DistrictRig) -> None:
    """A page's one-tap link points at the district, which relays it to the box: GET shows
    the box's page (its CSP too), POST acknowledges once as the link's person, a second
    POST gets the box's "already used", a forged token the box's refusal."""
    box = rig.box("tianbei")
    device = DETECTORS[3]
    seen = len(rig.pages(f"/{box.id}/"))
    box.alarm(device)
    inc = box.wait_incident(device)
    assert wait_until(lambda: len(rig.pages(f"/{box.id}/")) > seen, 10, 0.05)
    page = rig.pages(f"/{box.id}/")[seen]
    person = page.path.rsplit("/", 1)[-1]
    links = links_in(page_text(page))
    assert links, f"no district link in the page:\n{page_text(page)}"
    link = links[0]
    assert link.startswith(f"{rig.district.url}/c/{box.id}/a/"), link

    status, headers, body = http("GET", link)
    assert status == 200 and "<form" in body, (status, body[:500])
    assert "Content-Security-Policy" in headers, headers
    assert next(i for i in box.incidents() if i.id == inc.id).status.value == "firing"

    token = urllib.parse.urlsplit(link).path.rsplit("/", 1)[-1]
    forged = link[: -len(token)] + token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    status, _, body = http("POST", forged)
    assert status == 403 and "链接无效" in body, (status, body[:500])

    status, _, body = http("POST", link)
    assert status == 200, (status, body[:500])
    state = next(i for i in box.incidents() if i.id == inc.id)
    assert state.status.value == "acknowledged" and state.acknowledged_by == person
    status, _, body = http("POST", link)
    assert status == 410 and "链接已使用过" in body, (status, body[:500])
    assert len([e for e in box.events_of(inc.id) if e.type == "acknowledged"]) == 1


def test_an_unreachable_box_gives_the_call_the_phone_page_within_5_s(
        rig: DistrictRig) -> None:
    """A link of a box the district cannot reach: a clear page with the community's duty
    phone, within 5 s when the box just does not answer (a stalled link the district
    still thinks is up), at once when the district knows it is offline."""
    box = rig.box("tianbei")
    device = DETECTORS[4]
    seen = len(rig.pages(f"/{box.id}/"))
    box.alarm(device)
    box.wait_incident(device)
    assert wait_until(lambda: len(rig.pages(f"/{box.id}/")) > seen, 10, 0.05)
    link = links_in(page_text(rig.pages(f"/{box.id}/")[seen]))[0]

    box.proxy.stall()  # half-open: bytes held, sockets open, no will yet
    started = time.monotonic()
    status, _, body = http("GET", link)
    took = time.monotonic() - started
    assert took < 5.0 and box.phone in body, (took, status, body[:500])

    box.cut()
    assert wait_until(lambda: _bridge_state(rig, box.id) == b"0", 10, 0.05)
    time.sleep(0.5)  # the district daemon has read the will too
    started = time.monotonic()
    status, _, body = http("GET", link)
    took_offline = time.monotonic() - started
    assert took_offline < 2.0 and box.phone in body, (took_offline, status, body[:500])
    print(f"no answer: the phone page after {took:.2f} s; offline: after {took_offline:.2f} s")

    box.restore()
    assert wait_until(lambda: _bridge_state(rig, box.id) == b"1", 15, 0.05)


def test_kill_9_a_box_opens_box_offline_and_pages_the_street_office(
        rig: DistrictRig) -> None:
    """kill -9 of a box's daemon: its will reaches the district, which opens box_offline
    and pages the street office's roster (well within the issue's 60 s); when the box is
    back the incident resolves and the people paged hear of it."""
    box = rig.box("cuizhu")
    assert box.daemon is not None
    seen = len(rig.pages("/district/"))
    killed = time.time()
    box.daemon.kill()
    assert wait_until(lambda: _mentions(rig, box.id, rig.pages("/district/")[seen:]), 60, 0.05), (
        f"no street-office page naming {box.id} within 60 s: "
        f"{[page_text(p) for p in rig.pages('/district/')[seen:]]}")
    page = next(p for p in rig.pages("/district/")[seen:]
                if _mentions(rig, box.id, [p]))
    print(f"box_offline paged {page.received_at - killed:.2f} s after kill -9")
    assert page.received_at - killed < 60.0
    [dark] = [i for i in rig.district.incidents()
              if i.name == "box_offline" and i.target == box.id and i.open]
    assert dark.severity.label == "critical" and dark.opened_at - killed < 60.0, dark

    paged = len(rig.pages("/district/"))
    rig.restart_box(box.id)
    assert wait_until(lambda: _online(rig, box.id), 15, 0.05)
    assert wait_until(lambda: _mentions(rig, box.id, rig.pages("/district/")[paged:]), 20, 0.1), (
        "no resolution notice to the street office after the box came back")
    assert not next(i for i in rig.district.incidents() if i.id == dark.id).open


def test_kill_9_the_district_during_a_burst_then_every_event_once(rig: DistrictRig) -> None:
    """kill -9 of the district daemon while every box raises alarms; after the restart
    the district holds every event of every box once (its broker kept the session)."""
    devices = DETECTORS[5:15]

    def burst(community: str) -> None:
        box = rig.box(community)
        for device in devices:
            box.alarm(device)
            time.sleep(0.1)

    threads = [threading.Thread(target=burst, args=(c,)) for c in rig.boxes]
    for t in threads:
        t.start()
    time.sleep(0.4)  # mid-burst: alarms still coming, the mirror committing
    rig.district.kill()
    for t in threads:
        t.join(30)
    for community in rig.boxes:
        rig.box(community).wait_incident(devices[-1])
    restarted = time.monotonic()
    rig.district.start()
    for community in rig.boxes:
        assert wait_until(lambda c=community: rig.caught_up(c), 30, 0.1), (
            f"{community}: the district has {rig.district.mirrored(community)}, "
            f"the box {rig.box(community).seqs()}")
        mirrored = rig.district.mirrored(community)
        assert len(mirrored) == len(set(mirrored)), "an event twice"
    print(f"caught up {time.monotonic() - restarted:.2f} s after the restart "
          f"({sum(len(rig.box(c).seqs()) for c in rig.boxes)} events in all)")
