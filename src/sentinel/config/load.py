"""Load settings from one TOML file, overlaid by SENTINEL_<SECTION>__<KEY> variables."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, SecretStr, ValidationError

from sentinel.config.model import Settings
from sentinel.errors import ConfigError, Problem

ENV_PREFIX = "SENTINEL_"
# Variables with the prefix that are not settings.
_NOT_SETTINGS = frozenset({"SENTINEL_CONFIG", "SENTINEL_LANG"})


def _env_path(name: str) -> list[str]:
    return [part.lower() for part in name[len(ENV_PREFIX):].split("__")]


def foreign_env_variables(environ: Mapping[str, str]) -> list[str]:
    """The SENTINEL_* variables that name no top-level setting or section, sorted.

    Other tools share the prefix (a CI's SENTINEL_CHECKOUT): such a variable is not ours
    and is ignored. A variable that does name a section stays a setting, so a mistyped key
    inside it (SENTINEL_MQTT__PROT) is still an error.
    """
    return sorted(name for name in environ
                  if name.startswith(ENV_PREFIX) and name not in _NOT_SETTINGS
                  and _env_path(name)[0] not in Settings.model_fields)


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn SENTINEL_A__B__C=value variables into a nested {"a": {"b": {"c": value}}}.

    Variables that name no setting or section (see `foreign_env_variables`) are left out.
    """
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        path = _env_path(name)
        if not all(path) or path[0] not in Settings.model_fields:
            continue
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = _parse_env_value(raw)
    return tree


def _parse_env_value(raw: str) -> Any:
    # Lists and tables are written as JSON; scalars stay strings and pydantic coerces them.
    stripped = raw.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def merge_tables(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def _located_in_env(loc: tuple[int | str, ...], env_tree: Mapping[str, Any]) -> bool:
    node: Any = env_tree
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def validation_problems(
    exc: ValidationError, file: str, env_tree: Mapping[str, Any] | None = None
) -> list[Problem]:
    """Describe each validation error by place, never echoing the offending value.

    Values are left out on purpose: a secret typed into the wrong key must not reach a log.
    """
    problems = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(err["loc"])
        entry = ".".join(str(p) for p in loc)
        where = file
        # A model-level error (loc ()) has no key of its own: it is the file's, never
        # "environment variable SENTINEL_" (every path is a prefix of the empty one).
        if loc and env_tree is not None and _located_in_env(loc, env_tree):
            where = f"environment variable {_env_name(loc)}"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(Problem(where, entry, msg))
    return problems


def resolve_paths(model: BaseModel, base: Path) -> None:
    """Make every relative Path setting relative to `base` (the config file's folder)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            resolve_paths(value, base)
        elif isinstance(value, Path) and not value.is_absolute():
            object.__setattr__(model, name, (base / value).resolve())
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            object.__setattr__(
                model, name, [v if v.is_absolute() else (base / v).resolve() for v in value]
            )


def place_in_state_dir(settings: Settings) -> None:
    # Database files live under state_dir unless given as absolute paths in the file.
    for section in (settings.store.sqlite, settings.store.spool, settings.incidents):
        if not section.path.is_absolute():
            section.path = settings.state_dir / section.path
    control = settings.control
    if control.socket is None or str(control.socket) in ("", "."):
        control.socket = settings.state_dir / "control.sock"
    elif not control.socket.is_absolute():
        control.socket = settings.state_dir / control.socket


def read_toml(path: Path) -> dict[str, Any]:
    file = str(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([Problem(file, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(file, "", f"cannot read: {exc.__class__.__name__}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(file, "", f"invalid TOML: {exc}")]) from None


def _drop(data: dict[str, Any], loc: tuple[int | str, ...]) -> bool:
    node: Any = data
    for part in loc[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    if isinstance(node, dict) and loc and loc[-1] in node:
        del node[loc[-1]]
        return True
    return False


def load_settings_lenient(
    path: Path, environ: Mapping[str, str] | None = None
) -> tuple[Settings, list[Problem]]:
    """Validate the configuration, and on errors go on with the faulty keys left at defaults.

    `sentinel check` uses this so that one bad key does not hide the problems of the
    inventory and profiles the rest of the file points to.
    """
    environ = os.environ if environ is None else environ
    data = read_toml(path)
    foreign = foreign_env_variables(environ)
    if foreign:
        # Looked up at call time: a logger cached at import would keep the set-up that was
        # in force before `sentinel run` configures logging from these very settings.
        structlog.get_logger("sentinel.config").warning(
            "environment_variables_ignored", variables=foreign,
            reason=f"{ENV_PREFIX}* but no setting or section of that name")
    env_tree = env_overrides(environ)
    merged = merge_tables(data, env_tree)
    problems: list[Problem] = []
    for _ in range(10):
        try:
            settings = Settings.model_validate(merged)
            break
        except ValidationError as exc:
            problems += validation_problems(exc, str(path), env_tree)
            dropped = [_drop(merged, tuple(e["loc"])) for e in exc.errors(include_input=False)]
            if not any(dropped):
                raise ConfigError(problems) from None
    else:
        raise ConfigError(problems)
    # Every relative path, whether written in the file or in the environment, is taken
    # relative to the config file's folder, so the daemon's working directory never matters.
    base = path.resolve().parent
    if not settings.state_dir.is_absolute():
        settings.state_dir = (base / settings.state_dir).resolve()
    place_in_state_dir(settings)
    resolve_paths(settings, base)
    return settings, problems


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, overlay and validate the configuration; raise ConfigError listing all problems."""
    settings, problems = load_settings_lenient(path, environ)
    if problems:
        raise ConfigError(problems)
    return settings


def read_secret(value: SecretStr | None, file: Path | None, what: str) -> str | None:
    """Return a secret from its environment value or its file, never logging it."""
    if value is not None:
        return value.get_secret_value()
    if file is None:
        return None
    try:
        return file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        problem = Problem(str(file), what, f"cannot read secret file: {exc.strerror}")
        raise ConfigError([problem]) from None
