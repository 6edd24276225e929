/**
 * How much the V8 heap may grow past its live data, for builds of many entries.
 *
 * V8 sets the next full collection at a multiple of the heap it found live, a factor it picks
 * up to 4 when the program allocates fast, which a build does: at a million entries the heap
 * held 100–150 MiB for 12–25 MiB of live objects, a third of the process's peak. Past
 * LARGE_PLAN entries a build sets that growth itself (V8's --heap-growing-percent, which V8
 * reads at every collection, so it takes effect when set late): after each full collection,
 * room for HEAP_HEADROOM bytes past what was live, less as the process's resident size nears
 * RSS_CEILING, and never less than half the live size. The goal is a bound in bytes (peak RSS
 * under 300 MiB), so the headroom is one too.
 *
 * A fixed half of the live size (2026-11-27 to -28) bounded memory as well, but where the live
 * heap is small it left a few MiB between collections. The external sorters hold up to their
 * budget of records (two to three times that in objects) before a run goes to disk, so each
 * one's filling promoted more than that: the 100,000-file EROFS build made 67–85 full
 * collections in 8–11 s, whose marking took about 1.5 s of CPU on V8's helper threads beside
 * the compression workers, and the 1,000,000-file one 450.
 *
 * The merges ask for it as soon as their layers have given LARGE_PLAN entries (compose/merge.ts
 * for outputs, sources/oci.ts for an image's layers), not once the plan is made: making it is
 * when the heap grows fastest, and the sandbox of the 1,000,000-file stack peaked there, at
 * 230–284 MiB, with the setting made after it. Smaller builds keep V8's own choice.
 */
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

/** Entries of a plan past which a build keeps its heap near its live size. */
export const LARGE_PLAN = 50_000;

/** How far the old generation may grow past its live size before the next full collection. */
export const HEAP_HEADROOM = 32 << 20;

/**
 * The resident size the headroom shrinks towards, to the least growth at this size and past
 * it. The peak comes above it: the young generation, the worker threads and the buffers of
 * dead objects (freed at the next full collection) are on top of the old generation's growth:
 * with 220 MiB the image builds of the 100,000- and 1,000,000-file scale stacks peaked at
 * 218–267 MiB (spec/decisions.md, Caches and speed).
 */
export const RSS_CEILING = 220 << 20;

/** The growth asked for, as V8's percent: at least half the live size, at most four times it. */
const MIN_PERCENT = 50;
const MAX_PERCENT = 400;

/** The spaces a young-generation collection empties: not part of the old generation's size. */
const YOUNG = new Set(['new_space', 'new_large_object_space']);

let set = false;

/**
 * The --heap-growing-percent that leaves `live` bytes of old generation HEAP_HEADROOM to grow
 * by, or what is left below RSS_CEILING at a resident size of `rss` bytes when that is less;
 * in tens, between MIN_PERCENT and MAX_PERCENT.
 */
export function growingPercent(live: number, rss: number): number {
  const room = Math.min(HEAP_HEADROOM, Math.max(0, RSS_CEILING - rss));
  const p = Math.round((room / Math.max(live, 1)) * 10) * 10;
  return Math.min(MAX_PERCENT, Math.max(MIN_PERCENT, p));
}

/** Fits the heap's growth to a large build for the rest of the process (once). */
export function fitHeapToPlan(): void {
  if (set) return;
  set = true;
  let percent = 0;
  const fit = (): void => {
    let live = 0;
    for (const s of getHeapSpaceStatistics()) if (!YOUNG.has(s.space_name)) live += s.space_used_size;
    const p = growingPercent(live, process.memoryUsage.rss());
    if (p === percent) return;
    try {
      setFlagsFromString(`--heap-growing-percent=${p}`);
      percent = p;
    } catch {
      // A V8 that refuses flags after start keeps its own growth: only memory is at stake.
    }
  };
  fit();
  // After a full collection (reported on a later turn of the event loop) the old generation
  // holds about what is live.
  new PerformanceObserver((list) => {
    if (list.getEntries().some((e) => (e as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR)) fit();
  }).observe({ entryTypes: ['gc'] });
}
