"""Signed one-tap acknowledgement links: who may acknowledge which incident, until when.

A token is `base64url(payload) "." base64url(HMAC-SHA256(key, "sentinel-link-v1." payload))`,
both without padding, so it can sit in a URL path as it is. The payload is compact JSON with
the incident, the contact the link was sent to, the expiry and a random nonce. Pure: no I/O,
every check takes `now`. Single use is the caller's job (the daemon records used nonces
durably); the signer only proves that we issued the link and that it has not expired.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from sentinel.control import tokens

Reason = Literal["malformed", "forged", "expired", "used"]

# Domain separation: the key may one day sign something else; a link MAC must never verify
# as anything but a link, and a future format gets a new prefix.
_CONTEXT = b"sentinel-link-v1."


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


class LinkSigner:
    """Issue and check acknowledgement links with one secret key."""

    def __init__(self, key: bytes, ttl: float) -> None:
        tokens.check_key(key, "link")
        if ttl <= 0:
            raise ValueError("the link ttl must be positive")
        self._key = key
        self.ttl = ttl

    def __repr__(self) -> str:
        # Never the key, not even in a traceback's locals.
        return f"LinkSigner(ttl={self.ttl})"

    def sign(self, incident_id: str, contact_id: str, now: float,
             nonce: str | None = None) -> str:
        """A link token for `contact_id` to acknowledge `incident_id`, valid for `ttl`."""
        expires = now + self.ttl
        claims = {"i": incident_id, "c": contact_id,
                  "e": int(expires) if expires.is_integer() else expires,
                  "n": nonce if nonce is not None else secrets.token_urlsafe(12)}
        return tokens.sign(self._key, _CONTEXT, claims)

    def verify(self, token: str, now: float) -> LinkClaims:
        """The claims of an authentic, unexpired token; LinkError otherwise."""
        try:
            data = tokens.verify(self._key, _CONTEXT, token)
        except tokens.TokenError as exc:
            detail = "signature does not match" if exc.reason == "forged" else "not a link token"
            raise LinkError(exc.reason, detail) from None
        try:
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
