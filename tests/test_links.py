"""Signed one-tap acknowledgement links: authentic, bound to one incident and contact, expiring."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.control import tokens
from sentinel.control.links import LinkClaims, LinkError, LinkSigner

KEY = b"k" * 32
NOW = 1_700_000_000.0
SIGNER = LinkSigner(KEY, ttl=3600)
TOKEN = SIGNER.sign("20240501-0007", "wang", NOW, nonce="n1")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _reason(token: str, now: float = NOW, signer: LinkSigner = SIGNER) -> str:
    with pytest.raises(LinkError) as caught:
        signer.verify(token, now)
    return caught.value.reason


def test_roundtrip() -> None:
    """A signed token verifies to the claims it was made with."""
    assert SIGNER.verify(TOKEN, NOW + 10) == LinkClaims("20240501-0007", "wang", NOW + 3600,
                                                        "n1")


def test_token_is_url_safe_and_nonce_random() -> None:
    """Tokens need no escaping in a URL path; without a nonce each link gets its own."""
    first = SIGNER.sign("i", "c", NOW)
    second = SIGNER.sign("i", "c", NOW)
    assert first != second
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert set(first) <= allowed
    assert SIGNER.verify(first, NOW).nonce != SIGNER.verify(second, NOW).nonce


def test_unicode_ids_roundtrip() -> None:
    """Ids in Chinese survive signing and verification."""
    token = SIGNER.sign("事件-1", "王网格员", NOW)
    claims = SIGNER.verify(token, NOW)
    assert (claims.incident_id, claims.contact_id) == ("事件-1", "王网格员")


def test_tampered_payload_is_forged() -> None:
    """A payload rewritten to another incident, with the old MAC, is refused as forged."""
    payload, mac = TOKEN.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["i"] = "20240501-0008"
    forged = _b64(json.dumps(claims, separators=(",", ":")).encode()) + "." + mac
    assert _reason(forged) == "forged"


def test_tampered_mac_is_forged() -> None:
    """A different MAC of the right shape is refused as forged."""
    payload, mac = TOKEN.split(".")
    other = ("A" if mac[0] != "A" else "B") + mac[1:]
    assert _reason(f"{payload}.{other}") == "forged"


def test_other_key_is_forged() -> None:
    """A token made with another key does not verify."""
    stranger = LinkSigner(b"x" * 32, ttl=3600).sign("20240501-0007", "wang", NOW)
    assert _reason(stranger) == "forged"


def test_expired() -> None:
    """At and after the expiry the link is refused as expired."""
    assert _reason(TOKEN, NOW + 3600) == "expired"
    assert _reason(TOKEN, NOW + 10 * 3600) == "expired"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "!!!.###", "é.é", "x" * 5000,
                                     "." + "A" * 43, "eyJ9." + "A" * 42])
def test_garbage_is_malformed(garbage: str) -> None:
    """Strings that are not shaped like a token are refused as malformed."""
    assert _reason(garbage) == "malformed"


def test_authentic_but_unreadable_payload_is_malformed() -> None:
    """A correctly signed payload that is not our JSON is malformed, not trusted."""
    payload = _b64(b'["not", "claims"]')
    token = f"{payload}.{tokens.mac(KEY, b'sentinel-link-v1.', payload)}"
    assert _reason(token) == "malformed"


def test_short_key_refused() -> None:
    """A key too short to be a secret is refused up front."""
    with pytest.raises(ValueError, match="at least"):
        LinkSigner(b"short", ttl=60)


def test_repr_hides_key() -> None:
    """The key never shows in a repr (and so not in a traceback or log)."""
    assert "k" * 16 not in repr(SIGNER)


@st.composite
def _mutations(draw: st.DrawFn) -> str:
    chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.="
    position = draw(st.integers(0, len(TOKEN) - 1))
    kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "swap"]))
    if kind == "replace":
        char = draw(st.sampled_from(chars).filter(lambda c: c != TOKEN[position]))
        return TOKEN[:position] + char + TOKEN[position + 1:]
    if kind == "insert":
        return TOKEN[:position] + draw(st.sampled_from(chars)) + TOKEN[position:]
    if kind == "delete":
        return TOKEN[:position] + TOKEN[position + 1:]
    if kind == "truncate":
        return TOKEN[:position]
    other = draw(st.integers(0, len(TOKEN) - 1).filter(lambda i: TOKEN[i] != TOKEN[position]))
    chars_list = list(TOKEN)
    chars_list[position], chars_list[other] = chars_list[other], chars_list[position]
    return "".join(chars_list)


@given(_mutations())
def test_any_mutation_is_rejected(mutated: str) -> None:
    """Changing, adding, removing or swapping any character of a valid token is refused."""
    assert mutated != TOKEN
    with pytest.raises(LinkError):
        SIGNER.verify(mutated, NOW)


def test_other_spelling_of_same_mac_is_rejected() -> None:
    """A last MAC character differing only in base64's spare bits is still refused."""
    payload, mac = TOKEN.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(mac[-1])
    twin = alphabet[index ^ 1]  # same upper four bits: decodes to the very same 32 bytes
    respelled = mac[:-1] + twin
    assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(mac + "=")
    assert _reason(f"{payload}.{respelled}") == "forged"
