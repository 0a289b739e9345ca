// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default {
  outboxId: __t.string(),
  source: __t.string(),
  nostrKind: __t.u32(),
  tagsJson: __t.string(),
  content: __t.string(),
};
