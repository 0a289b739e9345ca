// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default {
  sessionId: __t.string(),
  deviceId: __t.string(),
  nodeId: __t.string(),
  status: __t.string(),
  region: __t.string(),
  ttlMs: __t.u64(),
};
