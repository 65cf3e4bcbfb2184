"""Paths into JSON documents: "a.b", "a[0].b", "sensors[type=pressure].value".

Paths are compiled once per profile into small getter functions, because they run for every
field of every message.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

MISSING: Any = object()

Step = tuple[Any, ...]  # ("key", name) | ("index", i) | ("select", key, value)
Getter = Callable[[Any], Any]

_SEGMENT = re.compile(r"^(?P<key>[^.\[\]]*)(?P<brackets>(?:\[[^\[\]]+\])*)$")
_BRACKET = re.compile(r"\[([^\[\]]+)\]")


class PathError(ValueError):
    pass


@functools.lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[Step, ...]:
    """Split a path into steps: ("key", name), ("index", i) or ("select", key, value)."""
    if not path:
        raise PathError("empty path")
    steps: list[Step] = []
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if match is None or (not match["key"] and not match["brackets"]):
            raise PathError(f"bad path segment {segment!r} in {path!r}")
        if match["key"]:
            steps.append(("key", match["key"]))
        for inner in _BRACKET.findall(match["brackets"]):
            if "=" in inner:
                key, _, value = inner.partition("=")
                if not key:
                    raise PathError(f"bad selector [{inner}] in {path!r}")
                steps.append(("select", key, value))
            else:
                try:
                    steps.append(("index", int(inner)))
                except ValueError:
                    raise PathError(f"bad index [{inner}] in {path!r}") from None
    return tuple(steps)


def _step_getter(step: Step) -> Getter:
    kind = step[0]
    if kind == "key":
        key = step[1]

        def get_key(doc: Any) -> Any:
            return doc.get(key, MISSING) if type(doc) is dict else MISSING

        return get_key
    if kind == "index":
        index = step[1]

        def get_index(doc: Any) -> Any:
            if type(doc) is list and -len(doc) <= index < len(doc):
                return doc[index]
            return MISSING

        return get_index
    key, wanted = step[1], step[2]

    def select(doc: Any) -> Any:
        if type(doc) is not list:
            return MISSING
        for item in doc:
            if type(item) is dict and _text(item.get(key)) == wanted:
                return item
        return MISSING

    return select


def _text(value: Any) -> str | None:
    """A selector's text form of a member: scalars only. A container never matches (its str()
    would walk a document that may be 1,000 levels deep or 64 KiB long)."""
    if type(value) is dict or type(value) is list:
        return None
    return str(value)


def compile_getter(path: str) -> Getter:
    """Return a function doc → value (or MISSING) for the path."""
    steps = parse_path(path)
    if len(steps) == 1 and steps[0][0] == "key":
        key = steps[0][1]
        return lambda doc: doc.get(key, MISSING) if type(doc) is dict else MISSING
    getters = [_step_getter(s) for s in steps]

    def get(doc: Any) -> Any:
        for getter in getters:
            doc = getter(doc)
            if doc is MISSING:
                return MISSING
        return doc

    return get


def set_path(doc: dict[str, Any] | list[Any], path: str, value: Any) -> None:
    """Write value at path, creating objects and arrays on the way (used for encoding).

    `doc` is an array when the path starts with `[i]` or a selector (a top-level array)."""
    steps = parse_path(path)
    node: Any = doc
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        nxt = None if last else steps[i + 1]
        empty: Any = [] if nxt is not None and nxt[0] in ("index", "select") else {}
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
            key, wanted = step[1], step[2]
            found = next((x for x in node if isinstance(x, dict) and str(x.get(key)) == wanted),
                         None)
            if found is None:
                found = {key: _selector_value(wanted)}
                node.append(found)
            if last:
                raise PathError("a path cannot end with a selector")
            node = found


def _selector_value(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text
