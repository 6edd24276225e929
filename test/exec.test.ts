/**
 * `strata exec TARGET -- CMD…` through the CLI, as root and as a real user: `mpirun --version`
 * from the test stack's sandbox and image (the stack plus the openmpi layer of
 * fixtures/mpi-layer.ts: a static busybox and a `#!/bin/sh` mpirun), the stack's environment
 * as the host's sh computes it from /.strata/env.sh, the exit status passed on, the binds, a
 * read-only root, EROFS (mkfs.erofs of the sandbox), refusals in one line, and cleanup: after
 * every run, also one ended by SIGTERM or SIGINT, nothing stays mounted (findmnt, losetup -j,
 * no squashfuse left) and strata's temp directory is empty.
 *
 * Where /dev/fuse is not open to users (mode 0600), the user's image run is first checked to
 * fail with its one-line error, then run again in a private mount namespace where a 0666 copy
 * of the fuse device node is bound over /dev/fuse (the usual Debian mode), host untouched.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { withCommandSeparator } from '../cli/commands/exec.js';
import { envScript } from '../compose/embedded.js';
import { applyEnv, defaultBinds, userNamespaceHint, userNamespacesOff, within } from '../compose/run/plan.js';
import { makeMountPoint, resolveInRoot } from '../compose/run/root-path.js';
import type { EnvOp } from '../store/index.js';
import { join } from 'node:path';
import { makeStack } from './fixtures/stack.js';
import { isStaticElf, makeMpiLayer, MPI } from './fixtures/mpi-layer.js';
import { importStack, STACK_ORDER } from './image-harness.js';
import { loud, strata, strataArgv, strataOk, type StrataOptions, type Workspace } from './helpers/cli.js';
import { missing, onPath, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, run, tempDir } from './helpers/tmp.js';
import { asUser, canSwitchUsers, ensureUser, runAs, userEnv, type TestUser } from './helpers/users.js';

const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p) && isStaticElf(p));

// ---------------------------------------------------------------------------------------
// In-process: the decisions (run/plan.ts), the paths in a hostile tree (run/root-path.ts),
// the command line. No root needed.

const Plan = suite('exec: plan, hostile paths, command line');
let ptmp = '';
Plan.before.each(() => {
  ptmp = tempDir('strata-exec-plan-');
});
Plan.after.each(() => {
  removeDir(ptmp);
});

Plan("the stack's env is what /.strata/env.sh makes of the caller's, by the host's sh", () => {
  const ops: EnvOp[] = [
    { op: 'prepend', var: 'PATH', value: '/opt/a/bin' },
    { op: 'append', var: 'PATH', value: '/opt/z bin' },
    { op: 'prepend', var: 'UNSET_BEFORE', value: "it's" },
    { op: 'append', var: 'EMPTY_BEFORE', value: 'x:y' },
    { op: 'set', var: 'LM_LICENSE_FILE', value: '$HOME/"q"' },
    { op: 'prepend', var: 'LM_LICENSE_FILE', value: '/first' },
  ];
  const base = { PATH: '/usr/bin:/bin', EMPTY_BEFORE: '', LM_LICENSE_FILE: 'old' };
  const script = join(ptmp, 'env.sh');
  writeFileSync(script, envScript(ops));
  const vars = ['PATH', 'UNSET_BEFORE', 'EMPTY_BEFORE', 'LM_LICENSE_FILE'];
  const byShell = mustRun('env', ['-i', ...Object.entries(base).map(([k, v]) => `${k}=${v}`), 'sh', '-c', `. "$1"; printf '%s\\0' ${vars.map((v) => `"$${v}"`).join(' ')}`, 'sh', script]);
  const ours = applyEnv(base, ops);
  assert.equal(vars.map((v) => ours[v]), byShell.stdout.toString('utf8').split('\0').slice(0, vars.length));
  assert.is(ours.PATH, '/opt/a/bin:/usr/bin:/bin:/opt/z bin');
});

Plan('binds: ch-run set, $HOME and the working directory unless / or already inside a bind', () => {
  const dirs = new Set(['/dev', '/proc', '/sys', '/tmp', '/home/u', '/home/u/proj', '/work', '/']);
  const kind = (p: string) => (dirs.has(p) ? ('dir' as const) : p === '/etc/hosts' ? ('file' as const) : undefined);
  const dsts = (home: string | undefined, cwd: string) => defaultBinds({ home, cwd, kind }).map((b) => `${b.kind}:${b.dst}:${b.optional ? 'opt' : 'req'}`);
  const base = ['dir:/dev:req', 'dir:/proc:req', 'dir:/sys:req', 'dir:/tmp:req', 'file:/etc/hosts:opt'];
  assert.equal(dsts('/home/u', '/work'), [...base, 'dir:/home/u:opt', 'dir:/work:opt']);
  assert.equal(dsts('/home/u', '/home/u/proj'), [...base, 'dir:/home/u:opt']);
  assert.equal(dsts('/', '/'), base, 'never the host / over the root');
  assert.equal(dsts(undefined, '/tmp'), base);
  assert.equal(dsts('/missing', '/work'), [...base, 'dir:/work:opt']);
  assert.ok(within('/tmp/x', '/tmp') && within('/tmp', '/tmp') && !within('/tmpx', '/tmp') && !within('/..x', '/'.concat('..x/y')));
});

Plan('user namespaces: the sysctls that switch them off', () => {
  const host = (files: Record<string, string>) => (f: string) => files[f];
  assert.is(userNamespacesOff(host({})), undefined);
  assert.is(userNamespacesOff(host({ '/proc/sys/user/max_user_namespaces': '15000\n', '/proc/sys/kernel/unprivileged_userns_clone': '1\n' })), undefined);
  assert.match(userNamespacesOff(host({ '/proc/sys/kernel/unprivileged_userns_clone': '0\n' }))!, /unprivileged_userns_clone is 0/);
  assert.match(userNamespacesOff(host({ '/proc/sys/user/max_user_namespaces': '0\n' }))!, /max_user_namespaces is 0/);
  assert.match(userNamespaceHint(host({ '/proc/sys/kernel/apparmor_restrict_unprivileged_userns': '1\n' })), /AppArmor/);
});

Plan('hostile tree: links and .. never lead a lookup or a mount point out of the root', () => {
  const lower = join(ptmp, 'lower');
  const upper = join(ptmp, 'upper');
  // A host path that must stay absent: a link in the tree names it.
  const outside = `/strata-exec-test-${process.pid}`;
  for (const d of [lower, upper, join(lower, 'etc'), join(lower, 'var/tmp')]) mkdirSync(d, { recursive: true });
  writeFileSync(join(lower, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
  writeFileSync(join(lower, 'afile'), '');
  symlinkSync(outside, join(lower, 'home')); // absolute: means <root>/<outside path>, not the host's
  symlinkSync('../../../../..', join(lower, 'up')); // .. stops at the root
  symlinkSync('/var/tmp', join(lower, 'tmp'));
  symlinkSync('loop', join(lower, 'loop'));
  chmodSync(join(lower, 'etc'), 0o750);

  assert.is(makeMountPoint(lower, upper, '/home/u', 'dir'), `${outside}/u`);
  assert.ok(existsSync(join(upper, outside, 'u')), 'made in the upper layer, under the link target taken inside the root');
  assert.not.ok(existsSync(outside), 'nothing made at the host path the link names');
  assert.is(makeMountPoint(lower, upper, '/tmp', 'dir'), '/var/tmp', 'an existing directory: nothing to make');
  assert.not.ok(existsSync(join(upper, 'var')));
  assert.is(makeMountPoint(lower, upper, '/up/up/proc', 'dir'), '/proc');
  assert.is(makeMountPoint(lower, upper, '/etc/hosts', 'file'), '/etc/hosts');
  assert.is(statSync(join(upper, 'etc')).mode & 0o7777, 0o750, 'a directory made over the tree has its mode');
  assert.ok(statSync(join(upper, 'etc/hosts')).isFile());
  assert.is(makeMountPoint(lower, upper, '/loop/x', 'dir'), undefined, 'a link loop');
  assert.is(makeMountPoint(lower, upper, '/afile/x', 'dir'), undefined, 'through a file');
  assert.is(makeMountPoint(lower, upper, '/etc/passwd', 'dir'), undefined, 'a file where a directory is wanted');
  assert.is(makeMountPoint(lower, upper, '/etc', 'file'), undefined, 'a directory where a file is wanted');

  assert.is(resolveInRoot(lower, '/up/etc/passwd')?.host, join(lower, 'etc/passwd'));
  assert.is(resolveInRoot(lower, '/home/u'), undefined, 'lookups never make anything');
  assert.is(resolveInRoot(lower, '/tmp')?.inside, '/var/tmp');
  assert.is(resolveInRoot(lower, '/loop'), undefined);
});

Plan('command line: the -- before the command is put in when missing', () => {
  const program = new Command('strata').option('--store <dir>').option('--json').option('-q, --quiet');
  const sep = (...args: string[]) => withCommandSeparator(program, ['node', 'strata', ...args]).slice(2);
  assert.equal(sep('exec', 'img', 'mpirun', '--version'), ['exec', 'img', '--', 'mpirun', '--version']);
  assert.equal(sep('--store', 'exec', '-q', 'exec', 'img', 'sh', '-c', 'x'), ['--store', 'exec', '-q', 'exec', 'img', '--', 'sh', '-c', 'x']);
  assert.equal(sep('--store=s', 'exec', 'img', '--', 'ls', '-l'), ['--store=s', 'exec', 'img', '--', 'ls', '-l']);
  assert.equal(sep('exec', 'img'), ['exec', 'img']);
  assert.equal(sep('exec', '--help'), ['exec', '--help']);
  assert.equal(sep('compose', 'exec', 'a', 'b'), ['compose', 'exec', 'a', 'b']);
});

Plan.run();

const why =
  missing({ tools: ['unshare', 'nsenter', 'mount', 'findmnt', 'losetup'], root: true }) ??
  (BUSYBOX ? undefined : 'no static busybox (install busybox-static)');

if (why) {
  skipSuite('exec', why);
} else {
  const Exec = suite('exec');
  let tmp = '';
  let o: Workspace;
  let sandbox = '';
  let image = '';
  /** strata's TMPDIR for root runs (its stage directories): must be empty after every run. */
  let rootTmp = '';

  Exec.before(
    loud(() => {
      tmp = tempDir('strata-exec-');
      chmodSync(tmp, 0o755);
      o = { cwd: join(tmp, 'work'), store: join(tmp, 'store') };
      mkdirSync(o.cwd);
      rootTmp = join(tmp, 'root-tmp');
      mkdirSync(rootTmp);
      const stack = makeStack(join(tmp, 'stack'));
      strataOk(['-q', 'store', 'import', MPI.fullName, makeMpiLayer(join(tmp, 'mpi'), BUSYBOX!), ...MPI.opts], o);
      importStack(o, stack, STACK_ORDER, [MPI.fullName]);
      sandbox = join(tmp, 'sandbox');
      image = join(tmp, 'stack.sqfs');
      strataOk(['-q', 'compose', 'sandbox', sandbox], o);
      strataOk(['-q', 'compose', 'squash', image], o);
    }),
  );

  Exec.after(() => {
    // A failed test may have left a mount below tmp (the assertion says so): detach it first.
    const mounts = run('findmnt', ['-rn', '-o', 'TARGET']).stdout.toString('utf8').split('\n');
    for (const m of mounts.filter((m) => m.startsWith(`${tmp}/`)).reverse()) run('umount', ['-l', m]);
    removeDir(tmp);
  });

  /** strata as root in o.cwd, TMPDIR = rootTmp. */
  const rootRun = (env: Record<string, string> = {}): StrataOptions => ({ ...o, env: { TMPDIR: rootTmp, ...env } });

  /** Nothing mounted from `img` or below `tmpDir`, no loop device on `img`, `tmpDir` empty. */
  function assertClean(tmpDir: string, img = image): void {
    const mounts = mustRun('findmnt', ['-rn', '-o', 'TARGET']).stdout.toString('utf8');
    assert.not.ok(mounts.includes(tmpDir), `a mount below ${tmpDir} is left:\n${mounts}`);
    assert.is(mustRun('losetup', ['-j', img]).stdout.toString('utf8'), '', 'a loop device still holds the image');
    assert.equal(readdirSync(tmpDir), [], "strata's stage directory is left behind");
    const fuse = mustRun('ps', ['-eo', 'args']).stdout.toString('utf8').split('\n').filter((l) => l.includes('squashfuse') && l.includes(img));
    assert.equal(fuse, [], 'a squashfuse is left');
  }

  /** What the host's sh makes of the sandbox's /.strata/env.sh, from the same starting env. */
  function envByHostSh(start: Record<string, string>): string {
    const script = '. "$1"; printf "%s|%s|%s" "$PATH" "$LM_LICENSE_FILE" "$LD_LIBRARY_PATH"';
    const argv = ['-i', ...Object.entries(start).map(([k, v]) => `${k}=${v}`), 'sh', '-c', script, 'sh', join(sandbox, '.strata/env.sh')];
    return mustRun('env', argv).stdout.toString('utf8');
  }
  const PRINT_ENV = ['sh', '-c', 'printf "%s|%s|%s" "$PATH" "$LM_LICENSE_FILE" "$LD_LIBRARY_PATH"'];
  const START = { PATH: '/usr/bin:/bin', LD_LIBRARY_PATH: '', LM_LICENSE_FILE: '' };

  Exec('as root: mpirun --version from the sandbox and the image, the stack env, the exit status', () => {
    for (const target of [sandbox, image]) {
      const r = strata(['exec', target, '--', 'mpirun', '--version'], rootRun());
      assert.is(r.code, 0, `${target}: ${r.stderr}`);
      assert.is(r.stdout.toString('utf8').split('\n')[0], MPI.versionLine);
      assert.is(r.stderr, '', 'no warning, no note');
      assertClean(rootTmp);

      const env = strata(['exec', target, '--', ...PRINT_ENV], rootRun(START));
      assert.is(env.code, 0, env.stderr);
      assert.is(env.stdout.toString('utf8'), envByHostSh(START));
      assert.match(env.stdout.toString('utf8'), /^\/opt\/mpi\/bin:\/opt\/app\/bin:\/bin:\/usr\/bin:\/bin\|\/opt\/lic\/LICENSE\|\/opt\/app\/lib$/);

      const id = strata(['exec', target, '--', 'busybox', 'id', '-u'], rootRun());
      assert.is(id.stdout.toString('utf8').trim(), '0');
      const st = strata(['exec', target, '--', 'sh', '-c', 'exit 7'], rootRun());
      assert.is(st.code, 7, 'the command status is strata exit status');
      assert.is(st.stderr, '');
      assertClean(rootTmp);
    }
  });

  Exec('as root: the root is read-only; /tmp, $HOME and the working directory are the host', () => {
    for (const target of [sandbox, image]) {
      const ro = strata(['exec', target, '--', 'sh', '-c', 'echo x > /made-in-root'], rootRun());
      assert.is.not(ro.code, 0);
      assert.match(ro.stderr, /Read-only file system/);
      const w = strata(['exec', target, '--', 'sh', '-c', 'pwd; echo inside > made-inside; busybox ls -d "$HOME"; busybox head -1 /proc/self/status; busybox ls /dev/null'], rootRun());
      assert.is(w.code, 0, w.stderr);
      const lines = w.stdout.toString('utf8').trim().split('\n');
      assert.is(lines[0], o.cwd, 'the working directory is the host one');
      assert.is(readFileSync(join(o.cwd, 'made-inside'), 'utf8'), 'inside\n', 'written through to the host');
      assert.is(lines[1], process.env.HOME ?? '/root');
      assert.match(lines[2]!, /^Name:\s+busybox$/, '/proc is there');
      assert.is(lines[3], '/dev/null');
    }
    assert.not.ok(existsSync(join(sandbox, 'made-in-root')));
    assertClean(rootTmp);
  });

  Exec('as root: an EROFS image made by mkfs.erofs from the sandbox', () => {
    if (!onPath('mkfs.erofs')) {
      process.stdout.write('skip: exec: EROFS: mkfs.erofs not installed\n');
      return;
    }
    const erofs = join(tmp, 'stack.erofs');
    mustRun('mkfs.erofs', ['--quiet', erofs, sandbox]);
    const r = strata(['exec', erofs, '--', 'mpirun', '--version'], rootRun());
    assert.is(r.code, 0, r.stderr);
    assert.is(r.stdout.toString('utf8').split('\n')[0], MPI.versionLine);
    const env = strata(['exec', erofs, '--', ...PRINT_ENV], rootRun(START));
    assert.is(env.stdout.toString('utf8'), envByHostSh(START));
    assertClean(rootTmp, erofs);
  });

  Exec('refusals: one line, the right status, nothing left', () => {
    const notImage = join(tmp, 'not-an-image');
    mustRun('cp', [join(sandbox, '.strata/lock.json'), notImage]);
    const corrupt = join(tmp, 'corrupt.sqfs');
    mustRun('sh', ['-c', 'head -c 4096 "$1" > "$2"; head -c 100000 /dev/zero >> "$2"', 'sh', image, corrupt]);
    const cases: Array<[string[], number, RegExp]> = [
      [['exec', join(tmp, 'nothing'), '--', 'true'], 1, /does not exist/],
      [['exec', notImage, '--', 'true'], 1, /neither a sandbox directory nor a SquashFS or EROFS image/],
      [['exec', corrupt, '--', 'true'], 1, /^strata: cannot mount .*corrupt\.sqfs: /],
      [['exec', sandbox], 2, /exec needs a command/],
      [['exec', image, '--', 'no-such-command'], 127, /^strata: no-such-command: command not found \(PATH inside is /],
      [['exec', sandbox, '--', '/opt/mpi/nothing'], 127, /no such file/],
      [['exec', sandbox, '--', '/etc/passwd'], 126, /is not executable/],
    ];
    for (const [args, code, msg] of cases) {
      const r = strata(args, rootRun());
      assert.is(r.code, code, `${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, /^strata: [^\n]+\n$/, `${args.join(' ')}: one line: ${r.stderr}`);
      assert.match(r.stderr, msg, `${args.join(' ')}: ${r.stderr}`);
      assertClean(rootTmp);
    }
    // --json: an error is one document on stdout; a run prints only what the command prints.
    const j = strata(['--json', 'exec', image, '--', 'no-such-command'], rootRun());
    assert.is(j.code, 127);
    assert.is((JSON.parse(j.stdout.toString('utf8')) as { error: { code: string } }).error.code, 'ERR_COMMAND_NOT_FOUND');
    const ok = strata(['--json', 'exec', image, '--', 'mpirun', '--version'], rootRun());
    assert.is(ok.stdout.toString('utf8').split('\n')[0], MPI.versionLine);
    assertClean(rootTmp);
  });

  /**
   * Starts `argv` (a strata exec of LONG), signals it once the command has started its sleeper.
   * Not at "started" alone: the shell prints it before it forks the sleeper, and a signal
   * relayed in between reaches the shell only (strata signals the processes there are). A
   * shell acts on SIGINT only once its foreground child is gone, and busybox's ash, caught as
   * it forks, waits for the child it forks next: that run waits out the sleep, as it would
   * after a terminal's ^C at that moment. Signalled at "started", this test failed once in
   * a CI run under load (strata still waiting at the 120 s guard).
   */
  function interrupted(argv: string[], env: Record<string, string>, signal: NodeJS.Signals): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(argv[0]!, argv.slice(1), { cwd: o.cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let sent = false;
      const guard = setTimeout(() => child.kill('SIGKILL'), 120_000);
      const send = (tries: number) => {
        if (sleepersLeft() > 0 || tries === 0) child.kill(signal);
        else setTimeout(() => send(tries - 1), 10);
      };
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString('utf8');
        if (!sent && stdout.includes('started')) {
          sent = true;
          send(1000);
        }
      });
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      child.on('close', (code) => {
        clearTimeout(guard);
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** The command of an interrupted run: it starts a grandchild that would outlive a plain kill of sh. */
  const LONG = ['sh', '-c', 'echo started; busybox sleep 677; echo not-reached'];

  function sleepersLeft(): number {
    let n = 0;
    for (const p of readdirSync('/proc')) {
      if (!/^\d+$/.test(p)) continue;
      try {
        if (readFileSync(`/proc/${p}/cmdline`, 'utf8') === 'busybox\0sleep\x00677\0') n++;
      } catch {
        // gone
      }
    }
    return n;
  }

  Exec('as root: SIGTERM and SIGINT end the command, strata exits 128+N, the image is unmounted', async () => {
    for (const [signal, status] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
      for (const target of [image, sandbox]) {
        const r = await interrupted(strataArgv(['exec', target, '--', ...LONG]), { TMPDIR: rootTmp }, signal);
        assert.is(r.code, status, `${signal} ${target}: ${r.stderr}`);
        assert.not.ok(r.stdout.includes('not-reached'));
        assert.is(sleepersLeft(), 0, 'what the command started is gone');
        assertClean(rootTmp);
      }
    }
  });

  // -------------------------------------------------------------------------------------
  // As a user.

  let user: TestUser | undefined;
  let userWork = '';
  let userTmp = '';
  const userWhy = (): string | undefined => {
    if (!canSwitchUsers()) return 'cannot switch users';
    user ??= ensureUser('st-exec-user');
    const ns = runAs(user, 'unshare', ['--user', '--map-root-user', '--mount', 'true']);
    if (ns.code !== 0) return `no unprivileged user namespaces here (${ns.stderr.trim()})`;
    return undefined;
  };

  function userSetup(u: TestUser): void {
    if (userWork) return;
    userWork = join(tmp, 'user-work');
    userTmp = join(tmp, 'user-tmp');
    for (const d of [userWork, userTmp]) {
      mkdirSync(d);
      chownSync(d, u.uid, u.gid);
    }
  }

  /** The argv prefix that opens /dev/fuse to users, in a private mount namespace (before the switch to a user). */
  function openFuse(): string[] {
    const node = join(tmp, 'fuse-node');
    if (!existsSync(node)) {
      const rdev = statSync('/dev/fuse').rdev;
      const [major, minor] = [(rdev >> 8) & 0xfff, (rdev & 0xff) | ((rdev >> 12) & 0xfff00)];
      mustRun('mknod', ['-m', '0666', node, 'c', String(major), String(minor)]);
    }
    return ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount --bind "$1" /dev/fuse && shift && exec "$@"', 'sh', node];
  }

  /** strata as `u` in its working directory, TMPDIR = userTmp; `fuse` opens /dev/fuse to it first. */
  function userRun(u: TestUser, opts: { fuse?: boolean; env?: Record<string, string> } = {}): StrataOptions {
    return { store: o.store, cwd: userWork, as: u, prefix: opts.fuse ? openFuse() : [], env: { TMPDIR: userTmp, ...opts.env } };
  }

  Exec('as a user: mpirun --version from the sandbox, as the user, with the stack env', () => {
    const w = userWhy();
    if (w) {
      process.stdout.write(`skip: exec as a user: ${w}\n`);
      return;
    }
    const u = user!;
    userSetup(u);
    const r = strata(['exec', sandbox, '--', 'mpirun', '--version'], userRun(u));
    assert.is(r.code, 0, r.stderr);
    assert.is(r.stdout.toString('utf8').split('\n')[0], MPI.versionLine);
    assert.is(r.stderr, '');
    const id = strata(['exec', sandbox, '--', 'sh', '-c', 'busybox id -u; busybox id -g; pwd; echo $HOME; echo hi > from-user'], userRun(u));
    assert.is(id.code, 0, id.stderr);
    assert.equal(id.stdout.toString('utf8').trim().split('\n'), [String(u.uid), String(u.gid), userWork, u.home]);
    assert.is(statSync(join(userWork, 'from-user')).uid, u.uid, 'files made inside belong to the user');
    const env = strata(['exec', sandbox, '--', ...PRINT_ENV], userRun(u, { env: START }));
    assert.is(env.stdout.toString('utf8'), envByHostSh(START));
    const st = strata(['exec', sandbox, '--', 'sh', '-c', 'exit 9'], userRun(u));
    assert.is(st.code, 9);
    assertClean(userTmp);
  });

  Exec('as a user: mpirun --version from the image through squashfuse, unmounted after, also after SIGTERM', async () => {
    const w = userWhy() ?? missing({ tools: ['squashfuse', 'fusermount3', 'mknod'] });
    if (w) {
      process.stdout.write(`skip: exec an image as a user: ${w}\n`);
      return;
    }
    const u = user!;
    userSetup(u);
    const fuseOpen = runAs(u, 'sh', ['-c', 'test -r /dev/fuse && test -w /dev/fuse']).code === 0;
    if (!fuseOpen) {
      const r = strata(['exec', image, '--', 'mpirun', '--version'], userRun(u));
      assert.is(r.code, 1);
      assert.match(r.stderr, /^strata: cannot mount \S+stack\.sqfs without root: \/dev\/fuse is not open to you \([^\n]+\)\n$/);
      assertClean(userTmp);
    }
    const fuse = !fuseOpen;
    const r = strata(['exec', image, '--', 'mpirun', '--version'], userRun(u, { fuse }));
    assert.is(r.code, 0, r.stderr);
    assert.is(r.stdout.toString('utf8').split('\n')[0], MPI.versionLine);
    const id = strata(['exec', image, '--', 'sh', '-c', 'busybox id -u; pwd'], userRun(u, { fuse }));
    assert.equal(id.stdout.toString('utf8').trim().split('\n'), [String(u.uid), userWork]);
    const env = strata(['exec', image, '--', ...PRINT_ENV], userRun(u, { fuse, env: START }));
    assert.is(env.stdout.toString('utf8'), envByHostSh(START));
    assertClean(userTmp);

    const prefix = [...(fuse ? openFuse() : []), ...asUser(u)];
    const t = await interrupted([...prefix, ...strataArgv(['exec', image, '--', ...LONG])], { ...userEnv(u), TMPDIR: userTmp }, 'SIGTERM');
    assert.is(t.code, 143, t.stderr);
    assert.is(sleepersLeft(), 0);
    assertClean(userTmp);
  });

  Exec('as a user: an EROFS image needs erofsfuse', () => {
    const w = userWhy() ?? (onPath('mkfs.erofs') ? undefined : 'mkfs.erofs not installed') ?? (onPath('erofsfuse') ? 'erofsfuse is installed' : undefined);
    if (w) {
      process.stdout.write(`skip: exec EROFS as a user without erofsfuse: ${w}\n`);
      return;
    }
    const u = user!;
    userSetup(u);
    const erofs = join(tmp, 'user.erofs');
    mustRun('mkfs.erofs', ['--quiet', erofs, sandbox]);
    const r = strata(['exec', erofs, '--', 'true'], userRun(u));
    assert.is(r.code, 1);
    assert.match(r.stderr, /^strata: cannot mount the EROFS image \S+ without root: erofsfuse is not installed \([^\n]+\)\n$/);
    assertClean(userTmp, erofs);
  });

  Exec.run();
}
