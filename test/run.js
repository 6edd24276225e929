#!/usr/bin/env node
// Runs the compiled uvu suites (dist/test/**/*.test.js), one process per file so a crash or a
// leaked handle in one suite cannot hide another's result, and closes with the totals line
// "N passed, N failed".
import { spawnSync } from 'node:child_process';
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

let passed = 0;
let failed = 0;
let skipped = 0;
const broken = [];
for (const file of files) {
  const name = file.slice(root.length);
  const start = Date.now();
  const r = spawnSync(process.execPath, [file], { encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' }, maxBuffer: 64 << 20 });
  const out = `${r.stdout}${r.stderr}`;
  const total = Number(/Total:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const ok = Number(/Passed:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const skip = Number(/Skipped:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const bad = r.status !== 0 || total === 0 ? Math.max(total - ok - skip, 1) : total - ok - skip;
  passed += ok;
  failed += bad;
  skipped += skip;
  const secs = ((Date.now() - start) / 1000).toFixed(1);
  process.stdout.write(`${bad > 0 ? 'FAIL' : 'ok  '} ${name}  ${ok}/${total}${skip ? ` (${skip} skipped)` : ''}  ${secs}s\n`);
  if (bad > 0) {
    broken.push(name);
    process.stdout.write(out.split('\n').map((l) => `    ${l}`).join('\n') + '\n');
  }
}
if (broken.length) process.stdout.write(`\nfailed suites: ${broken.join(', ')}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exit(failed > 0 || files.length === 0 ? 1 : 0);
