/**
 * Planted bugs: each mutant is one small edit of the compiled rules (or canonical JSON) module,
 * written beside the original so its relative imports resolve, then judged by the same vector
 * runner as the real module. Every mutant must be caught (at least one vector fails); an edit
 * that does not apply exactly once fails the test, so the harness cannot silently test nothing.
 */

import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';

import { type Client, kitPresent, runKit } from './kit.js';
import { type Canonical, loadJson, type Rules, runCanonicalCases, runCases } from './runner.js';

interface Mutant { name: string; file: 'rules' | 'canonical' | 'client'; find: RegExp; replace: string }

const MUTANTS: Mutant[] = [
  { name: 'sequence checked before dedupe', file: 'rules',
    find: /const existing = db\.sync_event\.byKey\(stream_id, idempotency_key\);/,
    replace: 'if (expected_next_seq !== undefined && expected_next_seq !== (db.sync_stream.find(stream_id)?.head_seq ?? 0n) + 1n) '
      + 'throw fail(ErrorCode.SEQUENCE_CONFLICT, { actual_next_seq: (db.sync_stream.find(stream_id)?.head_seq ?? 0n) + 1n, expected_next_seq, stream_id }); '
      + 'const existing = db.sync_event.byKey(stream_id, idempotency_key);' },
  { name: 'a retry with the same payload is a conflict (no dedupe)', file: 'rules',
    find: /if \(existing\.payload_hash === digest\)\s+return existing\.seq;/, replace: 'if (false) return existing.seq;' },
  { name: 'a new stream starts in epoch 1, not at the epoch floor', file: 'rules',
    find: /epoch = db\.epochFloor\(\);/, replace: 'epoch = 1n;' },
  { name: 'equal ack rewrites the checkpoint', file: 'rules',
    find: /old\.last_applied_seq >= seq\)/, replace: 'old.last_applied_seq > seq)' },
  { name: 'ack_checkpoint without the stream grant', file: 'rules',
    find: /scope\(c, 'sync\.checkpoint\.write'\);\s+grant\(c, stream_id\);/, replace: "scope(c, 'sync.checkpoint.write');" },
  { name: 'presence signal on every upsert', file: 'rules',
    find: /if \(old === undefined \|\| old\.status !== status\) \{\s+db\.presence_signal/, replace: 'if (true) { db.presence_signal' },
  { name: 'executor role ignores provider_owner', file: 'rules',
    find: /executor: \{ scope: 'compute\.execute', column: 'provider_owner' \}/, replace: "executor: { scope: 'compute.execute', column: null }" },
  { name: 'assigning does not check the advertised job kind', file: 'rules',
    find: /!p\.nip90_kinds\.includes\(job_kind\)/, replace: 'false' },
  { name: 'outbox accepts non-portable controls (no NIP-01 id every relay agrees on)', file: 'rules',
    find: /NOSTR_NONPORTABLE_CONTROL\.test\(x\)/, replace: 'false' },
  { name: 'relay and error lengths counted in UTF-16 units, not code points', file: 'rules',
    find: /const pyLen = \(s\) => \[\.\.\.s\]\.length;/, replace: 'const pyLen = (s) => s.length;' },
  { name: 'dead letter one attempt late', file: 'rules',
    find: /attempts >= p\.bridge_max_attempts/, replace: 'attempts > p.bridge_max_attempts' },
  { name: 'relays acknowledged earlier are dropped', file: 'rules',
    find: /for \(const r of old\.relays_acked\)\s+acked\.add\(r\);/, replace: '' },
  { name: 'provider price change treated as no-op', file: 'rules',
    find: /&& old\.price_hint_sats === price_hint_sats/, replace: '' },
  { name: 'stale cursor: off-by-one retention floor', file: 'rules',
    find: /watermark < floor - 1n/, replace: 'watermark < floor' },
  { name: 'stale cursor: a page measured to the head, not to its bound (ADR-0042)', file: 'rules',
    find: /const end = upper === undefined \|\| upper > head \? head : upper;/, replace: 'const end = head;' },
  { name: 'stale cursor: a page measured to max(head, B) (ADR-0042)', file: 'rules',
    find: /const end = upper === undefined \|\| upper > head \? head : upper;/,
    replace: 'const end = upper === undefined || upper < head ? head : upper;' },
  { name: 'retention drops any old event, not only a prefix', file: 'rules',
    find: /if \(drop\.has\(e\.seq\)\)\s+cut = e\.seq;\s+else\s+break;/, replace: 'if (drop.has(e.seq)) cut = e.seq;' },
  { name: 'retention forgets the versions of a removed assignment', file: 'rules',
    find: /if \(r\.version \+ 1n > db\.versionFloor\(\)\)\s+db\.raiseVersionFloor\(r\.version \+ 1n\);/, replace: '' },
  { name: 'retention keeps sent outbox rows for ever', file: 'rules',
    find: /r\.status === 'sent' \? policy\.retain_sent_outbox_us/, replace: "r.status === 'sent' ? null" },
  { name: 'client: continues past the continued seq', file: 'client',
    find: /return last <= bound/, replace: 'return last <= bound + 1n' },
  { name: 'client: drops the continuation chain (CONT-1, ADR-0010)', file: 'client',
    find: /\.\.\.earlier_epochs\.map/, replace: '...[].map' },
  { name: 'client: a gap is applied', file: 'client',
    find: /seq === last \+ 1n \? 'apply' : 'gap'/, replace: "'apply'" },
  { name: 'canonical: keys sorted by UTF-16 units', file: 'canonical',
    find: /\[\.\.\.v\.entries\]\.sort\(\(a, b\) => compareCodePoints\(a\[0\], b\[0\]\)\)/,
    replace: '[...v.entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))' },
  { name: 'canonical: upper-case \\u00XX escapes', file: 'canonical',
    find: /c\.charCodeAt\(0\)\.toString\(16\)\.padStart\(4, '0'\)/, replace: "c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')" },
  { name: 'canonical: duplicate keys accepted', file: 'canonical',
    find: /if \(seen\.has\(key\)\)/, replace: 'if (false)' },
  { name: 'canonical: a duplicate key refused where it is read, not when its object closes', file: 'canonical',
    find: /entries\.push\(\[key, this\.value\(depth \+ 1\)\]\);/,
    replace: 'entries.push([key, this.value(depth + 1)]); this.closed([...entries]);' },
  { name: 'canonical: numbers matched in a 4,096-character window', file: 'canonical',
    find: /NUMBER\.exec\(this\.s\)/, replace: 'NUMBER.exec(this.s.slice(0, this.i + 4096))' },
  { name: 'canonical: the nesting bound counts brackets inside string literals', file: 'canonical',
    find: /text\.replace\(NOT_COUNTED, ''\)/, replace: "text.replace(/[^[\\]{}]+/g, '')" },
  { name: 'canonical: the nesting bound off by one', file: 'canonical',
    find: /if \(depth > SCAN_DEPTH_LIMIT\)/, replace: 'if (depth >= SCAN_DEPTH_LIMIT)' },
  { name: 'canonical: fractions accepted as numbers', file: 'canonical',
    find: /if \(m\[2\] !== undefined \|\| m\[3\] !== undefined\)/, replace: 'if (false)' },
];

const SRC = new URL('../src/', import.meta.url);
const CASES = ['scenarios', 'walks', 'hostile'].map((f) => loadJson(`test/model-cases/${f}.json`));
const CANONICAL_CASES = loadJson('test/model-cases/canonical.json');

async function load<M>(file: string, source: string, tag: string): Promise<M> {
  const target = new URL(`${file}.mutant_${tag}.js`, SRC);
  writeFileSync(target, source);
  try {
    return (await import(target.href)) as M;
  } finally {
    rmSync(target);
  }
}

test('every planted bug is caught by the vectors', async (t) => {
  const originals = {
    rules: readFileSync(new URL('rules.js', SRC), 'utf8'),
    canonical: readFileSync(new URL('canonical.js', SRC), 'utf8'),
    client: readFileSync(new URL('client.js', SRC), 'utf8'),
  };
  const canonical = (await import(new URL('canonical.js', SRC).href)) as Canonical;
  const originalRules = (await import(new URL('rules.js', SRC).href)) as Rules;
  let i = 0;
  for (const m of MUTANTS) {
    i++;
    await t.test(m.name, async () => {
      const src = originals[m.file];
      const matches = src.match(new RegExp(m.find.source, 'g')) ?? [];
      assert.equal(matches.length, 1, `the edit must apply exactly once to ${m.file}.js`);
      const mutated = src.replace(m.find, m.replace);
      let failures: string[];
      if (m.file === 'rules') {
        const rules = await load<Rules>('rules', mutated, String(i));
        failures = [...(kitPresent() ? runKit(rules, canonical, 1).failures : []),
          ...CASES.flatMap((c) => runCases(rules, canonical, c, 1))];
      } else if (m.file === 'client') {
        const mc = await load<Client>('client', mutated, String(i));
        failures = runKit(originalRules, canonical, 1, mc).failures;
      } else {
        const mc = await load<Canonical>('canonical', mutated, String(i));
        failures = [...runKit(originalRules, mc, 1).failures, ...runCanonicalCases(mc, CANONICAL_CASES, 1)];
      }
      assert.ok(failures.length > 0, `mutant survived: ${m.name}`);
      t.diagnostic(`${m.name}: killed by ${failures[0]!.split('\n')[0]}`);
    });
  }
  assert.equal(i, MUTANTS.length);
});
