"""Canonical device kinds: the typed fields every reading of a kind may carry.

A kind is data, not code: the built-in kinds below and any kind declared in a file under
`[devices] kind_dirs` go through the same registry, so adding a kind (fire-lane occupancy,
septic-tank gas) touches no pipeline code.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sentinel import units

FieldType = Literal["number", "integer", "bool", "string"]


class FieldSpec(BaseModel):
    """One canonical field: its type, canonical unit and the physically possible range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FieldType
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    # For string fields: the allowed values (None = any non-empty string).
    choices: tuple[str, ...] | None = None
    # The per-device setting that caps this field (e.g. level cannot exceed tank height).
    max_setting: str | None = None
    description: str = ""
    # Decimals a stored value keeps (None: as converted).
    precision: int | None = None

    @model_validator(mode="after")
    def _unit_known(self) -> FieldSpec:
        if self.unit is not None:
            units.dimension_of(self.unit)
        if self.type in ("bool", "string") and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply to numeric fields only")
        return self


class KindSpec(BaseModel):
    """A device kind: a name and its canonical fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    fields: dict[str, FieldSpec]

    @model_validator(mode="after")
    def _field_names(self) -> KindSpec:
        for name in self.fields:
            if not name.isidentifier() or not name.islower():
                raise ValueError(f"field name {name!r} must be a lower-case identifier")
        return self


def _f(type_: FieldType, unit: str | None = None, lo: float | None = None,
       hi: float | None = None, desc: str = "", **extra: object) -> FieldSpec:
    return FieldSpec(type=type_, unit=unit, min=lo, max=hi, description=desc, **extra)  # type: ignore[arg-type]


# Fields any battery-powered radio device may report.
COMMON_FIELDS: dict[str, FieldSpec] = {
    "battery": _f("number", "%", 0, 100, "remaining battery charge"),
    "battery_voltage": _f("number", "V", 0, 60, "battery voltage"),
    "signal": _f("number", "dBm", -200, 30, "received signal strength (RSSI)"),
    "snr": _f("number", None, -50, 50, "signal-to-noise ratio, dB"),
}

GAS_TYPES = ("CH4", "LPG", "NG", "CO", "H2S", "NH3", "H2", "O2", "VOC")

BUILTIN_KINDS: tuple[KindSpec, ...] = (
    KindSpec(name="smoke", description="infrared (photoelectric) smoke detector", fields={
        "alarm": _f("bool", desc="smoke alarm state"),
        "obscuration": _f("number", "%/m", 0, 100, "smoke obscuration"),
        "tamper": _f("bool", desc="removed from its base or opened"),
        "fault": _f("bool", desc="device reports a fault"),
        "self_test": _f("bool", desc="a self-test is in progress or just ran"),
        "temperature": _f("number", "degC", -40, 150),
        **COMMON_FIELDS,
    }),
    KindSpec(name="gas", description="combustible / toxic gas detector", fields={
        "alarm": _f("bool", desc="gas alarm state"),
        "concentration_lel": _f("number", "%LEL", 0, 100, "combustible gas, % of LEL"),
        "concentration_ppm": _f("number", "ppm", 0, 1_000_000, "toxic gas, parts per million"),
        "gas_type": _f("string", choices=GAS_TYPES, desc="gas the sensor measures"),
        "valve_closed": _f("bool", desc="linked shut-off valve is closed"),
        "fault": _f("bool"),
        "tamper": _f("bool"),
        **COMMON_FIELDS,
    }),
    KindSpec(name="hydrant_pressure", description="fire-hydrant pipe pressure monitor", fields={
        "pressure": _f("number", "MPa", 0, 10, "static pipe pressure"),
        "fault": _f("bool"),
        "tamper": _f("bool"),
        **COMMON_FIELDS,
    }),
    KindSpec(name="water_level", description="fire-water tank / pool level monitor", fields={
        "level": _f("number", "m", 0, 100, "water depth", max_setting="tank_height_m"),
        "level_percent": _f("number", "%", 0, 100, "level as a share of tank height"),
        "fault": _f("bool"),
        "tamper": _f("bool"),
        **COMMON_FIELDS,
    }),
    KindSpec(name="elderly_watch", description="smartwatch of an elderly person living alone",
             fields={
        "sos": _f("bool", desc="SOS button pressed"),
        "sos_cancel": _f("bool", desc="wearer cancelled the SOS"),
        "fall": _f("bool", desc="fall detected"),
        "heart_rate": _f("number", "bpm", 0, 300),
        "steps": _f("integer", "1", 0, 1_000_000, "steps today"),
        "worn": _f("bool", desc="watch is on the wrist"),
        "latitude": _f("number", "deg", -90, 90),
        "longitude": _f("number", "deg", -180, 180),
        **COMMON_FIELDS,
    }),
)


@dataclass(frozen=True, slots=True)
class CompiledField:
    """A field spec flattened for the per-message hot path."""

    name: str
    type: FieldType
    lo: float
    hi: float
    choices: frozenset[str] | None
    max_setting: str | None
    precision: int | None = None


class KindRegistry:
    """All known kinds, by name."""

    def __init__(self, kinds: Iterable[KindSpec]) -> None:
        self._kinds: dict[str, KindSpec] = {}
        self._compiled: dict[str, dict[str, CompiledField]] = {}
        for kind in kinds:
            self.add(kind)

    def add(self, kind: KindSpec) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"kind {kind.name!r} is defined twice")
        self._kinds[kind.name] = kind
        self._compiled[kind.name] = {
            name: CompiledField(
                name=name, type=spec.type,
                lo=-math.inf if spec.min is None else spec.min,
                hi=math.inf if spec.max is None else spec.max,
                choices=frozenset(spec.choices) if spec.choices else None,
                max_setting=spec.max_setting,
                precision=spec.precision,
            )
            for name, spec in kind.fields.items()
        }

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __getitem__(self, name: str) -> KindSpec:
        return self._kinds[name]

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def compiled(self, name: str) -> Mapping[str, CompiledField]:
        return self._compiled[name]

    def all_field_names(self) -> set[str]:
        return {f for k in self._kinds.values() for f in k.fields}


def load_kind_file(path: Path) -> KindSpec:
    """Load one kind definition from TOML or YAML; raises ValueError with the reason."""
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("a kind file must hold a mapping")
    fields = data.get("fields")
    if data.get("include_common_fields", True) and isinstance(fields, dict):
        data["fields"] = {**{k: v.model_dump() for k, v in COMMON_FIELDS.items()}, **fields}
    data.pop("include_common_fields", None)
    try:
        return KindSpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_short_errors(exc)) from None


def _short_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)
