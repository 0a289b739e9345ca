/**
 * Negative type checks of the binding: each line below must be a type error, or `tsc` fails
 * (`@ts-expect-error` without an error is itself an error). This shows the type-check of
 * module.ts against the pinned `spacetimedb` package can fail, that is, the table and reducer
 * types are real and not `any`. Never imported; checked by `tsc` only.
 */

import { t } from 'spacetimedb/server';

import spacetimedb from './module.js';

export const typeTest = spacetimedb.reducer({ n: t.u64() }, (ctx, a) => {
  // @ts-expect-error a u64 argument is a bigint, not a number
  const n: number = a.n;
  // @ts-expect-error the primary key of sync_stream is a string
  ctx.db.sync_stream.stream_id.find(5);
  // @ts-expect-error no such table
  ctx.db.sync_events.iter();
  // @ts-expect-error sync_event has no primary key accessor
  ctx.db.sync_event.stream_id.find('s');
  // @ts-expect-error a row needs every column (the wire layout has no optional columns)
  ctx.db.sync_checkpoint.insert({ checkpoint_id: 'c' });
  // @ts-expect-error epoch is u64 (bigint)
  ctx.db.module_state.insert({ id: 0, epoch_floor: 1, version_floor: 1n, tx_offset: 0n });
  // @ts-expect-error the (stream_id, idempotency_key) index takes two strings
  ctx.db.sync_event.by_stream_key.filter(['s', 5]);
  // @ts-expect-error Option<u64> is bigint | undefined
  const o: ReturnType<typeof ctx.db.compute_assignment.request_id.find> = { request_id: 'r', version: 1 };
  return void [n, o];
});
