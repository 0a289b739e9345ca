/**
 * An in-memory implementation of the table interface ({@link Store}), for the tests: plain maps
 * keyed by primary key, with the unique indexes of sync_event enforced (a second row with the
 * same (stream_id, seq) or (stream_id, idempotency_key) throws, as SpacetimeDB's unique index
 * would). It counts writes, so a test can tell an accepted no-op (no write) from a write, and
 * check that a failed reducer wrote nothing.
 */

import type {
  BridgeOutbox, ComputeAssignment, Keyed, PresenceSignal, ProviderCapability, SessionPresence, Store, StreamSignal,
  SyncCheckpoint, SyncEvent, SyncStream,
} from './rules.js';

class MemKeyed<R> implements Keyed<R> {
  readonly rows = new Map<string, R>();
  constructor(readonly store: MemStore, readonly name: string, readonly key: (r: R) => string) {}
  find(key: string): R | undefined {
    const r = this.rows.get(key);
    return r === undefined ? undefined : structuredClone(r);
  }
  insert(row: R): void {
    const k = this.key(row);
    if (this.rows.has(k)) throw new Error(`${this.name}: duplicate primary key ${k}`);
    this.rows.set(k, structuredClone(row));
    this.store.writes++;
  }
  update(row: R): void {
    const k = this.key(row);
    if (!this.rows.has(k)) throw new Error(`${this.name}: update of a missing row ${k}`);
    this.rows.set(k, structuredClone(row));
    this.store.writes++;
  }
  delete(key: string): void {
    if (!this.rows.delete(key)) throw new Error(`${this.name}: delete of a missing row ${key}`);
    this.store.writes++;
  }
  all(): R[] {
    return [...this.rows.values()].map((r) => structuredClone(r));
  }
}

export class MemStore implements Store {
  writes = 0;
  epoch_floor = 1n;
  version_floor = 1n;
  readonly sync_stream = new MemKeyed<SyncStream>(this, 'sync_stream', (r) => r.stream_id);
  readonly sync_checkpoint = new MemKeyed<SyncCheckpoint>(this, 'sync_checkpoint', (r) => r.checkpoint_id);
  readonly session_presence = new MemKeyed<SessionPresence>(this, 'session_presence', (r) => r.session_id);
  readonly provider_capability = new MemKeyed<ProviderCapability>(this, 'provider_capability', (r) => r.provider_id);
  readonly compute_assignment = new MemKeyed<ComputeAssignment>(this, 'compute_assignment', (r) => r.request_id);
  readonly bridge_outbox = new MemKeyed<BridgeOutbox>(this, 'bridge_outbox', (r) => r.outbox_id);
  readonly events: SyncEvent[] = [];
  /** Event-table rows in emission order (delivered once, never stored by SpacetimeDB). */
  readonly signals: ({ table: 'presence_signal'; row: PresenceSignal } | { table: 'stream_signal'; row: StreamSignal })[] = [];

  readonly sync_event = {
    byKey: (stream_id: string, key: string): SyncEvent | undefined => {
      const e = this.events.find((x) => x.stream_id === stream_id && x.idempotency_key === key);
      return e === undefined ? undefined : structuredClone(e);
    },
    ofStream: (stream_id: string): SyncEvent[] => this.events.filter((x) => x.stream_id === stream_id).map((e) => structuredClone(e)),
    insert: (row: SyncEvent): void => {
      if (this.events.some((x) => x.stream_id === row.stream_id && (x.seq === row.seq || x.idempotency_key === row.idempotency_key))) {
        throw new Error(`sync_event: unique index violated by ${row.stream_id}/${row.seq}/${row.idempotency_key}`);
      }
      this.events.push(structuredClone(row));
      this.writes++;
    },
    delete: (row: SyncEvent): void => {
      const i = this.events.findIndex((x) => x.stream_id === row.stream_id && x.seq === row.seq);
      if (i < 0) throw new Error('sync_event: delete of a missing row');
      this.events.splice(i, 1);
      this.writes++;
    },
  };

  readonly presence_signal = { emit: (row: PresenceSignal): void => { this.signals.push({ table: 'presence_signal', row }); this.writes++; } };
  readonly stream_signal = { emit: (row: StreamSignal): void => { this.signals.push({ table: 'stream_signal', row }); this.writes++; } };

  epochFloor(): bigint { return this.epoch_floor; }
  versionFloor(): bigint { return this.version_floor; }
  raiseVersionFloor(v: bigint): void { this.version_floor = v; }

  /** Every persistent table's rows, by table name (event tables hold no rows). */
  tables(): Record<string, object[]> {
    return {
      sync_stream: this.sync_stream.all(),
      sync_event: this.events.map((e) => structuredClone(e)),
      sync_checkpoint: this.sync_checkpoint.all(),
      session_presence: this.session_presence.all(),
      provider_capability: this.provider_capability.all(),
      compute_assignment: this.compute_assignment.all(),
      bridge_outbox: this.bridge_outbox.all(),
    };
  }
}
