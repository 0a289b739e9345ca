// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default __t.row({
  requestId: __t.string().primaryKey().name("request_id"),
  requester: __t.identity(),
  jobKind: __t.u32().name("job_kind"),
  request: __t.string(),
  requestHash: __t.string().name("request_hash"),
  providerId: __t.option(__t.string()).name("provider_id"),
  providerOwner: __t.option(__t.identity()).name("provider_owner"),
  status: __t.string(),
  result: __t.option(__t.string()),
  version: __t.u64(),
  openedAt: __t.timestamp().name("opened_at"),
  updatedAt: __t.timestamp().name("updated_at"),
});
