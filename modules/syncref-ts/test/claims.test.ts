/** The caller's claims from a JWT payload, against the reference server's rule (adapters/auth.py,
 * docstring rule 7 and `_claims_of`): a hand-written table. A claim of the wrong type refuses the
 * token (the reference answers 401 naming the claim) -- never read as absent, which would drop a
 * session or device pin, nor filtered, which would keep part of a grant list the issuer got wrong.
 * The first malformed claim named is the reference's: oa_schema_version, oa_sync_scopes,
 * oa_sync_streams, oa_device_id, oa_session_id, oa_client_build_id, oa_protocol_version. */

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { callerFromClaims } from '../src/claims.js';

const ID = 'ab'.repeat(32);
type Want = { scopes: string[]; streams: string[]; device_id?: string; session_id?: string } | string;

const CASES: [string, Record<string, unknown>, Want][] = [
  ['no claims: nothing granted, nothing pinned', {}, { scopes: [], streams: [] }],
  ['null counts as absent', { oa_sync_scopes: null, oa_sync_streams: null, oa_device_id: null, oa_session_id: null },
    { scopes: [], streams: [] }],
  ['lists and pins', { oa_sync_scopes: ['sync.append', 'x.unknown'], oa_sync_streams: ['s.*', 'a'], oa_device_id: 'd',
    oa_session_id: 's' }, { scopes: ['sync.append', 'x.unknown'], streams: ['s.*', 'a'], device_id: 'd', session_id: 's' }],
  ['empty lists', { oa_sync_scopes: [], oa_sync_streams: [] }, { scopes: [], streams: [] }],
  ['other claims are ignored', { sub: 'x', aud: ['a'], oa_other: 5 }, { scopes: [], streams: [] }],
  ['scopes as one string', { oa_sync_scopes: 'sync.append' }, 'malformed claim oa_sync_scopes (must be a list of strings)'],
  ['a scope that is not a string', { oa_sync_scopes: ['sync.append', 1] },
    'malformed claim oa_sync_scopes (must be a list of strings)'],
  ['streams as an object', { oa_sync_streams: { 's.*': true } }, 'malformed claim oa_sync_streams (must be a list of strings)'],
  ['a stream grant that is not a string', { oa_sync_streams: ['s.*', null] },
    'malformed claim oa_sync_streams (must be a list of strings)'],
  ['a numeric session pin', { oa_session_id: 42 }, 'malformed claim oa_session_id (must be a string)'],
  ['a device pin in a list', { oa_device_id: ['d'] }, 'malformed claim oa_device_id (must be a string)'],
  ['a numeric build id', { oa_client_build_id: 20260101 }, 'malformed claim oa_client_build_id (must be a string)'],
  ['a numeric protocol version', { oa_protocol_version: 1 }, 'malformed claim oa_protocol_version (must be a string)'],
  ['a schema version as a string', { oa_schema_version: '3' }, 'malformed claim oa_schema_version (must be an integer)'],
  ['a schema version with a fraction', { oa_schema_version: 3.5 }, 'malformed claim oa_schema_version (must be an integer)'],
  ['a schema version as a boolean', { oa_schema_version: true }, 'malformed claim oa_schema_version (must be an integer)'],
  ['an integer schema version is fine', { oa_schema_version: 3, oa_client_build_id: '20260101T000000Z',
    oa_protocol_version: 'oa.sync.v1' }, { scopes: [], streams: [] }],
  ['the first malformed claim in the reference order', { oa_session_id: 1, oa_sync_streams: 's', oa_schema_version: 'x' },
    'malformed claim oa_schema_version (must be an integer)'],
  ['scopes before streams', { oa_sync_streams: 's', oa_sync_scopes: 's' },
    'malformed claim oa_sync_scopes (must be a list of strings)'],
  ['device before session', { oa_session_id: 1, oa_device_id: 1 }, 'malformed claim oa_device_id (must be a string)'],
];

for (const [name, claims, want] of CASES) {
  test(`claims: ${name}`, () => {
    let got: Want;
    try {
      const c = callerFromClaims(ID, claims);
      assert.equal(c.identity, ID);
      got = { scopes: [...c.scopes], streams: [...c.streams] };
      if (c.device_id !== undefined) got.device_id = c.device_id;
      if (c.session_id !== undefined) got.session_id = c.session_id;
    } catch (e) {
      got = (e as Error).message;
    }
    assert.deepEqual(got, want);
  });
}
