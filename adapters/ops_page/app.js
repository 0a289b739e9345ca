// syncref operator's page: polls /ops/data and renders it.  Every value is written with
// textContent (stream ids and payloads come from clients), nothing is loaded from elsewhere.
"use strict";

const MIN_GAP_MS = 150; // between two requests; each is a long poll (the server holds it up to 1 s)
let committed = null;
const KEY = "syncref.ops.token";

function takeToken() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem(KEY, fromUrl);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(KEY);
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function when(us) {
  if (us === null || us === undefined) return "";
  const d = new Date(us / 1000);
  return d.toISOString().replace("T", " ").replace("Z", "");
}

function ago(us, now) {
  if (us === null || us === undefined) return "";
  const s = Math.max(0, (now - us) / 1e6);
  if (s < 60) return s.toFixed(1) + " s ago";
  if (s < 3600) return (s / 60).toFixed(1) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}

function short(id) {
  return typeof id === "string" && id.length > 16 ? id.slice(0, 12) + "…" : id;
}

function cell(value) {
  if (value === null || value === undefined) return el("td", "");
  if (typeof value === "number") return el("td", value, "num");
  if (typeof value === "boolean") return el("td", value ? "yes" : "no");
  if (Array.isArray(value)) return el("td", value.join(", "), "wrap");
  if (typeof value === "object") return el("td", JSON.stringify(value), "wrap mono");
  return el("td", value);
}

// A table from rows; columns: [header, row -> value | Node, key?]
function table(rows, columns, keyOf, flashKeys) {
  if (!rows || rows.length === 0) return el("p", "none", "empty");
  const t = el("table");
  if (columns.some(([h]) => h)) {
    const head = el("tr");
    for (const [h] of columns) head.appendChild(el("th", h));
    t.appendChild(el("thead")).appendChild(head);
  }
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr");
    if (keyOf) tr.dataset.key = keyOf(row);
    if (flashKeys && keyOf && flashKeys.has(keyOf(row))) tr.className = "flash";
    for (const [, get] of columns) {
      const v = get(row);
      if (v instanceof Node) { const td = el("td"); td.appendChild(v); tr.appendChild(td); }
      else tr.appendChild(cell(v));
    }
    body.appendChild(tr);
  }
  t.appendChild(body);
  const wrap = el("div", null, "scroll");
  wrap.appendChild(t);
  return wrap;
}

function counts(obj) {
  const entries = Object.entries(obj || {});
  if (entries.length === 0) return el("p", "none", "empty");
  return table(entries.map(([k, v]) => ({ k, v })), [["", r => r.k], ["", r => r.v]]);
}

function put(id, node) {
  const box = document.getElementById(id);
  box.replaceChildren(node);
}

function card(k, v, cls) {
  const c = el("div", null, "card");
  c.appendChild(el("div", v, "v" + (cls ? " " + cls : "")));
  c.appendChild(el("div", k, "k"));
  return c;
}

const STREAM_FIXED = ["stream_id", "stream_class", "epoch", "floor_seq", "head_seq", "retained_events"];
const STREAM_SKIP = new Set([...STREAM_FIXED, "last_append", "created_at", "updated_at", "continues_epoch",
  "continues_seq"]);

// schema 2: an epoch either started fresh (a new stream, an admin reset) or continues an earlier one
// (the recovery epoch after an unclean restart) up to continues_seq
function origin(r) {
  if (!("continues_epoch" in r)) return "";
  return r.continues_epoch ? "continues epoch " + r.continues_epoch + " to seq " + r.continues_seq : "fresh";
}
let lastHeads = new Map();

function render(d) {
  const now = d.server.now;
  const dur = d.durability;
  const overview = [
    card("database", d.server.database),
    card("uptime", d.server.uptime_s + " s"),
    card("committed offset", dur.committed_offset),
    card("durable offset", dur.durable_offset),
    card("not yet durable", dur.undurable, dur.undurable > 0 ? "bad" : "good"),
    card("streams", d.streams.total),
    card("viewer", d.viewer.scope === "full" ? "admin (*)" : "limited: " + d.viewer.streams.join(", ")),
  ];
  if (d.connections) overview.splice(5, 0, card("connections", d.connections.total));
  if (dur.failed) overview.unshift(card("DURABILITY FAILED", dur.failed, "bad"));
  document.getElementById("overview").replaceChildren(...overview);

  // streams: the fixed columns first, then whatever else the schema has (new columns appear by themselves)
  const extra = [];
  for (const row of d.streams.rows) for (const k of Object.keys(row)) if (!STREAM_SKIP.has(k) && !extra.includes(k)) extra.push(k);
  const changed = new Set();
  const heads = new Map();
  for (const row of d.streams.rows) {
    heads.set(row.stream_id, row.head_seq);
    if (lastHeads.size && lastHeads.get(row.stream_id) !== row.head_seq) changed.add(row.stream_id);
  }
  lastHeads = heads;
  const streamCols = [
    ["stream", r => r.stream_id], ["class", r => r.stream_class], ["epoch", r => r.epoch],
    ["epoch origin", origin],
    ["floor", r => r.floor_seq], ["head", r => r.head_seq], ["retained", r => r.retained_events],
    ...extra.map(k => [k.replaceAll("_", " "), r => r[k]]),
    ["last append", r => r.last_append ? "seq " + r.last_append.seq + " · " + ago(r.last_append.at, now) : ""],
    ["last tx", r => r.last_append ? r.last_append.tx_offset : null],
  ];
  put("streams", table(d.streams.rows, streamCols, r => r.stream_id, changed));
  document.getElementById("streams-count").textContent = countText(d.streams);

  if (d.connections) {
    put("connections", table(d.connections.rows, [
      ["id", r => r.conn_id], ["identity", r => short(r.identity)], ["protocol", r => r.protocol],
      ["compression", r => r.compression], ["confirmed reads", r => r.confirmed_reads],
      ["subscriptions", r => r.subscriptions], ["queries", r => r.queries.join(" ; ")],
      ["outbound queue", r => r.outbound_queue], ["queued bytes", r => r.outbound_bytes],
      ["lag (tx)", r => r.lag.transactions], ["unreleased", r => r.lag.unreleased],
      ["connected", r => ago(r.connected_at, now)],
    ], r => String(r.conn_id)));
    document.getElementById("connections-count").textContent = countText(d.connections);
  } else {
    put("connections", el("p", "hidden for a limited token", "empty"));
  }

  const b = dur.recent_batches;
  put("durability", table([
    { k: "committed offset", v: dur.committed_offset }, { k: "durable offset", v: dur.durable_offset },
    { k: "committed, not yet durable", v: dur.undurable }, { k: "max not yet durable", v: dur.max_undurable },
    { k: "group commits", v: dur.batches }, { k: "records written", v: dur.records_written },
    { k: "batch size min / mean / max (last " + b.count + ")", v: b.count ? b.min + " / " + b.mean + " / " + b.max : "" },
    { k: "last batch sizes", v: b.last.join(" ") },
    { k: "log id", v: dur.log_id === null ? "" : dur.log_id },
    { k: "head mark offset (behind durable)", v: dur.head_mark.offset + (dur.head_mark.behind === null ? "" : " (" + dur.head_mark.behind + ")") },
    { k: "head marks written / failed", v: dur.head_mark.written + " / " + dur.head_mark.errors },
  ], [["", r => r.k], ["", r => r.v]]));

  put("presence", table(d.presence.rows, [
    ["session", r => r.session_id], ["identity", r => short(r.identity)], ["device", r => r.device_id],
    ["status", r => r.status], ["region", r => r.region], ["last seen", r => ago(r.last_seen, now)],
    ["reason", r => r.offline_reason],
  ], r => r.session_id));
  document.getElementById("presence-count").textContent = countText(d.presence);

  const hiddenText = "hidden for a limited token";
  put("assignments", d.assignments ? counts(d.assignments.by_status) : el("p", hiddenText, "empty"));
  if (d.outbox) {
    const box = el("div");
    box.appendChild(counts({ backlog: d.outbox.backlog, "dead letters": d.outbox.dead_letters, ...d.outbox.by_status }));
    if (d.outbox.recent_dead.length) box.appendChild(table(d.outbox.recent_dead, [
      ["dead letter", r => r.outbox_id], ["attempts", r => r.attempts], ["last error", r => r.last_error]]));
    put("outbox", box);
  } else put("outbox", el("p", hiddenText, "empty"));
  put("stale", d.stale_cursors ? counts(d.stale_cursors) : el("p", hiddenText, "empty"));
  if (d.disconnects) {
    const box = el("div");
    box.appendChild(counts({ "slow consumer": d.disconnects.slow_consumer, ...d.disconnects.by_cause }));
    const refused = Object.entries(d.disconnects.refused_by_limit);
    if (refused.length) box.appendChild(counts(Object.fromEntries(refused.map(([k, v]) => ["refused: " + k, v]))));
    put("disconnects", box);
  } else put("disconnects", el("p", hiddenText, "empty"));
  put("errors", d.errors ? table(d.errors, [
    ["at", r => when(r.at_us)], ["level", r => r.level], ["logger", r => r.logger], ["message", r => r.message],
  ]) : el("p", hiddenText, "empty"));
  document.getElementById("hidden").textContent = d.hidden.length
    ? "This token is limited to " + d.viewer.streams.join(", ") + ": " + d.hidden.join(", ") + " are not shown."
    : "";
}

function countText(list) {
  return list.total > list.rows.length ? "(" + list.rows.length + " of " + list.total + ")" : "(" + list.total + ")";
}

function status(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = bad ? "status bad" : "status";
}

async function poll(token) {
  try {
    const url = committed === null ? "/ops/data" : "/ops/data?wait=" + committed;
    const r = await fetch(url, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    if (!r.ok) {
      status("HTTP " + r.status + ": " + (await r.text()), true);
      if (r.status === 401 || r.status === 403) return;  // no point asking again
    } else {
      const d = await r.json();
      committed = d.durability.committed_offset;
      render(d);
      status("live · updated " + new Date().toLocaleTimeString());
    }
  } catch (e) {
    status("server unreachable, retrying", true);
    committed = null;
    setTimeout(() => poll(token), 1000);
    return;
  }
  setTimeout(() => poll(token), MIN_GAP_MS);
}

const token = takeToken();
if (token) poll(token); else status("no token: open this page as /?token=ADMIN_TOKEN", true);
