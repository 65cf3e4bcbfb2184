"""JSON payloads read strictly: orjson's speed, without its silent choices.

orjson (like most parsers) keeps the last of duplicated object keys, so `{"id": "A", ...,
"id": "B"}` names device B after a reader saw A; and it reads `1e-400` as 0.0. Both are
refused here. The checks are arranged so that an ordinary payload pays for one byte count
and one walk over the parsed containers; only a suspicious payload is tokenized exactly:

- duplicates: every key token in the text has its own colon, so the number of colons bounds
  the number of key tokens from above (colons inside strings, as in ISO times, add to it;
  then the tighter count of `"` + blanks + `:` is tried). If the bound equals the number of
  keys in the parsed document, no key was dropped, so none was duplicated. Otherwise one
  exact pass over the tokens decides.
- underflow: a literal that underflows reads as 0.0, so only a document with a float zero
  can hold one, and only a literal with a negative exponent (`e-`, `E-`) or 300 zeros after
  a point can underflow; only then are the number tokens checked.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import orjson

from sentinel.decode.numbers import NumberTextError, parse_number_text

_UTF8_BOM = b"\xef\xbb\xbf"
_KEY_END = re.compile(rb'"[ \t\n\r]*:')
_ZERO = re.compile(rb"[:,\[]-?0\.0[,}\]]")
# After orjson accepted the text it is valid JSON, so strings can be found left to right
# without a full grammar: a string token, optionally followed by `:` (a key), or a bracket.
_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_TOKENS = re.compile(_STRING + rb'(?P<colon>[ \t\n\r]*:)?|[{}\[\]]', re.DOTALL)
_NUMBERS = re.compile(_STRING + rb'|(?P<num>-?[0-9][0-9.]*[eE][+-]?[0-9]+|'
                      rb"-?[0-9]*\.0{300,}[0-9]*)", re.DOTALL)
# Below ~2.5e-324 a double is 0: written without an exponent that takes 323 zeros.
_MANY_ZEROS = b"." + b"0" * 300


class JsonTextError(ValueError):
    """The payload is not JSON we accept; `reason` is the RejectReason value to count it
    under and `detail` the text for the dead letter."""

    reason: ClassVar[str] = "invalid_json"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidEncodingError(JsonTextError):
    reason = "invalid_encoding"


class InvalidJsonError(JsonTextError):
    reason = "invalid_json"


class NumberUnderflowError(InvalidJsonError):
    """A numeric literal with a non-zero mantissa that reads as 0 (`1e-400`); counted as
    invalid JSON like its mirror image `1e400`, which orjson refuses."""

    def __init__(self, literal: str, detail: str) -> None:
        super().__init__(detail)
        self.literal = literal


class DuplicateKeyError(JsonTextError):
    """An object names the same key twice (at any depth)."""

    reason = "duplicate_key"

    def __init__(self, key: str) -> None:
        shown = key if len(key) <= 40 else key[:40] + "…"
        super().__init__(f"key {shown!r} appears twice in one object")
        self.key = key


def loads_strict(payload: bytes) -> Any:
    """Parse the payload; raise a JsonTextError subclass saying why it is refused.

    A UTF-8 byte-order mark is skipped (RFC 8259 lets a parser ignore one)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        doc, payload = _parse_refused(payload, exc)
    try:
        canonical = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (254): walk instead
        keys, zero = _count_keys(doc)
    else:
        if canonical == payload:
            # Compact JSON as machines write it: the document holds every key the text has
            # (no duplicate was dropped) and every number as written (none underflowed).
            return doc
        keys = canonical.count(b'":')
        if b"\\" in canonical:  # a `":` inside a string is written `\":` (rare)
            keys -= canonical.count(b'\\":')  # a lower bound: enough to prove "no duplicate"
        # A float zero is written 0.0 or -0.0 between separators ("10.0", "0.05" are not).
        zero = (b"0.0" in canonical and _ZERO.search(canonical) is not None) or (
            type(doc) is float and not doc)
    if _key_tokens_at_most(payload) != keys:
        _find_duplicate(payload)
    # A literal that underflowed reads as 0.0, so only a document with a float zero can hold
    # one, and it needs a negative exponent or hundreds of zeros after a point.
    if zero and (b"e-" in payload or b"E-" in payload or _MANY_ZEROS in payload):
        _check_underflow(payload)
    return doc


def _key_tokens_at_most(payload: bytes) -> int:
    """A number no smaller than the count of key tokens in valid JSON text."""
    # Every key token has its own colon; counting one byte is the cheapest scan there is.
    colons = payload.count(b":")
    if colons == payload.count(b'":'):
        return colons
    # Colons in strings too (ISO times): count the ends of key tokens, `"` blanks `:`.
    return len(_KEY_END.findall(payload))


def _parse_refused(payload: bytes, exc: orjson.JSONDecodeError) -> tuple[Any, bytes]:
    """orjson refused the payload: accept it after a byte-order mark, else raise the reason.
    Only rejected payloads come here, so the checks cost the hot path nothing."""
    if payload.startswith(_UTF8_BOM):
        try:
            return orjson.loads(payload[3:]), payload[3:]
        except orjson.JSONDecodeError as again:
            exc = again
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise InvalidEncodingError(f"payload is not valid UTF-8 (byte {bad.start})") from None
    text = str(exc)
    raise InvalidJsonError(text if len(text) <= 120 else text[:120] + "…") from None


def _count_keys(doc: Any) -> tuple[int, bool]:
    """Keys in every object of the document, and whether a float 0 occurs among its values
    (iterative: documents nest 1,000 deep)."""
    count = 0
    zero = False
    todo = [doc]
    while todo:
        node = todo.pop()
        if type(node) is dict:
            count += len(node)
            values: Any = node.values()
        else:
            values = node
        for value in values:
            kind = type(value)
            if kind is dict or kind is list:
                todo.append(value)
            elif kind is float and not value:
                zero = True
    return count, zero


def _find_duplicate(payload: bytes) -> None:
    """Exact check: walk the tokens with a stack of the keys seen per open object."""
    stack: list[set[str] | None] = []
    for token in _TOKENS.finditer(payload):
        text = token.group()
        first = text[:1]
        if first == b"{":
            stack.append(set())
        elif first == b"[":
            stack.append(None)
        elif first == b"}" or first == b"]":
            stack.pop()
        elif token.group("colon") is not None:
            raw = text[: text.rindex(b'"') + 1]
            # Escapes (`"\u0069d"` is "id") are decoded by orjson; plain keys need not be.
            key: str = orjson.loads(raw) if b"\\" in raw else raw[1:-1].decode()
            seen = stack[-1]
            assert seen is not None  # a key is only ever inside an object
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)


def _check_underflow(payload: bytes) -> None:
    for token in _NUMBERS.finditer(payload):
        literal = token.group("num")
        if literal is None:
            continue
        text = literal.decode("ascii")
        try:
            parse_number_text(text)
        except NumberTextError as exc:
            raise NumberUnderflowError(text, f"number {exc.reason}") from None
