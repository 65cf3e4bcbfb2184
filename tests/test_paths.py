"""The path language: old paths keep their meaning, selectors with several conditions, quoted
names and values, wildcards, `$.`/`@key`, refusals, and set_path/compile_getter round trips."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sentinel.decode.paths import (
    KEY_REF,
    MISSING,
    PathError,
    Step,
    compile_getter,
    compile_matcher,
    format_path,
    is_key_ref,
    parse_path,
    path_has_wildcard,
    path_is_rooted,
    set_path,
)

DOC: dict[str, Any] = {
    "a": {"b": {"c": 1}},
    "sensors": [{"type": "temp", "value": 21.5}, {"type": "pressure", "value": 352}],
    "ch": [{"id": 1, "v": 10}, {"id": "2", "v": 20}, {"id": [2], "v": 30}],
    "rx": [{"rssi": -97}, {"rssi": -80}],
    "m": [[1, 2], [3, 4]],
    "flags": {"on": True, "off": False, "none": None},
    "props": [{"siid": 2, "piid": 2, "value": 5}, {"siid": 3, "piid": 1, "value": 6},
              {"siid": 2, "piid": 1, "value": 7}],
    "objects": [{"res_name": "0.1.85", "v": 1.5}, {"res_name": "0.1.86", "v": 2.5}],
    "weird.key": {"value": "w"},
    "has \"quote\"": 1,
    "@timestamp": "t",
    "$type": "d",
    "*": "star",
    "LwDecoded": {"0x4EA0": {"t": 21.5}, "0x4EA1": {"t": 22.0}, "note": "x"},
    "devices": [{"id": "d1", "t": 1}, {"id": "d2"}, 7],
}


@pytest.mark.parametrize(("path", "expected"), [
    ("a", {"b": {"c": 1}}),
    ("a.b.c", 1),
    ("a.b.x", MISSING),
    ("a.b.c.d", MISSING),
    ("sensors[type=pressure].value", 352),
    ("sensors[1].value", 352),
    ("sensors[-1].value", 352),
    ("sensors[2]", MISSING),
    ("sensors[-3]", MISSING),
    ("ch[id=2].v", 20),       # text compare: "2" matches 2 and "2"
    ("ch[id=1].v", 10),
    ("ch[id=3].v", MISSING),
    ("m[1][0]", 3),
    ("a.[0]", MISSING),
    ("rx[0].rssi", -97),
    ("sensors.type", MISSING),
    ("sensors[type=x]", MISSING),
])
def test_old_paths_keep_their_meaning(path: str, expected: Any) -> None:
    """Paths of the old language read what they read before."""
    assert compile_getter(path)(DOC) == expected or (expected is MISSING and
                                                     compile_getter(path)(DOC) is MISSING)


def test_top_level_array() -> None:
    """`[0]` reads an element of a top-level array; a key path on an array is absent."""
    assert compile_getter("[1].hr")([{"hr": 60}, {"hr": 70}]) == 70
    assert compile_getter("hr")([{"hr": 60}]) is MISSING
    assert compile_getter("[0]")({"0": 1}) is MISSING


@pytest.mark.parametrize(("path", "expected"), [
    ("props[siid=2,piid=1].value", 7),
    ("props[siid=2, piid=1].value", 7),
    ("props[ siid = 2 , piid = 1 ].value", 7),
    ("props[piid=1,siid=2].value", 7),
    ("props[siid=2].value", 5),  # one condition: the first element that fits
    ("props[siid=3,piid=2].value", MISSING),
    ('objects[res_name="0.1.85"].v', 1.5),
    ("objects[res_name='0.1.86'].v", 2.5),
    ("objects[res_name=0.1.85].v", 1.5),  # the bracket ends an unquoted value, not a dot
    ('"weird.key".value', "w"),
    ("['weird.key'].value", "w"),
    ("'weird.key'['value']", "w"),
    ('"has \\"quote\\""', 1),
    ("'has \"quote\"'", 1),
    ("@timestamp", "t"),
    ("$type", "d"),
    ('"*"', "star"),
    ("$.a.b.c", 1),
    ("$.sensors[0].type", "temp"),
])
def test_extended_paths(path: str, expected: Any) -> None:
    """Several conditions must all hold; quotes let names and values hold any character."""
    got = compile_getter(path)(DOC)
    assert got is expected if expected is MISSING else got == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("x[v=true].n", 1), ("x[v=false].n", 2), ("x[v=null].n", 3), ("x[v=None].n", MISSING),
    ("x[v=True].n", MISSING), ("x[w=].n", 4), ('x[w=""].n', 4), ("x[missing=None].n", MISSING),
    ("x[v=1.5].n", 5), ("x[obj=2].n", MISSING),
])
def test_selector_text_forms(path: str, expected: Any) -> None:
    """Selectors compare JSON text: true/false/null as written; a missing member never
    matches; a container member never matches."""
    doc = {"x": [{"v": True, "n": 1}, {"v": False, "n": 2}, {"v": None, "n": 3},
                 {"w": "", "n": 4}, {"v": 1.5, "n": 5}, {"obj": {"2": 2}, "n": 6}]}
    got = compile_getter(path)(doc)
    assert got is expected if expected is MISSING else got == expected


def test_rooted_and_key_ref_helpers() -> None:
    """`$.` marks a root path (the prefix is dropped); `@key` is a pseudo-path."""
    assert path_is_rooted("$.ts") and path_is_rooted("$[0]")
    assert not path_is_rooted("ts") and not path_is_rooted("$type") and not path_is_rooted("a.$")
    assert parse_path("$.a.b") == parse_path("a.b")
    assert is_key_ref(KEY_REF) and not is_key_ref('"@key"') and not is_key_ref("a")
    assert parse_path("@key") == (("keyref",),)
    assert compile_getter('"@key"')({"@key": 1}) == 1
    with pytest.raises(PathError, match="each"):
        compile_getter("@key")
    with pytest.raises(PathError, match="each"):
        compile_matcher("@key")


def test_wildcards_match_every_member_in_order() -> None:
    """`*` yields every member (document order) or element (with its index); the key is the
    one the last `*` matched; steps that do not fit an item drop that item."""
    assert compile_matcher("LwDecoded.*.t")(DOC) == [("0x4EA0", 21.5), ("0x4EA1", 22.0)]
    assert compile_matcher("LwDecoded.*")(DOC) == list(DOC["LwDecoded"].items())
    assert compile_matcher("devices[*]")(DOC) == list(enumerate(DOC["devices"]))
    assert compile_matcher("devices.*.id")(DOC) == [(0, "d1"), (1, "d2")]
    assert compile_matcher("[*].v")([{"v": 1}, {"v": 2}]) == [(0, 1), (1, 2)]
    assert compile_matcher("*")({"x": 1, "y": 2}) == [("x", 1), ("y", 2)]
    nested = {"g": {"a": [{"v": 1}], "b": [{"v": 2}, {"v": 3}]}}
    assert compile_matcher("g.*[*].v")(nested) == [(0, 1), (0, 2), (1, 3)]
    assert compile_matcher("g.*[0].v")(nested) == [("a", 1), ("b", 2)]
    assert compile_matcher("nothing.*")(DOC) == []
    assert compile_matcher("a.b.c.*")(DOC) == []  # a scalar has no members
    assert compile_matcher("props[siid=2,piid=1][*]")(DOC) == [
        ("siid", 2), ("piid", 1), ("value", 7)]


def test_matcher_without_wildcard_yields_one_value() -> None:
    """A path without `*` matches once (key None), or not at all."""
    assert compile_matcher("a.b")(DOC) == [(None, {"c": 1})]
    assert compile_matcher("devices")(DOC) == [(None, DOC["devices"])]
    assert compile_matcher("a.zz")(DOC) == []
    assert compile_matcher("$.a.b.c")(DOC) == [(None, 1)]


def test_getter_refuses_wildcards() -> None:
    """A getter yields one value, so a wildcard path is refused with the reason."""
    assert path_has_wildcard("a.*.b") and path_has_wildcard("a[*]") and path_has_wildcard("*")
    assert not path_has_wildcard('a."*"') and not path_has_wildcard("a[k=*]")
    for path in ("a.*", "a[*].b", "*"):
        with pytest.raises(PathError, match="use `each`"):
            compile_getter(path)


@pytest.mark.parametrize(("path", "message"), [
    ("a[x=1][y=2]", r"never matches \(use a\[x=1,y=2\]\)"),
    ("p.a[x=1][y='b c']", r"use p.a\[x=1,y=\"b c\"\]"),
    ("a[x=1][0]", "selector yields is an object"),
    ("a[x=1][-1].b", "selector yields is an object"),
    ("", "empty path"),
    ("$", "nothing after"),
    ("$.", "empty member name"),
    ("a..b", "empty member name"),
    (".a", "empty member name"),
    ("a.", "empty member name"),
    ('a.""', "empty member name"),
    ("a['']", "empty member name"),
    ("a[=1]", "without a key"),
    ("a[x=1,=2]", "without a key"),
    ("a[x=1,]", "empty selector condition"),
    ("a[x=1,2]", "has no '='"),
    ("a[x=1,x=2]", "given twice"),
    ("a[]", "empty brackets"),
    ("a[b]", "bad index"),
    ("a[1_0]", "bad index"),
    ("a[+1]", "bad index"),
    ("a[\u0661]", "bad index"),
    ("a[0", "unbalanced '\\['"),
    ("a[x=1", "unbalanced '\\['"),
    ("a[x=[1]]", "unbalanced '\\['"),
    ("a]", "unbalanced '\\]'"),
    ('a["x]', 'unbalanced "'),
    ("a['x", "unbalanced '"),
    ('"a', 'unbalanced "'),
    ('a[x="1"2]', "after a selector value"),
    ("a[0]b", "unexpected 'b'"),
    ('"a"b', "unexpected 'b'"),
    ('"a\\n"', "escape inside quotes"),
])
def test_refused_paths(path: str, message: str) -> None:
    """Paths that cannot match or cannot be read are refused with a clear message."""
    with pytest.raises(PathError, match=message):
        parse_path(path)


def test_set_path_writes_every_condition() -> None:
    """set_path creates a selector's element with all its conditions; unquoted integers
    become numbers, quoted values stay text; an existing element is reused."""
    doc: dict[str, Any] = {}
    set_path(doc, "props[siid=2,piid=1].value", 7)
    set_path(doc, 'props[siid=2,piid="2"].value', 8)
    set_path(doc, "props[siid=2,piid=1].unit", "C")
    set_path(doc, 'objects[res_name="0.1.85"].v', 1.5)
    set_path(doc, "x[k=007].v", 1)
    set_path(doc, '"weird.key".value', "w")
    set_path(doc, "$.ts", 5)
    assert doc == {"props": [{"siid": 2, "piid": 1, "value": 7, "unit": "C"},
                             {"siid": 2, "piid": "2", "value": 8}],
                   "objects": [{"res_name": "0.1.85", "v": 1.5}],
                   "x": [{"k": "007", "v": 1}],
                   "weird.key": {"value": "w"},
                   "ts": 5}
    assert compile_getter("props[siid=2,piid=2].value")(doc) == 8


def test_set_path_with_a_wildcard_key() -> None:
    """A wildcard step is written at the key given (text → member, integer → index)."""
    doc: dict[str, Any] = {}
    set_path(doc, "LwDecoded.*.t", 21.5, wildcard_key="0x4EA0")
    set_path(doc, "LwDecoded.*.t", 22.0, wildcard_key="0x4EA1")
    set_path(doc, "devices[*].id", "d2", wildcard_key=1)
    assert doc == {"LwDecoded": {"0x4EA0": {"t": 21.5}, "0x4EA1": {"t": 22.0}},
                   "devices": [None, {"id": "d2"}]}
    with pytest.raises(PathError, match="wildcard_key"):
        set_path(doc, "a.*", 1)
    with pytest.raises(PathError, match="wildcard_key"):
        set_path(doc, "a.*.*", 1, wildcard_key="k")
    with pytest.raises(PathError):
        set_path(doc, "@key", 1)
    with pytest.raises(PathError, match="end with a selector"):
        set_path(doc, "a[x=1]", 1)
    with pytest.raises(PathError, match="needs an array"):
        set_path(doc, "LwDecoded[0]", 1)
    with pytest.raises(PathError, match="needs an object"):
        set_path(doc, "devices.x", 1)


def _reference_get(steps: tuple[Step, ...], doc: Any) -> Any:
    """The meaning of a wildcard-free path, written plainly (the oracle for the closures)."""
    for step in steps:
        if step[0] == "key":
            if not isinstance(doc, dict) or step[1] not in doc:
                return MISSING
            doc = doc[step[1]]
        elif step[0] == "index":
            if not isinstance(doc, list) or not -len(doc) <= step[1] < len(doc):
                return MISSING
            doc = doc[step[1]]
        else:
            if not isinstance(doc, list):
                return MISSING
            doc = next((x for x in doc if isinstance(x, dict) and all(
                k in x and not isinstance(x[k], dict | list)
                and (json.dumps(x[k]) if not isinstance(x[k], str) else x[k]) == v
                for k, v, _ in step[3])), MISSING)
    return doc


def test_getter_shapes_agree_with_the_reference() -> None:
    """The specialised closures (one key, two keys, keys only, mixed) read what the plain
    reference reads on documents that fit them and on documents that do not."""
    docs = (None, 1, "a", [], [1], {}, {"a": None}, {"a": []}, {"a": {"b": "x"}},
            {"a": {"b": {"c": {"d": 0}}}}, {"a": [{"b": 2}]})
    for path in ("a", "a.b", "a.b.c", "a.b.c.d", "a[0].b"):
        get = compile_getter(path)
        for doc in docs:
            want = _reference_get(parse_path(path), doc)
            assert get(doc) is want or get(doc) == want


# -- properties ----------------------------------------------------------------------------

_name = st.text(min_size=1, max_size=8)
_bare = st.text(st.characters(codec="utf-8", exclude_characters=".[]\"',=\\"), min_size=1,
                max_size=6).map(str.strip).filter(bool)
_value = st.one_of(st.integers(-999, 999).map(str), st.text(max_size=8))
_cond = st.tuples(st.one_of(_bare, _name), _value, st.booleans())


@st.composite
def _selector(draw: st.DrawFn) -> Step:
    conds = draw(st.lists(_cond, min_size=1, max_size=3, unique_by=lambda c: c[0]))
    # An unquoted value must survive the parser: no surrounding blanks, not empty.
    fixed = tuple((k, v, q or v != v.strip() or not v or any(c in v for c in ",[]\"'"))
                  for k, v, q in conds)
    return ("select", fixed[0][0], fixed[0][1], fixed)


@st.composite
def _steps(draw: st.DrawFn, wildcards: bool = True) -> tuple[Step, ...]:
    n = draw(st.integers(1, 6))
    steps: list[Step] = []
    choices = ["key", "index", "select"] + (["wildcard"] if wildcards else [])
    while len(steps) < n:
        kind = draw(st.sampled_from(choices))
        if steps and steps[-1][0] == "select" and kind in ("index", "select"):
            continue  # refused on purpose (tested above)
        if kind == "key":
            steps.append(("key", draw(_name)))
        elif kind == "index":
            steps.append(("index", draw(st.integers(-5, 5))))
        elif kind == "select":
            steps.append(draw(_selector()))
        else:
            steps.append(("wildcard",))
    return tuple(steps)


def _writes_over_a_condition(steps: tuple[Step, ...]) -> bool:
    return any(a[0] == "select" and b[0] == "key" and b[1] in {c[0] for c in a[3]}
               for a, b in itertools.pairwise(steps))


@given(_steps(), st.booleans())
def test_format_then_parse_is_identity(steps: tuple[Step, ...], rooted: bool) -> None:
    """Any step chain written by format_path parses back to the same steps."""
    text = format_path(steps, rooted)
    assert parse_path(text) == steps
    assert path_is_rooted(text) == rooted


@given(_steps(wildcards=False), st.one_of(st.integers(), st.text(max_size=5), st.none()))
def test_set_path_then_get(steps: tuple[Step, ...], value: Any) -> None:
    """What set_path writes, compile_getter reads back, for any path without a wildcard."""
    if steps[-1][0] == "select":
        steps += (("key", "v"),)
    # Writing over a selector's own member (`[k=1].k`) moves the element out of the selector.
    assume(not _writes_over_a_condition(steps))
    path = format_path(steps)
    doc: Any = [] if steps[0][0] != "key" else {}
    set_path(doc, path, value)
    assert compile_getter(path)(doc) == value
    assert compile_matcher(path)(doc) == [(None, value)]


@given(_steps(), st.one_of(st.integers(0, 3), _name), st.integers())
def test_set_path_then_match(steps: tuple[Step, ...], key: str | int, value: int) -> None:
    """A path with one `*` written at a key is matched back with that key."""
    steps = tuple(s for s in steps if s[0] != "wildcard")
    if not steps or steps[-1][0] == "select":
        steps += (("key", "v"),)
    steps = (*steps[:1], ("wildcard",), *steps[1:])
    assume(steps[0][0] != "select" or isinstance(key, str))  # a selector yields an object
    assume(not _writes_over_a_condition(steps))
    path = format_path(steps)
    doc: Any = [] if steps[0][0] != "key" else {}
    set_path(doc, path, value, wildcard_key=key)
    assert (key, value) in compile_matcher(path)(doc)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=4),
    max_leaves=20)


@given(st.text(max_size=30))
def test_any_text_parses_or_is_refused(text: str) -> None:
    """Any text is a path or a PathError, never another exception; a path round-trips."""
    try:
        steps = parse_path(text)
    except PathError:
        return
    if steps[0][0] != "keyref":
        assert parse_path(format_path(steps, path_is_rooted(text))) == steps


@given(_steps(), _json)
def test_getters_and_matchers_never_raise(steps: tuple[Step, ...], doc: Any) -> None:
    """Reading any document with any path returns a value, MISSING or matches; no exception."""
    path = format_path(steps)
    matches = compile_matcher(path)(doc)
    assert isinstance(matches, list)
    if not path_has_wildcard(path):
        got = compile_getter(path)(doc)
        want = _reference_get(steps, doc)
        assert got is want or got == want
        assert matches == ([] if got is MISSING else [(None, got)])
