"""YAML configuration files (profiles, on-call and policy files, inventories)."""

from __future__ import annotations

from typing import Any

import yaml

# libyaml's parser, when PyYAML was built with it: the same documents, ten times faster.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)


def parse_yaml(text: str) -> Any:
    """The document as `yaml.safe_load` reads it.

    A document libyaml refuses is parsed again by the pure-Python parser, which raises the
    error people should see: it quotes the offending line.
    """
    if _FAST_LOADER is not None:
        try:
            return yaml.load(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)
