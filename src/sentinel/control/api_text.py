"""The control API's error texts in the caller's language.

Handlers and the stages behind them word a refusal once, in English (tools and logs read
those). A caller that says which language it reads (`Accept-Language`: the `sentinel`
command sends its --lang) gets the message in that language: every refusal passes through
`localize`, which knows the messages' shapes (below) and words each part through
`sentinel.i18n`. A message of an unknown shape stays as it was; a Chinese reader then sees
English, which a test of the known messages keeps rare.
"""

from __future__ import annotations

import re

from sentinel.i18n import Language, t

__all__ = ["localize", "request_language"]

# (message shape, i18n key); the groups are the key's values. Anchored at both ends.
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), key) for pattern, key in (
        (r"no open incident (?P<id>\S+)", "api.no_open_incident"),
        (r"no incident (?P<id>\S+)", "api.no_incident"),
        (r"no contact '(?P<person>.*)' in the on-call file.*", "api.no_contact"),
        (r"no device (?P<device>\S+) in the inventory", "api.no_device"),
        (r"no active (?P<type>silence|drill) #(?P<id>\d+)", "api.no_window"),
        (r"no photo (?P<photo>\S+) of incident (?P<id>\S+)", "api.no_photo"),
        (r"unknown (?P<what>compound|building|grid|device|community|kind|rule) "
         r"'(?P<name>.*?)'(?P<rest>.*)", "api.unknown_name"),
        (r"outcome is required to close an incident \(one of: .*\)", "api.outcome_required"),
        (r"outcome must be one of: .*", "api.outcome_required"),
        (r"a note needs text, a photo, or both", "api.note_empty"),
        (r"reason is required \(why this window\)", "api.reason_required"),
        (r"say what the window covers: .*", "api.window_scope"),
        (r"start and end are epoch seconds, end after start", "api.window_times"),
        (r"actor is required: .*", "api.actor_required"),
        (r"a view-only board login cannot act", "api.viewer"),
        (r"missing or wrong X-CSRF-Token.*", "api.csrf"),
        (r"a valid 'Authorization: Bearer <token>' header is required", "api.token"),
        (r"this incident has (?P<count>\d+) photos already", "api.photos_full"),
        (r"photo: .*|photo is .*", "api.photo_bad"),
        (r"(?:actor|note) (?:is longer than|contains control|must be).*", "api.text_bad"),
        (r"the body .*|a JSON object body is required|unknown field\(s\): .*",
         "api.body_bad"),
        (r"the request body is over (?P<bytes>\d+) bytes", "api.too_large"),
        (r"internal error; see the log", "api.internal"),
        (r"the board needs \[control\] http = true", "api.no_board"),
        (r"this daemon has no notification sender", "api.no_sender"),
        (r"muting life-safety incidents needs the kinds or rules it mutes",
         "api.life_safety_scope"),
        (r"life_safety applies to silences only", "api.life_safety_drill"),
    ))
def request_language(header: str | None) -> Language | None:
    """The language an `Accept-Language` header asks for, if it is one we speak."""
    for part in (header or "").split(","):
        code = part.split(";", 1)[0].strip().lower()
        if code.startswith("zh"):
            return "zh"
        if code.startswith("en"):
            return "en"
    return None


def localize(message: str, lang: Language | None) -> str:
    """`message` in `lang`: each "; "-separated part of a known shape reworded."""
    if lang is None or lang == "en":
        return message
    return "; ".join(_part(part, lang) for part in message.split("; "))


def _part(text: str, lang: Language) -> str:
    for shape, key in _SHAPES:
        found = shape.fullmatch(text.strip())
        if found is None:
            continue
        values = {k: v for k, v in found.groupdict().items() if v is not None}
        if key == "api.unknown_name":
            values["what"] = t(f"api.what.{values['what']}", lang)
            rest = values.pop("rest", "")
            inside = re.fullmatch(r" in compound '(?P<where>.*)'", rest)
            if inside:
                return t("api.unknown_name_in", lang, where=inside["where"], **values)
        return t(key, lang, **values)
    return text
