/** The pure rules against the model's cases (tests/modules/export_model_cases.py); the
 * conformance kit's vectors are run by kit.test.ts. */

import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as canon from '../src/canonical.js';
import * as rules from '../src/rules.js';
import { loadJson, runCases } from './runner.js';

for (const file of ['scenarios', 'walks', 'hostile']) {
  test(`model cases: ${file}.json replay with the same outcomes, signals and final tables`, () => {
    const cases = loadJson(`test/model-cases/${file}.json`);
    assert.ok(cases.cases.length > 0);
    const failures = runCases(rules, canon, cases);
    assert.deepEqual(failures, []);
  });
}
