/**
 * A consumer of the conformance kit (adapters/conformance/vectors, docs/conformance.md) for the
 * module's pure rules: walks index.json, reads every case of the handlers the module implements,
 * runs it through the rules and an in-memory store, and counts passes and failures per handler.
 * Handlers that belong to another layer (the SpacetimeDB host's codec and SQL, the server's
 * compatibility negotiation and delivery, the client's apply rules) are listed as not applicable
 * with the reason, never counted as passed.
 */

import { existsSync, readFileSync } from 'node:fs';

import { AlgebraicType, BinaryWriter, Identity, t as rootT, Timestamp } from 'spacetimedb';

import * as clientModule from '../src/client.js';
import { MemStore } from '../src/memstore.js';
import { rowDefs, type T } from '../src/rows.js';
import type { Ctx } from '../src/rules.js';
import {
  type Canonical, callerFromJson, fromJson, type Json, policyFromJson, REPO_DIR, type Rules, rowToJson, SCHEMA, storeFromJson,
} from './runner.js';

export const KIT_DIR = new URL('adapters/conformance/vectors/', REPO_DIR);
export const kitPresent = (): boolean => existsSync(new URL('index.json', KIT_DIR));

/** Handlers of the kit that are not the module's to answer, and why. */
export const NOT_APPLICABLE: Record<string, string> = {
  'bsatn/client_message': 'wire codec: SpacetimeDB host',
  'bsatn/server_message': 'wire codec: SpacetimeDB host',
  'sql/parse': 'subscription SQL: SpacetimeDB host',
  'sql/reject': 'subscription SQL: SpacetimeDB host',
  'stale/resume_form': 'a subscribe-time refusal: module code cannot refuse a subscription (README)',
  'compat/negotiate': 'connect-time negotiation: no SpacetimeDB hook (README)',
  'delivery/scenario': 'delivery: SpacetimeDB host',
  'reducers/call': 'argument decoding (unknown reducer, arity, types): SpacetimeDB host, before the module runs',
};

const REDUCER_ARGS: Record<string, [string, string][]> = Object.fromEntries(SCHEMA.reducers.map((r: Json) => [r.name, r.args]));
const TABLE_COLUMNS: Record<string, [string, string][]> = Object.fromEntries(SCHEMA.tables.map((t: Json) => [t.name, t.columns]));

const CACHE = new Map<string, string>();

/** A part of a case (parsed afresh each time, so no runner can change what the next one reads). */
function read(area: string, handler: string, name: string, part: string): Json {
  const path = `${area}/${handler}/${name}/${part}.json`;
  let text = CACHE.get(path);
  if (text === undefined) {
    text = readFileSync(new URL(path, KIT_DIR), 'utf8');
    CACHE.set(path, text);
  }
  return JSON.parse(text);
}

function errorKey(canon: Canonical, code: string, details: Record<string, unknown>): string {
  const d = { ...details };
  if (code === 'non_canonical_payload') delete d['message']; // Python's json messages are informative only
  return `${code}: ${canon.dumpsPlain(d)}`;
}

function stateText(canon: Canonical, tables: Record<string, Json[]>, fromRules: boolean): string {
  const out: string[] = [];
  for (const name of Object.keys(TABLE_COLUMNS)) {
    if (name === 'presence_signal' || name === 'stream_signal') continue;
    const rows = (tables[name] ?? []).map((r) => canon.dumpsPlain(fromRules ? rowToJson(name, r) : r)).sort();
    if (rows.length) out.push(`${name}: ${rows.join('\n  ')}`);
  }
  return out.join('\n');
}

/** One reducer-call case (reducers/*, checkpoint/sequence, compute/update, outbox/transition). */
function runCallCase(rules: Rules, canon: Canonical, area: string, handler: string, name: string, parts: string[]): string | undefined {
  const pre = read(area, handler, name, 'pre');
  const ops = read(area, handler, name, 'ops') as Json[];
  const expectError = parts.includes('error') ? read(area, handler, name, 'error') : undefined;
  const post = parts.includes('post') ? read(area, handler, name, 'post') : undefined;
  const policy = policyFromJson(pre.policy);
  const db: MemStore = storeFromJson(pre.state);
  for (const [i, call] of ops.entries()) {
    const before = db.writes;
    const seen = db.signals.length;
    if (call.args_plain_json) return `call ${i}: plain-JSON arguments are the host's to decode (mark the handler n/a)`;
    const ctx: Ctx = { caller: callerFromJson(call.claims), now: BigInt(call.now), tx_offset: BigInt(call.tx_offset), policy };
    const params = REDUCER_ARGS[call.reducer] ?? [];
    const args = params.map(([, type], j) => fromJson(type, call.args[j]));
    const out = rules.call(db, ctx, call.reducer, args);
    const outcome: { ok: true; ret: bigint | undefined } | { ok: false; code: string; details: Record<string, unknown> } =
      out.ok ? out : { ok: false, code: out.error.code, details: out.error.details as Record<string, unknown> };
    if (!outcome.ok) {
      if (db.writes !== before) return `call ${i}: a failed reducer wrote`;
      if (expectError !== undefined && i === ops.length - 1) {
        const want = errorKey(canon, expectError.code, expectError.details);
        const got = errorKey(canon, outcome.code, outcome.details);
        if (want !== got) return `call ${i}: error\n  want ${want}\n  got  ${got}`;
        const s = stateText(canon, db.tables() as Record<string, Json[]>, true);
        if (s !== stateText(canon, pre.state.tables, false)) return 'the state changed on an error';
        return undefined;
      }
      const exp = post?.outcomes?.[i];
      if (exp?.error !== undefined) {
        const want = errorKey(canon, exp.error.code, exp.error.details);
        const got = errorKey(canon, outcome.code, outcome.details);
        if (want !== got) return `call ${i}: error\n  want ${want}\n  got  ${got}`;
        continue;
      }
      return `call ${i}: unexpected ${outcome.code}: ${canon.dumpsPlain(outcome.details)}`;
    }
    if (expectError !== undefined && i === ops.length - 1) return `call ${i}: succeeded, expected ${expectError.code}`;
    const exp = post.outcomes[i];
    if (exp.error !== undefined) return `call ${i}: succeeded, expected ${exp.error.code}`;
    const ret = outcome.ret === undefined ? null : Number(outcome.ret);
    if (ret !== exp.ret) return `call ${i}: ret ${ret} != ${exp.ret}`;
    if ((db.writes === before) !== exp.noop) return `call ${i}: noop ${db.writes === before} != ${exp.noop}`;
    const got = db.signals.slice(seen).map((s) => canon.dumpsPlain({ table: s.table, row: rowToJson(s.table, s.row as unknown as Record<string, unknown>) })).sort();
    const want = Object.entries(exp.events as Record<string, Json[]>).flatMap(([table, rows]) => rows.map((row) => canon.dumpsPlain({ table, row }))).sort();
    if (got.join('\n') !== want.join('\n')) return `call ${i}: events\n  want ${want}\n  got  ${got}`;
  }
  if (post !== undefined) {
    const want = stateText(canon, post.state.tables, false);
    const got = stateText(canon, db.tables() as Record<string, Json[]>, true);
    if (want !== got) return `final state\n  want ${want}\n  got  ${got}`;
    if (db.epoch_floor !== BigInt(post.state.epoch_floor) || db.version_floor !== BigInt(post.state.version_floor)) return 'final floors differ';
  }
  return undefined;
}

function fromUtf16Hex(hex: string): string {
  let s = '';
  for (let i = 0; i < hex.length; i += 4) s += String.fromCharCode(parseInt(hex.slice(i, i + 4), 16));
  return s;
}

function runCanonicalCase(canon: Canonical, handler: string, name: string): string | undefined {
  const ops = read('canonical', handler, name, 'ops');
  const text: string = ops.input === null ? fromUtf16Hex(ops.input_utf16_hex) : ops.input;
  if (handler === 'accept') {
    const post = read('canonical', handler, name, 'post');
    let got: string;
    try {
      got = canon.canonicalize(text);
    } catch (e) {
      return `threw ${String(e).slice(0, 200)}`;
    }
    if (Buffer.from(canon.utf8(got)).toString('hex') !== Buffer.from(post.canonical, 'utf8').toString('hex')) return 'canonical text differs';
    if (canon.payloadHash(got) !== post.hash) return 'hash differs';
    return canon.canonicalize(got) === got ? undefined : 'not a fixed point';
  }
  const err = read('canonical', handler, name, 'error');
  try {
    canon.canonicalize(text);
    return 'accepted';
  } catch (e) {
    const x = e as { code?: string; details?: { reason?: string } };
    return x.code === err.code && x.details?.reason === err.reason ? undefined : `${x.code}/${x.details?.reason} != ${err.code}/${err.reason}`;
  }
}

/** The binding's row type builders (src/rows.ts), as the module publishes them. */
export type RowDefs = ReturnType<typeof rowDefs>;
export const ROW_DEFS: RowDefs = rowDefs(rootT as unknown as T);

/** A SATS-JSON value as the host's TypeScript value of algebraic type `a` (Identity, Timestamp, bigint
 * u64, `T | undefined` options). */
function hostValue(a: Json, v: Json): unknown {
  switch (a.tag) {
    case 'String': case 'U32': case 'Bool': return v;
    case 'U64': case 'I64': return BigInt(v);
    case 'Array': return (v as Json[]).map((x) => hostValue(a.value, x));
    case 'Sum': return 'some' in v ? hostValue(a.value.variants[0].algebraicType, v.some) : undefined;
    case 'Product': {
      const first = a.value.elements[0]?.name;
      if (first === '__identity__') return new Identity((v as string).replace(/^0x/, ''));
      if (first === '__timestamp_micros_since_unix_epoch__') return new Timestamp(BigInt(v[first]));
    }
  }
  throw new Error(`no host value for ${JSON.stringify(a).slice(0, 80)}`);
}

/** bsatn/row: the row encoded by the host library's BSATN serializer with the type the binding
 * declares for its table (column order and SATS types, as a published module's rows go on the wire). */
function runBsatnRowCase(rows: RowDefs, name: string): string | undefined {
  const ops = read('bsatn', 'row', name, 'ops');
  const post = read('bsatn', 'row', name, 'post');
  const row = (rows as Record<string, { row: Record<string, Json> }>)[ops.table]?.row;
  if (row === undefined) return `no table ${ops.table}`;
  const elements = Object.entries(row).map(([n, b]) => ({ name: n, algebraicType: (b.typeBuilder ?? b).algebraicType }));
  const value = Object.fromEntries(elements.map((e) => [e.name, hostValue(e.algebraicType, ops.row[e.name])]));
  const writer = new BinaryWriter(64);
  AlgebraicType.makeSerializer({ tag: 'Product', value: { elements } })(writer, value);
  const hex = Buffer.from(writer.getBuffer()).toString('hex');
  return hex === post.hex ? undefined : `bytes\n  want ${post.hex}\n  got  ${hex}`;
}

function runStaleCase(rules: Rules, name: string): string | undefined {
  const o = read('stale', 'reasons', name, 'ops');
  const post = read('stale', 'reasons', name, 'post');
  const got = rules.staleReasons(BigInt(o.epoch), BigInt(o.head), BigInt(o.floor), BigInt(o.budget),
    o.requested_epoch === null ? undefined : BigInt(o.requested_epoch), BigInt(o.watermark),
    o.upper === undefined || o.upper === null ? undefined : BigInt(o.upper));
  return got.join(',') === (post.reasons as string[]).join(',') ? undefined : `${got} != ${post.reasons}`;
}

/** client/apply_rule and client/continues: the client-side rules (src/client.ts). */
export type Client = typeof clientModule;

function runClientCase(client: Client, handler: string, name: string): string | undefined {
  const o = read('client', handler, name, 'ops');
  const post = read('client', handler, name, 'post');
  if (handler === 'apply_rule') {
    const got = client.applyRule(BigInt(o.last), BigInt(o.seq));
    return got === post.action ? undefined : `${got} != ${post.action}`;
  }
  const got = client.continues(o.epoch === null ? undefined : BigInt(o.epoch), BigInt(o.last), BigInt(o.new_epoch),
    BigInt(o.continues_epoch), BigInt(o.continues_seq), (o.earlier_epochs ?? []).map(BigInt),
    (o.earlier_seqs ?? []).map(BigInt));
  return got === post.continues ? undefined : `${got} != ${post.continues}`;
}

export interface KitResult {
  /** area/handler -> [passed, failed] */
  handlers: Record<string, [number, number]>;
  notApplicable: Record<string, number>;
  failures: string[];
}

export function runKit(rules: Rules, canon: Canonical, stopAt = 50, client: Client = clientModule,
  rows: RowDefs = ROW_DEFS): KitResult {
  const index = JSON.parse(readFileSync(new URL('index.json', KIT_DIR), 'utf8'));
  const result: KitResult = { handlers: {}, notApplicable: {}, failures: [] };
  for (const [area, handlers] of Object.entries(index.areas as Record<string, Record<string, string[]>>)) {
    for (const [handler, cases] of Object.entries(handlers)) {
      const key = `${area}/${handler}`;
      if (key in NOT_APPLICABLE) {
        result.notApplicable[key] = cases.length;
        continue;
      }
      const tally: [number, number] = [0, 0];
      for (const name of cases) {
        const manifest = read(area, handler, name, 'manifest');
        if (manifest.case !== name || manifest.handler !== handler || manifest.area !== area) {
          result.failures.push(`${key}/${name}: manifest names another case`);
          tally[1]++;
          continue;
        }
        let failure: string | undefined;
        try {
          if (area === 'canonical') failure = runCanonicalCase(canon, handler, name);
          else if (key === 'stale/reasons') failure = runStaleCase(rules, name);
          else if (area === 'client') failure = runClientCase(client, handler, name);
          else if (key === 'bsatn/row') failure = runBsatnRowCase(rows, name);
          else if (['reducers', 'checkpoint', 'compute', 'outbox'].includes(area)) {
            failure = runCallCase(rules, canon, area, handler, name, manifest.parts);
          } else failure = `no runner for ${key}`;
        } catch (e) {
          failure = `threw ${(e as Error).stack ?? String(e)}`;
        }
        if (failure === undefined) tally[0]++;
        else {
          tally[1]++;
          result.failures.push(`${key}/${name}: ${failure}`);
          if (result.failures.length >= stopAt) {
            result.handlers[key] = tally;
            return result;
          }
        }
      }
      result.handlers[key] = tally;
    }
  }
  return result;
}
