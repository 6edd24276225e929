/**
 * compose/embedded.ts, writeAclIndex: /.strata/acl.json written as its entries stream is, byte
 * for byte, the JSON.stringify(…, null, 1) the index was before it streamed (images keep their
 * bytes), including JavaScript's own order of an object's keys: array indices ("7", a top-level
 * name) first, ascending, then the others as they came.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeAclIndex, type AclIndexEntry } from '../compose/embedded.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const test = suite<{ dir: string }>('embedded: the ACL index');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-acl-index-');
});
test.after.each((ctx) => removeDir(ctx.dir));

const acl = (i: number): AclIndexEntry => ({ mode: 0o640 + (i % 8), gid: i % 3 === 0 ? undefined : 50, access: `user::rw-\ngroup::r--\ngroup:${i}:r--\nmask::r--\nother::---\n`, ...(i % 2 ? { default: 'user::rwx\ngroup::r-x\nother::---\n' } : {}) });

/** What the index was: an object filled in the plan's order, stringified. */
function stringified(entries: Array<[string, AclIndexEntry]>): string {
  const o: Record<string, AclIndexEntry> = {};
  for (const [p, v] of entries) o[p] = v;
  return `${JSON.stringify({ aclVersion: 1, entries: o }, null, 1)}\n`;
}

const cases: Record<string, Array<[string, AclIndexEntry]>> = {
  'no ACL at all': [],
  'one path': [['opt/lic', acl(1)]],
  'names JSON escapes and other scripts': ['a"b', 'back\\slash', 'ctl\u0001x', 'tab\there', 'ünï/cödé', '日本/語', 'z/e\u0301'].map((p, i) => [p, acl(i)]),
  'array-index names first, ascending': ['.', '0', '01', '10', '4294967294', '4294967295', '7', 'a', 'a/1', 'b'].map((p, i) => [p, acl(i)]),
  'only array-index names': ['3', '12', '5'].map((p, i) => [p, acl(i)]),
};

for (const [name, entries] of Object.entries(cases)) {
  test(`${name}: the bytes JSON.stringify gives`, ({ dir }) => {
    const file = join(dir, 'acl.json');
    const size = writeAclIndex(entries, file);
    const want = stringified(entries);
    assert.is(readFileSync(file, 'utf8'), want);
    assert.is(size, Buffer.byteLength(want), 'the size returned is the file\'s');
  });
}

test('many entries: written in chunks, the same bytes', ({ dir }) => {
  const entries: Array<[string, AclIndexEntry]> = [];
  for (let i = 0; i < 30_000; i++) entries.push([i % 1000 === 0 ? String(i) : `d${i % 97}/f${i}`, acl(i)]);
  const file = join(dir, 'acl.json');
  writeAclIndex(entries, file);
  assert.ok(readFileSync(file).equals(Buffer.from(stringified(entries))));
});

test.run();
