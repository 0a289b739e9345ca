// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default __t.row({
  providerId: __t.string().primaryKey().name("provider_id"),
  owner: __t.identity(),
  capability: __t.string(),
  capabilityHash: __t.string().name("capability_hash"),
  nip90Kinds: __t.array(__t.u32()).name("nip90_kinds"),
  priceHintSats: __t.u64().name("price_hint_sats"),
  status: __t.string(),
  version: __t.u64(),
  updatedAt: __t.timestamp().name("updated_at"),
});
