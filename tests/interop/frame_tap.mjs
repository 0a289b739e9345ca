// An independent look at the server's frames, beside the SDK (which trusts the bindings and
// never reports the wire shape): compression tag, body size, and per v2 message its type and,
// per table, the TableUpdateRows variant and row counts.
//
// The SDK cannot show these: it decides event-table handling from the bindings (never from the
// EventTable/PersistentTable variant), and it decompresses silently. The test asserts on these
// summaries to pin what DESIGN §4 and the research notes (§3, §5, §8) require of the server.
//
// Frame = [compression tag u8: 0 none, 1 brotli, 2 gzip] ++ body. A v2 body is one ServerMessage;
// a v3 body is one or more v2 ServerMessages back to back (no length prefix), so every message is
// skimmed in full to find where the next begins.

import zlib from "node:zlib";
import { BinaryReader } from "spacetimedb";

const MESSAGE_TYPES = [
  "InitialConnection", "SubscribeApplied", "UnsubscribeApplied", "SubscriptionError",
  "TransactionUpdate", "OneOffQueryResult", "ReducerResult", "ProcedureResult",
];

function tag(r, what, max) {
  const t = r.readU8();
  if (t > max) throw new Error(`${what}: bad tag ${t}`);
  return t;
}

function vec(r, item) {
  const n = r.readU32();
  const out = [];
  for (let i = 0; i < n; i++) out.push(item(r));
  return out;
}

function rowList(r) {
  let count;
  const hint = tag(r, "RowSizeHint", 1);
  const fixed = hint === 0 ? r.readU16() : null;
  const offsets = hint === 1 ? vec(r, (x) => x.readU64()) : null;
  const data = r.readUInt8Array();
  if (fixed !== null) count = fixed === 0 ? 0 : data.length / fixed;
  else count = offsets.length;
  return { count, bytes: data.length, hint: hint === 0 ? `fixed:${fixed}` : "offsets" };
}

function queryRows(r) {
  return vec(r, (x) => ({ table: x.readString(), kind: "Snapshot", rows: rowList(x).count }));
}

function transactionUpdate(r) {
  return vec(r, (x) => {
    const querySet = x.readU32();
    const tables = vec(x, (y) => {
      const table = y.readString();
      return vec(y, (z) => {
        const variant = tag(z, "TableUpdateRows", 1);
        if (variant === 0) {
          const inserts = rowList(z).count;
          const deletes = rowList(z).count;
          return { query_set: querySet, table, kind: "PersistentTable", inserts, deletes };
        }
        return { query_set: querySet, table, kind: "EventTable", events: rowList(z).count };
      });
    });
    return tables.flat();
  }).flat();
}

function message(r) {
  const type = MESSAGE_TYPES[tag(r, "ServerMessage", 7)];
  const m = { type };
  switch (type) {
    case "InitialConnection":
      r.readBytes(32);
      r.readBytes(16);
      r.readString();
      break;
    case "SubscribeApplied":
      m.request_id = r.readU32();
      m.query_set = r.readU32();
      m.tables = queryRows(r);
      break;
    case "UnsubscribeApplied":
      m.request_id = r.readU32();
      m.query_set = r.readU32();
      m.tables = tag(r, "Option<QueryRows>", 1) === 0 ? queryRows(r) : null;
      break;
    case "SubscriptionError":
      m.request_id = tag(r, "Option<u32>", 1) === 0 ? r.readU32() : null;
      m.query_set = r.readU32();
      m.error = r.readString();
      break;
    case "TransactionUpdate":
      m.tables = transactionUpdate(r);
      break;
    case "OneOffQueryResult":
      m.request_id = r.readU32();
      if (tag(r, "Result", 1) === 0) m.tables = queryRows(r);
      else m.error = r.readString();
      break;
    case "ReducerResult": {
      m.request_id = r.readU32();
      r.readI64();
      const outcome = tag(r, "ReducerOutcome", 3);
      m.outcome = ["Ok", "OkEmpty", "Err", "InternalError"][outcome];
      if (outcome === 0) {
        m.ret_value_hex = Buffer.from(r.readUInt8Array()).toString("hex");
        m.tables = transactionUpdate(r);
      } else if (outcome === 2) {
        m.err_hex = Buffer.from(r.readUInt8Array()).toString("hex");
      } else if (outcome === 3) {
        m.error = r.readString();
      }
      break;
    }
    case "ProcedureResult":
      if (tag(r, "ProcedureStatus", 1) === 0) r.readUInt8Array();
      else r.readString();
      r.readI64();
      r.readI64();
      m.request_id = r.readU32();
      break;
  }
  return m;
}

/** Summarize one inbound WebSocket frame (an ArrayBuffer or Uint8Array). Never throws. */
export function summarizeFrame(data) {
  const frame = new Uint8Array(data);
  const out = { compression: frame[0], size: frame.length };
  try {
    const raw = frame.subarray(1);
    let body;
    if (frame[0] === 0) body = raw;
    else if (frame[0] === 1) body = zlib.brotliDecompressSync(raw);
    else if (frame[0] === 2) body = zlib.gunzipSync(raw);
    else throw new Error(`unknown compression tag ${frame[0]}`);
    out.body_size = body.length;
    const r = new BinaryReader(new Uint8Array(body));
    out.messages = [];
    while (r.remaining > 0) out.messages.push(message(r));
  } catch (e) {
    out.parse_error = String(e?.message ?? e);
  }
  return out;
}
