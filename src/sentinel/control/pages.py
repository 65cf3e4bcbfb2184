"""The pages behind one-tap links, in the contact's language, and the refusals (forged,
expired, used...).

One page shows an incident as the link's contact should see it now: firing — "我去处理"
(take it on: acknowledge and be assigned) or only acknowledge; acknowledged by someone
else — who, and "我去处理" while nobody is assigned; assigned to this contact — a note
with an optional photo and closing it with an outcome; assigned to someone else — who
handles it. Notes so far are listed, newest last.

Pure rendering: no I/O. Every value is HTML-escaped; the style and script are fixed and
allowed by hash in the Content-Security-Policy, so nothing else can run on these pages.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sentinel import zone
from sentinel.i18n import Language, incident_title, t
from sentinel.incidents.model import Incident, Status
from sentinel.notify import channels

# Outcomes the assigned person chooses from when closing (sentinel records the others).
OUTCOMES = ("handled", "false_alarm", "referred")

# Page text lives here rather than in sentinel.i18n: it is markup-adjacent and only the
# pages use it. Refusals are shown in both languages (we may not know whose link it is).
_REFUSALS: dict[str, tuple[int, str, str, str, str]] = {
    # reason: status, zh title, zh advice, en title, en advice
    "malformed": (403, "链接无效", "请使用通知中的完整链接, 或联系值班室。",
                  "This link is not valid",
                  "Open the complete link from the notification, or call the duty office."),
    "forged": (403, "链接无效", "请使用通知中的完整链接, 或联系值班室。",
               "This link is not valid",
               "Open the complete link from the notification, or call the duty office."),
    "expired": (410, "链接已过期", "请用 sentinel 命令或联系值班室确认。",
                "This link has expired",
                "Acknowledge with the sentinel command, or call the duty office."),
    "used": (410, "链接已使用过", "每个链接只能使用一次。",
             "This link has already been used", "Each link works once."),
    "unknown_contact": (403, "链接无效", "此链接的接收人已不在值班名单中。",
                        "This link is not valid",
                        "The person it was sent to is no longer on the roster."),
    "closed": (410, "事件已关闭", "此事件已经关闭, 无需确认。",
               "This incident is closed", "Nothing left to acknowledge."),
    "not_assigned": (403, "此事件不由你处理", "只有被指派的处理人可以添加反馈或关闭事件。",
                     "This incident is not assigned to you",
                     "Only the person it is assigned to can add notes or close it."),
    "bad_form": (400, "提交的内容无效", "请返回上一页重新填写。",
                 "The form could not be used", "Go back and fill it in again."),
}

_STYLE = (
    "body{margin:0;font-family:system-ui,-apple-system,'PingFang SC','Microsoft YaHei',"
    "sans-serif;background:#f4f4f5;color:#18181b}"
    "main{max-width:32rem;margin:0 auto;padding:1.25rem}"
    "h1{font-size:1.5rem;margin:.5rem 0 1rem}h2{font-size:1.1rem;font-weight:normal}"
    "h3{font-size:1.05rem;margin:0 0 .5rem}"
    ".card{background:#fff;border-radius:.75rem;padding:1rem 1.25rem;margin:1rem 0}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.4rem 1rem;margin:0}"
    "dt{color:#52525b}dd{margin:0;font-weight:600}"
    ".sev-critical,.sev-emergency{color:#b91c1c}.badge{background:#fde68a;padding:0 .4rem;"
    "border-radius:.3rem}"
    "button{display:block;width:100%;min-height:4.5rem;font-size:1.5rem;font-weight:700;"
    "border:0;border-radius:.75rem;background:#dc2626;color:#fff;margin:1.5rem 0 .75rem}"
    "button.second{min-height:3rem;font-size:1.1rem;background:#52525b;margin-top:.5rem}"
    "button.go{background:#15803d}button:disabled{background:#a1a1aa}"
    "textarea{width:100%;box-sizing:border-box;min-height:5rem;font-size:1.05rem;"
    "padding:.5rem;border:1px solid #a1a1aa;border-radius:.5rem}"
    "input[type=file]{margin:.75rem 0;font-size:1rem}"
    "label.choice{display:block;font-size:1.15rem;padding:.45rem 0}"
    "ol.notes{padding-left:1.2rem;margin:0}ol.notes li{margin:.35rem 0}"
    ".muted{color:#52525b;font-size:.9rem}"
    ".ok{color:#15803d}.no{color:#b91c1c}p{line-height:1.5}"
)
# One tap, one POST: the submitted form's button greys out so a double tap does not post
# twice (the server also refuses a repeated form).
_SCRIPT = ('document.querySelectorAll("form").forEach(function(f){'
           'f.addEventListener("submit",function(){var b=f.querySelector("button");'
           'setTimeout(function(){b.disabled=true},0)})});')


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


_CSP = (f"default-src 'none'; style-src {_csp_hash(_STYLE)}; script-src {_csp_hash(_SCRIPT)}; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str, status: int, lang: str = "zh-CN",
          script: bool = False) -> web.Response:
    text = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main>{f'<script>{_SCRIPT}</script>' if script else ''}"
        "</body></html>"
    )
    response = web.Response(text=text, status=status, content_type="text/html",
                            charset="utf-8")
    response.headers.update({
        "Content-Security-Policy": _CSP,
        "Cache-Control": "no-store",
        # The link token is in the URL: never hand it to another site in a Referer.
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    })
    return response


def when(ts: float | None) -> str:
    return zone.stamp(ts)


def _place(inc: Incident) -> str:
    place = inc.place
    return place.get("location") or " ".join(
        v for v in (place.get("compound"), place.get("building")) if v) or "-"


def refusal(reason: str, extra: str = "") -> web.Response:
    status, zh_title, zh_advice, en_title, en_advice = _REFUSALS[reason]
    body = (f'<h1 class="no">{_e(zh_title)}</h1><p>{_e(zh_advice)}</p>'
            f'<h1 class="no" lang="en">{_e(en_title)}</h1><p lang="en">{_e(en_advice)}</p>'
            f"{extra}")
    return page(f"{zh_title} / {en_title}", body, status)


def tx(key: str, lang: Language, **values: object) -> str:
    """Link page text `link.<key>` (sentinel.i18n), formatted with HTML-escaped `values`."""
    return _e(t(f"link.{key}", lang, **{k: str(v) for k, v in values.items()}))


def actor_name(actor: str | None, people: Mapping[str, str], lang: Language) -> str:
    """Who acted, for a person: a contact's name, a wall-screen or command-line user."""
    if not actor:
        return "-"
    return channels.actor_name(actor, people, lang)


def _incident_card(inc: Incident, lang: Language) -> str:
    rows = [(tx("severity", lang), f'<span class="sev-{_e(inc.severity.label)}">'
                                    f'{_e(t("severity." + inc.severity.label, lang))}</span>'),
            (tx("place", lang), _e(_place(inc))),
            (tx("opened", lang), _e(when(inc.opened_at)))]
    if inc.device_id:
        rows.append((tx("device", lang), _e(inc.device_id)))
    rows.append((tx("incident", lang), _e(inc.id)))
    drill = f' <span class="badge">{tx("drill", lang)}</span>' if inc.drill else ""
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return (f'<div class="card"><h1>{_e(incident_title(inc.name, lang))}{drill}</h1>'
            f"<dl>{items}</dl></div>")


def _html_lang(lang: Language) -> str:
    return "zh-CN" if lang == "zh" else "en"


@dataclass(frozen=True, slots=True)
class LinkView:
    """What the link page of one contact shows about one incident now."""

    inc: Incident
    contact_id: str
    name: str
    lang: Language
    # Contact id -> name, for who acknowledged or handles it.
    people: Mapping[str, str] = field(default_factory=dict)
    # The incident's notes, oldest first: {"ts", "actor", "text", "photo"?}.
    notes: Sequence[Mapping[str, Any]] = ()
    # What the tap that led here did (a key of link.*: "taken", "acknowledged", "noted").
    done: str | None = None
    # The open group (confirmed fire) this alarm belongs to: acting here acts on it too.
    group: Incident | None = None


def _form(action: str, button: str, css: str = "", inner: str = "",
          multipart: bool = False) -> str:
    # No action attribute: the form posts back to this very URL, whatever prefix a
    # reverse proxy puts in front of it.
    enctype = ' enctype="multipart/form-data"' if multipart else ""
    klass = f' class="{css}"' if css else ""
    return (f'<form method="post"{enctype}><input type="hidden" name="action" '
            f'value="{action}">{inner}<button type="submit"{klass}>{button}</button></form>')


def _notes(view: LinkView) -> str:
    if not view.notes:
        return ""
    lang = view.lang
    items = "".join(
        f"<li><span class=\"muted\">{_e(zone.short(n.get('ts')))} "
        f"{_e(actor_name(n.get('actor'), view.people, lang))}</span><br>{_e(n.get('text') or '')}"
        f"{(' ' + tx('photo_attached', lang)) if n.get('photo') else ''}</li>"
        for n in view.notes)
    return f'<div class="card"><h3>{tx("notes", lang)}</h3><ol class="notes">{items}</ol></div>'


def _handling_forms(view: LinkView) -> str:
    lang = view.lang
    once = secrets.token_urlsafe(9)
    note = _form("note", tx("note_button", lang), "go", multipart=True, inner=(
        f'<input type="hidden" name="once" value="{once}">'
        f'<h3>{tx("note_title", lang)}</h3>'
        f'<textarea name="text" maxlength="2000" placeholder="{tx("note_hint", lang)}">'
        "</textarea>"
        f'<label class="muted">{tx("photo", lang)}<br><input type="file" name="photo"'
        ' accept="image/*" capture="environment"></label>'))
    choices = "".join(
        f'<label class="choice"><input type="radio" name="outcome" value="{o}"'
        f'{" checked" if o == "handled" else ""}> {_e(t("outcome." + o, lang))}</label>'
        for o in OUTCOMES)
    resolve = _form("resolve", tx("resolve_button", lang), "second", inner=(
        f'<h3>{tx("resolve_title", lang)}</h3>{choices}'
        f'<textarea name="note" maxlength="2000" placeholder="{tx("resolve_hint", lang)}">'
        "</textarea>"))
    return f'<div class="card">{note}</div><div class="card">{resolve}</div>'


def _group_card(view: LinkView) -> str:
    """The fire an alarm belongs to, and what was done to it (finding: a link sent before
    the alarms were grouped acted on the alarm alone, and never named the fire)."""
    group, lang = view.group, view.lang
    if group is None:
        return ""
    title = incident_title(group.name, lang)
    head = tx("in_group", lang, title=title, id=group.id, place=_place(group))
    if group.assigned_to is not None:
        state = tx("group_assigned", lang, by=actor_name(group.assigned_to, view.people, lang),
                   when=when(group.assigned_at))
    elif group.status == Status.ACKNOWLEDGED:
        state = tx("group_acknowledged", lang,
                   by=actor_name(group.acknowledged_by, view.people, lang),
                   when=when(group.acknowledged_at))
    else:
        state = tx("group_firing", lang)
    css = f"sev-{_e(group.severity.label)}"
    return (f'<div class="card"><h3 class="{css}">{_e(title)} #{_e(group.id)}</h3>'
            f"<p>{head}</p><p><strong>{state}</strong></p></div>")


def link_page(view: LinkView, status: int = 200) -> web.Response:
    """The link page for the incident's state now (see the module docstring)."""
    inc, lang = view.inc, view.lang
    parts: list[str] = []
    if view.done is not None:
        parts.append(f'<h1 class="ok">✓ {tx(view.done, lang)}</h1>')
    parts.append(_group_card(view))
    title = incident_title(inc.name, lang)
    if not inc.open:
        by = actor_name(inc.resolved_by, view.people, lang)
        parts.append(f'<h1 class="ok">{tx("closed", lang)}</h1>'
                     f'<p>{tx("closed_by", lang, by=by, when=when(inc.resolved_at))}</p>'
                     f"{_incident_card(inc, lang)}{_notes(view)}")
        return page(title, "".join(parts), status, _html_lang(lang))
    take = _form("take", tx("take_button", lang))
    if inc.assigned_to == view.contact_id:
        parts.append(f"<h2>{tx('yours', lang, name=view.name)}</h2>{_incident_card(inc, lang)}"
                     f"{_notes(view)}{_handling_forms(view)}")
    elif inc.assigned_to is not None:
        who = actor_name(inc.assigned_to, view.people, lang)
        parts.append(f"<h2>{tx('handled_by', lang, by=who, when=when(inc.assigned_at))}</h2>"
                     f"{_incident_card(inc, lang)}{_notes(view)}")
    elif inc.status == Status.ACKNOWLEDGED:
        by = actor_name(inc.acknowledged_by, view.people, lang)
        if view.done is None:
            parts.append(f'<h1 class="ok">{tx("already", lang)}</h1>')
        parts.append(f"<p>{tx('already_by', lang, by=by, when=when(inc.acknowledged_at))}</p>"
                     f"{_incident_card(inc, lang)}{take}<p>{tx('take_hint', lang)}</p>"
                     f"{_notes(view)}")
    else:
        parts.append(f"<h2>{tx('greeting', lang, name=view.name)}</h2>"
                     f"{_incident_card(inc, lang)}{take}<p>{tx('take_hint', lang)}</p>"
                     + _form("ack", tx("button", lang), "second")
                     + f"<p>{tx('hint', lang)}</p>")
    return page(title, "".join(parts), status, _html_lang(lang), script=True)
