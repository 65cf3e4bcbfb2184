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
  // An id inside a CSS attribute selector's quotes.
  function cssText(value) {
    return String(value).replace(/["\\]/g, "\\$&");
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function placeText(place) {
    place = place || {};
    if (place.location) { return place.location; }
    return [place.compound, place.building, place.unit].filter(Boolean).join(" ") || "-";
  }

  // The floor of a place as a number: its `floor` column, else "20楼"/"20F" in its text.
  function floorOf(place) {
    place = place || {};
    var f = String(place.floor || "").trim();
    if (/^-?\d+$/.test(f)) { return Number(f); }
    var m = /(-?\d+)\s*(?:楼|层|F\b)/i.exec(place.location || "");
    return m ? Number(m[1]) : null;
  }

  // Where a member stands, said within its group's building: "20楼走廊", not the
  // compound and building again; another building's member keeps its whole place.
  function shortPlace(place, within) {
    place = place || {};
    within = within || {};
    if (!place.compound || place.compound !== within.compound ||
        (place.building || "") !== (within.building || "")) {
      return placeText(place);
    }
    var loc = String(place.location || "");
    [place.compound, place.building].forEach(function (part) {
      if (part && loc.indexOf(part) === 0) { loc = loc.slice(part.length).trim(); }
    });
    var floor = floorOf(place);
    if (floor !== null && !/\d/.test(loc)) {
      loc = t("board.floor", { n: floor }) + (loc ? " " + loc : "");
    }
    return loc || place.unit || placeText(place);
  }

  // Members by floor, lowest first (those with no floor after), then by urgency.
  function byFloor(a, b) {
    var fa = floorOf(a.place), fb = floorOf(b.place);
    if (fa !== null && fb !== null && fa !== fb) { return fa - fb; }
    if ((fa === null) !== (fb === null)) { return fa === null ? 1 : -1; }
    return byUrgency(a, b);
  }

  // "3楼、11楼、13楼、20楼、南侧消火栓": a group's members where a person looks for them.
  function memberPlaces(members, within) {
    var seen = {}, out = [];
    members.slice().sort(byFloor).forEach(function (m) {
      var floor = floorOf(m.place);
      var label = floor !== null ? t("board.floor", { n: floor }) : shortPlace(m.place, within);
      if (!seen[label]) { seen[label] = true; out.push(label); }
    });
    return out.join(lang === "zh" ? "、" : ", ");
  }

  // Keep what a person is doing across a redraw: the focused control (by its data-role)
  // and where the caret was in it.
  function focusIn(container) {
    var a = document.activeElement;
    if (!a || a === document.body || !container.contains(a)) { return null; }
    var key = { role: a.getAttribute("data-role"), start: null, end: null };
    try { key.start = a.selectionStart; key.end = a.selectionEnd; } catch (e) { /* select */ }
    return key;
  }
  // Make `parent`'s element children the `fresh` ones, keeping in place every child whose
  // drawing is identical to one of them (only what changed is replaced; nothing kept is
  // moved unless it is out of order). Only for children of one and the same incident:
  // a kept child keeps its listeners.
  function reconcile(parent, fresh) {
    var pool = {};
    Array.prototype.forEach.call(parent.children, function (c) {
      (pool[c.outerHTML] = pool[c.outerHTML] || []).push(c);
    });
    var wanted = fresh.map(function (n) {
      var same = pool[n.outerHTML];
      return same && same.length ? same.shift() : n;
    });
    place(parent, wanted);
  }

  function place(parent, wanted) {
    wanted.forEach(function (node, i) {
      var here = parent.children[i];
      if (here !== node) { parent.insertBefore(node, here || null); }
    });
    while (parent.children.length > wanted.length) {
      parent.removeChild(parent.children[parent.children.length - 1]);
    }
  }

  // An incident's card redrawn in place: its attributes, and the children that changed.
  function morph(old, fresh) {
    Array.prototype.slice.call(old.attributes).forEach(function (a) {
      if (!fresh.hasAttribute(a.name)) { old.removeAttribute(a.name); }
    });
    Array.prototype.forEach.call(fresh.attributes, function (a) {
      if (old.getAttribute(a.name) !== a.value) { old.setAttribute(a.name, a.value); }
    });
    reconcile(old, Array.prototype.slice.call(fresh.children));
  }

  function refocus(container, key) {
    if (!key || !key.role) { return; }
    var again = container.querySelector('[data-role="' + key.role + '"]');
    if (!again) { return; }
    again.focus();
    if (typeof key.start === "number" && typeof again.setSelectionRange === "function") {
      try { again.setSelectionRange(key.start, key.end); } catch (e) { /* not text */ }
    }
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
    picks: {},         // incident id -> person picked in its assign select
    folds: {},         // group id -> whether its members' <details> is open
    confirm: {},       // incident id -> the resolve being confirmed (see resolveRequest)
    hint: {},          // incident id -> true: 处理完毕 was pressed with no outcome chosen
    known: {},         // incident id -> {name, place, severity}: every incident seen
    mute: null,        // {until: ms, covered: [incident ids]}
    audioBlocked: false
  };

  // -- who did it -----------------------------------------------------------------------

  function contactName(id) {
    var c = state.contacts[id];
    return c && c.name ? c.name : id;
  }

  // Actors as people read them: never "board:" or "link:" prefixes or the word sentinel.
  // Where a group's alarms are (floors, lowest first), shown on its card and timeline.
  function memberFloors(members, place) {
    var where = el("div", "member-floors");
    where.setAttribute("data-role", "member-floors");
    where.appendChild(el("span", "muted", t("board.members.where")));
    where.appendChild(document.createTextNode(" "));
    where.appendChild(el("strong", null, memberPlaces(members, place)));
    return where;
  }

  // `name`: the name an act from the district carried (its people are not our contacts).
  function actorName(actor, name) {
    if (!actor) { return "-"; }
    var s = String(actor);
    if (s === "sentinel") { return t("board.actor.system"); }
    if (s.indexOf("board:") === 0) {
      // The shared wall screen signed in without a name of its own: as notices name it.
      var who = s.slice(6);
      return who === "" || who === "operator" ? t("board.actor.board_shared")
        : t("board.actor.board", { name: who });
    }
    if (s.indexOf("cli:") === 0) { return t("board.actor.cli", { name: s.slice(4) }); }
    if (s.indexOf("link:") === 0) { return contactName(s.slice(5)); }
    if (s.indexOf("district:") === 0) {
      return t("board.actor.district", { name: name || s.slice(9) });
    }
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

    renderCounts();
    renderCompounds(s.compounds || []);
    renderKinds(s.devices || {});
    renderBattery(s.low_battery || []);
  }

  function natural(a, b) {
    return String(a).localeCompare(String(b), "zh-CN", { numeric: true });
  }

  // The chips count what the list shows: one per card (a group stands for the alarms
  // folded under it), each saying how many of them nobody has acknowledged yet; the
  // alarm banner's number is the critical and emergency part of those.
  function renderCounts() {
    var counts = $("severity-counts");
    clear(counts);
    var all = cards();
    SEVERITIES.forEach(function (label) {
      var mine = all.filter(function (c) { return c.inc.severity === label; });
      var n = mine.length;
      var k = mine.filter(function (c) { return c.inc.status === "firing"; }).length;
      if (!n && label === "maintenance") { return; }
      var chip = el("span", "chip sev-" + label + (n ? "" : " zero"));
      chip.setAttribute("data-severity", label);
      chip.setAttribute("data-count", String(n));
      chip.setAttribute("data-unacked", String(k));
      chip.appendChild(el("b", null, n));
      chip.appendChild(document.createTextNode(" " + t("severity." + label)));
      if (k) { chip.appendChild(el("span", "unacked", t("board.count.unacked", { n: k }))); }
      counts.appendChild(chip);
    });
  }

  // Open incidents per compound and per building ("compound\u0000building").
  function openHere() {
    var here = {};
    state.incidents.forEach(function (inc) {
      var p = inc.place || {};
      here[p.compound] = (here[p.compound] || 0) + 1;
      var key = p.compound + "\u0000" + p.building;
      here[key] = (here[key] || 0) + 1;
    });
    return here;
  }

  function renderCompounds(compounds) {
    var root = $("compounds");
    clear(root);
    var here = openHere();
    // Trouble first: the worst compounds on top, among equals the one with the most
    // open incidents, then by name; in each, its buildings the same way.
    compounds.slice().sort(function (a, b) {
      return (WORST.indexOf(b.worst) - WORST.indexOf(a.worst)) ||
        ((here[b.id] || 0) - (here[a.id] || 0)) || natural(a.id, b.id);
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
        (compound.buildings || []).slice().sort(function (a, b) {
          return (WORST.indexOf(b.worst || "ok") - WORST.indexOf(a.worst || "ok")) ||
            ((here[compound.id + "\u0000" + b.id] || 0) -
             (here[compound.id + "\u0000" + a.id] || 0)) || natural(a.id, b.id);
        })
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
          .filter(Boolean).sort(byFloor) };
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

  // The list is redrawn on every event, but what did not change stays as it is on the
  // screen: a card whose drawing is the same is kept whole, and a card that changed is
  // redrawn in place, part by part, keeping its unchanged parts (the row with an open
  // dropdown, a ticked box, text being typed). A fold opened by hand is redrawn open
  // (state.folds), a chosen outcome chosen (state.chosen), and a control replaced while it
  // had the focus gets it back.
  function renderIncidents() {
    var list = $("incidents");
    var shown = visibleCards();
    var all = cards();
    var folded = state.incidents.length - all.length;
    $("incident-count").textContent = state.filter
      ? shown.length + " / " + all.length : String(all.length);
    var foldedNote = $("incident-folded");
    if (foldedNote) {
      foldedNote.textContent = folded ? t("board.count.folded", { n: folded }) : "";
      foldedNote.hidden = !folded;
    }
    renderCounts();
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
    var old = {};
    Array.prototype.forEach.call(list.children, function (node) {
      var id = node.getAttribute("data-id");
      if (id) { old[id] = node; }
    });
    var wanted = shown.map(function (c) {
      var fresh = incidentCard(c.inc, c.members);
      var before = old[c.inc.id];
      if (!before) { return fresh; }
      if (before.outerHTML !== fresh.outerHTML) {
        var focus = focusIn(before);
        morph(before, fresh);
        if (focus && !before.contains(document.activeElement)) { refocus(before, focus); }
      }
      return before;
    });
    if (!wanted.length) {
      var empty = el("li", "empty", t("no_incidents"));
      wanted = [list.firstChild && list.firstChild.className === "empty" &&
                list.firstChild.textContent === empty.textContent ? list.firstChild : empty];
    }
    // Each card in its place, moving only what is out of place (moving a node would take
    // the focus from a control in it).
    place(list, wanted);
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

  // Nothing is chosen for the person: closing says what was found, on purpose.
  function outcomeSelect(inc) {
    var select = el("select", "outcome");
    select.setAttribute("aria-label", t("outcome.label"));
    select.setAttribute("data-role", "outcome");
    var none = el("option", null, t("board.outcome.pick"));
    none.value = "";
    select.appendChild(none);
    OUTCOMES.forEach(function (o) {
      var option = el("option", null, t("outcome." + o));
      option.value = o;
      select.appendChild(option);
    });
    select.value = state.chosen[inc.id] || "";
    select.addEventListener("click", function (e) { e.stopPropagation(); });
    select.addEventListener("change", function () {
      if (select.value) { state.chosen[inc.id] = select.value; } else { delete state.chosen[inc.id]; }
      // The card and the timeline show one choice (a kept <select> is not redrawn).
      var same = document.querySelectorAll('#incidents li[data-id="' + cssText(inc.id) +
        '"] [data-role="outcome"], #timeline[data-id="' + cssText(inc.id) +
        '"] [data-role="outcome"]');
      Array.prototype.forEach.call(same, function (other) { other.value = select.value; });
      if (state.hint[inc.id]) { delete state.hint[inc.id]; renderIncidents(); renderTimeline(); }
    });
    return select;
  }

  function currentIncident(id) {
    for (var i = 0; i < state.incidents.length; i++) {
      if (state.incidents[i].id === id) { return state.incidents[i]; }
    }
    return state.detail && state.detail.incident && state.detail.incident.id === id
      ? state.detail.incident : null;
  }

  // Closing a critical or emergency incident nobody has acknowledged takes a second,
  // explicit step (a box to tick): one tap must not close an alarm no one has looked at.
  function needsAck(inc) {
    return !!inc && inc.status === "firing" && !!ALARM_SEVERITIES[inc.severity];
  }

  function openMembers(inc) {
    return (inc.members || []).map(currentIncident).filter(function (m) {
      return m && m.status !== "resolved";
    });
  }

  // Acknowledge and resolve (with its outcome): on a card and in the timeline. 处理完毕
  // asks for an outcome, then shows what will be closed and who will be told; only the
  // confirmation's own button closes.
  function actionRow(inc, where) {
    var pending = state.confirm[inc.id];
    if (pending && pending.where === where) { return confirmBox(inc, pending); }
    var actions = el("div", "actions");
    if (inc.status === "firing") {
      actions.appendChild(button("btn-ack", t("btn.ack"), "ack",
        function () { acknowledge(inc.id); }, inc.id));
    }
    actions.appendChild(outcomeSelect(inc));
    actions.appendChild(button("btn-resolve", t("btn.resolve"), "resolve",
      function () { resolveRequest(inc.id, where); }, inc.id));
    if (state.hint[inc.id]) {
      var hint = el("p", "hint", t("board.resolve.pick_first"));
      hint.setAttribute("role", "alert");
      hint.setAttribute("data-role", "hint");
      actions.appendChild(hint);
    }
    return actions;
  }

  function confirmBox(inc, pending) {
    var box = el("div", "actions confirm");
    box.setAttribute("data-role", "confirm");
    box.addEventListener("click", function (e) { e.stopPropagation(); });
    var members = openMembers(inc);
    box.appendChild(el("p", "confirm-what", t("board.resolve.what", {
      title: incidentTitle(inc.name), place: placeText(inc.place) }) +
      (members.length ? t("board.resolve.with_members", { n: members.length }) : "")));
    box.appendChild(el("p", "confirm-outcome",
      t("board.resolve.outcome", { outcome: outcomeText(pending.outcome) })));
    var told = pending.told === null ? t("board.resolve.told_loading")
      : pending.told.length ? t("board.resolve.told", {
        list: pending.told.join(lang === "zh" ? "、" : ", ") })
      : t("board.resolve.told_none");
    var toldLine = el("p", "confirm-told", told);
    toldLine.setAttribute("data-role", "told");
    box.appendChild(toldLine);
    var blocked = needsAck(inc);
    if (blocked) {
      box.appendChild(el("p", "bad", t("board.resolve.unacked")));
      var label = el("label", "override");
      var tick = el("input");
      tick.type = "checkbox";
      tick.setAttribute("data-role", "override");
      tick.checked = !!pending.override;
      tick.addEventListener("change", function () {
        pending.override = tick.checked;
        renderIncidents();
        renderTimeline();
      });
      label.appendChild(tick);
      label.appendChild(document.createTextNode(" " + t("board.resolve.override")));
      box.appendChild(label);
    }
    var note = el("textarea", "resolve-note");
    note.rows = 2;
    note.maxLength = 2000;
    note.setAttribute("data-role", "resolve-note");
    note.setAttribute("placeholder", t("board.resolve.note"));
    note.setAttribute("aria-label", t("board.resolve.note"));
    note.value = pending.note || "";
    note.addEventListener("input", function () { pending.note = note.value; });
    box.appendChild(note);
    var go = button("btn-resolve", t("board.resolve.confirm"), "resolve-confirm", function () {
      var now = currentIncident(inc.id) || inc;
      if (needsAck(now) && !pending.override) { return; }
      resolveIncident(inc.id, pending.outcome, (pending.note || "").trim() || null);
    }, inc.id);
    if (blocked && !pending.override) { go.disabled = true; }
    var buttons = el("div", "confirm-buttons");
    buttons.appendChild(go);
    buttons.appendChild(button("btn-cancel", t("board.resolve.cancel"), "resolve-cancel",
      function () {
        delete state.confirm[inc.id];
        renderIncidents();
        renderTimeline();
      }, null));
    box.appendChild(buttons);
    return box;
  }

  // 处理完毕: an outcome first; then the confirmation, which asks the daemon who was
  // reached about the incident (and its open members): they get the closing notice.
  function resolveRequest(id, where) {
    var outcome = state.chosen[id];
    if (!outcome) {
      state.hint[id] = true;
      renderIncidents();
      renderTimeline();
      var scope = where === "timeline" ? $("timeline")
        : document.querySelector('#incidents li[data-id="' + cssText(id) + '"]');
      var pick = scope && scope.querySelector('[data-role="outcome"]');
      if (pick) { pick.focus(); }
      return;
    }
    delete state.hint[id];
    var pending = { outcome: outcome, where: where, told: null, override: false, note: "" };
    state.confirm[id] = pending;
    renderIncidents();
    renderTimeline();
    var inc = currentIncident(id);
    var ids = [id].concat((inc ? openMembers(inc) : []).map(function (m) { return m.id; }));
    Promise.all(ids.map(function (one) {
      return getJSON("/api/incidents/" + encodeURIComponent(one)).catch(function () {
        return {};
      });
    })).then(function (details) {
      if (state.confirm[id] !== pending) { return; }
      var seen = {}, names = [];
      details.forEach(function (d) {
        (d.audit || []).map(flatten).forEach(function (e) {
          var who = e.type === "attempt" && e.ok ? e.contact_id
            : e.type === "notification_sent" ? e.contact : null;
          if (who && !seen[who]) { seen[who] = true; names.push(contactName(who)); }
        });
      });
      pending.told = names;
      renderIncidents();
      renderTimeline();
    });
  }

  function memberLine(m, group) {
    var li = el("li", "member sev-" + m.severity + " st-" + m.status);
    li.setAttribute("data-id", m.id);
    li.setAttribute("data-status", m.status);
    var floor = floorOf(m.place);
    if (floor !== null) { li.setAttribute("data-floor", String(floor)); }
    li.appendChild(el("span", "badge sev-" + m.severity, t("severity." + m.severity)));
    li.appendChild(el("span", null, incidentTitle(m.name)));
    li.appendChild(el("span", "where", shortPlace(m.place, group.place)));
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
      // Where they are (floors, lowest first) shows without opening the fold.
      li.appendChild(memberFloors(members, inc.place));
      var box = el("details", "members");
      box.open = state.folds[inc.id] !== undefined ? state.folds[inc.id] : members.length <= 4;
      box.appendChild(el("summary", null, t("board.members", { n: members.length })));
      box.addEventListener("click", function (e) { e.stopPropagation(); });
      // Opened or closed by hand, it stays so through every redraw.
      box.addEventListener("toggle", function () { state.folds[inc.id] = box.open; });
      var ul = el("ul", "member-list");
      members.forEach(function (m) { ul.appendChild(memberLine(m, inc)); });
      box.appendChild(ul);
      li.appendChild(box);
    }

    if (OPERATOR && inc.status !== "resolved") { li.appendChild(actionRow(inc, "card")); }
    return li;
  }

  // The per-alert record against GB 50440 (limits from the daemon's settings).
  function seconds(value) { return value < 10 ? value.toFixed(2) : value.toFixed(1); }
  // The limits bind life-safety alarms that page on their own (as the daemon checks
  // them): a maintenance incident only goes into the daily digest, an alarm folded into a
  // group is paged through the group, a silenced one pages nobody. Those show no "not
  // delivered yet" and no limit: nothing was due.
  function latencyText(inc) {
    var box = el("div", "inc-latency muted");
    box.setAttribute("data-role", "latency");
    if (inc.severity === "maintenance") {
      box.appendChild(el("span", null, t("board.latency.digest")));
      return box;
    }
    var timing = inc.timing || {};
    var origin = timing.device !== undefined ? timing.device : timing.received;
    if (origin === undefined) { return null; }
    var limits = (state.status && state.status.latency_limits) ||
      { accepted_within: 10, handed_within: 3 };
    var bound = inc.life_safety === true;
    var pages = bound && !(inc.groups || []).length &&
      (inc.silenced_by === null || inc.silenced_by === undefined);
    var first = null;
    if (timing.accepted !== undefined) {
      var took = Math.max(0, timing.accepted - origin);
      var over = bound && took > limits.accepted_within;
      first = el("span", over ? "latency-over" : null, bound
        ? t("latency.first_notification", { s: seconds(took), limit: limits.accepted_within }) +
          (over ? t("latency.over") : "")
        : t("board.latency.first_plain", { s: seconds(took) }));
    } else if (pages && inc.status === "firing") {
      first = el("span", null, t("latency.first_pending", { limit: limits.accepted_within }));
    }
    if (first) { box.appendChild(first); }
    if (bound && timing.handed !== undefined && timing.received !== undefined) {
      var forward = Math.max(0, timing.handed - timing.received);
      box.appendChild(el("span", forward > limits.handed_within ? "latency-over" : null,
        t("latency.forward", { s: seconds(forward), limit: limits.handed_within }) +
        (forward > limits.handed_within ? t("latency.over") : "")));
    }
    return box.firstChild ? box : null;
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
      case "acknowledged": return t("feed.acknowledged", { who: actorName(ev.actor, ev.name) });
      case "resolved":
        return t("feed.resolved", { who: actorName(ev.actor, ev.name), outcome: outcomeText(ev.outcome) });
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
      var inc = data && data.incident;
      if (inc) { know(inc.id, inc.name, inc.place, inc.severity); }
      renderTimeline();
    }, function () { /* kept as it was; the next event or refresh tries again */ });
  }

  function outcomeText(outcome) {
    return outcome && has("outcome." + outcome) ? t("outcome." + outcome) : (outcome || "-");
  }

  // Pages, deliveries, acknowledgements, assignment, notes: one line each, in order.
  function timelineText(ev) {
    var by = actorName(ev.by || ev.actor, ev.name);
    switch (ev.type) {
      case "opened": return t("board.tl.opened", { title: incidentTitle(ev.name || "") });
      case "acknowledged": return t("board.tl.acknowledged", { by: by });
      case "assigned": return t("board.tl.assigned", { by: by, who: contactName(ev.person) });
      case "noted": return t("board.tl.noted", { by: actorName(ev.actor, ev.name), text: ev.text || "" });
      case "resolved": return t("board.tl.resolved", { by: by, outcome: outcomeText(ev.outcome) });
      case "member_added": {
        var member = state.known[ev.member];
        if (!member) { return t("board.tl.member_added", { member: ev.member || "-" }); }
        var group = state.known[ev.incident] || (state.detail && state.detail.incident) || {};
        return t("board.tl.member_joined", { title: incidentTitle(member.name),
          where: shortPlace(member.place, group.place) });
      }
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
    pick.setAttribute("data-role", "person");
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
    pick.value = state.picks[inc.id] || inc.assigned_to || "";
    pick.addEventListener("change", function () { state.picks[inc.id] = pick.value; });
    row.appendChild(pick);
    row.appendChild(button("btn-assign", t("board.btn.assign"), "assign", function () {
      if (pick.value) { assign(inc.id, pick.value); }
    }, inc.id));
    return row;
  }

  function noteRow(inc) {
    var row = el("div", "actions note");
    var text = el("textarea", "note-text");
    text.setAttribute("data-role", "note-text");
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

  // Like the cards: drawn afresh, but put on the screen only when the drawing changed,
  // and then with the focused control, its caret and the scroll position kept.
  function renderTimeline() {
    var root = $("timeline");
    $("timeline-close").hidden = !state.selected;
    $("timeline-close").textContent = t("board.timeline.close");
    var fresh = document.createElement("div");
    var id = drawTimeline(fresh);
    if ((root.getAttribute("data-id") || "") === id && root.innerHTML === fresh.innerHTML) {
      return;
    }
    var focus = focusIn(root);
    var scroll = root.scrollTop;
    if ((root.getAttribute("data-id") || "") === id) {
      // The same incident: only the parts that changed (a new line in the list) are
      // redrawn; the note being typed, its caret and the scroll position stay.
      reconcile(root, Array.prototype.slice.call(fresh.children));
      root.scrollTop = scroll;
    } else {
      // Another incident: everything anew (its buttons act on it, not the one before).
      clear(root);
      while (fresh.firstChild) { root.appendChild(fresh.firstChild); }
      root.setAttribute("data-id", id);
    }
    if (focus && !root.contains(document.activeElement)) { refocus(root, focus); }
  }

  // The timeline's content into `root`; the id of the incident shown ("" for none).
  function drawTimeline(root) {
    if (!state.selected) {
      root.appendChild(el("p", "muted", t("board.timeline.pick")));
      return "";
    }
    var detail = state.detail;
    if (!detail) { root.appendChild(el("p", "muted", t("board.timeline.loading"))); return ""; }
    var inc = detail.incident || {};
    var head = el("div", "inc-head");
    head.appendChild(el("span", "badge sev-" + inc.severity, t("severity." + inc.severity)));
    head.appendChild(el("strong", "inc-title", incidentTitle(inc.name || "")));
    head.appendChild(el("span", "status status-" + inc.status, t("status." + inc.status)));
    root.appendChild(head);
    root.appendChild(el("div", "inc-place", placeText(inc.place)));
    var members = (inc.members || []).map(function (m) { return state.known[m]; })
      .filter(Boolean);
    if (members.length) {
      root.appendChild(memberFloors(members, inc.place));
    }
    root.appendChild(el("div", "muted assigned", inc.assigned_to
      ? t("board.assigned", { who: contactName(inc.assigned_to) }) : t("board.unassigned")));
    if (OPERATOR && inc.status && inc.status !== "resolved") {
      root.appendChild(actionRow(inc, "timeline"));
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
    return inc.id || "";
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

  function know(id, name, place, severity) {
    if (!id || !name) { return; }
    var was = state.known[id] || {};
    state.known[id] = { name: name, place: place || was.place || {},
                        severity: severity || was.severity };
  }

  function remember(ev) {
    if (ev.name && ev.incident) { state.names[ev.incident] = ev.name; }
    if (ev.place && ev.incident) { know(ev.incident, ev.name, ev.place, ev.severity); }
    if (typeof ev.seq === "number" && ev.seq > state.lastSeq) { state.lastSeq = ev.seq; }
    if (FEED_TYPES[ev.type]) {
      state.feed.unshift(ev);
      if (state.feed.length > FEED_MAX) { state.feed.length = FEED_MAX; }
    }
  }

  function setIncidents(list) {
    state.incidents = list;
    list.forEach(function (inc) {
      state.names[inc.id] = inc.name;
      know(inc.id, inc.name, inc.place, inc.severity);
    });
    var open = {};
    list.forEach(function (inc) { open[inc.id] = true; });
    // What was typed or chosen for an incident that closed goes with it.
    [state.chosen, state.confirm, state.hint, state.picks, state.folds].forEach(function (m) {
      Object.keys(m).forEach(function (id) { if (!open[id]) { delete m[id]; } });
    });
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

  function resolveIncident(id, outcome, note) {
    act(id, "/api/incidents/" + encodeURIComponent(id) + "/resolve",
      { actor: ACTOR, outcome: outcome, note: note || null }, function () {
        delete state.confirm[id];
        delete state.chosen[id];
      });
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
      // A redraw keeps a text box that looks the same, with what is typed in it: empty
      // the one that held the note sent (a value is not part of the drawing).
      var boxes = document.querySelectorAll('#timeline [data-role="note-text"]');
      Array.prototype.forEach.call(boxes, function (box) {
        if ($("timeline").getAttribute("data-id") === id && box.value.trim() === text) {
          box.value = "";
        }
      });
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
