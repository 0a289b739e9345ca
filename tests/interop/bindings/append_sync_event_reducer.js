// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default {
  streamId: __t.string(),
  idempotencyKey: __t.string(),
  payloadJson: __t.string(),
  payloadHash: __t.option(__t.string()),
  expectedNextSeq: __t.option(__t.u64()),
};
