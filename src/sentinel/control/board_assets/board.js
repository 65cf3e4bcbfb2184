// The board (一屏可视): reads the control API, follows its event stream, acknowledges and
// resolves. Plain JavaScript, no build step, no dependencies. Every text node is set with
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
    tier_unreachable: true
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
    var zone = has("zone") ? t("zone") : "Asia/Shanghai";
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
    updatedAt: null
  };

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
  }

  function visibleIncidents() {
    var f = state.filter;
    return state.incidents.filter(function (inc) {
      if (!f) { return true; }
      var p = inc.place || {};
      return p.compound === f.compound && (f.building === null || p.building === f.building);
    }).sort(function (a, b) { return (b.opened_at || 0) - (a.opened_at || 0); });
  }

  function renderIncidents() {
    var list = $("incidents");
    clear(list);
    var shown = visibleIncidents();
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
    if (!shown.length) {
      list.appendChild(el("li", "empty", t("no_incidents")));
      return;
    }
    shown.forEach(function (inc) { list.appendChild(incidentCard(inc)); });
  }

  function setFilterCleared() {
    renderCompounds((state.status && state.status.compounds) || []);
    renderIncidents();
  }

  function incidentCard(inc) {
    var li = el("li", "incident sev-" + inc.severity + " st-" + inc.status);
    li.setAttribute("data-id", inc.id);
    li.setAttribute("data-status", inc.status);
    li.setAttribute("data-name", inc.name);

    var head = el("div", "inc-head");
    head.appendChild(el("span", "badge sev-" + inc.severity, t("severity." + inc.severity)));
    head.appendChild(el("strong", "inc-title", incidentTitle(inc.name)));
    if (inc.drill) { head.appendChild(el("span", "badge drill", t("drill"))); }
    if (inc.silenced_by !== null && inc.silenced_by !== undefined) {
      head.appendChild(el("span", "badge silenced", t("silenced")));
    }
    li.appendChild(head);

    li.appendChild(el("div", "inc-place", placeText(inc.place)));
    var facts = el("div", "inc-facts muted");
    facts.appendChild(el("span", null, t("opened_at", { time: when(inc.opened_at) })));
    if (inc.device_id) { facts.appendChild(el("span", "mono", t("device", { id: inc.device_id }))); }
    if (inc.members && inc.members.length) {
      facts.appendChild(el("span", null, t("members", { n: inc.members.length })));
    }
    if (inc.active === false) { facts.appendChild(el("span", null, t("cleared"))); }
    facts.appendChild(el("span", "mono", inc.id));
    li.appendChild(facts);
    var record = latencyText(inc);
    if (record) { li.appendChild(record); }

    var status = el("div", "inc-status");
    status.appendChild(el("span", "status status-" + inc.status, t("status." + inc.status)));
    if (inc.acknowledged_by) {
      status.appendChild(el("span", "muted ack-by", t("ack_by", {
        by: inc.acknowledged_by, time: when(inc.acknowledged_at)
      })));
    }
    li.appendChild(status);

    if (inc.status !== "resolved") {
      var actions = el("div", "actions");
      if (inc.status === "firing") {
        var ack = el("button", "btn btn-ack", t("btn.ack"));
        ack.type = "button";
        ack.setAttribute("data-action", "ack");
        ack.disabled = !!state.busy[inc.id];
        ack.addEventListener("click", function () { acknowledge(inc.id); });
        actions.appendChild(ack);
      }
      var select = el("select", "outcome");
      select.setAttribute("aria-label", t("outcome.label"));
      OUTCOMES.forEach(function (o) {
        var option = el("option", null, t("outcome." + o));
        option.value = o;
        select.appendChild(option);
      });
      select.value = state.chosen[inc.id] || "handled";
      select.addEventListener("change", function () { state.chosen[inc.id] = select.value; });
      actions.appendChild(select);
      var resolve = el("button", "btn btn-resolve", t("btn.resolve"));
      resolve.type = "button";
      resolve.setAttribute("data-action", "resolve");
      resolve.disabled = !!state.busy[inc.id];
      resolve.addEventListener("click", function () { resolveIncident(inc.id, select.value); });
      actions.appendChild(resolve);
      li.appendChild(actions);
    }
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

  function feedText(ev) {
    var who = ev.contact_name || ev.contact || ev.actor || "-";
    switch (ev.type) {
      case "notification_sent": return t("feed.notified", { who: who, channel: ev.channel || "-" });
      case "notification_failed": return t("feed.failed", { who: who, channel: ev.channel || "-" });
      case "acknowledged": return t("feed.acknowledged", { who: ev.actor || "-" });
      case "resolved":
        return t("feed.resolved", {
          who: ev.actor || "-",
          outcome: ev.outcome && has("outcome." + ev.outcome) ? t("outcome." + ev.outcome) : (ev.outcome || "-")
        });
      case "escalation_step":
        return t((ev.step || 0) > 0 ? "feed.escalated" : "feed.paging",
          { step: (ev.step || 0) + 1, roles: roleList(ev.roles) });
      case "nobody_on_duty": return t("feed.nobody");
      case "acknowledgement_expired": return t("feed.ack_expired");
      default: return has("event." + ev.type) ? t("event." + ev.type) : ev.type;
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

  function act(id, url, body) {
    if (state.busy[id]) { return; }
    state.busy[id] = true;
    renderIncidents();
    post(url, body).then(function (data) {
      banner("");
      applied(data);
    }, function (err) {
      if (String(err && err.message) !== "unauthorized") {
        banner(t("action.failed", { message: err && err.message ? err.message : String(err) }));
      }
    }).then(function () {
      delete state.busy[id];
      renderIncidents();
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

  // -- start ----------------------------------------------------------------------------

  $("lang-switch").addEventListener("click", function (e) {
    e.preventDefault();
    lang = lang === "zh" ? "en" : "zh";
    storeLang(lang);
    var url = new URL(window.location.href);
    url.searchParams.set("lang", lang);
    window.history.replaceState(null, "", url.pathname + url.search);
    renderAll();
  });

  renderAll();
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
