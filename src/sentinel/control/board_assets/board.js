// The board (一屏可视): reads the control API, follows its event stream, sounds the alarm,
// draws the site plan, shows an incident's timeline; operators acknowledge, assign, note and
// resolve. Plain JavaScript, no build step, no dependencies. Every text node is set with
// textContent (never innerHTML): device names, notes and actors cannot inject markup.
(function () {
  "use strict";

  var WORST = ["ok", "offline", "maintenance", "info", "warning", "critical", "emergency"];
  var SEVERITIES = ["emergency", "critical", "warning", "info", "maintenance"];
  var OUTCOMES = ["handled", "false_alarm", "referred"];
  var FEED_TYPES = {
    opened: true, severity_raised: true, acknowledged: true, resolved: true,
    notification_sent: true, notification_failed: true, escalation_step: true,
    nobody_on_duty: true, acknowledgement_expired: true, escalation_reminder: true,
    tier_unreachable: true, assigned: true, noted: true
  };
  var FEED_MAX = 60;
  var REFRESH_DEBOUNCE = 250;
  var REFRESH_EVERY = 30000;

  function meta(name) {
    var m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.getAttribute("content") || "" : "";
  }

  var CSRF = meta("csrf-token");
  var ACTOR = meta("board-actor");
  // A viewer gets no buttons at all (the API would refuse the POST anyway).
  var OPERATOR = meta("board-role") !== "viewer";
  var ZONE = meta("board-zone") || undefined;  // the community's, set by the daemon
  var SEV_RANK = { emergency: 5, critical: 4, warning: 3, info: 2, maintenance: 1 };
  var ALARM_SEVERITIES = { emergency: true, critical: true };
  var MUTE_KEY = "sentinel.board.mute";
  var CATALOG = JSON.parse(document.getElementById("board-i18n").textContent);
  var $ = function (id) { return document.getElementById(id); };

  // -- language -------------------------------------------------------------------------

  function storedLang() {
    try { return window.localStorage.getItem("sentinel.board.lang"); } catch (e) { return null; }
  }
  function storeLang(value) {
    try { window.localStorage.setItem("sentinel.board.lang", value); } catch (e) { /* private */ }
  }
  var params = new URLSearchParams(window.location.search);
  var lang = params.get("lang");
  if (lang === "zh" || lang === "en") {
    storeLang(lang);
  } else {
    lang = storedLang() === "en" ? "en" : "zh";
  }

  function t(key, values) {
    var text = (CATALOG[lang] || {})[key];
    if (text === undefined) { text = (CATALOG.en || {})[key]; }
    if (text === undefined) { return key; }
    return text.replace(/\{(\w+)\}/g, function (all, name) {
      return values && values[name] !== undefined && values[name] !== null
        ? String(values[name]) : all;
    });
  }
  function has(key) { return (CATALOG[lang] || {})[key] !== undefined; }
  function incidentTitle(name) {
    return has("incident." + name) ? t("incident." + name) : String(name).replace(/_/g, " ");
  }
  function kindName(kind) { return has("kind." + kind) ? t("kind." + kind) : kind; }

  var clockFormat = null;
  var dayFormat = null;
  function formats() {
    // The community's time zone comes with the catalogue (the `timezone` setting).
    var zone = has("zone") ? t("zone") : ZONE;
    var locale = lang === "zh" ? "zh-CN" : "en-GB";
    clockFormat = new Intl.DateTimeFormat(locale, {
      timeZone: zone, hour: "2-digit", minute: "2-digit", second: "2-digit",
      hour12: false
    });
    dayFormat = new Intl.DateTimeFormat(locale, {
      timeZone: zone, month: "2-digit", day: "2-digit"
    });
  }
  function when(ts) {
    if (typeof ts !== "number") { return "-"; }
    var d = new Date(ts * 1000);
    var today = dayFormat.format(new Date()) === dayFormat.format(d);
    return (today ? "" : dayFormat.format(d) + " ") + clockFormat.format(d);
  }

  // -- DOM helpers ----------------------------------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function placeText(place) {
    place = place || {};
    if (place.location) { return place.location; }
    return [place.compound, place.building, place.unit].filter(Boolean).join(" ") || "-";
  }

  // -- state ----------------------------------------------------------------------------

  var state = {
    status: null,
    incidents: [],
    feed: [],          // newest first
    names: {},         // incident id -> name, for feed lines of closed incidents
    lastSeq: 0,
    filter: null,      // {compound, building}
    chosen: {},        // incident id -> outcome picked in its select
    busy: {},          // incident id -> true while an action is posted
    conn: "connecting",
    updatedAt: null,
    contacts: {},      // contact id -> {id, name, roles, grids}
    selected: null,    // the incident whose timeline is open
    detail: null,      // GET /api/incidents/{selected}
    drafts: {},        // incident id -> note being typed (kept across re-renders)
    mute: null,        // {until: ms, covered: [incident ids]}
    audioBlocked: false
  };

  // -- who did it -----------------------------------------------------------------------

  function contactName(id) {
    var c = state.contacts[id];
    return c && c.name ? c.name : id;
  }

  // Actors as people read them: never "board:" or "link:" prefixes or the word sentinel.
  function actorName(actor) {
    if (!actor) { return "-"; }
    var s = String(actor);
    if (s === "sentinel") { return t("board.actor.system"); }
    if (s.indexOf("board:") === 0) { return t("board.actor.board", { name: s.slice(6) }); }
    if (s.indexOf("cli:") === 0) { return t("board.actor.cli", { name: s.slice(4) }); }
    if (s.indexOf("link:") === 0) { return contactName(s.slice(5)); }
    return contactName(s);
  }

  // -- rendering ------------------------------------------------------------------------

  function renderStatic() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.title = (state.status ? state.status.community + " " : "") + t("title");
    var nodes = document.querySelectorAll("[data-i18n]");
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].textContent = t(nodes[i].getAttribute("data-i18n"));
    }
    var who = $("signed-in");
    who.textContent = t("signed_in", { name: who.getAttribute("data-name") });
    $("lang-switch").setAttribute("href", "/board?lang=" + (lang === "zh" ? "en" : "zh"));
    var legend = document.querySelectorAll(".legend li");
    for (var j = 0; j < legend.length; j++) {
      legend[j].setAttribute("title", t("worst." + WORST[j]));
    }
  }

  function renderConn() {
    var node = $("conn");
    node.className = "conn conn-" + state.conn;
    $("conn-text").textContent = t("conn." + state.conn);
    $("updated").textContent = state.updatedAt ? t("updated", { time: when(state.updatedAt) }) : "";
  }

  function banner(text) {
    var node = $("banner");
    node.textContent = text || "";
    node.hidden = !text;
  }

  function renderSilences(silences) {
    // Silences in force: one naming life-safety incidents is a visible warning.
    var node = $("silences");
    var lifeSafety = [], other = [];
    (silences || []).forEach(function (w) {
      var text = w.label + " " + w.reason + " (" + w.author + ")";
      (w.life_safety ? lifeSafety : other).push(text);
    });
    var lines = [];
    if (lifeSafety.length) { lines.push(t("silences.life_safety", { list: lifeSafety.join("; ") })); }
    if (other.length) { lines.push(t("silences.other", { list: other.join("; ") })); }
    node.textContent = lines.join("\n");
    node.hidden = !lines.length;
    node.classList.toggle("life-safety", lifeSafety.length > 0);
  }

  function renderStatus() {
    var s = state.status;
    if (!s) { return; }
    renderSilences(s.silences);
    $("community").textContent = s.community || "";
    document.title = (s.community ? s.community + " " : "") + t("title");
    var broker = $("broker");
    var up = !!(s.broker && s.broker.connected);
    broker.textContent = t(up ? "broker.up" : "broker.down");
    broker.className = "pill " + (up ? "pill-ok" : "pill-bad");
    var queues = [t("outbox", { n: s.outbox_depth || 0 })];
    var spool = s.spool_depth;
    if ((spool === null || spool === undefined) && s.store) { spool = s.store.spool_rows; }
    if (spool !== null && spool !== undefined) { queues.push(t("spool", { n: spool })); }
    $("queues").textContent = queues.join(" · ");

    var counts = $("severity-counts");
    clear(counts);
    var open = s.incidents_open || {};
    SEVERITIES.forEach(function (label) {
      var n = open[label] || 0;
      if (!n && label === "maintenance") { return; }
      var chip = el("span", "chip sev-" + label + (n ? "" : " zero"));
      chip.appendChild(el("b", null, n));
      chip.appendChild(document.createTextNode(" " + t("severity." + label)));
      counts.appendChild(chip);
    });

    renderCompounds(s.compounds || []);
    renderKinds(s.devices || {});
    renderBattery(s.low_battery || []);
  }

  function natural(a, b) {
    return String(a).localeCompare(String(b), "zh-CN", { numeric: true });
  }

  function renderCompounds(compounds) {
    var root = $("compounds");
    clear(root);
    // Trouble first: the worst compounds on top, then by name.
    compounds.slice().sort(function (a, b) {
      return (WORST.indexOf(b.worst) - WORST.indexOf(a.worst)) || natural(a.id, b.id);
    })
      .forEach(function (compound) {
        var box = el("div", "compound w-" + (compound.worst || "ok"));
        box.setAttribute("data-compound", compound.id);
        var head = el("button", "compound-name", compound.id);
        head.type = "button";
        head.setAttribute("title", t("worst." + (compound.worst || "ok")));
        head.addEventListener("click", function () { setFilter(compound.id, null); });
        box.appendChild(head);
        var tiles = el("div", "tiles");
        (compound.buildings || []).slice().sort(function (a, b) { return natural(a.id, b.id); })
          .forEach(function (b) {
            var tile = el("button", "tile w-" + (b.worst || "ok"));
            tile.type = "button";
            tile.setAttribute("data-building", b.id);
            tile.setAttribute("data-worst", b.worst || "ok");
            tile.appendChild(el("span", "tile-name", b.id));
            if (b.offline) { tile.appendChild(el("span", "tile-off", b.offline)); }
            tile.setAttribute("title", compound.id + " " + b.id + " · " +
              t("worst." + (b.worst || "ok")) + " · " +
              t("building.count", { online: b.online || 0, total: b.total || 0 }) +
              (b.offline ? " · " + t("building.offline", { n: b.offline }) : "") +
              (b.unseen ? " · " + t("building.unseen", { n: b.unseen }) : ""));
            if (state.filter && state.filter.compound === compound.id &&
                state.filter.building === b.id) {
              tile.className += " selected";
            }
            tile.addEventListener("click", function () { setFilter(compound.id, b.id); });
            tiles.appendChild(tile);
          });
        box.appendChild(tiles);
        root.appendChild(box);
      });
  }

  function renderKinds(devices) {
    var body = document.querySelector("#kinds tbody");
    clear(body);
    var byKind = devices.by_kind || {};
    function row(head, c, className) {
      var tr = el("tr", className);
      tr.appendChild(el("th", null, head));
      tr.appendChild(el("td", "num", c.online || 0));
      tr.appendChild(el("td", "num" + (c.offline ? " bad" : ""), c.offline || 0));
      tr.appendChild(el("td", "num muted", c.unseen || 0));
      tr.appendChild(el("td", "num", c.total || 0));
      return tr;
    }
    Object.keys(byKind).sort().forEach(function (kind) {
      var tr = row(kindName(kind), byKind[kind]);
      tr.setAttribute("data-kind", kind);
      body.appendChild(tr);
    });
    body.appendChild(row(t("all_kinds"), devices, "total"));
  }

  function renderBattery(items) {
    var list = $("battery");
    clear(list);
    if (!items.length) { list.appendChild(el("li", "muted", t("no_battery"))); return; }
    var byId = {};
    state.incidents.forEach(function (inc) { byId[inc.id] = inc; });
    items.slice(0, 20).forEach(function (item) {
      var li = el("li");
      li.appendChild(el("span", "mono", item.device));
      var value = item.battery !== undefined ? item.battery : item.value;
      var inc = item.incident ? byId[item.incident] : null;
      if (inc && inc.name === "battery_voltage_low" && typeof value === "number") {
        li.appendChild(el("span", "bad", t("battery_v", { n: value.toFixed(2) })));
      } else if (typeof value === "number") {
        li.appendChild(el("span", "bad", t("battery", { n: Math.round(value) })));
      }
      li.appendChild(el("span", "muted", placeText(item.place)));
      list.appendChild(li);
    });
  }

  function setFilter(compound, building) {
    var f = state.filter;
    if (f && f.compound === compound && f.building === building) {
      state.filter = null;
    } else {
      state.filter = { compound: compound, building: building };
    }
    renderCompounds((state.status && state.status.compounds) || []);
    renderIncidents();
    markPlan();
  }

  // -- ordering and groups --------------------------------------------------------------

  function rank(inc) { return SEV_RANK[inc.severity] || 0; }
  function unacked(inc) { return inc.status === "firing" ? 1 : 0; }
  function isGroup(inc) { return inc.members && inc.members.length ? 1 : 0; }

  // Severity first, then what nobody has acknowledged yet, then a group (a confirmed
  // fire leads the alarms it gathered), then the newest.
  function byUrgency(a, b) {
    return (rank(b) - rank(a)) || (unacked(b) - unacked(a)) || (isGroup(b) - isGroup(a)) ||
      ((b.opened_at || 0) - (a.opened_at || 0));
  }

  // The cards: open incidents except those folded under an open group shown with them.
  function cards() {
    var byId = {};
    state.incidents.forEach(function (inc) { byId[inc.id] = inc; });
    var folded = {};
    state.incidents.forEach(function (inc) {
      (inc.members || []).forEach(function (m) { if (byId[m] && m !== inc.id) { folded[m] = true; } });
    });
    return state.incidents.filter(function (inc) { return !folded[inc.id]; })
      .map(function (inc) {
        return { inc: inc, members: (inc.members || []).map(function (m) { return byId[m]; })
          .filter(Boolean).sort(byUrgency) };
      });
  }

  function inFilter(inc) {
    var f = state.filter;
    if (!f) { return true; }
    var p = inc.place || {};
    return p.compound === f.compound && (f.building === null || p.building === f.building);
  }

  function visibleCards() {
    return cards().filter(function (c) {
      return inFilter(c.inc) || c.members.some(inFilter);
    }).sort(function (a, b) { return byUrgency(a.inc, b.inc); });
  }

  function renderIncidents() {
    var list = $("incidents");
    clear(list);
    var shown = visibleCards();
    $("incident-count").textContent = String(state.incidents.length);
    var filter = $("filter");
    clear(filter);
    if (state.filter) {
      var f = state.filter;
      filter.appendChild(document.createTextNode(
        t("filter.on", { place: f.compound + (f.building ? " " + f.building : "") }) + " "));
      var all = el("button", "link", t("filter.clear"));
      all.type = "button";
      all.addEventListener("click", function () { state.filter = null; setFilterCleared(); });
      filter.appendChild(all);
      filter.hidden = false;
    } else {
      filter.hidden = true;
    }
    updateAlarm();
    if (!shown.length) {
      list.appendChild(el("li", "empty", t("no_incidents")));
      return;
    }
    shown.forEach(function (c) { list.appendChild(incidentCard(c.inc, c.members)); });
  }

  function setFilterCleared() {
    renderCompounds((state.status && state.status.compounds) || []);
    renderIncidents();
    markPlan();
  }

  function button(className, text, action, onClick, busyId) {
    var b = el("button", "btn " + className, text);
    b.type = "button";
    b.setAttribute("data-action", action);
    b.disabled = !!state.busy[busyId];
    b.addEventListener("click", function (e) { e.stopPropagation(); onClick(); });
    return b;
  }

  function outcomeSelect(inc) {
    var select = el("select", "outcome");
    select.setAttribute("aria-label", t("outcome.label"));
    OUTCOMES.forEach(function (o) {
      var option = el("option", null, t("outcome." + o));
      option.value = o;
      select.appendChild(option);
    });
    select.value = state.chosen[inc.id] || "handled";
    select.addEventListener("click", function (e) { e.stopPropagation(); });
    select.addEventListener("change", function () { state.chosen[inc.id] = select.value; });
    return select;
  }

  // Acknowledge and resolve (with its outcome): on a card and in the timeline.
  function actionRow(inc) {
    var actions = el("div", "actions");
    if (inc.status === "firing") {
      actions.appendChild(button("btn-ack", t("btn.ack"), "ack",
        function () { acknowledge(inc.id); }, inc.id));
    }
    var select = outcomeSelect(inc);
    actions.appendChild(select);
    actions.appendChild(button("btn-resolve", t("btn.resolve"), "resolve",
      function () { resolveIncident(inc.id, select.value); }, inc.id));
    return actions;
  }

  function memberLine(m) {
    var li = el("li", "member sev-" + m.severity + " st-" + m.status);
    li.setAttribute("data-id", m.id);
    li.setAttribute("data-status", m.status);
    li.appendChild(el("span", "badge sev-" + m.severity, t("severity." + m.severity)));
    li.appendChild(el("span", null, incidentTitle(m.name)));
    li.appendChild(el("span", "muted", placeText(m.place)));
    li.appendChild(el("span", "status status-" + m.status, t("status." + m.status)));
    return li;
  }

  function incidentCard(inc, members) {
    var li = el("li", "incident sev-" + inc.severity + " st-" + inc.status +
      (members.length ? " group" : "") + (state.selected === inc.id ? " selected" : ""));
    li.setAttribute("data-id", inc.id);
    li.setAttribute("data-status", inc.status);
    li.setAttribute("data-name", inc.name);
    li.setAttribute("tabindex", "0");
    li.addEventListener("click", function () { select(inc.id); });
    li.addEventListener("keydown", function (e) {
      if ((e.key === "Enter" || e.key === " ") && e.target === li) { e.preventDefault(); select(inc.id); }
    });

    var head = el("div", "inc-head");
    head.appendChild(el("span", "badge sev-" + inc.severity, t("severity." + inc.severity)));
    head.appendChild(el("strong", "inc-title", incidentTitle(inc.name)));
    if (inc.drill) { head.appendChild(el("span", "badge drill", t("drill"))); }
    if (inc.silenced_by !== null && inc.silenced_by !== undefined) {
      head.appendChild(el("span", "badge silenced", t("silenced")));
    }
    head.appendChild(el("span", "status status-" + inc.status, t("status." + inc.status)));
    li.appendChild(head);

    li.appendChild(el("div", "inc-place", placeText(inc.place)));
    var facts = el("div", "inc-facts muted");
    facts.appendChild(el("span", null, t("opened_at", { time: when(inc.opened_at) })));
    if (inc.device_id) { facts.appendChild(el("span", "mono", t("device", { id: inc.device_id }))); }
    if (inc.active === false) { facts.appendChild(el("span", null, t("cleared"))); }
    if (inc.acknowledged_by) {
      facts.appendChild(el("span", "ack-by", t("ack_by", {
        by: actorName(inc.acknowledged_by), time: when(inc.acknowledged_at)
      })));
    }
    if (inc.assigned_to) {
      facts.appendChild(el("span", "assigned", t("board.assigned", { who: contactName(inc.assigned_to) })));
    }
    li.appendChild(facts);
    var record = latencyText(inc);
    if (record) { li.appendChild(record); }

    if (members.length) {
      // A confirmed fire with its alarms folded under it: one set of buttons, for all.
      var box = el("details", "members");
      box.open = members.length <= 4;
      box.appendChild(el("summary", null, t("board.members", { n: members.length })));
      box.addEventListener("click", function (e) { e.stopPropagation(); });
      var ul = el("ul", "member-list");
      members.forEach(function (m) { ul.appendChild(memberLine(m)); });
      box.appendChild(ul);
      li.appendChild(box);
    }

    if (OPERATOR && inc.status !== "resolved") { li.appendChild(actionRow(inc)); }
    return li;
  }

  // The per-alert record against GB 50440 (limits from the daemon's settings).
  function seconds(value) { return value < 10 ? value.toFixed(2) : value.toFixed(1); }
  function latencyText(inc) {
    var timing = inc.timing || {};
    var origin = timing.device !== undefined ? timing.device : timing.received;
    if (origin === undefined) { return null; }
    var limits = (state.status && state.status.latency_limits) ||
      { accepted_within: 10, handed_within: 3 };
    var box = el("div", "inc-latency muted");
    box.setAttribute("data-role", "latency");
    var first;
    if (timing.accepted !== undefined) {
      var took = Math.max(0, timing.accepted - origin);
      first = el("span", took > limits.accepted_within ? "latency-over" : null,
        t("latency.first_notification", { s: seconds(took), limit: limits.accepted_within }) +
        (took > limits.accepted_within ? t("latency.over") : ""));
    } else {
      first = el("span", null, t("latency.first_pending", { limit: limits.accepted_within }));
    }
    box.appendChild(first);
    if (timing.handed !== undefined && timing.received !== undefined) {
      var forward = Math.max(0, timing.handed - timing.received);
      box.appendChild(el("span", forward > limits.handed_within ? "latency-over" : null,
        t("latency.forward", { s: seconds(forward), limit: limits.handed_within }) +
        (forward > limits.handed_within ? t("latency.over") : "")));
    }
    return box;
  }

  function roleList(roles) {
    return (roles || []).map(function (r) { return has("role." + r) ? t("role." + r) : r; })
      .join(lang === "zh" ? "、" : ", ") || "-";
  }

  // A channel by its type (企业微信, 网络回调...), never its address: it may hold a secret.
  function channelText(ev) {
    return t("channel." + (ev.channel_type || "unknown"));
  }

  function feedText(ev) {
    var who = ev.contact_name || (ev.contact ? contactName(ev.contact) : actorName(ev.actor));
    switch (ev.type) {
      case "notification_sent":
        return t("feed.notified", { who: who, channel: channelText(ev) });
      case "notification_failed":
        return t("feed.failed", { who: who, channel: channelText(ev) });
      case "acknowledged": return t("feed.acknowledged", { who: actorName(ev.actor) });
      case "resolved":
        return t("feed.resolved", { who: actorName(ev.actor), outcome: outcomeText(ev.outcome) });
      case "assigned": case "noted": return timelineText(ev);
      case "escalation_step":
        return t((ev.step || 0) > 0 ? "feed.escalated" : "feed.paging",
          { step: (ev.step || 0) + 1, roles: roleList(ev.roles) });
      case "nobody_on_duty": return t("feed.nobody");
      case "acknowledgement_expired": return t("feed.ack_expired");
      default: return has("event." + ev.type) ? t("event." + ev.type) : t("board.tl.other");
    }
  }

  function renderFeed() {
    var list = $("feed");
    clear(list);
    if (!state.feed.length) { list.appendChild(el("li", "empty", t("no_feed"))); return; }
    state.feed.forEach(function (ev) {
      var li = el("li", "ev ev-" + ev.type + " sev-" + (ev.severity || "info"));
      li.setAttribute("data-type", ev.type);
      li.appendChild(el("time", "muted", when(ev.ts)));
      var name = ev.name || state.names[ev.incident];
      li.appendChild(el("strong", null, name ? incidentTitle(name) : ev.incident));
      li.appendChild(el("span", null, feedText(ev)));
      if (ev.place) { li.appendChild(el("span", "muted place", placeText(ev.place))); }
      list.appendChild(li);
    });
  }

  function renderAll() {
    formats();
    renderStatic();
    renderConn();
    renderStatus();
    renderIncidents();
    renderFeed();
    renderTimeline();
  }

  // -- the alarm sound ------------------------------------------------------------------

  function loadMute() {
    try {
      var m = JSON.parse(window.localStorage.getItem(MUTE_KEY) || "null");
      if (m && typeof m.until === "number" && m.covered instanceof Array) { return m; }
    } catch (e) { /* private mode or garbage: not muted */ }
    return null;
  }
  function storeMute() {
    try {
      if (state.mute) { window.localStorage.setItem(MUTE_KEY, JSON.stringify(state.mute)); }
      else { window.localStorage.removeItem(MUTE_KEY); }
    } catch (e) { /* private mode: the mute lasts for this page only */ }
  }

  // What sounds: a card (a group stands for its members) that is critical or emergency,
  // not acknowledged, and not under a maintenance silence.
  function alarming() {
    return cards().map(function (c) { return c.inc; }).filter(function (inc) {
      return ALARM_SEVERITIES[inc.severity] && inc.status === "firing" &&
        (inc.silenced_by === null || inc.silenced_by === undefined);
    }).map(function (inc) { return inc.id; });
  }

  function play(sound) {
    if (!sound.paused) { return; }
    var started = sound.play();
    if (started && typeof started.then === "function") {
      started.then(function () {
        if (state.audioBlocked) { state.audioBlocked = false; updateAlarm(); }
      }, function () {
        // Autoplay refused until a person touches the page: say so, with a button.
        if (!state.audioBlocked) { state.audioBlocked = true; updateAlarm(); }
      });
    }
  }

  // The sound repeats (the <audio> loops) until nothing alarming is left unacknowledged,
  // or someone mutes this screen for a set time. A mute covers the incidents it was
  // pressed for: a new critical or emergency incident ends it at once.
  function updateAlarm() {
    var ids = alarming();
    var sound = $("alarm-sound");
    var box = $("alarm");
    var mute = state.mute;
    if (mute && (Date.now() >= mute.until ||
        ids.some(function (id) { return mute.covered.indexOf(id) < 0; }))) {
      state.mute = mute = null;
      storeMute();
    }
    document.body.setAttribute("data-alarm", !ids.length ? "off" : mute ? "muted" : "sounding");
    if (!ids.length) {
      box.hidden = true;
      sound.pause();
      sound.currentTime = 0;
      return;
    }
    box.hidden = false;
    box.className = "alarm" + (mute ? " muted" : "");
    var mutes = box.querySelectorAll(".btn-mute");
    for (var i = 0; i < mutes.length; i++) {
      mutes[i].hidden = !!mute;
      mutes[i].textContent = t("board.alarm.mute", { m: mutes[i].getAttribute("data-minutes") });
    }
    $("alarm-unmute").hidden = !mute;
    $("alarm-unmute").textContent = t("board.alarm.unmute");
    $("alarm-enable").hidden = !!mute || !state.audioBlocked;
    $("alarm-enable").textContent = t("board.alarm.blocked");
    if (mute) {
      $("alarm-text").textContent = t("board.alarm.muted", {
        n: ids.length, time: clockFormat.format(new Date(mute.until)) });
      sound.pause();
    } else {
      $("alarm-text").textContent = t("board.alarm.sounding", { n: ids.length });
      play(sound);
    }
  }

  function muteFor(minutes) {
    state.mute = { until: Date.now() + minutes * 60000, covered: alarming() };
    storeMute();
    updateAlarm();
  }

  // -- the site plan --------------------------------------------------------------------

  var planRequest = 0;
  function loadPlan() {
    var mine = ++planRequest;
    return fetch("/api/siteplan?lang=" + lang, {
      credentials: "same-origin", cache: "no-store", headers: { Accept: "image/svg+xml" }
    }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (text) {
      if (mine !== planRequest) { return; }
      // Parsed as a separate document and imported: markup, never script (the CSP
      // forbids inline script anyway, and the server escapes every text in it).
      var doc = new DOMParser().parseFromString(text, "image/svg+xml");
      var svg = doc.documentElement;
      var box = $("siteplan");
      clear(box);
      if (!svg || svg.nodeName !== "svg" || doc.getElementsByTagName("parsererror").length) {
        return;
      }
      if (svg.getAttribute("data-buildings") === "0") {
        box.appendChild(el("p", "muted", t("board.plan.none")));
        box.parentNode.classList.add("no-plan");
        return;
      }
      box.parentNode.classList.remove("no-plan");
      var node = document.importNode(svg, true);
      var buildings = node.querySelectorAll(".building");
      for (var i = 0; i < buildings.length; i++) {
        (function (g) {
          g.addEventListener("click", function () {
            setFilter(g.getAttribute("data-compound"), g.getAttribute("data-building"));
          });
        })(buildings[i]);
      }
      box.appendChild(node);
      markPlan();
    }).catch(function () { /* the next refresh tries again */ });
  }

  function markPlan() {
    var f = state.filter;
    var buildings = document.querySelectorAll("#siteplan .building");
    for (var i = 0; i < buildings.length; i++) {
      var g = buildings[i];
      var on = !!f && g.getAttribute("data-compound") === f.compound &&
        (f.building === null || g.getAttribute("data-building") === f.building);
      g.classList.toggle("selected", on);
    }
  }

  // -- the timeline ---------------------------------------------------------------------

  function select(id) {
    if (state.selected !== id) {
      state.selected = id;
      state.detail = null;
      renderIncidents();
      renderTimeline();
    }
    loadDetail();
  }

  function closeTimeline() {
    state.selected = null;
    state.detail = null;
    renderIncidents();
    renderTimeline();
  }

  var detailRequest = 0;
  function loadDetail() {
    var id = state.selected;
    if (!id) { return Promise.resolve(); }
    var mine = ++detailRequest;
    return getJSON("/api/incidents/" + encodeURIComponent(id)).then(function (data) {
      if (mine !== detailRequest || state.selected !== id) { return; }
      state.detail = data;
      renderTimeline();
    }, function () { /* kept as it was; the next event or refresh tries again */ });
  }

  function outcomeText(outcome) {
    return outcome && has("outcome." + outcome) ? t("outcome." + outcome) : (outcome || "-");
  }

  // Pages, deliveries, acknowledgements, assignment, notes: one line each, in order.
  function timelineText(ev) {
    var by = actorName(ev.by || ev.actor);
    switch (ev.type) {
      case "opened": return t("board.tl.opened", { title: incidentTitle(ev.name || "") });
      case "acknowledged": return t("board.tl.acknowledged", { by: by });
      case "assigned": return t("board.tl.assigned", { by: by, who: contactName(ev.person) });
      case "noted": return t("board.tl.noted", { by: actorName(ev.actor), text: ev.text || "" });
      case "resolved": return t("board.tl.resolved", { by: by, outcome: outcomeText(ev.outcome) });
      case "member_added": return t("board.tl.member_added", { member: ev.member || "-" });
      case "acknowledgement_expired": return t("board.tl.ack_expired");
      case "attempt":
        return t(ev.ok ? "board.tl.attempt_ok" : "board.tl.attempt_failed", {
          who: contactName(ev.contact_id), channel: channelText(ev) });
      case "notification_sent": case "notification_failed": case "escalation_step":
      case "nobody_on_duty":
        return feedText(ev);
      default: return has("event." + ev.type) ? t("event." + ev.type) : t("board.tl.other");
    }
  }

  function timelineEntries(detail) {
    // `events` (the incident's own trail) when the daemon gives it; else the audit's
    // events. Deliveries come from the audit either way.
    var audit = (detail.audit || []).map(flatten);
    var events = detail.events ? detail.events.map(flatten)
      : audit.filter(function (e) { return e.type !== "attempt"; });
    var attempts = audit.filter(function (e) { return e.type === "attempt"; });
    var name = detail.incident && detail.incident.name;
    return events.concat(attempts).map(function (e) {
      if (!e.name && name) { e.name = name; }
      return e;
    }).sort(function (a, b) { return (a.ts || 0) - (b.ts || 0); });
  }

  function latencyRecord(detail) {
    var box = el("div", "tl-latency");
    box.setAttribute("data-role", "latency-record");
    box.appendChild(el("h3", null, t("board.timeline.latency")));
    var inc = detail.incident || {};
    var line = latencyText(inc);
    if (line) { box.appendChild(line); }
    var timing = inc.timing || {};
    var stages = ["device", "received", "committed", "handed", "accepted", "acknowledged"];
    var list = el("ul", "stages");
    stages.forEach(function (s) {
      if (typeof timing[s] === "number") {
        var li = el("li");
        li.appendChild(el("span", "muted", t("latency.stage." + s)));
        li.appendChild(el("time", null, when(timing[s])));
        list.appendChild(li);
      }
    });
    if (list.firstChild) { box.appendChild(list); }
    return box;
  }

  function assignRow(inc) {
    var row = el("div", "actions assign");
    var pick = el("select", "person");
    pick.setAttribute("aria-label", t("board.assign.pick"));
    var none = el("option", null, t("board.assign.pick"));
    none.value = "";
    pick.appendChild(none);
    Object.keys(state.contacts).map(function (id) { return state.contacts[id]; })
      .sort(function (a, b) { return natural(a.name || a.id, b.name || b.id); })
      .forEach(function (c) {
        var option = el("option", null, (c.name || c.id) + " · " + roleList(c.roles));
        option.value = c.id;
        pick.appendChild(option);
      });
    if (inc.assigned_to) { pick.value = inc.assigned_to; }
    row.appendChild(pick);
    row.appendChild(button("btn-assign", t("board.btn.assign"), "assign", function () {
      if (pick.value) { assign(inc.id, pick.value); }
    }, inc.id));
    return row;
  }

  function noteRow(inc) {
    var row = el("div", "actions note");
    var text = el("textarea", "note-text");
    text.rows = 2;
    text.maxLength = 2000;
    text.setAttribute("placeholder", t("board.note.placeholder"));
    text.setAttribute("aria-label", t("board.btn.note"));
    text.value = state.drafts[inc.id] || "";
    text.addEventListener("input", function () { state.drafts[inc.id] = text.value; });
    row.appendChild(text);
    row.appendChild(button("btn-note", t("board.btn.note"), "note", function () {
      if (text.value.trim()) { addNote(inc.id, text.value.trim()); }
    }, inc.id));
    return row;
  }

  function renderTimeline() {
    var root = $("timeline");
    // Typing a note must survive the re-render that any event causes.
    var focused = document.activeElement && document.activeElement.classList &&
      document.activeElement.classList.contains("note-text");
    clear(root);
    $("timeline-close").hidden = !state.selected;
    $("timeline-close").textContent = t("board.timeline.close");
    if (!state.selected) {
      root.appendChild(el("p", "muted", t("board.timeline.pick")));
      return;
    }
    var detail = state.detail;
    if (!detail) { root.appendChild(el("p", "muted", t("board.timeline.loading"))); return; }
    var inc = detail.incident || {};
    root.setAttribute("data-id", inc.id || "");
    var head = el("div", "inc-head");
    head.appendChild(el("span", "badge sev-" + inc.severity, t("severity." + inc.severity)));
    head.appendChild(el("strong", "inc-title", incidentTitle(inc.name || "")));
    head.appendChild(el("span", "status status-" + inc.status, t("status." + inc.status)));
    root.appendChild(head);
    root.appendChild(el("div", "inc-place", placeText(inc.place)));
    root.appendChild(el("div", "muted assigned", inc.assigned_to
      ? t("board.assigned", { who: contactName(inc.assigned_to) }) : t("board.unassigned")));
    if (OPERATOR && inc.status && inc.status !== "resolved") {
      root.appendChild(actionRow(inc));
      root.appendChild(assignRow(inc));
      root.appendChild(noteRow(inc));
    }
    root.appendChild(latencyRecord(detail));
    var list = el("ol", "tl-list");
    var entries = timelineEntries(detail);
    if (!entries.length) { list.appendChild(el("li", "empty", t("board.timeline.empty"))); }
    entries.forEach(function (ev) {
      var li = el("li", "tl tl-" + ev.type);
      li.setAttribute("data-type", ev.type);
      li.appendChild(el("time", "muted", when(ev.ts)));
      li.appendChild(el("span", null, timelineText(ev)));
      if (ev.type === "noted" && ev.photo) {
        var img = el("img", "photo");
        img.alt = t("board.tl.photo");
        img.src = "/api/incidents/" + encodeURIComponent(inc.id) + "/photo/" +
          encodeURIComponent(ev.photo);
        li.appendChild(img);
      }
      list.appendChild(li);
    });
    root.appendChild(list);
    if (focused) {
      var again = root.querySelector(".note-text");
      if (again) { again.focus(); }
    }
  }

  // -- data -----------------------------------------------------------------------------

  function toLogin() {
    window.location.assign("/board/login" + (lang === "en" ? "?lang=en" : ""));
  }

  function getJSON(url) {
    return fetch(url, {
      credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" }
    }).then(function (r) {
      if (r.status === 401) { toLogin(); throw new Error("unauthorized"); }
      if (!r.ok) { throw new Error(url + ": HTTP " + r.status); }
      return r.json();
    });
  }

  function flatten(raw) {
    // Event data may come at the top level or under "data"; both are accepted.
    var ev = {};
    var key;
    if (raw && typeof raw.data === "object" && raw.data !== null) {
      for (key in raw.data) { if (Object.prototype.hasOwnProperty.call(raw.data, key)) { ev[key] = raw.data[key]; } }
    }
    for (key in raw) { if (key !== "data" && Object.prototype.hasOwnProperty.call(raw, key)) { ev[key] = raw[key]; } }
    if (ev.incident === undefined && ev.incident_id !== undefined) { ev.incident = ev.incident_id; }
    return ev;
  }

  function remember(ev) {
    if (ev.name && ev.incident) { state.names[ev.incident] = ev.name; }
    if (typeof ev.seq === "number" && ev.seq > state.lastSeq) { state.lastSeq = ev.seq; }
    if (FEED_TYPES[ev.type]) {
      state.feed.unshift(ev);
      if (state.feed.length > FEED_MAX) { state.feed.length = FEED_MAX; }
    }
  }

  function setIncidents(list) {
    state.incidents = list;
    list.forEach(function (inc) { state.names[inc.id] = inc.name; });
    var open = {};
    list.forEach(function (inc) { open[inc.id] = true; });
    Object.keys(state.chosen).forEach(function (id) { if (!open[id]) { delete state.chosen[id]; } });
  }

  var refreshing = null;
  var refreshAgain = false;
  function refresh() {
    if (refreshing) { refreshAgain = true; return refreshing; }
    refreshing = Promise.all([getJSON("/api/status"), getJSON("/api/incidents")])
      .then(function (results) {
        state.status = results[0];
        setIncidents(results[1].incidents || []);
        state.updatedAt = Date.now() / 1000;
        if (state.conn === "offline") { state.conn = "reconnecting"; }
        banner("");
        renderStatus();
        renderIncidents();
        renderFeed();
        renderConn();
        loadPlan();
        return loadDetail();
      }, function (err) {
        if (String(err && err.message) !== "unauthorized") {
          state.conn = "offline";
          renderConn();
        }
      }).then(function () {
        refreshing = null;
        if (refreshAgain) { refreshAgain = false; refresh(); }
      });
    return refreshing;
  }

  var debounce = null;
  function scheduleRefresh() {
    if (debounce !== null) { return; }
    debounce = window.setTimeout(function () { debounce = null; refresh(); }, REFRESH_DEBOUNCE);
  }

  // -- the stream -----------------------------------------------------------------------

  var source = null;
  var backoff = 1000;

  function onStreamEvent(message) {
    var raw;
    try { raw = JSON.parse(message.data); } catch (e) { return; }
    var ev = flatten(raw);
    if (typeof ev.seq === "number" && ev.seq <= state.lastSeq) { return; }
    remember(ev);
    renderFeed();
    scheduleRefresh();
  }

  function connect() {
    if (source) { source.close(); }
    if (typeof window.EventSource !== "function") { return; }
    source = new window.EventSource("/api/stream?after=" + state.lastSeq);
    source.addEventListener("open", function () {
      backoff = 1000;
      state.conn = "live";
      renderConn();
      refresh();  // whatever happened while we were away
    });
    source.addEventListener("incident", onStreamEvent);
    source.addEventListener("message", onStreamEvent);
    source.addEventListener("error", function () {
      if (source.readyState === window.EventSource.CLOSED) {
        // The browser gave up (an HTTP error): find out whether the session ended,
        // then start again from the last event seen.
        source.close();
        source = null;
        state.conn = "reconnecting";
        renderConn();
        getJSON("/api/status").catch(function () { /* offline: retry below */ });
        window.setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 30000);
      } else {
        // The browser reconnects by itself, sending Last-Event-ID.
        state.conn = "reconnecting";
        renderConn();
      }
    });
  }

  // -- actions --------------------------------------------------------------------------

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-CSRF-Token": CSRF
      },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (r.status === 401) {
          banner(t("action.session"));
          window.setTimeout(toLogin, 1500);
          throw new Error("unauthorized");
        }
        if (!r.ok) { throw new Error(data.message || data.error || ("HTTP " + r.status)); }
        return data;
      });
    });
  }

  function applied(data) {
    var inc = data && data.incident;
    if (!inc) { return; }
    state.names[inc.id] = inc.name;
    if (inc.status === "resolved") {
      state.incidents = state.incidents.filter(function (x) { return x.id !== inc.id; });
    } else {
      var found = false;
      state.incidents = state.incidents.map(function (x) {
        if (x.id === inc.id) { found = true; return inc; }
        return x;
      });
      if (!found) { state.incidents.push(inc); }
    }
  }

  function act(id, url, body, done) {
    if (state.busy[id]) { return; }
    state.busy[id] = true;
    renderIncidents();
    post(url, body).then(function (data) {
      banner("");
      applied(data);
      if (done) { done(); }
    }, function (err) {
      if (String(err && err.message) !== "unauthorized") {
        banner(t("action.failed", { message: err && err.message ? err.message : String(err) }));
      }
    }).then(function () {
      delete state.busy[id];
      renderIncidents();
      renderTimeline();
      scheduleRefresh();
    });
  }

  function acknowledge(id) {
    act(id, "/api/incidents/" + encodeURIComponent(id) + "/ack", { actor: ACTOR, note: null });
  }

  function resolveIncident(id, outcome) {
    act(id, "/api/incidents/" + encodeURIComponent(id) + "/resolve",
      { actor: ACTOR, outcome: outcome, note: null });
  }

  // Who acts is the session's actor, decided by the server: these bodies carry none.
  function assign(id, person) {
    act(id, "/api/incidents/" + encodeURIComponent(id) + "/assign", { person: person });
  }

  function addNote(id, text) {
    if (state.busy[id]) { return; }
    act(id, "/api/incidents/" + encodeURIComponent(id) + "/note", { text: text }, function () {
      // The draft goes once the note is recorded; a failure keeps it to send again.
      if (state.drafts[id] === text) { delete state.drafts[id]; }
    });
  }

  function loadContacts() {
    return getJSON("/api/contacts").then(function (data) {
      var list = data instanceof Array ? data : (data.contacts || []);
      state.contacts = {};
      list.forEach(function (c) { if (c && c.id) { state.contacts[c.id] = c; } });
      renderIncidents();
      renderFeed();
      renderTimeline();
    }, function () { /* an older daemon: ids are shown as they are */ });
  }

  // -- start ----------------------------------------------------------------------------

  $("lang-switch").addEventListener("click", function (e) {
    e.preventDefault();
    lang = lang === "zh" ? "en" : "zh";
    storeLang(lang);
    var url = new URL(window.location.href);
    url.searchParams.set("lang", lang);
    window.history.replaceState(null, "", url.pathname + url.search);
    renderAll();
    loadPlan();
  });

  var muteButtons = document.querySelectorAll("#alarm .btn-mute");
  for (var mb = 0; mb < muteButtons.length; mb++) {
    (function (b) {
      b.addEventListener("click", function () {
        muteFor(Number(b.getAttribute("data-minutes")) || 5);
      });
    })(muteButtons[mb]);
  }
  $("alarm-unmute").addEventListener("click", function () {
    state.mute = null;
    storeMute();
    updateAlarm();
  });
  $("alarm-enable").addEventListener("click", function () {
    // A click is the gesture the browser waits for before it lets a page make sound.
    state.audioBlocked = false;
    play($("alarm-sound"));
    updateAlarm();
  });
  $("timeline-close").addEventListener("click", closeTimeline);
  state.mute = loadMute();
  // A mute ends on time even when nothing else happens on the screen.
  window.setInterval(function () { if (state.mute) { updateAlarm(); } }, 1000);

  renderAll();
  loadContacts();
  getJSON("/api/events?last=50").then(function (data) {
    (data.events || []).forEach(function (raw) { remember(flatten(raw)); });
    // Follow from the newest event, even when none of the last ones were listed.
    if (typeof data.seq === "number" && data.seq > state.lastSeq) { state.lastSeq = data.seq; }
  }).catch(function () { /* the stream and the refresh below still run */ })
    .then(function () {
      renderFeed();
      connect();
      return refresh();
    });
  window.setInterval(function () {
    refresh();
  }, REFRESH_EVERY);
})();
