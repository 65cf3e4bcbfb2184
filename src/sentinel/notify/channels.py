"""Channels and actors as a person reads them.

A channel URL is configuration, not words, and may hold a secret (a bot key, a webhook
path, a password): wherever a delivery is shown to a person (the board's feed and
timeline, `incidents show`, the demo, `board --send`) it is named by its type only —
企业微信, 钉钉, 邮件, ntfy… — derived from the URL scheme. `sentinel.notify.sender
.channel_label` (scheme and public host) stays what logs and the audit trail store; this
module reads either form.

Who did something is shown by name: a contact id of the on-call file as the contact's
name, a wall-screen or command-line user with where they acted, sentinel itself in words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sentinel.i18n import Language, t

__all__ = ["actor_name", "channel_label", "channel_type"]

# URL scheme -> channel type (an i18n key `channel.<type>`). apprise's schemes, the
# secure variants (…s) alike.
_TYPES: dict[str, str] = {
    "wecombot": "wecom", "wecom": "wecom", "wxwork": "wecom", "wechat": "wecom",
    "dingtalk": "dingtalk",
    "feishu": "feishu", "lark": "feishu",
    "mailto": "email", "mailtos": "email", "ses": "email", "sendgrid": "email",
    "mailgun": "email", "smtp": "email", "smtps": "email",
    "ntfy": "ntfy", "ntfys": "ntfy",
    "bark": "bark", "barks": "bark",
    "sms": "sms", "twilio": "sms", "aliyun": "sms", "smseagle": "sms", "smseagles": "sms",
    "clicksend": "sms", "sinch": "sms", "vonage": "sms", "nexmo": "sms", "plivo": "sms",
    "bulksms": "sms", "msg91": "sms", "d7sms": "sms", "kavenegar": "sms",
    "json": "webhook", "jsons": "webhook", "form": "webhook", "forms": "webhook",
    "xml": "webhook", "xmls": "webhook", "http": "webhook", "https": "webhook",
    "tgram": "telegram", "telegram": "telegram",
    "pushplus": "pushplus", "schan": "serverchan", "wxpusher": "wxpusher",
    "pushdeer": "pushdeer", "pushdeers": "pushdeer",
    "gotify": "gotify", "gotifys": "gotify",
    "matrix": "matrix", "matrixs": "matrix",
    "mqtt": "mqtt", "mqtts": "mqtt",
}
_CODES = frozenset(_TYPES.values()) | {"other", "unknown"}
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)(?::|$)")


def channel_type(url: object) -> str:
    """The type of a channel URL, stored label or type (`wecom`, `email`, `webhook`…);
    `other` for a scheme not listed, `unknown` without one."""
    if isinstance(url, str) and url in _CODES:
        return url  # already a type (as the control API passes it on)
    found = _SCHEME.match(url) if isinstance(url, str) else None
    if found is None:
        return "unknown"
    return _TYPES.get(found.group(1).lower(), "other")


def channel_label(url: object, lang: Language) -> str:
    """A channel as a person reads it: its type, never its address (which may hold a
    secret). Accepts a channel URL or a label of `notify.sender.channel_label`."""
    return t(f"channel.{channel_type(url)}", lang)


# Street-office people who acted on this box (person id -> name), from the district's
# commands (sentinel.uplink keeps them in the state database and fills this at start).
_DISTRICT_NAMES: dict[str, str] = {}
_DISTRICT_NAMES_MAX = 10_000


def name_district_person(person_id: str, name: str) -> None:
    """Remember how a district person is named (actor `district:<person id>`)."""
    if name and (person_id in _DISTRICT_NAMES or len(_DISTRICT_NAMES) < _DISTRICT_NAMES_MAX):
        _DISTRICT_NAMES[person_id] = name


def actor_name(actor: str | None, people: Mapping[str, str], lang: Language) -> str:
    """Who acted, for a person: a contact's name (`people`: contact id -> name), a
    wall-screen or command-line user with where they acted, sentinel in words; never a
    bare `board:`/`cli:`/`link:` id."""
    if not actor:
        return t("actor.unknown", lang)
    if actor in people:
        return people[actor]
    if actor == "sentinel":
        return t("actor.sentinel", lang)
    if actor == "device":
        return t("actor.device", lang)
    where, sep, who = actor.partition(":")
    if sep and where == "link":
        return people.get(who, who)
    if sep and where == "district":
        # A street-office person acting through the district: not a contact of this box;
        # named by the name the district sent with the act (district_names).
        return t("actor.district", lang, name=_DISTRICT_NAMES.get(who) or who)
    if sep and where in ("board", "cli"):
        if who in people:
            return t(f"actor.{where}", lang, name=people[who])
        # The shared wall screen logged in without a name of its own.
        if where == "board" and who in ("", "operator"):
            return t("actor.board_shared", lang)
        return t(f"actor.{where}", lang, name=who)
    return actor
