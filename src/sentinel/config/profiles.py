"""Device profiles: declarative descriptions of how a vendor's MQTT messages map to readings.

A profile is data (YAML or TOML under `devices/profiles/`); supporting a new vendor means
writing one file. The language is documented in devices/README.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sentinel.config.yamlfile import parse_yaml
from sentinel.errors import Problem

TimestampFormat = Literal["auto", "epoch_s", "epoch_ms", "iso8601"]


def validate_topic_filter(value: str) -> str:
    """Check MQTT topic-filter syntax (`+` and `#` only as whole levels, `#` last)."""
    if not value or len(value.encode()) > 65535:
        raise ValueError("topic filter must be 1..65535 bytes")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' must be a whole last level in {value!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level in {value!r}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_SLICE = r"^\s*-?[0-9]*\s*:\s*-?[0-9]*\s*$"


def parse_slice(text: str) -> slice:
    """`"1:"`, `"1:-1"`, `":3"` → a Python slice over topic levels (step 1)."""
    start, _, stop = text.partition(":")
    return slice(int(start) if start.strip() else None, int(stop) if stop.strip() else None)


def filter_levels_for(levels: list[str], index: int) -> bool:
    """Whether topic level `index` (negative: from the end) exists in every topic the filter
    (split into levels) matches, and is not part of a `#`."""
    if "#" in levels:
        # Counted from the end, a level lies somewhere in the `#`: unknown until a topic comes.
        return 0 <= index < levels.index("#") or index < 0
    return -len(levels) <= index < len(levels)


class DeviceIdSpec(_Strict):
    """Where the device id is: a topic level (or several), a payload path, or both (then
    they must agree)."""

    # 0-based; negative counts from the end (-1: the last level).
    topic_segment: int | None = None
    # Several levels joined with "/", as a Python slice: "1:" (from level 1 to the end),
    # "1:-1" (all but the first and the last): names that contain slashes.
    topic_segments: str | None = Field(default=None, pattern=_SLICE)
    path: str | None = None
    # Prepended to the id found, when inventory ids carry a prefix the device does not send.
    prefix: str = ""
    # Some networks force a case on ids (The Things Stack: lower case); inventory ids keep theirs.
    case: Literal["preserve", "upper", "lower"] = "preserve"

    @model_validator(mode="after")
    def _somewhere(self) -> DeviceIdSpec:
        if self.topic_segment is None and self.topic_segments is None and self.path is None:
            raise ValueError("device_id needs topic_segment (or topic_segments), path or both")
        if self.topic_segment is not None and self.topic_segments is not None:
            raise ValueError("device_id takes topic_segment or topic_segments, not both")
        return self

    @property
    def in_topic(self) -> bool:
        return self.topic_segment is not None or self.topic_segments is not None

    def topic_slice(self) -> slice | None:
        """The topic levels holding the id, as a slice (None: the id is not in the topic)."""
        if self.topic_segments is not None:
            return parse_slice(self.topic_segments)
        if self.topic_segment is not None:
            i = self.topic_segment
            return slice(i, i + 1 if i != -1 else None)
        return None


class TimestampSpec(_Strict):
    path: str
    format: TimestampFormat = "auto"
    # Applied to ISO-8601 times without an offset; None refuses them as ambiguous.
    naive_timezone: str | None = None


class FieldMapping(_Strict):
    """How one canonical field is read from the message."""

    # JSON payloads: where the value is ("a.b[0].c", "sensors[type=pressure].value").
    path: str | None = None
    # Plain-value payloads: the topic level value that names this quantity.
    quantity: str | None = None
    # Unit the device sends; converted to the field's canonical unit.
    unit: str | None = None
    # value = raw * scale + offset, applied before unit conversion.
    scale: float = 1.0
    offset: float = 0.0
    # Ultrasonic level sensors: value = device's mount_height_m - measured distance.
    from_distance: bool = False
    # Express the value as a percentage of this per-device setting (e.g. tank_height_m).
    percent_of_setting: str | None = None
    # Vendor words for booleans, in addition to the standard ones (true/false, on/off, 1/0...).
    true_values: tuple[str | int | float | bool, ...] = ()
    false_values: tuple[str | int | float | bool, ...] = ()
    # Vendor value → canonical value, for strings (e.g. "甲烷" → "CH4").
    map: dict[str, str] = Field(default_factory=dict)
    # A message of this profile must carry this field.
    required: bool = False
    # Numeric fields: also read a number written as text, with an optional unit after it
    # ("1234 mm", "3.305 V"); without it, text in a numeric field is wrong_type.
    from_text: bool = False
    # Vendor words (or numbers) meaning "no value": the field is left out, the message kept.
    # `null` always is.
    absent: tuple[str | int | float | bool, ...] = ()
    # String fields: what a word becomes that `map` does not name and that is not one of the
    # field's choices (instead of refusing the message).
    default: str | None = None


class ProfileSpec(_Strict):
    """A vendor message format."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    # Device kinds this profile serves; empty = any kind.
    kinds: tuple[str, ...] = ()
    match: tuple[str, ...] = Field(min_length=1)
    # Topics this profile does not take although `match` fits them (a bridge's own topics).
    exclude: tuple[str, ...] = ()
    format: Literal["json", "value"] = "json"
    device_id: DeviceIdSpec
    # JSON payloads carrying several readings (a gateway's batch): the path of the items
    # (a list, one object, or a `*` path); the other paths are read relative to each item.
    each: str | None = None
    # Plain-value payloads: which topic level names the quantity (negative: from the end).
    quantity_segment: int | None = None
    timestamp: TimestampSpec | None = None
    # Topic a simulated device of this profile publishes to, e.g. "v3/app@t/devices/{device_id}/up";
    # {device_id}, {quantity} and any inventory field ({community}, {grid}...) are filled in.
    publish_topic: str | None = None
    fields: dict[str, FieldMapping] = Field(default_factory=dict)
    # Per-kind additions or replacements, for vendors that name one canonical field
    # differently by device type (Zigbee2MQTT: `smoke` vs `gas` for the alarm state).
    by_kind: dict[str, dict[str, FieldMapping]] = Field(default_factory=dict)

    def fields_for(self, kind: str) -> dict[str, FieldMapping]:
        """The field mappings that apply to a device of this kind."""
        extra = self.by_kind.get(kind)
        return {**self.fields, **extra} if extra else dict(self.fields)

    def all_mappings(self) -> list[tuple[str, FieldMapping]]:
        out = [(f"fields.{n}", m) for n, m in self.fields.items()]
        for kind, mappings in self.by_kind.items():
            out.extend((f"by_kind.{kind}.{n}", m) for n, m in mappings.items())
        return out

    @field_validator("match", "exclude")
    @classmethod
    def _filters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            validate_topic_filter(item)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProfileSpec:
        mappings = self.all_mappings()
        if not mappings:
            raise ValueError("a profile needs at least one field mapping")
        if self.kinds:
            for kind in self.by_kind:
                if kind not in self.kinds:
                    raise ValueError(f"by_kind.{kind}: not one of this profile's kinds")
        if self.format == "value":
            # Without a quantity level every value goes to the one field a device's kind
            # has here (one in `fields`, or one per `by_kind` entry).
            groups = [self.fields_for(k) for k in self.by_kind]
            if self.fields or not groups:
                groups.append(self.fields)
            if self.quantity_segment is None and any(len(g) != 1 for g in groups):
                raise ValueError("a value profile needs quantity_segment unless it maps one "
                                 "field (per kind)")
            if self.device_id.path is not None:
                raise ValueError("a value profile takes the device id from the topic only")
            if self.each is not None:
                raise ValueError("`each` applies to JSON profiles only")
            if self.timestamp is not None:
                raise ValueError("a value profile has no payload timestamp")
            for where, mapping in mappings:
                if mapping.path is not None:
                    raise ValueError(f"{where}: value profiles use `quantity`, not `path`")
                if self.quantity_segment is not None and mapping.quantity is None:
                    raise ValueError(f"{where}: needs `quantity` (the topic level value)")
        else:
            if self.quantity_segment is not None:
                raise ValueError("quantity_segment applies to value profiles only")
            for where, mapping in mappings:
                if mapping.path is None:
                    raise ValueError(f"{where}: JSON profiles need `path`")
        id_slice = self.device_id.topic_slice()
        for item in self.match:
            levels = item.split("/")
            for what, seg in (("device_id.topic_segment", self.device_id.topic_segment),
                              ("quantity_segment", self.quantity_segment)):
                if seg is not None and not filter_levels_for(levels, seg):
                    raise ValueError(f"{what}: topic level {seg} does not exist in {item!r}")
            if self.device_id.topic_segments is not None and id_slice is not None and \
                    "#" not in levels and not levels[id_slice]:
                raise ValueError(f"device_id.topic_segments {self.device_id.topic_segments!r} "
                                 f"selects no level of {item!r}")
        return self


def _load_profile_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return tomllib.loads(text) if path.suffix == ".toml" else parse_yaml(text)


PROFILE_SUFFIXES = (".yaml", ".yml", ".toml")


def load_profiles(dirs: Iterable[Path]) -> tuple[dict[str, ProfileSpec], list[Problem]]:
    """Load every profile file in the given folders; return profiles by name and problems."""
    profiles: dict[str, ProfileSpec] = {}
    origin: dict[str, str] = {}
    problems: list[Problem] = []
    for folder in dirs:
        if not folder.is_dir():
            problems.append(Problem(str(folder), "", "profile folder not found"))
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix not in PROFILE_SUFFIXES:
                continue
            file = str(path)
            try:
                data = _load_profile_file(path)
                profile = ProfileSpec.model_validate(data)
            except (OSError, UnicodeDecodeError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
                problems.append(Problem(file, "", f"cannot read profile: {exc}"))
                continue
            except ValidationError as exc:
                for err in exc.errors(include_url=False, include_input=False):
                    loc = ".".join(str(p) for p in err["loc"])
                    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                    problems.append(Problem(file, loc, msg))
                continue
            if profile.name in profiles:
                problems.append(Problem(file, "name", f"profile {profile.name!r} is also defined "
                                                      f"in {origin[profile.name]}"))
                continue
            profiles[profile.name] = profile
            origin[profile.name] = file
    return profiles, problems
