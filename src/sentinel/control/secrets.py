"""The control token and the link key: configured, or generated once under state_dir.

A generated secret is written to a temporary file (0600, fsynced) and then hard-linked into
place, so no reader ever sees a half-written secret and, when the daemon and a command race
to create one, both end up with the same secret (the loser of the link reads the winner's).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from sentinel.config.load import read_secret
from sentinel.config.model import Settings
from sentinel.errors import ConfigError, Problem

TOKEN_FILE = "control.token"
LINK_KEY_FILE = "link.key"


def _read(path: Path) -> bytes | None:
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    if not data:
        raise ValueError(f"{path} is empty")
    return data


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_secret(path: Path, nbytes: int = 32) -> bytes:
    """Read the secret at `path`, or create it (0600) holding `nbytes` random bytes, encoded.

    Raises OSError when it can be neither read nor created, ValueError when it is empty.
    """
    existing = _read(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes).encode("ascii")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, value + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # never replaces: whoever links first wins
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    created = _read(path)
    if created is None:  # removed again between link and read: odd, but not ours to hide
        raise FileNotFoundError(path)
    return created


def _problem(path: Path, entry: str, exc: Exception) -> ConfigError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigError([Problem(str(path), entry, f"cannot read or create: {reason}")])


def control_token(settings: Settings, *, create: bool = True) -> str:
    """The bearer token of the control API: configured, or <state_dir>/control.token.

    `create=False` (commands other than the daemon) only reads: a command must not leave
    behind a token file the daemon, running as another user, cannot read.
    """
    control = settings.control
    configured = read_secret(control.token, control.token_file, "control.token_file")
    if configured is not None:
        if not configured:
            where = str(control.token_file) if control.token_file else "control.token"
            raise ConfigError([Problem(where, "control.token", "the token is empty")])
        return configured
    path = settings.state_dir / TOKEN_FILE
    try:
        if not create:
            found = _read(path)
            if found is None:
                raise ConfigError([Problem(
                    str(path), "control.token",
                    "not found; the daemon creates it when it first starts with this "
                    "state_dir (or set control.token / control.token_file)")])
            return found.decode("utf-8")
        return ensure_secret(path).decode("utf-8")
    except (OSError, ValueError) as exc:
        raise _problem(path, "control.token", exc) from None


def link_key(settings: Settings) -> bytes:
    """The key that signs acknowledgement links: link_key_file, or <state_dir>/link.key.

    A configured file must exist: silently generating a different key there would void the
    links already sent (or those of a second daemon sharing the key).
    """
    configured = settings.control.link_key_file
    path = configured or settings.state_dir / LINK_KEY_FILE
    try:
        if configured is not None:
            found = _read(configured)
            if found is None:
                raise FileNotFoundError(2, "No such file or directory", str(configured))
            return found
        return ensure_secret(path)
    except (OSError, ValueError) as exc:
        raise _problem(path, "control.link_key_file", exc) from None
