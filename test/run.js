#!/usr/bin/env node
// Runs the compiled uvu suites (dist/test/**/*.test.js), one process per file so a crash or a
// leaked handle in one suite cannot hide another's result, as many at once as there are cores
// (STRATA_TEST_JOBS overrides), and closes with the totals line "N passed, N failed".
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('../dist/test/', import.meta.url).pathname;
const only = process.argv.slice(2);
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js') && (only.length === 0 || only.some((o) => p.includes(o)))) files.push(p);
  }
})(root);

// The longest suites start first (1-3 minutes each here), so that the last to finish are short
// ones and the workers end together: in path order one worker sat idle for a minute at the end.
const LONGEST = ['scale-link-memory', 'image-identity', 'install', 'scale-acl-memory', 'scale-memory', 'lmod/differential', 'tree-race', 'remote-roundtrip'];
const rank = (file) => {
  const i = LONGEST.findIndex((name) => file.endsWith(`/${name}.test.js`));
  return i < 0 ? LONGEST.length : i;
};
files.sort((a, b) => rank(a) - rank(b));

let passed = 0;
let failed = 0;
let skipped = 0;
const broken = [];

function runOne(file) {
  return new Promise((resolve) => {
    const start = Date.now();
    const child = spawn(process.execPath, [file], { env: { ...process.env, FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (status) => resolve({ file, status, out, secs: ((Date.now() - start) / 1000).toFixed(1) }));
  });
}

function report({ file, status, out, secs }) {
  const name = file.slice(root.length);
  const total = Number(/Total:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const ok = Number(/Passed:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const skip = Number(/Skipped:\s+(\d+)/.exec(out)?.[1] ?? 0);
  // uvu's Total leaves skipped tests out. A file that ran nothing failed, unless it skipped
  // its suites by a capability probe.
  const bad = status !== 0 || (total === 0 && skip === 0) ? Math.max(total - ok, 1) : total - ok;
  passed += ok;
  failed += bad;
  skipped += skip;
  process.stdout.write(`${bad > 0 ? 'FAIL' : 'ok  '} ${name}  ${ok}/${total}${skip ? ` (${skip} skipped)` : ''}  ${secs}s\n`);
  if (bad === 0) {
    for (const line of out.split('\n')) if (line.startsWith('skip: ')) process.stdout.write(`    ${line}\n`);
  }
  if (bad > 0) {
    broken.push(name);
    process.stdout.write(out.split('\n').map((l) => `    ${l}`).join('\n') + '\n');
  }
}

const jobs = Math.max(1, Number(process.env.STRATA_TEST_JOBS) || availableParallelism());
const queue = [...files];
await Promise.all(
  Array.from({ length: Math.min(jobs, queue.length) }, async () => {
    while (queue.length > 0) report(await runOne(queue.shift()));
  }),
);
if (broken.length) process.stdout.write(`\nfailed suites: ${broken.join(', ')}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exit(failed > 0 || files.length === 0 ? 1 : 0);
