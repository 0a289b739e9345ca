// Hand-written to the shape `spacetime generate --lang typescript` (cli 2.x) emits, as plain ESM
// JavaScript, from DESIGN §2. test_bindings_match_schema.py checks it against spec/schema.py.

/* eslint-disable */
import { t as __t } from "spacetimedb";

export default __t.row({
  outboxId: __t.string().primaryKey().name("outbox_id"),
  source: __t.string(),
  nostrKind: __t.u32().name("nostr_kind"),
  tags: __t.string(),
  content: __t.string(),
  contentHash: __t.string().name("content_hash"),
  status: __t.string(),
  attempts: __t.u32(),
  nextAttemptAt: __t.timestamp().name("next_attempt_at"),
  lastError: __t.option(__t.string()).name("last_error"),
  nostrEventId: __t.option(__t.string()).name("nostr_event_id"),
  relaysAcked: __t.array(__t.string()).name("relays_acked"),
  createdAt: __t.timestamp().name("created_at"),
  updatedAt: __t.timestamp().name("updated_at"),
});
