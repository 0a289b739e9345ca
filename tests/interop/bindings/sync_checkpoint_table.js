// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default __t.row({
  checkpointId: __t.string().primaryKey().name("checkpoint_id"),
  clientId: __t.string().name("client_id"),
  streamId: __t.string().name("stream_id"),
  owner: __t.identity(),
  epoch: __t.u64(),
  lastAppliedSeq: __t.u64().name("last_applied_seq"),
  updatedAt: __t.timestamp().name("updated_at"),
});
