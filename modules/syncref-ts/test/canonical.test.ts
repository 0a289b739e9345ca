/** Canonical JSON against the model on texts the kit does not hold (tests/modules/export_model_cases.py
 * canonical.json): texts with several defects, where the reason is the first defect in the order of
 * Python's json scanner, and seeded random texts. The kit's one-defect vectors are run by kit.test.ts. */

import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as canon from '../src/canonical.js';
import { loadJson, runCanonicalCases } from './runner.js';

test('canonical cases: the model\'s bytes and hash, or its code and reason, for every text', () => {
  const file = loadJson('test/model-cases/canonical.json');
  assert.ok(file.cases.length > 1000);
  assert.deepEqual(runCanonicalCases(canon, file), []);
});
