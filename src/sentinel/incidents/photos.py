"""Photos attached to notes: on-site feedback, kept as files in the state directory.

A photo is stored once under the hex SHA-256 of its bytes (the same picture sent twice is
one file) with the extension of its sniffed type; only JPEG, PNG, WebP and GIF are taken,
recognised by their first bytes, never by what the sender claims. The note's audit event
names the photo id; the file is written and synced before that event is committed, so an
event never points at a missing file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

# A phone photo is 2–4 MB; the limit keeps one note from filling the state disk.
MAX_PHOTO_BYTES = 5 * 1024 * 1024

_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}
_ID = re.compile(r"^[0-9a-f]{64}\.(jpg|png|webp|gif)$")


class PhotoRefused(ValueError):
    """Not a photo we keep: too large, empty, or not an image type we recognise."""


def sniff(data: bytes) -> str | None:
    """The extension of an image by its magic bytes; None when it is none we take."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def content_type(photo_id: str) -> str:
    return _TYPES[photo_id.rsplit(".", 1)[1]]


def valid_id(photo_id: str) -> bool:
    return _ID.fullmatch(photo_id) is not None


class PhotoStore:
    """Photo files in one directory (`<state_dir>/photos`)."""

    def __init__(self, directory: Path, max_bytes: int = MAX_PHOTO_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"PhotoStore({str(self.directory)!r})"

    def save(self, data: bytes) -> str:
        """Store the photo durably; its id. PhotoRefused when it is not one we keep."""
        if not data:
            raise PhotoRefused("the photo is empty")
        if len(data) > self.max_bytes:
            raise PhotoRefused(f"the photo is {len(data)} bytes, over the limit of "
                               f"{self.max_bytes}")
        ext = sniff(data)
        if ext is None:
            raise PhotoRefused("not a JPEG, PNG, WebP or GIF image")
        photo_id = f"{hashlib.sha256(data).hexdigest()}.{ext}"
        path = self.directory / photo_id
        if path.exists():
            return photo_id
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        # Written under a temporary name and renamed: a crash leaves no half photo under
        # the id an event could name.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".photo-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return photo_id

    def read(self, photo_id: str) -> bytes | None:
        """The photo's bytes; None when the id is not one of ours or the file is gone."""
        if not valid_id(photo_id):
            return None
        try:
            return (self.directory / photo_id).read_bytes()
        except FileNotFoundError:
            return None
