"""Strict JSON: duplicate keys at any depth and silent underflow refused, without false alarms
on strings that look like keys; byte-order mark, encoding and syntax reasons as before."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.decode.jsontext import (
    DuplicateKeyError,
    InvalidEncodingError,
    InvalidJsonError,
    JsonTextError,
    NumberUnderflowError,
    loads_strict,
)


@pytest.mark.parametrize("payload", [
    b'{"id":"A","alarm":true}',
    b'{"id": "A", "time": "2026-01-01T08:00:00+08:00", "v": 0.0}',
    b'{\n  "id" : "A",\n  "n" : [1, 2, {"x" : null}]\n}',
    b'{"a":{"id":1},"b":{"id":2},"c":[{"id":3},{"id":4}]}',  # same key in different objects
    b'{"note":"say \\":\\" twice \\":","k":1}',
    b'{"note":"\\u0022:","k":"a\\\\"}',
    b'{"a\\\\":1,"b":"\\\\\\":"}',
    b'{"v":0.0,"w":-0.0,"x":1e-5,"y":2.5E-300,"z":0e-999}',
    b'{"v":4.9e-324}',  # the smallest subnormal is a number, not an underflow
    b'"1e-400"',
    b'[]', b'{}', b'0', b'0.0', b'"text"',
])
def test_ordinary_json_is_read_as_orjson_reads_it(payload: bytes) -> None:
    """Payloads without duplicates or underflow parse exactly as orjson parses them."""
    assert loads_strict(payload) == orjson.loads(payload)


@pytest.mark.parametrize(("payload", "key"), [
    (b'{"id":"A","alarm":true,"id":"B"}', "id"),
    (b'{"id": "A", "id": "A"}', "id"),
    (b'{"d":{"x":1,"y":2,"x":3}}', "x"),
    (b'[{"a":1},{"b":[{"c":1,"c":1}]}]', "c"),
    (b'{"id":"A","\\u0069d":"B"}', "id"),  # the same key written with an escape
    (b'{\n "id" : "A",\n "id" : "B"\n}', "id"),
    (b'{"t":"2026-01-01T08:00:00Z","id":"A","id":"B"}', "id"),
    (b'{"s":"x\\":","id":1,"id":2}', "id"),
    (b'{"id":"A","id":"B","x":"\\"\\u003a"}', "id"),  # escapes that could hide the count
    (b'{"t":"08:00 \\":","id" :"A","id" :"B"}', "id"),  # `":` in a string, blank keys
    (b'\xef\xbb\xbf{"k":1,"k":2}', "k"),
])
def test_duplicate_keys_are_refused(payload: bytes, key: str) -> None:
    """An object that names a key twice, at any depth, however it is written, is refused."""
    with pytest.raises(DuplicateKeyError) as caught:
        loads_strict(payload)
    assert caught.value.key == key
    assert caught.value.reason == "duplicate_key"
    assert repr(key) in caught.value.detail


@pytest.mark.parametrize("payload", [
    b'{"v":1e-400}', b'{"v":-2.5E-999}', b'[1, [2, {"x": 0.1e-330}]]', b'1e-400',
    b'{"v":0.' + b"0" * 400 + b'1}', b'{"a":"1e-400","v":7e-1000}',
])
def test_underflow_is_refused(payload: bytes) -> None:
    """A literal with a non-zero mantissa that would read as 0 is refused as invalid JSON."""
    with pytest.raises(NumberUnderflowError, match="too small") as caught:
        loads_strict(payload)
    assert caught.value.reason == "invalid_json"
    assert isinstance(caught.value, InvalidJsonError)


def test_byte_order_mark_encoding_and_syntax() -> None:
    """A UTF-8 BOM is skipped; bad UTF-8 and bad JSON are told apart, with short details."""
    assert loads_strict(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    with pytest.raises(InvalidEncodingError, match="byte 7") as bad:
        loads_strict(b'{"a": "\xff\xfe"}')
    assert bad.value.reason == "invalid_encoding"
    for payload in (b'{"a": tru', b'\xef\xbb\xbf{"a"', b'{"a":1e400}', b"[" * 5000 + b"]" * 5000,
                    b'{"a":NaN}', b"\xef\xbb\xbf"):
        with pytest.raises(InvalidJsonError) as caught:
            loads_strict(payload)
        assert caught.value.reason == "invalid_json" and len(caught.value.detail) <= 121


def test_deep_documents_are_checked_too() -> None:
    """Nesting deeper than orjson writes (254) is still checked for duplicates."""
    deep = b'{"a":' * 600 + b'{"k":1,"k":2}' + b"}" * 600
    with pytest.raises(DuplicateKeyError):
        loads_strict(deep)
    fine = b'{"a":' * 600 + b'{"k":1,"j":0.0}' + b"}" * 600
    assert loads_strict(fine) == orjson.loads(fine)


# -- properties ----------------------------------------------------------------------------

# Strings made of the characters that confuse a key count: quotes, colons, backslashes.
_tricky = st.text(st.sampled_from('ab":\\ {}[],\u00e9\u70df\n'), max_size=8)
_scalar = st.none() | st.booleans() | st.integers(-10**6, 10**6) | \
    st.floats(allow_nan=False, allow_infinity=False) | _tricky
_json = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_tricky, inner, max_size=4), max_leaves=25)
_STYLES = [
    lambda d: orjson.dumps(d),
    lambda d: json.dumps(d).encode(),
    lambda d: json.dumps(d, ensure_ascii=False, indent=2).encode(),
    lambda d: json.dumps(d, separators=(" , ", " : ")).encode(),
]


@given(_json, st.sampled_from(range(len(_STYLES))))
def test_no_false_alarm_on_any_document(doc: Any, style: int) -> None:
    """Any document without duplicates, written in any common style (strings full of `":`,
    escapes, blanks before colons), parses as orjson parses it."""
    payload = _STYLES[style](doc)
    assert loads_strict(payload) == orjson.loads(payload)


_MARK = "\x00dup\x00"


@st.composite
def _with_duplicate(draw: st.DrawFn) -> tuple[bytes, str]:
    """A document text in which one object, at any depth, names a key twice."""
    doc = draw(_json.filter(lambda d: _objects(d) > 0) | st.dictionaries(_tricky, _json,
                                                                         max_size=3))
    target = draw(st.integers(0, max(_objects(doc) - 1, 0)))
    key = draw(_tricky)
    counter = [0]

    def mark(node: Any) -> Any:
        if type(node) is dict:
            here = counter[0]
            counter[0] += 1
            out = {k: mark(v) for k, v in node.items()}
            if here == target:
                out[_MARK] = 0
            return out
        if type(node) is list:
            return [mark(v) for v in node]
        return node

    comma, colon = draw(st.sampled_from([(", ", ": "), (",", ":"), (" , ", " : "), (",", "\t:")]))
    text = json.dumps(mark(doc), ensure_ascii=draw(st.booleans()), separators=(comma, colon))
    dump = json.dumps(_MARK)
    again = draw(_scalar.map(json.dumps))
    pair = f"{json.dumps(key)}{colon}1{comma}{json.dumps(key)}{colon}{again}"
    return text.replace(f"{dump}{colon}0", pair).encode(), key


def _objects(node: Any) -> int:
    if type(node) is dict:
        return 1 + sum(_objects(v) for v in node.values())
    if type(node) is list:
        return sum(_objects(v) for v in node)
    return 0


@given(_with_duplicate())
def test_duplicates_at_any_depth_are_found(case: tuple[bytes, str]) -> None:
    """A duplicated key anywhere in any document is refused (not silently the last)."""
    payload, key = case
    with pytest.raises(DuplicateKeyError) as caught:
        loads_strict(payload)
    assert caught.value.key == key  # the document's own objects have unique keys


@given(st.integers(1, 10**6), st.integers(330, 2000), st.sampled_from(["e", "E"]))
def test_any_underflowing_literal_is_refused(mantissa: int, exponent: int, e: str) -> None:
    """Every literal below the smallest double is refused, wherever it sits."""
    for payload in (f'{{"v": {mantissa}{e}-{exponent}}}', f"[0.0, -{mantissa}{e}-{exponent}]"):
        with pytest.raises(JsonTextError):
            loads_strict(payload.encode())
