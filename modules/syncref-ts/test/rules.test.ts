/** The pure rules against the model's cases (tests/modules/export_model_cases.py) and the
 * canonical JSON conformance vectors. */

import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as canon from '../src/canonical.js';
import * as rules from '../src/rules.js';
import { ACCEPT, loadJson, REJECT, runCanonical, runCases } from './runner.js';

test('canonical JSON: every accept and reject vector of the conformance kit', () => {
  const r = runCanonical(canon);
  assert.deepEqual(r.failures, []);
  assert.equal(r.accepted, ACCEPT.count);
  assert.equal(r.rejected, REJECT.count);
});

for (const file of ['scenarios', 'walks']) {
  test(`model cases: ${file}.json replay with the same outcomes, signals and final tables`, () => {
    const cases = loadJson(`test/model-cases/${file}.json`);
    assert.ok(cases.cases.length > 0);
    const failures = runCases(rules, canon, cases);
    assert.deepEqual(failures, []);
  });
}
