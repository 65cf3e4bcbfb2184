"""Fleet health at a glance: which devices report, which are offline, what is open where.

Pure: computed from the inventory, the rule engine's last-seen times and the open incidents,
so `sentinel status` and the board show exactly what the rules decided (a device is offline
when its offline rule has an incident open, not by a second, different notion of offline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sentinel.config.inventory import Device
from sentinel.incidents.model import Incident
from sentinel.rules.model import OfflineRule, RulesConfig
from sentinel.types import Severity

# Incidents that mean "replace the battery", for the low-battery list.
BATTERY_INCIDENTS = frozenset({"battery_low", "battery_voltage_low", "watch_battery_low"})
# A tile's colour: no open incident, only offline devices, or the worst severity open there.
STATES = ("ok", "offline", *(s.label for s in Severity))


def offline_incident_names(rules: RulesConfig) -> frozenset[str]:
    return frozenset(r.incident_name for r in rules.rule if isinstance(r, OfflineRule))


@dataclass
class _Counts:
    total: int = 0
    online: int = 0
    offline: int = 0
    unseen: int = 0
    worst: str = "ok"

    def json(self) -> dict[str, Any]:
        return {"total": self.total, "online": self.online, "offline": self.offline,
                "unseen": self.unseen}

    def worsen(self, state: str) -> None:
        if STATES.index(state) > STATES.index(self.worst):
            self.worst = state


def fleet_status(inventory: Mapping[str, Device], last_seen: Mapping[str, float],
                 open_incidents: Iterable[Incident], offline_names: frozenset[str],
                 now: float) -> dict[str, Any]:
    """Devices per kind, grid, compound and building, with their worst open state."""
    incidents = list(open_incidents)
    offline_devices = {inc.device_id for inc in incidents
                       if inc.name in offline_names and inc.device_id}
    devices = _Counts()
    by_kind: dict[str, _Counts] = {}
    by_grid: dict[str, _Counts] = {}
    compounds: dict[str, _Counts] = {}
    buildings: dict[tuple[str, str], _Counts] = {}
    for device in inventory.values():
        groups = [devices, by_kind.setdefault(device.kind, _Counts()),
                  by_grid.setdefault(device.grid or "-", _Counts()),
                  compounds.setdefault(device.compound, _Counts()),
                  buildings.setdefault((device.compound, device.building or "-"), _Counts())]
        if device.id in offline_devices:
            state = "offline"
        elif device.id in last_seen:
            state = "online"
        else:
            state = "unseen"
        for group in groups:
            group.total += 1
            setattr(group, state, getattr(group, state) + 1)
            if state == "offline":
                group.worsen("offline")
    open_by_severity = {s.label: 0 for s in Severity}
    for inc in incidents:
        open_by_severity[inc.severity.label] += 1
        if inc.silenced_by or inc.name in offline_names:
            continue
        state = inc.severity.label
        compound = inc.place.get("compound")
        if compound in compounds:
            compounds[compound].worsen(state)
            key = (compound, inc.place.get("building") or "-")
            if key in buildings:
                buildings[key].worsen(state)
    low_battery = sorted(
        ({"device": inc.device_id, "incident": inc.id, "since": inc.opened_at,
          "value": inc.value, "place": dict(inc.place)}
         for inc in incidents if inc.name in BATTERY_INCIDENTS),
        key=lambda row: str(row["device"]))
    seen = [ts for ts in last_seen.values()]
    return {
        "now": now,
        "devices": {**devices.json(),
                    "by_kind": {k: c.json() for k, c in sorted(by_kind.items())},
                    "by_grid": {g: c.json() for g, c in sorted(by_grid.items())}},
        "compounds": [
            {"id": compound, "worst": counts.worst, **counts.json(),
             "buildings": [{"id": building, "worst": b.worst, **b.json()}
                           for (c, building), b in sorted(buildings.items()) if c == compound]}
            for compound, counts in sorted(compounds.items())],
        "incidents_open": open_by_severity,
        "last_reading_at": max(seen) if seen else None,
        "low_battery": low_battery,
        "offline": sorted(offline_devices),
    }
