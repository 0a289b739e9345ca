/**
 * The caller's claims (spec.auth.Claims) from a verified JWT payload, as the reference server
 * reads them (adapters/auth.py, rule 7): `oa_sync_scopes` and `oa_sync_streams` lists of strings
 * (absent or null: none), `oa_device_id`, `oa_session_id`, `oa_client_build_id` and
 * `oa_protocol_version` strings, `oa_schema_version` an integer (absent or null: not given).
 *
 * A claim of another type refuses the whole token, with the reference's 401 message naming the
 * first such claim in the reference's order ({@link MalformedClaim}). Reading it as absent would
 * silently drop a session or device pin, and filtering a list would keep part of a grant the
 * issuer got wrong. Pure, so the tests run it in Node; the binding (module.ts) calls it with
 * `ctx.senderAuth.jwt.fullPayload` in the connect reducer (a throw there refuses the connection,
 * as the reference refuses the upgrade) and in every reducer.
 */

import type { Caller } from './rules.js';

/** A claim of the wrong type: the message is the reference server's 401 text. */
export class MalformedClaim extends Error {}

type Claims = Readonly<Record<string, unknown>>;

function stringList(claims: Claims, name: string): string[] {
  const v = claims[name];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    throw new MalformedClaim(`malformed claim ${name} (must be a list of strings)`);
  }
  return [...v] as string[];
}

function optionalString(claims: Claims, name: string): string | undefined {
  const v = claims[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new MalformedClaim(`malformed claim ${name} (must be a string)`);
  return v;
}

/** The rules' caller for `identity` (64 lowercase hex) holding a token with these claims, or
 * {@link MalformedClaim}. */
export function callerFromClaims(identity: string, claims: Claims): Caller {
  const schema = claims['oa_schema_version'];
  if (schema !== undefined && schema !== null && !(typeof schema === 'number' && Number.isInteger(schema))) {
    throw new MalformedClaim('malformed claim oa_schema_version (must be an integer)');
  }
  const scopes = stringList(claims, 'oa_sync_scopes');
  const streams = stringList(claims, 'oa_sync_streams');
  const device_id = optionalString(claims, 'oa_device_id');
  const session_id = optionalString(claims, 'oa_session_id');
  optionalString(claims, 'oa_client_build_id');
  optionalString(claims, 'oa_protocol_version');
  return { identity, scopes: new Set(scopes), streams, device_id, session_id };
}
