#!/usr/bin/env python3
"""The long uplink outage of issue 18 (outside CI): a box's uplink down for minutes under load.

The district rig (tests/district_rig.py: three `sentinel run` boxes, each with its own
mosquitto bridged through a cuttable TCP proxy to the district mosquitto, and
`sentinel district`) runs with the shipped timers (heartbeat 15 s, offline_after 60 s).
Every box gets normal readings from its devices at `--rate` readings/s and publishes their
one-minute aggregates (`[district] aggregates`) up its uplink; one box's uplink is
cut (connections reset, new ones refused) for `--cut` seconds (600: the issue's 10 minutes;
`--cut 60` is the acceptance's 60 s), during which that box raises a smoke alarm every
`--alarm-every` (10) seconds. Reported:

  * each alarm's first local page (reading published → page at the receiver): must stay
    within 1 s while the uplink is down;
  * what the district saw: the bridge's will, box_offline paged to the street office
    (when the cut is longer than offline_after);
  * after the link returns: how long until the district holds every event of the box
    (catch_up_s: the bridge's reconnect, reconnect_s, then the drain, drain_s, from the
    first held event's arrival at the district daemon to the last's), and that it holds
    each once, in order (and the other boxes' too, all along);
  * the box broker's queue (events held) and the daemons' peak RSS.

The district broker saves its persistence file as the shipped config/mosquitto/district.conf
does (`autosave_on_changes false`: on a timer, here every second). `--rig-autosave` makes it
save after every change instead (`autosave_interval 1` over tests/servers.py's
`autosave_on_changes true`, the rig's setting before): mosquitto then rewrites the whole
file after every single message, retained incident states included, 3-7 ms per message, so
a backlog crossed the district broker at ~150-250 messages/s — that, not the district daemon
(idle 95 % of the drain), was the slow catch-up measured first.

    python bench/district_outage.py [--cut 600] [--rate 200] [--alarm-every 10]
                                    [--rig-autosave] [--json out.json] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common  # first: it puts src/ and tests/ on sys.path

from daemon import Publisher, readings, timestamped_devices, wait_until
from district_rig import DistrictRig, page_text, smoke_detectors, start_rig

log = common.log


def _load(rig: DistrictRig, community: str, rate: float, stop: threading.Event) -> None:
    """Normal readings (no alarms) into one box's broker at `rate`/s until `stop`."""
    devices = [d for d in timestamped_devices() if d.kind != "smoke"]
    pub = Publisher(rig.box(community).broker.port, client_id=f"load-{community}")
    try:
        while not stop.is_set():
            pub.publish_readings(readings(1, time.time(), devices), rate=rate, stop=stop)
    finally:
        pub.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="sentinel-bench-outage-"))
    problems: list[str] = []
    started = time.monotonic()
    # The boxes publish one-minute aggregates too: the uplink carries what it would.
    rig = start_rig(base, offline_after=args.offline_after, heartbeat=args.heartbeat,
                    duty_after=180.0, street_after=600.0,
                    box_settings={"district__aggregates": "true"},
                    save_every_change=args.rig_autosave)
    log(f"rig up in {time.monotonic() - started:.1f} s\n{rig.describe()}")
    stop = threading.Event()
    loaders = [threading.Thread(target=_load, args=(rig, c, args.rate / len(rig.boxes), stop),
                                daemon=True) for c in rig.boxes]
    result: dict[str, Any] = {"cut_s": args.cut, "rate": args.rate,
                              "offline_after_s": args.offline_after,
                              "district_broker_autosave": "every change (the rig's)"
                              if args.rig_autosave else "every 1 s (as district.conf)"}
    try:
        for t in loaders:
            t.start()
        victim = rig.box(args.community)
        detectors = iter(smoke_detectors())
        for other in rig.boxes.values():  # the others have incidents of their own
            if other is not victim:
                other.alarm(next(detectors))
        time.sleep(args.warmup)
        district_pages = len(rig.pages("/district/"))
        log(f"cutting {victim.id}'s uplink for {args.cut:g} s")
        before = set(victim.seqs())
        cut_at = time.monotonic()
        victim.cut()
        page_delays: list[float] = []
        alarms = 0
        while time.monotonic() - cut_at < args.cut:
            device = next(detectors)
            seen = len(rig.pages(f"/{victim.id}/"))
            t0 = victim.alarm(device)
            alarms += 1
            if wait_until(lambda s=seen: len(rig.pages(f"/{victim.id}/")) > s, 10, 0.01):
                page_delays.append(rig.pages(f"/{victim.id}/")[seen].received_at - t0)
            else:
                problems.append(f"no local page for the alarm of {device.id}")
            time.sleep(max(0.0, min(args.alarm_every,
                                    args.cut - (time.monotonic() - cut_at))))
        held = [s for s in victim.seqs() if s not in before]
        leaked = set(held) & set(rig.district.mirrored(victim.id))
        if leaked:
            problems.append(f"{len(leaked)} events crossed the cut link")
        offline_pages = [page_text(p) for p in rig.pages("/district/")[district_pages:]
                         if victim.id in page_text(p) or victim.name in page_text(p)]
        restored, restored_at = time.monotonic(), time.time()
        victim.restore()
        log(f"link restored; {len(held)} events of {victim.id} held on its broker")
        caught = wait_until(lambda: rig.caught_up(victim.id), args.drain, 0.1)
        catch_up = time.monotonic() - restored
        if not caught:
            problems.append(f"the district did not catch up within {args.drain:g} s")
        # The catch-up in two parts: the bridge's reconnect (its restart_timeout backoff,
        # up to 2 s in the rig) and the drain, from the first held event's arrival at the
        # district daemon (the mirror's `received`) to the last's.
        first = rig.district.mirrored_event(victim.id, min(held)) if held else None
        last = rig.district.mirrored_event(victim.id, max(held)) if held else None
        if first is not None and last is not None:
            drain = last["received"] - first["received"]
            result.update({
                "reconnect_s": round(first["received"] - restored_at, 2),
                "drain_s": round(drain, 3),
                "drain_events_per_s": round((len(held) - 1) / drain) if drain > 0 else None})
        arrival = rig.district.mirrored(victim.id, arrival=True)
        if arrival != sorted(set(arrival)):
            problems.append("the district's events are not each once, in order")
        for other in rig.boxes:
            if other != victim.id and not wait_until(
                    lambda o=other: rig.caught_up(o, allow_empty=True), 30):
                problems.append(f"{other}: the district is missing events")
        result.update({
            "community": victim.id, "alarms_during_cut": alarms,
            "local_page_p50_s": round(statistics.median(page_delays), 3)
            if page_delays else None,
            "local_page_max_s": round(max(page_delays), 3) if page_delays else None,
            "events_held": len(held), "catch_up_s": round(catch_up, 2),
            "district_events": len(arrival),
            "street_office_pages_about_it": len(offline_pages),
            "district_peak_rss_mib": round(common.peak_rss_mib(rig.district.proc.pid), 1)
            if rig.district.proc is not None and rig.district.alive else None,
        })
        if page_delays and max(page_delays) > 1.0:
            problems.append(f"a local page took {max(page_delays):.2f} s during the cut")
        if args.cut > args.offline_after + 5 and not offline_pages:
            problems.append("the street office was not paged about the dark box")
    finally:
        stop.set()
        for t in loaders:
            t.join(30)
        rig.close()
        if args.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    result["problems"] = problems
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cut", type=float, default=600.0, help="seconds the uplink is down")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="normal readings per second over all boxes")
    parser.add_argument("--alarm-every", type=float, default=10.0)
    parser.add_argument("--community", default="shuibei")
    parser.add_argument("--heartbeat", type=float, default=15.0)
    parser.add_argument("--offline-after", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--rig-autosave", action="store_true",
                        help="keep the rig's district broker saving after every change "
                             "(the slow catch-up measured before)")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    result = run(args)
    for key, value in result.items():
        print(f"{key:<30} {value}")
    if args.json:
        common.write_json(args.json, result)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
