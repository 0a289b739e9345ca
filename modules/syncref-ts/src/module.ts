/**
 * The binding: the sync module on SpacetimeDB (`spacetimedb/server` 2.x). Thin on purpose: the
 * rules live in rules.ts and are tested there; this file declares the tables, turns SpacetimeDB's
 * `ReducerCtx` into the rules' {@link Ctx} and {@link Store}, and maps a {@link SyncError} to the
 * reducer error string (`SenderError('<code>: <details>')`, which only the caller receives, with
 * the transaction rolled back).
 *
 * What SpacetimeDB cannot express the way the reference server does, and how it is done here:
 *
 * - Claims: a reducer reads the caller's verified JWT (`ctx.senderAuth.jwt.fullPayload`:
 *   `oa_sync_scopes`, `oa_sync_streams`, `oa_device_id`, `oa_session_id`) on every call, typed as
 *   the reference types them (claims.ts): a token with a claim of the wrong type is refused --
 *   by the connect reducer (the connection) and by every reducer (the call) -- with the
 *   reference's 401 text, `malformed claim <name> (...)`.
 * - Row visibility: client visibility filters (RLS, `clientVisibilityFilter.sql`) keep the table
 *   names clients subscribe to. An RLS rule sees only `:sender` (the identity), not the token, so
 *   the connect reducer copies the token's grants into private tables (`stream_access`: one row
 *   per identity and granted stream that exists, also written when a stream is created;
 *   `scope_holder`; `assignment_access` for requesters and provider owners) and the rules join
 *   them. The grants are those of the identity's latest connection.
 * - Unique (stream_id, seq) and (stream_id, idempotency_key): the 2.x TypeScript API declares
 *   unique constraints on one column only, so these are btree indexes and uniqueness is kept by
 *   the rules (dedupe by key first, seq = head + 1), which the vectors check.
 * - tx_offset: modules cannot read the commit log offset; `module_state.tx_offset` counts the
 *   writing calls of this module (monotonic, not SpacetimeDB's offset).
 * - Return values: SpacetimeDB reducers return nothing, so `append_sync_event`'s seq is not sent
 *   (the official SDKs ignore it anyway); the caller reads it from the inserted row of its own
 *   transaction update, or, for a deduplicated retry, from the retained row with its key.
 * - Subscribe-time stale-cursor errors: module code cannot reject a subscription; clients run
 *   `staleError` against the `sync_stream` row of the same query set (the Python SDK does).
 *
 * NOT checked here: a live `spacetime publish` (no SpacetimeDB host on the build machine). This
 * file is checked by `tsc --noEmit` (strict) against the pinned package only.
 */

import { Identity, ScheduleAt, Timestamp } from 'spacetimedb';
import { CaseConversionPolicy, schema, SenderError, t, table, type ReducerCtx } from 'spacetimedb/server';

import { reducerParams, rowDefs } from './rows.js';
import {
  type BridgeOutbox, type Caller, type ComputeAssignment, type Ctx, DEFAULT_POLICY, disconnect_sessions,
  compact, grantMatches, type Keyed, type Policy, presence_sweep, type ProviderCapability, REDUCERS, type SessionPresence,
  type Store, type SyncCheckpoint, type SyncEvent, type SyncStream,
} from './rules.js';
import { callerFromClaims, MalformedClaim } from './claims.js';
import { SyncError } from './errors.js';

const POLICY: Policy = DEFAULT_POLICY;
const SWEEP_INTERVAL_US = 1_000_000n;
const COMPACT_INTERVAL_US = 60_000_000n;

const R = rowDefs(t);
const P = reducerParams(t);

// --- private helper tables (not part of the wire schema) -------------------------------------

const moduleStateRow = { id: t.u32().primaryKey(), epoch_floor: t.u64(), version_floor: t.u64(), tx_offset: t.u64() };
const streamAccessRow = { access_id: t.string().primaryKey(), identity: t.identity(), stream_id: t.string() };
const scopeHolderRow = { holder_id: t.string().primaryKey(), identity: t.identity(), scope: t.string() };
const callerGrantRow = { identity: t.identity().primaryKey(), scopes: t.array(t.string()), streams: t.array(t.string()) };
const assignmentAccessRow = { access_id: t.string().primaryKey(), identity: t.identity(), request_id: t.string() };
const connectionSessionRow = { link_id: t.string().primaryKey(), connection: t.string(), session_id: t.string(), identity: t.identity() };
const sweepScheduleRow = t.row('PresenceSweepSchedule', { scheduled_id: t.u64().primaryKey().autoInc(), scheduled_at: t.scheduleAt() });

const compactScheduleRow = t.row('CompactionSchedule', { scheduled_id: t.u64().primaryKey().autoInc(), scheduled_at: t.scheduleAt() });
const compactSchedule = table({ name: 'compaction_schedule', scheduled: (): any => compaction_tick }, compactScheduleRow); // eslint-disable-line @typescript-eslint/no-explicit-any
const sweepSchedule = table({ name: 'presence_sweep_schedule', scheduled: (): any => presence_sweep_tick }, sweepScheduleRow); // eslint-disable-line @typescript-eslint/no-explicit-any

const spacetimedb = schema({
  sync_stream: table({ name: 'sync_stream', public: true }, R.sync_stream.row),
  sync_event: table({
    name: 'sync_event', public: true,
    indexes: [
      { accessor: 'by_stream_seq', algorithm: 'btree', columns: ['stream_id', 'seq'] },
      { accessor: 'by_stream_key', algorithm: 'btree', columns: ['stream_id', 'idempotency_key'] },
    ],
  }, R.sync_event.row),
  // private in the reference server (owner only): public here, narrowed by an RLS rule
  sync_checkpoint: table({ name: 'sync_checkpoint', public: true }, R.sync_checkpoint.row),
  session_presence: table({
    name: 'session_presence', public: true,
    indexes: [{ accessor: 'by_identity', algorithm: 'btree', columns: ['identity'] }],
  }, R.session_presence.row),
  provider_capability: table({ name: 'provider_capability', public: true }, R.provider_capability.row),
  compute_assignment: table({ name: 'compute_assignment', public: true }, R.compute_assignment.row),
  // private in the reference server (bridge scopes): public here, narrowed by RLS rules
  bridge_outbox: table({ name: 'bridge_outbox', public: true }, R.bridge_outbox.row),
  presence_signal: table({ name: 'presence_signal', public: true, event: true }, R.presence_signal.row),
  stream_signal: table({ name: 'stream_signal', public: true, event: true }, R.stream_signal.row),
  module_state: table({ name: 'module_state' }, moduleStateRow),
  stream_access: table({
    name: 'stream_access',
    indexes: [
      { accessor: 'by_identity', algorithm: 'btree', columns: ['identity'] },
      { accessor: 'by_stream', algorithm: 'btree', columns: ['stream_id'] },
    ],
  }, streamAccessRow),
  scope_holder: table({ name: 'scope_holder', indexes: [{ accessor: 'by_identity', algorithm: 'btree', columns: ['identity'] }] }, scopeHolderRow),
  caller_grant: table({ name: 'caller_grant' }, callerGrantRow),
  assignment_access: table({ name: 'assignment_access' }, assignmentAccessRow),
  connection_session: table({
    name: 'connection_session', indexes: [{ accessor: 'by_connection', algorithm: 'btree', columns: ['connection'] }],
  }, connectionSessionRow),
  presence_sweep_schedule: sweepSchedule,
  compaction_schedule: compactSchedule,
}, { CASE_CONVERSION_POLICY: CaseConversionPolicy.None });
export default spacetimedb;

type Db = ReducerCtx<typeof spacetimedb.schemaType>['db'];
type Ctx_ = ReducerCtx<typeof spacetimedb.schemaType>;

// --- row visibility (client visibility filters; several rules on a table are OR-ed) -----------

export const stream_rls = spacetimedb.clientVisibilityFilter.sql(
  'SELECT sync_stream.* FROM sync_stream JOIN stream_access ON sync_stream.stream_id = stream_access.stream_id WHERE stream_access.identity = :sender');
export const event_rls = spacetimedb.clientVisibilityFilter.sql(
  'SELECT sync_event.* FROM sync_event JOIN stream_access ON sync_event.stream_id = stream_access.stream_id WHERE stream_access.identity = :sender');
export const signal_rls = spacetimedb.clientVisibilityFilter.sql(
  'SELECT stream_signal.* FROM stream_signal JOIN stream_access ON stream_signal.stream_id = stream_access.stream_id WHERE stream_access.identity = :sender');
export const checkpoint_rls = spacetimedb.clientVisibilityFilter.sql('SELECT * FROM sync_checkpoint WHERE sync_checkpoint.owner = :sender');
export const assignment_party_rls = spacetimedb.clientVisibilityFilter.sql(
  'SELECT compute_assignment.* FROM compute_assignment JOIN assignment_access ON compute_assignment.request_id = assignment_access.request_id WHERE assignment_access.identity = :sender');
export const assignment_dispatcher_rls = spacetimedb.clientVisibilityFilter.sql(
  "SELECT compute_assignment.* FROM compute_assignment JOIN scope_holder WHERE scope_holder.identity = :sender AND scope_holder.scope = 'compute.assign'");
export const outbox_enqueue_rls = spacetimedb.clientVisibilityFilter.sql(
  "SELECT bridge_outbox.* FROM bridge_outbox JOIN scope_holder WHERE scope_holder.identity = :sender AND scope_holder.scope = 'bridge.enqueue'");
export const outbox_mark_rls = spacetimedb.clientVisibilityFilter.sql(
  "SELECT bridge_outbox.* FROM bridge_outbox JOIN scope_holder WHERE scope_holder.identity = :sender AND scope_holder.scope = 'bridge.mark_sent'");

// --- host values <-> rule values ---------------------------------------------------------------

const IDENTITY_COLUMNS = new Set(['producer', 'owner', 'identity', 'requester', 'provider_owner', 'sender']);
const TIME_COLUMNS = new Set(['created_at', 'updated_at', 'committed_at', 'last_seen', 'expires_at', 'opened_at',
  'next_attempt_at', 'at']);

const hex = (id: Identity): string => id.toHexString().replace(/^0x/, '').toLowerCase();

/** A host row (Identity, Timestamp objects) as a rule row (hex strings, bigint micros). */
function fromHost<T>(row: object): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) {
    out[k] = v instanceof Identity ? hex(v) : v instanceof Timestamp ? v.microsSinceUnixEpoch : v;
  }
  return out as T;
}

/** A rule row as a host row. */
function toHost(row: object): never {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) {
    if (IDENTITY_COLUMNS.has(k) && typeof v === 'string') out[k] = new Identity(v);
    else if (TIME_COLUMNS.has(k) && typeof v === 'bigint') out[k] = new Timestamp(v);
    else out[k] = v;
  }
  return out as never;
}

function keyed<R>(find: (k: string) => object | null, insert: (r: never) => unknown, update: (r: never) => unknown,
  onWrite: () => void): Keyed<R> {
  return {
    find: (k) => { const r = find(k); return r === null ? undefined : fromHost<R>(r); },
    insert: (r) => { insert(toHost(r as object)); onWrite(); },
    update: (r) => { update(toHost(r as object)); onWrite(); },
  };
}

function moduleState(db: Db): { id: number; epoch_floor: bigint; version_floor: bigint; tx_offset: bigint } {
  return db.module_state.id.find(0) ?? { id: 0, epoch_floor: 1n, version_floor: 1n, tx_offset: 0n };
}

function saveState(db: Db, next: { id: number; epoch_floor: bigint; version_floor: bigint; tx_offset: bigint }): void {
  if (db.module_state.id.find(0) === null) db.module_state.insert(next);
  else db.module_state.id.update(next);
}

/** The rules' table interface over the module's tables; counts writes. */
function hostStore(ctx: Ctx_, onStreamCreated: (stream_id: string) => void): Store & { writes: number } {
  const db = ctx.db;
  const s = { writes: 0 } as Store & { writes: number };
  const w = (): void => { s.writes++; };
  s.sync_stream = {
    ...keyed<SyncStream>((k) => db.sync_stream.stream_id.find(k), (r) => db.sync_stream.insert(r), (r) => db.sync_stream.stream_id.update(r), w),
    all: () => [...db.sync_stream.iter()].map((r) => fromHost<SyncStream>(r)),
  };
  const created = s.sync_stream.insert;
  s.sync_stream.insert = (r) => { created(r); onStreamCreated(r.stream_id); };
  s.sync_event = {
    byKey: (stream_id, key) => {
      const [r] = [...db.sync_event.by_stream_key.filter([stream_id, key])];
      return r === undefined ? undefined : fromHost<SyncEvent>(r);
    },
    ofStream: (stream_id) => [...db.sync_event.by_stream_seq.filter(stream_id)].map((r) => fromHost<SyncEvent>(r)),
    insert: (r) => { db.sync_event.insert(toHost(r)); w(); },
    delete: (r) => { db.sync_event.delete(toHost(r)); w(); },
  };
  s.sync_checkpoint = keyed<SyncCheckpoint>((k) => db.sync_checkpoint.checkpoint_id.find(k), (r) => db.sync_checkpoint.insert(r),
    (r) => db.sync_checkpoint.checkpoint_id.update(r), w);
  s.session_presence = {
    ...keyed<SessionPresence>((k) => db.session_presence.session_id.find(k), (r) => db.session_presence.insert(r),
      (r) => db.session_presence.session_id.update(r), w),
    all: () => [...db.session_presence.iter()].map((r) => fromHost<SessionPresence>(r)),
    delete: (k) => { db.session_presence.session_id.delete(k); w(); },
  };
  s.provider_capability = keyed<ProviderCapability>((k) => db.provider_capability.provider_id.find(k),
    (r) => db.provider_capability.insert(r), (r) => db.provider_capability.provider_id.update(r), w);
  s.compute_assignment = {
    ...keyed<ComputeAssignment>((k) => db.compute_assignment.request_id.find(k),
      (r) => db.compute_assignment.insert(r), (r) => db.compute_assignment.request_id.update(r), w),
    all: () => [...db.compute_assignment.iter()].map((r) => fromHost<ComputeAssignment>(r)),
    delete: (k) => {
      db.compute_assignment.request_id.delete(k);
      for (const a of [...db.assignment_access.iter()]) if (a.request_id === k) db.assignment_access.delete(a);
      w();
    },
  };
  s.bridge_outbox = {
    ...keyed<BridgeOutbox>((k) => db.bridge_outbox.outbox_id.find(k), (r) => db.bridge_outbox.insert(r),
      (r) => db.bridge_outbox.outbox_id.update(r), w),
    all: () => [...db.bridge_outbox.iter()].map((r) => fromHost<BridgeOutbox>(r)),
    delete: (k) => { db.bridge_outbox.outbox_id.delete(k); w(); },
  };
  s.presence_signal = { emit: (r) => { db.presence_signal.insert(toHost(r)); w(); } };
  s.stream_signal = { emit: (r) => { db.stream_signal.insert(toHost(r)); w(); } };
  s.epochFloor = () => moduleState(db).epoch_floor;
  s.versionFloor = () => moduleState(db).version_floor;
  s.raiseVersionFloor = (v) => saveState(db, { ...moduleState(db), version_floor: v });
  return s;
}

// --- claims and grants --------------------------------------------------------------------------

/** The caller's claims; a malformed token is refused with the reference server's 401 text. */
function callerOf(ctx: Ctx_): Caller {
  try {
    return callerFromClaims(hex(ctx.sender), ctx.senderAuth.jwt?.fullPayload ?? {});
  } catch (e) {
    if (e instanceof MalformedClaim) throw new SenderError(e.message);
    throw e;
  }
}

function grantStream(db: Db, identity: Identity, stream_id: string): void {
  const access_id = `${hex(identity)}|${stream_id}`;
  if (db.stream_access.access_id.find(access_id) === null) db.stream_access.insert({ access_id, identity, stream_id });
}

/** A new stream becomes visible to every identity whose grants cover it. */
function onStreamCreated(db: Db, stream_id: string): void {
  for (const g of db.caller_grant.iter()) {
    if (g.streams.some((p) => grantMatches(p, stream_id))) grantStream(db, g.identity, stream_id);
  }
}

/** Copy the connecting token's grants into the tables the RLS rules join. */
function refreshGrants(ctx: Ctx_): void {
  const db = ctx.db;
  const c = callerOf(ctx);
  const identity = ctx.sender;
  for (const r of [...db.stream_access.by_identity.filter(identity)]) db.stream_access.delete(r);
  for (const r of [...db.scope_holder.by_identity.filter(identity)]) db.scope_holder.delete(r);
  const row = { identity, scopes: [...c.scopes], streams: [...c.streams] };
  if (db.caller_grant.identity.find(identity) === null) db.caller_grant.insert(row);
  else db.caller_grant.identity.update(row);
  for (const scope of c.scopes) db.scope_holder.insert({ holder_id: `${c.identity}|${scope}`, identity, scope });
  for (const s of db.sync_stream.iter()) {
    if (c.streams.some((g) => grantMatches(g, s.stream_id))) grantStream(db, identity, s.stream_id);
  }
}

function allowAssignment(db: Db, identity: string | undefined, request_id: string): void {
  if (identity === undefined) return;
  const access_id = `${identity}|${request_id}`;
  if (db.assignment_access.access_id.find(access_id) === null) {
    db.assignment_access.insert({ access_id, identity: new Identity(identity), request_id });
  }
}

// --- running a rule ------------------------------------------------------------------------------

function run(ctx: Ctx_, reducer: string, args: unknown[]): void {
  const db = ctx.db;
  const state = moduleState(db);
  const rules: Ctx = { caller: callerOf(ctx), now: ctx.timestamp.microsSinceUnixEpoch, tx_offset: state.tx_offset + 1n, policy: POLICY };
  const store = hostStore(ctx, (id) => onStreamCreated(db, id));
  const fn = REDUCERS[reducer]!;
  try {
    fn(store, rules, ...args);
  } catch (e) {
    if (e instanceof SyncError) throw new SenderError(e.render());
    throw e;
  }
  if (store.writes > 0) saveState(db, { ...moduleState(db), tx_offset: state.tx_offset + 1n });
}

// --- reducers (argument order = wire order, spec/schema.py REDUCERS) -------------------------------

export const append_sync_event = spacetimedb.reducer(
  P.append_sync_event,
  (ctx, a) => run(ctx, 'append_sync_event', [a.stream_id, a.idempotency_key, a.payload_json, a.payload_hash, a.expected_next_seq]));

export const ack_checkpoint = spacetimedb.reducer(
  P.ack_checkpoint,
  (ctx, a) => run(ctx, 'ack_checkpoint', [a.client_id, a.stream_id, a.epoch, a.seq]));

export const upsert_presence = spacetimedb.reducer(
  P.upsert_presence,
  (ctx, a) => {
    run(ctx, 'upsert_presence', [a.session_id, a.device_id, a.node_id, a.status, a.region, a.ttl_ms]);
    if (ctx.connectionId !== null) { // remember which connection upserted it, for the disconnect
      const connection = ctx.connectionId.toHexString();
      const link_id = `${connection}|${a.session_id}`;
      if (ctx.db.connection_session.link_id.find(link_id) === null) {
        ctx.db.connection_session.insert({ link_id, connection, session_id: a.session_id, identity: ctx.sender });
      }
    }
  });

export const publish_provider_capability = spacetimedb.reducer(
  P.publish_provider_capability,
  (ctx, a) => run(ctx, 'publish_provider_capability', [a.provider_id, a.capability_json, a.nip90_kinds, a.price_hint_sats, a.status]));

export const open_compute_assignment = spacetimedb.reducer(
  P.open_compute_assignment,
  (ctx, a) => {
    run(ctx, 'open_compute_assignment', [a.request_id, a.job_kind, a.request_json]);
    allowAssignment(ctx.db, hex(ctx.sender), a.request_id);
  });

export const update_compute_assignment = spacetimedb.reducer(
  P.update_compute_assignment,
  (ctx, a) => {
    run(ctx, 'update_compute_assignment', [a.request_id, a.expected_version, a.status, a.provider_id, a.result_json]);
    const row = ctx.db.compute_assignment.request_id.find(a.request_id);
    if (row?.provider_owner !== undefined) allowAssignment(ctx.db, hex(row.provider_owner), a.request_id);
  });

export const enqueue_bridge_event = spacetimedb.reducer(
  P.enqueue_bridge_event,
  (ctx, a) => run(ctx, 'enqueue_bridge_event', [a.outbox_id, a.source, a.nostr_kind, a.tags_json, a.content]));

export const mark_bridge_event_sent = spacetimedb.reducer(
  P.mark_bridge_event_sent,
  (ctx, a) => run(ctx, 'mark_bridge_event_sent', [a.outbox_id, a.nostr_event_id, a.relays]));

export const record_bridge_failure = spacetimedb.reducer(
  P.record_bridge_failure,
  (ctx, a) => run(ctx, 'record_bridge_failure', [a.outbox_id, a.error, a.retry_after_ms]));

export const publish_stream_signal = spacetimedb.reducer(
  P.publish_stream_signal,
  (ctx, a) => run(ctx, 'publish_stream_signal', [a.stream_id, a.kind, a.payload_json]));

export const reset_stream_epoch = spacetimedb.reducer(
  P.reset_stream_epoch,
  (ctx, a) => run(ctx, 'reset_stream_epoch', [a.stream_id]));

// --- lifecycle and the scheduled sweep ---------------------------------------------------------

export const init = spacetimedb.init((ctx) => {
  if (ctx.db.module_state.id.find(0) === null) {
    ctx.db.module_state.insert({ id: 0, epoch_floor: 1n, version_floor: 1n, tx_offset: 0n });
  }
  ctx.db.presence_sweep_schedule.insert({ scheduled_id: 0n, scheduled_at: ScheduleAt.interval(SWEEP_INTERVAL_US) });
  ctx.db.compaction_schedule.insert({ scheduled_id: 0n, scheduled_at: ScheduleAt.interval(COMPACT_INTERVAL_US) });
});

export const on_connect = spacetimedb.clientConnected((ctx) => refreshGrants(ctx));

export const on_disconnect = spacetimedb.clientDisconnected((ctx) => {
  if (ctx.connectionId === null) return;
  const connection = ctx.connectionId.toHexString();
  const links = [...ctx.db.connection_session.by_connection.filter(connection)];
  const store = hostStore(ctx, (id) => onStreamCreated(ctx.db, id));
  disconnect_sessions(store, ctx.timestamp.microsSinceUnixEpoch, hex(ctx.sender), new Set(links.map((l) => l.session_id)));
  for (const l of links) ctx.db.connection_session.delete(l);
});

/** The presence sweep, run by the scheduler every SWEEP_INTERVAL_US; refused to clients. */
export const presence_sweep_tick = spacetimedb.reducer({ arg: sweepScheduleRow }, (ctx) => {
  if (!ctx.sender.isEqual(ctx.identity)) throw new SenderError('forbidden: {"reducer":"presence_sweep_tick"}');
  presence_sweep(hostStore(ctx, (id) => onStreamCreated(ctx.db, id)), ctx.timestamp.microsSinceUnixEpoch);
});

/** Retention (ADR-0003 decision 8), run by the scheduler every COMPACT_INTERVAL_US; refused to clients. */
export const compaction_tick = spacetimedb.reducer({ arg: compactScheduleRow }, (ctx) => {
  if (!ctx.sender.isEqual(ctx.identity)) throw new SenderError('forbidden: {"reducer":"compaction_tick"}');
  compact(hostStore(ctx, (id) => onStreamCreated(ctx.db, id)), ctx.timestamp.microsSinceUnixEpoch, POLICY);
});
