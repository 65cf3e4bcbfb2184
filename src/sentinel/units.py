"""Unit conversion to canonical units: pressure in MPa, length in m, and so on."""

from __future__ import annotations

# Factor that turns one source unit into the canonical unit of its dimension.
_DIMENSIONS: dict[str, tuple[str, dict[str, float]]] = {
    "pressure": ("MPa", {"Pa": 1e-6, "kPa": 1e-3, "MPa": 1.0, "bar": 0.1, "mbar": 1e-4,
                         "psi": 0.006894757293168361, "mH2O": 0.00980665}),
    "length": ("m", {"mm": 1e-3, "cm": 1e-2, "m": 1.0}),
    "percent": ("%", {"%": 1.0, "ratio": 100.0}),
    "gas_lel": ("%LEL", {"%LEL": 1.0}),
    "gas_ppm": ("ppm", {"ppm": 1.0, "ppb": 1e-3}),
    "voltage": ("V", {"V": 1.0, "mV": 1e-3}),
    "duration": ("s", {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}),
    "frequency": ("bpm", {"bpm": 1.0}),
    "power": ("dBm", {"dBm": 1.0}),
    "temperature": ("degC", {"degC": 1.0, "°C": 1.0}),
    "angle": ("deg", {"deg": 1.0}),
    "count": ("1", {"1": 1.0}),
    "obscuration": ("%/m", {"%/m": 1.0, "%/ft": 3.280839895013123, "dB/m": 20.567}),
}

_UNIT_TO_DIMENSION: dict[str, str] = {}
for _dim, (_canon, _table) in _DIMENSIONS.items():
    for _unit in _table:
        _UNIT_TO_DIMENSION.setdefault(_unit, _dim)


class UnitError(ValueError):
    pass


def dimension_of(unit: str) -> str:
    try:
        return _UNIT_TO_DIMENSION[unit]
    except KeyError:
        raise UnitError(f"unknown unit {unit!r}") from None


def known_units() -> list[str]:
    return sorted(_UNIT_TO_DIMENSION)


def factor(source_unit: str, canonical_unit: str) -> float:
    """Return f such that value_in_canonical = value_in_source * f."""
    if source_unit == canonical_unit:
        return 1.0
    for _canonical, table in _DIMENSIONS.values():
        if source_unit in table and canonical_unit in table:
            return table[source_unit] / table[canonical_unit]
    raise UnitError(f"cannot convert {source_unit!r} to {canonical_unit!r}")
