"""What `sentinel check` refuses in a profile beyond its model: paths that do not parse or
can never match, `exclude` filters that exclude nothing or everything, mapping keys that
cannot apply to their field's type. Called by `sentinel.loading.check_profile`.
"""

from __future__ import annotations

from sentinel.config.profiles import ProfileSpec
from sentinel.decode.fields import compile_source
from sentinel.decode.paths import KEY_REF, PathError, is_key_ref, path_has_wildcard
from sentinel.kinds import KindRegistry


def profile_problems(profile: ProfileSpec, kinds: KindRegistry) -> list[tuple[str, str]]:
    """(where, problem) for what `check` refuses in a profile beyond its model: paths that
    do not parse or can never match, `exclude` filters that exclude nothing or everything,
    mapping keys that cannot apply to the field's type."""
    problems: list[tuple[str, str]] = []
    batch = profile.each is not None
    keyed = False
    if profile.each is not None:
        try:
            keyed = path_has_wildcard(profile.each)
        except PathError as exc:
            problems.append(("each", str(exc)))
    paths: list[tuple[str, str | None]] = [
        (f"{where}.path", m.path) for where, m in profile.all_mappings() if m.path]
    paths += [("device_id.path", profile.device_id.path),
              ("timestamp.path", profile.timestamp.path if profile.timestamp else None)]
    for where, path in paths:
        if path is None:
            continue
        if is_key_ref(path):
            if not keyed:
                problems.append((where, f"{KEY_REF} is the key a `*` of `each` matched; "
                                        "this profile's `each` has no `*`" if batch else
                                        f"{KEY_REF} needs `each` with a `*`"))
            continue
        try:
            compile_source(path, batch)
        except PathError as exc:
            problems.append((where, str(exc)))
    if profile.each is not None and is_key_ref(profile.each):
        problems.append(("each", f"{KEY_REF} is no path to the items"))
    match = [f.split("/") for f in profile.match]
    for item in profile.exclude:
        levels = item.split("/")
        if not any(filters_overlap(levels, m) for m in match):
            problems.append(("exclude", f"{item!r} excludes no topic that `match` takes"))
    if profile.exclude and all(any(filter_covers(e.split("/"), m) for e in profile.exclude)
                               for m in match):
        problems.append(("exclude", "every topic of `match` is excluded: the profile never "
                                    "takes a message"))
    served = list(profile.kinds) or kinds.names()
    for where, m in profile.all_mappings():
        name = where.rsplit(".", 1)[1]
        kinds_here = [where.split(".")[1]] if where.startswith("by_kind.") else served
        specs = [kinds[k].fields[name] for k in kinds_here
                 if k in kinds and name in kinds[k].fields]
        types = {spec.type for spec in specs}
        if m.from_text and not types & {"number", "integer"}:
            problems.append((where, "from_text applies to numeric fields"))
        if m.default is not None:
            if types and "string" not in types:
                problems.append((where, "default applies to string fields"))
            for spec in specs:
                if spec.choices is not None and m.default not in spec.choices:
                    problems.append((where, f"default {m.default!r} is not one of "
                                            f"{list(spec.choices)}"))
                    break
    return problems


def filters_overlap(a: list[str], b: list[str]) -> bool:
    """Whether some topic matches both filters (split into levels)."""
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#" or y == "#":
            return True  # `a/#` also matches `a`
        if x is None or y is None:
            return False
        if x != "+" and y != "+" and x != y:
            return False
    return True


def filter_covers(a: list[str], b: list[str]) -> bool:
    """Whether every topic filter `b` matches, filter `a` matches too."""
    for i, x in enumerate(a):
        if x == "#":
            return True
        if i >= len(b):
            return False
        y = b[i]
        if y == "#" or (x != "+" and (y == "+" or x != y)):
            return False
    return len(a) == len(b)
