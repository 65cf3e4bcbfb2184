"""Signed tokens: `base64url(payload) "." base64url(HMAC-SHA256(key, context payload))`.

Both parts are unpadded, so a token sits in a URL path or a cookie as it is. The payload is
compact JSON. The context string separates uses of one key (acknowledgement links, board
logins, board sessions): a token made for one never verifies as another. Pure: no I/O, no
clock; expiry and single use are the caller's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any, Literal

MIN_KEY = 16
MAX_TOKEN = 1024
_MAC_CHARS = 43  # 32 bytes in unpadded base64
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class TokenError(Exception):
    """Not a token of ours: `malformed` (not even shaped like one) or `forged` (bad MAC)."""

    def __init__(self, reason: Literal["malformed", "forged"]) -> None:
        self.reason: Literal["malformed", "forged"] = reason
        super().__init__(reason)


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_key(key: bytes, what: str) -> None:
    if len(key) < MIN_KEY:
        raise ValueError(f"the {what} key must be at least {MIN_KEY} bytes")


def mac(key: bytes, context: bytes, payload: str) -> str:
    return b64encode(hmac.new(key, context + payload.encode("ascii"), hashlib.sha256).digest())


def sign(key: bytes, context: bytes, claims: dict[str, Any]) -> str:
    payload = b64encode(json.dumps(claims, separators=(",", ":"),
                                   ensure_ascii=False).encode("utf-8"))
    return f"{payload}.{mac(key, context, payload)}"


def verify(key: bytes, context: bytes, token: object, max_len: int = MAX_TOKEN
           ) -> dict[str, Any]:
    """The claims of an authentic token; TokenError otherwise (constant-time MAC check).

    `max_len`: links and cookies stay short; a district command may carry a relayed form."""
    if not isinstance(token, str) or not token or len(token) > max_len:
        raise TokenError("malformed")
    payload, dot, given = token.partition(".")
    if not dot or not _B64URL.fullmatch(payload) or not _B64URL.fullmatch(given) \
            or len(given) != _MAC_CHARS:
        raise TokenError("malformed")
    # The MAC is compared as text: base64 has spare bits in its last character, and
    # comparing decoded bytes would accept several spellings of one MAC.
    if not hmac.compare_digest(mac(key, context, payload).encode("ascii"),
                               given.encode("ascii")):
        raise TokenError("forged")
    # Authentic from here on: a payload we cannot read is our own bug or an old format.
    try:
        claims = json.loads(b64decode(payload).decode("utf-8"))
    except ValueError:
        raise TokenError("malformed") from None
    if not isinstance(claims, dict):
        raise TokenError("malformed")
    return claims
