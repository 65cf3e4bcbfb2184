"""The device inventory: which devices exist, what they are and where they are.

Community staff keep device lists in spreadsheets, so CSV is first-class; YAML and TOML
hold the same records for those who prefer them.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sentinel.errors import Problem

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class DeviceSettings(BaseModel):
    """Per-device settings that profiles and rules may need."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Ultrasonic level sensors measure distance down to the water: level = mount - distance.
    mount_height_m: float | None = Field(default=None, gt=0, le=100)
    tank_height_m: float | None = Field(default=None, gt=0, le=100)
    # The elderly person wearing a watch (invented names in the example inventory).
    resident: str | None = None
    # Overrides the kind's expected report interval (offline detection).
    report_interval_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _mount_above_tank(self) -> DeviceSettings:
        if (
            self.mount_height_m is not None
            and self.tank_height_m is not None
            and self.mount_height_m < self.tank_height_m
        ):
            raise ValueError("mount_height_m must not be below tank_height_m")
        return self

    def number(self, name: str) -> float | None:
        value = getattr(self, name, None)
        return value if isinstance(value, float | int) else None


class Device(BaseModel):
    """One device of the inventory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=DEVICE_ID_PATTERN)
    kind: str = Field(min_length=1)
    community: str = Field(min_length=1)
    compound: str = Field(min_length=1)
    building: str = ""
    floor: str = ""
    unit: str = ""
    grid: str = Field(min_length=1)
    location: str = ""
    profile: str = Field(min_length=1)
    settings: DeviceSettings = Field(default_factory=DeviceSettings)

    def tags(self) -> dict[str, str]:
        """The tags stored with every reading of this device."""
        return {
            "device_id": self.id,
            "community": self.community,
            "compound": self.compound,
            "building": self.building,
            "grid": self.grid,
        }


_DEVICE_COLUMNS = frozenset(Device.model_fields) - {"settings"}
_SETTING_COLUMNS = frozenset(DeviceSettings.model_fields)


class Inventory(Mapping[str, Device]):
    """Devices by id."""

    def __init__(self, devices: Iterable[Device] = ()) -> None:
        self._devices: dict[str, Device] = {d.id: d for d in devices}

    def __getitem__(self, device_id: str) -> Device:
        return self._devices[device_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)

    def get(self, device_id: str, default: Any = None) -> Any:
        return self._devices.get(device_id, default)

    def count_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for device in self._devices.values():
            counts[device.kind] = counts.get(device.kind, 0) + 1
        return counts


def _records_from_csv(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        known = _DEVICE_COLUMNS | _SETTING_COLUMNS
        unknown = [c for c in reader.fieldnames or [] if c not in known]
        if unknown:
            raise ValueError(f"unknown column(s): {', '.join(unknown)}")
        for line_no, row in enumerate(reader, start=2):
            record: dict[str, Any] = {}
            settings: dict[str, Any] = {}
            for column, cell in row.items():
                if column is None:  # more cells than header columns
                    raise ValueError(f"line {line_no}: more cells than columns")
                value = (cell or "").strip()
                if column in _SETTING_COLUMNS:
                    if value:
                        settings[column] = value
                else:
                    record[column] = value
            record["settings"] = settings
            yield f"line {line_no}", record


def _records_from_mapping_file(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    devices = data.get("devices") if isinstance(data, dict) else data
    if not isinstance(devices, list):
        raise ValueError("expected a list of devices (a top-level list or a `devices` list)")
    for index, record in enumerate(devices):
        if not isinstance(record, dict):
            raise ValueError(f"devices[{index}] is not a mapping")
        yield f"devices[{index}]", dict(record)


def load_inventory(paths: Iterable[Path]) -> tuple[Inventory, list[Problem]]:
    """Load every inventory file; return the valid devices and every problem found."""
    devices: list[Device] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for path in paths:
        file = str(path)
        try:
            if path.suffix.lower() == ".csv":
                records = list(_records_from_csv(path))
            elif path.suffix.lower() in (".yaml", ".yml", ".toml"):
                records = list(_records_from_mapping_file(path))
            else:
                problems.append(Problem(file, "", "inventory must be .csv, .yaml, .yml or .toml"))
                continue
        except FileNotFoundError:
            problems.append(Problem(file, "", "file not found"))
            continue
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError,
                tomllib.TOMLDecodeError) as exc:
            problems.append(Problem(file, "", f"cannot read inventory: {exc}"))
            continue
        for where, record in records:
            label = f"{where} (id {record.get('id')!s})" if record.get("id") else where
            try:
                device = Device.model_validate(record)
            except ValidationError as exc:
                for err in exc.errors(include_url=False, include_input=False):
                    loc = ".".join(str(p) for p in err["loc"])
                    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                    problems.append(Problem(file, label, f"{loc}: {msg}" if loc else msg))
                continue
            if device.id in seen:
                first = seen[device.id]
                problems.append(
                    Problem(file, label, f"duplicate device id {device.id!r} (first in {first})")
                )
                continue
            seen[device.id] = f"{file} {where}"
            devices.append(device)
    return Inventory(devices), problems
