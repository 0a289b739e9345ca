/** resumeCheck: what a client of the module on SpacetimeDB does when its stream row arrives
 * (the server cannot refuse a stale resume there). A hand-written table of cases. */

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { resumeCheck, type StreamRow } from '../src/client.js';

const row = (epoch: bigint, head: bigint, floor: bigint, budget: bigint, ce = 0n, cs = 0n, ee: bigint[] = [],
  es: bigint[] = []): StreamRow =>
  ({ epoch, head_seq: head, floor_seq: floor, replay_budget: budget, continues_epoch: ce, continues_seq: cs,
    earlier_epochs: ee, earlier_seqs: es });

const CASES: [string, StreamRow | undefined, bigint, bigint, unknown][] = [
  ['same epoch, inside the window', row(1n, 10n, 1n, 100n), 1n, 4n, { action: 'resume' }],
  ['at the head', row(1n, 10n, 1n, 100n), 1n, 10n, { action: 'resume' }],
  ['just below the floor is still safe', row(1n, 10n, 5n, 100n), 1n, 4n, { action: 'resume' }],
  ['below the floor', row(1n, 10n, 5n, 100n), 1n, 3n, { action: 'rebootstrap', reasons: ['retention_floor_breach'] }],
  ['past the head', row(1n, 10n, 1n, 100n), 1n, 11n, { action: 'rebootstrap', reasons: ['cursor_ahead_of_head'] }],
  ['over the replay budget', row(1n, 10n, 1n, 5n), 1n, 4n, { action: 'rebootstrap', reasons: ['replay_budget_exceeded'] }],
  ['new epoch continuing ours up to our watermark', row(3n, 10n, 1n, 100n, 1n, 6n), 1n, 6n, { action: 'continue', epoch: 3n }],
  ['new epoch continuing ours, but not far enough', row(3n, 10n, 1n, 100n, 1n, 6n), 1n, 7n, { action: 'rebootstrap', reasons: ['epoch_changed'] }],
  ['new epoch continuing another', row(3n, 10n, 1n, 100n, 2n, 6n), 1n, 4n, { action: 'rebootstrap', reasons: ['epoch_changed'] }],
  ['two restarts behind, on the chain, under its bound', row(5n, 10n, 1n, 100n, 3n, 8n, [1n], [6n]), 1n, 6n, { action: 'continue', epoch: 5n }],
  ['two restarts behind, past the bound of our hop', row(5n, 10n, 1n, 100n, 3n, 8n, [1n], [6n]), 1n, 7n, { action: 'rebootstrap', reasons: ['epoch_changed'] }],
  ['a chain written hop by hop: the minimum since our epoch', row(5n, 10n, 1n, 100n, 3n, 4n, [1n], [6n]), 1n, 5n, { action: 'rebootstrap', reasons: ['epoch_changed'] }],
  ['an epoch not on the chain', row(5n, 10n, 1n, 100n, 3n, 8n, [1n], [6n]), 2n, 1n, { action: 'rebootstrap', reasons: ['epoch_changed'] }],
  ['a malformed chain', row(5n, 10n, 1n, 100n, 3n, 8n, [1n], []), 1n, 1n, { action: 'rebootstrap', reasons: ['epoch_changed'] }],
  ['fresh epoch (reset)', row(2n, 10n, 11n, 100n), 1n, 4n, { action: 'rebootstrap', reasons: ['epoch_changed', 'retention_floor_breach'] }],
  ['no row yet, from the start', undefined, 1n, 0n, { action: 'resume' }],
  ['no row yet, but a watermark', undefined, 1n, 3n, { action: 'rebootstrap', reasons: ['cursor_ahead_of_head'] }],
];

for (const [name, r, epoch, w, want] of CASES) {
  test(`resumeCheck: ${name}`, () => assert.deepEqual(resumeCheck(r, epoch, w), want));
}
