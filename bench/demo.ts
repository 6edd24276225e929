/**
 * `npm run demo`: the main job, in a store of its own (never the user's: $STRATA_STORE and
 * $STRATA_PATH are ignored). Generates a small four-layer stack (a base
 * OS tree with devices, a layer with whiteouts, an application, a licensed layer with ACLs and
 * a file capability), imports it, composes it the Lmod way, writes a sandbox and an image, and
 * rebuilds the image from its lock to show it comes out byte for byte the same.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeStack } from '../test/fixtures/stack.js';

/** The `strata` command, as `npm link` puts it on PATH (cli/strata, from dist/bench/). */
const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'cli', 'strata');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-demo-'));
const store = path.join(work, 'store');
const env = { ...process.env };
delete env.STRATA_STORE;
delete env.STRATA_PATH;
delete env.STRATA_STACK; // the demo's stack files stay in its own directory
const strata = (...args: string[]) => {
  process.stdout.write(`$ strata ${args.join(' ')}\n`);
  execFileSync(cli, ['--store', store, ...args], { cwd: work, stdio: 'inherit', env });
};
process.stdout.write(`demo store: ${store}\n`);

const stack = makeStack(path.join(work, 'src'));
const names: Record<string, string[]> = {
  base: ['base/demo-os-1', '--default', '--description', 'demo base OS'],
  mid: ['tools/patch-1', '--requires', 'base', '--description', 'whiteouts and an opaque dir'],
  app: ['app/demo-2.0', '--requires', 'tools', '--prepend', 'PATH=/opt/app/bin', '--description', 'an application'],
  lic: ['lic/demo-1', '--requires', 'app', '--setenv', 'LIC_SERVER=license.example.org', '--description', 'licensed, group ACLs'],
};
for (const l of stack.layers) {
  const [fullName, ...opts] = names[l.name]!;
  strata('store', 'import', fullName!, l.tar, '--force', ...opts);
}
strata('compose', 'add', 'lic/demo-1');
strata('compose', 'list');
strata('compose', 'sandbox', path.join(work, 'sandbox'));
strata('compose', 'squash', path.join(work, 'stack.sqfs'));
strata('inspect', path.join(work, 'stack.sqfs'));
strata('compose', 'lock', '-o', path.join(work, 'stack.lock'));
strata('rebuild', path.join(work, 'stack.lock'), '-o', path.join(work, 'rebuilt.sqfs'));
const digest = (f: string) => createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const same = digest(path.join(work, 'stack.sqfs')) === digest(path.join(work, 'rebuilt.sqfs'));
process.stdout.write(`\nrebuilt from the lock: ${same ? 'byte-identical image' : 'DIFFERENT image'}\ndemo output in ${work}\n`);
if (!same) process.exitCode = 1;
