/**
 * Client-side rules (spec/client.py). On SpacetimeDB these move to the client: the module cannot
 * refuse a stale resume, so a client checks the `sync_stream` row it receives with its resume
 * query set ({@link resumeCheck}) and applies events by the per-event rule ({@link applyRule}).
 * Pure functions, importable by a TypeScript client of the module.
 */

import { staleReasons } from './rules.js';

/** What a client does with event `seq` at watermark `last`. */
export function applyRule(last: bigint, seq: bigint): 'duplicate' | 'apply' | 'gap' {
  if (seq <= last) return 'duplicate';
  return seq === last + 1n ? 'apply' : 'gap';
}

/** May a view at (`epoch`, `last`) adopt `new_epoch` without a rebootstrap? Exactly when the new
 * epoch continues `epoch` up to at least `last` (ADR-0003 decision 6): `epoch` is on the chain -- the
 * last hop (`continues_epoch`, `continues_seq`) then the earlier hops, newest first (ADR-0010) -- and
 * `last` is at or below every bound from the newest hop back to it. A malformed chain continues nothing. */
export function continues(epoch: bigint | undefined, last: bigint, new_epoch: bigint, continues_epoch: bigint,
  continues_seq: bigint, earlier_epochs: readonly bigint[] = [], earlier_seqs: readonly bigint[] = []): boolean {
  if (epoch === undefined || continues_epoch === 0n || new_epoch === epoch || earlier_epochs.length !== earlier_seqs.length) {
    return false;
  }
  const hops: [bigint, bigint][] = [[continues_epoch, continues_seq], ...earlier_epochs.map((e, i): [bigint, bigint] => [e, earlier_seqs[i]!])];
  let bound = continues_seq;
  for (const [hop_epoch, hop_seq] of hops) {
    if (hop_seq < bound) bound = hop_seq;
    if (hop_epoch === epoch) return last <= bound;
  }
  return false;
}

/** The `sync_stream` columns a resume check reads. */
export interface StreamRow {
  epoch: bigint; head_seq: bigint; floor_seq: bigint; replay_budget: bigint; continues_epoch: bigint; continues_seq: bigint;
  earlier_epochs?: readonly bigint[]; earlier_seqs?: readonly bigint[];
}

/** What a client resuming at (epoch, watermark) does once the stream row arrives: `resume` (the
 * snapshot is the replay), `continue` (adopt the new epoch, same watermark), or `rebootstrap` with
 * the stale reasons. No row yet: the stream is empty (epoch 1 unless the server raised its floor),
 * and the resume is safe when the watermark is 0. */
export function resumeCheck(row: StreamRow | undefined, epoch: bigint, watermark: bigint):
  { action: 'resume' } | { action: 'continue'; epoch: bigint } | { action: 'rebootstrap'; reasons: string[] } {
  if (row === undefined) return watermark === 0n ? { action: 'resume' } : { action: 'rebootstrap', reasons: ['cursor_ahead_of_head'] };
  const reasons = staleReasons(row.epoch, row.head_seq, row.floor_seq, row.replay_budget, epoch, watermark);
  if (reasons.length === 0) return { action: 'resume' };
  if (reasons.length === 1 && reasons[0] === 'epoch_changed'
    && continues(epoch, watermark, row.epoch, row.continues_epoch, row.continues_seq, row.earlier_epochs ?? [],
      row.earlier_seqs ?? [])) {
    return { action: 'continue', epoch: row.epoch };
  }
  return { action: 'rebootstrap', reasons };
}
