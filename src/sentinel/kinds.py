"""Canonical device kinds: the typed fields every reading of a kind may carry.

A kind is data, not code: the built-in kinds below and any kind declared in a file under
`[devices] kind_dirs` go through the same registry, so adding a kind (fire-lane occupancy,
septic-tank gas) touches no pipeline code.

A kind may extend another (`extends = "gas"`): it has every field of its base plus its own,
and it *is a* base kind — rules, profiles and escalation policies that name the base apply
to it. `KindRegistry.lineage` is the one answer to "what is this kind": itself, then its
bases, nearest first.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sentinel import units
from sentinel.i18n import Label, entry

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
    # Decimals a stored value keeps (the decoder rounds after unit conversion, so a
    # converted 0.32 stays 0.32, not 0.32000000000000006). None: not rounded.
    precision: int | None = Field(default=None, ge=0, le=12)
    description: str = ""
    # How people read the field's name in notifications (zh/en).
    label: Label | None = None

    @model_validator(mode="after")
    def _unit_known(self) -> FieldSpec:
        if self.unit is not None:
            units.dimension_of(self.unit)
        if self.type in ("bool", "string") and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply to numeric fields only")
        if self.type != "number" and self.precision is not None:
            raise ValueError("precision applies to number fields only")
        return self


class KindSpec(BaseModel):
    """A device kind: a name and its canonical fields.

    `fields` holds every field of the kind; for a kind that `extends` another, the
    registry fills in the base's fields when the kind is added (a file lists only its own).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    # How people read the kind's name (CLI, board, notifications); zh/en.
    label: Label | None = None
    # The kind this one is a special case of (its rules, profiles and policies apply).
    extends: str | None = None
    fields: dict[str, FieldSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _field_names(self) -> KindSpec:
        if not self.fields and self.extends is None:
            raise ValueError("a kind needs fields (or extends another kind)")
        if self.extends == self.name:
            raise ValueError(f"kind {self.name!r} cannot extend itself")
        for name in self.fields:
            if not name.isidentifier() or not name.islower():
                raise ValueError(f"field name {name!r} must be a lower-case identifier")
        return self


def _f(type_: FieldType, unit: str | None = None, lo: float | None = None,
       hi: float | None = None, desc: str = "", **extra: object) -> FieldSpec:
    if type_ == "number" and "precision" not in extra:
        extra["precision"] = _PRECISION.get(unit)
    return FieldSpec(type=type_, unit=unit, min=lo, max=hi, description=desc, **extra)  # type: ignore[arg-type]


# Decimals kept per canonical unit: finer than any sensor of the kind resolves, coarse
# enough to drop conversion noise. Pressure 0.0001 MPa = 0.1 kPa (gauges resolve 1 kPa);
# level 1 mm; degrees 6 decimals ≈ 0.1 m on the ground.
_PRECISION: dict[str | None, int] = {
    "MPa": 4, "m": 3, "%": 1, "%LEL": 1, "ppm": 1, "V": 3, "degC": 1, "deg": 6,
    "bpm": 0, "dBm": 1, "%/m": 2, None: 1,
}


# Fields any battery-powered radio device may report.
COMMON_FIELDS: dict[str, FieldSpec] = {
    "battery": _f("number", "%", 0, 100, "remaining battery charge"),
    # GB 20517-2025 §5.11: a standalone smoke alarm checks its battery at least every 24 h
    # and signals a battery fault before the voltage can no longer power it — a flag of its
    # own, distinct from a percentage (Zigbee2MQTT's `battery_low` is the same signal).
    "battery_low": _f("bool", desc="device signals a low battery"),
    "battery_voltage": _f("number", "V", 0, 60, "battery voltage"),
    "signal": _f("number", "dBm", -200, 30, "received signal strength (RSSI)"),
    "snr": _f("number", None, -50, 50, "signal-to-noise ratio, dB"),
}

def _builtin_label(kind: str) -> Label:
    # The names of built-in kinds live in the one catalogue (i18n), which the CLI reads
    # even where no configuration was loaded.
    return Label.model_validate(entry(f"kind.{kind}"))


GAS_TYPES = ("CH4", "LPG", "NG", "CO", "H2S", "NH3", "H2", "O2", "VOC")

BUILTIN_KINDS: tuple[KindSpec, ...] = (
    KindSpec(name="smoke", label=_builtin_label("smoke"),
             description="infrared (photoelectric) smoke detector", fields={
        "alarm": _f("bool", desc="smoke alarm state"),
        "obscuration": _f("number", "%/m", 0, 100, "smoke obscuration"),
        "tamper": _f("bool", desc="removed from its base or opened"),
        "fault": _f("bool", desc="device reports a fault"),
        "self_test": _f("bool", desc="a self-test is in progress or just ran"),
        "temperature": _f("number", "degC", -40, 150),
        **COMMON_FIELDS,
    }),
    KindSpec(name="gas", label=_builtin_label("gas"),
             description="combustible / toxic gas detector", fields={
        "alarm": _f("bool", desc="gas alarm state"),
        "concentration_lel": _f("number", "%LEL", 0, 100, "combustible gas, % of LEL"),
        "concentration_ppm": _f("number", "ppm", 0, 1_000_000, "toxic gas, parts per million"),
        "gas_type": _f("string", choices=GAS_TYPES, desc="gas the sensor measures"),
        "valve_closed": _f("bool", desc="linked shut-off valve is closed"),
        "fault": _f("bool"),
        "tamper": _f("bool"),
        **COMMON_FIELDS,
    }),
    KindSpec(name="hydrant_pressure", label=_builtin_label("hydrant_pressure"),
             description="fire-hydrant pipe pressure monitor", fields={
        "pressure": _f("number", "MPa", 0, 10, "static pipe pressure"),
        "fault": _f("bool"),
        "tamper": _f("bool"),
        **COMMON_FIELDS,
    }),
    KindSpec(name="water_level", label=_builtin_label("water_level"),
             description="fire-water tank / pool level monitor", fields={
        "level": _f("number", "m", 0, 100, "water depth", max_setting="tank_height_m"),
        "level_percent": _f("number", "%", 0, 100, "level as a share of tank height"),
        "fault": _f("bool"),
        "tamper": _f("bool"),
        **COMMON_FIELDS,
    }),
    KindSpec(name="elderly_watch", label=_builtin_label("elderly_watch"),
             description="smartwatch of an elderly person living alone", fields={
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
    # Decimals the decoder rounds a stored value to (None: not rounded).
    precision: int | None = None


class KindError(ValueError):
    """A kind that cannot be added; `spec` is the one given (to report it by its file)."""

    def __init__(self, spec: KindSpec, reason: str) -> None:
        super().__init__(reason)
        self.spec = spec


class KindRegistry:
    """All known kinds, by name, each with every field its bases give it."""

    def __init__(self, kinds: Iterable[KindSpec]) -> None:
        self._kinds: dict[str, KindSpec] = {}
        self._compiled: dict[str, dict[str, CompiledField]] = {}
        self._lineage: dict[str, tuple[str, ...]] = {}
        for kind in kinds:
            self.add(kind)

    def add(self, kind: KindSpec) -> None:
        """Add one kind; a kind it extends must be here already (see `add_all`)."""
        if kind.name in self._kinds:
            raise KindError(kind, f"kind {kind.name!r} is defined twice")
        lineage: tuple[str, ...] = (kind.name,)
        if kind.extends is not None:
            base = self._kinds.get(kind.extends)
            if base is None:
                raise KindError(kind, f"kind {kind.name!r} extends unknown kind "
                                      f"{kind.extends!r} (known: {', '.join(self.names())})")
            kind = kind.model_copy(update={"fields": _inherit(base, kind)})
            lineage += self._lineage[base.name]
        self._kinds[kind.name] = kind
        self._lineage[kind.name] = lineage
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

    def add_all(self, kinds: Iterable[KindSpec]) -> list[KindError]:
        """Add kinds in any order, bases before the kinds extending them; return the
        kinds refused (unknown base, a cycle of `extends`, a field clash, a repeat)."""
        pending = list(kinds)
        refused: list[KindError] = []
        while pending:
            ready = [k for k in pending if k.extends is None or k.extends in self._kinds]
            if not ready:
                break
            pending = [k for k in pending if not any(k is r for r in ready)]
            for kind in ready:
                try:
                    self.add(kind)
                except KindError as exc:
                    refused.append(exc)
        waiting = {k.name: k for k in pending}
        for kind in pending:
            refused.append(KindError(kind, _why_waiting(kind, waiting)))
        return refused

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

    def lineage(self, kind: str) -> tuple[str, ...]:
        """The kind, then the kinds it extends, nearest first (`septic_gas` → ("septic_gas",
        "gas")). An unknown kind is only itself."""
        return self._lineage.get(kind, (kind,))

    def is_a(self, kind: str, names: Iterable[str]) -> bool:
        """Whether `kind` is one of `names` or extends one of them."""
        return not set(self.lineage(kind)).isdisjoint(names)

    def expand(self, names: Iterable[str]) -> tuple[str, ...]:
        """`names` and every known kind that is one of them (its lineage meets them): what
        a rule or policy naming `names` applies to. Order: `names`, then the others by name.
        """
        given = tuple(dict.fromkeys(names))
        more = [k for k in self.names() if k not in given and self.is_a(k, given)]
        return (*given, *more)

    def label(self, kind: str) -> Label | None:
        spec = self._kinds.get(kind)
        return spec.label if spec is not None else None

    def display(self) -> tuple[dict[str, Label], dict[str, str]]:
        """Display names keyed as the i18n catalogue (``kind.<name>``, ``field.<name>``)
        and the canonical unit of every field, for `i18n.configure_labels`.

        A field name two kinds label differently shows the first kind's label (by name).
        """
        labels: dict[str, Label] = {}
        field_units: dict[str, str] = {}
        for name in self.names():
            kind = self._kinds[name]
            if kind.label is not None:
                labels[f"kind.{name}"] = kind.label
            for field, spec in kind.fields.items():
                if spec.label is not None:
                    labels.setdefault(f"field.{field}", spec.label)
                if spec.unit is not None and spec.unit != "1":
                    field_units.setdefault(field, spec.unit)
        return labels, field_units


def _inherit(base: KindSpec, kind: KindSpec) -> dict[str, FieldSpec]:
    """The base's fields with the kind's own. A field of the same name may restate the
    base's (a narrower range, its own label) but keeps its type and unit: the base's rules
    read it with the base's meaning (a %LEL threshold must not meet ppm)."""
    fields = dict(base.fields)
    for name, spec in kind.fields.items():
        known = fields.get(name)
        if known is not None and (known.type, known.unit) != (spec.type, spec.unit):
            raise KindError(kind, f"kind {kind.name!r}: field {name!r} is {_shape(spec)} "
                                  f"here but {_shape(known)} in {base.name!r}, which it "
                                  f"extends")
        fields[name] = spec
    return fields


def _shape(spec: FieldSpec) -> str:
    return spec.type + (f" in {spec.unit}" if spec.unit else "")


def _why_waiting(kind: KindSpec, waiting: Mapping[str, KindSpec]) -> str:
    """Why a kind could not be added: its chain of bases loops, or ends unknown."""
    chain = [kind.name]
    current: KindSpec | None = kind
    while current is not None and current.extends is not None:
        if current.extends in chain:
            loop = [*chain[chain.index(current.extends):], current.extends]
            return f"kind {kind.name!r}: extends forms a cycle ({' → '.join(loop)})"
        chain.append(current.extends)
        current = waiting.get(current.extends)
    # The chain reached a kind that was refused or never defined.
    return (f"kind {kind.name!r} extends {kind.extends!r}, which is not defined (or was "
            f"refused): {' → '.join(chain)}")


def load_kind_file(path: Path) -> KindSpec:
    """Load one kind definition from TOML or YAML; raises ValueError with the reason.

    The kind's own fields only: the registry adds the base's when it adds the kind.
    """
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("a kind file must hold a mapping")
    data = _with_common_fields(data)
    try:
        return KindSpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_short_errors(exc)) from None


def _with_common_fields(data: dict[str, Any]) -> dict[str, Any]:
    common = data.pop("include_common_fields", None)
    if data.get("extends") is not None:
        # The base decides: it has the common fields or it does not.
        if common is not None:
            raise ValueError("include_common_fields does not go with extends: a kind that "
                             "extends another has exactly the base's fields plus its own")
        return data
    fields = data.get("fields")
    if common is not False and isinstance(fields, dict):
        data["fields"] = {**{k: v.model_dump() for k, v in COMMON_FIELDS.items()}, **fields}
    return data


def _short_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)
