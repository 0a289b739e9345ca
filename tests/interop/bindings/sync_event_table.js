// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default __t.row({
  streamId: __t.string().name("stream_id"),
  epoch: __t.u64(),
  seq: __t.u64(),
  idempotencyKey: __t.string().name("idempotency_key"),
  payloadHash: __t.string().name("payload_hash"),
  payload: __t.string(),
  producer: __t.identity(),
  committedAt: __t.timestamp().name("committed_at"),
  txOffset: __t.u64().name("tx_offset"),
});
