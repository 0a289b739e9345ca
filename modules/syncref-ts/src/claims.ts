/**
 * The caller's claims (spec.auth.Claims) from a verified JWT payload, as the reference server
 * reads them (adapters/auth.py, rule 7): `oa_sync_scopes` and `oa_sync_streams` lists of strings
 * (absent or null: none), `oa_device_id` and `oa_session_id` strings (absent or null: not pinned).
 * Pure, so the tests run it in Node; the binding (module.ts) calls it with
 * `ctx.senderAuth.jwt.fullPayload`.
 */

import type { Caller } from './rules.js';

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** The rules' caller for `identity` (64 lowercase hex) holding a token with these claims. */
export function callerFromClaims(identity: string, claims: Readonly<Record<string, unknown>>): Caller {
  const str = (k: string): string | undefined => (typeof claims[k] === 'string' ? (claims[k] as string) : undefined);
  return {
    identity,
    scopes: new Set(strings(claims['oa_sync_scopes'])),
    streams: strings(claims['oa_sync_streams']),
    device_id: str('oa_device_id'),
    session_id: str('oa_session_id'),
  };
}
