#!/usr/bin/env node
// `npm run build` step after tsc: bundles the executable (dist/cli/bin.js) with the modules it
// loads into dist/bundle/ (strata.js and the chunks the command groups load lazily, one directory), so that a
// command starts from a few files instead of resolving and compiling a hundred (spec/decisions.md,
// "One bundle for the executable"). LevelDB's JavaScript is bundled too (a chunk of its own,
// loaded by the commands that write the index); what finds a native build relative to its own
// package stays outside: classic-level's binding.js, and zstd-napi.
//
// The compiled tree stays beside the bundle and is still used: worker threads, the helper that
// `strata exec` starts and the native addon are found relative to the module that names them.
// So each bundled module's `import.meta.url` is rewritten to that module's own file in dist/.
import * as esbuild from 'esbuild';
import { chmodSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const out = join(dist, 'bundle');

/** `import.meta.url` of a module in dist/ → the URL of that module's compiled file. */
const ownUrls = {
  name: 'strata-own-urls',
  setup(build) {
    build.onLoad({ filter: /\.js$/ }, async ({ path }) => {
      if (!path.startsWith(dist + sep)) return undefined;
      const text = await readFile(path, 'utf8');
      if (!text.includes('import.meta.url')) return undefined;
      const own = `new URL(${JSON.stringify(relative(out, path).split(sep).join('/'))}, import.meta.url).href`;
      return { contents: text.replaceAll('import.meta.url', own), loader: 'js' };
    });
  },
};

/**
 * classic-level's `require('./binding')` stays a require of `classic-level/binding.js`, resolved
 * from the bundle as any package is: it loads the addon from the directory it sits in.
 */
const levelBinding = {
  name: 'strata-level-binding',
  setup(build) {
    build.onResolve({ filter: /^\.\/binding(\.js)?$/ }, ({ importer }) =>
      importer.includes(`${sep}classic-level${sep}`) ? { path: 'classic-level/binding.js', external: true } : undefined,
    );
  },
};

rmSync(out, { recursive: true, force: true });
await esbuild.build({
  entryPoints: { strata: join(dist, 'cli', 'bin.js') },
  outdir: out,
  // Chunks beside the entry: the URLs above are relative to this one directory.
  chunkNames: '[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['zstd-napi'],
  // Dependencies written as CommonJS (commander) call require(); an ES module has none.
  banner: { js: "import { createRequire as __strataRequire } from 'node:module'; const require = __strataRequire(import.meta.url);" },
  plugins: [ownUrls, levelBinding],
  logLevel: 'warning',
});
chmodSync(join(out, 'strata.js'), 0o755);
