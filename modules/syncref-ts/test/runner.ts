/**
 * Vector runners shared by the tests and the mutant harness. Each takes the rules (or canonical)
 * module as a parameter, so the same runner judges the real module and planted mutants of it,
 * and returns the list of failures (empty = every vector passed).
 */

import { readFileSync } from 'node:fs';

import type * as CanonicalModule from '../src/canonical.js';
import { MemStore } from '../src/memstore.js';
import type * as RulesModule from '../src/rules.js';
import type { Caller, Ctx, Policy, StreamClass } from '../src/rules.js';

export type Rules = typeof RulesModule;
export type Canonical = typeof CanonicalModule;

/** From the build directory (build/test/) back to the module folder. */
export const MODULE_DIR = new URL('../../', import.meta.url);
export const REPO_DIR = new URL('../../../../', import.meta.url);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

/** Integers past 2^53 - 1 are written by the exporter as {"__int__": "<digits>"} (JSON.parse would round
 * them to doubles); they come back as bigints, exact, as the module's u64 values are. */
export function loadJson(rel: string, base: URL = MODULE_DIR): Json {
  return JSON.parse(readFileSync(new URL(rel, base), 'utf8'),
    (_k, v) => (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1
      && typeof v.__int__ === 'string' ? BigInt(v.__int__) : v));
}

export const SCHEMA: Json = loadJson('test/model-cases/schema.json');
const REDUCER_ARGS: Record<string, [string, string][]> = Object.fromEntries(
  SCHEMA.reducers.map((r: Json) => [r.name, r.args]));
const TABLE_COLUMNS: Record<string, [string, string][]> = Object.fromEntries(
  SCHEMA.tables.map((t: Json) => [t.name, t.columns]));

// --- SATS-JSON <-> the rules' values -----------------------------------------------------------

const TS_FIELD = '__timestamp_micros_since_unix_epoch__';

export function fromJson(type: string, v: Json): unknown {
  if (type.startsWith('Option<')) {
    const inner = type.slice(7, -1);
    return 'some' in v ? fromJson(inner, v.some) : undefined;
  }
  if (type.startsWith('Vec<')) return (v as Json[]).map((x) => fromJson(type.slice(4, -1), x));
  switch (type) {
    case 'String': return v as string;
    case 'U32': return v as number;
    case 'U64': return BigInt(v);
    case 'Identity': return (v as string).replace(/^0x/, '');
    case 'Timestamp': return BigInt(typeof v === 'object' ? v[TS_FIELD] : v);
    default: throw new Error(`unknown SATS type ${type}`);
  }
}

export function toJson(type: string, v: unknown): unknown {
  if (type.startsWith('Option<')) return v === undefined ? { none: [] } : { some: toJson(type.slice(7, -1), v) };
  if (type.startsWith('Vec<')) return (v as unknown[]).map((x) => toJson(type.slice(4, -1), x));
  switch (type) {
    case 'Identity': return `0x${v as string}`;
    case 'Timestamp': return { [TS_FIELD]: v };
    default: return v;
  }
}

export function rowFromJson(table: string, doc: Json): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, type] of TABLE_COLUMNS[table]!) out[name] = fromJson(type, doc[name]);
  return out;
}

export function rowToJson(table: string, row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, type] of TABLE_COLUMNS[table]!) out[name] = toJson(type, row[name]);
  return out;
}

const big = (v: number | null): bigint | null => (v === null ? null : BigInt(v));

export function policyFromJson(p: Json): Policy {
  const cls = (c: Json): StreamClass => ({
    name: c.name, max_payload_bytes: c.max_payload_bytes, retain_count: c.retain_count,
    retain_age_us: c.retain_age_us === null ? null : BigInt(c.retain_age_us), replay_budget: BigInt(c.replay_budget),
  });
  return {
    classes: p.classes.map(([prefix, c]: [string, Json]) => [prefix, cls(c)] as const),
    default_class: cls(p.default_class),
    presence_min_ttl_ms: BigInt(p.presence_min_ttl_ms),
    presence_max_ttl_ms: BigInt(p.presence_max_ttl_ms),
    bridge_kinds: new Set(p.bridge_kinds as number[]),
    bridge_max_attempts: p.bridge_max_attempts,
    bridge_max_retry_after_ms: BigInt(p.bridge_max_retry_after_ms),
    max_error_text: p.max_error_text,
    retain_offline_presence_us: big(p.retain_offline_presence_us),
    retain_terminal_assignment_us: big(p.retain_terminal_assignment_us),
    retain_sent_outbox_us: big(p.retain_sent_outbox_us),
    retain_failed_outbox_us: big(p.retain_failed_outbox_us),
  };
}

export function callerFromJson(c: Json): Caller {
  return {
    identity: c.identity, scopes: new Set(c.scopes as string[]), streams: c.streams,
    device_id: c.device_id, session_id: c.session_id,
  };
}

export function storeFromJson(state: Json): MemStore {
  const s = new MemStore();
  s.epoch_floor = BigInt(state.epoch_floor);
  s.version_floor = BigInt(state.version_floor);
  const tables = state.tables as Record<string, Json[]>;
  for (const [name, rows] of Object.entries(tables)) {
    for (const doc of rows) {
      const row = rowFromJson(name, doc);
      if (name === 'sync_event') s.events.push(row as never);
      else (s as unknown as Record<string, { rows: Map<string, unknown>; key: (r: unknown) => string }>)[name]!.rows.set(
        (s as unknown as Record<string, { key: (r: unknown) => string }>)[name]!.key(row), row);
    }
  }
  s.writes = 0;
  return s;
}

/** A state's tables as sorted canonical row texts (for an order-free comparison). */
function tablesText(canon: Canonical, tables: Record<string, object[]>, fromRules: boolean): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [name] of Object.entries(TABLE_COLUMNS)) {
    if (name === 'presence_signal' || name === 'stream_signal') continue;
    const rows = tables[name] ?? [];
    out[name] = rows.map((r) => canon.dumpsPlain(fromRules ? rowToJson(name, r as Record<string, unknown>) : r)).sort();
  }
  return out;
}

/** The model's error text with the informative `message` of non_canonical_payload dropped
 * (Python's json error messages are not part of the contract; code, argument and reason are). */
function errorKey(canon: Canonical, code: string, details: Record<string, unknown>): string {
  const d = { ...details };
  if (code === 'non_canonical_payload') delete d['message'];
  return `${code}: ${canon.dumpsPlain(d)}`;
}

export interface CaseFile { cases: Json[] }

/** Replay model cases through `rules` and an in-memory store; every divergence is a failure. */
export function runCases(rules: Rules, canon: Canonical, file: CaseFile, stopAt = 20): string[] {
  const failures: string[] = [];
  for (const c of file.cases) {
    const policy = policyFromJson(c.policy);
    const db = storeFromJson(c.pre);
    let idx = 0;
    let signalsSeen = 0;
    const where = (): string => `${c.name} step ${idx}`;
    const newSignals = (): Json[] => db.signals.slice(signalsSeen);
    for (const step of c.steps) {
      idx++;
      const before = db.writes;
      const emittedBefore = db.signals.length;
      try {
        if (step.op === 'call') {
          const ctx: Ctx = { caller: callerFromJson(step.claims), now: BigInt(step.now), tx_offset: BigInt(step.tx_offset), policy };
          const args = (REDUCER_ARGS[step.reducer] ?? []).map(([, type], i) => fromJson(type, step.args[i]));
          const out = rules.call(db, ctx, step.reducer, args);
          const exp = step.expect;
          if (exp.ok !== out.ok) {
            failures.push(`${where()} ${step.reducer}: expected ${exp.ok ? 'ok' : exp.error.render} got ${out.ok ? 'ok' : out.error.render()}`);
          } else if (!out.ok) {
            const want = errorKey(canon, exp.error.code, exp.error.details);
            const got = errorKey(canon, out.error.code, out.error.details as Record<string, unknown>);
            if (want !== got) failures.push(`${where()} ${step.reducer}: error\n  want ${want}\n  got  ${got}`);
            if (db.writes !== before) failures.push(`${where()} ${step.reducer}: a failed reducer wrote ${db.writes - before} rows`);
          } else {
            const ret = out.ret === undefined ? null : typeof exp.ret === 'bigint' ? out.ret : Number(out.ret);
            if (ret !== exp.ret) failures.push(`${where()} ${step.reducer}: ret ${ret} != ${exp.ret}`);
            if ((db.writes === before) !== exp.noop) failures.push(`${where()} ${step.reducer}: noop ${db.writes === before} != ${exp.noop}`);
          }
        } else if (step.op === 'sweep') {
          rules.presence_sweep(db, BigInt(step.now));
          if ((db.writes === before) !== step.expect.noop) failures.push(`${where()} sweep: noop mismatch`);
        } else if (step.op === 'disconnect') {
          rules.disconnect_sessions(db, BigInt(step.now), step.identity, new Set(step.sessions as string[]));
          if ((db.writes === before) !== step.expect.noop) failures.push(`${where()} disconnect: noop mismatch`);
        } else if (step.op === 'compact') {
          rules.compact(db, BigInt(step.now), policy);
          if ((db.writes === before) !== step.expect.noop) failures.push(`${where()} compact: noop mismatch`);
          if (db.version_floor !== BigInt(step.expect.version_floor)) {
            failures.push(`${where()} compact: version_floor ${db.version_floor} != ${step.expect.version_floor}`);
          }
        } else if (step.op === 'stale') {
          const err = rules.staleError(db, policy, step.stream_id,
            step.requested_epoch === null ? undefined : BigInt(step.requested_epoch), BigInt(step.watermark));
          const want = step.expect === null ? 'none' : errorKey(canon, step.expect.code, step.expect.details);
          const got = err === undefined ? 'none' : errorKey(canon, err.code, err.details as Record<string, unknown>);
          if (want !== got) failures.push(`${where()} stale:\n  want ${want}\n  got  ${got}`);
        } else {
          failures.push(`${where()}: unknown op ${step.op}`);
        }
        if (step.expect && 'signals' in step.expect) {
          const got = newSignals().map((s) => canon.dumpsPlain({ table: s.table, row: rowToJson(s.table, s.row as Record<string, unknown>) })).sort();
          const want = (step.expect.signals as Json[]).map((s) => canon.dumpsPlain(s)).sort(); // a transaction's rows are a set
          if (got.join('\n') !== want.join('\n')) failures.push(`${where()}: signals\n  want ${want}\n  got  ${got}`);
        } else if (db.signals.length !== emittedBefore) {
          failures.push(`${where()}: emitted signals on a failed step`);
        }
      } catch (e) {
        failures.push(`${where()}: threw ${(e as Error).stack ?? String(e)}`);
      }
      signalsSeen = db.signals.length;
      if (failures.length >= stopAt) return failures;
    }
    if (db.epoch_floor !== BigInt(c.post.epoch_floor) || db.version_floor !== BigInt(c.post.version_floor)) {
      failures.push(`${c.name}: final floors ${db.epoch_floor}/${db.version_floor} != ${c.post.epoch_floor}/${c.post.version_floor}`);
    }
    const want = tablesText(canon, c.post.tables, false);
    const got = tablesText(canon, db.tables(), true);
    for (const name of Object.keys(want)) {
      if (want[name]!.join('\n') !== got[name]!.join('\n')) {
        failures.push(`${c.name}: final ${name} differs\n  want ${want[name]!.join('\n       ')}\n  got  ${got[name]!.join('\n       ')}`);
      }
    }
    if (failures.length >= stopAt) return failures;
  }
  return failures;
}

/** Replay canonical-JSON cases (canonical.json: the model's outcome for texts with several defects
 * and seeded random texts): the same canonical bytes and hash, or the same code and reason. */
export function runCanonicalCases(canon: Canonical, file: CaseFile, stopAt = 20): string[] {
  const failures: string[] = [];
  for (const [i, c] of (file.cases as Json[]).entries()) {
    let got: string;
    try {
      const text = canon.canonicalize(c.input);
      got = `ok ${Buffer.from(canon.utf8(text)).toString('hex')} ${canon.payloadHash(text)}`;
    } catch (e) {
      const x = e as { code?: string; details?: { reason?: string } };
      if (x.code === undefined) got = `threw ${String(e).slice(0, 200)}`;
      else got = `${x.code} ${x.details?.reason}`;
    }
    const want = c.reason !== undefined ? `${c.code} ${c.reason}` : `ok ${Buffer.from(c.canonical, 'utf8').toString('hex')} ${c.hash}`;
    if (got !== want) failures.push(`canonical case ${i} ${JSON.stringify(c.input).slice(0, 80)}: want ${want.slice(0, 80)} got ${got.slice(0, 80)}`);
    if (failures.length >= stopAt) break;
  }
  return failures;
}
