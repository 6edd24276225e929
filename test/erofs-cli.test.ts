/**
 * EROFS images through the CLI, as a user drives them (spec/erofs.md):
 *  - `compose squash --format erofs` and an OUT ending in `.erofs` (and the `compose image`
 *    alias) of the test stack: fsck.erofs is clean; under a kernel mount the tree equals the
 *    sandbox, POSIX ACLs included (getfacl, getfattr, lstat: snapshotTree), no narrowing;
 *  - `rebuild LOCK -o X.erofs` gives the same bytes: one worker or all, a cold or warm cache, root
 *    or a user who only reads the store, stores filled in either order; lz4 and zstd (lz4 default);
 *  - `inspect` and `unsquash` read EROFS: the extracted tree equals the sandbox;
 *  - truncated and corrupt images: one line, exit 1, nothing written outside the target.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeStack, type Stack } from './fixtures/stack.js';
import { missing, skipSuite } from './helpers/probe.js';
import { removeDir, run, tempDir, unmount } from './helpers/tmp.js';
import { diffTrees, snapshotTree } from './helpers/tree.js';
import { assertOneLineError, strata, strataJson, strataOk, type Workspace } from './helpers/cli.js';
import { importStack, STACK_ORDER } from './image-harness.js';
import { nobody, NOBODY } from './helpers/users.js';

interface Ctx {
  dir: string;
  o: Workspace;
  sandbox: string;
  stack: Stack;
}

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

/** Mounts `img` read-only with the kernel and runs `fn` on the mount point; undefined when mounting is impossible here. */
function withMount<T>(img: string, mnt: string, fn: (mnt: string) => T): T | undefined {
  mkdirSync(mnt, { recursive: true });
  const m = run('mount', ['-t', 'erofs', '-o', 'ro,loop', img, mnt]);
  if (m.code !== 0) {
    console.log(`  skip kernel mount: ${m.stderr.toString().trim()}`);
    return undefined;
  }
  try {
    return fn(mnt);
  } finally {
    unmount(mnt);
  }
}

const why = missing({ tools: ['fsck.erofs', 'getfacl', 'getfattr'] });
if (why) skipSuite('erofs through the CLI', why);
else {
  const test = suite<Ctx>('erofs through the CLI');
  test.before((ctx) => {
    ctx.dir = tempDir('strata-erofs-cli-');
    const work = join(ctx.dir, 'work');
    mkdirSync(work);
    ctx.o = { cwd: work, store: join(ctx.dir, 'store') };
    ctx.stack = makeStack(join(ctx.dir, 'stack'));
    importStack(ctx.o, ctx.stack);
    ctx.sandbox = join(ctx.dir, 'sandbox');
    strataOk(['-q', 'compose', 'sandbox', ctx.sandbox], ctx.o);
  });
  test.after((ctx) => removeDir(ctx.dir));

  test('--format erofs and .erofs: fsck clean, the kernel mount equals the sandbox with its ACLs', ({ dir, o, sandbox }) => {
    const a = join(dir, 'a.erofs');
    const b = join(dir, 'b.img');
    const ra = strataJson<{ sha256: string; bytes: number }>(['compose', 'squash', a], o);
    strataOk(['-q', 'compose', 'image', b, '--format', 'erofs'], o);
    assert.is(ra.sha256, sha(a), 'the reported sha256 is the file\'s');
    assert.is(sha(b), sha(a), 'the extension and --format choose the same image (lz4 by default)');
    assert.is(readFileSync(a).readUInt32LE(1024), 0xe0f5e1e2, 'an EROFS superblock');
    for (const img of [a, b]) assert.is(run('fsck.erofs', [img]).code, 0, `fsck.erofs ${img}`);
    const zstd = join(dir, 'z.erofs');
    strataOk(['-q', 'compose', 'squash', zstd, '--comp', 'zstd', '--level', '3'], o);
    // Debian's fsck.erofs (erofs-utils 1.5) reads lz4 only: the zstd image is checked by the kernel.
    assert.is.not(sha(zstd), sha(a));
    const want = snapshotTree(sandbox);
    for (const img of [a, zstd]) {
      const diffs = withMount(img, join(dir, 'mnt'), (mnt) => diffTrees(want, snapshotTree(mnt)));
      if (diffs) assert.equal(diffs, [], `${img}: kernel mount equals the sandbox`);
    }
    // No SquashFS warning about ACLs: EROFS keeps them.
    assert.not.match(strata(['compose', 'squash', join(dir, 'c.erofs')], o).stderr.toString(), /cannot store/);
  });

  test('rebuild from the lock gives the same bytes; inspect and unsquash read EROFS', (ctx) => {
  const { dir, o, sandbox } = ctx;
    const a = join(dir, 'r1.erofs');
    strataOk(['-q', 'compose', 'squash', a], o);
    const b = join(dir, 'r2.erofs');
    strataOk(['-q', 'rebuild', join(o.cwd, 'strata.lock'), '-o', b], o);
    assert.is(sha(b), sha(a), 'rebuild is byte-identical');
    const c = join(dir, 'r3.img');
    strataOk(['-q', 'rebuild', join(o.cwd, 'strata.lock'), '-o', c, '--format', 'erofs', '--workers', '1'], o);
    assert.is(sha(c), sha(a), 'one worker, the same bytes');
    // A cold cache, and a user who only reads the store (uid 65534, caches in its own HOME).
    rmSync(join(o.store, 'cache'), { recursive: true, force: true });
    const cold = join(dir, 'r4.erofs');
    strataOk(['-q', 'rebuild', join(o.cwd, 'strata.lock'), '-o', cold], o);
    assert.is(sha(cold), sha(a), 'a cold block cache, the same bytes');
    chmodSync(dir, 0o755);
    const theirs = join(dir, 'nobody');
    mkdirSync(theirs);
    chownSync(theirs, NOBODY, NOBODY);
    copyFileSync(join(o.cwd, 'strata.lock'), join(theirs, 'strata.lock'));
    strataOk(['-q', 'rebuild', join(theirs, 'strata.lock'), '-o', join(theirs, 'n.erofs')], { ...o, cwd: theirs, as: nobody(theirs) });
    assert.is(sha(join(theirs, 'n.erofs')), sha(a), 'not root, from a store it cannot write: the same bytes');
    // Another store filled in the reverse order: the same lock, the same bytes.
    const other: Workspace = { cwd: join(dir, 'other-work'), store: join(dir, 'other-store') };
    mkdirSync(other.cwd);
    importStack(other, ctx.stack, [...STACK_ORDER].reverse());
    const rev = join(dir, 'r5.erofs');
    strataOk(['-q', 'rebuild', join(o.cwd, 'strata.lock'), '-o', rev], other);
    assert.is(sha(rev), sha(a), 'a store imported in another order: the same bytes');
    const info = strataJson<{ kind: string; lock: { modules: Array<{ fullName: string }> } }>(['inspect', a], o);
    assert.is(info.kind, 'erofs image');
    assert.equal(info.lock.modules.map((m) => m.fullName), ['base/1.0', 'mid/2.0', 'app/3.1', 'lic/2024.1']);
    const out = join(dir, 'unsquashed');
    strataOk(['-q', 'unsquash', a, out], o);
    assert.equal(diffTrees(sandbox, out), [], 'unsquash of the EROFS image equals the sandbox');
  });

  test('truncated and corrupt EROFS images: one line, exit 1, nothing written outside the target', ({ dir, o }) => {
    const good = join(dir, 'g.erofs');
    strataOk(['-q', 'compose', 'squash', good], o);
    const bytes = readFileSync(good);
    const cases: Array<[string, Buffer]> = [
      ['truncated', bytes.subarray(0, Math.floor(bytes.length / 2))],
      ['superblock flipped', Buffer.from(bytes).fill(0xff, 1040, 1100)],
      // The directory block naming lock.json: garbage over its dirents and names.
      ['directory overwritten', (() => {
        const at = bytes.indexOf('lock.json');
        assert.ok(at > 0, 'the image names lock.json');
        const b = Buffer.from(bytes);
        b.fill(0xa5, at - (at % 4096), at - (at % 4096) + 4096);
        return b;
      })()],
    ];
    const outside = join(dir, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'keep'), 'keep');
    for (const [what, b] of cases) {
      const img = join(dir, `bad-${what.replace(/\W+/g, '-')}.erofs`);
      writeFileSync(img, b);
      assertOneLineError(strata(['inspect', img], o), `inspect ${what}`);
      const target = join(dir, `x-${what.replace(/\W+/g, '-')}`);
      const r = strata(['unsquash', img, target], o);
      if (r.code !== 0) {
        assertOneLineError(r, `unsquash ${what}`);
        assert.ok(!existsSync(target) || readdirSync(target).length === 0, `${what}: the target is left as it was`);
      }
      assert.equal(readdirSync(outside), ['keep'], `${what}: nothing written outside`);
    }
  });

  test.run();
}
