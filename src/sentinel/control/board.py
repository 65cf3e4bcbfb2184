"""The web board (一屏可视): the community at a glance, served by the daemon.

The board is one HTML page, a script and a style sheet (`board_assets/`, no build step, no
external fonts or CDN: the edge box is offline). The page's script reads the JSON API
(`/api/status`, `/api/incidents`, `/api/events`) and follows `/api/stream` (server-sent
events); its buttons post to `/api/incidents/{id}/ack|resolve`.

Who may look and act: a person with a board session (sentinel.control.sessions: logins,
login links, roles, throttling). The API's middleware asks `BoardSessions` whether a request
carries a valid session (`session_actor`) and, for a POST, whether it also carries the
session's CSRF token in `X-CSRF-Token` from the same origin (`csrf_ok`).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Literal

import structlog
from aiohttp import web

from sentinel import i18n, zone
from sentinel.control.sessions import CSRF_FIELD, MAX_NAME, BoardSessions, add_login_routes
from sentinel.control.siteplan import SitePlan
from sentinel.i18n import Language

_log = structlog.get_logger("sentinel.control.board")

# A tile's colour: no open incident, offline devices only, or the worst severity open there.
WORST = ("ok", "offline", "maintenance", "info", "warning", "critical", "emergency")
ASSETS = {"board.js": "text/javascript", "board.css": "text/css", "icon.svg": "image/svg+xml",
          "alarm.wav": "audio/wav"}
# Who may act from a board session: an operator acts, a viewer only looks.
Role = Literal["operator", "viewer"]
# The times a person can mute the alarm sound for, in minutes (the first is the button).
MUTE_MINUTES = (5, 15)


# -- text -------------------------------------------------------------------------------

# Board text lives here, beside its markup, like the link pages' text; names of kinds,
# severities, incidents, outcomes and events come from sentinel.i18n (one source of text).
UI: dict[str, dict[Language, str]] = {
    "title": {"zh": "一屏可视", "en": "Community board"},
    "lang_switch": {"zh": "English", "en": "中文"},
    "logout": {"zh": "退出", "en": "Log out"},
    "signed_in": {"zh": "当前用户: {name}", "en": "Signed in as {name}"},
    "conn.live": {"zh": "实时", "en": "live"},
    "conn.connecting": {"zh": "连接中…", "en": "connecting…"},
    "conn.reconnecting": {"zh": "重新连接中…", "en": "reconnecting…"},
    "conn.offline": {"zh": "与守护进程断开", "en": "daemon unreachable"},
    "broker.up": {"zh": "MQTT 已连接", "en": "MQTT connected"},
    "broker.down": {"zh": "MQTT 未连接", "en": "MQTT disconnected"},
    "outbox": {"zh": "待发通知 {n}", "en": "outbox {n}"},
    "spool": {"zh": "缓存 {n}", "en": "spool {n}"},
    "updated": {"zh": "更新于 {time}", "en": "updated {time}"},
    "section.map": {"zh": "小区与楼栋", "en": "Compounds and buildings"},
    "section.devices": {"zh": "设备在线情况", "en": "Devices online"},
    "section.incidents": {"zh": "未关闭事件", "en": "Open incidents"},
    "section.feed": {"zh": "通知与确认", "en": "Notifications and acknowledgements"},
    "section.battery": {"zh": "低电量设备", "en": "Low battery"},
    "col.kind": {"zh": "类型", "en": "Kind"},
    "col.online": {"zh": "在线", "en": "Online"},
    "col.offline": {"zh": "离线", "en": "Offline"},
    "col.unseen": {"zh": "未上报", "en": "Not seen"},
    "col.total": {"zh": "总数", "en": "Total"},
    "all_kinds": {"zh": "合计", "en": "All"},
    "building.count": {"zh": "{online}/{total} 在线", "en": "{online}/{total} online"},
    "building.offline": {"zh": "{n} 离线", "en": "{n} offline"},
    "building.unseen": {"zh": "{n} 未上报", "en": "{n} not seen yet"},
    "worst.ok": {"zh": "正常", "en": "normal"},
    "worst.offline": {"zh": "有离线", "en": "offline"},
    "worst.maintenance": {"zh": "维护", "en": "maintenance"},
    "worst.info": {"zh": "提示", "en": "info"},
    "worst.warning": {"zh": "警告", "en": "warning"},
    "worst.critical": {"zh": "严重", "en": "critical"},
    "worst.emergency": {"zh": "紧急", "en": "emergency"},
    "legend": {"zh": "图例", "en": "Legend"},
    "filter.clear": {"zh": "显示全部", "en": "show all"},
    "filter.on": {"zh": "只看 {place}", "en": "only {place}"},
    "no_incidents": {"zh": "没有未关闭的事件", "en": "No open incidents"},
    "no_feed": {"zh": "暂无通知", "en": "Nothing yet"},
    "no_battery": {"zh": "无", "en": "None"},
    "status.firing": {"zh": "未确认", "en": "not acknowledged"},
    "status.acknowledged": {"zh": "已确认", "en": "acknowledged"},
    "status.resolved": {"zh": "已关闭", "en": "resolved"},
    "ack_by": {"zh": "{by} 于 {time} 确认", "en": "acknowledged by {by} at {time}"},
    "opened_at": {"zh": "发生于 {time}", "en": "opened {time}"},
    "device": {"zh": "设备 {id}", "en": "device {id}"},
    "members": {"zh": "{n} 个关联报警", "en": "{n} related alarms"},
    "drill": {"zh": "演练", "en": "drill"},
    "silenced": {"zh": "已屏蔽", "en": "silenced"},
    "silences.life_safety": {"zh": "维护屏蔽中 (含生命安全类事件, 报警仍通知值班人员): {list}",
                             "en": "Maintenance silence covering life-safety incidents (alarms "
                                   "still page the duty officer): {list}"},
    "silences.other": {"zh": "屏蔽中: {list}", "en": "Silenced: {list}"},
    "cleared": {"zh": "已恢复", "en": "condition cleared"},
    "btn.ack": {"zh": "确认", "en": "Acknowledge"},
    "btn.resolve": {"zh": "处理完毕", "en": "Resolve"},
    "outcome.label": {"zh": "处理结果", "en": "Outcome"},
    "action.failed": {"zh": "操作失败: {message}", "en": "Failed: {message}"},
    "action.session": {"zh": "登录已过期, 请重新登录", "en": "Session expired, log in again"},
    "feed.notified": {"zh": "已通知 {who} ({channel})", "en": "notified {who} ({channel})"},
    "feed.failed": {"zh": "通知 {who} 失败 ({channel})",
                    "en": "could not notify {who} ({channel})"},
    "feed.acknowledged": {"zh": "{who} 已确认", "en": "acknowledged by {who}"},
    "feed.resolved": {"zh": "{who} 已关闭: {outcome}", "en": "resolved by {who}: {outcome}"},
    "feed.paging": {"zh": "通知 {roles}", "en": "paging {roles}"},
    "feed.escalated": {"zh": "升级到第 {step} 级: 通知 {roles}",
                       "en": "escalated to step {step}: paging {roles}"},
    "feed.nobody": {"zh": "⚠ 无人值班", "en": "⚠ nobody on duty"},
    "feed.ack_expired": {"zh": "确认已超时, 重新升级", "en": "acknowledgement expired"},
    "battery": {"zh": "电量 {n}%", "en": "battery {n}%"},
    "battery_v": {"zh": "电压 {n} V", "en": "{n} V"},
    "login.title": {"zh": "登录一屏可视", "en": "Log in to the board"},
    "login.name": {"zh": "你的名字", "en": "Your name"},
    "login.token": {"zh": "控制令牌", "en": "Control token"},
    "login.hint": {"zh": "控制令牌见守护进程状态目录中的 control.token, "
                         "或用 sentinel board 命令取得一次性登录链接。",
                   "en": "The control token is in control.token in the daemon's state "
                         "directory; or get a one-time login link with `sentinel board`."},
    "login.submit": {"zh": "登录", "en": "Log in"},
    "login.failed": {"zh": "名字或控制令牌不正确", "en": "Wrong name or control token"},
    "login.throttled": {"zh": "失败次数过多, 请稍后再试", "en": "Too many attempts; try later"},
    "login.refused": {"zh": "请求被拒绝 (来源不符)", "en": "Refused (cross-site request)"},
    "login.link_invalid": {"zh": "登录链接无效、已过期或已使用过",
                           "en": "This login link is not valid, has expired or was used"},
    "noscript": {"zh": "一屏可视需要启用 JavaScript。", "en": "The board needs JavaScript."},
}

_SHARED_PREFIXES = ("severity.", "kind.", "incident.", "outcome.", "event.", "role.",
                    "latency.", "board.", "channel.")


def _catalog(lang: Language) -> dict[str, str]:
    """Every text the board's script shows, in `lang`."""
    return {**i18n.catalog(_SHARED_PREFIXES, lang), **{k: v[lang] for k, v in UI.items()}}


def _ui(key: str, lang: Language, **values: object) -> str:
    return UI[key][lang].format(**values)


def _text(key: str, lang: Language, **values: object) -> str:
    """A board text: its own table first, then the shared catalogue (the `board.` keys)."""
    return _ui(key, lang, **values) if key in UI else i18n.t(key, lang, **values)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _lang(request: web.Request) -> Language:
    return "en" if request.query.get("lang") == "en" else "zh"


def _lang_query(lang: Language) -> str:
    return "?lang=en" if lang == "en" else ""


def _html_lang(lang: Language) -> str:
    return "zh-CN" if lang == "zh" else "en"


def _json_script(data: object) -> str:
    """JSON safe inside a <script type="application/json"> element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# Only our own files: no inline script or style, so nothing injected could run.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "media-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _secure(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(_HEADERS)
    return response


def _document(lang: Language, title: str, head: str, body: str, status: int = 200,
              body_class: str = "") -> web.Response:
    text = (f'<!doctype html><html lang="{_html_lang(lang)}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="robots" content="noindex, nofollow">'
            '<link rel="icon" href="/board/static/icon.svg" type="image/svg+xml">'
            '<link rel="stylesheet" href="/board/static/board.css">'
            f"<title>{_e(title)}</title>{head}</head>"
            f'<body class="{_e(body_class)}">{body}</body></html>')
    response = web.Response(text=text, status=status, content_type="text/html",
                            charset="utf-8")
    _secure(response)
    return response


def render_board(lang: Language, csrf: str, actor: str, name: str,
                 role: Role = "operator") -> web.Response:
    """The board page; the script fills it in (texts from the embedded catalogue).

    A viewer's page has no action buttons (the API refuses a viewer's POSTs anyway)."""
    catalog = {"zh": _catalog("zh"), "en": _catalog("en")}
    head = (f'<meta name="csrf-token" content="{_e(csrf)}">'
            f'<meta name="board-actor" content="{_e(actor)}">'
            f'<meta name="board-role" content="{_e(role)}">'
            f'<meta name="board-lang" content="{lang}">'
            # The community's zone: the script formats every time in it, not the browser's.
            f'<meta name="board-zone" content="{_e(zone.current().key)}">'
            f'<script id="board-i18n" type="application/json">{_json_script(catalog)}'
            "</script>"
            '<script src="/board/static/board.js" defer></script>')

    def tx(key: str, **values: object) -> str:
        return f'<span data-i18n="{key}">{_e(_text(key, lang, **values))}</span>'

    worst = "".join(f'<li class="w-{w}"><i></i>{tx("worst." + w)}</li>'
                    for w in WORST)
    mutes = "".join(f'<button type="button" class="btn btn-mute" data-minutes="{m}">'
                    f'{_e(_text("board.alarm.mute", lang, m=m))}</button>'
                    for m in MUTE_MINUTES)
    viewer = f' <span class="pill">{tx("board.viewer")}</span>' if role == "viewer" else ""
    body = (
        '<header class="top">'
        f'<h1><span id="community"></span> {tx("title")}</h1>'
        '<div class="meta">'
        f'<span id="conn" class="conn conn-connecting" role="status">'
        f'<i></i><span id="conn-text">{_e(_ui("conn.connecting", lang))}</span></span>'
        '<span id="broker" class="pill"></span>'
        '<span id="queues" class="pill"></span>'
        '<span id="updated" class="muted"></span>'
        "</div>"
        '<div class="who">'
        f'<span class="muted" id="signed-in" data-name="{_e(name)}">'
        f"{_e(_ui('signed_in', lang, name=name))}</span>{viewer}"
        f'<a id="lang-switch" href="/board?lang={"zh" if lang == "en" else "en"}"'
        f' data-i18n="lang_switch">{_e(_ui("lang_switch", lang))}</a>'
        '<form method="post" action="/board/logout" class="logout">'
        f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(csrf)}">'
        f'<button type="submit" data-i18n="logout">{_e(_ui("logout", lang))}</button></form>'
        "</div></header>"
        f'<noscript><p class="banner">{_e(_ui("noscript", lang))}</p></noscript>'
        # The alarm: a banner while a critical or emergency incident is unacknowledged,
        # saying whether the sound plays or is muted (and until when).
        '<div id="alarm" class="alarm" role="alert" hidden>'
        '<span id="alarm-text"></span>'
        f'<span class="alarm-buttons">{mutes}'
        f'<button type="button" class="btn" id="alarm-unmute" hidden>'
        f'{tx("board.alarm.unmute")}</button>'
        f'<button type="button" class="btn" id="alarm-enable" hidden>'
        f'{tx("board.alarm.blocked")}</button></span></div>'
        '<audio id="alarm-sound" src="/board/static/alarm.wav" preload="auto" loop></audio>'
        '<p id="banner" class="banner" hidden></p>'
        '<p id="silences" class="banner silences" hidden></p>'
        '<div id="severity-counts" class="counts"></div>'
        # Three columns on a wall screen, each panel scrolling inside itself so that the
        # page never scrolls: what needs action | where and what happened | the fleet.
        # One column on a phone, in order of urgency.
        '<main class="grid"><div class="col col-act">'
        '<section class="panel incidents" aria-labelledby="h-incidents">'
        f'<h2 id="h-incidents">{tx("section.incidents")} <span id="incident-count"'
        ' class="count"></span> <span id="incident-folded" class="folded" hidden></span>'
        "</h2>"
        '<p id="filter" class="filter" hidden></p>'
        '<ol id="incidents" class="incident-list scroll"></ol></section>'
        '</div><div class="col col-mid">'
        '<section class="panel timeline" id="timeline-panel" aria-labelledby="h-timeline">'
        f'<h2 id="h-timeline">{tx("board.section.timeline")}'
        '<button type="button" class="link close" id="timeline-close" hidden>'
        f'{tx("board.timeline.close")}</button></h2>'
        f'<div id="timeline" class="scroll"><p class="muted">{tx("board.timeline.pick")}</p>'
        "</div></section>"
        '<section class="panel plan" aria-labelledby="h-plan">'
        f'<h2 id="h-plan">{tx("board.section.plan")}</h2>'
        '<div id="siteplan" class="siteplan-box"></div></section>'
        '</div><div class="col col-see">'
        '<section class="panel feed" aria-labelledby="h-feed">'
        f'<h2 id="h-feed">{tx("section.feed")}</h2>'
        '<ol id="feed" class="feed-list scroll"></ol></section>'
        '<section class="panel devices" aria-labelledby="h-devices">'
        '<div class="scroll">'
        f'<h2 id="h-devices">{tx("section.devices")}</h2>'
        '<table id="kinds"><thead><tr>'
        f'<th>{tx("col.kind")}</th><th>{tx("col.online")}</th>'
        f'<th>{tx("col.offline")}</th><th>{tx("col.unseen")}</th>'
        f'<th>{tx("col.total")}</th>'
        "</tr></thead><tbody></tbody></table>"
        f'<h3>{tx("section.battery")}</h3><ul id="battery" class="battery"></ul>'
        "</div></section>"
        '<section class="panel map" aria-labelledby="h-map">'
        f'<h2 id="h-map">{tx("section.map")}</h2>'
        f'<div class="scroll"><ul class="legend">{worst}</ul>'
        '<div id="compounds"></div></div></section>'
        "</div></main>"
    )
    return _document(lang, _ui("title", lang), head, body, body_class=f"board role-{role}")


def render_login(lang: Language, error: str | None = None, status: int = 200,
                 name: str = "") -> web.Response:
    """The login form: a name (recorded as the actor) and the control token."""
    message = f'<p class="error" role="alert">{_e(_ui(error, lang))}</p>' if error else ""
    other: Language = "en" if lang == "zh" else "zh"
    body = (
        '<main class="login">'
        f'<h1>{_e(_ui("login.title", lang))}</h1>{message}'
        f'<form method="post" action="/board/login{_lang_query(lang)}">'
        f'<label>{_e(_ui("login.name", lang))}'
        f'<input name="name" autocomplete="username" required maxlength="{MAX_NAME}"'
        f' value="{_e(name)}"></label>'
        f'<label>{_e(_ui("login.token", lang))}'
        '<input name="token" type="password" autocomplete="current-password" required>'
        "</label>"
        f'<button type="submit">{_e(_ui("login.submit", lang))}</button></form>'
        f'<p class="muted">{_e(_ui("login.hint", lang))}</p>'
        f'<p><a href="/board/login?lang={other}">{_e(_ui("lang_switch", lang))}</a></p>'
        "</main>"
    )
    return _document(lang, _ui("login.title", lang), "", body, status, "login-page")


def _redirect(location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    _secure(response)
    return response


def _asset(name: str) -> bytes:
    return resources.files("sentinel.control").joinpath("board_assets", name).read_bytes()


def add_board_routes(app: web.Application, sessions: BoardSessions, api_token: bytes,
                     siteplan: SitePlan | None = None) -> None:
    """The board's pages on `app`: /board, /board/login[/<token>], /board/logout, assets,
    and `/api/siteplan` (behind the API's own authorization, like every /api/ route)."""
    add_login_routes(app, sessions, api_token, render_login, _redirect)
    assets = {name: (_asset(name), ctype) for name, ctype in ASSETS.items()}

    async def board(request: web.Request) -> web.StreamResponse:
        lang = _lang(request)
        session = sessions.session(request)
        csrf = sessions.csrf_token(request)
        if session is None or csrf is None:
            return _redirect(f"/board/login{_lang_query(lang)}")
        return render_board(lang, csrf, session.actor, session.name, session.role)

    async def plan(request: web.Request) -> web.StreamResponse:
        lang = _lang(request)
        if siteplan is None:
            text = ('<svg xmlns="http://www.w3.org/2000/svg" class="siteplan empty" '
                    'viewBox="0 0 10 1" data-buildings="0"></svg>')
        else:
            text = await siteplan.svg(lang, zone.clock)
        response = web.Response(text=text, content_type="image/svg+xml", charset="utf-8")
        _secure(response)
        return response

    async def static(request: web.Request) -> web.StreamResponse:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, ctype = found
        response = web.Response(body=body, content_type=ctype,
                                charset="utf-8" if ctype.startswith("text/") else None)
        _secure(response)
        # Revalidated on every load: an upgraded daemon never runs an old script.
        response.headers["Cache-Control"] = "no-cache"
        return response

    app.router.add_get("/board", board)
    app.router.add_get("/board/", board)
    app.router.add_get("/board/static/{name}", static)
    app.router.add_get("/api/siteplan", plan)
