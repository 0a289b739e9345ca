// Module bindings for the syncref sync module (database "autopilot-sync").
//
// Hand-written, as plain ESM JavaScript, to the exact shape `spacetime generate --lang typescript`
// (cli 2.x) emits for a module with these tables and reducers: one `*_table.js` row builder per
// table, one `*_reducer.js` params object per reducer, and this index assembling them with the
// SDK's own helpers into REMOTE_MODULE, DbConnection, DbConnectionBuilder, SubscriptionBuilder,
// `tables` (typed query builder) and `reducers`. The TypeScript-only parts of the generated output
// (types.ts, type aliases, `satisfies`) have no runtime effect and are left out.
//
// The source is DESIGN §2 (column order = BSATN row layout). test_bindings_match_schema.py dumps
// REMOTE_MODULE (print_schema.mjs) and compares it with spec/schema.py, so drift fails a test.

/* eslint-disable */
import {
  DbConnectionBuilder as __DbConnectionBuilder,
  DbConnectionImpl as __DbConnectionImpl,
  SubscriptionBuilderImpl as __SubscriptionBuilderImpl,
  convertToAccessorMap as __convertToAccessorMap,
  makeQueryBuilder as __makeQueryBuilder,
  procedures as __procedures,
  reducerSchema as __reducerSchema,
  reducers as __reducers,
  schema as __schema,
  table as __table,
} from "spacetimedb";

// Import all reducer arg schemas
import AckCheckpointReducer from "./ack_checkpoint_reducer.js";
import AppendSyncEventReducer from "./append_sync_event_reducer.js";
import EnqueueBridgeEventReducer from "./enqueue_bridge_event_reducer.js";
import MarkBridgeEventSentReducer from "./mark_bridge_event_sent_reducer.js";
import OpenComputeAssignmentReducer from "./open_compute_assignment_reducer.js";
import PublishProviderCapabilityReducer from "./publish_provider_capability_reducer.js";
import PublishStreamSignalReducer from "./publish_stream_signal_reducer.js";
import RecordBridgeFailureReducer from "./record_bridge_failure_reducer.js";
import ResetStreamEpochReducer from "./reset_stream_epoch_reducer.js";
import UpdateComputeAssignmentReducer from "./update_compute_assignment_reducer.js";
import UpsertPresenceReducer from "./upsert_presence_reducer.js";

// Import all table schema definitions
import BridgeOutboxRow from "./bridge_outbox_table.js";
import ComputeAssignmentRow from "./compute_assignment_table.js";
import PresenceSignalRow from "./presence_signal_table.js";
import ProviderCapabilityRow from "./provider_capability_table.js";
import SessionPresenceRow from "./session_presence_table.js";
import StreamSignalRow from "./stream_signal_table.js";
import SyncCheckpointRow from "./sync_checkpoint_table.js";
import SyncEventRow from "./sync_event_table.js";
import SyncStreamRow from "./sync_stream_table.js";

/** The schema information for all tables in this module. */
const tablesSchema = __schema({
  bridgeOutbox: __table({
    name: 'bridge_outbox',
    indexes: [
      { accessor: 'outbox_id', name: 'bridge_outbox_outbox_id_idx_btree', algorithm: 'btree', columns: [
        'outboxId',
      ] },
    ],
    constraints: [
      { name: 'bridge_outbox_outbox_id_key', constraint: 'unique', columns: ['outboxId'] },
    ],
  }, BridgeOutboxRow),
  computeAssignment: __table({
    name: 'compute_assignment',
    indexes: [
      { accessor: 'request_id', name: 'compute_assignment_request_id_idx_btree', algorithm: 'btree', columns: [
        'requestId',
      ] },
    ],
    constraints: [
      { name: 'compute_assignment_request_id_key', constraint: 'unique', columns: ['requestId'] },
    ],
  }, ComputeAssignmentRow),
  presenceSignal: __table({
    name: 'presence_signal',
    indexes: [
    ],
    constraints: [
    ],
    event: true,
  }, PresenceSignalRow),
  providerCapability: __table({
    name: 'provider_capability',
    indexes: [
      { accessor: 'provider_id', name: 'provider_capability_provider_id_idx_btree', algorithm: 'btree', columns: [
        'providerId',
      ] },
    ],
    constraints: [
      { name: 'provider_capability_provider_id_key', constraint: 'unique', columns: ['providerId'] },
    ],
  }, ProviderCapabilityRow),
  sessionPresence: __table({
    name: 'session_presence',
    indexes: [
      { accessor: 'session_id', name: 'session_presence_session_id_idx_btree', algorithm: 'btree', columns: [
        'sessionId',
      ] },
    ],
    constraints: [
      { name: 'session_presence_session_id_key', constraint: 'unique', columns: ['sessionId'] },
    ],
  }, SessionPresenceRow),
  streamSignal: __table({
    name: 'stream_signal',
    indexes: [
    ],
    constraints: [
    ],
    event: true,
  }, StreamSignalRow),
  syncCheckpoint: __table({
    name: 'sync_checkpoint',
    indexes: [
      { accessor: 'checkpoint_id', name: 'sync_checkpoint_checkpoint_id_idx_btree', algorithm: 'btree', columns: [
        'checkpointId',
      ] },
    ],
    constraints: [
      { name: 'sync_checkpoint_checkpoint_id_key', constraint: 'unique', columns: ['checkpointId'] },
    ],
  }, SyncCheckpointRow),
  syncEvent: __table({
    name: 'sync_event',
    indexes: [
      { accessor: 'stream_id_seq', name: 'sync_event_stream_id_seq_idx_btree', algorithm: 'btree', columns: [
        'streamId',
        'seq',
      ] },
      { accessor: 'stream_id_idempotency_key', name: 'sync_event_stream_id_idempotency_key_idx_btree', algorithm: 'btree', columns: [
        'streamId',
        'idempotencyKey',
      ] },
    ],
    constraints: [
      { name: 'sync_event_stream_id_seq_key', constraint: 'unique', columns: ['streamId', 'seq'] },
      { name: 'sync_event_stream_id_idempotency_key_key', constraint: 'unique', columns: ['streamId', 'idempotencyKey'] },
    ],
  }, SyncEventRow),
  syncStream: __table({
    name: 'sync_stream',
    indexes: [
      { accessor: 'stream_id', name: 'sync_stream_stream_id_idx_btree', algorithm: 'btree', columns: [
        'streamId',
      ] },
    ],
    constraints: [
      { name: 'sync_stream_stream_id_key', constraint: 'unique', columns: ['streamId'] },
    ],
  }, SyncStreamRow),
});

/** The schema information for all reducers in this module (bodies omitted, as in generated code). */
const reducersSchema = __reducers(
  __reducerSchema("ack_checkpoint", AckCheckpointReducer),
  __reducerSchema("append_sync_event", AppendSyncEventReducer),
  __reducerSchema("enqueue_bridge_event", EnqueueBridgeEventReducer),
  __reducerSchema("mark_bridge_event_sent", MarkBridgeEventSentReducer),
  __reducerSchema("open_compute_assignment", OpenComputeAssignmentReducer),
  __reducerSchema("publish_provider_capability", PublishProviderCapabilityReducer),
  __reducerSchema("publish_stream_signal", PublishStreamSignalReducer),
  __reducerSchema("record_bridge_failure", RecordBridgeFailureReducer),
  __reducerSchema("reset_stream_epoch", ResetStreamEpochReducer),
  __reducerSchema("update_compute_assignment", UpdateComputeAssignmentReducer),
  __reducerSchema("upsert_presence", UpsertPresenceReducer),
);

/** The module has no procedures. */
const proceduresSchema = __procedures(
);

/** The remote SpacetimeDB module schema, both runtime and type information. */
export const REMOTE_MODULE = {
  versionInfo: {
    cliVersion: "2.0.0",
  },
  tables: tablesSchema.schemaType.tables,
  reducers: reducersSchema.reducersType.reducers,
  ...proceduresSchema,
};

/** The tables available in this remote SpacetimeDB module. Each table reference doubles as a query builder. */
export const tables = __makeQueryBuilder(tablesSchema.schemaType);

/** The reducers available in this remote SpacetimeDB module. */
export const reducers = __convertToAccessorMap(reducersSchema.reducersType.reducers);

/** The procedures available in this remote SpacetimeDB module. */
export const procedures = __convertToAccessorMap(proceduresSchema.procedures);

/** Builder class to configure a new subscription to the remote SpacetimeDB instance. */
export class SubscriptionBuilder extends __SubscriptionBuilderImpl {}

/** Builder class to configure a new database connection to the remote SpacetimeDB instance. */
export class DbConnectionBuilder extends __DbConnectionBuilder {}

/** The typed database connection to manage connections to the remote SpacetimeDB instance. */
export class DbConnection extends __DbConnectionImpl {
  /** Creates a new {@link DbConnectionBuilder} to configure and connect to the remote SpacetimeDB instance. */
  static builder = () => {
    return new DbConnectionBuilder(REMOTE_MODULE, (config) => new DbConnection(config));
  };

  /** Creates a new {@link SubscriptionBuilder} to configure a subscription to the remote SpacetimeDB instance. */
  subscriptionBuilder = () => {
    return new SubscriptionBuilder(this);
  };
}
