/**
 * Canonical JSON and payload hashes (DESIGN §2; spec/canonical.py is the model).
 *
 * The canonical text of a JSON value is exactly what Python writes with
 * `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)`
 * for the value parsed from the input. JSON.parse cannot be used: it keeps the last of duplicate
 * keys, reads numbers as doubles (so `1.0`, `1e3` and 2^53+1 slip through) and cannot tell an
 * escaped lone surrogate from a paired one. So this is a small hand-written parser that follows
 * Python's `json` scanner token by token (the same accepted whitespace, escapes, number grammar,
 * NaN/Infinity constants; duplicate keys refused when their object closes, as Python's
 * object_pairs_hook), then the same post-parse walk as `spec.canonical._walk` (depth and lone
 * surrogates, depth-first), so that an input gets the model's reason: with one defect, and with
 * several the first one Python's scanner meets (test/model-cases/canonical.json). As in the model, a
 * text nesting more than SCAN_DEPTH_LIMIT (512) deep, brackets counted outside string literals, is
 * too_deep before it is parsed (the model's bound keeps its reason independent of Python's stack).
 *
 * Reasons (error code `non_canonical_payload`, details `{argument, reason, message}`):
 * invalid_json, duplicate_key, lone_surrogate, non_integer_number, integer_out_of_range,
 * nan_or_infinity, too_deep. The `message` is informative and not byte-equal to Python's.
 *
 * Keys are sorted by Unicode code point (not UTF-16 units, JavaScript's default). Strings
 * escape only `"`, `\` and U+0000-U+001F (`\b \t \n \f \r` by name, the rest `\u00xx`).
 * The hash is `sha256:` + lowercase hex SHA-256 of the canonical text's UTF-8 bytes
 * (@noble/hashes: pure JS, so it runs inside SpacetimeDB's V8 host, which has no node:crypto).
 */

import { sha256 } from '@noble/hashes/sha2.js';

import { ErrorCode, SyncError } from './errors.js';

export const MAX_SAFE_INTEGER = 2 ** 53 - 1;
export const MAX_DEPTH = 64;
/** spec.canonical.SCAN_DEPTH_LIMIT: a text nesting deeper (brackets outside string literals) is
 * too_deep before it is parsed. */
export const SCAN_DEPTH_LIMIT = 512;
/** What the bound does not count: a string literal (to the next unescaped quote, or to the end of the
 * text) or a run of other characters -- the model's `_NOT_COUNTED`, the same pattern. */
const NOT_COUNTED = /"[^"\\]*(?:\\[\s\S]?[^"\\]*)*(?:"|$)|[^"[\]{}]+/g;
const MAX_SAFE_DIGITS = String(MAX_SAFE_INTEGER).length;

export const REASONS = [
  'invalid_json', 'duplicate_key', 'lone_surrogate', 'non_integer_number',
  'integer_out_of_range', 'nan_or_infinity', 'too_deep',
] as const;
export type Reason = (typeof REASONS)[number];

/** A parsed JSON object keeps its entries (keys unique, insertion order). */
export class JsonObject {
  constructor(readonly entries: ReadonlyArray<readonly [string, JsonValue]>) {}
}
export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;

class Reject extends Error {
  constructor(readonly reason: Reason, readonly detail: string) {
    super(detail);
  }
}

const WS = new Set([' ', '\t', '\n', '\r']);
/** Python's json NUMBER_RE, anchored at lastIndex. */
const NUMBER = /(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;

class Parser {
  i = 0;
  constructor(readonly s: string) {}

  fail(what: string): never {
    throw new Reject('invalid_json', `${what} at char ${this.i}`);
  }

  ws(): void {
    while (this.i < this.s.length && WS.has(this.s[this.i]!)) this.i++;
  }

  value(depth: number): JsonValue {
    const c = this.s[this.i];
    switch (c) {
      case '"':
        return this.string();
      case '{':
        return this.object(depth);
      case '[':
        return this.array(depth);
      case 'n':
        return this.word('null', null);
      case 't':
        return this.word('true', true);
      case 'f':
        return this.word('false', false);
      case 'N':
        if (this.s.startsWith('NaN', this.i)) throw new Reject('nan_or_infinity', 'NaN is not a JSON number');
        return this.fail('Expecting value');
      case 'I':
        if (this.s.startsWith('Infinity', this.i)) {
          throw new Reject('nan_or_infinity', 'Infinity is not a JSON number');
        }
        return this.fail('Expecting value');
      default:
        if (c === '-' && this.s.startsWith('-Infinity', this.i)) {
          throw new Reject('nan_or_infinity', '-Infinity is not a JSON number');
        }
        return this.number();
    }
  }

  word<T>(w: string, v: T): T {
    if (!this.s.startsWith(w, this.i)) this.fail('Expecting value');
    this.i += w.length;
    return v;
  }

  number(): number {
    NUMBER.lastIndex = this.i; // sticky: the whole token, however long (a fraction after 5,000 digits is still one)
    const m = NUMBER.exec(this.s);
    if (m === null) return this.fail('Expecting value');
    if (m[2] !== undefined || m[3] !== undefined) {
      throw new Reject('non_integer_number', `number ${m[0].slice(0, 40)} is not an integer`);
    }
    const text = m[1]!;
    this.i += m[0].length;
    const digits = text.startsWith('-') ? text.slice(1) : text;
    const value = Number(text);
    if (digits.length > MAX_SAFE_DIGITS || Math.abs(value) > MAX_SAFE_INTEGER) {
      throw new Reject('integer_out_of_range', `integer ${text.slice(0, 40)} is outside +/-(2^53-1)`);
    }
    return value === 0 ? 0 : value; // -0 is 0
  }

  string(): string {
    this.i++; // opening quote
    let out = '';
    for (;;) {
      if (this.i >= this.s.length) this.fail('Unterminated string');
      const ch = this.s.charCodeAt(this.i);
      if (ch === 0x22) {
        this.i++;
        return out;
      }
      if (ch < 0x20) this.fail('Invalid control character');
      if (ch !== 0x5c) {
        out += this.s[this.i];
        this.i++;
        continue;
      }
      const e = this.s[this.i + 1];
      this.i += 2;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const hex = this.s.slice(this.i, this.i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail('Invalid \\uXXXX escape');
          out += String.fromCharCode(parseInt(hex, 16)); // pairs combine as UTF-16 units do
          this.i += 4;
          break;
        }
        default:
          this.i -= 1;
          this.fail('Invalid \\escape');
      }
    }
  }

  object(depth: number): JsonObject {
    this.i++;
    const entries: [string, JsonValue][] = [];
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return new JsonObject(entries);
    }
    for (;;) {
      if (this.s[this.i] !== '"') this.fail('Expecting property name enclosed in double quotes');
      const key = this.string();
      this.ws();
      if (this.s[this.i] !== ':') this.fail("Expecting ':' delimiter");
      this.i++;
      this.ws();
      entries.push([key, this.value(depth + 1)]);
      this.ws();
      const c = this.s[this.i];
      this.i++;
      if (c === '}') return this.closed(entries);
      if (c !== ',') {
        this.i--;
        this.fail("Expecting ',' delimiter");
      }
      this.ws();
    }
  }

  /** Duplicate keys are refused when the object closes, as Python's object_pairs_hook is called:
   * a defect later inside the same object (a fraction, a syntax error) is met first. */
  closed(entries: [string, JsonValue][]): JsonObject {
    const seen = new Set<string>();
    for (const [key] of entries) {
      if (seen.has(key)) throw new Reject('duplicate_key', `duplicate object key ${JSON.stringify(key)}`);
      seen.add(key);
    }
    return new JsonObject(entries);
  }

  array(depth: number): JsonValue[] {
    this.i++;
    const out: JsonValue[] = [];
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i];
      this.i++;
      if (c === ']') return out;
      if (c !== ',') {
        this.i--;
        this.fail("Expecting ',' delimiter");
      }
      this.ws();
    }
  }
}

/** True when `s` holds an unpaired UTF-16 surrogate (so it has no UTF-8 encoding). */
export function hasLoneSurrogate(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
      else return true;
    } else if (c >= 0xdc00 && c <= 0xdfff) return true;
  }
  return false;
}

/** The model's `_walk`: depth and lone surrogates, depth-first, the first defect wins. */
function walk(v: JsonValue, depth: number): void {
  if (typeof v === 'string') {
    if (hasLoneSurrogate(v)) throw new Reject('lone_surrogate', 'string contains an unpaired surrogate');
    return;
  }
  if ((Array.isArray(v) || v instanceof JsonObject) && depth >= MAX_DEPTH) {
    throw new Reject('too_deep', `nesting deeper than ${MAX_DEPTH}`);
  }
  if (Array.isArray(v)) {
    for (const x of v) walk(x, depth + 1);
  } else if (v instanceof JsonObject) {
    for (const [k, x] of v.entries) {
      if (hasLoneSurrogate(k)) throw new Reject('lone_surrogate', 'object key contains an unpaired surrogate');
      walk(x, depth + 1);
    }
  }
}

function count(s: string, ch: string): number {
  let n = 0;
  for (let i = s.indexOf(ch); i >= 0; i = s.indexOf(ch, i + 1)) n++;
  return n;
}

/** Do the brackets outside string literals nest deeper than SCAN_DEPTH_LIMIT? */
function nestsPastScanLimit(text: string): boolean {
  let depth = 0;
  for (const b of text.replace(NOT_COUNTED, '')) {
    depth += b === '[' || b === '{' ? 1 : -1;
    if (depth > SCAN_DEPTH_LIMIT) return true;
  }
  return false;
}

/** Parse under the strict rules, or throw `SyncError(non_canonical_payload)`. */
export function parseStrict(text: string, argument = 'payload_json'): JsonValue {
  try {
    if (hasLoneSurrogate(text)) throw new Reject('lone_surrogate', 'text contains an unpaired surrogate');
    if (count(text, '[') + count(text, '{') > SCAN_DEPTH_LIMIT && nestsPastScanLimit(text)) {
      throw new Reject('too_deep', `nesting deeper than ${MAX_DEPTH}`);
    }
    if (text.startsWith('\ufeff')) throw new Reject('invalid_json', 'Unexpected UTF-8 BOM');
    const p = new Parser(text);
    p.ws();
    const v = p.value(0);
    p.ws();
    if (p.i !== text.length) p.fail('Extra data');
    walk(v, 0);
    return v;
  } catch (e) {
    if (e instanceof Reject) {
      throw new SyncError(ErrorCode.NON_CANONICAL_PAYLOAD, { argument, reason: e.reason, message: e.detail });
    }
    if (e instanceof RangeError) { // the JS stack ran out first: still a clean too_deep
      throw new SyncError(ErrorCode.NON_CANONICAL_PAYLOAD,
        { argument, reason: 'too_deep', message: `nesting deeper than ${MAX_DEPTH}` });
    }
    throw e;
  }
}

/** Compare two strings by Unicode code point (what Python's `sorted` does), not UTF-16 units. */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

const NAMED: Record<string, string> = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' };

export function quote(s: string): string {
  // eslint-disable-next-line no-control-regex
  return '"' + s.replace(/["\\\u0000-\u001f]/g, (c) => NAMED[c] ?? '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')) + '"';
}

/** Canonical text of a parsed, valid value. */
export function dumpsCanonical(v: JsonValue): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return quote(v);
  if (Array.isArray(v)) return '[' + v.map(dumpsCanonical).join(',') + ']';
  const sorted = [...v.entries].sort((a, b) => compareCodePoints(a[0], b[0]));
  return '{' + sorted.map(([k, x]) => quote(k) + ':' + dumpsCanonical(x)).join(',') + '}';
}

/**
 * Canonical JSON of plain data the module writes itself (error details, the outbox hash input):
 * strings, safe numbers, bigints (u64 columns), booleans, null, arrays and plain objects.
 */
export function dumpsPlain(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'string') return quote(v);
  if (Array.isArray(v)) return '[' + v.map(dumpsPlain).join(',') + ']';
  if (v instanceof JsonObject) return dumpsCanonical(v);
  if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).sort((a, b) => compareCodePoints(a[0], b[0]));
    return '{' + entries.map(([k, x]) => quote(k) + ':' + dumpsPlain(x)).join(',') + '}';
  }
  throw new TypeError(`cannot write ${typeof v} as JSON`);
}

/** Canonical text of the JSON `text`, or `SyncError(non_canonical_payload)`. */
export function canonicalize(text: string, argument = 'payload_json'): string {
  return dumpsCanonical(parseStrict(text, argument));
}

/** UTF-8 bytes of a well-formed string (no TextEncoder needed in the module host). */
export function utf8(s: string): Uint8Array {
  const out: number[] = [];
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(out);
}

export function utf8Length(s: string): number {
  let n = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** `sha256:` + lowercase hex SHA-256 of the UTF-8 bytes of a canonical text. */
export function payloadHash(canonicalText: string): string {
  const d = sha256(utf8(canonicalText));
  let hex = '';
  for (const b of d) hex += HEX[b]!;
  return 'sha256:' + hex;
}

export function canonicalAndHash(text: string, argument = 'payload_json'): [string, string] {
  const canon = canonicalize(text, argument);
  return [canon, payloadHash(canon)];
}
