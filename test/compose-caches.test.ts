/**
 * compose/caches.ts cacheSecret(): the user's cache secret is made once (32 bytes, 0600, in
 * the user's cache dir) and read back the same; it is not used (undefined: every cache hit is
 * then checked) when the file or its directory is open to others or the name is a symlink.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cacheSecret } from '../compose/caches.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const test = suite<{ dir: string; cache: string }>('compose caches: the user\'s cache secret');

test.before.each((ctx) => {
  ctx.dir = tempDir('strata-secret-');
  process.env.XDG_CACHE_HOME = ctx.dir;
  ctx.cache = join(ctx.dir, 'strata');
});
test.after.each((ctx) => removeDir(ctx.dir));

test('made once, private, read back the same', ({ cache }) => {
  const a = cacheSecret();
  assert.ok(a, 'a secret is made');
  assert.is(a.length, 32);
  const st = statSync(join(cache, 'cache-secret'));
  assert.is(st.mode & 0o777, 0o600);
  assert.is(statSync(cache).mode & 0o077, 0, 'the directory is made private');
  assert.ok(cacheSecret()!.equals(a), 'the same secret next time');
});

test('not used when others could read or replace it, or the name is a symlink', ({ dir, cache }) => {
  assert.ok(cacheSecret());
  const file = join(cache, 'cache-secret');
  chmodSync(file, 0o640);
  assert.is(cacheSecret(), undefined, 'a group-readable file');
  chmodSync(file, 0o600);
  chmodSync(cache, 0o770);
  assert.is(cacheSecret(), undefined, 'a group-writable directory');
  chmodSync(cache, 0o700);
  assert.ok(cacheSecret(), 'private again: used');
  rmSync(file);
  const elsewhere = join(dir, 'planted');
  writeFileSync(elsewhere, Buffer.alloc(32), { mode: 0o600 });
  symlinkSync(elsewhere, file);
  assert.is(cacheSecret(), undefined, 'a symlink planted at the name');
  rmSync(file);
  writeFileSync(file, 'short', { mode: 0o600 });
  assert.is(cacheSecret(), undefined, 'a file of the wrong size');
});

test.run();
