/**
 * The module's schema against spec/schema.py: the JSON dump (test/model-cases/schema.json,
 * written by tests/modules/export_model_cases.py and drift-checked by pytest) vs the SpacetimeDB
 * type builders the binding makes its tables and reducers of (src/rows.ts), read back through
 * their algebraic types: table names, column names in order, SATS types, primary keys, unique
 * indexes, event tables, reducer argument names, order and types.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { t as rootT } from 'spacetimedb';

import { reducerParams, rowDefs, type T } from '../src/rows.js';
import { DEFAULT_POLICY, type Policy } from '../src/rules.js';
import { type Json, policyFromJson, SCHEMA } from './runner.js';

const t = rootT as unknown as T; // the same builders the server entry exports (see rows.ts)

/** The SATS name (as spec.values.sats_name writes it) of a builder's algebraic type. */
export function satsName(a: Json): string {
  switch (a.tag) {
    case 'String': case 'U32': case 'U64': case 'Bool': case 'I64': return a.tag;
    case 'Array': return `Vec<${satsName(a.value)}>`;
    case 'Sum': {
      const v = a.value.variants;
      if (v.length === 2 && v[0].name === 'some' && v[1].name === 'none') return `Option<${satsName(v[0].algebraicType)}>`;
      break;
    }
    case 'Product': {
      const e = a.value.elements;
      if (e.length === 1 && e[0].name === '__identity__') return 'Identity';
      if (e.length === 1 && e[0].name === '__timestamp_micros_since_unix_epoch__') return 'Timestamp';
      break;
    }
  }
  throw new Error(`no SATS name for ${JSON.stringify(a)}`);
}

function columnsOf(row: Record<string, Json>): [string, string][] {
  return Object.entries(row).map(([name, b]) => [name, satsName((b.typeBuilder ?? b).algebraicType)]);
}

const defs = rowDefs(t);
const params = reducerParams(t);

test('tables: names, columns in wire order, SATS types, keys, unique indexes, event tables', () => {
  const want = SCHEMA.tables.map((x: Json) => x.name);
  assert.deepEqual(Object.keys(defs), want);
  for (const spec of SCHEMA.tables) {
    const d = (defs as Record<string, Json>)[spec.name];
    assert.deepEqual(columnsOf(d.row), spec.columns, `${spec.name} columns`);
    const pk = Object.entries(d.row as Record<string, Json>).filter(([, b]) => b.columnMetadata?.isPrimaryKey).map(([n]) => n);
    assert.deepEqual(pk.length ? pk : null, spec.primary_key, `${spec.name} primary key`);
    assert.deepEqual(d.unique, spec.unique, `${spec.name} unique indexes`);
    assert.equal(d.event, spec.event, `${spec.name} event table`);
  }
});

test('reducers: names, argument names, order and SATS types', () => {
  assert.deepEqual(Object.keys(params), SCHEMA.reducers.map((r: Json) => r.name));
  for (const r of SCHEMA.reducers) {
    assert.deepEqual(columnsOf((params as Record<string, Json>)[r.name]), r.args, r.name);
  }
});

test('the comparison can fail: a swapped column order and a wrong type are told apart', () => {
  const spec = SCHEMA.tables.find((x: Json) => x.name === 'sync_event');
  const { stream_id, epoch, seq, ...rest } = defs.sync_event.row;
  assert.deepEqual(columnsOf({ stream_id, epoch, seq, ...rest }), spec.columns);
  assert.notDeepEqual(columnsOf({ stream_id, seq, epoch, ...rest }), spec.columns);
  assert.notDeepEqual(columnsOf({ ...defs.sync_event.row, tx_offset: t.u32() }), spec.columns);
  assert.equal(satsName(t.option(t.identity()).algebraicType), 'Option<Identity>');
  assert.equal(satsName(t.array(t.u32()).algebraicType), 'Vec<U32>');
});

/** The policy as plain data (sets sorted), for a deep comparison. */
const plainPolicy = (p: Policy): unknown => ({ ...p, bridge_kinds: [...p.bridge_kinds].sort((a, b) => a - b) });

test('the binding runs the reference server\'s default policy: DEFAULT_POLICY equals spec.policy.DEFAULT_POLICY', () => {
  // the kit and the model cases carry their own policies, so only this compares the constant the binding uses
  assert.deepEqual(plainPolicy(DEFAULT_POLICY), plainPolicy(policyFromJson(SCHEMA.default_policy)));
  assert.notDeepEqual(plainPolicy({ ...DEFAULT_POLICY, presence_max_ttl_ms: 300001n }),
    plainPolicy(policyFromJson(SCHEMA.default_policy)), 'the comparison can fail');
  assert.notDeepEqual(plainPolicy({ ...DEFAULT_POLICY, bridge_kinds: new Set([30078]) }),
    plainPolicy(policyFromJson(SCHEMA.default_policy)), 'the comparison can fail');
});
