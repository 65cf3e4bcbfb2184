"""The board's site plan: buildings where they stand, drawn offline as SVG on the server.

Positions come from the inventory's optional columns (`x`,`y` in metres on the site plan,
x east and y north; or `lat`,`lon` in degrees): a building stands at the mean position of
its devices that carry one. Plan metres win over degrees; a community that gives only
degrees gets a local projection (equirectangular about the centre: at the scale of a
community, a few hundred metres, its error is far below a building's width).

An elderly watch reports degrees (`latitude`, `longitude`). Its last position is drawn
when degrees can be put on the plan: when the plan is drawn from degrees, or when two or
more buildings carry both pairs (a similarity transform is fitted to them: scale,
rotation and shift, which is what lies between a north-up drawing and the map).

Buildings with an open incident of warning or worse take its colour; critical and
emergency stand out (class `alarm`). Every text in the drawing is escaped here; the page
imports the SVG as a document, so nothing in it runs.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from sentinel.config.inventory import Device
from sentinel.i18n import Language
from sentinel.incidents.model import Incident
from sentinel.types import Reading

# Metres per degree of latitude, and of longitude at the equator (WGS 84, mean).
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON = 111_320.0
WATCH_KIND = "elderly_watch"
_SEVERITY_ORDER = ("info", "warning", "critical", "emergency")
_TEXT: dict[str, dict[Language, str]] = {
    "title": {"zh": "小区平面图", "en": "Site plan"},
    "watch": {"zh": "长者手表 {id}", "en": "elderly watch {id}"},
    "seen": {"zh": "位置更新于 {time}", "en": "position at {time}"},
}


@dataclass(frozen=True, slots=True)
class Building:
    """One building on the plan: its place and position (plan metres, y north)."""

    compound: str
    building: str
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Watch:
    """An elderly watch's last reported position."""

    device: str
    lat: float
    lon: float
    ts: float


def _mean(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


class Projection:
    """Degrees to plan metres: a local projection, or a fitted similarity transform."""

    def __init__(self, lat0: float, lon0: float, scale: complex = 1, shift: complex = 0
                 ) -> None:
        self._lat0, self._lon0 = lat0, lon0
        self._cos = math.cos(math.radians(lat0))
        self._scale, self._shift = scale, shift

    def local(self, lat: float, lon: float) -> complex:
        """Metres east (real) and north (imaginary) of the projection's centre."""
        return complex((lon - self._lon0) * _M_PER_DEG_LON * self._cos,
                       (lat - self._lat0) * _M_PER_DEG_LAT)

    def __call__(self, lat: float, lon: float) -> tuple[float, float]:
        z = self._scale * self.local(lat, lon) + self._shift
        return z.real, z.imag

    @classmethod
    def fitted(cls, pairs: Sequence[tuple[tuple[float, float], tuple[float, float]]]
               ) -> Projection | None:
        """The least-squares similarity from ((lat, lon), (x, y)) pairs; None if degenerate.

        With complex numbers a similarity is z' = a z + b: the mean fixes b, and a is the
        ratio of the centred sums (a closed form, no solver)."""
        lat0, lon0 = _mean([g for g, _ in pairs])
        base = cls(lat0, lon0)
        src = [base.local(*g) for g, _ in pairs]
        dst = [complex(*p) for _, p in pairs]
        ms, md = sum(src) / len(src), sum(dst) / len(dst)
        den = sum(abs(s - ms) ** 2 for s in src)
        if den < 1.0:  # the buildings stand within a metre of each other: no scale
            return None
        a = sum((d - md) * (s - ms).conjugate() for s, d in zip(src, dst, strict=True)) / den
        return cls(lat0, lon0, a, md - a * ms)


@dataclass(frozen=True, slots=True)
class Layout:
    """The buildings of the inventory on the plan, and how degrees map onto it."""

    buildings: tuple[Building, ...]
    projection: Projection | None


def layout(inventory: Iterable[Device]) -> Layout:
    """Building positions from the inventory's x/y or lat/lon columns."""
    plan: dict[tuple[str, str], list[tuple[float, float]]] = {}
    geo: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for device in inventory:
        s = device.settings
        key = (device.compound, device.building)
        if s.x is not None and s.y is not None:
            plan.setdefault(key, []).append((s.x, s.y))
        if s.lat is not None and s.lon is not None:
            geo.setdefault(key, []).append((s.lat, s.lon))
    plan_at = {k: _mean(v) for k, v in plan.items()}
    geo_at = {k: _mean(v) for k, v in geo.items()}
    projection: Projection | None
    if plan_at:
        both = [(geo_at[k], plan_at[k]) for k in plan_at if k in geo_at]
        projection = Projection.fitted(both) if len(both) >= 2 else None
    elif geo_at:
        projection = Projection(*_mean(list(geo_at.values())))
    else:
        projection = None
    where: dict[tuple[str, str], tuple[float, float]] = dict(plan_at)
    if projection is not None:
        for k, g in geo_at.items():
            where.setdefault(k, projection(*g))
    buildings = tuple(Building(c, b, x, y) for (c, b), (x, y) in sorted(where.items()))
    return Layout(buildings, projection)


class WatchPositions:
    """A reading listener keeping each elderly watch's last position (in memory).

    A restart forgets them until each watch reports again (every minute or so)."""

    def __init__(self) -> None:
        self.last: dict[str, Watch] = {}

    async def put(self, readings: Sequence[Reading]) -> None:
        for reading in readings:
            if reading.kind != WATCH_KIND:
                continue
            lat, lon = reading.values.get("latitude"), reading.values.get("longitude")
            if isinstance(lat, int | float) and isinstance(lon, int | float):
                seen = self.last.get(reading.device_id)
                if seen is None or reading.ts >= seen.ts:
                    self.last[reading.device_id] = Watch(reading.device_id, float(lat),
                                                         float(lon), reading.ts)


def _worst(incidents: Iterable[Incident]) -> dict[tuple[str, str], str]:
    worst: dict[tuple[str, str], str] = {}
    for inc in incidents:
        label = inc.severity.label
        if label not in _SEVERITY_ORDER[1:]:
            continue
        key = (inc.place.get("compound", ""), inc.place.get("building", ""))
        if _SEVERITY_ORDER.index(label) > _SEVERITY_ORDER.index(worst.get(key, "info")):
            worst[key] = label
    return worst


def _f(value: float) -> str:
    return f"{value:.1f}"


def render(plan: Layout, incidents: Iterable[Incident], watches: Iterable[Watch],
           lang: Language, stamp: Callable[[float], str]) -> str:
    """The site plan as an SVG document (a short one saying so when nothing is placed)."""
    incidents = list(incidents)
    worst = _worst(incidents)
    placed: list[tuple[Watch, float, float, bool]] = []
    alarmed_watches = {inc.device_id for inc in incidents
                       if inc.kind == WATCH_KIND and inc.severity.label in ("critical",
                                                                             "emergency")}
    if plan.projection is not None:
        for w in watches:
            x, y = plan.projection(w.lat, w.lon)
            placed.append((w, x, y, w.device in alarmed_watches))
    points = [(b.x, b.y) for b in plan.buildings] + [(x, y) for _, x, y, _ in placed]
    if not points:
        return ('<svg xmlns="http://www.w3.org/2000/svg" class="siteplan empty" '
                'viewBox="0 0 10 1" data-buildings="0"></svg>')
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    # A building's square: 60 % of the closest spacing between two buildings, 8 to 40 m.
    size = 24.0
    if len(plan.buildings) > 1:
        closest = min(math.dist((a.x, a.y), (b.x, b.y)) for i, a in enumerate(plan.buildings)
                      for b in plan.buildings[i + 1:])
        size = min(40.0, max(8.0, 0.6 * closest))
    pad = size * 1.5
    x0, x1, y0, y1 = min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad
    width, height = x1 - x0, y1 - y0

    def sx(x: float) -> str:
        return _f(x - x0)

    def sy(y: float) -> str:  # north up: SVG's y grows downwards
        return _f(y1 - y)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="siteplan" '
           f'viewBox="0 0 {_f(width)} {_f(height)}" preserveAspectRatio="xMidYMid meet" '
           f'data-buildings="{len(plan.buildings)}" role="img" '
           f'aria-label="{escape(_TEXT["title"][lang])}">']
    # Each compound: a light outline around its buildings, named at its top left.
    compounds: dict[str, list[Building]] = {}
    for b in plan.buildings:
        compounds.setdefault(b.compound, []).append(b)
    font = _f(max(size * 0.45, min(width, height) / 60))
    for name, members in compounds.items():
        cx0 = min(b.x for b in members) - size
        cx1 = max(b.x for b in members) + size
        cy0 = min(b.y for b in members) - size
        cy1 = max(b.y for b in members) + size
        bad = any((b.compound, b.building) in worst for b in members)
        out.append(f'<g class="compound{" has-alarm" if bad else ""}" '
                   f'data-compound="{escape(name)}">'
                   f'<rect x="{sx(cx0)}" y="{sy(cy1)}" width="{_f(cx1 - cx0)}" '
                   f'height="{_f(cy1 - cy0)}" rx="{_f(size / 3)}"/>'
                   f'<text x="{sx(cx0)}" y="{sy(cy1)}" dy="-{_f(size / 6)}" '
                   f'font-size="{font}">{escape(name)}</text></g>')
    half = size / 2
    for b in plan.buildings:
        state = worst.get((b.compound, b.building), "ok")
        alarm = " alarm" if state in ("critical", "emergency") else ""
        out.append(f'<g class="building w-{state}{alarm}" data-compound="{escape(b.compound)}"'
                   f' data-building="{escape(b.building)}" data-worst="{state}">'
                   f"<title>{escape(b.compound)} {escape(b.building)}</title>"
                   f'<rect x="{sx(b.x - half)}" y="{sy(b.y + half)}" width="{_f(size)}" '
                   f'height="{_f(size)}" rx="{_f(size / 8)}"/>'
                   f'<text x="{sx(b.x)}" y="{sy(b.y)}" dy=".35em" text-anchor="middle" '
                   f'font-size="{_f(size * 0.36)}">{escape(b.building)}</text></g>')
    for w, x, y, alarm_on in placed:
        title = (_TEXT["watch"][lang].format(id=w.device) + " · "
                 + _TEXT["seen"][lang].format(time=stamp(w.ts)))
        radius = size * (0.4 if alarm_on else 0.22)
        out.append(f'<g class="watch{" alarm" if alarm_on else ""}" '
                   f'data-device="{escape(w.device)}"><title>{escape(title)}</title>'
                   f'<circle cx="{sx(x)}" cy="{sy(y)}" r="{_f(radius)}"/></g>')
    out.append("</svg>")
    return "".join(out)


@dataclass
class SitePlan:
    """What the `/api/siteplan` route draws from: the layout, open incidents, watches."""

    plan: Layout
    open_incidents: Callable[[], Awaitable[list[Incident]]]
    watches: WatchPositions | None = None

    @classmethod
    def of(cls, inventory: Mapping[str, Device],
           open_incidents: Callable[[], Awaitable[list[Incident]]],
           watches: WatchPositions | None = None) -> SitePlan:
        return cls(layout(inventory.values()), open_incidents, watches)

    async def svg(self, lang: Language, stamp: Callable[[float], str]) -> str:
        found = self.watches.last.values() if self.watches is not None else ()
        return render(self.plan, await self.open_incidents(), list(found), lang, stamp)

    def summary(self) -> dict[str, Any]:
        return {"buildings": len(self.plan.buildings),
                "watches": self.plan.projection is not None}
