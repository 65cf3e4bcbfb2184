"""The documentation stays navigable and complete: relative links and anchors resolve, and
the configuration reference lists every setting of the model.

Pure file reading (no servers, well under a second): the README was split into guides under
docs/, and a moved section must not leave a link pointing at nothing."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from pydantic import BaseModel

from sentinel.config.model import Settings

ROOT = Path(__file__).resolve().parent.parent
# Every Markdown file a reader reaches from the README (test data and vendored text aside).
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
               *(ROOT / "devices").rglob("README.md"), ROOT / "bench" / "README.md",
               ROOT / "config" / "mosquitto" / "README.md"])
ADMIN = ROOT / "docs" / "admin.md"

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(([^()\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text with code blocks, inline code and HTML comments removed: links there are
    examples, not navigation."""
    return _CODE.sub("", _COMMENT.sub("", _FENCE.sub("", text)))


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped (word characters of any
    script kept), spaces to hyphens, repeats numbered -1, -2..."""
    seen: Counter[str] = Counter()
    anchors = set()
    text = _COMMENT.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))
    for heading in _HEADING.findall(text):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return anchors


def _links(path: Path) -> list[str]:
    return [target for target in _LINK.findall(_prose(path.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, mailto:...


def test_docs_exist() -> None:
    """The README and the three guides are there, so the link check cannot pass vacuously."""
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "docs/operator.md", "docs/admin.md", "docs/developer.md"} <= names
    assert sum(len(_links(p)) for p in DOCS) > 50


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    """Every relative link names an existing file, and its #anchor a heading in it."""
    broken = []
    for target in _links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists() or (ROOT not in dest.parents and dest != ROOT):
            broken.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in _anchors(dest)):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


def _settings(model: BaseModel, section: str = "") -> list[tuple[str, str]]:
    """(section, key) of every leaf setting; a table nested one level below a section is
    written `sub.key` in its parent's table when the reference has no table for it."""
    found = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found += _settings(value, f"{section}.{name}".lstrip("."))
        else:
            found.append((section, name))
    return found


def _reference() -> set[tuple[str, str]]:
    text = ADMIN.read_text(encoding="utf-8")
    text = text[text.index("### Reference"):]
    text = text[:text.index("\n## ")]
    section, listed = "", set()
    for line in text.splitlines():
        if head := re.match(r"^`\[([\w.]+)\]`", line):
            section = head.group(1)
        elif line.startswith("Top level"):
            section = ""
        elif row := re.match(r"^\| ((?:`[\w.]+`(?:, | / )?)+) \|", line):
            for key in re.findall(r"`([\w.]+)`", row.group(1)):
                listed.add((section, key))
    return listed


def test_configuration_reference_is_complete() -> None:
    """Every setting of the model has a row in the administrator's configuration reference
    (a new setting needs its line there), and no row names a setting that does not exist."""
    listed = _reference()
    model = set(_settings(Settings()))

    def documented(section: str, key: str) -> bool:
        parent, _, sub = section.rpartition(".")
        return (section, key) in listed or (bool(sub) and (parent, f"{sub}.{key}") in listed)

    missing = sorted(f"[{s}] {k}" if s else k for s, k in model if not documented(s, k))
    assert not missing, f"settings missing from docs/admin.md's reference: {missing}"
    known = model | {(s.rpartition(".")[0], f"{s.rpartition('.')[2]}.{k}") for s, k in model}
    extra = sorted(f"[{s}] {k}" for s, k in listed if (s, k) not in known)
    assert not extra, f"docs/admin.md's reference lists settings that do not exist: {extra}"
