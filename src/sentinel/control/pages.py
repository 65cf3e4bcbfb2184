"""The pages behind one-tap acknowledgement links: a confirmation page, a result page, and
the refusals (forged, expired, used...), in the contact's language.

Pure rendering: no I/O. Every value is HTML-escaped; the style and script are fixed and
allowed by hash in the Content-Security-Policy, so nothing else can run on these pages.
"""

from __future__ import annotations

import base64
import hashlib
import html

from aiohttp import web

from sentinel import zone
from sentinel.i18n import Language, incident_title, t
from sentinel.incidents.model import Incident

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
}

_TEXT: dict[str, dict[Language, str]] = {
    "greeting": {"zh": "{name}, 请确认接警", "en": "{name}, please acknowledge"},
    "severity": {"zh": "级别", "en": "Severity"},
    "place": {"zh": "地点", "en": "Place"},
    "opened": {"zh": "发生时间", "en": "Opened"},
    "device": {"zh": "设备", "en": "Device"},
    "incident": {"zh": "事件编号", "en": "Incident"},
    "drill": {"zh": "演练", "en": "Drill"},
    "button": {"zh": "确认接警", "en": "Acknowledge"},
    "hint": {"zh": "确认表示你已接手处理此事件, 值班同事会看到。",
             "en": "Acknowledging tells the team that you are taking this on."},
    "done": {"zh": "已确认", "en": "Acknowledged"},
    "done_by": {"zh": "确认人: {name}", "en": "Acknowledged by {name}"},
    "already": {"zh": "此事件已被确认", "en": "Already acknowledged"},
    "already_by": {"zh": "确认人: {by}, 时间: {when}", "en": "by {by} at {when}"},
    "you_did": {"zh": "你已于 {when} 确认此事件。", "en": "You acknowledged it at {when}."},
}

_STYLE = (
    "body{margin:0;font-family:system-ui,-apple-system,'PingFang SC','Microsoft YaHei',"
    "sans-serif;background:#f4f4f5;color:#18181b}"
    "main{max-width:32rem;margin:0 auto;padding:1.25rem}"
    "h1{font-size:1.5rem;margin:.5rem 0 1rem}h2{font-size:1.1rem;font-weight:normal}"
    ".card{background:#fff;border-radius:.75rem;padding:1rem 1.25rem;margin:1rem 0}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.4rem 1rem;margin:0}"
    "dt{color:#52525b}dd{margin:0;font-weight:600}"
    ".sev-critical,.sev-emergency{color:#b91c1c}.badge{background:#fde68a;padding:0 .4rem;"
    "border-radius:.3rem}"
    "button{display:block;width:100%;min-height:4.5rem;font-size:1.5rem;font-weight:700;"
    "border:0;border-radius:.75rem;background:#dc2626;color:#fff;margin:1.5rem 0 .75rem}"
    "button:disabled{background:#a1a1aa}"
    ".ok{color:#15803d}.no{color:#b91c1c}p{line-height:1.5}"
)
# One tap, one POST: the button greys out so a double tap does not post twice.
_SCRIPT = ('document.querySelector("form").addEventListener("submit",function(){'
           'var b=this.querySelector("button");setTimeout(function(){b.disabled=true},0)});')


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
    """Page text `key`, formatted with HTML-escaped `values`."""
    return _e(_TEXT[key][lang]).format(**{k: _e(v) for k, v in values.items()})


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


def confirm_page(inc: Incident, name: str, lang: Language) -> web.Response:
    body = (f"<h2>{tx('greeting', lang, name=name)}</h2>{_incident_card(inc, lang)}"
            # No action attribute: the form posts back to this very URL, whatever prefix a
            # reverse proxy puts in front of it.
            f'<form method="post"><button type="submit">{tx("button", lang)}</button></form>'
            f"<p>{tx('hint', lang)}</p>")
    return page(incident_title(inc.name, lang), body, 200, _html_lang(lang), script=True)


def already_page(inc: Incident, lang: Language) -> web.Response:
    by = tx("already_by", lang, by=inc.acknowledged_by or "-", when=when(inc.acknowledged_at))
    body = (f'<h1 class="ok">{tx("already", lang)}</h1><p>{by}</p>'
            f"{_incident_card(inc, lang)}")
    return page(_TEXT["already"][lang], body, 200, _html_lang(lang))


def done_page(inc: Incident, name: str, lang: Language) -> web.Response:
    body = (f'<h1 class="ok">✓ {tx("done", lang)}</h1><p>{tx("done_by", lang, name=name)}</p>'
            f"{_incident_card(inc, lang)}")
    return page(_TEXT["done"][lang], body, 200, _html_lang(lang))
