/**
 * The sync module's rules as pure functions over a small table interface ({@link Store}).
 *
 * This is a port of spec/reducers.py (ADR-0003 rules included), not of the reference engine:
 * every reducer takes the same arguments in the same order, runs its checks in the same order
 * (authorization, then argument validation, then state checks), fails with the same
 * `<code>: <canonical JSON details>` string, deduplicates before it checks the sequence, and
 * returns the same value (`append_sync_event` returns the seq). A reducer writes only after every
 * check passed, so a failure leaves the store untouched even without a transaction around it
 * (inside SpacetimeDB a thrown error also rolls the transaction back).
 *
 * Host-specific things come in through the arguments: the caller's verified claims, the time,
 * the transaction offset and the policy ({@link Ctx}); the store gives the rows. The binding
 * (module.ts) builds both from SpacetimeDB's `ReducerCtx`; the tests use {@link MemStore}.
 *
 * u64 columns and timestamps (microseconds) are bigint; u32 columns are number; identities are
 * 64 lowercase hex digits; `Option<T>` is `T | undefined` (as SpacetimeDB's TypeScript types).
 */

import { canonicalize, compareCodePoints, dumpsPlain, parseStrict, payloadHash, utf8Length } from './canonical.js';
import { ErrorCode, SyncError } from './errors.js';

// --- rows (column order = wire order; see rows.ts for the SATS types) -------------------------

export interface SyncStream {
  stream_id: string; stream_class: string; epoch: bigint; continues_epoch: bigint; continues_seq: bigint;
  head_seq: bigint; floor_seq: bigint; replay_budget: bigint; created_at: bigint; updated_at: bigint;
  earlier_epochs: bigint[]; earlier_seqs: bigint[];
}
export interface SyncEvent {
  stream_id: string; epoch: bigint; seq: bigint; idempotency_key: string; payload_hash: string;
  payload: string; producer: string; committed_at: bigint; tx_offset: bigint;
}
export interface SyncCheckpoint {
  checkpoint_id: string; client_id: string; stream_id: string; owner: string; epoch: bigint;
  last_applied_seq: bigint; updated_at: bigint;
}
export interface SessionPresence {
  session_id: string; identity: string; device_id: string; node_id: string; status: string; region: string;
  last_seen: bigint; expires_at: bigint; offline_reason: string | undefined;
}
export interface ProviderCapability {
  provider_id: string; owner: string; capability: string; capability_hash: string; nip90_kinds: number[];
  price_hint_sats: bigint; status: string; version: bigint; updated_at: bigint;
}
export interface ComputeAssignment {
  request_id: string; requester: string; job_kind: number; request: string; request_hash: string;
  provider_id: string | undefined; provider_owner: string | undefined; status: string;
  result: string | undefined; version: bigint; opened_at: bigint; updated_at: bigint;
}
export interface BridgeOutbox {
  outbox_id: string; source: string; nostr_kind: number; tags: string; content: string; content_hash: string;
  status: string; attempts: number; next_attempt_at: bigint; last_error: string | undefined;
  nostr_event_id: string | undefined; relays_acked: string[]; created_at: bigint; updated_at: bigint;
}
export interface PresenceSignal { session_id: string; identity: string; status: string; reason: string; at: bigint }
export interface StreamSignal { stream_id: string; kind: string; payload: string; sender: string; at: bigint }

// --- the table interface ----------------------------------------------------------------------

/** A table with a string primary key. */
export interface Keyed<R> {
  find(key: string): R | undefined;
  insert(row: R): void;
  /** Replace the row with the same key. */
  update(row: R): void;
}

export interface Store {
  sync_stream: Keyed<SyncStream> & { all(): Iterable<SyncStream> };
  sync_event: {
    byKey(stream_id: string, idempotency_key: string): SyncEvent | undefined;
    ofStream(stream_id: string): Iterable<SyncEvent>;
    insert(row: SyncEvent): void;
    delete(row: SyncEvent): void;
  };
  sync_checkpoint: Keyed<SyncCheckpoint>;
  session_presence: Keyed<SessionPresence> & Scannable<SessionPresence>;
  provider_capability: Keyed<ProviderCapability>;
  compute_assignment: Keyed<ComputeAssignment> & Scannable<ComputeAssignment>;
  bridge_outbox: Keyed<BridgeOutbox> & Scannable<BridgeOutbox>;
  presence_signal: { emit(row: PresenceSignal): void };
  stream_signal: { emit(row: StreamSignal): void };
  /** The epoch a new stream starts in, the version a new provider/assignment starts at (DbState). */
  epochFloor(): bigint;
  versionFloor(): bigint;
  /** Raise the version floor (retention removed a row that had versions below it). */
  raiseVersionFloor(v: bigint): void;
}

/** A table retention scans and deletes from (by primary key). */
export interface Scannable<R> {
  all(): Iterable<R>;
  delete(key: string): void;
}

// --- policy, caller, context -----------------------------------------------------------------

export interface StreamClass {
  name: string;
  max_payload_bytes: number;
  retain_count: number | null;
  retain_age_us: bigint | null;
  replay_budget: bigint;
}

export interface Policy {
  classes: ReadonlyArray<readonly [string, StreamClass]>;
  default_class: StreamClass;
  presence_min_ttl_ms: bigint;
  presence_max_ttl_ms: bigint;
  bridge_kinds: ReadonlySet<number>;
  bridge_max_attempts: number;
  bridge_max_retry_after_ms: bigint;
  max_error_text: number;
  /** Retention windows (ADR-0003 decision 8); null keeps such rows for ever. */
  retain_offline_presence_us: bigint | null;
  retain_terminal_assignment_us: bigint | null;
  retain_sent_outbox_us: bigint | null;
  retain_failed_outbox_us: bigint | null;
}

/** spec.policy.DEFAULT_POLICY. */
export const DEFAULT_POLICY: Policy = {
  classes: [],
  default_class: { name: 'default', max_payload_bytes: 256 * 1024, retain_count: null, retain_age_us: null, replay_budget: 20000n },
  presence_min_ttl_ms: 1000n,
  presence_max_ttl_ms: 300000n,
  bridge_kinds: new Set([30078, 31990]),
  bridge_max_attempts: 5,
  bridge_max_retry_after_ms: 86400000n,
  max_error_text: 1024,
  retain_offline_presence_us: 86_400n * 1_000_000n,
  retain_terminal_assignment_us: 7n * 86_400n * 1_000_000n,
  retain_sent_outbox_us: 7n * 86_400n * 1_000_000n,
  retain_failed_outbox_us: 30n * 86_400n * 1_000_000n,
};

/** The longest matching stream-id prefix wins. */
export function classFor(policy: Policy, stream_id: string): StreamClass {
  let best: [number, StreamClass] | undefined;
  for (const [prefix, cls] of policy.classes) {
    if (stream_id.startsWith(prefix) && (best === undefined || prefix.length > best[0])) best = [prefix.length, cls];
  }
  return best ? best[1] : policy.default_class;
}

/** What the verified token says about the caller (spec.auth.Claims). */
export interface Caller {
  identity: string;
  scopes: ReadonlySet<string>;
  streams: readonly string[];
  device_id?: string | undefined;
  session_id?: string | undefined;
}

export interface Ctx {
  caller: Caller;
  now: bigint;
  /** The offset this transaction commits at, if it writes (stored in sync_event.tx_offset). */
  tx_offset: bigint;
  policy: Policy;
}

// --- vocabulary ------------------------------------------------------------------------------

export const ASSIGNMENT_STATUSES = ['open', 'assigned', 'running', 'completed', 'failed', 'cancelled'] as const;
export const ASSIGNMENT_TERMINAL: ReadonlySet<string> = new Set(['completed', 'failed', 'cancelled']);
/** (from|to) -> the roles that may take the edge (spec.transitions.ASSIGNMENT_TRANSITIONS). */
export const ASSIGNMENT_TRANSITIONS: ReadonlyMap<string, readonly Role[]> = new Map<string, Role[]>([
  ['open|assigned', ['dispatcher']],
  ['assigned|running', ['executor']],
  ['running|completed', ['executor']],
  ['running|failed', ['executor']],
  ['open|cancelled', ['requester', 'dispatcher']],
  ['assigned|cancelled', ['requester', 'dispatcher']],
  ['running|cancelled', ['requester', 'dispatcher']],
]);
export type Role = 'requester' | 'dispatcher' | 'executor';
/** Each role as a predicate: a scope the caller holds, a column of the row the caller is. */
export const ASSIGNMENT_ROLES: Readonly<Record<Role, { scope: string | null; column: 'requester' | 'provider_owner' | null }>> = {
  requester: { scope: null, column: 'requester' },
  dispatcher: { scope: 'compute.assign', column: null },
  executor: { scope: 'compute.execute', column: 'provider_owner' },
};
export const PRESENCE_STATUSES = ['online', 'away', 'offline'] as const;
export const PROVIDER_STATUSES = ['active', 'withdrawn'] as const;
export const SIGNAL_KINDS = ['typing', 'progress', 'custom'] as const;
export const BRIDGE_SCOPES: ReadonlySet<string> = new Set(['bridge.enqueue', 'bridge.mark_sent']);

const ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
const HASH_RE = /^sha256:[0-9a-f]{64}$/;
export const isId = (v: string): boolean => ID_RE.test(v);
export const isHash = (v: string): boolean => HASH_RE.test(v);
/** Python's len(): code points, not UTF-16 units. */
const pyLen = (s: string): number => [...s].length;
const pyList = (xs: readonly string[]): string => '[' + xs.map((x) => `'${x}'`).join(', ') + ']';

export function hasRole(role: Role, caller: Caller, row: ComputeAssignment): boolean {
  const r = ASSIGNMENT_ROLES[role];
  return (r.scope === null || caller.scopes.has(r.scope)) && (r.column === null || row[r.column] === caller.identity);
}

export function grantMatches(grant: string, stream_id: string): boolean {
  return grant.endsWith('*') ? stream_id.startsWith(grant.slice(0, -1)) : grant === stream_id;
}

export function streamGranted(caller: Caller, stream_id: string): boolean {
  return caller.streams.some((g) => grantMatches(g, stream_id));
}

// --- outcomes --------------------------------------------------------------------------------

export type Outcome = { ok: true; ret: bigint | undefined } | { ok: false; error: SyncError };

const fail = (code: ErrorCode, details: Record<string, unknown>): SyncError => new SyncError(code, details);

function scope(c: Caller, s: string): void {
  if (!c.scopes.has(s)) throw fail(ErrorCode.MISSING_SCOPE, { scope: s });
}
function grant(c: Caller, stream_id: string): void {
  if (!streamGranted(c, stream_id)) throw fail(ErrorCode.FORBIDDEN_STREAM, { stream_id });
}
function id(name: string, value: string): void {
  if (!isId(value)) throw fail(ErrorCode.INVALID_ARGUMENT, { argument: name, message: 'must be 1-128 characters of [A-Za-z0-9._:-]' });
}
function oneOf(name: string, value: string, allowed: readonly string[]): void {
  if (!allowed.includes(value)) throw fail(ErrorCode.INVALID_ARGUMENT, { argument: name, message: `must be one of ${pyList(allowed)}` });
}

/** (epoch, head_seq, floor_seq); a stream that does not exist yet is (epoch_floor, 0, 1). */
export function virtualStream(db: Store, stream_id: string): [bigint, bigint, bigint] {
  const s = db.sync_stream.find(stream_id);
  return s === undefined ? [db.epochFloor(), 0n, 1n] : [s.epoch, s.head_seq, s.floor_seq];
}

// --- reducers (argument order = wire order) ---------------------------------------------------

export function append_sync_event(db: Store, ctx: Ctx, stream_id: string, idempotency_key: string,
  payload_json: string, payload_hash: string | undefined, expected_next_seq: bigint | undefined): bigint {
  const c = ctx.caller;
  scope(c, 'sync.append');
  grant(c, stream_id);
  id('stream_id', stream_id);
  id('idempotency_key', idempotency_key);
  const canon = canonicalize(payload_json);
  const cls = classFor(ctx.policy, stream_id);
  const size = utf8Length(canon);
  if (size > cls.max_payload_bytes) {
    throw fail(ErrorCode.PAYLOAD_TOO_LARGE, { limit_bytes: cls.max_payload_bytes, payload_bytes: size, stream_id });
  }
  const digest = payloadHash(canon);
  if (payload_hash !== undefined && payload_hash !== digest) {
    throw fail(ErrorCode.PAYLOAD_HASH_MISMATCH, { payload_hash: digest, requested_payload_hash: payload_hash, stream_id });
  }
  // state checks: dedupe before sequence
  const existing = db.sync_event.byKey(stream_id, idempotency_key);
  if (existing !== undefined) {
    if (existing.payload_hash === digest) return existing.seq;
    throw fail(ErrorCode.IDEMPOTENCY_CONFLICT, {
      existing_payload_hash: existing.payload_hash, existing_seq: existing.seq, idempotency_key,
      payload_hash: digest, stream_id,
    });
  }
  const stream = db.sync_stream.find(stream_id);
  const head = stream ? stream.head_seq : 0n;
  if (expected_next_seq !== undefined && expected_next_seq !== head + 1n) {
    throw fail(ErrorCode.SEQUENCE_CONFLICT, { actual_next_seq: head + 1n, expected_next_seq, stream_id });
  }
  const seq = head + 1n;
  let epoch: bigint;
  if (stream === undefined) {
    epoch = db.epochFloor();
    db.sync_stream.insert({
      stream_id, stream_class: cls.name, epoch, continues_epoch: 0n, continues_seq: 0n, head_seq: seq,
      floor_seq: seq, replay_budget: cls.replay_budget, created_at: ctx.now, updated_at: ctx.now,
      earlier_epochs: [], earlier_seqs: [],
    });
  } else {
    const floor = stream.floor_seq <= stream.head_seq ? stream.floor_seq : seq;
    db.sync_stream.update({ ...stream, head_seq: seq, floor_seq: floor, updated_at: ctx.now });
    epoch = stream.epoch;
  }
  db.sync_event.insert({
    stream_id, epoch, seq, idempotency_key, payload_hash: digest, payload: canon, producer: c.identity,
    committed_at: ctx.now, tx_offset: ctx.tx_offset,
  });
  return seq;
}

export function ack_checkpoint(db: Store, ctx: Ctx, client_id: string, stream_id: string, epoch: bigint, seq: bigint): void {
  const c = ctx.caller;
  scope(c, 'sync.checkpoint.write');
  grant(c, stream_id);
  const cid = `${client_id}|${stream_id}`;
  const old = db.sync_checkpoint.find(cid);
  if (old !== undefined && old.owner !== c.identity) throw fail(ErrorCode.FORBIDDEN, { checkpoint_id: cid });
  id('client_id', client_id);
  id('stream_id', stream_id);
  const [sEpoch, head] = virtualStream(db, stream_id);
  if (epoch !== sEpoch) throw fail(ErrorCode.STALE_EPOCH, { epoch: sEpoch, requested_epoch: epoch, stream_id });
  if (seq > head) throw fail(ErrorCode.CHECKPOINT_AHEAD_OF_HEAD, { head_seq: head, requested_seq: seq, stream_id });
  if (old !== undefined && old.epoch === epoch && old.last_applied_seq >= seq) return; // lower ack: no-op
  const row: SyncCheckpoint = {
    checkpoint_id: cid, client_id, stream_id, owner: c.identity, epoch, last_applied_seq: seq, updated_at: ctx.now,
  };
  if (old === undefined) db.sync_checkpoint.insert(row);
  else db.sync_checkpoint.update(row);
}

export function upsert_presence(db: Store, ctx: Ctx, session_id: string, device_id: string, node_id: string,
  status: string, region: string, ttl_ms: bigint): void {
  const c = ctx.caller;
  scope(c, 'presence.write');
  const old = db.session_presence.find(session_id);
  if (old !== undefined && old.identity !== c.identity) throw fail(ErrorCode.FORBIDDEN, { session_id });
  if ((c.session_id !== undefined && c.session_id !== session_id) || (c.device_id !== undefined && c.device_id !== device_id)) {
    throw fail(ErrorCode.FORBIDDEN, { session_id });
  }
  id('session_id', session_id);
  id('device_id', device_id);
  id('node_id', node_id);
  oneOf('status', status, PRESENCE_STATUSES);
  if (region !== '' && !isId(region)) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'region', message: 'must be empty or 1-128 characters of [A-Za-z0-9._:-]' });
  }
  const p = ctx.policy;
  if (!(p.presence_min_ttl_ms <= ttl_ms && ttl_ms <= p.presence_max_ttl_ms)) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'ttl_ms', message: `must be ${p.presence_min_ttl_ms}-${p.presence_max_ttl_ms}` });
  }
  const reason = status === 'offline' ? 'explicit_offline' : undefined;
  const row: SessionPresence = {
    session_id, identity: c.identity, device_id, node_id, status, region, last_seen: ctx.now,
    expires_at: ctx.now + ttl_ms * 1000n, offline_reason: reason,
  };
  if (old !== undefined && (Object.keys(row) as (keyof SessionPresence)[]).every((k) => row[k] === old[k])) {
    return; // the row would not change (the same call at the same instant): a no-op, as the model's Tx.update
  }
  if (old === undefined) db.session_presence.insert(row);
  else db.session_presence.update(row);
  if (old === undefined || old.status !== status) {
    db.presence_signal.emit({ session_id, identity: c.identity, status, reason: reason ?? '', at: ctx.now });
  }
}

function kindsOk(kinds: readonly number[]): void {
  if (kinds.some((k) => !(5000 <= k && k <= 5999))) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'nip90_kinds', message: 'each kind must be 5000-5999' });
  }
}

export function publish_provider_capability(db: Store, ctx: Ctx, provider_id: string, capability_json: string,
  nip90_kinds: readonly number[], price_hint_sats: bigint, status: string): void {
  const c = ctx.caller;
  scope(c, 'provider.publish');
  const old = db.provider_capability.find(provider_id);
  if (old !== undefined && old.owner !== c.identity) throw fail(ErrorCode.FORBIDDEN, { provider_id });
  id('provider_id', provider_id);
  const canon = canonicalize(capability_json, 'capability_json');
  kindsOk(nip90_kinds);
  oneOf('status', status, PROVIDER_STATUSES);
  const kinds = [...new Set(nip90_kinds)].sort((a, b) => a - b);
  const digest = payloadHash(canon);
  if (old !== undefined && old.capability_hash === digest && old.nip90_kinds.join(',') === kinds.join(',')
    && old.price_hint_sats === price_hint_sats && old.status === status) {
    return; // same content: no-op, version unchanged
  }
  const row: ProviderCapability = {
    provider_id, owner: c.identity, capability: canon, capability_hash: digest, nip90_kinds: kinds, price_hint_sats,
    status, version: old === undefined ? db.versionFloor() : old.version + 1n, updated_at: ctx.now,
  };
  if (old === undefined) db.provider_capability.insert(row);
  else db.provider_capability.update(row);
}

export function open_compute_assignment(db: Store, ctx: Ctx, request_id: string, job_kind: number, request_json: string): void {
  const c = ctx.caller;
  scope(c, 'compute.request');
  const old = db.compute_assignment.find(request_id);
  if (old !== undefined && old.requester !== c.identity) throw fail(ErrorCode.FORBIDDEN, { request_id });
  id('request_id', request_id);
  if (!(5000 <= job_kind && job_kind <= 5999)) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'job_kind', message: 'must be 5000-5999' });
  }
  const canon = canonicalize(request_json, 'request_json');
  const digest = payloadHash(canon);
  if (old !== undefined) {
    if (old.request_hash === digest && old.job_kind === job_kind) return;
    throw fail(ErrorCode.IDEMPOTENCY_CONFLICT, { existing_request_hash: old.request_hash, request_hash: digest, request_id });
  }
  db.compute_assignment.insert({
    request_id, requester: c.identity, job_kind, request: canon, request_hash: digest, provider_id: undefined,
    provider_owner: undefined, status: 'open', result: undefined, version: db.versionFloor(), opened_at: ctx.now,
    updated_at: ctx.now,
  });
}

/** The provider an assignment may name: it exists, is active and advertises the job kind. */
function availableProvider(db: Store, provider_id: string, job_kind: number): ProviderCapability {
  const p = db.provider_capability.find(provider_id);
  const reason = p === undefined ? 'missing' : p.status !== 'active' ? 'withdrawn'
    : !p.nip90_kinds.includes(job_kind) ? 'kind_not_advertised' : undefined;
  if (reason !== undefined || p === undefined) {
    throw fail(ErrorCode.PROVIDER_UNAVAILABLE, { job_kind, provider_id, reason });
  }
  return p;
}

export function update_compute_assignment(db: Store, ctx: Ctx, request_id: string, expected_version: bigint,
  status: string, provider_id: string | undefined, result_json: string | undefined): void {
  const c = ctx.caller;
  if (!['compute.request', 'compute.assign', 'compute.execute'].some((s) => c.scopes.has(s))) {
    throw fail(ErrorCode.MISSING_SCOPE, { scope: 'compute.assign' });
  }
  id('request_id', request_id);
  oneOf('status', status, ASSIGNMENT_STATUSES);
  if (provider_id !== undefined) id('provider_id', provider_id);
  if (status === 'assigned' && provider_id === undefined) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'provider_id', message: 'required to assign' });
  }
  let result: string | undefined;
  if (result_json !== undefined) {
    if (status !== 'completed' && status !== 'failed') {
      throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'result_json', message: 'only completed or failed carry a result' });
    }
    result = canonicalize(result_json, 'result_json');
  }
  const old = db.compute_assignment.find(request_id);
  if (old === undefined) throw fail(ErrorCode.ASSIGNMENT_MISSING, { request_id });
  if (old.version !== expected_version) {
    throw fail(ErrorCode.VERSION_CONFLICT, { actual_version: old.version, expected_version, request_id });
  }
  const roles = ASSIGNMENT_TRANSITIONS.get(`${old.status}|${status}`);
  if (roles === undefined) {
    throw fail(ErrorCode.INVALID_TRANSITION, { request_id, status: old.status, requested_status: status });
  }
  if (!roles.some((r) => hasRole(r, c, old))) throw fail(ErrorCode.FORBIDDEN, { request_id });
  if (status !== 'assigned' && provider_id !== undefined && provider_id !== old.provider_id) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'provider_id', message: 'only the assign edge sets the provider' });
  }
  let provider_owner = old.provider_owner;
  if (status === 'assigned') provider_owner = availableProvider(db, provider_id!, old.job_kind).owner;
  db.compute_assignment.update({
    ...old, status, provider_id: status === 'assigned' ? provider_id : old.provider_id, provider_owner, result,
    version: old.version + 1n, updated_at: ctx.now,
  });
}

/** The outbox dedupe key: the hash of canonical `[source, nostr_kind, tags, content]` (ADR-0003). */
export function outboxContentHash(source: string, nostr_kind: number, tagsCanonical: string, content: string): string {
  return payloadHash(dumpsPlain([source, nostr_kind, parseStrict(tagsCanonical), content]));
}

function tagsOk(tags_json: string): [string, string[][]] {
  const canon = canonicalize(tags_json, 'tags_json');
  const v = parseStrict(canon, 'tags_json');
  if (!(Array.isArray(v) && v.every((t) => Array.isArray(t) && t.every((x) => typeof x === 'string')))) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'tags_json', message: 'must be a JSON array of arrays of strings' });
  }
  return [canon, v as string[][]];
}

/** The C0 controls NIP-01 writes verbatim but JSON encoders escape (in two spellings): an event
 * holding one has no id every relay agrees on, so the outbox refuses them
 * (spec.policy.NOSTR_NONPORTABLE_CONTROLS: U+0000-U+001F except \b \t \n \f \r). */
// eslint-disable-next-line no-control-regex
const NOSTR_NONPORTABLE_CONTROL = /[\u0000-\u0007\u000b\u000e-\u001f]/;

export function enqueue_bridge_event(db: Store, ctx: Ctx, outbox_id: string, source: string, nostr_kind: number,
  tags_json: string, content: string): void {
  scope(ctx.caller, 'bridge.enqueue');
  id('outbox_id', outbox_id);
  id('source', source);
  const [tags, parsed] = tagsOk(tags_json);
  if (!ctx.policy.bridge_kinds.has(nostr_kind)) throw fail(ErrorCode.POLICY_DENIED, { nostr_kind, outbox_id });
  if ([content, ...parsed.flat()].some((x) => NOSTR_NONPORTABLE_CONTROL.test(x))) {
    throw fail(ErrorCode.POLICY_DENIED, { nostr_kind, outbox_id });
  }
  const digest = outboxContentHash(source, nostr_kind, tags, content);
  const old = db.bridge_outbox.find(outbox_id);
  if (old !== undefined) {
    if (old.content_hash === digest) return;
    throw fail(ErrorCode.IDEMPOTENCY_CONFLICT, { content_hash: digest, existing_content_hash: old.content_hash, outbox_id });
  }
  db.bridge_outbox.insert({
    outbox_id, source, nostr_kind, tags, content, content_hash: digest, status: 'pending', attempts: 0,
    next_attempt_at: ctx.now, last_error: undefined, nostr_event_id: undefined, relays_acked: [],
    created_at: ctx.now, updated_at: ctx.now,
  });
}

export function mark_bridge_event_sent(db: Store, ctx: Ctx, outbox_id: string, nostr_event_id: string,
  relays: readonly string[]): void {
  scope(ctx.caller, 'bridge.mark_sent');
  id('outbox_id', outbox_id);
  if (!isHash('sha256:' + nostr_event_id)) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'nostr_event_id', message: 'must be 64 lowercase hex' });
  }
  if (relays.some((r) => r === '' || pyLen(r) > 512)) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'relays', message: 'each relay must be 1-512 chars' });
  }
  const old = db.bridge_outbox.find(outbox_id);
  if (old === undefined) throw fail(ErrorCode.BRIDGE_EVENT_MISSING, { outbox_id });
  const acked = new Set(relays);
  if (old.status === 'sent') {
    if (old.nostr_event_id !== nostr_event_id) {
      throw fail(ErrorCode.BRIDGE_EVENT_CONFLICT, { nostr_event_id: old.nostr_event_id, requested_nostr_event_id: nostr_event_id, outbox_id });
    }
    if ([...acked].every((r) => old.relays_acked.includes(r))) return; // nothing new acknowledged
    for (const r of old.relays_acked) acked.add(r);
  }
  db.bridge_outbox.update({
    ...old, status: 'sent', nostr_event_id, relays_acked: [...acked].sort(compareCodePoints), updated_at: ctx.now,
  });
}

export function record_bridge_failure(db: Store, ctx: Ctx, outbox_id: string, error: string, retry_after_ms: bigint): void {
  const p = ctx.policy;
  scope(ctx.caller, 'bridge.mark_sent');
  id('outbox_id', outbox_id);
  if (error === '' || pyLen(error) > p.max_error_text) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'error', message: `must be 1-${p.max_error_text} characters` });
  }
  if (retry_after_ms > p.bridge_max_retry_after_ms) {
    throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'retry_after_ms', message: `must be at most ${p.bridge_max_retry_after_ms}` });
  }
  const old = db.bridge_outbox.find(outbox_id);
  if (old === undefined) throw fail(ErrorCode.BRIDGE_EVENT_MISSING, { outbox_id });
  if (old.status !== 'pending') return;
  const attempts = old.attempts + 1;
  db.bridge_outbox.update({
    ...old, attempts, status: attempts >= p.bridge_max_attempts ? 'failed' : 'pending',
    next_attempt_at: ctx.now + 1000n * retry_after_ms, last_error: error, updated_at: ctx.now,
  });
}

export function publish_stream_signal(db: Store, ctx: Ctx, stream_id: string, kind: string, payload_json: string): void {
  const c = ctx.caller;
  scope(c, 'sync.append');
  grant(c, stream_id);
  id('stream_id', stream_id);
  oneOf('kind', kind, SIGNAL_KINDS);
  const canon = canonicalize(payload_json);
  const limit = classFor(ctx.policy, stream_id).max_payload_bytes;
  const size = utf8Length(canon);
  if (size > limit) throw fail(ErrorCode.PAYLOAD_TOO_LARGE, { limit_bytes: limit, payload_bytes: size, stream_id });
  db.stream_signal.emit({ stream_id, kind, payload: canon, sender: c.identity, at: ctx.now });
}

/** Admin: a fresh, empty epoch (continues nothing); retained events dropped, seqs go on from head. */
export function reset_stream_epoch(db: Store, ctx: Ctx, stream_id: string): void {
  scope(ctx.caller, 'sync.admin');
  id('stream_id', stream_id);
  const stream = db.sync_stream.find(stream_id);
  if (stream === undefined) throw fail(ErrorCode.INVALID_ARGUMENT, { argument: 'stream_id', message: 'stream does not exist' });
  for (const e of [...db.sync_event.ofStream(stream_id)]) db.sync_event.delete(e);
  db.sync_stream.update({
    ...stream, epoch: stream.epoch + 1n, continues_epoch: 0n, continues_seq: 0n, earlier_epochs: [], earlier_seqs: [],
    floor_seq: stream.head_seq + 1n, updated_at: ctx.now,
  });
}

// --- dispatch --------------------------------------------------------------------------------

/** Reducer name -> implementation; arguments in wire order, already of their SATS types. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const REDUCERS: Readonly<Record<string, (db: Store, ctx: Ctx, ...args: any[]) => bigint | void>> = {
  append_sync_event, ack_checkpoint, upsert_presence, publish_provider_capability, open_compute_assignment,
  update_compute_assignment, enqueue_bridge_event, mark_bridge_event_sent, record_bridge_failure,
  publish_stream_signal, reset_stream_epoch,
};

/** Run one reducer call: its return value, or the SyncError it failed with. */
export function call(db: Store, ctx: Ctx, reducer: string, args: readonly unknown[]): Outcome {
  const fn = REDUCERS[reducer];
  if (fn === undefined) return { ok: false, error: fail(ErrorCode.NO_SUCH_REDUCER, { reducer }) };
  try {
    const ret = fn(db, ctx, ...args);
    return { ok: true, ret: typeof ret === 'bigint' ? ret : undefined };
  } catch (e) {
    if (e instanceof SyncError) return { ok: false, error: e };
    throw e;
  }
}

// --- system transactions ---------------------------------------------------------------------

/** Mark every live presence row whose TTL has passed offline (`ttl_expired`), one signal each. */
export function presence_sweep(db: Store, now: bigint): number {
  let n = 0;
  for (const r of [...db.session_presence.all()]) {
    if (r.status !== 'offline' && r.expires_at <= now) {
      db.session_presence.update({ ...r, status: 'offline', offline_reason: 'ttl_expired' });
      db.presence_signal.emit({ session_id: r.session_id, identity: r.identity, status: 'offline', reason: 'ttl_expired', at: now });
      n++;
    }
  }
  return n;
}

/** A connection closed: the live sessions it upserted go offline (`disconnected`, or
 * `ttl_expired` when the TTL ran out first and only the sweep had not run yet). */
export function disconnect_sessions(db: Store, now: bigint, identity: string, sessions: ReadonlySet<string>): void {
  for (const r of [...db.session_presence.all()]) {
    if (sessions.has(r.session_id) && r.identity === identity && r.status !== 'offline') {
      if (r.expires_at <= now) {
        db.session_presence.update({ ...r, status: 'offline', offline_reason: 'ttl_expired' });
        db.presence_signal.emit({ session_id: r.session_id, identity, status: 'offline', reason: 'ttl_expired', at: now });
      } else {
        db.session_presence.update({ ...r, status: 'offline', offline_reason: 'disconnected', last_seen: now });
        db.presence_signal.emit({ session_id: r.session_id, identity, status: 'offline', reason: 'disconnected', at: now });
      }
    }
  }
}

// --- retention (ADR-0003 decision 8) ----------------------------------------------------------

/** A row stamped `ts` is past a retention window at `now` (never when the window is null). */
export function expired(ts: bigint, now: bigint, window: bigint | null): boolean {
  return window !== null && ts < now - window;
}

/** Retention: drop events past their class's count or age limit (a prefix only, so retained seqs
 * stay contiguous up to head) and raise floor_seq; drop offline presence rows, terminal
 * assignments and sent or failed outbox rows past their windows. A removed assignment raises the
 * version floor above its version, so its id never comes back with a version it had. */
export function compact(db: Store, now: bigint, policy: Policy): void {
  for (const r of [...db.session_presence.all()]) {
    if (r.status === 'offline' && expired(r.last_seen, now, policy.retain_offline_presence_us)) db.session_presence.delete(r.session_id);
  }
  for (const r of [...db.compute_assignment.all()]) {
    if (ASSIGNMENT_TERMINAL.has(r.status) && expired(r.updated_at, now, policy.retain_terminal_assignment_us)) {
      db.compute_assignment.delete(r.request_id);
      if (r.version + 1n > db.versionFloor()) db.raiseVersionFloor(r.version + 1n);
    }
  }
  for (const r of [...db.bridge_outbox.all()]) {
    const window = r.status === 'sent' ? policy.retain_sent_outbox_us : r.status === 'failed' ? policy.retain_failed_outbox_us : null;
    if (r.status !== 'pending' && expired(r.updated_at, now, window)) db.bridge_outbox.delete(r.outbox_id);
  }
  for (const s of [...db.sync_stream.all()]) {
    const cls = classFor(policy, s.stream_id);
    const events = [...db.sync_event.ofStream(s.stream_id)].sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
    const drop = new Set<bigint>();
    if (cls.retain_count !== null && events.length > cls.retain_count) {
      for (const e of events.slice(0, events.length - cls.retain_count)) drop.add(e.seq);
    }
    if (cls.retain_age_us !== null) {
      for (const e of events) if (e.committed_at < now - cls.retain_age_us) drop.add(e.seq);
    }
    let cut = 0n;
    for (const e of events) {
      if (drop.has(e.seq)) cut = e.seq;
      else break;
    }
    if (cut === 0n) continue;
    for (const e of events) if (e.seq <= cut) db.sync_event.delete(e);
    db.sync_stream.update({ ...s, floor_seq: s.floor_seq > cut + 1n ? s.floor_seq : cut + 1n, updated_at: now });
  }
}

// --- stream policy: the stale-cursor decision ------------------------------------------------

export const STALE_REASONS = ['epoch_changed', 'retention_floor_breach', 'replay_budget_exceeded', 'cursor_ahead_of_head'] as const;

/** Why resuming at (requested_epoch, watermark) is unsafe; empty when it is safe (STALE-1).  `upper`: a
 * page's bound B (`seq <= B`), whose replay held against the budget ends at min(head, B) (ADR-0042). */
export function staleReasons(epoch: bigint, head: bigint, floor: bigint, budget: bigint,
  requested_epoch: bigint | undefined, watermark: bigint, upper?: bigint): string[] {
  const end = upper === undefined || upper > head ? head : upper;
  const checks: [string, boolean][] = [
    ['epoch_changed', requested_epoch !== undefined && requested_epoch !== epoch],
    ['retention_floor_breach', watermark < floor - 1n],
    ['replay_budget_exceeded', end - watermark > budget],
    ['cursor_ahead_of_head', watermark > head],
  ];
  return checks.filter(([, failed]) => failed).map(([name]) => name);
}

/** The stale_cursor error of a resume of `stream_id` at (requested_epoch, watermark) -- a page of it when
 * `upper` is given (`seq <= upper`) -- or undefined.
 * SpacetimeDB cannot reject a subscription from module code, so on SpacetimeDB the client runs
 * this against the `sync_stream` row it receives in the same query set (the Python SDK does). */
export function staleError(db: Store, policy: Policy, stream_id: string, requested_epoch: bigint | undefined,
  watermark: bigint, upper?: bigint): SyncError | undefined {
  const [epoch, head, floor] = virtualStream(db, stream_id);
  const budget = classFor(policy, stream_id).replay_budget;
  const reasons = staleReasons(epoch, head, floor, budget, requested_epoch, watermark, upper);
  if (reasons.length === 0) return undefined;
  const s = db.sync_stream.find(stream_id);
  return fail(ErrorCode.STALE_CURSOR, {
    continues_epoch: s ? s.continues_epoch : 0n, continues_seq: s ? s.continues_seq : 0n,
    earlier_epochs: s ? [...s.earlier_epochs] : [], earlier_seqs: s ? [...s.earlier_seqs] : [], epoch, floor_seq: floor,
    head_seq: head, reasons, replay_budget: budget, requested_epoch: requested_epoch ?? null,
    requested_watermark: watermark, stream_id,
  });
}

/** Row visibility (spec.auth.can_read), for the in-memory server and to check the RLS rules'
 * intent: stream rows by grant, checkpoints by owner, assignments by requester/provider owner/
 * dispatcher, outbox by bridge scopes, the rest by everyone. */
export function canRead(caller: Caller, table: string, row: Record<string, unknown>): boolean {
  switch (table) {
    case 'sync_stream': case 'sync_event': case 'stream_signal':
      return streamGranted(caller, row['stream_id'] as string);
    case 'sync_checkpoint':
      return row['owner'] === caller.identity;
    case 'compute_assignment':
      return row['requester'] === caller.identity || row['provider_owner'] === caller.identity || caller.scopes.has('compute.assign');
    case 'bridge_outbox':
      return [...BRIDGE_SCOPES].some((s) => caller.scopes.has(s));
    default:
      return true;
  }
}
