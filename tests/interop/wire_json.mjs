// JSON views of what the SDK hands an application, shared by client.mjs and inspect_bindings.mjs.
//
// SDK values become plain JSON the pytest side can compare with spec values:
// u64/i64 (bigint) -> number when it is a safe integer, else its decimal string; Identity and
// ConnectionId -> lowercase big-endian hex (spec.values.Identity); Timestamp -> microseconds;
// Option none (undefined) -> null; byte arrays -> hex.

import { ConnectionId, Identity, Timestamp } from "spacetimedb";

export function toJson(value) {
  if (value === undefined || value === null) return null;
  if (typeof value === "bigint") {
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(value)
      : value.toString();
  }
  if (value instanceof Identity || value instanceof ConnectionId) return value.toHexString();
  if (value instanceof Timestamp) return toJson(value.microsSinceUnixEpoch);
  if (value instanceof Uint8Array) return Buffer.from(value).toString("hex");
  if (Array.isArray(value)) return value.map(toJson);
  if (typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = toJson(v);
    return out;
  }
  return value;
}

/** The column names a table's rows carry on the wire, in order (the `.name()` or the key). */
export function wireColumns(tableDef) {
  return Object.entries(tableDef.columns).map(([key, col]) => ({
    key,
    name: col.columnMetadata.name ?? key,
  }));
}

/** A cached or delivered row as {wire_column_name: json value}. */
export function rowToJson(tableDef, row) {
  const out = {};
  for (const { key, name } of wireColumns(tableDef)) out[name] = toJson(row[key]);
  return out;
}
