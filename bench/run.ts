/**
 * `npm run bench`: builds or loads the data (bench/data.ts, bench/scale-data.ts), measures
 * the sections (bench/stack.ts: the real stack; bench/scale.ts: a generated layer of up to a
 * million files) for the peer tools and for strata's CLI (bench/strata.ts), checks that
 * strata's outputs equal the peers', prints the tables and rewrites BENCHMARKS.md and the
 * scale figure bench-scale.svg beside it. Exit status: 0 when every strata output that could
 * be produced matched; 1 when an output differed or a strata command failed.
 *
 * Knobs: bench/settings.ts. A run without every section (BENCH_SECTIONS) writes its report
 * and figure into the scratch dir instead, so BENCHMARKS.md always shows one full run.
 * BENCH_DATA: the data root (default .bench-data/ in the package root). BENCH_CLI: measure
 * this executable as is instead of a copy of the `strata` command and dist/ (cli/strata; or,
 * run with node, dist/bundle/strata.cjs, or dist/bundle/strata.js or dist/cli/main.js of an
 * older build; a path that does not exist makes every strata row "not available").
 */
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { libdeflateVersion } from '../native/deflate.js';
import { lz4Version } from '../native/lz4.js';
import { defaultDataRoot, ensureData, type BenchData, type LayerName } from './data.js';
import { emptyTrash, freshMemory, machine, processStarts, renderReport, table, toolVersions, useTrash, writeText, type Report, type ReportSection } from './harness.js';
import { mkfsErofsCompressors } from './peers.js';
import { scalePlot } from './plot.js';
import { BenchError, log, run } from './proc.js';
import { runScale, short } from './scale.js';
import { prepareScratch } from './scratch.js';
import { BLOCK_SIZE, EROFS_LEVELS, EROFS_PCLUSTER, fullRun, LEVELS, settings, SMALL_INGEST } from './settings.js';
import { MODULES, runStack } from './stack.js';
import { snapshotCli, Strata } from './strata.js';

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new BenchError('package.json not found above bench/');
    dir = up;
  }
  return dir;
}

const FIGURE = 'bench-scale.svg';

/**
 * How many runs each point's commands took, for the scale section's intro: "3 runs per
 * command at 10,000 files; 1 at 100,000 and 1,000,000 files, so no min–max".
 */
function runsText(points: [n: number, runs: number][]): string {
  const groups: { runs: number; ns: number[] }[] = [];
  for (const [n, runs] of points) {
    const last = groups[groups.length - 1];
    if (last?.runs === runs) last.ns.push(n);
    else groups.push({ runs, ns: [n] });
  }
  const files = (ns: number[]) => `${ns.map((n) => n.toLocaleString('en')).join(ns.length === 2 ? ' and ' : ', ')} files`;
  const parts = groups.map(({ runs, ns }, i) => {
    const what = i === 0 ? `${runs} run${runs === 1 ? '' : 's'} per command` : String(runs);
    const where = groups.length === 1 ? '' : ` at ${files(ns)}`;
    return `${what}${where}${runs === 1 ? ', so no min–max' : ''}`;
  });
  return parts.join('; ');
}

/** "3, 3 and 1 runs": the import rows' runs, point by point. */
function importRunsText(runs: number[]): string {
  const list = runs.length < 3 ? runs.join(' and ') : `${runs.slice(0, -1).join(', ')} and ${runs[runs.length - 1]}`;
  return `${list} run${runs.length === 1 && runs[0] === 1 ? '' : 's'}`;
}

async function main(): Promise<number> {
  const t0 = Date.now();
  const loadStart = loadavg();
  const starts = processStarts();
  const fresh = freshMemory();
  const root = packageRoot();
  const data: BenchData = await ensureData(defaultDataRoot(root));
  const scratch = await prepareScratch(data.root);
  const S = scratch.dir;
  useTrash(join(S, 'trash'), { keep: scratch.kind === 'filesystem' });
  const strata = new Strata(await snapshotCli(root, join(S, 'pkg')));
  // The commit the copy was built from, read now: the tree may change while the bench runs.
  const head = await run('git', ['-C', root, 'describe', '--always', '--dirty'], { allowFail: true });
  const erofsCompressors = await mkfsErofsCompressors();
  const scaleRuns = settings.sections.has('scale') && settings.scale.points.length > 0;
  const ctx = { data, S, strata, erofsCompressors, final: !scaleRuns };
  const EC = settings.erofsComp;
  const ecLevel = EROFS_LEVELS[EC] !== undefined && EC !== 'lz4' ? ` level ${EROFS_LEVELS[EC]}` : '';
  const sections: ReportSection[] = [];
  const notRun: string[] = [];
  const timings: string[] = [];

  if (settings.sections.has('stack')) {
    const t = Date.now();
    const result = await runStack(ctx);
    timings.push(`stack ${((Date.now() - t) / 1000).toFixed(0)} s`);
    sections.push({
      title: 'The Debian + OpenMPI + mpi4py + licensed-app stack',
      intro: [
        `${settings.runs} runs per command (the ingests of tars under ${SMALL_INGEST / 2 ** 20} MiB ${settings.ingestRuns(0)}; umoci unpack and both sides of the end-to-end row, goals met by far, ${settings.clearRuns}); times are wall-clock seconds, median (min–max); peak RSS is the largest over the runs`,
      ],
      result,
    });
  } else notRun.push('the stack section (BENCH_SECTIONS)');

  let figure: string | undefined;
  if (scaleRuns) {
    const t = Date.now();
    const result = await runScale({ ...ctx, final: true });
    timings.push(`scale ${((Date.now() - t) / 1000).toFixed(0)} s`);
    const c = settings.scale;
    figure = scalePlot(result.points, `strata and peers on a generated layer over Debian base (${result.points.map((p) => short(p.n)).join(', ')} files)`);
    sections.push({
      title: 'Scale: a generated layer of many small files over the Debian base',
      intro: [
        `sizes: ${c.points.map((n) => n.toLocaleString('en')).join(', ')} files (BENCH_SCALE); layout and contents in bench/scale-data.ts; the stack is debian/12 + scale/N`,
        `${runsText(c.points.map((n) => [n, c.runsAt(n)]))}, the imports (the cheapest rows) ${importRunsText(result.points.map((p) => c.importRunsAt(p.n, p.stamp.tarBytes)))} (BENCH_SCALE_RUNS); every command is stopped after ${c.timeoutSec} s (BENCH_SCALE_TIMEOUT), shown as "> N s (stopped)"`,
        `SquashFS: ${c.comp} level ${LEVELS[c.comp]}, block size ${BLOCK_SIZE} (BENCH_SCALE_COMP); EROFS: ${EC}${ecLevel}, ${EROFS_PCLUSTER / 1024} KiB pclusters`,
        `mksquashfs runs up to ${c.mksquashfsMax.toLocaleString('en')} files (BENCH_SCALE_MKSQUASHFS_MAX): 4.5.1 was measured at over 25 minutes on the 1,000,000-file tree`,
        `mkfs.erofs runs up to ${c.mkfsErofsMax.toLocaleString('en')} files (BENCH_SCALE_MKFS_EROFS_MAX): 1.5 took 88–97 s and 5,613 MiB peak RSS on the 1,000,000-file tree (runs of 2026-11-29), time the whole run's 20 minutes do not leave`,
        `the gate lists every path of strata's outputs and of the GNU tar tree (type, mode, owner, size, sha256, mtime, nlink, device, link target, xattrs, ACLs) up to ${c.gateMax.toLocaleString('en')} files (BENCH_SCALE_GATE_MAX); peer cross-checks up to ${c.crossMax.toLocaleString('en')} (BENCH_SCALE_CROSS_MAX)`,
        `import: \`store import scale/N\` of the generated tar into a store that holds only debian/12; GNU tar: the base and generated tars extracted in order, as in the stack section; tar2sqfs reads the base tar (cut before its end-of-archive blocks) followed by the generated one on stdin`,
      ],
      result,
      figure: { file: FIGURE, alt: 'wall time and peak RSS against the number of files, strata and peers' },
    });
  } else notRun.push('the scale section (BENCH_SECTIONS or BENCH_SCALE)');

  if (scratch.kind === 'filesystem') {
    log(`the trees set aside stay on the scratch filesystem, which the next run drops whole`);
  } else {
    const trashSec = await emptyTrash();
    log(`removed the trees set aside (${trashSec.total.toFixed(0)} s since the deletion began, between timed runs; ${trashSec.waited.toFixed(0)} s of it after the last gate)`);
    timings.push(`removing the trees set aside ${trashSec.total.toFixed(0)} s, between the last point's timed runs (${trashSec.waited.toFixed(0)} s after the last gate)`);
  }

  // --- report --------------------------------------------------------------------------
  const dataLines = Object.entries(data.stamp.layers).map(
    ([n, l]) => `${n} (${MODULES[n as LayerName]}): ${l.files} paths, ${(l.bytes / 2 ** 20).toFixed(1)} MiB in files, ${l.whiteouts} whiteouts, ${l.opaque} opaque dirs${data.layers[n as LayerName].overlay ? ' (overlay upperdir)' : ''}`,
  );
  dataLines.push(`built ${data.stamp.built} with debootstrap (minbase, bookworm) and apt in overlay chroots; OCI layout by umoci (tag ${data.ociTag}: ${data.stack.join(', ')})`);
  for (const sec of sections) if ('data' in sec.result) dataLines.push(...(sec.result as { data: string[] }).data);
  const report: Report = {
    date: new Date(),
    machine: machine(S, starts, fresh),
    tools: await toolVersions(),
    settings: [
      strata.available
        ? process.env['BENCH_CLI'] !== undefined
          ? `strata: ${strata.cli} (BENCH_CLI)`
          : `strata: a copy of dist/ taken at the start of the run, built from ${head.stdout.trim() || 'an unknown commit'}`
        : 'strata: CLI not built, strata rows not available',
      'times are wall-clock seconds; peak RSS is /usr/bin/time %M (for a shell script, its largest descendant)',
      `SquashFS: block size ${BLOCK_SIZE}, gzip level ${LEVELS.gzip}, zstd level ${LEVELS.zstd}, the same for strata, mksquashfs and tar2sqfs (all cores); strata's gzip is libdeflate ${libdeflateVersion()} (its own levels), the peers' the system zlib`,
      `EROFS: uncompressed, and ${EC}${ecLevel} (BENCH_EROFS_COMP) with ${EROFS_PCLUSTER / 1024} KiB physical clusters for mkfs.erofs (-C${EROFS_PCLUSTER}) and strata's default extent size; strata's EROFS command is \`compose squash OUT --format erofs --comp C\`; strata's lz4 is liblz4 ${lz4Version()}, mkfs.erofs's the system liblz4`,
      'speedup = peer median / strata median; above 1 means strata is faster (two decimals; a row just short of its goal is rounded down, never shown at the goal)',
      `load average (1 min) ${loadStart[0]!.toFixed(2)} at the start, ${loadavg()[0]!.toFixed(2)} at the end: the cores are shared, so other work on the machine shows up in the times`,
      "page cache warm for both sides (the data was read just before; strata's store by `store verify` after the imports, which write large blobs past the page cache); before every run (untimed) the last output is removed, or moved aside if it is a tree (never deleted while a timed run goes on: spec/benchmark.md, Scratch space), and `sync` is run",
      `sections: ${timings.join(', ')}; whole run ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    ],
    data: dataLines,
    sections,
    notRun,
  };
  const outDir = fullRun() ? root : S;
  await writeText(join(outDir, 'BENCHMARKS.md'), renderReport(report));
  if (figure) await writeText(join(outDir, FIGURE), figure);
  for (const sec of sections) {
    process.stdout.write(`\n${sec.title}\n\n${table(sec.result.rows)}\n\n`);
    for (const g of sec.result.gate) {
      process.stdout.write(`gate: ${g.name}: ${g.diffs === undefined ? `not run (${g.reason})` : g.diffs.length ? `${g.diffs.length} difference(s)` : 'identical'}\n`);
      for (const d of g.diffs?.slice(0, 10) ?? []) process.stdout.write(`  ${d}\n`);
    }
    for (const c of sec.result.crossChecks) process.stdout.write(`cross-check: ${c.name}: ${c.diffs.length ? `${c.diffs.length} difference(s)` : 'identical'}\n`);
  }
  log(`done in ${((Date.now() - t0) / 1000).toFixed(0)} s; wrote ${join(outDir, 'BENCHMARKS.md')}${fullRun() ? '' : ' (not a full run: BENCHMARKS.md left as it was)'}`);

  const failedGate = sections.some((s) => s.result.gate.some((g) => g.diffs && g.diffs.length > 0));
  const failedStrata = sections.some((s) => s.result.rows.some((r) => r.strata.kind === 'failed'));
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
