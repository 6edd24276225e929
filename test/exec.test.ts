/**
 * `strata exec TARGET -- CMD…` (compose/exec.ts): a command run inside the test stack's sandbox
 * and image, as root and as a real unprivileged user, with the stack's environment; its exit
 * status comes back; an image is unmounted after the run, also when strata is terminated.
 *
 * The stack's MPI is a stand-in: a layer with a static busybox (Debian's busybox-static) as
 * /bin/sh and an `mpirun` script answering `--version` as Open MPI's does, so the test does not
 * need a 100 MB Open MPI layer to show that the command runs from the stack's root.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI } from './helpers/cli.js';
import { missing, skipSuite } from './helpers/probe.js';
import { removeDir, run, tempDir, type RunResult } from './helpers/tmp.js';
import { ensureUser, runAs, type TestUser } from './helpers/users.js';

interface Ctx {
  dir: string;
  work: string;
  user: TestUser;
}

const BUSYBOX = '/bin/busybox';

function strata(ctx: Ctx, args: string[]): RunResult {
  return run(process.execPath, [CLI, '--store', join(ctx.dir, 'store'), ...args], { cwd: ctx.work });
}

function asUser(ctx: Ctx, args: string[]): RunResult {
  return runAs(ctx.user, process.execPath, [CLI, '--store', join(ctx.dir, 'store'), ...args], { cwd: ctx.work });
}

const mounts = () => readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((l) => l.includes('strata-exec-')).length;

const why = missing({ tools: ['unshare', 'mount'], root: true, check: () => (existsSync(BUSYBOX) ? undefined : `${BUSYBOX} missing (busybox-static)`) });
if (why) skipSuite('strata exec', why);
else {
  const test = suite<Ctx>('strata exec');
  test.before((ctx) => {
    ctx.dir = tempDir('strata-exec-test-');
    chmodSync(ctx.dir, 0o755);
    const src = join(ctx.dir, 'src');
    for (const d of ['bin', 'usr/bin', 'proc', 'dev', 'sys', 'tmp', 'opt/mpi/bin']) mkdirSync(join(src, d), { recursive: true });
    copyFileSync(BUSYBOX, join(src, 'bin/busybox'));
    chmodSync(join(src, 'bin/busybox'), 0o755);
    symlinkSync('busybox', join(src, 'bin/sh'));
    writeFileSync(join(src, 'opt/mpi/bin/mpirun'), '#!/bin/sh\nif [ "$1" = --version ]; then echo "mpirun (Open MPI) 4.1.5"; echo "MPI_HOME=$MPI_HOME"; exit 0; fi\nexit 3\n', { mode: 0o755 });
    ctx.work = join(ctx.dir, 'work');
    mkdirSync(ctx.work);
    ctx.user = ensureUser('st-exec-user');
    const S = ['-q', 'store', 'import', 'mpi/openmpi-4.1', src, '--prepend', 'PATH=/opt/mpi/bin', '--setenv', 'MPI_HOME=/opt/mpi'];
    assert.is(strata(ctx, S).code, 0);
    for (const args of [['compose', 'add', 'mpi/openmpi-4.1'], ['compose', 'sandbox', 'sb'], ['compose', 'squash', 'img.sqfs']]) {
      const r = strata(ctx, ['-q', ...args]);
      assert.is(r.code, 0, r.stderr.toString());
    }
    chmodSync(ctx.work, 0o755);
  });
  test.after((ctx) => removeDir(ctx.dir));

  test('root: mpirun --version from the sandbox and the image, with the stack\'s environment', (ctx) => {
    for (const target of ['sb', 'img.sqfs']) {
      const r = strata(ctx, ['exec', target, '--', 'mpirun', '--version']);
      assert.is(r.code, 0, `${target}: ${r.stderr}`);
      assert.is(r.stdout.toString(), 'mpirun (Open MPI) 4.1.5\nMPI_HOME=/opt/mpi\n', `${target}: found on the stack's PATH`);
    }
    assert.is(strata(ctx, ['exec', 'sb', '--', 'mpirun', 'oops']).code, 3, 'the command\'s exit status');
    assert.is(strata(ctx, ['exec', 'sb', '--', 'sh', '-c', 'test -f /bin/busybox && test ! -e /etc/os-release']).code, 0, 'the root is the stack\'s');
    assert.is(mounts(), 0, 'the image is unmounted');
  });

  test('a user: the sandbox through a user namespace, the image through squashfuse', (ctx) => {
    const r = asUser(ctx, ['exec', 'sb', '--', 'mpirun', '--version']);
    if (r.code !== 0 && /user namespace/.test(r.stderr.toString())) {
      console.log(`  skip: ${r.stderr.toString().trim()}`);
      return;
    }
    assert.is(r.code, 0, r.stderr.toString());
    assert.match(r.stdout.toString(), 'mpirun (Open MPI) 4.1.5');
    assert.is(asUser(ctx, ['exec', 'sb', '--', 'sh', '-c', 'echo $(busybox id -u)']).stdout.toString().trim(), '0', 'root inside, the user outside');
    const img = asUser(ctx, ['exec', 'img.sqfs', '--', 'mpirun', '--version']);
    if (img.code === 1 && /cannot mount/.test(img.stderr.toString())) {
      console.log(`  skip the image as a user: ${img.stderr.toString().trim()}`);
      assert.is(img.stderr.toString().trimEnd().split('\n').length, 1, 'one line');
    } else {
      assert.is(img.code, 0, img.stderr.toString());
      assert.match(img.stdout.toString(), 'mpirun (Open MPI) 4.1.5');
    }
  });

  test('terminated during the run: the image is unmounted; no target and no command are one line each', async (ctx) => {
    const child = spawn(process.execPath, [CLI, '--store', join(ctx.dir, 'store'), 'exec', 'img.sqfs', '--', 'sh', '-c', 'sleep 30'], { cwd: ctx.work, stdio: 'ignore' });
    for (let i = 0; i < 100 && mounts() === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.is(mounts(), 1, 'mounted while running');
    child.kill('SIGTERM');
    await new Promise((r) => child.on('close', r));
    for (let i = 0; i < 40 && mounts() > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.is(mounts(), 0, 'unmounted after SIGTERM');
    for (const [args, re] of [[['exec', 'nothere', '--', 'true'], /nothere does not exist/], [['exec', 'strata.lock', '--', 'true'], /neither a directory nor a SquashFS or EROFS image/]] as const) {
      const r = strata(ctx, [...args]);
      assert.is(r.code, 1);
      assert.is(r.stderr.toString().trimEnd().split('\n').length, 1);
      assert.match(r.stderr.toString(), re);
    }
  });

  test.run();
}
