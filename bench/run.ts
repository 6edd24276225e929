/**
 * `npm run bench`: builds or loads the data (bench/data.ts), measures every row of issue 5
 * for the peer tools and for strata's CLI, checks that strata's outputs equal the peers',
 * prints the table and rewrites BENCHMARKS.md. Exit status: 0 when every strata output that
 * could be produced matched; 1 when an output differed or a strata command failed.
 *
 * strata is called only through its CLI (DESIGN.md, "CLI"):
 *   node dist/cli/main.js --store S -q store import NAME TAR
 *   node dist/cli/main.js --store S -q compose add M…            (cwd = the stack dir)
 *   node dist/cli/main.js --store S -q compose sandbox DIR
 *   node dist/cli/main.js --store S -q compose squash OUT --comp C --level N --block-size B
 * When dist/cli/main.js is absent, or a verb is not there yet (usage error, exit 2), the
 * strata cells say "not available"; no number is ever made up.
 *
 * Environment: BENCH_RUNS (default 3, minimum 3), BENCH_DATA (data root, default
 * .bench-data/ in the package root), BENCH_CLI (measure this main.js as is instead of a
 * copy of dist/; a path that does not exist makes every strata row "not available").
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultDataRoot, ensureData, type BenchData, type LayerName } from './data.js';
import {
  diffTrees,
  freshDir,
  machine,
  measure,
  renderReport,
  snapshotImage,
  snapshotTree,
  table,
  toolVersions,
  writeText,
  type Measurement,
  type Outcome,
  type Report,
  type Row,
  type TreeNode,
} from './harness.js';
import { BenchError, log, run } from './proc.js';

const RUNS = Math.max(3, Number(process.env['BENCH_RUNS'] ?? 3));
/** SquashFS settings shared by strata and mksquashfs. */
const BLOCK_SIZE = 131072;
const LEVELS = { gzip: 6, zstd: 6 } as const;
type Comp = keyof typeof LEVELS;

/** Module names the layers are imported under (Lmod rule: last component is the version). */
const MODULES: Record<LayerName, string> = {
  base: 'debian/12',
  mpi: 'openmpi/4.1.4',
  app: 'mpi4py/3.1.4',
  app2: 'mpi4py/3.1.4-2',
  lic: 'licapp/1.0',
};
/** Paths strata adds to its outputs on purpose (DESIGN.md, Outputs); left out of comparisons. */
const STRATA_EXTRAS = ['.strata', '.singularity.d'];

/**
 * The peer's layer application: for each tar, bottom first, apply its OCI whiteouts to what
 * the lower layers left (`.wh.NAME` removes NAME, `.wh..wh..opq` empties the directory),
 * then extract the tar without the whiteout entries. $1 = destination, then the tars.
 */
const EXTRACT_SCRIPT = `set -euo pipefail
dest=$1; shift
mkdir -p "$dest"
for t in "$@"; do
  tar --quoting-style=literal -tf "$t" | { grep -E '(^|/)\\.wh\\.' || true; } | while IFS= read -r p; do
    p=\${p#./}
    case $p in */*) d=\${p%/*} ;; *) d=. ;; esac
    b=\${p##*/}
    if [ "$b" = .wh..wh..opq ]; then
      if [ -d "$dest/$d" ]; then find "$dest/$d" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +; fi
    else
      rm -rf -- "$dest/$d/\${b#.wh.}"
    fi
  done
  tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf "$t" -C "$dest" --exclude='.wh.*'
done
`;

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new BenchError('package.json not found above bench/');
    dir = up;
  }
  return dir;
}

function mksquashfsArgs(tree: string, out: string, comp: Comp): string[] {
  return [tree, out, '-noappend', '-quiet', '-no-progress', '-comp', comp, '-Xcompression-level', String(LEVELS[comp]), '-b', String(BLOCK_SIZE)];
}

const measured = (m: Measurement): Outcome => ({ kind: 'measured', m });

/** Runs a peer measurement; a peer failing is a broken benchmark, so it is fatal. */
async function peer(what: string, cmd: string, args: string[], before?: () => Promise<void>): Promise<Outcome> {
  log(`peer: ${what}`);
  return measured(await measure(cmd, args, { runs: RUNS, before }));
}

class Strata {
  readonly available: boolean;
  readonly cli: string;
  constructor(cli: string | undefined) {
    this.available = cli !== undefined;
    this.cli = cli ?? 'dist/cli/main.js';
  }
  args(store: string, args: string[]): string[] {
    return [this.cli, '--store', store, '-q', ...args];
  }
  /** Untimed call (setup); throws BenchError. */
  async call(store: string, args: string[], cwd?: string): Promise<void> {
    await run(process.execPath, this.args(store, args), { cwd });
  }
  /** Maps a strata failure to "not available" (no CLI, usage error) or "failed". */
  classify(e: unknown): Outcome {
    if (!this.available) return { kind: 'unavailable', reason: `${this.cli} not built` };
    const err = e instanceof BenchError ? e : undefined;
    const lines = (err?.stderr || String(e)).trim().split('\n').filter((l) => l.trim());
    // "strata: …" is the CLI's own message; otherwise the first "…Error: …" of a trace.
    const first = lines.find((l) => l.startsWith('strata:')) ?? lines.find((l) => /^\w*Error\b/.test(l.trim())) ?? lines[0] ?? String(e);
    if (err?.exitCode === 2 || /unknown (command|option)|not implemented/i.test(err?.stderr ?? '')) {
      return { kind: 'unavailable', reason: first };
    }
    return { kind: 'failed', reason: first.slice(0, 300) };
  }
  async measure(what: string, store: string, args: string[], opts: { cwd?: string; before?: () => Promise<void> } = {}): Promise<Outcome> {
    if (!this.available) return { kind: 'unavailable', reason: `${this.cli} not built` };
    log(`strata: ${what}`);
    try {
      return measured(await measure(process.execPath, this.args(store, args), { runs: RUNS, ...opts }));
    } catch (e) {
      return this.classify(e);
    }
  }
  /** A bash script timed as one command (end to end). */
  async measureScript(what: string, script: string, opts: { before?: () => Promise<void> } = {}): Promise<Outcome> {
    if (!this.available) return { kind: 'unavailable', reason: `${this.cli} not built` };
    log(`strata: ${what}`);
    try {
      return measured(await measure('bash', ['-c', script], { runs: RUNS, ...opts }));
    } catch (e) {
      return this.classify(e);
    }
  }
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

async function sizeOf(p: string): Promise<number | undefined> {
  try {
    return (await stat(p)).size;
  } catch {
    return undefined;
  }
}

/**
 * A private copy of the built CLI (dist/, build/Release, package.json) so that a rebuild of
 * dist/ during the run (others' `npm test`) cannot change what is measured. node_modules
 * is still found by walking up from the copy. undefined when dist/cli/main.js is absent.
 */
async function snapshotCli(root: string, pkg: string): Promise<string | undefined> {
  const override = process.env['BENCH_CLI'];
  if (override !== undefined) return existsSync(override) ? override : undefined;
  if (!existsSync(join(root, 'dist/cli/main.js'))) return undefined;
  await mkdir(pkg, { recursive: true });
  await run('cp', ['-a', join(root, 'dist'), join(root, 'package.json'), pkg]);
  if (existsSync(join(root, 'build/Release'))) {
    await mkdir(join(pkg, 'build'), { recursive: true });
    await run('cp', ['-a', join(root, 'build/Release'), join(pkg, 'build')]);
  }
  return join(pkg, 'dist/cli/main.js');
}

/** Layers in the order a strata.lock lists their modules; `fallback` when unreadable. */
async function lockOrder(lock: string, fallback: LayerName[]): Promise<LayerName[]> {
  try {
    const parsed = JSON.parse(await readFile(lock, 'utf8')) as { modules: { fullName: string }[] };
    const byModule = new Map(Object.entries(MODULES).map(([k, v]) => [v, k as LayerName]));
    const order = parsed.modules.map((m) => byModule.get(m.fullName));
    return order.every((n): n is LayerName => n !== undefined) ? order : fallback;
  } catch {
    return fallback;
  }
}

async function main(): Promise<number> {
  const t0 = Date.now();
  const loadStart = loadavg();
  const root = packageRoot();
  const data: BenchData = await ensureData(defaultDataRoot(root));
  const S = await freshDir(join(data.root, 'scratch'));
  const strata = new Strata(await snapshotCli(root, join(S, 'pkg')));
  const tars = data.stack.map((n) => data.layers[n].tar);
  const refTree = join(S, 'ref-tree');
  const rows: Row[] = [];
  const rm_ = (...ps: string[]) => async () => {
    for (const p of ps) await rm(p, { recursive: true, force: true });
  };

  // --- ingest --------------------------------------------------------------------------
  const ingestStore = join(S, 'ingest-store');
  for (const name of [...data.stack, 'app2'] as LayerName[]) {
    const tar = data.layers[name].tar;
    const mb = ((await sizeOf(tar)) ?? 0) / 2 ** 20;
    rows.push({
      what: `ingest ${name}.tar (${mb.toFixed(0)} MiB)`,
      strata: await strata.measure(`ingest ${name}`, ingestStore, ['store', 'import', MODULES[name], tar], { before: rm_(ingestStore) }),
      peerName: 'sha256sum',
      peer: await peer(`sha256sum ${name}`, 'sha256sum', [tar]),
      goal: { text: '≥ 1.0×', minSpeedup: 1 },
    });
  }

  // --- sandbox -------------------------------------------------------------------------
  const gnuTar = await peer('GNU tar extraction of 4 tars', 'bash', ['-c', EXTRACT_SCRIPT, 'extract', refTree, ...tars], rm_(refTree));
  const bundle = join(S, 'umoci-bundle');
  const umoci = await peer('umoci unpack', 'umoci', ['unpack', '--image', `${data.oci}:${data.ociTag}`, bundle], rm_(bundle));

  // strata: one store with every module, and a stack dir holding strata.json/strata.lock.
  const store = join(S, 'store');
  const stackDir = join(S, 'stack');
  let setup: Outcome | undefined;
  if (strata.available) {
    try {
      log('strata: importing the modules (untimed setup)');
      for (const name of ['base', 'mpi', 'app', 'app2', 'lic'] as LayerName[]) {
        await strata.call(store, ['store', 'import', MODULES[name], data.layers[name].tar]);
      }
      await mkdir(stackDir, { recursive: true });
      await strata.call(store, ['compose', 'add', ...data.stack.map((n) => MODULES[n])], stackDir);
    } catch (e) {
      setup = strata.classify(e);
      if (setup.kind !== 'measured') setup = { ...setup, reason: `setup (import + compose add): ${setup.reason}` };
    }
  }
  const strataOr = async (fn: () => Promise<Outcome>): Promise<Outcome> => setup ?? fn();

  const sandboxDir = join(S, 'sandbox');
  const sandbox = await strataOr(() =>
    strata.measure('compose sandbox', store, ['compose', 'sandbox', sandboxDir], { cwd: stackDir, before: rm_(sandboxDir) }),
  );
  rows.push({ what: 'sandbox, 4 layers', strata: sandbox, peerName: 'GNU tar ×4 + whiteouts', peer: gnuTar, goal: { text: '≥ 1.0×', minSpeedup: 1 } });
  rows.push({ what: 'sandbox, 4 layers', strata: sandbox, peerName: 'umoci unpack', peer: umoci, goal: { text: '≥ 3.0×', minSpeedup: 3 } });

  // --- cold squash ---------------------------------------------------------------------
  const cold: Partial<Record<Comp, Outcome>> = {};
  for (const comp of ['gzip', 'zstd'] as Comp[]) {
    const peerOut = join(S, `peer-${comp}.sqfs`);
    const out = join(S, `strata-${comp}.sqfs`);
    const p = await peer(`mksquashfs ${comp}`, 'mksquashfs', mksquashfsArgs(refTree, peerOut, comp), rm_(peerOut));
    cold[comp] = await strataOr(() =>
      strata.measure(`cold squash ${comp}`, store, ['compose', 'squash', out, '--comp', comp, '--level', String(LEVELS[comp]), '--block-size', String(BLOCK_SIZE)], {
        cwd: stackDir,
        before: rm_(out, join(store, 'cache')),
      }),
    );
    rows.push({ what: `cold squash ${comp}-${LEVELS[comp]}`, strata: cold[comp]!, peerName: 'mksquashfs of extracted tree', peer: p, goal: { text: '≥ 1.0×', minSpeedup: 1 } });
  }

  // --- end to end ----------------------------------------------------------------------
  const e2eTree = join(S, 'e2e-tree');
  const e2ePeerOut = join(S, 'e2e-peer.sqfs');
  const e2ePeerScript = `${EXTRACT_SCRIPT}\nmksquashfs ${mksquashfsArgs(e2eTree, e2ePeerOut, 'gzip').map(q).join(' ')} >/dev/null`;
  const e2ePeer = await peer('GNU tar + mksquashfs', 'bash', ['-c', e2ePeerScript, 'e2e', e2eTree, ...tars], rm_(e2eTree, e2ePeerOut));
  await rm(e2eTree, { recursive: true, force: true });
  const e2eDir = join(S, 'e2e-stack');
  const e2eOut = join(S, 'e2e-strata.sqfs');
  const node = (args: string[]) => [process.execPath, ...strata.args(store, args)].map(q).join(' ');
  const e2eScript = [
    'set -e',
    `cd ${q(e2eDir)}`,
    node(['compose', 'add', ...data.stack.map((n) => MODULES[n])]),
    node(['compose', 'squash', e2eOut, '--comp', 'gzip', '--level', String(LEVELS.gzip), '--block-size', String(BLOCK_SIZE)]),
  ].join('\n');
  const e2e = await strataOr(() =>
    strata.measureScript('end to end', e2eScript, {
      before: async () => {
        await rm_(e2eDir, e2eOut, join(store, 'cache'))();
        await mkdir(e2eDir, { recursive: true });
      },
    }),
  );
  rows.push({
    what: `end to end, store → image (gzip-${LEVELS.gzip})`,
    strata: e2e,
    peerName: 'GNU tar ×4 + mksquashfs',
    peer: e2ePeer,
    goal: { text: '≥ 1.3×', minSpeedup: 1.3 },
    note: 'strata = `compose add` of the 4 modules + `compose squash` with an empty cache',
  });

  // --- re-squash after swapping app for app2 --------------------------------------------
  const reDir = join(S, 'resquash-stack');
  const reOut = join(S, 'resquash.sqfs');
  const squashArgs = (out: string) => ['compose', 'squash', out, '--comp', 'gzip', '--level', String(LEVELS.gzip), '--block-size', String(BLOCK_SIZE)];
  // Warm once: the app stack squashed into an empty cache; then every timed run starts from
  // a copy of that cache and that stack dir, swaps app for app2 (untimed) and re-squashes.
  const warmCache = join(S, 'cache-warm');
  const warmDir = join(S, 'resquash-stack-warm');
  const cache = join(store, 'cache');
  const resquash = await strataOr(async () => {
    try {
      await rm_(warmDir, warmCache, cache)();
      await mkdir(warmDir, { recursive: true });
      await strata.call(store, ['compose', 'add', ...data.stack.map((n) => MODULES[n])], warmDir);
      await strata.call(store, squashArgs(reOut), warmDir);
      if (existsSync(cache)) await run('cp', ['-a', cache, warmCache]);
    } catch (e) {
      return strata.classify(e);
    }
    return strata.measure('re-squash after swap', store, squashArgs(reOut), {
      cwd: reDir,
      before: async () => {
        await rm_(reDir, reOut, cache)();
        if (existsSync(warmCache)) await run('cp', ['-a', warmCache, cache]);
        await run('cp', ['-a', warmDir, reDir]);
        await strata.call(store, ['compose', 'add', MODULES.app2], reDir);
      },
    });
  });
  const coldGzip = cold.gzip!;
  rows.push({
    what: 're-squash after app → app2 (gzip)',
    strata: resquash,
    peerName: 'strata cold squash (gzip)',
    peer: coldGzip.kind === 'measured' ? coldGzip : { kind: 'unavailable', reason: 'strata cold squash not measured' },
    goal: { text: '≥ 6.67× (< 15 % of cold)', minSpeedup: 1 / 0.15 },
  });

  // --- correctness gate ----------------------------------------------------------------
  log('checking outputs');
  const gate: Report['gate'] = [];
  const refSnap = await snapshotTree(refTree);
  const refAcls = new Map<string, string>();
  for (const [p, n] of refSnap) if (n.acl) refAcls.set(p, n.acl);
  const gateDiff = async (name: string, outcome: Outcome, fn: () => Promise<string[]>) => {
    if (outcome.kind !== 'measured') gate.push({ name, diffs: undefined, reason: outcome.kind === 'failed' ? 'strata command failed' : 'strata not available' });
    else gate.push({ name, diffs: await fn() });
  };
  await gateDiff('sandbox vs GNU tar reference tree', sandbox, async () => diffTrees(await snapshotTree(sandboxDir, { ignore: STRATA_EXTRAS }), refSnap));
  const peerImages: Partial<Record<Comp, Map<string, TreeNode>>> = {};
  for (const comp of ['gzip', 'zstd'] as Comp[]) {
    peerImages[comp] = await snapshotImage(join(S, `peer-${comp}.sqfs`));
    await gateDiff(`strata ${comp} image vs mksquashfs ${comp} image`, cold[comp]!, async () =>
      diffTrees(await snapshotImage(join(S, `strata-${comp}.sqfs`), { ignore: STRATA_EXTRAS }), peerImages[comp]!, { image: true, referenceAcls: refAcls }),
    );
  }
  await gateDiff('end-to-end image vs mksquashfs gzip image', e2e, async () => {
    // Same lock and settings as the cold gzip squash: byte identity (DESIGN.md) settles it.
    const same = await run('cmp', ['-s', e2eOut, join(S, 'strata-gzip.sqfs')], { allowFail: true });
    if (same.code === 0 && cold.gzip!.kind === 'measured' && gate.find((g) => g.name.startsWith('strata gzip image'))?.diffs?.length === 0) return [];
    return diffTrees(await snapshotImage(e2eOut, { ignore: STRATA_EXTRAS }), peerImages.gzip!, { image: true, referenceAcls: refAcls });
  });
  // strata's swap follows Lmod (the new module goes where strata.lock says, possibly on
  // top): the reference applies the tars in the lock's order.
  const order2 = await lockOrder(join(reDir, 'strata.lock'), data.stack2);
  await gateDiff(`re-squashed image vs GNU tar tree of ${order2.join(', ')}`, resquash, async () => {
    const tree2 = join(S, 'ref-tree2');
    await run('bash', ['-c', EXTRACT_SCRIPT, 'extract', tree2, ...order2.map((n) => data.layers[n].tar)]);
    const snap2 = await snapshotTree(tree2);
    const acls2 = new Map<string, string>();
    for (const [p, n] of snap2) if (n.acl) acls2.set(p, n.acl);
    return diffTrees(await snapshotImage(reOut, { ignore: STRATA_EXTRAS }), snap2, { image: true, referenceAcls: acls2 });
  });

  // Peers against each other: proves the comparators see what they should.
  const crossChecks: Report['crossChecks'] = [];
  crossChecks.push({ name: 'umoci unpack rootfs vs GNU tar reference tree', diffs: diffTrees(await snapshotTree(join(bundle, 'rootfs')), refSnap) });
  crossChecks.push({ name: 'mksquashfs gzip image vs GNU tar reference tree (image rules)', diffs: diffTrees(peerImages.gzip!, refSnap, { image: true }) });

  // --- report --------------------------------------------------------------------------
  const sizes: Report['sizes'] = [];
  for (const comp of ['gzip', 'zstd'] as Comp[]) {
    sizes.push({
      what: `${comp}-${LEVELS[comp]}, ${BLOCK_SIZE / 1024} KiB blocks`,
      strata: cold[comp]!.kind === 'measured' ? await sizeOf(join(S, `strata-${comp}.sqfs`)) : undefined,
      peer: (await sizeOf(join(S, `peer-${comp}.sqfs`)))!,
      peerName: 'mksquashfs',
    });
  }
  const dataLines = Object.entries(data.stamp.layers).map(
    ([n, l]) => `${n} (${MODULES[n as LayerName]}): ${l.files} paths, ${(l.bytes / 2 ** 20).toFixed(1)} MiB in files, ${l.whiteouts} whiteouts, ${l.opaque} opaque dirs${data.layers[n as LayerName].overlay ? ' (overlay upperdir)' : ''}`,
  );
  dataLines.push(`built ${data.stamp.built} with debootstrap (minbase, bookworm) and apt in overlay chroots; OCI layout by umoci (tag ${data.ociTag}: ${data.stack.join(', ')})`);
  const head = await run('git', ['-C', root, 'describe', '--always', '--dirty'], { allowFail: true });
  const report: Report = {
    date: new Date(),
    machine: machine(),
    tools: await toolVersions(),
    settings: [
      strata.available
        ? process.env['BENCH_CLI'] !== undefined
          ? `strata: ${strata.cli} (BENCH_CLI)`
          : `strata: a copy of dist/ taken at the start of the run, built from ${head.stdout.trim() || 'an unknown commit'}`
        : 'strata: CLI not built, strata rows not available',
      `${RUNS} runs per command; times are wall-clock seconds, median (min–max); peak RSS is the largest over the runs (/usr/bin/time %M)`,
      `SquashFS: block size ${BLOCK_SIZE}, gzip level ${LEVELS.gzip}, zstd level ${LEVELS.zstd}, the same for strata and mksquashfs (all cores)`,
      'speedup = peer median / strata median; above 1 means strata is faster',
      `load average (1 min) ${loadStart[0]!.toFixed(2)} at the start, ${loadavg()[0]!.toFixed(2)} at the end: the cores are shared, so other work on the machine shows up in min–max`,
      'page cache warm for both sides (the data was read just before); outputs removed and `sync` run (untimed) before every run',
    ],
    data: dataLines,
    rows,
    sizes,
    gate,
    crossChecks,
  };
  await writeText(join(root, 'BENCHMARKS.md'), renderReport(report));
  process.stdout.write(table(rows) + '\n\n');
  for (const g of gate) {
    process.stdout.write(`gate: ${g.name}: ${g.diffs === undefined ? `not run (${g.reason})` : g.diffs.length ? `${g.diffs.length} difference(s)` : 'identical'}\n`);
    for (const d of g.diffs?.slice(0, 10) ?? []) process.stdout.write(`  ${d}\n`);
  }
  for (const c of crossChecks) process.stdout.write(`cross-check: ${c.name}: ${c.diffs.length ? `${c.diffs.length} difference(s)` : 'identical'}\n`);
  log(`done in ${((Date.now() - t0) / 1000).toFixed(0)} s; wrote ${join(root, 'BENCHMARKS.md')}`);

  const failedGate = gate.some((g) => g.diffs && g.diffs.length > 0);
  const failedStrata = rows.some((r) => r.strata.kind === 'failed');
  if (failedGate) log('FAIL: a strata output differs from the peer’s');
  if (failedStrata) log('FAIL: a strata command failed');
  return failedGate || failedStrata ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
