"""Signed one-tap acknowledgement links: who may acknowledge which incident, until when.

A token is `base64url(payload) "." base64url(HMAC-SHA256(key, "sentinel-link-v1." payload))`,
both without padding, so it can sit in a URL path as it is. The payload is compact JSON with
the incident, the contact the link was sent to, the expiry and a random nonce. Pure: no I/O,
every check takes `now`. Single use is the caller's job (the daemon records used nonces
durably); the signer only proves that we issued the link and that it has not expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Literal

Reason = Literal["malformed", "forged", "expired", "used"]

# Domain separation: the key may one day sign something else; a link MAC must never verify
# as anything but a link, and a future format gets a new prefix.
_CONTEXT = b"sentinel-link-v1."
_MAC_CHARS = 43  # 32 bytes in unpadded base64
_MAX_TOKEN = 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_MIN_KEY = 16


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a valid link allows: `contact_id` may acknowledge `incident_id` until `expires`."""

    incident_id: str
    contact_id: str
    expires: float
    nonce: str


class LinkError(Exception):
    """A link was refused; `reason` says why (the page shown depends on it)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason: Reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Issue and check acknowledgement links with one secret key."""

    def __init__(self, key: bytes, ttl: float) -> None:
        if len(key) < _MIN_KEY:
            raise ValueError(f"the link key must be at least {_MIN_KEY} bytes")
        if ttl <= 0:
            raise ValueError("the link ttl must be positive")
        self._key = key
        self.ttl = ttl

    def __repr__(self) -> str:
        # Never the key, not even in a traceback's locals.
        return f"LinkSigner(ttl={self.ttl})"

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, _CONTEXT + payload.encode("ascii"), hashlib.sha256)
        return _b64encode(digest.digest())

    def sign(self, incident_id: str, contact_id: str, now: float,
             nonce: str | None = None) -> str:
        """A link token for `contact_id` to acknowledge `incident_id`, valid for `ttl`."""
        expires = now + self.ttl
        claims = {"i": incident_id, "c": contact_id,
                  "e": int(expires) if expires.is_integer() else expires,
                  "n": nonce if nonce is not None else secrets.token_urlsafe(12)}
        payload = _b64encode(json.dumps(claims, separators=(",", ":"),
                                        ensure_ascii=False).encode("utf-8"))
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str, now: float) -> LinkClaims:
        """The claims of an authentic, unexpired token; LinkError otherwise."""
        if not isinstance(token, str) or len(token) > _MAX_TOKEN:
            raise LinkError("malformed", "not a link token")
        payload, dot, mac = token.partition(".")
        if not dot or not _B64URL.fullmatch(payload) or not _B64URL.fullmatch(mac) \
                or len(mac) != _MAC_CHARS:
            raise LinkError("malformed", "not a link token")
        # The MAC is compared as text: base64 has spare bits in its last character, and
        # comparing decoded bytes would accept several spellings of one MAC.
        if not hmac.compare_digest(self._mac(payload).encode("ascii"), mac.encode("ascii")):
            raise LinkError("forged", "signature does not match")
        # Authentic from here on: a payload we cannot read is our own bug or an old format.
        try:
            data = json.loads(_b64decode(payload).decode("utf-8"))
            claims = LinkClaims(incident_id=data["i"], contact_id=data["c"],
                                expires=float(data["e"]), nonce=data["n"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LinkError("malformed", "unreadable payload") from exc
        if not all(isinstance(v, str) and v for v in
                   (claims.incident_id, claims.contact_id, claims.nonce)):
            raise LinkError("malformed", "unreadable payload")
        if now >= claims.expires:
            raise LinkError("expired", "link expired")
        return claims
