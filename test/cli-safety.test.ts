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
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI } from './helpers/cli.js';
import { removeDir, run, tempDir, type RunResult } from './helpers/tmp.js';
import { canSwitchUsers, ensureUser, runAs } from './helpers/users.js';
import { blobPath } from './store-harness.js';

interface Ctx {
  dir: string;
  store: string;
  work: string;
}

function strata(ctx: Ctx, args: string[], env: Record<string, string> = {}, cwd = ctx.work): RunResult {
  return run(process.execPath, [CLI, '--store', ctx.store, ...args], { cwd, env });
}

function ok(ctx: Ctx, args: string[], env: Record<string, string> = {}, cwd = ctx.work): string {
  const r = strata(ctx, args, env, cwd);
  assert.is(r.code, 0, `strata ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.toString();
}

function oneLine(r: RunResult, what: string, re: RegExp): void {
  const err = r.stderr.toString();
  assert.is(r.code, 1, `${what}: exit ${r.code} ${err}`);
  assert.is(err.trimEnd().split('\n').length, 1, `${what}: one line: ${err}`);
  assert.match(err, re, what);
}

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
  ok(ctx, ['-q', 'store', 'import', 'base/1', layer(ctx.dir, 'base', 20)]);
  ok(ctx, ['-q', 'store', 'import', 'app/1', layer(ctx.dir, 'app', 200), '--requires', 'base/1']);
  ok(ctx, ['-q', 'compose', 'add', 'app/1']);
});
test.after.each((ctx) => removeDir(ctx.dir));

test('-o onto the lock, squash onto a file that is not an image: refused; --force and images replace', (ctx) => {
  const lock = join(ctx.work, 'strata.lock');
  const before = readFileSync(lock);
  oneLine(strata(ctx, ['rebuild', lock, '-o', lock]), 'rebuild onto its lock', /strata\.lock exists and is not an image \(give another file name, or --force to replace it\)/);
  assert.equal(readFileSync(lock), before, 'the lock is unchanged');
  const notes = join(ctx.work, 'notes.txt');
  writeFileSync(notes, 'mine\n');
  oneLine(strata(ctx, ['compose', 'squash', notes]), 'squash onto a text file', /exists and is not an image/);
  assert.is(readFileSync(notes, 'utf8'), 'mine\n');
  const img = join(ctx.work, 'a.sqfs');
  ok(ctx, ['-q', 'compose', 'squash', img]);
  ok(ctx, ['-q', 'rebuild', lock, '-o', img]); // an image is replaced: that is a rebuild
  ok(ctx, ['-q', 'compose', 'squash', notes, '--force']);
  assert.is(readFileSync(notes).subarray(0, 4).toString(), 'hsqs', '--force replaced it with the image');
  assert.equal(readdirSync(ctx.work).filter((n) => n.startsWith('.')), [], 'no temp file left');
});

test('--stack DIR and STRATA_STACK keep the stack files elsewhere', (ctx) => {
  const elsewhere = join(ctx.dir, 'stackdir');
  mkdirSync(elsewhere);
  ok(ctx, ['-q', '--stack', elsewhere, 'compose', 'add', 'base/1']);
  assert.ok(existsSync(join(elsewhere, 'strata.json')) && existsSync(join(elsewhere, 'strata.lock')), 'written under --stack');
  const other = join(ctx.dir, 'other');
  mkdirSync(other);
  const list = ok(ctx, ['compose', 'list'], { STRATA_STACK: elsewhere }, other);
  assert.match(list, 'base/1');
  assert.not.ok(existsSync(join(other, 'strata.json')), 'nothing in the working directory');
  ok(ctx, ['-q', 'compose', 'squash', join(ctx.dir, 'b.sqfs')], { STRATA_STACK: elsewhere }, other);
});

test('an unwritable working directory: one line naming it, with what to do', (ctx) => {
  if (!canSwitchUsers()) {
    console.log('  skip: needs root to run as another user');
    return;
  }
  const u = ensureUser('st-safety-user');
  chmodSync(ctx.dir, 0o755);
  chmodSync(ctx.work, 0o755); // root's: the user cannot write it
  const r = runAs(u, process.execPath, [CLI, '--store', ctx.store, 'compose', 'add', 'base/1'], { cwd: ctx.work, env: { XDG_CACHE_HOME: join(u.home, '.cache') } });
  oneLine(r, 'compose add in a directory of root', /cannot write strata\.json in .*work: not writable \(work in a directory of yours, or keep the stack files elsewhere with --stack DIR or STRATA_STACK\)/);
});

test('a layer found corrupt mid-sandbox leaves the target as it was', (ctx) => {
  const show = JSON.parse(ok(ctx, ['--json', 'store', 'show', 'app/1'])) as { record: { layer: string } };
  const file = blobPath(ctx.store, show.record.layer);
  const bytes = readFileSync(file);
  bytes[bytes.length - 3000] ^= 0xff; // late in the second layer: the first is already written
  writeFileSync(file, bytes);
  const absent = join(ctx.dir, 'sb-new');
  oneLine(strata(ctx, ['compose', 'sandbox', absent]), 'sandbox into a new directory', /corrupt/);
  assert.not.ok(existsSync(absent), 'no target left behind');
  const empty = join(ctx.dir, 'sb-empty');
  mkdirSync(empty);
  oneLine(strata(ctx, ['compose', 'sandbox', empty]), 'sandbox into an empty directory', /corrupt/);
  assert.equal(readdirSync(empty), [], 'the empty target stays empty');
  assert.equal(readdirSync(ctx.dir).filter((n) => n.startsWith('.')), [], 'no private build directory left');
});

test('inspect of a sandbox whose lock.json is a FIFO or a symlink: one line, no hang', (ctx) => {
  const sb = join(ctx.dir, 'sb');
  ok(ctx, ['-q', 'compose', 'sandbox', sb]);
  const lock = join(sb, '.strata', 'lock.json');
  rmSync(lock);
  run('mkfifo', [lock]);
  oneLine(strata(ctx, ['inspect', sb]), 'a FIFO', /lock\.json is not a regular file/);
  rmSync(lock);
  symlinkSync('/etc/passwd', lock);
  oneLine(strata(ctx, ['inspect', sb]), 'a symlink', /lock\.json cannot be read \(a symlink\)/);
});

test('a sandbox killed mid-build leaves no target; the next build removes its leftovers', async (ctx) => {
  const target = join(ctx.dir, 'killed');
  const child = spawn(process.execPath, [CLI, '--store', ctx.store, 'compose', 'sandbox', target], { cwd: ctx.work, stdio: 'ignore' });
  // Kill it once its private build directory exists (the build is under way).
  for (let i = 0; i < 400 && !readdirSync(ctx.dir).some((n) => n.includes('.strata-tree.')); i++) await new Promise((r) => setTimeout(r, 5));
  child.kill('SIGKILL');
  await new Promise((r) => child.on('close', r));
  const left = readdirSync(ctx.dir).filter((n) => n.includes('.strata-tree.'));
  if (existsSync(target)) {
    // Killed after the rename: the sandbox is whole.
    ok(ctx, ['inspect', target]);
  } else {
    assert.ok(left.length > 0, 'killed before the rename: a private directory is left');
    oneLine(strata(ctx, ['inspect', target]), 'inspect of the missing target', /does not exist/);
  }
  ok(ctx, ['-q', 'compose', 'sandbox', join(ctx.dir, 'next')]);
  assert.equal(readdirSync(ctx.dir).filter((n) => n.includes('.strata-tree.')), [], 'the next build removed the dead build\'s directory');
});

test.run();
