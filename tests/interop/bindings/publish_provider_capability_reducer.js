// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default {
  providerId: __t.string(),
  capabilityJson: __t.string(),
  nip90Kinds: __t.array(__t.u32()),
  priceHintSats: __t.u64(),
  status: __t.string(),
};
