/**
 * Nothing is overwritten or half-built without being asked (issue: "tried as a new user"):
 *  - `rebuild x.lock -o x.lock` and `compose squash OUT` onto a file that is not an image are
 *    refused in one line, the file unchanged; `--force` replaces it; an image is replaced;
 *  - the stack files live in --stack DIR or $STRATA_STACK when given; a working directory the
 *    user cannot write gives one line naming it (not a temp file's errno), run as a real user;
 *  - a layer found corrupt in the middle of a sandbox build leaves the target as it was.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertOneLineError, strata, strataAsync, strataOk, type Workspace } from './helpers/cli.js';
import { removeDir, run, tempDir } from './helpers/tmp.js';
import { canSwitchUsers, ensureUser } from './helpers/users.js';
import { blobPath } from './store-harness.js';

interface Ctx {
  dir: string;
  store: string;
  work: string;
}

/** The suite's store, and its working directory as the cwd. */
const at = (ctx: Ctx): Workspace => ({ store: ctx.store, cwd: ctx.work });

function layer(dir: string, name: string, files: number): string {
  const d = join(dir, `src-${name}`);
  mkdirSync(join(d, 'opt', name), { recursive: true });
  for (let i = 0; i < files; i++) writeFileSync(join(d, 'opt', name, `f${i}`), `${name} ${i} ${'.'.repeat(4096)}\n`);
  return d;
}

const test = suite<Ctx>('outputs and stack files: nothing overwritten, nothing half-built');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-safety-');
  ctx.store = join(ctx.dir, 'store');
  ctx.work = join(ctx.dir, 'work');
  mkdirSync(ctx.work);
  strataOk(['-q', 'store', 'import', 'base/1', layer(ctx.dir, 'base', 20)], at(ctx));
  strataOk(['-q', 'store', 'import', 'app/1', layer(ctx.dir, 'app', 200), '--requires', 'base/1'], at(ctx));
  strataOk(['-q', 'compose', 'add', 'app/1'], at(ctx));
});
test.after.each((ctx) => removeDir(ctx.dir));

test('-o onto the lock, squash onto a file that is not an image: refused; --force and images replace', (ctx) => {
  const lock = join(ctx.work, 'strata.lock');
  const before = readFileSync(lock);
  assertOneLineError(strata(['rebuild', lock, '-o', lock], at(ctx)), 'rebuild onto its lock', /strata\.lock exists and is not an image \(give another file name, or --force to replace it\)/);
  assert.equal(readFileSync(lock), before, 'the lock is unchanged');
  const notes = join(ctx.work, 'notes.txt');
  writeFileSync(notes, 'mine\n');
  assertOneLineError(strata(['compose', 'squash', notes], at(ctx)), 'squash onto a text file', /exists and is not an image/);
  assert.is(readFileSync(notes, 'utf8'), 'mine\n');
  const img = join(ctx.work, 'a.sqfs');
  strataOk(['-q', 'compose', 'squash', img], at(ctx));
  strataOk(['-q', 'rebuild', lock, '-o', img], at(ctx)); // an image is replaced: that is a rebuild
  strataOk(['-q', 'compose', 'squash', notes, '--force'], at(ctx));
  assert.is(readFileSync(notes).subarray(0, 4).toString(), 'hsqs', '--force replaced it with the image');
  assert.equal(readdirSync(ctx.work).filter((n) => n.startsWith('.')), [], 'no temp file left');
});

test('--stack DIR and STRATA_STACK keep the stack files elsewhere', (ctx) => {
  const elsewhere = join(ctx.dir, 'stackdir');
  mkdirSync(elsewhere);
  strataOk(['-q', '--stack', elsewhere, 'compose', 'add', 'base/1'], at(ctx));
  assert.ok(existsSync(join(elsewhere, 'strata.json')) && existsSync(join(elsewhere, 'strata.lock')), 'written under --stack');
  const other = join(ctx.dir, 'other');
  mkdirSync(other);
  const list = strataOk(['compose', 'list'], { ...at(ctx), env: { STRATA_STACK: elsewhere }, cwd: other });
  assert.match(list, 'base/1');
  assert.not.ok(existsSync(join(other, 'strata.json')), 'nothing in the working directory');
  strataOk(['-q', 'compose', 'squash', join(ctx.dir, 'b.sqfs')], { ...at(ctx), env: { STRATA_STACK: elsewhere }, cwd: other });
});

test('an unwritable working directory: one line naming it, with what to do', (ctx) => {
  if (!canSwitchUsers()) {
    console.log('  skip: needs root to run as another user');
    return;
  }
  const u = ensureUser('st-safety-user');
  chmodSync(ctx.dir, 0o755);
  chmodSync(ctx.work, 0o755); // root's: the user cannot write it
  const r = strata(['compose', 'add', 'base/1'], { ...at(ctx), as: u, env: { XDG_CACHE_HOME: join(u.home, '.cache') } });
  assertOneLineError(r, 'compose add in a directory of root', /cannot write strata\.json in .*work: not writable \(work in a directory of yours, or keep the stack files elsewhere with --stack DIR or STRATA_STACK\)/);
});

test('a layer found corrupt mid-sandbox leaves the target as it was', (ctx) => {
  const show = JSON.parse(strataOk(['--json', 'store', 'show', 'app/1'], at(ctx))) as { record: { layer: string } };
  const file = blobPath(ctx.store, show.record.layer);
  const bytes = readFileSync(file);
  bytes[bytes.length - 3000] ^= 0xff; // late in the second layer: the first is already written
  writeFileSync(file, bytes);
  const absent = join(ctx.dir, 'sb-new');
  assertOneLineError(strata(['compose', 'sandbox', absent], at(ctx)), 'sandbox into a new directory', /corrupt/);
  assert.not.ok(existsSync(absent), 'no target left behind');
  const empty = join(ctx.dir, 'sb-empty');
  mkdirSync(empty);
  assertOneLineError(strata(['compose', 'sandbox', empty], at(ctx)), 'sandbox into an empty directory', /corrupt/);
  assert.equal(readdirSync(empty), [], 'the empty target stays empty');
  assert.equal(readdirSync(ctx.dir).filter((n) => n.startsWith('.')), [], 'no private build directory left');
});

test('inspect of a sandbox whose lock.json is a FIFO or a symlink: one line, no hang', (ctx) => {
  const sb = join(ctx.dir, 'sb');
  strataOk(['-q', 'compose', 'sandbox', sb], at(ctx));
  const lock = join(sb, '.strata', 'lock.json');
  rmSync(lock);
  run('mkfifo', [lock]);
  assertOneLineError(strata(['inspect', sb], at(ctx)), 'a FIFO', /lock\.json is not a regular file/);
  rmSync(lock);
  symlinkSync('/etc/passwd', lock);
  assertOneLineError(strata(['inspect', sb], at(ctx)), 'a symlink', /lock\.json cannot be read \(a symlink\)/);
});

test('a sandbox killed mid-build leaves no target; the next build removes its leftovers', async (ctx) => {
  const target = join(ctx.dir, 'killed');
  const child = strataAsync(['compose', 'sandbox', target], at(ctx));
  // Kill it once its private build directory exists (the build is under way).
  for (let i = 0; i < 400 && !readdirSync(ctx.dir).some((n) => n.includes('.strata-tree.')); i++) await new Promise((r) => setTimeout(r, 5));
  child.kill('SIGKILL');
  await child.done;
  const left = readdirSync(ctx.dir).filter((n) => n.includes('.strata-tree.'));
  if (existsSync(target)) {
    // Killed after the rename: the sandbox is whole.
    strataOk(['inspect', target], at(ctx));
  } else {
    assert.ok(left.length > 0, 'killed before the rename: a private directory is left');
    assertOneLineError(strata(['inspect', target], at(ctx)), 'inspect of the missing target', /does not exist/);
  }
  strataOk(['-q', 'compose', 'sandbox', join(ctx.dir, 'next')], at(ctx));
  assert.equal(readdirSync(ctx.dir).filter((n) => n.includes('.strata-tree.')), [], 'the next build removed the dead build\'s directory');
});

test.run();
