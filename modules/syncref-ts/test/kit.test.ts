/** The pure rules against the conformance kit's language-neutral vectors (docs/conformance.md). */

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import * as canon from '../src/canonical.js';
import * as rules from '../src/rules.js';
import { KIT_DIR, kitPresent, NOT_APPLICABLE, ROW_DEFS, type RowDefs, runKit } from './kit.js';

test('conformance kit: every vector of every handler the module implements', { skip: kitPresent() ? false : 'adapters/conformance/vectors is not in this checkout' }, (t) => {
  const index = JSON.parse(readFileSync(new URL('index.json', KIT_DIR), 'utf8'));
  const r = runKit(rules, canon);
  for (const [key, [pass, fail]] of Object.entries(r.handlers)) t.diagnostic(`${key}: ${pass} passed, ${fail} failed`);
  for (const [key, n] of Object.entries(r.notApplicable)) t.diagnostic(`${key}: ${n} n/a (${NOT_APPLICABLE[key]})`);
  assert.deepEqual(r.failures, []);
  // every case of the index was either run or listed as not applicable, none skipped silently
  let total = 0;
  for (const handlers of Object.values(index.areas as Record<string, Record<string, string[]>>)) {
    for (const cases of Object.values(handlers)) total += cases.length;
  }
  const ran = Object.values(r.handlers).reduce((n, [p, f]) => n + p + f, 0);
  const na = Object.values(r.notApplicable).reduce((n, x) => n + x, 0);
  assert.equal(ran + na, total);
  assert.equal(total, index.count);
  for (const key of ['canonical/accept', 'canonical/reject', 'reducers/append_sync_event', 'compute/update', 'outbox/transition', 'stale/reasons', 'checkpoint/sequence', 'bsatn/row']) {
    assert.ok((r.handlers[key]?.[0] ?? 0) > 0, `${key} ran`);
  }
});

test('bsatn/row can fail: two columns swapped in the binding\'s sync_event type change the bytes', { skip: kitPresent() ? false : 'no kit' }, () => {
  const { epoch, seq, ...rest } = ROW_DEFS.sync_event.row;
  const swapped = { ...ROW_DEFS, sync_event: { ...ROW_DEFS.sync_event, row: { seq, epoch, ...rest } } } as unknown as RowDefs;
  const failures = runKit(rules, canon, 50, undefined, swapped).failures;
  assert.ok(failures.length > 0 && failures.every((f) => f.startsWith('bsatn/row/sync_event')), failures.join('\n'));
});
