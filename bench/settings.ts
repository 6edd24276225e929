/**
 * The benchmark's knobs, all read once from the environment (spec/benchmark.md, "Knobs").
 *
 *   BENCH_RUNS              runs per command in the stack section (default 3, minimum 3); the
 *                           ingests of tars under 100 MiB, each run under half a second,
 *                           take three times as many; umoci and the end-to-end row, whose
 *                           goals are met by far, a third as many
 *   BENCH_SECTIONS          comma list of sections to run: stack, scale (default both). A run
 *                           without every section writes its report into the scratch dir,
 *                           never over BENCHMARKS.md
 *   BENCH_SCALE             comma list of generated-layer sizes in files (default
 *                           10000,100000,1000000; "0" or "" turns the section off)
 *   BENCH_SCALE_RUNS        runs per command in the scale section (default: 3 up to
 *                           10,000 files, 1 above, and 3 for an import of a tar up to
 *                           512 MiB)
 *   BENCH_SCALE_COMP        SquashFS compressor of the scale rows: gzip or zstd (default zstd)
 *   BENCH_SCALE_MKSQUASHFS_MAX  largest size at which mksquashfs runs (default 100000:
 *                           mksquashfs 4.5.1 needs over 25 minutes for the 1,000,000-file tree)
 *   BENCH_SCALE_MKFS_EROFS_MAX  largest size at which mkfs.erofs runs (default 100000:
 *                           erofs-utils 1.5 took 88–97 s and 5,613 MiB for the
 *                           1,000,000-file tree, beyond what the run's 20 minutes leave)
 *   BENCH_SCALE_TIMEOUT     seconds a peer command of the scale section may take before it is
 *                           stopped and reported as such (default 600)
 *   BENCH_SCALE_GATE_MAX    largest size whose outputs the gate compares (default 1000000)
 *   BENCH_SCALE_CROSS_MAX   largest size with the peer-against-peer cross-checks (default 100000)
 *   BENCH_EROFS_COMP        compressed EROFS mode of both sides: lz4 (default), lz4hc or zstd;
 *                           a mode mkfs.erofs lacks makes its cells "not available"
 *   BENCH_DATA, BENCH_CLI   see bench/run.ts
 */
import { join } from 'node:path';
import { BLOCK_CACHE_DIR } from '../compose/image/shared/block-cache.js';
import { BenchError } from './proc.js';

/**
 * What a cold image build starts without: the store's block cache. The entry lists the import
 * wrote stay (cache/entries): the sandbox rows use them too, and a site user's first build
 * reads the site store's (spec/store.md); removing them as well measured about 1 s more of
 * the bench stack's zstd image.
 */
export const blockCacheOf = (store: string): string => join(store, 'cache', BLOCK_CACHE_DIR);

function int(name: string, dflt: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new BenchError(`${name}=${raw}: expected an integer ≥ ${min}`);
  return n;
}

function oneOf<T extends string>(name: string, dflt: T, allowed: readonly T[]): T {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  if (!(allowed as readonly string[]).includes(raw)) throw new BenchError(`${name}=${raw}: expected one of ${allowed.join(', ')}`);
  return raw as T;
}

export type Comp = 'gzip' | 'zstd';
export type ErofsComp = 'lz4' | 'lz4hc' | 'zstd';
export type Section = 'stack' | 'scale';

/** SquashFS settings shared by strata and the peers. */
export const BLOCK_SIZE = 131072;
export const LEVELS: Record<Comp, number> = { gzip: 6, zstd: 6 };
/** EROFS: physical cluster size of mkfs.erofs (-C), the extent size strata's writer uses by default. */
export const EROFS_PCLUSTER = 131072;
/** Level for the EROFS compressors that take one (lz4hc, zstd); lz4 has none. */
export const EROFS_LEVELS: Record<ErofsComp, number | undefined> = { lz4: undefined, lz4hc: 9, zstd: 6 };

const sectionsRaw = process.env['BENCH_SECTIONS'];
const sections = (sectionsRaw === undefined || sectionsRaw === '' ? 'stack,scale' : sectionsRaw).split(',').map((s) => s.trim()).filter(Boolean);
for (const s of sections) if (s !== 'stack' && s !== 'scale') throw new BenchError(`BENCH_SECTIONS: unknown section ${s} (stack, scale)`);

/** Points up to this many files run each command three times by default (settings.scale.runsAt). */
const SMALL_SCALE_POINT = 10_000;
/** Scale imports of tars up to this size run as often as the stack's rows (settings.scale.importRunsAt). */
const SCALE_IMPORT_MANY = 512 * 2 ** 20;
/** Ingests of tars smaller than this run three times as often (settings.ingestRuns). */
export const SMALL_INGEST = 100 * 2 ** 20;
const scaleRuns = process.env['BENCH_SCALE_RUNS'] ? int('BENCH_SCALE_RUNS', 1, 1) : undefined;
const scaleRaw = process.env['BENCH_SCALE'] ?? '10000,100000,1000000';
const scalePoints = scaleRaw
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s !== '' && s !== '0')
  .map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 100 || n > 10_000_000) throw new BenchError(`BENCH_SCALE: ${s} is not a size from 100 to 10000000`);
    return n;
  })
  .sort((a, b) => a - b);

export const settings = {
  runs: Math.max(3, int('BENCH_RUNS', 3, 1)),
  /**
   * Runs per command of the ingest of a tar of `bytes`. A tar under SMALL_INGEST takes 0.1–0.4 s,
   * mostly a process's start, and three runs left a median the host's noise moved by a third
   * (one run of the same sha256sum of app.tar and app2.tar, the same size: 0.21 against
   * 0.13 s): those run three times as often. The larger tars take seconds and run as every
   * other row (on a slow host the mpi.tar row alone took 40 s at nine runs).
   */
  ingestRuns(bytes: number): number {
    return bytes < SMALL_INGEST ? 3 * this.runs : this.runs;
  },
  /**
   * Runs a side of the rows whose goal is met by far take: a third of `runs`, one by default.
   * They are umoci unpack (strata 6.9–7.4 times as fast in the runs of 2026-11-29, against a
   * goal of 3×) and the end-to-end row (1.70–1.96×, goal 1.3×), where the noise of one run
   * cannot move a ratio across its goal; their three runs a side took about 120 s of a run
   * that came within 3 s of its 20 minutes on a slow host.
   */
  get clearRuns(): number {
    return Math.max(1, Math.floor(this.runs / 3));
  },
  sections: new Set(sections as Section[]),
  scale: {
    points: [...new Set(scalePoints)],
    /**
     * Runs per command at `n` files. The 10,000-file point takes a second or two a command,
     * and one run of each left rows the host's noise moved by half (its sandbox 0.61–1.73×
     * GNU tar over runs of near-identical code); the larger points take from seconds to
     * minutes a command and run once, which keeps the whole run under 20 minutes on a slow
     * host (three runs at 100,000 files too took the run from about 1,190 to 1,282 s).
     */
    runsAt(n: number): number {
      return scaleRuns ?? (n <= SMALL_SCALE_POINT ? 3 : 1);
    },
    /**
     * Runs of the import row at `n` files, of a tar of `tarBytes`. An import is the cheapest
     * row of a point (at 100,000 files, 1.2–1.5 s against sha256sum's 0.9–1.2 s), and the
     * single run it had moved with the host: 1.47 s (0.63x sha256sum) in the run of
     * 2026-11-29, where the same code had medians of 1.21–1.23 s in eight runs that hour.
     * So an import of a tar up to SCALE_IMPORT_MANY runs as often as the stack's rows (about
     * 7 s more at 100,000 files); the 1,000,000-file tar (1.7 GB, about 20 s a run with
     * sha256sum's) runs as the point's other rows.
     */
    importRunsAt(n: number, tarBytes: number): number {
      return scaleRuns ?? Math.max(this.runsAt(n), tarBytes <= SCALE_IMPORT_MANY ? settings.runs : 1);
    },
    comp: oneOf<Comp>('BENCH_SCALE_COMP', 'zstd', ['gzip', 'zstd']),
    mksquashfsMax: int('BENCH_SCALE_MKSQUASHFS_MAX', 100_000, 0),
    mkfsErofsMax: int('BENCH_SCALE_MKFS_EROFS_MAX', 100_000, 0),
    timeoutSec: int('BENCH_SCALE_TIMEOUT', 600, 1),
    gateMax: int('BENCH_SCALE_GATE_MAX', 1_000_000, 0),
    crossMax: int('BENCH_SCALE_CROSS_MAX', 100_000, 0),
  },
  erofsComp: oneOf<ErofsComp>('BENCH_EROFS_COMP', 'lz4', ['lz4', 'lz4hc', 'zstd']),
};

/** True when this run covers every section (only such a run rewrites BENCHMARKS.md). */
export function fullRun(): boolean {
  return settings.sections.has('stack') && settings.sections.has('scale') && settings.scale.points.length > 0;
}
