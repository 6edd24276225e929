/**
 * No write outside the target under races (spec/compose.md, "Tree writer"): an unprivileged
 * attacker who can write the target's parent (a group-writable project directory) swaps path
 * components for symlinks to a root-owned sentinel tree, in a loop, while root runs
 * `compose sandbox` and `unsquash` into targets there; and plants symlinks under every name a
 * temp file of `compose squash`, `rebuild -o` or `store export` could take in OUT's directory.
 * Afterwards the sentinel tree is unchanged (content, mode, owner) and OUT is a regular file.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { strata, type Workspace } from './helpers/cli.js';
import { missing, skipSuite } from './helpers/probe.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { asUser, ensureUser, type TestUser } from './helpers/users.js';

interface Ctx {
  dir: string;
  store: string;
  work: string;
  sentinel: string;
  project: string;
  attacker: TestUser;
}

const ROUNDS = 50;

function fingerprint(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      out.push(`${rel}${name} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.isFile() ? createHash('sha256').update(readFileSync(p)).digest('hex') : ''}`);
      if (st.isDirectory()) walk(p, `${rel}${name}/`);
    }
  };
  walk(root, '');
  return out;
}

/** The suite's store and working directory; a minute per run. */
const at = (ctx: Ctx): Workspace => ({ store: ctx.store, cwd: ctx.work, timeout: 60_000 });

const why = missing({ tools: ['setpriv', 'useradd', 'sh'], root: true });
if (why) skipSuite('no write outside the target under races', why);
else {
  const test = suite<Ctx>('no write outside the target under races');
  test.before((ctx) => {
    ctx.dir = tempDir('strata-race-');
    chmodSync(ctx.dir, 0o755);
    ctx.attacker = ensureUser('st-race-attacker');
    // The sentinel: root's, 0700 dirs and 0600 files, that the attacker can name but not enter.
    ctx.sentinel = join(ctx.dir, 'sentinel');
    mkdirSync(join(ctx.sentinel, 'sub'), { recursive: true });
    writeFileSync(join(ctx.sentinel, 'secret'), 'root only\n', { mode: 0o600 });
    writeFileSync(join(ctx.sentinel, 'sub', 'f'), 'deep\n', { mode: 0o600 });
    chmodSync(ctx.sentinel, 0o700);
    // A small stack: directories several levels deep, so there are components to swap.
    const src = join(ctx.dir, 'src');
    for (let i = 0; i < 6; i++) {
      mkdirSync(join(src, `d${i}`, 'a', 'b'), { recursive: true });
      for (let j = 0; j < 10; j++) writeFileSync(join(src, `d${i}`, 'a', 'b', `f${j}`), `${i} ${j}\n`, { mode: 0o4755 & 0o755 });
      symlinkSync('a/b', join(src, `d${i}`, 'link'));
    }
    ctx.store = join(ctx.dir, 'store');
    ctx.work = join(ctx.dir, 'work');
    mkdirSync(ctx.work);
    assert.is(strata(['-q', 'store', 'import', 'race/1', src], at(ctx)).code, 0);
    assert.is(strata(['-q', 'compose', 'add', 'race/1'], at(ctx)).code, 0);
    assert.is(strata(['-q', 'compose', 'squash', join(ctx.work, 'race.sqfs')], at(ctx)).code, 0);
    // The project directory: the attacker's, writable by them.
    ctx.project = join(ctx.dir, 'project');
    mkdirSync(ctx.project);
    chownSync(ctx.project, ctx.attacker.uid, ctx.attacker.gid);
  });
  test.after((ctx) => removeDir(ctx.dir));

  test(`${ROUNDS} rounds of sandbox and unsquash while the attacker swaps components for symlinks`, async (ctx) => {
    const before = fingerprint(ctx.sentinel);
    // The attacker: every path under the project (targets, private build directories, their
    // subdirectories) is moved aside and replaced by a symlink to the sentinel, over and over.
    const script = `
      while :; do
        for p in "$1"/* "$1"/.[!.]* "$1"/*/* "$1"/.[!.]*/* "$1"/*/*/* "$1"/.[!.]*/*/*; do
          [ -e "$p" ] || [ -L "$p" ] || continue
          [ -L "$p" ] && continue
          mv -f "$p" "$p.moved" 2>/dev/null && ln -sfn "$2" "$p" 2>/dev/null
        done
      done`;
    const [cmd, ...args] = [...asUser(ctx.attacker), 'sh', '-c', script, 'sh', ctx.project, join(ctx.sentinel, 'sub')];
    const attacker = spawn(cmd!, args, { stdio: 'ignore' });
    let ok = 0;
    let failed = 0;
    try {
      for (let i = 0; i < ROUNDS; i++) {
        for (const args of [['compose', 'sandbox', join(ctx.project, `sb${i}`)], ['unsquash', join(ctx.work, 'race.sqfs'), join(ctx.project, `un${i}`)]]) {
          const r = strata(['-q', ...args], at(ctx));
          if (r.code === 0) ok++;
          else {
            failed++;
            assert.is(r.stderr.toString().trimEnd().split('\n').length, 1, `a refused build is one line: ${r.stderr}`);
          }
        }
      }
    } finally {
      attacker.kill('SIGKILL');
      await new Promise((r) => attacker.on('close', r));
    }
    console.log(`  ${ok} builds finished, ${failed} refused (the attacker got in their way)`);
    assert.equal(fingerprint(ctx.sentinel), before, 'the sentinel tree is unchanged');
  });

  test('symlinks planted under temp names in OUT\'s directory: nothing outside written, OUT a regular file', (ctx) => {
    const before = fingerprint(ctx.sentinel);
    const out = join(ctx.project, 'out');
    mkdirSync(out);
    chownSync(out, ctx.attacker.uid, ctx.attacker.gid);
    const victim = join(ctx.sentinel, 'secret');
    // Every name an older strata used, and a spread of pids around this one's.
    for (const name of ['stack.sqfs', 'again.sqfs', 'race.tar', 'strata.json', 'strata.lock']) {
      for (let pid = process.pid; pid < process.pid + 400; pid++) {
        for (const t of [`${name}.tmp-${pid}`, `.${name}.strata-${pid}`, `.${name}.tmp-${pid}`]) symlinkSync(victim, join(out, t));
      }
    }
    const lock = join(ctx.work, 'strata.lock');
    const runs = [
      ['compose', 'squash', join(out, 'stack.sqfs')],
      ['rebuild', lock, '-o', join(out, 'again.sqfs')],
      ['store', 'export', 'race/1', join(out, 'race.tar')],
    ];
    for (const args of runs) {
      const r = strata(['-q', ...args], at(ctx));
      assert.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      const target = args[args.length - 1]!;
      assert.ok(lstatSync(target).isFile(), `${target} is a regular file`);
    }
    assert.equal(fingerprint(ctx.sentinel), before, 'the victim is unchanged');
  });

  test.run();
}
