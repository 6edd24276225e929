#!/usr/bin/env node
// `npm install` / `npm ci` step: builds the native addon (binding.gyp) with node-gyp against the
// headers of the Node that runs it (its prefix's include/node, which Debian's nodejs and the
// official tarballs ship), so an install needs nothing but the npm registry: no download of
// headers, no user npm config. Without local headers node-gyp falls back to its own lookup.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

const prefix = resolve(process.execPath, '..', '..');
// On every core unless JOBS says otherwise (node-gyp's own default is one).
const args = ['rebuild', '--jobs', process.env.JOBS || 'max'];
if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
const r = spawnSync('node-gyp', args, { stdio: 'inherit' });
if (r.error) {
  process.stderr.write(`strata: cannot run node-gyp (${r.error.message}); npm provides it to install scripts\n`);
  process.exit(1);
}
process.exit(r.status ?? 1);
