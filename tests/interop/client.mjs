// The SDK interop scenario: the official npm `spacetimedb` client against a syncref server.
//
// Driven by flags or environment (flags win):
//   --url  SYNCREF_URL     server base URL, e.g. http://127.0.0.1:8123
//   --db   SYNCREF_DB      database name (default autopilot-sync)
//   --token SYNCREF_TOKEN  a JWT minted by `syncref token mint` (scopes sync.subscribe,sync.append)
//   --stream SYNCREF_STREAM  the stream the scenario works on (the test pre-appends seqs 1..5)
//   --compression SYNCREF_COMPRESSION  gzip (default) or none (Node 20 has no brotli DecompressionStream)
//   SYNCREF_WS_PROTOCOLS   comma list overriding the subprotocols the SDK offers (e.g. to force v2)
//   SYNCREF_TAP=1          also log every raw inbound frame (hex) to stderr, for debugging a server
//
// Every observation is one JSON object per line on stdout, {"event": ..., ...}. When the test has
// to act, the client prints {"event": "ready", "step": ...} and waits for a line on stdin naming
// that step. Every wait gives up after WAIT_MS with {"event": "error", ...} and exit code 1.
//
// Steps: (a) connect (the SDK trades the token at POST /v1/identity/websocket-token, then opens the
// WebSocket); (b) resume sync_event from watermark 2, plus the stream row through the SDK's typed
// query builder (quoted SQL); (c) live tail of two events the test appends over HTTP; (d) reducer
// calls: append, idempotent replay, idempotency conflict; (e) an event-table row (stream_signal);
// (f) unsubscribe, then disconnect.
//
// The only thing between the SDK and undici's WebSocket is a subclass that observes the socket
// (negotiated subprotocol, close code and reason, a summary of every inbound frame from
// frame_tap.mjs) and can narrow the offered subprotocols; the SDK resolves it as the global
// WebSocket exactly as it would undici's, and it receives every frame unchanged.

import readline from "node:readline";
import { parseArgs } from "node:util";
import { BinaryReader, toSql } from "spacetimedb";
import { WebSocket as UndiciWebSocket } from "undici";
import { DbConnection, REMOTE_MODULE, tables } from "./bindings/index.js";
import { summarizeFrame } from "./frame_tap.mjs";
import { rowToJson, toJson } from "./wire_json.mjs";

const WAIT_MS = 15_000;

// The SDK logs with console.log; keep stdout for the JSON observations only.
console.log = (...args) => console.error(...args);

const { values: flags } = parseArgs({
  options: {
    url: { type: "string" },
    db: { type: "string" },
    token: { type: "string" },
    stream: { type: "string" },
    compression: { type: "string" },
  },
});
const URL_ = flags.url ?? process.env.SYNCREF_URL;
const DB = flags.db ?? process.env.SYNCREF_DB ?? "autopilot-sync";
const TOKEN = flags.token ?? process.env.SYNCREF_TOKEN;
const STREAM = flags.stream ?? process.env.SYNCREF_STREAM;
const COMPRESSION = flags.compression ?? process.env.SYNCREF_COMPRESSION ?? "gzip";
const PROTOCOLS = process.env.SYNCREF_WS_PROTOCOLS?.split(",").filter(Boolean);
const TAP = process.env.SYNCREF_TAP === "1";

// --- output, failure, waiting ------------------------------------------------------------------

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function fail(what, detail = {}) {
  emit({ event: "error", what, ...detail });
  process.exit(1);
}

/** Resolve when check() returns a truthy value (polled); fail with `what` after WAIT_MS. */
function until(what, check, ms = WAIT_MS) {
  return new Promise((resolve) => {
    const started = Date.now();
    const timer = setInterval(() => {
      let value;
      try {
        value = check();
      } catch (e) {
        clearInterval(timer);
        fail(what, { message: String(e?.stack ?? e) });
      }
      if (value) {
        clearInterval(timer);
        resolve(value);
      } else if (Date.now() - started > ms) {
        clearInterval(timer);
        fail(`timeout: ${what}`, { waited_ms: ms, observed: snapshot() });
      }
    }, 5);
  });
}

function withTimeout(what, promise, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// stdin commands: one word per line, consumed in order.
const commands = [];
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim()) commands.push(line.trim());
});

async function ready(step) {
  emit({ event: "ready", step });
  const got = await until(`stdin command ${step}`, () => commands.length > 0 && commands.shift());
  if (got !== step) fail("unexpected stdin command", { expected: step, got });
}

process.on("unhandledRejection", (e) => fail("unhandled rejection", { message: String(e?.stack ?? e) }));
process.on("uncaughtException", (e) => fail("uncaught exception", { message: String(e?.stack ?? e) }));

if (!URL_ || !TOKEN || !STREAM) fail("usage: --url, --token and --stream (or SYNCREF_URL/TOKEN/STREAM) are required");

// --- the observed WebSocket ----------------------------------------------------------------------

const socket = { protocol: null, close: null, frames: 0 };

class ObservedWebSocket extends UndiciWebSocket {
  constructor(url, protocols) {
    super(url, PROTOCOLS ?? protocols);
    const u = new URL(url);
    emit({
      event: "ws_open_request",
      path: u.pathname,
      params: Object.fromEntries([...u.searchParams].map(([k, v]) => [k, k === "token" ? v.length > 0 : v])),
      protocols: PROTOCOLS ?? protocols,
    });
    this.addEventListener("open", () => {
      socket.protocol = this.protocol;
      emit({ event: "ws_open", protocol: this.protocol });
    });
    this.addEventListener("message", (ev) => {
      socket.frames += 1;
      emit({ event: "frame", ...summarizeFrame(ev.data) });
      if (TAP) process.stderr.write(`frame ${Buffer.from(ev.data).toString("hex")}\n`);
    });
    this.addEventListener("close", (ev) => {
      socket.close = { code: ev.code, reason: ev.reason, clean: ev.wasClean };
      emit({ event: "ws_close", ...socket.close });
    });
  }
}
globalThis.WebSocket = ObservedWebSocket;

// --- state observed through the SDK --------------------------------------------------------------

const state = {
  connected: null,
  disconnected: null,
  inserts: [], // sync_event inserts: {seq, phase}
  deletes: [],
  streamRows: [], // sync_stream row versions seen
  signals: [],
  applied: new Set(),
  ended: new Set(),
  subErrors: [],
};

function snapshot() {
  return {
    connected: state.connected !== null,
    insert_seqs: state.inserts.map((i) => i.seq),
    delete_seqs: state.deletes,
    applied: [...state.applied],
    ended: [...state.ended],
    signals: state.signals.length,
    socket,
  };
}

const sqlString = (s) => `'${s.replaceAll("'", "''")}'`;
const T = REMOTE_MODULE.tables;

/** What the SDK says caused a row callback; for a reducer event, its name and decoded return value. */
function cause(ctx) {
  const ev = ctx.event;
  const out = { phase: ev.tag };
  if (ev.tag === "Reducer") {
    out.reducer = ev.value.reducer.name;
    const outcome = ev.value.outcome;
    out.outcome = outcome.tag;
    if (outcome.tag === "Ok" && ev.value.reducer.name === "append_sync_event") {
      const ret = outcome.value.retValue;
      out.ret_value_hex = Buffer.from(ret).toString("hex");
      if (ret.length === 8) out.ret_seq = toJson(new BinaryReader(ret).readU64());
    }
  }
  return out;
}

function cachedEvents(conn) {
  return [...conn.db.syncEvent.iter()].map((r) => rowToJson(T.syncEvent, r)).sort((a, b) => a.seq - b.seq);
}

// --- (a) connect ---------------------------------------------------------------------------------

const conn = DbConnection.builder()
  .withUri(URL_)
  .withDatabaseName(DB)
  .withToken(TOKEN)
  .withCompression(COMPRESSION)
  .onConnect((c, identity, token) => {
    state.connected = { identity: identity.toHexString(), connection_id: c.connectionId.toHexString() };
    emit({ event: "connect", ...state.connected, token_is_ours: token === TOKEN });
  })
  .onConnectError((_c, err) => fail("connect error", { message: String(err?.message ?? err), socket }))
  .onDisconnect((_c, err) => {
    state.disconnected = { error: err ? String(err.message ?? err) : null };
    emit({ event: "disconnect", ...state.disconnected });
  })
  .build();

conn.db.syncEvent.onInsert((ctx, row) => {
  const r = rowToJson(T.syncEvent, row);
  state.inserts.push({ seq: r.seq, phase: ctx.event.tag });
  emit({ event: "insert", table: "sync_event", ...cause(ctx), row: r });
});
conn.db.syncEvent.onDelete((ctx, row) => {
  const r = rowToJson(T.syncEvent, row);
  state.deletes.push(r.seq);
  emit({ event: "delete", table: "sync_event", ...cause(ctx), row: r });
});
conn.db.syncStream.onInsert((ctx, row) => {
  state.streamRows.push(rowToJson(T.syncStream, row));
  emit({ event: "insert", table: "sync_stream", ...cause(ctx), row: rowToJson(T.syncStream, row) });
});
conn.db.syncStream.onUpdate((ctx, oldRow, newRow) => {
  state.streamRows.push(rowToJson(T.syncStream, newRow));
  emit({ event: "update", table: "sync_stream", ...cause(ctx), old: rowToJson(T.syncStream, oldRow),
         row: rowToJson(T.syncStream, newRow) });
});
conn.db.streamSignal.onInsert((ctx, row) => {
  state.signals.push(rowToJson(T.streamSignal, row));
  emit({ event: "insert", table: "stream_signal", ...cause(ctx), row: rowToJson(T.streamSignal, row) });
});

await until("onConnect", () => state.connected);

function subscribe(name, queries) {
  const handle = conn.subscriptionBuilder()
    .onApplied(() => {
      state.applied.add(name);
      emit({ event: "applied", query_set: name, sync_event_cache: cachedEvents(conn).map((r) => r.seq) });
    })
    .onError((_ctx, err) => {
      state.subErrors.push({ name, message: err.message });
      fail("subscription error", { query_set: name, message: err.message });
    })
    .subscribe(queries);
  emit({ event: "subscribe", query_set: name,
         queries: queries.map((q) => (typeof q === "string" ? q : toSql(q))) });
  return handle;
}

/** A subscription the server must refuse: resolve with the SDK's error message. */
function refused(name, queries) {
  conn.subscriptionBuilder()
    .onApplied(() => fail("subscription applied, expected a SubscriptionError", { query_set: name }))
    .onError((_ctx, err) => {
      const message = String(err?.message ?? err);
      state.subErrors.push({ name, message });
      emit({ event: "refused", query_set: name, message });
    })
    .subscribe(queries);
  return until(`SubscriptionError(${name})`, () => state.subErrors.some((e) => e.name === name));
}

// --- (b) resume from watermark 2 -------------------------------------------------------------------

// A resume must pin the stream and the epoch (ADR-0003): a seq bound alone is refused with invalid_query.
await refused("unpinned", [tables.syncEvent.where((r) => r.streamId.eq(STREAM)).where((r) => r.seq.gt(2n))]);
// The typed query builder's resume (quoted identifiers, parenthesized conjuncts) is accepted:
// SELECT * FROM "sync_event" WHERE (("sync_event"."stream_id" = '...') AND ("sync_event"."epoch" = 1)) AND (... > 2).
const events = subscribe("events", [
  tables.syncEvent.where((r) => r.streamId.eq(STREAM)).where((r) => r.epoch.eq(1n)).where((r) => r.seq.gt(2n))]);
await until("SubscribeApplied(events) and its 3 rows", () => state.applied.has("events") && state.inserts.length >= 3);
emit({ event: "cache", table: "sync_event", rows: cachedEvents(conn) });

// The typed query builder emits quoted identifiers: SELECT * FROM "sync_stream" WHERE ("sync_stream"."stream_id" = '...').
subscribe("stream", [tables.syncStream.where((r) => r.streamId.eq(STREAM))]);
await until("SubscribeApplied(stream)", () => state.applied.has("stream") && state.streamRows.length >= 1);
emit({ event: "cache", table: "sync_stream", rows: [...conn.db.syncStream.iter()].map((r) => rowToJson(T.syncStream, r)) });

// --- (c) live tail --------------------------------------------------------------------------------

await ready("append_live");
await until("live inserts of seqs 6 and 7", () => state.inserts.filter((i) => i.seq >= 6).length >= 2);
emit({ event: "cache", table: "sync_event", rows: cachedEvents(conn) });

// --- (d) reducer calls -------------------------------------------------------------------------------

async function call(label, reducer, args) {
  const before = conn.db.syncEvent.count();
  try {
    await withTimeout(`reducer ${label}`, conn.reducers[reducer](args));
    emit({ event: "reducer_result", call: label, ok: true, cache_delta: toJson(conn.db.syncEvent.count() - before) });
  } catch (err) {
    if (String(err?.message).startsWith("timeout:")) fail(err.message, { observed: snapshot() });
    emit({ event: "reducer_result", call: label, ok: false, error_name: err?.name ?? null,
           error: String(err?.message ?? err), cache_delta: toJson(conn.db.syncEvent.count() - before) });
  }
}

const append = (key, payload) => ({
  streamId: STREAM, idempotencyKey: key, payloadJson: payload, payloadHash: undefined, expectedNextSeq: undefined,
});
await call("append", "appendSyncEvent", append("k-node-1", '{"n":1}'));
await until("the appended row", () => state.inserts.some((i) => i.phase === "Reducer"));
await call("replay", "appendSyncEvent", append("k-node-1", '{"n":1}'));
await call("conflict", "appendSyncEvent", append("k-node-1", '{"n":2}'));

// --- (e) event table ---------------------------------------------------------------------------------

subscribe("signals", [`SELECT * FROM stream_signal WHERE stream_id = ${sqlString(STREAM)}`]);
await until("SubscribeApplied(signals)", () => state.applied.has("signals"));
await call("signal", "publishStreamSignal", { streamId: STREAM, kind: "typing", payloadJson: '{"x":1}' });
await until("the stream_signal event row", () => state.signals.length >= 1);
emit({ event: "cache", table: "stream_signal", count: toJson(conn.db.streamSignal.count()) });

// --- (f) unsubscribe, disconnect ------------------------------------------------------------------------

const held = conn.db.syncEvent.count();
events.unsubscribeThen(() => {
  state.ended.add("events");
  emit({ event: "end", query_set: "events", sync_event_count: toJson(conn.db.syncEvent.count()),
         sync_stream_count: toJson(conn.db.syncStream.count()) });
});
await until("UnsubscribeApplied(events) and its deletes",
  () => state.ended.has("events") && BigInt(state.deletes.length) >= held);
emit({ event: "cache", table: "sync_event", rows: cachedEvents(conn) });

conn.disconnect();
await until("onDisconnect", () => state.disconnected);
emit({ event: "done" });
process.exit(0);
