// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default __t.row({
  sessionId: __t.string().name("session_id"),
  identity: __t.identity(),
  status: __t.string(),
  reason: __t.string(),
  at: __t.timestamp(),
});
