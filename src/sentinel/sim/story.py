"""The demo's scripted story, and the demo-only timings that let it be told in two minutes.

Pure: from a loaded deployment it picks the devices of the story (the same ones every
run, so every run tells the same story) and derives the configuration the demo's daemon
runs with. Nothing here touches the disk or the network; `sentinel.demo` does.

The demo compresses simulated time (`speed`, 60x): a device reports an hour's worth in a
minute, but readings carry wall-clock stamps and the daemon measures time on the wall
clock. Three things of the story would not show in a demo of a few minutes, so the demo's
daemon, and only it, runs with shorter timings:

* offline: the story's detector is declared to report at the cadence the simulator really
  gives it (5 s at 60x, not its kind's hour), so two missed reports (the shipped rule) are
  10 s of silence; and the daemon's start-up grace before any offline check is 10 s, not
  300 s;
* a fall raised to emergency: no step within 30 s of the fall instead of 2 minutes;
* `pace` scales the story's times (tests tell the whole story in a fraction of the time).

Everything else is the shipped configuration: the rules, the escalation policies, the
storm control.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sentinel.config.inventory import Device, Inventory
from sentinel.loading import Loaded
from sentinel.rules.model import StillRule
from sentinel.sim.model import NATURAL_INTERVALS

# The building of the fire: its four detectors alarm together (a confirmed fire).
FIRE_BUILDING = "水贝花园/1栋"
FIRE_HYDRANT = "SB-HYD-0001"
# Demo-only timings (seconds at pace 1), see the module docstring.
STARTUP_GRACE = 10.0
FALL_STILL_WITHIN = 30.0
SEED = 1


@dataclass(frozen=True, slots=True)
class Beat:
    """One event of the story: what happens to which devices, when, and the incidents
    it may open (by rule incident name)."""

    event: str
    devices: tuple[str, ...]
    at: float
    incidents: frozenset[str]


@dataclass(frozen=True, slots=True)
class Story:
    beats: tuple[Beat, ...]
    pace: float
    speed: float

    @property
    def offline_device(self) -> str:
        return next(b.devices[0] for b in self.beats if b.event == "offline")

    def injections(self) -> list[tuple[str, str, float]]:
        """What the simulator injects: (event, device id, seconds after its start)."""
        return [(b.event, device, b.at) for b in self.beats for device in b.devices]

    def allowed(self) -> dict[str, frozenset[str]]:
        """Per device of the story, the incidents it may open; no other device may open
        any (a group, such as the confirmed fire, has no device of its own)."""
        out: dict[str, frozenset[str]] = {}
        for beat in self.beats:
            for device in beat.devices:
                out[device] = out.get(device, frozenset()) | beat.incidents
        return out

    @property
    def ends_at(self) -> float:
        """Seconds after the simulator's start by which every beat has shown (the offline
        detector's silence and the fall's still window included), with a margin."""
        last = max(b.at for b in self.beats)
        offline = next(b.at for b in self.beats if b.event == "offline")
        fall = next(b.at for b in self.beats if b.event == "fall")
        interval = NATURAL_INTERVALS["gas"] / self.speed
        return max(last, offline + 2 * interval + 2.0,
                   fall + FALL_STILL_WITHIN * self.pace) + 2.0


def _pick(inventory: Mapping[str, Device], kind: str, rng: random.Random,
          taken: set[str]) -> str:
    candidates = sorted(d.id for d in inventory.values() if d.kind == kind and d.id not in taken)
    choice = rng.choice(candidates)
    taken.add(choice)
    return choice


def story(inventory: Mapping[str, Device], pace: float = 1.0, speed: float = 60.0) -> Story:
    """The demo's story on this inventory: the same devices on every run."""
    if not pace > 0:
        raise ValueError(f"pace must be a positive number, not {pace}")
    rng = random.Random(f"sentinel-demo/{SEED}")
    taken: set[str] = set()
    fire = tuple(sorted(d.id for d in inventory.values() if d.kind == "smoke"
                        and f"{d.compound}/{d.building}" == FIRE_BUILDING))
    if not fire:
        raise ValueError(f"the inventory has no smoke detector in {FIRE_BUILDING}")
    taken.update(fire)
    hydrant = FIRE_HYDRANT if FIRE_HYDRANT in inventory else _pick(
        inventory, "hydrant_pressure", rng, taken)
    taken.add(hydrant)
    offline = _pick(inventory, "gas", rng, taken)
    leak = _pick(inventory, "gas", rng, taken)
    fall = _pick(inventory, "elderly_watch", rng, taken)
    sos = _pick(inventory, "elderly_watch", rng, taken)
    beats = (
        Beat("offline", (offline,), 10.0, frozenset({"detector_offline"})),
        Beat("smoke-alarm", fire, 15.0, frozenset({"smoke_alarm"})),
        Beat("hydrant-drop", (hydrant,), 30.0,
             frozenset({"hydrant_pressure_drop", "hydrant_pressure_low"})),
        Beat("fall", (fall,), 40.0, frozenset({"fall"})),
        Beat("gas-leak", (leak,), 50.0, frozenset({"gas_leak"})),
        Beat("sos", (sos,), 60.0, frozenset({"sos"})),
    )
    return Story(tuple(replace(b, at=b.at * pace) for b in beats), pace, speed)


def demo_config(loaded: Loaded, told: Story) -> Loaded:
    """The deployment the demo's daemon runs: shipped, but for the demo-only timings."""
    settings = loaded.settings
    rules_settings = settings.rules.model_copy(
        update={"startup_grace": STARTUP_GRACE * told.pace})
    settings = settings.model_copy(update={"rules": rules_settings})
    # The detector the story takes offline, declared at the cadence the simulator gives it.
    target = loaded.inventory[told.offline_device]
    interval = NATURAL_INTERVALS.get(target.kind, 300.0) / told.speed
    devices = [d._replace(settings=d.settings._replace(report_interval_s=interval))
               if d.id == target.id else d for d in loaded.inventory.values()]
    inventory = Inventory(devices)
    rules = loaded.rules.model_copy(update={"rule": tuple(
        r.model_copy(update={"within": FALL_STILL_WITHIN * told.pace})
        if isinstance(r, StillRule) else r for r in loaded.rules.rule)})
    return replace(loaded, settings=settings, inventory=inventory, rules=rules)
