"""district.toml: the district daemon's settings, the box's settings model with two more parts.

The district daemon is the same package in another role, so its file is the box's
`Settings` (state_dir, language, timezone, [mqtt], [control], [escalation], [notify],
[store.influxdb], [log]...) read by the same loader's pieces, plus:

  [district]     offline_after and the mirror's timings (`DistrictOptions`);
  [[community]]  the boxes it oversees: id, name, duty phone, command key.

Sections only a box uses ([devices], [rules], [ingest]) keep their defaults and are not
read.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sentinel.config.load import (
    env_overrides,
    merge_tables,
    place_in_state_dir,
    read_secret,
    read_toml,
    resolve_paths,
    validation_problems,
)
from sentinel.config.model import DistrictSettings, Settings
from sentinel.control import tokens
from sentinel.errors import ConfigError, Problem

# Keys of the box's [district] section that mean nothing to the district daemon.
_BOX_KEYS = frozenset({"community", "public_url", "command_key", "command_key_file",
                       "heartbeat_interval", "aggregates"})


class DistrictOptions(DistrictSettings):
    """[district] of district.toml.

    A subclass of the box's section so the daemon's settings stay a `Settings` (every
    stage that reads one reads this); the box's keys are refused here.
    """

    # A community whose heartbeat is older than this is offline (the issue: within 60 s).
    offline_after: float = Field(default=60.0, ge=1, le=3600)
    # A box must stay unreachable this long before box_offline opens and pages (the board
    # shows it offline at once): a 4G blip of a few seconds pages nobody.
    offline_grace: float = Field(default=30.0, ge=0, le=3600)
    # How often reach is judged (staleness, box_offline).
    check_interval: float = Field(default=1.0, gt=0, le=60)
    # A gap in a community's events (or a heartbeat naming events not yet here) older than
    # this is asked for again with a `resync` command...
    resync_after: float = Field(default=5.0, gt=0, le=600)
    # ...at most once per this many seconds per community.
    resync_interval: float = Field(default=10.0, gt=0, le=3600)
    # Mirrored events, and incidents resolved, older than this are deleted (days).
    keep_days: float = Field(default=90.0, gt=0)
    # Messages committed (then acknowledged) at once.
    batch_max: int = Field(default=500, ge=1, le=50_000)
    # Received, not yet committed messages at most (past it the socket is not read).
    queue_max: int = Field(default=5000, ge=10)

    @model_validator(mode="after")
    def _no_box_keys(self) -> DistrictOptions:
        given = sorted(_BOX_KEYS & self.model_fields_set)
        if given:
            raise ValueError(f"{', '.join(given)}: a box's [district] setting (sentinel.toml); "
                             "the district names its communities in [[community]]")
        return self


class Community(BaseModel):
    """One community box the district oversees."""

    model_config = ConfigDict(extra="forbid")

    # Its topic level on the district broker (the box's [district] community).
    id: str
    name: str = ""
    # The community's duty phone: shown when its box cannot be reached.
    phone: str = ""
    # The key this community's box verifies the district's commands with (>= 16 bytes);
    # or SENTINEL_COMMUNITY_<ID>_COMMAND_KEY in the environment.
    command_key: SecretStr | None = None
    command_key_file: Path | None = None

    @field_validator("id")
    @classmethod
    def _id_is_a_topic_level(cls, value: str) -> str:
        return check_community_id(value)

    @model_validator(mode="after")
    def _one_key_source(self) -> Community:
        if self.command_key is not None and self.command_key_file is not None:
            raise ValueError("set either command_key or command_key_file, not both")
        return self

    @property
    def label(self) -> str:
        return self.name or self.id


class DistrictConfig(Settings):
    """The whole of district.toml."""

    district: DistrictOptions = Field(default_factory=DistrictOptions)
    community: list[Community] = Field(default_factory=list)

    @field_validator("community")
    @classmethod
    def _unique(cls, value: list[Community]) -> list[Community]:
        # A field's validator: the problem is reported at [[community]] in the file (a
        # model validator's has no place, and was once blamed on the environment).
        return unique_communities(value)

    def communities(self) -> dict[str, Community]:
        return {c.id: c for c in self.community}


COMMUNITY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_community_id(value: str) -> str:
    """A community id is one MQTT topic level the box's [district] community also uses:
    1 to 64 ASCII letters, digits, '_' or '-' (the name people read is `name`)."""
    if COMMUNITY_ID.fullmatch(value) is None:
        raise ValueError(
            f"community id {value!r} is not usable as a topic level: use 1 to 64 ASCII "
            "letters, digits, '_' or '-' (e.g. \"shuibei\"), the same as the box's "
            "[district] community; put the name people read in `name`")
    return value


def unique_communities(value: list[Community]) -> list[Community]:
    """No community id twice: which ids, and at which [[community]] entries (1-based, in
    file order)."""
    seen: dict[str, list[int]] = {}
    for number, community in enumerate(value, 1):
        seen.setdefault(community.id, []).append(number)
    dupes = {i: n for i, n in seen.items() if len(n) > 1}
    if dupes:
        said = "; ".join(f"{i!r} in entries {', '.join(map(str, n))}"
                         for i, n in sorted(dupes.items()))
        raise ValueError(f"duplicate community id: {said} (each [[community]] needs its own id)")
    return value


def key_file_warnings(settings: DistrictConfig) -> list[Problem]:
    """Command key files that someone other than their owner can read (not mode 0600 or
    stricter): a key anyone on the machine can read lets them act as the street office on
    that community's box. Warnings, for `sentinel district --check` and the daemon's start."""
    warnings: list[Problem] = []
    for community in settings.community:
        path = community.command_key_file
        if path is None:
            continue
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue  # command_keys() reports a file it cannot read
        if mode & 0o077:
            warnings.append(Problem(
                str(path), f"community {community.id}",
                f"command key file is mode {mode:04o}, readable by group or others: "
                f"chmod 600 {path} (owned by the user the daemon runs as)"))
    return warnings


def key_variable(community: str) -> str:
    """The environment variable that may hold a community's command key."""
    return "SENTINEL_COMMUNITY_" + community.upper().replace("-", "_") + "_COMMAND_KEY"


def load_district_settings(path: Path, environ: Mapping[str, str] | None = None
                           ) -> DistrictConfig:
    """Read district.toml like the box's loader reads sentinel.toml (SENTINEL_* overlays,
    paths relative to the file, databases under state_dir); ConfigError lists every
    problem."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = read_toml(path)
    # [[community]] is no box setting: SENTINEL_COMMUNITY_* variables are keys (below).
    env_tree = env_overrides(environ)
    merged = merge_tables(data, env_tree)
    try:
        settings = DistrictConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, str(path), env_tree)) from None
    base = path.resolve().parent
    if not settings.state_dir.is_absolute():
        settings.state_dir = (base / settings.state_dir).resolve()
    place_in_state_dir(settings)
    resolve_paths(settings, base)
    for community in settings.community:
        if community.command_key_file is not None and \
                not community.command_key_file.is_absolute():
            community.command_key_file = (base / community.command_key_file).resolve()
    return settings


def command_keys(settings: DistrictConfig, environ: Mapping[str, str] | None = None
                 ) -> dict[str, bytes]:
    """Each community's command key; ConfigError naming every community without a usable
    one (never the key itself)."""
    environ = os.environ if environ is None else environ
    keys: dict[str, bytes] = {}
    problems: list[Problem] = []
    for community in settings.community:
        where = f"community {community.id}"
        value = community.command_key
        if value is None and community.command_key_file is None:
            variable = environ.get(key_variable(community.id))
            value = SecretStr(variable) if variable else None
        try:
            secret = read_secret(value, community.command_key_file,
                                 f"{where}.command_key_file")
        except ConfigError as exc:  # every community's problem, not only the first
            problems += exc.problems
            continue
        if not secret:
            problems.append(Problem("", where, "no command key: set command_key_file (or "
                                               f"{key_variable(community.id)})"))
            continue
        key = secret.encode("utf-8")
        try:
            tokens.check_key(key, "command")
        except ValueError as exc:
            problems.append(Problem("", where, str(exc)))
            continue
        keys[community.id] = key
    if problems:
        raise ConfigError(problems)
    return keys


def is_district_file(path: Path) -> bool:
    """Whether `path` configures a district daemon (it lists `[[community]]`), so commands
    given `-c` read it as one; a file that cannot be read is left to the box's loader,
    which reports why."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return isinstance(data.get("community"), list)
