/**
 * The README's install command, as a new user runs it: a fresh clone of this commit, an empty
 * HOME (no ~/.npmrc), an empty npm cache, npm's global prefix in a temp directory (so `npm link`
 * does not touch the machine). Afterwards `strata` is on PATH and runs. The README must carry
 * exactly this command (checked first), so the test and the documentation cannot drift apart.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { missing, skipSuite } from './helpers/probe.js';
import { removeDir, run, tempDir } from './helpers/tmp.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const INSTALL = `JOBS=max npm_config_nodedir="$(node -p 'require("path").resolve(process.execPath, "../..")')" npm ci \\\n  && npm link`;

const why = missing({
  tools: ['git', 'npm', 'make', 'g++'],
  check: () => (run('git', ['-C', ROOT, 'rev-parse', 'HEAD']).code === 0 ? undefined : 'not a git checkout'),
});
if (why) skipSuite('install from a fresh clone', why);
else {
  const test = suite('install from a fresh clone');
  test('the README install command works in a clean HOME and puts strata on PATH', () => {
    assert.ok(readFileSync(join(ROOT, 'README.md'), 'utf8').includes(INSTALL), 'README.md shows the command this test runs');
    const dir = tempDir('strata-install-');
    try {
      const home = join(dir, 'home');
      const prefix = join(dir, 'prefix');
      mkdirSync(home);
      mkdirSync(prefix);
      const clone = join(dir, 'strata');
      assert.is(run('git', ['clone', '-q', ROOT, clone]).code, 0, 'git clone');
      const env = { HOME: home, npm_config_cache: join(dir, 'cache'), npm_config_prefix: prefix, npm_config_audit: 'false', npm_config_fund: 'false', PATH: `${join(prefix, 'bin')}:${process.env.PATH}` };
      const r = run('bash', ['-c', INSTALL.replace('\\\n', '')], { cwd: clone, env, timeout: 600_000 });
      assert.is(r.code, 0, `install failed:\n${r.stdout.toString().slice(-2000)}\n${r.stderr.toString().slice(-3000)}`);
      const v = run('bash', ['-c', 'command -v strata && strata --version && strata compose --help'], { cwd: dir, env });
      assert.is(v.code, 0, v.stderr.toString());
      assert.match(v.stdout.toString(), `${join(prefix, 'bin', 'strata')}\n`);
      assert.match(v.stdout.toString(), /\n0\.\d+\.\d+\n/);
      // A command that writes the index: LevelDB's JavaScript is in the bundle, its native
      // binding found from the installed package.
      mkdirSync(join(dir, 'layer', 'bin'), { recursive: true });
      writeFileSync(join(dir, 'layer', 'bin', 'hello'), '#!/bin/sh\necho hello\n', { mode: 0o755 });
      assert.is(run('tar', ['-cf', join(dir, 'layer.tar'), '-C', join(dir, 'layer'), '.']).code, 0, 'tar');
      const store = join(dir, 'store');
      const w = run('bash', ['-c', `strata --store "$1" -q store import hello/1 "$2" && strata --store "$1" store ls`, 'sh', store, join(dir, 'layer.tar')], { cwd: dir, env });
      assert.is(w.code, 0, w.stderr.toString());
      assert.match(w.stdout.toString(), /^hello\/1 /m);
    } finally {
      removeDir(dir);
    }
  });
  test.run();
}
