#!/usr/bin/env node
/**
 * The `strata` executable as `npm run build` leaves it (dist/bundle/strata.cjs, which the
 * launcher cli/strata runs): compiles the CLI's bundle (dist/bundle/cli.cjs: cli/bin.ts and all
 * it loads) with the code cache beside it, cli.cjs.cache, and runs it (cli/code-cache.ts).
 *
 * STRATA_CODE_CACHE=off compiles without the cache; =write also writes the cache at exit, with
 * what the command compiled beside what the cache held (cli/bundle.mjs, after the bundle is
 * built). The variable is taken out of the environment before the command runs.
 */
import { fileURLToPath } from 'node:url';
import { loadBundle } from './code-cache.js';

const mode = process.env['STRATA_CODE_CACHE'];
delete process.env['STRATA_CODE_CACHE'];
const file = fileURLToPath(new URL('../bundle/cli.cjs', import.meta.url));
const bundle = loadBundle(file, mode === 'off' ? undefined : `${file}.cache`);
if (mode === 'write') {
  process.on('exit', () => {
    try {
      bundle.saveCache();
    } catch (e) {
      process.stderr.write(`strata: the code cache was not written: ${(e as Error).message}\n`);
    }
  });
}
bundle.run();
