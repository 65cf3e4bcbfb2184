"""Behaviour models of simulated devices: what each device of the inventory reports, and when.

Pure and deterministic: no I/O and no clock of its own. Every device draws from its own
`random.Random` seeded with (seed, device id), so a fleet built with the same seed and
sampled at the same times produces the same readings, whatever else is in the inventory.

Times are epoch seconds. `t` is the simulated time a reading describes (it drives daily
cycles, battery drain, event ramps and the report schedule); the timestamp a reading carries
(`Sample.ts_ms`) is `t` unless the caller passes another time (the publisher stamps readings
with the wall-clock time they are sent, so a time-compressed run is still accepted by a
daemon that refuses timestamps from the future). Per device, timestamps are whole
milliseconds and strictly increasing.

Values are canonical (field names and units of `sentinel.kinds`), within the kind's ranges,
and limited to the fields the device's profile can carry.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from sentinel.config.inventory import Device
from sentinel.config.profiles import ProfileSpec
from sentinel.kinds import CompiledField, KindRegistry
from sentinel.types import Value

__all__ = [
    "EVENTS",
    "NATURAL_INTERVALS",
    "DeviceModel",
    "EventSpec",
    "FleetModel",
    "Sample",
    "SimEvent",
    "parse_inject",
    "resolve_injections",
]

# Shuibei community, Luohu district, Shenzhen.
SHUIBEI_LAT: Final = 22.566
SHUIBEI_LON: Final = 114.127
# How far (degrees) a watch's wearer walks from the community's centre at most.
_WALK_BOX: Final = 0.0029
# Asia/Shanghai has been UTC+8 without daylight saving since 1991.
LOCAL_UTC_OFFSET: Final = 8 * 3600
DAY: Final = 86400.0
DAYTIME: Final = (7 * 3600.0, 21 * 3600.0)  # local hours when the elderly walk about

# How often a device of each kind reports when nothing happens (seconds).
NATURAL_INTERVALS: Final[Mapping[str, float]] = {
    "smoke": 3600.0,
    "gas": 300.0,
    "hydrant_pressure": 60.0,
    "water_level": 300.0,
    "elderly_watch": 60.0,
}
DEFAULT_INTERVAL: Final = 300.0


@dataclass(frozen=True, slots=True)
class EventSpec:
    """An injectable event: which kinds it applies to and how often a device then reports."""

    name: str
    kinds: frozenset[str] | None  # None: any kind
    report_interval: float | None  # None: the device stops reporting
    description: str


EVENTS: Final[Mapping[str, EventSpec]] = {
    e.name: e for e in (
        EventSpec("smoke-alarm", frozenset({"smoke"}), 10.0,
                  "smoke detector alarms: alarm true, obscuration 8-15 %/m"),
        EventSpec("gas-leak", frozenset({"gas"}), 10.0,
                  "gas leak: concentration rises to 30 %LEL within a minute, alarm true"),
        EventSpec("hydrant-drop", frozenset({"hydrant_pressure"}), 5.0,
                  "hydrant pipe pressure falls to 0.08 MPa within 20 s"),
        EventSpec("tank-low", frozenset({"water_level"}), 30.0,
                  "fire-water tank drains to 20 % of its height within 10 min"),
        EventSpec("sos", frozenset({"elderly_watch"}), 15.0, "the wearer presses SOS"),
        EventSpec("fall", frozenset({"elderly_watch"}), 15.0,
                  "the watch detects a fall; the wearer stops walking"),
        EventSpec("offline", None, None, "the device stops publishing"),
    )
}

_GAS_LEAK_LEL: Final = 30.0
_GAS_RAMP_S: Final = 60.0
_HYDRANT_DROP_MPA: Final = 0.08
_HYDRANT_RAMP_S: Final = 20.0
_TANK_LOW_FRACTION: Final = 0.20
_TANK_RAMP_S: Final = 600.0

# Selectors of an injection target besides a device id and "random".
_SELECTORS: Final = ("kind", "building", "compound", "grid")


@dataclass(slots=True)
class Sample:
    """One reading of one device: canonical values describing simulated time `t`."""

    device: Device
    t: float
    ts_ms: int
    values: dict[str, Value]

    @property
    def ts(self) -> float:
        """The reading's timestamp in epoch seconds (exactly `ts_ms` milliseconds)."""
        return self.ts_ms / 1000.0


@dataclass(frozen=True, slots=True)
class SimEvent:
    """An injection resolved to one device: `event` applies to it from `offset` s on."""

    event: str
    device_id: str
    offset: float


def _clamp(value: float, lo: float, hi: float) -> float:
    return lo if value < lo else hi if value > hi else value


def _noise(rng: random.Random, sigma: float) -> float:
    """Bell-shaped noise with standard deviation `sigma` (sum of three uniforms; cheaper
    than `gauss` and bounded to ±3 sigma)."""
    r = rng.random
    return (r() + r() + r() - 1.5) * 2.0 * sigma


def _local_seconds(t: float) -> float:
    """Seconds since local (Asia/Shanghai) midnight."""
    return (t + LOCAL_UTC_OFFSET) % DAY


def _local_day(t: float) -> int:
    return int((t + LOCAL_UTC_OFFSET) // DAY)


def _daytime_overlap(a: float, b: float) -> float:
    """Seconds of [a, b] that fall within local daytime (07:00-21:00)."""
    if b <= a:
        return 0.0
    total = 0.0
    day = _local_day(a)
    while True:
        midnight = day * DAY - LOCAL_UTC_OFFSET
        lo, hi = midnight + DAYTIME[0], midnight + DAYTIME[1]
        if lo >= b:
            break
        total += max(0.0, min(b, hi) - max(a, lo))
        day += 1
    return total


# ---------------------------------------------------------------------------------------
# Device models
# ---------------------------------------------------------------------------------------


class DeviceModel:
    """The behaviour of one device. Subclasses add the readings of their kind."""

    primary_battery: str = "battery"  # "battery" (%) or "battery_voltage" (V)
    # Every field `values` may produce (those the profile cannot carry are dropped).
    produces: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, device: Device, profile: ProfileSpec | None, kinds: KindRegistry,
                 seed: int, start: float) -> None:
        self.device = device
        self.profile = profile
        self.rng = random.Random(f"sentinel-sim/{seed}/{device.id}")
        natural = NATURAL_INTERVALS.get(device.kind, DEFAULT_INTERVAL)
        self.interval: float = device.settings.report_interval_s or natural
        self.phase: float = self.rng.uniform(0.0, self.interval)
        fields = set(kinds[device.kind].fields)
        carried = set(profile.fields_for(device.kind)) if profile is not None else fields
        self.carries: frozenset[str] = frozenset(fields & carried)
        self.events: dict[str, float] = {}
        self.last_t: float | None = None
        self.last_ms = -1
        # Seconds between this reading's timestamp and the previous one's (see `sample`).
        self.stamped_dt = 0.0
        self._last_ts: float | None = None
        self.start = start
        self.signal_base = self.rng.uniform(-104.0, -76.0)
        self.battery_pct = self.rng.uniform(60.0, 100.0)
        self.battery_v = self.rng.uniform(3.55, 3.68)
        # Percent per day for `battery`, volts per day for `battery_voltage`.
        self.drain_pct = self.rng.uniform(0.02, 0.08)
        self.drain_v = self.rng.uniform(0.0002, 0.0006)
        self.battery_powered = True
        self._battery_field: str | None = None
        self._battery_known = False
        self._signal = "signal" in self.carries
        self._snr = "snr" in self.carries
        self._filter = not type(self).produces <= self.carries

    # -- events and schedule --------------------------------------------------------------
    def inject(self, event: str, at: float) -> None:
        """Apply `event` from simulated time `at` on (an earlier injection of it wins)."""
        spec = EVENTS.get(event)
        if spec is None:
            raise ValueError(f"unknown event {event!r}")
        if spec.kinds is not None and self.device.kind not in spec.kinds:
            raise ValueError(f"{event} applies to {'/'.join(sorted(spec.kinds))} devices; "
                             f"{self.device.id} is {self.device.kind}")
        self.events[event] = min(at, self.events.get(event, math.inf))

    def since(self, event: str, t: float) -> float | None:
        """Seconds since `event` began at `t`, or None if it is not active then."""
        at = self.events.get(event)
        return None if at is None or t < at else t - at

    def offline(self, t: float) -> bool:
        return self.since("offline", t) is not None

    def report_interval(self, t: float) -> float:
        """Seconds until the next report after one at `t` (shorter while an event lasts)."""
        interval = self.interval
        for name, at in self.events.items():
            spec_interval = EVENTS[name].report_interval
            if at <= t and spec_interval is not None:
                interval = min(interval, spec_interval)
        return interval

    def first_due(self) -> float:
        """Simulated time of the first report (the device's phase after the start)."""
        due = self.start + self.phase
        return min([due, *(at for at in self.events.values() if at >= self.start)])

    def due_after(self, t: float) -> float:
        """Simulated time of the report after one at `t`; inf once the device is offline."""
        due = t + self.report_interval(t)
        # An event starting before then is reported at once.
        for at in self.events.values():
            if t < at < due:
                due = at
        off = self.events.get("offline")
        return math.inf if off is not None and due >= off else due

    # -- readings -------------------------------------------------------------------------
    def stamp(self, ts: float) -> int:
        """Whole milliseconds of `ts`, bumped so this device never repeats or goes back."""
        ms = round(ts * 1000.0)
        if ms <= self.last_ms:
            ms = self.last_ms + 1
        self.last_ms = ms
        return ms

    def sample(self, t: float, ts: float | None = None) -> Sample | None:
        """The reading at simulated time `t` (stamped `ts`, default `t`); None if offline."""
        if self.events and self.offline(t):
            return None
        last = self.last_t
        dt = 0.0
        if last is None or t > last:
            dt = 0.0 if last is None else t - last
            self.last_t = t
        # A time-compressed run (the publisher, the demo) stamps readings with the wall
        # clock, and rate rules measure change per second of those stamps: a drift such as
        # a tank's draw must follow them, or at 60x every tank "falls" 60x too fast (the
        # demo opened the tank-rate incident on 36 of 41 tanks).
        stamp_at = t if ts is None else ts
        if self._last_ts is None or stamp_at > self._last_ts:
            self.stamped_dt = 0.0 if self._last_ts is None else stamp_at - self._last_ts
            self._last_ts = stamp_at
        else:
            self.stamped_dt = 0.0
        values = self.values(t, dt)
        if self._filter:
            carries = self.carries
            values = {k: v for k, v in values.items() if k in carries}
        self._common(values, dt)
        return Sample(self.device, t, self.stamp(t if ts is None else ts), values)

    def values(self, t: float, dt: float) -> dict[str, Value]:
        """The kind's own fields at `t`, `dt` seconds after the previous reading."""
        raise NotImplementedError

    def battery_field(self) -> str | None:
        """The battery field this device reports: its kind's usual one if the profile
        carries it, else the other; None when mains-powered or neither is carried."""
        if not self._battery_known:
            self._battery_known = True
            field = None
            if self.battery_powered:
                other = "battery" if self.primary_battery == "battery_voltage" else (
                    "battery_voltage")
                field = next((f for f in (self.primary_battery, other) if f in self.carries),
                             None)
            self._battery_field = field
        return self._battery_field

    def _common(self, values: dict[str, Value], dt: float) -> None:
        """Battery and radio fields (those the profile carries)."""
        rng = self.rng
        field = self.battery_field()
        if field is not None:
            if dt:
                days = dt / DAY
                self.battery_pct = max(5.0, self.battery_pct - self.drain_pct * days)
                self.battery_v = max(3.3, self.battery_v - self.drain_v * days)
            if field == "battery":
                values["battery"] = round(self.battery_pct, 1)
            else:
                values["battery_voltage"] = round(self._volts(), 3)
        if self._signal or self._snr:
            signal = _clamp(self.signal_base + _noise(rng, 2.5), -110.0, -70.0)
            if self._signal:
                values["signal"] = round(signal, 1)
            if self._snr:
                snr = _clamp((signal + 112.0) / 3.5 + _noise(rng, 1.5), -20.0, 12.0)
                values["snr"] = round(snr, 1)

    def _volts(self) -> float:
        if self.primary_battery == "battery_voltage":
            return self.battery_v
        # A 3.6 V lithium cell: about 3.2 V empty, 3.65 V full.
        return 3.2 + 0.45 * self.battery_pct / 100.0


class SmokeModel(DeviceModel):
    """Photoelectric smoke detector: an hourly heartbeat, a daily self-test report."""

    produces = frozenset({"fault", "alarm", "obscuration", "self_test"})

    def __init__(self, device: Device, profile: ProfileSpec | None, kinds: KindRegistry,
                 seed: int, start: float) -> None:
        super().__init__(device, profile, kinds, seed, start)
        self.obscuration_base = self.rng.uniform(0.02, 0.25)

    def values(self, t: float, dt: float) -> dict[str, Value]:
        rng = self.rng
        out: dict[str, Value] = {"fault": False}
        if self.since("smoke-alarm", t) is not None:
            out["alarm"] = True
            out["obscuration"] = round(rng.uniform(8.0, 15.0), 2)
        else:
            out["alarm"] = False
            out["obscuration"] = round(
                _clamp(self.obscuration_base + _noise(rng, 0.05), 0.0, 0.5), 3)
            if rng.random() < 1 / 24:
                out["self_test"] = False  # the daily self-test passed
        return out


_LPG_WORDS: Final = ("液化", "LPG", "lpg", "瓶")


class GasModel(DeviceModel):
    """Combustible-gas detector in a kitchen: a 5-minute report of the %LEL reading."""

    produces = frozenset({"gas_type", "fault", "alarm", "concentration_lel"})

    def __init__(self, device: Device, profile: ProfileSpec | None, kinds: KindRegistry,
                 seed: int, start: float) -> None:
        super().__init__(device, profile, kinds, seed, start)
        where = device.location + device.unit
        # Kitchens and restaurants on piped natural gas, cylinder rooms on LPG.
        self.gas_type = "LPG" if any(w in where for w in _LPG_WORDS) else "CH4"
        commercial = any(w in where for w in ("餐", "食堂", "后厨", "酒楼", "瓶间", "燃气表间"))
        # Wired detectors in commercial kitchens; battery units in homes and on Zigbee.
        wireless = profile is not None and profile.name == "zigbee2mqtt"
        self.battery_powered = wireless or not commercial
        self.lel_base = self.rng.uniform(0.2, 1.2)

    def values(self, t: float, dt: float) -> dict[str, Value]:
        leak = self.since("gas-leak", t)
        out: dict[str, Value] = {"gas_type": self.gas_type, "fault": False}
        if leak is not None:
            lel = _GAS_LEAK_LEL * min(1.0, (leak + 10.0) / _GAS_RAMP_S)
            out.update(alarm=True, concentration_lel=round(lel, 1))
        else:
            lel = _clamp(abs(self.lel_base + _noise(self.rng, 0.4)), 0.0, 3.0)
            out.update(alarm=False, concentration_lel=round(lel, 1))
        return out


class HydrantModel(DeviceModel):
    """Fire-hydrant pressure monitor on the municipal mains: a reading a minute."""

    primary_battery = "battery_voltage"
    produces = frozenset({"pressure"})

    def __init__(self, device: Device, profile: ProfileSpec | None, kinds: KindRegistry,
                 seed: int, start: float) -> None:
        super().__init__(device, profile, kinds, seed, start)
        self.base = self.rng.uniform(0.31, 0.42)
        self.drop_from: float | None = None

    def mains(self, t: float) -> float:
        """Noise-free mains pressure: highest at night, lowest at the afternoon peak."""
        hour = _local_seconds(t) / 3600.0
        return self.base + 0.015 * math.cos(2 * math.pi * (hour - 3.0) / 24.0)

    def values(self, t: float, dt: float) -> dict[str, Value]:
        rng = self.rng
        drop = self.since("hydrant-drop", t)
        if drop is None:
            pressure = _clamp(self.mains(t) + _noise(rng, 0.003), 0.28, 0.45)
        else:
            if self.drop_from is None:
                self.drop_from = self.mains(t)
            share = min(1.0, drop / _HYDRANT_RAMP_S)
            pressure = self.drop_from + (_HYDRANT_DROP_MPA - self.drop_from) * share
            if share >= 1.0:
                pressure = _clamp(pressure + _noise(rng, 0.002), 0.075, 0.085)
        return {"pressure": round(pressure, 4)}


class TankModel(DeviceModel):
    """Fire-water tank level: slow draw-down and refills, kept at 85-98 % of its height."""

    primary_battery = "battery_voltage"
    produces = frozenset({"level"})

    def __init__(self, device: Device, profile: ProfileSpec | None, kinds: KindRegistry,
                 seed: int, start: float) -> None:
        super().__init__(device, profile, kinds, seed, start)
        settings = device.settings
        self.height = settings.tank_height_m or settings.mount_height_m or 4.0
        self.fraction = self.rng.uniform(0.87, 0.97)
        self.draw_per_hour = self.rng.uniform(0.002, 0.01)
        self.refilling = False
        self.low_from: float | None = None

    def values(self, t: float, dt: float) -> dict[str, Value]:
        rng = self.rng
        # Draw and refill are physical rates, per second of the readings' timestamps (the
        # rate rule's clock), not of the simulated schedule; the scripted tank-low event
        # below keeps the simulated time of the script.
        hours = self.stamped_dt / 3600.0
        low = self.since("tank-low", t)
        if low is None:
            if self.refilling:
                self.fraction += 0.12 * hours
                if self.fraction >= 0.965:
                    self.refilling = False
            else:
                self.fraction -= self.draw_per_hour * hours
                if self.fraction <= 0.86:
                    self.refilling = True
            self.fraction = _clamp(self.fraction, 0.855, 0.975)
            share = _clamp(self.fraction + _noise(rng, 0.001), 0.85, 0.98)
        else:
            if self.low_from is None:
                self.low_from = self.fraction
            ramp = min(1.0, low / _TANK_RAMP_S)
            share = self.low_from + (_TANK_LOW_FRACTION - self.low_from) * ramp
            if ramp >= 1.0:
                share = _clamp(share + _noise(rng, 0.001), 0.195, 0.205)
            self.fraction = share
        # Millimetre resolution, never above the tank.
        level = min(round(share * self.height, 3), self.height)
        return {"level": level}


class WatchModel(DeviceModel):
    """Smartwatch of an elderly person: heart rate, steps, position, SOS and fall flags."""

    produces = frozenset({"sos", "fall", "worn", "steps", "battery", "heart_rate",
                          "latitude", "longitude"})

    def __init__(self, device: Device, profile: ProfileSpec | None, kinds: KindRegistry,
                 seed: int, start: float) -> None:
        super().__init__(device, profile, kinds, seed, start)
        rng = self.rng
        self.hr_base = rng.uniform(66.0, 80.0)
        self.steps_per_hour = rng.uniform(250.0, 700.0)
        # Home: the building's position when the inventory gives one, else somewhere in
        # Shuibei. The two draws happen either way, so the other values stay the same.
        near = (SHUIBEI_LAT + rng.uniform(-0.0015, 0.0015),
                SHUIBEI_LON + rng.uniform(-0.0015, 0.0015))
        lat, lon = device.settings.lat, device.settings.lon
        self.home = (lat, lon) if lat is not None and lon is not None else near
        # Walks stay inside Shuibei; a home elsewhere (the copies of a scaled inventory)
        # gets a box of the same size of its own.
        inside = (abs(self.home[0] - SHUIBEI_LAT) <= _WALK_BOX
                  and abs(self.home[1] - SHUIBEI_LON) <= _WALK_BOX)
        self.centre = (SHUIBEI_LAT, SHUIBEI_LON) if inside else self.home
        self.pos = self.home
        self.steps = 0.0
        self.day: int | None = None
        self.charging = False
        self.battery_pct = rng.uniform(50.0, 100.0)
        self.drain_per_hour = rng.uniform(1.8, 3.2)
        # The watch is recharged: `values` reports its battery, not the common drain.
        self.battery_powered = False

    def values(self, t: float, dt: float) -> dict[str, Value]:
        rng = self.rng
        since_fall = self.since("fall", t)
        emergency = since_fall is not None or self.since("sos", t) is not None
        # Steps of today: walked during daytime, while worn, and not after a fall.
        prev = t - dt
        day = _local_day(t)
        if self.day != day:
            # A new day (or the first reading): count today's steps from midnight.
            midnight = day * DAY - LOCAL_UTC_OFFSET
            self.steps = 0.0
            prev = midnight if self.day is None else max(prev, midnight)
            self.day = day
        walk_until = t if since_fall is None else min(t, t - since_fall)
        if not self.charging:
            walked = _daytime_overlap(prev, walk_until) / 3600.0
            self.steps += walked * self.steps_per_hour * rng.uniform(0.5, 1.5)
        # Battery: drains while worn, charges off the wrist once low.
        hours = dt / 3600.0
        if self.charging and not emergency:
            self.battery_pct = min(100.0, self.battery_pct + 60.0 * hours)
            if self.battery_pct >= 99.0:
                self.charging = False
        else:
            self.charging = False
            self.battery_pct -= self.drain_per_hour * hours
            if self.battery_pct <= 15.0 and not emergency:
                self.charging = True
            self.battery_pct = max(5.0, self.battery_pct)
        worn = not self.charging
        out: dict[str, Value] = {
            "sos": self.since("sos", t) is not None,
            "fall": since_fall is not None,
            "worn": worn,
            "steps": int(self.steps),
            "battery": round(self.battery_pct, 1),
        }
        if worn:
            local_h = _local_seconds(t) / 3600.0
            daily = 4.0 * math.sin(2 * math.pi * (local_h - 9.0) / 24.0)
            hr = _clamp(self.hr_base + daily + _noise(rng, 3.0), 60.0, 90.0)
            if emergency:
                hr = rng.uniform(95.0, 115.0)
            out["heart_rate"] = round(hr)
        # Position: wanders near home in the daytime, home at night.
        daytime = DAYTIME[0] <= _local_seconds(t) < DAYTIME[1]
        if daytime and worn and since_fall is None:
            # A walk about the neighbourhood that keeps drifting back towards home.
            lat = self.pos[0] + 0.05 * (self.home[0] - self.pos[0]) + _noise(rng, 0.0002)
            lon = self.pos[1] + 0.05 * (self.home[1] - self.pos[1]) + _noise(rng, 0.0002)
        else:
            lat, lon = self.home
        (clat, clon), box = self.centre, _WALK_BOX
        self.pos = (_clamp(lat, clat - box, clat + box), _clamp(lon, clon - box, clon + box))
        out["latitude"] = round(self.pos[0], 6)
        out["longitude"] = round(self.pos[1], 6)
        return out


class GenericModel(DeviceModel):
    """A kind declared in a kind file: steady values inside every field's range."""

    def __init__(self, device: Device, profile: ProfileSpec | None, kinds: KindRegistry,
                 seed: int, start: float) -> None:
        super().__init__(device, profile, kinds, seed, start)
        self.kind = kinds[device.kind]
        self.compiled = kinds.compiled(device.kind)

    def values(self, t: float, dt: float) -> dict[str, Value]:
        out: dict[str, Value] = {}
        common = ("battery", "battery_voltage", "signal", "snr")
        for name, spec in self.compiled.items():
            if name in common or name not in self.carries:
                continue
            if spec.type == "bool":
                out[name] = False
            elif spec.type == "string":
                if spec.choices:
                    out[name] = sorted(spec.choices)[0]
            else:
                lo = spec.lo if math.isfinite(spec.lo) else 0.0
                hi = spec.hi if math.isfinite(spec.hi) else lo + 100.0
                if spec.max_setting is not None:
                    cap = self.device.settings.number(spec.max_setting)
                    if cap is not None:
                        hi = min(hi, cap)
                value = lo + (hi - lo) * self.rng.uniform(0.2, 0.3)
                out[name] = int(value) if spec.type == "integer" else round(value, 3)
        return out


_MODELS: Final[Mapping[str, type[DeviceModel]]] = {
    "smoke": SmokeModel,
    "gas": GasModel,
    "hydrant_pressure": HydrantModel,
    "water_level": TankModel,
    "elderly_watch": WatchModel,
}


def model_for(device: Device, profile: ProfileSpec | None, kinds: KindRegistry, seed: int,
              start: float) -> DeviceModel:
    """The behaviour model of one device: its kind's, else that of the nearest kind it
    extends (a septic-tank monitor reads methane like a gas detector), else generic."""
    for kind in kinds.lineage(device.kind):
        cls = _MODELS.get(kind)
        if cls is None:
            continue
        if kind == device.kind:
            return cls(device, profile, kinds, seed, start)
        return _extension_of(cls)(device, profile, kinds, seed, start)
    return GenericModel(device, profile, kinds, seed, start)


def _quiet_value(spec: CompiledField, rng: random.Random) -> Value | None:
    """A value of a field the model knows nothing about that trips no rule: booleans off,
    numbers near the bottom of their range (a gas concentration, a count)."""
    if spec.type == "bool":
        return False
    if spec.type == "string":
        return sorted(spec.choices)[0] if spec.choices else None
    lo = spec.lo if math.isfinite(spec.lo) else 0.0
    hi = spec.hi if math.isfinite(spec.hi) else lo + 100.0
    value = lo + (hi - lo) * rng.uniform(0.0, 0.0002)
    return int(value) if spec.type == "integer" else round(value, 3)


_EXTENSIONS: dict[type[DeviceModel], type[DeviceModel]] = {}


def _extension_of(base: type[DeviceModel]) -> type[DeviceModel]:
    """The base kind's model, plus quiet values for the fields the extension adds."""
    made = _EXTENSIONS.get(base)
    if made is not None:
        return made

    class Extension(base):  # type: ignore[valid-type,misc]
        def values(self, t: float, dt: float) -> dict[str, Value]:
            out: dict[str, Value] = super().values(t, dt)
            for name in self._added:
                value = _quiet_value(self._compiled[name], self.rng)
                if value is not None:
                    out[name] = value
            return out

        def __init__(self, device: Device, profile: ProfileSpec | None, kinds: KindRegistry,
                     seed: int, start: float) -> None:
            super().__init__(device, profile, kinds, seed, start)
            self._compiled = kinds.compiled(device.kind)
            common = {"battery", "battery_voltage", "signal", "snr", "battery_low"}
            self._added = sorted(self.carries - base.produces - common)

    Extension.__name__ = f"{base.__name__}Extension"
    _EXTENSIONS[base] = Extension
    return Extension


# ---------------------------------------------------------------------------------------
# The fleet
# ---------------------------------------------------------------------------------------


class FleetModel:
    """Every device of an inventory, with a report schedule in simulated time."""

    def __init__(self, inventory: Mapping[str, Device], kinds: KindRegistry,
                 profiles: Mapping[str, ProfileSpec], seed: int = 0, start: float = 0.0) -> None:
        self.start = start
        self.seed = seed
        self.models: dict[str, DeviceModel] = {
            device.id: model_for(device, profiles.get(device.profile), kinds, seed, start)
            for device in inventory.values()
        }
        self._list = list(self.models.values())
        self._index = {m.device.id: i for i, m in enumerate(self._list)}
        self._due = [m.first_due() for m in self._list]
        self._heap = [(due, i) for i, due in enumerate(self._due)]
        heapq.heapify(self._heap)
        # Round-robin order (rate and burst modes): a fixed shuffle, so kinds interleave.
        self.order = list(self._list)
        random.Random(f"sentinel-sim/{seed}/order").shuffle(self.order)

    def inject(self, event: str, device_id: str, at: float) -> None:
        """Apply `event` to one device from simulated time `at` on."""
        model = self.models.get(device_id)
        if model is None:
            raise ValueError(f"unknown device {device_id!r}")
        model.inject(event, at)
        i = self._index[device_id]
        last = model.last_t
        due = self._due[i]
        if last is None or at > last:
            # Report at once when the event starts (or stop, for offline).
            due = math.inf if event == "offline" and due >= at else min(due, at)
        if due != self._due[i]:
            self._due[i] = due
            heapq.heappush(self._heap, (due, i))

    def next_due(self) -> float:
        """Simulated time of the next scheduled report (inf when none is left)."""
        heap = self._heap
        while heap and heap[0][0] != self._due[heap[0][1]]:
            heapq.heappop(heap)  # superseded by a reschedule
        return heap[0][0] if heap else math.inf

    def pop_due(self, until: float) -> tuple[float, DeviceModel] | None:
        """The next report scheduled at or before `until` (and reschedule its device)."""
        due = self.next_due()
        if due > until:
            return None
        _, i = heapq.heappop(self._heap)
        model = self._list[i]
        nxt = model.due_after(due)
        self._due[i] = nxt
        if nxt != math.inf:
            heapq.heappush(self._heap, (nxt, i))
        return due, model

    def samples(self, until: float) -> Iterator[Sample]:
        """Every scheduled reading up to `until`, in time order, stamped with its own time."""
        while (item := self.pop_due(until)) is not None:
            t, model = item
            sample = model.sample(t)
            if sample is not None:
                yield sample


# ---------------------------------------------------------------------------------------
# Injections
# ---------------------------------------------------------------------------------------


def parse_inject(text: str, inventory: Mapping[str, Device] | None = None
                 ) -> tuple[str, str, float]:
    """Parse `EVENT[:TARGET][@SECONDS]` into (event, target, seconds after the start).

    TARGET is a device id, `random` (the default: one device the event applies to, picked
    with the run's seed), or a selector of every such device: `kind:KIND`,
    `building:COMPOUND/BUILDING`, `compound:COMPOUND`, `grid:GRID`. With `inventory`, the
    target must name a device the event applies to. Raises ValueError explaining the mistake.
    """
    spec = text.strip()
    if not spec:
        raise ValueError("empty injection; expected EVENT[:DEVICE][@SECONDS], "
                         "e.g. smoke-alarm:SB-SMK-0001@30")
    at = 0.0
    if "@" in spec:
        spec, _, when = spec.rpartition("@")
        try:
            at = float(when.strip().removesuffix("s"))
        except ValueError:
            raise ValueError(f"injection {text!r}: {when!r} is not a number of seconds") from None
        if not math.isfinite(at) or at < 0:
            raise ValueError(f"injection {text!r}: the time must be 0 or more seconds")
    event, _, target = spec.partition(":")
    event, target = event.strip(), target.strip() or "random"
    if event not in EVENTS:
        raise ValueError(f"injection {text!r}: unknown event {event!r} "
                         f"(known: {', '.join(EVENTS)})")
    key, sep, value = target.partition(":")
    if sep and key in _SELECTORS and not value:
        raise ValueError(f"injection {text!r}: {key}: needs a value")
    if inventory is not None:
        select_targets(event, target, inventory, random.Random(0))
    return event, target, at


def select_targets(event: str, target: str, inventory: Mapping[str, Device],
                   rng: random.Random) -> list[str]:
    """The ids of the devices an injection target names; ValueError if none fits."""
    spec = EVENTS.get(event)
    if spec is None:
        raise ValueError(f"unknown event {event!r} (known: {', '.join(EVENTS)})")
    kinds = spec.kinds

    def fits(device: Device) -> bool:
        return kinds is None or device.kind in kinds

    wanted = "any" if kinds is None else "/".join(sorted(kinds))
    if target == "random":
        candidates = sorted(d.id for d in inventory.values() if fits(d))
        if not candidates:
            raise ValueError(f"{event}: the inventory has no {wanted} device")
        return [rng.choice(candidates)]
    key, sep, value = target.partition(":")
    if sep and key in _SELECTORS:
        def selected(device: Device) -> bool:
            if key == "kind":
                return device.kind == value
            if key == "building":
                return value in (f"{device.compound}/{device.building}",
                                 f"{device.compound}{device.building}")
            if key == "compound":
                return device.compound == value
            return device.grid == value

        found = sorted(d.id for d in inventory.values() if selected(d) and fits(d))
        if not found:
            raise ValueError(f"{event}: no {wanted} device matches {target!r}")
        return found
    device = inventory.get(target)
    if device is None:
        raise ValueError(f"{event}: unknown device {target!r} (not in the inventory)")
    if not fits(device):
        raise ValueError(f"{event} applies to {wanted} devices; {target} is {device.kind}")
    return [target]


def resolve_injections(injections: Iterable[tuple[str, str, float]],
                       inventory: Mapping[str, Device], seed: int = 0) -> list[SimEvent]:
    """Resolve (event, target, seconds) injections to one SimEvent per device."""
    rng = random.Random(f"sentinel-sim/{seed}/inject")
    out: list[SimEvent] = []
    for event, target, at in injections:
        if not math.isfinite(at) or at < 0:
            raise ValueError(f"{event}: the time must be 0 or more seconds, not {at}")
        out.extend(SimEvent(event, device_id, float(at))
                   for device_id in select_targets(event, target, inventory, rng))
    return out
