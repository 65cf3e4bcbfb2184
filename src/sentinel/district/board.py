"""The district board (街道一屏可视), acts on a community's incidents, and the link relay.

Mount on the district daemon's ControlServer through its `routes=` hook:

    sessions = BoardSessions(link_key, clock=clock, book=StateBook(state),
                             people=<the district on-call file's contacts>, sender=sender,
                             public_url=settings.control.public_url)
    await sessions.start()
    channel = CommandChannel(source.start_publish, prefix, keys, clock)  # .commands
    ControlServer(..., sessions=sessions,
                  routes=lambda app: add_district_routes(
                      app, mirror, channel, sessions, token.encode(),
                      own=operations, clock=clock))

    add_district_routes(app, view, commands, sessions, api_token, *, own=None, clock=None,
                        relay_wait=RELAY_WAIT, act_wait=ACT_WAIT) -> None

`view` is the mirror (sentinel.district.view.DistrictView), `commands` the command channel
(view.CommandSender, sentinel.district.commands.CommandChannel), `sessions` the board's
logins (sentinel.control.sessions.BoardSessions: the same cookies, one-time login links and
personal links as the box's board; district staff are the contacts of the district's own
on-call file), `api_token` the district's control token (the login form's password).
`own` (optional) is the district's own incident book: anything with the Controller's
`list_open()` and `acknowledge(id, actor, note)` (sentinel.control.operations.Operations);
its open incidents (box offline, whistle) are listed on the board and acknowledged there.
Do not also mount sentinel.control.board.add_board_routes: these routes take /board.

Routes (pages only; every page is server-rendered, no script, no CDN, zh by default and
English with `?lang=en`, times in the configured zone):

  GET  /                                     leads to /board (the address people type)
  GET  /board                                every community on one screen (refreshes itself)
  GET  /board/c/{community}                  one community: its state and incidents
                                             (`?all=1`: closed ones too)
  GET  /board/c/{community}/i/{incident}     an incident and its timeline, ack and note forms
  POST /board/c/{community}/i/{incident}/ack   an `ack` command to the box; on success a
                                             redirect to the incident (?done=...), which
                                             says what the box answered; a refusal is
                                             shown at once, with its status
  POST /board/c/{community}/i/{incident}/note  a `note` command to the box (the same)
  POST /board/own/{incident}/ack             acknowledge one of the district's own incidents
  GET  /board/login, POST /board/login, GET /board/login/{token}, POST /board/logout
                                             (sentinel.control.sessions.add_login_routes)
  GET  /board/static/{name}                  board.css (the box's), district.css, icon.svg
  GET|POST /c/{community}/a/{token}          the link relay (below)

The relay: a one-tap link in a box's page points at `<district public_url>/c/<community>/
a/<token>`. The district holds no box's link key: it sends the request as an `http`
command (method, path `/a/<token>`, content type, body) and serves the box's answer as it
is (status, content type, Content-Security-Policy and the other page headers, body). A
community that is offline or stopped gets at once, and one whose box does not answer within
`relay_wait` (4.5 s: the page is there within 5 s) gets, a page in the person's language
saying the box cannot be reached and which duty phone to call. Bodies over
wire.MAX_HTTP_BODY (a photo) get a page saying to use the phone or the box's own address;
an unknown community gets a 404 page.

Acts from the board are commands signed for the community: `ack` {incident, actor, name}
and `note` {incident, actor, name, text}. The actor is `district:<contact id>` for a
personal login and `district:board:<name>` for the shared (control token) login; `name` is
the person's display name, which the box shows ("街道·王五"). Replies are read as
sentinel.district.wire.reply: ok, error (reason code), replayed, and optionally `incident`
(the box's Incident.to_json() after the act) to say who acknowledged first. Error codes
worded for the person: already_acknowledged / acknowledged (someone was first: not a
failure), unknown_incident / closed / not_open / not_found (nothing open to act on); `forged`
means the district's and the box's command keys differ (a configuration error: the
channel flags the community, `CommandChannel.key_mismatch`, and the board shows it); any
other code is shown as the box's refusal with the code.

People are named, never shown as bare ids: `district:<id>` as 街道·<name> (the name the
act carried, else `people`), the box's contacts by the names the box sent in the
incident's own events, else as 社区联系人 <id>. Relay pages are in one language, the
person's (?lang=en, else Accept-Language, else Chinese).

Personal login links for district staff come from the ControlServer's own
`POST /api/board/login-link` (BoardSessions.issue_link), as on a box.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import structlog
from aiohttp import web

from sentinel import i18n, zone
from sentinel.clock import Clock, SystemClock
from sentinel.control import api_text, pages
from sentinel.control.board import CSP, render_login
from sentinel.control.requests import MAX_NOTE
from sentinel.control.sessions import CSRF_FIELD, BoardSessions, Session, add_login_routes
from sentinel.district import wire
from sentinel.district.commands import ChannelBusy
from sentinel.district.view import CommandSender, CommunityState, DistrictView
from sentinel.i18n import Language
from sentinel.incidents.model import Incident
from sentinel.notify import channels
from sentinel.types import Severity

_log = structlog.get_logger("sentinel.district.board")

# How long a person waits for the box. A relayed link must show its "call the phone" page
# within 5 s (issue 18): the wait leaves room for the page itself and the network.
RELAY_WAIT = 4.5
ACT_WAIT = 5.0
# The overview redraws itself this often (a wall screen in the street office).
REFRESH = 10
# Headers of the box's answer that the relay passes on (the rest are hop-by-hop or the
# district's own business).
RELAYED_HEADERS = ("Content-Security-Policy", "Cache-Control", "Referrer-Policy",
                   "X-Content-Type-Options", "X-Frame-Options", "Content-Language")
_COMMUNITY_MAX = 128
# An act's form: a note of MAX_NOTE characters, percent-encoded (9 bytes a Chinese one).
_FORM_MAX = MAX_NOTE * 9 + 4096


class OwnIncidents(Protocol):
    """The district's own incident book (sentinel.control.http.Controller's part of it)."""

    async def list_open(self) -> list[Incident]: ...

    async def acknowledge(self, incident_id: str, actor: str, note: str | None
                          ) -> Incident: ...


# -- text -------------------------------------------------------------------------------

# The district board's own text, beside its markup (like sentinel.control.board's UI);
# severities, kinds, incident and event names come from sentinel.i18n.
UI: dict[str, dict[Language, str]] = {
    "title": {"zh": "街道一屏可视", "en": "District board"},
    "lang_switch": {"zh": "English", "en": "中文"},
    "logout": {"zh": "退出", "en": "Log out"},
    "signed_in": {"zh": "当前用户: {name}", "en": "Signed in as {name}"},
    "viewer": {"zh": "只读", "en": "view only"},
    "updated": {"zh": "更新于 {time}", "en": "updated {time}"},
    "summary": {"zh": "社区 {n} 个 · 离线 {offline} · 吹哨 {whistled} · 生命安全未确认 {ls}",
                "en": "{n} communities · {offline} offline · {whistled} whistled · "
                      "{ls} life-safety unacknowledged"},
    "reach.online": {"zh": "在线", "en": "online"},
    "reach.offline": {"zh": "离线", "en": "offline"},
    "reach.stopped": {"zh": "已停止", "en": "stopped"},
    "reach.unknown": {"zh": "未知", "en": "unknown"},
    "actor.district": {"zh": "街道·{name}", "en": "street office: {name}"},
    "whistled": {"zh": "已吹哨", "en": "whistled"},
    "last_heard": {"zh": "最后联系 {time}", "en": "last heard {time}"},
    "never_heard": {"zh": "尚未联系", "en": "not heard yet"},
    "since": {"zh": "自 {time}", "en": "since {time}"},
    "counts": {"zh": "未关闭 {open} · 未确认 {unack}",
               "en": "{open} open · {unack} unacknowledged"},
    "ls_unack": {"zh": "生命安全未确认 {n}", "en": "{n} life-safety unacknowledged"},
    "oldest": {"zh": "最早未确认: {title} · {place} · 已 {age}",
               "en": "oldest unacknowledged: {title} · {place} · {age} ago"},
    "missing": {"zh": "缺失事件 {n} 条 (补传中)", "en": "{n} events missing (being fetched)"},
    "phone": {"zh": "值班电话 {phone}", "en": "duty phone {phone}"},
    "no_communities": {"zh": "没有配置社区", "en": "No communities configured"},
    "own.title": {"zh": "街道自身事件", "en": "The street office's own incidents"},
    "own.box_offline": {"zh": "社区主机离线", "en": "community box offline"},
    "own.whistle": {"zh": "吹哨: 生命安全事件无人确认", "en": "whistle: life-safety "
                                                            "incident unacknowledged"},
    "back": {"zh": "返回全部社区", "en": "All communities"},
    "back_community": {"zh": "返回 {name}", "en": "Back to {name}"},
    "incidents.open": {"zh": "未关闭事件", "en": "Open incidents"},
    "incidents.all": {"zh": "全部事件 (含已关闭)", "en": "All incidents (with closed)"},
    "show_all": {"zh": "显示已关闭", "en": "show closed too"},
    "show_open": {"zh": "只看未关闭", "en": "open only"},
    "no_incidents": {"zh": "没有未关闭的事件", "en": "No open incidents"},
    "status.firing": {"zh": "未确认", "en": "not acknowledged"},
    "status.acknowledged": {"zh": "已确认", "en": "acknowledged"},
    "status.resolved": {"zh": "已关闭", "en": "resolved"},
    "life_safety": {"zh": "生命安全", "en": "life safety"},
    "ack_by": {"zh": "{by} 于 {time} 确认", "en": "acknowledged by {by} at {time}"},
    "opened_at": {"zh": "发生于 {time} (已 {age})", "en": "opened {time} ({age} ago)"},
    "timeline": {"zh": "时间线", "en": "Timeline"},
    "no_events": {"zh": "尚未收到事件记录", "en": "No events received yet"},
    "btn.ack": {"zh": "确认 (通知社区主机)", "en": "Acknowledge (sent to the community box)"},
    "btn.own_ack": {"zh": "确认", "en": "Acknowledge"},
    "btn.note": {"zh": "添加备注", "en": "Add note"},
    "note.label": {"zh": "备注 (发送到社区主机)", "en": "Note (sent to the community box)"},
    "act.acknowledged": {"zh": "社区主机已确认: 事件由你确认, 升级已停止。",
                         "en": "The community box acknowledged it: the incident is "
                               "acknowledged by you and its escalation stopped."},
    "act.already": {"zh": "此事件已由 {by} 确认, 无需再确认。",
                    "en": "Already acknowledged by {by}; nothing more to do."},
    "act.replayed": {"zh": "这次确认早已送达社区主机 (未重复记录)。",
                     "en": "This acknowledgement had already reached the community box "
                           "(recorded once)."},
    "act.noted": {"zh": "备注已记录到社区主机。", "en": "The community box recorded the note."},
    "act.closed": {"zh": "社区主机上没有这个未关闭的事件 (可能已关闭)。",
                   "en": "The community box has no open incident by this id (it may be "
                         "closed)."},
    "act.refused": {"zh": "社区主机拒绝了此操作 ({reason})。",
                    "en": "The community box refused this ({reason})."},
    "act.unreachable": {"zh": "无法连接社区主机。请拨打值班电话 {phone}。",
                        "en": "The community box cannot be reached. Call the duty phone "
                              "{phone}."},
    "act.no_answer": {"zh": "社区主机 {wait} 秒内没有回应。请拨打值班电话 {phone}; "
                            "主机若在 {until} 前收到, 仍会记录此操作。",
                      "en": "The community box did not answer within {wait} s. Call the duty "
                            "phone {phone}; if the box gets it before {until} it still "
                            "records it."},
    "act.busy": {"zh": "操作过多, 请稍后再试。", "en": "Too many requests; try again."},
    "act.empty": {"zh": "备注不能为空, 且不超过 {n} 字。",
                  "en": "A note is 1 to {n} characters."},
    "act.own_acknowledged": {"zh": "已确认。", "en": "Acknowledged."},
    "act.own_closed": {"zh": "此事件已关闭。", "en": "This incident is closed."},
    "no_phone": {"zh": "(未配置)", "en": "(not configured)"},
    "not_found": {"zh": "没有这个社区或事件", "en": "No such community or incident"},
    "viewer_refused": {"zh": "只读登录不能操作", "en": "A view-only login cannot act"},
    "csrf_refused": {"zh": "请求已过期, 请刷新页面后重试",
                     "en": "Stale form; reload and try again"},
    "age.s": {"zh": "{n} 秒", "en": "{n} s"},
    "age.m": {"zh": "{n} 分钟", "en": "{n} min"},
    "age.h": {"zh": "{h} 小时 {m} 分", "en": "{h} h {m} min"},
    "age.d": {"zh": "{n} 天", "en": "{n} d"},
    # The relay's pages (a phone on the street: the person's language only).
    "relay.unreachable.title": {"zh": "暂时无法连接社区主机",
                                "en": "The community box cannot be reached"},
    "relay.unreachable": {"zh": "{name}的社区主机现在无法连接, 此链接暂时不能使用。"
                                "请直接拨打值班电话:",
                          "en": "The community box of {name} cannot be reached right now, "
                                "so this link does not work. Call the duty phone:"},
    "relay.too_large.title": {"zh": "内容太大, 无法转发", "en": "Too large to pass on"},
    "relay.too_large": {"zh": "照片等大文件不能经街道转发。请在社区网络内打开链接, "
                              "或拨打值班电话:",
                        "en": "Photos and other large uploads cannot go through the street "
                              "office. Open the link on the community's network, or call "
                              "the duty phone:"},
    "relay.unknown.title": {"zh": "链接无效", "en": "This link is not valid"},
    "relay.unknown": {"zh": "没有这个社区。请使用通知中的完整链接。",
                      "en": "There is no such community. Open the complete link from the "
                            "notification."},
    "relay.refused.title": {"zh": "社区主机未能处理此链接",
                            "en": "The community box could not handle this link"},
    "relay.refused": {"zh": "请稍后重试, 或拨打值班电话:",
                      "en": "Try again in a moment, or call the duty phone:"},
    # The community box refused the district's command as forged: the keys differ, and retrying
    # cannot help until someone fixes the configuration.
    "relay.key.title": {"zh": "此链接现在无法经街道使用",
                        "en": "This link cannot be used through the street office now"},
    "relay.key": {"zh": "街道与{name}的社区主机之间的配置有误, 此链接暂时无法使用 "
                        "(已通知管理员)。请直接拨打值班电话:",
                  "en": "The street office's link to the community box of {name} is "
                        "misconfigured, so this link does not work now (the administrator "
                        "can see it). Call the duty phone:"},
    # The board's flag on a community whose box refuses the district's commands as forged.
    "key_mismatch": {"zh": "指令密钥不一致 — 请核对 district.toml 中该社区 [[community]] 的 "
                           "command_key_file 与社区主机 [district] command_key_file",
                     "en": "command key mismatch — check [[community]] command_key_file "
                           "against the box's [district] command_key_file"},
    "act.key": {"zh": "社区主机拒绝了街道的指令: 双方指令密钥不一致 (配置错误, 重试无效)。"
                      "请拨打值班电话 {phone}, 并通知管理员。",
                "en": "The community box refused the street office's command: the command "
                      "keys differ (a configuration error; retrying does not help). Call the "
                      "duty phone {phone} and tell the administrator."},
    # The timeline: who acted, and what a note is.
    "note.district": {"zh": "街道备注", "en": "street-office note"},
    "contact.unnamed": {"zh": "社区联系人 {id}", "en": "community contact {id}"},
    "notified": {"zh": "{who} ({channel})", "en": "{who} ({channel})"},
}


def _ui(key: str, lang: Language, **values: object) -> str:
    return UI[key][lang].format(**values)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _lang(request: web.Request) -> Language:
    return "en" if request.query.get("lang") == "en" else "zh"


def _q(lang: Language) -> str:
    return "?lang=en" if lang == "en" else ""


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


def _entry(prefix: str, name: str, lang: Language) -> str:
    """A catalogued name (severity.critical, kind.smoke...), else the code in words."""
    try:
        return i18n.t(f"{prefix}.{name}", lang)
    except KeyError:
        return name.replace("_", " ")


def _title(name: str, lang: Language) -> str:
    label = i18n.incident_label(name, lang)
    if label is not None:
        return label
    if f"own.{name}" in UI:
        return _ui(f"own.{name}", lang)
    return i18n.incident_title(name, lang)


def _place(place: object) -> str:
    if not isinstance(place, Mapping):
        return "-"
    location = place.get("location")
    if location:
        return str(location)
    parts = [str(place.get(k)) for k in ("community", "compound", "building", "floor", "unit")
             if place.get(k)]
    return " ".join(parts) or "-"


def _age(seconds: float, lang: Language) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return _ui("age.s", lang, n=seconds)
    if seconds < 3600:
        return _ui("age.m", lang, n=seconds // 60)
    if seconds < 86400:
        return _ui("age.h", lang, h=seconds // 3600, m=seconds % 3600 // 60)
    return _ui("age.d", lang, n=seconds // 86400)


def _who(actor: str, lang: Language, name: str | None = None,
         names: Mapping[str, str] | None = None) -> str:
    """Who acted, for a person, never a bare id passed off as a name: a district act as
    "街道·<name>" (the name the act carried, else the district on-call file's); a box
    person by the name the box sent (`names`: contact id -> name, gathered from the
    incident's own events), else as "社区联系人 <id>"; sentinel and the like in words."""
    names = names or {}
    if actor.startswith("district:"):
        who = actor.removeprefix("district:")
        return _ui("actor.district", lang, name=name or names.get(actor) or
                   names.get(who) or who.removeprefix("board:"))
    if name:
        return name
    if actor in names:
        return names[actor]
    where, sep, rest = actor.partition(":")
    if not sep and actor and actor not in ("sentinel", "device"):
        return _ui("contact.unnamed", lang, id=actor)
    if sep and where == "link":  # a one-tap link: the contact it was sent to
        return names.get(rest) or _ui("contact.unnamed", lang, id=rest)
    return channels.actor_name(actor, names, lang)


def _names(events: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Box contact id -> name from an incident's events (a notification names its
    recipient; an act made with a name carries it)."""
    out: dict[str, str] = {}
    for raw in events:
        e = _flat(raw)
        contact, contact_name = e.get("contact"), e.get("contact_name")
        if isinstance(contact, str) and isinstance(contact_name, str) and contact_name:
            out[contact] = contact_name
        actor, name = e.get("actor"), e.get("name")
        if isinstance(actor, str) and isinstance(name, str) and name and \
                e.get("type") in ("acknowledged", "resolved", "noted", "assigned"):
            out.setdefault(actor, name)
    return out


def _flat(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """An event as the box publishes it (sentinel.incidents.publish.event_payload: its data
    at the top level); an older nested `data` is read too."""
    nested = event.get("data")
    if isinstance(nested, Mapping):
        return {**nested, **{k: v for k, v in event.items() if k != "data"}}
    return event


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# -- ordering ---------------------------------------------------------------------------

def board_rank(state: CommunityState) -> int:
    """Where a community stands on the board: the ones that need the street office first.

    0 offline or whistled, 1 unacknowledged life-safety, 2 stopped or never heard,
    3 unacknowledged, 4 the rest. The view's own order is kept within a rank."""
    if state.reach == "offline" or state.whistled:
        return 0
    if state.life_safety_unacknowledged > 0:
        return 1
    if state.reach in ("stopped", "unknown"):
        return 2
    if state.unacknowledged > 0:
        return 3
    return 4


def incident_rank(inc: Mapping[str, Any]) -> tuple[int, int, int, float]:
    """A community's incidents in the order they need someone: unacknowledged before
    acknowledged before closed, life-safety first, then the most severe, newest first."""
    status = {"firing": 0, "acknowledged": 1}.get(str(inc.get("status")), 2)
    severity = Severity.__members__.get(str(inc.get("severity") or "").upper(), Severity.INFO)
    opened = _number(inc.get("opened_at")) or 0.0
    return status, 0 if inc.get("life_safety") else 1, -int(severity), -opened


def own_rank(inc: Incident) -> tuple[int, int, float]:
    """The district's own incidents by urgency: unacknowledged first, then the most severe,
    then the newest (as the box board orders within a severity)."""
    return (0 if inc.acknowledged_by is None else 1, -int(inc.severity), -inc.opened_at)


# -- pages ------------------------------------------------------------------------------

_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _document(lang: Language, title: str, body: str, status: int = 200, head: str = "",
              body_class: str = "") -> web.Response:
    text = (f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head>'
            '<meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="robots" content="noindex, nofollow">'
            '<link rel="icon" href="/board/static/icon.svg" type="image/svg+xml">'
            '<link rel="stylesheet" href="/board/static/board.css">'
            '<link rel="stylesheet" href="/board/static/district.css">'
            f"<title>{_e(title)}</title>{head}</head>"
            f'<body class="district {_e(body_class)}">{body}</body></html>')
    response = web.Response(text=text, status=status, content_type="text/html",
                            charset="utf-8")
    response.headers.update(_HEADERS)
    return response


def _redirect(location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    response.headers.update(_HEADERS)
    return response


def _header(lang: Language, session: Session, csrf: str, here: str, now: float,
            extra: str = "") -> str:
    """The top bar: title, when drawn, who is signed in, the language switch, log out."""
    viewer = f' <span class="pill">{_e(_ui("viewer", lang))}</span>' \
        if session.role == "viewer" else ""
    switch = f"{here}?lang=en" if lang == "zh" else here
    return ('<header class="top">'
            f'<h1>{_e(_ui("title", lang))}</h1>'
            f'<div class="meta">{extra}<span class="muted" id="updated">'
            f'{_e(_ui("updated", lang, time=zone.clock(now)))}</span></div>'
            '<div class="who">'
            f'<span class="muted">{_e(_ui("signed_in", lang, name=session.name))}</span>'
            f"{viewer}"
            f'<a id="lang-switch" href="{_e(switch)}">{_e(_ui("lang_switch", lang))}</a>'
            '<form method="post" action="/board/logout" class="logout">'
            f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(csrf)}">'
            f'<button type="submit">{_e(_ui("logout", lang))}</button></form>'
            "</div></header>")


def _reach(state: CommunityState, lang: Language) -> str:
    return (f'<span class="reach reach-{_e(state.reach)}">'
            f'{_e(_ui("reach." + state.reach, lang))}</span>')


def _phone(state: CommunityState, lang: Language) -> str:
    return state.phone or _ui("no_phone", lang)


def _tile(state: CommunityState, lang: Language, now: float, key_mismatch: bool = False
          ) -> str:
    """One community on the overview; `key_mismatch`: its box refuses the district's
    commands as forged (flagged until a command is accepted again)."""
    classes = ["tile", f"reach-{state.reach}", f"rank-{board_rank(state)}"]
    if key_mismatch:
        classes.append("key-mismatch")
    if state.whistled:
        classes.append("whistled")
    if state.life_safety_unacknowledged:
        classes.append("ls")
    badges = _reach(state, lang)
    if state.whistled:
        badges += f' <span class="badge whistle">{_e(_ui("whistled", lang))}</span>'
    heard = _ui("last_heard", lang, time=zone.short(state.last_heard)) \
        if state.last_heard is not None else _ui("never_heard", lang)
    if state.since is not None and state.reach != "online":
        heard += " · " + _ui("since", lang, time=zone.short(state.since))
    counts = _ui("counts", lang, open=state.open, unack=state.unacknowledged)
    rows = [f'<p class="muted">{_e(heard)}</p>', f'<p class="tile-counts">{_e(counts)}</p>']
    if state.life_safety_unacknowledged:
        text = _ui("ls_unack", lang, n=state.life_safety_unacknowledged)
        rows.append(f'<p class="bad">{_e(text)}</p>')
    oldest = state.oldest_unacknowledged
    if oldest:
        opened = _number(oldest.get("opened_at"))
        age = _age(now - opened, lang) if opened is not None else "-"
        text = _ui("oldest", lang, title=_title(str(oldest.get("name") or ""), lang),
                   place=_place(oldest.get("place")), age=age)
        rows.append(f'<p class="oldest">{_e(text)}</p>')
    if state.missing:
        rows.append(f'<p class="muted">{_e(_ui("missing", lang, n=state.missing))}</p>')
    if key_mismatch:
        rows.append(f'<p class="bad key-mismatch">{_e(_ui("key_mismatch", lang))}</p>')
    if state.reach != "online":
        text = _ui("phone", lang, phone=_phone(state, lang))
        rows.append(f'<p class="phone">{_e(text)}</p>')
    href = _path("board", "c", state.id) + _q(lang)
    return (f'<li class="{" ".join(classes)}" data-community="{_e(state.id)}">'
            f'<a class="tile-link" href="{_e(href)}"><h2>{_e(state.name or state.id)} '
            f"{badges}</h2></a>{''.join(rows)}</li>")


def _own_panel(incidents: Sequence[Incident], names: Mapping[str, str], lang: Language,
               csrf: str, can_act: bool, now: float) -> str:
    items = []
    for inc in sorted(incidents, key=own_rank):
        # A box offline names its community; a whistle "<community>/<incident id>": it
        # links to that incident on the board.
        community, _, box_incident = inc.target.partition("/")
        target = _e(names.get(community, community))
        if box_incident:
            href = _path("board", "c", community, "i", box_incident) + _q(lang)
            target += f' · <a href="{_e(href)}">{_e(box_incident)}</a>'
        elif community in names:
            target = f'<a href="{_e(_path("board", "c", community) + _q(lang))}">{target}</a>'
        button = ""
        if can_act and inc.acknowledged_by is None:
            action = _path("board", "own", inc.id) + "/ack" + _q(lang)
            button = (f'<form method="post" action="{_e(action)}">'
                      f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(csrf)}">'
                      f'<button type="submit" class="btn">{_e(_ui("btn.own_ack", lang))}'
                      "</button></form>")
        status = _ui(f"status.{inc.status.value}", lang)
        opened = _ui("opened_at", lang, time=zone.short(inc.opened_at),
                     age=_age(now - inc.opened_at, lang))
        items.append(f'<li class="incident sev-{_e(inc.severity.label)} st-{_e(inc.status.value)}"'
                     f' data-incident="{_e(inc.id)}">'
                     f'<span><b>{_e(_title(inc.name, lang))}</b> · {target} · '
                     f'{_e(_entry("severity", inc.severity.label, lang))} · {_e(status)} · '
                     f"{_e(opened)}</span>{button}</li>")
    return ('<section class="panel own" aria-labelledby="h-own">'
            f'<h2 id="h-own">{_e(_ui("own.title", lang))} <span class="count">'
            f"{len(incidents)}</span></h2>"
            f'<ol class="incident-list">{"".join(items)}</ol></section>')


def _incident_item(community: str, inc: Mapping[str, Any], lang: Language, now: float,
                   names: Mapping[str, str] | None = None) -> str:
    severity = str(inc.get("severity") or "info")
    status = str(inc.get("status") or "firing")
    opened = _number(inc.get("opened_at"))
    facts = [_entry("severity", severity, lang),
             _ui(f"status.{status}", lang) if f"status.{status}" in UI else status]
    if inc.get("life_safety"):
        facts.append(_ui("life_safety", lang))
    if opened is not None:
        facts.append(_ui("opened_at", lang, time=zone.short(opened),
                         age=_age(now - opened, lang)))
    if inc.get("acknowledged_by"):
        facts.append(_ui("ack_by", lang, by=_who(str(inc["acknowledged_by"]), lang, None,
                                                 names),
                         time=zone.short(_number(inc.get("acknowledged_at")))))
    href = _path("board", "c", community, "i", str(inc.get("id") or "")) + _q(lang)
    return (f'<li class="incident sev-{_e(severity)} st-{_e(status)}"'
            f' data-incident="{_e(inc.get("id"))}">'
            f'<a href="{_e(href)}"><b class="inc-title">'
            f'{_e(_title(str(inc.get("name") or ""), lang))}</b></a>'
            f'<p class="inc-place">{_e(_place(inc.get("place")))}</p>'
            f'<p class="inc-facts">{" · ".join(_e(f) for f in facts)}</p></li>')


def _event_item(event: Mapping[str, Any], lang: Language,
                names: Mapping[str, str] | None = None) -> str:
    e = _flat(event)
    kind = str(e.get("type") or "")
    actor = str(e.get("actor") or "")
    name = e.get("name")
    who = _who(actor, lang, name if isinstance(name, str) else None, names)
    label = i18n.event_name(kind, lang)
    if kind == "noted" and actor.startswith("district:"):
        # 现场反馈 is feedback from the site; a street-office note is not.
        label = _ui("note.district", lang)
    detail = ""
    if kind in ("notification_sent", "notification_failed", "notification_unknown",
                "attempt"):
        contact = e.get("contact") or e.get("contact_id")
        recipient = e.get("contact_name") or (
            _who(str(contact), lang, None, names) if contact else None)
        if recipient:
            channel = e.get("channel_label") or e.get("channel")
            text = _ui("notified", lang, who=recipient,
                       channel=channels.channel_label(str(channel), lang)) if channel \
                else str(recipient)
            detail += f' <span class="note">{_e(text)}</span>'
        who = ""
    for key in ("text", "note"):
        if e.get(key) and isinstance(e.get(key), str):
            detail += f' <span class="note">{_e(e[key])}</span>'
    if e.get("outcome"):
        detail += f' <span class="note">{_e(_entry("outcome", str(e["outcome"]), lang))}</span>'
    roles = e.get("roles")
    if isinstance(roles, list) and roles:
        detail += " " + _e(", ".join(_entry("role", str(r), lang) for r in roles))
    if who and actor == "sentinel" and kind not in ("acknowledged", "resolved"):
        who = ""  # "已通知 系统" says nothing: the system does every automatic step
    ts = _number(e.get("ts"))
    by = f' <span class="muted">{_e(who)}</span>' if who else ""
    return (f'<li data-seq="{_e(e.get("seq"))}"><span class="muted">{_e(zone.short(ts))}'
            f"</span> <b>{_e(label)}</b>{by}{detail}</li>")


def _relay_page(keys: tuple[str, str], lang: Language, status: int, name: str = "",
                phone: str | None = None) -> web.Response:
    """A relay's own page on a phone, in the person's language only.
    `phone`: the community's duty phone, a tap to call ("": none configured)."""
    title_key, text_key = keys
    tel = ""
    if phone:
        tel = (f'<p><a class="tel" href="tel:{_e(phone.replace(" ", ""))}">'
               f"<b>{_e(phone)}</b></a></p>")
    elif phone is not None:
        tel = f"<p><b>{_e(_ui('no_phone', lang))}</b></p>"
    body = (f"<h1>{_e(_ui(title_key, lang))}</h1>"
            f"<p>{_e(_ui(text_key, lang, name=name))}</p>{tel}")
    return pages.page(_ui(title_key, lang), body, status, "zh-CN" if lang == "zh" else "en")


def _relay_lang(request: web.Request) -> Language:
    if request.query.get("lang") == "en":
        return "en"
    return api_text.request_language(request.headers.get("Accept-Language")) or "zh"


# -- the district board's style (no build step, no external fonts: like the box's) -------

DISTRICT_CSS = """/* The district board: one tile per community, on top of the box's board.css. */
body.district { display: flex; flex-direction: column; min-height: 100vh; }
@media (min-width: 900px) {
  body.overview { height: 100vh; overflow: hidden; }
  body.overview main { flex: 1; min-height: 0; overflow: auto; }
}
.district main { padding: .8rem 1rem; display: flex; flex-direction: column; gap: .8rem; }
.summary { margin: 0; font-weight: 600; }
.tiles { list-style: none; margin: 0; padding: 0; display: grid; gap: .6rem;
  grid-template-columns: repeat(auto-fill, minmax(17rem, 1fr)); }
.tile { background: var(--panel); border-radius: .6rem; padding: .5rem .7rem;
  border-left: .45rem solid var(--ok); font-size: .9rem; }
.tile h2 { font-size: 1.05rem; margin: 0 0 .2rem; }
.tile p { margin: .1rem 0; }
.tile-link { color: inherit; text-decoration: none; }
.tile.reach-offline { border-left-color: var(--offline); background: var(--offline-bg); }
.tile.reach-stopped, .tile.reach-unknown { border-left-color: var(--warning); }
.tile.ls { border-left-color: var(--critical); background: #fff5f5; }
.tile.whistled { border-left-color: var(--emergency); background: var(--critical-bg); }
.reach { border-radius: .3rem; padding: 0 .4rem; font-size: .8rem; font-weight: 700; }
.reach-online .reach, .reach.reach-online { background: var(--ok-bg); color: #14532d; }
.reach.reach-offline { background: var(--offline); color: #fff; }
.reach.reach-stopped, .reach.reach-unknown { background: var(--warning-bg); color: #78350f; }
.badge.whistle { background: var(--emergency); color: #fff; }
.phone { font-weight: 700; }
.own .incident { display: flex; flex-wrap: wrap; align-items: center; gap: .3rem .8rem;
  margin-bottom: .4rem; padding: .4rem .75rem; }
.own form { margin: 0 0 0 auto; }
.result { padding: .6rem .8rem; border-radius: .5rem; font-weight: 600; margin: 0; }
.result.ok { background: var(--ok-bg); color: #14532d; }
.result.no { background: var(--critical-bg); color: #7f1d1d; }
.timeline-list { list-style: none; margin: 0; padding: 0; }
.timeline-list li { padding: .25rem 0; border-bottom: 1px solid var(--line); }
.acts { max-width: 100%; }
.acts form { display: inline-block; margin: .3rem .6rem .3rem 0; vertical-align: top;
  max-width: 100%; box-sizing: border-box; }
.acts label { display: block; max-width: 100%; }
/* A phone (390 px): the note box is as wide as the page, never wider. */
.acts textarea { display: block; width: 28rem; max-width: 100%; min-height: 3.5rem;
  box-sizing: border-box; }
.key-mismatch { font-weight: 700; overflow-wrap: anywhere; }
.district main, .district .panel, .timeline-list li, .incident { min-width: 0;
  overflow-wrap: anywhere; }
.btn { cursor: pointer; border-radius: .4rem; border: 1px solid var(--line);
  padding: .3rem .8rem; background: var(--text); color: #fff; }
"""

_STATIC_CONTROL = {"board.css": "text/css", "icon.svg": "image/svg+xml"}


def _control_asset(name: str) -> bytes:
    return resources.files("sentinel.control").joinpath("board_assets", name).read_bytes()


# -- routes -----------------------------------------------------------------------------

def add_district_routes(app: web.Application, view: DistrictView, commands: CommandSender,
                        sessions: BoardSessions, api_token: bytes, *,
                        own: OwnIncidents | None = None, clock: Clock | None = None,
                        relay_wait: float = RELAY_WAIT, act_wait: float = ACT_WAIT,
                        people: Mapping[str, str] | None = None) -> None:
    """The district board, its acts and the link relay on `app` (see the module's text).

    `people`: district contact id -> name (the district on-call file's contacts), so a
    `district:<id>` act the box recorded without a name reads "街道·<name>"; by default
    the names of `sessions`' people."""
    add_login_routes(app, sessions, api_token, render_login, _redirect)
    if people is None:
        people = {pid: getattr(c, "name", "") or pid
                  for pid, c in getattr(sessions, "_people", {}).items()}
    district_names = {f"district:{pid}": name for pid, name in people.items()}

    def mismatch(community: str) -> bool:
        check = getattr(commands, "key_mismatch", None)
        return bool(check(community)) if callable(check) else False

    async def root(request: web.Request) -> web.StreamResponse:
        # The district's address as people type it (the rig and the docs print it).
        return _redirect(f"/board{_q(_lang(request))}")
    clock_: Clock = clock if clock is not None else SystemClock()
    assets: dict[str, tuple[bytes, str]] = {
        name: (_control_asset(name), ctype) for name, ctype in _STATIC_CONTROL.items()}
    assets["district.css"] = (DISTRICT_CSS.encode("utf-8"), "text/css")

    def who(request: web.Request) -> tuple[Session, str] | None:
        session, csrf = sessions.session(request), sessions.csrf_token(request)
        return None if session is None or csrf is None else (session, csrf)

    def login(lang: Language) -> web.Response:
        return _redirect(f"/board/login{_q(lang)}")

    def not_found(lang: Language) -> web.Response:
        return _document(lang, _ui("not_found", lang),
                         f'<main><p class="result no">{_e(_ui("not_found", lang))}</p>'
                         f'<p><a href="/board{_q(lang)}">{_e(_ui("back", lang))}</a></p></main>',
                         404)

    async def overview(request: web.Request) -> web.StreamResponse:
        lang = _lang(request)
        found = who(request)
        if found is None:
            return login(lang)
        session, csrf = found
        now = clock_.now()
        states = sorted(await view.communities(), key=board_rank)
        offline = sum(s.reach == "offline" for s in states)
        whistled = sum(s.whistled for s in states)
        ls = sum(s.life_safety_unacknowledged for s in states)
        summary = _ui("summary", lang, n=len(states), offline=offline, whistled=whistled, ls=ls)
        own_html = ""
        if own is not None:
            mine = [i for i in await own.list_open() if i.open]
            if mine:
                names = {s.id: s.name or s.id for s in states}
                own_html = _own_panel(mine, names, lang, csrf, session.role == "operator", now)
        tiles = "".join(_tile(s, lang, now, mismatch(s.id)) for s in states) or \
            f'<li class="empty">{_e(_ui("no_communities", lang))}</li>'
        body = (_header(lang, session, csrf, "/board", now)
                + f'<main><p class="summary" id="summary">{_e(summary)}</p>{own_html}'
                f'<ol class="tiles" id="tiles">{tiles}</ol></main>')
        # A wall screen: the page redraws itself (no script needed).
        head = f'<meta http-equiv="refresh" content="{REFRESH}">'
        return _document(lang, _ui("title", lang), body, head=head, body_class="overview")

    async def community_page(request: web.Request) -> web.StreamResponse:
        lang = _lang(request)
        found = who(request)
        if found is None:
            return login(lang)
        session, csrf = found
        community = request.match_info["community"]
        state = await view.community(community)
        if state is None:
            return not_found(lang)
        now = clock_.now()
        everything = request.query.get("all") == "1"
        incidents = sorted(await view.incidents(community, open_only=not everything),
                           key=incident_rank)
        items = "".join(_incident_item(community, i, lang, now, district_names)
                        for i in incidents) or \
            f'<li class="empty">{_e(_ui("no_incidents", lang))}</li>'
        here = _path("board", "c", community)
        toggle = (f'<a href="{_e(here + _q(lang))}">{_e(_ui("show_open", lang))}</a>'
                  if everything else
                  f'<a href="{_e(here + ("?all=1&lang=en" if lang == "en" else "?all=1"))}">'
                  f'{_e(_ui("show_all", lang))}</a>')
        heading = _ui("incidents.all" if everything else "incidents.open", lang)
        body = (_header(lang, session, csrf, here, now)
                + f'<main><p><a href="/board{_q(lang)}">{_e(_ui("back", lang))}</a></p>'
                f'<ol class="tiles">{_tile(state, lang, now, mismatch(community))}</ol>'
                f'<section class="panel"><h2>{_e(heading)} <span class="count">'
                f'{len(incidents)}</span> <small>{toggle}</small></h2>'
                f'<ol class="incident-list" id="incidents">{items}</ol></section></main>')
        # Redrawn like the overview; the incident page is not (a note may be half typed).
        return _document(lang, f"{state.name or state.id} · {_ui('title', lang)}", body,
                         head=f'<meta http-equiv="refresh" content="{REFRESH}">')

    async def incident_page(request: web.Request, result: tuple[bool, str] | None = None,
                            status: int = 200) -> web.Response:
        lang = _lang(request)
        found = who(request)
        if found is None:
            return login(lang)
        session, csrf = found
        community, incident_id = request.match_info["community"], request.match_info["incident"]
        state = await view.community(community)
        inc = await view.incident(community, incident_id) if state is not None else None
        if state is None or inc is None:
            return not_found(lang)
        now = clock_.now()
        events = await view.timeline(community, incident_id)
        here = _path("board", "c", community, "i", incident_id)
        banner = ""
        if result is not None:
            banner = (f'<p class="result {"ok" if result[0] else "no"}" role="status"'
                      f' id="result">{_e(result[1])}</p>')
        acts = ""
        if session.role == "operator" and inc.get("status") != "resolved":
            hidden = f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(csrf)}">'
            if inc.get("status") == "firing":
                acts += (f'<form method="post" action="{_e(here + "/ack" + _q(lang))}">{hidden}'
                         f'<button type="submit" class="btn" id="ack">'
                         f'{_e(_ui("btn.ack", lang))}</button></form>')
            acts += (f'<form method="post" action="{_e(here + "/note" + _q(lang))}">{hidden}'
                     f'<label>{_e(_ui("note.label", lang))}<br>'
                     f'<textarea name="text" maxlength="{MAX_NOTE}" required></textarea>'
                     f'</label><br><button type="submit" class="btn">'
                     f'{_e(_ui("btn.note", lang))}</button></form>')
        names = {**district_names, **_names(events)}
        timeline = "".join(_event_item(e, lang, names) for e in events) or \
            f'<li class="empty">{_e(_ui("no_events", lang))}</li>'
        back = _path("board", "c", community) + _q(lang)
        body = (_header(lang, session, csrf, here, now)
                + f'<main><p><a href="{_e(back)}">'
                f'{_e(_ui("back_community", lang, name=state.name or state.id))}</a></p>'
                f"{banner}"
                f'<ol class="incident-list">{_incident_item(community, inc, lang, now, names)}'
                '</ol>'
                f'<div class="acts">{acts}</div>'
                f'<section class="panel"><h2>{_e(_ui("timeline", lang))}</h2>'
                f'<ol class="timeline-list" id="timeline">{timeline}</ol></section></main>')
        return _document(lang, _title(str(inc.get("name") or ""), lang), body, status)

    async def incident_get(request: web.Request) -> web.StreamResponse:
        done = request.query.get("done")
        key = {"noted": "act.noted", "acked": "act.acknowledged",
               "replayed": "act.replayed"}.get(done or "")
        if key is not None:
            return await incident_page(request, (True, _ui(key, lang=_lang(request))))
        if done == "already":
            lang = _lang(request)
            by = request.query.get("by") or "-"
            events = await view.timeline(request.match_info["community"],
                                         request.match_info["incident"])
            names = {**district_names, **_names(events)}
            return await incident_page(request, (True, _ui(
                "act.already", lang, by=_who(by, lang, None, names))))
        return await incident_page(request)

    async def act_guard(request: web.Request
                        ) -> tuple[Session, dict[str, str]] | web.Response:
        """The acting session and its form, or the page that refuses the act."""
        lang = _lang(request)
        session = sessions.session(request)
        if session is None:
            return login(lang)
        try:
            # A note of MAX_NOTE Chinese characters is larger, form-encoded, than the
            # control server's default body limit.
            form = await request.clone(client_max_size=_FORM_MAX).post()
        except web.HTTPRequestEntityTooLarge:
            return await incident_page(request, (False, _ui("act.empty", lang, n=MAX_NOTE)),
                                       413)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not sessions.csrf_value_ok(request, fields.get(CSRF_FIELD)):
            _log.warning("district_board_csrf_refused", remote=request.remote)
            return await incident_page(request, (False, _ui("csrf_refused", lang)), 403)
        if session.role != "operator":
            return await incident_page(request, (False, _ui("viewer_refused", lang)), 403)
        return session, fields

    def actor_of(session: Session) -> str:
        return f"district:{session.person}" if session.person is not None \
            else f"district:{session.actor}"

    async def act(request: web.Request, type_: str) -> web.StreamResponse:
        lang = _lang(request)
        guarded = await act_guard(request)
        if isinstance(guarded, web.Response):
            return guarded
        session, form = guarded
        community, incident_id = request.match_info["community"], request.match_info["incident"]
        state = await view.community(community)
        if state is None or await view.incident(community, incident_id) is None:
            return not_found(lang)
        actor = actor_of(session)
        fields: dict[str, Any] = {"incident": incident_id, "actor": actor, "name": session.name}
        if type_ == "note":
            text = (form.get("text") or "").strip()
            if not text or len(text) > MAX_NOTE:
                return await incident_page(request, (False, _ui("act.empty", lang, n=MAX_NOTE)),
                                           400)
            fields["text"] = text
        phone = _phone(state, lang)
        if state.reach in ("offline", "stopped"):
            # Its box is known to be down: say so at once, and send nothing that could act
            # minutes later, after the person was told to phone.
            _log.info("district_act_unreachable", community=community, type=type_,
                      reach=state.reach)
            return await incident_page(request, (False, _ui("act.unreachable", lang,
                                                            phone=phone)), 503)
        try:
            reply = await commands.send(community, "ack" if type_ == "ack" else "note",
                                        fields, wire.ACT_TTL, act_wait)
        except KeyError:
            # In the mirror but without a command key: district.toml does not list it.
            _log.warning("district_act_no_key", community=community)
            return not_found(lang)
        except ChannelBusy:  # bounded: the person tries again in a moment
            return await incident_page(request, (False, _ui("act.busy", lang)), 503)
        _log.info("district_act", community=community, type=type_, incident_id=incident_id,
                  actor=actor, ok=None if reply is None else reply.get("ok"),
                  error=None if reply is None else reply.get("error"))
        if reply is None:
            until = zone.clock(clock_.now() + wire.ACT_TTL - act_wait)
            return await incident_page(request, (False, _ui(
                "act.no_answer", lang, wait=round(act_wait), phone=phone, until=until)), 504)
        if reply.get("error") == "forged":
            # The box cannot verify the district's signature: the keys differ. Retrying
            # never helps; the channel logged it once and the board flags the community.
            return await incident_page(request, (False, _ui("act.key", lang, phone=phone)),
                                       502)
        done = _done(reply, type_, actor)
        if done is not None:
            # Post, then redirect: a reload of the answer must not send the act again.
            here = _path("board", "c", community, "i", incident_id)
            query = {"done": done[0], **({"by": done[1]} if done[1] else {}),
                     **({"lang": "en"} if lang == "en" else {})}
            return _redirect(here + "?" + urlencode(query))
        return await incident_page(request, _reply_text(reply, type_, actor, lang))

    async def ack(request: web.Request) -> web.StreamResponse:
        return await act(request, "ack")

    async def note(request: web.Request) -> web.StreamResponse:
        return await act(request, "note")

    async def own_ack(request: web.Request) -> web.StreamResponse:
        lang = _lang(request)
        form = await request.post()
        session = sessions.session(request)
        given = form.get(CSRF_FIELD)
        if session is None:
            return login(lang)
        if own is None or session.role != "operator" or \
                not sessions.csrf_value_ok(request, given if isinstance(given, str) else None):
            return _redirect(f"/board{_q(lang)}")
        incident_id = request.match_info["incident"]
        try:
            # The district's own incident: acted on here, by the session's actor, as the
            # box's board acts on the box's.
            await own.acknowledge(incident_id, session.actor, "district board")
            _log.info("incident_acknowledged", incident_id=incident_id, actor=session.actor,
                      via="district_board")
        except KeyError:
            _log.info("district_own_ack_closed", incident_id=incident_id)
        return _redirect(f"/board{_q(lang)}")

    async def relay(request: web.Request) -> web.StreamResponse:
        lang = _relay_lang(request)
        community = request.match_info["community"]
        state = await view.community(community) if len(community) <= _COMMUNITY_MAX else None
        if state is None:
            _log.info("relay_refused", reason="unknown_community", method=request.method)
            return _relay_page(("relay.unknown.title", "relay.unknown"), lang, 404)
        name, phone = state.name or state.id, state.phone
        if state.reach in ("offline", "stopped"):
            _log.info("relay_unreachable", community=community, reach=state.reach,
                      method=request.method)
            return _relay_page(("relay.unreachable.title", "relay.unreachable"), lang, 503,
                               name, phone)
        body: bytes | None = b""
        if request.method == "POST":
            body = await _read_limited(request, wire.MAX_HTTP_BODY)
            if body is None:
                _log.info("relay_refused", reason="too_large", community=community)
                return _relay_page(("relay.too_large.title", "relay.too_large"), lang, 413,
                                   name, phone)
        # A HEAD (a link preview) is asked as a GET: the box's link pages know GET and
        # POST, and aiohttp drops the body of the answer to a HEAD.
        method = "POST" if request.method == "POST" else "GET"
        fields = {"method": method, "path": f"/a/{request.match_info['token']}",
                  "content_type": request.headers.get("Content-Type", ""),
                  "body": _b64(body or b"")}
        started = time.monotonic()
        try:
            reply = await commands.send(community, "http", fields, wire.HTTP_TTL, relay_wait)
        except KeyError:
            return _relay_page(("relay.unknown.title", "relay.unknown"), lang, 404)
        except ChannelBusy:
            reply = None
        ms = round((time.monotonic() - started) * 1000)
        if reply is None:
            _log.info("relay_unanswered", community=community, method=request.method, ms=ms)
            return _relay_page(("relay.unreachable.title", "relay.unreachable"), lang, 504,
                               name, phone)
        status = reply.get("status")
        answer = reply.get("body")
        if not reply.get("ok") or not isinstance(status, int) or not 100 <= status <= 599 \
                or not isinstance(answer, bytes | type(None)):
            error = reply.get("error")
            if error == "forged":
                # Not a forged link: the box cannot verify the district's command, so the
                # two command keys differ (the channel logs it once, the board flags it).
                _log.info("relay_refused_by_box", community=community, error=error,
                          cause="command_key_mismatch")
                return _relay_page(("relay.key.title", "relay.key"), lang, 502, name, phone)
            _log.warning("relay_refused_by_box", community=community, error=error,
                         status=status)
            return _relay_page(("relay.refused.title", "relay.refused"), lang, 502, name,
                               phone)
        _log.info("relay_answered", community=community, method=request.method, status=status,
                  ms=ms)
        headers = {"Content-Type": str(reply.get("content_type") or
                                       "application/octet-stream")}
        given = reply.get("headers")
        if isinstance(given, Mapping):
            wanted = {h.lower(): h for h in RELAYED_HEADERS}
            for key, value in given.items():
                if isinstance(key, str) and key.lower() in wanted and isinstance(value, str):
                    headers[wanted[key.lower()]] = value
        # The token is in this URL: never let it leak in a Referer or a cache.
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Cache-Control", "no-store")
        return web.Response(body=answer or b"", status=status, headers=headers)

    async def static(request: web.Request) -> web.StreamResponse:
        found_asset = assets.get(request.match_info["name"])
        if found_asset is None:
            raise web.HTTPNotFound()
        data, ctype = found_asset
        response = web.Response(body=data, content_type=ctype,
                                charset="utf-8" if ctype.startswith("text/") else None)
        response.headers.update(_HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response

    async def api_communities(request: web.Request) -> web.Response:
        # For `sentinel status -c district.toml` and other tools (authorized like the rest
        # of /api/: the control socket, the bearer token or a board session).
        found = [_community_json(state)
                 for state in sorted(await view.communities(), key=board_rank)]
        return web.json_response({"communities": found},
                                 dumps=lambda v: json.dumps(v, ensure_ascii=False))

    app.router.add_get("/", root)
    app.router.add_get("/api/communities", api_communities)
    app.router.add_get("/board", overview)
    app.router.add_get("/board/", overview)
    app.router.add_get("/board/static/{name}", static)
    app.router.add_get("/board/c/{community}", community_page)
    app.router.add_get("/board/c/{community}/i/{incident}", incident_get)
    app.router.add_post("/board/c/{community}/i/{incident}/ack", ack)
    app.router.add_post("/board/c/{community}/i/{incident}/note", note)
    app.router.add_post("/board/own/{incident}/ack", own_ack)
    app.router.add_get("/c/{community}/a/{token}", relay)
    app.router.add_post("/c/{community}/a/{token}", relay)


def _reply_text(reply: Mapping[str, Any], type_: str, actor: str,
                lang: Language) -> tuple[bool, str]:
    """What the box's answer to an act means to the person who acted."""
    error = reply.get("error")
    incident = reply.get("incident") if isinstance(reply.get("incident"), Mapping) else None
    if reply.get("ok"):
        if type_ == "note":
            return True, _ui("act.noted", lang)
        if reply.get("replayed"):
            return True, _ui("act.replayed", lang)
        # The box answers `already` with who was first (sentinel.uplink.commands); an
        # incident's state, when a box sends one, says the same.
        by = (incident.get("acknowledged_by") if incident is not None else None) \
            or reply.get("acknowledged_by")
        if by and by != actor:
            return True, _ui("act.already", lang, by=_who(str(by), lang))
        return True, _ui("act.acknowledged", lang)
    if error in ("already_acknowledged", "acknowledged"):
        by = (incident or {}).get("acknowledged_by") or reply.get("acknowledged_by") or "-"
        return True, _ui("act.already", lang, by=_who(str(by), lang))
    if error in ("unknown_incident", "closed", "not_open", "not_found"):
        return False, _ui("act.closed", lang)
    return False, _ui("act.refused", lang, reason=str(error or "-"))


def _done(reply: Mapping[str, Any], type_: str, actor: str) -> tuple[str, str] | None:
    """A successful act's outcome for the redirect after it (code, who was first), or None
    when the answer is a refusal (shown at once, with its status)."""
    error = reply.get("error")
    incident = reply.get("incident") if isinstance(reply.get("incident"), Mapping) else None
    by = str((incident or {}).get("acknowledged_by") or reply.get("acknowledged_by") or "")
    if reply.get("ok"):
        if type_ == "note":
            return "noted", ""
        if reply.get("replayed"):
            return "replayed", ""
        if by and by != actor:
            return "already", by
        return "acked", ""
    if error in ("already_acknowledged", "acknowledged"):
        return "already", by
    return None


def _b64(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The request's body; None when it is larger than `limit` (not read on)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


def _community_json(state: CommunityState) -> dict[str, Any]:
    data = dataclasses.asdict(state)
    data["oldest_unacknowledged"] = (dict(state.oldest_unacknowledged)
                                     if state.oldest_unacknowledged is not None else None)
    data["extra"] = dict(state.extra)
    return data
