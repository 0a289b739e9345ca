// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default __t.row({
  streamId: __t.string().primaryKey().name("stream_id"),
  streamClass: __t.string().name("stream_class"),
  epoch: __t.u64(),
  continuesEpoch: __t.u64().name("continues_epoch"),
  continuesSeq: __t.u64().name("continues_seq"),
  headSeq: __t.u64().name("head_seq"),
  floorSeq: __t.u64().name("floor_seq"),
  replayBudget: __t.u64().name("replay_budget"),
  createdAt: __t.timestamp().name("created_at"),
  updatedAt: __t.timestamp().name("updated_at"),
  earlierEpochs: __t.array(__t.u64()).name("earlier_epochs"),
  earlierSeqs: __t.array(__t.u64()).name("earlier_seqs"),
});
