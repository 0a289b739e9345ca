/**
 * Error vocabulary (spec/errors.py): one code per peer-visible failure. On the wire a reducer
 * error is the SpacetimeDB reducer error string `<code>: <canonical JSON details>`; the binding
 * throws it as a `SenderError`, so the caller (and only the caller) receives exactly that string.
 */

import { dumpsPlain } from './canonical.js';

export const ErrorCode = {
  MISSING_SCOPE: 'missing_scope',
  FORBIDDEN_STREAM: 'forbidden_stream',
  FORBIDDEN: 'forbidden',
  INVALID_ARGUMENT: 'invalid_argument',
  NON_CANONICAL_PAYLOAD: 'non_canonical_payload',
  PAYLOAD_TOO_LARGE: 'payload_too_large',
  PAYLOAD_HASH_MISMATCH: 'payload_hash_mismatch',
  IDEMPOTENCY_CONFLICT: 'idempotency_conflict',
  SEQUENCE_CONFLICT: 'sequence_conflict',
  STALE_EPOCH: 'stale_epoch',
  CHECKPOINT_AHEAD_OF_HEAD: 'checkpoint_ahead_of_head',
  VERSION_CONFLICT: 'version_conflict',
  INVALID_TRANSITION: 'invalid_transition',
  ASSIGNMENT_MISSING: 'assignment_missing',
  PROVIDER_UNAVAILABLE: 'provider_unavailable',
  POLICY_DENIED: 'policy_denied',
  BRIDGE_EVENT_CONFLICT: 'bridge_event_conflict',
  BRIDGE_EVENT_MISSING: 'bridge_event_missing',
  INVALID_QUERY: 'invalid_query',
  STALE_CURSOR: 'stale_cursor',
  NO_SUCH_REDUCER: 'no_such_reducer',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export type Details = Readonly<Record<string, unknown>>;

export class SyncError extends Error {
  constructor(readonly code: ErrorCode, readonly details: Details = {}) {
    super(`${code}: ${dumpsPlain(details)}`);
  }

  /** The wire string `<code>: <canonical JSON details>`. */
  render(): string {
    return this.message;
  }
}
