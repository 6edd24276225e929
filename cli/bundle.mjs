#!/usr/bin/env node
// `npm run build` step after tsc: bundles the CLI (dist/cli/bin.js and every module it loads)
// into one CommonJS file, dist/bundle/cli.cjs, and writes V8's code cache for it beside it,
// cli.cjs.cache; dist/bundle/strata.cjs, the executable, compiles the one with the other
// (cli/boot.ts, cli/code-cache.ts). So a command starts from two files instead of resolving
// and compiling a hundred, and most of what it runs is deserialised, not compiled
// (spec/decisions.md, "One bundle for the executable", "The bundle runs from V8's code cache").
// LevelDB's JavaScript is bundled too; what finds a native build relative to its own package
// stays outside: classic-level's binding.js, and zstd-napi.
//
// The compiled tree stays beside the bundle and is still used: worker threads, the helper that
// `strata exec` starts and the native addon are found relative to the module that names them.
// So each bundled module's `import.meta.url` is rewritten to that module's own file in dist/.
import * as esbuild from 'esbuild';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const out = join(dist, 'bundle');

/**
 * `import.meta.url` of a module in dist/ → the URL of that module's compiled file, relative to
 * the bundle's directory (a helper of the banner, cjsBanner). `import.meta.resolve` is used
 * only when running from source under tsx.
 */
const ownUrls = {
  name: 'strata-own-urls',
  setup(build) {
    build.onLoad({ filter: /\.js$/ }, async ({ path }) => {
      if (!path.startsWith(dist + sep)) return undefined;
      const text = await readFile(path, 'utf8');
      if (!text.includes('import.meta.')) return undefined;
      const rel = JSON.stringify(relative(out, path).split(sep).join('/'));
      const contents = text.replaceAll('import.meta.url', `__strataOwnUrl(${rel})`).replaceAll('import.meta.resolve', '__strataNoResolve');
      return { contents, loader: 'js' };
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

const common = { bundle: true, platform: 'node', target: 'node20', logLevel: 'warning' };
/** What a CommonJS bundle's rewritten `import.meta` calls (ownUrls). */
const cjsBanner = {
  js: [
    "const __strataOwnUrl = (rel) => require('node:url').pathToFileURL(require('node:path').join(__dirname, rel)).href;",
    "const __strataNoResolve = () => { throw new Error('import.meta.resolve is not available in the bundle'); };",
  ].join('\n'),
};
rmSync(out, { recursive: true, force: true });
await esbuild.build({
  ...common,
  entryPoints: [join(dist, 'cli', 'bin.js')],
  outfile: join(out, 'cli.cjs'),
  format: 'cjs',
  external: ['zstd-napi'],
  banner: cjsBanner,
  plugins: [ownUrls, levelBinding],
});
// esbuild escapes every non-ASCII character of the code (its default charset), not those of the
// comments it keeps (a dash, an ellipsis): escaped as well, the file is ASCII, which the
// executable decodes as Latin-1 (cli/code-cache.ts). \uXXXX means the same character in a
// string, a template, a regular expression and an identifier, and is only text in a comment.
const cjs = join(out, 'cli.cjs');
const escape = (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
writeFileSync(cjs, readFileSync(cjs, 'utf8').replace(/[^\x00-\x7f]/g, escape));
// The executable is CommonJS too: Node starts a CommonJS main without its ES module loader,
// 7-10 ms sooner a command (spec/decisions.md, "The bundle runs from V8's code cache").
const exe = join(out, 'strata.cjs');
await esbuild.build({
  ...common,
  entryPoints: [join(dist, 'cli', 'boot.js')],
  outfile: exe,
  format: 'cjs',
  banner: cjsBanner,
  plugins: [ownUrls],
});
chmodSync(exe, 0o755);
warmCodeCache();

/**
 * Writes the code cache by running commands that cover what users run most, in a store and a
 * stack of their own: each run compiles with the cache the runs before it wrote and writes it
 * again with what it compiled itself (STRATA_CODE_CACHE=write). Best effort: a run that fails
 * leaves the cache as the runs before it wrote it (the CLI compiles what the cache lacks), and
 * is reported.
 */
function warmCodeCache() {
  const tmp = mkdtempSync(join(tmpdir(), 'strata-warm-'));
  try {
    const store = join(tmp, 'store');
    const stack = join(tmp, 'stack');
    const tree = join(tmp, 'tree');
    mkdirSync(join(tree, 'etc'), { recursive: true });
    mkdirSync(stack);
    writeFileSync(join(tree, 'etc', 'motd'), 'warm\n');
    symlinkSync('etc/motd', join(tree, 'motd'));
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmp, LANG: 'C', STRATA_CODE_CACHE: 'write' };
    const runs = [
      ['--version'],
      ['store', 'import', 'warm/1', tree],
      ['store', 'export', 'warm/1', join(tmp, 'warm.tar')],
      ['store', 'import', 'warm/2', join(tmp, 'warm.tar')],
      ['store', 'ls'],
      ['store', 'verify'],
      ['compose', 'avail'],
      ['compose', 'load', 'warm/2'],
      ['compose', 'list'],
      ['compose', 'show', 'warm/2'],
      ['compose', 'sandbox', join(tmp, 'sandbox')],
      ['compose', 'squash', join(tmp, 'image.sqfs')],
      ['compose', 'squash', join(tmp, 'image.erofs'), '--format', 'erofs'],
      ['unsquash', join(tmp, 'image.sqfs'), join(tmp, 'unsquashed')],
      ['inspect', join(tmp, 'image.sqfs')],
    ];
    for (const args of runs) {
      const argv = args[0] === '--version' ? args : ['--store', store, '-q', ...args];
      const r = spawnSync(process.execPath, [exe, ...argv], { cwd: stack, env, encoding: 'utf8', timeout: 60_000 });
      if (r.status !== 0) {
        const why = (r.stderr || r.error?.message || `exit ${r.status ?? r.signal}`).trim().split('\n')[0];
        process.stderr.write(`bundle: the code cache covers less: \`strata ${args.join(' ')}\` failed: ${why}\n`);
        return;
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
