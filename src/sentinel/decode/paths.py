"""Paths into JSON documents: "a.b", "a[0].b", "props[siid=2,piid=1].value", "LwDecoded.*".

A path is a chain of steps separated by dots:

- a member name, `key` (or quoted, `"weird.key"`, when it holds `. [ ] "` or starts with `$`,
  `@`, `*`);
- `[i]`, the i-th element of an array (negative from the end);
- `[k=v,k2=v2]`, the first object element of an array whose members, as text, equal the
  values (all conditions must hold; values may be quoted: `[res_name="0.1.85"]`);
- `*` or `[*]`, every member of an object or every element of an array (a matcher yields
  each; a getter refuses it).

`$.rest` starts from the message root even where paths are relative to a batch item, and the
whole path `@key` names the key matched by the last `*` of the `each` path: both are resolved
by the decoder, which asks `path_is_rooted` / `is_key_ref`.

Paths are compiled once per profile into small closures, because getters run for every field
of every message.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

MISSING: Any = object()

# ("key", name) | ("index", i) | ("select", key, value, conditions) | ("wildcard",)
# | ("keyref",). A selector repeats its first condition as key and value so that code written
# for single-condition selectors (step[1], step[2]) keeps reading them; `conditions` is a
# tuple of (key, value, quoted) for all of them.
Step = tuple[Any, ...]
Condition = tuple[str, str, bool]
Getter = Callable[[Any], Any]
Match = tuple[str | int | None, Any]
Matcher = Callable[[Any], list[Match]]

KEY_REF = "@key"
_QUOTES = "\"'"
_INDEX = re.compile(r"-?[0-9]+")
# Member names written bare; anything else is quoted by `format_path`.
_BARE_NAME = re.compile(r"[^.\[\]\"'$@*][^.\[\]]*")
_BARE_KEY = re.compile(r"[^=,\[\]\"'\s]([^=,\[\]]*[^=,\[\]\s])?")
_BARE_VALUE = re.compile(r"[^,\[\]\"'\s]([^,\[\]]*[^,\[\]\s])?")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'"}


class PathError(ValueError):
    pass


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------


def is_key_ref(path: str) -> bool:
    """Return whether the path is the `@key` pseudo-path (the key matched by `each`'s `*`)."""
    return path == KEY_REF


def path_is_rooted(path: str) -> bool:
    """Return whether the path starts at the message root (`$.a`, `$[0]`)."""
    return path[:2] in ("$.", "$[")


def path_has_wildcard(path: str) -> bool:
    """Return whether the path has a `*` step (so it yields several values)."""
    return any(step[0] == "wildcard" for step in parse_path(path))


@functools.lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[Step, ...]:
    """Split a path into steps; raise PathError saying what is wrong with it.

    A leading `$` is dropped (see `path_is_rooted`); `@key` is the single step ("keyref",)."""
    if not path:
        raise PathError("empty path")
    if path == KEY_REF:
        return (("keyref",),)
    return tuple(_Parser(path).parse())


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.i = 0

    def fail(self, what: str) -> PathError:
        return PathError(f"{what} in path {self.path!r}")

    def parse(self) -> list[Step]:
        path, n = self.path, len(self.path)
        if path == "$":
            raise self.fail("nothing after `$`")
        if path_is_rooted(path):
            self.i = 2 if path[1] == "." else 1
        steps: list[Step] = []
        while True:
            self._segment(steps)
            if self.i == n:
                return steps
            if path[self.i] != ".":
                raise self.fail(f"unexpected {path[self.i]!r} at position {self.i}")
            self.i += 1

    def _segment(self, steps: list[Step]) -> None:
        path, n = self.path, len(self.path)
        start = self.i
        if start < n and path[start] in _QUOTES:
            name = self._quoted()
            if not name:
                raise self.fail("empty member name")
            steps.append(("key", name))
        else:
            j = start
            while j < n and path[j] not in ".[]":
                j += 1
            if j < n and path[j] == "]":
                raise self.fail(f"unbalanced ']' at position {j}")
            name = path[start:j]
            self.i = j
            if name == "*":
                steps.append(("wildcard",))
            elif name:
                steps.append(("key", name))
            elif j == n or path[j] != "[":
                raise self.fail("empty member name")
        prev_start = -1
        while self.i < n and path[self.i] == "[":
            start = self.i
            step = self._bracket()
            if steps and steps[-1][0] == "select" and step[0] in ("select", "index"):
                # A selector yields one object, never an array: the chain cannot match.
                if step[0] == "select" and prev_start >= 0:
                    both = _conditions_text(steps[-1][3] + step[3])
                    hint = f"use {path[:prev_start]}[{both}]"
                else:
                    hint = "the element a selector yields is an object, never an array"
                raise self.fail(f"a selector or index after a selector never matches ({hint})")
            steps.append(step)
            prev_start = start

    def _bracket(self) -> Step:
        path, n = self.path, len(self.path)
        self.i += 1  # "["
        conditions: list[Condition] = []
        while True:
            self._spaces()
            key_start = self.i
            quoted_key = self.i < n and path[self.i] in _QUOTES
            key = self._quoted() if quoted_key else self._bare("=,]").strip()
            self._spaces()
            if self.i >= n:
                raise self.fail("unbalanced '['")
            if path[self.i] == "]" and not conditions:
                self.i += 1
                if quoted_key:  # ['a.b']: a member name in brackets
                    if not key:
                        raise self.fail("empty member name")
                    return ("key", key)
                if key == "*":
                    return ("wildcard",)
                if _INDEX.fullmatch(key):
                    return ("index", int(key))
                raise self.fail(f"bad index [{key}]" if key else "empty brackets []")
            if path[self.i] != "=":
                text = path[key_start:self.i].strip()
                raise self.fail(f"selector condition {text!r} has no '='" if text
                                else "empty selector condition")
            if not key:
                raise self.fail("a selector condition without a key")
            if any(c[0] == key for c in conditions):
                raise self.fail(f"selector key {key!r} given twice")
            self.i += 1  # "="
            self._spaces()
            quoted = self.i < n and path[self.i] in _QUOTES
            value = self._quoted() if quoted else self._bare(",]").strip()
            self._spaces()
            if self.i >= n:
                raise self.fail("unbalanced '['")
            conditions.append((key, value, quoted))
            if path[self.i] == "]":
                self.i += 1
                first = conditions[0]
                return ("select", first[0], first[1], tuple(conditions))
            if path[self.i] != ",":
                raise self.fail(f"unexpected {path[self.i]!r} after a selector value")
            self.i += 1

    def _bare(self, stops: str) -> str:
        """Text up to one of `stops` (not consumed); a '[' there means unbalanced brackets."""
        path, n = self.path, len(self.path)
        start = self.i
        while self.i < n and path[self.i] not in stops:
            if path[self.i] == "[":
                raise self.fail(f"unbalanced '[' at position {self.i}")
            self.i += 1
        return path[start:self.i]

    def _spaces(self) -> None:
        while self.i < len(self.path) and self.path[self.i] in " \t":
            self.i += 1

    def _quoted(self) -> str:
        path, n = self.path, len(self.path)
        quote = path[self.i]
        self.i += 1
        out: list[str] = []
        while self.i < n:
            c = path[self.i]
            if c == quote:
                self.i += 1
                return "".join(out)
            if c == "\\":
                nxt = path[self.i + 1] if self.i + 1 < n else ""
                if nxt not in _ESCAPES:
                    raise self.fail("only \\\" \\' and \\\\ escape inside quotes")
                out.append(_ESCAPES[nxt])
                self.i += 2
                continue
            out.append(c)
            self.i += 1
        raise self.fail(f"unbalanced {quote}")


def _conditions_text(conditions: tuple[Condition, ...]) -> str:
    return ",".join(f"{k if _BARE_KEY.fullmatch(k) else _quote(k)}="
                    f"{_quote(v) if q or not _BARE_VALUE.fullmatch(v) else v}"
                    for k, v, q in conditions)


# ---------------------------------------------------------------------------------------
# Writing paths back (tests, tools that generate profiles)
# ---------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_member(name: str) -> str:
    """Return the member name as a path segment: bare when it can be, else quoted."""
    return name if _BARE_NAME.fullmatch(name) else _quote(name)


def format_path(steps: tuple[Step, ...], rooted: bool = False) -> str:
    """Return path text that `parse_path` turns into these steps (inverse of parsing)."""
    out: list[str] = ["$"] if rooted else []
    for step in steps:
        kind = step[0]
        if kind == "key":
            out.append("." + quote_member(step[1]) if out else quote_member(step[1]))
        elif kind == "wildcard":
            out.append(".*" if out else "*")
        elif kind == "index":
            out.append(f"[{step[1]}]")
        elif kind == "select":
            out.append(f"[{_conditions_text(step[3])}]")
        else:
            return KEY_REF
    return "".join(out)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A selector's text form of a member: scalars only, written as in JSON for true, false
    and null. A container never matches (its str() would walk a document that may be 1,000
    levels deep or 64 KiB long); a missing member never matches."""
    if type(value) is str:
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if value is MISSING or type(value) is dict or type(value) is list:
        return None
    return str(value)


def _select_fn(conditions: tuple[Condition, ...]) -> Getter:
    if len(conditions) == 1:
        key, wanted, _ = conditions[0]

        def select_one(doc: Any) -> Any:
            if type(doc) is not list:
                return MISSING
            for item in doc:
                if type(item) is dict:
                    value = item.get(key, MISSING)
                    if value == wanted or (type(value) is not str and _text(value) == wanted):
                        return item
            return MISSING

        return select_one
    pairs = tuple((k, v) for k, v, _ in conditions)

    def select(doc: Any) -> Any:
        if type(doc) is not list:
            return MISSING
        for item in doc:
            if type(item) is dict and all(_text(item.get(k, MISSING)) == v for k, v in pairs):
                return item
        return MISSING

    return select


_KEY, _INDEX_OP, _CALL = 0, 1, 2


def _chain(steps: tuple[Step, ...], path: str) -> Getter:
    """One closure for a chain of key, index and selector steps."""
    if any(s[0] == "keyref" for s in steps):
        raise PathError(f"{KEY_REF!r} is not a path into the message: it names the key "
                        "matched by the `*` of `each`, as the whole of device_id.path")
    if not steps:
        return lambda doc: doc
    if all(s[0] == "key" for s in steps):
        keys = tuple(s[1] for s in steps)
        if len(keys) == 1:
            key = keys[0]
            return lambda doc: doc.get(key, MISSING) if type(doc) is dict else MISSING
        if len(keys) == 2:
            k1, k2 = keys

            def get2(doc: Any) -> Any:
                if type(doc) is not dict:
                    return MISSING
                doc = doc.get(k1, MISSING)
                return doc.get(k2, MISSING) if type(doc) is dict else MISSING

            return get2

        def get_keys(doc: Any) -> Any:
            for key in keys:
                if type(doc) is not dict:
                    return MISSING
                doc = doc.get(key, MISSING)
            return doc

        return get_keys
    ops: list[tuple[int, Any]] = []
    for s in steps:
        if s[0] == "key":
            ops.append((_KEY, s[1]))
        elif s[0] == "index":
            ops.append((_INDEX_OP, s[1]))
        else:
            ops.append((_CALL, _select_fn(s[3])))
    frozen = tuple(ops)

    def get(doc: Any) -> Any:
        # MISSING is no dict or list, so a failed step makes the next one fail too.
        for op, arg in frozen:
            if op == _KEY:
                if type(doc) is not dict:
                    return MISSING
                doc = doc.get(arg, MISSING)
            elif op == _INDEX_OP:
                if type(doc) is not list or not -len(doc) <= arg < len(doc):
                    return MISSING
                doc = doc[arg]
            else:
                doc = arg(doc)
        return doc

    return get


def compile_getter(path: str) -> Getter:
    """Return a function doc → value (or MISSING) for the path.

    A rooted path (`$.a`) reads from the document it is given: the caller passes the root
    (see `path_is_rooted`). Wildcards and `@key` are refused."""
    steps = parse_path(path)
    if any(s[0] == "wildcard" for s in steps):
        raise PathError(f"a wildcard yields several values; use `each` (path {path!r})")
    return _chain(steps, path)


def compile_matcher(path: str) -> Matcher:
    """Return a function doc → every match as (key matched by the last `*` or None, value).

    Object members come in document order, array elements in order with their index as the
    key. A path without `*` yields its one value, or nothing when it is missing."""
    steps = parse_path(path)
    runs: list[tuple[Step, ...]] = [()]
    for s in steps:
        if s[0] == "wildcard":
            runs.append(())
        else:
            runs[-1] += (s,)
    first = _chain(runs[0], path)
    rest = tuple(_chain(r, path) if r else None for r in runs[1:])

    def match(doc: Any) -> list[Match]:
        value = first(doc)
        if value is MISSING:
            return []
        found: list[Match] = [(None, value)]
        for getter in rest:
            out: list[Match] = []
            for _, node in found:
                items: Any
                if type(node) is dict:
                    items = node.items()
                elif type(node) is list:
                    items = enumerate(node)
                else:
                    continue
                if getter is None:
                    out.extend(items)
                    continue
                for key, child in items:
                    child = getter(child)
                    if child is not MISSING:
                        out.append((key, child))
            found = out
        return found

    return match


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def set_path(doc: dict[str, Any] | list[Any], path: str, value: Any,
             wildcard_key: str | int | None = None) -> None:
    """Write value at path, creating objects and arrays on the way (used for encoding).

    `doc` is an array when the path starts with `[i]` or a selector (a top-level array). A
    selector that finds no element appends one holding all its conditions' members (an
    unquoted integer value as a number). A path with one `*` writes at `wildcard_key` there
    (a text key makes an object member, an integer an array index)."""
    steps = parse_path(path)
    if steps[0][0] == "keyref":
        raise PathError(f"{KEY_REF!r} is no place in the message to write to")
    wild = [i for i, s in enumerate(steps) if s[0] == "wildcard"]
    if wild:
        if len(wild) > 1 or wildcard_key is None:
            raise PathError(f"set_path needs one `*` and a wildcard_key (path {path!r})")
        steps = tuple(s if s[0] != "wildcard" else
                      ("index", wildcard_key) if isinstance(wildcard_key, int)
                      else ("key", wildcard_key) for s in steps)
    node: Any = doc
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        nxt = None if last else steps[i + 1]
        empty: Any = [] if nxt is not None and nxt[0] in ("index", "select") else {}
        if not _fits(node, step):
            want = "an object" if step[0] == "key" else "an array"
            raise PathError(f"path {path!r} needs {want} where the document has "
                            f"{type(node).__name__}")
        if step[0] == "key":
            if last:
                node[step[1]] = value
                return
            node = node.setdefault(step[1], empty)
        elif step[0] == "index":
            index = step[1]
            # [-k] needs k elements, [i] needs i + 1.
            while len(node) < (index + 1 if index >= 0 else -index):
                node.append(None)
            if last:
                node[index] = value
                return
            if node[index] is None:
                node[index] = empty
            node = node[index]
        else:
            if last:
                raise PathError("a path cannot end with a selector")
            conditions = step[3]
            found = next((x for x in node if type(x) is dict and
                          all(_text(x.get(k, MISSING)) == v for k, v, _ in conditions)), None)
            if found is None:
                found = {k: v if q else _selector_value(v) for k, v, q in conditions}
                node.append(found)
            node = found


def _fits(node: Any, step: Step) -> bool:
    return type(node) is (dict if step[0] == "key" else list)


def _selector_value(text: str) -> Any:
    """The member an unquoted selector value creates: a number when it is an integer."""
    if _INDEX.fullmatch(text) and str(int(text)) == text:  # not "007" or "-0"
        return int(text)
    return text
