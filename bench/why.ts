/**
 * Why a row misses its goal, where that is known: the breakdowns measured so far (profiles and
 * perf, spec/decisions.md "Caches and speed"), with what this run measured filled in. The
 * report prints the reason under each goal the run does not meet (issue 15: say which goals
 * are not met, and why); a row that meets its goal shows none.
 */
import { cpuOf, type Machine, type Row, type Why } from './harness.js';

const median = (row: Row): number | undefined => (row.strata.kind === 'measured' ? row.strata.m.median : undefined);
const ms = (s: number): string => `${Math.round(s * 1000)} ms`;

/**
 * This run's CPU seconds of both sides (their median runs), when both were measured and strata
 * spent more: the work the two cores had to do, beside the wall times of the row.
 */
function cpuClause(row: Row): string {
  const [s, p] = [cpuOf(row.strata), cpuOf(row.peer)];
  if (s === undefined || p === undefined || s <= p) return '';
  return ` This run: strata spent ${s.toFixed(1)} s of CPU (user and system, every thread), ${row.peerName} ${p.toFixed(1)} s (${(s / p).toFixed(1)}×).`;
}

/** Node's start as part of strata's median, when both were measured. */
function nodeShare(row: Row, m: Machine): string {
  const s = median(row);
  if (s === undefined || Number.isNaN(m.start.node)) return '';
  return ` (${Math.round((m.start.node / s) * 100)} % of strata's median here)`;
}

/** An import of a small tar: a fixed cost per run outweighs sha256sum's whole run. */
export const fixedCost: Why = (row, m) =>
  `a cost per run that does not grow with the tar: Node's start alone takes ${ms(m.start.node)}${nodeShare(row, m)}, ` +
  'then strata loads its modules, opens the store and syncs the blob and its index entry before it reports success. ' +
  'The part that grows with the tar is faster than sha256sum (the hash runs on the thread pool, beside the reading), ' +
  'which is why the largest tars meet the goal.';

/** An import of an archive that is not in canonical order: its entries are sorted first. */
export const unordered: Why = (row, m) =>
  `the archive is not in canonical order, so strata reads its headers once to sort the entries (spilled to disk past a budget, which keeps memory bounded), ` +
  'then writes the canonical tar from the sorted entries, reading the bodies again by offset through windows of the archive: a sort and a second pass that sha256sum does not make, ' +
  `beside Node's start (${ms(m.start.node)}${nodeShare(row, m)}) (spec/decisions.md, Caches and speed).`;

/** An import of many small files: per-entry work on one thread. */
export const perEntry =
  (entries: number): Why =>
  (row, m) => {
    const s = median(row);
    const each = s === undefined || Number.isNaN(m.start.node) ? '' : `: strata's median less Node's start is ${(((s - m.start.node) / entries) * 1e6).toFixed(1)} µs an entry here, over ${entries.toLocaleString('en-US')} entries`;
    return (
      `every entry costs work on the main thread that sha256sum does not do (its header parsed and checked, written again in canonical form, its entry-list row encoded)${each}. ` +
      'The hash runs beside it on the thread pool; the per-entry work is what is left (spec/decisions.md, Caches and speed).'
    );
  };

/** A cold zstd image of the bench stack: compression alone is about mksquashfs's whole CPU. */
export const coldCompression: Why = (row) =>
  'compressing the blocks takes about as much CPU as mksquashfs\'s whole run (one thread, the tree\'s 609 MB at level 6: 4.7–5.1 s with either libzstd on 2026-11-25\'s host, ' +
  '9.2 s with strata\'s libzstd 1.5.7 and 10.8 s with the system\'s 1.5.4, which mksquashfs uses, in one run each on 2026-11-29\'s), ' +
  'and strata does more on the same two cores: each layer\'s sha256 checked as it is read, each block hashed for deduplication and its block-cache key, ' +
  'each compressed block hashed and written to the block cache as well as to the image, and V8 compiling and collecting. ' +
  'perf by thread (2026-11-29): strata 19.6 s of CPU against mksquashfs\'s 12.1 s; compression 10.1 s, the rest of the compression threads 2.0 s (sha256 0.5 s), ' +
  'the main thread 3.3 s, V8\'s own thread 2.2 s, libuv\'s pool 1.2 s. gzip meets the goal because libdeflate compresses faster than zlib (spec/decisions.md, Caches and speed).' +
  cpuClause(row);

/**
 * A cold zstd image of the Debian base and a few small files: as for the stack, compression
 * takes both cores for most of the build.
 */
export const scaleCompression: Why = (row) =>
  'most of this stack is the Debian base\'s 115 MiB, and compressing it keeps both cores busy for most of the build, as for the bench stack (cold squash zstd-6, above): ' +
  'in a profile of the 10,000-file build (2026-11-29, 3.8 s) the two compression threads compressed for 3.3 s of CPU while the main thread waited for them ' +
  'through 70 % of the 2.2 s of file data; Node\'s start and the plan took the first 0.5 s, the small files\' fragments, the tables and the commit the last 1 s ' +
  '(spec/decisions.md, Caches and speed).' +
  cpuClause(row);

/** A cold image of many small files: the main thread, not compression, is the bound. */
export const mainThreadBound: Why = (row) =>
  'the many small files are bound by the main thread, not by compression: per file it plans, keeps a record (spilled to disk past a budget and read back, which keeps memory bounded) ' +
  'and packs the tail into a fragment block, while the compression workers wait for half of that phase ' +
  '(a profile of a 7 s build of the 100,000-file stack, 2026-11-27: Node\'s start, reading the entry lists and planning 1.75 s, the base layer 1.5 s, the small files 2.4 s, the tables 0.6 s). ' +
  'Where the CPU goes (perf of a cold build of the same stack, 2026-11-27: 9.4 s of CPU, mksquashfs 5.3 s on the extracted tree): the main thread 3.7 s; ' +
  'the compression threads 3.7 s for 207 MiB of files (zstd alone compresses the same bytes at 79 MiB/s here, 2.6 s; the rest is hashing, the block cache and messages); ' +
  'V8\'s own thread 1.6 s, 1.1 s of it compiling JavaScript, most of that again after deoptimizations; libuv\'s pool 0.4 s (spec/decisions.md, Caches and speed).' +
  cpuClause(row);

/** A re-build after one module changed: the work that does not shrink with the change. */
export const unchangedWork: Why = () =>
  'a re-build still does work that does not shrink with the change: Node\'s start and the compression workers\', the plan of every entry of the stack, ' +
  'the unchanged layers\' segments copied into the image and their digests checked, the tables, and the whole image read back for its sha256 while it is synced. ' +
  'In profiles of both re-builds (2026-11-27) the changed module was about a quarter of the time, the plan a fifth to a quarter, ' +
  'the segments a fifth, and the start, the tables and the commit the rest (spec/decisions.md, Caches and speed).';

/**
 * A tree written file by file (the sandbox): strata touches more fresh memory than GNU tar
 * (Node's and V8's own, the plan's heap, the layers' read rings), and a machine where a first
 * touch is dear charges every page of it. Priced with this run's own numbers: each side's
 * minor page faults and the machine line's cost of a page.
 */
export const pageFaults: Why = (row, m) => {
  const general =
    'strata touches more memory for the first time than GNU tar does (Node\'s and V8\'s own, the heap that holds the plan, each layer\'s read ring), ' +
    'and each page of it costs a page fault';
  const s = row.strata.kind === 'measured' ? row.strata.m : undefined;
  const p = row.peer.kind === 'measured' ? row.peer.m : undefined;
  if (s?.faults === undefined || p?.faults === undefined || Number.isNaN(m.fresh)) return `${general}.`;
  const page = m.fresh / 65536; // the probe's 256 MiB in 4 KiB pages
  const extra = Math.max(0, s.faults - p.faults) * page;
  const count = (n: number) => Math.round(n).toLocaleString('en-US');
  const faults =
    `${general}: strata's median run faulted ${count(s.faults)} pages in, ${row.peerName} ${count(p.faults)}, ` +
    `and on this machine a page costs ${(page * 1e6).toFixed(1)} µs (Machine), up to ${extra.toFixed(2)} s of strata's ${s.median.toFixed(2)} s ` +
    `against the peer's ${p.median.toFixed(2)} s (an upper bound: faults on strata's other threads overlap the main thread's work).`;
  // Where the faults explain little of the gap and strata's own runs differ widely, the
  // spread is the larger part: the kernel's time for the same files changed between runs.
  const gap = s.median - p.median;
  if (gap <= 0 || extra >= gap / 4) return faults;
  // Runs that agree, and faults that explain little: the rest is work only strata does.
  if (s.max < 1.5 * s.min) {
    return (
      `${faults} That is not most of the gap here: beside the kernel's work of creating and writing the same files, strata hashes every byte of every layer it reads ` +
      '(the digest check GNU tar does not make), plans the merged tree before it writes the first file, and has two threads a layer create the files, which take turns ' +
      "at a directory's lock where they write into the same one, the kernel spinning for it (11 % of a million-file sandbox's CPU on a fresh filesystem, 2026-11-30); " +
      `on this host the second core gives back less than that costs (spec/benchmark.md, the fourth host).${cpuClause(row)}`
    );
  }
  return (
    `${faults} That is not most of the gap here: the same build's runs took ${s.min.toFixed(2)} to ${s.max.toFixed(2)} s (the fastest ${(p.median / s.min).toFixed(2)}× the peer's median), ` +
    'the kernel taking more or less time to create the same files on this filesystem from one run to the next (by hand on such a machine, 2026-11-27: ' +
    'the bench stack\'s sandbox, five runs on ext4, each after the last tree was moved aside and a sync, took 0.65 to 3.76 s of system time; ' +
    'on a host that hands free memory back to its hypervisor, each page the page cache takes anew costs a fault of the host\'s, and how many a run meets ' +
    'depends on what ran before it: spec/benchmark.md, Runs in turn).'
  );
};
