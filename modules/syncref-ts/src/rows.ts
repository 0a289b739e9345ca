/**
 * The nine tables' columns, in the normative wire order (DESIGN §2, spec/schema.py), as
 * SpacetimeDB type builders (`rowDefs(t)`). The binding (`module.ts`) makes tables of these; the schema test
 * reads them in Node (the root `spacetimedb` export carries the same `t` builders) and compares
 * names, order, SATS types and keys with a JSON dump of spec/schema.py.
 *
 * Object key order is the column order: SpacetimeDB takes a row's product type from the order
 * of the object's keys, which is the BSATN layout every client decodes.
 */

import type { t as TypeBuilders } from 'spacetimedb/server';

/** The `t` builders of `spacetimedb/server` (the module host) or of the root `spacetimedb` export
 * (the same classes, loadable in Node, where the server entry's `spacetime:sys` imports are not). */
export type T = typeof TypeBuilders;

/** The nine tables' row definitions, built with `t`. */
// eslint-disable-next-line @typescript-eslint/explicit-function-return-type
export function rowDefs(t: T) {

  const syncStreamRow = {
  stream_id: t.string().primaryKey(),
  stream_class: t.string(),
  epoch: t.u64(),
  continues_epoch: t.u64(),
  continues_seq: t.u64(),
  head_seq: t.u64(),
  floor_seq: t.u64(),
  replay_budget: t.u64(),
  created_at: t.timestamp(),
  updated_at: t.timestamp(),
  earlier_epochs: t.array(t.u64()),
  earlier_seqs: t.array(t.u64()),
};

  const syncEventRow = {
  stream_id: t.string(),
  epoch: t.u64(),
  seq: t.u64(),
  idempotency_key: t.string(),
  payload_hash: t.string(),
  payload: t.string(),
  producer: t.identity(),
  committed_at: t.timestamp(),
  tx_offset: t.u64(),
};

  const syncCheckpointRow = {
  checkpoint_id: t.string().primaryKey(),
  client_id: t.string(),
  stream_id: t.string(),
  owner: t.identity(),
  epoch: t.u64(),
  last_applied_seq: t.u64(),
  updated_at: t.timestamp(),
};

  const sessionPresenceRow = {
  session_id: t.string().primaryKey(),
  identity: t.identity(),
  device_id: t.string(),
  node_id: t.string(),
  status: t.string(),
  region: t.string(),
  last_seen: t.timestamp(),
  expires_at: t.timestamp(),
  offline_reason: t.option(t.string()),
};

  const providerCapabilityRow = {
  provider_id: t.string().primaryKey(),
  owner: t.identity(),
  capability: t.string(),
  capability_hash: t.string(),
  nip90_kinds: t.array(t.u32()),
  price_hint_sats: t.u64(),
  status: t.string(),
  version: t.u64(),
  updated_at: t.timestamp(),
};

  const computeAssignmentRow = {
  request_id: t.string().primaryKey(),
  requester: t.identity(),
  job_kind: t.u32(),
  request: t.string(),
  request_hash: t.string(),
  provider_id: t.option(t.string()),
  provider_owner: t.option(t.identity()),
  status: t.string(),
  result: t.option(t.string()),
  version: t.u64(),
  opened_at: t.timestamp(),
  updated_at: t.timestamp(),
};

  const bridgeOutboxRow = {
  outbox_id: t.string().primaryKey(),
  source: t.string(),
  nostr_kind: t.u32(),
  tags: t.string(),
  content: t.string(),
  content_hash: t.string(),
  status: t.string(),
  attempts: t.u32(),
  next_attempt_at: t.timestamp(),
  last_error: t.option(t.string()),
  nostr_event_id: t.option(t.string()),
  relays_acked: t.array(t.string()),
  created_at: t.timestamp(),
  updated_at: t.timestamp(),
};

  const presenceSignalRow = {
  session_id: t.string(),
  identity: t.identity(),
  status: t.string(),
  reason: t.string(),
  at: t.timestamp(),
};

  const streamSignalRow = {
  stream_id: t.string(),
  kind: t.string(),
  payload: t.string(),
  sender: t.identity(),
  at: t.timestamp(),
};

  /** Table name -> (columns, multi-column unique indexes beyond the primary key, event table?). */
  return {
  sync_stream: { row: syncStreamRow, unique: [] as string[][], event: false },
  sync_event: { row: syncEventRow, unique: [['stream_id', 'seq'], ['stream_id', 'idempotency_key']], event: false },
  sync_checkpoint: { row: syncCheckpointRow, unique: [], event: false },
  session_presence: { row: sessionPresenceRow, unique: [], event: false },
  provider_capability: { row: providerCapabilityRow, unique: [], event: false },
  compute_assignment: { row: computeAssignmentRow, unique: [], event: false },
  bridge_outbox: { row: bridgeOutboxRow, unique: [], event: false },
  presence_signal: { row: presenceSignalRow, unique: [], event: true },
  stream_signal: { row: streamSignalRow, unique: [], event: true },
} as const;
}

/** Every reducer's parameters, in wire order (spec/schema.py REDUCERS). */
// eslint-disable-next-line @typescript-eslint/explicit-function-return-type
export function reducerParams(t: T) {
  return {
    append_sync_event: { stream_id: t.string(), idempotency_key: t.string(), payload_json: t.string(),
      payload_hash: t.option(t.string()), expected_next_seq: t.option(t.u64()) },
    ack_checkpoint: { client_id: t.string(), stream_id: t.string(), epoch: t.u64(), seq: t.u64() },
    upsert_presence: { session_id: t.string(), device_id: t.string(), node_id: t.string(), status: t.string(),
      region: t.string(), ttl_ms: t.u64() },
    publish_provider_capability: { provider_id: t.string(), capability_json: t.string(), nip90_kinds: t.array(t.u32()),
      price_hint_sats: t.u64(), status: t.string() },
    open_compute_assignment: { request_id: t.string(), job_kind: t.u32(), request_json: t.string() },
    update_compute_assignment: { request_id: t.string(), expected_version: t.u64(), status: t.string(),
      provider_id: t.option(t.string()), result_json: t.option(t.string()) },
    enqueue_bridge_event: { outbox_id: t.string(), source: t.string(), nostr_kind: t.u32(), tags_json: t.string(),
      content: t.string() },
    mark_bridge_event_sent: { outbox_id: t.string(), nostr_event_id: t.string(), relays: t.array(t.string()) },
    record_bridge_failure: { outbox_id: t.string(), error: t.string(), retry_after_ms: t.u64() },
    publish_stream_signal: { stream_id: t.string(), kind: t.string(), payload_json: t.string() },
    reset_stream_epoch: { stream_id: t.string() },
  };
}
