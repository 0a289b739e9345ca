// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default __t.row({
  sessionId: __t.string().primaryKey().name("session_id"),
  identity: __t.identity(),
  deviceId: __t.string().name("device_id"),
  nodeId: __t.string().name("node_id"),
  status: __t.string(),
  region: __t.string(),
  lastSeen: __t.timestamp().name("last_seen"),
  expiresAt: __t.timestamp().name("expires_at"),
  offlineReason: __t.option(__t.string()).name("offline_reason"),
});
