"""The device inventory: which devices exist, what they are and where they are.

Community staff keep device lists in spreadsheets, so CSV is first-class; YAML and TOML
hold the same records for those who prefer them.

The rules for one record are the pydantic models `DeviceRecord` and `SettingsRecord`; the
inventory keeps each valid device as a compact immutable `Device` (a named tuple: a fleet
of 100,000 devices lives as long as the daemon). A CSV row whose cells are all plainly
valid (nearly every row) is checked and built by `_CsvColumns.device` without pydantic,
ten times faster; any other row, and every YAML or TOML record, goes through the models,
which also word every problem.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import math
import operator
import re
import tomllib
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sentinel.config.yamlfile import parse_yaml
from sentinel.errors import Problem

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class DeviceSettings(NamedTuple):
    """Per-device settings that profiles and rules may need (validated by SettingsRecord)."""

    # Ultrasonic level sensors measure distance down to the water: level = mount - distance.
    mount_height_m: float | None = None
    tank_height_m: float | None = None
    # The elderly person wearing a watch (invented names in the example inventory).
    resident: str | None = None
    # Overrides the kind's expected report interval (offline detection).
    report_interval_s: float | None = None
    # Where the device's building stands, for the board's site plan: metres on the plan
    # (x east, y north) or degrees (WGS 84). Optional; either pair, or both.
    x: float | None = None
    y: float | None = None
    lat: float | None = None
    lon: float | None = None

    def number(self, name: str) -> float | None:
        value = getattr(self, name, None) if name in SETTING_NAMES else None
        return value if isinstance(value, float | int) else None

    def model_dump(self) -> dict[str, Any]:
        return self._asdict()


class Device(NamedTuple):
    """One device of the inventory (validated by DeviceRecord)."""

    id: str
    kind: str
    community: str
    compound: str
    grid: str
    # The first profile the device speaks (the simulator publishes in it).
    profile: str
    building: str = ""
    floor: str = ""
    unit: str = ""
    location: str = ""
    settings: DeviceSettings = DeviceSettings()
    # Further profiles, for a device that speaks several formats (Zigbee2MQTT: a JSON state
    # and a plain `action` value on another topic).
    more_profiles: tuple[str, ...] = ()
    # Names the device has on the wire besides its id (a bridge's friendly name, which may
    # hold spaces, slashes or Chinese): the decoder looks these up first.
    aliases: tuple[str, ...] = ()

    @property
    def profiles(self) -> tuple[str, ...]:
        """Every profile the device speaks, the first one first."""
        return (self.profile, *self.more_profiles) if self.more_profiles else (self.profile,)

    def tags(self) -> dict[str, str]:
        """The tags stored with every reading of this device."""
        return {
            "device_id": self.id,
            "community": self.community,
            "compound": self.compound,
            "building": self.building,
            "grid": self.grid,
        }

    def model_dump(self) -> dict[str, Any]:
        """The record as a plain dict, settings included (as a dict)."""
        data = self._asdict()
        data["settings"] = self.settings._asdict()
        return data


# The text fields of Device, in order: the CSV fast path reads them from every row.
_TEXT_FIELDS = Device._fields[:Device._fields.index("settings")]


SETTING_NAMES: tuple[str, ...] = DeviceSettings._fields
# The settings that hold numbers (the others hold text).
NUMBER_SETTINGS = ("mount_height_m", "tank_height_m", "report_interval_s")
# Numbers too, but only the site plan reads them: kept out of NUMBER_SETTINGS, whose
# values are facts the configuration check groups devices by (a position per building
# would make nearly every device a group of its own).
POSITION_SETTINGS = ("x", "y", "lat", "lon")
_POSITION_PAIRS = (("x", "y"), ("lat", "lon"))
NO_SETTINGS = DeviceSettings()


# -- the rules for one record -------------------------------------------------------------

class SettingsRecord(BaseModel):
    """What makes device settings valid."""

    # Built when first needed: a CSV inventory of plain rows never needs it.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    mount_height_m: float | None = Field(default=None, gt=0, le=100)
    tank_height_m: float | None = Field(default=None, gt=0, le=100)
    resident: str | None = None
    report_interval_s: float | None = Field(default=None, gt=0)
    x: float | None = Field(default=None, ge=-100_000, le=100_000)
    y: float | None = Field(default=None, ge=-100_000, le=100_000)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)

    @model_validator(mode="after")
    def _positions_in_pairs(self) -> SettingsRecord:
        for a, b in _POSITION_PAIRS:
            if (getattr(self, a) is None) != (getattr(self, b) is None):
                raise ValueError(f"{a} and {b} go together: give both or neither")
        return self

    @model_validator(mode="after")
    def _mount_above_tank(self) -> SettingsRecord:
        if (
            self.mount_height_m is not None
            and self.tank_height_m is not None
            and self.mount_height_m < self.tank_height_m
        ):
            raise ValueError("mount_height_m must not be below tank_height_m")
        return self


class DeviceRecord(BaseModel):
    """What makes one inventory record valid."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    id: str = Field(pattern=DEVICE_ID_PATTERN)
    kind: str = Field(min_length=1)
    community: str = Field(min_length=1)
    compound: str = Field(min_length=1)
    building: str = ""
    floor: str = ""
    unit: str = ""
    grid: str = Field(min_length=1)
    location: str = ""
    # One profile name, several as a list, or several in one text separated by `|`
    # (`zigbee2mqtt|zigbee2mqtt-action`, as a CSV cell holds them).
    profile: tuple[str, ...] = Field(min_length=1)
    # Wire names: a list, or one text (a CSV cell is split on `|` before it comes here).
    aliases: tuple[str, ...] = ()
    settings: SettingsRecord = Field(default_factory=SettingsRecord)

    @field_validator("profile", mode="before")
    @classmethod
    def _profiles(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split("|")
        if isinstance(value, list | tuple):
            names = [v.strip() if isinstance(v, str) else v for v in value]
            if any(name == "" for name in names):
                raise ValueError("empty profile name")
            if len(set(names)) != len(names):
                raise ValueError("a profile is named twice")
            return names
        return value

    @field_validator("aliases", mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            names = [v.strip() if isinstance(v, str) else v for v in value]
            if any(name == "" for name in names):
                raise ValueError("empty alias")
            return list(dict.fromkeys(names))  # a repeated alias is said once
        return value

    def device(self) -> Device:
        settings = DeviceSettings(**self.settings.model_dump())
        data = self.model_dump(exclude={"settings", "profile"})
        return Device(**data, profile=self.profile[0], more_profiles=self.profile[1:],
                      settings=NO_SETTINGS if settings == NO_SETTINGS else settings)


_DEVICE_COLUMNS = frozenset(DeviceRecord.model_fields) - {"settings"}
_SETTING_COLUMNS = frozenset(SettingsRecord.model_fields)
# The runtime records hold exactly what the models validate (`profile` holds the first of
# the record's profiles, `more_profiles` the others).
assert set(Device._fields) == _DEVICE_COLUMNS | {"settings", "more_profiles"}
assert set(_TEXT_FIELDS) == _DEVICE_COLUMNS - {"aliases"}
assert set(SETTING_NAMES) == _SETTING_COLUMNS


class Inventory(Mapping[str, Device]):
    """Devices by id."""

    def __init__(self, devices: Iterable[Device] = ()) -> None:
        self._devices: dict[str, Device] = {d.id: d for d in devices}
        self._aliases: dict[str, Device] = {}
        self.index_aliases()

    def index_aliases(self) -> list[tuple[Device, str]]:
        """Build the wire-name table; return each (device, problem) of an alias that names
        another device's id or another device's alias (the first owner keeps it)."""
        table: dict[str, Device] = {}
        conflicts: list[tuple[Device, str]] = []
        for device in self._devices.values():
            for alias in device.aliases:
                if alias == device.id:
                    continue
                other = self._devices.get(alias)
                if other is not None:
                    conflicts.append((device, f"alias {alias!r} is the id of device {other.id}"))
                    continue
                owner = table.setdefault(alias, device)
                if owner is not device:
                    conflicts.append((device, f"alias {alias!r} is also an alias of device "
                                              f"{owner.id}"))
        self._aliases = table
        return conflicts

    def by_alias(self, name: str) -> Device | None:
        """The device whose alias (wire name) this is, exactly as written."""
        return self._aliases.get(name)

    @property
    def has_aliases(self) -> bool:
        return bool(self._aliases)

    def __getitem__(self, device_id: str) -> Device:
        return self._devices[device_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    # The dict's own views: a walk over a big fleet should not go through __getitem__.
    def keys(self) -> KeysView[str]:
        return self._devices.keys()

    def values(self) -> ValuesView[Device]:
        return self._devices.values()

    def items(self) -> ItemsView[str, Device]:
        return self._devices.items()

    def get(self, device_id: str, default: Any = None) -> Any:
        return self._devices.get(device_id, default)

    def count_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for device in self._devices.values():
            counts[device.kind] = counts.get(device.kind, 0) + 1
        return counts


# -- reading files ------------------------------------------------------------------------

# A CSV row is taken without the models only when every cell is plainly valid; any other
# row (an empty required cell, an odd number, a bad id...) goes to the models, which decide
# and word the problem. So `_CsvColumns.device` must never accept what the models refuse,
# nor read a cell differently.
_PLAIN_ID = re.compile(DEVICE_ID_PATTERN)
_PLAIN_NUMBER = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
# Settings read as numbers, with the bounds of SettingsRecord: greater than, at most.
_NUMBER_BOUNDS: dict[str, tuple[float, float | None]] = {
    "mount_height_m": (0.0, 100.0), "tank_height_m": (0.0, 100.0),
    "report_interval_s": (0.0, None),
    # The fast path sees only plain non-negative numbers; a negative one goes to the models.
    "x": (-math.inf, 100_000.0), "y": (-math.inf, 100_000.0),
    "lat": (-math.inf, 90.0), "lon": (-math.inf, 180.0)}
assert set(_NUMBER_BOUNDS) == set(NUMBER_SETTINGS) | set(POSITION_SETTINGS)


class _CsvColumns:
    """Where each field is in the rows of one CSV file, and the fast path for its rows."""

    def __init__(self, header: list[str]) -> None:
        index = {column: i for i, column in enumerate(header)}  # a repeated column: the last
        self.width = len(header)
        self.device_columns = [(index[c], c) for c in header if c in _DEVICE_COLUMNS]
        self.setting_columns = [(index[c], c) for c in header if c in _SETTING_COLUMNS]
        self._setting_indices = [i for i, _ in self.setting_columns]
        # The cells of Device's text fields, in their order. The fast path needs every one
        # of those columns (a file without some is small anyway); `aliases` may be absent.
        self._device_cells = (operator.itemgetter(*(index[f] for f in _TEXT_FIELDS))
                              if index.keys() >= set(_TEXT_FIELDS) else None)
        self._aliases_at = index.get("aliases")
        # Cells repeated over the fleet (kind, compound, grid, floor...) are kept once.
        self._shared: dict[str, str] = {}
        self._shared_profiles: dict[tuple[str, ...], tuple[str, ...]] = {}

    def record(self, cells: list[str]) -> dict[str, Any]:
        """The row as the models take it: every device column, the non-empty settings."""
        record: dict[str, Any] = {c: cells[i].strip() for i, c in self.device_columns}
        record["settings"] = {c: v for i, c in self.setting_columns if (v := cells[i].strip())}
        aliases = record.get("aliases")
        record["aliases"] = aliases.split("|") if aliases else []
        return record

    def device(self, cells: list[str]) -> Device | None:
        """The device of a row whose cells are all plainly valid; None: ask the models."""
        if self._device_cells is None:
            return None
        id_, kind, community, compound, grid, profile, building, floor, unit, location = map(
            str.strip, self._device_cells(cells))
        if not (kind and community and compound and grid and profile) or \
                _PLAIN_ID.fullmatch(id_) is None:
            return None
        more_profiles: tuple[str, ...] = ()
        if "|" in profile:
            profile, *others = (p.strip() for p in profile.split("|"))
            more_profiles = tuple(others)
            if not all(more_profiles) or not profile or \
                    len(set(more_profiles) | {profile}) != len(more_profiles) + 1:
                return None
            more_profiles = self._shared_profiles.setdefault(more_profiles, more_profiles)
        aliases: tuple[str, ...] = ()
        if self._aliases_at is not None and (cell := cells[self._aliases_at].strip()):
            aliases = tuple(dict.fromkeys(a.strip() for a in cell.split("|")))
            if not all(aliases):
                return None
        settings = NO_SETTINGS
        if any(map(cells.__getitem__, self._setting_indices)):
            given = {c: v for i, c in self.setting_columns if (v := cells[i].strip())}
            found = _plain_settings(given) if given else NO_SETTINGS
            if found is None:
                return None
            settings = found
        same = self._shared.setdefault
        return Device(id=id_, kind=same(kind, kind), community=same(community, community),
                      compound=same(compound, compound), grid=same(grid, grid),
                      profile=same(profile, profile), building=same(building, building),
                      floor=same(floor, floor), unit=same(unit, unit), location=location,
                      settings=settings, more_profiles=more_profiles, aliases=aliases)


def _plain_settings(cells: Mapping[str, str]) -> DeviceSettings | None:
    """Settings from non-empty CSV cells if they are plainly valid, else None."""
    values: dict[str, Any] = {}
    for name, text in cells.items():
        bounds = _NUMBER_BOUNDS.get(name)
        if bounds is None:
            values[name] = text  # resident: any text
            continue
        if _PLAIN_NUMBER.fullmatch(text) is None:
            return None
        number = float(text)
        above, at_most = bounds
        if not number > above or (at_most is not None and number > at_most):
            return None
        values[name] = number
    settings = DeviceSettings(**values)
    if any((getattr(settings, a) is None) != (getattr(settings, b) is None)
           for a, b in _POSITION_PAIRS):
        return None
    mount, tank = settings.mount_height_m, settings.tank_height_m
    if mount is not None and tank is not None and mount < tank:
        return None
    return settings


# What a file yields for each record: its position (line of a CSV file, index in the list
# of a YAML or TOML file), and the device if already known valid or else the record for
# the models. A position reads as "line 12" or "devices[3]".
_Entry = tuple[int, Device | dict[str, Any]]
_Place = Callable[[int], str]
_CSV_PLACE: _Place = "line {}".format
_LIST_PLACE: _Place = "devices[{}]".format


def _records_from_csv(path: Path) -> Iterator[_Entry]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        known = _DEVICE_COLUMNS | _SETTING_COLUMNS
        unknown = [c for c in header if c not in known]
        if unknown:
            raise ValueError(f"unknown column(s): {', '.join(unknown)}")
        columns = _CsvColumns(header)
        line_no = 1
        for cells in reader:
            if not cells:
                continue  # a blank line is no record (nor counted, as csv.DictReader did)
            line_no += 1
            if len(cells) > columns.width:
                raise ValueError(f"line {line_no}: more cells than columns")
            if len(cells) < columns.width:
                cells += [""] * (columns.width - len(cells))
            device = columns.device(cells)
            yield line_no, device if device is not None else columns.record(cells)


def _records_from_mapping_file(path: Path) -> Iterator[_Entry]:
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix == ".toml" else parse_yaml(text)
    devices = data.get("devices") if isinstance(data, dict) else data
    if not isinstance(devices, list):
        raise ValueError("expected a list of devices (a top-level list or a `devices` list)")
    for index, record in enumerate(devices):
        if not isinstance(record, dict):
            raise ValueError(f"devices[{index}] is not a mapping")
        yield index, dict(record)


# Where each id was first seen, per file read so far: (file, how its positions read,
# {id: position}).
_Origins = list[tuple[str, _Place, dict[str, int]]]


def _first_seen(origins: _Origins, device_id: str) -> str | None:
    for file, place, positions in origins:
        position = positions.get(device_id)
        if position is not None:
            return f"{file} {place(position)}"
    return None


def _load_file(path: Path, file: str, origins: _Origins) -> tuple[list[Device], list[Problem]]:
    """The valid devices and the problems of one file. Its ids go into a new last entry
    of `origins`; raises if the file cannot be read (the caller then drops that entry)."""
    earlier = list(origins)
    positions: dict[str, int] = {}
    entries: Iterator[_Entry]
    if path.suffix.lower() == ".csv":
        entries, place = _records_from_csv(path), _CSV_PLACE
    elif path.suffix.lower() in (".yaml", ".yml", ".toml"):
        entries, place = _records_from_mapping_file(path), _LIST_PLACE
    else:
        return [], [Problem(file, "", "inventory must be .csv, .yaml, .yml or .toml")]
    origins.append((file, place, positions))
    devices: list[Device] = []
    problems: list[Problem] = []
    for position, entry in entries:
        if isinstance(entry, Device):
            device = entry
        else:
            where = place(position)
            label = f"{where} (id {entry.get('id')!s})" if entry.get("id") else where
            try:
                device = DeviceRecord.model_validate(entry).device()
            except ValidationError as exc:
                for err in exc.errors(include_url=False, include_input=False):
                    loc = ".".join(str(p) for p in err["loc"])
                    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                    problems.append(Problem(file, label, f"{loc}: {msg}" if loc else msg))
                continue
        first = _first_seen(earlier, device.id) if earlier else None
        if first is None and device.id in positions:
            first = f"{file} {place(positions[device.id])}"
        if first is not None:
            problems.append(Problem(file, f"{place(position)} (id {device.id})",
                                    f"duplicate device id {device.id!r} (first in {first})"))
            continue
        positions[device.id] = position
        devices.append(device)
    return devices, problems


def load_inventory(paths: Iterable[Path]) -> tuple[Inventory, list[Problem]]:
    """Load every inventory file; return the valid devices and every problem found.

    A file that cannot be read as a whole (not found, a broken row) is one problem and
    adds no device."""
    with collector_paused():
        return _load_inventory(paths)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection within: for loading configuration.

    A device is a container the collector tracks, and loading makes no reference cycles:
    collections during the load would walk the growing fleet again and again (each full
    one 0.15 s with 100,000 devices) and find nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_inventory(paths: Iterable[Path]) -> tuple[Inventory, list[Problem]]:
    inventory = Inventory()
    problems: list[Problem] = []
    origins: _Origins = []
    for path in paths:
        file = str(path)
        try:
            devices, file_problems = _load_file(path, file, origins)
        except FileNotFoundError:
            problems.append(Problem(file, "", "file not found"))
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError,
                tomllib.TOMLDecodeError) as exc:
            problems.append(Problem(file, "", f"cannot read inventory: {exc}"))
        else:
            problems += file_problems
            inventory._devices.update((d.id, d) for d in devices)
            continue
        origins.pop()  # its ids do not count: none of its devices was taken
    for device, text in inventory.index_aliases():
        file, place = next(((file, place(positions[device.id])) for file, place, positions
                            in origins if device.id in positions), ("", ""))
        problems.append(Problem(file, f"{place} (id {device.id})", text))
    return inventory, problems
