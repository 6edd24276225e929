/**
 * The `strata` command users run (cli/strata): how it starts Node. It sizes V8's thread pool
 * (its optimizing compiler and its collector's helpers) to the CPUs online less one, between 1
 * and Node's own 4, so that on a small machine V8's threads do not take the cores from
 * strata's own. (NODE_EXTRA_CA_CERTS, which it also holds back from Node's start, is tested
 * with the registry that needs it, in registry-tls.)
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { missing } from './helpers/probe.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const LAUNCHER = join(new URL('../../', import.meta.url).pathname, 'cli', 'strata');

/**
 * Runs the launcher's `--version` (through `wrap`, a command that runs what follows it) and
 * returns the options Node was started with, and what it printed on stderr.
 */
function startedWith(wrap: string[] = []): { execArgv: string[]; stderr: string } {
  const dir = tempDir('strata-launcher-');
  try {
    const report = join(dir, 'exec-argv.json');
    const preload = join(dir, 'report.cjs');
    // Loaded before the CLI, in its process: the options Node was started with.
    writeFileSync(preload, `require('node:fs').writeFileSync(${JSON.stringify(report)}, JSON.stringify(process.execArgv));\n`);
    const [cmd, ...args] = [...wrap, LAUNCHER, '--version'];
    const r = spawnSync(cmd!, args, { env: { ...process.env, NODE_OPTIONS: `--require=${preload}` }, timeout: 60_000 });
    assert.is(r.status, 0, r.stderr?.toString());
    return { execArgv: JSON.parse(readFileSync(report, 'utf8')) as string[], stderr: r.stderr.toString() };
  } finally {
    removeDir(dir);
  }
}

test('V8\'s thread pool is the CPUs online less one, at least 1, at most 4', () => {
  const online = cpus().length;
  const want = Math.min(4, Math.max(1, online - 1));
  assert.ok(startedWith().execArgv.includes(`--v8-pool-size=${want}`), `${online} CPUs online: --v8-pool-size=${want}`);
});

const noMounts = missing({ root: true, tools: ['unshare', 'mount'] });
test('where the count of CPUs cannot be read, Node\'s own pool of 4, and not a word on stderr', () => {
  if (noMounts) {
    console.log(`  skipped: ${noMounts} (a mount namespace hides /sys/devices/system/cpu)`);
    return;
  }
  // An empty tmpfs over the directory, in a mount namespace of the launcher's own.
  const { execArgv, stderr } = startedWith(['unshare', '-m', 'sh', '-c', 'mount -t tmpfs none /sys/devices/system/cpu && exec "$@"', 'hide']);
  assert.ok(execArgv.includes('--v8-pool-size=4'), execArgv.join(' '));
  assert.is(stderr, '');
});

test.run();
